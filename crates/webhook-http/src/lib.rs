//! Chronos calendar sync: the HTTP layer (actix-web).
//!
//! This crate owns the routes other systems call and nothing behind them; it
//! reaches the database and the clock only through `sync-domain`'s ports:
//! - [`webhook`]: `POST /calendar/webhook`, Google's push notifications (SPEC section 2);
//! - [`health`]: `GET /healthz` and `GET /readyz`;
//! - [`internal`]: the internal API under `/internal` (SPEC section 5), mounted by [`configure_internal`];
//! - [`changes`]: the change feed, `GET /internal/changes` and its event stream;
//! - [`metrics`]: `GET /metrics`, rendered by the binary's exporter;
//! - [`request_id`]: the middleware giving each request an id and a span;
//! - [`trace_context`]: OpenTelemetry names for request spans and a caller's `traceparent` (feature `otel`);
//! - [`route_metrics`]: the middleware counting internal API requests by route and status;
//! - [`routes`]: the table of every route ([`ROUTES`]), which `docs/openapi.json` documents;
//! - [`openapi`]: the OpenAPI document, generated from the handlers and types (`docs/openapi.json`);
//! - [`error`]: the one error type of the boundary and its JSON responses;
//! - [`state`]: what the binary registers with `web::Data` before calling [`configure`].

pub mod changes;
pub mod error;
pub mod health;
pub mod internal;
pub mod metrics;
pub mod openapi;
pub mod request_id;
pub mod route_metrics;
pub mod routes;
pub mod state;
pub mod trace_context;
pub mod webhook;

pub use changes::ChangesState;
pub use error::ApiError;
pub use internal::{InternalState, configure_internal};
pub use metrics::MetricsRenderer;
pub use routes::ROUTES;
pub use state::WebhookState;

use actix_web::http::Method;
use actix_web::web;
use routes::{resource, route};

/// Mounts every route of this crate but the internal API; the app must hold a
/// `web::Data<WebhookState>` (and a `web::Data<MetricsRenderer>` for `/metrics`).
///
/// Each resource answers a wrong method with a JSON 405; for a JSON 404 on
/// unknown paths the app adds `default_service(web::to(error::not_found))`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("", webhook::PATH)
            .route(route(Method::POST, webhook::PATH).to(webhook::receive))
            .default_service(web::to(error::method_not_allowed("POST"))),
    )
    .service(
        resource("", health::LIVENESS_PATH)
            .route(route(Method::GET, health::LIVENESS_PATH).to(health::healthz))
            .default_service(web::to(error::method_not_allowed("GET"))),
    )
    .service(
        resource("", health::READINESS_PATH)
            .route(route(Method::GET, health::READINESS_PATH).to(health::readyz))
            .default_service(web::to(error::method_not_allowed("GET"))),
    )
    .configure(configure_metrics);
}

/// Mounts `GET /metrics` alone (the binary serves it on `metrics_bind` when set).
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("", metrics::PATH)
            .route(route(Method::GET, metrics::PATH).to(metrics::metrics))
            .default_service(web::to(error::method_not_allowed("GET"))),
    );
}
