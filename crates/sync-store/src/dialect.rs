//! What differs between the two backends in hand-written SQL, in one place:
//! the placeholder style, the row-lock clause of a claim, the input of a
//! set-based batch, and how a dead lease owner is recognised. Chosen with the
//! pool ([`crate::DbPool::dialect`]); query modules ask it instead of matching
//! on the pool.

use diesel::dsl::sql;
use diesel::expression::{SqlLiteral, UncheckedBind};
use diesel::sql_types::{Nullable, Timestamp};
use time::PrimitiveDateTime;

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

/// Where lease times come from.
///
/// Leases are ended and compared on the database's clock, so instances whose
/// clocks disagree still agree on when a lease runs out: PostgreSQL's `now()`.
/// SQLite has no server of its own: the one process that opens the file reads
/// the host's clock, which is the database's. A store given a clock of its
/// own ([`crate::Store::with_clock`], tests that move time by hand) keeps its
/// leases on that clock.
///
/// Every statement binds the instance's times either way (a lease's length is
/// `until - now` of the instance), so the statement's binds do not depend on
/// the clock; only its text does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseClock {
    /// The database server's clock (PostgreSQL's `now()`).
    #[default]
    Database,
    /// The instance's clock, bound as a parameter.
    Instance,
}

/// PostgreSQL's clock in the form of the `TIMESTAMP` (UTC) columns.
const POSTGRES_NOW: &str = "(now() AT TIME ZONE 'UTC')";

impl LeaseClock {
    /// SQL for "now" in a lease comparison; `now` is the placeholder holding
    /// the instance's time.
    pub(crate) fn now_sql(self, now: &str) -> String {
        match self {
            Self::Database => format!("COALESCE({POSTGRES_NOW}, {now})"),
            Self::Instance => format!("COALESCE({now}, {now})"),
        }
    }

    /// SQL for the end of a lease that the instance computed as `until` at
    /// its time `now` (both placeholders): as long after the database's now.
    pub(crate) fn until_sql(self, until: &str, now: &str) -> String {
        match self {
            Self::Database => format!("({POSTGRES_NOW} + ({until} - {now}))"),
            Self::Instance => format!("COALESCE({until}, {now})"),
        }
    }

    /// [`Self::now_sql`] as an expression of Diesel's DSL.
    pub(crate) fn now_expr(self, now: PrimitiveDateTime) -> LeaseNow {
        let (before, after) = match self {
            Self::Database => ("COALESCE(now() AT TIME ZONE 'UTC', ", ")"),
            Self::Instance => ("COALESCE(NULL, ", ")"),
        };
        sql::<Nullable<Timestamp>>(before)
            .bind::<Timestamp, _>(now)
            .sql(after)
    }

    /// [`Self::until_sql`] as an expression of Diesel's DSL.
    pub(crate) fn until_expr(self, until: PrimitiveDateTime, now: PrimitiveDateTime) -> LeaseUntil {
        let (before, middle, after) = match self {
            Self::Database => ("((now() AT TIME ZONE 'UTC') + (", " - ", "))"),
            Self::Instance => ("COALESCE(", ", ", ")"),
        };
        sql::<Nullable<Timestamp>>(before)
            .bind::<Timestamp, _>(until)
            .sql(middle)
            .bind::<Timestamp, _>(now)
            .sql(after)
    }
}

type Bound = diesel::dsl::AsExprOf<PrimitiveDateTime, Timestamp>;
/// The type of [`LeaseClock::now_expr`].
pub(crate) type LeaseNow =
    SqlLiteral<Nullable<Timestamp>, UncheckedBind<SqlLiteral<Nullable<Timestamp>>, Bound>>;
/// The type of [`LeaseClock::until_expr`].
pub(crate) type LeaseUntil = SqlLiteral<
    Nullable<Timestamp>,
    UncheckedBind<
        SqlLiteral<Nullable<Timestamp>, UncheckedBind<SqlLiteral<Nullable<Timestamp>>, Bound>>,
        Bound,
    >,
>;
