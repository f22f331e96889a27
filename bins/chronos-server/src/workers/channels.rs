//! The channel lifecycle worker (SPEC section 7): registers a channel for every
//! calendar in push mode, renews it well before it expires (new channel first,
//! then the switch-over, then the old one is stopped after a short overlap),
//! and stops every channel that was replaced, disconnected or abandoned.
//!
//! Each tick:
//! 1. claims the calendars due for a channel (first registration, renewal or
//!    retry) under a lease, so with several instances exactly one works on a
//!    calendar; for each: persist a `registering` channel, call `events.watch`,
//!    activate the channel and schedule its renewal ([`RenewalPlan`]);
//! 2. retires channels a crash left behind (see `sync_store::channels`);
//! 3. stops the retiring channels that are due, retrying failures with backoff.
//!
//! Without `webhook_base_url` step 1 is skipped (logged once); stopping goes on.

use super::WorkerContext;
use anyhow::Context as _;
use std::time::Duration;
use sync_domain::admin::{StopOutcome, stop_channel};
use sync_domain::calendar::{GoogleError, WatchRequest};
use sync_domain::ports::Entropy;
use sync_domain::renewal::{self, RenewalPlan};
use sync_domain::secret::CHANNEL_TOKEN_BYTES;
use sync_domain::{ChannelId, ChannelToken};
use sync_store::calendars::NewChannel;
use sync_store::channels::ChannelWork;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The worker's pace and bounds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// Pause between ticks.
    pub tick: Duration,
    /// How long a claim on a calendar lasts if this instance dies holding it.
    pub lease: Duration,
    /// Calendars claimed, and channels stopped, per tick at most.
    pub batch: i64,
    /// How long the replaced channel stays open after a switch-over.
    pub overlap: Duration,
    /// After this long, a channel still `registering` counts as abandoned.
    pub registration_timeout: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            batch: 50,
            overlap: renewal::OVERLAP,
            registration_timeout: renewal::REGISTRATION_TIMEOUT,
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Channels registered (first ones and renewals).
    pub registered: usize,
    /// Registrations that failed and will be retried.
    pub failed: usize,
    /// Calendars switched to polling.
    pub polling: usize,
    /// Channels stopped at Google.
    pub stopped: usize,
    /// Stops that failed and will be retried.
    pub stop_failed: usize,
}

/// The channel worker of one instance.
pub struct ChannelWorker {
    context: WorkerContext,
    settings: ChannelSettings,
}

/// Counts a registration in [`crate::metrics::REGISTRATIONS`]: a renewal if
/// the calendar had a channel, else its first.
fn count_registration(work: &ChannelWork, outcome: &'static str) {
    let kind = if work.current_channel_id.is_some() {
        "renewal"
    } else {
        "first"
    };
    metrics::counter!(crate::metrics::REGISTRATIONS, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

/// A fresh channel id (UUID v4) and a 256-bit token.
fn new_channel(entropy: &dyn Entropy) -> anyhow::Result<NewChannel> {
    let mut id = [0u8; 16];
    let mut token = [0u8; CHANNEL_TOKEN_BYTES];
    entropy
        .fill(&mut id)
        .and_then(|()| entropy.fill(&mut token))
        .map_err(|e| anyhow::anyhow!("reading randomness for a new channel: {e}"))?;
    Ok(NewChannel {
        channel_id: ChannelId::from_uuid(uuid::Builder::from_random_bytes(id).into_uuid()),
        token: ChannelToken::from_random_bytes(token),
    })
}

impl ChannelWorker {
    /// A worker over the instance's context.
    pub fn new(context: WorkerContext, settings: ChannelSettings) -> Self {
        Self { context, settings }
    }

    /// One pass: register or renew what is due, recover abandoned channels, stop what is due.
    pub async fn tick(&self) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        if let Some(address) = self.context.config.webhook_address() {
            self.register_due(&address, &mut report).await?;
        }
        self.stop_due(&mut report).await?;
        Ok(report)
    }

    async fn register_due(&self, address: &str, report: &mut TickReport) -> anyhow::Result<()> {
        let store = &self.context.store;
        let owner = self.context.instance_id.as_str();
        let claimed = store
            .claim_channel_work(owner, self.settings.lease, self.settings.batch)
            .await
            .context("claiming calendars due for a channel")?;
        for work in claimed {
            let calendar_id = work.calendar_id;
            let span = tracing::info_span!("channel", calendar_id = %calendar_id);
            if let Err(e) = self.register(&work, address, report).instrument(span).await {
                count_registration(&work, "error");
                tracing::warn!(calendar_id = %calendar_id, error = %format!("{e:#}"), "channel registration step failed; the lease will lapse and it is retried");
                let _ = store.release_channel_lease(calendar_id, owner).await;
            }
        }
        Ok(())
    }

    /// Registers one channel: persisted first, so the `sync` handshake that may
    /// beat `events.watch`'s answer meets a known channel.
    async fn register(
        &self,
        work: &ChannelWork,
        address: &str,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        let store = &self.context.store;
        let owner = self.context.instance_id.as_str();
        let Some(calendar) = store.calendar(work.calendar_id).await? else {
            return Ok(()); // disconnected since the claim
        };
        let channel = new_channel(self.context.entropy.as_ref())?;
        store
            .insert_registering_channel(&calendar, &channel)
            .await
            .context("persisting the channel before events.watch")?;
        let request = WatchRequest {
            channel_id: channel.channel_id.clone(),
            token: channel.token.clone(),
            address: address.to_owned(),
            ttl: self.context.config.channel_ttl,
        };
        let watched = self
            .context
            .calendar
            .watch(&work.user_id, &work.google_calendar_id, &request)
            .await;
        let now = self.context.clock.now();
        match watched {
            Ok(granted) => {
                store
                    .activate_channel(
                        work.calendar_id,
                        &granted.channel_id,
                        &granted.resource_id,
                        granted.expires_at,
                    )
                    .await
                    .context("activating the new channel")?;
                let plan = RenewalPlan::new(
                    now,
                    granted.expires_at,
                    self.context.config.channel_ttl,
                    self.context.entropy.unit(),
                );
                store
                    .channel_registered(
                        work.calendar_id,
                        owner,
                        plan.renew_at,
                        self.settings.overlap,
                    )
                    .await?;
                tracing::info!(
                    calendar_id = %work.calendar_id,
                    channel_id = %granted.channel_id,
                    replaced = work.current_channel_id.as_deref().unwrap_or("-"),
                    expires_at = %plan.expires_at,
                    renew_at = %plan.renew_at,
                    "channel registered"
                );
                count_registration(work, "registered");
                report.registered += 1;
            }
            Err(GoogleError::PushNotSupported) => {
                store
                    .switch_to_polling(
                        work.calendar_id,
                        &channel.channel_id,
                        owner,
                        "push notifications not supported for this calendar; polling",
                    )
                    .await?;
                tracing::info!(calendar_id = %work.calendar_id, "push not supported; calendar switched to polling");
                count_registration(work, "polling");
                report.polling += 1;
            }
            Err(error) => {
                let failures = u32::try_from(work.failure_count.max(0))
                    .unwrap_or(0)
                    .saturating_add(1);
                let retry_at = renewal::retry_at(
                    now,
                    failures,
                    self.context.entropy.unit(),
                    work.current_expires_at,
                );
                // A timeout or 5xx may still have created the channel at Google.
                let maybe_created = matches!(error, GoogleError::Transient(_));
                store
                    .channel_registration_failed(
                        work.calendar_id,
                        &channel.channel_id,
                        owner,
                        &error.to_string(),
                        retry_at,
                        maybe_created,
                    )
                    .await?;
                tracing::warn!(calendar_id = %work.calendar_id, %error, %retry_at, "channel registration failed; retrying later");
                count_registration(work, "failed");
                report.failed += 1;
            }
        }
        Ok(())
    }

    async fn stop_due(&self, report: &mut TickReport) -> anyhow::Result<()> {
        let store = &self.context.store;
        let now = self.context.clock.now();
        let recovered = store
            .retire_abandoned_channels(
                now - self.settings.registration_timeout,
                self.context.config.channel_ttl,
            )
            .await
            .context("retiring abandoned channels")?;
        if recovered > 0 {
            tracing::info!(
                channels = recovered,
                "retired channels left behind by a crash or a disconnect"
            );
        }
        let due = store
            .channels_due_for_stop(self.settings.batch)
            .await
            .context("listing channels due for stopping")?;
        for channel in due {
            let outcome = stop_channel(
                store,
                self.context.calendar.as_ref(),
                &channel,
                now,
                self.context.entropy.unit(),
            )
            .await?;
            match outcome {
                StopOutcome::Stopped => {
                    tracing::info!(channel_id = %channel.channel_id, "channel stopped");
                    metrics::counter!(crate::metrics::STOPS, "outcome" => "stopped").increment(1);
                    report.stopped += 1;
                }
                StopOutcome::RetryAt(at) => {
                    tracing::warn!(channel_id = %channel.channel_id, retry_at = %at, "channel stop failed; retrying later");
                    metrics::counter!(crate::metrics::STOPS, "outcome" => "retry").increment(1);
                    report.stop_failed += 1;
                }
            }
        }
        Ok(())
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    run_with(context, ChannelSettings::default(), shutdown).await;
}

/// As [`run`], with explicit settings.
pub async fn run_with(
    context: WorkerContext,
    settings: ChannelSettings,
    shutdown: CancellationToken,
) {
    if context.config.webhook_base_url.is_none() {
        tracing::info!(
            "webhook_base_url is unset: channel registration is skipped and calendars are kept fresh by polling"
        );
    }
    let worker = ChannelWorker::new(context, settings);
    loop {
        if let Err(e) = worker.tick().await {
            tracing::warn!(error = %format!("{e:#}"), "channel worker tick failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(settings.tick) => {}
        }
    }
}
