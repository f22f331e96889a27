//! The sync queue: durable, coalesced sync requests in `calendar_sync_state`,
//! claimed by workers under a lease (SPEC section 6).

use crate::pool::{query_error, with_conn};
use crate::schema::calendar_sync_state as cs;
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sync_domain::CalendarId;
use sync_domain::ports::StoreError;

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
