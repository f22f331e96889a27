//! `chronos-server`: see `chronos-server --help`.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = chronos_server::cli::Cli::parse();
    chronos_server::cli::run(cli)
}
