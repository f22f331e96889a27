//! Connected calendars and their watch channels.

use crate::columns::Stored;
use crate::pool::{query_error, with_conn};
use crate::schema::{calendar_sync_state as cs, sync_requests as sr};
use crate::store::Store;
use crate::sync_queue::request_sql;
use crate::timestamps::{from_db, to_db};
use diesel::prelude::*;
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use sync_domain::channel::PushMode;
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, GoogleCalendarId, SyncState, UserId};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

/// `calendar_sync_state.sync_state` values as query values:
/// [`sync_domain::SyncState`] owns the states and their text forms.
pub(crate) mod sync_state {
    use crate::columns::Stored;
    use sync_domain::SyncState;

    /// Waiting to be synced.
    pub const PENDING: Stored<SyncState> = Stored(SyncState::Pending);
    /// Synced, nothing to do.
    pub const IDLE: Stored<SyncState> = Stored(SyncState::Idle);
    /// The last sync failed; a retry is scheduled (or, once it stopped
    /// retrying, waits for a new request: `sync_domain::repeats`).
    pub const FAILING: Stored<SyncState> = Stored(SyncState::Failing);
    /// Google refused the user's refresh token; waits for new credentials.
    pub const NEEDS_REAUTH: Stored<SyncState> = Stored(SyncState::NeedsReauth);
    /// The calendar no longer exists at Google; it takes no sync requests.
    pub const GONE: Stored<SyncState> = Stored(SyncState::Gone);
}

/// A connected calendar as the internal API and the CLI show it (with its
/// pending request from `sync_requests`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct CalendarRow {
    pub id: String,
    pub user_id: String,
    pub google_calendar_id: String,
    pub sync_state: Stored<SyncState>,
    pub push_mode: Stored<PushMode>,
    pub full_sync_complete: bool,
    pub webhook_channel_id: Option<String>,
    pub webhook_expires_at: Option<PrimitiveDateTime>,
    pub sync_requested_at: Option<PrimitiveDateTime>,
    pub sync_request_count: Option<i64>,
    pub failure_count: i32,
    pub next_attempt_at: Option<PrimitiveDateTime>,
    pub last_error: Option<String>,
    pub last_sync_at: Option<PrimitiveDateTime>,
}

/// The columns of a [`CalendarRow`], over `calendar_sync_state` left-joined with `sync_requests`.
macro_rules! calendar_row {
    () => {
        (
            cs::id,
            cs::user_id,
            cs::google_calendar_id,
            cs::sync_state,
            cs::push_mode,
            cs::full_sync_complete,
            cs::webhook_channel_id,
            cs::webhook_expires_at,
            sr::first_requested_at.nullable(),
            sr::request_count.nullable(),
            cs::failure_count,
            cs::next_attempt_at,
            cs::last_error,
            cs::last_sync_at,
        )
    };
}

/// A connected calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub id: CalendarId,
    pub user_id: String,
    pub google_calendar_id: String,
    /// Where its sync stands.
    pub sync_state: SyncState,
    /// Whether it is watched or polled.
    pub push_mode: PushMode,
    pub full_sync_complete: bool,
    pub channel_id: Option<String>,
    pub channel_expires_at: Option<OffsetDateTime>,
    /// When the oldest unserved sync request was recorded.
    pub sync_requested_at: Option<OffsetDateTime>,
    /// How many sync requests were ever recorded.
    pub sync_request_count: i64,
    pub failure_count: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub last_sync_at: Option<OffsetDateTime>,
}

impl TryFrom<CalendarRow> for Calendar {
    type Error = StoreError;

    fn try_from(row: CalendarRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: CalendarId::parse(&row.id).map_err(|e| StoreError::Query(Box::new(e)))?,
            user_id: row.user_id,
            google_calendar_id: row.google_calendar_id,
            sync_state: row.sync_state.get(),
            push_mode: row.push_mode.get(),
            full_sync_complete: row.full_sync_complete,
            channel_id: row.webhook_channel_id,
            channel_expires_at: row.webhook_expires_at.map(from_db),
            sync_requested_at: row.sync_requested_at.map(from_db),
            sync_request_count: row.sync_request_count.unwrap_or(0),
            failure_count: row.failure_count,
            next_attempt_at: row.next_attempt_at.map(from_db),
            last_error: row.last_error,
            last_sync_at: row.last_sync_at.map(from_db),
        })
    }
}

pub use sync_domain::channel::NewChannel;

impl Store {
    /// Connects a calendar, or returns the existing one for the same pair
    /// (`true` when it was created). A new calendar starts with a pending
    /// request for its initial full sync.
    pub async fn connect_calendar(
        &self,
        user_id: &UserId,
        google_calendar_id: &GoogleCalendarId,
    ) -> Result<(Calendar, bool), StoreError> {
        let now = to_db(self.clock.now());
        let id = CalendarId::from_uuid(Uuid::new_v4()).to_string();
        let request = request_sql(self.dialect(), "cs.id = $2");
        let inserted = with_conn!(&self.pool, |conn| {
            conn.transaction::<usize, diesel::result::Error, _>(async |conn| {
                let inserted = diesel::insert_into(cs::table)
                    .values((
                        cs::id.eq(&id),
                        cs::user_id.eq(user_id.as_str()),
                        cs::google_calendar_id.eq(google_calendar_id.as_str()),
                        cs::sync_state.eq(sync_state::PENDING),
                        cs::created_at.eq(now),
                        cs::updated_at.eq(now),
                    ))
                    .on_conflict((cs::user_id, cs::google_calendar_id))
                    .do_nothing()
                    .execute(conn)
                    .await?;
                if inserted == 1 {
                    // The initial full sync.
                    diesel::sql_query(&request)
                        .bind::<diesel::sql_types::Timestamp, _>(now)
                        .bind::<diesel::sql_types::Text, _>(&id)
                        .execute(conn)
                        .await?;
                    crate::changes::ChangeLog::log_transition(
                        &mut *conn,
                        &[&id],
                        sync_domain::changes::ChangeKind::CalendarConnected,
                        now,
                    )
                    .await?;
                }
                Ok(inserted)
            })
            .await
            .map_err(query_error)?
        });
        self.changes_committed();
        let calendar = self
            .find_calendar_by_pair(user_id, google_calendar_id)
            .await?
            .ok_or_else(|| StoreError::Query("connected calendar vanished".into()))?;
        Ok((calendar, inserted == 1))
    }

    async fn find_calendar_by_pair(
        &self,
        user_id: &UserId,
        google_calendar_id: &GoogleCalendarId,
    ) -> Result<Option<Calendar>, StoreError> {
        let row = with_conn!(&self.pool, |conn| {
            cs::table
                .left_join(sr::table)
                .filter(cs::user_id.eq(user_id.as_str()))
                .filter(cs::google_calendar_id.eq(google_calendar_id.as_str()))
                .select(calendar_row!())
                .first::<CalendarRow>(conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        row.map(Calendar::try_from).transpose()
    }

    /// One calendar.
    pub async fn calendar(&self, id: CalendarId) -> Result<Option<Calendar>, StoreError> {
        let row = with_conn!(&self.readers, |conn| {
            cs::table
                .left_join(sr::table)
                .filter(cs::id.eq(id.to_string()))
                .select(calendar_row!())
                .first::<CalendarRow>(conn)
                .await
                .optional()
                .map_err(query_error)?
        });
        row.map(Calendar::try_from).transpose()
    }

    /// Calendars, all or one user's, in a stable order.
    pub async fn calendars(&self, user_id: Option<&UserId>) -> Result<Vec<Calendar>, StoreError> {
        let rows: Vec<CalendarRow> = with_conn!(&self.readers, |conn| {
            let mut query = cs::table
                .left_join(sr::table)
                .select(calendar_row!())
                .into_boxed();
            if let Some(user) = user_id {
                query = query.filter(cs::user_id.eq(user.as_str()));
            }
            query
                .order((cs::user_id, cs::google_calendar_id))
                .load::<CalendarRow>(conn)
                .await
                .map_err(query_error)?
        });
        rows.into_iter().map(Calendar::try_from).collect()
    }
}
