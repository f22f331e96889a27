//! The webhook load benchmark (issue 7): the real `chronos-server` on
//! PostgreSQL and on SQLite, seeded with calendars and channels, under a
//! realistic mix of notifications, next to the ceiling ([`crate::ceiling`]).
//!
//! Per target: a warm-up, a closed loop for the most it can take, then an open
//! loop at a fixed rate for latency. Prints a table and each target as PASS or MISS.

use crate::database::{self, Backend, BenchDb, PgCounters};
use crate::load::{self, Mix, PhaseReport, Workload};
use crate::server::{self, Launch, ServerProcess};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    closed: PhaseReport,
    open: PhaseReport,
    peak_rss_kib: u64,
    /// Server CPU time during the closed loop.
    closed_cpu: Duration,
    seed_time: Option<Duration>,
    /// Sync requests the database recorded during the whole run, and PostgreSQL's counters.
    recorded: Option<i64>,
    pg: Option<(PgCounters, u64)>,
    /// Warning or error lines the server logged, and the first few.
    warnings: (usize, Vec<String>),
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
        "webhook benchmark: {} calendars{}, mix {} (change,handshake,unknown,bad-token), \
         closed loop {} connections x {:?} after {:?} warm-up, open loop {} req/s x {:?}, \
         server RUST_LOG={}, {} client threads",
        settings.calendars,
        if a.cold {
            " (cold: no request pending)"
        } else {
            ""
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
    let (closed, open, closed_cpu) = measure(&process, &workload, settings).await?;
    let peak_rss_kib = process.peak_rss_kib()?;
    let warnings = process.log_warnings(3);
    process.stop()?;
    Ok(TargetReport {
        target: Target::Ceiling,
        closed,
        open,
        peak_rss_kib,
        closed_cpu,
        seed_time: None,
        recorded: None,
        pg: None,
        warnings,
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
    let channels = database::seed(
        &store,
        settings.calendars,
        settings.args.calendars_per_user,
        16,
    )
    .await
    .context("seeding calendars")?;
    let seed_time = seeding.elapsed();
    println!(
        "seeded {} calendars with channels in {:.1} s",
        channels.len(),
        seed_time.as_secs_f64()
    );
    if settings.args.cold {
        db.consume_pending_requests().await?;
    }
    let recorded_before = db.recorded_requests(&store).await?;
    let addr = server::free_addr()?;
    let env = [
        ("CHRONOS_DATABASE_URL", db.url.as_str()),
        ("CHRONOS_BIND", &addr.to_string()),
        ("CHRONOS_ENCRYPTION_KEY", database::ENCRYPTION_KEY),
        ("CHRONOS_LOG_FORMAT", "json"),
        ("CHRONOS_GOOGLE_API_BASE_URL", UNREACHABLE_GOOGLE),
        ("CHRONOS_GOOGLE_TOKEN_URL", UNREACHABLE_GOOGLE),
        ("CHRONOS_SYNC_DEBOUNCE_MS", IDLE_SYNC_MS),
        ("CHRONOS_SYNC_MAX_DELAY_MS", IDLE_SYNC_MS),
        ("RUST_LOG", settings.args.server_log.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let counters_before = db.pg_counters().await?;
    let mut process = ServerProcess::spawn(&Launch {
        program: server::sibling_binary("chronos-server")?,
        args: Vec::new(),
        env,
        workdir: dir,
        addr,
    })?;
    process.wait_ready(Duration::from_secs(30)).await?;
    let workload = Workload::new(channels, settings.args.mix, true, addr)?;
    let workload = Arc::new(if settings.args.cold {
        workload.cold()
    } else {
        workload
    });
    let (closed, open, closed_cpu) = measure(&process, &workload, settings).await?;
    let peak_rss_kib = process.peak_rss_kib()?;
    let warnings = process.log_warnings(3);
    process.stop()?;
    // Backends publish their statistics as they exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recorded = db.recorded_requests(&store).await? - recorded_before;
    let pg = match db.backend {
        Backend::Postgres => {
            let after = db.pg_counters().await?;
            let sent = workload_requests(settings, &closed, &open);
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
        closed,
        open,
        peak_rss_kib,
        closed_cpu,
        seed_time: Some(seed_time),
        recorded: Some(recorded),
        pg,
        warnings,
    })
}

/// Requests sent in the measured phases (the warm-up is not counted, so the
/// per-request ratios derived from it are slight overestimates).
fn workload_requests(_settings: &Settings, closed: &PhaseReport, open: &PhaseReport) -> u64 {
    closed.requests + closed.errors + open.requests + open.errors
}

/// Warm-up, closed loop, open loop; returns both phases and the server's CPU
/// time during the closed loop.
async fn measure(
    process: &ServerProcess,
    workload: &Arc<Workload>,
    settings: &Settings,
) -> anyhow::Result<(PhaseReport, PhaseReport, Duration)> {
    let a = &settings.args;
    let addr: SocketAddr = process.addr;
    if !settings.warmup.is_zero() {
        load::closed_loop(addr, workload, a.connections, settings.warmup).await?;
    }
    let cpu_before = process.cpu_time()?;
    let closed = load::closed_loop(addr, workload, a.connections, settings.duration).await?;
    let closed_cpu = process.cpu_time()?.saturating_sub(cpu_before);
    let open = load::open_loop(
        addr,
        workload,
        a.open_connections,
        a.rate,
        settings.duration,
    )
    .await?;
    Ok((closed, open, closed_cpu))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_details(report: &TargetReport, settings: &Settings) {
    let c = &report.closed;
    let o = &report.open;
    println!(
        "closed loop: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
         server CPU {:.2} s ({:.0} us/request)",
        c.requests,
        c.elapsed.as_secs_f64(),
        c.rps(),
        c.quantile_ms(0.5),
        c.quantile_ms(0.99),
        c.quantile_ms(0.999),
        c.latency_us.max() as f64 / 1000.0,
        report.closed_cpu.as_secs_f64(),
        report.closed_cpu.as_secs_f64() * 1e6 / (c.requests.max(1) as f64),
    );
    println!(
        "open loop at {} req/s: {} requests in {:.2} s = {:.0} req/s; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        settings.args.rate,
        o.requests,
        o.elapsed.as_secs_f64(),
        o.rps(),
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.quantile_ms(0.999),
        o.latency_us.max() as f64 / 1000.0,
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
        .map(|r| r.closed.rps());
    println!(
        "\n| target | max req/s | ratio to ceiling | p50 / p99 / p99.9 at max (ms) | p50 / p99 / p99.9 at {} req/s (ms) | peak RSS (MiB) | seed (s) |",
        settings.args.rate
    );
    println!("|---|---:|---:|---|---|---:|---:|");
    for r in reports {
        let ratio = ceiling.map_or_else(
            || "n/a".to_owned(),
            |c| format!("{:.0}%", 100.0 * r.closed.rps() / c),
        );
        println!(
            "| {} | {:.0} | {ratio} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.1} | {} |",
            r.target.name(),
            r.closed.rps(),
            r.closed.quantile_ms(0.5),
            r.closed.quantile_ms(0.99),
            r.closed.quantile_ms(0.999),
            r.open.quantile_ms(0.5),
            r.open.quantile_ms(0.99),
            r.open.quantile_ms(0.999),
            mib(r.peak_rss_kib),
            r.seed_time
                .map_or_else(|| "-".to_owned(), |t| format!("{:.1}", t.as_secs_f64())),
        );
    }
    println!();
    for r in reports.iter().filter(|r| r.target != Target::Ceiling) {
        let name = r.target.name();
        if let Some(c) = ceiling {
            let ratio = r.closed.rps() / c;
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
        let p99 = r.open.quantile_ms(0.99);
        let kept_up = r.open.rps() >= 0.95 * f64::from(settings.args.rate);
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
        let problems =
            r.closed.unexpected_status + r.open.unexpected_status + r.closed.errors + r.open.errors;
        println!(
            "{} {name}: every status as SPEC section 2 says ({problems} unexpected or failed)",
            verdict(problems == 0)
        );
    }
}
