//! Chronos benchmarks: load against the real `chronos-server` binary, next to a
//! minimal actix-web ceiling, with figures printed for `docs/benchmarks.md`.
//!
//! - `webhook`: the webhook load benchmark (issue 7), [`webhook`];
//! - `ceiling-server`: the minimal `{}` endpoint the figures are compared to, [`ceiling`].
//!
//! Shared parts: the load generator and latency histogram ([`load`]), the
//! server child process ([`server`]) and the seeded databases ([`database`]).

mod ceiling;
mod database;
mod load;
mod server;
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
    }
}
