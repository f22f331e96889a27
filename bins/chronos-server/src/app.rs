//! Wiring: the store, Google, the HTTP server and the workers, through the traits.

use crate::config::Config;
use crate::entropy::OsEntropy;
use crate::instance_lock::InstanceLock;
use crate::workers::{self, WorkerContext};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use google_client::{ClientSecret, GoogleCalendarClient, GoogleConfig, RetryPolicy};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use sync_domain::ports::{CalendarApi, Clock, CredentialStore, Entropy, SystemClock, WebhookStore};
use sync_store::{PoolOptions, Store};
use tokio_util::sync::CancellationToken;
use webhook_http::{ChangesState, InternalState, MetricsRenderer, WebhookState};

/// How long in-flight requests and syncs get to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Replacements for the real outside world (tests pass fakes).
#[derive(Clone, Default)]
pub struct Overrides {
    pub calendar: Option<Arc<dyn CalendarApi>>,
    pub clock: Option<Arc<dyn Clock>>,
    pub entropy: Option<Arc<dyn Entropy>>,
    /// The event stream's heartbeat instead of `webhook_http::changes::HEARTBEAT` (15 s).
    pub stream_heartbeat: Option<Duration>,
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    /// `GET /metrics` on `metrics_bind`, when set: its port and server.
    metrics: Option<(u16, actix_web::dev::Server)>,
    context: WorkerContext,
    /// Held while the application lives (see `Store::hold_instance_lock`).
    _instance_lock: sync_store::liveness::LivenessLock,
    /// SQLite: this process's exclusive hold on the database, for its lifetime.
    _lock: Option<InstanceLock>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The server for `GET /metrics` alone on `metrics_bind`; it stops with the main one.
fn metrics_server(
    address: std::net::SocketAddr,
    renderer: web::Data<MetricsRenderer>,
) -> anyhow::Result<(u16, actix_web::dev::Server)> {
    let listener = TcpListener::bind(address)
        .with_context(|| format!("binding `metrics_bind` = {address}"))?;
    let port = listener
        .local_addr()
        .context("reading the metrics address")?
        .port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(renderer.clone())
            .configure(webhook_http::configure_metrics)
            .default_service(web::to(webhook_http::error::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .context("starting the metrics server")?
    .run();
    Ok((port, server))
}

/// Opens the store named by the configuration, running pending migrations,
/// and refuses keys that cannot decrypt the stored credentials (issue 15).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let key = config.encryption_key.as_ref().map(|k| k.expose());
    if let Some(notice) = config.database_url.tls_notice() {
        tracing::warn!("{notice}");
    }
    let store = Store::open(config.database_url.clone(), key, PoolOptions::default())
        .await
        .with_context(|| format!("opening the database {}", config.database_url.redacted()))?
        .with_retired_keys(&config.retired_encryption_keys);
    store.check_keys().await?;
    Ok(store)
}

/// The real Google client for the configuration.
pub fn google_client(
    config: &Config,
    store: &Store,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
) -> anyhow::Result<Arc<dyn CalendarApi>> {
    let mut google = GoogleConfig::new(
        config.google_client_id.clone().unwrap_or_default(),
        ClientSecret::new(
            config
                .google_client_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
        ),
    );
    google.api_base_url = config.google_api_base_url.clone();
    google.token_url = config.google_token_url.clone();
    google.retry = RetryPolicy::default();
    let credentials: Arc<dyn CredentialStore> = Arc::new(store.clone());
    let client = GoogleCalendarClient::new(google, credentials, clock, entropy)
        .context("building the Google client")?;
    Ok(Arc::new(client))
}

/// This instance's id in leases: host, process and a random suffix.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "chronos".to_owned());
    let mut suffix = [0u8; 4];
    // Should the source fail, host and process id still tell instances apart.
    let _ = OsEntropy.fill(&mut suffix);
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        u32::from_be_bytes(suffix)
    )
}

impl Application {
    /// Opens the store, builds the server on `config.bind` (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Overrides::default()).await
    }

    /// As [`Self::build`], with parts of the outside world replaced.
    pub async fn build_with(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        // The recorder first: whatever is recorded or described before it is
        // installed goes nowhere (a worker or a request could otherwise beat
        // the sampler, which used to install it).
        let _ = crate::metrics::handle();
        // Before migrations and any lease take-over: a second server on the
        // same SQLite file stops here, having touched nothing.
        let lock = match &config.database_url {
            sync_store::DatabaseUrl::Sqlite(path) => Some(InstanceLock::acquire(path)?),
            sync_store::DatabaseUrl::Postgres(_) => None,
        };
        for line in crate::preflight::switched_off(&config) {
            tracing::warn!("{line}");
        }
        let store = open_store(&config).await?;
        // A clock given by a test drives the store (its leases included);
        // otherwise leases run on the database's clock (`LeaseClock`).
        let (store, clock) = match overrides.clock {
            Some(clock) => (store.with_clock(Arc::clone(&clock)), clock),
            None => (store, Arc::new(SystemClock) as Arc<dyn Clock>),
        };
        let entropy = overrides.entropy.unwrap_or_else(|| Arc::new(OsEntropy));
        let calendar = match overrides.calendar {
            Some(calendar) => calendar,
            None => google_client(&config, &store, Arc::clone(&clock), Arc::clone(&entropy))?,
        };
        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("binding `bind` = {}", config.bind))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        let instance_id = instance_id();
        if matches!(config.database_url, sync_store::DatabaseUrl::Sqlite(_)) {
            // One process per SQLite database, and the port is ours now: a
            // second `serve` on the same database fails to bind before it
            // can touch the leases of the one running. Leases left by a
            // killed predecessor need not run out before their work resumes.
            let expired = store.expire_all_leases().await?;
            if expired > 0 {
                tracing::info!(expired, "took over the leases of a previous run");
            }
        }
        // PostgreSQL: while this lock is held we are alive; once the process
        // dies the server drops it and others take our claims over at once.
        let instance_lock = store
            .hold_instance_lock(&instance_id)
            .await
            .context("registering this instance")?;

        let webhook_store: Arc<dyn WebhookStore> = Arc::new(store.clone());
        let state = web::Data::new(WebhookState::new(webhook_store, Arc::clone(&clock)));
        let internal = web::Data::new(InternalState::new(
            Arc::new(store.clone()),
            Arc::clone(&calendar),
            Arc::clone(&clock),
            config.admin_token.as_ref().map(|t| t.expose().to_owned()),
        ));
        let changes = ChangesState::new(Arc::new(store.clone()));
        let changes = web::Data::new(match overrides.stream_heartbeat {
            Some(heartbeat) => changes.with_heartbeat(heartbeat),
            None => changes,
        });
        let metrics_store = store.clone();
        let renderer = web::Data::new(MetricsRenderer::new(move || {
            crate::metrics::render(&metrics_store)
        }));
        // With `metrics_bind`, `/metrics` moves there (and answers 404 on `bind`).
        let (renderer, metrics) = match config.metrics_bind {
            None => (Some(renderer), None),
            Some(address) => (None, Some(metrics_server(address, renderer)?)),
        };
        let server = HttpServer::new(move || {
            let app = App::new()
                .wrap(actix_web::middleware::from_fn(
                    webhook_http::route_metrics::middleware,
                ))
                .wrap(actix_web::middleware::from_fn(
                    webhook_http::request_id::middleware,
                ))
                .app_data(state.clone())
                .app_data(internal.clone())
                .app_data(changes.clone());
            let app = match &renderer {
                Some(renderer) => app.app_data(renderer.clone()),
                None => app,
            };
            app.configure(webhook_http::configure)
                .configure(webhook_http::configure_internal)
                .default_service(web::to(webhook_http::error::not_found))
        })
        // Two HTTP worker threads: the handlers only parse, look up (cached)
        // and queue, and since the batch and the lookups got cheaper a second
        // thread is faster on the 2-core machine (hot mix, four alternating
        // pairs: PostgreSQL 27,694-39,101 against 16,266-30,894 req/s, SQLite
        // 33,819-40,617 against 21,468-34,016; docs/benchmarks.md, seventh
        // session). At 16,000 req/s it had measured no faster.
        .workers(2)
        .shutdown_timeout(DRAIN_TIMEOUT.as_secs())
        .listen(listener)
        .context("starting the HTTP server")?
        .run();

        let context = WorkerContext {
            store,
            calendar,
            clock,
            entropy,
            config: Arc::new(config),
            instance_id,
        };
        Ok(Self {
            port,
            server,
            metrics,
            context,
            _instance_lock: instance_lock,
            _lock: lock,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` server (`metrics_bind`), if any.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// The store the server uses.
    pub fn store(&self) -> &Store {
        &self.context.store
    }

    /// Serves and runs the workers until SIGTERM/SIGINT (or the server stops),
    /// then lets in-flight requests and syncs drain.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = CancellationToken::new();
        let workers = workers::spawn_all(&self.context, &shutdown);
        let metrics = self.metrics.map(|(port, server)| {
            let handle = server.handle();
            (port, handle, tokio::spawn(server))
        });
        tracing::info!(
            port = self.port,
            metrics_port = metrics.as_ref().map(|(port, _, _)| *port),
            database = %self.context.config.database_url.redacted(),
            instance = %self.context.instance_id,
            "chronos-server listening"
        );
        // actix handles SIGTERM/SIGINT itself: it stops accepting, drains, then resolves.
        let served = self.server.await;
        if let Some((_, handle, task)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("HTTP server stopped; draining workers");
        shutdown.cancel();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(workers)).await;
        if drained.is_err() {
            tracing::warn!("workers did not finish within the drain timeout");
        }
        served.context("HTTP server failed")
    }
}
