//! `docs/openapi.json` is the generated document, and what it states is what
//! the handlers enforce.
//!
//! The file is stale when the code changed without regenerating it:
//! `UPDATE_OPENAPI=1 cargo test -p webhook-http --test api openapi` rewrites it
//! (`just openapi` does the same).

use proptest::prelude::*;
use serde_json::Value;
use sync_domain::admin::{EVENT_CURSOR_PATTERN, EventCursor};
use sync_domain::changes::{CURSOR_PATTERN, ChangeCursor};
use sync_domain::ids::TEXT_ID_PATTERN;
use sync_domain::{GoogleCalendarId, UserId};
use webhook_http::openapi::{document, document_json};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

fn generated() -> Value {
    serde_json::from_str(&document_json()).unwrap()
}

/// The schema of `name` in the operation's parameters.
fn parameter(doc: &Value, path: &str, method: &str, name: &str) -> Value {
    let parameters = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let parameter = parameters
        .iter()
        .map(|p| resolve(doc, p))
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    resolve(doc, &parameter["schema"])
}

/// An object, following a `$ref`.
fn resolve(doc: &Value, value: &Value) -> Value {
    match value["$ref"].as_str() {
        Some(pointer) => doc.pointer(&pointer[1..]).unwrap().clone(),
        None => value.clone(),
    }
}

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let generated = document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(FILE, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(FILE).unwrap();
    assert!(
        on_disk == generated,
        "docs/openapi.json is stale: regenerate it with `UPDATE_OPENAPI=1 cargo test -p webhook-http --test api openapi`"
    );
}

#[test]
fn the_document_is_openapi_3_with_every_reference_resolving() {
    let doc = generated();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", piece.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref #{pointer}");
    }
    // The typed document and its JSON agree.
    assert_eq!(serde_json::to_value(document()).unwrap(), doc);
}

#[test]
fn limits_are_the_handlers() {
    let doc = generated();
    let events = parameter(&doc, "/internal/calendars/{id}/events", "get", "limit");
    assert_eq!(
        (&events["minimum"], &events["maximum"], &events["default"]),
        (&1.into(), &1000.into(), &100.into())
    );
    let changes = parameter(&doc, "/internal/changes", "get", "limit");
    assert_eq!(
        (&changes["minimum"], &changes["maximum"]),
        (&1.into(), &1000.into())
    );
    let wait = parameter(&doc, "/internal/changes", "get", "wait");
    assert_eq!(
        (&wait["minimum"], &wait["maximum"], &wait["default"]),
        (&0.into(), &60.into(), &0.into())
    );
}

#[test]
fn user_ids_are_documented_as_the_parser_takes_them() {
    let doc = generated();
    for (path, method, name) in [
        ("/internal/calendars", "get", "user_id"),
        ("/internal/changes", "get", "user_id"),
        (
            "/internal/users/{user_id}/google-credentials",
            "put",
            "user_id",
        ),
    ] {
        let schema = parameter(&doc, path, method, name);
        assert_eq!(schema["minLength"], 1, "{method} {path}");
        assert_eq!(schema["maxLength"], UserId::MAX_LEN, "{method} {path}");
        assert_eq!(schema["pattern"], TEXT_ID_PATTERN, "{method} {path}");
    }
    let connect = resolve(&doc, &doc["components"]["schemas"]["Connect"]);
    let user = resolve(&doc, &connect["properties"]["user_id"]);
    assert_eq!(user["minLength"], 1);
    let google = resolve(&doc, &connect["properties"]["google_calendar_id"]);
    assert_eq!(google["maxLength"], GoogleCalendarId::MAX_LEN);
    assert_eq!(
        connect["required"],
        serde_json::json!(["user_id", "google_calendar_id"])
    );
}

#[test]
fn cursors_are_opaque_and_patterned() {
    let doc = generated();
    let events = parameter(&doc, "/internal/calendars/{id}/events", "get", "cursor");
    assert_eq!(events["pattern"], EVENT_CURSOR_PATTERN);
    for path in ["/internal/changes", "/internal/changes/stream"] {
        let after = parameter(&doc, path, "get", "after");
        assert_eq!(after["pattern"], CURSOR_PATTERN, "{path}");
        assert_eq!(after["maxLength"], 19, "{path}");
    }
}

#[test]
fn the_request_id_is_accepted_as_anything_and_echoed_as_the_rule_says() {
    let doc = generated();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let request = parameter(&doc, path, method, "X-Request-Id");
            assert!(
                request.get("maxLength").is_none() && request.get("pattern").is_none(),
                "{method} {path}: the server replaces a bad X-Request-Id, it never refuses one"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                let response = resolve(&doc, response);
                let header = resolve(&doc, &response["headers"]["X-Request-Id"]);
                let header = &header["schema"];
                assert_eq!(header["maxLength"], 64, "{method} {path} {status}");
                assert_eq!(
                    header["pattern"],
                    webhook_http::request_id::PATTERN,
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[test]
fn headers_the_webhook_ignores_are_not_constrained() {
    let doc = generated();
    for name in ["X-Goog-Resource-State", "X-Goog-Message-Number"] {
        let schema = parameter(&doc, "/calendar/webhook", "post", name);
        assert!(
            schema.get("enum").is_none() && schema.get("pattern").is_none(),
            "{name}: the server accepts any value"
        );
    }
    let channel = parameter(&doc, "/calendar/webhook", "post", "X-Goog-Channel-ID");
    assert_eq!(channel["minLength"], 1);
}

#[test]
fn internal_operations_require_the_bearer_token() {
    let doc = generated();
    assert_eq!(
        doc["components"]["securitySchemes"]["admin"]["scheme"],
        "bearer"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let internal = path.starts_with("/internal");
            assert_eq!(
                operation.get("security").is_some(),
                internal,
                "{method} {path}"
            );
            if internal {
                for status in ["401", "404", "503"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
    }
}

fn matches(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(text)
}

proptest! {
    #[test]
    fn the_id_pattern_and_length_accept_what_the_parser_accepts(s in "\\PC{0,3}[\\s\\x00-\\x1F\\x7F-\\x9F]{0,2}\\PC{0,3}") {
        let documented = matches(TEXT_ID_PATTERN, &s) && s.chars().count() <= UserId::MAX_LEN;
        prop_assert_eq!(documented, UserId::parse(s.clone()).is_ok(), "{:?}", s);
    }

    #[test]
    fn the_request_id_pattern_keeps_what_the_middleware_keeps(s in "[A-Za-z0-9._\\- /:\\x00é]{0,70}") {
        let documented = matches(webhook_http::request_id::PATTERN, &s)
            && s.chars().count() <= webhook_http::request_id::MAX_LEN;
        prop_assert_eq!(documented, webhook_http::request_id::is_kept(&s));
    }

    #[test]
    fn a_cursor_the_parser_accepts_matches_its_pattern(s in "[A-Za-z0-9_\\-=+/ ]{0,24}") {
        if EventCursor::parse(&s).is_ok() {
            prop_assert!(matches(EVENT_CURSOR_PATTERN, &s), "{:?}", s);
        }
        if ChangeCursor::parse(&s).is_ok() {
            prop_assert!(matches(CURSOR_PATTERN, s.trim()), "{:?}", s);
        }
    }
}
