//! `POST /calendar/webhook`: one test per row of SPEC section 2, then the edges.

use crate::helpers::{
    CHANNEL, Fixture, TOKEN, WriteFailingStore, calendar, change, channel, notification, record,
    send_to,
};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::test::TestRequest;
use proptest::prelude::*;
use serde_json::json;
use std::sync::Arc;
use sync_domain::fakes::{FakeClock, message};
use sync_domain::ports::{Clock, SyncRequest};
use webhook_http::WebhookState;

// Row 1: the channel id.

#[actix_web::test]
async fn missing_channel_id_gets_400() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
        ]))
        .await;
    reply.assert(400, &json!({"detail": "Missing channel ID"}));
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn empty_or_blank_channel_id_gets_400() {
    for id in ["", "   "] {
        let f = Fixture::new();
        let reply = f
            .send(notification(&[
                ("X-Goog-Channel-ID", id),
                ("X-Goog-Channel-Token", TOKEN),
            ]))
            .await;
        reply.assert(400, &json!({"detail": "Missing channel ID"}));
    }
}

// Row 2: the store.

#[actix_web::test]
async fn store_down_gets_503_with_retry_after() {
    let f = Fixture::new();
    f.store.set_down(true);
    let reply = f.send(change("exists", 2)).await;
    reply.assert(503, &json!({"detail": "Service unavailable"}));
    assert_eq!(reply.headers.get(header::RETRY_AFTER).unwrap(), "5");
}

#[actix_web::test]
async fn store_failing_to_record_gets_503_not_200() {
    let store = WriteFailingStore::default();
    store.0.insert_channel(channel(), record(None));
    let state = WebhookState::new(Arc::new(store), Arc::new(FakeClock::default()));
    let reply = send_to(state, change("exists", 2), |_| {}).await;
    reply.assert(503, &json!({"detail": "Service unavailable"}));
    assert_eq!(reply.headers.get(header::RETRY_AFTER).unwrap(), "5");
}

// Row 3: unknown channels.

#[actix_web::test]
async fn unknown_channel_gets_empty_200() {
    let f = Fixture::empty();
    f.send(change("exists", 2)).await.assert(200, &json!({}));
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn malformed_channel_id_is_unknown_without_asking_the_store() {
    let f = Fixture::new();
    // A down store would answer 503 if it were asked.
    f.store.set_down(true);
    let too_long = "x".repeat(65);
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", &too_long),
            ("X-Goog-Channel-Token", TOKEN),
        ]))
        .await;
    reply.assert(200, &json!({}));
}

// Row 4: the token.

#[actix_web::test]
async fn wrong_token_gets_401() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", "not-the-token"),
            ("X-Goog-Resource-State", "exists"),
        ]))
        .await;
    reply.assert(401, &json!({"detail": "Invalid token"}));
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn missing_token_gets_401() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Resource-State", "exists"),
        ]))
        .await;
    reply.assert(401, &json!({"detail": "Invalid token"}));
}

#[actix_web::test]
async fn empty_token_gets_401() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", ""),
        ]))
        .await;
    reply.assert(401, &json!({"detail": "Invalid token"}));
}

#[actix_web::test]
async fn wrong_token_on_handshake_gets_401() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", "nope"),
            ("X-Goog-Resource-State", "sync"),
        ]))
        .await;
    reply.assert(401, &json!({"detail": "Invalid token"}));
}

// Row 5: the handshake.

#[actix_web::test]
async fn sync_handshake_records_nothing() {
    let f = Fixture::new();
    f.send(change("sync", 1)).await.assert(200, &json!({}));
    assert!(f.store.recorded().is_empty());
}

// Row 6: changes.

#[actix_web::test]
async fn change_notification_records_sync_request_before_200() {
    let f = Fixture::new();
    let reply = f.send(change("exists", 7)).await;
    // The request is in the store by the time the reply is seen.
    reply.assert(200, &json!({}));
    assert_eq!(
        f.store.recorded(),
        vec![SyncRequest {
            calendar_id: calendar(),
            channel_id: channel(),
            message_number: Some(message(7)),
            requested_at: f.clock.now(),
        }]
    );
}

#[actix_web::test]
async fn every_change_state_records_a_sync_request() {
    let f = Fixture::new();
    for (number, state) in [(2, "exists"), (3, "not_exists"), (4, "exploded")] {
        f.send(change(state, number)).await.assert(200, &json!({}));
    }
    let absent_state = notification(&[
        ("X-Goog-Channel-ID", CHANNEL),
        ("X-Goog-Channel-Token", TOKEN),
        ("X-Goog-Message-Number", "5"),
    ]);
    f.send(absent_state).await.assert(200, &json!({}));
    assert_eq!(f.store.recorded_for(calendar()), 4);
}

#[actix_web::test]
async fn notification_without_message_number_records_a_sync_request() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", CHANNEL),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
        ]))
        .await;
    reply.assert(200, &json!({}));
    assert_eq!(f.store.recorded()[0].message_number, None);
}

// Row 7: orphaned channels.

#[actix_web::test]
async fn orphaned_channel_records_nothing() {
    let f = Fixture::new();
    let mut inactive = record(None);
    inactive.calendar_active = false;
    f.store.insert_channel(channel(), inactive);
    f.send(change("exists", 2)).await.assert(200, &json!({}));

    let mut disconnected = record(None);
    disconnected.calendar_id = None;
    f.store.insert_channel(channel(), disconnected);
    f.send(change("exists", 3)).await.assert(200, &json!({}));

    assert!(f.store.recorded().is_empty());
}

// Duplicates.

#[actix_web::test]
async fn duplicate_message_number_records_nothing() {
    let f = Fixture::new();
    f.store.insert_channel(channel(), record(Some(5)));
    for number in [5, 3] {
        f.send(change("exists", number))
            .await
            .assert(200, &json!({}));
    }
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn a_redelivered_notification_is_recorded_once() {
    let f = Fixture::new();
    for _ in 0..3 {
        f.send(change("exists", 9)).await.assert(200, &json!({}));
    }
    assert_eq!(f.store.recorded_for(calendar()), 1);
}

// Bodies.

#[actix_web::test]
async fn body_over_64_kib_gets_413() {
    let f = Fixture::new();
    let reply = f
        .send(change("exists", 2).set_payload(vec![b'a'; 64 * 1024 + 1]))
        .await;
    reply.assert(413, &json!({"detail": "Payload too large"}));
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn chunked_body_over_64_kib_gets_413() {
    let f = Fixture::new();
    let req = change("exists", 2)
        .insert_header((header::TRANSFER_ENCODING, "chunked"))
        .set_payload(vec![b'a'; 64 * 1024 + 1]);
    // No declared length: the limit must hold while streaming.
    let reply = f
        .send_edited(req, |headers| {
            headers.remove(header::CONTENT_LENGTH);
        })
        .await;
    reply.assert(413, &json!({"detail": "Payload too large"}));
    assert!(f.store.recorded().is_empty());
}

#[actix_web::test]
async fn body_of_exactly_64_kib_is_ignored() {
    let f = Fixture::new();
    let reply = f
        .send(change("exists", 2).set_payload(vec![0xff; 64 * 1024]))
        .await;
    reply.assert(200, &json!({}));
    assert_eq!(f.store.recorded().len(), 1);
}

// Headers.

#[actix_web::test]
async fn header_names_are_case_insensitive() {
    let f = Fixture::new();
    let reply = f
        .send(notification(&[
            ("x-goog-channel-id", CHANNEL),
            ("X-GOOG-CHANNEL-TOKEN", TOKEN),
            ("x-Goog-Resource-STATE", "exists"),
            ("X-goog-message-number", "3"),
        ]))
        .await;
    reply.assert(200, &json!({}));
    assert_eq!(f.store.recorded()[0].message_number, Some(message(3)));
}

#[actix_web::test]
async fn non_utf8_and_repeated_headers_never_500() {
    let f = Fixture::new();
    let bytes = |b: &'static [u8]| HeaderValue::from_bytes(b).unwrap();
    let id = HeaderName::from_static("x-goog-channel-id");
    let token = HeaderName::from_static("x-goog-channel-token");

    // A channel id that is not UTF-8 cannot be ours.
    let req = TestRequest::post()
        .uri("/calendar/webhook")
        .insert_header((id.clone(), bytes(b"\xff\xfe\x80")))
        .insert_header((token.clone(), bytes(TOKEN.as_bytes())));
    f.send(req).await.assert(200, &json!({}));

    // A token that is not UTF-8 is not the token.
    let req = change("exists", 2).insert_header((token.clone(), bytes(b"\xc3\x28")));
    f.send(req)
        .await
        .assert(401, &json!({"detail": "Invalid token"}));

    // A repeated channel id is ambiguous: never trusted, not even looked up.
    let req = change("exists", 2).append_header((id.clone(), CHANNEL));
    f.send(req).await.assert(200, &json!({}));

    // A repeated token, even both copies right, is not accepted.
    let req = change("exists", 2).append_header((token, TOKEN));
    f.send(req)
        .await
        .assert(401, &json!({"detail": "Invalid token"}));

    // A huge channel id and a garbage body.
    let huge = "c".repeat(100_000);
    let req = notification(&[("X-Goog-Channel-ID", &huge)]).set_payload(&b"\x00\xff{garbage"[..]);
    f.send(req).await.assert(200, &json!({}));

    // A garbage message number is absent; the change is still recorded.
    let req = change("exists", 2).insert_header(("X-Goog-Message-Number", "-1e99"));
    f.send(req).await.assert(200, &json!({}));

    assert_eq!(f.store.recorded().len(), 1);
    assert_eq!(f.store.recorded()[0].message_number, None);
}

// Methods.

#[actix_web::test]
async fn wrong_method_gets_json_405() {
    let f = Fixture::new();
    let reply = f.send(TestRequest::get().uri("/calendar/webhook")).await;
    reply.assert(405, &json!({"detail": "Method not allowed"}));
    assert_eq!(reply.headers.get(header::ALLOW).unwrap(), "POST");
}

// Anything at all.

/// Google's header names in assorted cases, and some others.
fn header_name() -> impl Strategy<Value = HeaderName> {
    let google = prop::sample::select(vec![
        "X-Goog-Channel-ID",
        "x-goog-channel-token",
        "X-GOOG-RESOURCE-STATE",
        "X-Goog-Resource-ID",
        "x-goog-resource-uri",
        "X-Goog-Message-Number",
        "X-Goog-Channel-Expiration",
        "Content-Type",
        "Content-Encoding",
    ])
    .prop_map(str::to_owned);
    prop_oneof![3 => google, 1 => "[A-Za-z0-9-]{1,24}"]
        .prop_map(|name| HeaderName::from_bytes(name.as_bytes()).unwrap())
}

/// Plausible and implausible header values, including bytes that are not UTF-8.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    prop_oneof![
        Just(CHANNEL.as_bytes().to_vec()),
        Just(TOKEN.as_bytes().to_vec()),
        prop::sample::select(vec!["sync", "exists", "not_exists", "gzip", ""])
            .prop_map(|s| s.as_bytes().to_vec()),
        "-?[0-9]{1,22}".prop_map(String::into_bytes),
        prop::collection::vec(byte, 0..300),
    ]
    .prop_map(|bytes| HeaderValue::from_bytes(&bytes).unwrap())
}

/// Small garbage bodies, and a few around the limit.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..512),
        1 => (prop::sample::select(vec![64 * 1024, 64 * 1024 + 1, 200_000]), any::<u8>())
            .prop_map(|(len, fill)| vec![fill; len]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With the store up, no input yields anything but 200, 400, 401 or 413, always as JSON.
    #[test]
    fn arbitrary_requests_never_get_5xx(
        headers in prop::collection::vec((header_name(), header_value()), 0..10),
        body in body(),
        chunked in any::<bool>(),
    ) {
        let reply = actix_web::rt::System::new().block_on(async {
            let f = Fixture::new();
            let req = headers
                .into_iter()
                .fold(TestRequest::post().uri("/calendar/webhook"), |req, pair| req.append_header(pair))
                .set_payload(body);
            f.send_edited(req, |h| {
                if chunked {
                    h.remove(header::CONTENT_LENGTH);
                }
            })
            .await
        });
        prop_assert!([200, 400, 401, 413].contains(&reply.status.as_u16()), "{:?}", reply);
        prop_assert_eq!(reply.content_type(), "application/json");
    }
}

// Issue 14 item 6 and issue 10 item 1: strangers and a silent database.

#[actix_web::test]
async fn a_channel_id_that_is_not_a_uuid_is_unknown_without_asking_the_store() {
    let f = Fixture::new();
    // A down store would answer 503 if it were asked.
    f.store.set_down(true);
    let reply = f
        .send(notification(&[
            ("X-Goog-Channel-ID", "chan-not-a-uuid"),
            ("X-Goog-Channel-Token", TOKEN),
            ("X-Goog-Resource-State", "exists"),
        ]))
        .await;
    reply.assert(200, &json!({}));
}

/// A store that never answers, like a database that stopped responding.
#[derive(Debug, Default)]
struct SilentStore;

#[async_trait::async_trait]
impl sync_domain::ports::WebhookStore for SilentStore {
    async fn find_channel(
        &self,
        _: &sync_domain::ChannelId,
    ) -> Result<Option<sync_domain::ChannelRecord>, sync_domain::ports::StoreError> {
        std::future::pending().await
    }

    async fn record_sync_request(
        &self,
        _: &SyncRequest,
    ) -> Result<sync_domain::ports::RecordOutcome, sync_domain::ports::StoreError> {
        std::future::pending().await
    }

    async fn ping(&self) -> Result<(), sync_domain::ports::StoreError> {
        std::future::pending().await
    }
}

#[actix_web::test]
async fn a_store_that_stops_answering_gets_503_within_the_deadline() {
    let state = WebhookState::new(Arc::new(SilentStore), Arc::new(FakeClock::default()))
        .with_store_deadline(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    let reply = send_to(state, change("exists", 2), |_| {}).await;
    reply.assert(503, &json!({"detail": "Service unavailable"}));
    assert_eq!(reply.headers.get(header::RETRY_AFTER).unwrap(), "5");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
