//! The administration port: what the internal API (SPEC section 5) and the
//! operator's CLI need from the store, with the views they show.

use crate::calendar::CalendarApi;
use crate::ids::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
use crate::ports::StoreError;
use crate::secret::RefreshToken;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use time::OffsetDateTime;

/// A calendar's current channel as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Channel))]
pub struct ChannelView {
    /// The watch channel's id (a UUID this service created).
    pub id: String,
    /// When Google lets the channel expire.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub expires_at: Option<OffsetDateTime>,
}

/// A connected calendar as the API shows it (`GET /internal/calendars/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Calendar))]
pub struct CalendarView {
    pub id: CalendarId,
    /// The Chronos user who owns the calendar.
    pub user_id: String,
    /// Google's calendar id, e.g. `primary`.
    pub google_calendar_id: String,
    /// Where the calendar's sync stands.
    pub sync_state: crate::SyncState,
    /// When the last sync completed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_sync_at: Option<OffsetDateTime>,
    /// Whether the first full sync completed (the mirror is whole).
    pub full_sync_complete: bool,
    /// The current watch channel, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub channel: Option<ChannelView>,
    /// Why the last sync failed, while it is failing.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_error: Option<String>,
    /// `push` or `polling` (an addition to the SPEC's fields).
    pub push_mode: crate::channel::PushMode,
}

/// A mirrored event as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Event))]
pub struct EventView {
    /// Google's event id.
    pub id: String,
    /// Google's status of the event.
    pub status: crate::EventStatus,
    /// The event's title.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub summary: Option<String>,
    /// Google's `start` object (`dateTime`/`date`, `timeZone`), as mirrored.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, required = true))]
    pub start: Option<serde_json::Value>,
    /// Google's `end` object, as mirrored.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, required = true))]
    pub end: Option<serde_json::Value>,
    /// When Google last changed the event.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub updated: Option<OffsetDateTime>,
}

/// Where a page of events starts: after this Google event id (ids sort as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor(String);

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API issued")]
pub struct InvalidCursor;

impl EventCursor {
    /// The cursor that continues after `event_id`.
    pub fn after(event_id: &str) -> Self {
        Self(event_id.to_owned())
    }

    /// Parses the opaque form given to callers.
    pub fn parse(opaque: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(opaque).map_err(|_| InvalidCursor)?;
        let id = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
        if id.is_empty() {
            return Err(InvalidCursor);
        }
        Ok(Self(id))
    }

    /// The opaque form given to callers.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// The event id the page starts after.
    pub fn event_id(&self) -> &str {
        &self.0
    }
}

/// The opaque form: unpadded base64url of a non-empty event id.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventCursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::string(
            "Opaque: only a `next_cursor` this API returned is valid; anything else is refused with 400.",
        )
        .min_length(Some(2))
        .pattern(Some(EVENT_CURSOR_PATTERN))
        .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventCursor {}

/// The alphabet of an [`EventCursor`]'s opaque form (unpadded base64url), as
/// an ECMA-262 pattern; a text matching it may still be refused.
pub const EVENT_CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]+$";

/// A channel that must be stopped at Google.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelToStop {
    pub channel_id: ChannelId,
    /// Needed by `channels.stop`; `None` if no resource id is known yet for the
    /// calendar (an abandoned registration), in which case the stop waits.
    pub resource_id: Option<ResourceId>,
    pub user_id: UserId,
    pub google_calendar_id: GoogleCalendarId,
    /// Failed stop attempts so far.
    pub stop_attempts: i32,
    /// When the channel expires at Google (at the latest); past it there is nothing to stop.
    pub expires_at: Option<OffsetDateTime>,
}

/// What the internal API and the CLI need from the store.
#[async_trait]
pub trait CalendarAdmin: StopLedger {
    /// Stores or replaces a user's refresh token (clears a needs-reauth mark).
    async fn put_credentials(
        &self,
        user_id: &UserId,
        token: &RefreshToken,
    ) -> Result<(), StoreError>;

    /// Connects a calendar (`true`) or returns the existing one for the pair (`false`).
    async fn connect(
        &self,
        user_id: &UserId,
        google_calendar_id: &GoogleCalendarId,
    ) -> Result<(CalendarView, bool), StoreError>;

    /// One calendar, if connected.
    async fn calendar(&self, id: CalendarId) -> Result<Option<CalendarView>, StoreError>;

    /// All calendars, or one user's.
    async fn calendars(&self, user_id: Option<&UserId>) -> Result<Vec<CalendarView>, StoreError>;

    /// Up to `limit` mirrored, not cancelled events after `cursor`, ordered by
    /// event id; `None` if the calendar is not connected.
    async fn events(
        &self,
        id: CalendarId,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<Option<Vec<EventView>>, StoreError>;

    /// Records a request to sync now; `false` if the calendar is not connected.
    async fn request_sync(&self, id: CalendarId) -> Result<bool, StoreError>;

    /// Disconnects a calendar: its channels are marked for stopping, its state
    /// and mirrored events deleted. Returns the channels to stop, or `None` if
    /// the calendar was not connected.
    async fn disconnect(&self, id: CalendarId) -> Result<Option<Vec<ChannelToStop>>, StoreError>;
}

/// Where the outcome of a `channels.stop` is recorded: the part of the store
/// that the internal API, the CLI and the channel worker share.
#[async_trait]
pub trait StopLedger: Send + Sync + 'static {
    /// Records that a channel is stopped at Google.
    async fn channel_stopped(&self, channel_id: &ChannelId) -> Result<(), StoreError>;

    /// Records a failed stop; the channel is tried again at `retry_at`.
    async fn channel_stop_failed(
        &self,
        channel_id: &ChannelId,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// How a stop attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Stopped at Google (or Google no longer knew it) and recorded.
    Stopped,
    /// Failed, or no resource id is known yet; recorded for a retry at the given instant.
    RetryAt(OffsetDateTime),
}

/// Stops one channel at Google and records the outcome: the one procedure the
/// internal API, the CLI and the channel worker share. `jitter` in `[0, 1)`.
pub async fn stop_channel<L: StopLedger + ?Sized>(
    admin: &L,
    google: &dyn CalendarApi,
    channel: &ChannelToStop,
    now: OffsetDateTime,
    jitter: f64,
) -> Result<StopOutcome, StoreError> {
    let failures = u32::try_from(channel.stop_attempts.max(0))
        .unwrap_or(0)
        .saturating_add(1);
    let retry_at = crate::retry::RetryPolicy::CHANNEL.retry_at(now, failures, None, jitter);
    if channel.expires_at.is_some_and(|expires| expires <= now) {
        // Google already dropped it: a stop would only answer 404.
        admin.channel_stopped(&channel.channel_id).await?;
        return Ok(StopOutcome::Stopped);
    }
    let Some(resource_id) = &channel.resource_id else {
        admin
            .channel_stop_failed(
                &channel.channel_id,
                "resource id not known yet; waiting for the calendar's next registration",
                retry_at,
            )
            .await?;
        return Ok(StopOutcome::RetryAt(retry_at));
    };
    match google
        .stop_channel(&channel.user_id, &channel.channel_id, resource_id)
        .await
    {
        Ok(()) => {
            admin.channel_stopped(&channel.channel_id).await?;
            Ok(StopOutcome::Stopped)
        }
        Err(error) => {
            admin
                .channel_stop_failed(&channel.channel_id, &error.to_string(), retry_at)
                .await?;
            Ok(StopOutcome::RetryAt(retry_at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let cursor = EventCursor::after("evt_42");
        assert_eq!(EventCursor::parse(&cursor.encode()), Ok(cursor));
        assert_eq!(EventCursor::parse("!!!"), Err(InvalidCursor));
        assert_eq!(EventCursor::parse(""), Err(InvalidCursor));
    }

    proptest! {
        #[test]
        fn any_cursor_text_parses_or_is_refused_without_panic(s in "\\PC{0,80}") {
            let _ = EventCursor::parse(&s);
        }
    }
}
