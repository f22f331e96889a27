//! Stopping channels at Google: crash recovery (abandoned registrations,
//! channels of calendars that are gone), which retiring channels are due,
//! recording a stop's outcome, disconnecting a calendar, and deleting rows
//! stopped longer than the retention period.

use super::{corrupt, retire_active_channels, state};
use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::{from_db, to_db};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use std::time::Duration;
use sync_domain::admin::ChannelToStop;
use sync_domain::ports::StoreError;
use sync_domain::renewal::DISCONNECT_STOP_GRACE;
use sync_domain::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
use time::{OffsetDateTime, PrimitiveDateTime};

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

/// Orphaned channels retired per statement (bounded binds and transactions).
const ORPHANS_PER_UPDATE: usize = 500;

impl Store {
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
        // PostgreSQL evaluates row by row: quadratic in the calendars. A null
        // calendar id (disconnected) matches no calendar.
        let calendar_gone = || {
            diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "NOT EXISTS (SELECT 1 FROM calendar_sync_state c \
                 WHERE c.id = watch_channels.calendar_id AND c.sync_state <> '{}')",
                sync_domain::SyncState::Gone
            ))
        };
        // The search reads every active channel: on a read connection, so on
        // SQLite it never holds the one writer (measured: 200 to 430 ms with
        // 100,000 calendars, every webhook batch waiting behind it). Only what
        // it finds is updated, checked again.
        let orphaned: Vec<String> = with_conn!(&self.readers, |conn| {
            wc::table
                .filter(wc::state.eq(state::ACTIVE))
                .filter(calendar_gone())
                .select(wc::channel_id)
                .load(&mut *conn)
                .await
                .map_err(query_error)?
        });
        for ids in orphaned.chunks(ORPHANS_PER_UPDATE) {
            retired += with_conn!(&self.pool, |conn| {
                retire_active_channels!(
                    &mut *conn,
                    wc::table
                        .filter(wc::channel_id.eq_any(ids))
                        .filter(calendar_gone()),
                    now,
                    now
                )
                .map_err(query_error)?
            });
        }
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

    /// A channel's state, `None` if there is no such row (never created, or
    /// deleted after the retention).
    pub async fn channel_state(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<sync_domain::channel::ChannelState>, StoreError> {
        let state: Option<crate::columns::Stored<_>> = with_conn!(&self.pool, |conn| {
            wc::table
                .find(channel_id.as_str())
                .select(wc::state)
                .first(&mut *conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        Ok(state.map(crate::columns::Stored::get))
    }

    /// Deletes up to `limit` channels stopped before `stopped_before` (their
    /// rows hold the plaintext tokens of channels long gone). A notification on
    /// a deleted channel is answered as on a stopped one: unknown. Returns how
    /// many rows were deleted.
    pub async fn delete_stopped_channels(
        &self,
        stopped_before: OffsetDateTime,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let before = to_db(stopped_before);
        let deleted = with_conn!(&self.pool, |conn| {
            let expired: Vec<String> = wc::table
                .filter(wc::state.eq(state::STOPPED))
                .filter(wc::updated_at.lt(before))
                .order(wc::updated_at.asc())
                .limit(limit)
                .select(wc::channel_id)
                .load(&mut *conn)
                .await
                .map_err(query_error)?;
            if expired.is_empty() {
                0
            } else {
                // Still stopped: a row is never revived, but say so in the query.
                diesel::delete(
                    wc::table
                        .filter(wc::channel_id.eq_any(&expired))
                        .filter(wc::state.eq(state::STOPPED)),
                )
                .execute(&mut *conn)
                .await
                .map_err(query_error)?
            }
        });
        Ok(deleted)
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
