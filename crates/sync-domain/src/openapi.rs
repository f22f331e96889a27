//! OpenAPI schemas of the domain's types (feature `openapi`), so the document
//! `webhook-http` generates states the rules these types enforce: the limits
//! and formats below are read from the same constants the parsers use.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

/// A string schema, to be refined by the caller.
pub fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A string that is one of `values` (an enum's text forms).
pub fn text_enum<'a>(
    description: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> RefOr<Schema> {
    string(description)
        .enum_values(Some(values.into_iter().map(str::to_owned)))
        .into()
}

/// A UUID in its hyphenated text form.
pub fn uuid(description: &str) -> RefOr<Schema> {
    string(description)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

/// Implements `ToSchema` for an enum with `ALL` and `as_str`: its text forms
/// come from the enum itself.
macro_rules! text_enum_schema {
    ($name:ty, $description:literal) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::openapi::text_enum(
                    $description,
                    <$name>::ALL.iter().map(|value| value.as_str()),
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

text_enum_schema!(crate::SyncState, "Where the calendar's sync stands.");
text_enum_schema!(
    crate::EventStatus,
    "Google's status of the event (`cancelled`: deleted at Google; the events API never lists those, the change feed shows them)."
);
text_enum_schema!(
    crate::channel::PushMode,
    "How the calendar learns about changes: `push` (watch channels) or `polling`."
);
text_enum_schema!(
    crate::changes::ChangeKind,
    "`event_changed`: created or updated; `event_cancelled`: cancelled at Google (the event carries its last state); `event_removed`: left the mirror (full resync); the `calendar_*` kinds are calendar transitions (`calendar_disconnected`: the calendar and its mirrored events are gone)."
);
