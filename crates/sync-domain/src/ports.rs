//! The ports: every external system (database, Google, clock, randomness) sits
//! behind one of these traits, with a real implementation in another crate and
//! a fake in [`crate::fakes`] (feature `fakes`).

use crate::ids::{CalendarId, ChannelId, ResourceId, UserId};
use crate::notification::MessageNumber;
use crate::secret::{AccessToken, RefreshToken};
use crate::verification::ChannelRecord;
use async_trait::async_trait;
use time::OffsetDateTime;

pub use crate::calendar::{
    CalendarApi, CalendarListEntry, EventsPage, EventsQuery, GoogleError, GoogleEvent,
    WatchRequest, WatchedChannel,
};

/// A boxed error from an adapter, kept as the source of a port error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (pool timeout, connection refused, …).
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// A query failed for another reason.
    #[error("store query failed")]
    Query(#[source] BoxError),
}

/// Time, behind a trait so tests can move it.
pub trait Clock: Send + Sync + 'static {
    /// The current instant (UTC).
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The OS random source could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the OS random source is unavailable")]
pub struct EntropyUnavailable;

/// Randomness, behind a trait so tests can make it predictable.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyUnavailable>;

    /// A uniform draw in `[0, 1)`, for jitter; `0.5` in the (never seen)
    /// case the source fails, since jitter only spreads load.
    fn unit(&self) -> f64 {
        let mut bytes = [0u8; 8];
        if self.fill(&mut bytes).is_err() {
            return 0.5;
        }
        // The top 53 bits make an exactly representable fraction.
        (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A request to sync one calendar, as the webhook records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub calendar_id: CalendarId,
    /// The channel the notification came on, with its message number, so the
    /// store can refuse a duplicate atomically.
    pub channel_id: ChannelId,
    pub message_number: Option<MessageNumber>,
    pub requested_at: OffsetDateTime,
}

/// What recording a sync request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Committed: the request survives a crash from now on.
    Recorded,
    /// The calendar already had an unclaimed request, which guarantees a sync
    /// that starts after this notification; nothing was written.
    AlreadyPending,
    /// A concurrent notification already carried this message number or a later one.
    Duplicate,
    /// The calendar vanished between lookup and record.
    CalendarGone,
}

/// The webhook's view of the store: two calls, one round trip each.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// What is known of a channel, or `None` if it is not ours (or stopped).
    async fn find_channel(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError>;

    /// As [`Self::find_channel`], but never answered from a cache: asked before
    /// refusing a token, so a channel stopped elsewhere meanwhile is answered
    /// as unknown, exactly as the SPEC says.
    async fn find_channel_uncached(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        self.find_channel(channel_id).await
    }

    /// Durably records a sync request; returns once it is committed.
    async fn record_sync_request(&self, request: &SyncRequest)
    -> Result<RecordOutcome, StoreError>;

    /// Whether the store answers at all (`/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A cached access token and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAccessToken {
    pub token: AccessToken,
    pub expires_at: OffsetDateTime,
}

/// Which stored refresh token a reader saw: opaque, and different after every
/// replacement, so a write based on an old read can be refused (compare-and-set).
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialsVersion(Vec<u8>);

impl CredentialsVersion {
    /// Wraps the store's stamp (e.g. the sealed refresh token).
    pub fn new(stamp: Vec<u8>) -> Self {
        Self(stamp)
    }

    /// The stamp, for the store's comparison.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for CredentialsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialsVersion({} bytes)", self.0.len())
    }
}

/// A user's Google credentials, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub refresh_token: RefreshToken,
    pub access_token: Option<CachedAccessToken>,
    /// Set after `invalid_grant`; cleared when new credentials arrive.
    pub needs_reauth: bool,
    /// Which refresh token this is (see [`CredentialStore::mark_needs_reauth`]).
    pub version: CredentialsVersion,
}

/// Google OAuth credentials, encrypted at rest by the implementation.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// The user's credentials, if any were stored.
    async fn credentials(&self, user_id: &UserId) -> Result<Option<StoredCredentials>, StoreError>;

    /// Stores or replaces the refresh token (a new sign-in or Google's rotation);
    /// clears the needs-reauth mark and any cached access token.
    async fn put_refresh_token(
        &self,
        user_id: &UserId,
        token: &RefreshToken,
    ) -> Result<(), StoreError>;

    /// Caches an access token until `expires_at`.
    async fn cache_access_token(
        &self,
        user_id: &UserId,
        token: &CachedAccessToken,
    ) -> Result<(), StoreError>;

    /// Marks the credentials as refused by Google (`invalid_grant`), only if
    /// they are still those of `refused` (read before the refresh): credentials
    /// stored meanwhile are new and untried. `false`: not marked (replaced or gone).
    async fn mark_needs_reauth(
        &self,
        user_id: &UserId,
        refused: &CredentialsVersion,
    ) -> Result<bool, StoreError>;
}

/// A watch channel as Google knows it: what is needed to stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHandle {
    pub channel_id: ChannelId,
    pub resource_id: ResourceId,
}

/// Whether an error is worth retrying later (rate limits and transient failures).
pub fn is_retryable(error: &GoogleError) -> bool {
    matches!(
        error,
        GoogleError::RateLimited { .. } | GoogleError::Transient(_)
    )
}
