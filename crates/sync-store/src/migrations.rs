//! Embedded migrations, run at startup on either backend without libpq.

use crate::pool::{DatabaseUrl, establish_sqlite};
use anyhow::Context as _;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const POSTGRES: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// An arbitrary constant: the advisory lock that keeps instances starting at the
/// same time from running the same migration twice.
const MIGRATION_LOCK: i64 = 0x0043_6872_6f6e_6f73;

/// Applies every pending migration; returns the versions applied.
///
/// Runs on a blocking thread: Diesel's harness is synchronous, and
/// `AsyncConnectionWrapper` must not block a runtime worker.
pub async fn run_pending(url: &DatabaseUrl) -> anyhow::Result<Vec<String>> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || match &url {
        DatabaseUrl::Postgres(raw) => {
            let mut conn = connect_postgres(raw, &url)?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .context("taking the migration lock")?;
            let applied = apply(&mut conn, POSTGRES);
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .context("releasing the migration lock")?;
            applied
        }
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // Credentials are encrypted, but channel tokens and the mirror are not.
            crate::crypto::create_private_database_file(path)
                .with_context(|| format!("creating {}", url.redacted()))?;
            let mut conn = establish_sqlite(&path.to_string_lossy())
                .with_context(|| format!("opening {}", url.redacted()))?;
            apply(&mut conn, SQLITE)
        }
    })
    .await
    .context("migration task panicked")?
}

/// A synchronous PostgreSQL connection for the migration harness, with the
/// same TLS as the pool (see `tls`). Call on a blocking thread of a runtime:
/// the wrapper blocks on that runtime.
fn connect_postgres(
    raw: &str,
    url: &DatabaseUrl,
) -> anyhow::Result<AsyncConnectionWrapper<AsyncPgConnection>> {
    let connector = crate::tls::PgConnector::new(raw)?;
    let conn = tokio::runtime::Handle::current()
        .block_on(connector.connect())
        .with_context(|| format!("connecting to {}", url.redacted()))?;
    Ok(AsyncConnectionWrapper::from(conn))
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<Vec<String>>
where
    C: MigrationHarness<<C as diesel::Connection>::Backend> + diesel::Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|e| anyhow::anyhow!("running migrations: {e}"))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

use diesel::RunQueryDsl as _;

/// The versions not yet applied; connects but applies nothing (for
/// `chronos-server config --check`). On SQLite the file must exist: opening a
/// missing one would create it.
pub async fn pending(url: &DatabaseUrl) -> anyhow::Result<Vec<String>> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || match &url {
        DatabaseUrl::Postgres(raw) => {
            let mut conn = connect_postgres(raw, &url)?;
            unapplied(&mut conn, POSTGRES)
        }
        DatabaseUrl::Sqlite(path) => {
            if !path.exists() {
                anyhow::bail!("{} does not exist", path.display());
            }
            let mut conn = establish_sqlite(&path.to_string_lossy())
                .with_context(|| format!("opening {}", url.redacted()))?;
            unapplied(&mut conn, SQLITE)
        }
    })
    .await
    .context("migration task panicked")?
}

fn unapplied<C>(conn: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<Vec<String>>
where
    C: MigrationHarness<<C as diesel::Connection>::Backend> + diesel::Connection,
{
    let pending = conn
        .pending_migrations(migrations)
        .map_err(|e| anyhow::anyhow!("reading the applied migrations: {e}"))?;
    Ok(pending.iter().map(|m| m.name().to_string()).collect())
}

/// The migration versions already released, in order, as Diesel reports them
/// (the folder name's `YYYY-MM-DD-NNNNNN` without dashes). A new migration must sort
/// after the last of these (see `docs/architecture.md`, "Migrations"); add its
/// version here when it ships.
#[cfg(test)]
const RELEASED: &[&str] = &[
    "20261129000001",
    "20261210000001",
    "20261211000001",
    "20261211000002",
    "20261211000003",
    "20261211000004",
    "20261211000005",
    "20261211000006",
];

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::migration::MigrationSource as _;

    fn versions<DB: diesel::backend::Backend>(source: &EmbeddedMigrations) -> Vec<String> {
        let migrations: Vec<Box<dyn diesel::migration::Migration<DB>>> = source
            .migrations()
            .expect("reading the embedded migrations");
        let mut versions: Vec<String> = migrations
            .iter()
            .map(|m| m.name().version().to_string())
            .collect();
        versions.sort();
        versions
    }

    fn postgres() -> Vec<String> {
        versions::<diesel::pg::Pg>(&POSTGRES)
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        assert_eq!(postgres(), versions::<diesel::sqlite::Sqlite>(&SQLITE));
    }

    #[test]
    fn migration_versions_are_dated_with_a_counter() {
        for version in postgres() {
            let well_formed = version.len() == 14
                && version.bytes().all(|b| b.is_ascii_digit())
                && time::Date::parse(
                    &version[..8],
                    time::macros::format_description!("[year][month][day]"),
                )
                .is_ok();
            assert!(
                well_formed,
                "{version}: the folder is not YYYY-MM-DD-NNNNNN_name"
            );
        }
    }

    #[test]
    fn new_migrations_sort_after_every_released_one() {
        let all = postgres();
        let last_released = RELEASED.last().expect("at least one released migration");
        for released in RELEASED {
            assert!(
                all.iter().any(|v| v == released),
                "released {released} is missing"
            );
        }
        for version in all.iter().filter(|v| !RELEASED.contains(&v.as_str())) {
            assert!(
                version.as_str() > *last_released,
                "migration {version} sorts before the released {last_released}: \
                 take the newest version's date and the next counter"
            );
        }
    }
}
