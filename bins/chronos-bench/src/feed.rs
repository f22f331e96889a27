//! The change feed's latency (issue 13, item 6): under a steady stream of
//! changes, the time from a change notification sent to the server to the
//! entry arriving at a consumer long-polling `GET /internal/changes`, p50 and
//! p99, for a debounce of 0 and the default. With `--instances 2`
//! (PostgreSQL), the notifications go to one server and the consumer polls the
//! other, so the figure includes the `LISTEN`/`NOTIFY` wake across instances.
//!
//! Each change creates a new event at the fake Google, then notifies on the
//! calendar's real channel; the consumer matches entries by event id.

use crate::coalesce::{open_channels, start_with_webhook};
use crate::sync::{self, InternalApi, PostgresArgs, StoreTarget, is_idle};
use anyhow::{Context as _, bail};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sync_domain::{GoogleCalendarId, UserId};

/// Options of `chronos-bench feed-latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// Backends to run, in order (`--instances 2` runs PostgreSQL only).
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    pub backends: Vec<StoreTarget>,
    /// Debounces to run (`sync_debounce_ms`), in order.
    #[arg(long, value_delimiter = ',', default_value = "0,1000")]
    pub debounce_ms: Vec<u64>,
    /// Changes made (one notification each).
    #[arg(long, default_value_t = 500)]
    pub changes: usize,
    /// Milliseconds between changes (a steady open-loop stream).
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Servers on the database: 1, or 2 (notify the first, consume from the second).
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// `RUST_LOG` for the servers.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Where PostgreSQL databases are created.
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

/// Runs every backend and debounce asked for and prints one line each.
pub async fn run(args: FeedArgs) -> anyhow::Result<()> {
    if !(1..=2).contains(&args.instances) {
        bail!("--instances must be 1 or 2");
    }
    for backend in &args.backends {
        if args.instances == 2 && matches!(backend, StoreTarget::Sqlite) {
            println!("sqlite: skipped (one server per SQLite database)");
            continue;
        }
        for debounce in &args.debounce_ms {
            let mut samples = run_one(&args, *backend, *debounce).await?;
            samples.sort();
            let at = |q: f64| {
                let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
                samples
                    .get(i)
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
            };
            println!(
                "{backend:?}, {} instance(s), debounce {debounce} ms: notification -> entry at a long-polling consumer over {} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                args.instances,
                samples.len(),
                at(0.5),
                at(0.99),
                at(1.0),
            );
        }
    }
    Ok(())
}

async fn run_one(
    args: &FeedArgs,
    backend: StoreTarget,
    debounce_ms: u64,
) -> anyhow::Result<Vec<Duration>> {
    let fake = sync::start_fake(2500)?;
    let user = UserId::parse("feed-user")?;
    let calendar = GoogleCalendarId::parse("feed@bench.example")?;
    fake.google.calendar().add_calendar(&user, &calendar);
    fake.google.bulk_create(&user, &calendar, "before", 10);
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let db = sync::create_db(backend, &args.postgres, dir.path()).await?;
    let result = async {
        drop(db.store().await?);
        let debounce = debounce_ms.to_string();
        let max_delay = (debounce_ms * 10).to_string();
        let env = [
            ("CHRONOS_SYNC_DEBOUNCE_MS", debounce.as_str()),
            ("CHRONOS_SYNC_MAX_DELAY_MS", max_delay.as_str()),
        ];
        let first = start_with_webhook_env(&db, dir.path(), &fake, &args.server_log, &env).await?;
        let second = if args.instances == 2 {
            let addr = crate::server::free_addr()?;
            Some(sync::start_server(&db, dir.path(), &fake, addr, &env, &args.server_log).await?)
        } else {
            None
        };
        let notified = InternalApi::new(first.addr)?;
        let consumed = InternalApi::new(second.as_ref().map_or(first.addr, |s| s.addr))?;
        notified.put_credentials(&user).await?;
        notified.connect(&user, &calendar).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let views = notified.calendars().await?;
            if views.iter().any(|v| is_idle(v) && !v["channel"].is_null())
                && !open_channels(&fake)?.is_empty()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the calendar was not synced and watched within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let channel = open_channels(&fake)?
            .into_iter()
            .next()
            .context("no open channel")?;
        measure(
            args, &fake, first.addr, &channel, &consumed, &user, &calendar,
        )
        .await
    }
    .await;
    let dropped = db.drop_database().await;
    fake.stop().await;
    let samples = result?;
    dropped?;
    Ok(samples)
}

async fn start_with_webhook_env(
    db: &crate::database::BenchDb,
    dir: &std::path::Path,
    fake: &fake_google::RunningFakeGoogle,
    log: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<crate::server::ServerProcess> {
    if env.is_empty() {
        return start_with_webhook(db, dir, fake, log).await;
    }
    let addr = crate::server::free_addr()?;
    let base = format!("http://{addr}");
    let mut all: Vec<(&str, &str)> = env.to_vec();
    all.push(("CHRONOS_WEBHOOK_BASE_URL", base.as_str()));
    sync::start_server(db, dir, fake, addr, &all, log).await
}

async fn measure(
    args: &FeedArgs,
    fake: &fake_google::RunningFakeGoogle,
    addr: std::net::SocketAddr,
    channel: &crate::coalesce::Channel,
    consumer: &InternalApi,
    user: &UserId,
    calendar: &GoogleCalendarId,
) -> anyhow::Result<Vec<Duration>> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = consumer.changes(None, 0).await?;
    let mut cursor = start["next_cursor"].as_str().unwrap_or("0").to_owned();
    let follower = {
        let seen = Arc::clone(&seen);
        let consumer = consumer.clone();
        let expected = args.changes;
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            while Instant::now() < deadline {
                let page = consumer.changes(Some(&cursor), 30).await?;
                let now = Instant::now();
                if let Some(entries) = page["changes"].as_array() {
                    let mut seen = seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for entry in entries {
                        if let Some(id) = entry["event_id"].as_str() {
                            seen.entry(id.to_owned()).or_insert(now);
                        }
                    }
                    if (0..expected).all(|n| seen.contains_key(&format!("feed-{n}"))) {
                        return Ok(());
                    }
                }
                cursor = page["next_cursor"].as_str().unwrap_or(&cursor).to_owned();
            }
            anyhow::Ok(())
        })
    };
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/calendar/webhook");
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let step = Duration::from_millis(args.interval_ms);
    let begin = tokio::time::Instant::now();
    for n in 0..args.changes {
        tokio::time::sleep_until(begin + step * n as u32).await;
        let id = format!("feed-{n}");
        fake.google
            .calendar()
            .create_event(user, calendar, &id, "feed");
        sent.insert(id, Instant::now());
        let response = client
            .post(&url)
            .header("x-goog-channel-id", &channel.id)
            .header("x-goog-channel-token", &channel.token)
            .header("x-goog-resource-state", "exists")
            .header("x-goog-message-number", (n + 2).to_string())
            .header("x-goog-resource-id", &channel.resource_id)
            .send()
            .await
            .context("sending a notification")?;
        if !response.status().is_success() {
            bail!("a notification got {}", response.status());
        }
    }
    follower.await.context("the consumer panicked")??;
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut samples = Vec::with_capacity(sent.len());
    for (id, at) in &sent {
        let Some(arrived) = seen.get(id) else {
            bail!("{id} never reached the consumer");
        };
        samples.push(arrived.saturating_duration_since(*at));
    }
    Ok(samples)
}
