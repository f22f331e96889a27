//! The store's contract, run on SQLite always and on PostgreSQL when
//! `CHRONOS_TEST_DATABASE_URL` is set (each test on its own fresh database).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use sync_domain::fakes::FakeClock;
use sync_domain::ports::{
    CachedAccessToken, Clock, CredentialStore, RecordOutcome, SyncRequest, WebhookStore,
};
use sync_domain::{
    AccessToken, CalendarId, ChannelId, ChannelToken, GoogleCalendarId, MessageNumber,
    RefreshToken, ResourceId, UserId,
};
use sync_store::Store;
use sync_store::calendars::NewChannel;
use sync_store::test_on_both_backends;
use sync_store::test_support::{consume_pending_request, seed_calendar};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn request(calendar: CalendarId, channel: &str, number: Option<i64>) -> SyncRequest {
    SyncRequest {
        calendar_id: calendar,
        channel_id: ChannelId::parse(channel).unwrap(),
        message_number: number.map(MessageNumber::new),
        requested_at: time::OffsetDateTime::now_utc(),
    }
}

test_on_both_backends!(unknown_channel_is_not_found, async |store: Store| {
    let found = store
        .find_channel(&ChannelId::parse("nope").unwrap())
        .await
        .unwrap();
    assert_eq!(found, None);
});

test_on_both_backends!(
    registering_channel_is_known_before_watch_returns,
    async |store: Store| {
        let owner = user("u1");
        store
            .put_refresh_token(&owner, &RefreshToken::new("r"))
            .await
            .unwrap();
        let (calendar, _) = store
            .connect_calendar(&owner, &GoogleCalendarId::parse("primary").unwrap())
            .await
            .unwrap();
        let channel_id = ChannelId::parse("chan-registering").unwrap();
        store
            .insert_registering_channel(
                &calendar,
                &NewChannel {
                    channel_id: channel_id.clone(),
                    token: ChannelToken::new("tok"),
                },
            )
            .await
            .unwrap();
        let record = store.find_channel(&channel_id).await.unwrap().unwrap();
        assert!(record.token.matches("tok"));
        assert_eq!(record.calendar_id, Some(calendar.id));
        assert!(record.calendar_active);
    }
);

test_on_both_backends!(
    recorded_request_is_durable_and_later_ones_coalesce_into_it,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        assert!(
            calendar.sync_requested_at.is_some(),
            "a new calendar waits for its initial sync"
        );
        consume_pending_request(&store, calendar.id).await;
        let before = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(before.sync_requested_at, None);
        let first = request(calendar.id, "chan-1", Some(1));
        assert_eq!(
            store.record_sync_request(&first).await.unwrap(),
            RecordOutcome::Recorded
        );
        for n in 2..=3 {
            let outcome = store
                .record_sync_request(&request(calendar.id, "chan-1", Some(n)))
                .await
                .unwrap();
            assert_eq!(outcome, RecordOutcome::AlreadyPending);
        }
        // A fresh store on the same database (as after a restart) sees the request.
        let reopened = reopen(&store, sync_store::test_support::TEST_ENCRYPTION_KEY, &[]).await;
        let after = reopened.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(
            after.sync_request_count,
            before.sync_request_count + 1,
            "a pending request absorbs later ones without a write"
        );
        assert_eq!(
            after.sync_requested_at.map(|t| t.unix_timestamp()),
            Some(first.requested_at.unix_timestamp()),
            "the first request's time bounds the delay"
        );
        let record = reopened
            .find_channel(&ChannelId::parse("chan-1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.last_message_number, Some(MessageNumber::new(1)));
    }
);

test_on_both_backends!(
    message_number_not_above_last_is_refused,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        consume_pending_request(&store, calendar.id).await;
        let before = store.calendar(calendar.id).await.unwrap().unwrap();
        let record = |n| request(calendar.id, "chan-1", Some(n));
        assert_eq!(
            store.record_sync_request(&record(5)).await.unwrap(),
            RecordOutcome::Recorded
        );
        assert_eq!(
            store.record_sync_request(&record(5)).await.unwrap(),
            RecordOutcome::Duplicate
        );
        assert_eq!(
            store.record_sync_request(&record(4)).await.unwrap(),
            RecordOutcome::Duplicate
        );
        // Once the request is claimed, an old number is still a duplicate.
        consume_pending_request(&store, calendar.id).await;
        assert_eq!(
            store.record_sync_request(&record(5)).await.unwrap(),
            RecordOutcome::Duplicate
        );
        assert_eq!(
            store.record_sync_request(&record(9)).await.unwrap(),
            RecordOutcome::Recorded
        );
        consume_pending_request(&store, calendar.id).await;
        let unnumbered = request(calendar.id, "chan-1", None);
        assert_eq!(
            store.record_sync_request(&unnumbered).await.unwrap(),
            RecordOutcome::Recorded
        );
        let after = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(after.sync_request_count, before.sync_request_count + 3);
        let channel = store
            .find_channel(&ChannelId::parse("chan-1").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            channel.last_message_number,
            Some(MessageNumber::new(9)),
            "an unnumbered notification keeps the last number"
        );
    }
);

test_on_both_backends!(
    user_without_credentials_is_inactive,
    async |store: Store| {
        let owner = user("nocreds");
        let (calendar, _) = store
            .connect_calendar(&owner, &GoogleCalendarId::parse("primary").unwrap())
            .await
            .unwrap();
        let channel_id = ChannelId::parse("chan-x").unwrap();
        store
            .insert_registering_channel(
                &calendar,
                &NewChannel {
                    channel_id: channel_id.clone(),
                    token: ChannelToken::new("tok"),
                },
            )
            .await
            .unwrap();
        let record = store.find_channel(&channel_id).await.unwrap().unwrap();
        assert!(!record.calendar_active);
    }
);

test_on_both_backends!(
    connecting_twice_returns_the_same_calendar,
    async |store: Store| {
        let owner = user("u1");
        let primary = GoogleCalendarId::parse("primary").unwrap();
        let (first, created) = store.connect_calendar(&owner, &primary).await.unwrap();
        let (second, created_again) = store.connect_calendar(&owner, &primary).await.unwrap();
        assert!(created);
        assert!(!created_again);
        assert_eq!(first.id, second.id);
        assert_eq!(store.calendars(Some(&owner)).await.unwrap().len(), 1);
        assert_eq!(
            store.calendars(Some(&user("other"))).await.unwrap().len(),
            0
        );
    }
);

test_on_both_backends!(
    replaced_channel_still_verifies_during_overlap,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-old", "old-token").await;
        let new_id = ChannelId::parse("chan-new").unwrap();
        store
            .insert_registering_channel(
                &calendar,
                &NewChannel {
                    channel_id: new_id.clone(),
                    token: ChannelToken::new("new-token"),
                },
            )
            .await
            .unwrap();
        store
            .activate_channel(
                calendar.id,
                &new_id,
                &ResourceId::parse("res-2").unwrap(),
                None,
            )
            .await
            .unwrap();
        let after = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(after.channel_id.as_deref(), Some("chan-new"));
        let old = store
            .find_channel(&ChannelId::parse("chan-old").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(old.token.matches("old-token"));
        assert!(old.calendar_active);
        consume_pending_request(&store, calendar.id).await;
        assert_eq!(
            store
                .record_sync_request(&request(calendar.id, "chan-old", Some(7)))
                .await
                .unwrap(),
            RecordOutcome::Recorded
        );
    }
);

test_on_both_backends!(
    a_stale_invalid_grant_does_not_mark_newer_credentials,
    async |store: Store| {
        let owner = user("u1");
        store
            .put_refresh_token(&owner, &RefreshToken::new("1//old"))
            .await
            .unwrap();
        let (calendar, _) = store
            .connect_calendar(&owner, &GoogleCalendarId::parse("primary").unwrap())
            .await
            .unwrap();
        // A refresh reads the old credentials...
        let read = store.credentials(&owner).await.unwrap().unwrap();
        // ...new ones are stored while Google answers it invalid_grant...
        store
            .put_refresh_token(&owner, &RefreshToken::new("1//new"))
            .await
            .unwrap();
        // ...and its mark must not touch the new ones.
        assert!(
            !store
                .mark_needs_reauth(&owner, &read.version)
                .await
                .unwrap()
        );
        let creds = store.credentials(&owner).await.unwrap().unwrap();
        assert_eq!(creds.refresh_token.expose(), "1//new");
        assert!(!creds.needs_reauth);
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_ne!(row.sync_state, sync_domain::SyncState::NeedsReauth);
    }
);

test_on_both_backends!(credentials_round_trip_and_reauth, async |store: Store| {
    let clock = Arc::new(FakeClock::default());
    let store = store.with_clock(clock.clone());
    let owner = user("u1");
    assert_eq!(store.credentials(&owner).await.unwrap(), None);
    store
        .put_refresh_token(&owner, &RefreshToken::new("1//first"))
        .await
        .unwrap();
    let (calendar, _) = store
        .connect_calendar(&owner, &GoogleCalendarId::parse("primary").unwrap())
        .await
        .unwrap();
    let cached = CachedAccessToken {
        token: AccessToken::new("ya29.access"),
        expires_at: clock.now() + time::Duration::hours(1),
    };
    store.cache_access_token(&owner, &cached).await.unwrap();
    let creds = store.credentials(&owner).await.unwrap().unwrap();
    assert_eq!(creds.refresh_token.expose(), "1//first");
    assert_eq!(creds.access_token, Some(cached));
    assert!(!creds.needs_reauth);

    assert!(
        store
            .mark_needs_reauth(&owner, &creds.version)
            .await
            .unwrap()
    );
    let creds = store.credentials(&owner).await.unwrap().unwrap();
    assert!(creds.needs_reauth);
    assert_eq!(creds.access_token, None);
    let parked = store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(parked.sync_state, sync_domain::SyncState::NeedsReauth);

    store
        .put_refresh_token(&owner, &RefreshToken::new("1//second"))
        .await
        .unwrap();
    let creds = store.credentials(&owner).await.unwrap().unwrap();
    assert_eq!(creds.refresh_token.expose(), "1//second");
    assert!(!creds.needs_reauth);
    let resumed = store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(resumed.sync_state, sync_domain::SyncState::Pending);
    assert!(resumed.sync_requested_at.is_some());
});

test_on_both_backends!(ping_answers, async |store: Store| {
    WebhookStore::ping(&store).await.unwrap();
});

#[tokio::test]
async fn unreachable_postgres_is_unavailable_not_a_panic() {
    let url = sync_store::DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/none").unwrap();
    let options = sync_store::PoolOptions {
        max_size: 1,
        wait_timeout: std::time::Duration::from_millis(500),
        connect_timeout: std::time::Duration::from_millis(500),
    };
    let store = Store::new(
        url,
        Some(sync_store::test_support::TEST_ENCRYPTION_KEY),
        options,
    )
    .unwrap();
    let err = store
        .find_channel(&ChannelId::parse("x").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(err, sync_domain::ports::StoreError::Unavailable(_)),
        "{err:?}"
    );
}

test_on_both_backends!(
    concurrent_requests_are_all_committed_once,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let before = store
            .calendar(calendar.id)
            .await
            .unwrap()
            .unwrap()
            .sync_request_count;
        consume_pending_request(&store, calendar.id).await;
        // 100 distinct message numbers, each sent twice, all at once: whatever
        // the batching, exactly one request is written (the rest find it
        // pending or are duplicates), and nothing fails.
        let mut tasks = tokio::task::JoinSet::new();
        for n in 1..=100 {
            for _ in 0..2 {
                let store = store.clone();
                let request = request(calendar.id, "chan-1", Some(n));
                tasks.spawn(async move { store.record_sync_request(&request).await.unwrap() });
            }
        }
        let mut recorded = 0;
        while let Some(outcome) = tasks.join_next().await {
            if outcome.unwrap() == RecordOutcome::Recorded {
                recorded += 1;
            }
        }
        let after = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(recorded, 1);
        assert_eq!(after.sync_request_count - before, 1);
        assert!(after.sync_requested_at.is_some());
    }
);

test_on_both_backends!(
    a_cached_lookup_never_records_for_a_channel_stopped_elsewhere,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let channel = ChannelId::parse("chan-1").unwrap();
        // This instance looks the channel up (and caches it)...
        assert!(store.find_channel(&channel).await.unwrap().is_some());
        // ...then another instance (its own cache) stops it.
        let other = reopen(&store, sync_store::test_support::TEST_ENCRYPTION_KEY, &[]).await;
        other.mark_channel_stopped(&channel).await.unwrap();
        let before = store
            .calendar(calendar.id)
            .await
            .unwrap()
            .unwrap()
            .sync_request_count;
        let outcome = store
            .record_sync_request(&request(calendar.id, "chan-1", Some(3)))
            .await
            .unwrap();
        assert_ne!(outcome, RecordOutcome::Recorded);
        // Before refusing a token the webhook asks past the cache: unknown now.
        assert_eq!(store.find_channel_uncached(&channel).await.unwrap(), None);
        let after = store.calendar(calendar.id).await.unwrap().unwrap();
        assert_eq!(after.sync_request_count, before);
        // And once this instance stops a channel itself, it forgets it at once.
        store.mark_channel_stopped(&channel).await.unwrap();
        assert_eq!(store.find_channel(&channel).await.unwrap(), None);
    }
);

test_on_both_backends!(
    a_stopped_channel_records_nothing_whether_or_not_a_request_is_pending,
    async |store: Store| {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let channel = ChannelId::parse("chan-1").unwrap();
        let other = reopen(&store, sync_store::test_support::TEST_ENCRYPTION_KEY, &[]).await;
        other.mark_channel_stopped(&channel).await.unwrap();
        let count = |store: &Store| {
            let store = store.clone();
            async move {
                let calendar = store.calendar(calendar.id).await.unwrap().unwrap();
                (calendar.sync_request_count, calendar.sync_requested_at)
            }
        };
        // Records message `number` and checks that nothing was written.
        let record_nothing = async |number| {
            let before = count(&store).await;
            let outcome = store
                .record_sync_request(&request(calendar.id, "chan-1", Some(number)))
                .await
                .unwrap();
            assert_eq!(count(&store).await, before);
            outcome
        };
        // The initial sync's request is pending: it covers the notification,
        // whose channel is not read again (no write either way).
        assert_eq!(record_nothing(3).await, RecordOutcome::AlreadyPending);
        // Nothing pending: the write checks the channel and refuses.
        consume_pending_request(&store, calendar.id).await;
        assert_eq!(record_nothing(4).await, RecordOutcome::CalendarGone);
    }
);

/// A PostgreSQL store (with its database, kept alive by the caller) holding
/// one calendar on channel `chan-1` whose pending request a sync has claimed;
/// `None` when PostgreSQL is skipped.
async fn claimed_calendar_on_postgres() -> Option<(
    sync_store::test_support::TestDb,
    Store,
    sync_store::calendars::Calendar,
)> {
    let db = sync_store::test_support::TestDb::postgres().await?;
    let store = db.store().await;
    let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
    consume_pending_request(&store, calendar.id).await; // a sync claimed it
    Some((db, store, calendar))
}

/// PostgreSQL: a sync's page transaction locks the calendar's state row for as
/// long as it upserts; the webhook writes only `sync_requests`, so it answers
/// meanwhile. (SQLite has one writer connection: there the webhook's batch
/// simply follows the page's short transaction.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_write_does_not_wait_for_an_open_page_transaction() {
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _, SimpleAsyncConnection as _};
    let Some((_db, store, calendar)) = claimed_calendar_on_postgres().await else {
        return;
    };
    let sync_store::DatabaseUrl::Postgres(raw) = store.url() else {
        panic!("a PostgreSQL test database");
    };
    let mut page = diesel_async::AsyncPgConnection::establish(raw)
        .await
        .unwrap();
    page.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query("UPDATE calendar_sync_state SET updated_at = updated_at WHERE id = $1")
        .bind::<diesel::sql_types::Text, _>(calendar.id.to_string())
        .execute(&mut page)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        store.record_sync_request(&request(calendar.id, "chan-1", Some(1))),
    )
    .await
    .expect("the webhook write did not wait for the page transaction")
    .unwrap();
    assert_eq!(outcome, RecordOutcome::Recorded);
    page.batch_execute("ROLLBACK").await.unwrap();
}

/// PostgreSQL: the webhook's writer has connections of its own, so a pool
/// emptied by syncs (every connection checked out) does not hold up a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_write_does_not_wait_for_a_pool_the_syncs_hold_on_postgres() {
    let Some((_db, store, calendar)) = claimed_calendar_on_postgres().await else {
        return;
    };
    let sync_store::DbPool::Postgres(pool) = store.pool() else {
        panic!("a PostgreSQL test database");
    };
    let mut held = Vec::new();
    for _ in 0..pool.status().max_size {
        held.push(pool.get().await.unwrap());
    }
    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        store.record_sync_request(&request(calendar.id, "chan-1", Some(1))),
    )
    .await
    .expect("the webhook write waited for the syncs' pool")
    .unwrap();
    assert_eq!(outcome, RecordOutcome::Recorded);
    drop(held);
}

/// SQLite: another process holding the write lock stands for a database that
/// stops answering; the write is refused as unavailable (503 upstream)
/// within the group commit's bound instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_does_not_take_is_unavailable_within_the_bound() {
    let db = sync_store::test_support::TestDb::sqlite();
    let store = db.store().await;
    let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
    consume_pending_request(&store, calendar.id).await;
    let sync_store::DatabaseUrl::Sqlite(path) = store.url() else {
        panic!("a SQLite test database");
    };
    let blocker = rusqlite_free_lock(path);
    let started = std::time::Instant::now();
    let outcome = store
        .record_sync_request(&request(calendar.id, "chan-1", Some(1)))
        .await;
    let waited = started.elapsed();
    assert!(
        matches!(outcome, Err(sync_domain::ports::StoreError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(waited < Duration::from_secs(7), "waited {waited:?}");
    drop(blocker);
}

/// Holds SQLite's write lock from another connection until dropped.
fn rusqlite_free_lock(path: &std::path::Path) -> diesel::SqliteConnection {
    use diesel::Connection as _;
    use diesel::connection::SimpleConnection as _;
    let mut conn = diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 1000; BEGIN IMMEDIATE;")
        .unwrap();
    conn
}

test_on_both_backends!(
    the_database_refuses_an_unknown_sync_state,
    async |store: Store| {
        use diesel_async::RunQueryDsl as _;
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        let sql = format!(
            "UPDATE calendar_sync_state SET sync_state = 'resting' WHERE id = '{}'",
            calendar.id
        );
        let refused = match store.url() {
            sync_store::DatabaseUrl::Postgres(raw) => {
                use diesel_async::AsyncConnection as _;
                let mut conn = diesel_async::AsyncPgConnection::establish(raw)
                    .await
                    .unwrap();
                diesel::sql_query(&sql).execute(&mut conn).await.is_err()
            }
            sync_store::DatabaseUrl::Sqlite(path) => {
                use diesel::Connection as _;
                let mut conn =
                    diesel::SqliteConnection::establish(&path.to_string_lossy()).unwrap();
                diesel::RunQueryDsl::execute(diesel::sql_query(&sql), &mut conn).is_err()
            }
        };
        assert!(refused, "an unknown sync_state was stored");
        let row = store.calendar(calendar.id).await.unwrap().unwrap();
        assert!(sync_domain::SyncState::ALL.contains(&row.sync_state));
    }
);

const NEW_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// A second store on `store`'s database (another instance, or this one restarted).
async fn reopen(store: &Store, key: &str, retired: &[&str]) -> Store {
    let retired: Vec<_> = retired
        .iter()
        .map(|k| sync_store::crypto::EncryptionKey::from_base64(k).unwrap())
        .collect();
    Store::open(store.url().clone(), Some(key), Default::default())
        .await
        .unwrap()
        .with_retired_keys(&retired)
}

test_on_both_backends!(
    a_key_that_cannot_decrypt_the_stored_credentials_fails_the_key_check,
    async |store: Store| {
        let owner = user("u1");
        store
            .put_refresh_token(&owner, &RefreshToken::new("1//r"))
            .await
            .unwrap();
        store.check_keys().await.unwrap();
        let stranger = reopen(&store, NEW_KEY, &[]).await;
        let err = stranger.check_keys().await.unwrap_err().to_string();
        assert!(err.contains("encryption_key"), "{err}");
        assert!(err.contains("retired_encryption_keys"), "{err}");
    }
);

test_on_both_backends!(
    retired_keys_still_decrypt_and_rotation_reseals_under_encryption_key,
    async |store: Store| {
        let owner = user("u1");
        store
            .put_refresh_token(&owner, &RefreshToken::new("1//r"))
            .await
            .unwrap();
        let cached = CachedAccessToken {
            token: AccessToken::new("ya29.a"),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        store.cache_access_token(&owner, &cached).await.unwrap();

        let rotating = reopen(
            &store,
            NEW_KEY,
            &[sync_store::test_support::TEST_ENCRYPTION_KEY],
        )
        .await;
        rotating.check_keys().await.unwrap();
        let creds = rotating.credentials(&owner).await.unwrap().unwrap();
        assert_eq!(creds.refresh_token.expose(), "1//r");

        let report = rotating.rotate_keys().await.unwrap();
        assert_eq!((report.rotated, report.current), (1, 0));
        assert_eq!(rotating.rotate_keys().await.unwrap().rotated, 0);

        // The old key can now be dropped.
        let rotated = reopen(&store, NEW_KEY, &[]).await;
        rotated.check_keys().await.unwrap();
        let creds = rotated.credentials(&owner).await.unwrap().unwrap();
        assert_eq!(creds.refresh_token.expose(), "1//r");
        assert_eq!(creds.access_token.unwrap().token, cached.token);
    }
);

test_on_both_backends!(
    an_active_channel_whose_calendar_is_gone_is_retired_by_the_recovery_sweep,
    async |store: Store| {
        let owner = user("u1");
        store
            .put_refresh_token(&owner, &RefreshToken::new("1//r"))
            .await
            .unwrap();
        let channel = NewChannel {
            channel_id: ChannelId::parse("kept-channel").unwrap(),
            token: ChannelToken::new("kept-token"),
        };
        let orphan = NewChannel {
            channel_id: ChannelId::parse("orphan-channel").unwrap(),
            token: ChannelToken::new("orphan-token"),
        };
        for (calendar, channel) in [
            ("kept@example.com", &channel),
            ("gone@example.com", &orphan),
        ] {
            sync_store::test_support::connect_with_active_channel(
                &store,
                &owner,
                &GoogleCalendarId::parse(calendar).unwrap(),
                channel,
                &ResourceId::parse(format!("resource-{calendar}")).unwrap(),
                None,
            )
            .await
            .unwrap();
        }
        // What a crash between marking the calendar gone and retiring its
        // channel would leave.
        let gone = "UPDATE calendar_sync_state SET sync_state = 'gone' \
                    WHERE google_calendar_id = 'gone@example.com'";
        sync_store::test_support::execute_sql(&store, &[gone], &[gone]).await;

        let week = Duration::from_secs(7 * 24 * 3600);
        let before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        assert_eq!(
            store.retire_abandoned_channels(before, week).await.unwrap(),
            1
        );
        let state = |id: &'static str| {
            let store = store.clone();
            async move {
                store
                    .channel_state(&ChannelId::parse(id).unwrap())
                    .await
                    .unwrap()
            }
        };
        use sync_domain::channel::ChannelState;
        assert_eq!(state("orphan-channel").await, Some(ChannelState::Retiring));
        assert_eq!(state("kept-channel").await, Some(ChannelState::Active));
        assert_eq!(
            store.retire_abandoned_channels(before, week).await.unwrap(),
            0
        );
    }
);

test_on_both_backends!(
    concurrent_lookups_share_a_query_and_each_gets_its_own_channel,
    async |store: Store| {
        let mut calendars = Vec::new();
        for n in 0..20 {
            let channel = format!("chan-{n}");
            let token = format!("tok-{n}");
            calendars
                .push(seed_calendar(&store, "u1", &format!("cal-{n}"), &channel, &token).await);
        }
        let orphan = sync_store::test_support::seed_calendar_without_credentials(
            &store, "u2", "cal-x", "chan-x", "tok-x",
        )
        .await;
        let mut ids: Vec<String> = (0..20).map(|n| format!("chan-{n}")).collect();
        ids.extend((0..20).map(|n| format!("stranger-{n}")));
        ids.push("chan-x".to_owned());
        // Asked at once (and some twice), so the lookups are read in batches.
        ids.extend((0..5).map(|n| format!("chan-{n}")));
        let ids: Vec<ChannelId> = ids.iter().map(|id| ChannelId::parse(id).unwrap()).collect();
        let found = futures::future::join_all(ids.iter().map(|id| store.find_channel(id))).await;
        for (id, record) in ids.iter().zip(found) {
            let record = record.unwrap();
            let id = id.as_str();
            if let Some(n) = id
                .strip_prefix("chan-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let record = record.expect("a known channel");
                assert!(record.token.matches(&format!("tok-{n}")), "{id}");
                assert_eq!(record.calendar_id, Some(calendars[n].id), "{id}");
                assert!(record.calendar_active, "{id}");
            } else if id == "chan-x" {
                let record = record.expect("a known channel");
                assert_eq!(record.calendar_id, Some(orphan.id));
                assert!(!record.calendar_active, "its user has no credentials");
            } else {
                assert_eq!(record, None, "{id} is unknown");
            }
        }
    }
);
