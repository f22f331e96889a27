//! Distributed tracing of requests (the `otel` feature; the binary switches it
//! on with [`enable`] once it exports spans):
//! - on the internal API a caller's W3C `traceparent` (and `tracestate`) makes
//!   the request span a child of the caller's span, in the caller's trace;
//!   the public webhook always starts a trace of its own (whoever can reach it
//!   must not be able to choose our trace ids);
//! - request spans get OpenTelemetry's names (`POST /calendar/webhook`, the
//!   route pattern, never the raw path), kind `server` and the HTTP attributes.
//!
//! - probes and scrapes (`/healthz`, `/readyz`, `/metrics`, every few
//!   seconds) are not exported: their spans carry [`NOT_EXPORTED_FIELD`],
//!   which the binary's exporting layer filters out.
//!
//! Off (the default), request spans are as before, so the logs are unchanged.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Makes request spans carry OpenTelemetry's fields and honour `traceparent`
/// on the internal API (the propagator is the process's global one).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The field marking a span that is logged but not exported.
pub const NOT_EXPORTED_FIELD: &str = "not_exported";

/// Whether requests to `path` are left out of the exported traces.
pub fn is_probe(path: &str) -> bool {
    matches!(
        path,
        crate::health::LIVENESS_PATH | crate::health::READINESS_PATH | crate::metrics::PATH
    )
}

/// Whether a caller's trace context is honoured on `path`.
pub fn honours_caller_context(path: &str) -> bool {
    path == "/internal" || path.starts_with("/internal/")
}

/// The headers as OpenTelemetry's propagators read them.
#[cfg(feature = "otel")]
struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(actix_web::http::header::HeaderName::as_str)
            .collect()
    }
}

/// The caller's trace context, made current while the request span is
/// created (so it becomes the span's parent): `None` unless enabled, on the
/// internal API, with a valid `traceparent`. A malformed one is ignored.
#[cfg(feature = "otel")]
pub(crate) fn attach_caller_context(
    req: &actix_web::dev::ServiceRequest,
) -> Option<opentelemetry::ContextGuard> {
    use opentelemetry::trace::TraceContextExt as _;
    if !is_enabled() || !honours_caller_context(req.path()) {
        return None;
    }
    let context = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(req.headers()))
    });
    context
        .span()
        .span_context()
        .is_valid()
        .then(|| context.attach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_scrapes_are_not_exported() {
        assert!(is_probe("/healthz") && is_probe("/readyz") && is_probe("/metrics"));
        assert!(!is_probe("/calendar/webhook") && !is_probe("/internal/calendars"));
    }

    #[test]
    fn only_the_internal_api_honours_a_callers_context() {
        assert!(honours_caller_context("/internal/calendars"));
        assert!(honours_caller_context("/internal"));
        assert!(!honours_caller_context("/calendar/webhook"));
        assert!(!honours_caller_context("/internalx"));
        assert!(!honours_caller_context("/healthz"));
    }
}
