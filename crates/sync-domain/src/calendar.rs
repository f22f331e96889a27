//! The Google Calendar port: the calls Chronos makes, their data and their errors.

use crate::ids::{ChannelId, GoogleCalendarId, ResourceId, UserId};
use crate::secret::ChannelToken;
use async_trait::async_trait;
use std::time::Duration;
use time::OffsetDateTime;

/// Google's answers, as a typed taxonomy (parsed from `error.errors[].reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoogleError {
    /// 410 `fullSyncRequired` (and `updatedMinTooLongAgo`, `deleted`): the sync token is dead.
    #[error("full sync required")]
    FullSyncRequired,
    /// 403 `rateLimitExceeded` / `userRateLimitExceeded` / `quotaExceeded`, or 429.
    #[error("rate limited by Google")]
    RateLimited { retry_after: Option<Duration> },
    /// 401 even after one refresh of the access token.
    #[error("unauthorized")]
    Unauthorized,
    /// The refresh token was refused (`invalid_grant`): the user must sign in again.
    #[error("credentials refused by Google (invalid_grant)")]
    InvalidGrant,
    /// No credentials are stored for the user.
    #[error("no Google credentials for this user")]
    NoCredentials,
    /// 404: the calendar (or channel) does not exist at Google.
    #[error("not found at Google")]
    NotFound,
    /// 403 `pushNotSupportedForRequestedResource` on watch.
    #[error("push notifications not supported for this calendar")]
    PushNotSupported,
    /// 5xx, timeouts, connection errors, transient token-endpoint failures.
    #[error("transient error: {0}")]
    Transient(String),
    /// Anything else, with Google's message.
    #[error("Google answered {status} {reason}: {message}")]
    Other {
        status: u16,
        reason: String,
        message: String,
    },
}

/// `events.watch` arguments (besides the user and calendar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub channel_id: ChannelId,
    pub token: ChannelToken,
    /// `{webhook_base_url}/calendar/webhook`.
    pub address: String,
    /// Lifetime asked for (`params.ttl`); Google may grant less.
    pub ttl: Duration,
}

/// What `events.watch` granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedChannel {
    pub channel_id: ChannelId,
    pub resource_id: ResourceId,
    /// Parsed from Google's `expiration` (unix milliseconds as a string).
    pub expires_at: Option<OffsetDateTime>,
}

/// One `events.list` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// `None`: full sync; `Some`: incremental from this `syncToken`.
    pub sync_token: Option<String>,
    pub page_token: Option<String>,
    /// At most 2500.
    pub max_results: u32,
}

/// An event as Google returned it: the fields the mirror indexes, plus the whole JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct GoogleEvent {
    pub id: String,
    /// `confirmed`, `tentative` or `cancelled`.
    pub status: crate::EventStatus,
    pub updated: Option<OffsetDateTime>,
    pub etag: Option<String>,
    pub summary: Option<String>,
    /// The event resource exactly as Google sent it.
    pub raw: serde_json::Value,
}

/// One page of `events.list`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventsPage {
    pub items: Vec<GoogleEvent>,
    pub next_page_token: Option<String>,
    /// Present on the last page only.
    pub next_sync_token: Option<String>,
    /// Items left out because they are not events (see [`crate::page`]).
    pub skipped: Vec<SkippedItem>,
}

/// An `events.list` item that was left out, by position on its page (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedItem {
    pub position: usize,
    pub reason: SkipReason,
}

/// Why an item was left out; names no content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The item is not a JSON object.
    #[error("not an object")]
    NotAnObject,
    /// The item has no non-empty string `id`.
    #[error("no id")]
    NoId,
}

/// An entry of `calendarList.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarListEntry {
    pub id: GoogleCalendarId,
    pub summary: Option<String>,
    pub primary: bool,
    pub access_role: Option<String>,
}

/// Google Calendar, as Chronos uses it. Implementations obtain the user's access
/// token themselves (refreshing as needed) and retry rate limits and transient
/// errors within their configured bounds before giving up.
#[async_trait]
pub trait CalendarApi: Send + Sync + 'static {
    /// `events.watch`: open a push channel on a calendar's events.
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError>;

    /// `channels.stop`; a 404 counts as already stopped (`Ok`).
    async fn stop_channel(
        &self,
        user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError>;

    /// One page of `events.list` (`showDeleted=true`).
    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError>;

    /// `calendarList.list`, all pages.
    async fn list_calendars(&self, user_id: &UserId)
    -> Result<Vec<CalendarListEntry>, GoogleError>;
}
