//! The coalescing figure (issue 7, item 3): a burst of valid change
//! notifications for many calendars within a short window, against the real
//! `chronos-server` with its default debounce (1 s) and bound (10 s), must lead
//! to at most 2 syncs per calendar (SPEC section 6).
//!
//! The calendars are connected through the internal API and fully synced; the
//! server registers their channels at the fake Google (`webhook_base_url` is the
//! server itself). The notifications carry the channels' real ids and tokens, as
//! the fake granted them. Syncs are counted at the fake: every `events.list`
//! call without a `pageToken` after the burst began starts one sync.

use crate::server::ServerProcess;
use crate::sync::{self, InternalApi, PostgresArgs, StoreTarget, is_idle, is_stuck, state};
use anyhow::{Context as _, bail};
use fake_google::RunningFakeGoogle;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use sync_domain::{GoogleCalendarId, UserId};
use tokio::sync::Semaphore;

/// Target: syncs per calendar at most.
const TARGET_MAX_SYNCS: usize = 2;

/// Options of `chronos-bench coalesce`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoalesceArgs {
    /// Backends to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    pub backends: Vec<StoreTarget>,
    /// Calendars notified.
    #[arg(long, default_value_t = 100)]
    pub calendars: usize,
    /// Calendars per user.
    #[arg(long, default_value_t = 10)]
    pub calendars_per_user: usize,
    /// Events in each calendar.
    #[arg(long, default_value_t = 10)]
    pub events_per_calendar: usize,
    /// Change notifications sent, round robin over the calendars.
    #[arg(long, default_value_t = 10_000)]
    pub notifications: usize,
    /// Seconds the notifications are spread over (an open loop: sends are scheduled).
    #[arg(long, default_value_t = 2.0)]
    pub window_secs: f64,
    /// Most notifications in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds without a new `events.list` call (after the burst) that count as settled.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// `RUST_LOG` for the server.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Where PostgreSQL databases are created.
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

/// A calendar's channel as the fake granted it.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    key: (String, String),
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) resource_id: String,
}

/// The figures of one backend.
#[derive(Debug)]
struct CoalesceReport {
    backend: StoreTarget,
    sent: usize,
    answered_ok: u64,
    failed: u64,
    /// From the first send to the last answer.
    burst: Duration,
    /// Syncs started per calendar during and after the burst.
    syncs: Vec<usize>,
    /// First and last sync start after the burst began (sampled every 20 ms).
    sync_span: Option<(Duration, Duration)>,
    warnings: usize,
}

/// Runs the coalescing figure and prints it.
pub async fn run(args: CoalesceArgs) -> anyhow::Result<()> {
    println!(
        "coalescing: {} notifications for {} calendars over {} s, server defaults (debounce 1000 ms, max delay 10000 ms)",
        args.notifications, args.calendars, args.window_secs
    );
    let mut reports = Vec::new();
    for &backend in &args.backends {
        println!("\n== {backend:?} ==");
        let report = run_one(&args, backend)
            .await
            .with_context(|| format!("coalescing on {backend:?}"))?;
        reports.push(report);
    }
    println!(
        "\n| backend | notifications answered 200 | burst (s) | syncs started | per calendar: max / mean / min | calendars with 0 / 1 / 2 / more syncs | syncs began (s after the burst began) | verdict (<= {TARGET_MAX_SYNCS}) |"
    );
    println!("|---|---:|---:|---:|---|---|---|---|");
    for r in &reports {
        let max = r.syncs.iter().copied().max().unwrap_or(0);
        let min = r.syncs.iter().copied().min().unwrap_or(0);
        let total: usize = r.syncs.iter().sum();
        let mean = total as f64 / r.syncs.len().max(1) as f64;
        let with = |n: usize| r.syncs.iter().filter(|&&s| s == n).count();
        let more = r.syncs.iter().filter(|&&s| s > 2).count();
        let span = r.sync_span.map_or("-".to_owned(), |(a, b)| {
            format!("{:.2} to {:.2}", a.as_secs_f64(), b.as_secs_f64())
        });
        let verdict = if max <= TARGET_MAX_SYNCS && min >= 1 {
            "PASS"
        } else {
            "MISS"
        };
        println!(
            "| {:?} | {} of {} ({} failed) | {:.2} | {total} | {max} / {mean:.2} / {min} | {} / {} / {} / {more} | {span} | {verdict} |",
            r.backend,
            r.answered_ok,
            r.sent,
            r.failed,
            r.burst.as_secs_f64(),
            with(0),
            with(1),
            with(2),
        );
        if r.warnings > 0 {
            println!(
                "({:?}: {} warnings in the server log)",
                r.backend, r.warnings
            );
        }
    }
    Ok(())
}

async fn run_one(args: &CoalesceArgs, backend: StoreTarget) -> anyhow::Result<CoalesceReport> {
    let fake = sync::start_fake(2500)?;
    let per_user = args.calendars_per_user.max(1);
    let mut calendars = Vec::with_capacity(args.calendars);
    for n in 0..args.calendars {
        let user = UserId::parse(format!("bench-user-{}", n / per_user))?;
        let calendar = GoogleCalendarId::parse(format!("calendar-{n}@bench.example"))?;
        fake.google.calendar().add_calendar(&user, &calendar);
        fake.google
            .bulk_create(&user, &calendar, "evt", args.events_per_calendar);
        calendars.push((user, calendar));
    }
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let db = sync::create_db(backend, &args.postgres, dir.path()).await?;
    let result = async {
        let store = db.store().await?;
        drop(store);
        // The server is its own webhook address: Google (the fake) pushes to it.
        let process = start_with_webhook(&db, dir.path(), &fake, &args.server_log).await?;
        measure(args, backend, &fake, process, &calendars).await
    }
    .await;
    let dropped = db.drop_database().await;
    fake.stop().await;
    let report = result?;
    dropped?;
    Ok(report)
}

pub(crate) async fn start_with_webhook(
    db: &crate::database::BenchDb,
    dir: &std::path::Path,
    fake: &RunningFakeGoogle,
    log: &str,
) -> anyhow::Result<ServerProcess> {
    let addr = crate::server::free_addr()?;
    let base = format!("http://{addr}");
    sync::start_server(
        db,
        dir,
        fake,
        addr,
        &[("CHRONOS_WEBHOOK_BASE_URL", base.as_str())],
        log,
    )
    .await
}

async fn measure(
    args: &CoalesceArgs,
    backend: StoreTarget,
    fake: &RunningFakeGoogle,
    process: ServerProcess,
    calendars: &[(UserId, GoogleCalendarId)],
) -> anyhow::Result<CoalesceReport> {
    let api = InternalApi::new(process.addr)?;
    let mut users: Vec<&UserId> = calendars.iter().map(|(u, _)| u).collect();
    users.dedup();
    for user in users {
        api.put_credentials(user).await?;
    }
    let setup = Instant::now();
    for (user, calendar) in calendars {
        api.connect(user, calendar).await?;
    }
    // Connected, fully synced, channel registered, and no sync in flight.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let views = api.calendars().await?;
        let ready = views
            .iter()
            .filter(|v| {
                is_idle(v)
                    && v["full_sync_complete"] == serde_json::json!(true)
                    && !v["channel"].is_null()
            })
            .count();
        if ready == calendars.len() && open_channels(fake)?.len() == calendars.len() {
            break;
        }
        if let Some(bad) = views.iter().find(|v| is_stuck(v)) {
            bail!("a calendar went {}: {bad}", state(bad));
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} calendars synced with a channel after 180 s; server log:\n{}",
                calendars.len(),
                process.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_quiet(fake, Duration::from_secs(2), Duration::from_secs(60)).await?;
    println!(
        "{} calendars connected, synced and watched in {:.1} s",
        calendars.len(),
        setup.elapsed().as_secs_f64()
    );

    let channels = open_channels(fake)?;
    let baseline = fake.google.calendar().list_calls().len();
    let burst_start = Instant::now();
    let (answered_ok, failed, burst) = send_burst(args, process.addr, &channels).await?;
    println!(
        "sent {} notifications in {:.2} s: {answered_ok} answered 200, {failed} not",
        args.notifications,
        burst.as_secs_f64()
    );

    // Settle: no new events.list call for `settle_secs`, and every calendar idle.
    let settle = Duration::from_secs_f64(args.settle_secs);
    let mut seen = fake.google.calendar().list_calls().len();
    let mut last_change = Instant::now();
    let mut first_sync: Option<Duration> = None;
    let mut last_sync: Option<Duration> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    if seen > baseline {
        first_sync = Some(Duration::ZERO);
        last_sync = Some(burst.min(burst_start.elapsed()));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = fake.google.calendar().list_calls().len();
        if now != seen {
            seen = now;
            last_change = Instant::now();
            let at = burst_start.elapsed();
            first_sync.get_or_insert(at);
            last_sync = Some(at);
        }
        if last_change.elapsed() >= settle {
            let views = api.calendars().await?;
            if views.iter().all(is_idle) {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("syncs did not settle within 120 s of the burst");
        }
    }

    let calls = fake.google.calendar().list_calls();
    let mut per_calendar: HashMap<(String, String), usize> =
        channels.iter().map(|c| (c.key.clone(), 0)).collect();
    for call in calls.iter().skip(baseline) {
        if call.query.page_token.is_none() {
            let key = (
                call.user_id.as_str().to_owned(),
                call.calendar.as_str().to_owned(),
            );
            *per_calendar.entry(key).or_default() += 1;
        }
    }
    let syncs: Vec<usize> = per_calendar.into_values().collect();
    let (warnings, samples) = process.log_warnings(3);
    for line in samples {
        println!("server warning: {line}");
    }
    process.stop()?;
    Ok(CoalesceReport {
        backend,
        sent: args.notifications,
        answered_ok,
        failed,
        burst,
        syncs,
        sync_span: first_sync.zip(last_sync),
        warnings,
    })
}

/// The open channel of each watched calendar, as the fake granted it.
pub(crate) fn open_channels(fake: &RunningFakeGoogle) -> anyhow::Result<Vec<Channel>> {
    let model = fake.google.calendar();
    let open = model.open_channels();
    let mut channels: Vec<Channel> = model
        .watches()
        .into_iter()
        .filter(|w| {
            open.iter().any(|o| {
                o.channel_id == w.granted.channel_id && o.resource_id == w.granted.resource_id
            })
        })
        .map(|w| Channel {
            key: (
                w.user_id.as_str().to_owned(),
                w.calendar.as_str().to_owned(),
            ),
            id: w.granted.channel_id.as_str().to_owned(),
            token: w.request.token.expose().to_owned(),
            resource_id: w.granted.resource_id.as_str().to_owned(),
        })
        .collect();
    channels.sort_by(|a, b| a.key.cmp(&b.key));
    let before = channels.len();
    channels.dedup_by(|a, b| a.key == b.key);
    if channels.len() != before {
        bail!("some calendar has two open channels at the fake");
    }
    Ok(channels)
}

/// Waits until the fake has seen no `events.list` call for `quiet`.
async fn wait_quiet(
    fake: &RunningFakeGoogle,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = fake.google.calendar().list_calls().len();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fake.google.calendar().list_calls().len();
        if now != seen {
            seen = now;
            since = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("syncs still running after {timeout:?}");
        }
    }
    Ok(())
}

/// Sends the notifications on a schedule spread over the window, round robin
/// over the channels; returns (answered 200, other answers or errors, duration).
async fn send_burst(
    args: &CoalesceArgs,
    addr: std::net::SocketAddr,
    channels: &[Channel],
) -> anyhow::Result<(u64, u64, Duration)> {
    if channels.is_empty() {
        bail!("no channels to notify");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let url = format!("http://{addr}/calendar/webhook");
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(args.connections.max(1)));
    let step = Duration::from_secs_f64(args.window_secs / args.notifications.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(args.notifications);
    for i in 0..args.notifications {
        tokio::time::sleep_until(start + step * i as u32).await;
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let channel = &channels[i % channels.len()];
        // Message numbers increase per channel; 1 was the `sync` handshake.
        let number = 2 + i / channels.len();
        let request = client
            .post(&url)
            .header(reqwest::header::USER_AGENT, "APIs-Google")
            .header("x-goog-channel-id", &channel.id)
            .header("x-goog-channel-token", &channel.token)
            .header("x-goog-resource-state", "exists")
            .header("x-goog-message-number", number.to_string())
            .header("x-goog-resource-id", &channel.resource_id)
            .header(
                "x-goog-resource-uri",
                "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
            )
            .header("x-goog-channel-expiration", "Tue, 19 Nov 2030 01:13:52 GMT");
        let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let success = matches!(request.send().await, Ok(r) if r.status().is_success());
            if success { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.context("a sender task panicked")?;
    }
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        start.elapsed(),
    ))
}
