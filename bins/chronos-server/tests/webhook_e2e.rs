//! SPEC section 2 over real HTTP: the real server on port 0 against a real
//! database, on SQLite always and on PostgreSQL when configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::{TestApp, spawn_app};
use sync_store::test_on_both_backends;
use sync_store::test_support::Backend;
use sync_store::test_support::seed_calendar;

const CHANNEL: &str = "5b7a9ab6-3f7c-4c4e-9a43-2f6d1f3f0a11";
const TOKEN: &str = "Yx3c0n8kq1mF6wQ0b2sJ7rT9uV4eZ5aD1gH8iK2lM3n";

async fn body(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let json = response.json::<Value>().await.expect("a JSON body");
    (status, content_type, json)
}

async fn app_with_calendar(backend: Backend) -> Option<(TestApp, sync_store::calendars::Calendar)> {
    let app = spawn_app(backend).await?;
    let calendar = seed_calendar(&app.store, "user-1", "primary", CHANNEL, TOKEN).await;
    // As if its initial sync was claimed: each change below must be written.
    sync_store::test_support::consume_pending_request(&app.store, calendar.id).await;
    Some((app, calendar))
}

async fn every_row_of_the_table(backend: Backend) {
    let Some((app, calendar)) = app_with_calendar(backend).await else {
        return;
    };
    let before = app
        .store
        .calendar(calendar.id)
        .await
        .unwrap()
        .unwrap()
        .sync_request_count;

    // Missing channel id: 400.
    let (status, content_type, json) =
        body(app.notify(&[("X-Goog-Resource-State", "exists")]).await).await;
    assert_eq!(
        (status, json),
        (400, serde_json::json!({"detail": "Missing channel ID"}))
    );
    assert_eq!(content_type.as_deref(), Some("application/json"));

    // Unknown channel: 200 {}.
    let (status, _, json) = body(
        app.notify(&[
            ("X-Goog-Channel-ID", "never-ours"),
            ("X-Goog-Channel-Token", TOKEN),
        ])
        .await,
    )
    .await;
    assert_eq!((status, json), (200, serde_json::json!({})));

    // Wrong and missing token: 401.
    for token in [Some("wrong"), None] {
        let mut headers = vec![
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Resource-State", "exists"),
        ];
        if let Some(token) = token {
            headers.push(("X-Goog-Channel-Token", token));
        }
        let (status, _, json) = body(app.notify(&headers).await).await;
        assert_eq!(
            (status, json),
            (401, serde_json::json!({"detail": "Invalid token"}))
        );
    }

    // Handshake: 200 {}, nothing recorded.
    let (status, _, json) = body(
        app.notify(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "sync"),
            ("X-Goog-Message-Number", "1"),
        ])
        .await,
    )
    .await;
    assert_eq!((status, json), (200, serde_json::json!({})));
    let after_handshake = app.store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(after_handshake.sync_request_count, before);

    // Change: 200 {} and a committed request (header names in any case).
    let (status, _, json) = body(
        app.notify(&[
            ("x-goog-channel-id", CHANNEL),
            ("X-GOOG-CHANNEL-TOKEN", TOKEN),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", "7"),
        ])
        .await,
    )
    .await;
    assert_eq!((status, json), (200, serde_json::json!({})));
    let after_change = app.store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(after_change.sync_request_count, before + 1);

    // Duplicate message number: 200 {}, no new request.
    let (status, _, json) = body(
        app.notify(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", "7"),
        ])
        .await,
    )
    .await;
    assert_eq!((status, json), (200, serde_json::json!({})));
    let after_duplicate = app.store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(after_duplicate.sync_request_count, before + 1);

    // Over 64 KiB: 413.
    let response = app
        .http
        .post(format!("{}/calendar/webhook", app.address))
        .header("X-Goog-Channel-ID", CHANNEL)
        .body(vec![b'x'; 64 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);

    // Health.
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let alive = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status().as_u16(), 200);
}

test_on_both_backends!(every_webhook_row_over_http, backend => every_row_of_the_table);

async fn orphaned_channel(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // A known channel whose user has no credentials: 200 {} and nothing recorded.
    let calendar = sync_store::test_support::seed_calendar_without_credentials(
        &app.store, "user-2", "primary", CHANNEL, TOKEN,
    )
    .await;
    let before = app
        .store
        .calendar(calendar.id)
        .await
        .unwrap()
        .unwrap()
        .sync_request_count;
    let (status, _, json) = body(
        app.notify(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
        ])
        .await,
    )
    .await;
    assert_eq!((status, json), (200, serde_json::json!({})));
    let after = app.store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(after.sync_request_count, before);
}

test_on_both_backends!(orphaned_channel_records_nothing, backend => orphaned_channel);

/// The database vanishing under a running server: 503 with `Retry-After`, never
/// a 200 that could lose the notification, and `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_gets_503_with_retry_after_on_postgres() {
    let Some((app, _calendar)) = app_with_calendar(Backend::Postgres).await else {
        return;
    };
    app.db.drop_now().await;
    let response = app
        .notify(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", "9"),
        ])
        .await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, _, json) = body(response).await;
    assert_eq!(
        (status, json),
        (503, serde_json::json!({"detail": "Service unavailable"}))
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
}

/// Issue 14 item 6: a body that never finishes arriving holds the connection
/// only until the body deadline, then gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_at_the_deadline() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST /calendar/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Goog-Channel-ID: {CHANNEL}\r\n\
         X-Goog-Channel-Token: {TOKEN}\r\nX-Goog-Resource-State: exists\r\n\
         Content-Length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut reply = vec![0u8; 1024];
    let read = tokio::time::timeout(
        webhook_http::webhook::BODY_DEADLINE + std::time::Duration::from_secs(3),
        stream.read(&mut reply),
    )
    .await
    .expect("answered within the body deadline")
    .unwrap();
    let reply = String::from_utf8_lossy(&reply[..read]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        started.elapsed()
            >= webhook_http::webhook::BODY_DEADLINE - std::time::Duration::from_millis(500)
    );
}
