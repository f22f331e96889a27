//! Identifiers, each a newtype that parses.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} is longer than {1} characters")]
    TooLong(&'static str, usize),
    #[error("{0} contains a control character")]
    ControlCharacter(&'static str),
    #[error("{0} is not a UUID")]
    NotUuid(&'static str),
}

/// What [`check_text`] accepts, as an ECMA-262 pattern for the OpenAPI
/// document (with the length limit beside it): no control character (Unicode
/// `Cc`) anywhere, and at least one character that is not white space.
pub const TEXT_ID_PATTERN: &str =
    r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$";

fn check_text(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.trim().is_empty() {
        return Err(IdError::Empty(what));
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong(what, max));
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter(what));
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Parses a value, refusing empty, over-long or control-character input.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_text($what, &value, $max)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::string(concat!(
                    "Not blank, no control characters, at most ",
                    stringify!($max),
                    " characters."
                ))
                .min_length(Some(1))
                .max_length(Some(Self::MAX_LEN))
                .pattern(Some(TEXT_ID_PATTERN))
                .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

text_id!(
    /// A watch channel's id as Google echoes it in `X-Goog-Channel-ID` (ours are UUIDs; Google allows 64 characters).
    ChannelId,
    "channel id",
    64
);
text_id!(
    /// Google's calendar id, e.g. `primary` or `abc@group.calendar.google.com`.
    GoogleCalendarId,
    "google_calendar_id",
    1024
);
text_id!(
    /// The Chronos user who owns a calendar (an id of the calling services' choosing).
    UserId,
    "user_id",
    255
);
text_id!(
    /// Google's opaque id of the watched resource, needed to stop a channel.
    ResourceId,
    "resource id",
    1024
);

impl ChannelId {
    /// A fresh random channel id (UUID v4), as SPEC section 7 asks.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid.hyphenated().to_string())
    }

    /// Whether this id is a UUID (any version and form `uuid` parses): every
    /// channel this service creates is one, and so were the Python original's,
    /// so nothing else can be ours.
    pub fn is_uuid(&self) -> bool {
        Uuid::try_parse(&self.0).is_ok()
    }
}

/// Chronos' own id for a connected calendar (a UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CalendarId(Uuid);

impl CalendarId {
    /// Wraps a UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Parses the hyphenated text form.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        Uuid::parse_str(value.trim())
            .map(Self)
            .map_err(|_| IdError::NotUuid("calendar id"))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for CalendarId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::uuid("Chronos' id for a connected calendar.")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for CalendarId {}

impl std::fmt::Display for CalendarId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn channel_id_refuses_empty_long_and_control() {
        assert_eq!(ChannelId::parse(""), Err(IdError::Empty("channel id")));
        assert_eq!(ChannelId::parse("   "), Err(IdError::Empty("channel id")));
        assert!(matches!(
            ChannelId::parse("x".repeat(65)),
            Err(IdError::TooLong(..))
        ));
        assert!(matches!(
            ChannelId::parse("a\nb"),
            Err(IdError::ControlCharacter(_))
        ));
        assert!(ChannelId::parse("x".repeat(64)).is_ok());
    }

    #[test]
    fn calendar_id_round_trips() {
        let id = CalendarId::from_uuid(Uuid::new_v4());
        assert_eq!(CalendarId::parse(&id.to_string()), Ok(id));
        assert!(CalendarId::parse("not-a-uuid").is_err());
    }

    proptest! {
        #[test]
        fn user_id_parse_never_panics_and_accepts_what_it_should(s in "\\PC{0,300}") {
            let parsed = UserId::parse(s.clone());
            let ok = !s.trim().is_empty() && s.chars().count() <= 255;
            prop_assert_eq!(parsed.is_ok(), ok);
        }
    }
}
