//! A few aggregate counts for the metrics sampler (`chronos_calendars`,
//! `chronos_channels`, the pending backlog, the soonest channel expiry), read
//! with one query each, written once for both backends.

use crate::channels::state;
use crate::columns::{Stored, TextColumn, stored};
use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, sync_requests as sr, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::from_db;
use diesel::dsl::{count_star, min};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sync_domain::SyncState;
use sync_domain::channel::{ChannelState, PushMode};
use sync_domain::ports::StoreError;
use time::{OffsetDateTime, PrimitiveDateTime};

/// What the database says about the whole fleet at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Calendars per `sync_state` (only states that occur).
    pub calendars_by_state: Vec<(SyncState, i64)>,
    /// Calendars per `push_mode` (only modes that occur).
    pub calendars_by_push_mode: Vec<(PushMode, i64)>,
    /// Calendars with an unserved sync request.
    pub pending_requests: i64,
    /// The oldest unserved request, if any.
    pub oldest_pending_request: Option<OffsetDateTime>,
    /// Channels per live state (only states that occur).
    pub channels_by_state: Vec<(ChannelState, i64)>,
    /// The soonest expiry among active channels, if any has one.
    pub soonest_channel_expiry: Option<OffsetDateTime>,
}

impl Store {
    /// Reads the [`HealthSnapshot`].
    pub async fn health_snapshot(&self) -> Result<HealthSnapshot, StoreError> {
        let live = stored(&ChannelState::LIVE);
        let snapshot = with_conn!(&self.readers, |conn| {
            let calendars_by_state = cs::table
                .group_by(cs::sync_state)
                .select((cs::sync_state, count_star()))
                .load::<(Stored<SyncState>, i64)>(conn)
                .await
                .map_err(query_error)?;
            let calendars_by_push_mode = cs::table
                .group_by(cs::push_mode)
                .select((cs::push_mode, count_star()))
                .load::<(Stored<PushMode>, i64)>(conn)
                .await
                .map_err(query_error)?;
            let (pending_requests, oldest) = sr::table
                .filter(sr::first_requested_at.is_not_null())
                .select((count_star(), min(sr::first_requested_at)))
                .first::<(i64, Option<PrimitiveDateTime>)>(conn)
                .await
                .map_err(query_error)?;
            let channels_by_state = wc::table
                .filter(wc::state.eq_any(live))
                .group_by(wc::state)
                .select((wc::state, count_star()))
                .load::<(Stored<ChannelState>, i64)>(conn)
                .await
                .map_err(query_error)?;
            let soonest = wc::table
                .filter(wc::state.eq(state::ACTIVE))
                .select(min(wc::expires_at))
                .first::<Option<PrimitiveDateTime>>(conn)
                .await
                .map_err(query_error)?;
            HealthSnapshot {
                calendars_by_state: unwrapped(calendars_by_state),
                calendars_by_push_mode: unwrapped(calendars_by_push_mode),
                pending_requests,
                oldest_pending_request: oldest.map(from_db),
                channels_by_state: unwrapped(channels_by_state),
                soonest_channel_expiry: soonest.map(from_db),
            }
        });
        Ok(snapshot)
    }
}

/// Counts by the enum itself.
fn unwrapped<T: TextColumn>(counts: Vec<(Stored<T>, i64)>) -> Vec<(T, i64)> {
    counts
        .into_iter()
        .map(|(value, count)| (value.get(), count))
        .collect()
}
