//! How the client reaches Google: endpoints, OAuth client and retry bounds.

use std::time::Duration;
use url::Url;

/// Google's production Calendar API base (`google_api_base_url` default).
pub const DEFAULT_API_BASE_URL: &str = "https://www.googleapis.com/calendar/v3";
/// Google's production OAuth token endpoint (`google_token_url` default).
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The OAuth client secret; `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps the secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; only the token request needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(***)")
    }
}

impl std::fmt::Display for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Bounds on retrying rate-limited and transient calls: exponential backoff
/// with full jitter (a delay drawn uniformly from `0..=min(max_delay, base_delay * 2^n)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub max_attempts: u32,
    /// Backoff cap before the first retry; doubles each retry.
    pub base_delay: Duration,
    /// No single wait is longer; a `Retry-After` above it ends the retries.
    pub max_delay: Duration,
    /// No retry starts whose wait would end after this much time since the first attempt.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts with no wait between them (for tests).
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_total: Duration::from_secs(60),
        }
    }

    /// A single attempt: errors go straight to the caller.
    pub fn no_retry() -> Self {
        Self::immediate(1)
    }
}

/// Everything the client needs to reach Google; `Debug` redacts passwords in the URLs.
#[derive(Clone)]
pub struct GoogleConfig {
    /// Calendar API base, e.g. `https://www.googleapis.com/calendar/v3`.
    pub api_base_url: Url,
    /// OAuth token endpoint, e.g. `https://oauth2.googleapis.com/token`.
    pub token_url: Url,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: ClientSecret,
    /// Retry bounds for rate limits and transient failures.
    pub retry: RetryPolicy,
    /// Timeout of one HTTP request (connect to last byte).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sync_domain::redact::redact_url;
        f.debug_struct("GoogleConfig")
            .field("api_base_url", &redact_url(self.api_base_url.as_str()))
            .field("token_url", &redact_url(self.token_url.as_str()))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl GoogleConfig {
    /// Google's production endpoints, the default retry policy and a 30 s request timeout.
    pub fn new(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            api_base_url: parse_constant(DEFAULT_API_BASE_URL),
            token_url: parse_constant(DEFAULT_TOKEN_URL),
            client_id: client_id.into(),
            client_secret,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

fn parse_constant(url: &str) -> Url {
    #[allow(clippy::expect_used)]
    Url::parse(url).expect("the default Google URLs are valid constants")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug_of_the_whole_config() {
        let config = GoogleConfig::new("client-1", ClientSecret::new("s3cr3t"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("ClientSecret(***)"));
        assert_eq!(config.api_base_url.as_str(), DEFAULT_API_BASE_URL);
        assert_eq!(config.token_url.as_str(), DEFAULT_TOKEN_URL);
    }
}
