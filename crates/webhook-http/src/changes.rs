//! The change feed over HTTP (SPEC section 5, `docs/change-feed.md`), behind
//! the internal API's bearer token:
//!
//! - `GET /internal/changes?after=&limit=&calendar_id=&user_id=&wait=`: a page
//!   of entries as JSON, held up to `wait` seconds (long poll) when empty;
//! - `GET /internal/changes/stream`: the same entries as server-sent events,
//!   `id:` set to each entry's cursor, resumable with `Last-Event-ID`, with a
//!   comment every [`HEARTBEAT`] (see [`ChangesState::with_heartbeat`]) while
//!   nothing arrives.
//!
//! Without `after` (or `Last-Event-ID`) a consumer starts from now. A cursor
//! older than the retention answers 410 with what to do.

use crate::error::ApiError;
use crate::internal::{Admin, page_limit, parse_query};
use crate::routes::{resource, route};
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use sync_domain::changes::{
    ChangeCursor, ChangeEntry, ChangeFeed, ChangeFeedError, ChangePage, ChangeQuery, DEFAULT_LIMIT,
    MAX_LIMIT, MAX_WAIT,
};
use sync_domain::{CalendarId, UserId};
use utoipa::PartialSchema as _;
use utoipa::openapi::path::{Parameter, ParameterIn};

/// `GET`: a page of the feed.
pub const CHANGES: &str = "/internal/changes";
/// `GET`: the feed as server-sent events.
pub const STREAM: &str = "/internal/changes/stream";
/// A comment line goes out after this long without an entry (issue 13: 15 s).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// What the feed's routes use; registered by the binary beside `InternalState`.
#[derive(Clone)]
pub struct ChangesState {
    feed: Arc<dyn ChangeFeed>,
    heartbeat: Duration,
}

impl ChangesState {
    /// State over a feed (the store's, or a fake), with the [`HEARTBEAT`].
    pub fn new(feed: Arc<dyn ChangeFeed>) -> Self {
        Self {
            feed,
            heartbeat: HEARTBEAT,
        }
    }

    /// The same state with another heartbeat interval (tests; at least 1 ms).
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat.max(Duration::from_millis(1));
        self
    }
}

impl std::fmt::Debug for ChangesState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangesState")
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// Mounts the feed's routes inside the `/internal` scope.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(crate::internal::PREFIX, CHANGES)
            .route(route(Method::GET, CHANGES).to(changes))
            .default_service(web::to(crate::internal::not_allowed("GET"))),
    )
    .service(
        resource(crate::internal::PREFIX, STREAM)
            .route(route(Method::GET, STREAM).to(stream))
            .default_service(web::to(crate::internal::not_allowed("GET"))),
    );
}

#[derive(Deserialize)]
pub(crate) struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
    calendar_id: Option<String>,
    user_id: Option<String>,
    wait: Option<String>,
}

impl utoipa::IntoParams for FeedQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        use crate::openapi::{integer, query};
        vec![
            query(
                "after",
                "Entries after this cursor (`next_cursor` of the previous page, an entry's `cursor`, or `0` for everything kept). Absent: from now, no history.",
                ChangeCursor::schema(),
            ),
            query(
                "limit",
                "Entries per page (per read, on the stream).",
                integer(1, MAX_LIMIT.into(), DEFAULT_LIMIT.into()),
            ),
            query(
                "calendar_id",
                "Only entries of this calendar.",
                CalendarId::schema(),
            ),
            query(
                "user_id",
                "Only entries of this user's calendars.",
                UserId::schema(),
            ),
            query(
                "wait",
                "Seconds to hold the request while no entry matches (long poll). Checked on the stream too, where it has no effect.",
                integer(0, MAX_WAIT.as_secs(), 0),
            ),
        ]
    }
}

/// The query's filters and cursor; `wait` as given (validated).
fn feed_query(req: &HttpRequest) -> Result<(ChangeQuery, Duration), ApiError> {
    let raw: FeedQuery = parse_query(req)?;
    let after = raw
        .after
        .as_deref()
        .map(ChangeCursor::parse)
        .transpose()
        .map_err(|e| ApiError::Invalid(format!("after: {e}")))?;
    let limit = page_limit(raw.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let wait = match raw.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|w| *w <= MAX_WAIT)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "wait must be a whole number of seconds from 0 to {}",
                    MAX_WAIT.as_secs()
                ))
            })?,
    };
    let calendar_id = raw
        .calendar_id
        .as_deref()
        .map(CalendarId::parse)
        .transpose()
        .map_err(|e| ApiError::Invalid(format!("calendar_id: {e}")))?;
    let user_id = raw
        .user_id
        .map(UserId::parse)
        .transpose()
        .map_err(|e| ApiError::Invalid(format!("user_id: {e}")))?;
    Ok((
        ChangeQuery {
            after,
            limit,
            calendar_id,
            user_id,
        },
        wait,
    ))
}

fn feed_error(error: ChangeFeedError) -> ApiError {
    match error {
        expired @ ChangeFeedError::Expired { .. } => ApiError::CursorExpired(expired.to_string()),
        ChangeFeedError::Store(error) => {
            ApiError::store_unavailable("reading the change feed", error)
        }
    }
}

fn state(admin: &Admin, req: &HttpRequest) -> Result<web::Data<ChangesState>, ApiError> {
    let _ = admin;
    req.app_data::<web::Data<ChangesState>>()
        .cloned()
        .ok_or(ApiError::NotFound)
}

/// `GET /internal/changes`: `{"changes": [...], "next_cursor": "..."}`.
#[utoipa::path(
    get,
    path = CHANGES,
    tag = "internal",
    operation_id = "listChanges",
    summary = "The change feed: every change applied to the mirror and calendar transitions, in order",
    description = "Entries are ordered by position; a consumer that always continues from `next_cursor` never misses an entry and sees each calendar's entries in the order they were applied. With `wait`, an empty answer is held until an entry arrives (long poll), woken by PostgreSQL `NOTIFY` across instances. See docs/change-feed.md.",
    params(FeedQuery),
    responses(
        (status = 200, description = "A page of entries (possibly empty); continue with `after=<next_cursor>`, also when `changes` is empty.", body = ChangePage),
        (status = 400, description = "Invalid `after` (a cursor this feed did not issue), `limit`, `wait`, `calendar_id` or `user_id`.", body = crate::error::ErrorBody),
        (status = 410, description = "The cursor is older than `change_retention_hours`: entries after it were removed. The detail says to resync from the events API and follow the feed from a new cursor.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn changes(admin: Admin, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&admin, &req)?;
    let (query, wait) = feed_query(&req)?;
    let page = state.feed.changes(&query, wait).await.map_err(feed_error)?;
    Ok(HttpResponse::Ok().json(page))
}

/// One server-sent event for an entry: `id:` is its cursor.
fn event_frame(entry: &ChangeEntry) -> web::Bytes {
    // An entry always serialises (plain data); should it not, the consumer
    // still gets the id and an empty object rather than a broken stream.
    let data = serde_json::to_string(entry).unwrap_or_else(|_| "{}".to_owned());
    web::Bytes::from(format!("id: {}\ndata: {data}\n\n", entry.cursor))
}

/// Where the stream is.
struct StreamState {
    feed: Arc<dyn ChangeFeed>,
    query: ChangeQuery,
    pending: VecDeque<ChangeEntry>,
    heartbeat: Duration,
    done: bool,
}

/// `GET /internal/changes/stream`: `text/event-stream`. `Last-Event-ID`
/// (sent by an `EventSource` reconnecting) takes precedence over `after`.
#[utoipa::path(
    get,
    path = STREAM,
    tag = "internal",
    operation_id = "streamChanges",
    summary = "The change feed as server-sent events",
    description = "Each entry is one event: `id:` is its cursor, `data:` the entry as JSON (a `Change`). A comment line (`: heartbeat`) is sent after 15 s without an entry. Resume with `Last-Event-ID` (what `EventSource` sends on reconnect; it takes precedence over `after`). Should the stream fail after it started, an `event: error` with a `detail` ends it.",
    params(
        FeedQuery,
        ("Last-Event-ID" = Option<ChangeCursor>, Header, nullable = false, description = "The cursor of the last event received; one this feed did not issue: 400."),
    ),
    responses(
        (status = 200, description = "An endless `text/event-stream`.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Invalid `after`, `Last-Event-ID`, `limit`, `wait`, `calendar_id` or `user_id`.", body = crate::error::ErrorBody),
        (status = 410, description = "The cursor is older than `change_retention_hours`: entries after it were removed. The detail says to resync from the events API and follow the feed from a new cursor.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn stream(admin: Admin, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = state(&admin, &req)?;
    let (mut query, _) = feed_query(&req)?;
    if let Some(last) = req.headers().get("last-event-id") {
        let last = last
            .to_str()
            .ok()
            .map(ChangeCursor::parse)
            .and_then(Result::ok)
            .ok_or_else(|| {
                ApiError::Invalid("Last-Event-ID is not a cursor of this feed".into())
            })?;
        query.after = Some(last);
    }
    // The first read answers a stale cursor with a real 410 and fixes "now".
    let ChangePage {
        changes,
        next_cursor,
    } = state
        .feed
        .changes(&query, Duration::ZERO)
        .await
        .map_err(feed_error)?;
    query.after = Some(next_cursor);
    let start = StreamState {
        feed: Arc::clone(&state.feed),
        query,
        pending: changes.into(),
        heartbeat: state.heartbeat,
        done: false,
    };
    let opened = futures::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(b": connected\n\n"))
    });
    let entries = futures::stream::unfold(start, |mut state| async move {
        if state.done {
            return None;
        }
        if let Some(entry) = state.pending.pop_front() {
            return Some((Ok::<_, actix_web::Error>(event_frame(&entry)), state));
        }
        match state.feed.changes(&state.query, state.heartbeat).await {
            Ok(page) => {
                state.query.after = Some(page.next_cursor);
                if page.changes.is_empty() {
                    return Some((Ok(web::Bytes::from_static(b": heartbeat\n\n")), state));
                }
                state.pending = page.changes.into();
                let first = state.pending.pop_front().map_or_else(
                    || web::Bytes::from_static(b": heartbeat\n\n"),
                    |entry| event_frame(&entry),
                );
                Some((Ok(first), state))
            }
            Err(error) => {
                // Headers are sent: say why in the stream, then end it; the
                // consumer reconnects and gets a proper status.
                tracing::warn!(%error, "change feed stream ended");
                state.done = true;
                let detail = serde_json::json!({ "detail": error.to_string() });
                Some((
                    Ok(web::Bytes::from(format!(
                        "event: error\ndata: {detail}\n\n"
                    ))),
                    state,
                ))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Never compressed or buffered on the way out.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::StreamExt::chain(opened, entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_is_fifteen_seconds_unless_a_test_shortens_it() {
        let feed = Arc::new(sync_domain::fakes::FakeChangeFeed::default());
        let state = ChangesState::new(feed);
        assert_eq!(state.heartbeat, Duration::from_secs(15));
        assert_eq!(
            state
                .clone()
                .with_heartbeat(Duration::from_millis(50))
                .heartbeat,
            Duration::from_millis(50)
        );
        assert_eq!(
            state.with_heartbeat(Duration::ZERO).heartbeat,
            Duration::from_millis(1),
            "a zero interval would spin"
        );
    }
}
