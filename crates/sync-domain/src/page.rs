//! Decoding an `events.list` answer (Google's `Events` resource) into an
//! [`EventsPage`], leniently: one item that is not an event never fails its
//! page (SPEC section 6). Such an item is left out and reported in
//! [`EventsPage::skipped`] by its position and the reason, never its content;
//! text with U+0000 (which PostgreSQL refuses in `TEXT`) is stripped from the
//! indexed fields, while `raw` keeps the JSON whole (serialised, NUL is the
//! escape `\u0000`, which any `TEXT` column holds).

use crate::EventStatus;
use crate::calendar::{EventsPage, GoogleEvent, SkipReason, SkippedItem};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The answer as a whole is not an `Events` resource (not JSON, or a token of
/// the wrong type); the message names the JSON position, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("events.list answer is not an Events resource ({0})")]
pub struct PageError(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsBody {
    #[serde(default)]
    items: Option<Vec<Value>>,
    #[serde(default)]
    next_page_token: Option<String>,
    #[serde(default)]
    next_sync_token: Option<String>,
}

/// Decodes one `events.list` answer body.
pub fn decode_events_page(body: &[u8]) -> Result<EventsPage, PageError> {
    let body: EventsBody = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message may quote the offending value: keep only where and what kind.
        PageError(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let mut page = EventsPage {
        next_page_token: body.next_page_token,
        next_sync_token: body.next_sync_token,
        ..EventsPage::default()
    };
    for (position, raw) in body.items.unwrap_or_default().into_iter().enumerate() {
        match parse_event(raw) {
            Ok(event) => page.items.push(event),
            Err(reason) => page.skipped.push(SkippedItem { position, reason }),
        }
    }
    Ok(page)
}

/// Reads the indexed fields of an event resource, keeping the whole JSON in `raw`.
pub fn parse_event(raw: Value) -> Result<GoogleEvent, SkipReason> {
    if !raw.is_object() {
        return Err(SkipReason::NotAnObject);
    }
    let text = |field: &str| raw.get(field).and_then(Value::as_str).map(without_nul);
    let id = text("id")
        .filter(|id| !id.is_empty())
        .ok_or(SkipReason::NoId)?;
    Ok(GoogleEvent {
        id,
        status: EventStatus::from_google(text("status").as_deref()),
        updated: text("updated").and_then(|u| OffsetDateTime::parse(&u, &Rfc3339).ok()),
        etag: text("etag"),
        summary: text("summary"),
        raw,
    })
}

/// `text` without U+0000.
pub fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn page(items: &Value) -> EventsPage {
        let body = json!({"kind": "calendar#events", "items": items, "nextSyncToken": "s1"});
        decode_events_page(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_item_without_an_id_is_skipped_and_the_rest_kept() {
        let p = page(&json!([{"id": "a"}, {"summary": "no id"}, {"id": 7}, "x", {"id": "b"}]));
        let ids: Vec<&str> = p.items.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            p.skipped,
            [
                SkippedItem {
                    position: 1,
                    reason: SkipReason::NoId
                },
                SkippedItem {
                    position: 2,
                    reason: SkipReason::NoId
                },
                SkippedItem {
                    position: 3,
                    reason: SkipReason::NotAnObject
                },
            ]
        );
        assert_eq!(p.next_sync_token.as_deref(), Some("s1"));
    }

    #[test]
    fn nul_is_stripped_from_indexed_fields_and_kept_escaped_in_raw() {
        let p = page(&json!([{"id": "a\u{0}", "summary": "Stand\u{0}up", "etag": "\"1\u{0}\""}]));
        let event = &p.items[0];
        assert_eq!(event.id, "a");
        assert_eq!(event.summary.as_deref(), Some("Standup"));
        assert_eq!(event.etag.as_deref(), Some("\"1\""));
        assert!(event.raw.to_string().contains("Stand\\u0000up"));
    }

    #[test]
    fn a_body_that_is_not_an_events_resource_names_no_content() {
        let err = decode_events_page(br#"{"nextPageToken": ["secret-ish"]}"#).unwrap_err();
        assert!(!err.to_string().contains("secret-ish"), "{err}");
        assert!(decode_events_page(b"not json").is_err());
        assert_eq!(
            decode_events_page(br#"{"items": null}"#).unwrap(),
            EventsPage::default()
        );
    }

    fn check(page: &EventsPage) {
        let total = page.items.len() + page.skipped.len();
        for event in &page.items {
            assert!(!event.id.is_empty());
            assert!(!event.id.contains('\0'));
            assert!(!event.summary.as_deref().unwrap_or("").contains('\0'));
        }
        assert!(page.skipped.iter().all(|s| s.position < total));
    }

    proptest! {
        // The fuzz target's property (fuzz/fuzz_targets/events_page.rs), on every test run.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(page) = decode_events_page(&bytes) { check(&page); }
        }

        #[test]
        fn decoding_arbitrary_items_keeps_every_event_with_an_id(
            items in proptest::collection::vec(
                (proptest::option::of("[a-z\\x00]{0,4}"), proptest::option::of("\\PC{0,8}"), any::<bool>()),
                0..20,
            ),
        ) {
            let items: Vec<Value> = items
                .into_iter()
                .map(|(id, summary, object)| {
                    if object { json!({"id": id, "summary": summary}) } else { json!(id) }
                })
                .collect();
            let body = json!({"items": items, "nextSyncToken": "t"}).to_string();
            let page = decode_events_page(body.as_bytes()).unwrap();
            check(&page);
            prop_assert_eq!(page.items.len() + page.skipped.len(), items.len());
        }
    }
}
