//! Chronos benchmarks: load against the real `chronos-server` binary, next to a
//! minimal actix-web ceiling, with figures printed for `docs/benchmarks.md`.
//!
//! - `webhook`: the webhook load benchmark (issue 7), [`webhook`];
//! - `ceiling-server`: the minimal `{}` endpoint the figures are compared to, [`ceiling`];
//! - `sync`: events applied per second by a full sync from a fake Google, [`sync`];
//! - `coalesce`: syncs per calendar after a burst of notifications, [`coalesce`];
//! - `feed-latency`: notification to change feed entry seen by a long poll, [`feed`].
//!
//! Shared parts: the load generator and latency histogram ([`load`]), the
//! server child process ([`server`]) and the seeded databases ([`database`]).

mod ceiling;
mod coalesce;
mod cpu;
mod database;
mod feed;
mod load;
mod server;
mod sync;
mod webhook;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;

/// `chronos-bench`: load benchmarks for Chronos.
#[derive(Debug, Parser)]
#[command(name = "chronos-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The webhook load benchmark: ceiling, PostgreSQL and SQLite.
    Webhook(webhook::WebhookArgs),
    /// The sync benchmark: a full sync of a large calendar from a fake Google.
    Sync(sync::SyncArgs),
    /// The coalescing figure: syncs per calendar after a burst of notifications.
    Coalesce(coalesce::CoalesceArgs),
    /// The change feed: notification to entry seen by a long-polling consumer.
    FeedLatency(feed::FeedArgs),
    /// Serves the minimal actix-web endpoint (`{}`, no database) on `--bind`.
    CeilingServer {
        /// Address to listen on.
        #[arg(long)]
        bind: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::CeilingServer { bind } => ceiling::serve(bind),
        Command::Webhook(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads.max(1))
            .enable_all()
            .build()?
            .block_on(webhook::run(args)),
        Command::Sync(args) => runtime()?.block_on(sync::run(args)),
        Command::Coalesce(args) => runtime()?.block_on(coalesce::run(args)),
        Command::FeedLatency(args) => runtime()?.block_on(feed::run(args)),
    }
}

/// The runtime of the sync and coalesce benchmarks (the fake Google serves on its own threads).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
