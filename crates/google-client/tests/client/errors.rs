//! Error taxonomy and retries, through real HTTP answers.

use super::*;
use google_client::GoogleError;
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery};
use sync_domain::ids::GoogleCalendarId;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

fn primary() -> GoogleCalendarId {
    GoogleCalendarId::parse("primary").unwrap()
}

fn full_sync() -> EventsQuery {
    EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 250,
    }
}

fn events_path() -> String {
    format!("{API_PATH}/calendars/primary/events")
}

fn last_page() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"kind": "calendar#events", "items": [], "nextSyncToken": "s1"}))
}

/// The first `failures` calls get `failure`, later ones the last page.
async fn fail_then_succeed(google: &Google, failure: ResponseTemplate, failures: u64) {
    Mock::given(method("GET"))
        .and(path(events_path()))
        .respond_with(failure)
        .up_to_n_times(failures)
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(path(events_path()))
        .respond_with(last_page())
        .mount(&google.server)
        .await;
}

async fn list(google: &Google) -> Result<sync_domain::calendar::EventsPage, GoogleError> {
    google
        .client
        .list_events(&user(), &primary(), &full_sync())
        .await
}

async fn api_hits(google: &Google) -> usize {
    google.requests_to(&events_path()).await.len()
}

#[tokio::test]
async fn each_rate_limit_reason_is_retried() {
    for reason in [
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "quotaExceeded",
    ] {
        let google = Google::start().await.with_cached_token("ya29.token").await;
        fail_then_succeed(&google, google_error(403, reason, "Rate Limit Exceeded"), 2).await;

        let page = list(&google).await.unwrap();

        assert_eq!(page.next_sync_token.as_deref(), Some("s1"), "{reason}");
        assert_eq!(api_hits(&google).await, 3, "{reason}");
    }
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(429, "rateLimitExceeded", "Too many requests"),
        1,
    )
    .await;

    assert!(list(&google).await.is_ok());
    assert_eq!(api_hits(&google).await, 2);
}

#[tokio::test]
async fn persistent_rate_limit_gives_up_after_max_attempts() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(403, "userRateLimitExceeded", "slow down"),
        10,
    )
    .await;

    let error = list(&google).await.unwrap_err();

    assert_eq!(error, GoogleError::RateLimited { retry_after: None });
    assert_eq!(api_hits(&google).await, 3);
}

#[tokio::test]
async fn a_retry_after_beyond_the_policy_is_returned_to_the_caller() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(429, "rateLimitExceeded", "Too many requests")
            .insert_header("retry-after", "120"),
        1,
    )
    .await;

    let error = list(&google).await.unwrap_err();

    assert_eq!(
        error,
        GoogleError::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert_eq!(api_hits(&google).await, 1);
}

#[tokio::test]
async fn a_short_retry_after_is_waited_for_and_retried() {
    let google = Google::start_with(|c| c.retry.max_delay = Duration::from_secs(1)).await;
    let google = google.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(429, "rateLimitExceeded", "Too many requests")
            .insert_header("retry-after", "0"),
        1,
    )
    .await;

    assert!(list(&google).await.is_ok());
    assert_eq!(api_hits(&google).await, 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_as_transient() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(503, "backendError", "Backend Error"),
        2,
    )
    .await;
    assert!(list(&google).await.is_ok());
    assert_eq!(api_hits(&google).await, 3);

    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(500, "backendError", "Backend Error"),
        10,
    )
    .await;
    let error = list(&google).await.unwrap_err();
    assert!(
        matches!(&error, GoogleError::Transient(m) if m.contains("500")),
        "{error:?}"
    );
    assert_eq!(api_hits(&google).await, 3);
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let google = Google::start_with(|c| {
        c.request_timeout = Duration::from_millis(100);
        c.retry = google_client::RetryPolicy::immediate(2);
    })
    .await
    .with_cached_token("ya29.token")
    .await;
    fail_then_succeed(&google, last_page().set_delay(Duration::from_secs(2)), 10).await;

    let error = list(&google).await.unwrap_err();

    assert!(
        matches!(&error, GoogleError::Transient(m) if m.contains("timeout")),
        "{error:?}"
    );
    assert_eq!(api_hits(&google).await, 2);
}

/// The error of a list call to the API at `api_base_url(port)`, where nothing
/// listens on `port`.
async fn list_refused(api_base_url: impl FnOnce(u16) -> String) -> GoogleError {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let google = Google::start_with(|c| {
        c.api_base_url = Url::parse(&api_base_url(closed_port)).unwrap();
    })
    .await
    .with_cached_token("ya29.token")
    .await;
    list(&google).await.unwrap_err()
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let error = list_refused(|port| format!("http://127.0.0.1:{port}/calendar/v3")).await;

    assert!(matches!(error, GoogleError::Transient(_)), "{error:?}");
}

#[tokio::test]
async fn a_refused_connection_names_its_cause_but_not_the_urls_password() {
    let error = list_refused(|port| {
        format!("http://g:apipw1@127.0.0.1:{port}/calendar/v3?password=querypw2")
    })
    .await;

    let shown = format!("{error} {error:?}");
    assert!(
        shown.to_lowercase().contains("connection refused"),
        "{shown}"
    );
    assert!(
        !shown.contains("apipw1") && !shown.contains("querypw2"),
        "{shown}"
    );
}

#[tokio::test]
async fn unauthorized_refreshes_the_token_once_and_retries() {
    let google = Google::start().await.with_cached_token("ya29.stale").await;
    google.grant("ya29.fresh").await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer ya29.stale"))
        .respond_with(google_error(401, "authError", "Invalid Credentials"))
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer ya29.fresh"))
        .respond_with(last_page())
        .mount(&google.server)
        .await;

    assert!(list(&google).await.is_ok());
    assert_eq!(google.token_hits().await, 1);
    assert_eq!(api_hits(&google).await, 2);
    // The fresh token is now the cached one.
    assert_eq!(
        google
            .store
            .get(&user())
            .unwrap()
            .access_token
            .unwrap()
            .token
            .expose(),
        "ya29.fresh"
    );
}

#[tokio::test]
async fn a_second_unauthorized_is_reported() {
    let google = Google::start().await.with_cached_token("ya29.stale").await;
    google.grant("ya29.fresh").await;
    Mock::given(method("GET"))
        .respond_with(google_error(401, "authError", "Invalid Credentials"))
        .mount(&google.server)
        .await;

    let error = list(&google).await.unwrap_err();

    assert_eq!(error, GoogleError::Unauthorized);
    assert_eq!(google.token_hits().await, 1);
    assert_eq!(api_hits(&google).await, 2);
}

#[tokio::test]
async fn not_found_is_reported_without_retry() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(&google, google_error(404, "notFound", "Not Found"), 10).await;

    assert_eq!(list(&google).await, Err(GoogleError::NotFound));
    assert_eq!(api_hits(&google).await, 1);
}

#[tokio::test]
async fn other_errors_carry_google_s_reason_and_message() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    fail_then_succeed(
        &google,
        google_error(400, "invalid", "Invalid sync token value."),
        10,
    )
    .await;

    let error = list(&google).await.unwrap_err();

    assert_eq!(
        error,
        GoogleError::Other {
            status: 400,
            reason: "invalid".into(),
            message: "Invalid sync token value.".into()
        }
    );
    assert_eq!(api_hits(&google).await, 1);
}

#[tokio::test]
async fn invalid_grant_during_a_call_stops_it_and_marks_reauth() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "Bad Request"
        })))
        .mount(&google.server)
        .await;

    assert_eq!(list(&google).await, Err(GoogleError::InvalidGrant));
    assert!(google.needs_reauth());
    assert_eq!(google.token_hits().await, 1);
    assert_eq!(api_hits(&google).await, 0);
}

#[tokio::test]
async fn a_token_endpoint_outage_during_a_call_is_retried_and_never_marks_reauth() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&google.server)
        .await;
    google.grant("ya29.after-outage").await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer ya29.after-outage"))
        .respond_with(last_page())
        .mount(&google.server)
        .await;

    assert!(list(&google).await.is_ok());
    assert_eq!(google.token_hits().await, 2);
    assert!(!google.needs_reauth());
}
