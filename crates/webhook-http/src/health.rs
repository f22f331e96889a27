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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Probe)]
struct ProbeBody {
    status: ProbeStatus,
}

/// What a probe says.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ProbeStatus {
    /// Liveness: the process answers.
    Ok,
    /// Readiness: the store answers too.
    Ready,
    /// Readiness: the store does not answer.
    Unavailable,
}

/// `GET /healthz`: 200 `{"status":"ok"}` whenever the process can answer.
#[utoipa::path(
    get,
    path = LIVENESS_PATH,
    tag = "probes",
    operation_id = "liveness",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = ProbeBody)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ProbeBody {
        status: ProbeStatus::Ok,
    })
}

/// `GET /readyz`: 200 `{"status":"ready"}` if the store answers a ping, else 503 `{"status":"unavailable"}`.
#[utoipa::path(
    get,
    path = READINESS_PATH,
    tag = "probes",
    operation_id = "readiness",
    summary = "Readiness: the database answers too",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`.", body = ProbeBody),
        (status = 503, description = "`{\"status\": \"unavailable\"}`: the database cannot be reached.", body = ProbeBody),
    ),
)]
pub async fn readyz(state: web::Data<WebhookState>) -> HttpResponse {
    match state.store().ping().await {
        Ok(()) => HttpResponse::Ok().json(ProbeBody {
            status: ProbeStatus::Ready,
        }),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "not ready: store unreachable");
            HttpResponse::ServiceUnavailable().json(ProbeBody {
                status: ProbeStatus::Unavailable,
            })
        }
    }
}
