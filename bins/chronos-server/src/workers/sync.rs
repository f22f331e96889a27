//! The sync worker (issue 4): claims due calendars and mirrors their events.
//!
//! Everything that matters lives in the database ([`SyncQueue`]): requests,
//! claims with leases, backoff. The worker polls for due calendars every
//! [`SyncOptions::idle_poll`], runs at most [`SyncOptions::max_concurrent`]
//! syncs at once and [`SyncOptions::max_per_user`] per user, renews each claim
//! while it syncs, and on shutdown lets each sync finish within
//! [`SyncOptions::shutdown_grace`] or gives its claim back.

use super::WorkerContext;
use crate::config::Config;
use crate::entropy::OsEntropy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery, GoogleError, SkipReason, SkippedItem};
use sync_domain::ports::{Clock, Entropy, StoreError};
use sync_domain::repeats::{FailureSite, count_identical_failures};
use sync_domain::retry::RetryPolicy;
use sync_domain::schedule::CoalescingPolicy;
use sync_domain::sync::{
    Claim, ClaimRef, ClaimRequest, FailureAction, LeasePolicy, PAGE_SIZE, PageWrite, PollPolicy,
    SyncCompletion, SyncQueue, failure_action,
};
use sync_domain::{SyncState, UserId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The sync worker's tuning; [`SyncOptions::from_config`] gives production values.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Debounce and bound (`sync_debounce_ms`, `sync_max_delay_ms`).
    pub coalescing: CoalescingPolicy,
    /// The safety-net poll (`poll_interval_secs`; 15 min without push).
    pub poll: PollPolicy,
    /// Retry delays after a failed sync.
    pub backoff: RetryPolicy,
    /// Claim lease and heartbeat.
    pub lease: LeasePolicy,
    /// Syncs running at once in this instance.
    pub max_concurrent: usize,
    /// Syncs of one user's calendars running at once in this instance (Google's
    /// per-user quota is about 600 requests a minute).
    pub max_per_user: usize,
    /// How often an idle worker looks for due calendars.
    pub idle_poll: Duration,
    /// How often stale calendars get a safety-net request.
    pub poll_check: Duration,
    /// How long an in-flight sync may continue after shutdown before its claim is given back.
    pub shutdown_grace: Duration,
}

impl SyncOptions {
    /// The options for a configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            coalescing: config.coalescing,
            poll: PollPolicy::new(config.poll_interval, config.webhook_base_url.is_some()),
            backoff: RetryPolicy::SYNC,
            lease: LeasePolicy::default(),
            max_concurrent: 8,
            max_per_user: 2,
            idle_poll: Duration::from_millis(200),
            poll_check: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What a completed sync applied, for its `sync completed` line.
#[derive(Debug, Clone, Copy, Default)]
struct Applied {
    events: u64,
    pages: u64,
}

/// Runs the sync worker of `context` until `shutdown` is cancelled.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    SyncWorker::from_context(&context).run(shutdown).await;
}

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error("store: {}", with_causes(.0))]
    Store(#[from] StoreError),
    /// Applying page `page` (1 = the first) of the pass from `sync_token` failed.
    #[error("store: {}", with_causes(.source))]
    Page {
        sync_token: Option<String>,
        page: usize,
        source: StoreError,
    },
    #[error("the claim was lost (lease expired and taken over)")]
    LeaseLost,
}

/// Turns recorded sync requests into an up-to-date mirror.
pub struct SyncWorker {
    queue: Arc<dyn SyncQueue>,
    calendar: Arc<dyn CalendarApi>,
    clock: Arc<dyn Clock>,
    owner: String,
    options: SyncOptions,
    entropy: Arc<dyn Entropy>,
}

impl std::fmt::Debug for SyncWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncWorker")
            .field("owner", &self.owner)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SyncWorker {
    /// A worker claiming as `owner` (unique per instance).
    pub fn new(
        queue: Arc<dyn SyncQueue>,
        calendar: Arc<dyn CalendarApi>,
        clock: Arc<dyn Clock>,
        owner: impl Into<String>,
        options: SyncOptions,
    ) -> Self {
        Self {
            queue,
            calendar,
            clock,
            owner: owner.into(),
            options,
            entropy: Arc::new(OsEntropy),
        }
    }

    /// The same worker drawing its jitter from `entropy`.
    pub fn with_entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = entropy;
        self
    }

    /// The worker the server runs.
    pub fn from_context(context: &WorkerContext) -> Self {
        Self::new(
            Arc::new(context.store.clone()),
            Arc::clone(&context.calendar),
            Arc::clone(&context.clock),
            context.instance_id.clone(),
            SyncOptions::from_config(&context.config),
        )
        .with_entropy(Arc::clone(&context.entropy))
    }

    /// Claims and syncs due calendars until `shutdown` is cancelled, then
    /// waits for in-flight syncs to finish or give their claims back.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let overall = Arc::new(Semaphore::new(worker.options.max_concurrent.max(1)));
        let mut per_user: HashMap<UserId, Arc<Semaphore>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut next_poll_check = Instant::now();
        let mut store_failures = 0u32;
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_poll_check {
                next_poll_check = Instant::now() + worker.options.poll_check;
                let now = worker.clock.now();
                match worker
                    .queue
                    .request_polls(worker.options.poll.cutoffs(now), now)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(calendars = n, "safety-net sync requested"),
                    Err(e) => tracing::warn!(error = %e, "requesting safety-net syncs failed"),
                }
            }
            let free = overall.available_permits();
            let mut busy = false;
            if free > 0 {
                match worker.claim(free).await {
                    Ok(claims) => {
                        store_failures = 0;
                        busy = claims.len() == free;
                        for claim in claims {
                            // Only this loop takes permits, and it claimed at most `free`.
                            let Ok(permit) = Arc::clone(&overall).try_acquire_owned() else {
                                worker.give_back(&claim).await;
                                continue;
                            };
                            let user =
                                Arc::clone(per_user.entry(claim.user_id.clone()).or_insert_with(
                                    || Arc::new(Semaphore::new(worker.options.max_per_user.max(1))),
                                ));
                            tasks.spawn(Arc::clone(&worker).sync_claimed(
                                claim,
                                user,
                                permit,
                                shutdown.clone(),
                            ));
                        }
                    }
                    Err(e) => {
                        store_failures = store_failures.saturating_add(1);
                        tracing::warn!(error = %e, "claiming due calendars failed");
                        let pause = worker.options.backoff.delay(store_failures, None, 1.0);
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(pause.min(Duration::from_secs(10))) => {}
                        }
                        continue;
                    }
                }
            }
            while let Some(done) = tasks.try_join_next() {
                log_task_end(done);
            }
            per_user.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(worker.options.idle_poll) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_task_end(done),
            }
        }
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
    }

    async fn claim(&self, free: usize) -> Result<Vec<Claim>, StoreError> {
        let now = self.clock.now();
        self.queue
            .claim_due(ClaimRequest {
                owner: &self.owner,
                now,
                cutoffs: self.options.coalescing.cutoffs(now),
                lease_until: self.options.lease.expires_at(now),
                limit: i64::try_from(free).unwrap_or(i64::MAX),
            })
            .await
    }

    fn claim_ref<'a>(&'a self, claim: &Claim) -> ClaimRef<'a> {
        claim.by(&self.owner)
    }

    /// One claimed calendar: waits for a per-user slot, syncs while renewing
    /// the lease, and settles the outcome; on shutdown, finishes within the
    /// grace period or gives the claim back.
    async fn sync_claimed(
        self: Arc<Self>,
        claim: Claim,
        user: Arc<Semaphore>,
        _slot: OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        let _user_slot = tokio::select! {
            permit = user.acquire_owned() => permit.ok(),
            () = shutdown.cancelled() => {
                self.give_back(&claim).await;
                return;
            }
        };
        // One span per calendar sync (exported as a trace of its own when
        // traces are on); `outcome` is recorded when it is known.
        let span = tracing::info_span!(
            "sync",
            calendar_id = %claim.calendar_id,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let recorded = span.clone();
        async {
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(self.options.shutdown_grace).await;
            };
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.sync(&claim) => {
                    if let Ok(done) = &outcome {
                        tracing::info!(
                            google_calendar_id = %claim.google_calendar_id,
                            events_applied = done.events,
                            pages = done.pages,
                            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                            "sync completed"
                        );
                    }
                    self.settle(&claim, outcome.map(|_| ())).await
                }
                () = self.heartbeat(&claim) => {
                    tracing::warn!("lease lost during the sync; abandoning it");
                    "lease_lost"
                }
                () = grace => {
                    tracing::warn!("sync did not finish within the shutdown grace; giving it back");
                    self.give_back(&claim).await;
                    "abandoned"
                }
            };
            recorded.record("outcome", outcome);
            if outcome != "success" {
                recorded.record("otel.status_code", "error");
            }
            metrics::counter!(crate::metrics::SYNCS, "outcome" => outcome).increment(1);
            metrics::histogram!(crate::metrics::SYNC_DURATION, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
        }
        .instrument(span)
        .await;
    }

    /// Renews the claim every heartbeat; returns only once the claim is lost.
    async fn heartbeat(&self, claim: &Claim) {
        loop {
            tokio::time::sleep(self.options.lease.heartbeat()).await;
            let now = self.clock.now();
            match self
                .queue
                .renew_lease(
                    self.claim_ref(claim),
                    self.options.lease.expires_at(now),
                    now,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "renewing a sync lease failed"),
            }
        }
    }

    /// Incremental sync from the stored token, or a full sync without one (or after a 410).
    async fn sync(&self, claim: &Claim) -> Result<Applied, SyncError> {
        let mut token = claim.sync_token.clone();
        let mut generation = claim.generation;
        let mut applied = Applied::default();
        loop {
            if token.is_none() {
                generation = self
                    .queue
                    .begin_full_sync(self.claim_ref(claim), self.clock.now())
                    .await?
                    .ok_or(SyncError::LeaseLost)?;
            }
            match self
                .pass(claim, token.as_deref(), generation, &mut applied)
                .await
            {
                Err(SyncError::Google(GoogleError::FullSyncRequired)) if token.is_some() => {
                    tracing::info!("sync token expired (410): full resync");
                    token = None;
                }
                outcome => return outcome.map(|()| applied),
            }
        }
    }

    /// Every page of one `events.list` pass, each applied as it arrives; the
    /// last page stores the new sync token in the same transaction.
    async fn pass(
        &self,
        claim: &Claim,
        sync_token: Option<&str>,
        generation: i64,
        applied: &mut Applied,
    ) -> Result<(), SyncError> {
        let fetch = |page_token: Option<String>| {
            let query = EventsQuery {
                sync_token: sync_token.map(str::to_owned),
                page_token,
                max_results: PAGE_SIZE,
            };
            async move {
                self.calendar
                    .list_events(&claim.user_id, &claim.google_calendar_id, &query)
                    .await
            }
        };
        let mut page = fetch(None).await?;
        let mut page_number = 0usize;
        loop {
            page_number += 1;
            log_skipped(claim, page_number, &page.skipped);
            let completion = match (&page.next_page_token, &page.next_sync_token) {
                (Some(_), _) => None,
                (None, Some(next)) => Some(SyncCompletion {
                    sync_token: next,
                    sweep: sync_token.is_none(),
                }),
                (None, None) => {
                    return Err(SyncError::Google(GoogleError::Transient(
                        "events.list ended without nextSyncToken".to_owned(),
                    )));
                }
            };
            let now = self.clock.now();
            let apply = self.queue.apply_page(
                self.claim_ref(claim),
                PageWrite {
                    events: &page.items,
                    generation,
                    completion,
                    lease_until: self.options.lease.expires_at(now),
                    now,
                },
            );
            // One page of read-ahead: Google serves the next page while this
            // one is written, so memory stays bounded by two pages.
            let (held, next) = match page.next_page_token.clone() {
                Some(token) => {
                    let (held, next) = tokio::join!(apply, fetch(Some(token)));
                    (held, Some(next))
                }
                None => (apply.await, None),
            };
            let held = held.map_err(|source| SyncError::Page {
                sync_token: sync_token.map(str::to_owned),
                page: page_number,
                source,
            })?;
            if !held {
                return Err(SyncError::LeaseLost);
            }
            metrics::counter!(crate::metrics::EVENTS_APPLIED).increment(page.items.len() as u64);
            applied.events += page.items.len() as u64;
            applied.pages += 1;
            let Some(next) = next else {
                tracing::debug!("synced");
                return Ok(());
            };
            page = next?;
        }
    }

    /// Records how a sync ended (success was recorded with its last page);
    /// returns the outcome label of [`crate::metrics::SYNCS`].
    async fn settle(&self, claim: &Claim, outcome: Result<(), SyncError>) -> &'static str {
        let error = match outcome {
            Ok(()) => {
                if let Some(requested_at) = claim.requested_at {
                    let latency = (self.clock.now() - requested_at).as_seconds_f64().max(0.0);
                    metrics::histogram!(crate::metrics::NOTIFICATION_TO_SYNC).record(latency);
                }
                return "success";
            }
            Err(SyncError::LeaseLost) => {
                tracing::warn!("lease lost during the sync; another worker took over");
                return "lease_lost";
            }
            Err(error) => error,
        };
        let google = match &error {
            SyncError::Google(google) => Some(google),
            SyncError::Store(_) | SyncError::Page { .. } | SyncError::LeaseLost => None,
        };
        let text = error.to_string();
        // A query the database refuses (not one it cannot answer) may refuse
        // the same page for ever: count it (see `sync_domain::repeats`).
        let site = match &error {
            SyncError::Page {
                sync_token,
                page,
                source: StoreError::Query(_),
            } => Some(FailureSite::Page {
                sync_token: sync_token.as_deref(),
                page: *page,
            }),
            SyncError::Store(StoreError::Query(_)) => Some(FailureSite::FullSyncStart),
            _ => None,
        };
        let repeat = site.map(|site| {
            count_identical_failures(
                claim
                    .last_failure
                    .as_ref()
                    .map(|(last, count)| (last, *count)),
                site,
                &text,
            )
        });
        let action = failure_action(
            google,
            text,
            claim.failure_count,
            repeat,
            self.clock.now(),
            &self.options.backoff,
            self.entropy.unit(),
        );
        let label = match &action {
            FailureAction::Retry { .. } => "retry",
            FailureAction::StopRetrying { .. } => "stopped_retrying",
            // The state the calendar goes to.
            FailureAction::Gone { .. } => SyncState::Gone.as_str(),
            FailureAction::NeedsReauth { .. } => SyncState::NeedsReauth.as_str(),
        };
        if let FailureAction::StopRetrying { error, repeat } = &action {
            metrics::counter!(crate::metrics::RETRIES_STOPPED).increment(1);
            tracing::error!(
                google_calendar_id = %claim.google_calendar_id,
                error = %error,
                tries = repeat.count,
                "sync stopped retrying: the same failure on the same page; the calendar stays failing until a new sync request"
            );
        } else {
            tracing::warn!(error = %error, action = ?action, "sync failed");
        }
        if let Err(e) = self
            .queue
            .fail(self.claim_ref(claim), action, self.clock.now())
            .await
        {
            // The lease expires and another claim retries it.
            tracing::warn!(error = %e, "recording a failed sync failed");
        }
        label
    }

    /// Gives a claim back unfinished; its request stays pending.
    async fn give_back(&self, claim: &Claim) {
        if let Err(e) = self
            .queue
            .release(self.claim_ref(claim), self.clock.now())
            .await
        {
            tracing::warn!(calendar_id = %claim.calendar_id, error = %e, "releasing a claim failed; its lease will expire");
        }
    }
}

/// Items Google sent that are not events: counted and logged by calendar,
/// page and position, never by content (it may be anything, secrets included).
fn log_skipped(claim: &Claim, page: usize, skipped: &[SkippedItem]) {
    for item in skipped {
        let reason = match item.reason {
            SkipReason::NoId => "no_id",
            SkipReason::NotAnObject => "not_an_object",
        };
        metrics::counter!(crate::metrics::ITEMS_SKIPPED, "reason" => reason).increment(1);
        tracing::warn!(
            google_calendar_id = %claim.google_calendar_id,
            page,
            position = item.position,
            reason,
            "skipped an events.list item that is not an event"
        );
    }
}

/// A store error with the causes its `Display` leaves out (the database's own
/// message is in the source), so `last_error` says why.
fn with_causes(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a sync task panicked; its lease will expire and it will be retried");
    }
}
