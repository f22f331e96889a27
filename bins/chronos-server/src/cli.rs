//! The command line (SPEC section 8).

use crate::app::Application;
use crate::config::RawConfig;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `chronos-server --version`: the version and the git commit built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHRONOS_GIT_COMMIT"),
    ")"
);

/// Chronos calendar sync: mirrors Google Calendars in real time.
#[derive(Debug, Parser)]
#[command(name = "chronos-server", version = VERSION, about)]
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
    /// Print the effective configuration as TOML (each value's source as a
    /// comment, secrets redacted), or with `--check` run serve's checks.
    Config {
        /// Run every check `serve` makes before serving; exit 1 naming what fails.
        #[arg(long)]
        check: bool,
    },
    /// Operate on connected calendars (the internal API's verbs, on the database directly).
    Calendars {
        #[command(subcommand)]
        command: crate::operator::CalendarsCommand,
    },
    /// Credentials keys: `keys rotate` re-encrypts everything under `encryption_key`.
    Keys {
        #[command(subcommand)]
        command: crate::keys::KeysCommand,
    },
    /// Manage users' Google credentials.
    Users {
        #[command(subcommand)]
        command: crate::operator::UsersCommand,
    },
    /// Follow the change feed.
    Changes {
        #[command(subcommand)]
        command: crate::tail::ChangesCommand,
    },
}

/// Writes a command's answer to stdout. A reader that went away (`| head -1`)
/// is not an error: `print!` would panic there.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Runs a command; errors are printed as one line and give exit code 1.
pub fn run(cli: Cli) -> ExitCode {
    let (config, sources) = match RawConfig::load_with_sources()
        .and_then(|(raw, sources)| raw.validate().map(|config| (config, sources)))
    {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("chronos-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config { check: false } = command {
        out(&config.to_toml(&sources));
        return ExitCode::SUCCESS;
    }
    let target = match command {
        Command::Serve => crate::telemetry::LogTarget::Stdout,
        _ => crate::telemetry::LogTarget::Stderr,
    };
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
    // Only the server exports traces; the other commands are short and local.
    let traces = match command {
        Command::Serve => match crate::telemetry::traces_from_env(runtime.handle()) {
            Ok(traces) => traces,
            Err(e) => {
                eprintln!("chronos-server: configuration error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let telemetry = crate::telemetry::init(config.log_format, target, traces);
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => Application::build(config).await?.run_until_stopped().await,
            Command::Migrate => {
                let applied = sync_store::migrations::run_pending(&config.database_url).await?;
                out(&format!(
                    "applied {} migration(s) to {}\n",
                    applied.len(),
                    config.database_url.redacted()
                ));
                Ok(())
            }
            Command::Config { check: false } => Ok(()),
            Command::Config { check: true } => {
                let (report, passed) =
                    crate::preflight::report(&crate::preflight::run_checks(&config).await);
                out(&report);
                if passed {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("config --check failed"))
                }
            }
            Command::Calendars { command } => {
                out(&format!(
                    "{}\n",
                    crate::operator::run(&config, command).await?
                ));
                Ok(())
            }
            Command::Keys { command } => {
                println!("{}", crate::keys::run(&config, command).await?);
                Ok(())
            }
            Command::Users { command } => {
                out(&format!(
                    "{}\n",
                    crate::operator::run_users(&config, command).await?
                ));
                Ok(())
            }
            Command::Changes { command } => crate::tail::run(&config, command).await,
        }
    });
    // The runtime still runs: the last spans go out before the process ends.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chronos-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
