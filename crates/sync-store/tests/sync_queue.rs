//! The sync queue's contract (claims, leases, pages, failures, polls), on
//! SQLite always and on PostgreSQL when `CHRONOS_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::time::Duration;
use sync_domain::calendar::GoogleEvent;
use sync_domain::ports::CredentialStore;
use sync_domain::repeats::{FailureSite, count_identical_failures};
use sync_domain::sync::{Claim, FailureAction, PageWrite, PollPolicy, SyncCompletion, SyncQueue};
use sync_domain::{RefreshToken, UserId};
use sync_store::Store;
use sync_store::test_on_both_backends;
use sync_store::test_support::{
    CLAIM_LEASE as LEASE, claim_at, connected, eventually, me, seed_calendar,
};
use time::OffsetDateTime;

fn later(ms: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::milliseconds(ms)
}

fn event(id: &str, status: &str, summary: &str) -> GoogleEvent {
    GoogleEvent {
        id: id.to_owned(),
        status: sync_domain::EventStatus::from_google(Some(status)),
        updated: Some(OffsetDateTime::UNIX_EPOCH),
        etag: Some(format!("\"{summary}\"")),
        summary: Some(summary.to_owned()),
        raw: json!({"id": id, "status": status, "summary": summary}),
    }
}

async fn complete(
    store: &Store,
    claim: &Claim,
    owner: &'static str,
    events: &[GoogleEvent],
    token: &str,
    generation: i64,
    sweep: bool,
) -> bool {
    let now = OffsetDateTime::now_utc();
    store
        .apply_page(
            me(claim, owner),
            PageWrite {
                events,
                generation,
                completion: Some(SyncCompletion {
                    sync_token: token,
                    sweep,
                }),
                lease_until: now + LEASE,
                now,
            },
        )
        .await
        .unwrap()
}

async fn mirror(store: &Store, claim: &Claim) -> Vec<(String, Option<String>)> {
    store
        .events_page(claim.calendar_id, 1000, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_id, e.summary))
        .collect()
}

test_on_both_backends!(
    a_request_waits_for_its_debounce_then_is_claimed_once,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        assert!(
            claim_at(&store, "a", later(-60_000), 1000).await.is_empty(),
            "not due before the request"
        );
        let claims = claim_at(&store, "a", later(5_000), 1000).await;
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].calendar_id, calendar.id);
        assert_eq!(claims[0].sync_token, None);
        assert!(
            claim_at(&store, "b", later(5_000), 1000).await.is_empty(),
            "held by a"
        );
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Syncing);
        assert_eq!(
            row.sync_requested_at, None,
            "the claim consumed the request"
        );
    }
);

test_on_both_backends!(
    requests_during_a_sync_make_exactly_one_follow_up,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        for _ in 0..20 {
            assert!(store.request_sync(calendar.id).await.unwrap());
        }
        assert!(complete(&store, &claim, "a", &[], "t1", claim.generation, false).await);
        let follow_up = claim_at(&store, "a", later(5_000), 0).await;
        assert_eq!(follow_up.len(), 1, "one follow-up");
        assert_eq!(follow_up[0].sync_token.as_deref(), Some("t1"));
        assert!(
            complete(
                &store,
                &follow_up[0],
                "a",
                &[],
                "t2",
                claim.generation,
                false
            )
            .await
        );
        assert!(
            claim_at(&store, "a", later(5_000), 0).await.is_empty(),
            "and only one"
        );
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Idle);
        assert!(row.last_sync_at.is_some());
        assert!(row.full_sync_complete);
    }
);

test_on_both_backends!(
    an_expired_lease_is_claimed_again_and_the_old_owner_writes_nothing,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let dead = claim_at(&store, "dead", later(5_000), 0).await.remove(0);
        assert!(
            claim_at(&store, "b", later(30_000), 0).await.is_empty(),
            "lease still valid"
        );
        let taken = claim_at(
            &store,
            "b",
            later(5_000) + LEASE + Duration::from_secs(1),
            0,
        )
        .await;
        assert_eq!(
            taken.len(),
            1,
            "an abandoned claim is claimed again without a request"
        );
        let ghost = [event("e1", "confirmed", "from a dead worker")];
        assert!(
            !complete(
                &store,
                &dead,
                "dead",
                &ghost,
                "stale",
                dead.generation,
                false
            )
            .await
        );
        assert!(mirror(&store, &dead).await.is_empty());
        assert!(
            !store
                .renew_lease(me(&dead, "dead"), later(100_000), later(0))
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_lease(me(&taken[0], "b"), later(100_000), later(0))
                .await
                .unwrap()
        );
    }
);

test_on_both_backends!(
    pages_upsert_idempotently_and_a_full_sync_sweeps_what_google_dropped,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        let generation = store
            .begin_full_sync(me(&claim, "a"), later(0))
            .await
            .unwrap()
            .unwrap();
        let now = later(0);
        let first = [event("a", "confirmed", "A"), event("b", "confirmed", "B")];
        for _ in 0..2 {
            let page = PageWrite {
                events: &first,
                generation,
                completion: None,
                lease_until: now + LEASE,
                now,
            };
            assert!(store.apply_page(me(&claim, "a"), page).await.unwrap());
        }
        let row = store.calendar(claim.calendar_id).await.unwrap().unwrap();
        assert!(!row.full_sync_complete, "no token before the last page");
        let last = [event("c", "confirmed", "C"), event("d", "cancelled", "D")];
        assert!(complete(&store, &claim, "a", &last, "t1", generation, true).await);
        assert_eq!(
            mirror(&store, &claim).await.len(),
            3,
            "cancelled events are kept but not listed"
        );
        let page = store
            .events_page(claim.calendar_id, 2, Some("a"))
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );

        // Incremental: an update and a cancellation.
        store.request_sync(claim.calendar_id).await.unwrap();
        let inc = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        assert_eq!(inc.sync_token.as_deref(), Some("t1"));
        let changes = [event("a", "confirmed", "A2"), event("b", "cancelled", "B")];
        assert!(complete(&store, &inc, "a", &changes, "t2", inc.generation, false).await);
        assert_eq!(
            mirror(&store, &inc).await,
            [
                ("a".into(), Some("A2".into())),
                ("c".into(), Some("C".into()))
            ]
        );

        // 410: a full resync that no longer lists `c` removes it.
        store.request_sync(claim.calendar_id).await.unwrap();
        let full = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        let next = store
            .begin_full_sync(me(&full, "a"), later(0))
            .await
            .unwrap()
            .unwrap();
        assert!(next > generation);
        assert!(
            complete(
                &store,
                &full,
                "a",
                &[event("a", "confirmed", "A2")],
                "t3",
                next,
                true
            )
            .await
        );
        assert_eq!(
            mirror(&store, &full).await,
            [("a".into(), Some("A2".into()))]
        );
    }
);

test_on_both_backends!(
    a_retryable_failure_keeps_the_request_and_backs_off,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        let retry_at = later(60_000);
        let action = FailureAction::Retry {
            next_attempt_at: retry_at,
            error: "rate limited by Google".into(),
            repeat: None,
        };
        assert!(store.fail(me(&claim, "a"), action, later(0)).await.unwrap());
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Failing);
        assert_eq!(row.failure_count, 1);
        assert_eq!(row.last_error.as_deref(), Some("rate limited by Google"));
        assert!(row.sync_requested_at.is_some(), "nothing is dropped");
        assert!(
            claim_at(&store, "a", later(30_000), 0).await.is_empty(),
            "backing off"
        );
        let again = claim_at(&store, "a", later(61_000), 0).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].failure_count, 1);
        assert!(complete(&store, &again[0], "a", &[], "t", again[0].generation, true).await);
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(
            (row.sync_state.as_str(), row.failure_count, row.last_error),
            ("idle", 0, None)
        );
    }
);

test_on_both_backends!(
    claims_take_the_oldest_requests_first_past_those_backing_off,
    async |store: Store| {
        use sync_store::test_support::CLAIM_LIMIT;
        let limit = usize::try_from(CLAIM_LIMIT).unwrap();
        let mut calendars = Vec::new();
        for n in 0..limit + 2 {
            calendars.push(connected(&store, "u1", &format!("cal-{n}")).await.id);
            // Distinct request times, in connection order.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The oldest request's calendar fails and backs off, keeping its request.
        let first = claim_at(&store, "a", later(5_000), 0).await;
        assert_eq!(first.len(), limit);
        let oldest = first
            .iter()
            .find(|c| c.calendar_id == calendars[0])
            .expect("the oldest request is claimed first");
        let action = FailureAction::Retry {
            next_attempt_at: later(600_000),
            error: "rate limited by Google".into(),
            repeat: None,
        };
        assert!(store.fail(me(oldest, "a"), action, later(0)).await.unwrap());
        for claim in first.iter().filter(|c| c.calendar_id != calendars[0]) {
            assert!(complete(&store, claim, "a", &[], "t", claim.generation, true).await);
        }
        for calendar in &calendars {
            store.request_sync(*calendar).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Pending now, oldest first: the backing-off calendar's request (passed
        // over), the two never claimed (still their connection's requests),
        // then the others' new requests in order.
        let mut got: Vec<_> = claim_at(&store, "a", later(5_000), 0)
            .await
            .into_iter()
            .map(|c| c.calendar_id)
            .collect();
        let mut expected = [&calendars[limit..], &calendars[1..limit - 1]].concat();
        expected.sort_by_key(ToString::to_string);
        got.sort_by_key(ToString::to_string);
        assert_eq!(got, expected, "the {limit} oldest claimable requests");
        let rest = claim_at(&store, "b", later(5_000), 0).await;
        assert_eq!(
            rest.iter().map(|c| c.calendar_id).collect::<Vec<_>>(),
            [calendars[limit - 1]]
        );
    }
);

test_on_both_backends!(
    needs_reauth_survives_the_sync_and_new_credentials_resume_it,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let user = UserId::parse("u1").unwrap();
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        // The Google client marks the user while the sync is running.
        let read = store.credentials(&user).await.unwrap().unwrap();
        assert!(store.mark_needs_reauth(&user, &read.version).await.unwrap());
        let action = FailureAction::NeedsReauth {
            error: "invalid_grant".into(),
        };
        assert!(store.fail(me(&claim, "a"), action, later(0)).await.unwrap());
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::NeedsReauth);
        assert!(
            claim_at(&store, "a", later(100_000), 0).await.is_empty(),
            "parked"
        );
        store
            .put_refresh_token(&user, &RefreshToken::new("new"))
            .await
            .unwrap();
        assert_eq!(
            claim_at(&store, "a", later(100_000), 0).await.len(),
            1,
            "resumed"
        );
    }
);

test_on_both_backends!(a_calendar_gone_at_google_is_parked, async |store: Store| {
    let calendar = connected(&store, "u1", "primary").await;
    let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
    assert!(
        store
            .fail(
                me(&claim, "a"),
                FailureAction::Gone {
                    error: "not found".into()
                },
                later(0)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .calendar(calendar.id)
            .await
            .unwrap()
            .unwrap()
            .sync_state,
        sync_domain::SyncState::Gone
    );
    store.request_sync(calendar.id).await.unwrap();
    assert!(claim_at(&store, "a", later(100_000), 0).await.is_empty());
});

test_on_both_backends!(
    a_calendar_gone_at_google_has_its_channel_stopped,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        assert_eq!(claim.calendar_id, calendar.id);
        assert!(
            store
                .fail(
                    me(&claim, "a"),
                    FailureAction::Gone {
                        error: "not found".into()
                    },
                    later(0)
                )
                .await
                .unwrap()
        );
        let due: Vec<String> = store
            .channels_due_for_stop(10)
            .await
            .unwrap()
            .into_iter()
            .map(|channel| channel.channel_id.as_str().to_owned())
            .collect();
        assert_eq!(due, ["chan-1"]);
    }
);

test_on_both_backends!(
    release_gives_the_claim_back_with_its_request,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        assert!(store.release(me(&claim, "a"), later(0)).await.unwrap());
        assert_eq!(claim_at(&store, "b", later(5_000), 0).await.len(), 1);
    }
);

const HOUR_MS: i64 = 3600 * 1000;

test_on_both_backends!(
    a_sync_that_stopped_retrying_stays_failing_until_a_new_request,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        assert_eq!(claim.last_failure, None);
        let site = FailureSite::Page {
            sync_token: None,
            page: 2,
        };
        let repeat = count_identical_failures(None, site, "store: refused");
        let stopped_at = later(3 * HOUR_MS);
        let action = FailureAction::StopRetrying {
            error: "stopped retrying: refused".into(),
            repeat: repeat.clone(),
        };
        assert!(
            store
                .fail(me(&claim, "a"), action, stopped_at)
                .await
                .unwrap()
        );
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(row.sync_state, sync_domain::SyncState::Failing);
        assert_eq!(row.last_error.as_deref(), Some("stopped retrying: refused"));
        assert_eq!(row.failure_count, 1);
        assert_eq!(row.next_attempt_at, None, "no retry is scheduled");
        assert!(
            row.sync_requested_at.is_none(),
            "the claimed request is not put back"
        );
        assert!(
            claim_at(&store, "a", later(4 * HOUR_MS), 0)
                .await
                .is_empty()
        );
        // The safety net counts an interval from the stop, not from the last sync.
        let poll = PollPolicy::new(Duration::from_secs(3600), true);
        let soon = later(3 * HOUR_MS + HOUR_MS / 2);
        assert_eq!(
            store.request_polls(poll.cutoffs(soon), soon).await.unwrap(),
            0
        );
        let after_an_interval = later(4 * HOUR_MS + HOUR_MS / 2);
        assert_eq!(
            store
                .request_polls(poll.cutoffs(after_an_interval), after_an_interval)
                .await
                .unwrap(),
            1
        );
        // The new try knows the failure it stopped on.
        let again = claim_at(&store, "a", after_an_interval + Duration::from_secs(1), 0).await;
        assert_eq!(
            again[0].last_failure,
            Some((repeat.fingerprint.clone(), repeat.count))
        );
        assert!(complete(&store, &again[0], "a", &[], "t", again[0].generation, true).await);
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(
            (row.sync_state.as_str(), row.failure_count, row.last_error),
            ("idle", 0, None)
        );
        assert!(store.request_sync(calendar.id).await.unwrap());
        let fresh = claim_at(&store, "a", later(5_000), 0).await;
        assert_eq!(fresh[0].last_failure, None, "a success forgets the count");
    }
);

test_on_both_backends!(
    stale_calendars_get_a_safety_net_request,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        assert!(complete(&store, &claim, "a", &[], "t", claim.generation, true).await);
        let poll = PollPolicy::new(Duration::from_secs(3600), true);
        assert_eq!(
            store
                .request_polls(poll.cutoffs(later(0)), later(0))
                .await
                .unwrap(),
            0
        );
        let hours_later = later(2 * 3600 * 1000);
        assert_eq!(
            store
                .request_polls(poll.cutoffs(hours_later), hours_later)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .request_polls(poll.cutoffs(hours_later), hours_later)
                .await
                .unwrap(),
            0,
            "already pending"
        );
        assert_eq!(
            claim_at(&store, "a", hours_later + Duration::from_secs(1), 0).await[0].calendar_id,
            calendar.id
        );
    }
);

test_on_both_backends!(
    concurrent_claimers_never_share_a_calendar,
    async |store: Store| {
        for i in 0..20 {
            connected(&store, &format!("user{i}"), "primary").await;
        }
        let now = later(5_000);
        let claimers = ["a", "b", "c", "d"].map(|owner| {
            let store = store.clone();
            tokio::spawn(async move { claim_at(&store, owner, now, 0).await })
        });
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for claimer in claimers {
            for claim in claimer.await.unwrap() {
                total += 1;
                assert!(seen.insert(claim.calendar_id), "claimed twice");
            }
        }
        assert_eq!(
            total, 20,
            "limit 10 each, 4 claimers: every calendar claimed exactly once"
        );
    }
);

test_on_both_backends!(
    expiring_every_lease_hands_a_dead_owners_claims_over_at_once,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        let claimed = claim_at(&store, "dead-process", later(5_000), 0).await;
        assert_eq!(claimed.len(), 1);
        // Its lease is still running: nobody else may take the calendar...
        assert!(
            claim_at(&store, "new-process", later(6_000), 0)
                .await
                .is_empty()
        );
        // ...until a lone process starting up ends every lease.
        assert_eq!(store.expire_all_leases().await.unwrap(), 1);
        let taken = claim_at(&store, "new-process", later(6_000), 0).await;
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].calendar_id, calendar.id);
    }
);

test_on_both_backends!(
    a_stale_claim_of_the_same_instance_writes_nothing,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        // One task of instance "a" claims, stalls past its lease...
        let stale = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        // ...and another task of the same instance claims the calendar again.
        let fresh = claim_at(
            &store,
            "a",
            later(5_000) + LEASE + Duration::from_secs(1),
            0,
        )
        .await
        .remove(0);
        assert!(
            fresh.epoch > stale.epoch,
            "each claim gets a new fencing epoch"
        );
        let ghost = [event("e1", "confirmed", "from the stalled task")];
        assert!(
            !complete(
                &store,
                &stale,
                "a",
                &ghost,
                "stale",
                stale.generation,
                false
            )
            .await,
            "the owner matches but the epoch does not: refused"
        );
        assert!(mirror(&store, &stale).await.is_empty());
        assert!(
            !store
                .renew_lease(me(&stale, "a"), later(100_000), later(0))
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_lease(me(&fresh, "a"), later(100_000), later(0))
                .await
                .unwrap()
        );
    }
);

/// PostgreSQL only: the liveness lock is PostgreSQL's (SQLite has one process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instances_claim_is_taken_over_before_its_lease_ends() {
    let Some(db) = sync_store::test_support::TestDb::postgres().await else {
        return;
    };
    let store = db.store().await;
    connected(&store, "u1", "primary").await;
    // The instance "dead" is alive while it holds its lock, and claims.
    let lock = store.hold_instance_lock("dead").await.unwrap();
    let claimed = claim_at(&store, "dead", later(0), 0).await;
    assert_eq!(claimed.len(), 1);
    assert!(
        claim_at(&store, "b", later(1_000), 0).await.is_empty(),
        "a live owner's lease is respected"
    );
    // Its process dies: the server drops the session, and with it the lock.
    drop(lock);
    let taken = eventually("the dead instance's claim taken over", || async {
        let taken = claim_at(&store, "b", later(1_000), 0).await;
        (!taken.is_empty()).then_some(taken)
    });
    let taken = tokio::time::timeout(Duration::from_secs(2), taken)
        .await
        .expect("taken over within 2 s, long before the 60 s lease");
    assert_eq!(taken.len(), 1);
    assert!(taken[0].epoch > claimed[0].epoch);
}

test_on_both_backends!(
    coalescing_and_the_follow_up_hold_over_random_interleavings,
    async |store: Store| {
        use sync_domain::ports::{RecordOutcome, SyncRequest, WebhookStore as _};
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let channel = sync_domain::ChannelId::parse("chan-1").unwrap();
        // A small xorshift: reproducible interleavings without a dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut roll = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // The model: is a request pending, is a sync running.
        let (mut pending, mut running): (bool, Option<Claim>) = (true, None);
        let mut writes = store
            .calendar(calendar.id)
            .await
            .unwrap()
            .unwrap()
            .sync_request_count;
        let mut message = 0_i64;
        for step in 0..120 {
            match roll(3) {
                0 => {
                    // A burst of 1-4 concurrent notifications.
                    let burst = 1 + roll(4);
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..burst {
                        message += 1;
                        let store = store.clone();
                        let request = SyncRequest {
                            calendar_id: calendar.id,
                            channel_id: channel.clone(),
                            message_number: Some(sync_domain::MessageNumber::new(message)),
                            requested_at: OffsetDateTime::now_utc(),
                        };
                        tasks.spawn(
                            async move { store.record_sync_request(&request).await.unwrap() },
                        );
                    }
                    let mut recorded = 0;
                    while let Some(outcome) = tasks.join_next().await {
                        match outcome.unwrap() {
                            RecordOutcome::Recorded => recorded += 1,
                            RecordOutcome::AlreadyPending | RecordOutcome::Duplicate => {}
                            RecordOutcome::CalendarGone => panic!("step {step}: calendar gone"),
                        }
                    }
                    // Exactly one write if none was pending, none otherwise.
                    assert_eq!(recorded, i32::from(!pending), "step {step}");
                    writes += i64::from(recorded);
                    pending = true;
                }
                1 => {
                    let claims = claim_at(&store, "w", later(0), 0).await;
                    let expect = pending && running.is_none();
                    assert_eq!(claims.len(), usize::from(expect), "step {step}: claim");
                    if let Some(claim) = claims.into_iter().next() {
                        pending = false;
                        running = Some(claim);
                    }
                }
                _ => {
                    if let Some(claim) = running.take() {
                        assert!(
                            complete(&store, &claim, "w", &[], "t", claim.generation, false).await
                        );
                    }
                }
            }
            let row = store.calendar(calendar.id).await.unwrap().unwrap();
            assert_eq!(
                row.sync_requested_at.is_some(),
                pending,
                "step {step}: pending"
            );
            assert_eq!(row.sync_request_count, writes, "step {step}: writes");
            assert_eq!(
                row.sync_state == sync_domain::SyncState::Syncing,
                running.is_some(),
                "step {step}: state"
            );
        }
    }
);

test_on_both_backends!(
    an_event_with_nul_in_its_text_is_still_mirrored,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_at(&store, "a", later(5_000), 0).await.remove(0);
        let mut nul = event("e\u{0}1", "confirmed", "Stand\u{0}up");
        nul.etag = Some("\"1\u{0}\"".to_owned());
        let events = [nul, event("e2", "confirmed", "Retro")];
        assert!(complete(&store, &claim, "a", &events, "t1", claim.generation, true).await);
        assert_eq!(
            mirror(&store, &claim).await,
            [
                ("e1".to_owned(), Some("Standup".to_owned())),
                ("e2".to_owned(), Some("Retro".to_owned())),
            ]
        );
        let raw = &store
            .events_page(claim.calendar_id, 10, None)
            .await
            .unwrap()[0]
            .raw_json;
        assert!(raw.contains("Stand\\u0000up"), "{raw}");
    }
);
