//! In-memory fakes of the ports, for tests in this workspace and in other
//! Chronos services (feature `fakes`).

use crate::admin::{ChannelToStop, StopLedger};
use crate::channel::{
    Activation, ChannelState, ChannelStore, ChannelWork, FailedRegistration, GrantedChannel,
    LEASE_LOST, NewChannel, PushMode, activate, register, retire, stop,
};
use crate::ids::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
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
use std::time::Duration;
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

/// A calendar as [`InMemoryChannelStore`] keeps it.
#[derive(Debug, Clone)]
pub struct FakeChannelCalendar {
    pub work: ChannelWork,
    pub push_mode: PushMode,
    /// Whether the calendar is still connected.
    pub connected: bool,
    pub current_resource_id: Option<ResourceId>,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    /// The lease: owner and expiry.
    pub lease: Option<(String, OffsetDateTime)>,
}

/// A channel row as [`InMemoryChannelStore`] keeps it.
#[derive(Debug, Clone)]
pub struct FakeChannelRow {
    pub channel_id: ChannelId,
    pub calendar_id: Option<CalendarId>,
    pub user_id: UserId,
    pub google_calendar_id: GoogleCalendarId,
    pub state: ChannelState,
    pub resource_id: Option<ResourceId>,
    pub expires_at: Option<OffsetDateTime>,
    pub stop_after: Option<OffsetDateTime>,
    pub stop_attempts: i32,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct ChannelBook {
    calendars: Vec<FakeChannelCalendar>,
    channels: Vec<FakeChannelRow>,
    /// How many calendars each claim returned, in order.
    claims: Vec<usize>,
}

/// An in-memory [`ChannelStore`] following the same rules as the real one,
/// on the injected clock.
pub struct InMemoryChannelStore {
    clock: std::sync::Arc<dyn Clock>,
    book: Mutex<ChannelBook>,
}

impl std::fmt::Debug for InMemoryChannelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryChannelStore")
            .field("book", &*lock(&self.book))
            .finish_non_exhaustive()
    }
}

fn transition(
    row: &mut FakeChannelRow,
    to: fn(ChannelState) -> Result<ChannelState, crate::channel::InvalidTransition>,
    now: OffsetDateTime,
) -> bool {
    match to(row.state) {
        Ok(next) => {
            row.state = next;
            row.updated_at = now;
            true
        }
        Err(_) => false,
    }
}

impl InMemoryChannelStore {
    /// An empty store on `clock`.
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self {
            clock,
            book: Mutex::new(ChannelBook::default()),
        }
    }

    /// Connects a calendar in push mode, due for its first channel now.
    pub fn add_calendar(
        &self,
        calendar_id: CalendarId,
        user_id: UserId,
        google_calendar_id: GoogleCalendarId,
    ) {
        lock(&self.book).calendars.push(FakeChannelCalendar {
            work: ChannelWork {
                calendar_id,
                user_id,
                google_calendar_id,
                current_channel_id: None,
                current_expires_at: None,
                failure_count: 0,
            },
            push_mode: PushMode::Push,
            connected: true,
            current_resource_id: None,
            next_attempt_at: None,
            last_error: None,
            lease: None,
        });
    }

    /// A calendar's row.
    pub fn calendar(&self, calendar_id: CalendarId) -> Option<FakeChannelCalendar> {
        lock(&self.book)
            .calendars
            .iter()
            .find(|c| c.work.calendar_id == calendar_id)
            .cloned()
    }

    /// Every channel row, in creation order.
    pub fn channels(&self) -> Vec<FakeChannelRow> {
        lock(&self.book).channels.clone()
    }

    /// How many calendars each claim returned, in order.
    pub fn claim_sizes(&self) -> Vec<usize> {
        lock(&self.book).claims.clone()
    }

    /// Hands a calendar's lease to `owner` until `until` (another instance).
    pub fn set_lease(&self, calendar_id: CalendarId, owner: &str, until: OffsetDateTime) {
        if let Some(c) = lock(&self.book)
            .calendars
            .iter_mut()
            .find(|c| c.work.calendar_id == calendar_id)
        {
            c.lease = Some((owner.to_owned(), until));
        }
    }

    /// Disconnects a calendar as the internal API does: its live channels retire.
    pub fn disconnect(&self, calendar_id: CalendarId) {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        book.calendars.retain(|c| c.work.calendar_id != calendar_id);
        for row in &mut book.channels {
            if row.calendar_id == Some(calendar_id) && transition(row, retire, now) {
                row.stop_after = Some(now);
                row.calendar_id = None;
            }
        }
    }

    /// Removes a calendar but leaves its channels as they are: the orphans
    /// only a crash (or an edit outside the service) leaves behind, which
    /// the channel worker's recovery sweep retires.
    pub fn orphan_channels_of(&self, calendar_id: CalendarId) {
        lock(&self.book)
            .calendars
            .retain(|c| c.work.calendar_id != calendar_id);
    }

    fn holds(calendar: &FakeChannelCalendar, owner: &str) -> bool {
        calendar.lease.as_ref().is_some_and(|(o, _)| o == owner)
    }
}

impl ChannelBook {
    fn calendar_mut(&mut self, id: CalendarId) -> Option<&mut FakeChannelCalendar> {
        self.calendars.iter_mut().find(|c| c.work.calendar_id == id)
    }

    fn channel_mut(&mut self, id: &ChannelId) -> Option<&mut FakeChannelRow> {
        self.channels.iter_mut().find(|c| &c.channel_id == id)
    }

    fn release(&mut self, id: CalendarId, owner: &str) {
        if let Some(c) = self.calendar_mut(id)
            && InMemoryChannelStore::holds(c, owner)
        {
            c.lease = None;
        }
    }
}

#[async_trait]
impl StopLedger for InMemoryChannelStore {
    async fn channel_stopped(&self, channel_id: &ChannelId) -> Result<(), StoreError> {
        let now = self.clock.now();
        if let Some(row) = lock(&self.book).channel_mut(channel_id)
            && transition(row, stop, now)
        {
            row.stop_after = None;
        }
        Ok(())
    }

    async fn channel_stop_failed(
        &self,
        channel_id: &ChannelId,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        if let Some(row) = lock(&self.book).channel_mut(channel_id)
            && row.state == ChannelState::Retiring
        {
            row.stop_attempts += 1;
            row.last_error = Some(error.to_owned());
            row.stop_after = Some(retry_at);
            row.updated_at = now;
        }
        Ok(())
    }
}

#[async_trait]
impl ChannelStore for InMemoryChannelStore {
    async fn claim_channel_work(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChannelWork>, StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        let mut due: Vec<&mut FakeChannelCalendar> = book
            .calendars
            .iter_mut()
            .filter(|c| c.push_mode == PushMode::Push && c.connected)
            .filter(|c| c.next_attempt_at.is_none_or(|at| at <= now))
            .filter(|c| c.lease.as_ref().is_none_or(|(_, until)| *until <= now))
            .collect();
        due.sort_by_key(|c| c.next_attempt_at);
        let claimed: Vec<ChannelWork> = due
            .into_iter()
            .take(usize::try_from(limit.max(0)).unwrap_or(0))
            .map(|c| {
                c.lease = Some((owner.to_owned(), now + lease));
                c.work.clone()
            })
            .collect();
        book.claims.push(claimed.len());
        Ok(claimed)
    }

    async fn renew_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        match book.calendar_mut(calendar_id) {
            Some(c) if Self::holds(c, owner) => {
                c.lease = Some((owner.to_owned(), now + lease));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
    ) -> Result<(), StoreError> {
        lock(&self.book).release(calendar_id, owner);
        Ok(())
    }

    async fn begin_registration(
        &self,
        work: &ChannelWork,
        channel: &NewChannel,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        if book.calendar_mut(work.calendar_id).is_none() {
            return Ok(false);
        }
        book.channels.push(FakeChannelRow {
            channel_id: channel.channel_id.clone(),
            calendar_id: Some(work.calendar_id),
            user_id: work.user_id.clone(),
            google_calendar_id: work.google_calendar_id.clone(),
            state: register(),
            resource_id: None,
            expires_at: None,
            stop_after: None,
            stop_attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
        });
        Ok(true)
    }

    async fn channel_registered(
        &self,
        granted: GrantedChannel<'_>,
    ) -> Result<Activation, StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        let still_held = book
            .calendar_mut(granted.calendar_id)
            .is_some_and(|c| Self::holds(c, granted.owner));
        if !still_held {
            if let Some(row) = book.channel_mut(granted.channel_id)
                && transition(row, retire, now)
            {
                row.resource_id = Some(granted.resource_id.clone());
                row.expires_at = granted.expires_at;
                row.stop_after = Some(now);
                row.last_error = Some(LEASE_LOST.to_owned());
            }
            return Ok(Activation::LeaseLost);
        }
        let stop_after = now + granted.overlap;
        for row in &mut book.channels {
            if row.calendar_id != Some(granted.calendar_id) {
                continue;
            }
            if &row.channel_id == granted.channel_id {
                transition(row, activate, now);
                row.resource_id = Some(granted.resource_id.clone());
                row.expires_at = granted.expires_at;
            } else if row.state == ChannelState::Active {
                transition(row, retire, now);
                row.stop_after = Some(stop_after);
            } else if row.state == ChannelState::Retiring && row.resource_id.is_none() {
                row.resource_id = Some(granted.resource_id.clone());
                row.stop_after = Some(now);
            } else if row.state == ChannelState::Retiring
                && row.stop_after.is_some_and(|at| at <= now)
            {
                row.stop_after = Some(stop_after);
            }
        }
        if let Some(c) = book.calendar_mut(granted.calendar_id) {
            c.work.current_channel_id = Some(granted.channel_id.as_str().to_owned());
            c.work.current_expires_at = granted.expires_at;
            c.work.failure_count = 0;
            c.current_resource_id = Some(granted.resource_id.clone());
            c.push_mode = PushMode::Push;
            c.next_attempt_at = Some(granted.renew_at);
            c.last_error = None;
            c.lease = None;
        }
        Ok(Activation::Activated)
    }

    async fn channel_registration_failed(
        &self,
        failure: FailedRegistration<'_>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        if let Some(row) = book.channel_mut(failure.channel_id)
            && row.state == ChannelState::Registering
        {
            let moved = match failure.outcome.next_state() {
                ChannelState::Retiring => transition(row, retire, now),
                _ => transition(row, stop, now),
            };
            if moved {
                row.stop_after = (row.state == ChannelState::Retiring).then_some(now);
                row.last_error = Some(failure.error.to_owned());
            }
        }
        if let Some(c) = book.calendar_mut(failure.calendar_id) {
            c.work.failure_count += 1;
            c.last_error = Some(failure.error.to_owned());
            c.next_attempt_at = Some(failure.retry_at);
        }
        book.release(failure.calendar_id, failure.owner);
        Ok(())
    }

    async fn switch_to_polling(
        &self,
        calendar_id: CalendarId,
        channel_id: &ChannelId,
        owner: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        for row in &mut book.channels {
            if &row.channel_id == channel_id {
                transition(row, stop, now);
                row.last_error = Some(reason.to_owned());
            } else if row.calendar_id == Some(calendar_id) && row.state == ChannelState::Active {
                transition(row, retire, now);
                row.stop_after = Some(now);
            }
        }
        if let Some(c) = book.calendar_mut(calendar_id) {
            c.push_mode = PushMode::Polling;
            c.work.current_channel_id = None;
            c.work.current_expires_at = None;
            c.current_resource_id = None;
            c.last_error = Some(reason.to_owned());
            c.next_attempt_at = None;
        }
        book.release(calendar_id, owner);
        Ok(())
    }

    async fn retire_abandoned_channels(
        &self,
        abandoned_before: OffsetDateTime,
        max_ttl: Duration,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut book = lock(&self.book);
        let live: Vec<CalendarId> = book.calendars.iter().map(|c| c.work.calendar_id).collect();
        let mut retired = 0;
        for row in &mut book.channels {
            let abandoned =
                row.state == ChannelState::Registering && row.created_at <= abandoned_before;
            let orphaned = row.state == ChannelState::Active
                && row.calendar_id.is_none_or(|id| !live.contains(&id));
            if (abandoned || orphaned) && transition(row, retire, now) {
                row.stop_after = Some(now);
                if abandoned {
                    row.expires_at = Some(row.created_at + max_ttl);
                }
                retired += 1;
            }
        }
        Ok(retired)
    }

    async fn channels_due_for_stop(&self, limit: i64) -> Result<Vec<ChannelToStop>, StoreError> {
        let now = self.clock.now();
        let book = lock(&self.book);
        let mut due: Vec<&FakeChannelRow> = book
            .channels
            .iter()
            .filter(|c| c.state == ChannelState::Retiring)
            .filter(|c| c.stop_after.is_none_or(|at| at <= now))
            .collect();
        due.sort_by_key(|c| c.stop_after);
        Ok(due
            .into_iter()
            .take(usize::try_from(limit.max(0)).unwrap_or(0))
            .map(|c| ChannelToStop {
                channel_id: c.channel_id.clone(),
                resource_id: c.resource_id.clone().or_else(|| {
                    book.channels
                        .iter()
                        .filter(|o| {
                            o.user_id == c.user_id && o.google_calendar_id == c.google_calendar_id
                        })
                        .filter_map(|o| o.resource_id.clone())
                        .next_back()
                }),
                user_id: c.user_id.clone(),
                google_calendar_id: c.google_calendar_id.clone(),
                stop_attempts: c.stop_attempts,
                expires_at: c.expires_at,
            })
            .collect())
    }

    async fn delete_stopped_channels(
        &self,
        stopped_before: OffsetDateTime,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let mut book = lock(&self.book);
        let mut budget = usize::try_from(limit.max(0)).unwrap_or(0);
        let before = book.channels.len();
        book.channels.retain(|c| {
            let expired = c.state == ChannelState::Stopped && c.updated_at < stopped_before;
            if expired && budget > 0 {
                budget -= 1;
                false
            } else {
                true
            }
        });
        Ok(before - book.channels.len())
    }
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
