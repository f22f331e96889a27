//! The sync worker against the fake Google and a real database, on both
//! backends: coalescing, crashes and leases, 410 resync, backoff, reauth,
//! exclusivity across instances, shutdown, and convergence.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chronos_server::workers::sync::{SyncOptions, SyncWorker};
use google_client::fakes::{FakeGoogleCalendar, FakeMethod};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_domain::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, GoogleError, WatchRequest,
    WatchedChannel,
};
use sync_domain::ports::{CredentialStore, SystemClock};
use sync_domain::retry::{Jitter, RetryPolicy};
use sync_domain::schedule::CoalescingPolicy;
use sync_domain::sync::{ClaimRequest, LeasePolicy, PageWrite, PollPolicy, SyncQueue};
use sync_domain::{ChannelId, GoogleCalendarId, RefreshToken, ResourceId, UserId};
use sync_store::Store;
use sync_store::calendars::Calendar;
use sync_store::test_on_both_backends;
use sync_store::test_support::{eventually, execute_sql};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn options() -> SyncOptions {
    SyncOptions {
        coalescing: CoalescingPolicy {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        poll: PollPolicy::new(Duration::from_secs(3600), true),
        backoff: RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            jitter: Jitter::Full,
        },
        lease: LeasePolicy {
            duration: Duration::from_secs(30),
        },
        max_concurrent: 8,
        max_per_user: 2,
        idle_poll: Duration::from_millis(10),
        poll_check: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(5),
    }
}

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("the worker stops in bounded time")
            .unwrap();
    }
}

fn start(
    store: &Store,
    google: Arc<dyn CalendarApi>,
    owner: &str,
    options: SyncOptions,
) -> Running {
    let shutdown = CancellationToken::new();
    let worker = SyncWorker::new(
        Arc::new(store.clone()),
        google,
        Arc::new(SystemClock),
        owner,
        options,
    );
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    Running { shutdown, handle }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn primary() -> GoogleCalendarId {
    GoogleCalendarId::parse("primary").unwrap()
}

async fn connect(store: &Store, fake: &FakeGoogleCalendar, owner: &str) -> Calendar {
    let owner = user(owner);
    fake.add_calendar(&owner, &primary());
    store
        .put_refresh_token(&owner, &RefreshToken::new("r"))
        .await
        .unwrap();
    store.connect_calendar(&owner, &primary()).await.unwrap().0
}

/// The mirror (non-cancelled events: id and summary).
async fn mirror(store: &Store, calendar: &Calendar) -> BTreeMap<String, Option<String>> {
    store
        .events_page(calendar.id, 1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_id, e.summary))
        .collect()
}

/// What the fake holds (non-cancelled events).
fn google(fake: &FakeGoogleCalendar, owner: &str) -> BTreeMap<String, Option<String>> {
    fake.events(&user(owner), &primary())
        .into_iter()
        .filter(|e| !e.status.is_cancelled())
        .map(|e| (e.id, e.summary))
        .collect()
}

async fn settled(store: &Store, calendar: &Calendar) -> bool {
    let row = store.calendar(calendar.id).await.unwrap().unwrap();
    row.sync_state == sync_domain::SyncState::Idle && row.sync_requested_at.is_none()
}

async fn converged(
    store: &Store,
    fake: &FakeGoogleCalendar,
    calendar: &Calendar,
    owner: &str,
) -> bool {
    settled(store, calendar).await && mirror(store, calendar).await == google(fake, owner)
}

test_on_both_backends!(
    the_initial_full_sync_mirrors_every_page,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.set_page_size(2);
        for i in 0..5 {
            fake.create_event(
                &user("u1"),
                &primary(),
                &format!("e{i}"),
                &format!("event {i}"),
            );
        }
        let calendar = connect(&store, &fake, "u1").await;
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("initial sync", || converged(&store, &fake, &calendar, "u1")).await;
        assert_eq!(mirror(&store, &calendar).await.len(), 5);
        let calls = fake.list_calls();
        assert_eq!(calls.len(), 3, "three pages");
        assert!(
            calls
                .iter()
                .all(|c| c.query.sync_token.is_none() && c.query.max_results == 2500)
        );
        // A change, then a notification: an incremental sync from the stored token.
        fake.update_event(&user("u1"), &primary(), "e1", "renamed");
        store.request_sync(calendar.id).await.unwrap();
        eventually("incremental sync", || {
            converged(&store, &fake, &calendar, "u1")
        })
        .await;
        assert!(fake.list_calls().last().unwrap().query.sync_token.is_some());
        worker.stop().await;
    }
);

test_on_both_backends!(
    notifications_during_a_slow_sync_cause_exactly_one_follow_up,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.create_event(&user("u1"), &primary(), "e1", "one");
        let calendar = connect(&store, &fake, "u1").await;
        fake.set_delay(Some(Duration::from_millis(1500)));
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("the first sync starts", || async {
            fake.calls(FakeMethod::ListEvents) == 1
        })
        .await;
        let before = store.calendar(calendar.id).await.unwrap().unwrap();
        let notifications: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.request_sync(calendar.id).await.unwrap() })
            })
            .collect();
        for n in notifications {
            assert!(n.await.unwrap());
        }
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(
            row.sync_state,
            sync_domain::SyncState::Syncing,
            "all 200 arrived during the first sync"
        );
        assert!(row.sync_requested_at.is_some(), "one follow-up is pending");
        assert_eq!(
            row.sync_request_count,
            before.sync_request_count + 1,
            "the first request is written; the other 199 find it pending"
        );
        fake.set_delay(None);
        eventually("the follow-up", || async {
            fake.calls(FakeMethod::ListEvents) >= 2
        })
        .await;
        eventually("settled", || converged(&store, &fake, &calendar, "u1")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            fake.calls(FakeMethod::ListEvents),
            2,
            "exactly one follow-up"
        );
        worker.stop().await;
    }
);

test_on_both_backends!(
    a_crashed_sync_is_resumed_once_its_lease_expires,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        for i in 0..4 {
            fake.create_event(&user("u1"), &primary(), &format!("e{i}"), "v1");
        }
        let calendar = connect(&store, &fake, "u1").await;
        // A worker claims, applies half a full sync, and dies.
        let now = OffsetDateTime::now_utc() + Duration::from_secs(1);
        let claim = store
            .claim_due(ClaimRequest {
                owner: "dead",
                now,
                cutoffs: options().coalescing.cutoffs(now),
                lease_until: OffsetDateTime::now_utc() + Duration::from_millis(400),
                limit: 1,
            })
            .await
            .unwrap()
            .remove(0);
        let dead = claim.by("dead");
        let generation = store
            .begin_full_sync(dead.clone(), now)
            .await
            .unwrap()
            .unwrap();
        let partial = fake.events(&user("u1"), &primary())[..2].to_vec();
        let page = PageWrite {
            events: &partial,
            generation,
            completion: None,
            lease_until: now + Duration::from_millis(400),
            now,
        };
        assert!(store.apply_page(dead.clone(), page).await.unwrap());
        fake.update_event(&user("u1"), &primary(), "e0", "v2");
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            fake.calls(FakeMethod::ListEvents),
            0,
            "not while the lease is valid"
        );
        eventually("resumed after the lease expired", || {
            converged(&store, &fake, &calendar, "u1")
        })
        .await;
        assert_eq!(
            mirror(&store, &calendar).await.get("e0"),
            Some(&Some("v2".to_owned()))
        );
        assert!(
            !store.renew_lease(dead, now, now).await.unwrap(),
            "the dead worker's claim is gone"
        );
        worker.stop().await;
    }
);

test_on_both_backends!(
    a_410_triggers_a_full_resync_that_removes_vanished_events,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        for id in ["a", "b", "c"] {
            fake.create_event(&user("u1"), &primary(), id, id);
        }
        let calendar = connect(&store, &fake, "u1").await;
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("initial sync", || converged(&store, &fake, &calendar, "u1")).await;
        // Google forgets `c` entirely and kills the token.
        fake.delete_event(&user("u1"), &primary(), "c");
        fake.purge_cancelled(&user("u1"), &primary());
        fake.invalidate_sync_tokens(&user("u1"), &primary());
        store.request_sync(calendar.id).await.unwrap();
        eventually("resynced", || async {
            fake.calls(FakeMethod::ListEvents) >= 3
                && converged(&store, &fake, &calendar, "u1").await
        })
        .await;
        assert_eq!(
            mirror(&store, &calendar).await.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        let calls = fake.list_calls();
        assert!(calls[1].query.sync_token.is_some(), "incremental first");
        assert!(calls[2].query.sync_token.is_none(), "then full");
        worker.stop().await;
    }
);

test_on_both_backends!(
    rate_limits_back_off_honouring_retry_after,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.create_event(&user("u1"), &primary(), "e1", "one");
        fake.fail_next(
            FakeMethod::ListEvents,
            [GoogleError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            }],
        );
        let calendar = connect(&store, &fake, "u1").await;
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("the failure is recorded", || async {
            store
                .calendar(calendar.id)
                .await
                .unwrap()
                .unwrap()
                .failure_count
                == 1
        })
        .await;
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Failing);
        assert!(row.last_error.unwrap().contains("rate limited"));
        assert!(row.sync_requested_at.is_some(), "the request stays pending");
        assert!(
            row.next_attempt_at.unwrap() >= OffsetDateTime::now_utc() + Duration::from_millis(1500)
        );
        // Another calendar is not blocked by the failing one.
        let other = connect(&store, &fake, "u2").await;
        eventually("the other calendar syncs", || settled(&store, &other)).await;
        assert_eq!(
            store
                .calendar(calendar.id)
                .await
                .unwrap()
                .unwrap()
                .failure_count,
            1,
            "still backing off"
        );
        eventually("retried and synced", || {
            converged(&store, &fake, &calendar, "u1")
        })
        .await;
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!((row.failure_count, row.last_error), (0, None));
        worker.stop().await;
    }
);

test_on_both_backends!(
    invalid_grant_parks_the_calendar_until_new_credentials,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.create_event(&user("u1"), &primary(), "e1", "one");
        fake.fail_next(FakeMethod::ListEvents, [GoogleError::InvalidGrant]);
        let calendar = connect(&store, &fake, "u1").await;
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("needs_reauth", || async {
            store
                .calendar(calendar.id)
                .await
                .unwrap()
                .unwrap()
                .sync_state
                == sync_domain::SyncState::NeedsReauth
        })
        .await;
        store.request_sync(calendar.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            fake.calls(FakeMethod::ListEvents),
            1,
            "parked: no further calls"
        );
        store
            .put_refresh_token(&user("u1"), &RefreshToken::new("new"))
            .await
            .unwrap();
        eventually("resumed", || converged(&store, &fake, &calendar, "u1")).await;
        worker.stop().await;
    }
);

test_on_both_backends!(
    a_calendar_deleted_at_google_becomes_gone,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        let calendar = connect(&store, &fake, "u1").await;
        fake.remove_calendar(&user("u1"), &primary());
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("gone", || async {
            store
                .calendar(calendar.id)
                .await
                .unwrap()
                .unwrap()
                .sync_state
                == sync_domain::SyncState::Gone
        })
        .await;
        worker.stop().await;
    }
);

test_on_both_backends!(
    shutdown_gives_an_unfinished_sync_back,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        let calendar = connect(&store, &fake, "u1").await;
        fake.set_delay(Some(Duration::from_secs(30)));
        let worker = start(
            &store,
            Arc::new(fake.clone()),
            "w1",
            SyncOptions {
                shutdown_grace: Duration::from_millis(100),
                ..options()
            },
        );
        eventually("the sync starts", || async {
            fake.calls(FakeMethod::ListEvents) == 1
        })
        .await;
        worker.stop().await;
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Pending);
        assert!(
            row.sync_requested_at.is_some(),
            "the request survives the shutdown"
        );
        fake.set_delay(None);
        let next = start(&store, Arc::new(fake.clone()), "w2", options());
        eventually("another instance syncs it at once", || {
            settled(&store, &calendar)
        })
        .await;
        next.stop().await;
    }
);

/// Makes the database refuse to store the event `poison` (what a deterministic
/// database error looks like to the worker), or lifts the refusal.
async fn refuse_poison(store: &Store, refuse: bool) {
    if refuse {
        execute_sql(
            store,
            &[
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON calendar_events \
               WHEN NEW.event_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison event refused'); END",
            ],
            &[
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.event_id = 'poison' THEN RAISE EXCEPTION 'poison event refused'; \
                 END IF; RETURN NEW; END $$",
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON calendar_events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            ],
        )
        .await;
    } else {
        execute_sql(
            store,
            &["DROP TRIGGER refuse_poison"],
            &["DROP TRIGGER refuse_poison ON calendar_events"],
        )
        .await;
    }
}

test_on_both_backends!(
    a_page_the_database_always_refuses_stops_retrying_and_leaves_the_calendar_failing,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.create_event(&user("u1"), &primary(), "fine", "stored");
        fake.create_event(&user("u1"), &primary(), "poison", "refused");
        refuse_poison(&store, true).await;
        let calendar = connect(&store, &fake, "u1").await;
        let worker = start(&store, Arc::new(fake.clone()), "w1", options());
        eventually("the retries stop", || async {
            let row = store.calendar(calendar.id).await.unwrap().unwrap();
            row.last_error
                .is_some_and(|e| e.starts_with("stopped retrying"))
        })
        .await;
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Failing);
        let error = row.last_error.unwrap();
        assert!(
            error.contains("after 5 identical failures on page 1 of a full sync"),
            "{error}"
        );
        assert!(error.contains("poison event refused"), "says why: {error}");
        assert_eq!(row.next_attempt_at, None, "no retry is scheduled");
        assert_eq!(fake.calls(FakeMethod::ListEvents), 5, "the bounded tries");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.calls(FakeMethod::ListEvents), 5, "and no more");
        // What `calendars list` prints for it.
        let views = sync_domain::admin::CalendarAdmin::calendars(&store, None)
            .await
            .unwrap();
        let table = chronos_server::operator::calendars_table(&views, OffsetDateTime::now_utc());
        assert!(
            table.contains("failing") && table.contains("stopped retrying"),
            "{table}"
        );
        // The cause is fixed; a new request (a notification, `calendars sync`) syncs it.
        refuse_poison(&store, false).await;
        store.request_sync(calendar.id).await.unwrap();
        eventually("recovered", || converged(&store, &fake, &calendar, "u1")).await;
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!((row.failure_count, row.last_error), (0, None));
        worker.stop().await;
    }
);

/// Records whether two syncs of one calendar ever overlapped.
struct Exclusive {
    inner: FakeGoogleCalendar,
    in_flight: Mutex<HashSet<(UserId, GoogleCalendarId)>>,
    overlapped: AtomicBool,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, GoogleError>> + Send + 'a>>;

// The trait is declared with `async_trait`; this is its expansion, written out.
impl CalendarApi for Exclusive {
    fn watch<'s, 'u, 'c, 'r, 'a>(
        &'s self,
        u: &'u UserId,
        c: &'c GoogleCalendarId,
        r: &'r WatchRequest,
    ) -> Boxed<'a, WatchedChannel>
    where
        's: 'a,
        'u: 'a,
        'c: 'a,
        'r: 'a,
        Self: 'a,
    {
        self.inner.watch(u, c, r)
    }

    fn stop_channel<'s, 'u, 'c, 'r, 'a>(
        &'s self,
        u: &'u UserId,
        c: &'c ChannelId,
        r: &'r ResourceId,
    ) -> Boxed<'a, ()>
    where
        's: 'a,
        'u: 'a,
        'c: 'a,
        'r: 'a,
        Self: 'a,
    {
        self.inner.stop_channel(u, c, r)
    }

    fn list_events<'s, 'u, 'c, 'q, 'a>(
        &'s self,
        u: &'u UserId,
        c: &'c GoogleCalendarId,
        q: &'q EventsQuery,
    ) -> Boxed<'a, EventsPage>
    where
        's: 'a,
        'u: 'a,
        'c: 'a,
        'q: 'a,
        Self: 'a,
    {
        Box::pin(async move {
            let key = (u.clone(), c.clone());
            if !self.in_flight.lock().unwrap().insert(key.clone()) {
                self.overlapped.store(true, Ordering::SeqCst);
            }
            let page = self.inner.list_events(u, c, q).await;
            self.in_flight.lock().unwrap().remove(&key);
            page
        })
    }

    fn list_calendars<'s, 'u, 'a>(&'s self, u: &'u UserId) -> Boxed<'a, Vec<CalendarListEntry>>
    where
        's: 'a,
        'u: 'a,
        Self: 'a,
    {
        self.inner.list_calendars(u)
    }
}

test_on_both_backends!(
    two_instances_never_sync_the_same_calendar_at_once,
    async |store: Store| {
        let fake = FakeGoogleCalendar::new();
        fake.set_delay(Some(Duration::from_millis(15)));
        let google = Arc::new(Exclusive {
            inner: fake.clone(),
            in_flight: Mutex::default(),
            overlapped: AtomicBool::new(false),
        });
        let mut calendars = Vec::new();
        for i in 0..6 {
            let owner = format!("user{i}");
            calendars.push((connect(&store, &fake, &owner).await, owner));
        }
        let a = start(&store, google.clone(), "instance-a", options());
        let b = start(&store, google.clone(), "instance-b", options());
        for round in 0..15 {
            for (calendar, owner) in &calendars {
                fake.create_event(&user(owner), &primary(), &format!("e{round}"), "x");
                store.request_sync(calendar.id).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (calendar, owner) in &calendars {
            eventually("converged", || converged(&store, &fake, calendar, owner)).await;
        }
        assert!(
            !google.overlapped.load(Ordering::SeqCst),
            "a calendar was synced twice at once"
        );
        assert!(
            fake.calls(FakeMethod::ListEvents) > calendars.len(),
            "follow-ups ran"
        );
        a.stop().await;
        b.stop().await;
    }
);
