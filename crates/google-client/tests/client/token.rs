//! Access tokens: refresh form, caching, single flight, rotation, invalid_grant.

use super::*;
use google_client::{GoogleError, REFRESH_MARGIN, TokenSource};
use std::time::Duration;
use sync_domain::calendar::CalendarApi;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn tokens(google: &Google) -> &TokenSource {
    google.client.tokens()
}

#[tokio::test]
async fn refresh_posts_the_documented_form_and_caches_the_token() {
    let google = Google::start().await;
    google.grant("ya29.first").await;

    let token = tokens(&google).access_token(&user()).await.unwrap();

    assert_eq!(token.expose(), "ya29.first");
    let requests = google.requests_to("/token").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method.as_str(), "POST");
    assert_eq!(
        requests[0].headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    let form = form(&requests[0]);
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(form.get("refresh_token").map(String::as_str), Some(REFRESH));
    assert_eq!(form.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some(CLIENT_SECRET)
    );
    let stored = google.store.get(&user()).unwrap().access_token.unwrap();
    assert_eq!(stored.token.expose(), "ya29.first");
    assert_eq!(
        stored.expires_at,
        google.clock.now() + Duration::from_secs(3599)
    );
}

#[tokio::test]
async fn token_is_reused_until_shortly_before_it_expires() {
    let google = Google::start().await;
    google.grant("ya29.first").await;

    tokens(&google).access_token(&user()).await.unwrap();
    tokens(&google).access_token(&user()).await.unwrap();
    assert_eq!(google.token_hits().await, 1);

    // 3599 s lifetime: still fresh one second before the margin starts...
    google
        .clock
        .advance(Duration::from_secs(3599) - REFRESH_MARGIN - Duration::from_secs(1));
    tokens(&google).access_token(&user()).await.unwrap();
    assert_eq!(google.token_hits().await, 1);

    // ...refreshed once inside it.
    google.clock.advance(Duration::from_secs(2));
    tokens(&google).access_token(&user()).await.unwrap();
    assert_eq!(google.token_hits().await, 2);
}

#[tokio::test]
async fn a_fresh_token_cached_in_the_store_needs_no_refresh() {
    let google = Google::start().await.with_cached_token("ya29.stored").await;
    google.grant("ya29.unwanted").await;

    let token = tokens(&google).access_token(&user()).await.unwrap();

    assert_eq!(token.expose(), "ya29.stored");
    assert_eq!(google.token_hits().await, 0);
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_ok("ya29.shared").set_delay(Duration::from_millis(150)))
        .mount(&google.server)
        .await;

    let source = tokens(&google);
    let user = user();
    let calls = (0..16).map(|_| source.access_token(&user));
    let results = futures::future::join_all(calls).await;

    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap().expose() == "ya29.shared")
    );
    assert_eq!(google.token_hits().await, 1);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.new",
            "expires_in": 3599,
            "refresh_token": "1//0rotated",
            "scope": "https://www.googleapis.com/auth/calendar",
            "token_type": "Bearer"
        })))
        .mount(&google.server)
        .await;

    tokens(&google).access_token(&user()).await.unwrap();

    let stored = google.store.get(&user()).unwrap();
    assert_eq!(stored.refresh_token.expose(), "1//0rotated");
    // The access token survives the rotation (stored after the refresh token).
    assert_eq!(stored.access_token.unwrap().token.expose(), "ya29.new");
}

#[tokio::test]
async fn invalid_grant_marks_the_user_for_reauthorisation() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked."
        })))
        .mount(&google.server)
        .await;

    let error = tokens(&google).access_token(&user()).await.unwrap_err();

    assert_eq!(error, GoogleError::InvalidGrant);
    assert!(google.needs_reauth());
    // Known-refused credentials are not sent to Google again.
    let again = tokens(&google).access_token(&user()).await.unwrap_err();
    assert_eq!(again, GoogleError::InvalidGrant);
    assert_eq!(google.token_hits().await, 1);
}

#[tokio::test]
async fn an_expires_in_of_ten_to_the_twelve_seconds_is_cached_without_panicking() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.forever",
            "expires_in": 1_000_000_000_000u64,
            "token_type": "Bearer"
        })))
        .mount(&google.server)
        .await;

    let token = tokens(&google).access_token(&user()).await.unwrap();

    assert_eq!(token.expose(), "ya29.forever");
    let stored = google.store.get(&user()).unwrap().access_token.unwrap();
    assert!(stored.expires_at > google.clock.now());
}

#[tokio::test]
async fn token_endpoint_500_is_transient_and_does_not_mark_reauth() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(500).set_body_json(json!({"error": "internal_failure"})),
        )
        .mount(&google.server)
        .await;

    let error = tokens(&google).access_token(&user()).await.unwrap_err();

    assert!(matches!(error, GoogleError::Transient(_)), "{error:?}");
    assert!(!google.needs_reauth());
}

#[tokio::test]
async fn token_endpoint_timeout_is_transient_and_does_not_mark_reauth() {
    let google = Google::start_with(|c| c.request_timeout = Duration::from_millis(100)).await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_ok("ya29.late").set_delay(Duration::from_secs(2)))
        .mount(&google.server)
        .await;

    let error = tokens(&google).access_token(&user()).await.unwrap_err();

    assert!(
        matches!(&error, GoogleError::Transient(m) if m.contains("timeout")),
        "{error:?}"
    );
    assert!(!google.needs_reauth());
}

#[tokio::test]
async fn other_token_endpoint_refusals_do_not_mark_reauth() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "The OAuth client was not found."
        })))
        .mount(&google.server)
        .await;

    let error = tokens(&google).access_token(&user()).await.unwrap_err();

    assert_eq!(
        error,
        GoogleError::Other {
            status: 400,
            reason: "invalid_client".into(),
            message: "The OAuth client was not found.".into()
        }
    );
    assert!(!google.needs_reauth());
}

#[tokio::test]
async fn token_endpoint_redirects_are_not_followed() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/elsewhere", google.server.uri())),
        )
        .mount(&google.server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(token_ok("ya29.stolen"))
        .mount(&google.server)
        .await;

    assert!(tokens(&google).access_token(&user()).await.is_err());
    assert!(google.requests_to("/elsewhere").await.is_empty());
}

#[tokio::test]
async fn a_user_without_credentials_gets_no_credentials() {
    let google = Google::start().await;
    let stranger = UserId::parse("stranger").unwrap();

    let error = tokens(&google).access_token(&stranger).await.unwrap_err();

    assert_eq!(error, GoogleError::NoCredentials);
    assert_eq!(google.token_hits().await, 0);
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let google = Google::start().await;
    google.grant("ya29.secret-access").await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": []})))
        .mount(&google.server)
        .await;
    google.client.list_calendars(&user()).await.unwrap();

    let shown = format!("{:?} {:?}", google.client, tokens(&google));
    for secret in [CLIENT_SECRET, REFRESH, "ya29.secret-access"] {
        assert!(!shown.contains(secret), "{secret} leaked in {shown}");
    }
}

#[tokio::test]
async fn token_endpoint_429_is_a_rate_limit_not_a_reauth() {
    let google = Google::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&google.server)
        .await;

    let error = tokens(&google).access_token(&user()).await.unwrap_err();

    assert_eq!(
        error,
        GoogleError::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert!(!google.needs_reauth());
}
