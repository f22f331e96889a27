//! Chronos calendar sync: the domain.
//!
//! Pure, synchronous logic and the ports (traits) behind which every external
//! system sits. This crate depends on no other workspace crate and does no I/O:
//! - [`ids`] and [`secret`]: newtypes that parse, so invalid values stop at the edge;
//! - [`notification`]: a Google push notification parsed from its headers;
//! - [`verification`]: the webhook's decision table (SPEC section 2);
//! - [`schedule`]: the sync coalescing rule (SPEC section 6);
//! - [`channel`]: the watch channel's states, transitions and the channel worker's store port;
//! - [`renewal`]: when channels are renewed, retried and given up on (SPEC section 7);
//! - [`admin`]: the internal API's port and views (SPEC section 5);
//! - [`changes`]: the change feed's entries, cursors, retention rules and port;
//! - [`sync`]: the sync engine's rules (backoff, polling, lease) and its store port;
//! - [`redact`]: passwords out of URLs before they are shown;
//! - [`sync_state`]: a calendar's sync state and its transitions;
//! - [`repeats`]: when a failure that repeats identically on the same page stops retrying;
//! - [`event_status`]: a mirrored event's status (confirmed, tentative, cancelled);
//! - [`retry`]: the one retry policy (backoff, jitter, caps, checked time arithmetic);
//! - [`page`]: an `events.list` answer decoded, skipping items that are not events;
//! - [`ports`]: the traits the other crates implement or consume;
//! - `openapi` (feature `openapi`): the OpenAPI schemas of these types, for the generated document.

pub mod admin;
pub mod calendar;
pub mod changes;
pub mod channel;
pub mod event_status;
pub mod ids;
pub mod notification;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod page;
pub mod ports;
pub mod redact;
pub mod renewal;
pub mod repeats;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod sync;
pub mod sync_state;
pub mod verification;

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;

pub use event_status::EventStatus;
pub use ids::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
pub use notification::{MessageNumber, Notification, NotificationError, ResourceState};
pub use secret::{AccessToken, ChannelToken, RefreshToken};
pub use sync_state::SyncState;
pub use verification::{ChannelRecord, Verdict, verify};
