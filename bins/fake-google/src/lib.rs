//! A stand-in for Google Calendar over HTTP, for trying Chronos locally and for
//! soak tests and benchmarks that run the real `chronos-server` binary.
//!
//! The model is [`google_client::fakes::FakeGoogleCalendar`] (events, versioned
//! sync tokens, pages, channels, injected failures); this crate only puts
//! Google's HTTP surface in front of it ([`google_api`]: the OAuth token
//! endpoint, `events.list`, `events.watch`, `channels.stop`,
//! `calendarList.list`, with Google's bodies and error shapes), pushes
//! notifications to open channels when events change ([`push`]), and adds a
//! control API under `/fake/` ([`control`]). See `docs/fake-google.md`.

pub mod control;
pub mod google_api;
pub mod push;
mod tokens;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use google_client::fakes::FakeGoogleCalendar;
use push::Pusher;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use sync_domain::ids::{GoogleCalendarId, UserId};
use sync_domain::notification::ResourceState;
use tokens::Tokens;

/// Google's HTTP surface over a [`FakeGoogleCalendar`]; cheap to clone (clones share state).
#[derive(Clone)]
pub struct FakeGoogle {
    inner: Arc<Inner>,
}

struct Inner {
    calendar: FakeGoogleCalendar,
    tokens: Mutex<Tokens>,
    pusher: Pusher,
    settings: Mutex<Settings>,
    /// `http://HOST:PORT/calendar/v3`, known once the server is bound.
    api_base_url: OnceLock<String>,
    next_event: Mutex<u64>,
}

/// Behaviour switches the control API can change at run time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Deliver the `sync` handshake and wait for its answer (up to 5 s) before
    /// answering `events.watch`, the harshest order Google may use.
    pub handshake_before_response: bool,
    /// Push `exists`/`not_exists` notifications when events change.
    pub push_enabled: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            handshake_before_response: true,
            push_enabled: true,
        }
    }
}

impl std::fmt::Debug for FakeGoogle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGoogle")
            .field("calendar", &self.inner.calendar)
            .field("api_base_url", &self.inner.api_base_url.get())
            .finish_non_exhaustive()
    }
}

impl Default for FakeGoogle {
    fn default() -> Self {
        Self::new(FakeGoogleCalendar::new())
    }
}

/// An early answer from a helper (boxed: `HttpResponse` is large).
type Refusal = Box<actix_web::HttpResponse>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few map operations; a panic cannot leave them half-done.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeGoogle {
    /// Google's HTTP surface over `calendar`.
    pub fn new(calendar: FakeGoogleCalendar) -> Self {
        Self {
            inner: Arc::new(Inner {
                calendar,
                tokens: Mutex::new(Tokens::default()),
                pusher: Pusher::new(),
                settings: Mutex::new(Settings::default()),
                api_base_url: OnceLock::new(),
                next_event: Mutex::new(0),
            }),
        }
    }

    /// The model behind the HTTP surface (events, failures, delays, watches, stops).
    pub fn calendar(&self) -> &FakeGoogleCalendar {
        &self.inner.calendar
    }

    /// The push sender (delivery log and counters).
    pub fn pusher(&self) -> &Pusher {
        &self.inner.pusher
    }

    /// The current behaviour switches.
    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Replaces the behaviour switches.
    pub fn set_settings(&self, settings: Settings) {
        *lock(&self.inner.settings) = settings;
    }

    /// `http://HOST:PORT/calendar/v3` once bound, else Google's production base.
    pub fn api_base_url(&self) -> String {
        self.inner
            .api_base_url
            .get()
            .cloned()
            .unwrap_or_else(|| google_client::DEFAULT_API_BASE_URL.to_owned())
    }

    /// The refresh token the fake accepts for `user_id`: `fake-refresh-<user_id>`.
    pub fn refresh_token_for(user_id: &str) -> String {
        format!("{}{user_id}", tokens::REFRESH_PREFIX)
    }

    /// Refuses the user's refresh token (`invalid_grant`) and forgets their access tokens.
    pub fn revoke_user(&self, user_id: &UserId) {
        lock(&self.inner.tokens).revoke(user_id);
    }

    /// Accepts the user's refresh token again after [`Self::revoke_user`].
    pub fn reinstate_user(&self, user_id: &UserId) {
        lock(&self.inner.tokens).reinstate(user_id);
    }

    /// Forgets the user's access tokens: their next API call gets 401 and must refresh.
    pub fn expire_access_tokens(&self, user_id: &UserId) {
        lock(&self.inner.tokens).expire_access(user_id);
    }

    /// How many token requests were answered (successes and refusals).
    pub fn token_requests(&self) -> usize {
        lock(&self.inner.tokens).requests
    }

    /// Creates or replaces an event (`id` taken from the JSON, generated if
    /// absent) and notifies the calendar's open channels with `exists`.
    /// Returns the event as stored.
    pub fn put_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        mut event: Value,
    ) -> Value {
        let id = match event.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let mut next = lock(&self.inner.next_event);
                *next += 1;
                format!("fakeevt{:08}", *next)
            }
        };
        if let Some(fields) = event.as_object_mut() {
            fields.insert("id".into(), json!(id));
        }
        self.inner.calendar.put_event(user_id, calendar, event);
        self.notify(user_id, calendar, &ResourceState::Exists);
        self.stored_event(user_id, calendar, &id)
            .unwrap_or(Value::Null)
    }

    /// Cancels an event and notifies with `not_exists`; `None` if there was no such event.
    pub fn delete_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        id: &str,
    ) -> Option<u64> {
        let version = self.inner.calendar.delete_event(user_id, calendar, id)?;
        self.notify(user_id, calendar, &ResourceState::NotExists);
        Some(version)
    }

    /// Creates `count` confirmed events `{prefix}{n:06}` (n from 0) and sends one
    /// `exists` notification at the end.
    pub fn bulk_create(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        prefix: &str,
        count: usize,
    ) {
        for n in 0..count {
            let minute = n % 60;
            let hour = (n / 60) % 24;
            self.inner.calendar.put_event(
                user_id,
                calendar,
                json!({"id": format!("{prefix}{n:06}"), "status": sync_domain::EventStatus::Confirmed.as_str(),
                       "summary": format!("Bulk event {n}"),
                       "start": {"dateTime": format!("2030-01-01T{hour:02}:{minute:02}:00Z")},
                       "end": {"dateTime": format!("2030-01-01T{hour:02}:{minute:02}:30Z")}}),
            );
        }
        self.notify(user_id, calendar, &ResourceState::Exists);
    }

    /// The event as the fake holds it (cancelled ones included).
    pub fn stored_event(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        id: &str,
    ) -> Option<Value> {
        self.inner
            .calendar
            .events(user_id, calendar)
            .into_iter()
            .find(|event| event.id == id)
            .map(|event| event.raw)
    }

    /// Sends `state` to every open, unexpired channel watching the calendar (in the background).
    pub fn notify(&self, user_id: &UserId, calendar: &GoogleCalendarId, state: &ResourceState) {
        if !self.settings().push_enabled {
            return;
        }
        let open = self.inner.calendar.open_channels();
        let now = time::OffsetDateTime::now_utc();
        for watch in self.inner.calendar.watches() {
            let is_open = open.iter().any(|handle| {
                handle.channel_id == watch.granted.channel_id
                    && handle.resource_id == watch.granted.resource_id
            });
            let expired = watch.granted.expires_at.is_some_and(|at| at <= now);
            if is_open && !expired && watch.user_id == *user_id && watch.calendar == *calendar {
                let notification =
                    self.inner
                        .pusher
                        .prepare(&watch, state, &self.resource_uri(calendar));
                self.inner.pusher.send_in_background(notification);
            }
        }
    }

    /// What Google puts in `X-Goog-Resource-URI` for a calendar's events.
    fn resource_uri(&self, calendar: &GoogleCalendarId) -> String {
        let mut url = self.api_base_url();
        url.push_str("/calendars/");
        url.push_str(&urlencode_segment(calendar.as_str()));
        url.push_str("/events?alt=json");
        url
    }
}

/// Percent-encodes one path segment (unreserved characters kept).
fn urlencode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Registers every route (Google's and `/fake/`) on an actix `App`.
pub fn config(google: FakeGoogle) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(google))
            // Unparsable bodies get Google's error shape, not actix's plain text.
            .app_data(web::JsonConfig::default().error_handler(|error, _| {
                let response =
                    google_api::error_response(400, "global", "parseError", "Parse Error");
                actix_web::error::InternalError::from_response(error, response).into()
            }))
            .configure(google_api::config)
            .configure(control::config);
    }
}

/// A fake Google serving HTTP in the background of the current Tokio runtime.
#[derive(Debug)]
pub struct RunningFakeGoogle {
    /// The shared state; changes made through it are pushed like control-API ones.
    pub google: FakeGoogle,
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The port it listens on.
    pub port: u16,
    handle: ServerHandle,
}

impl RunningFakeGoogle {
    /// The value for `CHRONOS_GOOGLE_API_BASE_URL`.
    pub fn api_base_url(&self) -> String {
        format!("{}/calendar/v3", self.address)
    }

    /// The value for `CHRONOS_GOOGLE_TOKEN_URL`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.address)
    }

    /// Stops the server (in-flight requests are dropped).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Builds the server on `listener` without running it; the caller awaits or spawns it.
pub fn server(
    listener: TcpListener,
    google: &FakeGoogle,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, u16)> {
    let port = listener.local_addr()?.port();
    let host = match listener.local_addr()?.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip => ip.to_string(),
    };
    // First bind wins; a second server over the same state keeps the first base.
    let _ = google
        .inner
        .api_base_url
        .set(format!("http://{host}:{port}/calendar/v3"));
    let shared = google.clone();
    let server = HttpServer::new(move || App::new().configure(config(shared.clone())))
        .workers(workers)
        .disable_signals()
        .listen(listener)?
        .run();
    Ok((server, port))
}

/// Starts a fake Google on `127.0.0.1:0` in the background of the current Tokio runtime.
pub fn spawn(google: FakeGoogle) -> std::io::Result<RunningFakeGoogle> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let (server, port) = server(listener, &google, 2)?;
    let handle = server.handle();
    tokio::spawn(server);
    Ok(RunningFakeGoogle {
        google,
        address: format!("http://127.0.0.1:{port}"),
        port,
        handle,
    })
}
