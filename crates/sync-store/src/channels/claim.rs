//! Channel work claimed under a lease: which calendars need a channel
//! registered or renewed, so that exactly one instance works on a calendar.
//! A dead instance's lease simply expires.

use super::{ChannelWork, corrupt};
use crate::pool::{query_error, with_conn};
use crate::schema::calendar_sync_state as cs;
use crate::store::Store;
use crate::timestamps::{from_db, to_db};
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use std::time::Duration;
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, GoogleCalendarId, SyncState, UserId};
use time::PrimitiveDateTime;

type WorkRow = (
    String,
    String,
    String,
    Option<String>,
    Option<PrimitiveDateTime>,
    i32,
);

/// Releases `owner`'s channel lease on a calendar (a no-op if it is not held).
macro_rules! release {
    ($conn:expr, $calendar:expr, $owner:expr) => {
        diesel::update(
            $crate::schema::calendar_sync_state::table
                .filter($crate::schema::calendar_sync_state::id.eq($calendar))
                .filter($crate::schema::calendar_sync_state::channel_lease_owner.eq($owner)),
        )
        .set((
            $crate::schema::calendar_sync_state::channel_lease_owner.eq(None::<String>),
            $crate::schema::calendar_sync_state::channel_lease_expires_at
                .eq(None::<time::PrimitiveDateTime>),
        ))
        .execute($conn)
        .await
    };
}
pub(crate) use release;

/// Calendars that may get channel work: pushed to and not gone, as literal
/// SQL, the predicate of the partial index `calendar_sync_state_channel_due`
/// (a bound parameter would not let either backend use that index).
fn channel_candidate() -> String {
    format!(
        "calendar_sync_state.push_mode = '{}' AND calendar_sync_state.sync_state <> '{}'",
        sync_domain::channel::PushMode::Push.as_str(),
        SyncState::Gone
    )
}

/// Whether a calendar's channel lease is free at `$now` (never taken,
/// expired, or held by an instance known dead: `$owner_gone`, from
/// `Dialect::owner_gone`).
macro_rules! lease_free {
    ($query:expr, $now:expr, $clock:expr, $owner_gone:expr) => {
        $query.filter(
            cs::channel_lease_owner
                .is_null()
                .or(cs::channel_lease_expires_at.le($clock.now_expr($now)))
                .or(diesel::dsl::sql::<diesel::sql_types::Bool>($owner_gone)),
        )
    };
}

/// The calendars of `$query` that may get channel work, are `$due` and
/// whose lease is free.
macro_rules! claimable {
    ($query:expr, $due:expr, $now:expr, $clock:expr, $owner_gone:expr) => {
        lease_free!(
            $query
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
                    &channel_candidate()
                ))
                .filter($due),
            $now,
            $clock,
            $owner_gone
        )
    };
}

/// Whether a calendar is due for channel work at `$now` (never scheduled, or
/// scheduled by then) and its lease is free.
macro_rules! due_and_free {
    ($query:expr, $now:expr, $clock:expr, $owner_gone:expr) => {
        claimable!(
            $query,
            cs::channel_next_attempt_at
                .is_null()
                .or(cs::channel_next_attempt_at.le($now)),
            $now,
            $clock,
            $owner_gone
        )
    };
}

/// Takes the lease on those of `$ids` still due and free: the conditions are
/// checked again by the `UPDATE` itself, so two instances racing for the same
/// calendar cannot both win.
macro_rules! claim_update {
    ($conn:expr, $ids:expr, $owner:expr, $now:expr, $until:expr, $clock:expr, $owner_gone:expr) => {
        diesel::update(due_and_free!(
            cs::table.filter(cs::id.eq_any($ids)),
            $now,
            $clock,
            $owner_gone
        ))
        .set((
            cs::channel_lease_owner.eq(Some($owner)),
            cs::channel_lease_expires_at.eq($clock.until_expr($until, $now)),
        ))
        .returning((
            cs::id,
            cs::user_id,
            cs::google_calendar_id,
            cs::webhook_channel_id,
            cs::webhook_expires_at,
            cs::channel_failure_count,
        ))
        .get_results::<WorkRow>($conn)
        .await
    };
}

/// Up to `$limit` candidate calendars among those `$due` selects: never
/// scheduled (`channel_next_attempt_at IS NULL`) or due by `$now`, asked
/// separately, so that each is one range of the partial index (the two as one
/// `OR` read the whole index, every calendar, every tick).
macro_rules! candidates {
    ($due:expr, $now:expr, $limit:expr, $clock:expr, $owner_gone:expr) => {
        claimable!(cs::table, $due, $now, $clock, $owner_gone)
            .order(cs::channel_next_attempt_at.asc())
            .limit($limit)
            .select(cs::id)
    };
}

impl Store {
    /// Claims up to `limit` calendars needing channel work for `owner`, for
    /// `lease`. While the lease holds, no other instance gets them. (A
    /// calendar's next renewal time lives in `channel_next_attempt_at`, so one
    /// column orders first registrations, renewals and retries alike.)
    pub async fn claim_channel_work(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChannelWork>, StoreError> {
        let now = self.clock.now();
        let (now_db, until) = (to_db(now), to_db(now + lease));
        let dialect = self.dialect();
        let gone = dialect.owner_gone("calendar_sync_state.channel_lease_owner");
        let gone = gone.as_str();
        let clock = self.lease_clock();
        // One transaction, so that on PostgreSQL the candidates' row locks
        // (`Dialect::skip_locked`: skip calendars another instance is claiming
        // right now instead of queueing behind its lock) hold until the update.
        let rows: Vec<WorkRow> = with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                // Never scheduled first (new calendars), then most overdue first.
                let mut ids: Vec<String> = dialect
                    .skip_locked(
                        candidates!(
                            cs::channel_next_attempt_at.is_null(),
                            now_db,
                            limit,
                            clock,
                            gone
                        ),
                        "calendar_sync_state",
                    )
                    .load(conn)
                    .await?;
                let left = limit - i64::try_from(ids.len()).unwrap_or(limit);
                if left > 0 {
                    let overdue: Vec<String> = dialect
                        .skip_locked(
                            candidates!(
                                cs::channel_next_attempt_at.le(now_db),
                                now_db,
                                left,
                                clock,
                                gone
                            ),
                            "calendar_sync_state",
                        )
                        .load(conn)
                        .await?;
                    ids.extend(overdue);
                }
                claim_update!(conn, ids, owner, now_db, until, clock, gone)
            })
            .await
            .map_err(query_error)?
        });
        rows.into_iter()
            .map(|(id, user, calendar, channel, expires, failures)| {
                Ok(ChannelWork {
                    calendar_id: CalendarId::parse(&id).map_err(|e| corrupt("calendar id", e))?,
                    user_id: UserId::parse(user).map_err(|e| corrupt("user id", e))?,
                    google_calendar_id: GoogleCalendarId::parse(calendar)
                        .map_err(|e| corrupt("google calendar id", e))?,
                    current_channel_id: channel,
                    current_expires_at: expires.map(from_db),
                    failure_count: failures,
                })
            })
            .collect()
    }

    /// Extends `owner`'s lease on a calendar to `lease` from now; `false` if
    /// `owner` no longer holds it.
    pub async fn renew_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let until = self
            .lease_clock()
            .until_expr(to_db(now + lease), to_db(now));
        let calendar = calendar_id.to_string();
        let renewed = with_conn!(&self.pool, |conn| {
            diesel::update(
                cs::table
                    .filter(cs::id.eq(&calendar))
                    .filter(cs::channel_lease_owner.eq(owner)),
            )
            .set(cs::channel_lease_expires_at.eq(until))
            .execute(&mut *conn)
            .await
            .map_err(query_error)?
        });
        Ok(renewed == 1)
    }

    /// Gives a calendar's lease back without changing its schedule (shutdown).
    pub async fn release_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
    ) -> Result<(), StoreError> {
        let calendar = calendar_id.to_string();
        with_conn!(&self.pool, |conn| {
            release!(&mut *conn, &calendar, owner).map_err(query_error)?;
        });
        Ok(())
    }
}
