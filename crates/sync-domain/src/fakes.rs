//! In-memory fakes of the ports, for tests in this workspace and in other
//! Chronos services (feature `fakes`).

use crate::ids::{CalendarId, ChannelId, UserId};
use crate::notification::MessageNumber;
use crate::ports::{
    CachedAccessToken, Clock, CredentialStore, Entropy, EntropyUnavailable, RecordOutcome,
    StoreError, StoredCredentials, SyncRequest, WebhookStore,
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

    async fn mark_needs_reauth(&self, user_id: &UserId) -> Result<(), StoreError> {
        if let Some(creds) = lock(&self.users).get_mut(user_id) {
            creds.needs_reauth = true;
            creds.access_token = None;
        }
        Ok(())
    }
}

/// A message number, for tests.
pub fn message(n: i64) -> MessageNumber {
    MessageNumber::new(n)
}

/// An in-memory change feed: entries are appended by the test, read through
/// [`crate::changes::ChangeFeed`] with the store's semantics (cursors, filters,
/// `from now`, long-poll waits woken by appends, 410 below the pruned position).
#[derive(Debug)]
pub struct FakeChangeFeed {
    entries: Mutex<FakeFeedLog>,
    appended: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct FakeFeedLog {
    entries: Vec<crate::changes::ChangeEntry>,
    next_position: i64,
    pruned_through: i64,
}

impl Default for FakeChangeFeed {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            appended: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl FakeChangeFeed {
    /// Appends an entry (its cursor is replaced by the next position) and wakes waiters.
    pub fn append(&self, mut entry: crate::changes::ChangeEntry) -> crate::changes::ChangeCursor {
        let cursor = {
            let mut log = lock(&self.entries);
            log.next_position += 1;
            entry.cursor = crate::changes::ChangeCursor::at(log.next_position);
            log.entries.push(entry);
            crate::changes::ChangeCursor::at(log.next_position)
        };
        self.appended.send_modify(|n| *n += 1);
        cursor
    }

    /// Forgets every entry up to `through`, as retention does.
    pub fn prune_through(&self, through: crate::changes::ChangeCursor) {
        let mut log = lock(&self.entries);
        log.entries.retain(|e| e.cursor > through);
        log.pruned_through = log.pruned_through.max(through.position());
    }

    fn read(
        &self,
        query: &crate::changes::ChangeQuery,
        after: crate::changes::ChangeCursor,
    ) -> Result<crate::changes::ChangePage, crate::changes::ChangeFeedError> {
        use crate::changes::{ChangeCursor, ChangeFeedError, ChangePage, cursor_expired};
        let log = lock(&self.entries);
        let pruned = ChangeCursor::at(log.pruned_through);
        if cursor_expired(after, pruned) {
            return Err(ChangeFeedError::Expired {
                after,
                oldest: pruned,
            });
        }
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let changes: Vec<_> = log
            .entries
            .iter()
            .filter(|e| e.cursor > after && query.matches(e))
            .take(limit)
            .cloned()
            .collect();
        let head = ChangeCursor::at(log.next_position);
        let next_cursor = if changes.len() < limit {
            head
        } else {
            changes.last().map_or(head, |e| e.cursor)
        };
        Ok(ChangePage {
            changes,
            next_cursor,
        })
    }
}

#[async_trait]
impl crate::changes::ChangeFeed for FakeChangeFeed {
    async fn changes(
        &self,
        query: &crate::changes::ChangeQuery,
        wait: std::time::Duration,
    ) -> Result<crate::changes::ChangePage, crate::changes::ChangeFeedError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut appended = self.appended.subscribe();
        let mut after = match query.after {
            Some(after) => after,
            None => crate::changes::ChangeCursor::at(lock(&self.entries).next_position),
        };
        loop {
            appended.borrow_and_update();
            let page = self.read(query, after)?;
            if !page.changes.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            after = page.next_cursor;
            if tokio::time::timeout_at(deadline, appended.changed())
                .await
                .is_err()
            {
                return self.read(query, after);
            }
        }
    }

    async fn oldest_cursor(&self) -> Result<crate::changes::ChangeCursor, StoreError> {
        Ok(crate::changes::ChangeCursor::at(
            lock(&self.entries).pruned_through,
        ))
    }
}
