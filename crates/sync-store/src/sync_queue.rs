//! The sync queue: durable, coalesced sync requests in `sync_requests`,
//! claimed by workers under fenced leases on `calendar_sync_state` (SPEC
//! section 6).
//!
//! Every query is written once for both backends; what differs (placeholders,
//! the claim's lock clause, how a dead owner is recognised) comes from the
//! [`Dialect`]. Each claim takes the next `claim_epoch`, and every write made
//! for it is filtered on the owner *and* that epoch, so neither a worker whose
//! lease was taken over nor a second task of the same instance changes anything.

use crate::calendars::sync_state::{FAILING, GONE, IDLE, NEEDS_REAUTH, PENDING};
use crate::channels::retire_active_channels;
use crate::columns::Stored;
use crate::dialect::{Dialect, LeaseClock};
use crate::events::page_rows;
use crate::pool::{query_error, with_conn};
use crate::schema::{
    calendar_events as ce, calendar_sync_state as cs, sync_requests as sr, watch_channels as wc,
};
use crate::store::Store;
use crate::timestamps::to_db;
use async_trait::async_trait;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use sync_domain::channel::PushMode;
use sync_domain::ports::StoreError;
use sync_domain::repeats::FailureFingerprint;
use sync_domain::sync::{
    Claim, ClaimRef, ClaimRequest, FailureAction, PageWrite, PollCutoffs, SyncQueue,
};
use sync_domain::{CalendarId, GoogleCalendarId, SyncState, UserId};
use time::{OffsetDateTime, PrimitiveDateTime};

/// The one way a sync is requested (webhook aside, which adds its channel's
/// message number, see `webhook.rs`): for every calendar `filter` selects
/// (`$1` is the request time, the filter's own binds start at `$2`), a pending
/// request is created, or nothing is written when one is already pending: the
/// pending request already guarantees a sync that starts after it. The
/// debounce window therefore starts at the first request (see
/// `docs/sync-engine.md`). Used by the poll, the internal API, new credentials,
/// connect, and a failed or released claim putting its request back.
pub(crate) fn request_sql(dialect: Dialect, filter: &str) -> String {
    dialect.placeholders(&format!(
        "INSERT INTO sync_requests (calendar_id, first_requested_at, last_requested_at, request_count) \
         SELECT cs.id, $1, $1, 1 FROM calendar_sync_state cs WHERE {filter} \
         ON CONFLICT (calendar_id) DO UPDATE SET first_requested_at = excluded.first_requested_at, \
         last_requested_at = excluded.last_requested_at, \
         request_count = sync_requests.request_count + 1 \
         WHERE sync_requests.first_requested_at IS NULL"
    ))
}

/// Claims due calendars and those whose lease expired or whose owner is dead,
/// taking the next fencing epoch for each. Due: a pending request older than
/// the debounce or the bound (one cut-off, since a pending request's last time
/// is its first: `DueCutoffs::first_request_due_by`, found in the pending
/// index; testing both times read every pending request, 9 ms a claim with
/// 100,000 pending on SQLite, against 0.1 ms), not backing off, not claimed. The
/// consumed request's time moves to `sync_claimed_request_at` (kept over
/// failed attempts, cleared by a successful sync) for the latency metric;
/// the request itself is consumed in the same transaction (`claim_due`).
///
/// Taken-over leases come first, then due calendars, oldest request first;
/// each is read in its index's order and stops at the limit. As one `IN` over
/// both, PostgreSQL read and hashed every due request on every claim: 5.9 ms a
/// claim with syncs running and 1,700 due, 3.1 ms against 0.7 ms now with
/// 2,000 due of 100,000 calendars (`docs/benchmarks.md`).
fn claim_sql(dialect: Dialect, clock: LeaseClock) -> String {
    dialect.placeholders(&format!(
        "WITH taken AS (SELECT l.id FROM calendar_sync_state l \
           WHERE l.lease_owner IS NOT NULL AND l.sync_state NOT IN ('{gone_state}', '{reauth}') \
             AND (l.lease_expires_at < {now} OR {gone}) \
           LIMIT $7{lock_taken}), \
         due AS (SELECT cs.id FROM sync_requests r JOIN calendar_sync_state cs ON cs.id = r.calendar_id \
           WHERE r.first_requested_at IS NOT NULL AND r.first_requested_at <= $4 \
             AND cs.lease_owner IS NULL AND cs.sync_state NOT IN ('{gone_state}', '{reauth}') \
             AND (cs.next_attempt_at IS NULL OR cs.next_attempt_at <= $5) \
           ORDER BY r.first_requested_at LIMIT $7{lock_due}) \
         UPDATE calendar_sync_state SET lease_owner = $1, lease_expires_at = {until}, \
         claim_epoch = claim_epoch + 1, sync_state = '{syncing}', \
         sync_claimed_request_at = COALESCE(sync_claimed_request_at, \
           (SELECT r.first_requested_at FROM sync_requests r WHERE r.calendar_id = calendar_sync_state.id)), \
         updated_at = $3 \
         WHERE id IN (SELECT u.id FROM (SELECT id, 0 AS taken_over FROM taken \
           UNION ALL SELECT id, 1 AS taken_over FROM due) u ORDER BY u.taken_over LIMIT $7) \
         RETURNING id, user_id, google_calendar_id, sync_token, sync_generation, failure_count, \
         failure_fingerprint, failure_repeats, sync_claimed_request_at, claim_epoch",
        gone = dialect.owner_gone("l.lease_owner"),
        until = clock.until_sql("$2", "$3"),
        now = clock.now_sql("$6"),
        syncing = SyncState::Syncing,
        gone_state = SyncState::Gone,
        reauth = SyncState::NeedsReauth,
        lock_taken = dialect.skip_locked_of("l"),
        lock_due = dialect.skip_locked_of("cs"),
    ))
}

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
    failure_fingerprint: Option<String>,
    failure_repeats: i32,
    sync_claimed_request_at: Option<PrimitiveDateTime>,
    claim_epoch: i64,
}

/// Binds per row of [`upsert_sql`].
const UPSERT_BINDS: usize = 9;

/// The upsert of one page (PostgreSQL placeholders, see [`for_backend`]); one
/// statement per page.
fn upsert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO calendar_events (calendar_id, event_id, status, summary, updated, etag, \
         raw_json, sync_generation, mirrored_at) VALUES ",
    );
    for row in 0..rows {
        let n = row * UPSERT_BINDS;
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
        failure_fingerprint,
        failure_repeats,
        sync_claimed_request_at,
        claim_epoch,
    } = row;
    let invalid = |e: String| StoreError::Query(e.into());
    Ok(Claim {
        calendar_id: CalendarId::parse(&id).map_err(|e| invalid(e.to_string()))?,
        user_id: UserId::parse(user).map_err(|e| invalid(e.to_string()))?,
        google_calendar_id: GoogleCalendarId::parse(google).map_err(|e| invalid(e.to_string()))?,
        sync_token,
        generation,
        failure_count,
        last_failure: failure_fingerprint
            .map(|stored| (FailureFingerprint::from_stored(stored), failure_repeats)),
        requested_at: sync_claimed_request_at.map(crate::timestamps::from_db),
        epoch: claim_epoch,
    })
}

impl Store {
    /// Records a sync request as the webhook does (`POST /internal/calendars/{id}/sync`);
    /// `false` if the calendar does not exist. A request for a `gone` or
    /// `needs_reauth` calendar is recorded but only served once it recovers.
    pub async fn request_sync(&self, calendar_id: CalendarId) -> Result<bool, StoreError> {
        let now = to_db(self.clock.now());
        let calendar = calendar_id.to_string();
        let sql = request_sql(self.dialect(), "cs.id = $2");
        let exists = with_conn!(&self.pool, |conn| {
            diesel::sql_query(&sql)
                .bind::<Timestamp, _>(now)
                .bind::<Text, _>(&calendar)
                .execute(conn)
                .await
                .map_err(query_error)?;
            cs::table
                .find(&calendar)
                .count()
                .get_result::<i64>(conn)
                .await
                .map_err(query_error)?
        });
        Ok(exists == 1)
    }
}

/// Keeps `gone` and `needs_reauth` (set by others meanwhile), else `state`.
macro_rules! unless_parked {
    ($state:expr) => {
        case_when(cs::sync_state.eq_any([GONE, NEEDS_REAUTH]), cs::sync_state).otherwise($state)
    };
}

/// Puts a claimed but unserved request back (`$request`: [`request_sql`] for
/// `cs.id = $2`), as of `$now`, for `$calendar`: a failed or released claim.
macro_rules! put_back {
    ($conn:expr, $request:expr, $now:expr, $calendar:expr) => {
        diesel::sql_query($request)
            .bind::<Timestamp, _>($now)
            .bind::<Text, _>($calendar)
            .execute($conn)
            .await
    };
}

/// The claim `$claim` names, still held: owner and fencing epoch both match.
macro_rules! held {
    ($calendar:expr, $claim:expr) => {
        cs::table
            .find($calendar)
            .filter(cs::lease_owner.eq($claim.owner))
            .filter(cs::claim_epoch.eq($claim.epoch))
    };
}

#[async_trait]
impl SyncQueue for Store {
    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<Claim>, StoreError> {
        let sql = claim_sql(self.dialect(), self.lease_clock());
        let now = to_db(request.now);
        let rows: Vec<ClaimedRow> = with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let rows: Vec<ClaimedRow> = diesel::sql_query(&sql)
                    .bind::<Text, _>(request.owner)
                    .bind::<Timestamp, _>(to_db(request.lease_until))
                    .bind::<Timestamp, _>(now)
                    .bind::<Timestamp, _>(to_db(request.cutoffs.first_request_due_by()))
                    .bind::<Timestamp, _>(now)
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(request.limit.max(0))
                    .load(conn)
                    .await?;
                if !rows.is_empty() {
                    // Consuming the request is what makes notifications that
                    // arrive during the sync cause exactly one follow-up.
                    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
                    diesel::update(sr::table.filter(sr::calendar_id.eq_any(ids)))
                        .set((
                            sr::first_requested_at.eq(None::<PrimitiveDateTime>),
                            sr::last_requested_at.eq(None::<PrimitiveDateTime>),
                        ))
                        .execute(conn)
                        .await?;
                }
                Ok(rows)
            })
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
            diesel::update(held!(&calendar, claim))
                .set((
                    cs::lease_expires_at.eq(self
                        .lease_clock()
                        .until_expr(to_db(lease_until), to_db(now))),
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
            diesel::update(held!(&calendar, claim))
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
        let until = self.lease_clock().until_expr(to_db(page.lease_until), now);
        let completion = page.completion.as_ref();
        let upsert_sql = self.dialect().placeholders(&upsert_sql(rows.len()));
        let logged: Vec<crate::changes::LoggedEvent<'_>> = rows
            .iter()
            .map(|row| crate::changes::LoggedEvent {
                event_id: &row.event_id,
                status: row.status.0,
                raw_json: &row.raw_json,
            })
            .collect();
        let held = with_conn!(&self.pool, |conn| {
            conn.transaction::<bool, diesel::result::Error, _>(async |conn| {
                // Checks the claim (owner and epoch) and takes the state row's
                // lock first, renewing the lease: a claim taken over meanwhile
                // writes nothing. The webhook never needs this lock (it writes
                // `sync_requests` only), so it never waits for this page.
                let held = diesel::update(held!(&calendar, claim))
                    .set(cs::lease_expires_at.eq(until))
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
                            .bind::<Text, _>(row.status)
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
                    &logged,
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
                        cs::failure_fingerprint.eq(None::<String>),
                        cs::failure_repeats.eq(0),
                        cs::retry_stopped_at.eq(None::<PrimitiveDateTime>),
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
        let request = request_sql(self.dialect(), "cs.id = $2");
        let updated = with_conn!(&self.pool, |conn| {
            conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
                let target = held!(&calendar, claim);
                let (updated, keep_pending) = match &action {
                    FailureAction::Retry {
                        next_attempt_at,
                        error,
                        repeat,
                    } => (
                        diesel::update(target)
                            .set((
                                release,
                                cs::next_attempt_at.eq(Some(to_db(*next_attempt_at))),
                                cs::failure_count.eq(cs::failure_count + 1),
                                cs::last_error.eq(Some(error)),
                                cs::sync_state.eq(unless_parked!(FAILING)),
                                cs::failure_fingerprint
                                    .eq(repeat.as_ref().map(|r| r.fingerprint.as_str())),
                                cs::failure_repeats.eq(repeat.as_ref().map_or(0, |r| r.count)),
                                cs::retry_stopped_at.eq(None::<PrimitiveDateTime>),
                            ))
                            .execute(conn)
                            .await?,
                        true,
                    ),
                    // No retry is scheduled and the claimed request is not put
                    // back: only a new request (or the poll) tries again.
                    FailureAction::StopRetrying { error, repeat } => (
                        diesel::update(target)
                            .set((
                                release,
                                cs::next_attempt_at.eq(None::<PrimitiveDateTime>),
                                cs::failure_count.eq(cs::failure_count + 1),
                                cs::last_error.eq(Some(error)),
                                cs::sync_state.eq(unless_parked!(FAILING)),
                                cs::failure_fingerprint.eq(Some(repeat.fingerprint.as_str())),
                                cs::failure_repeats.eq(repeat.count),
                                cs::retry_stopped_at.eq(Some(now)),
                            ))
                            .execute(conn)
                            .await?,
                        false,
                    ),
                    // New credentials re-request a sync anyway; keep the old one too.
                    FailureAction::NeedsReauth { error } => {
                        let states: Vec<Stored<SyncState>> = diesel::update(target)
                            .set((
                                release,
                                cs::last_error.eq(Some(error)),
                                cs::sync_state.eq(unless_parked!(NEEDS_REAUTH)),
                            ))
                            .returning(cs::sync_state)
                            .get_results(conn)
                            .await?;
                        if states.contains(&NEEDS_REAUTH) {
                            crate::changes::ChangeLog::log_transition(
                                &mut *conn,
                                &[&calendar],
                                sync_domain::changes::ChangeKind::CalendarNeedsReauth,
                                now,
                            )
                            .await?;
                        }
                        (states.len(), true)
                    }
                    FailureAction::Gone { error } => {
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
                        (updated, false)
                    }
                };
                if updated == 1 && keep_pending {
                    // The claimed request is not served: put it back.
                    put_back!(conn, &request, now, &calendar)?;
                }
                Ok(updated)
            })
            .await
            .map_err(query_error)?
        });
        self.changes_committed();
        Ok(updated == 1)
    }

    async fn release(&self, claim: ClaimRef<'_>, now: OffsetDateTime) -> Result<bool, StoreError> {
        let calendar = claim.calendar_id.to_string();
        let now = to_db(now);
        let request = request_sql(self.dialect(), "cs.id = $2");
        let updated = with_conn!(&self.pool, |conn| {
            conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
                let updated = diesel::update(held!(&calendar, claim))
                    .set((
                        cs::lease_owner.eq(None::<String>),
                        cs::lease_expires_at.eq(None::<PrimitiveDateTime>),
                        cs::sync_state.eq(unless_parked!(PENDING)),
                        cs::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                if updated == 1 {
                    put_back!(conn, &request, now, &calendar)?;
                }
                Ok(updated)
            })
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
        // Idle calendars without a pending request, last synced (or connected,
        // or stopped retrying) before their cut-off; concurrent instances
        // request each at most once.
        let sql = request_sql(
            self.dialect(),
            &format!(
                "cs.lease_owner IS NULL AND cs.sync_state NOT IN ('{gone}', '{reauth}') \
                 AND NOT EXISTS (SELECT 1 FROM sync_requests p WHERE p.calendar_id = cs.id \
                   AND p.first_requested_at IS NOT NULL) \
                 AND ((cs.push_mode <> '{polling}' AND {since} <= $2) \
                   OR (cs.push_mode = '{polling}' AND {since} <= $3))",
                since = "COALESCE(cs.retry_stopped_at, cs.last_sync_at, cs.created_at)",
                polling = PushMode::Polling,
                gone = SyncState::Gone,
                reauth = SyncState::NeedsReauth,
            ),
        );
        let updated = with_conn!(&self.pool, |conn| {
            diesel::sql_query(&sql)
                .bind::<Timestamp, _>(to_db(now))
                .bind::<Timestamp, _>(to_db(cutoffs.push_synced_before))
                .bind::<Timestamp, _>(to_db(cutoffs.polling_synced_before))
                .execute(conn)
                .await
                .map_err(query_error)?
        });
        Ok(u64::try_from(updated).unwrap_or(u64::MAX))
    }
}
