//! Wiremock tests of the real client: the requests it sends and how it reads
//! Google's answers. Bodies follow Google's documented examples (FACTS.md).

// A test crate: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod calls;
mod errors;
#[cfg(feature = "fakes")]
mod fake;
mod logs;
mod token;

use google_client::{ClientSecret, GoogleCalendarClient, GoogleConfig, RetryPolicy};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use sync_domain::fakes::{FakeClock, InMemoryCredentialStore};
use sync_domain::ids::UserId;
use sync_domain::ports::{CachedAccessToken, Clock, CredentialStore};
use sync_domain::secret::{AccessToken, RefreshToken};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const CLIENT_ID: &str = "1234.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "GOCSPX-client-secret";
pub const REFRESH: &str = "1//0refresh-token";
pub const API_PATH: &str = "/calendar/v3";

/// A mock Google (token endpoint and Calendar API) and a client pointed at it.
pub struct Google {
    pub server: MockServer,
    pub store: Arc<InMemoryCredentialStore>,
    pub clock: Arc<FakeClock>,
    pub client: GoogleCalendarClient,
}

pub fn user() -> UserId {
    UserId::parse("user-1").unwrap()
}

pub fn config(server: &MockServer) -> GoogleConfig {
    let mut config = GoogleConfig::new(CLIENT_ID, ClientSecret::new(CLIENT_SECRET));
    config.api_base_url = Url::parse(&format!("{}{API_PATH}", server.uri())).unwrap();
    config.token_url = Url::parse(&format!("{}/token", server.uri())).unwrap();
    config.retry = RetryPolicy::immediate(3);
    config.request_timeout = Duration::from_secs(5);
    config
}

impl Google {
    /// `user()` has a refresh token and no cached access token.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut GoogleConfig)) -> Self {
        let server = MockServer::start().await;
        let mut config = config(&server);
        adjust(&mut config);
        let store = Arc::new(InMemoryCredentialStore::default());
        store
            .put_refresh_token(&user(), &RefreshToken::new(REFRESH))
            .await
            .unwrap();
        let clock = Arc::new(FakeClock::default());
        let client = GoogleCalendarClient::new(
            config,
            Arc::clone(&store) as Arc<dyn CredentialStore>,
            Arc::clone(&clock) as Arc<dyn Clock>,
            Arc::new(sync_domain::fakes::CountingEntropy::default()),
        )
        .unwrap();
        Self {
            server,
            store,
            clock,
            client,
        }
    }

    /// The user's access token is already cached in the store (no refresh needed).
    pub async fn with_cached_token(self, token: &str) -> Self {
        let cached = CachedAccessToken {
            token: AccessToken::new(token),
            expires_at: self.clock.now() + Duration::from_secs(3600),
        };
        self.store
            .cache_access_token(&user(), &cached)
            .await
            .unwrap();
        self
    }

    /// The token endpoint grants `access_token` for an hour.
    pub async fn grant(&self, access_token: &str) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(token_ok(access_token))
            .mount(&self.server)
            .await;
    }

    pub async fn requests_to(&self, wanted: &str) -> Vec<Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == wanted)
            .collect()
    }

    pub async fn token_hits(&self) -> usize {
        self.requests_to("/token").await.len()
    }

    pub fn needs_reauth(&self) -> bool {
        self.store.get(&user()).unwrap().needs_reauth
    }
}

/// Google's documented refresh answer.
pub fn token_ok(access_token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "expires_in": 3599,
        "scope": "https://www.googleapis.com/auth/calendar",
        "token_type": "Bearer"
    }))
}

/// Google's error body: `{"error": {"errors": [{domain, reason, message}], code, message}}`.
pub fn google_error(status: u16, reason: &str, message: &str) -> ResponseTemplate {
    let domain = if reason.contains("imit") || reason == "quotaExceeded" {
        "usageLimits"
    } else {
        "global"
    };
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": status,
            "message": message
        }
    }))
}

pub fn form(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

pub fn query(request: &Request) -> BTreeMap<String, String> {
    request.url.query_pairs().into_owned().collect()
}

pub fn json_body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

pub fn bearer(request: &Request) -> String {
    request
        .headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
