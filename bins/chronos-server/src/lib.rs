//! Chronos calendar sync: the server.
//!
//! The only crate that knows every concrete type: it reads the configuration
//! ([`config`]), sets up logging ([`telemetry`]), wires the store, the Google
//! client and the HTTP layer together through the domain's traits ([`app`]),
//! runs the background workers ([`workers`]), exports Prometheus metrics
//! ([`metrics`]) and offers the operator's CLI ([`cli`], with the `calendars`
//! verbs in [`operator`] and `changes tail` in [`tail`]).

pub mod app;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod entropy;
pub mod instance_lock;
pub mod keys;
pub mod metrics;
pub mod operator;
pub mod preflight;
pub mod tail;
pub mod telemetry;
pub mod workers;
