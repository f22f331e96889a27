//! A wiremock stand-in for Google, for servers that run the real Google client
//! (`spawn_app_with_configured_google`, or the built binary).

use serde_json::json;
use sync_store::test_support::eventually;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Where the Calendar API lives on the stand-in (`google_api_base_url` is its
/// URI followed by this); the token endpoint is `/token`.
pub const API: &str = "/calendar/v3";

/// A Google whose token endpoint grants `access_token` and whose `primary`
/// calendar holds one event (`evt1`, a full sync's single page).
pub async fn google_with_one_event(access_token: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access_token, "expires_in": 3599, "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/calendar.readonly"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/calendars/primary/events")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "calendar#events",
            "items": [{
                "id": "evt1", "status": "confirmed", "summary": "Standup", "etag": "\"1\"",
                "updated": "2026-12-01T10:00:00.000Z",
                "start": {"dateTime": "2026-12-02T09:00:00Z"},
                "end": {"dateTime": "2026-12-02T09:15:00Z"}
            }],
            "nextSyncToken": "sync-token-1"
        })))
        .mount(&server)
        .await;
    server
}

/// Waits until `google` received `at_least` `events.list` calls; fails the
/// test after [`EVENTUALLY`](sync_store::test_support::EVENTUALLY).
pub async fn wait_for_list_calls(google: &MockServer, at_least: usize) {
    eventually(&format!("{at_least} events.list calls"), || async {
        let requests = google.received_requests().await.unwrap_or_default();
        let lists = requests
            .iter()
            .filter(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/events"))
            .count();
        if lists >= at_least {
            Ok(())
        } else {
            Err(format!("{lists} calls"))
        }
    })
    .await;
}
