//! Leases on the database's clock (PostgreSQL): an instance whose own clock
//! is wrong still ends its leases, and judges other instances' leases, by the
//! database's `now()`. Needs `CHRONOS_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use sync_domain::ports::CredentialStore;
use sync_domain::schedule::CoalescingPolicy;
use sync_domain::sync::{Claim, ClaimRequest, SyncQueue};
use sync_domain::{GoogleCalendarId, RefreshToken, UserId};
use sync_store::test_support::TestDb;
use sync_store::{LeaseClock, Store};
use time::OffsetDateTime;

const LEASE: Duration = Duration::from_secs(60);

/// Claims as an instance whose clock reads `now` (the debounce is judged at
/// the real time: request times are the instances' own, not this test's subject).
async fn claim_as(store: &Store, owner: &str, now: OffsetDateTime) -> Vec<Claim> {
    let policy = CoalescingPolicy {
        debounce: Duration::ZERO,
        max_delay: Duration::ZERO,
    };
    store
        .claim_due(ClaimRequest {
            owner,
            now,
            cutoffs: policy.cutoffs(OffsetDateTime::now_utc()),
            lease_until: now + LEASE,
            limit: 10,
        })
        .await
        .unwrap()
}

/// Seconds from the database's now to the calendar's lease end.
async fn lease_left_secs(store: &Store) -> i64 {
    store
        .count(
            "SELECT CAST(EXTRACT(EPOCH FROM lease_expires_at - (now() AT TIME ZONE 'UTC')) AS BIGINT) \
             AS n FROM calendar_sync_state",
        )
        .await
        .unwrap()
}

/// A store on the database's clock, holding one user with one pending calendar.
async fn database_clock_store(db: &TestDb, user: &str) -> Store {
    let store = db.store().await.with_lease_clock(LeaseClock::Database);
    let user = UserId::parse(user).unwrap();
    store
        .put_refresh_token(&user, &RefreshToken::new("r"))
        .await
        .unwrap();
    let calendar = format!("{}@example.com", user.as_str());
    store
        .connect_calendar(&user, &GoogleCalendarId::parse(calendar).unwrap())
        .await
        .unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_by_an_instance_whose_clock_is_behind_is_not_taken_over_early_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = database_clock_store(&db, "skewed-user").await;

    // Instance A's clock is ten minutes behind: on its own clock its lease
    // would have ended nine minutes ago already.
    let behind = OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let claimed = claim_as(&store, "instance-a", behind).await;
    assert_eq!(claimed.len(), 1, "A claims the pending calendar");
    let left = lease_left_secs(&store).await;
    assert!(
        (55..=60).contains(&left),
        "the lease ends a lease's length after the database's now, not A's: {left} s left"
    );

    // Instance B, on a correct clock, sees a live lease and takes nothing.
    let taken = claim_as(&store, "instance-b", OffsetDateTime::now_utc()).await;
    assert!(taken.is_empty(), "B took over a live lease: {taken:?}");

    // Renewal by A, still behind, is measured from the database's now too.
    let claim = &claimed[0];
    let renewed = store
        .renew_lease(
            sync_domain::sync::ClaimRef {
                calendar_id: claim.calendar_id,
                owner: "instance-a",
                epoch: claim.epoch,
            },
            behind + time::Duration::seconds(30) + LEASE,
            behind + time::Duration::seconds(30),
        )
        .await
        .unwrap();
    assert!(renewed);
    let left = lease_left_secs(&store).await;
    assert!((55..=60).contains(&left), "renewed: {left} s left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_is_ahead_does_not_take_over_a_live_lease_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = database_clock_store(&db, "ahead-user").await;
    assert_eq!(
        claim_as(&store, "instance-a", OffsetDateTime::now_utc())
            .await
            .len(),
        1
    );
    // B's clock runs five minutes ahead: on its own clock A's lease is long over.
    let ahead = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let taken = claim_as(&store, "instance-b", ahead).await;
    assert!(taken.is_empty(), "B took over a live lease: {taken:?}");
}
