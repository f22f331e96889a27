//! OpenTelemetry traces (the `otel` feature), end to end: the built binary
//! exports to a collector stand-in (wiremock, the OTLP/HTTP protobuf bodies
//! decoded here) a webhook request span, an internal API span that is a
//! child of the caller's `traceparent`, and a sync span; its JSON logs carry
//! the same `trace_id` and `span_id`. The binary runs as a subprocess, so its
//! global subscriber and exporter are its own.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::binary::{KillOnDrop, chronos, free_port, spawn_logging_to, terminate, wait_until_ok};
use support::google_stub::{API, google_with_one_event, wait_for_list_calls};
use sync_store::test_support::TEST_ENCRYPTION_KEY;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ADMIN_TOKEN: &str = "otel-test-admin-token-0123456789";
/// The caller's trace and span, as a `traceparent` carries them.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// A trace id offered on the public webhook, which must not be taken.
const FOREIGN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The built binary serving in a directory of its own, with JSON logs (debug
/// for the HTTP layer) in `server.log` there and its service named
/// `chronos-otel-test`.
struct OtelServer {
    dir: tempfile::TempDir,
    base: String,
    process: KillOnDrop,
}

impl OtelServer {
    /// Starts it once `configure` added to its environment; returns when it
    /// answers `/healthz`.
    async fn start(http: &reqwest::Client, configure: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = chronos(dir.path());
        command
            .env("CHRONOS_BIND", format!("127.0.0.1:{port}"))
            .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
            .env("CHRONOS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,webhook_http=debug")
            .env("OTEL_SERVICE_NAME", "chronos-otel-test");
        configure(&mut command);
        let process = spawn_logging_to(&mut command, &dir.path().join("server.log"));
        let base = format!("http://127.0.0.1:{port}");
        wait_until_ok(http, &format!("{base}/healthz")).await;
        Self { dir, base, process }
    }

    /// Everything it logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap()
    }
}

/// Every span the collector received, with the service name of its resource.
async fn exported(collector: &MockServer) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for request in collector.received_requests().await.unwrap_or_default() {
        assert_eq!(request.url.path(), "/v1/traces");
        assert_eq!(
            request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-protobuf")
        );
        let decoded = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
        for resource in decoded.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(name) => name.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    spans
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(text) => text.clone(),
            Value::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_internal_and_sync_spans_reach_the_collector_with_the_callers_trace_kept() {
    let google = google_with_one_event("ya29.otel-test").await;
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let http = reqwest::Client::new();
    let mut server = OtelServer::start(&http, |command| {
        command
            .env("CHRONOS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env(
                "CHRONOS_GOOGLE_CLIENT_ID",
                "client-id.apps.googleusercontent.com",
            )
            .env("CHRONOS_GOOGLE_CLIENT_SECRET", "otel-test-client-secret")
            .env(
                "CHRONOS_GOOGLE_API_BASE_URL",
                format!("{}{API}", google.uri()),
            )
            .env(
                "CHRONOS_GOOGLE_TOKEN_URL",
                format!("{}/token", google.uri()),
            )
            .env("CHRONOS_SYNC_DEBOUNCE_MS", "20")
            .env("CHRONOS_SYNC_MAX_DELAY_MS", "200")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri())
            .env("OTEL_BSP_SCHEDULE_DELAY", "200");
    })
    .await;
    let base = &server.base;

    let stored = http
        .put(format!(
            "{base}/internal/users/otel-user/google-credentials"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"refresh_token": "1//otel-refresh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 204);
    let connected = http
        .post(format!("{base}/internal/calendars"))
        .bearer_auth(ADMIN_TOKEN)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"user_id": "otel-user", "google_calendar_id": "primary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), 201);
    let calendar_id = connected.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let webhook = http
        .post(format!("{base}/calendar/webhook"))
        .header("X-Goog-Channel-ID", "8b0c9d1e-unknown-channel")
        .header("X-Goog-Resource-State", "exists")
        .header(
            "traceparent",
            format!("00-{FOREIGN_TRACE}-{CALLER_SPAN}-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 200);
    wait_for_list_calls(&google, 1).await;
    // The sync settles after the list call returns.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exit = terminate(&mut server.process).await;
    let text = server.log();
    assert!(exit.success(), "exit {exit}: {text}");

    let spans = exported(&collector).await;
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    // The health checks above were logged but not exported (every exported
    // request span has an OpenTelemetry name; a probe's would be `request`).
    assert!(
        !names
            .iter()
            .any(|n| n.contains("/healthz") || *n == "request"),
        "{names:?}"
    );
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "chronos-otel-test"),
        "{spans:?}"
    );
    let webhook_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /calendar/webhook")
        .unwrap_or_else(|| panic!("no webhook span in {names:?}"));
    // SPAN_KIND_SERVER
    assert_eq!(webhook_span.kind, 2);
    assert_eq!(
        attribute(webhook_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_ne!(hex(&webhook_span.trace_id), FOREIGN_TRACE);
    assert!(webhook_span.parent_span_id.is_empty());

    let connect_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /internal/calendars")
        .unwrap_or_else(|| panic!("no connect span in {names:?}"));
    assert_eq!(hex(&connect_span.trace_id), CALLER_TRACE);
    assert_eq!(hex(&connect_span.parent_span_id), CALLER_SPAN);
    assert_eq!(
        attribute(connect_span, "http.route").as_deref(),
        Some("/internal/calendars")
    );

    let sync_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "sync" && attribute(s, "calendar_id").as_deref() == Some(&calendar_id))
        .unwrap_or_else(|| panic!("no sync span for {calendar_id} in {names:?}"));
    assert_eq!(attribute(sync_span, "outcome").as_deref(), Some("success"));

    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "exporting traces over OTLP/HTTP"),
        "{text}"
    );
    let completed = lines
        .iter()
        .find(|l| {
            l["message"] == "sync completed" && l["span"]["calendar_id"] == calendar_id.as_str()
        })
        .unwrap_or_else(|| panic!("no sync completed line: {text}"));
    assert_eq!(
        completed["trace_id"],
        hex(&sync_span.trace_id).as_str(),
        "{completed}"
    );
    assert_eq!(
        completed["span_id"],
        hex(&sync_span.span_id).as_str(),
        "{completed}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "request served"
            && l["span"]["path"] == "/internal/calendars"
            && l["trace_id"] == CALLER_TRACE
            && l["span_id"] == hex(&connect_span.span_id).as_str()),
        "{text}"
    );
    // Outside any span a line has no ids.
    assert!(
        lines
            .iter()
            .filter(|l| l["message"] == "chronos-server listening")
            .all(|l| l.get("trace_id").is_none()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_logs_carry_no_trace_ids() {
    let http = reqwest::Client::new();
    let mut server = OtelServer::start(&http, |_| {}).await;
    let base = &server.base;
    let webhook = http
        .post(format!("{base}/calendar/webhook"))
        .header("X-Goog-Channel-ID", "8b0c9d1e-unknown-channel")
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 200);
    assert!(terminate(&mut server.process).await.success());
    let text = server.log();
    assert!(text.contains("request served"), "{text}");
    assert!(!text.contains("trace_id"), "{text}");
    assert!(!text.contains("otel.name"), "{text}");
    assert!(!text.contains("exporting traces"), "{text}");
}

#[test]
fn a_malformed_otlp_endpoint_stops_startup_naming_the_variable_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    for endpoint in ["not a url", "http://u:hunter2@127.0.0.1:4318"] {
        let output = chronos(dir.path())
            .env("CHRONOS_BIND", format!("127.0.0.1:{}", free_port()))
            .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{endpoint}: started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
