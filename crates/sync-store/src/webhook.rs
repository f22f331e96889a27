//! The webhook's two hot-path queries: one round trip each.

use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, google_credentials as gc, watch_channels as wc};
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use sync_domain::{CalendarId, ChannelId, ChannelRecord, ChannelToken, MessageNumber};

/// Sync states in which a calendar no longer takes requests.
pub(crate) const GONE: &str = "gone";

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
        let row: Option<ChannelRow> = with_conn!(&self.pool, |conn| {
            wc::table
                .left_join(cs::table.on(cs::id.nullable().eq(wc::calendar_id)))
                .left_join(gc::table.on(gc::user_id.nullable().eq(cs::user_id.nullable())))
                .filter(wc::channel_id.eq(channel_id.as_str()))
                .filter(wc::state.ne("stopped"))
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
        Ok(
            row.map(|(token, calendar_id, state, current, last, credentials)| {
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
            }),
        )
    }

    /// Records a sync request in one statement: marks the calendar pending (keeping
    /// the first request's time for the coalescing bound) and, on the current
    /// channel, advances the message number, refusing one not above the last.
    pub(crate) async fn record_request(
        &self,
        request: &SyncRequest,
    ) -> Result<RecordOutcome, StoreError> {
        let now = to_db(request.requested_at);
        let calendar_id = request.calendar_id.to_string();
        let channel = request.channel_id.as_str();
        let number = request.message_number.map(MessageNumber::get);
        let updated = with_conn!(&self.pool, |conn| {
            let target = cs::table
                .filter(cs::id.eq(&calendar_id))
                .filter(cs::sync_state.ne(GONE));
            let changes = (
                cs::sync_requested_at.eq(case_when(cs::sync_requested_at.is_null(), Some(now))
                    .otherwise(cs::sync_requested_at)),
                cs::sync_last_requested_at.eq(Some(now)),
                cs::sync_request_count.eq(cs::sync_request_count + 1),
                cs::updated_at.eq(now),
            );
            match number {
                None => diesel::update(target).set(changes).execute(conn).await,
                Some(n) => {
                    diesel::update(
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
                    .execute(conn)
                    .await
                }
            }
            .map_err(query_error)?
        });
        Ok(match (updated, number) {
            (0, Some(_)) => RecordOutcome::Duplicate,
            (0, None) => RecordOutcome::CalendarGone,
            _ => RecordOutcome::Recorded,
        })
    }
}
