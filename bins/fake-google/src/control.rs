//! The control API under `/fake/`, for people and tests: calendars, events,
//! sync-token invalidation, injected failures and delays, and what was called.
//! Changes to events are pushed to open channels like Google would.

use crate::FakeGoogle;
use crate::Refusal;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use google_client::fakes::FakeMethod;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use sync_domain::calendar::{CalendarListEntry, GoogleError};
use sync_domain::ids::{GoogleCalendarId, UserId};

/// Registers the `/fake/...` routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/fake")
            .route("/calendars", web::post().to(add_calendar))
            .route(
                "/users/{user}/calendars/{calendar}",
                web::delete().to(remove_calendar),
            )
            .route(
                "/users/{user}/calendars/{calendar}/events",
                web::get().to(list_events),
            )
            .route(
                "/users/{user}/calendars/{calendar}/events",
                web::post().to(create_event),
            )
            .route(
                "/users/{user}/calendars/{calendar}/events/bulk",
                web::post().to(bulk_create),
            )
            .route(
                "/users/{user}/calendars/{calendar}/events/{event}",
                web::put().to(put_event),
            )
            .route(
                "/users/{user}/calendars/{calendar}/events/{event}",
                web::delete().to(delete_event),
            )
            .route(
                "/users/{user}/calendars/{calendar}/invalidate-sync-tokens",
                web::post().to(invalidate_sync_tokens),
            )
            .route("/users/{user}/revoke", web::post().to(revoke_user))
            .route("/users/{user}/reinstate", web::post().to(reinstate_user))
            .route(
                "/users/{user}/expire-access-tokens",
                web::post().to(expire_access_tokens),
            )
            .route("/failures", web::post().to(inject_failures))
            .route("/settings", web::get().to(get_settings))
            .route("/settings", web::put().to(put_settings))
            .route("/channels", web::get().to(channels))
            .route("/notifications", web::get().to(notifications))
            .route("/calls", web::get().to(calls)),
    );
}

fn problem(status: actix_web::http::StatusCode, detail: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"detail": detail}))
}

fn ids(user: &str, calendar: &str) -> Result<(UserId, GoogleCalendarId), Refusal> {
    let user = UserId::parse(user)
        .map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, &e.to_string())))?;
    let calendar = GoogleCalendarId::parse(calendar)
        .map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, &e.to_string())))?;
    Ok((user, calendar))
}

fn calendar_exists(google: &FakeGoogle, user: &UserId, calendar: &GoogleCalendarId) -> bool {
    google
        .calendar()
        .current_sync_token(user, calendar)
        .is_some()
}

#[derive(Deserialize)]
struct NewCalendar {
    user_id: String,
    calendar_id: String,
    summary: Option<String>,
    #[serde(default)]
    primary: Option<bool>,
    push_supported: Option<bool>,
}

/// `POST /fake/calendars` `{"user_id", "calendar_id", "summary"?, "primary"?, "push_supported"?}` -> 201.
async fn add_calendar(google: web::Data<FakeGoogle>, body: web::Json<NewCalendar>) -> HttpResponse {
    let body = body.into_inner();
    let (user, calendar) = match ids(&body.user_id, &body.calendar_id) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let primary = body.primary.unwrap_or(calendar.as_str() == "primary");
    google.calendar().add_calendar_entry(
        &user,
        &CalendarListEntry {
            id: calendar.clone(),
            summary: Some(body.summary.unwrap_or_else(|| calendar.to_string())),
            primary,
            access_role: Some("owner".to_owned()),
        },
    );
    google
        .calendar()
        .set_push_supported(&user, &calendar, body.push_supported.unwrap_or(true));
    HttpResponse::Created().json(json!({
        "user_id": user.as_str(),
        "calendar_id": calendar.as_str(),
        "refresh_token": FakeGoogle::refresh_token_for(user.as_str()),
    }))
}

/// `DELETE /fake/users/{user}/calendars/{calendar}`: later calls about it get 404.
async fn remove_calendar(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    google.calendar().remove_calendar(&user, &calendar);
    HttpResponse::NoContent().finish()
}

/// `GET /fake/users/{user}/calendars/{calendar}/events`: everything the fake holds, cancelled included.
async fn list_events(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let Some(sync_token) = google.calendar().current_sync_token(&user, &calendar) else {
        return problem(StatusCode::NOT_FOUND, "no such calendar");
    };
    let events: Vec<Value> = google
        .calendar()
        .events(&user, &calendar)
        .into_iter()
        .map(|event| event.raw)
        .collect();
    HttpResponse::Ok().json(json!({"events": events, "sync_token": sync_token}))
}

/// `POST /fake/users/{user}/calendars/{calendar}/events` (event JSON; `id` generated if absent) -> 201.
async fn create_event(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    if !body.is_object() {
        return problem(StatusCode::BAD_REQUEST, "an event is a JSON object");
    }
    HttpResponse::Created().json(google.put_event(&user, &calendar, body.into_inner()))
}

/// `PUT /fake/users/{user}/calendars/{calendar}/events/{event}` (event JSON) -> 200 with the stored event.
async fn put_event(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String, String)>,
    body: web::Json<Value>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let mut event = body.into_inner();
    let Some(fields) = event.as_object_mut() else {
        return problem(StatusCode::BAD_REQUEST, "an event is a JSON object");
    };
    fields.insert("id".into(), json!(path.2));
    HttpResponse::Ok().json(google.put_event(&user, &calendar, event))
}

/// `DELETE /fake/users/{user}/calendars/{calendar}/events/{event}`: cancels it; 204, or 404.
async fn delete_event(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String, String)>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    match google.delete_event(&user, &calendar, &path.2) {
        Some(_) => HttpResponse::NoContent().finish(),
        None => problem(StatusCode::NOT_FOUND, "no such event"),
    }
}

#[derive(Deserialize)]
struct Bulk {
    count: usize,
    prefix: Option<String>,
}

/// `POST /fake/users/{user}/calendars/{calendar}/events/bulk` `{"count": N, "prefix"?}` -> 201.
async fn bulk_create(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String)>,
    body: web::Json<Bulk>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    let prefix = body.prefix.clone().unwrap_or_else(|| "bulk".to_owned());
    google.bulk_create(&user, &calendar, &prefix, body.count);
    HttpResponse::Created().json(json!({
        "created": body.count,
        "first_id": format!("{prefix}{:06}", 0),
        "sync_token": google.calendar().current_sync_token(&user, &calendar),
    }))
}

/// `POST /fake/users/{user}/calendars/{calendar}/invalidate-sync-tokens`: the next incremental list gets 410.
async fn invalidate_sync_tokens(
    google: web::Data<FakeGoogle>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (user, calendar) = match ids(&path.0, &path.1) {
        Ok(ids) => ids,
        Err(response) => return *response,
    };
    if !calendar_exists(&google, &user, &calendar) {
        return problem(StatusCode::NOT_FOUND, "no such calendar");
    }
    google.calendar().invalidate_sync_tokens(&user, &calendar);
    HttpResponse::NoContent().finish()
}

fn user_id(raw: &str) -> Result<UserId, Refusal> {
    UserId::parse(raw).map_err(|e| Box::new(problem(StatusCode::BAD_REQUEST, &e.to_string())))
}

/// `POST /fake/users/{user}/revoke`: their refresh token now gets `invalid_grant`.
async fn revoke_user(google: web::Data<FakeGoogle>, path: web::Path<String>) -> HttpResponse {
    match user_id(&path) {
        Ok(user) => {
            google.revoke_user(&user);
            HttpResponse::NoContent().finish()
        }
        Err(response) => *response,
    }
}

/// `POST /fake/users/{user}/reinstate`: undoes a revoke.
async fn reinstate_user(google: web::Data<FakeGoogle>, path: web::Path<String>) -> HttpResponse {
    match user_id(&path) {
        Ok(user) => {
            google.reinstate_user(&user);
            HttpResponse::NoContent().finish()
        }
        Err(response) => *response,
    }
}

/// `POST /fake/users/{user}/expire-access-tokens`: their next API call gets 401.
async fn expire_access_tokens(
    google: web::Data<FakeGoogle>,
    path: web::Path<String>,
) -> HttpResponse {
    match user_id(&path) {
        Ok(user) => {
            google.expire_access_tokens(&user);
            HttpResponse::NoContent().finish()
        }
        Err(response) => *response,
    }
}

#[derive(Deserialize)]
struct Failures {
    method: String,
    error: String,
    #[serde(default = "one")]
    times: usize,
    retry_after_secs: Option<u64>,
}

fn one() -> usize {
    1
}

/// The method names the control API accepts (Google's names).
pub fn parse_method(name: &str) -> Option<FakeMethod> {
    match name {
        "events.list" => Some(FakeMethod::ListEvents),
        "events.watch" => Some(FakeMethod::Watch),
        "channels.stop" => Some(FakeMethod::StopChannel),
        "calendarList.list" => Some(FakeMethod::ListCalendars),
        _ => None,
    }
}

/// The error names the control API accepts.
pub fn parse_error(name: &str, retry_after: Option<Duration>) -> Option<GoogleError> {
    Some(match name {
        "full_sync_required" => GoogleError::FullSyncRequired,
        "rate_limit" => GoogleError::RateLimited { retry_after },
        "backend_error" => GoogleError::Transient("injected".to_owned()),
        "not_found" => GoogleError::NotFound,
        "push_not_supported" => GoogleError::PushNotSupported,
        "unauthorized" => GoogleError::Unauthorized,
        _ => return None,
    })
}

/// `POST /fake/failures` `{"method", "error", "times"?, "retry_after_secs"?}` -> 204.
async fn inject_failures(google: web::Data<FakeGoogle>, body: web::Json<Failures>) -> HttpResponse {
    let Some(method) = parse_method(&body.method) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "method: one of events.list, events.watch, channels.stop, calendarList.list",
        );
    };
    let Some(error) = parse_error(&body.error, body.retry_after_secs.map(Duration::from_secs))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "error: one of full_sync_required, rate_limit, backend_error, not_found, push_not_supported, unauthorized",
        );
    };
    google.calendar().fail_next_n(method, body.times, &error);
    HttpResponse::NoContent().finish()
}

#[derive(Deserialize)]
struct SettingsUpdate {
    page_size: Option<usize>,
    delay_ms: Option<u64>,
    max_channel_ttl_secs: Option<u64>,
    handshake_before_response: Option<bool>,
    push_enabled: Option<bool>,
}

/// `GET /fake/settings`: the switches (page size and delay are write-only: the model does not expose them).
async fn get_settings(google: web::Data<FakeGoogle>) -> HttpResponse {
    HttpResponse::Ok().json(google.settings())
}

/// `PUT /fake/settings` `{"page_size"?, "delay_ms"?, "max_channel_ttl_secs"?, "handshake_before_response"?, "push_enabled"?}`.
async fn put_settings(
    google: web::Data<FakeGoogle>,
    body: web::Json<SettingsUpdate>,
) -> HttpResponse {
    if let Some(size) = body.page_size {
        google.calendar().set_page_size(size);
    }
    if let Some(ms) = body.delay_ms {
        google
            .calendar()
            .set_delay((ms > 0).then(|| Duration::from_millis(ms)));
    }
    if let Some(secs) = body.max_channel_ttl_secs {
        google
            .calendar()
            .set_max_channel_ttl(Duration::from_secs(secs));
    }
    let mut settings = google.settings();
    if let Some(value) = body.handshake_before_response {
        settings.handshake_before_response = value;
    }
    if let Some(value) = body.push_enabled {
        settings.push_enabled = value;
    }
    google.set_settings(settings.clone());
    HttpResponse::Ok().json(settings)
}

/// `GET /fake/channels`: open channels (with their address and token) and every stop, in order.
async fn channels(google: web::Data<FakeGoogle>) -> HttpResponse {
    let open = google.calendar().open_channels();
    let watches = google.calendar().watches();
    let open: Vec<Value> = watches
        .iter()
        .filter(|w| {
            open.iter()
                .any(|o| o.channel_id == w.granted.channel_id && o.resource_id == w.granted.resource_id)
        })
        .map(|w| {
            json!({
                "id": w.granted.channel_id.as_str(),
                "resourceId": w.granted.resource_id.as_str(),
                "user_id": w.user_id.as_str(),
                "calendar_id": w.calendar.as_str(),
                "address": w.request.address,
                // A development tool: the token is shown so hand-sent
                // notifications can carry it (Google never shows it).
                "token": w.request.token.expose(),
                "expiration": w.granted.expires_at.map(|at| (at.unix_timestamp_nanos() / 1_000_000).to_string()),
            })
        })
        .collect();
    let stops: Vec<Value> = google
        .calendar()
        .stops()
        .iter()
        .map(|s| json!({"id": s.channel_id.as_str(), "resourceId": s.resource_id.as_str()}))
        .collect();
    HttpResponse::Ok().json(json!({"open": open, "stops": stops, "watches": watches.len()}))
}

/// `GET /fake/notifications`: the delivery log, oldest first.
async fn notifications(google: web::Data<FakeGoogle>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"notifications": google.pusher().log()}))
}

/// `GET /fake/calls`: calls by Google method name (failed ones included), token requests, push counters.
async fn calls(google: web::Data<FakeGoogle>) -> HttpResponse {
    let model = google.calendar();
    HttpResponse::Ok().json(json!({
        "events.list": model.calls(FakeMethod::ListEvents),
        "events.watch": model.calls(FakeMethod::Watch),
        "channels.stop": model.calls(FakeMethod::StopChannel),
        "calendarList.list": model.calls(FakeMethod::ListCalendars),
        "token": google.token_requests(),
        "notifications": google.pusher().counters(),
    }))
}
