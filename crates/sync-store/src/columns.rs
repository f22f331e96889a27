//! The domain's enums in their text columns: `calendar_sync_state.sync_state`
//! and `push_mode`, `watch_channels.state`, `calendar_events.status`.
//!
//! [`Stored`] wraps an enum of `sync-domain` for Diesel: `FromSql`/`ToSql` on
//! `Text` for every backend whose `String`/`str` have them (PostgreSQL and
//! SQLite), so a query binds and loads the enum itself, and a row holding text
//! that is none of the enum's forms is a query error naming the column. The
//! text forms stay in `sync-domain` (each enum's `as_str`); the migrations'
//! `CHECK` constraints list the same forms for the database.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use sync_domain::channel::{ChannelState, PushMode};
use sync_domain::{EventStatus, SyncState};

/// An enum stored as one of its text forms.
pub trait TextColumn: Copy + std::fmt::Debug + Send + Sync + 'static {
    /// What the column holds, for errors (`sync state`, `channel state`, …).
    const WHAT: &'static str;
    /// Every value.
    fn all() -> &'static [Self];
    /// The value's text form.
    fn text(self) -> &'static str;
    /// The value whose text form is `text`, if any.
    fn from_text(text: &str) -> Option<Self> {
        Self::all()
            .iter()
            .copied()
            .find(|value| value.text() == text)
    }
}

macro_rules! text_column {
    ($ty:ty, $what:literal $(, $from_text:expr)?) => {
        impl TextColumn for $ty {
            const WHAT: &'static str = $what;
            fn all() -> &'static [Self] {
                &<$ty>::ALL
            }
            fn text(self) -> &'static str {
                self.as_str()
            }
            $(fn from_text(text: &str) -> Option<Self> {
                Some($from_text(text))
            })?
        }
    };
}

text_column!(SyncState, "sync state");
text_column!(PushMode, "push mode");
text_column!(ChannelState, "channel state");
// The column has no CHECK (rows written before the enum hold what Google
// sent): it is read as Google's field is, an unknown status as `confirmed`.
text_column!(EventStatus, "event status", |text: &str| {
    EventStatus::from_google(Some(text))
});

/// A domain enum as a `Text` value in a query or a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Stored<T: TextColumn>(pub T);

impl<T: TextColumn> Stored<T> {
    /// The enum.
    pub fn get(self) -> T {
        self.0
    }
}

impl<T: TextColumn> From<T> for Stored<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T, DB> FromSql<Text, DB> for Stored<T>
where
    T: TextColumn,
    DB: Backend,
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        T::from_text(&text)
            .map(Self)
            .ok_or_else(|| format!("unknown {} in the database: {text:?}", T::WHAT).into())
    }
}

impl<T, DB> ToSql<Text, DB> for Stored<T>
where
    T: TextColumn,
    DB: Backend,
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.0.text().to_sql(out)
    }
}

/// The stored forms of `values`, for `eq_any`.
pub fn stored<T: TextColumn>(values: &[T]) -> Vec<Stored<T>> {
    values.iter().copied().map(Stored).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct_forms<T: TextColumn>() {
        let texts: Vec<&str> = T::all().iter().map(|v| v.text()).collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(!texts[i + 1..].contains(text), "{} {text} twice", T::WHAT);
        }
    }

    #[test]
    fn every_enum_has_distinct_text_forms() {
        distinct_forms::<SyncState>();
        distinct_forms::<PushMode>();
        distinct_forms::<ChannelState>();
        distinct_forms::<EventStatus>();
    }
}
