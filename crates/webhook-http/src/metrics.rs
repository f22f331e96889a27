//! `GET /metrics`: the Prometheus text exposition.
//!
//! This crate only records through the `metrics` facade; the binary installs
//! the exporter and registers a [`MetricsRenderer`] that renders its registry.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use std::sync::Arc;

/// Where the metrics are served.
pub const PATH: &str = "/metrics";

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the current metrics as Prometheus text; registered with `web::Data`.
#[derive(Clone)]
pub struct MetricsRenderer(Arc<dyn Fn() -> String + Send + Sync>);

impl MetricsRenderer {
    /// A renderer over any function producing the exposition text.
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(render))
    }
}

impl std::fmt::Debug for MetricsRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRenderer").finish_non_exhaustive()
    }
}

/// `GET /metrics`: 200 with the exposition; 404 if the app registered no renderer.
#[utoipa::path(
    get,
    path = PATH,
    tag = "probes",
    operation_id = "metrics",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    description = "Every metric is described in docs/operations.md. No authentication: keep the path off the public address (the reverse proxy forwards only `/calendar/webhook`).",
    responses(
        (status = 200, description = "The exposition.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    ),
)]
pub async fn metrics(renderer: Option<web::Data<MetricsRenderer>>) -> HttpResponse {
    match renderer {
        Some(renderer) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
            .body((renderer.0)()),
        None => HttpResponse::NotFound().json(serde_json::json!({"detail": "Not found"})),
    }
}
