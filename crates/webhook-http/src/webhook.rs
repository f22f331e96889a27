//! `POST /calendar/webhook`: Google's push notifications (SPEC section 2).
//!
//! The decision itself is `sync_domain::verify`; this handler only reads the
//! request, asks the store, and turns the verdict into a reply. For a change it
//! answers 200 only once the sync request is committed, so a crash right after
//! the reply loses nothing.

use crate::error::ApiError;
use crate::state::WebhookState;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use sync_domain::notification::{ChannelRef, HeaderValue};
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use sync_domain::verification::needs_lookup;
use sync_domain::{ChannelRecord, Notification, Verdict, verify};

/// Where Google delivers notifications (`{webhook_base_url}/calendar/webhook`).
pub const PATH: &str = "/calendar/webhook";

/// Largest body accepted; Google sends none, so anything bigger is refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest a request body may take to arrive (Google sends none): a stranger
/// trickling bytes holds a connection no longer than this, then gets 408.
pub const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Notifications received, by `outcome` (see [`outcome_of`]).
pub const NOTIFICATIONS_METRIC: &str = "chronos_webhook_notifications_total";
/// How long the handler took, from the request to the reply.
pub const DURATION_METRIC: &str = "chronos_webhook_duration_seconds";

/// Handles one notification: every 2xx for a change means the request is committed.
/// Counts it by outcome and times it.
#[utoipa::path(
    post,
    path = PATH,
    tag = "webhook",
    operation_id = "receiveNotification",
    summary = "A push notification from Google",
    description = "Google sends an empty body. Checks in order: channel id present and not blank (400); the store reachable (503, Google retries); the channel known (else 200 `{}`, revealing nothing: also for an id that cannot be one of ours, such as one over 64 characters); the token equal to the stored one, compared in constant time (401); a `sync` handshake (200, no sync); a duplicate message number (200, no new request); otherwise a sync request for the calendar is committed to the database before the 200. Header names are case-insensitive; a header sent twice is never trusted (a repeated channel id is answered as unknown).",
    params(
        ("X-Goog-Channel-ID" = String, Header, min_length = 1, pattern = "[^\\t\\n\\f\\r ]", description = "The channel id (a UUID the service created). Missing, empty or only white space: 400."),
        ("X-Goog-Channel-Token" = Option<String>, Header, nullable = false, description = "The channel's secret token. Missing, empty or wrong on a known channel: 401."),
        ("X-Goog-Resource-State" = Option<String>, Header, nullable = false, example = "exists", description = "`sync` (handshake), `exists` or `not_exists` (ASCII case-insensitive); any other value, or none, is treated as a change."),
        ("X-Goog-Resource-ID" = Option<String>, Header, nullable = false, description = "Google's opaque id of the watched resource."),
        ("X-Goog-Resource-URI" = Option<String>, Header, nullable = false, description = "The watched resource's API URI (not read)."),
        ("X-Goog-Message-Number" = Option<String>, Header, nullable = false, example = "2", description = "Increasing per channel; a number not greater than the last one seen is a duplicate. A value that is not a decimal from 0 to 2^63-1 is ignored (the notification counts as unnumbered), not refused."),
        ("X-Goog-Channel-Expiration" = Option<String>, Header, nullable = false, description = "When the channel expires (RFC 1123 date), if set (not read)."),
    ),
    request_body(
        content = Option<String>,
        content_type = "application/octet-stream",
        description = "Ignored (Google sends none). Over 64 KiB (65536 bytes), declared or streamed: 413; not complete within 5 s: 408.",
    ),
    responses(
        (status = 200, description = "Handled: a change is durably recorded, or the notification needs nothing (handshake, duplicate, unknown channel, calendar gone).", body = crate::openapi::Empty),
        (status = 400, description = "`Missing channel ID`, or an unreadable body (`Invalid request body`).", body = crate::error::ErrorBody),
        (status = 401, description = "`Invalid token`.", body = crate::error::ErrorBody),
        (status = 408, description = "`Request body timed out`: the body did not arrive within 5 s.", body = crate::error::ErrorBody),
        (status = 413, description = "`Payload too large`: a body over 64 KiB.", body = crate::error::ErrorBody),
        (status = 503, description = "`Service unavailable`: the database cannot be reached (Google retries).", body = crate::error::ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    ),
)]
pub async fn receive(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = handle(&req, body, &state).await;
    let outcome: &'static str = match &result {
        Ok(outcome) => outcome,
        Err(error) => outcome_of(error),
    };
    metrics::counter!(NOTIFICATIONS_METRIC, "outcome" => outcome).increment(1);
    metrics::histogram!(DURATION_METRIC).record(started.elapsed().as_secs_f64());
    result.map(|_| empty_ok())
}

/// The `outcome` label of a refused notification: `missing_channel`,
/// `invalid_token`, `store_unavailable`, `body_timeout`, or `bad_request` (body too large or unreadable).
pub fn outcome_of(error: &ApiError) -> &'static str {
    match error {
        ApiError::MissingChannelId => "missing_channel",
        ApiError::InvalidToken => "invalid_token",
        ApiError::StoreUnavailable { .. } => "store_unavailable",
        ApiError::BodyTimeout => "body_timeout",
        _ => "bad_request",
    }
}

/// The handler proper; `Ok` carries the outcome label of a 200
/// (`accepted`, `coalesced`, `duplicate`, `handshake`, `unknown_channel`, `orphaned`).
async fn handle(
    req: &HttpRequest,
    body: web::Payload,
    state: &WebhookState,
) -> Result<&'static str, ApiError> {
    discard_body(req, body).await?;
    // Every store call below shares one deadline.
    let deadline = std::time::Instant::now() + state.store_deadline();
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let bounded = |what: String| {
        move |_elapsed| {
            ApiError::store_unavailable(
                what,
                StoreError::Unavailable("the store did not answer within the deadline".into()),
            )
        }
    };

    let notification = Notification::parse(header_lookup(req.headers())).inspect_err(|_| {
        tracing::debug!("webhook request without a channel id");
    })?;

    let record = match &notification.channel {
        ChannelRef::Id(channel_id) if needs_lookup(&notification) => {
            actix_web::rt::time::timeout(left(), state.store().find_channel(channel_id))
                .await
                .map_err(bounded(format!("finding channel {channel_id}")))?
                .map_err(|e| {
                    ApiError::store_unavailable(format!("finding channel {channel_id}"), e)
                })?
        }
        _ => None,
    };

    let mut verdict = verify(&notification, record.as_ref());
    let mut record = record;
    if let (Verdict::InvalidToken, ChannelRef::Id(channel_id)) = (&verdict, &notification.channel) {
        // Refuse only on what the database says now (the lookup may be cached):
        // a channel stopped meanwhile is unknown, and reveals nothing.
        record =
            actix_web::rt::time::timeout(left(), state.store().find_channel_uncached(channel_id))
                .await
                .map_err(bounded(format!("re-reading channel {channel_id}")))?
                .map_err(|e| {
                    ApiError::store_unavailable(format!("re-reading channel {channel_id}"), e)
                })?;
        verdict = verify(&notification, record.as_ref());
    }
    let outcome = match &verdict {
        Verdict::InvalidToken => {
            log(&notification, record.as_ref(), verdict.label());
            return Err(ApiError::InvalidToken);
        }
        Verdict::UnknownChannel | Verdict::Handshake | Verdict::Orphaned | Verdict::Duplicate => {
            verdict.label()
        }
        Verdict::RecordSync {
            calendar_id,
            message_number,
        } => {
            let ChannelRef::Id(channel_id) = &notification.channel else {
                // `verify` only grants a sync to a looked-up, well-formed channel.
                return Ok(verdict.label());
            };
            let request = SyncRequest {
                calendar_id: *calendar_id,
                channel_id: channel_id.clone(),
                message_number: *message_number,
                requested_at: state.clock().now(),
            };
            let recorded =
                actix_web::rt::time::timeout(left(), state.store().record_sync_request(&request))
                    .await
                    .map_err(bounded(format!(
                        "recording a sync request for channel {channel_id}"
                    )))?
                    .map_err(|e| {
                        ApiError::store_unavailable(
                            format!("recording a sync request for channel {channel_id}"),
                            e,
                        )
                    })?;
            match recorded {
                RecordOutcome::Recorded => verdict.label(),
                RecordOutcome::AlreadyPending => "coalesced",
                // A concurrent notification won the race, or the calendar left since the lookup.
                RecordOutcome::Duplicate => Verdict::Duplicate.label(),
                RecordOutcome::CalendarGone => Verdict::Orphaned.label(),
            }
        }
    };
    log(&notification, record.as_ref(), outcome);
    Ok(outcome)
}

/// Reads and drops the body, refusing more than [`MAX_BODY_BYTES`] whether its
/// length is declared up front or only discovered while streaming (chunked).
async fn discard_body(req: &HttpRequest, body: web::Payload) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let Ok(read) =
        actix_web::rt::time::timeout(BODY_DEADLINE, body.to_bytes_limited(MAX_BODY_BYTES)).await
    else {
        return Err(ApiError::BodyTimeout);
    };
    match read {
        Ok(Ok(_ignored)) => Ok(()),
        Ok(Err(error)) => Err(match error.as_error::<actix_web::error::PayloadError>() {
            Some(actix_web::error::PayloadError::Overflow) => ApiError::PayloadTooLarge,
            _ => ApiError::UnreadableBody(error),
        }),
        Err(_limit_exceeded) => Err(ApiError::PayloadTooLarge),
    }
}

/// A case-insensitive header lookup over the request that tells a header sent
/// once from one sent several times (which is never trusted).
fn header_lookup<'h>(headers: &'h HeaderMap) -> impl Fn(&str) -> HeaderValue<'h> + 'h {
    move |name| {
        let mut values = headers.get_all(name);
        match (values.next(), values.next()) {
            (None, _) => HeaderValue::Absent,
            (Some(value), None) => HeaderValue::One(value.as_bytes()),
            (Some(_), Some(_)) => HeaderValue::Repeated,
        }
    }
}

/// One line per notification: never the token.
fn log(notification: &Notification, record: Option<&ChannelRecord>, verdict: &'static str) {
    let channel_id = match &notification.channel {
        ChannelRef::Id(id) => id.as_str(),
        ChannelRef::Malformed => "<malformed>",
    };
    tracing::info!(
        channel_id,
        calendar_id = record
            .and_then(|r| r.calendar_id)
            .map(tracing::field::display),
        resource_state = notification.resource_state.as_str(),
        message_number = notification.message_number.map(|n| n.get()),
        verdict,
        "webhook notification"
    );
}

/// The reply that reveals nothing: 200 `{}`.
fn empty_ok() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}
