//! Done means (issue 13): a consumer following `GET /internal/changes` alone
//! through creates, updates, deletes, a 410 full resync and a disconnect ends
//! with exactly the mirror's state, on both backends. Also the feed's HTTP
//! contract: 410 for a cursor older than the retention, and the event stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use support::{ADMIN_TOKEN, TestApp, spawn_app, spawn_app_overriding};
use sync_domain::{CalendarId, GoogleCalendarId, UserId};
use sync_store::test_on_both_backends;
use sync_store::test_support::{Backend, eventually};

fn user() -> UserId {
    UserId::parse("user-1").unwrap()
}

fn gcal(id: &str) -> GoogleCalendarId {
    GoogleCalendarId::parse(id).unwrap()
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = get(app, path).await;
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().await.unwrap()
}

async fn connect(app: &TestApp, google_calendar_id: &str) -> CalendarId {
    let response = app
        .http
        .post(format!("{}/internal/calendars", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"user_id": "user-1", "google_calendar_id": google_calendar_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();
    CalendarId::parse(body["id"].as_str().unwrap()).unwrap()
}

async fn request_sync(app: &TestApp, id: CalendarId) {
    let response = app
        .http
        .post(format!("{}/internal/calendars/{id}/sync", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

/// Waits until the calendar has no sync pending or running.
async fn settled(app: &TestApp, id: CalendarId) {
    eventually(&format!("{id} to settle"), || async {
        let calendar = app.store.calendar(id).await.unwrap().unwrap();
        if calendar.sync_requested_at.is_none()
            && calendar.sync_state == sync_domain::SyncState::Idle
            && calendar.full_sync_complete
        {
            Ok(())
        } else {
            Err(format!("{calendar:?}"))
        }
    })
    .await;
}

async fn sync_and_settle(app: &TestApp, id: CalendarId) {
    request_sync(app, id).await;
    settled(app, id).await;
}

/// What a consumer rebuilds from the feed alone: per calendar, its visible events.
#[derive(Debug, Default)]
struct Replica {
    calendars: BTreeMap<String, BTreeMap<String, Value>>,
    kinds: Vec<String>,
    cursor: String,
}

impl Replica {
    fn apply(&mut self, entry: &Value) {
        let calendar = entry["calendar_id"].as_str().unwrap().to_owned();
        let kind = entry["kind"].as_str().unwrap();
        self.kinds.push(kind.to_owned());
        match kind {
            "calendar_connected" => {
                self.calendars.entry(calendar).or_default();
            }
            "calendar_disconnected" => {
                self.calendars.remove(&calendar);
            }
            "event_changed" => {
                let id = entry["event_id"].as_str().unwrap().to_owned();
                self.calendars
                    .entry(calendar)
                    .or_default()
                    .insert(id, entry["event"].clone());
            }
            "event_cancelled" | "event_removed" => {
                let id = entry["event_id"].as_str().unwrap();
                self.calendars.entry(calendar).or_default().remove(id);
            }
            _ => {}
        }
    }

    /// Reads the feed until it is caught up (a long poll that ends empty).
    async fn catch_up(&mut self, app: &TestApp) {
        loop {
            let page = get_json(
                app,
                &format!("/internal/changes?after={}&limit=7&wait=1", self.cursor),
            )
            .await;
            let changes = page["changes"].as_array().unwrap();
            for entry in changes {
                self.apply(entry);
            }
            self.cursor = page["next_cursor"].as_str().unwrap().to_owned();
            if changes.is_empty() {
                return;
            }
        }
    }
}

/// The mirror as the events API shows it, for every connected calendar.
async fn mirror(app: &TestApp) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let calendars = get_json(app, "/internal/calendars?user_id=user-1").await;
    for calendar in calendars["calendars"].as_array().unwrap() {
        let id = calendar["id"].as_str().unwrap();
        let events = get_json(app, &format!("/internal/calendars/{id}/events?limit=1000")).await;
        let events = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].as_str().unwrap().to_owned(), e.clone()))
            .collect();
        out.insert(id.to_owned(), events);
    }
    out
}

async fn a_consumer_rebuilds_the_mirror_from_the_feed_alone(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let response = app
        .http
        .put(format!(
            "{}/internal/users/user-1/google-credentials",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"refresh_token": "1//refresh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // A new consumer starts from now.
    let start = get_json(&app, "/internal/changes").await;
    assert_eq!(start["changes"], json!([]));
    let mut replica = Replica {
        cursor: start["next_cursor"].as_str().unwrap().to_owned(),
        ..Replica::default()
    };

    for calendar in ["primary", "work"] {
        app.google.add_calendar(&user(), &gcal(calendar));
        for n in 0..3 {
            app.google.create_event(
                &user(),
                &gcal(calendar),
                &format!("{calendar}-{n}"),
                "first",
            );
        }
    }
    let primary = connect(&app, "primary").await;
    let work = connect(&app, "work").await;
    settled(&app, primary).await;
    settled(&app, work).await;
    replica.catch_up(&app).await;
    assert_eq!(
        replica.calendars,
        mirror(&app).await,
        "after the first full syncs"
    );

    // Creates, updates, deletes.
    app.google
        .create_event(&user(), &gcal("primary"), "primary-new", "created");
    app.google
        .update_event(&user(), &gcal("primary"), "primary-0", "updated");
    app.google
        .delete_event(&user(), &gcal("primary"), "primary-1");
    sync_and_settle(&app, primary).await;
    replica.catch_up(&app).await;
    assert_eq!(
        replica.calendars,
        mirror(&app).await,
        "after incremental changes"
    );

    // A 410: the sync token expires; the full resync removes what is gone.
    app.google.delete_event(&user(), &gcal("work"), "work-2");
    app.google.purge_cancelled(&user(), &gcal("work"));
    app.google
        .update_event(&user(), &gcal("work"), "work-0", "during resync");
    app.google.invalidate_sync_tokens(&user(), &gcal("work"));
    sync_and_settle(&app, work).await;
    replica.catch_up(&app).await;
    assert_eq!(
        replica.calendars,
        mirror(&app).await,
        "after a 410 full resync"
    );

    // A disconnect.
    let response = app
        .http
        .delete(format!("{}/internal/calendars/{work}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    replica.catch_up(&app).await;
    let mirrored = mirror(&app).await;
    assert_eq!(replica.calendars, mirrored, "after a disconnect");
    assert_eq!(mirrored.len(), 1);
    let kinds: HashSet<&str> = replica.kinds.iter().map(String::as_str).collect();
    for kind in [
        "calendar_connected",
        "calendar_full_sync_complete",
        "event_changed",
        "event_cancelled",
        "event_removed",
        "calendar_disconnected",
    ] {
        assert!(kinds.contains(kind), "{kind} was never seen: {kinds:?}");
    }
}

test_on_both_backends!(
    a_consumer_following_the_feed_ends_with_the_mirrors_state,
    backend => a_consumer_rebuilds_the_mirror_from_the_feed_alone
);

async fn a_cursor_older_than_the_retention_gets_410(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.google.add_calendar(&user(), &gcal("primary"));
    connect(&app, "primary").await;
    connect(&app, "other").await;
    let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    assert!(app.store.prune_changes(future, 1).await.unwrap() == 1);
    let response = get(&app, "/internal/changes?after=0").await;
    assert_eq!(response.status().as_u16(), 410);
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("resync from the events API"), "{detail}");
}

test_on_both_backends!(
    a_cursor_older_than_the_retention_answers_410,
    backend => a_cursor_older_than_the_retention_gets_410
);

async fn invalid_parameters_get_400(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for query in [
        "after=abc",
        "limit=0",
        "limit=1001",
        "wait=61",
        "wait=-1",
        "calendar_id=nope",
    ] {
        let response = get(&app, &format!("/internal/changes?{query}")).await;
        assert_eq!(response.status().as_u16(), 400, "{query}");
    }
    let response = app
        .http
        .get(format!("{}/internal/changes", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

test_on_both_backends!(invalid_feed_parameters_answer_400, backend => invalid_parameters_get_400);

/// Reads the stream until `count` events arrived; returns their (id, data).
async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

async fn the_stream_sends_entries_with_ids_and_resumes(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut stream = get(&app, "/internal/changes/stream").await;
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    connect(&app, "a").await;
    connect(&app, "b").await;
    let events = read_events(&mut stream, 2).await;
    assert_eq!(events[0].1["kind"], "calendar_connected");
    assert_eq!(events[0].0, events[0].1["cursor"].as_str().unwrap());
    drop(stream);
    // Reconnecting with the first id replays from the second.
    let mut resumed = app
        .http
        .get(format!("{}/internal/changes/stream", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("Last-Event-ID", events[0].0.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    let again = read_events(&mut resumed, 1).await;
    assert_eq!(again[0].0, events[1].0);
}

test_on_both_backends!(
    the_event_stream_sends_ids_and_resumes_from_last_event_id,
    backend => the_stream_sends_entries_with_ids_and_resumes
);

/// Reads raw frames (up to each blank line) until `enough` holds of those read
/// so far; fails after 10 s.
async fn read_frames(
    response: &mut reqwest::Response,
    enough: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut buffer = String::new();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !enough(&frames) {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out; frames so far: {frames:?}"))
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            frames.push(buffer.drain(..end + 2).collect());
        }
    }
    frames
}

const HEARTBEAT_FRAME: &str = ": heartbeat\n\n";

async fn a_quiet_stream_sends_a_heartbeat_comment_each_interval(backend: Backend) {
    let heartbeat = Duration::from_millis(300);
    let Some(app) = spawn_app_overriding(
        backend,
        |_| {},
        |overrides| overrides.stream_heartbeat = Some(heartbeat),
    )
    .await
    else {
        return;
    };
    let opened = Instant::now();
    let mut stream = get(&app, "/internal/changes/stream").await;
    assert_eq!(stream.status().as_u16(), 200);
    let beats = |frames: &[String]| frames.iter().filter(|f| *f == HEARTBEAT_FRAME).count();
    let frames = read_frames(&mut stream, |frames| beats(frames) >= 3).await;
    assert_eq!(frames[0], ": connected\n\n");
    assert!(
        frames[1..].iter().all(|f| f == HEARTBEAT_FRAME),
        "only comments while nothing happens: {frames:?}"
    );
    assert!(
        opened.elapsed() >= heartbeat * 3,
        "one comment per interval, not faster: {:?}",
        opened.elapsed()
    );
    // An entry goes out as an event between the comments, which then go on.
    connect(&app, "a").await;
    let frames = read_frames(&mut stream, |frames| {
        frames.iter().any(|f| f.starts_with("id: ")) && beats(frames) >= 1
    })
    .await;
    let event = frames.iter().find(|f| f.starts_with("id: ")).unwrap();
    assert!(event.contains("calendar_connected"), "{event}");
}

test_on_both_backends!(
    the_event_stream_sends_a_heartbeat_comment_every_interval,
    backend => a_quiet_stream_sends_a_heartbeat_comment_each_interval
);
