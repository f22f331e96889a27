//! The webhook's two hot-path queries: one round trip each.

use crate::calendars::sync_state::GONE;
use crate::channels::state;
use crate::pool::{DbPool, checkout, query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, google_credentials as gc, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use sync_domain::{CalendarId, ChannelId, ChannelRecord, ChannelToken, MessageNumber};

type ChannelRow = (
    String,         // token
    Option<String>, // calendar id
    Option<String>, // calendar's sync state
    Option<String>, // calendar's current channel
    Option<i64>,    // last message number on the current channel
    Option<String>, // credentials' user id (present: the user has credentials)
);

impl Store {
    /// Looks a channel up with its calendar and its user's credentials in one query.
    pub(crate) async fn find_channel_record(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        if let Some(record) = self.channel_cache.get(channel_id) {
            return Ok(Some(record));
        }
        let row: Option<ChannelRow> = with_conn!(&self.pool, |conn| {
            wc::table
                .left_join(cs::table.on(cs::id.nullable().eq(wc::calendar_id)))
                .left_join(gc::table.on(gc::user_id.nullable().eq(cs::user_id.nullable())))
                .filter(wc::channel_id.eq(channel_id.as_str()))
                .filter(wc::state.ne(state::STOPPED))
                .select((
                    wc::token,
                    wc::calendar_id,
                    cs::sync_state.nullable(),
                    cs::webhook_channel_id.nullable(),
                    cs::webhook_last_message_number.nullable(),
                    gc::user_id.nullable(),
                ))
                .first::<ChannelRow>(conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        let record = row.map(|(token, calendar_id, state, current, last, credentials)| {
            let calendar_id = calendar_id.and_then(|id| CalendarId::parse(id.as_str()).ok());
            let is_current = current.as_deref() == Some(channel_id.as_str());
            ChannelRecord {
                token: ChannelToken::new(token),
                calendar_active: calendar_id.is_some()
                    && state.as_deref().is_some_and(|s| s != GONE)
                    && credentials.is_some(),
                calendar_id,
                last_message_number: last.filter(|_| is_current).map(MessageNumber::new),
            }
        });
        if let Some(record) = &record {
            self.channel_cache.put(channel_id, record);
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
            None => write_batch(&self.pool, std::slice::from_ref(request))
                .await
                .map(|mut outcomes| outcomes.pop().unwrap_or(RecordOutcome::CalendarGone)),
        }
    }
}

/// The one `UPDATE` that records `$request` on `$conn`, as a future of the
/// number of rows updated: marks the calendar pending (keeping the first
/// request's time for the coalescing bound) and, on the current channel,
/// advances the message number, refusing one not above the last.
macro_rules! record_statement {
    ($conn:expr, $request:expr) => {{
        let request: &SyncRequest = $request;
        let now = to_db(request.requested_at);
        let calendar_id = request.calendar_id.to_string();
        let channel = request.channel_id.as_str();
        // The channel must still be live and the user still have credentials:
        // checked here, in the write, so a cached lookup can never record a
        // request the SPEC says to drop.
        // Typed (not SQL text) so the statement stays in the prepared-statement cache.
        let channel_live = diesel::dsl::exists(
            wc::table
                .filter(wc::channel_id.eq(channel))
                .filter(wc::calendar_id.eq(cs::id.nullable()))
                .filter(wc::state.ne("stopped")),
        );
        let user_has_credentials =
            diesel::dsl::exists(gc::table.filter(gc::user_id.eq(cs::user_id)));
        let target = cs::table
            .filter(cs::id.eq(calendar_id))
            .filter(cs::sync_state.ne(GONE))
            .filter(channel_live)
            .filter(user_has_credentials);
        let changes = (
            cs::sync_requested_at.eq(case_when(cs::sync_requested_at.is_null(), Some(now))
                .otherwise(cs::sync_requested_at)),
            cs::sync_last_requested_at.eq(Some(now)),
            cs::sync_request_count.eq(cs::sync_request_count + 1),
            cs::updated_at.eq(now),
        );
        match request.message_number.map(MessageNumber::get) {
            None => diesel::update(target).set(changes).execute($conn),
            Some(n) => diesel::update(
                target.filter(
                    cs::webhook_channel_id
                        .is_null()
                        .or(cs::webhook_channel_id.ne(channel))
                        .or(cs::webhook_last_message_number.is_null())
                        .or(cs::webhook_last_message_number.lt(n)),
                ),
            )
            .set((
                changes,
                cs::webhook_last_message_number.eq(case_when(
                    cs::webhook_channel_id.eq(channel),
                    Some(n),
                )
                .otherwise(cs::webhook_last_message_number)),
            ))
            .execute($conn),
        }
    }};
}

fn outcome(request: &SyncRequest, updated: usize) -> RecordOutcome {
    match (updated, request.message_number) {
        (0, Some(_)) => RecordOutcome::Duplicate,
        (0, None) => RecordOutcome::CalendarGone,
        _ => RecordOutcome::Recorded,
    }
}

/// Records a batch of requests: a lone request in one autocommit statement,
/// several in one transaction. Rows are locked in calendar order (a stable
/// sort keeps each calendar's requests in arrival order, so a repeated message
/// number is still refused), so concurrent batches never deadlock. On
/// PostgreSQL the statements are pipelined: sent together, executed in order.
pub(crate) async fn write_batch(
    pool: &DbPool,
    batch: &[SyncRequest],
) -> Result<Vec<RecordOutcome>, StoreError> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| batch[i].calendar_id);
    let sorted: Vec<&SyncRequest> = order.iter().map(|&i| &batch[i]).collect();
    let updated: Vec<usize> = match pool {
        DbPool::Postgres(pool) => {
            let mut conn = checkout(pool).await?;
            if let [request] = sorted[..] {
                record_statement!(&mut *conn, request)
                    .await
                    .map(|n| vec![n])
            } else {
                conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                    let shared: &AsyncPgConnection = conn;
                    futures::future::try_join_all(sorted.iter().map(|request| {
                        let mut pipelined = shared;
                        record_statement!(&mut pipelined, request)
                    }))
                    .await
                })
                .await
            }
        }
        DbPool::Sqlite(pool) => {
            let mut conn = checkout(pool).await?;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let mut updated = Vec::with_capacity(sorted.len());
                for request in &sorted {
                    updated.push(record_statement!(&mut *conn, request).await?);
                }
                Ok(updated)
            })
            .await
        }
    }
    .map_err(query_error)?;
    let mut outcomes = vec![RecordOutcome::CalendarGone; batch.len()];
    for (&index, rows) in order.iter().zip(updated) {
        outcomes[index] = outcome(&batch[index], rows);
    }
    Ok(outcomes)
}
