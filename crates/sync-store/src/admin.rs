//! The store behind the internal API and the CLI ([`CalendarAdmin`]).

use crate::calendars::Calendar;
use crate::store::Store;
use async_trait::async_trait;
use sync_domain::admin::{
    CalendarAdmin, CalendarView, ChannelToStop, ChannelView, EventCursor, EventView, StopLedger,
};
use sync_domain::ports::{CredentialStore as _, StoreError};
use sync_domain::{CalendarId, ChannelId, GoogleCalendarId, RefreshToken, UserId};
use time::OffsetDateTime;

impl From<Calendar> for CalendarView {
    fn from(calendar: Calendar) -> Self {
        Self {
            id: calendar.id,
            user_id: calendar.user_id,
            google_calendar_id: calendar.google_calendar_id,
            sync_state: calendar.sync_state,
            last_sync_at: calendar.last_sync_at,
            full_sync_complete: calendar.full_sync_complete,
            channel: calendar.channel_id.map(|id| ChannelView {
                id,
                expires_at: calendar.channel_expires_at,
            }),
            last_error: calendar.last_error,
            push_mode: calendar.push_mode,
        }
    }
}

#[async_trait]
impl CalendarAdmin for Store {
    async fn put_credentials(
        &self,
        user_id: &UserId,
        token: &RefreshToken,
    ) -> Result<(), StoreError> {
        self.put_refresh_token(user_id, token).await
    }

    async fn connect(
        &self,
        user_id: &UserId,
        google_calendar_id: &GoogleCalendarId,
    ) -> Result<(CalendarView, bool), StoreError> {
        let (calendar, created) = self.connect_calendar(user_id, google_calendar_id).await?;
        Ok((calendar.into(), created))
    }

    async fn calendar(&self, id: CalendarId) -> Result<Option<CalendarView>, StoreError> {
        Ok(Store::calendar(self, id).await?.map(Into::into))
    }

    async fn calendars(&self, user_id: Option<&UserId>) -> Result<Vec<CalendarView>, StoreError> {
        Ok(Store::calendars(self, user_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    async fn events(
        &self,
        id: CalendarId,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<Option<Vec<EventView>>, StoreError> {
        if Store::calendar(self, id).await?.is_none() {
            return Ok(None);
        }
        let page = self
            .events_page(id, i64::from(limit), cursor.map(EventCursor::event_id))
            .await?;
        Ok(Some(
            page.into_iter()
                .map(|event| {
                    let raw: serde_json::Value =
                        serde_json::from_str(&event.raw_json).unwrap_or_default();
                    // The change feed shows events through the same projection.
                    let view = EventView::from_google_json(&event.event_id, &raw);
                    EventView {
                        status: event.status,
                        summary: event.summary,
                        // Google's own text (the column may be less precise).
                        updated: view.updated.or(event.updated),
                        ..view
                    }
                })
                .collect(),
        ))
    }

    async fn request_sync(&self, id: CalendarId) -> Result<bool, StoreError> {
        Store::request_sync(self, id).await
    }

    async fn disconnect(&self, id: CalendarId) -> Result<Option<Vec<ChannelToStop>>, StoreError> {
        self.disconnect_calendar(id).await
    }
}

#[async_trait]
impl StopLedger for Store {
    async fn channel_stopped(&self, channel_id: &ChannelId) -> Result<(), StoreError> {
        self.mark_channel_stopped(channel_id).await
    }

    async fn channel_stop_failed(
        &self,
        channel_id: &ChannelId,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.record_channel_stop_failure(channel_id, error, retry_at)
            .await
    }
}
