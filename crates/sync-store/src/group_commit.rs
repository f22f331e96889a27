//! Group commit for the webhook's writes.
//!
//! Each change notification must be committed before its `200`. Committing
//! each one alone costs one WAL flush per request; instead one writer task
//! takes whatever requests are waiting (up to [`MAX_BATCH`]), records them
//! with one set-based statement (see `webhook::write_batch`), and only then
//! answers each. While it commits, the next batch gathers in the queue, so the
//! writer always has its next batch ready and commits are shared. One writer
//! is also what SQLite wants (one writer connection, never its busy handler).
//! On PostgreSQL up to [`POSTGRES_IN_FLIGHT`] batches are written at once, each
//! on its own connection: a batch that gathers while another commits is sent
//! at once instead of waiting a round trip and a WAL flush for it, and the
//! concurrent commits share PostgreSQL's WAL flushes. Two batches in flight
//! for one calendar are safe: the write's conflict clause re-checks pending
//! and the message number on the row version it updates.
//! A batch that takes longer than [`WRITE_TIMEOUT`] (a database that stopped
//! answering) is answered "unavailable" (503 and `Retry-After`: Google retries).

use crate::pool::DbPool;
use crate::webhook::write_batch;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use std::time::Duration;
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use tokio::sync::{mpsc, oneshot};

/// Most requests committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Batches written at once on PostgreSQL (SQLite: one, its one writer connection).
pub const POSTGRES_IN_FLIGHT: usize = 4;
/// Longest a batch may take before its requests are answered "unavailable".
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests waiting for a writer before senders wait too (back-pressure).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<RecordOutcome, StoreError>>;

/// The queue in front of the writer tasks.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<(SyncRequest, Reply)>,
}

impl GroupCommit {
    /// Starts the writers on the current runtime.
    pub(crate) fn start(pool: &DbPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(writer(pool.clone(), receiver));
        Self { queue }
    }

    /// Queues a request and waits for its commit; `None` when the writers are
    /// gone (their runtime ended), so the caller writes directly.
    pub(crate) async fn submit(
        &self,
        request: SyncRequest,
    ) -> Option<Result<RecordOutcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn writer(pool: DbPool, mut receiver: mpsc::Receiver<(SyncRequest, Reply)>) {
    let in_flight = pool.dialect().batches_in_flight();
    let mut writing = FuturesUnordered::new();
    let mut open = true;
    loop {
        if open && writing.len() < in_flight {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            tokio::select! {
                // Finished batches first: their requests are waiting for an answer.
                biased;
                Some(()) = writing.next(), if !writing.is_empty() => continue,
                received = receiver.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        open = false; // every sender is gone: finish what is in flight
                        continue;
                    }
                    writing.push(commit(&pool, batch));
                }
            }
        } else if writing.next().await.is_none() {
            return; // closed and nothing in flight
        }
    }
}

/// Writes one batch and answers each of its requests.
async fn commit(pool: &DbPool, batch: Vec<(SyncRequest, Reply)>) {
    let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let written = tokio::time::timeout(WRITE_TIMEOUT, write_batch(pool, &requests))
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "recording sync requests timed out".into(),
            ))
        });
    match written {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
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
