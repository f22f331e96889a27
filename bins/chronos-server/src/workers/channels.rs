//! The channel lifecycle worker (issue 5): registers, renews and stops channels.

use super::WorkerContext;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown` is cancelled.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    let _ = &context;
    shutdown.cancelled().await;
}
