//! Event resources as the mirror sees them, and the page-following stream.

use futures::Stream;
use serde_json::Value;
use sync_domain::calendar::{CalendarApi, EventsPage, EventsQuery, GoogleError, GoogleEvent};
use sync_domain::ids::{GoogleCalendarId, UserId};

/// Google's largest `maxResults` for `events.list`.
pub const MAX_EVENTS_PAGE: u32 = 2500;

/// Reads the indexed fields of an event resource, keeping the whole JSON in
/// `raw` ([`sync_domain::page::parse_event`], with its reason as a `GoogleError`).
pub fn parse_event(raw: Value) -> Result<GoogleEvent, GoogleError> {
    sync_domain::page::parse_event(raw).map_err(|reason| malformed(format!("an event: {reason}")))
}

/// A 2xx answer whose body is not what Google documents.
pub(crate) fn malformed(message: impl Into<String>) -> GoogleError {
    GoogleError::Other {
        status: 200,
        reason: "malformedResponse".to_owned(),
        message: message.into(),
    }
}

/// Every page of one `events.list` pass (a full sync when `sync_token` is
/// `None`), following `nextPageToken` until a page carries `nextSyncToken`.
/// Only one page is held at a time; the stream ends after the first error.
pub fn event_pages<'a, A>(
    api: &'a A,
    user_id: &'a UserId,
    calendar: &'a GoogleCalendarId,
    sync_token: Option<String>,
    max_results: u32,
) -> impl Stream<Item = Result<EventsPage, GoogleError>> + Send + 'a
where
    A: CalendarApi + ?Sized,
{
    let first = EventsQuery {
        sync_token,
        page_token: None,
        max_results,
    };
    futures::stream::unfold(Some(first), move |next| async move {
        let query = next?;
        match api.list_events(user_id, calendar, &query).await {
            Ok(page) => {
                let follow = match (&page.next_sync_token, &page.next_page_token) {
                    (None, Some(page_token)) => Some(EventsQuery {
                        page_token: Some(page_token.clone()),
                        ..query
                    }),
                    // The last page (or a page with neither token: nothing to follow).
                    _ => None,
                };
                Some((Ok(page), follow))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn event_fields_are_read_and_raw_is_kept_whole() {
        let raw = json!({"kind": "calendar#event", "etag": "\"3181161784712000\"",
            "id": "abc123", "status": "cancelled", "updated": "2024-05-01T10:00:00.000Z",
            "summary": "Standup", "start": {"dateTime": "2024-05-02T09:00:00+02:00"}});
        let event = parse_event(raw.clone()).unwrap();
        assert_eq!(event.id, "abc123");
        assert_eq!(event.status, sync_domain::EventStatus::Cancelled);
        assert_eq!(event.etag.as_deref(), Some("\"3181161784712000\""));
        assert_eq!(event.summary.as_deref(), Some("Standup"));
        assert_eq!(
            event.updated,
            Some(OffsetDateTime::parse("2024-05-01T10:00:00Z", &Rfc3339).unwrap())
        );
        assert_eq!(event.raw, raw);
    }

    #[test]
    fn status_defaults_to_confirmed_and_an_id_is_required() {
        let event = parse_event(json!({"id": "x"})).unwrap();
        assert_eq!(event.status, sync_domain::EventStatus::Confirmed);
        assert_eq!(event.updated, None);
        assert!(matches!(
            parse_event(json!({"summary": "no id"})),
            Err(GoogleError::Other { .. })
        ));
    }
}
