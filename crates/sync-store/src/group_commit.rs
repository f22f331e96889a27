//! Group commit for the webhook's writes, and batched channel lookups.
//!
//! Each change notification must be committed before its `200`. Committing
//! each one alone costs one WAL flush per request; instead one writer task
//! takes whatever requests are waiting (up to [`MAX_BATCH`]), records them
//! with one set-based statement (see `webhook::write_batch`), and only then
//! answers each. While it commits, the next batch gathers in the queue, so the
//! writer always has its next batch ready and commits are shared. One writer
//! is also what SQLite wants (one writer connection, never its busy handler).
//! On PostgreSQL up to [`POSTGRES_IN_FLIGHT`] batches are written at once, each
//! on its own connection: a batch that gathers while another has been
//! committing for [`STAGGER`] is sent then instead of waiting for a slow WAL
//! flush, and the concurrent commits share PostgreSQL's WAL flushes (a fast
//! statement is waited for, so batches stay large). Two batches in flight
//! for one calendar are safe: the write's conflict clause re-checks pending
//! and the message number on the row version it updates.
//! A batch that takes longer than [`WRITE_TIMEOUT`] (a database that stopped
//! answering) is answered "unavailable" (503 and `Retry-After`: Google retries).
//!
//! The webhook's channel lookups that miss the cache go through the same kind
//! of queue ([`GroupLookup`]): the channels of concurrent notifications are
//! read with one query.

use crate::pool::DbPool;
use crate::webhook::{lookup_batch, write_batch};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use std::future::Future;
use std::time::Duration;
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use sync_domain::{ChannelId, ChannelRecord};
use tokio::sync::{mpsc, oneshot};

/// Most requests committed in one transaction (or channels read in one lookup).
pub const MAX_BATCH: usize = 256;
/// Batches written at once on PostgreSQL (SQLite: one, its one writer connection).
pub const POSTGRES_IN_FLIGHT: usize = 4;
/// How long the last batch started must have run before another is started
/// beside it. Measured on PostgreSQL (`docs/benchmarks.md`): against starting
/// at once, the hot closed loop's batches are larger (34.8-35.8k against
/// 33.1-34.3k req/s), and with syncs running the 2,000 req/s p99 is lower
/// (4.2-4.4 against 4.5-5.2 ms) than with one batch at a time (5.2-5.5 ms).
pub const STAGGER: Duration = Duration::from_millis(1);
/// Channel lookups read at once (each on a connection of the readers' pool).
pub const LOOKUPS_IN_FLIGHT: usize = 2;
/// Longest a batch may take before its requests are answered "unavailable".
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests waiting for a writer before senders wait too (back-pressure).
const QUEUE: usize = 4096;

type Reply<Out> = oneshot::Sender<Result<Out, StoreError>>;

/// A queue in front of a task that answers whatever waits in it with one
/// set-based statement, up to `in_flight` statements at once.
pub(crate) struct Batcher<In, Out> {
    queue: mpsc::Sender<(In, Reply<Out>)>,
}

impl<In, Out> Clone for Batcher<In, Out> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<In: Send + 'static, Out: Send + 'static> Batcher<In, Out> {
    /// Starts the task on the current runtime; `run` answers one batch, one
    /// output per input, in order.
    fn start<F, Fut>(in_flight: usize, what: &'static str, run: F) -> Self
    where
        F: Fn(Vec<In>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Out>, StoreError>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(serve(in_flight.max(1), what, run, receiver));
        Self { queue }
    }

    /// Queues `input` and waits for its batch; `None` when the task is gone
    /// (its runtime ended), so the caller asks the database directly.
    pub(crate) async fn submit(&self, input: In) -> Option<Result<Out, StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((input, reply)).await.ok()?;
        answer.await.ok()
    }
}

/// The queue in front of the webhook's writer tasks.
pub(crate) type GroupCommit = Batcher<SyncRequest, RecordOutcome>;

/// Starts the group-commit writers on the current runtime.
pub(crate) fn start_group_commit(pool: &DbPool) -> GroupCommit {
    let pool = pool.clone();
    Batcher::start(
        pool.dialect().batches_in_flight(),
        "recording sync requests",
        move |requests| {
            let pool = pool.clone();
            async move { write_batch(&pool, &requests).await }
        },
    )
}

/// The queue in front of the webhook's channel lookups: concurrent lookups
/// that miss the cache are read with one statement (`webhook::lookup_batch`).
pub(crate) type GroupLookup = Batcher<ChannelId, Option<ChannelRecord>>;

/// Starts the channel lookups on the current runtime.
pub(crate) fn start_group_lookup(pool: &DbPool) -> GroupLookup {
    let pool = pool.clone();
    Batcher::start(LOOKUPS_IN_FLIGHT, "looking channels up", move |ids| {
        let pool = pool.clone();
        async move { lookup_batch(&pool, &ids).await }
    })
}

async fn serve<In, Out, F, Fut>(
    in_flight: usize,
    what: &'static str,
    run: F,
    mut receiver: mpsc::Receiver<(In, Reply<Out>)>,
) where
    F: Fn(Vec<In>) -> Fut,
    Fut: Future<Output = Result<Vec<Out>, StoreError>>,
{
    let mut running = FuturesUnordered::new();
    let mut open = true;
    let mut last_started = tokio::time::Instant::now();
    loop {
        if open && running.len() < in_flight {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Another batch beside those in flight only once the last one has
            // run for `STAGGER`: a fast statement is better waited for (the next
            // batch grows meanwhile), a slow commit is not.
            let ready_at = (!running.is_empty()).then(|| last_started + STAGGER);
            let next = async {
                if let Some(at) = ready_at {
                    tokio::time::sleep_until(at).await;
                }
                receiver.recv_many(&mut batch, MAX_BATCH).await
            };
            tokio::select! {
                // Finished batches first: their requests are waiting for an answer.
                biased;
                Some(()) = running.next(), if !running.is_empty() => continue,
                received = next => {
                    if received == 0 {
                        open = false; // every sender is gone: finish what is in flight
                        continue;
                    }
                    last_started = tokio::time::Instant::now();
                    running.push(answer(what, &run, batch));
                }
            }
        } else if running.next().await.is_none() {
            return; // closed and nothing in flight
        }
    }
}

/// Runs one batch and answers each of its inputs.
async fn answer<In, Out, F, Fut>(what: &'static str, run: &F, batch: Vec<(In, Reply<Out>)>)
where
    F: Fn(Vec<In>) -> Fut,
    Fut: Future<Output = Result<Vec<Out>, StoreError>>,
{
    let (inputs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let done = tokio::time::timeout(WRITE_TIMEOUT, run(inputs))
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("{what} timed out").into())));
    match done {
        Ok(outputs) => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        Err(error) => {
            let message = error.to_string();
            let unavailable = matches!(error, StoreError::Unavailable(_));
            for reply in replies {
                let shared = if unavailable {
                    StoreError::Unavailable(message.clone().into())
                } else {
                    StoreError::Query(message.clone().into())
                };
                let _ = reply.send(Err(shared));
            }
        }
    }
}
