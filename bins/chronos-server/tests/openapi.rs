#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `docs/openapi.json` documents exactly the routes the server mounts.
//!
//! The file is generated from the handlers (`webhook_http::openapi`; a test in
//! webhook-http fails while it is stale, `just openapi` regenerates it).
//! `webhook_http::ROUTES` is the one route table: the app mounts routes only
//! through it (checked in debug builds when the app starts, and by a source
//! scan in webhook-http), the document must list exactly its entries, and a
//! running server must serve each entry.

mod support;

use std::collections::BTreeSet;
use support::{ADMIN_TOKEN, spawn_app};
use sync_store::test_support::Backend;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json")).unwrap()
}

fn documented_routes(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (key, _) in item.as_object().expect("path item") {
            if METHODS.contains(&key.as_str()) {
                routes.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn openapi_document_lists_exactly_the_mounted_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mounted: BTreeSet<(String, String)> = webhook_http::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let documented = documented_routes(&doc);
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        undocumented.is_empty(),
        "mounted but not in docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unmounted.is_empty(),
        "documented but not mounted: {unmounted:?}"
    );
}

#[test]
fn every_documented_reference_resolves() {
    let doc = document();
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", piece.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref #{pointer}");
    }
}

/// A concrete URL for a path template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0b7e9a52-3c1d-4f6e-8a2b-9c0d1e2f3a4b")
        .replace("{user_id}", "openapi-user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_table_is_served() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for (method, path) in webhook_http::ROUTES {
        let url = format!("{}{}", app.address, concrete(path));
        let request = app
            .http
            .request(method.parse().unwrap(), &url)
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Goog-Channel-ID", "0b7e9a52-3c1d-4f6e-8a2b-9c0d1e2f3a4b");
        let request = match *method {
            "PUT" => request.json(&serde_json::json!({"refresh_token": "1//openapi"})),
            "POST" if path.ends_with("/calendars") => request.json(
                &serde_json::json!({"user_id": "openapi-user", "google_calendar_id": "primary"}),
            ),
            _ => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let streams = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streams {
            // The change stream never ends: a 200 event stream is a served route.
            assert_eq!(status, 200, "{method} {path}");
            continue;
        }
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        // The app's default service (and the internal scope's) answer 404 "Not found";
        // a served route answers otherwise (an unknown calendar is "Calendar not found").
        assert!(
            !(status == 404 && body.contains("\"Not found\"")),
            "{method} {path} is not served: {status} {body}"
        );
    }
}
