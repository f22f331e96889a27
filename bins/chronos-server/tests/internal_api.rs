//! The internal API over HTTP (SPEC section 5): bearer auth on every route,
//! 404 everywhere without an admin token, input validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::{TestApp, spawn_app_with};
use sync_store::test_support::Backend;

const ADMIN: &str = "internal-admin-token-0123456789";
const ANY_ID: &str = "6f1c1a52-7f2b-4d6e-9a57-3c1f6c0b8e11";

/// Every route of the internal API.
const ROUTES: &[(&str, &str)] = &[
    ("PUT", "/internal/users/alice/google-credentials"),
    ("POST", "/internal/calendars"),
    ("GET", "/internal/calendars?user_id=alice"),
    (
        "GET",
        "/internal/calendars/6f1c1a52-7f2b-4d6e-9a57-3c1f6c0b8e11",
    ),
    (
        "GET",
        "/internal/calendars/6f1c1a52-7f2b-4d6e-9a57-3c1f6c0b8e11/events",
    ),
    (
        "POST",
        "/internal/calendars/6f1c1a52-7f2b-4d6e-9a57-3c1f6c0b8e11/sync",
    ),
    (
        "DELETE",
        "/internal/calendars/6f1c1a52-7f2b-4d6e-9a57-3c1f6c0b8e11",
    ),
    ("GET", "/internal/nothing-here"),
];

/// A server on SQLite with `admin_token` (None: the internal API is off);
/// the `TestApp` keeps it and its database alive.
async fn spawn(admin_token: Option<&str>) -> (String, TestApp) {
    let app = spawn_app_with(Backend::Sqlite, |raw| {
        raw.admin_token = admin_token.map(str::to_owned);
    })
    .await
    .expect("SQLite needs no configuration");
    (app.address.clone(), app)
}

async fn send(
    address: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request =
        reqwest::Client::new().request(method.parse().unwrap(), format!("{address}{path}"));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_internal_route_requires_the_bearer_token() {
    let (address, _db) = spawn(Some(ADMIN)).await;
    let wrong = format!("Bearer {ADMIN}x");
    let basic = format!("Basic {ADMIN}");
    for (method, path) in ROUTES {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some("Bearer"),
            Some(""),
        ] {
            let (status, challenge, body) = send(&address, method, path, auth, Some("{}")).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
            assert_eq!(body["detail"], "Invalid or missing bearer token");
        }
        let (status, _, _) = send(
            &address,
            method,
            path,
            Some(&format!("Bearer {ADMIN}")),
            None,
        )
        .await;
        assert_ne!(status, 401, "{method} {path} with the right token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_internal_tree_is_404() {
    let (address, _db) = spawn(None).await;
    for (method, path) in ROUTES {
        let (status, challenge, _) = send(
            &address,
            method,
            path,
            Some(&format!("Bearer {ADMIN}")),
            None,
        )
        .await;
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(challenge, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_get_clear_4xx() {
    let (address, _db) = spawn(Some(ADMIN)).await;
    let auth = format!("Bearer {ADMIN}");
    let auth = Some(auth.as_str());
    let (status, _, body) = send(
        &address,
        "POST",
        "/internal/calendars",
        auth,
        Some("not json"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body")
    );
    let (status, _, body) = send(
        &address,
        "POST",
        "/internal/calendars",
        auth,
        Some(r#"{"user_id": "", "google_calendar_id": "primary"}"#),
    )
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (400, Some("user_id must not be empty"))
    );
    let (status, _, _) = send(
        &address,
        "PUT",
        "/internal/users/alice/google-credentials",
        auth,
        Some(r#"{"refresh_token": ""}"#),
    )
    .await;
    assert_eq!(status, 400);
    // A malformed id names no calendar: 404, like an unknown one.
    assert_eq!(
        send(
            &address,
            "GET",
            "/internal/calendars/not-a-uuid",
            auth,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &address,
            "GET",
            &format!("/internal/calendars/{ANY_ID}"),
            auth,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &address,
            "POST",
            &format!("/internal/calendars/{ANY_ID}/sync"),
            auth,
            None
        )
        .await
        .0,
        404
    );

    let (status, _, body) = send(
        &address,
        "POST",
        "/internal/calendars",
        auth,
        Some(r#"{"user_id": "alice", "google_calendar_id": "primary"}"#),
    )
    .await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["sync_state"], "pending");
    assert_eq!(body["channel"], Value::Null);
    let (status, _, again) = send(
        &address,
        "POST",
        "/internal/calendars",
        auth,
        Some(r#"{"user_id": "alice", "google_calendar_id": "primary"}"#),
    )
    .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=%%%",
        "cursor=!!",
    ] {
        let (status, _, _) = send(
            &address,
            "GET",
            &format!("/internal/calendars/{id}/events?{bad}"),
            auth,
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _, body) = send(
        &address,
        "GET",
        &format!("/internal/calendars/{id}/events?limit=1000"),
        auth,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"events": [], "next_cursor": null}));
    assert_eq!(
        send(
            &address,
            "POST",
            &format!("/internal/calendars/{id}/sync"),
            auth,
            None
        )
        .await
        .0,
        202
    );
    let (status, _, list) = send(
        &address,
        "GET",
        "/internal/calendars?user_id=alice",
        auth,
        None,
    )
    .await;
    assert_eq!(
        (status, list["calendars"].as_array().map(Vec::len)),
        (200, Some(1))
    );
}
