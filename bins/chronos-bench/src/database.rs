//! The databases under test: a fresh PostgreSQL database (dropped afterwards)
//! or a temp-file SQLite database, seeded with calendars that each have a
//! current watch channel, through the seeding step the store's tests use
//! (`sync_store::test_support`, with their credentials key).

use anyhow::Context as _;
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use futures::{StreamExt as _, TryStreamExt as _};
use std::path::Path;
use std::time::Duration;
use sync_domain::ports::CredentialStore as _;
use sync_domain::{ChannelId, ChannelToken, GoogleCalendarId, RefreshToken, ResourceId, UserId};
use sync_store::calendars::NewChannel;
use sync_store::test_support::connect_with_active_channel;
use sync_store::{DatabaseUrl, PoolOptions, Store};
use time::OffsetDateTime;
use uuid::Uuid;

/// The credentials key the benchmark's store and server share: the test stores' key.
pub use sync_store::test_support::TEST_ENCRYPTION_KEY as ENCRYPTION_KEY;

/// Which backend a database is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one benchmark run.
#[derive(Debug)]
pub struct BenchDb {
    /// The URL the server is given.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    /// The admin URL and database name, to drop a PostgreSQL database.
    postgres: Option<(String, String)>,
}

/// A seeded channel: what a notification for it carries.
#[derive(Debug, Clone)]
pub struct SeededChannel {
    pub channel_id: String,
    pub token: String,
    /// The calendar's user and Google calendar id (empty for synthetic channels).
    pub user_id: String,
    pub google_calendar_id: String,
}

/// Cumulative PostgreSQL counters, compared before and after a run.
#[derive(Debug, Clone, Copy, Default, QueryableByName)]
pub struct PgCounters {
    /// Committed transactions in the benchmark's database (`pg_stat_database`).
    #[diesel(sql_type = BigInt)]
    pub xact_commit: i64,
    /// WAL flushes to disk, cluster-wide (`pg_stat_wal.wal_sync`).
    #[diesel(sql_type = BigInt)]
    pub wal_sync: i64,
}

/// Runs `sql`, a query returning one BIGINT column `n`, on either backend.
pub async fn count(store: &Store, sql: &str) -> anyhow::Result<i64> {
    Ok(store.count(sql).await?)
}

impl BenchDb {
    /// Creates a fresh database on the PostgreSQL server `admin_url` names.
    pub async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("chronos_bench_{}", Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(admin_url)))?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating the benchmark database")?;
        let mut url = url::Url::parse(admin_url).context("the PostgreSQL URL is not a URL")?;
        url.set_path(&name);
        Ok(Self {
            url: url.to_string(),
            backend: Backend::Postgres,
            postgres: Some((admin_url.to_owned(), name)),
        })
    }

    /// A SQLite database file in `dir`.
    pub fn sqlite(dir: &Path) -> Self {
        Self {
            url: format!("sqlite://{}", dir.join("chronos-bench.db").display()),
            backend: Backend::Sqlite,
            postgres: None,
        }
    }

    /// Opens (and migrates) a store on this database.
    pub async fn store(&self) -> anyhow::Result<Store> {
        let url = DatabaseUrl::parse(&self.url).context("the benchmark's database URL")?;
        Store::open(url, Some(ENCRYPTION_KEY), PoolOptions::default()).await
    }

    /// Reads the PostgreSQL counters (zero on SQLite). Backends publish their
    /// statistics when they go idle or exit, so read after the server has stopped.
    pub async fn pg_counters(&self) -> anyhow::Result<PgCounters> {
        let Some((admin_url, name)) = &self.postgres else {
            return Ok(PgCounters::default());
        };
        let mut admin = AsyncPgConnection::establish(admin_url).await?;
        let counters = diesel::sql_query(format!(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}') AS xact_commit, \
             (SELECT wal_sync FROM pg_stat_wal) AS wal_sync"
        ))
        .get_result::<PgCounters>(&mut admin)
        .await
        .context("reading pg_stat_database and pg_stat_wal")?;
        Ok(counters)
    }

    /// Sync requests recorded so far, over all calendars.
    pub async fn recorded_requests(&self, store: &Store) -> anyhow::Result<i64> {
        count(
            store,
            "SELECT CAST(COALESCE(SUM(request_count), 0) AS BIGINT) AS n FROM sync_requests",
        )
        .await
    }

    /// Drops a PostgreSQL database (and its connections); removes nothing for
    /// SQLite, whose file lives in the caller's temp dir.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let Some((admin_url, name)) = &self.postgres else {
            return Ok(());
        };
        let mut admin = AsyncPgConnection::establish(admin_url).await?;
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .context("dropping the benchmark database")?;
        Ok(())
    }
}

/// Seeds `calendars` calendars, `per_user` to a user with credentials, each with
/// an active channel; `concurrency` users are seeded at once.
pub async fn seed(
    store: &Store,
    calendars: usize,
    per_user: usize,
    concurrency: usize,
    refresh_token: fn(&str) -> String,
) -> anyhow::Result<Vec<SeededChannel>> {
    let per_user = per_user.max(1);
    let users = calendars.div_ceil(per_user);
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(7 * 24 * 3600);
    let seeded: Vec<Vec<SeededChannel>> = futures::stream::iter(0..users)
        .map(|user| {
            let count = per_user.min(calendars - user * per_user);
            seed_user(store, user, count, expires, refresh_token)
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    if store.dialect() == sync_store::dialect::Dialect::Postgres {
        // The planner's statistics, as autovacuum would have gathered them on
        // a live database (the machine's shared cluster runs without it):
        // without them it plans the sync claim as a scan of every calendar.
        store
            .execute_for_benchmark("ANALYZE")
            .await
            .context("analyzing the seeded tables")?;
    }
    Ok(seeded.into_iter().flatten().collect())
}

async fn seed_user(
    store: &Store,
    user: usize,
    calendars: usize,
    expires: OffsetDateTime,
    refresh_token: fn(&str) -> String,
) -> anyhow::Result<Vec<SeededChannel>> {
    let user_id = UserId::parse(format!("bench-user-{user}"))?;
    store
        .put_refresh_token(
            &user_id,
            &RefreshToken::new(refresh_token(user_id.as_str())),
        )
        .await?;
    let mut channels = Vec::with_capacity(calendars);
    for n in 0..calendars {
        let google = GoogleCalendarId::parse(format!("calendar-{n}@bench.example"))?;
        let channel = NewChannel {
            channel_id: ChannelId::from_uuid(Uuid::new_v4()),
            token: ChannelToken::new(Uuid::new_v4().simple().to_string()),
        };
        let resource = ResourceId::parse(format!("resource-{user}-{n}"))?;
        connect_with_active_channel(store, &user_id, &google, &channel, &resource, Some(expires))
            .await?;
        channels.push(SeededChannel {
            channel_id: channel.channel_id.as_str().to_owned(),
            token: channel.token.expose().to_owned(),
            user_id: user_id.as_str().to_owned(),
            google_calendar_id: google.as_str().to_owned(),
        });
    }
    Ok(channels)
}

/// Random channels that no database knows (for the ceiling, which looks nothing up).
pub fn synthetic_channels(count: usize) -> Vec<SeededChannel> {
    (0..count)
        .map(|_| SeededChannel {
            channel_id: Uuid::new_v4().hyphenated().to_string(),
            token: Uuid::new_v4().simple().to_string(),
            user_id: String::new(),
            google_calendar_id: String::new(),
        })
        .collect()
}

/// The URL with any password hidden.
pub fn redact(raw: &str) -> String {
    DatabaseUrl::parse(raw).map_or_else(|_| "postgres://***".to_owned(), |u| u.redacted())
}
