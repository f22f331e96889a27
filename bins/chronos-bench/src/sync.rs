//! The sync benchmark (issue 7, item 2): the real `chronos-server` pulls a
//! large calendar from a fake Google (`fake_google`, in this process, so its
//! memory is not the server's) into PostgreSQL or SQLite.
//!
//! Per backend and calendar size: a fresh fake holding N events served in
//! pages of 2,500, a fresh database, the release server pointed at both; the
//! calendar is connected through `POST /internal/calendars` and the clock runs
//! until it is `idle` with `full_sync_complete`. Then the mirror is counted,
//! the server's peak RSS read, and an incremental sync of changed events timed.
//! Also home of what [`crate::coalesce`] shares: the fake, the server and the
//! internal API client.

use crate::database::{self, BenchDb};
use crate::server::{self, Launch, ServerProcess};
use anyhow::{Context as _, bail};
use fake_google::{FakeGoogle, RunningFakeGoogle};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use sync_domain::{GoogleCalendarId, SyncState, UserId};
use sync_store::Store;

/// The PostgreSQL server used when neither env var names one.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The internal API's bearer token the benchmark gives the server.
const ADMIN_TOKEN: &str = "chronos-bench-admin-token";
/// Throughput target: events applied per second into PostgreSQL.
const TARGET_EVENTS_PER_SEC: f64 = 30_000.0;
/// The change log may cost at most this share of the sync's throughput (issue 13).
const CHANGE_LOG_RATIO: f64 = 0.85;
/// "Bounded by a page": peak RSS may grow at most this much while the calendar grows 10x.
const MAX_RSS_GROWTH: f64 = 1.5;
/// How often a waiting loop asks the server.
const POLL: Duration = Duration::from_millis(20);

/// A database backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreTarget {
    /// A fresh PostgreSQL database (dropped afterwards).
    Postgres,
    /// A temp-file SQLite database.
    Sqlite,
}

/// Where the PostgreSQL databases are created.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresArgs {
    /// PostgreSQL server to create the benchmark databases on
    /// [default: CHRONOS_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres].
    #[arg(long, env = "CHRONOS_BENCH_DATABASE_URL")]
    pub postgres_url: Option<String>,
}

/// Options of `chronos-bench sync`.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Backends to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    pub backends: Vec<StoreTarget>,
    /// Calendar sizes (events) to sync, each on a fresh server and database.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub events: Vec<usize>,
    /// Calendars the events are spread over, synced at once (the server runs
    /// up to 8 syncs at a time): with more than one, pages of different
    /// calendars compete for the change feed's position lock. The incremental
    /// sync is then skipped.
    #[arg(long, default_value_t = 1)]
    pub calendars: usize,
    /// Events per `events.list` page the fake serves at most.
    #[arg(long, default_value_t = 2500)]
    pub page_size: usize,
    /// Events changed at the fake for the incremental sync (0: skip it).
    #[arg(long, default_value_t = 2500)]
    pub changes: usize,
    /// The server's `sync_debounce_ms`: 0, so the clock measures the sync, not the debounce.
    #[arg(long, default_value_t = 0)]
    pub debounce_ms: u64,
    /// `RUST_LOG` for the server.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Also run the largest size with the change log's writes discarded (a
    /// trigger that drops each row, added to the benchmark's own database
    /// after its migrations), and print what the log costs.
    #[arg(long)]
    pub compare_change_log: bool,
    /// With `--compare-change-log`: how many runs with the log off, each after
    /// one with it on (alternating; the ratio printed is of the medians).
    #[arg(long, default_value_t = 3)]
    pub compare_pairs: usize,
    /// Where PostgreSQL databases are created.
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

/// The figures of one run.
#[derive(Debug)]
struct SyncReport {
    backend: StoreTarget,
    /// Whether the change log was written (see `--compare-change-log`).
    change_log: bool,
    events: usize,
    pages: usize,
    /// From `POST /internal/calendars` to `idle` with `full_sync_complete`.
    wall: Duration,
    /// `chronos_sync_duration_seconds` of that sync, as the server measured it.
    server_sync: Option<Duration>,
    peak_rss_kib: u64,
    /// Changed events, request-to-applied time, and the server's own duration.
    incremental: Option<(usize, Duration, Option<Duration>)>,
    warnings: usize,
}

impl SyncReport {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The median of `values` (`None`: empty).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Runs the sync benchmark and prints its figures.
pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    println!(
        "sync benchmark: sizes {:?} events over {} calendar(s), pages of {}, backends {:?}, debounce {} ms",
        args.events,
        args.calendars.max(1),
        args.page_size,
        args.backends,
        args.debounce_ms
    );
    let mut reports = Vec::new();
    for &backend in &args.backends {
        for &events in &args.events {
            println!("\n== {backend:?}, {events} events ==");
            let report = run_one(&args, backend, events, true)
                .await
                .with_context(|| format!("{backend:?} with {events} events"))?;
            print_one(&report);
            reports.push(report);
        }
        if let (true, Some(&events)) = (args.compare_change_log, args.events.iter().max()) {
            // The machine is noisy: on and off alternate, the first "on" is
            // the run above.
            for pair in 0..args.compare_pairs.max(1) {
                for change_log in [true, false] {
                    if change_log && pair == 0 {
                        continue;
                    }
                    let state = if change_log { "on" } else { "off" };
                    println!("\n== {backend:?}, {events} events, change log {state} ==");
                    let report = run_one(&args, backend, events, change_log)
                        .await
                        .with_context(|| {
                            format!("{backend:?} with {events} events, change log {state}")
                        })?;
                    print_one(&report);
                    reports.push(report);
                }
            }
        }
    }
    print_summary(&reports);
    Ok(())
}

async fn run_one(
    args: &SyncArgs,
    backend: StoreTarget,
    events: usize,
    change_log: bool,
) -> anyhow::Result<SyncReport> {
    let fake = start_fake(args.page_size)?;
    let user = UserId::parse("bench-user")?;
    let count = args.calendars.max(1);
    let calendars = (0..count)
        .map(|n| match n {
            0 => GoogleCalendarId::parse("big@bench.example"),
            n => GoogleCalendarId::parse(format!("big{n}@bench.example")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let seeding = Instant::now();
    for (n, calendar) in calendars.iter().enumerate() {
        fake.google.calendar().add_calendar(&user, calendar);
        let share = events / count + usize::from(n < events % count);
        fake.google.bulk_create(&user, calendar, "evt", share);
    }
    println!(
        "fake Google holds {events} events ({:.1} s to create)",
        seeding.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let db = create_db(backend, &args.postgres, dir.path()).await?;
    if !change_log {
        discard_change_log(&db).await?;
    }
    let result = measure(args, &db, dir.path(), &fake, &user, &calendars, events).await;
    let dropped = db.drop_database().await;
    fake.stop().await;
    let report = result?;
    dropped?;
    Ok(SyncReport {
        backend,
        change_log,
        ..report
    })
}

/// Makes every insert into `change_log` do nothing, in this database only:
/// the sync then runs exactly as with the log, minus the log's writes. A row
/// trigger that drops each row, on both backends. A page's events are a few
/// rows of up to 250 entries (`sync_store::changes::EVENTS_PER_ROW`), so the
/// trigger runs about ten times a page: its own cost in the "off" figure is
/// negligible (the rows' JSON is still built, and sent, and dropped).
async fn discard_change_log(db: &BenchDb) -> anyhow::Result<()> {
    let store = db.store().await?; // migrated
    let statements: &[&str] = match db.backend {
        database::Backend::Postgres => &[
            "CREATE FUNCTION bench_discard_change_log() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN RETURN NULL; END $$",
            "CREATE TRIGGER bench_discard_change_log BEFORE INSERT ON change_log \
             FOR EACH ROW EXECUTE FUNCTION bench_discard_change_log()",
        ],
        database::Backend::Sqlite => &[
            "CREATE TRIGGER bench_discard_change_log BEFORE INSERT ON change_log \
             BEGIN SELECT RAISE(IGNORE); END",
        ],
    };
    for sql in statements {
        store
            .execute_for_benchmark(sql)
            .await
            .context("turning the change log off")?;
    }
    Ok(())
}

async fn measure(
    args: &SyncArgs,
    db: &BenchDb,
    dir: &Path,
    fake: &RunningFakeGoogle,
    user: &UserId,
    calendars: &[GoogleCalendarId],
    events: usize,
) -> anyhow::Result<SyncReport> {
    let store = db.store().await?;
    let debounce = args.debounce_ms.to_string();
    let process = start_server(
        db,
        dir,
        fake,
        server::free_addr()?,
        &[("CHRONOS_SYNC_DEBOUNCE_MS", debounce.as_str())],
        &args.server_log,
    )
    .await?;
    let api = InternalApi::new(process.addr)?;
    api.put_credentials(user).await?;

    let started = Instant::now();
    let mut ids = Vec::new();
    for calendar in calendars {
        ids.push(api.connect(user, calendar).await?);
    }
    let mut views = Vec::new();
    for id in &ids {
        let view = api
            .wait_for(id, Duration::from_secs(600), |v| {
                is_idle(v) && v["full_sync_complete"] == json!(true)
            })
            .await?;
        views.push(view);
    }
    let wall = started.elapsed();
    let (calendar, id, view) = (&calendars[0], &ids[0], &views[0]);
    let peak_rss_kib = process.peak_rss_kib()?;
    let mirrored = count_events(&store).await?;
    if mirrored != events as i64 {
        bail!("the mirror holds {mirrored} events, the fake {events}");
    }
    let server_sync = api.sync_seconds_after(0).await?.map(|(sum, _)| sum);
    println!(
        "full sync: {events} events in {:.2} s (server: {}), mirror verified",
        wall.as_secs_f64(),
        secs(server_sync)
    );

    let incremental = if args.changes > 0 && calendars.len() == 1 {
        Some(
            incremental(
                &api,
                fake,
                user,
                calendar,
                id,
                view,
                args.changes.min(events),
            )
            .await?,
        )
    } else {
        None
    };
    if let Some((changes, _, _)) = incremental {
        let mirrored = count_events(&store).await?;
        if mirrored != events as i64 {
            bail!("after {changes} changes the mirror holds {mirrored} events, the fake {events}");
        }
    }
    let (warnings, samples) = process.log_warnings(3);
    for line in samples {
        println!("server warning: {line}");
    }
    process.stop()?;
    drop(store);
    Ok(SyncReport {
        backend: StoreTarget::Postgres,
        change_log: true,
        events,
        pages: (0..calendars.len())
            .map(|n| {
                let share = events / calendars.len() + usize::from(n < events % calendars.len());
                share.div_ceil(args.page_size.max(1))
            })
            .sum(),
        wall,
        server_sync,
        peak_rss_kib,
        incremental,
        warnings,
    })
}

/// Changes `changes` events at the fake, requests a sync, and times it until applied.
async fn incremental(
    api: &InternalApi,
    fake: &RunningFakeGoogle,
    user: &UserId,
    calendar: &GoogleCalendarId,
    id: &str,
    before: &Value,
    changes: usize,
) -> anyhow::Result<(usize, Duration, Option<Duration>)> {
    for n in 0..changes {
        fake.google.calendar().put_event(
            user,
            calendar,
            json!({"id": format!("evt{n:06}"), "status": sync_domain::EventStatus::Confirmed.as_str(),
                   "summary": format!("Changed event {n}"),
                   "start": {"dateTime": "2030-01-02T09:00:00Z"},
                   "end": {"dateTime": "2030-01-02T09:30:00Z"}}),
        );
    }
    let server_before = api.sync_seconds().await?;
    let last_sync = before["last_sync_at"].clone();
    let started = Instant::now();
    api.request_sync(id).await?;
    api.wait_for(id, Duration::from_secs(120), |v| {
        is_idle(v) && v["last_sync_at"] != last_sync
    })
    .await?;
    let wall = started.elapsed();
    let done_before = server_before.map_or(0, |(_, count)| count);
    let server = match (server_before, api.sync_seconds_after(done_before).await?) {
        (Some((sum0, _)), Some((sum1, _))) => Some(sum1.saturating_sub(sum0)),
        _ => None,
    };
    println!(
        "incremental sync: {changes} changed events applied {:.0} ms after the request (server: {})",
        wall.as_secs_f64() * 1000.0,
        secs(server)
    );
    Ok((changes, wall, server))
}

fn print_one(r: &SyncReport) {
    println!(
        "{:?}: {} events, {} pages: {:.2} s, {:.0} events/s, peak RSS {:.1} MiB, {} warnings in the server log",
        r.backend,
        r.events,
        r.pages,
        r.wall.as_secs_f64(),
        r.events_per_sec(),
        mib(r.peak_rss_kib),
        r.warnings
    );
}

fn print_summary(reports: &[SyncReport]) {
    println!(
        "\n| backend | change log | events | pages | full sync (s) | events/s | server's sync duration (s) | events/s (server's duration) | peak RSS (MiB) | incremental: changes, request to applied (ms), server's (ms) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in reports {
        let server_rate = r.server_sync.map_or("-".to_owned(), |d| {
            format!("{:.0}", r.events as f64 / d.as_secs_f64().max(1e-9))
        });
        let incremental = r.incremental.map_or("-".to_owned(), |(n, wall, server)| {
            format!(
                "{n}, {:.0}, {}",
                wall.as_secs_f64() * 1000.0,
                server.map_or("-".to_owned(), |d| format!(
                    "{:.0}",
                    d.as_secs_f64() * 1000.0
                ))
            )
        });
        println!(
            "| {:?} | {} | {} | {} | {:.2} | {:.0} | {} | {} | {:.1} | {} |",
            r.backend,
            if r.change_log { "on" } else { "off" },
            r.events,
            r.pages,
            r.wall.as_secs_f64(),
            r.events_per_sec(),
            secs(r.server_sync),
            server_rate,
            mib(r.peak_rss_kib),
            incremental
        );
    }
    println!();
    for backend in [StoreTarget::Postgres, StoreTarget::Sqlite] {
        let runs: Vec<&SyncReport> = reports
            .iter()
            .filter(|r| r.backend == backend && r.change_log)
            .collect();
        let (Some(small), Some(large)) = (
            runs.iter().min_by_key(|r| r.events),
            runs.iter().max_by_key(|r| r.events),
        ) else {
            continue;
        };
        let rate = large.events_per_sec();
        let median_rate = |change_log: bool| {
            median(
                reports
                    .iter()
                    .filter(|r| {
                        r.backend == backend
                            && r.change_log == change_log
                            && r.events == large.events
                    })
                    .map(SyncReport::events_per_sec)
                    .collect(),
            )
        };
        if let (Some(on), Some(off)) = (median_rate(true), median_rate(false)) {
            let ratio = on / off.max(1e-9);
            let pairs = reports
                .iter()
                .filter(|r| r.backend == backend && !r.change_log)
                .count();
            println!(
                "{backend:?}: with the change log {:.0}% of the events/s with its rows dropped by a trigger (medians of {pairs} alternating runs each: {:.0} vs {:.0}, {} events; target >= {:.0}%): {} (the entries' JSON is still built and sent when off, and the trigger runs once per row of up to 250 entries)",
                100.0 * ratio,
                on,
                off,
                large.events,
                100.0 * CHANGE_LOG_RATIO,
                if ratio >= CHANGE_LOG_RATIO {
                    "PASS"
                } else {
                    "MISS"
                }
            );
        }
        let verdict = if rate >= TARGET_EVENTS_PER_SEC {
            "PASS"
        } else {
            "MISS"
        };
        let note = if backend == StoreTarget::Postgres {
            ""
        } else {
            " (reference: the target is PostgreSQL's)"
        };
        println!(
            "{backend:?}: {:.0} events/s applied with {} events (target >= {TARGET_EVENTS_PER_SEC:.0}): {verdict}{note}",
            rate, large.events
        );
        if large.events > small.events {
            let growth = large.peak_rss_kib as f64 / (small.peak_rss_kib.max(1) as f64);
            let verdict = if growth <= MAX_RSS_GROWTH {
                "PASS"
            } else {
                "MISS"
            };
            println!(
                "{backend:?}: peak RSS {:.1} MiB with {} events, {:.1} MiB with {} ({:.1}x the events, {growth:.2}x the memory; bounded if <= {MAX_RSS_GROWTH}x): {verdict}",
                mib(small.peak_rss_kib),
                small.events,
                mib(large.peak_rss_kib),
                large.events,
                large.events as f64 / small.events.max(1) as f64
            );
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// A fake Google on a free loopback port, in this process's runtime.
pub fn start_fake(page_size: usize) -> anyhow::Result<RunningFakeGoogle> {
    let fake = fake_google::spawn(FakeGoogle::default()).context("starting the fake Google")?;
    fake.google.calendar().set_page_size(page_size);
    Ok(fake)
}

/// A fresh database on `target`.
pub async fn create_db(
    target: StoreTarget,
    postgres: &PostgresArgs,
    dir: &Path,
) -> anyhow::Result<BenchDb> {
    match target {
        StoreTarget::Postgres => {
            let admin = postgres
                .postgres_url
                .clone()
                .or_else(|| std::env::var("CHRONOS_TEST_DATABASE_URL").ok())
                .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
            BenchDb::postgres(&admin).await
        }
        StoreTarget::Sqlite => Ok(BenchDb::sqlite(dir)),
    }
}

/// Starts the release `chronos-server` on `db` (already migrated), listening on
/// `addr`, pointed at `fake`, with the internal API on; `extra` env entries are
/// added or override.
pub async fn start_server(
    db: &BenchDb,
    dir: &Path,
    fake: &RunningFakeGoogle,
    addr: std::net::SocketAddr,
    extra: &[(&str, &str)],
    log: &str,
) -> anyhow::Result<ServerProcess> {
    let mut env: Vec<(String, String)> = [
        ("CHRONOS_DATABASE_URL", db.url.as_str()),
        ("CHRONOS_BIND", &addr.to_string()),
        ("CHRONOS_ENCRYPTION_KEY", database::ENCRYPTION_KEY),
        ("CHRONOS_LOG_FORMAT", "json"),
        ("CHRONOS_ADMIN_TOKEN", ADMIN_TOKEN),
        ("CHRONOS_GOOGLE_API_BASE_URL", &fake.api_base_url()),
        ("CHRONOS_GOOGLE_TOKEN_URL", &fake.token_url()),
        ("CHRONOS_GOOGLE_CLIENT_ID", "fake-client"),
        ("CHRONOS_GOOGLE_CLIENT_SECRET", "fake-secret"),
        ("RUST_LOG", log),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
    let mut process = ServerProcess::spawn(&Launch {
        program: server::sibling_binary("chronos-server")?,
        args: Vec::new(),
        env,
        workdir: dir,
        addr,
    })?;
    process.wait_ready(Duration::from_secs(30)).await?;
    Ok(process)
}

/// Calendar `sync_state` of a calendar view.
pub fn state(view: &Value) -> &str {
    view["sync_state"].as_str().unwrap_or("")
}

/// Whether a calendar view says `idle`.
pub fn is_idle(view: &Value) -> bool {
    SyncState::parse(state(view)) == Some(SyncState::Idle)
}

/// Whether a calendar view says it failed or is parked: the run cannot finish.
pub fn is_stuck(view: &Value) -> bool {
    matches!(
        SyncState::parse(state(view)),
        Some(SyncState::Failing | SyncState::NeedsReauth | SyncState::Gone)
    )
}

/// A client of the server's internal API and `/metrics`.
#[derive(Debug, Clone)]
pub struct InternalApi {
    client: reqwest::Client,
    base: String,
}

impl InternalApi {
    /// A client of the server at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            base: format!("http://{addr}"),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the body"))?;
        if !status.is_success() {
            bail!("{what}: {status} {body}");
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: not JSON: {body}"))
    }

    /// Stores `fake-refresh-<user>` as the user's Google credentials.
    pub async fn put_credentials(&self, user: &UserId) -> anyhow::Result<()> {
        let url = format!(
            "{}/internal/users/{}/google-credentials",
            self.base,
            user.as_str()
        );
        let body = json!({"refresh_token": FakeGoogle::refresh_token_for(user.as_str())});
        self.send(self.client.put(url).json(&body), "storing credentials")
            .await?;
        Ok(())
    }

    /// `GET /internal/changes?after=&wait=` (no `after`: from now).
    pub async fn changes(&self, after: Option<&str>, wait_secs: u64) -> anyhow::Result<Value> {
        let mut url = format!("{}/internal/changes?limit=1000&wait={wait_secs}", self.base);
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        self.send(self.client.get(url), "reading the change feed")
            .await
    }

    /// Connects a calendar; returns its Chronos id.
    pub async fn connect(
        &self,
        user: &UserId,
        calendar: &GoogleCalendarId,
    ) -> anyhow::Result<String> {
        let body = json!({"user_id": user.as_str(), "google_calendar_id": calendar.as_str()});
        let view = self
            .send(
                self.client
                    .post(format!("{}/internal/calendars", self.base))
                    .json(&body),
                "connecting a calendar",
            )
            .await?;
        view["id"]
            .as_str()
            .map(str::to_owned)
            .context("the connect answer has no id")
    }

    /// `GET /internal/calendars/{id}`.
    pub async fn calendar(&self, id: &str) -> anyhow::Result<Value> {
        self.send(
            self.client
                .get(format!("{}/internal/calendars/{id}", self.base)),
            "reading a calendar",
        )
        .await
    }

    /// Every connected calendar (`GET /internal/calendars`).
    pub async fn calendars(&self) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .send(
                self.client.get(format!("{}/internal/calendars", self.base)),
                "listing calendars",
            )
            .await?;
        answer["calendars"]
            .as_array()
            .cloned()
            .context("no calendars array")
    }

    /// `POST /internal/calendars/{id}/sync`.
    pub async fn request_sync(&self, id: &str) -> anyhow::Result<()> {
        self.send(
            self.client
                .post(format!("{}/internal/calendars/{id}/sync", self.base)),
            "requesting a sync",
        )
        .await?;
        Ok(())
    }

    /// Polls the calendar until `done` holds; fails on `failing`, `needs_reauth`, `gone`.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.calendar(id).await?;
            if done(&view) {
                return Ok(view);
            }
            if is_stuck(&view) {
                bail!(
                    "calendar {id} went {}: {}",
                    state(&view),
                    view["last_error"]
                );
            }
            if Instant::now() > deadline {
                bail!("calendar {id} not done within {timeout:?}: {view}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Self::sync_seconds`] once more than `count` syncs are recorded: the
    /// worker records the metric just after the calendar shows `idle` (up to 5 s).
    pub async fn sync_seconds_after(&self, count: u64) -> anyhow::Result<Option<(Duration, u64)>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.sync_seconds().await?;
            if seen.is_some_and(|(_, n)| n > count) || Instant::now() > deadline {
                return Ok(seen);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sum and count of `chronos_sync_duration_seconds` over all outcomes.
    pub async fn sync_seconds(&self) -> anyhow::Result<Option<(Duration, u64)>> {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("reading /metrics")?;
        let text = response.text().await.context("reading /metrics")?;
        let total = |suffix: &str| -> Option<f64> {
            let values: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(&format!("chronos_sync_duration_seconds{suffix}")))
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
                .collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        Ok(match (total("_sum"), total("_count")) {
            (Some(sum), Some(count)) => Some((Duration::from_secs_f64(sum.max(0.0)), count as u64)),
            _ => None,
        })
    }
}

/// Events in the mirror that are not cancelled, over all calendars.
async fn count_events(store: &Store) -> anyhow::Result<i64> {
    database::count(
        store,
        &format!(
            "SELECT COUNT(*) AS n FROM calendar_events WHERE status <> '{}'",
            sync_domain::EventStatus::Cancelled
        ),
    )
    .await
}
