//! The channel lifecycle's queries (SPEC section 7): which calendars need a
//! channel registered or renewed (claimed under a lease, so exactly one
//! instance works on a calendar), what happened to a registration, and which
//! channels are due to be stopped at Google.
//!
//! Every channel ever created has a `watch_channels` row, written before
//! `events.watch` is called, and leaves the table's live states only as
//! `stopped`. A row can be left behind by a crash at two points, both recovered
//! here: `registering` (the process died around `events.watch`) is abandoned
//! after a timeout and stopped like any other retiring channel; `active`
//! without a live calendar (disconnected or gone during a registration) is
//! swept into `retiring`.

use crate::pool::{DbPool, checkout, query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::{from_db, to_db};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use std::time::Duration;
use sync_domain::admin::ChannelToStop;
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
use time::{OffsetDateTime, PrimitiveDateTime};

/// Channel states in `watch_channels.state`.
pub mod state {
    /// Persisted, `events.watch` not (yet) answered.
    pub const REGISTERING: &str = "registering";
    /// The calendar's current channel.
    pub const ACTIVE: &str = "active";
    /// Replaced or disconnected; to be stopped at Google after `stop_after`.
    pub const RETIRING: &str = "retiring";
    /// Stopped at Google (or never created there): nothing left to do.
    pub const STOPPED: &str = "stopped";
}

/// `calendar_sync_state.push_mode` values.
pub mod push_mode {
    /// Channels are registered and renewed.
    pub const PUSH: &str = "push";
    /// Push is unavailable for this calendar: it is polled.
    pub const POLLING: &str = "polling";
}

/// A calendar claimed for channel work: it needs its first channel, or its
/// current one is due for renewal, or a failed registration is due for retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelWork {
    pub calendar_id: CalendarId,
    pub user_id: UserId,
    pub google_calendar_id: GoogleCalendarId,
    /// The current channel, if any (renewal), with its expiry.
    pub current_channel_id: Option<String>,
    pub current_expires_at: Option<OffsetDateTime>,
    /// Consecutive failed registrations so far.
    pub failure_count: i32,
}

type WorkRow = (
    String,
    String,
    String,
    Option<String>,
    Option<PrimitiveDateTime>,
    i32,
);

type StopRow = (
    String,                    // channel id
    Option<String>,            // resource id
    String,                    // user id
    String,                    // google calendar id
    i32,                       // stop attempts
    Option<PrimitiveDateTime>, // expires at
);

/// The columns of a [`StopRow`].
const STOP_COLUMNS: (
    wc::channel_id,
    wc::resource_id,
    wc::user_id,
    wc::google_calendar_id,
    wc::stop_attempts,
    wc::expires_at,
) = (
    wc::channel_id,
    wc::resource_id,
    wc::user_id,
    wc::google_calendar_id,
    wc::stop_attempts,
    wc::expires_at,
);

/// How long the channel worker leaves a disconnected calendar's channels to the
/// disconnecting caller, who stops them at once; after that it stops them itself.
pub const DISCONNECT_STOP_GRACE: time::Duration = time::Duration::seconds(30);

/// Marks the active channels among `$channels` (a `watch_channels` query)
/// `retiring`: they keep working until the channel worker stops them at
/// Google, after `$stop_after`. The one way a channel leaves `active`.
macro_rules! retire_active_channels {
    ($conn:expr, $channels:expr, $stop_after:expr, $now:expr) => {
        diesel::update($channels.filter(wc::state.eq(state::ACTIVE)))
            .set((
                wc::state.eq(state::RETIRING),
                wc::stop_after.eq(Some($stop_after)),
                wc::updated_at.eq($now),
            ))
            .execute($conn)
            .await
    };
}
pub(crate) use retire_active_channels;

/// Releases `owner`'s channel lease on a calendar (a no-op if it is not held).
macro_rules! release {
    ($conn:expr, $calendar:expr, $owner:expr) => {
        diesel::update(
            cs::table
                .filter(cs::id.eq($calendar))
                .filter(cs::channel_lease_owner.eq($owner)),
        )
        .set((
            cs::channel_lease_owner.eq(None::<String>),
            cs::channel_lease_expires_at.eq(None::<PrimitiveDateTime>),
        ))
        .execute($conn)
        .await
        .map_err(query_error)?
    };
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Query(format!("{what}: {error}").into())
}

/// Whether a calendar is due for channel work at `$now` and its lease is free.
macro_rules! due_and_free {
    ($query:expr, $now:expr) => {
        $query
            .filter(cs::push_mode.eq(push_mode::PUSH))
            .filter(cs::sync_state.ne(crate::calendars::sync_state::GONE))
            .filter(
                cs::channel_next_attempt_at
                    .is_null()
                    .or(cs::channel_next_attempt_at.le($now)),
            )
            .filter(
                cs::channel_lease_owner
                    .is_null()
                    .or(cs::channel_lease_expires_at.le($now)),
            )
    };
}

/// Takes the lease on those of `$ids` still due and free: the conditions are
/// checked again by the `UPDATE` itself, so two instances racing for the same
/// calendar cannot both win.
macro_rules! claim_update {
    ($conn:expr, $ids:expr, $owner:expr, $now:expr, $until:expr) => {
        diesel::update(due_and_free!(cs::table.filter(cs::id.eq_any($ids)), $now))
            .set((
                cs::channel_lease_owner.eq(Some($owner)),
                cs::channel_lease_expires_at.eq(Some($until)),
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

/// Up to `$limit` candidate calendars, most overdue first.
macro_rules! candidates {
    ($now:expr, $limit:expr) => {
        due_and_free!(cs::table, $now)
            .order(cs::channel_next_attempt_at.asc())
            .limit($limit)
            .select(cs::id)
    };
}

impl Store {
    /// Claims up to `limit` calendars needing channel work for `owner`, for
    /// `lease`. While the lease holds, no other instance gets them; a dead
    /// instance's lease simply expires. (A calendar's next renewal time lives in
    /// `channel_next_attempt_at`, so one column orders first registrations,
    /// renewals and retries alike.)
    pub async fn claim_channel_work(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChannelWork>, StoreError> {
        let now = self.clock.now();
        let (now_db, until) = (to_db(now), to_db(now + lease));
        // The one backend difference: PostgreSQL skips rows another instance is
        // claiming right now instead of queueing behind its lock.
        let rows: Vec<WorkRow> = match &self.pool {
            // The one backend difference: PostgreSQL skips calendars another
            // instance is claiming right now instead of queueing behind its lock.
            DbPool::Postgres(pool) => {
                use diesel_async::AsyncConnection as _;
                let mut conn = checkout(pool).await?;
                conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                    let ids: Vec<String> = candidates!(now_db, limit)
                        .for_update()
                        .skip_locked()
                        .load(conn)
                        .await?;
                    claim_update!(conn, ids, owner, now_db, until)
                })
                .await
                .map_err(query_error)?
            }
            DbPool::Sqlite(pool) => {
                let mut conn = checkout(pool).await?;
                let ids: Vec<String> = candidates!(now_db, limit)
                    .load(&mut *conn)
                    .await
                    .map_err(query_error)?;
                claim_update!(&mut *conn, ids, owner, now_db, until).map_err(query_error)?
            }
        };
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

    /// After [`Store::activate_channel`]: schedules the next renewal at
    /// `renew_at`, clears the failure count and releases the lease, and keeps
    /// the replaced channel open until `overlap` from now, so notifications
    /// already on their way over it are still accepted.
    pub async fn channel_registered(
        &self,
        calendar_id: CalendarId,
        owner: &str,
        renew_at: OffsetDateTime,
        overlap: Duration,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let calendar = calendar_id.to_string();
        let (now_db, stop_after) = (to_db(now), to_db(now + overlap));
        with_conn!(&self.pool, |conn| {
            diesel::update(cs::table.find(&calendar))
                .set((
                    cs::channel_next_attempt_at.eq(Some(to_db(renew_at))),
                    cs::channel_failure_count.eq(0),
                    cs::channel_last_error.eq(None::<String>),
                    cs::updated_at.eq(now_db),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?;
            release!(&mut *conn, &calendar, owner);
            diesel::update(
                wc::table
                    .filter(wc::calendar_id.eq(Some(&calendar)))
                    .filter(wc::state.eq(state::RETIRING))
                    .filter(wc::stop_after.le(now_db)),
            )
            .set(wc::stop_after.eq(Some(stop_after)))
            .execute(&mut *conn)
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }

    /// A registration failed: the channel is dropped (`created` false: Google
    /// refused it, so it does not exist there) or left for stopping (`created`
    /// true: the call may have reached Google, e.g. a timeout), and the
    /// calendar is retried at `retry_at`.
    pub async fn channel_registration_failed(
        &self,
        calendar_id: CalendarId,
        channel_id: &ChannelId,
        owner: &str,
        error: &str,
        retry_at: OffsetDateTime,
        maybe_created: bool,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        let calendar = calendar_id.to_string();
        let new_state = if maybe_created {
            state::RETIRING
        } else {
            state::STOPPED
        };
        with_conn!(&self.pool, |conn| {
            diesel::update(
                wc::table
                    .find(channel_id.as_str())
                    .filter(wc::state.eq(state::REGISTERING)),
            )
            .set((
                wc::state.eq(new_state),
                wc::stop_after.eq(maybe_created.then_some(now)),
                wc::last_error.eq(Some(error)),
                wc::updated_at.eq(now),
            ))
            .execute(&mut *conn)
            .await
            .map_err(query_error)?;
            diesel::update(cs::table.find(&calendar))
                .set((
                    cs::channel_failure_count.eq(cs::channel_failure_count + 1),
                    cs::channel_last_error.eq(Some(error)),
                    cs::channel_next_attempt_at.eq(Some(to_db(retry_at))),
                    cs::updated_at.eq(now),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?;
            release!(&mut *conn, &calendar, owner);
        });
        Ok(())
    }

    /// Google cannot push for this calendar (`pushNotSupportedForRequestedResource`):
    /// it is polled from now on; the refused channel never existed, and any
    /// current one is retired.
    pub async fn switch_to_polling(
        &self,
        calendar_id: CalendarId,
        channel_id: &ChannelId,
        owner: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        let calendar = calendar_id.to_string();
        with_conn!(&self.pool, |conn| {
            diesel::update(wc::table.find(channel_id.as_str()))
                .set((
                    wc::state.eq(state::STOPPED),
                    wc::last_error.eq(Some(reason)),
                    wc::updated_at.eq(now),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?;
            retire_active_channels!(
                &mut *conn,
                wc::table.filter(wc::calendar_id.eq(Some(&calendar))),
                now,
                now
            )
            .map_err(query_error)?;
            diesel::update(cs::table.find(&calendar))
                .set((
                    cs::push_mode.eq(push_mode::POLLING),
                    cs::webhook_channel_id.eq(None::<String>),
                    cs::webhook_resource_id.eq(None::<String>),
                    cs::webhook_expires_at.eq(None::<PrimitiveDateTime>),
                    cs::webhook_channel_token.eq(None::<String>),
                    cs::channel_last_error.eq(Some(reason)),
                    cs::channel_next_attempt_at.eq(None::<PrimitiveDateTime>),
                    cs::updated_at.eq(now),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?;
            release!(&mut *conn, &calendar, owner);
        });
        Ok(())
    }

    /// Gives a calendar's lease back without changing its schedule (shutdown).
    pub async fn release_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
    ) -> Result<(), StoreError> {
        let calendar = calendar_id.to_string();
        with_conn!(&self.pool, |conn| {
            release!(&mut *conn, &calendar, owner);
        });
        Ok(())
    }

    /// Crash recovery, run by the worker before it stops channels:
    /// - a channel still `registering` since before `abandoned_before` is
    ///   retired; it may exist at Google (created before a crash), and lives
    ///   there at most `max_ttl` after it was persisted;
    /// - an `active` channel whose calendar was disconnected (or is gone) is retired.
    ///
    /// Returns how many channels were retired.
    pub async fn retire_abandoned_channels(
        &self,
        abandoned_before: OffsetDateTime,
        max_ttl: Duration,
    ) -> Result<usize, StoreError> {
        let now = to_db(self.clock.now());
        let cutoff = to_db(abandoned_before);
        let stale: Vec<(String, PrimitiveDateTime)> = with_conn!(&self.pool, |conn| {
            wc::table
                .filter(wc::state.eq(state::REGISTERING))
                .filter(wc::created_at.le(cutoff))
                .select((wc::channel_id, wc::created_at))
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        });
        let mut retired = 0;
        for (channel, created_at) in stale {
            let latest_expiry = to_db(from_db(created_at) + max_ttl);
            retired += with_conn!(&self.pool, |conn| {
                diesel::update(
                    wc::table
                        .find(&channel)
                        .filter(wc::state.eq(state::REGISTERING)),
                )
                .set((
                    wc::state.eq(state::RETIRING),
                    wc::stop_after.eq(Some(now)),
                    wc::expires_at.eq(Some(latest_expiry)),
                    wc::last_error.eq(Some("registration abandoned (no answer recorded)")),
                    wc::updated_at.eq(now),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?
            });
        }
        // `NOT EXISTS` (a hashed anti-join), not `<> ALL (SELECT …)`, which
        // PostgreSQL evaluates row by row: quadratic in the calendars, and run
        // every tick. A null calendar id (disconnected) matches no calendar.
        let calendar_gone = diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "NOT EXISTS (SELECT 1 FROM calendar_sync_state c \
             WHERE c.id = watch_channels.calendar_id AND c.sync_state <> '{}')",
            crate::calendars::sync_state::GONE
        ));
        retired += with_conn!(&self.pool, |conn| {
            retire_active_channels!(&mut *conn, wc::table.filter(calendar_gone), now, now)
                .map_err(query_error)?
        });
        Ok(retired)
    }

    /// Up to `limit` retiring channels whose `stop_after` has passed. A channel
    /// without a resource id (an abandoned registration) borrows the one most
    /// recently recorded for the same user and Google calendar: Google's
    /// resource id names the watched collection, the calendar's events, and
    /// is the same for every channel on it.
    pub async fn channels_due_for_stop(
        &self,
        limit: i64,
    ) -> Result<Vec<ChannelToStop>, StoreError> {
        let now = to_db(self.clock.now());
        let rows: Vec<StopRow> = with_conn!(&self.pool, |conn| {
            wc::table
                .filter(wc::state.eq(state::RETIRING))
                .filter(wc::stop_after.is_null().or(wc::stop_after.le(now)))
                .order(wc::stop_after.asc())
                .limit(limit)
                .select(STOP_COLUMNS)
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        });
        self.to_stop(rows).await
    }

    /// The channels named, as the stop procedure needs them.
    async fn channels_to_stop(
        &self,
        channel_ids: &[String],
    ) -> Result<Vec<ChannelToStop>, StoreError> {
        let rows: Vec<StopRow> = with_conn!(&self.pool, |conn| {
            wc::table
                .filter(wc::channel_id.eq_any(channel_ids))
                .filter(wc::state.eq(state::RETIRING))
                .select(STOP_COLUMNS)
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        });
        self.to_stop(rows).await
    }

    async fn to_stop(&self, rows: Vec<StopRow>) -> Result<Vec<ChannelToStop>, StoreError> {
        let mut due = Vec::with_capacity(rows.len());
        for (channel, resource, user, calendar, attempts, expires_at) in rows {
            let resource = match resource {
                Some(resource) => Some(resource),
                None => self.known_resource_id(&user, &calendar).await?,
            };
            due.push(ChannelToStop {
                channel_id: ChannelId::parse(channel).map_err(|e| corrupt("channel id", e))?,
                resource_id: resource
                    .map(ResourceId::parse)
                    .transpose()
                    .map_err(|e| corrupt("resource id", e))?,
                user_id: UserId::parse(user).map_err(|e| corrupt("user id", e))?,
                google_calendar_id: GoogleCalendarId::parse(calendar)
                    .map_err(|e| corrupt("google calendar id", e))?,
                stop_attempts: attempts,
                expires_at: expires_at.map(from_db),
            });
        }
        Ok(due)
    }

    async fn known_resource_id(
        &self,
        user: &str,
        calendar: &str,
    ) -> Result<Option<String>, StoreError> {
        let found: Option<Option<String>> = with_conn!(&self.pool, |conn| {
            wc::table
                .filter(wc::user_id.eq(user))
                .filter(wc::google_calendar_id.eq(calendar))
                .filter(wc::resource_id.is_not_null())
                .order(wc::created_at.desc())
                .select(wc::resource_id)
                .first(&mut *conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        Ok(found.flatten())
    }

    /// Marks a channel stopped at Google (or expired there: nothing left to stop).
    pub async fn mark_channel_stopped(&self, channel_id: &ChannelId) -> Result<(), StoreError> {
        self.channel_cache.clear();
        let now = to_db(self.clock.now());
        with_conn!(&self.pool, |conn| {
            diesel::update(wc::table.find(channel_id.as_str()))
                .set((
                    wc::state.eq(state::STOPPED),
                    wc::stop_after.eq(None::<PrimitiveDateTime>),
                    wc::updated_at.eq(now),
                ))
                .execute(&mut *conn)
                .await
                .map_err(query_error)?;
        });
        Ok(())
    }

    /// Records a failed stop; the channel stays `retiring` and is tried again at `retry_at`.
    pub async fn record_channel_stop_failure(
        &self,
        channel_id: &ChannelId,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        with_conn!(&self.pool, |conn| {
            diesel::update(
                wc::table
                    .find(channel_id.as_str())
                    .filter(wc::state.eq(state::RETIRING)),
            )
            .set((
                wc::stop_attempts.eq(wc::stop_attempts + 1),
                wc::last_error.eq(Some(error)),
                wc::stop_after.eq(Some(to_db(retry_at))),
                wc::updated_at.eq(now),
            ))
            .execute(&mut *conn)
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }

    /// Disconnects a calendar in one transaction: every channel of it that
    /// Google may still hold is marked `retiring` (due now), then its state is
    /// deleted (its mirrored events go with it). Returns those channels, or
    /// `None` if the calendar was not connected.
    pub async fn disconnect_calendar(
        &self,
        calendar_id: CalendarId,
    ) -> Result<Option<Vec<ChannelToStop>>, StoreError> {
        self.channel_cache.clear();
        let now = to_db(self.clock.now());
        let worker_takes_over = to_db(self.clock.now() + DISCONNECT_STOP_GRACE);
        let calendar = calendar_id.to_string();
        let retired: Option<Vec<String>> = with_conn!(&self.pool, |conn| {
            use diesel_async::AsyncConnection as _;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let deleted_rows = diesel::update(cs::table.find(&calendar))
                    .set(cs::updated_at.eq(now))
                    .execute(conn)
                    .await?;
                if deleted_rows == 0 {
                    return Ok(None);
                }
                let channels: Vec<String> = diesel::update(
                    wc::table
                        .filter(wc::calendar_id.eq(Some(&calendar)))
                        .filter(wc::state.eq_any([
                            state::REGISTERING,
                            state::ACTIVE,
                            state::RETIRING,
                        ])),
                )
                .set((
                    wc::state.eq(state::RETIRING),
                    // The caller stops them now; the worker only if that fails.
                    wc::stop_after.eq(Some(worker_takes_over)),
                    wc::updated_at.eq(now),
                ))
                .returning(wc::channel_id)
                .get_results(conn)
                .await?;
                crate::changes::ChangeLog::log_transition(
                    &mut *conn,
                    &[&calendar],
                    sync_domain::changes::ChangeKind::CalendarDisconnected,
                    now,
                )
                .await?;
                diesel::delete(cs::table.find(&calendar))
                    .execute(conn)
                    .await?;
                Ok(Some(channels))
            })
            .await
            .map_err(query_error)?
        });
        self.changes_committed();
        let Some(retired) = retired else {
            return Ok(None);
        };
        self.channels_to_stop(&retired).await.map(Some)
    }
}
