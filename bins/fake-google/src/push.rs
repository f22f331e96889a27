//! Push notifications as Google sends them: a POST with an empty body and the
//! `X-Goog-*` headers to the channel's address, `User-Agent: APIs-Google`.
//! 500, 502, 503 and 504 (and connection failures) are retried with
//! exponential backoff a few times; any other status is a failed message.

use google_client::fakes::FakeWatch;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_domain::ids::ChannelId;
use sync_domain::notification::ResourceState;
use time::OffsetDateTime;
use time::macros::format_description;

/// Attempts per notification, the first included.
const MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles each retry.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Deliveries kept for `GET /fake/notifications`.
const LOG_CAPACITY: usize = 10_000;

/// One notification, ready to send.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The channel's `address`.
    pub address: String,
    /// `X-Goog-Channel-ID`.
    pub channel_id: String,
    /// `X-Goog-Channel-Token` (omitted when empty, as Google does when none was set).
    pub token: String,
    /// `X-Goog-Resource-State`.
    pub state: ResourceState,
    /// `X-Goog-Message-Number`.
    pub message_number: u64,
    /// `X-Goog-Resource-ID`.
    pub resource_id: String,
    /// `X-Goog-Resource-URI`.
    pub resource_uri: String,
    /// `X-Goog-Channel-Expiration`, e.g. `Tue, 19 Nov 2013 01:13:52 GMT`.
    pub expiration: Option<String>,
}

/// The outcome of one notification, for the delivery log.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The channel notified.
    pub channel_id: String,
    /// `sync`, `exists` or `not_exists`.
    pub state: &'static str,
    /// The message number sent.
    pub message_number: u64,
    /// The last HTTP status received (`None`: no answer).
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// Whether a success status (200, 201, 202, 204, 102) was received.
    pub delivered: bool,
}

/// Delivery counters for `GET /fake/calls`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PushCounters {
    /// Notifications acknowledged with a success status.
    pub delivered: u64,
    /// Notifications given up on (non-retryable status or retries exhausted).
    pub failed: u64,
    /// Retries made after a 5xx or a connection failure.
    pub retries: u64,
}

/// Sends notifications and keeps their log and message numbers.
#[derive(Clone)]
pub struct Pusher {
    http: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    numbers: HashMap<ChannelId, u64>,
    log: VecDeque<Delivery>,
    counters: PushCounters,
}

impl Default for Pusher {
    fn default() -> Self {
        Self::new()
    }
}

fn google_date(at: OffsetDateTime) -> Option<String> {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .ok()
}

impl Pusher {
    /// A sender with a 10 s timeout per attempt and no redirects.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent("APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)")
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            http,
            shared: Arc::new(Mutex::new(Shared::default())),
        }
    }

    /// The notification for `watch` with the channel's next message number (1 for the handshake).
    pub fn prepare(
        &self,
        watch: &FakeWatch,
        state: &ResourceState,
        resource_uri: &str,
    ) -> Notification {
        let message_number = {
            let mut shared = crate::lock(&self.shared);
            let number = shared
                .numbers
                .entry(watch.granted.channel_id.clone())
                .or_insert(0);
            *number += 1;
            *number
        };
        Notification {
            address: watch.request.address.clone(),
            channel_id: watch.granted.channel_id.to_string(),
            token: watch.request.token.expose().to_owned(),
            state: state.clone(),
            message_number,
            resource_id: watch.granted.resource_id.to_string(),
            resource_uri: resource_uri.to_owned(),
            expiration: watch.granted.expires_at.and_then(google_date),
        }
    }

    /// Delivers in a background task of the current Tokio runtime.
    pub fn send_in_background(&self, notification: Notification) {
        let pusher = self.clone();
        tokio::spawn(async move { pusher.send(notification).await });
    }

    /// Delivers with retries; returns (and logs) the outcome.
    pub async fn send(&self, notification: Notification) -> Delivery {
        let mut attempts = 0;
        let mut status = None;
        let mut delivered = false;
        let mut wait = FIRST_RETRY;
        loop {
            attempts += 1;
            let retryable = match self.attempt(&notification).await {
                Ok(code) => {
                    status = Some(code);
                    delivered = matches!(code, 200 | 201 | 202 | 204 | 102);
                    matches!(code, 500 | 502 | 503 | 504)
                }
                Err(error) => {
                    tracing::debug!(channel_id = %notification.channel_id, error = %error.without_url(), "notification not delivered");
                    true
                }
            };
            if delivered || !retryable || attempts >= MAX_ATTEMPTS {
                break;
            }
            crate::lock(&self.shared).counters.retries += 1;
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        let delivery = Delivery {
            channel_id: notification.channel_id.clone(),
            state: notification.state.as_str(),
            message_number: notification.message_number,
            status,
            attempts,
            delivered,
        };
        if delivered {
            tracing::info!(channel_id = %delivery.channel_id, state = delivery.state, message_number = delivery.message_number, status = ?status, attempts, "notification delivered");
        } else {
            tracing::warn!(channel_id = %delivery.channel_id, state = delivery.state, message_number = delivery.message_number, status = ?status, attempts, "notification failed");
        }
        let mut shared = crate::lock(&self.shared);
        if delivered {
            shared.counters.delivered += 1;
        } else {
            shared.counters.failed += 1;
        }
        if shared.log.len() == LOG_CAPACITY {
            shared.log.pop_front();
        }
        shared.log.push_back(delivery.clone());
        delivery
    }

    async fn attempt(&self, notification: &Notification) -> Result<u16, reqwest::Error> {
        let mut request = self
            .http
            .post(&notification.address)
            .header("X-Goog-Channel-ID", &notification.channel_id)
            .header("X-Goog-Resource-State", notification.state.as_str())
            .header(
                "X-Goog-Message-Number",
                notification.message_number.to_string(),
            )
            .header("X-Goog-Resource-ID", &notification.resource_id)
            .header("X-Goog-Resource-URI", &notification.resource_uri)
            .header(reqwest::header::CONTENT_LENGTH, "0");
        if !notification.token.is_empty() {
            request = request.header("X-Goog-Channel-Token", &notification.token);
        }
        if let Some(expiration) = &notification.expiration {
            request = request.header("X-Goog-Channel-Expiration", expiration);
        }
        let response = request.send().await?;
        Ok(response.status().as_u16())
    }

    /// The most recent deliveries, oldest first.
    pub fn log(&self) -> Vec<Delivery> {
        crate::lock(&self.shared).log.iter().cloned().collect()
    }

    /// Delivery counters so far.
    pub fn counters(&self) -> PushCounters {
        crate::lock(&self.shared).counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_is_an_http_date_in_gmt() {
        let at = OffsetDateTime::from_unix_timestamp(1_384_823_632).unwrap();
        assert_eq!(google_date(at).unwrap(), "Tue, 19 Nov 2013 01:13:52 GMT");
    }
}
