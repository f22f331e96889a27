//! The real [`CalendarApi`]: HTTPS calls to the Calendar API.

use crate::config::{GoogleConfig, RetryPolicy};
use crate::errors::{classify, transport};
use crate::events::{MAX_EVENTS_PAGE, malformed};
use crate::retry::Backoff;
use crate::token::{BuildError, TokenSource, http_client};
use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use sync_domain::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, GoogleError, WatchRequest,
    WatchedChannel,
};
use sync_domain::ids::{ChannelId, GoogleCalendarId, ResourceId, UserId};
use sync_domain::page::decode_events_page;
use sync_domain::ports::{Clock, CredentialStore, Entropy};
use sync_domain::secret::AccessToken;
use time::OffsetDateTime;
use url::Url;

/// `calendarList.list` page size (Google's maximum is 250).
const CALENDAR_LIST_PAGE: u32 = 250;

/// Google Calendar over HTTPS, with token refresh, error mapping and retries.
#[derive(Clone)]
pub struct GoogleCalendarClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    tokens: TokenSource,
    api_base_url: Url,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    /// Jitter between retries.
    entropy: Arc<dyn Entropy>,
}

impl std::fmt::Debug for GoogleCalendarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleCalendarClient")
            .field("api_base_url", &self.inner.api_base_url.as_str())
            .field("retry", &self.inner.retry)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

impl GoogleCalendarClient {
    /// A client for `config`, reading and updating credentials in `credentials`,
    /// drawing the jitter of its retries from `entropy`.
    pub fn new(
        config: GoogleConfig,
        credentials: Arc<dyn CredentialStore>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Result<Self, BuildError> {
        if config.api_base_url.cannot_be_a_base() {
            return Err(BuildError::ApiBaseUrl(sync_domain::redact::redact_url(
                config.api_base_url.as_str(),
            )));
        }
        let http = http_client(&config)?;
        let tokens =
            TokenSource::with_http(&config, http.clone(), credentials, Arc::clone(&clock))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                tokens,
                api_base_url: config.api_base_url,
                retry: config.retry,
                clock,
                entropy,
            }),
        })
    }

    /// The token source this client uses.
    pub fn tokens(&self) -> &TokenSource {
        &self.inner.tokens
    }

    /// `{api_base_url}/{segments...}`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.api_base_url.clone();
        // `new` refused cannot-be-a-base URLs, so this always succeeds.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request built by `build` with the user's bearer token; on 401
    /// refreshes the token once and resends; retries rate limits and transient
    /// failures within the retry policy. Returns the body of a 2xx answer.
    async fn execute(
        &self,
        user_id: &UserId,
        operation: &'static str,
        target: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync,
    ) -> Result<Vec<u8>, GoogleError> {
        let mut backoff = Backoff::start(self.inner.retry, self.inner.entropy.as_ref());
        let mut rejected: Option<AccessToken> = None;
        let mut refreshed_once = false;
        loop {
            let error = match self
                .attempt(user_id, operation, &build, rejected.take())
                .await
            {
                Ok(body) => return Ok(body),
                Err(Attempt::Unauthorized(token)) if !refreshed_once => {
                    tracing::info!(
                        operation,
                        target,
                        "Google answered 401; refreshing the access token once"
                    );
                    refreshed_once = true;
                    rejected = Some(token);
                    continue;
                }
                Err(Attempt::Unauthorized(_)) => GoogleError::Unauthorized,
                Err(Attempt::Failed(error)) => error,
            };
            match backoff.next_delay(&error) {
                Some(delay) => {
                    tracing::warn!(operation, target, attempt = backoff.attempts() - 1, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), error = %error, "retrying Google call");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tracing::debug!(operation, target, attempts = backoff.attempts(), error = %error, "Google call failed");
                    return Err(error);
                }
            }
        }
    }

    /// One HTTP exchange, counted in [`crate::CALLS_METRIC`] by method and status.
    async fn attempt(
        &self,
        user_id: &UserId,
        operation: &'static str,
        build: &(impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync),
        rejected: Option<AccessToken>,
    ) -> Result<Vec<u8>, Attempt> {
        let token = match &rejected {
            Some(rejected) => {
                self.inner
                    .tokens
                    .refreshed_access_token(user_id, rejected)
                    .await
            }
            None => self.inner.tokens.access_token(user_id).await,
        }
        .map_err(Attempt::Failed)?;
        let response = build(&self.inner.http)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| {
                count_call(operation, "error");
                Attempt::Failed(transport(e))
            })?;
        let status = response.status();
        count_call(operation, status.as_str());
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| Attempt::Failed(transport(e)))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        match classify(status, &headers, &body, self.inner.clock.now()) {
            GoogleError::Unauthorized => Err(Attempt::Unauthorized(token)),
            error => Err(Attempt::Failed(error)),
        }
    }
}

/// Counts one call: `status` is the HTTP status, or `error` when no answer came.
pub(crate) fn count_call(method: &'static str, status: &str) {
    metrics::counter!(crate::CALLS_METRIC, "method" => method, "status" => status.to_owned())
        .increment(1);
}

/// The outcome of one attempt that did not succeed.
enum Attempt {
    /// 401 to this token.
    Unauthorized(AccessToken),
    Failed(GoogleError),
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, GoogleError> {
    serde_json::from_slice(body).map_err(|e| malformed(format!("{what}: {e}")))
}

/// Google's `Channel` resource (the fields we read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelBody {
    resource_id: Option<String>,
    /// int64 as a JSON string (unix milliseconds); tolerated as a number.
    expiration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarListBody {
    #[serde(default)]
    items: Vec<CalendarListItem>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarListItem {
    id: String,
    summary: Option<String>,
    #[serde(default)]
    primary: bool,
    access_role: Option<String>,
}

/// Parses `Channel.expiration`: unix milliseconds, a JSON string per the discovery document.
fn expiration(value: Option<&Value>) -> Result<Option<OffsetDateTime>, GoogleError> {
    let millis = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().parse::<i64>().ok(),
        Some(Value::Number(number)) => number.as_i64(),
        Some(_) => None,
    }
    .ok_or_else(|| malformed("channel expiration is not unix milliseconds"))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map(Some)
        .map_err(|_| malformed("channel expiration out of range"))
}

#[async_trait]
impl CalendarApi for GoogleCalendarClient {
    async fn watch(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        request: &WatchRequest,
    ) -> Result<WatchedChannel, GoogleError> {
        let url = self.endpoint(&["calendars", calendar.as_str(), "events", "watch"]);
        let body = json!({
            "id": request.channel_id.as_str(),
            "type": "web_hook",
            "address": request.address,
            "token": request.token.expose(),
            "params": {"ttl": request.ttl.as_secs().to_string()},
        });
        let answer = self
            .execute(user_id, "events.watch", calendar.as_str(), |http| {
                http.post(url.clone()).json(&body)
            })
            .await?;
        let channel: ChannelBody = decode(&answer, "events.watch answer")?;
        let resource_id = channel
            .resource_id
            .ok_or_else(|| malformed("events.watch answer has no resourceId"))
            .and_then(|id| ResourceId::parse(id).map_err(|e| malformed(e.to_string())))?;
        let expires_at = expiration(channel.expiration.as_ref())?;
        tracing::info!(google_calendar_id = %calendar, channel_id = %request.channel_id, resource_id = %resource_id, expires_at = ?expires_at, "watch channel opened");
        Ok(WatchedChannel {
            channel_id: request.channel_id.clone(),
            resource_id,
            expires_at,
        })
    }

    async fn stop_channel(
        &self,
        user_id: &UserId,
        channel_id: &ChannelId,
        resource_id: &ResourceId,
    ) -> Result<(), GoogleError> {
        let url = self.endpoint(&["channels", "stop"]);
        let body = json!({"id": channel_id.as_str(), "resourceId": resource_id.as_str()});
        let result = self
            .execute(user_id, "channels.stop", channel_id.as_str(), |http| {
                http.post(url.clone()).json(&body)
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(channel_id = %channel_id, "watch channel stopped");
                Ok(())
            }
            Err(GoogleError::NotFound) => {
                tracing::info!(channel_id = %channel_id, "watch channel already gone at Google");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn list_events(
        &self,
        user_id: &UserId,
        calendar: &GoogleCalendarId,
        query: &EventsQuery,
    ) -> Result<EventsPage, GoogleError> {
        let mut url = self.endpoint(&["calendars", calendar.as_str(), "events"]);
        {
            let mut pairs = url.query_pairs_mut();
            // With a syncToken Google forbids iCalUID, orderBy, q, timeMin, timeMax,
            // updatedMin and the extended-property filters; a full sync sends none of
            // them either, so both passes ask the same question.
            pairs.append_pair("showDeleted", "true");
            pairs.append_pair(
                "maxResults",
                &query.max_results.clamp(1, MAX_EVENTS_PAGE).to_string(),
            );
            if let Some(sync_token) = &query.sync_token {
                pairs.append_pair("syncToken", sync_token);
            }
            if let Some(page_token) = &query.page_token {
                pairs.append_pair("pageToken", page_token);
            }
        }
        let answer = self
            .execute(user_id, "events.list", calendar.as_str(), |http| {
                http.get(url.clone())
            })
            .await?;
        let page = decode_events_page(&answer).map_err(|e| malformed(e.to_string()))?;
        tracing::debug!(google_calendar_id = %calendar, items = page.items.len(), skipped = page.skipped.len(), last_page = page.next_sync_token.is_some(), "events.list page");
        Ok(page)
    }

    async fn list_calendars(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<CalendarListEntry>, GoogleError> {
        let mut entries = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = self.endpoint(&["users", "me", "calendarList"]);
            {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("maxResults", &CALENDAR_LIST_PAGE.to_string());
                if let Some(token) = &page_token {
                    pairs.append_pair("pageToken", token);
                }
            }
            let answer = self
                .execute(user_id, "calendarList.list", "users/me", |http| {
                    http.get(url.clone())
                })
                .await?;
            let body: CalendarListBody = decode(&answer, "calendarList.list answer")?;
            for item in body.items {
                let id = GoogleCalendarId::parse(item.id).map_err(|e| malformed(e.to_string()))?;
                entries.push(CalendarListEntry {
                    id,
                    summary: item.summary,
                    primary: item.primary,
                    access_role: item.access_role,
                });
            }
            match body.next_page_token {
                // A token equal to the one just sent would loop forever.
                Some(next) if page_token.as_deref() != Some(next.as_str()) => {
                    page_token = Some(next);
                }
                _ => return Ok(entries),
            }
        }
    }
}
