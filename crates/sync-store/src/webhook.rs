//! The webhook's two hot-path queries, each asked for many notifications at once.

use crate::calendars::sync_state::GONE;
use crate::columns::Stored;
use crate::dialect::{BATCH_ARRAYS, Dialect};
use crate::pool::{DbPool, checkout, query_error};
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

/// One channel as the lookup reads it, with its calendar and its user's credentials.
#[derive(QueryableByName)]
struct ChannelRow {
    #[diesel(sql_type = Text)]
    channel_id: String,
    #[diesel(sql_type = Text)]
    token: String,
    #[diesel(sql_type = Nullable<Text>)]
    calendar_id: Option<String>,
    /// The calendar's sync state.
    #[diesel(sql_type = Nullable<Text>)]
    sync_state: Option<Stored<SyncState>>,
    /// The channel of the calendar's last recorded request.
    #[diesel(sql_type = Nullable<Text>)]
    current_channel: Option<String>,
    /// The last message number recorded on it.
    #[diesel(sql_type = Nullable<BigInt>)]
    last_message_number: Option<i64>,
    /// The user's id in `google_credentials` (present: the user has credentials).
    #[diesel(sql_type = Nullable<Text>)]
    credentials: Option<String>,
}

/// What the webhook needs of one channel (`row`, read for `channel_id`).
fn channel_record(row: ChannelRow) -> (String, ChannelRecord) {
    let calendar_id = row
        .calendar_id
        .and_then(|id| CalendarId::parse(id.as_str()).ok());
    let is_current = row.current_channel.as_deref() == Some(row.channel_id.as_str());
    let record = ChannelRecord {
        token: ChannelToken::new(row.token),
        calendar_active: calendar_id.is_some()
            && row.sync_state.is_some_and(|s| s != GONE)
            && row.credentials.is_some(),
        calendar_id,
        last_message_number: row
            .last_message_number
            .filter(|_| is_current)
            .map(MessageNumber::new),
    };
    (row.channel_id, record)
}

/// The lookup of `rows` channel ids: each live channel with its calendar, the
/// calendar's pending request and its user's credentials, each joined on a
/// key ([`Dialect::keyed_left_join`]: one index lookup per id, also on a
/// small deployment's tables).
fn lookup_sql(dialect: Dialect, rows: usize) -> String {
    format!(
        "WITH input (channel_id) AS ({input}) \
         SELECT wc.channel_id, wc.token, wc.calendar_id, cs.sync_state, \
         r.channel_id AS current_channel, r.last_message_number, gc.user_id AS credentials \
         FROM input i {channel} {state} {requests} {credentials} \
         WHERE wc.channel_id IS NOT NULL",
        input = dialect.batch_input(1, rows),
        channel = dialect.keyed_left_join(
            "watch_channels",
            "wc",
            &format!(
                "wc.channel_id = i.channel_id AND wc.state <> '{}'",
                sync_domain::channel::ChannelState::Stopped
            )
        ),
        state = dialect.keyed_left_join("calendar_sync_state", "cs", "cs.id = wc.calendar_id"),
        requests = dialect.keyed_left_join("sync_requests", "r", "r.calendar_id = wc.calendar_id"),
        credentials =
            dialect.keyed_left_join("google_credentials", "gc", "gc.user_id = cs.user_id"),
    )
}

/// Looks channels up, each with its calendar and its user's credentials, in
/// one query; one answer per id, in order (`None`: unknown or stopped).
pub(crate) async fn lookup_batch(
    pool: &DbPool,
    ids: &[ChannelId],
) -> Result<Vec<Option<ChannelRecord>>, StoreError> {
    let columns = [Column::Text(
        ids.iter().map(|id| id.as_str().to_owned()).collect(),
    )];
    let sql = lookup_sql(pool.dialect(), ids.len());
    let rows: Vec<ChannelRow> = match pool {
        DbPool::Postgres(pool) => {
            let mut conn = checkout(pool).await?;
            PostgresBatch::new(&sql, &columns)
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        }
        DbPool::Sqlite(pool) => {
            let mut conn = checkout(pool).await?;
            sqlite_batch(sql, &columns)
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        }
    };
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

/// One column of a batch statement's input: a value per row.
enum Column {
    Text(Vec<String>),
    BigInt(Vec<Option<i64>>),
    Time(Vec<PrimitiveDateTime>),
}

/// A PostgreSQL batch statement: its input columns bound as typed arrays
/// where [`BATCH_ARRAYS`] stands (`unnest` of them: one statement whatever the
/// batch's size). Unlike `sql_query`, which diesel never prepares, this one is
/// kept in the connection's statement cache (keyed by its text and bind
/// types, the same for every batch), so PostgreSQL parses and plans it once
/// per connection rather than once per batch.
struct PostgresBatch<'a> {
    sql: &'a str,
    columns: &'a [Column],
}

impl<'a> PostgresBatch<'a> {
    fn new(sql: &'a str, columns: &'a [Column]) -> Self {
        Self { sql, columns }
    }
}

impl QueryFragment<Pg> for PostgresBatch<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (before, after) = self
            .sql
            .split_once(BATCH_ARRAYS)
            .ok_or_else(|| diesel::result::Error::QueryBuilderError("no array binds".into()))?;
        out.push_sql(before);
        for (index, column) in self.columns.iter().enumerate() {
            if index > 0 {
                out.push_sql(", ");
            }
            match column {
                Column::Text(values) => {
                    out.push_bind_param::<Array<Text>, _>(values)?;
                    out.push_sql("::text[]");
                }
                Column::BigInt(values) => {
                    out.push_bind_param::<Array<Nullable<BigInt>>, _>(values)?;
                    out.push_sql("::int8[]");
                }
                Column::Time(values) => {
                    out.push_bind_param::<Array<Timestamp>, _>(values)?;
                    out.push_sql("::timestamp[]");
                }
            }
        }
        out.push_sql(after);
        Ok(())
    }
}

/// The SQLite form of a batch statement: `sql` (its input a multi-row
/// `VALUES`, see [`Dialect::batch_input`]) with `columns` bound row by row.
fn sqlite_batch(
    sql: String,
    columns: &[Column],
) -> diesel::query_builder::BoxedSqlQuery<
    'static,
    diesel::sqlite::Sqlite,
    diesel::query_builder::SqlQuery,
> {
    let rows = columns.first().map_or(0, |column| match column {
        Column::Text(values) => values.len(),
        Column::BigInt(values) => values.len(),
        Column::Time(values) => values.len(),
    });
    let mut query = diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
    for row in 0..rows {
        for column in columns {
            query = match column {
                Column::Text(values) => query.bind::<Text, _>(values[row].clone()),
                Column::BigInt(values) => query.bind::<Nullable<BigInt>, _>(values[row]),
                Column::Time(values) => query.bind::<Timestamp, _>(values[row]),
            };
        }
    }
    query
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
/// join on a key, one index lookup per request whatever the table's size
/// ([`Dialect::keyed_left_join`]: as plain joins, PostgreSQL's generic plan
/// hashed whole tables of a small deployment on every batch); as `EXISTS`
/// sub-queries PostgreSQL chose a hashed sub-plan that read all of
/// `google_credentials` once per batch (`docs/benchmarks.md`).
///
/// A pending request is read first, and a calendar that has one skips the
/// three other lookups: its key is `NULL` then, which an index answers
/// without a descent. Nothing is written for it either way, so whether it
/// could have been only changes its outcome's label (`coalesced`, not
/// `orphaned`; both are `200 {}`). The hot mix is mostly such calendars.
fn checked_sql(dialect: Dialect) -> String {
    format!(
        "checked AS (SELECT i.calendar_id, i.channel_id, i.msg, i.at, \
     COALESCE(r.first_requested_at IS NOT NULL OR (cs.sync_state <> '{gone}' \
       AND wc.state <> '{stopped}' AND gc.user_id IS NOT NULL), FALSE) AS valid, \
     COALESCE(r.first_requested_at IS NOT NULL, FALSE) AS pending, \
     COALESCE(i.msg IS NOT NULL AND r.channel_id = i.channel_id AND r.last_message_number >= i.msg, FALSE) \
       AS duplicate \
     FROM input i {requests} {state} {channel} {credentials})",
        gone = SyncState::Gone,
        stopped = sync_domain::channel::ChannelState::Stopped,
        requests = dialect.keyed_left_join("sync_requests", "r", "r.calendar_id = i.calendar_id"),
        state = dialect.keyed_left_join(
            "calendar_sync_state",
            "cs",
            "cs.id = (CASE WHEN r.first_requested_at IS NULL THEN i.calendar_id END)"
        ),
        channel = dialect.keyed_left_join(
            "watch_channels",
            "wc",
            "wc.channel_id = i.channel_id AND wc.calendar_id = cs.id"
        ),
        credentials =
            dialect.keyed_left_join("google_credentials", "gc", "gc.user_id = cs.user_id"),
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
    let prefix = batch_prefix(pool.dialect(), sent.len());
    let columns = [
        Column::Text(sent.iter().map(|r| r.calendar_id.to_string()).collect()),
        Column::Text(
            sent.iter()
                .map(|r| r.channel_id.as_str().to_owned())
                .collect(),
        ),
        Column::BigInt(
            sent.iter()
                .map(|r| r.message_number.map(MessageNumber::get))
                .collect(),
        ),
        Column::Time(sent.iter().map(|r| to_db(r.requested_at)).collect()),
    ];
    // Dispatch on the connection type (one of the places listed in `dialect.rs`):
    // typed array binds on PostgreSQL, per-row binds in a transaction on SQLite.
    let checked = match pool {
        DbPool::Postgres(pool) => write_postgres(pool, &prefix, &columns).await?,
        DbPool::Sqlite(pool) => write_sqlite(pool, &prefix, &columns).await?,
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

/// A batch statement's `input` and `checked` CTEs for `rows` requests.
fn batch_prefix(dialect: Dialect, rows: usize) -> String {
    format!(
        "WITH input (calendar_id, channel_id, msg, at) AS ({}), {}",
        dialect.batch_input(4, rows),
        checked_sql(dialect)
    )
}

/// PostgreSQL's one batch statement: checks, write, and each request's outcome.
fn postgres_write_sql(prefix: &str) -> String {
    format!(
        "{prefix}, written AS ({WRITE_SQL}) SELECT c.calendar_id, c.valid, \
         c.duplicate, (w.calendar_id IS NOT NULL) AS written \
         FROM checked c LEFT JOIN written w ON w.calendar_id = c.calendar_id"
    )
}

/// PostgreSQL: checks and writes the requests in `columns` in one
/// data-modifying statement (`prefix` is its input and `checked` CTEs),
/// autocommit.
async fn write_postgres(
    pool: &DeadPool<AsyncPgConnection>,
    prefix: &str,
    columns: &[Column],
) -> Result<HashMap<String, Checked>, StoreError> {
    let sql = postgres_write_sql(prefix);
    let mut conn = checkout(pool).await?;
    let rows: Vec<CheckedRow> = PostgresBatch::new(&sql, columns)
        .load(&mut *conn)
        .await
        .map_err(query_error)?;
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

/// SQLite: checks the requests in `columns`, then writes those that need it,
/// in one transaction on the writer connection (`prefix` is the statements'
/// input and `checked` CTEs).
async fn write_sqlite(
    pool: &DeadPool<crate::pool::AsyncSqliteConnection>,
    prefix: &str,
    columns: &[Column],
) -> Result<HashMap<String, Checked>, StoreError> {
    let check = format!("{prefix} SELECT calendar_id, valid, pending, duplicate FROM checked");
    let write = format!("{prefix} {WRITE_SQL}");
    let (check, write) = (sqlite_batch(check, columns), sqlite_batch(write, columns));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TestDb, execute_sql};

    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }

    /// PostgreSQL's generic plan (the one a prepared batch runs after its
    /// fifth call) of `sql` with its input arrays typed `types`, for `args`.
    async fn generic_plan(store: &Store, sql: &str, types: &[&str], args: &str) -> String {
        let DbPool::Postgres(pool) = &store.writers else {
            panic!("a PostgreSQL store");
        };
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(index, ty)| format!("${}::{ty}", index + 1))
            .collect();
        let sql = sql.replace(BATCH_ARRAYS, &arrays.join(", "));
        let mut conn = checkout(pool).await.expect("a connection");
        for statement in [
            "SET plan_cache_mode = force_generic_plan".to_owned(),
            format!("PREPARE plan_check ({}) AS {sql}", types.join(", ")),
        ] {
            diesel::sql_query(statement)
                .execute(&mut *conn)
                .await
                .expect("preparing the statement");
        }
        let lines: Vec<PlanLine> =
            diesel::sql_query(format!("EXPLAIN EXECUTE plan_check ({args})"))
                .load(&mut *conn)
                .await
                .expect("explaining the statement");
        for statement in ["DEALLOCATE plan_check", "RESET plan_cache_mode"] {
            diesel::sql_query(statement)
                .execute(&mut *conn)
                .await
                .expect("resetting the connection");
        }
        lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// On a small deployment's tables (2,000 calendars, analyzed) a plain
    /// join let the generic plan read every row of `sync_requests` and
    /// `calendar_sync_state` into a hash on each batch; keyed joins look
    /// each request up by its key whatever the tables' size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_deployments_batches_look_each_request_up_by_its_key() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let store = db.store().await;
        execute_sql(
            &store,
            &[],
            &[
                "INSERT INTO calendar_sync_state (id, user_id, google_calendar_id, sync_state, created_at, updated_at) \
                 SELECT 'cal' || g, 'u' || g, 'primary', 'idle', now(), now() FROM generate_series(1, 2000) g",
                "INSERT INTO google_credentials (user_id, refresh_token_ciphertext, created_at, updated_at) \
                 SELECT 'u' || g, '\\x00', now(), now() FROM generate_series(1, 2000) g",
                "INSERT INTO watch_channels (channel_id, calendar_id, user_id, google_calendar_id, token, state, created_at, updated_at) \
                 SELECT 'ch' || g, 'cal' || g, 'u' || g, 'primary', 'tok', 'active', now(), now() FROM generate_series(1, 2000) g",
                "INSERT INTO sync_requests (calendar_id, first_requested_at, last_requested_at, request_count, channel_id, last_message_number) \
                 SELECT 'cal' || g, now(), now(), 1, 'ch' || g, 1 FROM generate_series(1, 2000) g",
                "ANALYZE",
            ],
        )
        .await;
        let write = generic_plan(
            &store,
            &postgres_write_sql(&batch_prefix(Dialect::Postgres, 2)),
            &["text[]", "text[]", "int8[]", "timestamp[]"],
            "ARRAY['cal1', 'cal2'], ARRAY['ch1', 'ch2'], ARRAY[5, 6], ARRAY[now()::timestamp, now()::timestamp]",
        )
        .await;
        let lookup = generic_plan(
            &store,
            &lookup_sql(Dialect::Postgres, 2),
            &["text[]"],
            "ARRAY['ch1', 'ch2']",
        )
        .await;
        for (what, plan) in [("batch", write), ("lookup", lookup)] {
            assert!(
                !plan.contains("Seq Scan"),
                "the {what} reads a whole table:\n{plan}"
            );
        }
    }
}
