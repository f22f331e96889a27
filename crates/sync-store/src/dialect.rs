//! What differs between the two backends in hand-written SQL, in one place:
//! the placeholder style, the row-lock clause of a claim, the input of a
//! set-based batch, and how a dead lease owner is recognised. Chosen with the
//! pool ([`crate::DbPool::dialect`]); query modules ask it instead of matching
//! on the pool.

/// The advisory-lock namespace (first key of `pg_try_advisory_lock(int, int)`)
/// under which each live instance holds its own lock ("Chro").
pub(crate) const INSTANCE_LOCK_NAMESPACE: i32 = 0x4368_726f;

/// The SQL dialect of the store's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// `sql` written with PostgreSQL's `$n` placeholders, in this backend's
    /// form. SQLite would read `$n` as a *named* parameter, whose lookup slows
    /// statement preparation badly for a page's 22,500 binds; `?n` is its
    /// numbered form.
    pub(crate) fn placeholders(self, sql: &str) -> String {
        match self {
            Self::Postgres => sql.to_owned(),
            Self::Sqlite => sql.replace('$', "?"),
        }
    }

    /// The lock clause of a claim's candidate query: row locks skipping those
    /// another instance holds on PostgreSQL; nothing on SQLite, whose one
    /// writer connection serialises writes.
    pub(crate) fn skip_locked_of(self, table: &str) -> String {
        match self {
            Self::Postgres => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
            Self::Sqlite => String::new(),
        }
    }

    /// A condition true when the lease owner named by `column` is known to be
    /// dead: on PostgreSQL, a registered instance whose session advisory lock
    /// is gone (its connection closed, e.g. the process was killed); on
    /// SQLite never (one process per database: a starting server expires its
    /// predecessor's leases once its port is bound).
    pub fn owner_gone(self, column: &str) -> String {
        match self {
            Self::Postgres => format!(
                "EXISTS (SELECT 1 FROM chronos_instances ci WHERE ci.instance_id = {column} \
                 AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' \
                 AND l.granted AND l.classid = {INSTANCE_LOCK_NAMESPACE} \
                 AND l.objid = ci.lock_key::oid AND l.objsubid = 2 \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))"
            ),
            Self::Sqlite => "(1 = 0)".to_owned(),
        }
    }
}
