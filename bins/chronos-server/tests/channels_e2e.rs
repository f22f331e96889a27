//! The channel lifecycle end to end (SPEC sections 5 and 7): a real server on
//! port 0, a fresh database (SQLite; PostgreSQL too when
//! `CHRONOS_TEST_DATABASE_URL` is set), a fake Google and a fake clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use async_trait::async_trait;
use chronos_server::app::Overrides;
use chronos_server::config::RawConfig;
use chronos_server::workers::WorkerContext;
use chronos_server::workers::channels::{ChannelSettings, ChannelWorker};
use google_client::fakes::FakeGoogleCalendar;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_domain::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, GoogleError, WatchRequest,
    WatchedChannel,
};
use sync_domain::fakes::FakeClock;
use sync_domain::ports::{Clock, CredentialStore as _};
use sync_domain::{ChannelId, ChannelToken, GoogleCalendarId, RefreshToken, ResourceId, UserId};
use sync_store::Store;
use sync_store::calendars::NewChannel;
use sync_store::test_on_both_backends;
use sync_store::test_support::{Backend, TestDb, eventually};

const ADMIN: &str = "channels-admin-token-0123456789";
const BASE: &str = "https://chronos.example.com";

/// The configuration of the tests that drive a channel worker without a server.
fn raw_config(db: &TestDb) -> RawConfig {
    RawConfig {
        webhook_base_url: Some(BASE.into()),
        admin_token: Some(ADMIN.into()),
        ..support::test_config(db)
    }
}

/// The shared test server, with the fake clock it and its fake Google run on.
struct TestApp {
    app: support::TestApp,
    clock: Arc<FakeClock>,
}

impl std::ops::Deref for TestApp {
    type Target = support::TestApp;

    fn deref(&self) -> &support::TestApp {
        &self.app
    }
}

/// Starts a server with channel registration on, whose Google is `wrap` of
/// the fake (or the fake itself).
async fn spawn(
    backend: Backend,
    wrap: impl FnOnce(FakeGoogleCalendar) -> Arc<dyn CalendarApi>,
) -> Option<TestApp> {
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let google = FakeGoogleCalendar::with_clock(clock.clone());
    let overrides = Overrides {
        calendar: Some(wrap(google.clone())),
        clock: Some(clock.clone()),
        entropy: None,
        stream_heartbeat: None,
    };
    let app = support::spawn_app_over(
        backend,
        |raw| {
            raw.webhook_base_url = Some(BASE.into());
            raw.admin_token = Some(ADMIN.into());
        },
        google,
        overrides,
    )
    .await?;
    Some(TestApp { app, clock })
}

impl TestApp {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Stores credentials, creates the calendar at the fake Google, connects it via the API.
    async fn connect(&self, user: &str) -> String {
        let uid = UserId::parse(user).unwrap();
        self.google
            .add_calendar(&uid, &GoogleCalendarId::parse("primary").unwrap());
        let (status, _) = self
            .call(
                reqwest::Method::PUT,
                &format!("/internal/users/{user}/google-credentials"),
                Some(json!({"refresh_token": "1//refresh"})),
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/internal/calendars",
                Some(json!({"user_id": user, "google_calendar_id": "primary"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn calendar(&self, id: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/internal/calendars/{id}"),
            None,
        )
        .await
    }

    /// Waits until the calendar's current channel is not `previous`; returns it.
    async fn wait_for_channel(&self, id: &str, previous: Option<&str>) -> String {
        eventually("a new channel", || async {
            let (_, body) = self.calendar(id).await;
            match body["channel"]["id"].as_str() {
                Some(channel) if Some(channel) != previous => Ok(channel.to_owned()),
                _ => Err(body),
            }
        })
        .await
    }

    async fn notify(&self, channel: &str, token: &str, state: &str, number: u64) -> u16 {
        self.http
            .post(format!("{}/calendar/webhook", self.address))
            .header("X-Goog-Channel-ID", channel)
            .header("X-Goog-Channel-Token", token)
            .header("X-Goog-Resource-State", state)
            .header("X-Goog-Resource-ID", "fake-resource")
            .header("X-Goog-Message-Number", number.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn token_of(&self, channel: &str) -> String {
        self.google
            .watches()
            .into_iter()
            .find(|w| w.request.channel_id.as_str() == channel)
            .map(|w| w.request.token.expose().to_owned())
            .unwrap()
    }

    fn open(&self) -> Vec<String> {
        self.google
            .open_channels()
            .into_iter()
            .map(|c| c.channel_id.as_str().to_owned())
            .collect()
    }

    fn stopped(&self) -> Vec<String> {
        self.google
            .stops()
            .into_iter()
            .map(|c| c.channel_id.as_str().to_owned())
            .collect()
    }
}

fn plain(google: FakeGoogleCalendar) -> Arc<dyn CalendarApi> {
    Arc::new(google)
}

test_on_both_backends!(
    connect_then_full_sync_then_channel_exists,
    backend => connect_then_full_sync_then_channel_exists
);
async fn connect_then_full_sync_then_channel_exists(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    let user = UserId::parse("alice").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    app.google.add_calendar(&user, &primary);
    app.google.put_event(
        &user,
        &primary,
        json!({"id": "evt1", "status": "confirmed", "summary": "Standup",
               "start": {"dateTime": "2026-12-01T09:00:00Z"}, "end": {"dateTime": "2026-12-01T09:15:00Z"}}),
    );
    let id = app.connect("alice").await;
    let channel = app.wait_for_channel(&id, None).await;

    let watches = app.google.watches();
    assert_eq!(watches.len(), 1);
    assert_eq!(
        watches[0].request.address,
        format!("{BASE}/calendar/webhook")
    );
    assert_eq!(watches[0].request.channel_id.as_str(), channel);
    assert!(watches[0].request.token.expose().len() >= 43);

    // The mirror fills through the sync worker and is listed by the API.
    let body = eventually("the events listed", || async {
        let (status, body) = app
            .call(
                reqwest::Method::GET,
                &format!("/internal/calendars/{id}/events"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        if body["events"].as_array().is_some_and(|e| !e.is_empty()) {
            return Ok(body);
        }
        // The server's clock is a fake: let the debounce pass.
        app.clock.advance(Duration::from_millis(100));
        Err(body)
    })
    .await;
    assert_eq!(body["events"][0]["id"], "evt1");
    assert_eq!(body["events"][0]["summary"], "Standup");
    assert_eq!(
        body["events"][0]["start"]["dateTime"],
        "2026-12-01T09:00:00Z"
    );
    assert_eq!(body["next_cursor"], Value::Null);
    let (_, body) = app.calendar(&id).await;
    assert_eq!(body["full_sync_complete"], true, "{body}");
}

/// Google's side of `events.watch`: like the real one, it sends the `sync`
/// handshake to the webhook before the watch call returns, and records what
/// the server answered.
struct HandshakeFirst {
    google: FakeGoogleCalendar,
    webhook: Arc<Mutex<String>>,
    answers: Arc<Mutex<Vec<(u16, u16)>>>,
}

#[async_trait]
impl CalendarApi for HandshakeFirst {
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError> {
        let url = self.webhook.lock().unwrap().clone();
        let http = reqwest::Client::new();
        let send = |token: String| {
            http.post(url.clone())
                .header("X-Goog-Channel-ID", request.channel_id.as_str())
                .header("X-Goog-Channel-Token", token)
                .header("X-Goog-Resource-State", "sync")
                .header("X-Goog-Message-Number", "1")
                .send()
        };
        let right = send(request.token.expose().to_owned()).await.unwrap();
        // A wrong token gets 401 only for a channel the server knows (unknown ones get 200).
        let wrong = send("not-the-token".to_owned()).await.unwrap();
        self.answers
            .lock()
            .unwrap()
            .push((right.status().as_u16(), wrong.status().as_u16()));
        self.google.watch(user_id, calendar, request).await
    }

    async fn stop_channel(
        &self,
        user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError> {
        self.google
            .stop_channel(user_id, channel_id, resource_id)
            .await
    }

    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        self.google.list_events(user_id, calendar, query).await
    }

    async fn list_calendars(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CalendarListEntry>, GoogleError> {
        self.google.list_calendars(user_id).await
    }
}

test_on_both_backends!(
    handshake_before_watch_returns_is_accepted,
    backend => handshake_before_watch_returns_is_accepted
);
async fn handshake_before_watch_returns_is_accepted(backend: Backend) {
    let webhook = Arc::new(Mutex::new(String::new()));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (w, a) = (webhook.clone(), answers.clone());
    let Some(app) = spawn(backend, move |google| {
        Arc::new(HandshakeFirst {
            google,
            webhook: w,
            answers: a,
        })
    })
    .await
    else {
        return;
    };
    *webhook.lock().unwrap() = format!("{}/calendar/webhook", app.address);
    let id = app.connect("alice").await;
    app.wait_for_channel(&id, None).await;
    assert_eq!(answers.lock().unwrap().first(), Some(&(200, 401)));
}

test_on_both_backends!(renewal_overlaps_then_stops_the_old_channel, backend => renewal_overlap);
async fn renewal_overlap(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    app.google.set_max_channel_ttl(Duration::from_secs(3600));
    let id = app.connect("alice").await;
    let old = app.wait_for_channel(&id, None).await;
    let (_, body) = app.calendar(&id).await;
    let expires: time::OffsetDateTime = time::OffsetDateTime::parse(
        body["channel"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    // Renewal comes 12 to 15 minutes (jitter) before expiry of a one-hour channel.
    app.clock.advance(Duration::from_secs(49 * 60));
    let new = app.wait_for_channel(&id, Some(&old)).await;
    assert!(app.clock.now() < expires, "renewed after expiry");
    // Overlap: both open, and a notification on the old one is still accepted.
    assert_eq!(app.open(), vec![old.clone(), new.clone()]);
    assert_eq!(
        app.notify(&old, &app.token_of(&old), "exists", 5).await,
        200
    );
    assert_eq!(app.notify(&old, "wrong", "exists", 6).await, 401);
    assert!(app.stopped().is_empty());

    // After the overlap the old channel is stopped; the new one stays.
    app.clock.advance(Duration::from_secs(120));
    eventually("old channel stopped", || async {
        app.stopped() == vec![old.clone()]
    })
    .await;
    assert_eq!(app.open(), vec![new]);
}

test_on_both_backends!(disconnect_stops_the_channel, backend => disconnect_stops_the_channel);
async fn disconnect_stops_the_channel(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    let id = app.connect("alice").await;
    let channel = app.wait_for_channel(&id, None).await;
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/internal/calendars/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.stopped(), vec![channel.clone()]);
    assert!(app.open().is_empty());
    assert_eq!(app.calendar(&id).await.0, 404);
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/internal/calendars/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    // Notifications on the stopped channel reveal nothing and record nothing.
    assert_eq!(app.notify(&channel, "whatever", "exists", 9).await, 200);
}

test_on_both_backends!(
    disconnect_when_google_fails_leaves_the_stop_to_the_worker,
    backend => disconnect_when_google_fails
);
async fn disconnect_when_google_fails(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    let id = app.connect("alice").await;
    let channel = app.wait_for_channel(&id, None).await;
    app.google.fail_next(
        google_client::fakes::FakeMethod::StopChannel,
        [GoogleError::Transient("503".into())],
    );
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/internal/calendars/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.open(), vec![channel.clone()]);
    app.clock.advance(Duration::from_secs(3600));
    eventually("retried stop", || async { app.open().is_empty() }).await;
    assert_eq!(app.stopped(), vec![channel]);
}

test_on_both_backends!(
    crash_between_watch_and_persist_leaves_no_channel_open,
    backend => crash_between_watch_and_persist
);
async fn crash_between_watch_and_persist(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    // A previous process persisted a channel and Google created it, then the
    // process died before recording Google's answer.
    let user = UserId::parse("bob").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    app.google.add_calendar(&user, &primary);
    app.store
        .put_refresh_token(&user, &RefreshToken::new("1//r"))
        .await
        .unwrap();
    let (calendar, _) = app.store.connect_calendar(&user, &primary).await.unwrap();
    let orphan = NewChannel {
        channel_id: ChannelId::parse("orphan-channel").unwrap(),
        token: ChannelToken::new("orphan-token"),
    };
    app.store
        .insert_registering_channel(&calendar, &orphan)
        .await
        .unwrap();
    app.google
        .watch(
            &user,
            &primary,
            &WatchRequest {
                channel_id: orphan.channel_id.clone(),
                token: orphan.token.clone(),
                address: format!("{BASE}/calendar/webhook"),
                ttl: Duration::from_secs(604_800),
            },
        )
        .await
        .unwrap();

    let id = calendar.id.to_string();
    let current = app.wait_for_channel(&id, None).await;
    assert_ne!(current, "orphan-channel");
    app.clock.advance(Duration::from_secs(16 * 60));
    eventually("orphan stopped", || async {
        app.stopped() == vec!["orphan-channel".to_owned()]
    })
    .await;
    assert_eq!(app.open(), vec![current]);
}

test_on_both_backends!(push_not_supported_switches_to_polling, backend => push_not_supported);
async fn push_not_supported(backend: Backend) {
    let Some(app) = spawn(backend, plain).await else {
        return;
    };
    let user = UserId::parse("carol").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    app.google.add_calendar(&user, &primary);
    app.google.set_push_supported(&user, &primary, false);
    let id = app.connect("carol").await;
    let body = eventually("the switch to polling", || async {
        let (_, body) = app.calendar(&id).await;
        if body["push_mode"] == "polling" {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await;
    assert_eq!(body["channel"], Value::Null);
    assert!(app.open().is_empty());
}

test_on_both_backends!(two_instances_renew_a_channel_once, backend => two_instances);
async fn two_instances(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let store = db.store().await.with_clock(clock.clone());
    let google = FakeGoogleCalendar::with_clock(clock.clone());
    google.set_max_channel_ttl(Duration::from_secs(3600));
    let user = UserId::parse("dave").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    google.add_calendar(&user, &primary);
    store
        .put_refresh_token(&user, &RefreshToken::new("1//r"))
        .await
        .unwrap();
    store.connect_calendar(&user, &primary).await.unwrap();
    let config = Arc::new(raw_config(&db).validate().unwrap());
    let worker = |name: &str| {
        ChannelWorker::new(
            WorkerContext {
                store: store.clone(),
                calendar: Arc::new(google.clone()),
                clock: clock.clone(),
                config: config.clone(),
                instance_id: name.to_owned(),
                entropy: Arc::new(chronos_server::entropy::OsEntropy),
            },
            ChannelSettings::default(),
        )
    };
    let (a, b) = (worker("instance-a"), worker("instance-b"));
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(ra.unwrap().registered + rb.unwrap().registered, 1);
    assert_eq!(google.watches().len(), 1);

    clock.advance(Duration::from_secs(50 * 60));
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    assert_eq!(ra.unwrap().registered + rb.unwrap().registered, 1);
    assert_eq!(google.watches().len(), 2);
}

/// Google's side when the answer to `events.watch` is lost: the first watch
/// creates the channel but its answer is a 503, and the client's retry of the
/// same call (same channel id) gets `400 channelIdNotUnique`.
struct LostAnswer {
    google: FakeGoogleCalendar,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CalendarApi for LostAnswer {
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError> {
        let granted = self.google.watch(user_id, calendar, request).await;
        if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // 503 instead of `granted`; the generic retry re-sends the same id.
            let retry = self.google.watch(user_id, calendar, request).await;
            return Err(retry.err().unwrap_or(GoogleError::Transient("503".into())));
        }
        granted
    }

    async fn stop_channel(
        &self,
        user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError> {
        self.google
            .stop_channel(user_id, channel_id, resource_id)
            .await
    }

    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        self.google.list_events(user_id, calendar, query).await
    }

    async fn list_calendars(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CalendarListEntry>, GoogleError> {
        self.google.list_calendars(user_id).await
    }
}

test_on_both_backends!(
    a_channel_created_behind_a_lost_answer_is_stopped_within_a_minute,
    backend => lost_watch_answer
);
async fn lost_watch_answer(backend: Backend) {
    let Some(app) = spawn(backend, |google| {
        Arc::new(LostAnswer {
            google,
            lost: true.into(),
        })
    })
    .await
    else {
        return;
    };
    let id = app.connect("alice").await;
    eventually("the watch whose answer was lost", || async {
        app.google.watches().len() == 1
    })
    .await;
    let created = app.open();
    assert_eq!(created.len(), 1, "Google created the channel");

    // Within a minute the registration is retried, and every channel of the
    // calendar except the current one is stopped.
    app.clock.advance(Duration::from_secs(60));
    let current = app.wait_for_channel(&id, None).await;
    assert_ne!(current, created[0]);
    eventually("every channel but the current one stopped", || async {
        app.open() == vec![current.clone()]
    })
    .await;
    assert_eq!(app.stopped(), created);
}

/// Google whose first `events.watch` is slow: the fake clock passes the
/// channel lease before the call reaches Google, and the call waits until the
/// test lets it go on.
struct SlowFirstWatch {
    google: FakeGoogleCalendar,
    clock: Arc<FakeClock>,
    slow: std::sync::atomic::AtomicBool,
    entered: Arc<tokio::sync::Notify>,
    proceed: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl CalendarApi for SlowFirstWatch {
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError> {
        if self.slow.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.clock
                .advance(ChannelSettings::default().lease + Duration::from_secs(1));
            self.entered.notify_one();
            self.proceed.notified().await;
        }
        self.google.watch(user_id, calendar, request).await
    }

    async fn stop_channel(
        &self,
        user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError> {
        self.google
            .stop_channel(user_id, channel_id, resource_id)
            .await
    }

    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        self.google.list_events(user_id, calendar, query).await
    }

    async fn list_calendars(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CalendarListEntry>, GoogleError> {
        self.google.list_calendars(user_id).await
    }
}

/// A store, a fake Google and a connected calendar, for worker-level tests.
async fn worker_world(
    db: &TestDb,
) -> (
    Store,
    Arc<FakeClock>,
    FakeGoogleCalendar,
    sync_domain::CalendarId,
) {
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let store = db.store().await.with_clock(clock.clone());
    let google = FakeGoogleCalendar::with_clock(clock.clone());
    let user = UserId::parse("erin").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    google.add_calendar(&user, &primary);
    store
        .put_refresh_token(&user, &RefreshToken::new("1//r"))
        .await
        .unwrap();
    let (calendar, _) = store.connect_calendar(&user, &primary).await.unwrap();
    (store, clock, google, calendar.id)
}

fn worker_on(
    db: &TestDb,
    store: &Store,
    clock: &Arc<FakeClock>,
    calendar: Arc<dyn CalendarApi>,
    name: &str,
) -> ChannelWorker {
    ChannelWorker::new(
        WorkerContext {
            store: store.clone(),
            calendar,
            clock: clock.clone(),
            config: Arc::new(raw_config(db).validate().unwrap()),
            instance_id: name.to_owned(),
            entropy: Arc::new(chronos_server::entropy::OsEntropy),
        },
        ChannelSettings::default(),
    )
}

test_on_both_backends!(
    a_channel_granted_after_the_lease_lapsed_is_not_made_current,
    backend => lease_lapsed_during_watch
);
async fn lease_lapsed_during_watch(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, clock, google, calendar) = worker_world(&db).await;
    let (entered, proceed) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let slow = SlowFirstWatch {
        google: google.clone(),
        clock: clock.clone(),
        slow: true.into(),
        entered: entered.clone(),
        proceed: proceed.clone(),
    };
    let a = Arc::new(worker_on(&db, &store, &clock, Arc::new(slow), "instance-a"));
    let b = worker_on(&db, &store, &clock, Arc::new(google.clone()), "instance-b");

    let first = tokio::spawn({
        let a = a.clone();
        async move { a.tick().await.unwrap() }
    });
    entered.notified().await;
    // A's lease lapsed while its watch was on its way: B registers its own.
    assert_eq!(b.tick().await.unwrap().registered, 1);
    proceed.notify_one();
    let report = first.await.unwrap();
    assert_eq!((report.registered, report.lease_lost), (0, 1));

    let watches = google.watches();
    assert_eq!(watches.len(), 2);
    let (b_channel, a_channel) = (
        &watches[0].request.channel_id,
        &watches[1].request.channel_id,
    );
    let current = store.calendar(calendar).await.unwrap().unwrap().channel_id;
    assert_eq!(current.as_deref(), Some(b_channel.as_str()));
    // A's channel is stopped at Google, B's stays.
    b.tick().await.unwrap();
    assert_eq!(
        store.channel_state(a_channel).await.unwrap(),
        Some(sync_domain::channel::ChannelState::Stopped)
    );
    let open: Vec<ChannelId> = google
        .open_channels()
        .into_iter()
        .map(|c| c.channel_id)
        .collect();
    assert_eq!(open, vec![b_channel.clone()]);
}

test_on_both_backends!(
    stopped_channels_are_deleted_after_the_retention,
    backend => stopped_channel_retention
);
async fn stopped_channel_retention(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (store, clock, google, calendar) = worker_world(&db).await;
    let worker = worker_on(&db, &store, &clock, Arc::new(google.clone()), "instance-a");
    assert_eq!(worker.tick().await.unwrap().registered, 1);
    let channel = google.watches()[0].request.channel_id.clone();
    store.disconnect_calendar(calendar).await.unwrap();
    clock.advance(sync_domain::renewal::DISCONNECT_STOP_GRACE + Duration::from_secs(1));
    assert_eq!(worker.tick().await.unwrap().stopped, 1);
    let stopped = Some(sync_domain::channel::ChannelState::Stopped);
    assert_eq!(store.channel_state(&channel).await.unwrap(), stopped);

    let retention = sync_domain::renewal::STOPPED_CHANNEL_RETENTION;
    clock.advance(retention - Duration::from_secs(60));
    assert_eq!(worker.tick().await.unwrap().deleted, 0);
    assert_eq!(store.channel_state(&channel).await.unwrap(), stopped);
    clock.advance(Duration::from_secs(120));
    assert_eq!(worker.tick().await.unwrap().deleted, 1);
    assert_eq!(store.channel_state(&channel).await.unwrap(), None);
}
