//! The change feed's contract on the store: what the writers append, in the
//! same transaction as the mirror, and how readers follow it. On SQLite always
//! and on PostgreSQL when `CHRONOS_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use sync_domain::calendar::GoogleEvent;
use sync_domain::changes::{
    ChangeCursor, ChangeEntry, ChangeFeed, ChangeFeedError, ChangeKind, ChangeQuery, EventState,
};
use sync_domain::ports::CredentialStore;
use sync_domain::sync::{Claim, FailureAction, PageWrite, SyncCompletion, SyncQueue};
use sync_domain::{CalendarId, UserId};
use sync_store::Store;
use sync_store::test_on_both_backends;
use sync_store::test_support::{CLAIM_LEASE as LEASE, claim_at, connected, me};
use time::OffsetDateTime;

/// Claims every due calendar for `owner`.
async fn claim_all(store: &Store, owner: &str) -> Vec<Claim> {
    claim_at(
        store,
        owner,
        OffsetDateTime::now_utc() + Duration::from_secs(30),
        0,
    )
    .await
}

fn event(id: &str, status: &str, summary: &str) -> GoogleEvent {
    GoogleEvent {
        id: id.to_owned(),
        status: sync_domain::EventStatus::from_google(Some(status)),
        updated: Some(OffsetDateTime::UNIX_EPOCH),
        etag: Some(format!("\"{summary}\"")),
        summary: Some(summary.to_owned()),
        raw: json!({"id": id, "status": status, "summary": summary,
                    "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"}}),
    }
}

async fn page(
    store: &Store,
    claim: &Claim,
    owner: &str,
    events: &[GoogleEvent],
    generation: i64,
    completion: Option<SyncCompletion<'_>>,
) -> bool {
    let now = OffsetDateTime::now_utc();
    store
        .apply_page(
            me(claim, owner),
            PageWrite {
                events,
                generation,
                completion,
                lease_until: now + LEASE,
                now,
            },
        )
        .await
        .unwrap()
}

fn done(sweep: bool) -> Option<SyncCompletion<'static>> {
    Some(SyncCompletion {
        sync_token: "token",
        sweep,
    })
}

fn everything() -> ChangeQuery {
    ChangeQuery {
        after: Some(ChangeCursor::START),
        limit: 1000,
        calendar_id: None,
        user_id: None,
    }
}

async fn all_entries(store: &Store) -> Vec<ChangeEntry> {
    store
        .changes(&everything(), Duration::ZERO)
        .await
        .unwrap()
        .changes
}

fn kinds(entries: &[ChangeEntry]) -> Vec<(ChangeKind, Option<String>)> {
    entries
        .iter()
        .map(|e| (e.kind, e.event_id.clone()))
        .collect()
}

test_on_both_backends!(
    connecting_a_calendar_appends_one_entry,
    async |store: Store| {
        let calendar = connected(&store, "u1", "primary").await;
        connected(&store, "u1", "primary").await; // the same pair again: no entry
        let entries = all_entries(&store).await;
        assert_eq!(kinds(&entries), vec![(ChangeKind::CalendarConnected, None)]);
        assert_eq!(entries[0].calendar_id, calendar.id);
        assert_eq!(entries[0].user_id, "u1");
        assert_eq!(entries[0].event, EventState::NotAnEvent);
    }
);

test_on_both_backends!(
    a_first_full_sync_logs_its_events_then_completion,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_all(&store, "w").await.remove(0);
        let generation = store
            .begin_full_sync(me(&claim, "w"), OffsetDateTime::now_utc())
            .await
            .unwrap()
            .unwrap();
        let events = [
            event("e1", "confirmed", "One"),
            event("e2", "cancelled", "Two"),
        ];
        assert!(page(&store, &claim, "w", &events, generation, done(true)).await);
        let entries = all_entries(&store).await;
        assert_eq!(
            kinds(&entries),
            vec![
                (ChangeKind::CalendarConnected, None),
                (ChangeKind::EventChanged, Some("e1".into())),
                (ChangeKind::EventCancelled, Some("e2".into())),
                (ChangeKind::CalendarFullSyncComplete, None),
            ]
        );
        let EventState::Present(event) = &entries[1].event else {
            panic!("an event entry carries the event");
        };
        assert_eq!(event.summary.as_deref(), Some("One"));
        assert_eq!(event.start, Some(json!({"date": "2026-12-01"})));
    }
);

test_on_both_backends!(
    only_the_first_full_sync_logs_completion,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_all(&store, "w").await.remove(0);
        assert!(
            page(
                &store,
                &claim,
                "w",
                &[event("e1", "confirmed", "A")],
                0,
                done(false)
            )
            .await
        );
        store.request_sync(claim.calendar_id).await.unwrap();
        let claim = claim_all(&store, "w").await.remove(0);
        assert!(
            page(
                &store,
                &claim,
                "w",
                &[event("e1", "confirmed", "B")],
                0,
                done(false)
            )
            .await
        );
        let completions = all_entries(&store)
            .await
            .iter()
            .filter(|e| e.kind == ChangeKind::CalendarFullSyncComplete)
            .count();
        assert_eq!(completions, 1);
    }
);

test_on_both_backends!(
    a_full_resync_logs_the_events_it_removes,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_all(&store, "w").await.remove(0);
        let first = [
            event("keep", "confirmed", "K"),
            event("drop", "confirmed", "D"),
        ];
        assert!(page(&store, &claim, "w", &first, 0, done(false)).await);
        store.request_sync(claim.calendar_id).await.unwrap();
        let claim = claim_all(&store, "w").await.remove(0);
        let generation = store
            .begin_full_sync(me(&claim, "w"), OffsetDateTime::now_utc())
            .await
            .unwrap()
            .unwrap();
        let cursor = all_entries(&store).await.last().unwrap().cursor;
        assert!(
            page(
                &store,
                &claim,
                "w",
                &[event("keep", "confirmed", "K")],
                generation,
                done(true)
            )
            .await
        );
        let after = entries_after(&store, cursor).await;
        assert_eq!(
            kinds(&after),
            vec![
                (ChangeKind::EventChanged, Some("keep".into())),
                (ChangeKind::EventRemoved, Some("drop".into())),
            ]
        );
        assert_eq!(after[1].event, EventState::Removed);
    }
);

test_on_both_backends!(
    a_page_whose_lease_was_lost_logs_nothing,
    async |store: Store| {
        connected(&store, "u1", "primary").await;
        let claim = claim_all(&store, "w").await.remove(0);
        let before = all_entries(&store).await.len();
        assert!(
            !page(
                &store,
                &claim,
                "someone-else",
                &[event("e1", "confirmed", "A")],
                0,
                done(false)
            )
            .await
        );
        assert_eq!(all_entries(&store).await.len(), before);
    }
);

test_on_both_backends!(
    calendar_transitions_are_logged_once,
    async |store: Store| {
        let a = connected(&store, "u1", "a").await;
        let b = connected(&store, "u1", "b").await;
        let c = connected(&store, "u2", "c").await;
        let claims = claim_all(&store, "w").await;
        let claim_of =
            |id: CalendarId| claims.iter().find(|c| c.calendar_id == id).unwrap().clone();
        let now = OffsetDateTime::now_utc();
        assert!(
            store
                .fail(
                    me(&claim_of(c.id), "w"),
                    FailureAction::Gone {
                        error: "404".into()
                    },
                    now
                )
                .await
                .unwrap()
        );
        let user = UserId::parse("u1").unwrap();
        let read = store.credentials(&user).await.unwrap().unwrap();
        assert!(store.mark_needs_reauth(&user, &read.version).await.unwrap());
        // A second refusal of the same credentials marks nothing new.
        store.mark_needs_reauth(&user, &read.version).await.unwrap();
        store.disconnect_calendar(b.id).await.unwrap().unwrap();
        let entries: Vec<(ChangeKind, CalendarId)> = all_entries(&store)
            .await
            .into_iter()
            .skip(3)
            .map(|e| (e.kind, e.calendar_id))
            .collect();
        let mut reauth: Vec<CalendarId> = entries[1..3].iter().map(|(_, id)| *id).collect();
        reauth.sort();
        let mut expected = vec![a.id, b.id];
        expected.sort();
        assert_eq!(entries[0], (ChangeKind::CalendarGone, c.id));
        assert!(
            entries[1..3]
                .iter()
                .all(|(k, _)| *k == ChangeKind::CalendarNeedsReauth)
        );
        assert_eq!(
            reauth, expected,
            "gone calendars are not parked, and twice is once"
        );
        assert_eq!(entries[3], (ChangeKind::CalendarDisconnected, b.id));
        assert_eq!(entries.len(), 4);
    }
);

test_on_both_backends!(
    a_consumer_without_a_cursor_starts_from_now,
    async |store: Store| {
        connected(&store, "u1", "a").await;
        let page = store
            .changes(
                &ChangeQuery {
                    after: None,
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert!(page.changes.is_empty(), "no history replayed");
        let b = connected(&store, "u1", "b").await;
        let next = store
            .changes(
                &ChangeQuery {
                    after: Some(page.next_cursor),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(
            kinds(&next.changes),
            vec![(ChangeKind::CalendarConnected, None)]
        );
        assert_eq!(next.changes[0].calendar_id, b.id);
    }
);

test_on_both_backends!(
    filters_keep_one_calendar_or_one_user,
    async |store: Store| {
        let a = connected(&store, "u1", "a").await;
        connected(&store, "u1", "b").await;
        connected(&store, "u2", "c").await;
        let by_calendar = store
            .changes(
                &ChangeQuery {
                    calendar_id: Some(a.id),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(by_calendar.changes.len(), 1);
        let by_user = store
            .changes(
                &ChangeQuery {
                    user_id: Some(UserId::parse("u1").unwrap()),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(by_user.changes.len(), 2);
        assert_eq!(
            by_user.next_cursor,
            all_entries(&store).await.last().unwrap().cursor
        );
    }
);

test_on_both_backends!(pages_continue_from_next_cursor, async |store: Store| {
    for n in 0..5 {
        connected(&store, "u1", &format!("cal{n}")).await;
    }
    let mut query = ChangeQuery {
        limit: 2,
        ..everything()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.changes(&query, Duration::ZERO).await.unwrap();
        if page.changes.is_empty() {
            break;
        }
        seen.extend(page.changes.iter().map(|e| e.cursor));
        query.after = Some(page.next_cursor);
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
});

test_on_both_backends!(
    a_long_poll_returns_as_soon_as_an_entry_is_committed,
    async |store: Store| {
        let head = store
            .changes(
                &ChangeQuery {
                    after: None,
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap()
            .next_cursor;
        let writer = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            connected(&writer, "u1", "late").await;
        });
        let started = std::time::Instant::now();
        let page = store
            .changes(
                &ChangeQuery {
                    after: Some(head),
                    ..everything()
                },
                Duration::from_secs(20),
            )
            .await
            .unwrap();
        assert_eq!(page.changes.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken, not timed out"
        );
    }
);

test_on_both_backends!(
    a_long_poll_with_nothing_new_ends_with_the_wait,
    async |store: Store| {
        let started = std::time::Instant::now();
        let page = store
            .changes(
                &ChangeQuery {
                    after: None,
                    ..everything()
                },
                Duration::from_millis(400),
            )
            .await
            .unwrap();
        assert!(page.changes.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
);

test_on_both_backends!(
    a_cursor_older_than_the_retention_has_expired,
    async |store: Store| {
        for n in 0..3 {
            connected(&store, "u1", &format!("cal{n}")).await;
        }
        let entries = all_entries(&store).await;
        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        assert_eq!(store.prune_changes(future, 2).await.unwrap(), 2);
        let oldest = store.oldest_cursor().await.unwrap();
        assert_eq!(oldest, entries[1].cursor);
        let expired = store.changes(&everything(), Duration::ZERO).await;
        assert!(
            matches!(expired, Err(ChangeFeedError::Expired { .. })),
            "{expired:?}"
        );
        let from_oldest = store
            .changes(
                &ChangeQuery {
                    after: Some(oldest),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(
            from_oldest.changes.len(),
            1,
            "every kept entry follows the oldest cursor"
        );
        assert_eq!(
            store
                .prune_changes(OffsetDateTime::now_utc() - time::Duration::hours(1), 10)
                .await
                .unwrap(),
            0
        );
    }
);

// A page of more events than one `change_log` row holds is stored as several
// rows; readers still get one entry, one position, per event, and may stop
// and resume anywhere inside a row. Retention removes rows whole.
test_on_both_backends!(
    a_page_larger_than_a_log_row_is_read_one_entry_at_a_time,
    async |store: Store| {
        let per_row = sync_store::changes::EVENTS_PER_ROW;
        let a = connected(&store, "u1", "a").await;
        let b = connected(&store, "u2", "b").await;
        let claims = claim_all(&store, "w").await;
        let claim_of = |id: CalendarId| claims.iter().find(|c| c.calendar_id == id).unwrap();
        let big: Vec<GoogleEvent> = (0..per_row * 2 + 100)
            .rev() // written out of order: entries come in event-id order
            .map(|n| event(&format!("e{n:05}"), "confirmed", &format!("E{n}")))
            .collect();
        assert!(page(&store, claim_of(a.id), "w", &big, 0, None).await);
        let small = [event("x1", "cancelled", "X")];
        assert!(page(&store, claim_of(b.id), "w", &small, 0, None).await);
        let tail = [
            event("e99998", "confirmed", "T1"),
            event("e99999", "confirmed", "T2"),
        ];
        assert!(page(&store, claim_of(a.id), "w", &tail, 0, None).await);
        let total = 2 + big.len() + 1 + tail.len();

        // Everything, seven at a time: consecutive cursors, each event once.
        let mut query = ChangeQuery {
            limit: 7,
            ..everything()
        };
        let mut seen: Vec<ChangeEntry> = Vec::new();
        loop {
            let page = store.changes(&query, Duration::ZERO).await.unwrap();
            if page.changes.is_empty() {
                break;
            }
            assert!(page.changes.len() <= 7);
            seen.extend(page.changes);
            query.after = Some(page.next_cursor);
        }
        assert_eq!(seen.len(), total);
        assert_eq!(seen, all_entries_paged(&store).await);
        assert!(seen.windows(2).all(|w| w[0].cursor < w[1].cursor));
        let big_ids: Vec<String> = seen[2..2 + big.len()]
            .iter()
            .map(|e| e.event_id.clone().unwrap())
            .collect();
        let mut sorted = big_ids.clone();
        sorted.sort();
        assert_eq!(big_ids, sorted, "a page's entries in event-id order");
        assert_eq!(big_ids.iter().collect::<HashSet<_>>().len(), big.len());
        let EventState::Present(first) = &seen[2].event else {
            panic!("an event entry carries the event");
        };
        assert_eq!(first.summary.as_deref(), Some("E0"));
        assert_eq!(seen[2 + big.len()].kind, ChangeKind::EventCancelled);
        assert_eq!(seen[2 + big.len()].user_id, "u2");

        // Resuming inside a row starts at the next entry.
        let middle = seen[2 + per_row + 17].cursor;
        let resumed = store
            .changes(
                &ChangeQuery {
                    after: Some(middle),
                    limit: 3,
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(resumed.changes, seen[2 + per_row + 18..2 + per_row + 21]);

        // One calendar's entries only.
        let only_a = store
            .changes(
                &ChangeQuery {
                    calendar_id: Some(a.id),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap()
            .changes;
        assert_eq!(only_a.len(), 1 + big.len() + tail.len());
        assert!(only_a.iter().all(|e| e.calendar_id == a.id));

        let stats = store.change_feed_stats().await.unwrap();
        assert_eq!(stats.entries, i64::try_from(total).unwrap());

        // Retention: the two connections and the first row of the big page.
        let future = OffsetDateTime::now_utc() + time::Duration::hours(1);
        assert_eq!(
            store.prune_changes(future, 3).await.unwrap(),
            u64::try_from(2 + per_row).unwrap()
        );
        let oldest = store.oldest_cursor().await.unwrap();
        assert_eq!(oldest, seen[1 + per_row].cursor);
        let inside = store
            .changes(
                &ChangeQuery {
                    after: Some(seen[5].cursor),
                    ..everything()
                },
                Duration::ZERO,
            )
            .await;
        assert!(
            matches!(inside, Err(ChangeFeedError::Expired { .. })),
            "a cursor inside a removed row has missed entries: {inside:?}"
        );
        let kept = entries_after(&store, oldest).await;
        assert_eq!(kept, seen[2 + per_row..]);

        // Everything removed: new positions still follow the removed ones.
        while store.prune_changes(future, 100).await.unwrap() > 0 {}
        let head = store.oldest_cursor().await.unwrap();
        assert_eq!(head, seen.last().unwrap().cursor);
        let again = [event("e00000", "confirmed", "Again")];
        assert!(page(&store, claim_of(a.id), "w", &again, 0, None).await);
        let after = entries_after(&store, head).await;
        assert_eq!(after.len(), 1);
        assert!(after[0].cursor > head);
    }
);

/// The entries after `cursor`, up to 1,000.
async fn entries_after(store: &Store, cursor: ChangeCursor) -> Vec<ChangeEntry> {
    store
        .changes(
            &ChangeQuery {
                after: Some(cursor),
                ..everything()
            },
            Duration::ZERO,
        )
        .await
        .unwrap()
        .changes
}

/// Every entry, read 1,000 at a time.
async fn all_entries_paged(store: &Store) -> Vec<ChangeEntry> {
    let mut query = everything();
    let mut out = Vec::new();
    loop {
        let page = store.changes(&query, Duration::ZERO).await.unwrap();
        if page.changes.is_empty() {
            return out;
        }
        out.extend(page.changes);
        query.after = Some(page.next_cursor);
    }
}

/// Many writers commit pages concurrently (positions are taken in one order
/// and committed in another) while a reader follows the cursor with long
/// polls. The reader must end with exactly the entries in the log: none
/// skipped, none twice, and each calendar's entries in the order applied.
async fn concurrent_writers_and_a_follower_see_no_gap(store: Store) {
    const CALENDARS: usize = 8;
    const PAGES: usize = 25;
    const PER_PAGE: usize = 20;
    for n in 0..CALENDARS {
        connected(&store, "u1", &format!("cal{n}")).await;
    }
    let start = all_entries(&store).await.last().unwrap().cursor;
    let claims = claim_all(&store, "w").await;
    assert_eq!(claims.len(), CALENDARS);
    let expected = CALENDARS * PAGES * PER_PAGE;
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut query = ChangeQuery {
                after: Some(start),
                ..everything()
            };
            let mut seen: Vec<ChangeEntry> = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < expected && std::time::Instant::now() < deadline {
                let page = store.changes(&query, Duration::from_secs(5)).await.unwrap();
                seen.extend(page.changes);
                query.after = Some(page.next_cursor);
            }
            seen
        })
    };
    let writers: Vec<_> = claims
        .into_iter()
        .map(|claim| {
            let store = store.clone();
            tokio::spawn(async move {
                for p in 0..PAGES {
                    let events: Vec<GoogleEvent> = (0..PER_PAGE)
                        .map(|e| event(&format!("e{e:03}"), "confirmed", &format!("{p:04}")))
                        .collect();
                    assert!(page(&store, &claim, "w", &events, 0, None).await);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = Arc::new(follower.await.unwrap());
    let logged: Vec<ChangeCursor> = store
        .changes(
            &ChangeQuery {
                after: Some(start),
                limit: 1000,
                ..everything()
            },
            Duration::ZERO,
        )
        .await
        .unwrap()
        .changes
        .iter()
        .map(|e| e.cursor)
        .collect::<Vec<_>>();
    let mut all = logged;
    let mut after = *all.last().unwrap();
    loop {
        let more = store
            .changes(
                &ChangeQuery {
                    after: Some(after),
                    limit: 1000,
                    ..everything()
                },
                Duration::ZERO,
            )
            .await
            .unwrap()
            .changes;
        if more.is_empty() {
            break;
        }
        after = more.last().unwrap().cursor;
        all.extend(more.iter().map(|e| e.cursor));
    }
    assert_eq!(all.len(), expected);
    let cursors: Vec<ChangeCursor> = seen.iter().map(|e| e.cursor).collect();
    let unique: HashSet<ChangeCursor> = cursors.iter().copied().collect();
    assert_eq!(unique.len(), cursors.len(), "no entry twice");
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "in position order");
    let missed: Vec<_> = all.iter().filter(|c| !unique.contains(c)).collect();
    assert!(
        missed.is_empty(),
        "the follower skipped {} entries: {missed:?}",
        missed.len()
    );
    // Per calendar and event, the pages arrive in the order they were applied.
    let mut last: HashMap<(CalendarId, String), String> = HashMap::new();
    for entry in seen.iter() {
        let EventState::Present(event) = &entry.event else {
            continue;
        };
        let key = (entry.calendar_id, event.id.clone());
        let summary = event.summary.clone().unwrap();
        if let Some(previous) = last.get(&key) {
            assert!(previous < &summary, "{key:?}: {previous} then {summary}");
        }
        last.insert(key, summary);
    }
}

test_on_both_backends!(
    many_concurrent_writers_and_a_following_reader_see_no_gap,
    concurrent_writers_and_a_follower_see_no_gap
);

/// Two stores on one PostgreSQL stand for two instances: a commit through
/// one wakes a long poll waiting on the other, through `LISTEN`/`NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_instance_wakes_a_long_poll_on_another() {
    let Some(db) = sync_store::test_support::TestDb::postgres().await else {
        return;
    };
    let writer = db.store().await;
    let reader = db.store().await;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let listener = {
        let reader = reader.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            reader
                .listen_for_changes(async move { stop.notified().await })
                .await
        })
    };
    let head = reader
        .changes(
            &ChangeQuery {
                after: None,
                ..everything()
            },
            Duration::ZERO,
        )
        .await
        .unwrap()
        .next_cursor;
    // Give the listener time to connect and LISTEN.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        connected(&writer, "u1", "elsewhere").await;
    });
    let started = std::time::Instant::now();
    let page = reader
        .changes(
            &ChangeQuery {
                after: Some(head),
                ..everything()
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    write.await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the other instance's commit"
    );
    shutdown.notify_one();
    listener.await.unwrap();
}
