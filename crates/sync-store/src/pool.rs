//! Connection pools for both backends, chosen at run time from the URL, and the
//! one macro that lets query code be written once for both.

use diesel::ConnectionError;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool as DeadPool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use std::path::PathBuf;
use std::time::Duration;
use sync_domain::ports::StoreError;

/// The SQLite connection type used through diesel-async.
pub type AsyncSqliteConnection = SyncConnectionWrapper<SqliteConnection>;

/// Which database a URL names.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `sqlite://PATH`, `sqlite:PATH` or a bare path.
    Sqlite(PathBuf),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

/// Why a database URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("database_url is empty")]
    Empty,
    #[error("database_url names an unknown backend `{0}` (use postgres:// or sqlite://)")]
    UnknownBackend(String),
    #[error("database_url is not a valid PostgreSQL URL: {0}")]
    InvalidPostgres(String),
    #[error(
        "database_url: in-memory SQLite is not supported (each pooled connection would be its own database); use a file path"
    )]
    InMemorySqlite,
}

impl DatabaseUrl {
    /// Parses a `database_url` setting.
    pub fn parse(raw: &str) -> Result<Self, DatabaseUrlError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        let lower = raw.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let parsed = url::Url::parse(raw)
                .map_err(|e| DatabaseUrlError::InvalidPostgres(e.to_string()))?;
            if parsed.host_str().is_none_or(str::is_empty)
                && !parsed.query_pairs().any(|(k, _)| k == "host")
            {
                return Err(DatabaseUrlError::InvalidPostgres("no host".into()));
            }
            // The TLS parameters (and every other one) are checked now, so a
            // typo stops startup instead of the first connection.
            crate::tls::PgConnectSpec::parse(raw).map_err(DatabaseUrlError::InvalidPostgres)?;
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let path = if let Some(rest) = lower
            .strip_prefix("sqlite://")
            .map(|_| &raw["sqlite://".len()..])
        {
            rest
        } else if lower.starts_with("sqlite:") {
            &raw["sqlite:".len()..]
        } else if let Some((scheme, _)) = raw.split_once("://") {
            return Err(DatabaseUrlError::UnknownBackend(scheme.to_owned()));
        } else {
            raw
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(DatabaseUrlError::InMemorySqlite);
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The URL with any password (user info or `password=`) replaced by `***`,
    /// for logs, `config` and errors.
    pub fn redacted(&self) -> String {
        match self {
            Self::Postgres(raw) => match url::Url::parse(raw) {
                Ok(_) => sync_domain::redact::redact_url(raw),
                Err(_) => "postgres://***".to_owned(),
            },
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }

    /// A warning for the startup log when the connection is encrypted but the
    /// server's identity is not verified (`sslmode=require` without `sslrootcert`).
    pub fn tls_notice(&self) -> Option<&'static str> {
        match self {
            Self::Postgres(raw) => crate::tls::PgConnectSpec::parse(raw)
                .ok()
                .and_then(|spec| spec.unverified_identity_notice()),
            Self::Sqlite(_) => None,
        }
    }

    /// The backend's name, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_size: usize,
    /// How long a caller waits for a connection before the store counts as unavailable.
    pub wait_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A pool for one of the two backends.
#[derive(Clone)]
pub enum DbPool {
    Postgres(DeadPool<AsyncPgConnection>),
    Sqlite(DeadPool<AsyncSqliteConnection>),
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(p) => write!(f, "DbPool::Postgres({:?})", p.status()),
            Self::Sqlite(p) => write!(f, "DbPool::Sqlite({:?})", p.status()),
        }
    }
}

impl DbPool {
    /// How many connections are open, idle and waited for (for metrics).
    pub fn status(&self) -> deadpool::Status {
        match self {
            Self::Postgres(p) => p.status(),
            Self::Sqlite(p) => p.status(),
        }
    }
}

/// Per-connection SQLite settings: a busy timeout so writers queue instead of
/// failing (first: switching to WAL itself needs a lock another connection may
/// hold), WAL for concurrent readers, foreign keys on, and full durability.
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;";

/// Session settings of every pooled PostgreSQL connection, so no database wait
/// is unbounded: a statement runs at most 30 s, waits for a row lock at most
/// 5 s, a transaction left idle is ended after 60 s, and TCP keepalives find a
/// dead peer within about a minute (the default is two hours).
const POSTGRES_SESSION: &[(&str, &str)] = &[
    (
        "options",
        "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000",
    ),
    ("keepalives_idle", "30"),
];

/// The session of the webhook's writer connections: their one statement, the
/// batch, on the generic plan always. PostgreSQL's default re-planned it for
/// about a third of the batches (`pg_stat_statements`: 7,802 plans for 26,823
/// calls, 3.8 s planning beside 5.0 s executing), because a plan for the
/// array's actual length looks cheaper than the generic one; the generic plan
/// is the same index lookups for any length.
const WEBHOOK_WRITER_SESSION: &str = "SET plan_cache_mode = force_generic_plan";

/// `raw` with [`POSTGRES_SESSION`] added, except for parameters the URL sets itself.
pub(crate) fn postgres_session_url(raw: &str) -> String {
    let Ok(url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    let present: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    let mut out = raw.to_owned();
    for (key, value) in POSTGRES_SESSION {
        if present.iter().any(|k| k == key) {
            continue;
        }
        // libpq-style URLs decode `%20` but not `+` as a space.
        let value = value.replace(' ', "%20").replace('=', "%3D");
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&format!("{key}={value}"));
    }
    out
}

impl DbPool {
    /// The SQL dialect of this pool's backend.
    pub fn dialect(&self) -> crate::dialect::Dialect {
        match self {
            Self::Postgres(_) => crate::dialect::Dialect::Postgres,
            Self::Sqlite(_) => crate::dialect::Dialect::Sqlite,
        }
    }

    /// Builds the pool (connections open lazily). On SQLite this is the one
    /// writer connection: every write goes through it, so no write ever waits
    /// on SQLite's busy handler (see [`Self::sqlite_readers`] for reads).
    pub fn new(url: &DatabaseUrl, options: PoolOptions) -> Result<Self, anyhow::Error> {
        Self::build(url, options, 1, None)
    }

    /// The webhook's group-commit writers on PostgreSQL: their own
    /// [`POSTGRES_IN_FLIGHT`](crate::group_commit::POSTGRES_IN_FLIGHT)
    /// connections, so a batch never waits for a connection the syncs hold,
    /// each running its one batch statement on a generic plan
    /// ([`WEBHOOK_WRITER_SESSION`]). `None` on SQLite, whose writer is the
    /// pool's one connection.
    pub(crate) fn postgres_webhook_writers(
        url: &DatabaseUrl,
        options: PoolOptions,
    ) -> Result<Option<Self>, anyhow::Error> {
        match url {
            DatabaseUrl::Postgres(_) => {
                let options = PoolOptions {
                    max_size: crate::group_commit::POSTGRES_IN_FLIGHT,
                    ..options
                };
                Self::build(url, options, 1, Some(WEBHOOK_WRITER_SESSION)).map(Some)
            }
            DatabaseUrl::Sqlite(_) => Ok(None),
        }
    }

    /// Read-only SQLite connections for the webhook's lookup, which never need
    /// to wait for the writer (WAL readers run beside it).
    pub(crate) fn sqlite_readers(
        url: &DatabaseUrl,
        options: PoolOptions,
    ) -> Result<Option<Self>, anyhow::Error> {
        match url {
            DatabaseUrl::Postgres(_) => Ok(None),
            DatabaseUrl::Sqlite(_) => {
                Self::build(url, options, options.max_size.min(4), None).map(Some)
            }
        }
    }

    /// `postgres_setup` runs on each new PostgreSQL connection.
    fn build(
        url: &DatabaseUrl,
        options: PoolOptions,
        sqlite_size: usize,
        postgres_setup: Option<&'static str>,
    ) -> Result<Self, anyhow::Error> {
        let runtime = deadpool::Runtime::Tokio1;
        match url {
            DatabaseUrl::Postgres(raw) => {
                let raw = &postgres_session_url(raw);
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                // No `SELECT 1` on every checkout: a connection that failed is
                // marked broken by diesel-async and discarded on return anyway.
                config.recycling_method = RecyclingMethod::Fast;
                // TLS as the URL's `sslmode` says (see `tls`).
                let connector = std::sync::Arc::new(crate::tls::PgConnector::new(raw)?);
                config.custom_setup = Box::new(move |_url| {
                    let connector = std::sync::Arc::clone(&connector);
                    Box::pin(async move {
                        let mut conn = connector.connect().await?;
                        if let Some(setup) = postgres_setup {
                            diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, setup)
                                .await
                                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                        }
                        Ok(conn)
                    })
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
                    raw.clone(),
                    config,
                );
                let pool = DeadPool::builder(manager)
                    .max_size(options.max_size)
                    .wait_timeout(Some(options.wait_timeout))
                    .create_timeout(Some(options.connect_timeout))
                    .recycle_timeout(Some(options.connect_timeout))
                    .runtime(runtime)
                    .build()?;
                Ok(Self::Postgres(pool))
            }
            DatabaseUrl::Sqlite(path) => {
                let mut config = ManagerConfig::<AsyncSqliteConnection>::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        tokio::task::spawn_blocking(move || establish_sqlite(&url))
                            .await
                            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?
                            .map(SyncConnectionWrapper::new)
                    })
                });
                let manager =
                    AsyncDieselConnectionManager::<AsyncSqliteConnection>::new_with_config(
                        path.to_string_lossy(),
                        config,
                    );
                let pool = DeadPool::builder(manager)
                    .max_size(sqlite_size.max(1))
                    .wait_timeout(Some(options.wait_timeout))
                    .create_timeout(Some(options.connect_timeout))
                    .recycle_timeout(Some(options.connect_timeout))
                    .runtime(runtime)
                    .build()?;
                Ok(Self::Sqlite(pool))
            }
        }
    }
}

/// Opens a SQLite connection with the project's pragmas.
pub(crate) fn establish_sqlite(path: &str) -> ConnectionResult<SqliteConnection> {
    let mut conn = SqliteConnection::establish(path)?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    Ok(conn)
}

/// Takes a connection from a pool; failing to get one means the store is unavailable.
pub(crate) async fn checkout<C>(pool: &DeadPool<C>) -> Result<Object<C>, StoreError>
where
    C: diesel_async::AsyncConnection + 'static,
    diesel_async::pooled_connection::AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    pool.get()
        .await
        .map_err(|e: PoolError| StoreError::Unavailable(Box::new(e)))
}

/// Maps a Diesel error: a lost connection means unavailable, anything else a failed query.
pub(crate) fn query_error(error: DieselError) -> StoreError {
    match &error {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(error)),
        // A bounded wait that ran out (SQLite busy, PostgreSQL lock or
        // statement timeout): the database is not answering in time.
        DieselError::DatabaseError(_, info)
            if ["database is locked", "lock timeout", "statement timeout"]
                .iter()
                .any(|m| info.message().contains(m)) =>
        {
            StoreError::Unavailable(Box::new(error))
        }
        _ => StoreError::Query(Box::new(error)),
    }
}

/// Runs `$body` with `$conn` bound to a connection of whichever backend the
/// store uses. The body is written once and compiled for both backends, so
/// query code is never copied per backend.
macro_rules! with_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            $crate::pool::DbPool::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $conn = $crate::pool::checkout(pool).await?;
                #[allow(unused_mut)]
                let mut $conn: &mut diesel_async::AsyncPgConnection = &mut $conn;
                $body
            }
            $crate::pool::DbPool::Sqlite(pool) => {
                #[allow(unused_mut)]
                let mut $conn = $crate::pool::checkout(pool).await?;
                #[allow(unused_mut)]
                let mut $conn: &mut $crate::pool::AsyncSqliteConnection = &mut $conn;
                $body
            }
        }
    };
}
pub(crate) use with_conn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://chronos.db"),
            Ok(DatabaseUrl::Sqlite("chronos.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/chronos.db"),
            Ok(DatabaseUrl::Sqlite("/var/lib/chronos.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("data/chronos.db"),
            Ok(DatabaseUrl::Sqlite("data/chronos.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@db:5432/chronos"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!(
            DatabaseUrl::parse("mysql://x"),
            Err(DatabaseUrlError::UnknownBackend("mysql".into()))
        );
        assert_eq!(DatabaseUrl::parse(""), Err(DatabaseUrlError::Empty));
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:"),
            Err(DatabaseUrlError::InMemorySqlite)
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://"),
            Err(DatabaseUrlError::InvalidPostgres(_))
        ));
    }

    #[test]
    fn redaction_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://chronos:hunter2@db/chronos").unwrap();
        assert!(!url.redacted().contains("hunter2"));
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = DatabaseUrl::parse("postgres://chronos@db/chronos?password=hunter2").unwrap();
        assert!(!url.redacted().contains("hunter2"), "{}", url.redacted());
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
