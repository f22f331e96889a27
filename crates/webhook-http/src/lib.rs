//! Chronos calendar sync: the HTTP layer (actix-web).
//!
//! This crate owns the routes other systems call and nothing behind them; it
//! reaches the database and the clock only through `sync-domain`'s ports:
//! - [`webhook`]: `POST /calendar/webhook`, Google's push notifications (SPEC section 2);
//! - [`health`]: `GET /healthz` and `GET /readyz`;
//! - [`internal`]: the internal API under `/internal` (SPEC section 5), mounted by [`configure_internal`];
//! - [`error`]: the one error type of the boundary and its JSON responses;
//! - [`state`]: what the binary registers with `web::Data` before calling [`configure`].

pub mod error;
pub mod health;
pub mod internal;
pub mod state;
pub mod webhook;

pub use error::ApiError;
pub use internal::{InternalState, configure_internal};
pub use state::WebhookState;

use actix_web::web;

/// Mounts every route of this crate; the app must hold a `web::Data<WebhookState>`.
///
/// Each resource answers a wrong method with a JSON 405; for a JSON 404 on
/// unknown paths the app adds `default_service(web::to(error::not_found))`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(webhook::PATH)
            .route(web::post().to(webhook::receive))
            .default_service(web::to(error::method_not_allowed("POST"))),
    )
    .service(
        web::resource(health::LIVENESS_PATH)
            .route(web::get().to(health::healthz))
            .default_service(web::to(error::method_not_allowed("GET"))),
    )
    .service(
        web::resource(health::READINESS_PATH)
            .route(web::get().to(health::readyz))
            .default_service(web::to(error::method_not_allowed("GET"))),
    );
}
