//! `chronos-server keys rotate` (SPEC section 8): re-encrypts every stored
//! credential under `encryption_key`, so retired keys can then be dropped.

use crate::config::Config;
use clap::Subcommand;

/// Credentials keys.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every stored credential under `encryption_key` (values sealed
    /// under a key in `retired_encryption_keys` or before key ids included).
    Rotate,
}

/// Runs a `keys` command; returns what to print.
pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<String> {
    match command {
        KeysCommand::Rotate => {
            // Opening checks that every stored credential decrypts with the
            // configured keys; like every CLI command, it creates no database.
            let store = crate::preflight::open_existing_store(config).await?;
            let report = store.rotate_keys().await?;
            Ok(format!(
                "re-encrypted {} credential(s) under encryption_key; {} already under it",
                report.rotated, report.current
            ))
        }
    }
}
