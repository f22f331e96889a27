//! Prometheus metrics: the recorder, installed once per process, and the
//! sampler that turns the database's aggregate counts into gauges.
//!
//! Library crates record through the `metrics` facade (the webhook, Google
//! calls, channel stops); the workers record syncs and registrations; this
//! module owns the exporter and serves its text through `GET /metrics`. Every
//! metric is listed in `docs/operations.md`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use sync_domain::SyncState;
use sync_domain::channel::{ChannelState, PushMode};
use sync_domain::ports::Clock;
use sync_store::Store;
use sync_store::health::HealthSnapshot;
use tokio_util::sync::CancellationToken;

/// Syncs by `outcome`: `success`, `retry`, `stopped_retrying`, `gone`,
/// `needs_reauth`, `lease_lost`, `abandoned`.
pub const SYNCS: &str = "chronos_syncs_total";
/// Syncs that stopped retrying: the same failure on the same page
/// `IDENTICAL_FAILURE_LIMIT` times in a row (see `sync_domain::repeats`); the
/// calendar stays `failing` until a new sync request.
pub const RETRIES_STOPPED: &str = "chronos_sync_retries_stopped_total";
/// How long a sync took, by `outcome` as in [`SYNCS`].
pub const SYNC_DURATION: &str = "chronos_sync_duration_seconds";
/// Events (created, changed or cancelled) written to the mirror.
pub const EVENTS_APPLIED: &str = "chronos_sync_events_applied_total";
/// `events.list` items left out because they are not events (no `id`, not an
/// object), by `reason` (`no_id`, `not_an_object`).
pub const ITEMS_SKIPPED: &str = "chronos_sync_items_skipped_total";
/// From the first unserved sync request (a notification, an API call or a
/// safety-net poll) to the successful end of the sync that served it.
pub const NOTIFICATION_TO_SYNC: &str = "chronos_notification_to_sync_seconds";
/// Channel registrations by `kind` (`first`, `renewal`) and `outcome`
/// (`registered`, `failed`, `polling`, `lease_lost`, `error`).
pub const REGISTRATIONS: &str = "chronos_channel_registrations_total";
/// Watches whose answer was lost (timeout, 5xx, or `channelIdNotUnique` on a
/// retry): the channel may exist at Google, so it is kept and stopped once the
/// calendar's resource id is known.
pub const MAYBE_CREATED: &str = "chronos_channel_watch_maybe_created_total";
/// Rows of channels stopped longer than `stopped_channel_retention_hours`, deleted.
pub const STOPPED_CHANNELS_DELETED: &str = "chronos_stopped_channels_deleted_total";
/// Channel stops by `outcome` (`stopped`, `retry`, `error`).
pub const STOPS: &str = webhook_http::internal::STOPS_METRIC;
/// Calendars by `state` (`pending`, `syncing`, `idle`, `failing`, `needs_reauth`, `gone`).
pub const CALENDARS: &str = "chronos_calendars";
/// Calendars by `push_mode` (`push`, `polling`).
pub const CALENDARS_BY_PUSH_MODE: &str = "chronos_calendars_by_push_mode";
/// Calendars with an unserved sync request.
pub const PENDING_REQUESTS: &str = "chronos_sync_requests_pending";
/// Age of the oldest unserved sync request (0 when none).
pub const OLDEST_PENDING: &str = "chronos_sync_oldest_pending_seconds";
/// Channels by `state` (`registering`, `active`, `retiring`).
pub const CHANNELS: &str = "chronos_channels";
/// Seconds until the soonest active channel expires (+Inf when none).
pub const SOONEST_EXPIRY: &str = "chronos_channel_soonest_expiry_seconds";

/// Always 1, labelled with the `version` and the git `commit` of the binary.
pub const BUILD_INFO: &str = "chronos_build_info";
/// Connections the database pool holds open, by `pool`.
pub const POOL_SIZE: &str = "chronos_db_pool_connections";
/// The most connections the pool may open, by `pool`.
pub const POOL_MAX_SIZE: &str = "chronos_db_pool_max_connections";
/// Open connections idle in the pool, by `pool`.
pub const POOL_AVAILABLE: &str = "chronos_db_pool_available_connections";
/// Callers waiting for a connection, by `pool` (above 0 for long: the pool is exhausted).
pub const POOL_WAITING: &str = "chronos_db_pool_waiting_requests";
/// Internal API requests by `route`, `method` and `status`.
pub const INTERNAL_REQUESTS: &str = webhook_http::route_metrics::INTERNAL_REQUESTS_METRIC;
/// Webhook notifications by `outcome`.
pub const NOTIFICATIONS: &str = webhook_http::webhook::NOTIFICATIONS_METRIC;
/// How long the webhook took to answer.
pub const WEBHOOK_DURATION: &str = webhook_http::webhook::DURATION_METRIC;
/// Calls to Google by `method` and `status`.
pub const GOOGLE_CALLS: &str = google_client::CALLS_METRIC;

/// The store's pool's label value (the one pool the process has).
const STORE_POOL: &str = "store";

/// How often the sampler reads the database.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// The process's Prometheus handle: installs the recorder on first use. Tests
/// start many servers in one process, so this never fails: if another recorder
/// is already installed, the handle renders a registry nobody records into.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn builder() -> PrometheusBuilder {
    // Webhook replies take milliseconds; syncs and notification-to-synced take seconds.
    const FAST: &[f64] = &[
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    const SLOW: &[f64] = &[
        0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
    ];
    let builder = PrometheusBuilder::new();
    let fast = builder.set_buckets_for_metric(
        Matcher::Full(webhook_http::webhook::DURATION_METRIC.to_owned()),
        FAST,
    );
    let slow = |b: PrometheusBuilder, name: &str| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), SLOW)
    };
    match fast
        .and_then(|b| slow(b, SYNC_DURATION))
        .and_then(|b| slow(b, NOTIFICATION_TO_SYNC))
    {
        Ok(builder) => builder,
        // Only empty bucket lists are refused, and these are constants.
        Err(_) => PrometheusBuilder::new(),
    }
}

fn install() -> PrometheusHandle {
    match builder().install_recorder() {
        Ok(handle) => {
            // Descriptions go to the installed recorder, so only now.
            describe();
            process_collector().describe();
            metrics::gauge!(
                BUILD_INFO,
                "version" => crate::build_info::VERSION,
                "commit" => crate::build_info::COMMIT,
            )
            .set(1.0);
            handle
        }
        Err(error) => {
            tracing::warn!(%error, "a metrics recorder is already installed; /metrics shows an empty registry");
            builder().build_recorder().handle()
        }
    }
}

/// `# HELP` (and the unit) for every `chronos_` family; a test checks that none is missing.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        SYNCS,
        Unit::Count,
        "Syncs by outcome (success, retry, stopped_retrying, gone, needs_reauth, lease_lost, abandoned)."
    );
    describe_counter!(
        RETRIES_STOPPED,
        Unit::Count,
        "Syncs that stopped retrying after the same failure on the same page five times in a row; the calendar stays failing until a new sync request."
    );
    describe_histogram!(
        SYNC_DURATION,
        Unit::Seconds,
        "How long a sync took, by outcome."
    );
    describe_counter!(
        EVENTS_APPLIED,
        Unit::Count,
        "Events (created, changed or cancelled) written to the mirror."
    );
    describe_histogram!(
        NOTIFICATION_TO_SYNC,
        Unit::Seconds,
        "From the first unserved sync request to the end of the sync that served it."
    );
    describe_counter!(
        REGISTRATIONS,
        Unit::Count,
        "Channel registrations by kind (first, renewal) and outcome (registered, failed, polling)."
    );
    describe_counter!(
        STOPS,
        Unit::Count,
        "Channel stops at Google by outcome (stopped, retry, error)."
    );
    describe_gauge!(
        crate::workers::changes::FEED_ENTRIES,
        Unit::Count,
        "Entries kept in the change feed."
    );
    describe_gauge!(
        crate::workers::changes::FEED_OLDEST_POSITION,
        "The oldest change feed position kept (0 when empty)."
    );
    describe_counter!(
        crate::workers::changes::FEED_PRUNED,
        Unit::Count,
        "Change feed entries removed by retention."
    );
    describe_gauge!(CALENDARS, Unit::Count, "Calendars by sync state.");
    describe_gauge!(
        CALENDARS_BY_PUSH_MODE,
        Unit::Count,
        "Calendars by push mode (push, polling)."
    );
    describe_gauge!(
        PENDING_REQUESTS,
        Unit::Count,
        "Calendars with an unserved sync request."
    );
    describe_gauge!(
        OLDEST_PENDING,
        Unit::Seconds,
        "Age of the oldest unserved sync request (0 when none)."
    );
    describe_gauge!(
        CHANNELS,
        Unit::Count,
        "Channels by state (registering, active, retiring)."
    );
    describe_gauge!(
        SOONEST_EXPIRY,
        Unit::Seconds,
        "Seconds until the soonest active channel expires (+Inf when none)."
    );
    describe_counter!(
        NOTIFICATIONS,
        Unit::Count,
        "Webhook notifications by outcome."
    );
    describe_histogram!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "How long the webhook took to answer Google."
    );
    describe_counter!(
        GOOGLE_CALLS,
        Unit::Count,
        "Calls to the Google Calendar API and token endpoint by method and status."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the version and the git commit of the running binary."
    );
    describe_gauge!(
        POOL_SIZE,
        Unit::Count,
        "Database connections the pool holds open."
    );
    describe_gauge!(
        POOL_MAX_SIZE,
        Unit::Count,
        "The most database connections the pool may open."
    );
    describe_gauge!(
        POOL_AVAILABLE,
        Unit::Count,
        "Open database connections idle in the pool."
    );
    describe_gauge!(
        POOL_WAITING,
        Unit::Count,
        "Callers waiting for a database connection (persistently above 0: the pool is exhausted)."
    );
    describe_counter!(
        INTERNAL_REQUESTS,
        Unit::Count,
        "Internal API requests by route pattern, method and status."
    );
}

/// The process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, …), read when `/metrics` is rendered.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Renders the exposition for `GET /metrics`: the pool and process gauges are
/// read now, the rest is what was recorded.
pub fn render(store: &Store) -> String {
    let status = store.pool_status();
    metrics::gauge!(POOL_SIZE, "pool" => STORE_POOL).set(status.size as f64);
    metrics::gauge!(POOL_MAX_SIZE, "pool" => STORE_POOL).set(status.max_size as f64);
    metrics::gauge!(POOL_AVAILABLE, "pool" => STORE_POOL).set(status.available as f64);
    metrics::gauge!(POOL_WAITING, "pool" => STORE_POOL).set(status.waiting as f64);
    process_collector().collect();
    handle().render()
}

/// Sets the gauges from a snapshot taken at `now`; every known label value is
/// set (0 when absent) so a state that empties reads 0, not its last value.
pub fn record_snapshot(snapshot: &HealthSnapshot, now: time::OffsetDateTime) {
    fn count<T: PartialEq>(pairs: &[(T, i64)], key: &T) -> f64 {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0.0, |(_, n)| *n as f64)
    }
    for state in SyncState::ALL {
        metrics::gauge!(CALENDARS, "state" => state.as_str())
            .set(count(&snapshot.calendars_by_state, &state));
    }
    for mode in PushMode::ALL {
        metrics::gauge!(CALENDARS_BY_PUSH_MODE, "push_mode" => mode.as_str())
            .set(count(&snapshot.calendars_by_push_mode, &mode));
    }
    for state in ChannelState::LIVE {
        metrics::gauge!(CHANNELS, "state" => state.as_str())
            .set(count(&snapshot.channels_by_state, &state));
    }
    metrics::gauge!(PENDING_REQUESTS).set(snapshot.pending_requests as f64);
    let oldest = snapshot
        .oldest_pending_request
        .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0));
    metrics::gauge!(OLDEST_PENDING).set(oldest);
    let soonest = snapshot
        .soonest_channel_expiry
        .map_or(f64::INFINITY, |at| (at - now).as_seconds_f64());
    metrics::gauge!(SOONEST_EXPIRY).set(soonest);
}

/// Reads the snapshot once and sets the gauges.
pub async fn sample(store: &Store, clock: &dyn Clock) {
    match store.health_snapshot().await {
        Ok(snapshot) => record_snapshot(&snapshot, clock.now()),
        Err(error) => tracing::warn!(%error, "reading the metrics snapshot failed"),
    }
}

/// Samples at startup and every [`SAMPLE_INTERVAL`] until `shutdown`; also runs
/// the exporter's upkeep (draining histogram samples).
pub async fn run_sampler(
    store: Store,
    clock: std::sync::Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handle = handle();
    loop {
        sample(&store, clock.as_ref()).await;
        handle.run_upkeep();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}
