//! Fresh, migrated databases for tests: a temp-file SQLite database, or a new
//! PostgreSQL database per test (dropped afterwards) on the server named by
//! `CHRONOS_TEST_DATABASE_URL`, so tests run in parallel.
//!
//! With `CHRONOS_REQUIRE_POSTGRES=1` (CI), a missing or unreachable PostgreSQL
//! fails the test instead of skipping it.
//!
//! Also what every crate's tests share: [`test_on_both_backends!`] (the one
//! way to run a test per backend), [`eventually`] (the one way to wait for a
//! condition) and the seeding helpers the benchmark uses too.

// A test helper fails its test by panicking: that is its error path.
#![allow(clippy::expect_used, clippy::panic)]

use crate::calendars::{Calendar, NewChannel};
use crate::{DatabaseUrl, PoolOptions, Store};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use sync_domain::ports::{CredentialStore as _, StoreError};
use sync_domain::{ChannelId, ChannelToken, GoogleCalendarId, RefreshToken, ResourceId, UserId};

/// The env var naming the PostgreSQL server tests may use.
pub const TEST_DATABASE_URL: &str = "CHRONOS_TEST_DATABASE_URL";
/// Set (CI) to turn a skipped PostgreSQL test into a failure.
pub const REQUIRE_POSTGRES: &str = "CHRONOS_REQUIRE_POSTGRES";
/// The key every test and benchmark store uses (base64 of 32 zero-and-one bytes).
pub const TEST_ENCRYPTION_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// A database that exists for one test.
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({:?})", self.url)
    }
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl TestDb {
    /// A fresh database of the given backend; `None` when PostgreSQL is not
    /// configured and not required.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite database in a temp dir (not yet migrated).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir for a test database");
        let url = DatabaseUrl::Sqlite(dir.path().join("chronos-test.db"));
        Self {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh PostgreSQL database (not yet migrated), or `None` to skip.
    pub async fn postgres() -> Option<Self> {
        let required = std::env::var(REQUIRE_POSTGRES).is_ok_and(|v| !v.is_empty() && v != "0");
        let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
            assert!(
                !required,
                "{REQUIRE_POSTGRES} is set but {TEST_DATABASE_URL} is not"
            );
            eprintln!("skipped: {TEST_DATABASE_URL} is not set");
            return None;
        };
        let name = format!("chronos_test_{}", uuid::Uuid::new_v4().simple());
        let template = migrated_template(&admin_url).await;
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {TEST_DATABASE_URL}: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut admin)
            .await
            .expect("creating a test database from the migrated template");
        Some(Self {
            url: DatabaseUrl::Postgres(database_url(&admin_url, &name)),
            _dir: None,
            postgres: Some((admin_url, name)),
        })
    }

    /// A migrated store on this database. Its leases run on the times the
    /// test passes ([`crate::LeaseClock::Instance`]): the contract tests move
    /// time by passing it. (`lease_clock.rs` tests the database's clock.)
    pub async fn store(&self) -> Store {
        Store::open(
            self.url.clone(),
            Some(TEST_ENCRYPTION_KEY),
            PoolOptions::default(),
        )
        .await
        .expect("opening the test store")
        .with_lease_clock(crate::LeaseClock::Instance)
    }

    /// The URL as a string for a server's `database_url`.
    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Postgres(raw) => raw.clone(),
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("CHRONOS_TEST_DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

/// The name of a PostgreSQL database holding exactly the current migrations,
/// created (and migrated) the first time any test asks for it.
///
/// Test databases are cloned from it with `CREATE DATABASE … TEMPLATE`, which
/// copies files instead of replaying every migration per test. The name carries
/// a hash of the migration files, so an edited or added migration gets a fresh
/// template, and checkouts with different migrations never share one.
async fn migrated_template(admin_url: &str) -> String {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("chronos_template_{:016x}", migrations_fingerprint());
            let mut admin = AsyncPgConnection::establish(admin_url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {TEST_DATABASE_URL}: {e}"));
            // One builder at a time across test processes; the others wait, then find it.
            diesel::sql_query(format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})"))
                .execute(&mut admin)
                .await
                .expect("taking the template lock");
            let exists = diesel::sql_query(format!(
                "SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"
            ))
            .execute(&mut admin)
            .await
            .expect("looking up the template database")
                > 0;
            if !exists {
                let building = format!("{name}_building");
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .expect("dropping a half-built template");
                diesel::sql_query(format!("CREATE DATABASE {building}"))
                    .execute(&mut admin)
                    .await
                    .expect("creating the template database");
                let url = DatabaseUrl::Postgres(database_url(admin_url, &building));
                crate::migrations::run_pending(&url)
                    .await
                    .expect("migrating the template database");
                // The rename is the commit point: a crash before it leaves only `_building`.
                diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("publishing the template database");
            }
            diesel::sql_query(format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"))
                .execute(&mut admin)
                .await
                .expect("releasing the template lock");
            name
        })
        .await
        .clone()
}

/// An arbitrary constant: the advisory lock serialising template builds.
const TEMPLATE_LOCK: i64 = 0x0043_6872_6f54_706c;

/// A hash of every PostgreSQL migration file's path and contents.
fn migrations_fingerprint() -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
    let mut files = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("reading the migrations folder") {
            let path = entry.expect("reading a migrations entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.strip_prefix(&dir).unwrap_or(&file).hash(&mut hasher);
        std::fs::read(&file)
            .expect("reading a migration file")
            .hash(&mut hasher);
    }
    hasher.finish()
}

impl TestDb {
    /// Drops a PostgreSQL database now, terminating its connections (to test
    /// behaviour while the database is unreachable). SQLite: no effect.
    pub async fn drop_now(&self) {
        let Some((admin_url, name)) = &self.postgres else {
            return;
        };
        let mut admin = AsyncPgConnection::establish(admin_url)
            .await
            .expect("connecting to the admin database");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("dropping the test database");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any async context we can rely on: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}

/// Seeds a user with credentials and a connected calendar whose current channel
/// is `channel` with `token` (as if registered with Google).
pub async fn seed_calendar(
    store: &Store,
    user: &str,
    google_calendar: &str,
    channel: &str,
    token: &str,
) -> Calendar {
    let user_id = UserId::parse(user).expect("a valid test user id");
    store
        .put_refresh_token(&user_id, &RefreshToken::new("1//test-refresh"))
        .await
        .expect("storing test credentials");
    seed_calendar_without_credentials(store, user, google_calendar, channel, token).await
}

/// As [`seed_calendar`], but the user has no credentials (an orphaned channel).
pub async fn seed_calendar_without_credentials(
    store: &Store,
    user: &str,
    google_calendar: &str,
    channel: &str,
    token: &str,
) -> Calendar {
    let user_id = UserId::parse(user).expect("a valid test user id");
    let google_calendar =
        GoogleCalendarId::parse(google_calendar).expect("a valid test calendar id");
    let channel = NewChannel {
        channel_id: ChannelId::parse(channel).expect("a valid test channel id"),
        token: ChannelToken::new(token),
    };
    let resource = ResourceId::parse("resource-1").expect("a valid resource id");
    let calendar =
        connect_with_active_channel(store, &user_id, &google_calendar, &channel, &resource, None)
            .await
            .expect("connecting the test calendar with its channel");
    store
        .calendar(calendar.id)
        .await
        .expect("reading the seeded calendar")
        .expect("the seeded calendar exists")
}

/// Connects `google_calendar` for `user` and makes `channel` its current,
/// active channel, as if Google had registered it as `resource` (until
/// `expires`): the per-calendar seeding the tests and the benchmark share.
/// Returns the calendar as connected (before the channel was added).
pub async fn connect_with_active_channel(
    store: &Store,
    user: &UserId,
    google_calendar: &GoogleCalendarId,
    channel: &NewChannel,
    resource: &ResourceId,
    expires: Option<time::OffsetDateTime>,
) -> Result<Calendar, StoreError> {
    let (calendar, _) = store.connect_calendar(user, google_calendar).await?;
    store.insert_registering_channel(&calendar, channel).await?;
    store
        .activate_channel(calendar.id, &channel.channel_id, resource, expires)
        .await?;
    Ok(calendar)
}

/// Consumes a calendar's pending request as a claim would (the calendar then
/// has none, e.g. its initial sync was claimed), so the next notification
/// must be written.
pub async fn consume_pending_request(store: &Store, calendar: sync_domain::CalendarId) {
    use crate::schema::sync_requests as sr;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let calendar = calendar.to_string();
    let consumed: Result<usize, sync_domain::ports::StoreError> = async {
        Ok(crate::pool::with_conn!(&store.pool, |conn| {
            diesel::update(sr::table.filter(sr::calendar_id.eq(&calendar)))
                .set((
                    sr::first_requested_at.eq(None::<time::PrimitiveDateTime>),
                    sr::last_requested_at.eq(None::<time::PrimitiveDateTime>),
                ))
                .execute(conn)
                .await
                .map_err(crate::pool::query_error)?
        }))
    }
    .await;
    consumed.expect("consuming the test calendar's pending request");
}

/// Consumes every calendar's pending request, as if each one's initial sync
/// had been claimed (the benchmark's cold start, where each change must be
/// written); returns how many rows it changed.
pub async fn consume_all_pending_requests(store: &Store) -> Result<usize, StoreError> {
    use crate::schema::sync_requests as sr;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    Ok(crate::pool::with_conn!(&store.pool, |conn| {
        diesel::update(sr::table)
            .set((
                sr::first_requested_at.eq(None::<time::PrimitiveDateTime>),
                sr::last_requested_at.eq(None::<time::PrimitiveDateTime>),
            ))
            .execute(conn)
            .await
            .map_err(crate::pool::query_error)?
    }))
}

/// A calendar `calendar` of `user`, connected (its initial sync requested),
/// the user with credentials.
pub async fn connected(store: &Store, user: &str, calendar: &str) -> Calendar {
    let user = UserId::parse(user).expect("a valid test user id");
    store
        .put_refresh_token(&user, &RefreshToken::new("r"))
        .await
        .expect("storing test credentials");
    store
        .connect_calendar(
            &user,
            &GoogleCalendarId::parse(calendar).expect("a valid test calendar id"),
        )
        .await
        .expect("connecting the test calendar")
        .0
}

/// At most this many calendars per [`claim_at`].
pub const CLAIM_LIMIT: i64 = 10;
/// The lease [`claim_at`] takes.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Claims up to [`CLAIM_LIMIT`] due calendars for `owner` as at `now`, with a
/// debounce of `debounce_ms` (bounded at ten times that) and a [`CLAIM_LEASE`].
pub async fn claim_at(
    store: &Store,
    owner: &str,
    now: time::OffsetDateTime,
    debounce_ms: u64,
) -> Vec<sync_domain::sync::Claim> {
    use sync_domain::sync::SyncQueue as _;
    let policy = sync_domain::schedule::CoalescingPolicy {
        debounce: std::time::Duration::from_millis(debounce_ms),
        max_delay: std::time::Duration::from_millis(debounce_ms * 10),
    };
    store
        .claim_due(sync_domain::sync::ClaimRequest {
            owner,
            now,
            cutoffs: policy.cutoffs(now),
            lease_until: now + CLAIM_LEASE,
            limit: CLAIM_LIMIT,
        })
        .await
        .expect("claiming due calendars")
}

/// The reference every write made for `claim` by `owner` carries.
pub fn me<'a>(claim: &sync_domain::sync::Claim, owner: &'a str) -> sync_domain::sync::ClaimRef<'a> {
    claim.by(owner)
}

/// Runs raw statements on the test store's database, one at a time: those of
/// `sqlite` or of `postgres`, whichever backend it uses (to set up what no
/// store call can, e.g. a trigger that makes the database refuse a row).
pub async fn execute_sql(store: &Store, sqlite: &[&str], postgres: &[&str]) {
    use diesel_async::RunQueryDsl;
    let ran: Result<(), sync_domain::ports::StoreError> = async {
        crate::pool::with_conn!(&store.pool, |conn| {
            let statements = if store.dialect() == crate::dialect::Dialect::Sqlite {
                sqlite
            } else {
                postgres
            };
            for statement in statements {
                diesel::sql_query(*statement)
                    .execute(&mut *conn)
                    .await
                    .map_err(crate::pool::query_error)?;
            }
        });
        Ok(())
    }
    .await;
    ran.expect("running test SQL");
}

/// Runs `body` on a migrated store over a fresh `backend` database (not at
/// all when PostgreSQL is skipped, see [`TestDb::postgres`]); the database
/// lives until `body` is done. The store form of [`test_on_both_backends!`].
pub async fn with_store(backend: Backend, body: impl AsyncFnOnce(Store)) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    body(db.store().await).await;
}

/// Declares a test that runs once per backend, as `NAME::sqlite` and
/// `NAME::postgres`, for every crate's tests:
///
/// - `test_on_both_backends!(name, body)`: `body` is an async fn taking a
///   migrated [`Store`] on a fresh database ([`with_store`]);
/// - `test_on_both_backends!(name, backend => body)`: `body` is an async fn
///   taking the [`Backend`] and building what it needs (a server, a
///   [`TestDb`], two stores); it skips itself when [`TestDb::new`] (or a
///   launcher built on it) returns `None`.
///
/// The PostgreSQL half is skipped without `CHRONOS_TEST_DATABASE_URL` and
/// fails when `CHRONOS_REQUIRE_POSTGRES=1` ([`TestDb::postgres`]).
#[macro_export]
macro_rules! test_on_both_backends {
    ($(#[$meta:meta])* $name:ident, backend => $body:expr) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::test_support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::test_support::Backend::Postgres).await;
            }
        }
    };
    ($(#[$meta:meta])* $name:ident, $body:expr) => {
        $crate::test_on_both_backends!(
            $(#[$meta])* $name,
            backend => |backend| $crate::test_support::with_store(backend, $body)
        );
    };
}

/// How long [`eventually`] waits before it fails the test.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(20);
/// How often [`eventually`] checks.
pub const EVENTUALLY_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// What an [`eventually`] check answers: `true`, `Some(value)` or
/// `Ok(value)` once it holds; `false`, `None` or `Err(what was seen)` until
/// then (an `Err` is shown if the wait times out).
pub trait Outcome {
    /// What [`eventually`] returns once the check holds.
    type Value;
    /// `Ok` once the check holds, else what was seen (may be empty).
    fn settled(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn settled(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Polls `check` every [`EVENTUALLY_EVERY`] until it holds and returns its
/// value; fails the test after [`EVENTUALLY`], naming `what` and the last
/// thing seen. A wait with a tighter bound wraps it in `tokio::time::timeout`.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> <Fut::Output as Outcome>::Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
    Fut::Output: Outcome,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        let seen = match check().await.settled() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            if seen.is_empty() {
                panic!("timed out after {EVENTUALLY:?} waiting for: {what}");
            }
            panic!("timed out after {EVENTUALLY:?} waiting for: {what}; last seen: {seen}");
        }
        tokio::time::sleep(EVENTUALLY_EVERY).await;
    }
}
