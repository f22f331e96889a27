//! Background workers: the sync worker ([`sync`]), the channel lifecycle
//! worker ([`channels`]), the change feed's listener and pruner ([`changes`]) and the metrics sampler ([`crate::metrics::run_sampler`]). Each runs until the shutdown token is cancelled, then
//! finishes or releases what it holds within a bounded time.

pub mod changes;
pub mod channels;
pub mod sync;

use crate::config::Config;
use std::sync::Arc;
use sync_domain::ports::{CalendarApi, Clock, Entropy};
use sync_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What every worker needs, injected by the binary (tests inject fakes).
#[derive(Clone)]
pub struct WorkerContext {
    pub store: Store,
    pub calendar: Arc<dyn CalendarApi>,
    pub clock: Arc<dyn Clock>,
    /// Randomness for channel ids, tokens and jitter.
    pub entropy: Arc<dyn Entropy>,
    pub config: Arc<Config>,
    /// Identifies this instance in leases (`host:pid:random`).
    pub instance_id: String,
}

/// Starts every worker; each stops when `shutdown` is cancelled.
pub fn spawn_all(context: &WorkerContext, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(sync::run(context.clone(), shutdown.clone())),
        tokio::spawn(channels::run(context.clone(), shutdown.clone())),
        tokio::spawn(changes::run(context.clone(), shutdown.clone())),
        tokio::spawn(crate::metrics::run_sampler(
            context.store.clone(),
            Arc::clone(&context.clock),
            shutdown.clone(),
        )),
    ]
}
