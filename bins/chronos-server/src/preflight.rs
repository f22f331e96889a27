//! What `serve` checks before serving, what it says is switched off, and how
//! the other commands open the database (never creating one).

use crate::config::Config;
use sync_store::crypto::{resolve_key, sqlite_key_path};
use sync_store::{DatabaseUrl, Store};

/// One startup line per feature that the configuration switches off, each
/// naming the key that switches it on. (`webhook_base_url` is said by the
/// channel worker, which is what skips registration.)
pub fn switched_off(config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    if config.admin_token.is_none() {
        lines.push(
            "admin_token is unset: the internal API (/internal/*) is off and answers 404; set admin_token (CHRONOS_ADMIN_TOKEN, 16+ characters) to turn it on"
                .to_owned(),
        );
    }
    let missing = google_settings_missing(config);
    if !missing.is_empty() {
        lines.push(format!(
            "{} unset: calls to Google will fail (no sync, no channel) until set ({})",
            describe(&missing),
            missing
                .iter()
                .map(|k| format!("CHRONOS_{}", k.to_ascii_uppercase()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines
}

/// `google_client_id` and `google_client_secret`, those of them not set.
pub fn google_settings_missing(config: &Config) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if config.google_client_id.is_none() {
        missing.push("google_client_id");
    }
    if config.google_client_secret.is_none() {
        missing.push("google_client_secret");
    }
    missing
}

fn describe(keys: &[&str]) -> String {
    match keys {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(" and ")),
    }
}

/// Opens the configured database for a command other than `serve`/`migrate`:
/// it must exist already. Pending migrations are applied, as `serve` would.
pub async fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    if let DatabaseUrl::Sqlite(path) = &config.database_url
        && !path.exists()
    {
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        anyhow::bail!(
            "no database at {} (database_url = {}): this command opens an existing database only; run it where the server runs, or point it at the server's database with CHRONOS_DATABASE_URL (or database_url in chronos.toml); `chronos-server migrate` creates one",
            shown.display(),
            config.database_url.redacted()
        );
    }
    crate::app::open_store(config).await
}

/// One check of `config --check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, naming the key it concerns.
    pub name: String,
    /// `Ok(what was found)` or `Err(why it fails)`.
    pub outcome: Result<String, String>,
}

fn check(name: &str, outcome: Result<String, String>) -> Check {
    Check {
        name: name.to_owned(),
        outcome,
    }
}

/// Every check `serve` makes before serving, without changing anything:
/// the key, the database (reachable, migrations current, not served by
/// another process on SQLite), the Google settings, the `OTEL_*` variables
/// of the trace exporter, the listen address.
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![check("configuration", Ok("every key is valid".into()))];
    let url = &config.database_url;
    let sqlite_path = match url {
        DatabaseUrl::Sqlite(path) => Some(path.clone()),
        DatabaseUrl::Postgres(_) => None,
    };
    let exists = sqlite_path.as_ref().is_none_or(|p| p.exists());

    let key = config.encryption_key.as_ref().map(|k| k.expose());
    checks.push(check(
        "encryption_key",
        match (&sqlite_path, key) {
            (Some(path), None) if !sqlite_key_path(path).exists() => Ok(format!(
                "unset; serve creates the key file {}",
                sqlite_key_path(path).display()
            )),
            (Some(path), None) => resolve_key(None, url)
                .map(|_| format!("from the key file {}", sqlite_key_path(path).display()))
                .map_err(|e| format!("{e:#}")),
            (_, key) => resolve_key(key, url)
                .map(|_| "set".to_owned())
                .map_err(|e| format!("{e:#}")),
        },
    ));

    if exists {
        checks.push(check(
            "database_url",
            match sync_store::migrations::pending(url).await {
                Ok(pending) if pending.is_empty() => {
                    Ok(format!("{} reachable, migrations current", url.redacted()))
                }
                Ok(pending) => Ok(format!(
                    "{} reachable; serve applies {} pending migration(s)",
                    url.redacted(),
                    pending.len()
                )),
                Err(e) => Err(format!("{}: {e:#}", url.redacted())),
            },
        ));
    } else {
        checks.push(check(
            "database_url",
            Ok(format!(
                "{} does not exist yet; serve creates it",
                url.redacted()
            )),
        ));
    }
    // Opening a store would create a missing key file: a check changes nothing.
    let key_file_missing = sqlite_path
        .as_ref()
        .is_some_and(|path| key.is_none() && !sqlite_key_path(path).exists());
    if exists
        && !key_file_missing
        && matches!(sync_store::migrations::pending(url).await, Ok(p) if p.is_empty())
    {
        checks.push(check(
            "encryption_key (matches the stored credentials)",
            key_matches_database(config).await,
        ));
    }
    if let Some(path) = sqlite_path.as_ref().filter(|_| exists) {
        checks.push(check(
            "database_url (one server per SQLite database)",
            crate::instance_lock::InstanceLock::acquire(path)
                .map(|_| "no other server holds it".to_owned())
                .map_err(|e| e.to_string()),
        ));
    }

    let missing = google_settings_missing(config);
    checks.push(check(
        "google_client_id, google_client_secret",
        if missing.is_empty() {
            Ok("set".to_owned())
        } else {
            Err(format!(
                "{} unset: calls to Google would fail",
                describe(&missing)
            ))
        },
    ));
    checks.push(check(
        "OTEL_* (traces)",
        crate::telemetry::describe_trace_export(),
    ));
    checks.push(check(
        "bind",
        std::net::TcpListener::bind(config.bind)
            .map(|_| format!("{} is free", config.bind))
            .map_err(|e| format!("cannot listen on {}: {e}", config.bind)),
    ));
    checks
}

/// Whether the configured keys open the stored credentials (without migrating).
async fn key_matches_database(config: &Config) -> Result<String, String> {
    let key = config.encryption_key.as_ref().map(|k| k.expose());
    let store = Store::new(config.database_url.clone(), key, Default::default())
        .map_err(|e| format!("{e:#}"))?
        .with_retired_keys(&config.retired_encryption_keys);
    store
        .check_keys()
        .await
        .map(|()| "every stored credential decrypts".to_owned())
        .map_err(|e| e.to_string())
}

/// The report of `config --check`: one line per check, then a summary.
pub fn report(checks: &[Check]) -> (String, bool) {
    let mut out = String::new();
    for c in checks {
        match &c.outcome {
            Ok(found) => out.push_str(&format!("ok      {}: {found}\n", c.name)),
            Err(why) => out.push_str(&format!("FAILED  {}: {why}\n", c.name)),
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome.is_err())
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        out.push_str("all checks passed: serve would start\n");
    } else {
        out.push_str(&format!(
            "{} check(s) failed: {}\n",
            failed.len(),
            failed.join("; ")
        ));
    }
    (out, failed.is_empty())
}
