#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `GET /metrics` and request ids, end to end on a real server with a fake Google.
//! Metrics are process-wide and tests share the process, so assertions look
//! for series and lower bounds, never exact totals.

mod support;

use support::{ADMIN_TOKEN, spawn_app};
use sync_domain::ports::SystemClock;
use sync_domain::{GoogleCalendarId, UserId};
use sync_store::test_support::{Backend, eventually, seed_calendar};

const CHANNEL: &str = "5d9e2b1c-7a4f-4b3e-9c8d-1f2e3a4b5c6d";
const TOKEN: &str = "observability-channel-token";

async fn metrics(app: &support::TestApp) -> String {
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the first series line starting with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_notifications_syncs_and_fleet_state() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let user = UserId::parse("metrics-user").unwrap();
    app.google
        .add_calendar(&user, &GoogleCalendarId::parse("primary").unwrap());
    let calendar = seed_calendar(&app.store, "metrics-user", "primary", CHANNEL, TOKEN).await;
    // Its initial sync was claimed: the next change is written, not coalesced.
    sync_store::test_support::consume_pending_request(&app.store, calendar.id).await;

    let ours = |state: &'static str, number: &'static str| {
        vec![
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", state),
            ("X-Goog-Message-Number", number),
        ]
    };
    assert_eq!(app.notify(&ours("sync", "1")).await.status(), 200);
    assert_eq!(app.notify(&ours("exists", "2")).await.status(), 200);
    assert_eq!(app.notify(&ours("exists", "2")).await.status(), 200);
    assert_eq!(app.notify(&ours("exists", "3")).await.status(), 200);
    assert_eq!(app.notify(&[]).await.status(), 400);
    let unknown = [("X-Goog-Channel-ID", "1b2c3d4e-0000-4000-8000-000000000000")];
    assert_eq!(app.notify(&unknown).await.status(), 200);
    let wrong = [
        ("X-Goog-Channel-ID", CHANNEL),
        ("X-Goog-Channel-Token", "wrong"),
        ("X-Goog-Resource-State", "exists"),
    ];
    assert_eq!(app.notify(&wrong).await.status(), 401);

    // The sync the accepted notification asked for.
    eventually("the sync", || async {
        let state = app.store.calendar(calendar.id).await.unwrap().unwrap();
        state.last_sync_at.is_some()
    })
    .await;
    chronos_server::metrics::sample(&app.store, &SystemClock).await;

    let text = metrics(&app).await;
    for outcome in [
        "accepted",
        "coalesced",
        "duplicate",
        "handshake",
        "unknown_channel",
        "invalid_token",
        "missing_channel",
    ] {
        let series = format!("chronos_webhook_notifications_total{{outcome=\"{outcome}\"}}");
        assert!(
            value(&text, &series).unwrap_or(0.0) >= 1.0,
            "{series} in\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE chronos_webhook_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("chronos_webhook_duration_seconds_bucket{le=\"0.005\"}"),
        "{text}"
    );
    assert!(
        value(&text, "chronos_syncs_total{outcome=\"success\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE chronos_sync_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE chronos_notification_to_sync_seconds histogram"),
        "{text}"
    );
    assert!(
        value(&text, "chronos_notification_to_sync_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(text.contains("chronos_sync_events_applied_total"), "{text}");
    assert!(
        value(&text, "chronos_calendars{state=\"idle\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "chronos_calendars{state=\"failing\"}").is_some(),
        "{text}"
    );
    assert!(
        value(&text, "chronos_channels{state=\"active\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(text.contains("chronos_sync_requests_pending"), "{text}");
    assert!(
        text.contains("chronos_channel_soonest_expiry_seconds"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_response_carries_a_request_id() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let fresh = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    let id = fresh.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let kept = app
        .http
        .get(format!("{}/internal/calendars", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Request-Id", "lb-1234.abc_9")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "lb-1234.abc_9");

    let replaced = app
        .http
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "evil\" injected=1")
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}
