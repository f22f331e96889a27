//! The real `google_client::GoogleCalendarClient` against the fake over HTTP:
//! if the client is happy, the fake speaks what the client expects of Google.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use fake_google::{FakeGoogle, RunningFakeGoogle};
use futures::StreamExt as _;
use google_client::fakes::FakeMethod;
use google_client::{ClientSecret, GoogleCalendarClient, GoogleConfig, RetryPolicy, event_pages};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery, GoogleError, WatchRequest};
use sync_domain::fakes::InMemoryCredentialStore;
use sync_domain::ids::{ChannelId, GoogleCalendarId, UserId};
use sync_domain::ports::{CredentialStore, SystemClock};
use sync_domain::secret::{ChannelToken, RefreshToken};
use sync_store::test_support::eventually;
use url::Url;

const TOKEN: &str = "channel-token-0123456789abcdef";

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

fn primary() -> GoogleCalendarId {
    GoogleCalendarId::parse("primary").unwrap()
}

struct Setup {
    fake: RunningFakeGoogle,
    client: GoogleCalendarClient,
}

async fn setup(retry: RetryPolicy, refresh_token: &str) -> Setup {
    let fake = fake_google::spawn(FakeGoogle::default()).unwrap();
    fake.google.calendar().add_calendar(&alice(), &primary());
    let store = Arc::new(InMemoryCredentialStore::default());
    store
        .put_refresh_token(&alice(), &RefreshToken::new(refresh_token))
        .await
        .unwrap();
    let mut config = GoogleConfig::new("fake-client", ClientSecret::new("fake-secret"));
    config.api_base_url = Url::parse(&fake.api_base_url()).unwrap();
    config.token_url = Url::parse(&fake.token_url()).unwrap();
    config.retry = retry;
    config.request_timeout = Duration::from_secs(10);
    let client = GoogleCalendarClient::new(
        config,
        store,
        Arc::new(SystemClock),
        Arc::new(sync_domain::fakes::CountingEntropy::default()),
    )
    .unwrap();
    Setup { fake, client }
}

/// A local webhook receiver recording every notification's headers.
struct Listener {
    address: String,
    received: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

/// Starts a receiver that answers `statuses` in turn (then 200).
fn listener(statuses: Vec<u16>) -> Listener {
    let received: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let seen = Arc::clone(&received);
    let answers = Arc::new((statuses, AtomicUsize::new(0)));
    let server = HttpServer::new(move || {
        let seen = Arc::clone(&seen);
        let answers = Arc::clone(&answers);
        App::new().route(
            "/calendar/webhook",
            web::post().to(move |request: HttpRequest| {
                let seen = Arc::clone(&seen);
                let answers = Arc::clone(&answers);
                async move {
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                        .collect();
                    seen.lock().unwrap().push(headers);
                    let n = answers.1.fetch_add(1, Ordering::SeqCst);
                    let status = answers.0.get(n).copied().unwrap_or(200);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .json(json!({}))
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    Listener {
        address: format!("http://127.0.0.1:{port}/calendar/webhook"),
        received,
    }
}

impl Listener {
    async fn wait_for(&self, count: usize) -> Vec<HashMap<String, String>> {
        eventually(&format!("{count} notifications"), || async {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                Ok(received)
            } else {
                Err(format!("{received:?}"))
            }
        })
        .await
    }
}

fn watch_request(address: &str, id: &str) -> WatchRequest {
    WatchRequest {
        channel_id: ChannelId::parse(id).unwrap(),
        token: ChannelToken::new(TOKEN),
        address: address.to_owned(),
        ttl: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_issues_an_access_token_for_the_user() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let token = setup.client.tokens().access_token(&alice()).await.unwrap();
    assert!(
        token.expose().starts_with("fake-access-alice-"),
        "{}",
        token.expose()
    );
    assert_eq!(setup.fake.google.token_requests(), 1);
    // Cached: no second token request.
    setup.client.tokens().access_token(&alice()).await.unwrap();
    assert_eq!(setup.fake.google.token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_is_invalid_grant() {
    let setup = setup(RetryPolicy::no_retry(), "revoked").await;
    let error = setup
        .client
        .tokens()
        .access_token(&alice())
        .await
        .unwrap_err();
    assert_eq!(error, GoogleError::InvalidGrant);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_token_gets_401_and_the_client_refreshes_once() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    setup.client.list_calendars(&alice()).await.unwrap();
    setup.fake.google.expire_access_tokens(&alice());
    let calendars = setup.client.list_calendars(&alice()).await.unwrap();
    assert_eq!(calendars.len(), 1);
    assert!(calendars[0].primary);
    assert_eq!(setup.fake.google.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_bearer_gets_google_401_auth_error() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/calendars/primary/events",
            setup.fake.api_base_url()
        ))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_pages_then_resumes_with_the_sync_token() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let google = &setup.fake.google;
    google.calendar().set_page_size(3);
    google.bulk_create(&alice(), &primary(), "evt", 7);

    let pages: Vec<_> = event_pages(&setup.client, &alice(), &primary(), None, 250)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 7);
    assert!(
        pages[..2]
            .iter()
            .all(|p| p.next_page_token.is_some() && p.next_sync_token.is_none())
    );
    let sync_token = pages[2].next_sync_token.clone().unwrap();

    google.put_event(
        &alice(),
        &primary(),
        json!({"id": "evt000001", "summary": "Moved"}),
    );
    google
        .delete_event(&alice(), &primary(), "evt000002")
        .unwrap();
    let page = setup
        .client
        .list_events(
            &alice(),
            &primary(),
            &EventsQuery {
                sync_token: Some(sync_token),
                page_token: None,
                max_results: 250,
            },
        )
        .await
        .unwrap();
    let changed: Vec<(&str, &str)> = page
        .items
        .iter()
        .map(|e| (e.id.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(
        changed,
        [("evt000001", "confirmed"), ("evt000002", "cancelled")]
    );
    assert_eq!(page.items[0].summary.as_deref(), Some("Moved"));
    assert!(page.next_sync_token.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_grants_a_channel_and_the_handshake_reaches_the_address_first() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let receiver = listener(vec![]);
    let channel_id = "2b1c7a52-8a7e-4d8e-b3c1-6b0f4f0e9c21";
    let granted = setup
        .client
        .watch(
            &alice(),
            &primary(),
            &watch_request(&receiver.address, channel_id),
        )
        .await
        .unwrap();
    // Handshake-before-response is the default: it is there already.
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let handshake = &received[0];
    assert_eq!(handshake["x-goog-channel-id"], channel_id);
    assert_eq!(handshake["x-goog-channel-token"], TOKEN);
    assert_eq!(handshake["x-goog-resource-state"], "sync");
    assert_eq!(handshake["x-goog-message-number"], "1");
    assert_eq!(
        handshake["x-goog-resource-id"],
        granted.resource_id.as_str()
    );
    assert!(
        handshake["x-goog-resource-uri"]
            .ends_with("/calendar/v3/calendars/primary/events?alt=json")
    );
    assert!(handshake["x-goog-channel-expiration"].ends_with(" GMT"));
    assert!(handshake["user-agent"].starts_with("APIs-Google"));
    let expires_at = granted.expires_at.unwrap();
    let lifetime = expires_at - time::OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::minutes(59) && lifetime <= time::Duration::hours(1));

    // Changes are pushed with increasing message numbers.
    setup.fake.google.put_event(
        &alice(),
        &primary(),
        json!({"id": "evt1", "summary": "Standup"}),
    );
    let received = receiver.wait_for(2).await;
    assert_eq!(received[1]["x-goog-resource-state"], "exists");
    assert_eq!(received[1]["x-goog-message-number"], "2");
    setup
        .fake
        .google
        .delete_event(&alice(), &primary(), "evt1")
        .unwrap();
    let received = receiver.wait_for(3).await;
    assert_eq!(received[2]["x-goog-resource-state"], "not_exists");
    assert_eq!(received[2]["x-goog-message-number"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_answered_503_is_retried_until_delivered() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    // Handshake 200, then two 503s, then 200.
    let receiver = listener(vec![200, 503, 503]);
    setup
        .client
        .watch(
            &alice(),
            &primary(),
            &watch_request(&receiver.address, "retry-channel"),
        )
        .await
        .unwrap();
    setup
        .fake
        .google
        .put_event(&alice(), &primary(), json!({"id": "evt1"}));
    let received = receiver.wait_for(4).await;
    assert!(
        received[1..]
            .iter()
            .all(|h| h["x-goog-message-number"] == "2")
    );
    // The pusher counts a delivery once it has read the 200, which can be
    // just after the receiver saw the request: give it a moment.
    let counters = eventually("the second delivery counted", || async {
        let counters = setup.fake.google.pusher().counters();
        if counters.delivered == 2 {
            Ok(counters)
        } else {
            Err(format!("{counters:?}"))
        }
    })
    .await;
    assert_eq!(
        (counters.delivered, counters.retries, counters.failed),
        (2, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_channel_and_no_more_notifications_follow() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let receiver = listener(vec![]);
    let granted = setup
        .client
        .watch(
            &alice(),
            &primary(),
            &watch_request(&receiver.address, "stop-channel"),
        )
        .await
        .unwrap();
    assert_eq!(setup.fake.google.calendar().open_channels().len(), 1);
    setup
        .client
        .stop_channel(&alice(), &granted.channel_id, &granted.resource_id)
        .await
        .unwrap();
    assert!(setup.fake.google.calendar().open_channels().is_empty());
    assert_eq!(setup.fake.google.calendar().stops().len(), 1);
    // Stopping again: Google's 404, which the client counts as done.
    setup
        .client
        .stop_channel(&alice(), &granted.channel_id, &granted.resource_id)
        .await
        .unwrap();
    setup
        .fake
        .google
        .put_event(&alice(), &primary(), json!({"id": "evt1"}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.received.lock().unwrap().len(),
        1,
        "only the handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_410_reaches_the_client_as_full_sync_required() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    setup.fake.google.calendar().fail_next_n(
        FakeMethod::ListEvents,
        1,
        &GoogleError::FullSyncRequired,
    );
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 250,
    };
    let error = setup
        .client
        .list_events(&alice(), &primary(), &query)
        .await
        .unwrap_err();
    assert_eq!(error, GoogleError::FullSyncRequired);
    // Invalidated tokens: the same, through the model.
    let token = setup
        .client
        .list_events(&alice(), &primary(), &query)
        .await
        .unwrap()
        .next_sync_token;
    setup
        .fake
        .google
        .calendar()
        .invalidate_sync_tokens(&alice(), &primary());
    let error = setup
        .client
        .list_events(
            &alice(),
            &primary(),
            &EventsQuery {
                sync_token: token,
                ..query
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error, GoogleError::FullSyncRequired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_rate_limit_carries_retry_after_and_is_retried_by_the_client() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    let limited = GoogleError::RateLimited {
        retry_after: Some(Duration::from_secs(0)),
    };
    setup
        .fake
        .google
        .calendar()
        .fail_next_n(FakeMethod::ListEvents, 1, &limited);
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 250,
    };
    let error = setup
        .client
        .list_events(&alice(), &primary(), &query)
        .await
        .unwrap_err();
    assert_eq!(error, limited);

    let retrying = self::setup(RetryPolicy::immediate(3), "fake-refresh-alice").await;
    retrying
        .fake
        .google
        .calendar()
        .fail_next_n(FakeMethod::ListEvents, 2, &limited);
    retrying
        .client
        .list_events(&alice(), &primary(), &query)
        .await
        .unwrap();
    assert_eq!(
        retrying
            .fake
            .google
            .calendar()
            .calls(FakeMethod::ListEvents),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatchable_and_missing_calendars_answer_like_google() {
    let setup = setup(RetryPolicy::no_retry(), "fake-refresh-alice").await;
    setup
        .fake
        .google
        .calendar()
        .set_push_supported(&alice(), &primary(), false);
    let error = setup
        .client
        .watch(
            &alice(),
            &primary(),
            &watch_request("http://127.0.0.1:9/x", "c1"),
        )
        .await
        .unwrap_err();
    assert_eq!(error, GoogleError::PushNotSupported);
    let other = GoogleCalendarId::parse("nope@example.com").unwrap();
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 250,
    };
    let error = setup
        .client
        .list_events(&alice(), &other, &query)
        .await
        .unwrap_err();
    assert_eq!(error, GoogleError::NotFound);
    setup.fake.google.calendar().fail_next_n(
        FakeMethod::ListEvents,
        1,
        &GoogleError::Transient("x".into()),
    );
    let error = setup
        .client
        .list_events(&alice(), &primary(), &query)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GoogleError::Transient(ref m) if m.contains("503")),
        "{error:?}"
    );
}
