//! Chronos calendar sync: the only code that talks to Google.
//!
//! It owns the OAuth access tokens ([`TokenSource`]: cached, refreshed through
//! `oauth2` with the user's stored refresh token, one refresh per user at a
//! time) and the Calendar API calls ([`GoogleCalendarClient`], the real
//! [`CalendarApi`]): `events.watch`, `channels.stop`, `events.list` and
//! `calendarList.list`, with Google's error bodies mapped to [`GoogleError`]
//! and rate limits and transient failures retried under a [`RetryPolicy`].
//! With the `fakes` feature, [`fakes::FakeGoogleCalendar`] stands in for Google.

mod client;
mod config;
mod errors;
mod events;
mod retry;
mod token;

#[cfg(feature = "fakes")]
pub mod fakes;

pub use client::GoogleCalendarClient;
pub use config::{
    ClientSecret, DEFAULT_API_BASE_URL, DEFAULT_TOKEN_URL, GoogleConfig, RetryPolicy,
};
pub use events::{MAX_EVENTS_PAGE, event_pages, parse_event};
pub use sync_domain::calendar::{CalendarApi, GoogleError};
pub use token::{BuildError, REFRESH_MARGIN, TokenSource};

/// Google calls, one per HTTP exchange (retries count again), by `method`
/// (`events.list`, `events.watch`, `channels.stop`, `calendarList.list`, and
/// `oauth.token` for access-token refreshes) and `status` (the HTTP status;
/// `error` when no answer came; for `oauth.token` failures, `invalid_grant` or `error`).
pub const CALLS_METRIC: &str = "chronos_google_api_calls_total";
