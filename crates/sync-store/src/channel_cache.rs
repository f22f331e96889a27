//! A short-lived, in-process cache of channel lookups for the webhook's hot path.
//!
//! A channel's token and calendar never change, so a found, active channel is
//! kept for [`TTL`]: the repeated notifications of a busy calendar then cost
//! one database round trip (the write) instead of two. Correctness does not
//! rest on the cache: the write itself re-checks, in the same statement, that
//! the channel is not stopped, that the calendar is not gone and that its user
//! still has credentials, and refuses duplicates (see `webhook.rs`). Channels
//! this process stops or disconnects are forgotten at once; another instance's
//! stop is seen within the TTL by the write (nothing is recorded) and, before a
//! token is refused, by a fresh lookup (`find_channel_uncached`), so a stopped
//! channel is answered as unknown. The only trace left: within the TTL, a
//! `sync` handshake on it is answered as a handshake, which is also `200 {}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use sync_domain::{ChannelId, ChannelRecord};

/// How long a lookup is reused.
pub const TTL: Duration = Duration::from_secs(30);
/// Entries kept at most (about 300 bytes each); the cache empties when full.
pub const CAPACITY: usize = 100_000;

/// How long an id the database did not know is answered as unknown without
/// asking again: short, since a channel registered elsewhere meanwhile would
/// go unrecognised for that long (ids are fresh random UUIDs, so in practice
/// only strangers' ids land here).
pub const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Unknown ids kept at most (the cache of them empties when full).
pub const UNKNOWN_CAPACITY: usize = 10_000;

/// Channel id to (record, when it was read), and ids recently found unknown.
#[derive(Debug, Default)]
pub(crate) struct ChannelCache {
    entries: Mutex<HashMap<ChannelId, (ChannelRecord, Instant)>>,
    unknown: Mutex<HashMap<ChannelId, Instant>>,
}

impl ChannelCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, (ChannelRecord, Instant)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn unknown(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Instant>> {
        self.unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `channel_id` was found unknown within [`UNKNOWN_TTL`].
    pub(crate) fn is_unknown(&self, channel_id: &ChannelId) -> bool {
        self.unknown()
            .get(channel_id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    /// Remembers that the database does not know `channel_id`.
    pub(crate) fn put_unknown(&self, channel_id: &ChannelId) {
        let mut unknown = self.unknown();
        if unknown.len() >= UNKNOWN_CAPACITY {
            unknown.clear();
        }
        unknown.insert(channel_id.clone(), Instant::now());
    }

    /// A fresh cached record, if any.
    pub(crate) fn get(&self, channel_id: &ChannelId) -> Option<ChannelRecord> {
        let entries = self.entries();
        let (record, read_at) = entries.get(channel_id)?;
        (read_at.elapsed() < TTL).then(|| record.clone())
    }

    /// Remembers an active channel's record (inactive ones are always re-read).
    pub(crate) fn put(&self, channel_id: &ChannelId, record: &ChannelRecord) {
        if !record.calendar_active {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(channel_id.clone(), (record.clone(), Instant::now()));
    }

    /// Forgets one channel, known or unknown.
    pub(crate) fn forget(&self, channel_id: &ChannelId) {
        self.entries().remove(channel_id);
        self.unknown().remove(channel_id);
    }

    /// Forgets everything (after this process changed a channel's state).
    pub(crate) fn clear(&self) {
        self.entries().clear();
        self.unknown().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_domain::{CalendarId, ChannelToken};

    fn record(active: bool) -> ChannelRecord {
        ChannelRecord {
            token: ChannelToken::new("t"),
            calendar_id: Some(CalendarId::from_uuid(uuid::Uuid::nil())),
            calendar_active: active,
            last_message_number: None,
        }
    }

    #[test]
    fn keeps_active_channels_only_and_forgets_on_clear() {
        let cache = ChannelCache::default();
        let (a, b) = (
            ChannelId::parse("a").unwrap(),
            ChannelId::parse("b").unwrap(),
        );
        cache.put(&a, &record(true));
        cache.put(&b, &record(false));
        assert_eq!(cache.get(&a), Some(record(true)));
        assert_eq!(cache.get(&b), None);
        cache.clear();
        assert_eq!(cache.get(&a), None);
    }

    #[test]
    fn unknown_ids_are_remembered_briefly_and_boundedly() {
        let cache = ChannelCache::default();
        let a = ChannelId::parse("a").unwrap();
        assert!(!cache.is_unknown(&a));
        cache.put_unknown(&a);
        assert!(cache.is_unknown(&a));
        cache.forget(&a);
        assert!(!cache.is_unknown(&a));
        for n in 0..=UNKNOWN_CAPACITY {
            cache.put_unknown(&ChannelId::parse(format!("id-{n}")).unwrap());
        }
        assert!(cache.unknown().len() <= UNKNOWN_CAPACITY);
    }
}
