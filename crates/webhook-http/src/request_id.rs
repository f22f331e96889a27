//! Request ids: every request runs inside a `request` span carrying a
//! `request_id`, so each log line it causes names it, and the reply echoes
//! it in `X-Request-Id`.
//!
//! A caller's own `X-Request-Id` (a load balancer's, say) is kept when it is a
//! short token of safe characters; anything else is replaced by a fresh UUID,
//! so a caller cannot inject text into the logs.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument as _;

/// The request and response header carrying the id.
pub const HEADER: &str = "x-request-id";

/// Longest caller-supplied id that is kept.
pub const MAX_LEN: usize = 64;

/// The ids that are kept, as an ECMA-262 pattern (with [`MAX_LEN`] beside it);
/// every id the service makes (a UUID) matches it too.
pub const PATTERN: &str = "^[A-Za-z0-9._-]+$";

/// Whether a caller's id is kept: 1 to [`MAX_LEN`] characters of [`PATTERN`].
pub fn is_kept(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The caller's id if it is safe to log, else a fresh one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_kept(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The `request` span: its id, method and path; when traces are exported
/// ([`crate::trace_context`]) also OpenTelemetry's name, kind and HTTP
/// attributes, and on the internal API the caller's `traceparent` as parent.
fn request_span(req: &ServiceRequest, id: &str) -> tracing::Span {
    #[cfg(feature = "otel")]
    if crate::trace_context::is_enabled() && crate::trace_context::is_probe(req.path()) {
        // Logged as before, filtered out of the export by this field.
        return tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.path(),
            not_exported = true,
        );
    }
    #[cfg(feature = "otel")]
    if crate::trace_context::is_enabled() {
        let _caller = crate::trace_context::attach_caller_context(req);
        // The pattern, never the raw path: ids would make every name unique.
        let route = req.match_pattern();
        let name = match &route {
            Some(route) => format!("{} {route}", req.method()),
            None => req.method().to_string(),
        };
        return tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.path(),
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %req.method(),
            http.route = route.as_deref(),
            http.response.status_code = tracing::field::Empty,
        );
    }
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    )
}

/// The middleware: `App::new().wrap(actix_web::middleware::from_fn(webhook_http::request_id::middleware))`.
/// Logs one line per request at debug level (method, path without the query, status).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id(&req);
    let span = request_span(&req, &id);
    let started = std::time::Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status();
    // Fields the span declares only when traces are exported (a no-op otherwise).
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(response)
}
