//! The change feed (SPEC section 5, `docs/change-feed.md`): an ordered,
//! resumable log of every change applied to the mirror and of the calendar
//! transitions other services care about.
//!
//! This module holds the entry format, the opaque cursor, the rules (when a
//! cursor has expired, which entries retention may remove, when a wait ends)
//! and the [`ChangeFeed`] port that the store implements and consumers (the
//! HTTP API, the CLI, other in-process Chronos services) read through.

use crate::EventStatus;
use crate::admin::EventView;
use crate::ids::{CalendarId, UserId};
use crate::ports::StoreError;
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;

/// Entries per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u32 = 1000;
/// Longest long-poll `wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Default `change_retention_hours` (SPEC section 4).
pub const DEFAULT_RETENTION_HOURS: u64 = 72;

/// What an entry says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// An event was created or updated (its status is not `cancelled`).
    EventChanged,
    /// Google cancelled (deleted) the event; the entry carries its last state.
    EventCancelled,
    /// The event left the mirror (a full resync found it gone at Google).
    EventRemoved,
    /// The calendar was connected.
    CalendarConnected,
    /// The calendar's first full sync completed: the mirror is whole from here on.
    CalendarFullSyncComplete,
    /// Google refused the user's credentials; syncing waits for new ones.
    CalendarNeedsReauth,
    /// The calendar no longer exists at Google.
    CalendarGone,
    /// The calendar was disconnected: its mirrored events are deleted.
    CalendarDisconnected,
}

impl ChangeKind {
    /// Every kind, in the order of the table above.
    pub const ALL: [Self; 8] = [
        Self::EventChanged,
        Self::EventCancelled,
        Self::EventRemoved,
        Self::CalendarConnected,
        Self::CalendarFullSyncComplete,
        Self::CalendarNeedsReauth,
        Self::CalendarGone,
        Self::CalendarDisconnected,
    ];

    /// The name stored in `change_log.kind` and shown to consumers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventChanged => "event_changed",
            Self::EventCancelled => "event_cancelled",
            Self::EventRemoved => "event_removed",
            Self::CalendarConnected => "calendar_connected",
            Self::CalendarFullSyncComplete => "calendar_full_sync_complete",
            Self::CalendarNeedsReauth => "calendar_needs_reauth",
            Self::CalendarGone => "calendar_gone",
            Self::CalendarDisconnected => "calendar_disconnected",
        }
    }

    /// Reads a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// Whether entries of this kind concern one event (and carry `event_id`).
    pub fn is_event(self) -> bool {
        matches!(
            self,
            Self::EventChanged | Self::EventCancelled | Self::EventRemoved
        )
    }

    /// The kind for an event written to the mirror with Google's `status`.
    pub fn for_event_status(status: EventStatus) -> Self {
        if status.is_cancelled() {
            Self::EventCancelled
        } else {
            Self::EventChanged
        }
    }
}

/// A position in the feed. Its text form is opaque to consumers; `0` is
/// "before every entry ever written".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangeCursor(i64);

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this feed issued")]
pub struct InvalidChangeCursor;

impl ChangeCursor {
    /// Before every entry ever written.
    pub const START: Self = Self(0);

    /// The cursor just after the entry at `position`.
    pub fn at(position: i64) -> Self {
        Self(position.max(0))
    }

    /// The stored position.
    pub fn position(self) -> i64 {
        self.0
    }

    /// Parses the opaque form given to consumers (and `Last-Event-ID`).
    pub fn parse(raw: &str) -> Result<Self, InvalidChangeCursor> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > CURSOR_MAX_LEN || !raw.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(InvalidChangeCursor);
        }
        raw.parse::<i64>()
            .map(Self)
            .map_err(|_| InvalidChangeCursor)
    }
}

impl std::fmt::Display for ChangeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The opaque form: a decimal position.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ChangeCursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::string(
            "Opaque position in the feed: only a `cursor` or `next_cursor` this feed returned (or `0`, before every entry kept) is valid; anything else is refused with 400.",
        )
        .min_length(Some(1))
        .max_length(Some(CURSOR_MAX_LEN))
        .pattern(Some(CURSOR_PATTERN))
        .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ChangeCursor {}

/// Longest text form of a [`ChangeCursor`] (an `i64` in decimal).
pub const CURSOR_MAX_LEN: usize = 19;
/// The text form of a [`ChangeCursor`] as an ECMA-262 pattern (surrounding
/// white space is tolerated by the parser).
pub const CURSOR_PATTERN: &str = "^[0-9]+$";

impl Serialize for ChangeCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One entry of the feed as consumers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Change))]
pub struct ChangeEntry {
    /// Resume after this entry with `after=<cursor>` (or `Last-Event-ID`).
    pub cursor: ChangeCursor,
    /// The calendar the change belongs to.
    pub calendar_id: CalendarId,
    /// The calendar's owner.
    pub user_id: String,
    /// What happened.
    pub kind: ChangeKind,
    /// When the change was applied to the mirror.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Event entries only: Google's event id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = false, nullable = false))]
    pub event_id: Option<String>,
    /// Event entries only: the event as the events API shows it, or `null`
    /// when it left the mirror (`event_removed`). Absent on calendar entries.
    #[serde(
        skip_serializing_if = "EventState::is_not_event",
        serialize_with = "EventState::serialize"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<EventView>, required = false)
    )]
    pub event: EventState,
}

/// The event an entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum EventState {
    /// A calendar entry: no event.
    NotAnEvent,
    /// The event's state after the change.
    Present(Box<EventView>),
    /// The event left the mirror.
    Removed,
}

impl EventState {
    fn is_not_event(&self) -> bool {
        matches!(self, Self::NotAnEvent)
    }

    fn serialize<S: serde::Serializer>(state: &Self, serializer: S) -> Result<S::Ok, S::Error> {
        match state {
            Self::Present(event) => event.serialize(serializer),
            Self::NotAnEvent | Self::Removed => serializer.serialize_none(),
        }
    }
}

impl EventView {
    /// The event as the events API shows it, from the resource Google returned.
    pub fn from_google_json(event_id: &str, raw: &serde_json::Value) -> Self {
        let text = |key: &str| raw.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let object = |key: &str| raw.get(key).filter(|v| !v.is_null()).cloned();
        Self {
            id: event_id.to_owned(),
            status: EventStatus::from_google(raw.get("status").and_then(|v| v.as_str())),
            summary: text("summary"),
            start: object("start"),
            end: object("end"),
            updated: text("updated").and_then(|u| {
                OffsetDateTime::parse(&u, &time::format_description::well_known::Rfc3339).ok()
            }),
        }
    }
}

/// Which entries a consumer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeQuery {
    /// Entries after this cursor; `None`: from now (only entries written later).
    pub after: Option<ChangeCursor>,
    /// At most this many entries (1 to [`MAX_LIMIT`]).
    pub limit: u32,
    pub calendar_id: Option<CalendarId>,
    pub user_id: Option<UserId>,
}

impl ChangeQuery {
    /// Whether `entry` passes the query's filters (not its cursor).
    pub fn matches(&self, entry: &ChangeEntry) -> bool {
        self.calendar_id.is_none_or(|c| c == entry.calendar_id)
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| u.as_str() == entry.user_id)
    }
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePage {
    /// The entries, oldest first (possibly none).
    pub changes: Vec<ChangeEntry>,
    /// Where the next request continues (also when `changes` is empty).
    pub next_cursor: ChangeCursor,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChangeFeedError {
    /// The cursor is older than the retention: entries after it were removed,
    /// so the consumer must resync from the events API.
    #[error(
        "cursor {after} is older than the change feed's retention (oldest cursor {oldest}); resync from the events API (GET /internal/calendars/{{id}}/events), then follow the feed from a new cursor"
    )]
    Expired {
        after: ChangeCursor,
        oldest: ChangeCursor,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The change feed: what the HTTP API, the CLI and in-process services read.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The entries after `query.after` (or, without one, none yet: the cursor
    /// of now). With a non-zero `wait`, an empty answer is held until an entry
    /// arrives or the wait ends; never by re-reading on a timer.
    async fn changes(
        &self,
        query: &ChangeQuery,
        wait: Duration,
    ) -> Result<ChangePage, ChangeFeedError>;

    /// The oldest cursor still served: `after` it, every kept entry follows.
    async fn oldest_cursor(&self) -> Result<ChangeCursor, StoreError>;
}

/// Whether a consumer at `after` has missed entries that retention removed
/// (every position up to `pruned_through` is gone).
pub fn cursor_expired(after: ChangeCursor, pruned_through: ChangeCursor) -> bool {
    after < pruned_through
}

/// Entries written before this instant may be removed.
pub fn retention_cutoff(now: OffsetDateTime, retention: Duration) -> OffsetDateTime {
    now - retention
}

/// Of the oldest entries `(position, at)` in position order, the last position
/// retention may remove: the longest prefix written before `cutoff`. Stopping
/// at the first younger entry keeps the removed set a prefix even when
/// instances' clocks disagree, so `pruned_through` means "everything up to here".
pub fn prunable_through(oldest: &[(i64, OffsetDateTime)], cutoff: OffsetDateTime) -> Option<i64> {
    oldest
        .iter()
        .take_while(|(_, at)| *at < cutoff)
        .last()
        .map(|(position, _)| *position)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("event_created"), None);
    }

    #[test]
    fn cancelled_status_makes_a_cancelled_entry() {
        assert_eq!(
            ChangeKind::for_event_status(EventStatus::Cancelled),
            ChangeKind::EventCancelled
        );
        assert_eq!(
            ChangeKind::for_event_status(EventStatus::Tentative),
            ChangeKind::EventChanged
        );
    }

    #[test]
    fn cursors_parse_only_what_the_feed_issues() {
        assert_eq!(ChangeCursor::parse("42"), Ok(ChangeCursor::at(42)));
        assert_eq!(ChangeCursor::at(42).to_string(), "42");
        for bad in ["", "-1", "abc", "1.5", "99999999999999999999", " "] {
            assert_eq!(ChangeCursor::parse(bad), Err(InvalidChangeCursor), "{bad}");
        }
    }

    #[test]
    fn a_cursor_below_the_pruned_position_has_expired() {
        let pruned = ChangeCursor::at(10);
        assert!(cursor_expired(ChangeCursor::at(9), pruned));
        assert!(!cursor_expired(ChangeCursor::at(10), pruned));
        assert!(!cursor_expired(ChangeCursor::at(11), pruned));
        assert!(!cursor_expired(ChangeCursor::START, ChangeCursor::START));
    }

    #[test]
    fn pruning_removes_only_the_old_prefix() {
        let cutoff = datetime!(2026-12-01 12:00 UTC);
        let old = datetime!(2026-12-01 11:00 UTC);
        let young = datetime!(2026-12-01 13:00 UTC);
        assert_eq!(
            prunable_through(&[(1, old), (2, old), (3, young), (4, old)], cutoff),
            Some(2)
        );
        assert_eq!(prunable_through(&[(1, young), (2, old)], cutoff), None);
        assert_eq!(prunable_through(&[], cutoff), None);
    }

    #[test]
    fn calendar_entries_carry_no_event_fields() {
        let entry = ChangeEntry {
            cursor: ChangeCursor::at(7),
            calendar_id: CalendarId::parse("7b0c3c8e-4a55-4d36-9e1f-0a6f2b7d9e11").unwrap(),
            user_id: "user-1".into(),
            kind: ChangeKind::CalendarConnected,
            at: datetime!(2026-12-01 12:00 UTC),
            event_id: None,
            event: EventState::NotAnEvent,
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["cursor"], "7");
        assert_eq!(json["kind"], "calendar_connected");
        assert!(json.get("event").is_none());
        assert!(json.get("event_id").is_none());
    }

    #[test]
    fn removed_events_carry_a_null_event() {
        let entry = ChangeEntry {
            cursor: ChangeCursor::at(8),
            calendar_id: CalendarId::parse("7b0c3c8e-4a55-4d36-9e1f-0a6f2b7d9e11").unwrap(),
            user_id: "user-1".into(),
            kind: ChangeKind::EventRemoved,
            at: datetime!(2026-12-01 12:00 UTC),
            event_id: Some("e1".into()),
            event: EventState::Removed,
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["event_id"], "e1");
        assert!(json["event"].is_null());
    }

    #[test]
    fn events_are_shown_as_the_events_api_shows_them() {
        let raw = serde_json::json!({
            "id": "e1", "status": "confirmed", "summary": "Standup",
            "start": {"dateTime": "2026-12-01T09:00:00Z"},
            "end": {"dateTime": "2026-12-01T09:15:00Z"},
            "updated": "2026-11-30T10:00:00.000Z", "etag": "\"1\""
        });
        let view = EventView::from_google_json("e1", &raw);
        assert_eq!(view.status, EventStatus::Confirmed);
        assert_eq!(view.summary.as_deref(), Some("Standup"));
        assert_eq!(view.updated, Some(datetime!(2026-11-30 10:00 UTC)));
        assert_eq!(
            view.start,
            Some(serde_json::json!({"dateTime": "2026-12-01T09:00:00Z"}))
        );
    }
}
