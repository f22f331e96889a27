//! The sync queue: durable, coalesced sync requests in `calendar_sync_state`,
//! claimed by workers under a lease (SPEC section 6).
//!
//! Every query is written once for both backends; the only difference is the
//! claim's candidate subquery, which takes row locks with `FOR UPDATE SKIP
//! LOCKED` on PostgreSQL (several instances) while SQLite serialises writers
//! (one process). Every write made for a claim is filtered on `lease_owner`,
//! so a worker whose lease expired and was taken over changes nothing.

use crate::calendars::sync_state::{FAILING, GONE, IDLE, NEEDS_REAUTH, PENDING};
use crate::channels::{push_mode, retire_active_channels};
use crate::events::page_rows;
use crate::pool::{DbPool, query_error, with_conn};
use crate::schema::{calendar_events as ce, calendar_sync_state as cs, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::to_db;
use async_trait::async_trait;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use sync_domain::ports::StoreError;
use sync_domain::sync::{
    Claim, ClaimRef, ClaimRequest, FailureAction, PageWrite, PollCutoffs, SyncQueue,
};
use sync_domain::{CalendarId, GoogleCalendarId, UserId};
use time::{OffsetDateTime, PrimitiveDateTime};

/// Claims due calendars and those whose lease expired, in one statement; the
/// candidate subquery is closed by the caller after an optional lock clause.
/// Due: a pending request, quiet for the debounce or older than the bound, not
/// backing off, not claimed. A claim consumes the request, so one arriving
/// during the sync makes exactly one follow-up; the consumed request's time
/// moves to `sync_claimed_request_at` (kept over failed attempts, cleared by a
/// successful sync) so the worker can measure notification-to-synced latency.
const CLAIM_SQL: &str = "UPDATE calendar_sync_state SET lease_owner = $1, lease_expires_at = $2, \
     sync_state = 'syncing', \
     sync_claimed_request_at = COALESCE(sync_claimed_request_at, sync_requested_at), \
     sync_requested_at = NULL, sync_last_requested_at = NULL, updated_at = $3 \
     WHERE id IN (SELECT id FROM calendar_sync_state \
     WHERE sync_state NOT IN ('gone', 'needs_reauth') AND ( \
       (sync_requested_at IS NOT NULL \
        AND (sync_last_requested_at <= $4 OR sync_requested_at <= $5) \
        AND (next_attempt_at IS NULL OR next_attempt_at <= $6) \
        AND lease_owner IS NULL) \
       OR (lease_owner IS NOT NULL AND lease_expires_at < $7)) \
     ORDER BY sync_requested_at LIMIT $8";

/// Closes [`CLAIM_SQL`]'s subquery (after the lock clause) and returns the claims.
const CLAIM_RETURNING: &str = ") RETURNING id, user_id, google_calendar_id, sync_token, sync_generation, failure_count, \
     sync_claimed_request_at";

/// What a claim returns.
#[derive(QueryableByName)]
#[diesel(table_name = cs)]
struct ClaimedRow {
    id: String,
    user_id: String,
    google_calendar_id: String,
    sync_token: Option<String>,
    sync_generation: i64,
    failure_count: i32,
    sync_claimed_request_at: Option<PrimitiveDateTime>,
}

/// Raw SQL in this module is written with PostgreSQL's `$n` placeholders. SQLite
/// would read `$n` as a *named* parameter, whose lookup slows statement
/// preparation down badly for a page's 22,500 binds; `?n` is its numbered form.
fn for_backend(pool: &DbPool, sql: &str) -> String {
    match pool {
        DbPool::Postgres(_) => sql.to_owned(),
        DbPool::Sqlite(_) => sql.replace('$', "?"),
    }
}

/// The upsert of one page (PostgreSQL placeholders, see [`for_backend`]); one
/// statement per page.
fn upsert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO calendar_events (calendar_id, event_id, status, summary, updated, etag, \
         raw_json, sync_generation, mirrored_at) VALUES ",
    );
    for row in 0..rows {
        let n = row * 9;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8,
            n + 9
        ));
    }
    sql.push_str(
        " ON CONFLICT (calendar_id, event_id) DO UPDATE SET status = excluded.status, \
         summary = excluded.summary, updated = excluded.updated, etag = excluded.etag, \
         raw_json = excluded.raw_json, sync_generation = excluded.sync_generation, \
         mirrored_at = excluded.mirrored_at",
    );
    sql
}

fn parse_claim(row: ClaimedRow) -> Result<Claim, StoreError> {
    let ClaimedRow {
        id,
        user_id: user,
        google_calendar_id: google,
        sync_token,
        sync_generation: generation,
        failure_count,
        sync_claimed_request_at,
    } = row;
    let invalid = |e: String| StoreError::Query(e.into());
    Ok(Claim {
        calendar_id: CalendarId::parse(&id).map_err(|e| invalid(e.to_string()))?,
        user_id: UserId::parse(user).map_err(|e| invalid(e.to_string()))?,
        google_calendar_id: GoogleCalendarId::parse(google).map_err(|e| invalid(e.to_string()))?,
        sync_token,
        generation,
        failure_count,
        requested_at: sync_claimed_request_at.map(crate::timestamps::from_db),
    })
}

impl Store {
    /// Records a sync request as the webhook does (`POST /internal/calendars/{id}/sync`);
    /// `false` if the calendar does not exist. A request for a `gone` or
    /// `needs_reauth` calendar is recorded but only served once it recovers.
    pub async fn request_sync(&self, calendar_id: CalendarId) -> Result<bool, StoreError> {
        let now = to_db(self.clock.now());
        let calendar = calendar_id.to_string();
        let updated = with_conn!(&self.pool, |conn| {
            diesel::update(cs::table.find(&calendar))
                .set((
                    cs::sync_requested_at.eq(case_when(cs::sync_requested_at.is_null(), Some(now))
                        .otherwise(cs::sync_requested_at)),
                    cs::sync_last_requested_at.eq(Some(now)),
                    cs::sync_request_count.eq(cs::sync_request_count + 1),
                    cs::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(query_error)?
        });
        Ok(updated == 1)
    }
}

/// Keeps `gone` and `needs_reauth` (set by others meanwhile), else `state`.
macro_rules! unless_parked {
    ($state:expr) => {
        case_when(cs::sync_state.eq_any([GONE, NEEDS_REAUTH]), cs::sync_state).otherwise($state)
    };
}

/// A pending request kept (or restored) at `now`.
macro_rules! keep_pending {
    ($now:expr) => {
        (
            cs::sync_requested_at.eq(case_when(cs::sync_requested_at.is_null(), Some($now))
                .otherwise(cs::sync_requested_at)),
            cs::sync_last_requested_at.eq(case_when(
                cs::sync_last_requested_at.is_null(),
                Some($now),
            )
            .otherwise(cs::sync_last_requested_at)),
        )
    };
}

#[async_trait]
impl SyncQueue for Store {
    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<Claim>, StoreError> {
        // Row locks are PostgreSQL's (several instances); SQLite serialises writers.
        let lock = match &self.pool {
            DbPool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            DbPool::Sqlite(_) => "",
        };
        let sql = for_backend(&self.pool, &format!("{CLAIM_SQL}{lock}{CLAIM_RETURNING}"));
        let now = to_db(request.now);
        let rows: Vec<ClaimedRow> = with_conn!(&self.pool, |conn| {
            diesel::sql_query(&sql)
                .bind::<Text, _>(request.owner)
                .bind::<Timestamp, _>(to_db(request.lease_until))
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(to_db(request.cutoffs.quiet_since))
                .bind::<Timestamp, _>(to_db(request.cutoffs.overdue_since))
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(request.limit.max(0))
                .load(conn)
                .await
                .map_err(query_error)?
        });
        rows.into_iter().map(parse_claim).collect()
    }

    async fn renew_lease(
        &self,
        claim: ClaimRef<'_>,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let updated = with_conn!(&self.pool, |conn| {
            diesel::update(
                cs::table
                    .find(&calendar)
                    .filter(cs::lease_owner.eq(claim.owner)),
            )
            .set((
                cs::lease_expires_at.eq(Some(to_db(lease_until))),
                cs::updated_at.eq(to_db(now)),
            ))
            .execute(conn)
            .await
            .map_err(query_error)?
        });
        Ok(updated == 1)
    }

    async fn begin_full_sync(
        &self,
        claim: ClaimRef<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let generation = with_conn!(&self.pool, |conn| {
            diesel::update(
                cs::table
                    .find(&calendar)
                    .filter(cs::lease_owner.eq(claim.owner)),
            )
            .set((
                cs::sync_generation.eq(cs::sync_generation + 1),
                cs::sync_token.eq(None::<String>),
                cs::updated_at.eq(to_db(now)),
            ))
            .returning(cs::sync_generation)
            .get_result::<i64>(conn)
            .await
            .optional()
            .map_err(query_error)?
        });
        Ok(generation)
    }

    async fn apply_page(
        &self,
        claim: ClaimRef<'_>,
        page: PageWrite<'_>,
    ) -> Result<bool, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let now = to_db(page.now);
        let rows = page_rows(&calendar, page.events, page.generation, now);
        let until = to_db(page.lease_until);
        let completion = page.completion.as_ref();
        let upsert_sql = for_backend(&self.pool, &upsert_sql(rows.len()));
        let event_ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
        let held = with_conn!(&self.pool, |conn| {
            conn.transaction::<bool, diesel::result::Error, _>(async |conn| {
                // Checks the claim and takes the row lock first, renewing the lease.
                let held = diesel::update(
                    cs::table
                        .find(&calendar)
                        .filter(cs::lease_owner.eq(claim.owner)),
                )
                .set(cs::lease_expires_at.eq(Some(until)))
                .execute(conn)
                .await?;
                if held == 0 {
                    return Ok(false);
                }
                if !rows.is_empty() {
                    let mut upsert = diesel::sql_query(&upsert_sql).into_boxed();
                    for row in &rows {
                        upsert = upsert
                            .bind::<Text, _>(&row.calendar_id)
                            .bind::<Text, _>(&row.event_id)
                            .bind::<Text, _>(&row.status)
                            .bind::<Nullable<Text>, _>(&row.summary)
                            .bind::<Nullable<Timestamp>, _>(row.updated)
                            .bind::<Nullable<Text>, _>(&row.etag)
                            .bind::<Text, _>(&row.raw_json)
                            .bind::<BigInt, _>(row.sync_generation)
                            .bind::<Timestamp, _>(row.mirrored_at);
                    }
                    upsert.execute(conn).await?;
                }
                crate::changes::ChangeLog::log_page(
                    &mut *conn,
                    &calendar,
                    &event_ids,
                    completion
                        .filter(|done| done.sweep)
                        .map(|_| page.generation),
                    completion.is_some(),
                    now,
                )
                .await?;
                let Some(done) = completion else {
                    return Ok(true);
                };
                if done.sweep {
                    // Rows a full sync did not restamp are gone at Google.
                    diesel::delete(
                        ce::table
                            .filter(ce::calendar_id.eq(&calendar))
                            .filter(ce::sync_generation.lt(page.generation)),
                    )
                    .execute(conn)
                    .await?;
                }
                diesel::update(cs::table.find(&calendar))
                    .set((
                        cs::sync_token.eq(Some(done.sync_token)),
                        // A sync token exists only once a full pass completed.
                        cs::full_sync_complete.eq(true),
                        cs::sync_state.eq(unless_parked!(IDLE)),
                        cs::failure_count.eq(0),
                        cs::last_error.eq(None::<String>),
                        cs::next_attempt_at.eq(None::<PrimitiveDateTime>),
                        cs::last_sync_at.eq(Some(now)),
                        cs::sync_claimed_request_at.eq(None::<PrimitiveDateTime>),
                        cs::lease_owner.eq(None::<String>),
                        cs::lease_expires_at.eq(None::<PrimitiveDateTime>),
                        cs::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                Ok(true)
            })
            .await
            .map_err(query_error)?
        });
        self.changes_committed();
        Ok(held)
    }

    async fn fail(
        &self,
        claim: ClaimRef<'_>,
        action: FailureAction,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let now = to_db(now);
        let release = (
            cs::lease_owner.eq(None::<String>),
            cs::lease_expires_at.eq(None::<PrimitiveDateTime>),
            cs::updated_at.eq(now),
        );
        let updated = with_conn!(&self.pool, |conn| {
            let target = cs::table
                .find(&calendar)
                .filter(cs::lease_owner.eq(claim.owner));
            match &action {
                FailureAction::Retry {
                    next_attempt_at,
                    error,
                } => diesel::update(target)
                    .set((
                        release,
                        keep_pending!(now),
                        cs::next_attempt_at.eq(Some(to_db(*next_attempt_at))),
                        cs::failure_count.eq(cs::failure_count + 1),
                        cs::last_error.eq(Some(error)),
                        cs::sync_state.eq(unless_parked!(FAILING)),
                    ))
                    .execute(conn)
                    .await
                    .map_err(query_error)?,
                FailureAction::NeedsReauth { error } => conn
                    .transaction::<usize, diesel::result::Error, _>(async |conn| {
                        let updated = diesel::update(target)
                            .set((
                                release,
                                // New credentials re-request a sync anyway; keep the old one too.
                                keep_pending!(now),
                                cs::last_error.eq(Some(error)),
                                cs::sync_state.eq(unless_parked!(NEEDS_REAUTH)),
                            ))
                            .returning(cs::sync_state)
                            .get_results::<String>(conn)
                            .await?;
                        if updated.iter().any(|state| state == NEEDS_REAUTH) {
                            crate::changes::ChangeLog::log_transition(
                                &mut *conn,
                                &[&calendar],
                                sync_domain::changes::ChangeKind::CalendarNeedsReauth,
                                now,
                            )
                            .await?;
                        }
                        Ok(updated.len())
                    })
                    .await
                    .map_err(query_error)?,
                FailureAction::Gone { error } => conn
                    .transaction::<usize, diesel::result::Error, _>(async |conn| {
                        let updated = diesel::update(target)
                            .set((
                                release,
                                cs::last_error.eq(Some(error)),
                                cs::sync_state.eq(GONE),
                            ))
                            .execute(conn)
                            .await?;
                        if updated == 1 {
                            // The channel worker stops retiring channels at Google.
                            retire_active_channels!(
                                &mut *conn,
                                wc::table.filter(wc::calendar_id.eq(Some(&calendar))),
                                now,
                                now
                            )?;
                            crate::changes::ChangeLog::log_transition(
                                &mut *conn,
                                &[&calendar],
                                sync_domain::changes::ChangeKind::CalendarGone,
                                now,
                            )
                            .await?;
                        }
                        Ok(updated)
                    })
                    .await
                    .map_err(query_error)?,
            }
        });
        self.changes_committed();
        Ok(updated == 1)
    }

    async fn release(&self, claim: ClaimRef<'_>, now: OffsetDateTime) -> Result<bool, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let now = to_db(now);
        let updated = with_conn!(&self.pool, |conn| {
            diesel::update(
                cs::table
                    .find(&calendar)
                    .filter(cs::lease_owner.eq(claim.owner)),
            )
            .set((
                cs::lease_owner.eq(None::<String>),
                cs::lease_expires_at.eq(None::<PrimitiveDateTime>),
                keep_pending!(now),
                cs::sync_state.eq(unless_parked!(PENDING)),
                cs::updated_at.eq(now),
            ))
            .execute(conn)
            .await
            .map_err(query_error)?
        });
        Ok(updated == 1)
    }

    async fn request_polls(
        &self,
        cutoffs: PollCutoffs,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let now = to_db(now);
        let stale_before = |before: OffsetDateTime| {
            let before = to_db(before);
            cs::last_sync_at
                .le(before)
                .or(cs::last_sync_at.is_null().and(cs::created_at.le(before)))
        };
        let push_stale = cs::push_mode
            .ne(push_mode::POLLING)
            .and(stale_before(cutoffs.push_synced_before));
        let polling_stale = cs::push_mode
            .eq(push_mode::POLLING)
            .and(stale_before(cutoffs.polling_synced_before));
        let updated = with_conn!(&self.pool, |conn| {
            diesel::update(
                cs::table
                    .filter(cs::sync_requested_at.is_null())
                    .filter(cs::lease_owner.is_null())
                    .filter(cs::sync_state.ne_all([GONE, NEEDS_REAUTH]))
                    .filter(push_stale.or(polling_stale)),
            )
            .set((
                cs::sync_requested_at.eq(Some(now)),
                cs::sync_last_requested_at.eq(Some(now)),
                cs::sync_request_count.eq(cs::sync_request_count + 1),
                cs::updated_at.eq(now),
            ))
            .execute(conn)
            .await
            .map_err(query_error)?
        });
        Ok(u64::try_from(updated).unwrap_or(u64::MAX))
    }
}
