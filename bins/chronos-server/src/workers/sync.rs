//! The sync worker (issue 4): claims due calendars and mirrors their events.

use super::WorkerContext;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown` is cancelled.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    let _ = &context;
    shutdown.cancelled().await;
}
