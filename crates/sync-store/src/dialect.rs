//! What differs between the two backends in hand-written SQL, in one place:
//! the placeholder style, how many group-commit batches are written at once,
//! how a batch joins its per-row lookups, the row-lock clause of a claim (as text, or wrapped
//! around a Diesel query with [`Dialect::skip_locked`]), the input of a
//! set-based batch, and how a dead lease owner is recognised (with the
//! instance lock it looks for). Chosen with the pool
//! ([`crate::DbPool::dialect`]); query modules ask it instead of matching on
//! the pool. A new difference of SQL text goes here, as a method.
//!
//! Where the two backends need different *connection types* (Diesel's typed
//! connections differ, so one body cannot serve both), the code matches on
//! the pool, and only in these places:
//!
//! - `pool::with_conn!`: binds a connection of either backend and compiles
//!   one query body for both (every other query goes through it);
//! - `webhook::write_batch` and `webhook::lookup_batch`: PostgreSQL binds a
//!   batch's input columns as typed arrays into one prepared statement
//!   (`PostgresBatch`), SQLite binds them row by row (`sqlite_batch`; the
//!   write runs a check and a multi-row `INSERT` in a transaction on its
//!   writer connection);
//! - `Store::hold_instance_lock` (`liveness.rs`): PostgreSQL's session
//!   advisory lock on a connection of its own; nothing on SQLite;
//! - `Store::listen_for_changes` (`changes.rs`): PostgreSQL's `LISTEN`;
//!   nothing on SQLite, whose writers are in-process.
//!
//! A new one is added to this list.

use diesel::backend::Backend;
use diesel::dsl::sql;
use diesel::expression::{SqlLiteral, UncheckedBind};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Nullable, Timestamp};
use time::PrimitiveDateTime;

/// The advisory-lock namespace (first key of `pg_try_advisory_lock(int, int)`)
/// under which each live instance holds its own lock ("Chro").
pub(crate) const INSTANCE_LOCK_NAMESPACE: i32 = 0x4368_726f;

/// PostgreSQL: takes an instance's liveness lock, `($1, $2)` =
/// ([`INSTANCE_LOCK_NAMESPACE`], its key), returning `locked`. The two-key
/// form is what [`Dialect::owner_gone`] looks for (`objsubid = 2`).
pub(crate) const TAKE_INSTANCE_LOCK: &str = "SELECT pg_try_advisory_lock($1, $2) AS locked";

/// Where a batch's input arrays go in [`Dialect::batch_input`]'s PostgreSQL
/// form; the statement that binds them replaces it.
pub(crate) const BATCH_ARRAYS: &str = "$arrays";

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

    /// How many group-commit batches are written at once (pipelining): up to
    /// [`crate::group_commit::POSTGRES_IN_FLIGHT`] on PostgreSQL, each on its
    /// own connection; one on SQLite, its one writer connection.
    pub(crate) fn batches_in_flight(self) -> usize {
        match self {
            Self::Postgres => crate::group_commit::POSTGRES_IN_FLIGHT,
            Self::Sqlite => 1,
        }
    }

    /// `query` (a Diesel select) followed by [`Self::skip_locked_of`]`(table)`.
    pub(crate) fn skip_locked<Q>(self, query: Q, table: &str) -> SkipLocked<Q> {
        SkipLocked {
            query,
            clause: self.skip_locked_of(table),
        }
    }

    /// The rows of a set-based batch of `rows` rows of `columns` values each,
    /// as a query: on PostgreSQL one array per column (`unnest`, bound where
    /// [`BATCH_ARRAYS`] stands), on SQLite a multi-row `VALUES` of numbered
    /// placeholders, row by row. Either way one statement whatever the size.
    pub(crate) fn batch_input(self, columns: usize, rows: usize) -> String {
        match self {
            Self::Postgres => format!("SELECT * FROM unnest({BATCH_ARRAYS})"),
            Self::Sqlite => {
                let values: Vec<String> = (0..rows)
                    .map(|row| {
                        let binds: Vec<String> = (1..=columns)
                            .map(|column| format!("?{}", row * columns + column))
                            .collect();
                        format!("({})", binds.join(", "))
                    })
                    .collect();
                format!("VALUES {}", values.join(", "))
            }
        }
    }

    /// The statement that takes the change feed's position lock for the rest
    /// of the transaction and queues its wake-up (`docs/change-feed.md`): on
    /// PostgreSQL a transaction-scoped advisory lock and a `NOTIFY` delivered
    /// at commit; none on SQLite, whose one writer commits in position order
    /// already and whose long polls are woken in-process.
    pub(crate) fn position_lock_sql(self) -> Option<String> {
        use crate::changes::{NOTIFY_CHANNEL, POSITION_LOCK};
        match self {
            Self::Postgres => Some(format!(
                "SELECT pg_advisory_xact_lock({POSITION_LOCK}), pg_notify('{NOTIFY_CHANNEL}', '')"
            )),
            Self::Sqlite => None,
        }
    }

    /// A `LEFT JOIN` of the one row of `table` (as `alias`) that `on` names by
    /// a unique key, for a batch's per-row checks. On PostgreSQL a `LATERAL`
    /// sub-query with `LIMIT 1`, which the planner cannot flatten, so each
    /// input row is one index lookup whatever the table's size: as a plain
    /// join, a prepared batch's generic plan (it assumes 10 input rows)
    /// hashed whole tables of a few thousand rows on every call, measured at
    /// twice the cost (`docs/benchmarks.md`, eighth session). SQLite's planner only loops over
    /// index lookups, so a plain join.
    pub(crate) fn keyed_left_join(self, table: &str, alias: &str, on: &str) -> String {
        match self {
            Self::Postgres => format!(
                "LEFT JOIN LATERAL (SELECT * FROM {table} {alias} WHERE {on} LIMIT 1) {alias} ON TRUE"
            ),
            Self::Sqlite => format!("LEFT JOIN {table} {alias} ON {on}"),
        }
    }

    /// A condition true when the lease owner named by `column` is known to be
    /// dead: on PostgreSQL, a registered instance whose session advisory lock
    /// is gone (its connection closed, e.g. the process was killed); on
    /// SQLite never (one process per database: a starting server expires its
    /// predecessor's leases once its port is bound).
    ///
    /// `pg_locks` copies the whole lock table (taking every lock partition's
    /// lock) each time it is read, so it is asked as an uncorrelated `NOT IN`,
    /// which PostgreSQL hashes once per statement however the query around it
    /// is planned. (The correlated `NOT EXISTS` before it was also read once in
    /// the plans `EXPLAIN` showed; this is a guard, not a measured gain.)
    pub fn owner_gone(self, column: &str) -> String {
        match self {
            Self::Postgres => format!(
                "EXISTS (SELECT 1 FROM chronos_instances ci WHERE ci.instance_id = {column} \
                 AND ci.lock_key::oid NOT IN (SELECT l.objid FROM pg_locks l \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objid IS NOT NULL \
                 AND l.classid = {INSTANCE_LOCK_NAMESPACE} AND l.objsubid = 2 \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())))"
            ),
            Self::Sqlite => "(1 = 0)".to_owned(),
        }
    }
}

/// A select with its backend's claim lock clause ([`Dialect::skip_locked`]).
#[derive(Debug)]
pub(crate) struct SkipLocked<Q> {
    query: Q,
    clause: String,
}

impl<Q: Query> Query for SkipLocked<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> QueryId for SkipLocked<Q> {
    type QueryId = ();
    // Prepared statements are then cached by their text, which the clause is part of.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for SkipLocked<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(&self.clause);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_batch_numbers_its_placeholders_row_by_row() {
        assert_eq!(
            Dialect::Sqlite.batch_input(2, 2),
            "VALUES (?1, ?2), (?3, ?4)"
        );
    }

    #[test]
    fn a_postgres_batch_unnests_its_arrays() {
        assert_eq!(
            Dialect::Postgres.batch_input(4, 3),
            format!("SELECT * FROM unnest({BATCH_ARRAYS})")
        );
    }

    #[test]
    fn only_postgres_locks_claimed_rows() {
        assert_eq!(
            Dialect::Postgres.skip_locked_of("cs"),
            " FOR UPDATE OF cs SKIP LOCKED"
        );
        assert_eq!(Dialect::Sqlite.skip_locked_of("cs"), "");
    }
}
