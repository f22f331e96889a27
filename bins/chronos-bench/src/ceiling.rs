//! The ceiling: a minimal actix-web endpoint that answers `{}` and touches no
//! database. Run as a child process like the real server, so its throughput,
//! CPU and RSS are measured the same way; the real server's figures are read
//! as a ratio to it, which holds on any machine.

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use std::net::SocketAddr;

/// The reply the real webhook gives in the common case: 200 `{}` as JSON.
async fn empty_ok() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({}))
}

/// Serves the webhook path (and `/healthz`, for readiness) until killed.
pub fn serve(bind: SocketAddr) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .route("/calendar/webhook", web::post().to(empty_ok))
                .route("/healthz", web::get().to(empty_ok))
        })
        .bind(bind)
        .with_context(|| format!("binding {bind}"))?
        .run()
        .await
        .context("serving the ceiling endpoint")
    })
}
