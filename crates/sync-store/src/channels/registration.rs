//! A channel's registration: persisted `registering` before `events.watch`,
//! then granted (made current), failed or refused (push unsupported). Each
//! outcome is one transaction, so a crash leaves either the whole step or none.

use super::claim::release;
use super::{ChannelWork, retire_active_channels, state};
use crate::calendars::Calendar;
use crate::columns::stored;
use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use sync_domain::channel::{
    Activation, FailedRegistration, GrantedChannel, LEASE_LOST, NewChannel, activate, allowed_from,
    retire, stop,
};
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, ChannelId, ResourceId};
use time::{OffsetDateTime, PrimitiveDateTime};

/// Inserts a `registering` channel row.
macro_rules! insert_registering {
    ($conn:expr, $calendar:expr, $user:expr, $google:expr, $channel:expr, $now:expr) => {
        diesel::insert_into(wc::table)
            .values((
                wc::channel_id.eq($channel.channel_id.as_str()),
                wc::calendar_id.eq(Some($calendar)),
                wc::user_id.eq($user),
                wc::google_calendar_id.eq($google),
                wc::token.eq($channel.token.expose()),
                wc::state.eq(sync_domain::channel::register().as_str()),
                wc::created_at.eq($now),
                wc::updated_at.eq($now),
            ))
            .execute($conn)
            .await
    };
}

/// Inside a transaction: makes `$channel` (registering) the calendar's current
/// channel, retires the one it replaces (stopped after `$old_stop_after`), and
/// hands the resource id to the calendar's retiring channels that never
/// learned one (a watch whose answer was lost may have created them at
/// Google), due for stopping now.
macro_rules! make_current {
    ($conn:expr, $calendar:expr, $channel:expr, $resource:expr, $expires:expr, $old_stop_after:expr, $now:expr) => {{
        let token: String = diesel::update(
            wc::table
                .find($channel)
                .filter(wc::state.eq_any(stored(&allowed_from(activate)))),
        )
        .set((
            wc::state.eq(state::ACTIVE),
            wc::resource_id.eq(Some($resource)),
            wc::expires_at.eq($expires),
            wc::updated_at.eq($now),
        ))
        .returning(wc::token)
        .get_result($conn)
        .await?;
        // The previous current channel keeps working until it is stopped.
        retire_active_channels!(
            &mut *$conn,
            wc::table
                .filter(wc::calendar_id.eq(Some($calendar)))
                .filter(wc::channel_id.ne($channel)),
            $old_stop_after,
            $now
        )?;
        diesel::update(
            wc::table
                .filter(wc::calendar_id.eq(Some($calendar)))
                .filter(wc::state.eq(state::RETIRING))
                .filter(wc::resource_id.is_null()),
        )
        .set((
            wc::resource_id.eq(Some($resource)),
            wc::stop_after.eq(Some($now)),
            wc::updated_at.eq($now),
        ))
        .execute($conn)
        .await?;
        diesel::update(cs::table.find($calendar))
            .set((
                cs::webhook_channel_id.eq(Some($channel)),
                cs::webhook_resource_id.eq(Some($resource)),
                cs::webhook_expires_at.eq($expires),
                cs::webhook_channel_token.eq(Some(token)),
                cs::push_mode.eq(super::push_mode::PUSH),
                cs::updated_at.eq($now),
            ))
            .execute($conn)
            .await?;
    }};
}

impl Store {
    /// Persists a channel before `events.watch` is called, so Google's `sync`
    /// handshake (which may arrive before the call returns) meets a known channel.
    pub async fn insert_registering_channel(
        &self,
        calendar: &Calendar,
        channel: &NewChannel,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        let id = calendar.id.to_string();
        with_conn!(&self.pool, |conn| {
            insert_registering!(
                conn,
                &id,
                &calendar.user_id,
                &calendar.google_calendar_id,
                channel,
                now
            )
            .map_err(query_error)?;
        });
        // Known from now on, even if someone probed the id before.
        self.channel_cache.forget(&channel.channel_id);
        Ok(())
    }

    /// As [`Store::insert_registering_channel`] for claimed work; `false` if the
    /// calendar was disconnected since the claim.
    pub async fn begin_registration(
        &self,
        work: &ChannelWork,
        channel: &NewChannel,
    ) -> Result<bool, StoreError> {
        let now = to_db(self.clock.now());
        let calendar = work.calendar_id.to_string();
        let inserted = with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let connected: i64 = cs::table
                    .filter(cs::id.eq(&calendar))
                    .count()
                    .get_result(conn)
                    .await?;
                if connected == 0 {
                    return Ok(false);
                }
                insert_registering!(
                    conn,
                    &calendar,
                    work.user_id.as_str(),
                    work.google_calendar_id.as_str(),
                    channel,
                    now
                )?;
                Ok(true)
            })
            .await
            .map_err(query_error)?
        });
        self.channel_cache.forget(&channel.channel_id);
        Ok(inserted)
    }

    /// Makes a registered channel the calendar's current one (the seed columns of
    /// `calendar_sync_state`), and marks the channel it replaces for stopping now.
    /// (Seeding and tests; the channel worker uses [`Store::channel_registered`].)
    pub async fn activate_channel(
        &self,
        calendar_id: CalendarId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        let expires = expires_at.map(to_db);
        let calendar = calendar_id.to_string();
        let channel = channel_id.as_str();
        let resource = resource_id.as_str();
        with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                make_current!(conn, &calendar, channel, resource, expires, now, now);
                Ok(())
            })
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }

    /// Google granted a channel; in one transaction: if `owner` still holds
    /// the calendar's lease, the channel becomes current (the replaced one
    /// stays open for `overlap`), the renewal is scheduled at `renew_at`, the
    /// failure count cleared and the lease released. If the lease was lost
    /// during `events.watch`, the channel is retired instead, due now.
    pub async fn channel_registered(
        &self,
        granted: GrantedChannel<'_>,
    ) -> Result<Activation, StoreError> {
        let now = self.clock.now();
        let (now_db, old_stop_after) = (to_db(now), to_db(now + granted.overlap));
        let calendar = granted.calendar_id.to_string();
        let channel = granted.channel_id.as_str();
        let resource = granted.resource_id.as_str();
        let expires = granted.expires_at.map(to_db);
        let renew_at = to_db(granted.renew_at);
        let owner = granted.owner;
        let activation = with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let held = diesel::update(
                    cs::table
                        .filter(cs::id.eq(&calendar))
                        .filter(cs::channel_lease_owner.eq(owner)),
                )
                .set((
                    cs::channel_next_attempt_at.eq(Some(renew_at)),
                    cs::channel_failure_count.eq(0),
                    cs::channel_last_error.eq(None::<String>),
                    cs::channel_lease_owner.eq(None::<String>),
                    cs::channel_lease_expires_at.eq(None::<PrimitiveDateTime>),
                    cs::updated_at.eq(now_db),
                ))
                .execute(conn)
                .await?;
                if held == 0 {
                    diesel::update(
                        wc::table
                            .find(channel)
                            .filter(wc::state.eq_any(stored(&allowed_from(retire)))),
                    )
                    .set((
                        wc::state.eq(state::RETIRING),
                        wc::resource_id.eq(Some(resource)),
                        wc::expires_at.eq(expires),
                        wc::stop_after.eq(Some(now_db)),
                        wc::last_error.eq(Some(LEASE_LOST)),
                        wc::updated_at.eq(now_db),
                    ))
                    .execute(conn)
                    .await?;
                    return Ok(Activation::LeaseLost);
                }
                make_current!(
                    conn,
                    &calendar,
                    channel,
                    resource,
                    expires,
                    old_stop_after,
                    now_db
                );
                Ok(Activation::Activated)
            })
            .await
            .map_err(query_error)?
        });
        Ok(activation)
    }

    /// A registration failed, in one transaction: the channel is closed
    /// (Google refused it) or kept retiring for stopping (it may exist at
    /// Google), the calendar is retried at `retry_at` and the lease released.
    pub async fn channel_registration_failed(
        &self,
        failure: FailedRegistration<'_>,
    ) -> Result<(), StoreError> {
        let now = to_db(self.clock.now());
        let calendar = failure.calendar_id.to_string();
        let next = failure.outcome.next_state();
        let keep = next == sync_domain::channel::ChannelState::Retiring;
        let (error, owner, retry_at) = (failure.error, failure.owner, to_db(failure.retry_at));
        with_conn!(&self.pool, |conn| {
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::update(
                    wc::table
                        .find(failure.channel_id.as_str())
                        .filter(wc::state.eq(state::REGISTERING)),
                )
                .set((
                    wc::state.eq(next.as_str()),
                    wc::stop_after.eq(keep.then_some(now)),
                    wc::last_error.eq(Some(error)),
                    wc::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
                diesel::update(cs::table.find(&calendar))
                    .set((
                        cs::channel_failure_count.eq(cs::channel_failure_count + 1),
                        cs::channel_last_error.eq(Some(error)),
                        cs::channel_next_attempt_at.eq(Some(retry_at)),
                        cs::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                release!(conn, &calendar, owner)?;
                Ok(())
            })
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }

    /// Google cannot push for this calendar (`pushNotSupportedForRequestedResource`),
    /// in one transaction: it is polled from now on; the refused channel never
    /// existed, and any current one is retired.
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
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::update(
                    wc::table
                        .find(channel_id.as_str())
                        .filter(wc::state.eq_any(stored(&allowed_from(stop)))),
                )
                .set((
                    wc::state.eq(state::STOPPED),
                    wc::last_error.eq(Some(reason)),
                    wc::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
                retire_active_channels!(
                    &mut *conn,
                    wc::table.filter(wc::calendar_id.eq(Some(&calendar))),
                    now,
                    now
                )?;
                diesel::update(cs::table.find(&calendar))
                    .set((
                        cs::push_mode.eq(super::push_mode::POLLING),
                        cs::webhook_channel_id.eq(None::<String>),
                        cs::webhook_resource_id.eq(None::<String>),
                        cs::webhook_expires_at.eq(None::<PrimitiveDateTime>),
                        cs::webhook_channel_token.eq(None::<String>),
                        cs::channel_last_error.eq(Some(reason)),
                        cs::channel_next_attempt_at.eq(None::<PrimitiveDateTime>),
                        cs::updated_at.eq(now),
                    ))
                    .execute(conn)
                    .await?;
                release!(conn, &calendar, owner)?;
                Ok(())
            })
            .await
            .map_err(query_error)?;
        });
        Ok(())
    }
}
