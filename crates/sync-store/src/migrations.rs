//! Embedded migrations, run at startup on either backend without libpq.

use crate::pool::{DatabaseUrl, establish_sqlite};
use anyhow::Context as _;
use diesel::Connection as _;
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
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(raw)
                .with_context(|| format!("connecting to {}", url.redacted()))?;
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
