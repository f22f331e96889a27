//! The fake Google: sync tokens, pages, channels, injected failures.

use super::user;
use futures::StreamExt;
use google_client::GoogleError;
use google_client::event_pages;
use google_client::fakes::{FakeGoogleCalendar, FakeMethod};
use std::sync::Arc;
use std::time::Duration;
use sync_domain::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, WatchRequest,
};
use sync_domain::fakes::FakeClock;
use sync_domain::ids::{ChannelId, GoogleCalendarId, ResourceId, UserId};
use sync_domain::ports::{ChannelHandle, Clock};
use sync_domain::secret::ChannelToken;

fn primary() -> GoogleCalendarId {
    GoogleCalendarId::parse("primary").unwrap()
}

async fn pass(
    api: &dyn CalendarApi,
    sync_token: Option<String>,
) -> Result<Vec<EventsPage>, GoogleError> {
    let pages: Vec<_> = event_pages(api, &user(), &primary(), sync_token, 2500)
        .collect()
        .await;
    pages.into_iter().collect()
}

fn ids(pages: &[EventsPage]) -> Vec<(String, String)> {
    pages
        .iter()
        .flat_map(|p| {
            p.items
                .iter()
                .map(|e| (e.id.clone(), e.status.as_str().to_owned()))
        })
        .collect()
}

fn sync_token(pages: &[EventsPage]) -> Option<String> {
    pages.last().and_then(|p| p.next_sync_token.clone())
}

fn watch_request(channel: &str, ttl_secs: u64) -> WatchRequest {
    WatchRequest {
        channel_id: ChannelId::parse(channel).unwrap(),
        token: ChannelToken::new("secret"),
        address: "https://chronos.example.com/calendar/webhook".into(),
        ttl: Duration::from_secs(ttl_secs),
    }
}

#[test]
fn the_fake_is_shareable_across_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<FakeGoogleCalendar>();
    let google = FakeGoogleCalendar::new();
    let clone = google.clone();
    clone.create_event(&user(), &primary(), "e1", "seen by both");
    assert_eq!(google.events(&user(), &primary()).len(), 1);
}

#[tokio::test]
async fn full_sync_pages_then_incremental_returns_only_the_changes() {
    let google = FakeGoogleCalendar::new();
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        google.create_event(&user(), &primary(), id, id);
    }
    google.set_page_size(2);

    let full = pass(&google, None).await.unwrap();
    assert_eq!(full.len(), 3);
    assert!(
        full[..2]
            .iter()
            .all(|p| p.next_page_token.is_some() && p.next_sync_token.is_none())
    );
    assert_eq!(ids(&full).len(), 5);
    let token = sync_token(&full).unwrap();

    google.update_event(&user(), &primary(), "e1", "renamed");
    google.delete_event(&user(), &primary(), "e2").unwrap();
    google.create_event(&user(), &primary(), "e6", "new");

    let changes = pass(&google, Some(token)).await.unwrap();
    assert_eq!(
        ids(&changes),
        [
            ("e1".to_owned(), "confirmed".to_owned()),
            ("e2".to_owned(), "cancelled".to_owned()),
            ("e6".to_owned(), "confirmed".to_owned()),
        ]
    );
    assert_eq!(changes[0].items[0].summary.as_deref(), Some("renamed"));
    let quiet = pass(&google, sync_token(&changes)).await.unwrap();
    assert!(ids(&quiet).is_empty());
    assert_eq!(sync_token(&quiet), sync_token(&changes));
}

#[tokio::test]
async fn a_change_during_pagination_is_not_lost() {
    let google = FakeGoogleCalendar::new();
    for id in ["a", "b", "c"] {
        google.create_event(&user(), &primary(), id, id);
    }
    google.set_page_size(1);
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 2500,
    };
    let first = google
        .list_events(&user(), &primary(), &query)
        .await
        .unwrap();
    google.update_event(&user(), &primary(), "a", "a2");
    google.update_event(&user(), &primary(), "b", "b2");

    let mut token = first.next_page_token.clone();
    let mut pages = vec![first];
    while let Some(page_token) = token {
        let next = EventsQuery {
            page_token: Some(page_token),
            ..query.clone()
        };
        let page = google
            .list_events(&user(), &primary(), &next)
            .await
            .unwrap();
        token = page.next_page_token.clone();
        pages.push(page);
    }
    let changes = pass(&google, sync_token(&pages)).await.unwrap();

    let mut summaries: Vec<_> = pages
        .iter()
        .chain(&changes)
        .flat_map(|p| &p.items)
        .map(|e| e.summary.clone().unwrap())
        .collect();
    summaries.sort();
    assert!(
        summaries.contains(&"a2".to_owned())
            && summaries.contains(&"b2".to_owned())
            && summaries.contains(&"c".to_owned()),
        "{summaries:?}"
    );
}

#[tokio::test]
async fn max_results_below_the_page_size_is_honoured() {
    let google = FakeGoogleCalendar::new();
    for id in ["a", "b", "c"] {
        google.create_event(&user(), &primary(), id, id);
    }
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 2,
    };
    let page = google
        .list_events(&user(), &primary(), &query)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.next_page_token.is_some());
    assert_eq!(google.list_calls()[0].query, query);
}

#[tokio::test]
async fn invalidated_sync_tokens_require_a_full_sync() {
    let google = FakeGoogleCalendar::new();
    google.create_event(&user(), &primary(), "e1", "x");
    let token = sync_token(&pass(&google, None).await.unwrap());
    google.invalidate_sync_tokens(&user(), &primary());

    assert_eq!(
        pass(&google, token).await,
        Err(GoogleError::FullSyncRequired)
    );
    let full = pass(&google, None).await.unwrap();
    assert_eq!(ids(&full).len(), 1);
    assert_eq!(
        sync_token(&full),
        google.current_sync_token(&user(), &primary())
    );
    assert!(pass(&google, sync_token(&full)).await.is_ok());
    assert_eq!(
        pass(&google, Some("garbage".into())).await,
        Err(GoogleError::FullSyncRequired)
    );
}

#[tokio::test]
async fn full_sync_lists_cancelled_events_until_google_purges_them() {
    let google = FakeGoogleCalendar::new();
    google.create_event(&user(), &primary(), "keep", "x");
    google.create_event(&user(), &primary(), "gone", "y");
    google.delete_event(&user(), &primary(), "gone");
    assert_eq!(ids(&pass(&google, None).await.unwrap()).len(), 2);
    google.purge_cancelled(&user(), &primary());
    assert_eq!(
        ids(&pass(&google, None).await.unwrap()),
        [("keep".to_owned(), "confirmed".to_owned())]
    );
}

#[tokio::test]
async fn watch_and_stop_are_recorded_and_open_channels_tracked() {
    let clock = Arc::new(FakeClock::default());
    let google = FakeGoogleCalendar::with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
    google.add_calendar(&user(), &primary());
    google.set_max_channel_ttl(Duration::from_secs(3600));

    let short = google
        .watch(&user(), &primary(), &watch_request("c1", 60))
        .await
        .unwrap();
    let capped = google
        .watch(&user(), &primary(), &watch_request("c2", 86_400))
        .await
        .unwrap();

    assert_eq!(
        short.expires_at,
        Some(clock.now() + Duration::from_secs(60))
    );
    assert_eq!(
        capped.expires_at,
        Some(clock.now() + Duration::from_secs(3600))
    );
    assert_eq!(short.resource_id, capped.resource_id);
    assert_eq!(google.watches().len(), 2);
    assert_eq!(google.watches()[0].request.channel_id.as_str(), "c1");
    assert_eq!(google.open_channels().len(), 2);
    let duplicate = google
        .watch(&user(), &primary(), &watch_request("c1", 60))
        .await;
    assert!(
        matches!(duplicate, Err(GoogleError::Other { ref reason, .. }) if reason == "channelIdNotUnique")
    );

    for channel in [&short, &capped] {
        google
            .stop_channel(&user(), &channel.channel_id, &channel.resource_id)
            .await
            .unwrap();
    }
    assert!(google.open_channels().is_empty());
    assert_eq!(
        google.stops()[0],
        ChannelHandle {
            channel_id: short.channel_id.clone(),
            resource_id: short.resource_id.clone()
        }
    );
    // Stopping an unknown channel is Google's 404, which counts as stopped.
    let unknown = google
        .stop_channel(
            &user(),
            &ChannelId::parse("nope").unwrap(),
            &ResourceId::parse("r").unwrap(),
        )
        .await;
    assert_eq!(unknown, Ok(()));
}

#[tokio::test]
async fn unwatchable_and_unknown_calendars_answer_like_google() {
    let google = FakeGoogleCalendar::new();
    let public = GoogleCalendarId::parse("en.usa#holiday@group.v.calendar.google.com").unwrap();
    google.add_calendar(&user(), &public);
    google.set_push_supported(&user(), &public, false);

    assert_eq!(
        google
            .watch(&user(), &public, &watch_request("c1", 60))
            .await,
        Err(GoogleError::PushNotSupported)
    );
    let missing = GoogleCalendarId::parse("missing").unwrap();
    assert_eq!(
        google
            .watch(&user(), &missing, &watch_request("c2", 60))
            .await,
        Err(GoogleError::NotFound)
    );
    let query = EventsQuery {
        sync_token: None,
        page_token: None,
        max_results: 10,
    };
    assert_eq!(
        google.list_events(&user(), &missing, &query).await,
        Err(GoogleError::NotFound)
    );
    google.remove_calendar(&user(), &public);
    assert!(google.events(&user(), &public).is_empty());
    assert_eq!(
        google.list_events(&user(), &public, &query).await,
        Err(GoogleError::NotFound)
    );
    assert!(google.open_channels().is_empty());
}

#[tokio::test]
async fn calendar_list_shows_only_the_user_s_calendars() {
    let google = FakeGoogleCalendar::new();
    let other = UserId::parse("someone-else").unwrap();
    google.add_calendar(&user(), &primary());
    google.add_calendar_entry(
        &user(),
        &CalendarListEntry {
            id: GoogleCalendarId::parse("team@group.calendar.google.com").unwrap(),
            summary: Some("Team".into()),
            primary: false,
            access_role: Some("reader".into()),
        },
    );
    google.add_calendar(&other, &primary());

    let calendars = google.list_calendars(&user()).await.unwrap();

    assert_eq!(calendars.len(), 2);
    assert!(calendars.iter().any(|c| c.primary && c.id == primary()));
    assert!(
        calendars
            .iter()
            .any(|c| c.access_role.as_deref() == Some("reader"))
    );
}

#[tokio::test]
async fn queued_failures_are_returned_in_order_then_calls_succeed() {
    let google = FakeGoogleCalendar::new();
    google.create_event(&user(), &primary(), "e1", "x");
    google.fail_next(
        FakeMethod::ListEvents,
        [
            GoogleError::FullSyncRequired,
            GoogleError::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            },
            GoogleError::Transient("503".into()),
        ],
    );
    google.fail_next_n(FakeMethod::Watch, 2, &GoogleError::InvalidGrant);
    google.fail_next(FakeMethod::StopChannel, [GoogleError::NotFound]);
    google.fail_next(FakeMethod::ListCalendars, [GoogleError::PushNotSupported]);

    assert_eq!(
        pass(&google, None).await,
        Err(GoogleError::FullSyncRequired)
    );
    assert!(matches!(
        pass(&google, None).await,
        Err(GoogleError::RateLimited { .. })
    ));
    assert!(matches!(
        pass(&google, None).await,
        Err(GoogleError::Transient(_))
    ));
    assert!(pass(&google, None).await.is_ok());
    assert_eq!(google.calls(FakeMethod::ListEvents), 4);

    for _ in 0..2 {
        assert_eq!(
            google
                .watch(&user(), &primary(), &watch_request("c1", 60))
                .await,
            Err(GoogleError::InvalidGrant)
        );
    }
    assert!(
        google
            .watch(&user(), &primary(), &watch_request("c1", 60))
            .await
            .is_ok()
    );
    let stop = google
        .stop_channel(
            &user(),
            &ChannelId::parse("c1").unwrap(),
            &ResourceId::parse("r").unwrap(),
        )
        .await;
    assert_eq!(stop, Err(GoogleError::NotFound));
    assert_eq!(
        google.list_calendars(&user()).await,
        Err(GoogleError::PushNotSupported)
    );
    assert_eq!(google.calls(FakeMethod::Watch), 3);
}

#[tokio::test]
async fn a_delay_makes_every_call_slow() {
    let google = FakeGoogleCalendar::new();
    google.add_calendar(&user(), &primary());
    google.set_delay(Some(Duration::from_millis(50)));

    let started = std::time::Instant::now();
    pass(&google, None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));

    google.set_delay(None);
    let started = std::time::Instant::now();
    pass(&google, None).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(50));
}
