//! The change feed's table (`change_log`): appended inside the transactions
//! that change the mirror or a calendar's state, read by [`ChangeFeed`].
//!
//! Writes: every writer calls one method of [`ChangeLog`] on the connection of
//! its open transaction, after taking the row locks it needs and as late as it
//! can; on PostgreSQL a sync page's upsert appends its entries in the same
//! statement ([`logging_upsert_sql`], after [`ChangeLog::lock_positions`]). On PostgreSQL the first append of a transaction takes
//! [`POSITION_LOCK`], a transaction-scoped advisory lock held until commit, so
//! positions (an identity column) are taken and made visible in the same order:
//! a reader that has seen position P can never later see a smaller one (see
//! `docs/change-feed.md`). It also queues `NOTIFY chronos_changes`, delivered
//! at commit, which wakes long polls on every instance ([`Store::listen_for_changes`]).
//! SQLite has one writer: its positions are in commit order already.
//!
//! Reads never poll: a long poll waits on the store's in-process signal,
//! which writers in this process bump after commit and the PostgreSQL listener
//! bumps on every notification.

use crate::dialect::Dialect;
use crate::pool::{DbPool, query_error, with_conn};
use crate::schema::{change_feed_state as fs, change_log as cl};
use crate::store::Store;
use crate::timestamps::from_db;
use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use sync_domain::admin::EventView;
use sync_domain::changes::{
    ChangeCursor, ChangeEntry, ChangeFeed, ChangeFeedError, ChangeKind, ChangePage, ChangeQuery,
    EventState, cursor_expired, prunable_through,
};
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, EventStatus};
use time::{OffsetDateTime, PrimitiveDateTime};

/// The PostgreSQL channel the feed's writers notify at commit.
pub const NOTIFY_CHANNEL: &str = "chronos_changes";

/// An arbitrary constant: the advisory lock under which positions are taken
/// and committed on PostgreSQL.
pub const POSITION_LOCK: i64 = 0x0043_6872_6f6e_6366;

/// How long the PostgreSQL listener waits before reconnecting.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Appends to `change_log` on the connection of an open transaction.
pub(crate) trait ChangeLog {
    /// The page's events as written to the mirror (by id), then, when the
    /// page ends a full resync (`sweep_below`), removals of the rows older than
    /// that generation (call before they are deleted), then, when the page
    /// completes the calendar's first full sync, that transition (call before
    /// `full_sync_complete` is set).
    async fn log_page(
        &mut self,
        calendar: &str,
        event_ids: &[&str],
        sweep_below: Option<i64>,
        completing: bool,
        at: PrimitiveDateTime,
    ) -> QueryResult<()>;

    /// Takes the position lock for this transaction's appends (PostgreSQL; a
    /// no-op on SQLite). [`Self::log_page`] takes it itself; a statement that
    /// appends on its own ([`logging_upsert_sql`]) needs it first.
    async fn lock_positions(&mut self) -> QueryResult<()>;

    /// One `kind` entry for each of `calendars` that still exists.
    async fn log_transition(
        &mut self,
        calendars: &[&str],
        kind: ChangeKind,
        at: PrimitiveDateTime,
    ) -> QueryResult<()>;
}

/// `$from, $from+1, …` for `count` values.
fn bind_list(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INSERT: &str =
    "INSERT INTO change_log (calendar_id, user_id, kind, event_id, event_json, at) ";

/// PostgreSQL: a page's upsert (`upsert`, ending in its conflict clause) that
/// appends the page's entries itself, from the rows it wrote (`RETURNING`),
/// so the entries are not read back by id. `$at` and `$calendar` are the
/// entries' time and the calendar, as placeholders after the upsert's own. The
/// caller takes the position lock first ([`ChangeLog::lock_positions`]) and
/// then calls [`ChangeLog::log_page`] without event ids.
pub(crate) fn logging_upsert_sql(upsert: &str, calendar: &str, at: &str) -> String {
    format!(
        "WITH up AS ({upsert} RETURNING calendar_id, event_id, status, raw_json) \
         {INSERT}SELECT up.calendar_id, cs.user_id, \
         CASE WHEN up.status = '{cancelled}' THEN '{event_cancelled}' ELSE '{event_changed}' END, \
         up.event_id, up.raw_json, {at} \
         FROM up JOIN calendar_sync_state cs ON cs.id = {calendar} ORDER BY up.event_id",
        cancelled = EventStatus::Cancelled,
        event_cancelled = ChangeKind::for_event_status(EventStatus::Cancelled).as_str(),
        event_changed = ChangeKind::EventChanged.as_str(),
    )
}

macro_rules! impl_change_log {
    ($conn:ty, $dialect:expr) => {
        impl ChangeLog for $conn {
            async fn log_page(
                &mut self,
                calendar: &str,
                event_ids: &[&str],
                sweep_below: Option<i64>,
                completing: bool,
                at: PrimitiveDateTime,
            ) -> QueryResult<()> {
                if event_ids.is_empty() && sweep_below.is_none() && !completing {
                    return Ok(());
                }
                take_position_lock!(self, $dialect);
                if !event_ids.is_empty() {
                    let sql = $dialect.placeholders(
                        &format!(
                            "{INSERT}SELECT ce.calendar_id, cs.user_id, \
                             CASE WHEN ce.status = '{cancelled}' THEN '{event_cancelled}' ELSE '{event_changed}' END, \
                             ce.event_id, ce.raw_json, $2 \
                             FROM calendar_events ce JOIN calendar_sync_state cs ON cs.id = ce.calendar_id \
                             WHERE ce.calendar_id = $1 AND ce.event_id IN ({}) ORDER BY ce.event_id",
                            bind_list(3, event_ids.len()),
                            cancelled = EventStatus::Cancelled,
                            event_cancelled = ChangeKind::for_event_status(EventStatus::Cancelled).as_str(),
                            event_changed = ChangeKind::EventChanged.as_str(),
                        ),
                    );
                    let mut query = diesel::sql_query(sql)
                        .into_boxed()
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at);
                    for id in event_ids {
                        query = query.bind::<Text, _>(*id);
                    }
                    query.execute(self).await?;
                }
                if let Some(generation) = sweep_below {
                    let sql = $dialect.placeholders(
                        &format!(
                            "{INSERT}SELECT ce.calendar_id, cs.user_id, '{removed}', ce.event_id, NULL, $2 \
                             FROM calendar_events ce JOIN calendar_sync_state cs ON cs.id = ce.calendar_id \
                             WHERE ce.calendar_id = $1 AND ce.sync_generation < $3 ORDER BY ce.event_id",
                            removed = ChangeKind::EventRemoved.as_str(),
                        ),
                    );
                    diesel::sql_query(sql)
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at)
                        .bind::<BigInt, _>(generation)
                        .execute(self)
                        .await?;
                }
                if completing {
                    let sql = $dialect.placeholders(
                        &format!(
                            "{INSERT}SELECT id, user_id, '{complete}', NULL, NULL, $2 \
                             FROM calendar_sync_state WHERE id = $1 AND NOT full_sync_complete",
                            complete = ChangeKind::CalendarFullSyncComplete.as_str(),
                        ),
                    );
                    diesel::sql_query(sql)
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at)
                        .execute(self)
                        .await?;
                }
                Ok(())
            }

            async fn lock_positions(&mut self) -> QueryResult<()> {
                take_position_lock!(self, $dialect);
                Ok(())
            }

            async fn log_transition(
                &mut self,
                calendars: &[&str],
                kind: ChangeKind,
                at: PrimitiveDateTime,
            ) -> QueryResult<()> {
                if calendars.is_empty() {
                    return Ok(());
                }
                take_position_lock!(self, $dialect);
                let sql = $dialect.placeholders(
                    &format!(
                        "{INSERT}SELECT id, user_id, $1, NULL, NULL, $2 \
                         FROM calendar_sync_state WHERE id IN ({}) ORDER BY id",
                        bind_list(3, calendars.len())
                    ),
                );
                let mut query = diesel::sql_query(sql)
                    .into_boxed()
                    .bind::<Text, _>(kind.as_str())
                    .bind::<Timestamp, _>(at);
                for id in calendars {
                    query = query.bind::<Text, _>(*id);
                }
                query.execute(self).await?;
                Ok(())
            }
        }
    };
}

/// PostgreSQL only: positions are taken under a lock held until commit, and
/// the commit notifies listeners. Re-taking it in the same transaction is free.
macro_rules! take_position_lock {
    ($conn:expr, $dialect:expr) => {
        if let Some(sql) = $dialect.position_lock_sql() {
            diesel::sql_query(sql).execute($conn).await?;
        }
    };
}

impl_change_log!(AsyncPgConnection, Dialect::Postgres);
impl_change_log!(crate::pool::AsyncSqliteConnection, Dialect::Sqlite);

/// A row of `change_log`.
type LogRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    PrimitiveDateTime,
);

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Query(format!("change_log {what}: {error}").into())
}

fn entry(row: LogRow) -> Result<ChangeEntry, StoreError> {
    let (position, calendar_id, user_id, kind, event_id, event_json, at) = row;
    let kind = ChangeKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?;
    let event = match (kind.is_event(), &event_id, event_json) {
        (false, _, _) => EventState::NotAnEvent,
        (true, Some(id), Some(json)) => {
            let raw: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| corrupt("event_json", e))?;
            EventState::Present(Box::new(EventView::from_google_json(id, &raw)))
        }
        (true, _, _) => EventState::Removed,
    };
    Ok(ChangeEntry {
        cursor: ChangeCursor::at(position),
        calendar_id: CalendarId::parse(&calendar_id).map_err(|e| corrupt("calendar_id", e))?,
        user_id,
        kind,
        at: from_db(at),
        event_id: event_id.filter(|_| kind.is_event()),
        event,
    })
}

/// The feed's size, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStats {
    /// Entries kept.
    pub entries: i64,
    /// The oldest position kept (0: none).
    pub oldest_position: i64,
}

impl Store {
    /// Wakes this process's long polls: entries were committed.
    pub(crate) fn changes_committed(&self) {
        self.change_signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The feed's head (every position up to it is final), as a cursor.
    async fn change_head(&self) -> Result<ChangeCursor, StoreError> {
        let (head, pruned): (Option<i64>, i64) = with_conn!(&self.pool, |conn| {
            let head = cl::table
                .select(diesel::dsl::max(cl::position))
                .first::<Option<i64>>(conn)
                .await
                .map_err(query_error)?;
            let pruned = fs::table
                .select(fs::pruned_through)
                .first::<i64>(conn)
                .await
                .map_err(query_error)?;
            (head, pruned)
        });
        Ok(ChangeCursor::at(head.unwrap_or(0).max(pruned)))
    }

    /// One read of the feed after `after`, without waiting.
    ///
    /// The head is read first: entries up to it are final (positions become
    /// visible in order), so when fewer than `limit` match, the consumer may
    /// skip to the head. The retention check comes last, so a prune racing
    /// with the read is noticed rather than silently skipped.
    async fn read_changes(
        &self,
        query: &ChangeQuery,
        after: ChangeCursor,
    ) -> Result<ChangePage, ChangeFeedError> {
        let limit = i64::from(query.limit.max(1));
        let calendar = query.calendar_id.map(|c| c.to_string());
        let user = query.user_id.as_ref().map(|u| u.as_str().to_owned());
        let (head, rows, pruned): (Option<i64>, Vec<LogRow>, i64) =
            with_conn!(&self.pool, |conn| {
                let head = cl::table
                    .select(diesel::dsl::max(cl::position))
                    .first::<Option<i64>>(conn)
                    .await
                    .map_err(query_error)?;
                let mut rows = cl::table
                    .filter(cl::position.gt(after.position()))
                    .filter(cl::position.le(head.unwrap_or(0)))
                    .select((
                        cl::position,
                        cl::calendar_id,
                        cl::user_id,
                        cl::kind,
                        cl::event_id,
                        cl::event_json,
                        cl::at,
                    ))
                    .order(cl::position.asc())
                    .limit(limit)
                    .into_boxed();
                if let Some(calendar) = &calendar {
                    rows = rows.filter(cl::calendar_id.eq(calendar));
                }
                if let Some(user) = &user {
                    rows = rows.filter(cl::user_id.eq(user));
                }
                let rows = rows.load::<LogRow>(conn).await.map_err(query_error)?;
                let pruned = fs::table
                    .select(fs::pruned_through)
                    .first::<i64>(conn)
                    .await
                    .map_err(query_error)?;
                (head, rows, pruned)
            });
        let oldest = ChangeCursor::at(pruned);
        if cursor_expired(after, oldest) {
            return Err(ChangeFeedError::Expired { after, oldest });
        }
        let full = rows.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        let changes = rows.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        let head = ChangeCursor::at(head.unwrap_or(0)).max(oldest).max(after);
        let next_cursor = match changes.last() {
            Some(last) if full => last.cursor,
            _ => head,
        };
        Ok(ChangePage {
            changes,
            next_cursor,
        })
    }

    /// Removes, in one transaction, up to `batch` of the oldest entries
    /// written before `cutoff`; returns how many. Call repeatedly until it
    /// returns fewer than `batch`.
    pub async fn prune_changes(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let removed = with_conn!(&self.pool, |conn| {
            conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
                let oldest: Vec<(i64, PrimitiveDateTime)> = cl::table
                    .select((cl::position, cl::at))
                    .order(cl::position.asc())
                    .limit(batch.max(1))
                    .load(conn)
                    .await?;
                let oldest: Vec<(i64, OffsetDateTime)> =
                    oldest.into_iter().map(|(p, at)| (p, from_db(at))).collect();
                let Some(through) = prunable_through(&oldest, cutoff) else {
                    return Ok(0);
                };
                // First, so a reader that sees the rows gone also sees why.
                diesel::update(fs::table.filter(fs::pruned_through.lt(through)))
                    .set(fs::pruned_through.eq(through))
                    .execute(conn)
                    .await?;
                diesel::delete(cl::table.filter(cl::position.le(through)))
                    .execute(conn)
                    .await
            })
            .await
            .map_err(query_error)?
        });
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// How many entries the feed keeps and the oldest position.
    pub async fn change_feed_stats(&self) -> Result<FeedStats, StoreError> {
        let (entries, oldest): (i64, Option<i64>) = with_conn!(&self.pool, |conn| {
            let entries = cl::table
                .count()
                .get_result::<i64>(conn)
                .await
                .map_err(query_error)?;
            let oldest = cl::table
                .select(diesel::dsl::min(cl::position))
                .first::<Option<i64>>(conn)
                .await
                .map_err(query_error)?;
            (entries, oldest)
        });
        Ok(FeedStats {
            entries,
            oldest_position: oldest.unwrap_or(0),
        })
    }

    /// PostgreSQL: listens on [`NOTIFY_CHANNEL`] and wakes this process's long
    /// polls on every commit of any instance, reconnecting after a failure
    /// (and waking everyone then, in case a notification was missed). Returns
    /// when `shutdown` completes; on SQLite at once (writers are in-process).
    pub async fn listen_for_changes(&self, shutdown: impl std::future::Future<Output = ()>) {
        // Dispatch on the backend (one of the places listed in `dialect.rs`).
        let DbPool::Postgres(_) = &self.pool else {
            return;
        };
        let crate::pool::DatabaseUrl::Postgres(url) = self.url().clone() else {
            return;
        };
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                outcome = self.listen_once(&url) => {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, "change feed listener lost its connection; reconnecting");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(LISTEN_RETRY) => {}
            }
        }
    }

    /// One listening connection, until it fails.
    async fn listen_once(&self, url: &str) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        let mut conn = AsyncPgConnection::establish(url).await?;
        diesel::sql_query(format!("LISTEN {NOTIFY_CHANNEL}"))
            .execute(&mut conn)
            .await?;
        // Anything committed while no listener was connected.
        self.changes_committed();
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        while let Some(notification) = notifications.next().await {
            notification?;
            self.changes_committed();
        }
        anyhow::bail!("notification stream ended")
    }
}

#[async_trait]
impl ChangeFeed for Store {
    async fn changes(
        &self,
        query: &ChangeQuery,
        wait: Duration,
    ) -> Result<ChangePage, ChangeFeedError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first read, so a commit between the read and
        // the wait is not missed.
        let mut committed = self.change_signal.subscribe();
        let mut after = match query.after {
            Some(after) => after,
            None => self.change_head().await?,
        };
        loop {
            committed.borrow_and_update();
            let page = self.read_changes(query, after).await?;
            if !page.changes.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            after = page.next_cursor;
            match tokio::time::timeout_at(deadline, committed.changed()).await {
                Ok(Ok(())) => {}
                // The wait ended, or the store is being dropped.
                Ok(Err(_)) | Err(_) => return Ok(page),
            }
        }
    }

    async fn oldest_cursor(&self) -> Result<ChangeCursor, StoreError> {
        let pruned = with_conn!(&self.pool, |conn| {
            fs::table
                .select(fs::pruned_through)
                .first::<i64>(conn)
                .await
                .map_err(query_error)?
        });
        Ok(ChangeCursor::at(pruned))
    }
}
