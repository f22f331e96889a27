//! In-memory fakes of the ports, for tests in this workspace and in other
//! Chronos services (feature `fakes`).

use crate::ids::{CalendarId, ChannelId, UserId};
use crate::notification::MessageNumber;
use crate::ports::{
    CachedAccessToken, Clock, CredentialStore, CredentialsVersion, Entropy, EntropyUnavailable,
    RecordOutcome, StoreError, StoredCredentials, SyncRequest, WebhookStore,
};
use crate::secret::RefreshToken;
use crate::verification::ChannelRecord;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock already failed; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct FakeClock(Mutex<OffsetDateTime>);

impl FakeClock {
    /// A clock standing at `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        Self(Mutex::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = lock(&self.0);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: OffsetDateTime) {
        *lock(&self.0) = to;
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new(OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000))
    }
}

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        *lock(&self.0)
    }
}

/// Predictable "randomness": each call fills with an increasing counter byte.
#[derive(Debug, Default)]
pub struct CountingEntropy(AtomicU64);

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyUnavailable> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (n as u8).wrapping_add(i as u8);
        }
        Ok(())
    }
}

/// An in-memory webhook store; `set_down(true)` makes every call fail as unavailable.
#[derive(Debug, Default)]
pub struct InMemoryWebhookStore {
    channels: Mutex<HashMap<ChannelId, ChannelRecord>>,
    requests: Mutex<Vec<SyncRequest>>,
    down: AtomicBool,
}

impl InMemoryWebhookStore {
    /// Registers a channel.
    pub fn insert_channel(&self, channel_id: ChannelId, record: ChannelRecord) {
        lock(&self.channels).insert(channel_id, record);
    }

    /// Simulates the database being unreachable.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The sync requests recorded so far.
    pub fn recorded(&self) -> Vec<SyncRequest> {
        lock(&self.requests).clone()
    }

    /// The sync requests recorded for one calendar.
    pub fn recorded_for(&self, calendar_id: CalendarId) -> usize {
        lock(&self.requests)
            .iter()
            .filter(|r| r.calendar_id == calendar_id)
            .count()
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("fake store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl WebhookStore for InMemoryWebhookStore {
    async fn find_channel(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Option<ChannelRecord>, StoreError> {
        self.check_up()?;
        Ok(lock(&self.channels).get(channel_id).cloned())
    }

    async fn record_sync_request(
        &self,
        request: &SyncRequest,
    ) -> Result<RecordOutcome, StoreError> {
        self.check_up()?;
        let mut channels = lock(&self.channels);
        let Some(record) = channels.get_mut(&request.channel_id) else {
            return Ok(RecordOutcome::CalendarGone);
        };
        if MessageNumber::is_duplicate(request.message_number, record.last_message_number) {
            return Ok(RecordOutcome::Duplicate);
        }
        if request.message_number.is_some() {
            record.last_message_number = request.message_number;
        }
        lock(&self.requests).push(request.clone());
        Ok(RecordOutcome::Recorded)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_up()
    }
}

/// In-memory credentials (no encryption: nothing leaves the process).
#[derive(Debug, Default)]
pub struct InMemoryCredentialStore {
    users: Mutex<HashMap<UserId, StoredCredentials>>,
    writes: AtomicU64,
}

impl InMemoryCredentialStore {
    /// The stored credentials of a user, for assertions.
    pub fn get(&self, user_id: &UserId) -> Option<StoredCredentials> {
        lock(&self.users).get(user_id).cloned()
    }
}

#[async_trait]
impl CredentialStore for InMemoryCredentialStore {
    async fn credentials(&self, user_id: &UserId) -> Result<Option<StoredCredentials>, StoreError> {
        Ok(self.get(user_id))
    }

    async fn put_refresh_token(
        &self,
        user_id: &UserId,
        token: &RefreshToken,
    ) -> Result<(), StoreError> {
        lock(&self.users).insert(
            user_id.clone(),
            StoredCredentials {
                refresh_token: token.clone(),
                access_token: None,
                needs_reauth: false,
                version: CredentialsVersion::new(
                    self.writes
                        .fetch_add(1, Ordering::Relaxed)
                        .to_be_bytes()
                        .to_vec(),
                ),
            },
        );
        Ok(())
    }

    async fn cache_access_token(
        &self,
        user_id: &UserId,
        token: &CachedAccessToken,
    ) -> Result<(), StoreError> {
        if let Some(creds) = lock(&self.users).get_mut(user_id) {
            creds.access_token = Some(token.clone());
        }
        Ok(())
    }

    async fn mark_needs_reauth(
        &self,
        user_id: &UserId,
        refused: &CredentialsVersion,
    ) -> Result<bool, StoreError> {
        match lock(&self.users).get_mut(user_id) {
            Some(creds) if creds.version == *refused => {
                creds.needs_reauth = true;
                creds.access_token = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A message number, for tests.
pub fn message(n: i64) -> MessageNumber {
    MessageNumber::new(n)
}
