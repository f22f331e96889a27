//! Google's HTTP error answers mapped onto [`GoogleError`].
//!
//! Google's error body is `{"error": {"errors": [{"domain", "reason", "message"}],
//! "code", "message"}}`; the reason decides the variant where the status alone
//! does not (403 means a rate limit or an unwatchable calendar, among others).

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use std::time::Duration;
use sync_domain::calendar::GoogleError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// The reasons Google gives for a rate or quota limit (403, domain `usageLimits`).
const RATE_LIMIT_REASONS: [&str; 3] = [
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "quotaExceeded",
];

/// The reason Google gives when a calendar cannot be watched.
const PUSH_NOT_SUPPORTED: &str = "pushNotSupportedForRequestedResource";

#[derive(Debug, Default, Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Maps a non-success answer of the Calendar API to the taxonomy.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> GoogleError {
    // A body that is not Google's JSON (a proxy's HTML page, say) still maps by status.
    let envelope: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_default();
    let reasons: Vec<&str> = envelope
        .error
        .errors
        .iter()
        .filter_map(|e| e.reason.as_deref())
        .collect();
    let message = envelope
        .error
        .message
        .clone()
        .or_else(|| envelope.error.errors.iter().find_map(|e| e.message.clone()))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
    let has = |wanted: &[&str]| reasons.iter().any(|r| wanted.contains(r));

    if status == StatusCode::GONE {
        return GoogleError::FullSyncRequired;
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && has(&RATE_LIMIT_REASONS))
    {
        return GoogleError::RateLimited {
            retry_after: retry_after(headers, now),
        };
    }
    if has(&[PUSH_NOT_SUPPORTED]) {
        return GoogleError::PushNotSupported;
    }
    if status == StatusCode::UNAUTHORIZED {
        return GoogleError::Unauthorized;
    }
    if status == StatusCode::NOT_FOUND {
        return GoogleError::NotFound;
    }
    if status.is_server_error() {
        return GoogleError::Transient(format!("Google answered {}: {message}", status.as_u16()));
    }
    GoogleError::Other {
        status: status.as_u16(),
        reason: reasons.first().copied().unwrap_or("").to_owned(),
        message,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// Maps a transport failure (timeout, refused connection, broken body) to
/// `Transient`, with its causes (`connection refused`, …) but never the URL.
pub(crate) fn transport(error: reqwest::Error) -> GoogleError {
    // `without_url`: the URL may hold a password (user info, `password=`) and
    // query strings carry sync and page tokens; keep them out of messages.
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let error = error.without_url();
    let mut message = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    // A cause could quote a URL of its own (a proxy's, say).
    GoogleError::Transient(sync_domain::redact::redact_urls_in(&message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn body(status: u16, reason: &str, message: &str) -> Vec<u8> {
        json!({"error": {"errors": [{"domain": "global", "reason": reason, "message": message}],
                          "code": status, "message": message}})
        .to_string()
        .into_bytes()
    }

    fn map(status: u16, reason: &str) -> GoogleError {
        classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            &body(status, reason, "msg"),
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn each_status_and_reason_maps_to_its_variant() {
        assert_eq!(map(410, "fullSyncRequired"), GoogleError::FullSyncRequired);
        assert_eq!(
            map(410, "updatedMinTooLongAgo"),
            GoogleError::FullSyncRequired
        );
        for reason in RATE_LIMIT_REASONS {
            assert_eq!(
                map(403, reason),
                GoogleError::RateLimited { retry_after: None }
            );
        }
        assert_eq!(
            map(429, "rateLimitExceeded"),
            GoogleError::RateLimited { retry_after: None }
        );
        assert_eq!(map(401, "authError"), GoogleError::Unauthorized);
        assert_eq!(map(404, "notFound"), GoogleError::NotFound);
        assert_eq!(map(403, PUSH_NOT_SUPPORTED), GoogleError::PushNotSupported);
        assert!(matches!(
            map(500, "backendError"),
            GoogleError::Transient(_)
        ));
        assert!(matches!(
            map(503, "backendError"),
            GoogleError::Transient(_)
        ));
        assert_eq!(
            map(403, "forbiddenForNonOrganizer"),
            GoogleError::Other {
                status: 403,
                reason: "forbiddenForNonOrganizer".into(),
                message: "msg".into()
            }
        );
    }

    #[test]
    fn a_body_that_is_not_json_still_maps_by_status() {
        let e = classify(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
            OffsetDateTime::UNIX_EPOCH,
        );
        assert!(matches!(e, GoogleError::Transient(_)));
        let e = classify(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            b"",
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(
            e,
            GoogleError::Other {
                status: 400,
                reason: String::new(),
                message: "Bad Request".into()
            }
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let now = OffsetDateTime::parse("Wed, 21 Oct 2015 07:28:00 GMT", &Rfc2822).unwrap();
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
