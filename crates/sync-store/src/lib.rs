//! Chronos calendar sync: persistence.
//!
//! One [`Store`] over PostgreSQL or SQLite, chosen at run time from the URL
//! ([`DatabaseUrl`]), built on Diesel, diesel-async and deadpool. It implements
//! the domain's ports ([`sync_domain::ports::WebhookStore`],
//! [`sync_domain::ports::CredentialStore`]); query code is written once and
//! compiled for both backends (see [`pool`]); PostgreSQL connections use TLS
//! as libpq's `sslmode` says ([`tls`]). Migrations are embedded
//! ([`migrations`]); credentials are encrypted at rest ([`crypto`]). The
//! change feed ([`changes`]) is written in the same transactions as the mirror.
//! The domain's enums are bound and loaded as themselves in their text
//! columns (`columns::Stored`, `FromSql`/`ToSql` for both backends).

pub mod admin;
pub mod calendars;
pub mod changes;
mod channel_cache;
pub mod channels;
pub mod columns;
pub mod credentials;
pub mod crypto;
pub mod dialect;
pub mod events;
mod group_commit;
pub mod health;
pub mod keys;
pub mod liveness;
pub mod migrations;
pub mod pool;
mod schema;
mod store;
pub mod sync_queue;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod timestamps;
pub mod tls;
mod webhook;

pub use dialect::LeaseClock;
pub use pool::{DatabaseUrl, DatabaseUrlError, DbPool, PoolOptions};
pub use store::Store;
