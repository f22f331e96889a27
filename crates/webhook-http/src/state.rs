//! The application state the handlers read, registered once by the binary.

use std::sync::Arc;
use std::time::Duration;
use sync_domain::ports::{Clock, WebhookStore};

/// The ports the webhook and health routes use, shared by every worker thread.
///
/// The binary wires it once, before [`crate::configure`]:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use actix_web::{App, HttpServer, web};
/// # use sync_domain::ports::{SystemClock, WebhookStore};
/// # use webhook_http::WebhookState;
/// # async fn serve(store: Arc<dyn WebhookStore>) -> std::io::Result<()> {
/// let state = web::Data::new(WebhookState::new(store, Arc::new(SystemClock)));
/// HttpServer::new(move || {
///     App::new()
///         .app_data(state.clone())
///         .configure(webhook_http::configure)
///         .default_service(web::to(webhook_http::error::not_found))
/// })
/// .bind("127.0.0.1:8080")?
/// .run()
/// .await
/// # }
/// ```
#[derive(Clone)]
pub struct WebhookState {
    store: Arc<dyn WebhookStore>,
    clock: Arc<dyn Clock>,
    store_deadline: Duration,
}

/// How long one notification may spend waiting for the store in all (lookup
/// and write) before it is answered 503 with `Retry-After`: Google retries,
/// and a database that stopped answering never holds a request for longer.
pub const STORE_DEADLINE: Duration = Duration::from_secs(2);

impl WebhookState {
    /// State over a store (real or fake) and a clock.
    pub fn new(store: Arc<dyn WebhookStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            store_deadline: STORE_DEADLINE,
        }
    }

    /// The same state with another store deadline (tests shorten it).
    pub fn with_store_deadline(mut self, deadline: Duration) -> Self {
        self.store_deadline = deadline;
        self
    }

    /// How long a notification may wait for the store in all.
    pub fn store_deadline(&self) -> Duration {
        self.store_deadline
    }

    /// The webhook's view of the database.
    pub fn store(&self) -> &dyn WebhookStore {
        self.store.as_ref()
    }

    /// The clock that stamps sync requests.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState").finish_non_exhaustive()
    }
}
