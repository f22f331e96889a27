//! Liveness and readiness probes.

use crate::error::error_chain;
use crate::state::WebhookState;
use actix_web::{HttpResponse, web};
use serde::Serialize;

/// Liveness: the process answers.
pub const LIVENESS_PATH: &str = "/healthz";
/// Readiness: the database answers too.
pub const READINESS_PATH: &str = "/readyz";

/// The JSON body of both probes.
#[derive(Debug, Serialize)]
struct ProbeBody {
    status: &'static str,
}

/// `GET /healthz`: 200 `{"status":"ok"}` whenever the process can answer.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ProbeBody { status: "ok" })
}

/// `GET /readyz`: 200 `{"status":"ready"}` if the store answers a ping, else 503 `{"status":"unavailable"}`.
pub async fn readyz(state: web::Data<WebhookState>) -> HttpResponse {
    match state.store().ping().await {
        Ok(()) => HttpResponse::Ok().json(ProbeBody { status: "ready" }),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "not ready: store unreachable");
            HttpResponse::ServiceUnavailable().json(ProbeBody {
                status: "unavailable",
            })
        }
    }
}
