//! Instance liveness, so a dead owner's claims are taken over in seconds
//! instead of after their lease (issue 10).
//!
//! On PostgreSQL each serving instance registers in `chronos_instances` and
//! holds a session-level advisory lock on its own key, on a connection of its
//! own. The server releases that lock the moment the connection closes (the
//! process died, was killed, or lost its network), so any claim query can ask
//! [`crate::dialect::Dialect::owner_gone`] whether an owner is still there.
//! The lease stays as the backstop for an owner that is alive but stuck.
//! On SQLite one process owns the database; a starting server expires its
//! predecessor's leases once its port is bound (`Store::expire_all_leases`).

use crate::dialect::{INSTANCE_LOCK_NAMESPACE, TAKE_INSTANCE_LOCK};
use crate::pool::{DbPool, checkout, query_error};
use crate::schema::chronos_instances as ci;
use crate::store::Store;
use crate::timestamps::to_db;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Integer};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use sync_domain::ports::StoreError;

/// How often the lock's connection is checked (and re-established if lost).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// This instance's liveness lock; released when dropped (or the process dies).
#[derive(Debug)]
pub struct LivenessLock {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LivenessLock {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Takes the advisory lock on `key` on `conn`; `false` if someone else holds it.
async fn try_lock(conn: &mut AsyncPgConnection, key: i32) -> Result<bool, diesel::result::Error> {
    let row: Locked = diesel::sql_query(TAKE_INSTANCE_LOCK)
        .bind::<Integer, _>(INSTANCE_LOCK_NAMESPACE)
        .bind::<Integer, _>(key)
        .get_result(conn)
        .await?;
    Ok(row.locked)
}

/// A connection of the pool's kind taken out of the pool for good, so the
/// lock lives exactly as long as this instance's hold on it.
async fn own_connection(
    pool: &diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>,
) -> Result<AsyncPgConnection, StoreError> {
    let pooled = checkout(pool).await?;
    Ok(diesel_async::pooled_connection::deadpool::Object::take(
        pooled,
    ))
}

/// A positive 31-bit key derived from the instance id.
fn key_of(instance_id: &str) -> i32 {
    let hash = instance_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::try_from(hash & 0x7fff_ffff).unwrap_or(1)
}

impl Store {
    /// Registers `instance_id` as a live instance and holds its liveness lock
    /// until the returned guard is dropped. A no-op on SQLite.
    pub async fn hold_instance_lock(&self, instance_id: &str) -> Result<LivenessLock, StoreError> {
        // Dispatch on the connection type (one of the places listed in
        // `dialect.rs`): the lock lives on a PostgreSQL connection of its own.
        let DbPool::Postgres(pool) = &self.pool else {
            return Ok(LivenessLock { task: None });
        };
        let mut conn = own_connection(pool).await?;
        let mut key = key_of(instance_id);
        // Another live instance may hash to the same key: take the next free one.
        let mut attempts = 0;
        while !try_lock(&mut conn, key).await.map_err(query_error)? {
            attempts += 1;
            if attempts > 64 {
                return Err(StoreError::Query("no free instance lock key".into()));
            }
            key = if key == i32::MAX { 1 } else { key + 1 };
        }
        let now = to_db(self.clock.now());
        diesel::insert_into(ci::table)
            .values((
                ci::instance_id.eq(instance_id),
                ci::lock_key.eq(i64::from(key)),
                ci::started_at.eq(now),
            ))
            .on_conflict(ci::instance_id)
            .do_update()
            .set(ci::lock_key.eq(i64::from(key)))
            .execute(&mut conn)
            .await
            .map_err(query_error)?;
        // Forget dead instances that own nothing any more.
        let forget = format!(
            "DELETE FROM chronos_instances WHERE instance_id <> $1 AND {} \
             AND NOT EXISTS (SELECT 1 FROM calendar_sync_state s \
               WHERE s.lease_owner = chronos_instances.instance_id \
               OR s.channel_lease_owner = chronos_instances.instance_id)",
            self.dialect().owner_gone("chronos_instances.instance_id")
        );
        diesel::sql_query(forget)
            .bind::<diesel::sql_types::Text, _>(instance_id)
            .execute(&mut conn)
            .await
            .map_err(query_error)?;
        let pool = pool.clone();
        let task = tokio::spawn(async move {
            let mut conn = Some(conn);
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let alive = match conn.as_mut() {
                    Some(c) => diesel::sql_query("SELECT 1").execute(c).await.is_ok(),
                    None => false,
                };
                if alive {
                    continue;
                }
                // The session (and with it the lock) is gone: our claims may be
                // taken over; fenced writes keep that safe. Take the lock again.
                conn = None;
                if let Ok(mut fresh) = own_connection(&pool).await {
                    match try_lock(&mut fresh, key).await {
                        Ok(true) => {
                            tracing::warn!(
                                "instance liveness lock re-acquired on a new connection"
                            );
                            conn = Some(fresh);
                        }
                        Ok(false) => {
                            tracing::error!("instance liveness lock taken by another session")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "re-acquiring the instance liveness lock failed")
                        }
                    }
                }
            }
        });
        Ok(LivenessLock { task: Some(task) })
    }
}
