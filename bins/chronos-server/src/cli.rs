//! The command line (SPEC section 8).

use crate::app::Application;
use crate::config::Config;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Chronos calendar sync: mirrors Google Calendars in real time.
#[derive(Debug, Parser)]
#[command(name = "chronos-server", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: `serve`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run pending migrations, serve HTTP and run the workers (the default).
    Serve,
    /// Run pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Operate on connected calendars (the internal API's verbs, on the database directly).
    Calendars {
        #[command(subcommand)]
        command: crate::operator::CalendarsCommand,
    },
    /// Follow the change feed.
    Changes {
        #[command(subcommand)]
        command: crate::tail::ChangesCommand,
    },
}

/// Runs a command; errors are printed as one line and give exit code 1.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("chronos-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config = command {
        for (key, value) in config.redacted_lines() {
            println!("{key} = {value}");
        }
        return ExitCode::SUCCESS;
    }
    let target = match command {
        Command::Serve => crate::telemetry::LogTarget::Stdout,
        _ => crate::telemetry::LogTarget::Stderr,
    };
    crate::telemetry::init(config.log_format, target);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chronos-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => Application::build(config).await?.run_until_stopped().await,
            Command::Migrate => {
                let applied = sync_store::migrations::run_pending(&config.database_url).await?;
                println!(
                    "applied {} migration(s) to {}",
                    applied.len(),
                    config.database_url.redacted()
                );
                Ok(())
            }
            Command::Config => Ok(()),
            Command::Calendars { command } => {
                println!("{}", crate::operator::run(&config, command).await?);
                Ok(())
            }
            Command::Changes { command } => crate::tail::run(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chronos-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
