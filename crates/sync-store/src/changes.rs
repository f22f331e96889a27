//! The change feed's table (`change_log`): appended inside the transactions
//! that change the mirror or a calendar's state, read by [`ChangeFeed`].
//!
//! Writes: every writer calls one method of [`ChangeLog`] on the connection of
//! its open transaction, after its own writes and row locks, as late as it
//! can. A sync page's events go in rows of up to [`EVENTS_PER_ROW`] entries
//! (one position each), other entries one to a row. On PostgreSQL the first
//! append of a transaction takes [`POSITION_LOCK`], a transaction-scoped
//! advisory lock held until commit, and positions are allocated under it from
//! the head, so they are taken and made visible in the same order: a reader
//! that has seen position P can never later see a smaller one (see
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

/// Entries per `change_log` row of a page's events: a page of 2,500 events is
/// ten rows rather than 2,500, which made the log cost the sync 30% of its
/// throughput (a heap tuple, three index entries and an identity value per
/// event; `docs/change-feed.md`), while a reader that wants one entry parses
/// at most this many. Readers look back this far for the row an entry is in,
/// so it may only grow with a migration (PostgreSQL checks the span:
/// `change_log_span`).
pub const EVENTS_PER_ROW: usize = 250;

/// `change_log.kind` of a row holding a page's events (`entries`).
const BATCH_KIND: &str = "event_batch";

/// The head: the last position of the newest row, else the last one retention
/// removed. Every position up to it is final, and the next entry goes after
/// it: writers read it under the position lock (PostgreSQL) or as SQLite's one
/// writer, so no two take the same position.
const HEAD_SQL: &str = "COALESCE((SELECT last_position FROM change_log ORDER BY position DESC LIMIT 1), \
     (SELECT pruned_through FROM change_feed_state WHERE id = 1), 0)";

/// One event a sync page wrote to the mirror, as its entry records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedEvent<'a> {
    pub event_id: &'a str,
    pub status: EventStatus,
    /// The event resource as stored in the mirror (valid JSON).
    pub raw_json: &'a str,
}

/// One entry of a batch row's `entries` (its JSON array).
#[derive(serde::Deserialize)]
struct BatchItem {
    kind: String,
    event_id: String,
    event: serde_json::Value,
}

/// The `entries` JSON of `events`, in their order; each event's JSON is copied
/// as it is, not parsed again.
fn batch_json(events: &[&LoggedEvent<'_>]) -> String {
    let size: usize = events.iter().map(|e| e.raw_json.len() + 64).sum();
    let mut json = String::with_capacity(size + 2);
    json.push('[');
    for (n, event) in events.iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        let kind = ChangeKind::for_event_status(event.status).as_str();
        let id = serde_json::Value::from(event.event_id).to_string();
        json.push_str(&format!(
            "{{\"kind\":\"{kind}\",\"event_id\":{id},\"event\":{}}}",
            event.raw_json
        ));
    }
    json.push(']');
    json
}

/// Appends to `change_log` on the connection of an open transaction.
pub(crate) trait ChangeLog {
    /// The page's events as written to the mirror, then, when the page ends a
    /// full resync (`sweep_below`), removals of the rows older than that
    /// generation (call before they are deleted), then, when the page
    /// completes the calendar's first full sync, that transition (call before
    /// `full_sync_complete` is set). Call after the page's own writes: the
    /// position lock is held from here to the commit.
    async fn log_page(
        &mut self,
        calendar: &str,
        events: &[LoggedEvent<'_>],
        sweep_below: Option<i64>,
        completing: bool,
        at: PrimitiveDateTime,
    ) -> QueryResult<()>;

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

/// Appends one entry per row of `select` (its columns named `calendar_id,
/// user_id, kind, event_id, event_json, at`, then `FROM … WHERE …`, no
/// `ORDER BY`), numbered in `order` from the head.
fn append_sql(select: &str, order: &str) -> String {
    format!(
        "INSERT INTO change_log (position, last_position, calendar_id, user_id, kind, event_id, event_json, at) \
         SELECT h.head + s.n, h.head + s.n, s.calendar_id, s.user_id, s.kind, s.event_id, s.event_json, s.at \
         FROM (SELECT row_number() OVER (ORDER BY {order}) AS n, {select}) s \
         CROSS JOIN (SELECT {HEAD_SQL} AS head) h ORDER BY s.n"
    )
}

/// One `BIGINT` a query selects `AS value`.
#[derive(QueryableByName)]
struct Scalar {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

macro_rules! impl_change_log {
    ($conn:ty, $dialect:expr) => {
        impl ChangeLog for $conn {
            async fn log_page(
                &mut self,
                calendar: &str,
                events: &[LoggedEvent<'_>],
                sweep_below: Option<i64>,
                completing: bool,
                at: PrimitiveDateTime,
            ) -> QueryResult<()> {
                if events.is_empty() && sweep_below.is_none() && !completing {
                    return Ok(());
                }
                take_position_lock!(self, $dialect);
                if !events.is_empty() {
                    let mut sorted: Vec<&LoggedEvent<'_>> = events.iter().collect();
                    sorted.sort_unstable_by(|a, b| a.event_id.cmp(b.event_id));
                    let head = diesel::sql_query(format!("SELECT {HEAD_SQL} AS value"))
                        .get_result::<Scalar>(self)
                        .await?
                        .value;
                    let rows: Vec<&[&LoggedEvent<'_>]> = sorted.chunks(EVENTS_PER_ROW).collect();
                    let values = (0..rows.len())
                        .map(|row| {
                            let n = 3 + row * 3;
                            format!("(${n}, ${}, ${})", n + 1, n + 2)
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = $dialect.placeholders(&format!(
                        "INSERT INTO change_log (position, last_position, calendar_id, user_id, kind, \
                         event_id, event_json, entries, at) \
                         SELECT v.column1, v.column2, cs.id, cs.user_id, '{BATCH_KIND}', NULL, NULL, \
                         v.column3, $2 FROM (VALUES {values}) v CROSS JOIN calendar_sync_state cs \
                         WHERE cs.id = $1 ORDER BY v.column1"
                    ));
                    let mut query = diesel::sql_query(sql)
                        .into_boxed()
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at);
                    let mut next = head;
                    for row in &rows {
                        let first = next + 1;
                        next += i64::try_from(row.len()).unwrap_or(i64::MAX);
                        query = query
                            .bind::<BigInt, _>(first)
                            .bind::<BigInt, _>(next)
                            .bind::<Text, _>(batch_json(row));
                    }
                    query.execute(self).await?;
                }
                if let Some(generation) = sweep_below {
                    let sql = $dialect.placeholders(&append_sql(
                        &format!(
                            "ce.calendar_id AS calendar_id, cs.user_id AS user_id, '{removed}' AS kind, \
                             ce.event_id AS event_id, NULL AS event_json, $2 AS at \
                             FROM calendar_events ce JOIN calendar_sync_state cs ON cs.id = ce.calendar_id \
                             WHERE ce.calendar_id = $1 AND ce.sync_generation < $3",
                            removed = ChangeKind::EventRemoved.as_str(),
                        ),
                        "ce.event_id",
                    ));
                    diesel::sql_query(sql)
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at)
                        .bind::<BigInt, _>(generation)
                        .execute(self)
                        .await?;
                }
                if completing {
                    let sql = $dialect.placeholders(&append_sql(
                        &format!(
                            "id AS calendar_id, user_id AS user_id, '{complete}' AS kind, \
                             NULL AS event_id, NULL AS event_json, $2 AS at \
                             FROM calendar_sync_state WHERE id = $1 AND NOT full_sync_complete",
                            complete = ChangeKind::CalendarFullSyncComplete.as_str(),
                        ),
                        "id",
                    ));
                    diesel::sql_query(sql)
                        .bind::<Text, _>(calendar)
                        .bind::<Timestamp, _>(at)
                        .execute(self)
                        .await?;
                }
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
                let sql = $dialect.placeholders(&append_sql(
                    &format!(
                        "id AS calendar_id, user_id AS user_id, $1 AS kind, NULL AS event_id, \
                         NULL AS event_json, $2 AS at \
                         FROM calendar_sync_state WHERE id IN ({})",
                        bind_list(3, calendars.len())
                    ),
                    "id",
                ));
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
    i64,
    Option<String>,
);

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Query(format!("change_log {what}: {error}").into())
}

/// The entries of one row after `after`, at most `limit` of them: a batch
/// row's events (one position each, from `position`) or the row's one entry.
fn entries(row: LogRow, after: i64, limit: usize) -> Result<Vec<ChangeEntry>, StoreError> {
    let (position, calendar_id, user_id, kind, event_id, event_json, at, _, batch) = row;
    let calendar_id = CalendarId::parse(&calendar_id).map_err(|e| corrupt("calendar_id", e))?;
    let at = from_db(at);
    if kind == BATCH_KIND {
        let items: Vec<BatchItem> = serde_json::from_str(batch.as_deref().unwrap_or("[]"))
            .map_err(|e| corrupt("entries", e))?;
        let mut out = Vec::new();
        for (offset, item) in (0_i64..).zip(items) {
            let cursor = position + offset;
            if cursor <= after {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            let kind = ChangeKind::parse(&item.kind)
                .filter(|k| k.is_event())
                .ok_or_else(|| corrupt("entries kind", &item.kind))?;
            out.push(ChangeEntry {
                cursor: ChangeCursor::at(cursor),
                calendar_id,
                user_id: user_id.clone(),
                kind,
                at,
                event: EventState::Present(Box::new(EventView::from_google_json(
                    &item.event_id,
                    &item.event,
                ))),
                event_id: Some(item.event_id),
            });
        }
        return Ok(out);
    }
    if position <= after || limit == 0 {
        return Ok(Vec::new());
    }
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
    Ok(vec![ChangeEntry {
        cursor: ChangeCursor::at(position),
        calendar_id,
        user_id,
        kind,
        at,
        event_id: event_id.filter(|_| kind.is_event()),
        event,
    }])
}

/// How far before an entry's position its row may start.
const ROW_SPAN: i64 = EVENTS_PER_ROW as i64;

/// Of matching rows' spans `(position, last_position)` in order, the position
/// of the last row needed for `limit` entries after `after` (`None`: no row).
fn rows_needed(spans: &[(i64, i64)], after: i64, limit: i64) -> Option<i64> {
    let mut entries = 0;
    for &(first, last) in spans {
        entries += (last - first.max(after + 1) + 1).max(0);
        if entries >= limit {
            return Some(first);
        }
    }
    spans.last().map(|&(first, _)| first)
}

/// The head ([`HEAD_SQL`]), on either backend's connection.
macro_rules! head {
    ($conn:expr) => {
        diesel::sql_query(format!("SELECT {HEAD_SQL} AS value"))
            .get_result::<Scalar>($conn)
            .await
            .map_err(query_error)?
            .value
    };
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
        let head = with_conn!(&self.readers, |conn| head!(conn));
        Ok(ChangeCursor::at(head))
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
        let (head, rows, pruned): (i64, Vec<LogRow>, i64) = with_conn!(&self.readers, |conn| {
            let head = head!(conn);
            // The matching rows up to `$upto`, in order. A row may start
            // up to `EVENTS_PER_ROW - 1` positions before an entry after
            // `after`: the first bound keeps the scan on the primary key,
            // the second drops the rows read already.
            macro_rules! matching {
                ($select:expr, $upto:expr) => {{
                    let mut rows = cl::table
                        .filter(cl::position.gt(after.position().saturating_sub(ROW_SPAN)))
                        .filter(cl::last_position.gt(after.position()))
                        .filter(cl::position.le($upto))
                        .select($select)
                        .order(cl::position.asc())
                        .limit(limit)
                        .into_boxed();
                    if let Some(calendar) = &calendar {
                        rows = rows.filter(cl::calendar_id.eq(calendar));
                    }
                    if let Some(user) = &user {
                        rows = rows.filter(cl::user_id.eq(user));
                    }
                    rows
                }};
            }
            // First the rows' spans only, then the rows that make up
            // `limit` entries, so a read of a few entries never loads
            // (and parses) rows of 250 events it does not need.
            let spans: Vec<(i64, i64)> = matching!((cl::position, cl::last_position), head)
                .load(conn)
                .await
                .map_err(query_error)?;
            let rows = match rows_needed(&spans, after.position(), limit) {
                None => Vec::new(),
                Some(upto) => matching!(
                    (
                        cl::position,
                        cl::calendar_id,
                        cl::user_id,
                        cl::kind,
                        cl::event_id,
                        cl::event_json,
                        cl::at,
                        cl::last_position,
                        cl::entries,
                    ),
                    upto
                )
                .load::<LogRow>(conn)
                .await
                .map_err(query_error)?,
            };
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
        // Every row holds at least one entry after `after`, so `limit` rows
        // make a full page; fewer rows mean everything up to the head was read.
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut changes = Vec::new();
        for row in rows {
            let room = wanted.saturating_sub(changes.len());
            if room == 0 {
                break;
            }
            changes.extend(entries(row, after.position(), room)?);
        }
        let full = changes.len() >= wanted;
        let head = ChangeCursor::at(head).max(oldest).max(after);
        let next_cursor = match changes.last() {
            Some(last) if full => last.cursor,
            _ => head,
        };
        Ok(ChangePage {
            changes,
            next_cursor,
        })
    }

    /// Removes, in one transaction, up to `batch` of the oldest rows (a page's
    /// events are up to [`EVENTS_PER_ROW`] entries to a row, removed whole)
    /// written before `cutoff`; returns how many entries went. Call repeatedly
    /// until it returns fewer than `batch`.
    pub async fn prune_changes(
        &self,
        cutoff: OffsetDateTime,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let removed = with_conn!(&self.pool, |conn| {
            conn.transaction::<i64, diesel::result::Error, _>(async |conn| {
                let oldest: Vec<(i64, i64, PrimitiveDateTime)> = cl::table
                    .select((cl::position, cl::last_position, cl::at))
                    .order(cl::position.asc())
                    .limit(batch.max(1))
                    .load(conn)
                    .await?;
                // A row is known by its last position: what is gone with it.
                let ends: Vec<(i64, OffsetDateTime)> = oldest
                    .iter()
                    .map(|&(_, last, at)| (last, from_db(at)))
                    .collect();
                let Some(through) = prunable_through(&ends, cutoff) else {
                    return Ok(0);
                };
                // First, so a reader that sees the rows gone also sees why.
                diesel::update(fs::table.filter(fs::pruned_through.lt(through)))
                    .set(fs::pruned_through.eq(through))
                    .execute(conn)
                    .await?;
                diesel::delete(cl::table.filter(cl::position.le(through)))
                    .execute(conn)
                    .await?;
                Ok(oldest
                    .iter()
                    .filter(|&&(_, last, _)| last <= through)
                    .map(|&(first, last, _)| last - first + 1)
                    .sum())
            })
            .await
            .map_err(query_error)?
        });
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// How many entries the feed keeps and the oldest position.
    pub async fn change_feed_stats(&self) -> Result<FeedStats, StoreError> {
        let (entries, oldest): (i64, Option<i64>) = with_conn!(&self.readers, |conn| {
            let entries = diesel::sql_query(
                "SELECT CAST(COALESCE(SUM(last_position - position + 1), 0) AS BIGINT) AS value \
                 FROM change_log",
            )
            .get_result::<Scalar>(conn)
            .await
            .map_err(query_error)?
            .value;
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
        let pruned = with_conn!(&self.readers, |conn| {
            fs::table
                .select(fs::pruned_through)
                .first::<i64>(conn)
                .await
                .map_err(query_error)?
        });
        Ok(ChangeCursor::at(pruned))
    }
}

#[cfg(test)]
mod tests {
    use super::rows_needed;

    #[test]
    fn rows_needed_stops_at_the_row_that_fills_the_limit() {
        let spans = [(1, 1), (2, 251), (252, 252), (253, 502)];
        assert_eq!(rows_needed(&[], 0, 10), None);
        assert_eq!(rows_needed(&spans, 0, 1), Some(1));
        assert_eq!(rows_needed(&spans, 0, 2), Some(2));
        assert_eq!(rows_needed(&spans, 0, 251), Some(2));
        assert_eq!(rows_needed(&spans, 0, 252), Some(252));
        // Resuming inside the second row (the query returns rows ending after
        // the cursor): only its rest counts.
        assert_eq!(rows_needed(&spans[1..], 200, 51), Some(2));
        assert_eq!(rows_needed(&spans[1..], 200, 52), Some(252));
        // Not enough entries: every row.
        assert_eq!(rows_needed(&spans, 0, 1000), Some(253));
    }
}
