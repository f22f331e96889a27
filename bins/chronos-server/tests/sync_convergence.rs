//! Convergence: whatever happens at Google, interleaved with notifications
//! and injected faults, the mirror ends equal to Google's events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chronos_server::workers::sync::{SyncOptions, SyncWorker};
use google_client::fakes::{FakeGoogleCalendar, FakeMethod};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use sync_domain::calendar::GoogleError;
use sync_domain::ports::{CredentialStore, SystemClock};
use sync_domain::retry::{Jitter, RetryPolicy};
use sync_domain::schedule::CoalescingPolicy;
use sync_domain::sync::{LeasePolicy, PollPolicy};
use sync_domain::{GoogleCalendarId, RefreshToken, UserId};
use sync_store::test_support::{TestDb, eventually};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    Purge,
    Notify,
    Fault(u8),
    ExpireTokens,
    Pause,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..8, any::<u8>()).prop_map(|(id, v)| Step::Put(id, v)),
        2 => (0u8..8).prop_map(Step::Delete),
        1 => Just(Step::Purge),
        3 => Just(Step::Notify),
        1 => (0u8..3).prop_map(Step::Fault),
        1 => Just(Step::ExpireTokens),
        1 => Just(Step::Pause),
    ]
}

fn options() -> SyncOptions {
    SyncOptions {
        coalescing: CoalescingPolicy {
            debounce: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        poll: PollPolicy::new(Duration::from_secs(3600), true),
        backoff: RetryPolicy {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(40),
            jitter: Jitter::Full,
        },
        lease: LeasePolicy {
            duration: Duration::from_secs(30),
        },
        max_concurrent: 4,
        max_per_user: 2,
        idle_poll: Duration::from_millis(5),
        poll_check: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(5),
    }
}

async fn run_case(steps: Vec<Step>) {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let owner = UserId::parse("u1").unwrap();
    let primary = GoogleCalendarId::parse("primary").unwrap();
    let fake = FakeGoogleCalendar::new();
    fake.set_page_size(3);
    fake.add_calendar(&owner, &primary);
    store
        .put_refresh_token(&owner, &RefreshToken::new("r"))
        .await
        .unwrap();
    let calendar = store.connect_calendar(&owner, &primary).await.unwrap().0;
    let shutdown = CancellationToken::new();
    let worker = SyncWorker::new(
        Arc::new(store.clone()),
        Arc::new(fake.clone()),
        Arc::new(SystemClock),
        "w1",
        options(),
    );
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    for step in steps {
        match step {
            Step::Put(id, v) => {
                fake.create_event(&owner, &primary, &format!("e{id}"), &format!("v{v}"));
            }
            Step::Delete(id) => {
                fake.delete_event(&owner, &primary, &format!("e{id}"));
            }
            Step::Purge => fake.purge_cancelled(&owner, &primary),
            Step::Notify => {
                store.request_sync(calendar.id).await.unwrap();
            }
            Step::Fault(kind) => {
                let error = match kind {
                    0 => GoogleError::RateLimited { retry_after: None },
                    1 => GoogleError::Transient("503".into()),
                    _ => GoogleError::FullSyncRequired,
                };
                fake.fail_next(FakeMethod::ListEvents, [error]);
            }
            Step::ExpireTokens => fake.invalidate_sync_tokens(&owner, &primary),
            Step::Pause => tokio::time::sleep(Duration::from_millis(15)).await,
        }
    }
    // The last change is followed by a notification, as Google would send.
    store.request_sync(calendar.id).await.unwrap();
    let expected: BTreeMap<String, Option<String>> = fake
        .events(&owner, &primary)
        .into_iter()
        .filter(|e| !e.status.is_cancelled())
        .map(|e| (e.id, e.summary))
        .collect();
    eventually("convergence", || async {
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        let mirror: BTreeMap<String, Option<String>> = store
            .events_page(calendar.id, 1000, None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_id, e.summary))
            .collect();
        if row.sync_state == sync_domain::SyncState::Idle
            && row.sync_requested_at.is_none()
            && mirror == expected
        {
            Ok(())
        } else {
            Err(format!(
                "state {} mirror {mirror:?} google {expected:?}",
                row.sync_state
            ))
        }
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap();
}

proptest! {
    // Each case can wait up to 20 s for convergence: shrink little, so a
    // failure is reported in minutes, not tens of minutes.
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    #[test]
    fn the_mirror_converges_to_google(steps in proptest::collection::vec(step(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_case(steps));
    }
}
