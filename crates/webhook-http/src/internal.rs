//! The internal API (SPEC section 5): `/internal/*`, for other Chronos services
//! and operators, behind `Authorization: Bearer <admin_token>`.
//!
//! - No admin token configured: every `/internal` path answers 404, as if the
//!   API did not exist.
//! - Token missing, malformed or wrong (compared in constant time): 401 with
//!   `WWW-Authenticate: Bearer`. Authentication comes before anything else,
//!   method and path checks included, so an unauthenticated caller learns nothing.
//! - A calendar id that is not a UUID names no calendar: 404, like an unknown one.
//! - Invalid bodies and query parameters: 400 with a `detail` saying what is wrong.

use crate::error::ApiError;
use crate::routes::{resource, route};
use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::future::{Ready, ready};
use std::sync::Arc;
use sync_domain::admin::{
    CalendarAdmin, CalendarView, EventCursor, EventView, StopOutcome, stop_channel,
};
use sync_domain::calendar::CalendarApi;
use sync_domain::ports::{Clock, StoreError};
use sync_domain::{CalendarId, GoogleCalendarId, RefreshToken, UserId};
use utoipa::PartialSchema as _;
use utoipa::openapi::path::{Parameter, ParameterIn};

/// Where the internal API is mounted.
pub const PREFIX: &str = "/internal";
/// Events per page when `limit` is not given.
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;
/// Channel stops at Google (here on disconnect, and by the channel worker), by
/// `outcome`: `stopped`, `retry` (left for the worker), `error` (the store failed).
pub const STOPS_METRIC: &str = "chronos_channel_stops_total";
/// Largest `limit` accepted.
pub const MAX_EVENTS_LIMIT: u32 = 1000;

/// What the internal API uses: the admin port, Google (to stop channels on
/// disconnect), the clock, and the admin token (`None`: the API is off).
#[derive(Clone)]
pub struct InternalState {
    admin: Arc<dyn CalendarAdmin>,
    calendar: Arc<dyn CalendarApi>,
    clock: Arc<dyn Clock>,
    admin_token: Option<String>,
}

impl InternalState {
    /// State for the internal API; `admin_token` `None` turns it off (404 everywhere).
    pub fn new(
        admin: Arc<dyn CalendarAdmin>,
        calendar: Arc<dyn CalendarApi>,
        clock: Arc<dyn Clock>,
        admin_token: Option<String>,
    ) -> Self {
        Self {
            admin,
            calendar,
            clock,
            admin_token,
        }
    }
}

impl std::fmt::Debug for InternalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalState")
            .field("enabled", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Proof that the request carried the admin token; every handler takes one.
#[derive(Debug)]
pub struct Admin(web::Data<InternalState>);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Admin, ApiError> {
    let state = req
        .app_data::<web::Data<InternalState>>()
        .cloned()
        .ok_or(ApiError::NotFound)?;
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::NotFound);
    };
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized);
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError::Unauthorized)?;
    if constant_time_eq::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(Admin(state))
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// `PUT`: a user's Google credentials.
const CREDENTIALS: &str = "/internal/users/{user_id}/google-credentials";
/// `GET` (list), `POST` (connect).
const CALENDARS: &str = "/internal/calendars";
/// `GET` (show), `DELETE` (disconnect).
const CALENDAR: &str = "/internal/calendars/{id}";
/// `GET`: mirrored events.
const EVENTS: &str = "/internal/calendars/{id}/events";
/// `POST`: request a sync.
const SYNC: &str = "/internal/calendars/{id}/sync";

/// Mounts `/internal/*`; the app must hold a `web::Data<InternalState>`.
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(PREFIX)
            .service(
                resource(PREFIX, CREDENTIALS)
                    .route(route(Method::PUT, CREDENTIALS).to(put_credentials))
                    .default_service(web::to(not_allowed("PUT"))),
            )
            .service(
                resource(PREFIX, CALENDARS)
                    .route(route(Method::POST, CALENDARS).to(connect))
                    .route(route(Method::GET, CALENDARS).to(list))
                    .default_service(web::to(not_allowed("GET, POST"))),
            )
            .service(
                resource(PREFIX, CALENDAR)
                    .route(route(Method::GET, CALENDAR).to(show))
                    .route(route(Method::DELETE, CALENDAR).to(disconnect))
                    .default_service(web::to(not_allowed("GET, DELETE"))),
            )
            .service(
                resource(PREFIX, EVENTS)
                    .route(route(Method::GET, EVENTS).to(events))
                    .default_service(web::to(not_allowed("GET"))),
            )
            .service(
                resource(PREFIX, SYNC)
                    .route(route(Method::POST, SYNC).to(sync))
                    .default_service(web::to(not_allowed("POST"))),
            )
            .configure(crate::changes::configure)
            .default_service(web::to(unknown_path)),
    );
}

/// 405 for an authenticated caller; 401/404 otherwise, like every other route.
pub(crate) fn not_allowed(
    allow: &'static str,
) -> impl Fn(Admin) -> Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move |_admin| ready(Err(ApiError::MethodNotAllowed { allow }))
}

async fn unknown_path(_admin: Admin) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The body as a JSON value, so every object's keys go out sorted: the list
/// and page bodies have always been written that way (the single calendar of
/// `show` and `connect` in field order), and the wire keeps its bytes.
fn keys_sorted(body: &impl Serialize) -> serde_json::Value {
    // Plain data: serialising it cannot fail.
    serde_json::to_value(body).unwrap_or_default()
}

fn store_error(context: &str, error: StoreError) -> ApiError {
    ApiError::store_unavailable(context, error)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// The query string as `T`: 400 saying what is wrong when it does not fit.
pub(crate) fn parse_query<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::Invalid(format!("invalid query: {e}")))
}

/// A page size as given in `limit` (`default` when absent): 400 unless an
/// integer from 1 to `max`.
pub(crate) fn page_limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(text) = raw else {
        return Ok(default);
    };
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::Invalid(format!("limit must be an integer from 1 to {max}")))
}

fn calendar_id(raw: &str) -> Result<CalendarId, ApiError> {
    CalendarId::parse(raw).map_err(|_| ApiError::CalendarNotFound)
}

fn user_id(raw: String) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// `PUT /internal/users/{user_id}/google-credentials`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Credentials)]
pub(crate) struct CredentialsBody {
    /// The user's OAuth refresh token (a secret; never logged). Not blank.
    #[schema(min_length = 1, pattern = "\\S")]
    refresh_token: String,
}

/// `PUT /internal/users/{user_id}/google-credentials`: 204.
#[utoipa::path(
    put,
    path = CREDENTIALS,
    tag = "internal",
    operation_id = "putCredentials",
    summary = "Store or replace a user's Google refresh token",
    description = "Encrypted at rest. Clears a `needs_reauth` mark; the user's calendars are synced again. The body is read as JSON whatever its `Content-Type`.",
    params(("user_id" = UserId, Path, description = "The Chronos user id.")),
    request_body(content = CredentialsBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Stored."),
        (status = 400, description = "Invalid JSON body, blank `refresh_token`, or invalid `user_id`.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn put_credentials(
    admin: Admin,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let user = user_id(path.into_inner())?;
    let body: CredentialsBody = parse_body(&body)?;
    if body.refresh_token.trim().is_empty() {
        return Err(ApiError::Invalid("refresh_token must not be empty".into()));
    }
    admin
        .0
        .admin
        .put_credentials(&user, &RefreshToken::new(body.refresh_token))
        .await
        .map_err(|e| store_error("storing credentials", e))?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /internal/calendars`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Connect)]
pub(crate) struct ConnectBody {
    /// The Chronos user who owns the calendar.
    #[schema(value_type = UserId)]
    user_id: String,
    /// Google's calendar id.
    #[schema(value_type = GoogleCalendarId, example = "primary")]
    google_calendar_id: String,
}

/// `POST /internal/calendars`: 201 (new) or 200 (already connected).
#[utoipa::path(
    post,
    path = CALENDARS,
    tag = "internal",
    operation_id = "connectCalendar",
    summary = "Connect a calendar",
    description = "The initial full sync and the channel registration follow in the background. Connecting the same pair again returns the existing calendar (200). The body is read as JSON whatever its `Content-Type`.",
    request_body(content = ConnectBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Connected.", body = CalendarView,
            headers(("Location" = String, description = "`/internal/calendars/{id}`."))),
        (status = 200, description = "Already connected: the existing calendar.", body = CalendarView),
        (status = 400, description = "Invalid JSON body, `user_id` or `google_calendar_id`.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn connect(admin: Admin, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let body: ConnectBody = parse_body(&body)?;
    let user = user_id(body.user_id)?;
    let google = GoogleCalendarId::parse(body.google_calendar_id)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let (calendar, created) = admin
        .0
        .admin
        .connect(&user, &google)
        .await
        .map_err(|e| store_error("connecting a calendar", e))?;
    Ok(if created {
        HttpResponse::Created()
            .insert_header((
                header::LOCATION,
                format!("{PREFIX}/calendars/{}", calendar.id),
            ))
            .json(calendar)
    } else {
        HttpResponse::Ok().json(calendar)
    })
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    user_id: Option<String>,
}

impl utoipa::IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![crate::openapi::query(
            "user_id",
            "Only this user's calendars; absent: every calendar.",
            UserId::schema(),
        )]
    }
}

/// `GET /internal/calendars`'s body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CalendarList)]
pub(crate) struct CalendarList {
    /// The calendars.
    calendars: Vec<CalendarView>,
}

/// `GET /internal/calendars?user_id=`: one user's calendars (all without `user_id`).
#[utoipa::path(
    get,
    path = CALENDARS,
    tag = "internal",
    operation_id = "listCalendars",
    summary = "List connected calendars (all, or one user's)",
    params(ListQuery),
    responses(
        (status = 200, description = "The calendars.", body = CalendarList),
        (status = 400, description = "Invalid query, or an invalid `user_id` (an empty one included).", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn list(admin: Admin, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query: ListQuery = parse_query(&req)?;
    let user = query.user_id.map(user_id).transpose()?;
    let calendars = admin
        .0
        .admin
        .calendars(user.as_ref())
        .await
        .map_err(|e| store_error("listing calendars", e))?;
    Ok(HttpResponse::Ok().json(keys_sorted(&CalendarList { calendars })))
}

/// `GET /internal/calendars/{id}`.
#[utoipa::path(
    get,
    path = CALENDAR,
    tag = "internal",
    operation_id = "showCalendar",
    summary = "One calendar",
    params(("id" = CalendarId, Path, description = "The calendar's id; any text that is not a UUID names no calendar (404).")),
    responses(
        (status = 200, description = "The calendar.", body = CalendarView),
        (status = 404, description = "No such calendar (`Calendar not found`), or no admin token is configured.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn show(admin: Admin, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = calendar_id(&path)?;
    let calendar = admin
        .0
        .admin
        .calendar(id)
        .await
        .map_err(|e| store_error("reading a calendar", e))?
        .ok_or(ApiError::CalendarNotFound)?;
    Ok(HttpResponse::Ok().json(calendar))
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl utoipa::IntoParams for EventsQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            crate::openapi::query(
                "limit",
                "Events per page.",
                crate::openapi::integer(1, MAX_EVENTS_LIMIT.into(), DEFAULT_EVENTS_LIMIT.into()),
            ),
            crate::openapi::query(
                "cursor",
                "`next_cursor` of the previous page; absent: the first page.",
                EventCursor::schema(),
            ),
        ]
    }
}

/// `GET /internal/calendars/{id}/events`'s body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EventPage)]
pub(crate) struct EventPage {
    /// The events, by Google event id.
    events: Vec<EventView>,
    /// Where the next page starts; null on the last page.
    #[schema(value_type = Option<EventCursor>, required = true)]
    next_cursor: Option<String>,
}

/// `GET /internal/calendars/{id}/events?limit=&cursor=`: keyset pages by event id.
#[utoipa::path(
    get,
    path = EVENTS,
    tag = "internal",
    operation_id = "listEvents",
    summary = "Mirrored events that are not cancelled, by Google event id",
    params(
        ("id" = CalendarId, Path, description = "The calendar's id; any text that is not a UUID names no calendar (404)."),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "A page of events.", body = EventPage),
        (status = 400, description = "Invalid `limit`, or a `cursor` this API did not issue.", body = crate::error::ErrorBody),
        (status = 404, description = "No such calendar (`Calendar not found`), or no admin token is configured.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn events(
    admin: Admin,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = calendar_id(&path)?;
    let query: EventsQuery = parse_query(&req)?;
    let limit = page_limit(
        query.limit.as_deref(),
        DEFAULT_EVENTS_LIMIT,
        MAX_EVENTS_LIMIT,
    )?;
    let cursor = query
        .cursor
        .as_deref()
        .map(EventCursor::parse)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    // One extra row tells whether another page follows.
    let mut page = admin
        .0
        .admin
        .events(id, limit + 1, cursor.as_ref())
        .await
        .map_err(|e| store_error("reading events", e))?
        .ok_or(ApiError::CalendarNotFound)?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let next_cursor = page
        .last()
        .filter(|_| more)
        .map(|last| EventCursor::after(&last.id).encode());
    Ok(HttpResponse::Ok().json(keys_sorted(&EventPage {
        events: page,
        next_cursor,
    })))
}

/// `POST /internal/calendars/{id}/sync`: 202.
#[utoipa::path(
    post,
    path = SYNC,
    tag = "internal",
    operation_id = "requestSync",
    summary = "Request a sync now",
    params(("id" = CalendarId, Path, description = "The calendar's id; any text that is not a UUID names no calendar (404).")),
    responses(
        (status = 202, description = "Requested; a worker performs it.", body = crate::openapi::Empty),
        (status = 404, description = "No such calendar (`Calendar not found`), or no admin token is configured.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn sync(admin: Admin, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = calendar_id(&path)?;
    let found = admin
        .0
        .admin
        .request_sync(id)
        .await
        .map_err(|e| store_error("requesting a sync", e))?;
    if !found {
        return Err(ApiError::CalendarNotFound);
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({})))
}

/// `DELETE /internal/calendars/{id}`: 204 once the state and events are gone.
/// Its channels are stopped at Google right away when possible; one that
/// cannot be stopped now stays `retiring` for the channel worker.
#[utoipa::path(
    delete,
    path = CALENDAR,
    tag = "internal",
    operation_id = "disconnectCalendar",
    summary = "Disconnect a calendar",
    description = "Stops its channel at Google (or leaves it to the channel worker if that fails now), deletes its state and mirrored events.",
    params(("id" = CalendarId, Path, description = "The calendar's id; any text that is not a UUID names no calendar (404).")),
    responses(
        (status = 204, description = "Disconnected."),
        (status = 404, description = "No such calendar (`Calendar not found`), or no admin token is configured.", body = crate::error::ErrorBody),
    ),
)]
pub(crate) async fn disconnect(
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = calendar_id(&path)?;
    let state = &admin.0;
    let channels = state
        .admin
        .disconnect(id)
        .await
        .map_err(|e| store_error("disconnecting a calendar", e))?
        .ok_or(ApiError::CalendarNotFound)?;
    for channel in &channels {
        let outcome = stop_channel(
            state.admin.as_ref(),
            state.calendar.as_ref(),
            channel,
            state.clock.now(),
            0.5,
        )
        .await;
        let label = match &outcome {
            Ok(StopOutcome::Stopped) => sync_domain::channel::ChannelState::Stopped.as_str(),
            Ok(StopOutcome::RetryAt(_)) => "retry",
            Err(_) => "error",
        };
        metrics::counter!(STOPS_METRIC, "outcome" => label).increment(1);
        if let Err(error) = outcome {
            // The channel is retiring in the database: the worker stops it later.
            tracing::warn!(calendar_id = %id, channel_id = %channel.channel_id, %error, "stopping a channel on disconnect failed; left for the channel worker");
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
