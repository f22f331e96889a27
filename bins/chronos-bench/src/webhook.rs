//! The webhook load benchmark (issue 7): the real `chronos-server` on
//! PostgreSQL and on SQLite, seeded with calendars and channels, under a
//! realistic mix of notifications, next to the ceiling ([`crate::ceiling`]).
//!
//! Per target: a warm-up, a closed loop for the most it can take, then an open
//! loop at a fixed rate for latency. Prints a table and each target as PASS or MISS.

use crate::cpu::{CpuSnapshot, CpuSplit};
use crate::database::{self, Backend, BenchDb, PgCounters};
use crate::load::{self, Mix, PhaseReport, Workload};
use crate::server::{self, Launch, ServerProcess};
use anyhow::Context as _;
use fake_google::FakeGoogle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync_domain::{GoogleCalendarId, UserId};
use sync_store::Store;

/// The PostgreSQL server used when neither env var names one.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// A closed port: the server's calls to Google fail at once instead of leaving the machine.
const UNREACHABLE_GOOGLE: &str = "http://127.0.0.1:9";
/// Debounce and bound for the server: an hour, so no seeded or notified calendar
/// becomes due for a sync during the run and the sync worker stays idle.
const IDLE_SYNC_MS: &str = "3600000";

/// Throughput target on PostgreSQL: this share of the ceiling's.
const TARGET_RATIO: f64 = 0.40;
/// Latency target: p99 under this at the open-loop rate, in milliseconds.
const TARGET_P99_MS: f64 = 5.0;
/// Memory target: peak RSS under this, in MiB.
const TARGET_RSS_MIB: f64 = 64.0;

/// Options of `chronos-bench webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Targets to run, in order: any of ceiling, postgres, sqlite.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,postgres,sqlite")]
    pub targets: Vec<Target>,
    /// A smoke run: 2 s phases, 0.5 s warm-up, 1,000 calendars (unless set).
    #[arg(long)]
    pub quick: bool,
    /// Seconds of each measured phase [default: 10; 2 with --quick].
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Seconds of closed-loop warm-up before measuring [default: 2; 0.5 with --quick].
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// Connections of the closed loop (maximum throughput).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Rate of the open loop (latency), requests per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Connections the open loop may use.
    #[arg(long, default_value_t = 64)]
    pub open_connections: usize,
    /// Calendars to seed, each with a current channel [default: 10000; 1000 with --quick].
    #[arg(long)]
    pub calendars: Option<usize>,
    /// Calendars per user (each user has credentials).
    #[arg(long, default_value_t = 10)]
    pub calendars_per_user: usize,
    /// Weights of change, handshake, unknown-channel and bad-token notifications.
    #[arg(long, default_value_t = Mix::REALISTIC)]
    pub mix: Mix,
    /// `RUST_LOG` for the server (`info` logs one line per notification).
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// The cold mix: every change is for a calendar with no pending request
    /// (pending requests are consumed after seeding, and changes walk the
    /// calendars in order), so each must be written. Use with `--calendars
    /// 100000` so a phase never comes back to a calendar.
    #[arg(long)]
    pub cold: bool,
    /// Run the sync worker too, against an in-process fake Google: every seeded
    /// calendar holds `--events-per-calendar` events there (fully synced before
    /// measuring), events change at the fake at the rate change notifications
    /// are sent, and the server syncs with its default debounce, so webhook
    /// writes and sync page writes compete as in production. The open loop
    /// runs first (before the closed loop builds a backlog of syncs).
    #[arg(long)]
    pub with_syncs: bool,
    /// Events each calendar holds at the fake Google (with `--with-syncs`).
    #[arg(long, default_value_t = 25)]
    pub events_per_calendar: usize,
    /// PostgreSQL server to create the benchmark database on.
    #[arg(long, env = "CHRONOS_BENCH_DATABASE_URL")]
    pub postgres_url: Option<String>,
}

/// A server to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The minimal actix-web endpoint.
    Ceiling,
    /// `chronos-server` on PostgreSQL.
    Postgres,
    /// `chronos-server` on SQLite.
    Sqlite,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ceiling => "ceiling",
            Target::Postgres => "postgres",
            Target::Sqlite => "sqlite",
        }
    }
}

/// The resolved settings of a run.
#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    warmup: Duration,
    calendars: usize,
    args: WebhookArgs,
}

/// Everything measured for one target.
#[derive(Debug)]
struct TargetReport {
    target: Target,
    phases: Measured,
    peak_rss_kib: u64,
    seed_time: Option<Duration>,
    /// Sync requests the database recorded during the whole run, and PostgreSQL's counters.
    recorded: Option<i64>,
    pg: Option<(PgCounters, u64)>,
    /// Warning or error lines the server logged, and the first few.
    warnings: (usize, Vec<String>),
    /// With `--with-syncs`: what the sync worker did during the measured
    /// phases, and how many events were changed at the fake meanwhile.
    syncs: Option<(SyncCounters, u64)>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let settings = Settings {
        duration: Duration::from_secs_f64(args.duration_secs.unwrap_or(if args.quick {
            2.0
        } else {
            10.0
        })),
        warmup: Duration::from_secs_f64(args.warmup_secs.unwrap_or(if args.quick {
            0.5
        } else {
            2.0
        })),
        calendars: args
            .calendars
            .unwrap_or(if args.quick { 1_000 } else { 10_000 }),
        args,
    };
    let a = &settings.args;
    println!(
        "webhook benchmark: {} calendars{}{}, mix {} (change,handshake,unknown,bad-token), \
         closed loop {} connections x {:?} after {:?} warm-up, open loop {} req/s x {:?}, \
         server RUST_LOG={}, {} client threads",
        settings.calendars,
        if a.cold {
            " (cold: no request pending)"
        } else {
            ""
        },
        if a.with_syncs {
            format!(
                ", sync worker running ({} events per calendar at a fake Google; open loop first)",
                a.events_per_calendar
            )
        } else {
            String::new()
        },
        a.mix,
        a.connections,
        settings.duration,
        settings.warmup,
        a.rate,
        settings.duration,
        a.server_log,
        a.client_threads,
    );
    let mut reports = Vec::new();
    for target in settings.args.targets.clone() {
        println!("\n== {} ==", target.name());
        let report = match target {
            Target::Ceiling => run_ceiling(&settings).await,
            Target::Postgres => run_store(&settings, Backend::Postgres).await,
            Target::Sqlite => run_store(&settings, Backend::Sqlite).await,
        }
        .with_context(|| format!("benchmarking {}", target.name()))?;
        print_details(&report, &settings);
        reports.push(report);
    }
    print_table(&reports, &settings);
    Ok(())
}

async fn run_ceiling(settings: &Settings) -> anyhow::Result<TargetReport> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let addr = server::free_addr()?;
    let exe = std::env::current_exe().context("locating chronos-bench")?;
    let mut process = ServerProcess::spawn(&Launch {
        program: exe,
        args: vec!["ceiling-server".into(), "--bind".into(), addr.to_string()],
        env: Vec::new(),
        workdir: dir.path(),
        addr,
    })?;
    process.wait_ready(Duration::from_secs(10)).await?;
    let channels = database::synthetic_channels(settings.calendars.max(1));
    let workload = Arc::new(Workload::new(channels, settings.args.mix, false, addr)?);
    let phases = measure(&process, &workload, settings).await?;
    let peak_rss_kib = process.peak_rss_kib()?;
    let warnings = process.log_warnings(3);
    process.stop()?;
    Ok(TargetReport {
        target: Target::Ceiling,
        phases,
        peak_rss_kib,
        seed_time: None,
        recorded: None,
        pg: None,
        warnings,
        syncs: None,
    })
}

async fn run_store(settings: &Settings, backend: Backend) -> anyhow::Result<TargetReport> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let db = match backend {
        Backend::Postgres => {
            let admin = settings
                .args
                .postgres_url
                .clone()
                .or_else(|| std::env::var("CHRONOS_TEST_DATABASE_URL").ok())
                .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
            BenchDb::postgres(&admin).await?
        }
        Backend::Sqlite => BenchDb::sqlite(dir.path()),
    };
    let result = run_on(settings, &db, dir.path()).await;
    let dropped = db.drop_database().await;
    let report = result?;
    dropped?;
    Ok(report)
}

async fn run_on(
    settings: &Settings,
    db: &BenchDb,
    dir: &std::path::Path,
) -> anyhow::Result<TargetReport> {
    let target = match db.backend {
        Backend::Postgres => Target::Postgres,
        Backend::Sqlite => Target::Sqlite,
    };
    let seeding = Instant::now();
    let store = db.store().await?;
    let with_syncs = settings.args.with_syncs;
    let token: fn(&str) -> String = if with_syncs {
        FakeGoogle::refresh_token_for
    } else {
        |user| format!("refresh-{user}")
    };
    let channels = database::seed(
        &store,
        settings.calendars,
        settings.args.calendars_per_user,
        16,
        token,
    )
    .await
    .context("seeding calendars")?;
    let fake = if with_syncs {
        let fake = crate::sync::start_fake(2500)?;
        for channel in &channels {
            fake.google.bulk_create(
                &UserId::parse(channel.user_id.as_str())?,
                &GoogleCalendarId::parse(channel.google_calendar_id.as_str())?,
                "seeded",
                settings.args.events_per_calendar,
            );
        }
        Some(fake)
    } else {
        None
    };
    let seed_time = seeding.elapsed();
    println!(
        "seeded {} calendars with channels in {:.1} s",
        channels.len(),
        seed_time.as_secs_f64()
    );
    if settings.args.cold {
        sync_store::test_support::consume_all_pending_requests(&store)
            .await
            .context("consuming the seeded calendars' pending requests")?;
    }
    let recorded_before = db.recorded_requests(&store).await?;
    let addr = server::free_addr()?;
    let env = [
        ("CHRONOS_DATABASE_URL", db.url.as_str()),
        ("CHRONOS_BIND", &addr.to_string()),
        ("CHRONOS_ENCRYPTION_KEY", database::ENCRYPTION_KEY),
        ("CHRONOS_LOG_FORMAT", "json"),
        ("RUST_LOG", settings.args.server_log.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let google: Vec<(&str, String)> = match &fake {
        // The server's own defaults for the debounce and its bound.
        Some(fake) => vec![
            ("CHRONOS_GOOGLE_API_BASE_URL", fake.api_base_url()),
            ("CHRONOS_GOOGLE_TOKEN_URL", fake.token_url()),
            ("CHRONOS_GOOGLE_CLIENT_ID", "fake-client".to_owned()),
            ("CHRONOS_GOOGLE_CLIENT_SECRET", "fake-secret".to_owned()),
        ],
        None => vec![
            ("CHRONOS_GOOGLE_API_BASE_URL", UNREACHABLE_GOOGLE.to_owned()),
            ("CHRONOS_GOOGLE_TOKEN_URL", UNREACHABLE_GOOGLE.to_owned()),
            ("CHRONOS_SYNC_DEBOUNCE_MS", IDLE_SYNC_MS.to_owned()),
            ("CHRONOS_SYNC_MAX_DELAY_MS", IDLE_SYNC_MS.to_owned()),
        ],
    };
    let mut env = env;
    env.extend(google.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let counters_before = db.pg_counters().await?;
    let mut process = ServerProcess::spawn(&Launch {
        program: server::sibling_binary("chronos-server")?,
        args: Vec::new(),
        env,
        workdir: dir,
        addr,
    })?;
    process.wait_ready(Duration::from_secs(30)).await?;
    let mutator = match &fake {
        Some(fake) => {
            let started = Instant::now();
            wait_for_full_syncs(&store, channels.len()).await?;
            println!(
                "initial full syncs of {} calendars ({} events each) done in {:.1} s",
                channels.len(),
                settings.args.events_per_calendar,
                started.elapsed().as_secs_f64()
            );
            let per_sec = f64::from(settings.args.rate) * settings.args.mix.change_share();
            Some(Mutator::start(
                fake.google.clone(),
                channels.clone(),
                per_sec,
            ))
        }
        None => None,
    };
    let syncs_before = SyncCounters::read(addr).await?;
    let workload = Workload::new(channels, settings.args.mix, true, addr)?;
    let workload = Arc::new(if settings.args.cold {
        workload.cold()
    } else {
        workload
    });
    let phases = measure(&process, &workload, settings).await?;
    let syncs = match mutator {
        Some(mutator) => {
            let changed = mutator.stop().await;
            let after = SyncCounters::read(addr).await?;
            Some((after.minus(syncs_before), changed))
        }
        None => None,
    };
    let peak_rss_kib = process.peak_rss_kib()?;
    let warnings = process.log_warnings(3);
    process.stop()?;
    if let Some(fake) = &fake {
        fake.stop().await;
    }
    // Backends publish their statistics as they exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recorded = db.recorded_requests(&store).await? - recorded_before;
    let pg = match db.backend {
        Backend::Postgres => {
            let after = db.pg_counters().await?;
            let sent = workload_requests(settings, &phases.closed, &phases.open);
            Some((
                PgCounters {
                    xact_commit: after.xact_commit - counters_before.xact_commit,
                    wal_sync: after.wal_sync - counters_before.wal_sync,
                },
                sent,
            ))
        }
        Backend::Sqlite => None,
    };
    drop(store);
    Ok(TargetReport {
        target,
        phases,
        peak_rss_kib,
        seed_time: Some(seed_time),
        recorded: Some(recorded),
        pg,
        warnings,
        syncs,
    })
}

/// Requests sent in the measured phases (the warm-up is not counted, so the
/// per-request ratios derived from it are slight overestimates).
fn workload_requests(_settings: &Settings, closed: &PhaseReport, open: &PhaseReport) -> u64 {
    closed.requests + closed.errors + open.requests + open.errors
}

/// Both measured phases, and where the CPU went during each.
#[derive(Debug)]
struct Measured {
    closed: PhaseReport,
    open: PhaseReport,
    closed_cpu: CpuSplit,
    open_cpu: CpuSplit,
}

/// Warm-up, closed loop, open loop.
async fn measure(
    process: &ServerProcess,
    workload: &Arc<Workload>,
    settings: &Settings,
) -> anyhow::Result<Measured> {
    let a = &settings.args;
    let addr: SocketAddr = process.addr;
    let pid = process.pid();
    if !settings.warmup.is_zero() {
        load::closed_loop(addr, workload, a.connections, settings.warmup).await?;
    }
    let open_loop = || async {
        let before = CpuSnapshot::take(pid)?;
        let open = load::open_loop(
            addr,
            workload,
            a.open_connections,
            a.rate,
            settings.duration,
        )
        .await?;
        anyhow::Ok((open, before.until(&CpuSnapshot::take(pid)?)))
    };
    // With syncs, latency is measured before the closed loop leaves a backlog.
    let open_first = if a.with_syncs {
        Some(open_loop().await?)
    } else {
        None
    };
    let before = CpuSnapshot::take(pid)?;
    let closed = load::closed_loop(addr, workload, a.connections, settings.duration).await?;
    let closed_cpu = before.until(&CpuSnapshot::take(pid)?);
    let (open, open_cpu) = match open_first {
        Some(open) => open,
        None => open_loop().await?,
    };
    Ok(Measured {
        closed,
        open,
        closed_cpu,
        open_cpu,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_details(report: &TargetReport, settings: &Settings) {
    let c = &report.phases.closed;
    let o = &report.phases.open;
    println!(
        "closed loop: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         server CPU {:.2} s ({:.0} us/request)\n  CPU: {}; {:.1} context switches/request",
        c.requests,
        c.elapsed.as_secs_f64(),
        c.rps(),
        c.quantile_ms(0.5),
        c.quantile_ms(0.99),
        c.quantile_ms(0.999),
        c.latency_us.max() as f64 / 1000.0,
        report.phases.closed_cpu.server.as_secs_f64(),
        report.phases.closed_cpu.server.as_secs_f64() * 1e6 / (c.requests.max(1) as f64),
        report.phases.closed_cpu,
        report.phases.closed_cpu.switches_per(c.requests),
    );
    println!(
        "open loop at {} req/s: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms\n  CPU: {}; {:.1} context switches/request",
        settings.args.rate,
        o.requests,
        o.elapsed.as_secs_f64(),
        o.rps(),
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.quantile_ms(0.999),
        o.latency_us.max() as f64 / 1000.0,
        report.phases.open_cpu,
        report.phases.open_cpu.switches_per(o.requests),
    );
    let problems = c.unexpected_status + o.unexpected_status;
    let errors = c.errors + o.errors;
    println!(
        "peak RSS {:.1} MiB; unexpected statuses {problems}; connection errors {errors}; \
         server warnings logged {}{}",
        mib(report.peak_rss_kib),
        report.warnings.0,
        c.first_problem
            .as_ref()
            .or(o.first_problem.as_ref())
            .map(|p| format!(" (first: {p})"))
            .unwrap_or_default(),
    );
    for line in &report.warnings.1 {
        println!("  server: {line}");
    }
    if let Some((syncs, changed)) = report.syncs {
        let seconds = (c.elapsed + o.elapsed).as_secs_f64().max(f64::EPSILON);
        println!(
            "sync worker during the measured phases: {:.0} syncs ({:.0}/s), {:.0} events applied; \
             {changed} events changed at the fake Google",
            syncs.syncs,
            syncs.syncs / seconds,
            syncs.events,
        );
    }
    if let Some(recorded) = report.recorded {
        println!(
            "changes answered 200 (measured phases): {}; sync requests recorded in the database (warm-up included): {recorded}",
            c.changes_ok + o.changes_ok
        );
    }
    if let Some((pg, sent)) = report.pg {
        println!(
            "PostgreSQL (warm-up included, whole database): {} committed transactions for {sent} measured requests \
             ({:.2} per request); WAL flushes (cluster-wide) {} ({:.3} per change answered)",
            pg.xact_commit,
            pg.xact_commit as f64 / sent.max(1) as f64,
            pg.wal_sync,
            pg.wal_sync as f64 / (c.changes_ok + o.changes_ok).max(1) as f64,
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn print_table(reports: &[TargetReport], settings: &Settings) {
    let ceiling = reports
        .iter()
        .find(|r| r.target == Target::Ceiling)
        .map(|r| r.phases.closed.rps());
    println!(
        "\n| target | max req/s | ratio to ceiling | p50 / p99 / p99.9 at max (ms) | p50 / p99 / p99.9 at {} req/s (ms) | peak RSS (MiB) | seed (s) |",
        settings.args.rate
    );
    println!("|---|---:|---:|---|---|---:|---:|");
    for r in reports {
        let ratio = ceiling.map_or_else(
            || "n/a".to_owned(),
            |c| format!("{:.0}%", 100.0 * r.phases.closed.rps() / c),
        );
        println!(
            "| {} | {:.0} | {ratio} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.1} | {} |",
            r.target.name(),
            r.phases.closed.rps(),
            r.phases.closed.quantile_ms(0.5),
            r.phases.closed.quantile_ms(0.99),
            r.phases.closed.quantile_ms(0.999),
            r.phases.open.quantile_ms(0.5),
            r.phases.open.quantile_ms(0.99),
            r.phases.open.quantile_ms(0.999),
            mib(r.peak_rss_kib),
            r.seed_time
                .map_or_else(|| "-".to_owned(), |t| format!("{:.1}", t.as_secs_f64())),
        );
    }
    println!();
    for r in reports.iter().filter(|r| r.target != Target::Ceiling) {
        let name = r.target.name();
        if let Some(c) = ceiling {
            let ratio = r.phases.closed.rps() / c;
            let scope = if r.target == Target::Postgres {
                "target"
            } else {
                "for reference; the target is PostgreSQL's"
            };
            println!(
                "{} {name}: throughput {:.0}% of the ceiling (>= {:.0}%, {scope})",
                verdict(ratio >= TARGET_RATIO),
                100.0 * ratio,
                100.0 * TARGET_RATIO
            );
        }
        let p99 = r.phases.open.quantile_ms(0.99);
        let kept_up = r.phases.open.rps() >= 0.95 * f64::from(settings.args.rate);
        println!(
            "{} {name}: p99 {p99:.2} ms at {} req/s (< {TARGET_P99_MS} ms{})",
            verdict(p99 < TARGET_P99_MS && kept_up),
            settings.args.rate,
            if kept_up {
                ""
            } else {
                "; the rate was not sustained"
            },
        );
        println!(
            "{} {name}: peak RSS {:.1} MiB (< {TARGET_RSS_MIB} MiB)",
            verdict(mib(r.peak_rss_kib) < TARGET_RSS_MIB),
            mib(r.peak_rss_kib)
        );
        let problems = r.phases.closed.unexpected_status
            + r.phases.open.unexpected_status
            + r.phases.closed.errors
            + r.phases.open.errors;
        println!(
            "{} {name}: every status as SPEC section 2 says ({problems} unexpected or failed)",
            verdict(problems == 0)
        );
    }
}

/// Waits until every seeded calendar finished its first full sync.
async fn wait_for_full_syncs(store: &Store, calendars: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = database::count(
            store,
            "SELECT COUNT(*) AS n FROM calendar_sync_state WHERE full_sync_complete",
        )
        .await?;
        if done >= calendars as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {calendars} calendars finished their first sync"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Changes events at the fake Google at a steady rate, on random seeded
/// calendars, so the syncs that notifications trigger find real changes.
struct Mutator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl Mutator {
    fn start(google: FakeGoogle, channels: Vec<database::SeededChannel>, per_sec: f64) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut changed = 0u64;
            if per_sec <= 0.0 || channels.is_empty() {
                return changed;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let per_tick = per_sec / 100.0;
            let mut owed = 0.0;
            let mut rng = load::Rng::new(0x5eed);
            loop {
                tokio::select! {
                    _ = &mut stopped => return changed,
                    _ = tick.tick() => {}
                }
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let channel = &channels[(rng.next() % channels.len() as u64) as usize];
                    let (Ok(user), Ok(calendar)) = (
                        UserId::parse(channel.user_id.as_str()),
                        GoogleCalendarId::parse(channel.google_calendar_id.as_str()),
                    ) else {
                        continue;
                    };
                    let n = rng.next() % 1_000;
                    google.calendar().put_event(
                        &user,
                        &calendar,
                        serde_json::json!({"id": format!("changed{n:06}"), "status": "confirmed",
                            "summary": format!("Changed event {changed}"),
                            "start": {"dateTime": "2030-01-02T10:00:00Z"},
                            "end": {"dateTime": "2030-01-02T10:30:00Z"}}),
                    );
                    changed += 1;
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}

/// The sync worker's counters, read from the server's `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct SyncCounters {
    syncs: f64,
    events: f64,
}

impl SyncCounters {
    async fn read(addr: SocketAddr) -> anyhow::Result<Self> {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .context("reading /metrics")?
            .text()
            .await
            .context("reading /metrics")?;
        let sum = |family: &str| -> f64 {
            text.lines()
                .filter(|line| {
                    line.strip_prefix(family)
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Ok(Self {
            syncs: sum("chronos_syncs_total"),
            events: sum("chronos_sync_events_applied_total"),
        })
    }

    fn minus(self, before: Self) -> Self {
        Self {
            syncs: self.syncs - before.syncs,
            events: self.events - before.events,
        }
    }
}
