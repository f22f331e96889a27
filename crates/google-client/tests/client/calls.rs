//! The four Calendar calls: what is sent and how the answers are read.

use super::*;
use futures::StreamExt;
use google_client::{GoogleError, event_pages};
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery, WatchRequest};
use sync_domain::ids::{ChannelId, GoogleCalendarId, ResourceId};
use sync_domain::secret::ChannelToken;
use time::macros::datetime;
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

const HOLIDAYS: &str = "en.usa#holiday@group.v.calendar.google.com";
const HOLIDAYS_PATH: &str = "en.usa%23holiday@group.v.calendar.google.com";
/// What Google forbids together with `syncToken` (events.list reference).
const FORBIDDEN_WITH_SYNC_TOKEN: [&str; 8] = [
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

fn primary() -> GoogleCalendarId {
    GoogleCalendarId::parse("primary").unwrap()
}

fn watch_request() -> WatchRequest {
    WatchRequest {
        channel_id: ChannelId::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
        token: ChannelToken::new("channel-secret-token"),
        address: "https://chronos.example.com/calendar/webhook".into(),
        ttl: Duration::from_secs(604_800),
    }
}

fn event(id: &str, status: &str, summary: &str) -> Value {
    json!({
        "kind": "calendar#event",
        "etag": format!("\"etag-{id}\""),
        "id": id,
        "status": status,
        "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
        "created": "2024-04-01T08:00:00.000Z",
        "updated": "2024-05-01T10:00:00.000Z",
        "summary": summary,
        "start": {"dateTime": "2024-05-02T09:00:00+02:00"},
        "end": {"dateTime": "2024-05-02T09:30:00+02:00"},
        "iCalUID": format!("{id}@google.com"),
        "sequence": 0
    })
}

fn events_page(items: &[Value], next: Option<(&str, &str)>) -> ResponseTemplate {
    let mut body = json!({
        "kind": "calendar#events",
        "etag": "\"p33g0m9pd2mfo20o\"",
        "summary": "user@example.com",
        "updated": "2024-05-01T10:00:00.000Z",
        "timeZone": "Europe/Paris",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items
    });
    if let Some((key, value)) = next {
        body[key] = json!(value);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test]
async fn watch_sends_the_documented_channel_and_reads_google_s_answer() {
    let google = Google::start().await;
    google.grant("ya29.token").await;
    let request = watch_request();
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/calendars/{HOLIDAYS_PATH}/events/watch")))
        .and(header("authorization", "Bearer ya29.token"))
        .and(body_json(json!({
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "type": "web_hook",
            "address": "https://chronos.example.com/calendar/webhook",
            "token": "channel-secret-token",
            "params": {"ttl": "604800"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "api#channel",
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "resourceId": "o3hgv1538sdjfh",
            "resourceUri": "https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday@group.v.calendar.google.com/events?alt=json",
            "token": "channel-secret-token",
            "expiration": "1735689600000"
        })))
        .expect(1)
        .mount(&google.server)
        .await;

    let calendar = GoogleCalendarId::parse(HOLIDAYS).unwrap();
    let watched = google
        .client
        .watch(&user(), &calendar, &request)
        .await
        .unwrap();

    assert_eq!(watched.channel_id, request.channel_id);
    assert_eq!(
        watched.resource_id,
        ResourceId::parse("o3hgv1538sdjfh").unwrap()
    );
    assert_eq!(watched.expires_at, Some(datetime!(2025-01-01 00:00:00 UTC)));
}

#[tokio::test]
async fn watch_without_expiration_grants_no_expiry() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "api#channel", "id": "01234567-89ab-cdef-0123-456789abcdef",
            "resourceId": "r1", "resourceUri": "https://x"
        })))
        .mount(&google.server)
        .await;

    let watched = google
        .client
        .watch(&user(), &primary(), &watch_request())
        .await
        .unwrap();

    assert_eq!(watched.expires_at, None);
}

#[tokio::test]
async fn watch_on_an_unwatchable_calendar_is_push_not_supported() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            403,
            "pushNotSupportedForRequestedResource",
            "Push notifications are not supported by this resource.",
        ))
        .expect(1)
        .mount(&google.server)
        .await;

    let error = google
        .client
        .watch(&user(), &primary(), &watch_request())
        .await
        .unwrap_err();

    assert_eq!(error, GoogleError::PushNotSupported);
}

#[tokio::test]
async fn stop_sends_id_and_resource_id() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/channels/stop")))
        .and(header("authorization", "Bearer ya29.token"))
        .and(body_json(json!({"id": "chan-1", "resourceId": "res-1"})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&google.server)
        .await;

    google
        .client
        .stop_channel(
            &user(),
            &ChannelId::parse("chan-1").unwrap(),
            &ResourceId::parse("res-1").unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn stop_of_an_unknown_channel_counts_as_stopped() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/channels/stop")))
        .respond_with(google_error(
            404,
            "notFound",
            "Channel 'chan-1' not found for project '1234'",
        ))
        .expect(1)
        .mount(&google.server)
        .await;

    let result = google
        .client
        .stop_channel(
            &user(),
            &ChannelId::parse("chan-1").unwrap(),
            &ResourceId::parse("res-1").unwrap(),
        )
        .await;

    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn full_sync_follows_page_tokens_until_the_sync_token() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    let events_path = format!("{API_PATH}/calendars/primary/events");
    Mock::given(method("GET"))
        .and(path(events_path.as_str()))
        .and(query_param("pageToken", "page-2"))
        .respond_with(events_page(
            &[event("e3", "cancelled", "Gone")],
            Some(("nextSyncToken", "CPDAlvWDx70CEPDAlvWDx70CGAU=")),
        ))
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(path(events_path.as_str()))
        .and(query_param_is_missing("pageToken"))
        .respond_with(events_page(
            &[
                event("e1", "confirmed", "Standup"),
                event("e2", "tentative", "Lunch"),
            ],
            Some(("nextPageToken", "page-2")),
        ))
        .mount(&google.server)
        .await;

    let pages: Vec<_> = event_pages(&google.client, &user(), &primary(), None, 2500)
        .collect()
        .await;

    assert_eq!(pages.len(), 2);
    let first = pages[0].as_ref().unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    assert_eq!(first.items[1].status, sync_domain::EventStatus::Tentative);
    assert_eq!(first.items[0].summary.as_deref(), Some("Standup"));
    assert_eq!(first.items[0].etag.as_deref(), Some("\"etag-e1\""));
    assert_eq!(
        first.items[0].updated,
        Some(datetime!(2024-05-01 10:00:00 UTC))
    );
    assert_eq!(first.items[0].raw, event("e1", "confirmed", "Standup"));
    assert_eq!(first.next_page_token.as_deref(), Some("page-2"));
    assert_eq!(first.next_sync_token, None);
    let last = pages[1].as_ref().unwrap();
    assert_eq!(last.items[0].status, sync_domain::EventStatus::Cancelled);
    assert_eq!(
        last.next_sync_token.as_deref(),
        Some("CPDAlvWDx70CEPDAlvWDx70CGAU=")
    );

    let requests = google.requests_to(&events_path).await;
    assert_eq!(requests.len(), 2);
    for (request, page_token) in requests.iter().zip([None, Some("page-2")]) {
        assert_eq!(request.method.as_str(), "GET");
        assert_eq!(bearer(request), "Bearer ya29.token");
        let mut expected = BTreeMap::from([
            ("showDeleted".to_owned(), "true".to_owned()),
            ("maxResults".to_owned(), "2500".to_owned()),
        ]);
        if let Some(token) = page_token {
            expected.insert("pageToken".into(), token.into());
        }
        assert_eq!(query(request), expected);
    }
}

#[tokio::test]
async fn an_events_list_item_that_is_not_an_event_is_skipped_and_the_rest_of_the_page_kept() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    let events_path = format!("{API_PATH}/calendars/primary/events");
    let mut no_id = event("x", "confirmed", "secret agenda");
    no_id.as_object_mut().unwrap().remove("id");
    let mut wrong_type = event("y", "confirmed", "Lunch");
    wrong_type["id"] = json!(42);
    Mock::given(method("GET"))
        .and(path(events_path.as_str()))
        .respond_with(events_page(
            &[
                event("e1", "confirmed", "Standup"),
                no_id,
                wrong_type,
                event("e2", "confirmed", "Retro"),
            ],
            Some(("nextSyncToken", "next-token")),
        ))
        .mount(&google.server)
        .await;

    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 2500,
    };
    let page = google
        .client
        .list_events(&user(), &primary(), &query)
        .await
        .unwrap();

    let ids: Vec<&str> = page.items.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2"]);
    let positions: Vec<usize> = page.skipped.iter().map(|s| s.position).collect();
    assert_eq!(positions, [1, 2]);
    assert_eq!(page.next_sync_token.as_deref(), Some("next-token"));
}

#[tokio::test]
async fn incremental_sync_sends_the_sync_token_and_nothing_google_forbids_with_it() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    let events_path = format!("{API_PATH}/calendars/{HOLIDAYS_PATH}/events");
    Mock::given(method("GET"))
        .and(path(events_path.as_str()))
        .and(query_param("syncToken", "sync-1"))
        .respond_with(events_page(
            &[event("e1", "cancelled", "Deleted")],
            Some(("nextPageToken", "page-2")),
        ))
        .up_to_n_times(1)
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(path(events_path.as_str()))
        .and(query_param("syncToken", "sync-1"))
        .and(query_param("pageToken", "page-2"))
        .respond_with(events_page(&[], Some(("nextSyncToken", "sync-2"))))
        .mount(&google.server)
        .await;

    let calendar = GoogleCalendarId::parse(HOLIDAYS).unwrap();
    let pages: Vec<_> = event_pages(
        &google.client,
        &user(),
        &calendar,
        Some("sync-1".into()),
        100,
    )
    .collect()
    .await;

    assert_eq!(pages.len(), 2);
    assert_eq!(
        pages[0].as_ref().unwrap().items[0].status,
        sync_domain::EventStatus::Cancelled
    );
    assert_eq!(
        pages[1].as_ref().unwrap().next_sync_token.as_deref(),
        Some("sync-2")
    );
    let requests = google.requests_to(&events_path).await;
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let query = query(request);
        assert_eq!(query.get("syncToken").map(String::as_str), Some("sync-1"));
        assert_eq!(query.get("showDeleted").map(String::as_str), Some("true"));
        assert_eq!(query.get("maxResults").map(String::as_str), Some("100"));
        for forbidden in FORBIDDEN_WITH_SYNC_TOKEN {
            assert!(
                !query.contains_key(forbidden),
                "{forbidden} sent with a syncToken"
            );
        }
    }
}

#[tokio::test]
async fn max_results_is_capped_at_2500() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("GET"))
        .respond_with(events_page(&[], Some(("nextSyncToken", "s"))))
        .mount(&google.server)
        .await;
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 10_000,
    };

    google
        .client
        .list_events(&user(), &primary(), &query)
        .await
        .unwrap();

    let requests = google.server.received_requests().await.unwrap();
    assert_eq!(
        super::query(&requests[0])
            .get("maxResults")
            .map(String::as_str),
        Some("2500")
    );
}

#[tokio::test]
async fn an_expired_sync_token_asks_for_a_full_sync() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("GET"))
        .respond_with(google_error(
            410,
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        ))
        .expect(1)
        .mount(&google.server)
        .await;

    let pages: Vec<_> = event_pages(&google.client, &user(), &primary(), Some("old".into()), 250)
        .collect()
        .await;

    assert_eq!(pages, vec![Err(GoogleError::FullSyncRequired)]);
}

#[tokio::test]
async fn calendar_list_follows_every_page() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    let list_path = format!("{API_PATH}/users/me/calendarList");
    Mock::given(method("GET"))
        .and(path(list_path.as_str()))
        .and(query_param("pageToken", "cl-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "calendar#calendarList",
            "etag": "\"p2\"",
            "nextSyncToken": "cl-sync",
            "items": [{"kind": "calendar#calendarListEntry", "id": HOLIDAYS,
                       "summary": "Holidays in United States", "accessRole": "reader"}]
        })))
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .and(path(list_path.as_str()))
        .and(query_param_is_missing("pageToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "calendar#calendarList",
            "etag": "\"p1\"",
            "nextPageToken": "cl-2",
            "items": [{"kind": "calendar#calendarListEntry", "id": "user@example.com",
                       "summary": "user@example.com", "primary": true, "accessRole": "owner"}]
        })))
        .mount(&google.server)
        .await;

    let calendars = google.client.list_calendars(&user()).await.unwrap();

    assert_eq!(calendars.len(), 2);
    assert_eq!(calendars[0].id.as_str(), "user@example.com");
    assert!(calendars[0].primary);
    assert_eq!(calendars[0].access_role.as_deref(), Some("owner"));
    assert_eq!(calendars[1].id.as_str(), HOLIDAYS);
    assert!(!calendars[1].primary);
    assert_eq!(
        calendars[1].summary.as_deref(),
        Some("Holidays in United States")
    );
    let requests = google.requests_to(&list_path).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        query(&requests[0]).get("maxResults").map(String::as_str),
        Some("250")
    );
    assert!(requests.iter().all(|r| bearer(r) == "Bearer ya29.token"));
}

#[tokio::test]
async fn watch_and_stop_are_retried_on_server_errors() {
    let google = Google::start().await.with_cached_token("ya29.token").await;
    Mock::given(method("POST"))
        .respond_with(google_error(503, "backendError", "Backend Error"))
        .up_to_n_times(2)
        .mount(&google.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/calendars/primary/events/watch")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "api#channel", "id": "01234567-89ab-cdef-0123-456789abcdef",
            "resourceId": "r1", "resourceUri": "https://x", "expiration": "1735689600000"
        })))
        .mount(&google.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/channels/stop")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&google.server)
        .await;

    let watched = google
        .client
        .watch(&user(), &primary(), &watch_request())
        .await
        .unwrap();
    google
        .client
        .stop_channel(&user(), &watched.channel_id, &watched.resource_id)
        .await
        .unwrap();

    let watch_path = format!("{API_PATH}/calendars/primary/events/watch");
    assert_eq!(google.requests_to(&watch_path).await.len(), 3);
    assert_eq!(
        google
            .requests_to(&format!("{API_PATH}/channels/stop"))
            .await
            .len(),
        1
    );
}
