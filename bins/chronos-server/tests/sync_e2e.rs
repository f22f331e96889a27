//! Done means: with the server running against a fake Google, a change made
//! there reaches the mirror within the debounce plus one sync after its
//! notification. Also the measurement of that latency (ignored by default:
//! `cargo test -p chronos-server --test sync_e2e -- --ignored --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};
use support::{TestApp, spawn_app_with};
use sync_domain::{GoogleCalendarId, UserId};
use sync_store::calendars::Calendar;
use sync_store::test_support::Backend;
use sync_store::test_support::seed_calendar;

const CHANNEL: &str = "0f6a3c5e-2b1d-4e8f-9a7b-6c5d4e3f2a1b";
const TOKEN: &str = "Qm9vazNyZWFkeUZvclRoZVN5bmNFbmdpbmVUZXN0czE";

async fn app(backend: Backend, debounce_ms: u64, max_delay_ms: u64) -> Option<(TestApp, Calendar)> {
    let app = spawn_app_with(backend, |raw| {
        raw.sync_debounce_ms = debounce_ms;
        raw.sync_max_delay_ms = max_delay_ms;
    })
    .await?;
    let user = UserId::parse("user-1").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    app.google.add_calendar(&user, &primary);
    app.google
        .create_event(&user, &primary, "before", "existing");
    let calendar = seed_calendar(&app.store, "user-1", "primary", CHANNEL, TOKEN).await;
    // The initial full sync.
    wait_for(&app, &calendar, "before").await;
    Some((app, calendar))
}

async fn wait_for(app: &TestApp, calendar: &Calendar, event_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = app
            .store
            .events_page(calendar.id, 1000, None)
            .await
            .unwrap();
        if events.iter().any(|e| e.event_id == event_id) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{event_id} never reached the mirror"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Changes an event at the fake Google, notifies, and returns how long the change took to reach the mirror.
async fn change_and_measure(app: &TestApp, calendar: &Calendar, n: i64) -> Duration {
    let user = UserId::parse("user-1").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    let id = format!("change{n}");
    app.google.create_event(&user, &primary, &id, "new");
    let started = Instant::now();
    let number = (n + 2).to_string();
    let response = app
        .notify(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", &number),
        ])
        .await;
    assert_eq!(response.status().as_u16(), 200);
    wait_for(app, calendar, &id).await;
    started.elapsed()
}

async fn a_change_at_google_reaches_the_mirror_after_its_notification(backend: Backend) {
    let Some((app, calendar)) = app(backend, 20, 200).await else {
        return;
    };
    change_and_measure(&app, &calendar, 1).await;
    let row = app.store.calendar(calendar.id).await.unwrap().unwrap();
    assert!(row.sync_request_count >= 1, "the notification was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_google_reaches_the_mirror_sqlite() {
    a_change_at_google_reaches_the_mirror_after_its_notification(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_google_reaches_the_mirror_postgres() {
    a_change_at_google_reaches_the_mirror_after_its_notification(Backend::Postgres).await;
}

async fn measure(backend: Backend, debounce_ms: u64, max_delay_ms: u64) {
    let Some((app, calendar)) = app(backend, debounce_ms, max_delay_ms).await else {
        return;
    };
    let mut samples = Vec::new();
    for n in 1..=20 {
        samples.push(change_and_measure(&app, &calendar, n).await);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{backend:?} debounce {debounce_ms} ms: notification -> mirror over {} changes: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
async fn notification_to_mirror_latency() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        measure(backend, 1000, 10_000).await;
        measure(backend, 0, 0).await;
    }
}
