//! Security properties over real HTTP: hostile headers never produce a 5xx,
//! and secrets are compared in constant time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;
use support::spawn_app;
use sync_store::test_on_both_backends;
use sync_store::test_support::Backend;
use sync_store::test_support::seed_calendar;

const CHANNEL: &str = "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const TOKEN: &str = "Qm8Xv2Lc7Rt4Yw1Zs6Nd3Fh9Gj0Ja5Sx2Ce8Uv4Kp1";

/// Sends raw bytes (so headers can be anything at all) and returns the status.
fn raw_status(port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

fn request_with(headers: &[u8]) -> Vec<u8> {
    let mut request = b"POST /calendar/webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n".to_vec();
    request.extend_from_slice(headers);
    request.extend_from_slice(b"\r\n");
    request
}

async fn hostile_headers(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    seed_calendar(&app.store, "user-1", "primary", CHANNEL, TOKEN).await;
    let channel = format!("X-Goog-Channel-ID: {CHANNEL}\r\n");
    let huge = "A".repeat(40_000);
    let cases: Vec<Vec<u8>> = vec![
        // Non-UTF-8 everywhere.
        b"X-Goog-Channel-ID: \xff\xfe\xfd\r\nX-Goog-Channel-Token: \xc3\x28\r\n".to_vec(),
        [channel.as_bytes(), b"X-Goog-Channel-Token: \xff\xff\r\nX-Goog-Resource-State: \xfe\r\n"].concat(),
        // Huge values.
        format!("X-Goog-Channel-ID: {huge}\r\n").into_bytes(),
        format!("{channel}X-Goog-Channel-Token: {huge}\r\n").into_bytes(),
        format!("{channel}X-Goog-Message-Number: {huge}\r\n").into_bytes(),
        // Repeated headers.
        format!("{channel}{channel}X-Goog-Channel-Token: {TOKEN}\r\n").into_bytes(),
        format!("{channel}X-Goog-Channel-Token: {TOKEN}\r\nX-Goog-Channel-Token: {TOKEN}\r\n").into_bytes(),
        // SQL-looking values.
        b"X-Goog-Channel-ID: ' OR '1'='1\r\nX-Goog-Channel-Token: x' OR 1=1; --\r\n".to_vec(),
        b"X-Goog-Channel-ID: 1; DROP TABLE calendar_sync_state; --\r\n".to_vec(),
        format!("{channel}X-Goog-Channel-Token: {TOKEN}\r\nX-Goog-Message-Number: 1 OR 1=1\r\nX-Goog-Resource-State: exists'; --\r\n").into_bytes(),
        // Many headers.
        (0..500).flat_map(|i| format!("X-Filler-{i}: {i}\r\n").into_bytes()).collect(),
        // Absurd numbers.
        format!("{channel}X-Goog-Channel-Token: {TOKEN}\r\nX-Goog-Message-Number: 99999999999999999999999\r\n").into_bytes(),
        format!("{channel}X-Goog-Channel-Token: {TOKEN}\r\nX-Goog-Message-Number: -5\r\n").into_bytes(),
    ];
    for (i, headers) in cases.iter().enumerate() {
        let status = tokio::task::spawn_blocking({
            let request = request_with(headers);
            let port = app.port;
            move || raw_status(port, &request)
        })
        .await
        .unwrap();
        if let Some(status) = status {
            assert!(status < 500, "case {i}: status {status}");
        }
    }
    // The tables are still there and the server still answers.
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(app.store.calendars(None).await.unwrap().len(), 1);
}

test_on_both_backends!(hostile_headers_never_get_5xx, backend => hostile_headers);

/// The channel token and the admin bearer token are compared with the
/// `constant_time_eq` crate, never with `==` on the secret.
#[test]
fn secrets_are_compared_with_constant_time_eq() {
    let secret = include_str!("../../../crates/sync-domain/src/secret.rs");
    assert!(
        secret.contains(
            "constant_time_eq::constant_time_eq(self.0.as_bytes(), presented.as_bytes())"
        )
    );
    let internal = include_str!("../../../crates/webhook-http/src/internal.rs");
    assert!(
        internal.contains("constant_time_eq"),
        "the admin token must be compared in constant time"
    );
}
