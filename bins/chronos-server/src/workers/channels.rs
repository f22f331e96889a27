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
use std::sync::Arc;
use std::time::Duration;
use sync_domain::admin::{StopOutcome, stop_channel};
use sync_domain::calendar::{CalendarApi, GoogleError, WatchRequest};
use sync_domain::channel::{
    Activation, ChannelState, ChannelStore, ChannelWork, FailedRegistration, FailedWatch,
    GrantedChannel, NewChannel, PushMode,
};
use sync_domain::ports::{Clock, Entropy};
use sync_domain::renewal::{self, RenewalPlan};
use sync_domain::secret::CHANNEL_TOKEN_BYTES;
use sync_domain::{ChannelId, ChannelToken};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The worker's pace and bounds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// Pause between ticks.
    pub tick: Duration,
    /// How long a claim on a calendar lasts if this instance dies holding it;
    /// renewed just before each calendar's `events.watch`.
    pub lease: Duration,
    /// Calendars worked on, and channels stopped, per tick at most.
    pub batch: i64,
    /// Calendars claimed at once: small, so that calendars waiting behind slow
    /// `events.watch` calls are not held under a lease that lapses meanwhile.
    pub claim_batch: i64,
    /// How long the replaced channel stays open after a switch-over.
    pub overlap: Duration,
    /// After this long, a channel still `registering` counts as abandoned.
    pub registration_timeout: Duration,
    /// How often the crash-recovery sweep runs (first tick, then at most this
    /// often): it reads every active channel, and what it finds only a crash
    /// leaves behind, since disconnecting a calendar or marking it gone
    /// retires its channels in the same transaction.
    pub recovery_interval: Duration,
    /// How long a stopped channel's row is kept before it is deleted.
    pub stopped_retention: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            batch: 50,
            claim_batch: 5,
            overlap: renewal::OVERLAP,
            registration_timeout: renewal::REGISTRATION_TIMEOUT,
            recovery_interval: Duration::from_secs(60),
            stopped_retention: renewal::STOPPED_CHANNEL_RETENTION,
        }
    }
}

impl ChannelSettings {
    /// The defaults, with what the configuration sets.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            stopped_retention: config.stopped_channel_retention,
            ..Self::default()
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
    /// Channels granted after this instance lost the calendar's lease: retired.
    pub lease_lost: usize,
    /// Calendars switched to polling.
    pub polling: usize,
    /// Channels stopped at Google.
    pub stopped: usize,
    /// Stops that failed and will be retried.
    pub stop_failed: usize,
    /// Rows of long-stopped channels deleted.
    pub deleted: usize,
}

/// What the channel worker works with: the ports and the two settings it
/// reads from the configuration.
#[derive(Clone)]
pub struct ChannelPorts {
    pub store: Arc<dyn ChannelStore>,
    pub calendar: Arc<dyn CalendarApi>,
    pub clock: Arc<dyn Clock>,
    /// Randomness for channel ids, tokens and jitter.
    pub entropy: Arc<dyn Entropy>,
    /// `{webhook_base_url}/calendar/webhook`; `None`: no registration.
    pub webhook_address: Option<String>,
    /// The lifetime asked of Google for new channels.
    pub channel_ttl: Duration,
    /// Identifies this instance in leases.
    pub instance_id: String,
}

impl ChannelPorts {
    /// The ports of an instance's context (the real store).
    pub fn from_context(context: WorkerContext) -> Self {
        Self {
            webhook_address: context.config.webhook_address(),
            channel_ttl: context.config.channel_ttl,
            store: Arc::new(context.store),
            calendar: context.calendar,
            clock: context.clock,
            entropy: context.entropy,
            instance_id: context.instance_id,
        }
    }
}

/// The channel worker of one instance.
pub struct ChannelWorker {
    ports: ChannelPorts,
    settings: ChannelSettings,
    /// When the crash-recovery sweep last ran (`None`: not yet).
    last_recovery: std::sync::Mutex<Option<time::OffsetDateTime>>,
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
        Self::with_ports(ChannelPorts::from_context(context), settings)
    }

    /// A worker over explicit ports (tests inject fakes).
    pub fn with_ports(ports: ChannelPorts, settings: ChannelSettings) -> Self {
        Self {
            ports,
            settings,
            last_recovery: std::sync::Mutex::new(None),
        }
    }

    /// Whether the crash-recovery sweep is due at `now`; if so, it counts as run.
    fn recovery_due(&self, now: time::OffsetDateTime) -> bool {
        let mut last = self
            .last_recovery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| now - at >= self.settings.recovery_interval || now < at);
        if due {
            *last = Some(now);
        }
        due
    }

    /// One pass: register or renew what is due, recover abandoned channels
    /// (at most once a `recovery_interval`), stop what is due, delete rows
    /// stopped longer than the retention.
    pub async fn tick(&self) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        if let Some(address) = &self.ports.webhook_address {
            self.register_due(address, &mut report).await?;
        }
        self.stop_due(&mut report).await?;
        self.delete_stopped(&mut report).await?;
        Ok(report)
    }

    async fn register_due(&self, address: &str, report: &mut TickReport) -> anyhow::Result<()> {
        let store = &self.ports.store;
        let owner = self.ports.instance_id.as_str();
        let mut handled = 0;
        while handled < self.settings.batch {
            let limit = self
                .settings
                .claim_batch
                .clamp(1, self.settings.batch - handled);
            let claimed = store
                .claim_channel_work(owner, self.settings.lease, limit)
                .await
                .context("claiming calendars due for a channel")?;
            let count = i64::try_from(claimed.len()).unwrap_or(i64::MAX);
            handled = handled.saturating_add(count);
            for work in claimed {
                let calendar_id = work.calendar_id;
                // The calendar may have waited behind slow watches: take the
                // lease afresh, or leave it if another instance has it now.
                match store
                    .renew_channel_lease(calendar_id, owner, self.settings.lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(calendar_id = %calendar_id, "channel lease lost before registration; left to its new holder");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(calendar_id = %calendar_id, error = %e, "renewing the channel lease failed; it lapses and the calendar is retried");
                        continue;
                    }
                }
                let span = tracing::info_span!("channel", calendar_id = %calendar_id);
                if let Err(e) = self.register(&work, address, report).instrument(span).await {
                    count_registration(&work, "error");
                    tracing::warn!(calendar_id = %calendar_id, error = %format!("{e:#}"), "channel registration step failed; the lease will lapse and it is retried");
                    let _ = store.release_channel_lease(calendar_id, owner).await;
                }
            }
            if count < limit {
                break;
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
        let store = &self.ports.store;
        let owner = self.ports.instance_id.as_str();
        let channel = new_channel(self.ports.entropy.as_ref())?;
        let persisted = store
            .begin_registration(work, &channel)
            .await
            .context("persisting the channel before events.watch")?;
        if !persisted {
            return Ok(()); // disconnected since the claim
        }
        let request = WatchRequest {
            channel_id: channel.channel_id.clone(),
            token: channel.token.clone(),
            address: address.to_owned(),
            ttl: self.ports.channel_ttl,
        };
        let watched = self
            .ports
            .calendar
            .watch(&work.user_id, &work.google_calendar_id, &request)
            .await;
        let now = self.ports.clock.now();
        match watched {
            Ok(granted) => {
                let plan = RenewalPlan::new(
                    now,
                    granted.expires_at,
                    self.ports.channel_ttl,
                    self.ports.entropy.unit(),
                );
                let activation = store
                    .channel_registered(GrantedChannel {
                        calendar_id: work.calendar_id,
                        channel_id: &granted.channel_id,
                        resource_id: &granted.resource_id,
                        expires_at: granted.expires_at,
                        owner,
                        renew_at: plan.renew_at,
                        overlap: self.settings.overlap,
                    })
                    .await
                    .context("activating the new channel")?;
                match activation {
                    Activation::Activated => {
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
                    Activation::LeaseLost => {
                        tracing::warn!(calendar_id = %work.calendar_id, channel_id = %granted.channel_id, "channel granted after the lease was lost; retired instead of made current");
                        count_registration(work, "lease_lost");
                        report.lease_lost += 1;
                    }
                }
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
                count_registration(work, PushMode::Polling.as_str());
                report.polling += 1;
            }
            Err(error) => {
                let failures = u32::try_from(work.failure_count.max(0))
                    .unwrap_or(0)
                    .saturating_add(1);
                let retry_at = renewal::retry_at(
                    now,
                    failures,
                    self.ports.entropy.unit(),
                    work.current_expires_at,
                );
                let outcome = FailedWatch::classify(&error);
                if outcome == FailedWatch::MaybeCreated {
                    metrics::counter!(crate::metrics::MAYBE_CREATED).increment(1);
                }
                store
                    .channel_registration_failed(FailedRegistration {
                        calendar_id: work.calendar_id,
                        channel_id: &channel.channel_id,
                        owner,
                        error: &error.to_string(),
                        retry_at,
                        outcome,
                    })
                    .await?;
                tracing::warn!(calendar_id = %work.calendar_id, %error, %retry_at, maybe_created = outcome == FailedWatch::MaybeCreated, "channel registration failed; retrying later");
                count_registration(work, "failed");
                report.failed += 1;
            }
        }
        Ok(())
    }

    async fn stop_due(&self, report: &mut TickReport) -> anyhow::Result<()> {
        let store = &self.ports.store;
        let now = self.ports.clock.now();
        let recovered = if self.recovery_due(now) {
            store
                .retire_abandoned_channels(
                    now - self.settings.registration_timeout,
                    self.ports.channel_ttl,
                )
                .await
                .context("retiring abandoned channels")?
        } else {
            0
        };
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
                store.as_ref(),
                self.ports.calendar.as_ref(),
                &channel,
                now,
                self.ports.entropy.unit(),
            )
            .await?;
            match outcome {
                StopOutcome::Stopped => {
                    tracing::info!(channel_id = %channel.channel_id, "channel stopped");
                    metrics::counter!(crate::metrics::STOPS, "outcome" => ChannelState::Stopped.as_str())
                        .increment(1);
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

    /// Deletes the rows of channels stopped longer than the retention ago.
    async fn delete_stopped(&self, report: &mut TickReport) -> anyhow::Result<()> {
        let now = self.ports.clock.now();
        let Some(cutoff) = time::Duration::try_from(self.settings.stopped_retention)
            .ok()
            .and_then(|retention| now.checked_sub(retention))
        else {
            return Ok(());
        };
        let deleted = self
            .ports
            .store
            .delete_stopped_channels(cutoff, self.settings.batch)
            .await
            .context("deleting long-stopped channels")?;
        if deleted > 0 {
            tracing::debug!(channels = deleted, "deleted long-stopped channels");
            metrics::counter!(crate::metrics::STOPPED_CHANNELS_DELETED)
                .increment(u64::try_from(deleted).unwrap_or(u64::MAX));
            report.deleted += deleted;
        }
        Ok(())
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(context: WorkerContext, shutdown: CancellationToken) {
    let settings = ChannelSettings::from_config(&context.config);
    run_with(context, settings, shutdown).await;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use google_client::fakes::{FakeGoogleCalendar, FakeMethod};
    use sync_domain::calendar::{CalendarListEntry, EventsPage, EventsQuery, WatchedChannel};
    use sync_domain::channel::{CHANNEL_ID_NOT_UNIQUE, ChannelState, PushMode};
    use sync_domain::fakes::{CountingEntropy, FakeClock, InMemoryChannelStore};
    use sync_domain::{CalendarId, GoogleCalendarId, ResourceId, UserId};

    const ME: &str = "instance-a";

    struct World {
        clock: Arc<FakeClock>,
        store: Arc<InMemoryChannelStore>,
        google: FakeGoogleCalendar,
    }

    impl World {
        fn new() -> Self {
            let clock = Arc::new(FakeClock::new(time::OffsetDateTime::UNIX_EPOCH));
            Self {
                store: Arc::new(InMemoryChannelStore::new(clock.clone())),
                google: FakeGoogleCalendar::with_clock(clock.clone()),
                clock,
            }
        }

        /// A calendar connected here and existing at Google.
        fn calendar(&self, n: u128) -> CalendarId {
            let id = CalendarId::from_uuid(uuid::Uuid::from_u128(n + 1));
            let user = UserId::parse(format!("user-{n}")).unwrap();
            let primary = GoogleCalendarId::parse("primary").unwrap();
            self.google.add_calendar(&user, &primary);
            self.store.add_calendar(id, user, primary);
            id
        }

        fn worker(&self, calendar: Arc<dyn CalendarApi>) -> ChannelWorker {
            ChannelWorker::with_ports(
                ChannelPorts {
                    store: self.store.clone(),
                    calendar,
                    clock: self.clock.clone(),
                    entropy: Arc::new(CountingEntropy::default()),
                    webhook_address: Some("https://chronos.example.com/calendar/webhook".into()),
                    channel_ttl: Duration::from_secs(604_800),
                    instance_id: ME.into(),
                },
                ChannelSettings::default(),
            )
        }

        fn plain_worker(&self) -> ChannelWorker {
            self.worker(Arc::new(self.google.clone()))
        }

        fn state_of(&self, channel: &ChannelId) -> Option<ChannelState> {
            self.store
                .channels()
                .into_iter()
                .find(|c| &c.channel_id == channel)
                .map(|c| c.state)
        }
    }

    /// Google, with something happening just before each `events.watch`.
    struct BeforeWatch<F> {
        google: FakeGoogleCalendar,
        before: F,
    }

    #[async_trait]
    impl<F: Fn() + Send + Sync + 'static> CalendarApi for BeforeWatch<F> {
        async fn watch(
            &self,
            user_id: &UserId,
            calendar: &GoogleCalendarId,
            request: &WatchRequest,
        ) -> Result<WatchedChannel, GoogleError> {
            (self.before)();
            self.google.watch(user_id, calendar, request).await
        }

        async fn stop_channel(
            &self,
            user_id: &UserId,
            channel_id: &ChannelId,
            resource_id: &ResourceId,
        ) -> Result<(), GoogleError> {
            self.google
                .stop_channel(user_id, channel_id, resource_id)
                .await
        }

        async fn list_events(
            &self,
            user_id: &UserId,
            calendar: &GoogleCalendarId,
            query: &EventsQuery,
        ) -> Result<EventsPage, GoogleError> {
            self.google.list_events(user_id, calendar, query).await
        }

        async fn list_calendars(
            &self,
            user_id: &UserId,
        ) -> Result<Vec<CalendarListEntry>, GoogleError> {
            self.google.list_calendars(user_id).await
        }
    }

    #[tokio::test]
    async fn a_first_channel_becomes_current_and_its_renewal_is_scheduled() {
        let world = World::new();
        let id = world.calendar(0);
        let report = world.plain_worker().tick().await.unwrap();
        assert_eq!(report.registered, 1);
        let channels = world.store.channels();
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0].state, ChannelState::Active);
        let calendar = world.store.calendar(id).unwrap();
        assert_eq!(
            calendar.work.current_channel_id.as_deref(),
            Some(channels[0].channel_id.as_str())
        );
        assert!(calendar.lease.is_none(), "lease released");
        assert!(calendar.next_attempt_at.unwrap() > world.clock.now());
        assert_eq!(world.google.open_channels().len(), 1);
    }

    #[tokio::test]
    async fn push_not_supported_switches_the_calendar_to_polling() {
        let world = World::new();
        let id = world.calendar(0);
        world.google.set_push_supported(
            &UserId::parse("user-0").unwrap(),
            &GoogleCalendarId::parse("primary").unwrap(),
            false,
        );
        let report = world.plain_worker().tick().await.unwrap();
        assert_eq!(report.polling, 1);
        assert_eq!(
            world.store.calendar(id).unwrap().push_mode,
            PushMode::Polling
        );
        assert_eq!(world.store.channels()[0].state, ChannelState::Stopped);
    }

    #[tokio::test]
    async fn a_refused_watch_closes_its_channel_and_is_retried() {
        let world = World::new();
        let id = world.calendar(0);
        world.google.fail_next(
            FakeMethod::Watch,
            [GoogleError::Other {
                status: 400,
                reason: "invalid".into(),
                message: "bad address".into(),
            }],
        );
        let report = world.plain_worker().tick().await.unwrap();
        assert_eq!(report.failed, 1);
        assert_eq!(world.store.channels()[0].state, ChannelState::Stopped);
        let calendar = world.store.calendar(id).unwrap();
        assert_eq!(calendar.work.failure_count, 1);
        assert!(calendar.next_attempt_at.unwrap() > world.clock.now());
    }

    #[tokio::test]
    async fn a_watch_whose_answer_was_lost_is_kept_and_stopped_once_the_resource_id_is_known() {
        let world = World::new();
        world.calendar(0);
        // The client's retry of a watch Google had created finds the id taken.
        world.google.fail_next(
            FakeMethod::Watch,
            [GoogleError::Other {
                status: 400,
                reason: CHANNEL_ID_NOT_UNIQUE.into(),
                message: "Channel id not unique".into(),
            }],
        );
        let worker = world.plain_worker();
        worker.tick().await.unwrap();
        let lost = world.store.channels()[0].channel_id.clone();
        assert_eq!(world.state_of(&lost), Some(ChannelState::Retiring));

        world.clock.advance(Duration::from_secs(60));
        // The next registration reveals the resource id: stopped in the same tick.
        let report = worker.tick().await.unwrap();
        assert_eq!((report.registered, report.stopped), (1, 1));
        assert_eq!(world.state_of(&lost), Some(ChannelState::Stopped));
        assert!(world.google.stops().iter().any(|s| s.channel_id == lost));
    }

    #[tokio::test]
    async fn calendars_are_claimed_in_small_batches() {
        let world = World::new();
        for n in 0..12 {
            world.calendar(n);
        }
        let report = world.plain_worker().tick().await.unwrap();
        assert_eq!(report.registered, 12);
        assert_eq!(world.store.claim_sizes(), vec![5, 5, 2]);
    }

    #[tokio::test]
    async fn a_calendar_whose_lease_was_taken_while_it_waited_is_left_to_its_new_holder() {
        let world = World::new();
        let first = world.calendar(0);
        let second = world.calendar(1);
        let (store, clock) = (world.store.clone(), world.clock.clone());
        // While the first calendar's watch is slow, the second's lease lapses
        // and another instance takes it.
        let google = BeforeWatch {
            google: world.google.clone(),
            before: move || {
                clock.advance(Duration::from_secs(301));
                store.set_lease(second, "instance-b", clock.now() + Duration::from_secs(300));
            },
        };
        let report = world.worker(Arc::new(google)).tick().await.unwrap();
        assert_eq!(report.registered, 1);
        assert_eq!(world.google.watches().len(), 1);
        assert!(
            world
                .store
                .calendar(first)
                .unwrap()
                .work
                .current_channel_id
                .is_some()
        );
        assert!(
            world
                .store
                .calendar(second)
                .unwrap()
                .work
                .current_channel_id
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_channel_granted_after_the_lease_was_lost_is_retired_not_made_current() {
        let world = World::new();
        let id = world.calendar(0);
        let (store, clock) = (world.store.clone(), world.clock.clone());
        let google = BeforeWatch {
            google: world.google.clone(),
            before: move || {
                store.set_lease(id, "instance-b", clock.now() + Duration::from_secs(300))
            },
        };
        let report = world.worker(Arc::new(google)).tick().await.unwrap();
        assert_eq!((report.registered, report.lease_lost), (0, 1));
        assert!(
            world
                .store
                .calendar(id)
                .unwrap()
                .work
                .current_channel_id
                .is_none()
        );
        // Google holds it and nobody uses it: stopped in the same tick.
        let channel = world.store.channels()[0].clone();
        assert_eq!(channel.state, ChannelState::Stopped);
        assert_eq!(report.stopped, 1);
    }

    #[tokio::test]
    async fn stopped_channels_are_deleted_after_the_retention() {
        let world = World::new();
        let id = world.calendar(0);
        let worker = world.plain_worker();
        worker.tick().await.unwrap();
        let channel = world.store.channels()[0].channel_id.clone();
        world.store.disconnect(id);
        worker.tick().await.unwrap();
        assert_eq!(world.state_of(&channel), Some(ChannelState::Stopped));

        world
            .clock
            .advance(renewal::STOPPED_CHANNEL_RETENTION - Duration::from_secs(60));
        assert_eq!(worker.tick().await.unwrap().deleted, 0);
        world.clock.advance(Duration::from_secs(120));
        assert_eq!(worker.tick().await.unwrap().deleted, 1);
        assert_eq!(world.state_of(&channel), None);
    }

    #[tokio::test]
    async fn orphans_are_swept_once_a_recovery_interval_not_every_tick() {
        let world = World::new();
        let id = world.calendar(0);
        let worker = world.plain_worker();
        worker.tick().await.unwrap();
        let channel = world.store.channels()[0].channel_id.clone();
        world.store.orphan_channels_of(id);
        world.clock.advance(Duration::from_secs(1));
        worker.tick().await.unwrap();
        assert_eq!(world.state_of(&channel), Some(ChannelState::Active));

        world
            .clock
            .advance(ChannelSettings::default().recovery_interval);
        worker.tick().await.unwrap();
        assert_eq!(world.state_of(&channel), Some(ChannelState::Stopped));
    }
}
