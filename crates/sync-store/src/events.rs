//! The mirror: `calendar_events`, written a page at a time by the sync worker
//! and read by the internal API.

use crate::columns::Stored;
use crate::pool::{query_error, with_conn};
use crate::schema::calendar_events as ce;
use crate::store::Store;
use crate::timestamps::{from_db, to_db};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use std::collections::HashSet;
use sync_domain::calendar::GoogleEvent;
use sync_domain::page::without_nul;
use sync_domain::ports::StoreError;
use sync_domain::{CalendarId, EventStatus};
use time::{OffsetDateTime, PrimitiveDateTime};

/// A mirrored event, as the internal API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredEvent {
    /// Google's event id.
    pub event_id: String,
    /// `confirmed` or `tentative` (cancelled events are not listed).
    pub status: EventStatus,
    /// The event's title.
    pub summary: Option<String>,
    /// When Google last changed it.
    pub updated: Option<OffsetDateTime>,
    /// The event resource exactly as Google returned it.
    pub raw_json: String,
}

type EventRow = (
    String,
    Stored<EventStatus>,
    Option<String>,
    Option<PrimitiveDateTime>,
    String,
);

impl Store {
    /// Up to `limit` mirrored events of a calendar that are not cancelled,
    /// ordered by event id, starting after `after_event_id` (keyset pagination).
    pub async fn events_page(
        &self,
        calendar_id: CalendarId,
        limit: i64,
        after_event_id: Option<&str>,
    ) -> Result<Vec<MirroredEvent>, StoreError> {
        let calendar = calendar_id.to_string();
        let rows: Vec<EventRow> = with_conn!(&self.readers, |conn| {
            let mut query = ce::table
                .filter(ce::calendar_id.eq(&calendar))
                // Deleted at Google: kept, never listed.
                .filter(ce::status.ne(Stored(EventStatus::Cancelled)))
                .select((
                    ce::event_id,
                    ce::status,
                    ce::summary,
                    ce::updated,
                    ce::raw_json,
                ))
                .order(ce::event_id.asc())
                .limit(limit.max(0))
                .into_boxed();
            if let Some(after) = after_event_id {
                query = query.filter(ce::event_id.gt(after));
            }
            query.load(conn).await.map_err(query_error)?
        });
        Ok(rows
            .into_iter()
            .map(
                |(event_id, status, summary, updated, raw_json)| MirroredEvent {
                    event_id,
                    status: status.get(),
                    summary,
                    updated: updated.map(from_db),
                    raw_json,
                },
            )
            .collect())
    }
}

/// A row of `calendar_events` as one page writes it.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) calendar_id: String,
    pub(crate) event_id: String,
    pub(crate) status: Stored<EventStatus>,
    pub(crate) summary: Option<String>,
    pub(crate) updated: Option<PrimitiveDateTime>,
    pub(crate) etag: Option<String>,
    pub(crate) raw_json: String,
    pub(crate) sync_generation: i64,
    pub(crate) mirrored_at: PrimitiveDateTime,
}

/// The rows for a page of Google events. An event listed twice keeps its last
/// version (one upsert statement must not touch a row twice on PostgreSQL).
pub(crate) fn page_rows(
    calendar: &str,
    events: &[GoogleEvent],
    generation: i64,
    now: PrimitiveDateTime,
) -> Vec<NewEvent> {
    let mut seen = HashSet::new();
    let mut rows: Vec<NewEvent> = events
        .iter()
        .rev()
        .filter(|event| seen.insert(event.id.as_str()))
        // PostgreSQL refuses U+0000 in TEXT; the raw JSON holds it escaped.
        .map(|event| NewEvent {
            calendar_id: calendar.to_owned(),
            event_id: without_nul(&event.id),
            status: Stored(event.status),
            summary: event.summary.as_deref().map(without_nul),
            updated: event.updated.map(to_db),
            etag: event.etag.as_deref().map(without_nul),
            raw_json: event.raw.to_string(),
            sync_generation: generation,
            mirrored_at: now,
        })
        .collect();
    rows.reverse();
    rows
}
