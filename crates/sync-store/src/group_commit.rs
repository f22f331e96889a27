//! Group commit for the webhook's writes.
//!
//! Each change notification must be committed before its `200`. Committing
//! each one alone costs one WAL flush per request; instead, a writer task takes
//! whatever requests are waiting (up to [`MAX_BATCH`]), commits them in one
//! transaction, and only then answers each. Under light load a batch is a
//! single autocommit statement, so latency is unchanged; under heavy load the
//! flushes are shared. A few writers run at once so one slow commit does not
//! stall the queue.

use crate::pool::DbPool;
use crate::webhook::write_batch;
use std::sync::Arc;
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most requests committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Writer tasks sharing the queue.
const WRITERS: usize = 3;
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
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(writer(pool.clone(), Arc::clone(&receiver)));
        }
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

async fn writer(pool: DbPool, receiver: Arc<Mutex<mpsc::Receiver<(SyncRequest, Reply)>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return; // every sender is gone
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match write_batch(&pool, &requests).await {
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
}
