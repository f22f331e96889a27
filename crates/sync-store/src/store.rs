//! The store: a pool and the credentials cipher.

use crate::channel_cache::ChannelCache;
use crate::crypto::{CredentialCipher, resolve_key};
use crate::dialect::LeaseClock;
use crate::group_commit::{GroupCommit, GroupLookup, start_group_commit, start_group_lookup};
use crate::pool::{DatabaseUrl, DbPool, PoolOptions, with_conn};
use crate::timestamps::to_db;
use async_trait::async_trait;
use diesel_async::RunQueryDsl;
use std::sync::Arc;
use sync_domain::ports::{Clock, StoreError, SystemClock};

/// Persistence for Chronos on PostgreSQL or SQLite.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: DbPool,
    /// Where reads that write nothing go (the webhook's lookup, the metrics
    /// snapshot, the change feed, the internal API's calendar and event
    /// reads): the pool itself on PostgreSQL, separate read-only connections
    /// beside the one writer on SQLite, so a long read (the metrics snapshot
    /// counts every calendar) never holds up the webhook's group commit.
    pub(crate) readers: DbPool,
    /// Where the webhook's group commit writes: connections of its own on
    /// PostgreSQL, the one writer (the pool itself) on SQLite.
    pub(crate) writers: DbPool,
    pub(crate) cipher: CredentialCipher,
    pub(crate) clock: Arc<dyn Clock>,
    /// Where lease times come from (see [`LeaseClock`]).
    lease_clock: LeaseClock,
    /// Recent channel lookups (see `channel_cache`).
    pub(crate) channel_cache: Arc<ChannelCache>,
    /// Started by [`Self::open`] on its runtime, else on first use, on the
    /// runtime of the first caller.
    writer: Arc<std::sync::OnceLock<GroupCommit>>,
    /// The webhook's batched channel lookups; started like `writer`.
    lookups: Arc<std::sync::OnceLock<GroupLookup>>,
    /// Bumped after every commit that appended to the change feed (see `changes`).
    pub(crate) change_signal: Arc<tokio::sync::watch::Sender<u64>>,
    url: DatabaseUrl,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds a store: resolves the credentials key (SPEC section 4) and the pool.
    /// Does not touch the database; call [`crate::migrations::run_pending`] first.
    pub fn new(
        url: DatabaseUrl,
        encryption_key: Option<&str>,
        options: PoolOptions,
    ) -> anyhow::Result<Self> {
        let key = resolve_key(encryption_key, &url)?;
        let pool = DbPool::new(&url, options)?;
        let readers = DbPool::sqlite_readers(&url, options)?.unwrap_or_else(|| pool.clone());
        let writers =
            DbPool::postgres_webhook_writers(&url, options)?.unwrap_or_else(|| pool.clone());
        Ok(Self {
            pool,
            readers,
            writers,
            cipher: CredentialCipher::new(&key),
            clock: Arc::new(SystemClock),
            lease_clock: LeaseClock::Database,
            channel_cache: Arc::default(),
            writer: Arc::default(),
            lookups: Arc::default(),
            change_signal: Arc::new(tokio::sync::watch::Sender::new(0)),
            url,
        })
    }

    /// The same store reading time from `clock` (tests move time by hand),
    /// for its leases too ([`LeaseClock::Instance`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.lease_clock = LeaseClock::Instance;
        self
    }

    /// The same store ending and comparing leases on `lease_clock`.
    pub fn with_lease_clock(mut self, lease_clock: LeaseClock) -> Self {
        self.lease_clock = lease_clock;
        self
    }

    /// Where this store's lease times come from: the database's clock on
    /// PostgreSQL unless told otherwise; the instance's on SQLite (the host's
    /// clock, which is the database's).
    pub(crate) fn lease_clock(&self) -> LeaseClock {
        match self.pool.dialect() {
            crate::dialect::Dialect::Postgres => self.lease_clock,
            crate::dialect::Dialect::Sqlite => LeaseClock::Instance,
        }
    }

    /// The group-commit writer for sync requests.
    pub(crate) fn group_commit(&self) -> &GroupCommit {
        self.writer
            .get_or_init(|| start_group_commit(&self.writers))
    }

    /// The batched channel lookups of the webhook.
    pub(crate) fn group_lookup(&self) -> &GroupLookup {
        self.lookups
            .get_or_init(|| start_group_lookup(&self.readers))
    }

    /// Ends every sync and channel lease now, so that work a killed process
    /// held is taken up at once instead of after its lease runs out. Only for
    /// a process that knows it is alone on the database (SQLite, at startup).
    pub async fn expire_all_leases(&self) -> Result<usize, StoreError> {
        use crate::schema::calendar_sync_state as cs;
        use diesel::{ExpressionMethods as _, QueryDsl as _};
        let past = to_db(self.clock.now() - time::Duration::seconds(1));
        let expired = with_conn!(&self.pool, |conn| {
            let syncs = diesel::update(cs::table.filter(cs::lease_owner.is_not_null()))
                .set(cs::lease_expires_at.eq(Some(past)))
                .execute(conn)
                .await
                .map_err(crate::pool::query_error)?;
            let channels = diesel::update(cs::table.filter(cs::channel_lease_owner.is_not_null()))
                .set(cs::channel_lease_expires_at.eq(Some(past)))
                .execute(conn)
                .await
                .map_err(crate::pool::query_error)?;
            syncs + channels
        });
        Ok(expired)
    }

    /// The pool itself, for tests that hold several of its connections.
    #[cfg(any(test, feature = "test-support"))]
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The connection pool's size, idle and waiting counts (for `/metrics`).
    pub fn pool_status(&self) -> deadpool::Status {
        self.pool.status()
    }

    /// The SQL dialect of this store's backend.
    pub fn dialect(&self) -> crate::dialect::Dialect {
        self.pool.dialect()
    }

    /// Runs `sql`, a read returning one BIGINT column named `n` (the
    /// benchmarks' counters; never given outside input).
    pub async fn count(&self, sql: &str) -> Result<i64, StoreError> {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let count = with_conn!(&self.pool, |conn| {
            diesel::sql_query(sql)
                .get_result::<Count>(conn)
                .await
                .map_err(crate::pool::query_error)?
        });
        Ok(count.n)
    }

    /// Runs `sql`, a statement returning no rows (the benchmarks' set-up of
    /// their own databases; never given outside input).
    pub async fn execute_for_benchmark(&self, sql: &str) -> Result<(), StoreError> {
        with_conn!(&self.pool, |conn| {
            diesel::sql_query(sql)
                .execute(conn)
                .await
                .map_err(crate::pool::query_error)?
        });
        Ok(())
    }

    /// Migrates, then builds the store.
    pub async fn open(
        url: DatabaseUrl,
        encryption_key: Option<&str>,
        options: PoolOptions,
    ) -> anyhow::Result<Self> {
        let store = Self::new(url, encryption_key, options)?;
        crate::migrations::run_pending(&store.url).await?;
        // Start the group-commit writers on this (the main) runtime. On the
        // HTTP worker's runtime instead (no thread crossed per request) it
        // measured no better: PostgreSQL 26.8k against 21.8k req/s on average
        // over six alternating pairs but within the machine's noise, and
        // SQLite's p99 at 2,000 req/s 13-15 ms against 4.7-4.8 ms
        // (`docs/benchmarks.md`).
        store.group_commit();
        store.group_lookup();
        Ok(store)
    }

    /// The database this store uses.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_conn!(&self.pool, |conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .await
                .map_err(crate::pool::query_error)?;
        });
        Ok(())
    }
}

#[async_trait]
impl sync_domain::ports::WebhookStore for Store {
    async fn find_channel(
        &self,
        channel_id: &sync_domain::ChannelId,
    ) -> Result<Option<sync_domain::ChannelRecord>, StoreError> {
        self.find_channel_record(channel_id).await
    }

    async fn find_channel_uncached(
        &self,
        channel_id: &sync_domain::ChannelId,
    ) -> Result<Option<sync_domain::ChannelRecord>, StoreError> {
        self.channel_cache.forget(channel_id);
        self.find_channel_record(channel_id).await
    }

    async fn record_sync_request(
        &self,
        request: &sync_domain::ports::SyncRequest,
    ) -> Result<sync_domain::ports::RecordOutcome, StoreError> {
        self.record_request(request).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Store::ping(self).await
    }
}
