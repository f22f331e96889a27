//! Shared helpers for the server's end-to-end tests: a real server on port 0
//! against a fresh database (SQLite, or PostgreSQL when configured) with a fake
//! Google behind the `CalendarApi` port.
//!
//! Not every test binary uses every helper, hence `dead_code` allowed:
//! [`binary`] runs the built binary as a subprocess, [`google_stub`] is a
//! wiremock Google for the real client. Tests run per backend with
//! `sync_store::test_on_both_backends!` (its `backend =>` form) and wait with
//! `sync_store::test_support::eventually`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod binary;
pub mod google_stub;

use chronos_server::app::{Application, Overrides};
use chronos_server::config::RawConfig;
use google_client::fakes::FakeGoogleCalendar;
use std::sync::Arc;
use sync_store::Store;
use sync_store::test_support::{Backend, TEST_ENCRYPTION_KEY, TestDb};

/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running server and what a test needs to drive and inspect it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// `http://127.0.0.1:PORT` of the `/metrics` server when `metrics_bind` is set.
    pub metrics_address: Option<String>,
    pub store: Store,
    pub google: FakeGoogleCalendar,
    pub http: reqwest::Client,
    pub db: TestDb,
}

/// The configuration a test server starts from; tests adjust it.
pub fn test_config(db: &TestDb) -> RawConfig {
    RawConfig {
        database_url: db.url_string(),
        bind: "127.0.0.1:0".into(),
        admin_token: Some(ADMIN_TOKEN.into()),
        encryption_key: Some(TEST_ENCRYPTION_KEY.into()),
        sync_debounce_ms: 20,
        sync_max_delay_ms: 200,
        ..RawConfig::default()
    }
}

/// Starts a server on `backend` (None: PostgreSQL not configured, skip).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// Starts a server after `adjust` changed its configuration.
pub async fn spawn_app_with(
    backend: Backend,
    adjust: impl FnOnce(&mut RawConfig),
) -> Option<TestApp> {
    spawn_app_overriding(backend, adjust, |_| {}).await
}

/// Starts a server after `adjust` changed its configuration and `replace`
/// its overrides (the fake Google is already in them).
pub async fn spawn_app_overriding(
    backend: Backend,
    adjust: impl FnOnce(&mut RawConfig),
    replace: impl FnOnce(&mut Overrides),
) -> Option<TestApp> {
    let google = FakeGoogleCalendar::new();
    let mut overrides = Overrides {
        calendar: Some(Arc::new(google.clone())),
        clock: None,
        entropy: None,
        stream_heartbeat: None,
    };
    replace(&mut overrides);
    spawn_app_over(backend, adjust, google, overrides).await
}

/// Starts a server that calls the Google its configuration names (`adjust`
/// points the `google_*` URLs at a stand-in such as wiremock) through the real
/// client; `TestApp::google` is then a fake nobody calls.
pub async fn spawn_app_with_configured_google(
    backend: Backend,
    adjust: impl FnOnce(&mut RawConfig),
) -> Option<TestApp> {
    spawn_app_over(
        backend,
        adjust,
        FakeGoogleCalendar::new(),
        Overrides::default(),
    )
    .await
}

/// Starts a server with `overrides` (a wrapped fake Google, a fake clock);
/// `google` is the fake the test drives, kept in `TestApp::google`.
pub async fn spawn_app_over(
    backend: Backend,
    adjust: impl FnOnce(&mut RawConfig),
    google: FakeGoogleCalendar,
    overrides: Overrides,
) -> Option<TestApp> {
    let db = TestDb::new(backend).await?;
    let mut raw = test_config(&db);
    adjust(&mut raw);
    let config = raw.validate().expect("valid test configuration");
    let app = Application::build_with(config, overrides)
        .await
        .expect("building the app");
    let port = app.port();
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let store = app.store().clone();
    tokio::spawn(app.run_until_stopped());
    Some(TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_address,
        store,
        google,
        http: reqwest::Client::new(),
        db,
    })
}

impl TestApp {
    /// Posts a notification with the given headers.
    pub async fn notify(&self, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(format!("{}/calendar/webhook", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("sending a notification")
    }
}
