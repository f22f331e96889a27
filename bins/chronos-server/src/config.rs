//! Configuration (SPEC section 4): defaults, then `chronos.toml` (or the file
//! named by `CHRONOS_CONFIG`), then environment variables `CHRONOS_<KEY>`, with
//! the unprefixed `WEBHOOK_BASE_URL` and `DATABASE_URL` honoured as well
//! (a `CHRONOS_`-prefixed variable wins over its unprefixed twin).

use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use sync_domain::redact::redact_url;
use sync_domain::schedule::CoalescingPolicy;
use sync_store::DatabaseUrl;
use sync_store::crypto::EncryptionKey;
use url::Url;

/// The file read when `CHRONOS_CONFIG` is unset.
pub const DEFAULT_CONFIG_FILE: &str = "chronos.toml";

/// The settings as written, before validation; `Debug` hides the secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RawConfig {
    pub database_url: String,
    #[serde(deserialize_with = "text_or_number")]
    pub bind: String,
    pub webhook_base_url: Option<String>,
    pub google_api_base_url: String,
    pub google_token_url: String,
    pub google_client_id: Option<String>,
    pub google_client_secret: Option<String>,
    pub admin_token: Option<String>,
    pub sync_debounce_ms: u64,
    pub sync_max_delay_ms: u64,
    pub poll_interval_secs: u64,
    pub channel_ttl_secs: u64,
    /// Hours a stopped channel's row is kept before it is deleted.
    pub stopped_channel_retention_hours: u64,
    pub log_format: String,
    pub encryption_key: Option<String>,
    pub metrics_bind: Option<String>,
    /// Comma-separated base64 keys that still decrypt (SPEC section 4).
    pub retired_encryption_keys: Option<String>,
    pub change_retention_hours: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite://chronos.db".into(),
            bind: "127.0.0.1:8080".into(),
            webhook_base_url: None,
            google_api_base_url: google_client::DEFAULT_API_BASE_URL.into(),
            google_token_url: google_client::DEFAULT_TOKEN_URL.into(),
            google_client_id: None,
            google_client_secret: None,
            admin_token: None,
            sync_debounce_ms: 1000,
            sync_max_delay_ms: 10_000,
            poll_interval_secs: 21_600,
            channel_ttl_secs: 604_800,
            stopped_channel_retention_hours: sync_domain::renewal::STOPPED_CHANNEL_RETENTION
                .as_secs()
                / 3600,
            log_format: "pretty".into(),
            encryption_key: None,
            metrics_bind: None,
            retired_encryption_keys: None,
            change_retention_hours: sync_domain::changes::DEFAULT_RETENTION_HOURS,
        }
    }
}

impl std::fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |value: &Option<String>| value.as_ref().map(|_| "***");
        // An unparsable URL may still hold a password: show none of it.
        let database_url = DatabaseUrl::parse(&self.database_url)
            .map_or_else(|_| "***".to_owned(), |url| url.redacted());
        f.debug_struct("RawConfig")
            .field("database_url", &database_url)
            .field("bind", &self.bind)
            .field(
                "webhook_base_url",
                &self.webhook_base_url.as_deref().map(redact_url),
            )
            .field(
                "google_api_base_url",
                &redact_url(&self.google_api_base_url),
            )
            .field("google_token_url", &redact_url(&self.google_token_url))
            .field("google_client_id", &self.google_client_id)
            .field("google_client_secret", &hidden(&self.google_client_secret))
            .field("admin_token", &hidden(&self.admin_token))
            .field("sync_debounce_ms", &self.sync_debounce_ms)
            .field("sync_max_delay_ms", &self.sync_max_delay_ms)
            .field("poll_interval_secs", &self.poll_interval_secs)
            .field("channel_ttl_secs", &self.channel_ttl_secs)
            .field(
                "stopped_channel_retention_hours",
                &self.stopped_channel_retention_hours,
            )
            .field("log_format", &self.log_format)
            .field("encryption_key", &hidden(&self.encryption_key))
            .field("metrics_bind", &self.metrics_bind)
            .field(
                "retired_encryption_keys",
                &hidden(&self.retired_encryption_keys),
            )
            .field("change_retention_hours", &self.change_retention_hours)
            .finish()
    }
}

/// Reads a value as text even when the environment made a number of it
/// (`CHRONOS_BIND=8085`), so validation can say what form is expected.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
    }
    Ok(match TextOrNumber::deserialize(d)? {
        TextOrNumber::Text(text) => text,
        TextOrNumber::Unsigned(n) => n.to_string(),
        TextOrNumber::Signed(n) => n.to_string(),
        TextOrNumber::Float(n) => n.to_string(),
    })
}

/// `pretty` or `json` logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret setting: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value; only where it must be used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Validated configuration; `Debug` shows [`Config::redacted_lines`].
#[derive(Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub bind: SocketAddr,
    pub webhook_base_url: Option<Url>,
    pub google_api_base_url: Url,
    pub google_token_url: Url,
    pub google_client_id: Option<String>,
    pub google_client_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub coalescing: CoalescingPolicy,
    pub poll_interval: Duration,
    pub channel_ttl: Duration,
    /// How long a stopped channel's row is kept before it is deleted.
    pub stopped_channel_retention: Duration,
    pub log_format: LogFormat,
    pub encryption_key: Option<Secret>,
    /// Where `GET /metrics` is served instead of on `bind`; unset: on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    /// Keys that still decrypt credentials sealed under them (`Debug` prints `***`).
    pub retired_encryption_keys: Vec<EncryptionKey>,
    /// How long change feed entries are kept (`change_retention_hours`).
    pub change_retention: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: `Url`'s `Debug` would print passwords.
        f.debug_map().entries(self.redacted_lines()).finish()
    }
}

/// Why configuration was refused: one line naming the key, never its secret value.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("`{key}`: {why}"))
}

impl RawConfig {
    /// Layers defaults, the config file and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with_sources().map(|(raw, _)| raw)
    }

    /// As [`Self::load`], with where each key's value came from.
    pub fn load_with_sources() -> Result<(Self, Sources), ConfigError> {
        let figment = Self::figment()?;
        let raw = Self::from_figment(&figment)?;
        Ok((raw, Sources::of(&figment)))
    }

    /// The layered providers: defaults, the file (unknown keys refused), the environment.
    fn figment() -> Result<Figment, ConfigError> {
        let named = std::env::var_os("CHRONOS_CONFIG").is_some();
        let file = std::env::var_os("CHRONOS_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        if named && !file.exists() {
            return Err(ConfigError(format!(
                "CHRONOS_CONFIG names {}, which does not exist",
                file.display()
            )));
        }
        check_file_keys(&file)?;
        Ok(Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::file(file))
            .merge(Env::raw().only(&["WEBHOOK_BASE_URL", "DATABASE_URL"]))
            .merge(Env::prefixed("CHRONOS_").ignore(&[
                "CONFIG",
                "TEST_DATABASE_URL",
                "REQUIRE_POSTGRES",
            ])))
    }

    /// Extracts from a prepared figment (tests build their own).
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        figment.extract().map_err(|e| {
            // Name the key as the table does (lower case), say where it came from; one line.
            let Some(first) = e.into_iter().next() else {
                return ConfigError("unreadable configuration".into());
            };
            let key = first.path.join(".").to_ascii_lowercase();
            let source = first
                .metadata
                .as_ref()
                .map_or_else(String::new, |m| format!(" (from {})", m.name));
            let why = format!("{}{source}", first.kind).replace('\n', " ");
            if key.is_empty() {
                ConfigError(why)
            } else {
                bad(&key, why)
            }
        })
    }

    /// Validates every key.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let database_url =
            DatabaseUrl::parse(&self.database_url).map_err(|e| bad("database_url", e))?;
        let bind = self.bind.parse::<SocketAddr>().map_err(|_| {
            bad(
                "bind",
                format!(
                    "`{}` is not of the form host:port (e.g. 127.0.0.1:8080)",
                    self.bind
                ),
            )
        })?;
        let metrics_bind = non_empty(self.metrics_bind)
            .map(|raw| {
                raw.parse::<SocketAddr>().map_err(|_| {
                    bad(
                        "metrics_bind",
                        format!("`{raw}` is not an address like 127.0.0.1:9090"),
                    )
                })
            })
            .transpose()?;
        let webhook_base_url = non_empty(self.webhook_base_url)
            .map(|raw| parse_http_url("webhook_base_url", &raw))
            .transpose()?;
        let google_api_base_url = parse_http_url("google_api_base_url", &self.google_api_base_url)?;
        let google_token_url = parse_http_url("google_token_url", &self.google_token_url)?;
        if self.sync_max_delay_ms < self.sync_debounce_ms {
            return Err(bad(
                "sync_max_delay_ms",
                "must not be smaller than sync_debounce_ms",
            ));
        }
        if self.poll_interval_secs == 0 {
            return Err(bad("poll_interval_secs", "must be at least 1"));
        }
        if self.channel_ttl_secs < 60 {
            return Err(bad("channel_ttl_secs", "must be at least 60"));
        }
        if self.change_retention_hours == 0 || self.change_retention_hours > 24 * 366 {
            return Err(bad(
                "change_retention_hours",
                "must be from 1 to 8784 (a year)",
            ));
        }
        // At most ten years: the duration is subtracted from the clock.
        if !(1..=87_600).contains(&self.stopped_channel_retention_hours) {
            return Err(bad(
                "stopped_channel_retention_hours",
                "must be between 1 and 87600",
            ));
        }
        let log_format = match self.log_format.to_ascii_lowercase().as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "log_format",
                    format!("`{other}` is neither `pretty` nor `json`"),
                ));
            }
        };
        let encryption_key = non_empty(self.encryption_key);
        if let Some(key) = &encryption_key {
            EncryptionKey::from_base64(key).map_err(|e| bad("encryption_key", e))?;
        }
        let retired_encryption_keys = sync_store::crypto::parse_retired_keys(
            self.retired_encryption_keys.as_deref().unwrap_or(""),
        )
        .map_err(|e| bad("retired_encryption_keys", e))?;
        let admin_token = non_empty(self.admin_token);
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(bad("admin_token", "must be at least 16 characters"));
        }
        Ok(Config {
            database_url,
            bind,
            webhook_base_url,
            google_api_base_url,
            google_token_url,
            google_client_id: non_empty(self.google_client_id),
            google_client_secret: non_empty(self.google_client_secret).map(Secret),
            admin_token: admin_token.map(Secret),
            coalescing: CoalescingPolicy {
                debounce: Duration::from_millis(self.sync_debounce_ms),
                max_delay: Duration::from_millis(self.sync_max_delay_ms),
            },
            poll_interval: Duration::from_secs(self.poll_interval_secs),
            channel_ttl: Duration::from_secs(self.channel_ttl_secs),
            stopped_channel_retention: Duration::from_secs(
                self.stopped_channel_retention_hours * 3600,
            ),
            log_format,
            encryption_key: encryption_key.map(Secret),
            metrics_bind,
            retired_encryption_keys,
            change_retention: Duration::from_secs(self.change_retention_hours * 3600),
        })
    }
}

/// Every key the configuration has, in the table's order (the fields of [`RawConfig`]).
pub fn known_keys() -> Vec<String> {
    let defaults = Figment::from(Serialized::defaults(RawConfig::default()));
    match figment::Provider::data(&defaults) {
        Ok(data) => data
            .get(&figment::Profile::Default)
            .map(|dict| dict.keys().cloned().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A key in the file that no setting has (a typo) stops startup, named.
/// Environment variables are not checked: the environment holds many others.
fn check_file_keys(file: &std::path::Path) -> Result<(), ConfigError> {
    // Missing file: no data. (figment also looks in the parent directories.)
    let data = figment::Provider::data(&Toml::file(file)).map_err(|e| {
        ConfigError(format!(
            "{}: {}",
            file.display(),
            e.to_string().replace('\n', " ")
        ))
    })?;
    let known = known_keys();
    for dict in data.values() {
        if let Some(key) = dict.keys().find(|k| !known.contains(k)) {
            return Err(ConfigError(format!(
                "`{key}` in {} is not a configuration key (see chronos.example.toml)",
                file.display()
            )));
        }
    }
    Ok(())
}

/// Where each key's value came from: `default`, the file, or the variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(std::collections::BTreeMap<String, String>);

impl Sources {
    fn of(figment: &Figment) -> Self {
        let mut sources = std::collections::BTreeMap::new();
        for key in known_keys() {
            let source = match figment.find_metadata(&key) {
                Some(meta) => match &meta.source {
                    Some(figment::Source::File(path)) => format!("from {}", path.display()),
                    _ if meta.name.contains("environment") => {
                        let mut var = meta.interpolate(&figment::Profile::Default, &[key.as_str()]);
                        if meta.name.contains("CHRONOS_") && !var.starts_with("CHRONOS_") {
                            var.insert_str(0, "CHRONOS_");
                        }
                        format!("from ${var}")
                    }
                    _ => "default".to_owned(),
                },
                None => "default".to_owned(),
            };
            sources.insert(key, source);
        }
        Self(sources)
    }

    /// The source of `key` (`default` when unknown).
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("default", String::as_str)
    }
}

/// What `redacted_lines` shows for a key that is not set.
pub const UNSET: &str = "(unset)";

/// A TOML string literal.
fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn parse_http_url(key: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| bad(key, format!("`{}` is not a URL ({e})", redact_url(raw))))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(bad(
            key,
            format!("`{}` is not an http(s) URL", redact_url(raw)),
        ));
    }
    Ok(url)
}

impl Config {
    /// Loads and validates.
    pub fn load() -> Result<Self, ConfigError> {
        RawConfig::load()?.validate()
    }

    /// `{webhook_base_url}/calendar/webhook`, when push is configured.
    pub fn webhook_address(&self) -> Option<String> {
        self.webhook_base_url
            .as_ref()
            .map(|base| format!("{}/calendar/webhook", base.as_str().trim_end_matches('/')))
    }

    /// The effective configuration, key by key, as TOML literals, secrets
    /// redacted; [`UNSET`] for a key that is not set.
    pub fn redacted_lines(&self) -> Vec<(String, String)> {
        let secret = |s: &Option<Secret>| {
            s.as_ref()
                .map_or_else(|| UNSET.to_owned(), |_| quoted("***"))
        };
        let opt = |s: Option<String>| s.map_or_else(|| UNSET.to_owned(), |v| quoted(&v));
        vec![
            ("database_url".into(), quoted(&self.database_url.redacted())),
            ("bind".into(), quoted(&self.bind.to_string())),
            (
                "webhook_base_url".into(),
                opt(self
                    .webhook_base_url
                    .as_ref()
                    .map(|u| redact_url(u.as_str()))),
            ),
            (
                "google_api_base_url".into(),
                quoted(&redact_url(self.google_api_base_url.as_str())),
            ),
            (
                "google_token_url".into(),
                quoted(&redact_url(self.google_token_url.as_str())),
            ),
            (
                "google_client_id".into(),
                opt(self.google_client_id.clone()),
            ),
            (
                "google_client_secret".into(),
                secret(&self.google_client_secret),
            ),
            ("admin_token".into(), secret(&self.admin_token)),
            (
                "sync_debounce_ms".into(),
                self.coalescing.debounce.as_millis().to_string(),
            ),
            (
                "sync_max_delay_ms".into(),
                self.coalescing.max_delay.as_millis().to_string(),
            ),
            (
                "poll_interval_secs".into(),
                self.poll_interval.as_secs().to_string(),
            ),
            (
                "channel_ttl_secs".into(),
                self.channel_ttl.as_secs().to_string(),
            ),
            (
                "stopped_channel_retention_hours".into(),
                (self.stopped_channel_retention.as_secs() / 3600).to_string(),
            ),
            (
                "log_format".into(),
                quoted(&format!("{:?}", self.log_format).to_ascii_lowercase()),
            ),
            ("encryption_key".into(), secret(&self.encryption_key)),
            (
                "retired_encryption_keys".into(),
                if self.retired_encryption_keys.is_empty() {
                    UNSET.to_owned()
                } else {
                    quoted("***")
                },
            ),
            (
                "metrics_bind".into(),
                opt(self.metrics_bind.map(|a| a.to_string())),
            ),
            (
                "change_retention_hours".into(),
                (self.change_retention.as_secs() / 3600).to_string(),
            ),
        ]
    }

    /// `chronos-server config`: valid TOML, one key a line with where its
    /// value came from as a comment; unset keys commented out; secrets `"***"`.
    pub fn to_toml(&self, sources: &Sources) -> String {
        let mut out =
            String::from("# chronos-server: the effective configuration (secrets redacted)\n");
        for (key, value) in self.redacted_lines() {
            let source = sources.get(&key);
            if value == UNSET {
                out.push_str(&format!("# {key} is unset ({source})\n"));
            } else {
                out.push_str(&format!("{key} = {value}  # {source}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        for (k, v) in pairs {
            figment = figment.merge((*k, *v));
        }
        RawConfig::from_figment(&figment)?.validate()
    }

    #[test]
    fn defaults_are_the_specs() {
        let config = with(&[]).unwrap();
        assert_eq!(
            config.database_url,
            DatabaseUrl::Sqlite("chronos.db".into())
        );
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.webhook_base_url, None);
        assert_eq!(config.coalescing, CoalescingPolicy::default());
        assert_eq!(config.poll_interval, Duration::from_secs(21_600));
        assert_eq!(config.channel_ttl, Duration::from_secs(604_800));
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.webhook_address(), None);
    }

    #[test]
    fn each_bad_key_is_named() {
        for (key, value) in [
            ("database_url", "mysql://x"),
            ("bind", "nowhere"),
            ("webhook_base_url", "not a url"),
            ("google_api_base_url", "ftp://x"),
            ("log_format", "xml"),
            ("encryption_key", "short"),
            ("admin_token", "short"),
        ] {
            let err = with(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn secrets_are_never_printed() {
        let err = with(&[("encryption_key", "c2VjcmV0LWtleS12YWx1ZQ==")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let config = with(&[
            ("admin_token", "admin-token-0123456789"),
            ("google_client_secret", "client-secret-value"),
            ("database_url", "postgres://u:hunter2@db/chronos"),
        ])
        .unwrap();
        let shown = format!("{:?} {:?}", config, config.redacted_lines());
        for secret in ["admin-token-0123456789", "client-secret-value", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn passwords_in_any_url_key_are_never_printed() {
        let config = with(&[
            ("database_url", "postgres://u@db/chronos?password=hunter2"),
            (
                "webhook_base_url",
                "https://hook:webhookpw@chronos.example.com",
            ),
            (
                "google_api_base_url",
                "https://g:apipw@google.example.com/v3",
            ),
            (
                "google_token_url",
                "https://t.example.com/token?client_secret=tokenpw",
            ),
        ])
        .unwrap();
        let raw = RawConfig {
            database_url: "postgres://u@db/chronos?password=hunter2".into(),
            webhook_base_url: Some("https://hook:webhookpw@chronos.example.com".into()),
            ..RawConfig::default()
        };
        let shown = format!("{config:?} {:?} {raw:?}", config.redacted_lines());
        for secret in ["hunter2", "webhookpw", "apipw", "tokenpw"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let err = with(&[("webhook_base_url", "ftp://hook:webhookpw@x")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("webhookpw"), "{err}");
    }

    #[test]
    fn raw_config_debug_hides_secrets() {
        let raw = RawConfig {
            database_url: "postgres://u:hunter2@db/chronos".into(),
            google_client_secret: Some("client-secret-value".into()),
            admin_token: Some("admin-token-0123456789".into()),
            encryption_key: Some("c2VjcmV0LWtleS12YWx1ZQ==".into()),
            ..RawConfig::default()
        };
        let shown = format!("{raw:?}");
        for secret in [
            "hunter2",
            "client-secret-value",
            "admin-token-0123456789",
            "c2VjcmV0",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn environment_layers_over_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "chronos.toml",
                "bind = \"127.0.0.1:9000\"\nsync_debounce_ms = 50\n",
            )?;
            jail.set_env("DATABASE_URL", "sqlite://from-unprefixed.db");
            jail.set_env("WEBHOOK_BASE_URL", "https://hooks.example.com/");
            jail.set_env("CHRONOS_SYNC_DEBOUNCE_MS", "75");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.bind.to_string(), "127.0.0.1:9000");
            assert_eq!(config.coalescing.debounce, Duration::from_millis(75));
            assert_eq!(
                config.database_url,
                DatabaseUrl::Sqlite("from-unprefixed.db".into())
            );
            assert_eq!(
                config.webhook_address().as_deref(),
                Some("https://hooks.example.com/calendar/webhook")
            );
            jail.set_env("CHRONOS_DATABASE_URL", "sqlite://prefixed.db");
            let config = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(
                config.database_url,
                DatabaseUrl::Sqlite("prefixed.db".into())
            );
            Ok(())
        });
    }

    #[test]
    fn unparsable_number_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHRONOS_SYNC_DEBOUNCE_MS", "soon");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("`sync_debounce_ms`"), "{err}");
            Ok(())
        });
    }

    fn example_file() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chronos.example.toml")
    }

    #[test]
    fn example_file_loads_through_the_real_parser_and_holds_the_defaults() {
        let example = example_file();
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHRONOS_CONFIG", example.display().to_string());
            let loaded = RawConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(loaded, RawConfig::default());
            Ok(())
        });
    }

    #[test]
    fn example_file_lists_every_key() {
        let text = std::fs::read_to_string(example_file()).unwrap();
        for key in known_keys() {
            let listed = text.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.starts_with(&format!("{key} ="))
            });
            assert!(listed, "chronos.example.toml does not list `{key}`");
        }
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "chronos.toml",
                "bind = \"127.0.0.1:9000\"\nadmin_tokn = \"x\"\n",
            )?;
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("`admin_tokn`"), "{err}");
            assert!(!err.contains('\n'), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_chronos_variables_stay_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHRONOS_SOMETHING_ELSE", "1");
            Config::load().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn a_bare_port_as_bind_names_the_expected_form() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CHRONOS_BIND", "8085");
            let err = Config::load().unwrap_err().to_string();
            assert!(err.contains("`bind`") && err.contains("host:port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn config_output_is_toml_with_sources_and_no_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("chronos.toml", "sync_debounce_ms = 250\n")?;
            jail.set_env("CHRONOS_ADMIN_TOKEN", "super-secret-admin-token");
            jail.set_env("WEBHOOK_BASE_URL", "https://hooks.example.com");
            let (raw, sources) = RawConfig::load_with_sources().map_err(|e| e.to_string())?;
            let out = raw.validate().map_err(|e| e.to_string())?.to_toml(&sources);
            assert!(!out.contains("super-secret-admin-token"), "{out}");
            let parsed: toml::Table = out.parse().map_err(|e| format!("{e}: {out}"))?;
            assert_eq!(parsed["sync_debounce_ms"].as_integer(), Some(250));
            assert_eq!(parsed["admin_token"].as_str(), Some("***"));
            assert!(!parsed.contains_key("google_client_id"), "{out}");
            assert!(out.contains("sync_debounce_ms = 250  # from /"), "{out}");
            assert!(out.contains("chronos.toml\n"), "{out}");
            assert!(out.contains("# from $CHRONOS_ADMIN_TOKEN"), "{out}");
            assert!(out.contains("# from $WEBHOOK_BASE_URL"), "{out}");
            assert!(
                out.contains("bind = \"127.0.0.1:8080\"  # default"),
                "{out}"
            );
            assert!(
                out.contains("# google_client_id is unset (default)"),
                "{out}"
            );
            Ok(())
        });
    }
}
