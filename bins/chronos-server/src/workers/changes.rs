//! The change feed's background work: on PostgreSQL, the `LISTEN` connection
//! that wakes this instance's long polls when any instance commits entries;
//! everywhere, retention pruning in small batches and the feed's gauges.

use super::WorkerContext;
use std::time::Duration;
use sync_domain::changes::retention_cutoff;
use sync_store::Store;
use tokio_util::sync::CancellationToken;

/// Entries kept, sampled after each pruning round.
pub const FEED_ENTRIES: &str = "chronos_change_feed_entries";
/// The oldest position kept (0 when the feed is empty).
pub const FEED_OLDEST_POSITION: &str = "chronos_change_feed_oldest_position";
/// Entries removed by retention.
pub const FEED_PRUNED: &str = "chronos_change_feed_pruned_total";

/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Entries removed per transaction, so pruning never holds locks for long.
pub const PRUNE_BATCH: i64 = 500;
/// Pause between batches, leaving room to the writers.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// Runs the listener and the pruner until `shutdown`.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    // Their `# HELP` lines are in `crate::metrics::describe`.
    let listener = context
        .store
        .listen_for_changes(shutdown.clone().cancelled_owned());
    tokio::join!(listener, prune_loop(&context, &shutdown));
}

async fn prune_loop(context: &WorkerContext, shutdown: &CancellationToken) {
    loop {
        prune_once(context, shutdown).await;
        sample(&context.store).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Removes every entry older than the retention, a batch at a time.
pub async fn prune_once(context: &WorkerContext, shutdown: &CancellationToken) {
    let cutoff = retention_cutoff(context.clock.now(), context.config.change_retention);
    loop {
        match context.store.prune_changes(cutoff, PRUNE_BATCH).await {
            Ok(removed) => {
                metrics::counter!(FEED_PRUNED).increment(removed);
                if removed < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pruning the change feed failed; retrying next round");
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(BATCH_PAUSE) => {}
        }
    }
}

async fn sample(store: &Store) {
    match store.change_feed_stats().await {
        Ok(stats) => {
            metrics::gauge!(FEED_ENTRIES).set(stats.entries as f64);
            metrics::gauge!(FEED_OLDEST_POSITION).set(stats.oldest_position as f64);
        }
        Err(error) => tracing::warn!(%error, "reading the change feed's size failed"),
    }
}
