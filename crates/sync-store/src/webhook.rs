//! The webhook's two hot-path queries, each asked for many notifications at once.

use crate::calendars::sync_state::GONE;
use crate::channels::state;
use crate::columns::Stored;
use crate::dialect::BATCH_ARRAYS;
use crate::pool::{DbPool, checkout, query_error, with_conn};
use crate::schema::{
    calendar_sync_state as cs, google_credentials as gc, sync_requests as sr, watch_channels as wc,
};
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use std::collections::HashMap;
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use sync_domain::{CalendarId, ChannelId, ChannelRecord, ChannelToken, MessageNumber, SyncState};
use time::PrimitiveDateTime;

type ChannelRow = (
    String,                    // channel id
    String,                    // token
    Option<String>,            // calendar id
    Option<Stored<SyncState>>, // calendar's sync state
    Option<String>,            // the channel of the last recorded request
    Option<i64>,               // the last message number recorded on it
    Option<String>,            // credentials' user id (present: the user has credentials)
);

/// What the webhook needs of one channel (`row`, read for `channel_id`).
fn channel_record(row: ChannelRow) -> (String, ChannelRecord) {
    let (channel_id, token, calendar_id, state, current, last, credentials) = row;
    let calendar_id = calendar_id.and_then(|id| CalendarId::parse(id.as_str()).ok());
    let is_current = current.as_deref() == Some(channel_id.as_str());
    let record = ChannelRecord {
        token: ChannelToken::new(token),
        calendar_active: calendar_id.is_some()
            && state.is_some_and(|s| s != GONE)
            && credentials.is_some(),
        calendar_id,
        last_message_number: last.filter(|_| is_current).map(MessageNumber::new),
    };
    (channel_id, record)
}

/// Looks channels up, each with its calendar and its user's credentials, in
/// one query; one answer per id, in order (`None`: unknown or stopped).
pub(crate) async fn lookup_batch(
    pool: &DbPool,
    ids: &[ChannelId],
) -> Result<Vec<Option<ChannelRecord>>, StoreError> {
    let wanted: Vec<&str> = ids.iter().map(ChannelId::as_str).collect();
    let rows: Vec<ChannelRow> = with_conn!(pool, |conn| {
        wc::table
            .left_join(cs::table.on(cs::id.nullable().eq(wc::calendar_id)))
            .left_join(sr::table.on(sr::calendar_id.nullable().eq(wc::calendar_id)))
            .left_join(gc::table.on(gc::user_id.nullable().eq(cs::user_id.nullable())))
            .filter(wc::channel_id.eq_any(&wanted))
            .filter(wc::state.ne(state::STOPPED))
            .select((
                wc::channel_id,
                wc::token,
                wc::calendar_id,
                cs::sync_state.nullable(),
                sr::channel_id.nullable(),
                sr::last_message_number.nullable(),
                gc::user_id.nullable(),
            ))
            .load::<ChannelRow>(conn)
            .await
            .map_err(query_error)?
    });
    let found: HashMap<String, ChannelRecord> = rows.into_iter().map(channel_record).collect();
    Ok(ids
        .iter()
        .map(|id| found.get(id.as_str()).cloned())
        .collect())
}

impl Store {
    /// Looks a channel up with its calendar and its user's credentials: from
    /// the cache, else through the group lookup, which reads the channels of
    /// concurrent notifications with one query (the cold mix misses the cache
    /// on every request).
    pub(crate) async fn find_channel_record(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        if let Some(record) = self.channel_cache.get(channel_id) {
            return Ok(Some(record));
        }
        if self.channel_cache.is_unknown(channel_id) {
            return Ok(None);
        }
        let record = match self.group_lookup().submit(channel_id.clone()).await {
            Some(record) => record?,
            None => lookup_batch(&self.readers, std::slice::from_ref(channel_id))
                .await?
                .pop()
                .flatten(),
        };
        match &record {
            Some(record) => self.channel_cache.put(channel_id, record),
            None => self.channel_cache.put_unknown(channel_id),
        }
        Ok(record)
    }

    /// Records a sync request durably: through the group-commit writer, which
    /// commits many concurrent requests in one transaction (one fsync) and
    /// answers each only after that commit. Falls back to a direct write when
    /// no writer runs (e.g. the runtime that spawned it has ended).
    pub(crate) async fn record_request(
        &self,
        request: &SyncRequest,
    ) -> Result<RecordOutcome, StoreError> {
        match self.group_commit().submit(request.clone()).await {
            Some(outcome) => outcome,
            None => write_batch(&self.writers, std::slice::from_ref(request))
                .await
                .map(|mut outcomes| outcomes.pop().unwrap_or(RecordOutcome::CalendarGone)),
        }
    }
}

/// The PostgreSQL batch statement. Unlike `sql_query`, which diesel never
/// prepares, this one is kept in the connection's statement cache (keyed by
/// its text and bind types, the same for every batch), so PostgreSQL parses
/// and plans it once per connection rather than once per batch.
struct PostgresBatch<'a> {
    /// The statement, with [`BATCH_ARRAYS`] where the arrays go.
    sql: &'a str,
    calendars: Vec<String>,
    channels: Vec<&'a str>,
    numbers: Vec<Option<i64>>,
    times: Vec<PrimitiveDateTime>,
}

impl QueryFragment<Pg> for PostgresBatch<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (before, after) = self
            .sql
            .split_once(BATCH_ARRAYS)
            .ok_or_else(|| diesel::result::Error::QueryBuilderError("no array binds".into()))?;
        out.push_sql(before);
        out.push_bind_param::<Array<Text>, _>(&self.calendars)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.channels)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.numbers)?;
        out.push_sql("::int8[], ");
        out.push_bind_param::<Array<Timestamp>, _>(&self.times)?;
        out.push_sql("::timestamp[]");
        out.push_sql(after);
        Ok(())
    }
}

impl QueryId for PostgresBatch<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for PostgresBatch<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

/// The batch, checked: whether its calendar already has an unclaimed
/// request, whether its message number is not above the last recorded on
/// that channel, and, for a request that would be written, whether it may be
/// (calendar not gone, channel still live and its own, user with credentials,
/// re-checked here so a stale cached lookup never records a request). Plain
/// reads: nothing here waits for a sync's page transaction. Each check is a
/// join on a key (the planner turns every one into an index lookup per
/// request); as `EXISTS` sub-queries PostgreSQL chose a hashed sub-plan that
/// read all of `google_credentials` once per batch, measured at twice the
/// cost of the joins (`docs/benchmarks.md`).
///
/// A pending request is read first, and a calendar that has one skips the
/// three other lookups: its key is `NULL` then, which an index answers
/// without a descent. Nothing is written for it either way, so whether it
/// could have been only changes its outcome's label (`coalesced`, not
/// `orphaned`; both are `200 {}`). The hot mix is mostly such calendars.
fn checked_sql() -> String {
    format!(
        "checked AS (SELECT i.calendar_id, i.channel_id, i.msg, i.at, \
     COALESCE(r.first_requested_at IS NOT NULL OR (cs.sync_state <> '{gone}' \
       AND wc.state <> '{stopped}' AND gc.user_id IS NOT NULL), FALSE) AS valid, \
     COALESCE(r.first_requested_at IS NOT NULL, FALSE) AS pending, \
     COALESCE(i.msg IS NOT NULL AND r.channel_id = i.channel_id AND r.last_message_number >= i.msg, FALSE) \
       AS duplicate \
     FROM input i \
     LEFT JOIN sync_requests r ON r.calendar_id = i.calendar_id \
     LEFT JOIN calendar_sync_state cs \
       ON cs.id = (CASE WHEN r.first_requested_at IS NULL THEN i.calendar_id END) \
     LEFT JOIN watch_channels wc ON wc.channel_id = i.channel_id AND wc.calendar_id = cs.id \
     LEFT JOIN google_credentials gc ON gc.user_id = cs.user_id)",
        gone = SyncState::Gone,
        stopped = sync_domain::channel::ChannelState::Stopped,
    )
}

/// Writes the checked requests that need a row version: neither pending nor
/// duplicate. A calendar with an unclaimed request gets nothing (no tuple, no
/// WAL): that request already guarantees a sync that starts after this
/// notification. The conflict clause re-checks pending and the message number
/// on the current row version, so concurrent batches (other instances) never
/// record one message twice.
const WRITE_SQL: &str = "INSERT INTO sync_requests (calendar_id, first_requested_at, last_requested_at, \
     request_count, channel_id, last_message_number) \
     SELECT calendar_id, at, at, 1, channel_id, msg FROM checked \
     WHERE valid AND NOT pending AND NOT duplicate \
     ON CONFLICT (calendar_id) DO UPDATE SET first_requested_at = excluded.first_requested_at, \
     last_requested_at = excluded.last_requested_at, \
     request_count = sync_requests.request_count + 1, \
     channel_id = excluded.channel_id, \
     last_message_number = CASE WHEN excluded.last_message_number IS NULL \
       AND sync_requests.channel_id = excluded.channel_id \
       THEN sync_requests.last_message_number ELSE excluded.last_message_number END \
     WHERE sync_requests.first_requested_at IS NULL \
       AND (excluded.last_message_number IS NULL OR sync_requests.channel_id IS NULL \
         OR sync_requests.channel_id <> excluded.channel_id \
         OR sync_requests.last_message_number IS NULL \
         OR sync_requests.last_message_number < excluded.last_message_number) \
     RETURNING calendar_id";

/// One checked request and whether it was written.
#[derive(QueryableByName)]
struct CheckedRow {
    #[diesel(sql_type = Text)]
    calendar_id: String,
    #[diesel(sql_type = Bool)]
    valid: bool,
    #[diesel(sql_type = Bool)]
    duplicate: bool,
    #[diesel(sql_type = Bool)]
    written: bool,
}

#[derive(QueryableByName)]
struct CheckRow {
    #[diesel(sql_type = Text)]
    calendar_id: String,
    #[diesel(sql_type = Bool)]
    valid: bool,
    #[diesel(sql_type = Bool)]
    pending: bool,
    #[diesel(sql_type = Bool)]
    duplicate: bool,
}

#[derive(QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = Text)]
    calendar_id: String,
}

/// What the database said of one calendar's request.
#[derive(Debug, Clone, Copy)]
struct Checked {
    valid: bool,
    duplicate: bool,
    written: bool,
}

impl Checked {
    fn outcome(self) -> RecordOutcome {
        if !self.valid {
            RecordOutcome::CalendarGone
        } else if self.written {
            RecordOutcome::Recorded
        } else if self.duplicate {
            RecordOutcome::Duplicate
        } else {
            // Pending already (or made pending by another instance meanwhile).
            RecordOutcome::AlreadyPending
        }
    }
}

/// The one request per calendar sent to the database (a batch statement may
/// touch each row once): the one without a message number if any (never a
/// duplicate), else the highest number, latest first on ties.
fn representatives(batch: &[SyncRequest]) -> Vec<usize> {
    let mut best: HashMap<CalendarId, usize> = HashMap::new();
    for (index, request) in batch.iter().enumerate() {
        let rank = |r: &SyncRequest| r.message_number.map_or(i64::MAX, MessageNumber::get);
        best.entry(request.calendar_id)
            .and_modify(|current| {
                if rank(request) >= rank(&batch[*current]) {
                    *current = index;
                }
            })
            .or_insert(index);
    }
    let mut chosen: Vec<usize> = best.into_values().collect();
    chosen.sort_unstable();
    chosen
}

/// Records a batch of requests with one statement on PostgreSQL (checks and
/// write in one data-modifying query, autocommit: one commit, and none that
/// flushes WAL when every calendar was pending already) and one transaction of
/// two statements on SQLite (its one writer connection). Requests for a
/// calendar already represented in the batch share its outcome: a duplicate
/// when their message number on the same channel is not above the one sent,
/// else covered by the same pending request.
pub(crate) async fn write_batch(
    pool: &DbPool,
    batch: &[SyncRequest],
) -> Result<Vec<RecordOutcome>, StoreError> {
    let chosen = representatives(batch);
    let sent: Vec<&SyncRequest> = chosen.iter().map(|&i| &batch[i]).collect();
    let prefix = format!(
        "WITH input (calendar_id, channel_id, msg, at) AS ({}), {}",
        pool.dialect().batch_input(4, sent.len()),
        checked_sql()
    );
    // Dispatch on the connection type (one of the places listed in `dialect.rs`):
    // typed array binds on PostgreSQL, per-row binds in a transaction on SQLite.
    let checked = match pool {
        DbPool::Postgres(pool) => write_postgres(pool, &prefix, &sent).await?,
        DbPool::Sqlite(pool) => write_sqlite(pool, &prefix, &sent).await?,
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, request) in batch.iter().enumerate() {
        let representative = chosen
            .iter()
            .copied()
            .find(|&i| batch[i].calendar_id == request.calendar_id);
        let Some(rep) = representative else {
            outcomes.push(RecordOutcome::CalendarGone);
            continue;
        };
        let Some(result) = checked.get(&request.calendar_id.to_string()).copied() else {
            outcomes.push(RecordOutcome::CalendarGone);
            continue;
        };
        let outcome = if rep == index || !result.valid {
            result.outcome()
        } else if result.duplicate
            || (request.message_number.is_some() && batch[rep].channel_id == request.channel_id)
        {
            RecordOutcome::Duplicate
        } else {
            RecordOutcome::AlreadyPending
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// PostgreSQL: checks and writes `sent` in one data-modifying statement
/// (`prefix` is its input and `checked` CTEs), autocommit.
async fn write_postgres(
    pool: &DeadPool<AsyncPgConnection>,
    prefix: &str,
    sent: &[&SyncRequest],
) -> Result<HashMap<String, Checked>, StoreError> {
    let sql = format!(
        "{prefix}, written AS ({WRITE_SQL}) SELECT c.calendar_id, c.valid, \
         c.duplicate, (w.calendar_id IS NOT NULL) AS written \
         FROM checked c LEFT JOIN written w ON w.calendar_id = c.calendar_id"
    );
    let query = PostgresBatch {
        sql: &sql,
        calendars: sent.iter().map(|r| r.calendar_id.to_string()).collect(),
        channels: sent.iter().map(|r| r.channel_id.as_str()).collect(),
        numbers: sent
            .iter()
            .map(|r| r.message_number.map(MessageNumber::get))
            .collect(),
        times: sent.iter().map(|r| to_db(r.requested_at)).collect(),
    };
    let mut conn = checkout(pool).await?;
    let rows: Vec<CheckedRow> = query.load(&mut *conn).await.map_err(query_error)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let checked = Checked {
                valid: row.valid,
                duplicate: row.duplicate,
                written: row.written,
            };
            (row.calendar_id, checked)
        })
        .collect())
}

/// SQLite: checks `sent`, then writes those that need it, in one transaction
/// on the writer connection (`prefix` is the statements' input and `checked`
/// CTEs).
async fn write_sqlite(
    pool: &DeadPool<crate::pool::AsyncSqliteConnection>,
    prefix: &str,
    sent: &[&SyncRequest],
) -> Result<HashMap<String, Checked>, StoreError> {
    let check = format!("{prefix} SELECT calendar_id, valid, pending, duplicate FROM checked");
    let write = format!("{prefix} {WRITE_SQL}");
    let bind = |sql: String| {
        let mut query = diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
        for request in sent {
            query = query
                .bind::<Text, _>(request.calendar_id.to_string())
                .bind::<Text, _>(request.channel_id.as_str().to_owned())
                .bind::<Nullable<BigInt>, _>(request.message_number.map(MessageNumber::get))
                .bind::<Timestamp, _>(to_db(request.requested_at));
        }
        query
    };
    let (check, write) = (bind(check), bind(write));
    let mut conn = checkout(pool).await?;
    let (checks, written) = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let checks: Vec<CheckRow> = check.load(conn).await?;
            let written: Vec<WrittenRow> =
                if checks.iter().any(|c| c.valid && !c.pending && !c.duplicate) {
                    write.load(conn).await?
                } else {
                    Vec::new()
                };
            Ok((checks, written))
        })
        .await
        .map_err(query_error)?;
    let written: std::collections::HashSet<String> =
        written.into_iter().map(|w| w.calendar_id).collect();
    Ok(checks
        .into_iter()
        .map(|row| {
            let checked = Checked {
                valid: row.valid,
                duplicate: row.duplicate,
                written: written.contains(&row.calendar_id),
            };
            (row.calendar_id, checked)
        })
        .collect())
}
