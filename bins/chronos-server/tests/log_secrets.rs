#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No secret reaches the logs, at any level: a full scenario (credentials,
//! connect, initial sync, channel registration, handshake, a change, a wrong
//! token, disconnect) runs against the real Google client talking to a fake
//! Google (wiremock), with every log line captured as JSON at debug level; then
//! the logs are searched for every secret the scenario used.
//!
//! The capturing subscriber is global (the server's threads log too), so this
//! test has its own test binary.

mod support;

use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::google_stub::{API, google_with_one_event, wait_for_list_calls};
use support::spawn_app_with_configured_google;
use sync_store::test_support::{Backend, eventually};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ADMIN_TOKEN: &str = "admin-secret-0f3c9a7d41b2e8c6";
const REFRESH_TOKEN: &str = "1//refresh-secret-7b1e4d9a2c";
const ACCESS_TOKEN: &str = "ya29.access-secret-5c8f2a6e1d";
const CLIENT_SECRET: &str = "GOCSPX-client-secret-3e9b7a1f";
const ENCRYPTION_KEY: &str = "Y2hyb25vcy1zZWNyZXQtc2Nhbi1rZXktMzItYnl0ZXM=";
const WRONG_TOKEN: &str = "wrong-token-presented-9d2a";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`google_with_one_event`] that also answers `events.watch` and `channels.stop`.
async fn fake_google() -> MockServer {
    let server = google_with_one_event(ACCESS_TOKEN).await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/calendars/primary/events/watch")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "api#channel", "id": "ignored", "resourceId": "res-1",
            "resourceUri": "https://www.googleapis.com/calendar/v3/calendars/primary/events",
            "expiration": "4102444800000"
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/channels/stop")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// The body of the first `events.watch` call, once the channel worker made it.
async fn watch_body(google: &MockServer) -> serde_json::Value {
    eventually("an events.watch call", || async {
        let requests = google.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .find(|r| r.url.path().ends_with("/events/watch"))
            .map(|watch| serde_json::from_slice(&watch.body).unwrap())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scenario_logs_no_secret_at_debug_level() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let google = fake_google().await;
    let app = spawn_app_with_configured_google(Backend::Sqlite, |raw| {
        raw.admin_token = Some(ADMIN_TOKEN.into());
        raw.encryption_key = Some(ENCRYPTION_KEY.into());
        raw.google_client_id = Some("client-id.apps.googleusercontent.com".into());
        raw.google_client_secret = Some(CLIENT_SECRET.into());
        raw.google_api_base_url = format!("{}{API}", google.uri());
        raw.google_token_url = format!("{}/token", google.uri());
        raw.webhook_base_url = Some("https://chronos.example.test".into());
        raw.log_format = "json".into();
    })
    .await
    .expect("SQLite needs no configuration");
    let address = app.address.clone();
    let http = app.http.clone();

    let stored = http
        .put(format!(
            "{address}/internal/users/scan-user/google-credentials"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"refresh_token": REFRESH_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 204);
    let connected: serde_json::Value = http
        .post(format!("{address}/internal/calendars"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"user_id": "scan-user", "google_calendar_id": "primary"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let calendar_id = connected["id"].as_str().unwrap().to_owned();

    let watch = watch_body(&google).await;
    let channel_id = watch["id"].as_str().unwrap().to_owned();
    let channel_token = watch["token"].as_str().unwrap().to_owned();
    wait_for_list_calls(&google, 1).await;

    let notify = |state: &'static str, number: &'static str, token: String| {
        http.post(format!("{address}/calendar/webhook"))
            .header("X-Goog-Channel-ID", channel_id.as_str())
            .header("X-Goog-Channel-Token", token)
            .header("X-Goog-Resource-State", state)
            .header("X-Goog-Message-Number", number)
            .header("X-Goog-Resource-ID", "res-1")
            .send()
    };
    assert_eq!(
        notify("sync", "1", channel_token.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        notify("exists", "2", channel_token.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        notify("exists", "3", WRONG_TOKEN.to_owned())
            .await
            .unwrap()
            .status(),
        401
    );
    wait_for_list_calls(&google, 2).await;

    let events: serde_json::Value = http
        .get(format!("{address}/internal/calendars/{calendar_id}/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["id"], "evt1");
    let metrics = http
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"chronos_google_api_calls_total{method="events.list",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chronos_google_api_calls_total{method="oauth.token",status="200"}"#),
        "{metrics}"
    );
    let disconnected = http
        .delete(format!("{address}/internal/calendars/{calendar_id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(disconnected.status(), 204);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    // The scan can fail: the scenario was logged, with its ids.
    assert!(lines.len() > 10, "{text}");
    assert!(text.contains("webhook notification"), "{text}");
    assert!(text.contains(&channel_id), "{text}");
    assert!(text.contains(&calendar_id), "{text}");
    assert!(
        lines.iter().any(|l| l["message"] == "webhook notification"
            && l["span"]["request_id"].is_string()
            && l["channel_id"] == channel_id.as_str()
            && l["calendar_id"] == calendar_id.as_str()),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["spans"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["name"] == "sync" && s["calendar_id"] == calendar_id.as_str()))),
        "{text}"
    );
    for (name, secret) in [
        ("admin token", ADMIN_TOKEN),
        ("refresh token", REFRESH_TOKEN),
        ("access token", ACCESS_TOKEN),
        ("client secret", CLIENT_SECRET),
        ("encryption key", ENCRYPTION_KEY),
        ("channel token", channel_token.as_str()),
        ("wrong channel token", WRONG_TOKEN),
    ] {
        assert!(!text.contains(secret), "the {name} is in the logs");
    }
}
