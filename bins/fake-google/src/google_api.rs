//! Google's endpoints, answering with the shapes of the discovery document:
//! `POST /token`, and under `/calendar/v3`: `events.list`, `events.watch`,
//! `channels.stop`, `calendarList.list`. A bearer token names the user (see
//! the token convention in `docs/fake-google.md`).

use crate::FakeGoogle;
use crate::{Refusal, lock};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery, GoogleError, WatchRequest};
use sync_domain::ids::{ChannelId, GoogleCalendarId, ResourceId, UserId};
use sync_domain::notification::ResourceState;
use sync_domain::secret::ChannelToken;

/// `expires_in` of every access token, as Google answers.
pub const ACCESS_TOKEN_LIFETIME_SECS: u64 = 3599;
/// The scope reported with every access token.
const SCOPE: &str = "https://www.googleapis.com/auth/calendar";
/// Channel lifetime when `params.ttl` is absent (Google's default is a week).
const DEFAULT_TTL: Duration = Duration::from_secs(604_800);
/// How long `events.watch` waits for the handshake's answer before answering anyway.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);
/// `events.list` parameters Google refuses together with `syncToken`.
const NOT_WITH_SYNC_TOKEN: [&str; 8] = [
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// Registers `/token` and `/calendar/v3/...`.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/token", web::post().to(token)).service(
        web::scope("/calendar/v3")
            .route(
                "/calendars/{calendar_id}/events",
                web::get().to(list_events),
            )
            .route(
                "/calendars/{calendar_id}/events/watch",
                web::post().to(watch),
            )
            .route("/channels/stop", web::post().to(stop_channel))
            .route("/users/me/calendarList", web::get().to(list_calendars)),
    );
}

/// Google's error body: `{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}`.
pub fn error_response(status: u16, domain: &str, reason: &str, message: &str) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(json!({"error": {
        "errors": [{"domain": domain, "reason": reason, "message": message}],
        "code": status,
        "message": message,
    }}))
}

/// A [`GoogleError`] from the model as Google's HTTP answer.
pub fn google_error(error: &GoogleError) -> HttpResponse {
    match error {
        GoogleError::FullSyncRequired => error_response(
            410,
            "global",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        ),
        GoogleError::RateLimited { retry_after } => {
            let mut response = error_response(
                403,
                "usageLimits",
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            );
            if let Some(delay) = retry_after
                && let Ok(value) = HeaderValue::from_str(&delay.as_secs().to_string())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        GoogleError::Unauthorized | GoogleError::InvalidGrant | GoogleError::NoCredentials => {
            unauthorized()
        }
        GoogleError::NotFound => error_response(404, "global", "notFound", "Not Found"),
        GoogleError::PushNotSupported => error_response(
            403,
            "global",
            "pushNotSupportedForRequestedResource",
            "Push notifications are not supported by this resource.",
        ),
        GoogleError::Transient(_) => error_response(503, "global", "backendError", "Backend Error"),
        GoogleError::Other {
            status,
            reason,
            message,
        } => error_response(*status, "global", reason, message),
    }
}

/// 401 `authError`, as Google answers a missing, unknown or expired bearer token.
fn unauthorized() -> HttpResponse {
    let mut response = error_response(401, "global", "authError", "Invalid Credentials");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
    );
    response
}

fn bad_request(reason: &str, message: &str) -> HttpResponse {
    error_response(400, "global", reason, message)
}

/// The user the request's bearer token was issued to.
fn caller(google: &FakeGoogle, request: &HttpRequest) -> Result<UserId, Refusal> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| lock(&google.inner.tokens).user_of(token.trim()))
        .ok_or_else(|| Box::new(unauthorized()))
}

fn calendar_id(raw: &str) -> Result<GoogleCalendarId, Refusal> {
    GoogleCalendarId::parse(raw)
        .map_err(|_| Box::new(error_response(404, "global", "notFound", "Not Found")))
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
}

/// `POST /token`: the refresh-token grant.
async fn token(google: web::Data<FakeGoogle>, form: web::Form<TokenForm>) -> HttpResponse {
    let form = form.into_inner();
    if form.grant_type.as_deref() != Some("refresh_token") {
        lock(&google.inner.tokens).requests += 1;
        return HttpResponse::BadRequest().json(json!({
            "error": "unsupported_grant_type",
            "error_description": "Invalid grant_type: only refresh_token is supported by the fake"}));
    }
    if form.client_id.as_deref().is_none_or(str::is_empty) {
        lock(&google.inner.tokens).requests += 1;
        return HttpResponse::Unauthorized()
            .json(json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}));
    }
    let refreshed = lock(&google.inner.tokens).refresh(form.refresh_token.as_deref().unwrap_or(""));
    match refreshed {
        Some((access_token, user)) => {
            tracing::info!(user = %user, "access token issued");
            HttpResponse::Ok()
                .insert_header((
                    header::CACHE_CONTROL,
                    "no-cache, no-store, max-age=0, must-revalidate",
                ))
                .json(json!({
                    "access_token": access_token,
                    "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
                    "scope": SCOPE,
                    "token_type": "Bearer",
                }))
        }
        None => {
            tracing::info!("refresh token refused (invalid_grant)");
            HttpResponse::BadRequest().json(json!({
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked."}))
        }
    }
}

/// `GET /calendar/v3/calendars/{calendarId}/events`.
async fn list_events(
    google: web::Data<FakeGoogle>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let user = match caller(&google, &request) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let calendar = match calendar_id(&path) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let sync_token = query.get("syncToken").cloned();
    if sync_token.is_some()
        && let Some(name) = NOT_WITH_SYNC_TOKEN
            .iter()
            .find(|name| query.contains_key(**name))
    {
        return bad_request(
            "invalid",
            &format!("{name} is not allowed together with syncToken"),
        );
    }
    let max_results = match query.get("maxResults").map(|value| value.parse::<u32>()) {
        None => 250,
        Some(Ok(n)) if n >= 1 => n.min(google_client::MAX_EVENTS_PAGE),
        Some(_) => return bad_request("invalid", "Invalid value for maxResults"),
    };
    let show_deleted = query
        .get("showDeleted")
        .is_some_and(|value| value == "true");
    let events_query = EventsQuery {
        sync_token: sync_token.clone(),
        page_token: query.get("pageToken").cloned(),
        max_results,
    };
    let page = match google
        .calendar()
        .list_events(&user, &calendar, &events_query)
        .await
    {
        Ok(page) => page,
        Err(error) => return google_error(&error),
    };
    // Without a sync token, cancelled events are listed only with showDeleted=true.
    let keep_cancelled = show_deleted || sync_token.is_some();
    let items: Vec<Value> = page
        .items
        .into_iter()
        .filter(|event| keep_cancelled || !event.status.is_cancelled())
        .map(|event| event.raw)
        .collect();
    let updated = items
        .iter()
        .filter_map(|item| item.get("updated").and_then(Value::as_str))
        .max()
        .map_or_else(|| "1970-01-01T00:00:00.000Z".to_owned(), str::to_owned);
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"fake-{}\"", items.len()),
        "summary": calendar.as_str(),
        "description": "",
        "updated": updated,
        "timeZone": "UTC",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items,
    });
    if let Some(token) = page.next_page_token {
        body["nextPageToken"] = json!(token);
    }
    if let Some(token) = page.next_sync_token {
        body["nextSyncToken"] = json!(token);
    }
    HttpResponse::Ok().json(body)
}

/// The `Channel` resource `events.watch` receives.
#[derive(Deserialize)]
struct WatchBody {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    address: Option<String>,
    token: Option<String>,
    #[serde(default)]
    params: HashMap<String, String>,
}

/// `POST /calendar/v3/calendars/{calendarId}/events/watch`.
async fn watch(
    google: web::Data<FakeGoogle>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<WatchBody>,
) -> HttpResponse {
    let user = match caller(&google, &request) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let calendar = match calendar_id(&path) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let body = body.into_inner();
    let Some(channel_id) = body.id.and_then(|id| ChannelId::parse(id).ok()) else {
        return bad_request("required", "Required channel id (at most 64 characters)");
    };
    if !body
        .kind
        .as_deref()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("web_hook"))
    {
        return bad_request(
            "invalid",
            "Invalid channel type: only web_hook is supported",
        );
    }
    let Some(address) = body.address.filter(|address| address.starts_with("http")) else {
        return bad_request("required", "Required channel address");
    };
    let ttl = match body.params.get("ttl").map(|ttl| ttl.parse::<u64>()) {
        None => DEFAULT_TTL,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => return bad_request("invalid", "Invalid value for params.ttl"),
    };
    let token = body.token.unwrap_or_default();
    let watch_request = WatchRequest {
        channel_id: channel_id.clone(),
        token: ChannelToken::new(token.clone()),
        address: address.clone(),
        ttl,
    };
    let granted = match google
        .calendar()
        .watch(&user, &calendar, &watch_request)
        .await
    {
        Ok(granted) => granted,
        Err(error) => return google_error(&error),
    };
    let resource_uri = google.resource_uri(&calendar);
    tracing::info!(user = %user, calendar = %calendar, channel_id = %channel_id, address, "channel opened");
    if let Some(watched) = google
        .calendar()
        .watches()
        .into_iter()
        .rev()
        .find(|w| w.granted.channel_id == channel_id)
    {
        let handshake = google
            .pusher()
            .prepare(&watched, &ResourceState::Sync, &resource_uri);
        if google.settings().handshake_before_response {
            let pusher = google.pusher().clone();
            let sending = tokio::spawn(async move { pusher.send(handshake).await });
            // Answer anyway if the receiver is slow: Google does not wait forever either.
            let _ = tokio::time::timeout(HANDSHAKE_WAIT, sending).await;
        } else {
            google.pusher().send_in_background(handshake);
        }
    }
    let mut channel = json!({
        "kind": "api#channel",
        "id": channel_id.as_str(),
        "resourceId": granted.resource_id.as_str(),
        "resourceUri": resource_uri,
    });
    if !token.is_empty() {
        channel["token"] = json!(token);
    }
    if let Some(expires_at) = granted.expires_at {
        let millis = expires_at.unix_timestamp_nanos() / 1_000_000;
        channel["expiration"] = json!(millis.to_string());
    }
    HttpResponse::Ok().json(channel)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopBody {
    id: Option<String>,
    resource_id: Option<String>,
}

/// `POST /calendar/v3/channels/stop`: 204, or 404 for a channel the caller did not open (or already stopped).
async fn stop_channel(
    google: web::Data<FakeGoogle>,
    request: HttpRequest,
    body: web::Json<StopBody>,
) -> HttpResponse {
    let user = match caller(&google, &request) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let body = body.into_inner();
    let (Some(channel_id), Some(resource_id)) = (
        body.id.and_then(|id| ChannelId::parse(id).ok()),
        body.resource_id.and_then(|id| ResourceId::parse(id).ok()),
    ) else {
        return bad_request("required", "Required parameters: id and resourceId");
    };
    let was_open = google
        .calendar()
        .open_channels()
        .iter()
        .any(|open| open.channel_id == channel_id && open.resource_id == resource_id)
        && google
            .calendar()
            .watches()
            .iter()
            .any(|w| w.granted.channel_id == channel_id && w.user_id == user);
    if !was_open {
        // Counted like Google counts a failed call; the model is not told.
        return error_response(
            404,
            "global",
            "notFound",
            &format!("Channel '{channel_id}' not found for project 'fake-google'"),
        );
    }
    match google
        .calendar()
        .stop_channel(&user, &channel_id, &resource_id)
        .await
    {
        Ok(()) => {
            tracing::info!(user = %user, channel_id = %channel_id, "channel stopped");
            HttpResponse::NoContent().finish()
        }
        Err(error) => google_error(&error),
    }
}

/// `GET /calendar/v3/users/me/calendarList` (`maxResults`, `pageToken`).
async fn list_calendars(
    google: web::Data<FakeGoogle>,
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let user = match caller(&google, &request) {
        Ok(user) => user,
        Err(response) => return *response,
    };
    let entries = match google.calendar().list_calendars(&user).await {
        Ok(entries) => entries,
        Err(error) => return google_error(&error),
    };
    let page_size = query
        .get("maxResults")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 250);
    let start = match query.get("pageToken") {
        None => 0,
        Some(token) => match token
            .strip_prefix("fake-calendars:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(start) => start,
            None => return bad_request("invalid", "Invalid page token value."),
        },
    };
    let items: Vec<Value> = entries
        .iter()
        .skip(start)
        .take(page_size)
        .map(|entry| {
            let mut item = json!({
                "kind": "calendar#calendarListEntry",
                "etag": format!("\"fake-{}\"", entry.id),
                "id": entry.id.as_str(),
                "summary": entry.summary,
                "timeZone": "UTC",
                "accessRole": entry.access_role,
                "defaultReminders": [],
            });
            if entry.primary {
                item["primary"] = json!(true);
            }
            item
        })
        .collect();
    let mut body = json!({
        "kind": "calendar#calendarList",
        "etag": "\"fake-calendar-list\"",
        "items": items,
    });
    if start + page_size < entries.len() {
        body["nextPageToken"] = json!(format!("fake-calendars:{}", start + page_size));
    } else {
        body["nextSyncToken"] = json!("fake-calendar-list-sync");
    }
    HttpResponse::Ok().json(body)
}
