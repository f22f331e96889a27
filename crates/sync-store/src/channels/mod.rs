//! The channel lifecycle's queries (SPEC section 7), behind the domain's
//! [`ChannelStore`] port, split by responsibility:
//! - [`claim`]: which calendars need a channel registered or renewed, claimed
//!   under a lease so exactly one instance works on a calendar;
//! - [`registration`]: a channel persisted before `events.watch`, and what
//!   happened to it (granted, failed, push unsupported), each one transaction;
//! - [`stopping`]: which channels are due to be stopped at Google, crash
//!   recovery, disconnects, and the deletion of long-stopped rows.
//!
//! Every channel ever created has a `watch_channels` row, written before
//! `events.watch` is called, and leaves the table's live states only as
//! `stopped` (deleted after a retention period). A row can be left behind by a
//! crash at two points, both recovered here: `registering` (the process died
//! around `events.watch`) is abandoned after a timeout and stopped like any
//! other retiring channel; `active` without a live calendar (disconnected or
//! gone during a registration) is swept into `retiring`.
//!
//! States and push modes are the domain's enums
//! ([`sync_domain::channel::ChannelState`], [`sync_domain::channel::PushMode`]),
//! bound and loaded as themselves ([`crate::columns::Stored`]); the
//! transitions' allowed source states ([`sync_domain::channel::allowed_from`])
//! become the `WHERE` clauses.

pub mod claim;
pub mod registration;
pub mod stopping;

use crate::store::Store;
use async_trait::async_trait;
use std::time::Duration;
use sync_domain::ChannelId;
use sync_domain::admin::ChannelToStop;
use sync_domain::channel::{
    Activation, ChannelStore, FailedRegistration, GrantedChannel, NewChannel,
};
use sync_domain::ports::StoreError;
use time::OffsetDateTime;

pub use sync_domain::channel::ChannelWork;

/// Channel states in `watch_channels.state`, as query values.
pub(crate) mod state {
    use crate::columns::Stored;
    use sync_domain::channel::ChannelState;

    /// Persisted, `events.watch` not (yet) answered.
    pub const REGISTERING: Stored<ChannelState> = Stored(ChannelState::Registering);
    /// The calendar's current channel.
    pub const ACTIVE: Stored<ChannelState> = Stored(ChannelState::Active);
    /// Replaced or disconnected; to be stopped at Google after `stop_after`.
    pub const RETIRING: Stored<ChannelState> = Stored(ChannelState::Retiring);
    /// Stopped at Google (or never created there): nothing left to do.
    pub const STOPPED: Stored<ChannelState> = Stored(ChannelState::Stopped);
}

/// `calendar_sync_state.push_mode` values, as query values.
pub(crate) mod push_mode {
    use crate::columns::Stored;
    use sync_domain::channel::PushMode;

    /// Channels are registered and renewed.
    pub const PUSH: Stored<PushMode> = Stored(PushMode::Push);
    /// Push is unavailable for this calendar: it is polled.
    pub const POLLING: Stored<PushMode> = Stored(PushMode::Polling);
}

/// Marks the active channels among `$channels` (a `watch_channels` query)
/// `retiring`: they keep working until the channel worker stops them at
/// Google, after `$stop_after`. The one way a channel leaves `active`.
macro_rules! retire_active_channels {
    ($conn:expr, $channels:expr, $stop_after:expr, $now:expr) => {
        diesel::update(
            $channels
                .filter($crate::schema::watch_channels::state.eq($crate::channels::state::ACTIVE)),
        )
        .set((
            $crate::schema::watch_channels::state.eq($crate::channels::state::RETIRING),
            $crate::schema::watch_channels::stop_after.eq(Some($stop_after)),
            $crate::schema::watch_channels::updated_at.eq($now),
        ))
        .execute($conn)
        .await
    };
}
pub(crate) use retire_active_channels;

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Query(format!("{what}: {error}").into())
}

#[async_trait]
impl ChannelStore for Store {
    async fn claim_channel_work(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChannelWork>, StoreError> {
        Store::claim_channel_work(self, owner, lease, limit).await
    }

    async fn renew_channel_lease(
        &self,
        calendar_id: sync_domain::CalendarId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Store::renew_channel_lease(self, calendar_id, owner, lease).await
    }

    async fn release_channel_lease(
        &self,
        calendar_id: sync_domain::CalendarId,
        owner: &str,
    ) -> Result<(), StoreError> {
        Store::release_channel_lease(self, calendar_id, owner).await
    }

    async fn begin_registration(
        &self,
        work: &ChannelWork,
        channel: &NewChannel,
    ) -> Result<bool, StoreError> {
        Store::begin_registration(self, work, channel).await
    }

    async fn channel_registered(
        &self,
        granted: GrantedChannel<'_>,
    ) -> Result<Activation, StoreError> {
        Store::channel_registered(self, granted).await
    }

    async fn channel_registration_failed(
        &self,
        failure: FailedRegistration<'_>,
    ) -> Result<(), StoreError> {
        Store::channel_registration_failed(self, failure).await
    }

    async fn switch_to_polling(
        &self,
        calendar_id: sync_domain::CalendarId,
        channel_id: &ChannelId,
        owner: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        Store::switch_to_polling(self, calendar_id, channel_id, owner, reason).await
    }

    async fn retire_abandoned_channels(
        &self,
        abandoned_before: OffsetDateTime,
        max_ttl: Duration,
    ) -> Result<usize, StoreError> {
        Store::retire_abandoned_channels(self, abandoned_before, max_ttl).await
    }

    async fn channels_due_for_stop(&self, limit: i64) -> Result<Vec<ChannelToStop>, StoreError> {
        Store::channels_due_for_stop(self, limit).await
    }

    async fn delete_stopped_channels(
        &self,
        stopped_before: OffsetDateTime,
        limit: i64,
    ) -> Result<usize, StoreError> {
        Store::delete_stopped_channels(self, stopped_before, limit).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::pool::with_conn;
    use crate::store::Store;
    use crate::test_support::{TestDb, seed_calendar};
    use diesel_async::RunQueryDsl;
    use sync_domain::ports::StoreError;

    /// Runs one statement; `true` if the database accepted it.
    async fn accepted(store: &Store, sql: &str) -> bool {
        let result: Result<Result<usize, diesel::result::Error>, StoreError> = async {
            Ok(with_conn!(&store.pool, |conn| {
                diesel::sql_query(sql).execute(&mut *conn).await
            }))
        }
        .await;
        result.unwrap().is_ok()
    }

    async fn database_refuses_unknown_states(store: Store) {
        let calendar = seed_calendar(&store, "u1", "primary", "chan-1", "tok").await;
        for state in sync_domain::channel::ChannelState::ALL {
            let sql = format!(
                "UPDATE watch_channels SET state = '{}' WHERE channel_id = 'chan-1'",
                state.as_str()
            );
            assert!(accepted(&store, &sql).await, "{state} refused");
        }
        assert!(
            !accepted(
                &store,
                "UPDATE watch_channels SET state = 'paused' WHERE channel_id = 'chan-1'"
            )
            .await
        );
        assert!(
            !accepted(
                &store,
                "INSERT INTO watch_channels (channel_id, user_id, google_calendar_id, token, state, created_at, updated_at) \
                 VALUES ('chan-2', 'u1', 'primary', 't', 'Active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
            .await
        );
        for mode in sync_domain::channel::PushMode::ALL {
            let sql = format!(
                "UPDATE calendar_sync_state SET push_mode = '{}' WHERE id = '{}'",
                mode.as_str(),
                calendar.id
            );
            assert!(accepted(&store, &sql).await, "{mode} refused");
        }
        let pull = format!(
            "UPDATE calendar_sync_state SET push_mode = 'pull' WHERE id = '{}'",
            calendar.id
        );
        assert!(!accepted(&store, &pull).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_refuses_unknown_channel_states_and_push_modes_on_sqlite() {
        let db = TestDb::sqlite();
        database_refuses_unknown_states(db.store().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_refuses_unknown_channel_states_and_push_modes_on_postgres() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        database_refuses_unknown_states(db.store().await).await;
    }
}
