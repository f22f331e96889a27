//! A short-lived, in-process cache of channel lookups for the webhook's hot path.
//!
//! A channel's token and calendar never change, so a found, active channel is
//! kept for [`TTL`]: the repeated notifications of a busy calendar then cost
//! one database round trip (the write) instead of two. Correctness does not
//! rest on the cache: before it writes a request, the write itself re-checks,
//! in the same statement, that the channel is not stopped, that the calendar is
//! not gone and that its user still has credentials, and it refuses duplicates
//! (see `webhook.rs`; a calendar with a request pending gets no write at all). Channels
//! this process stops or disconnects are forgotten at once; another instance's
//! stop is seen within the TTL by the write (nothing is recorded) and, before a
//! token is refused, by a fresh lookup (`find_channel_uncached`), so a stopped
//! channel is answered as unknown. The only trace left: within the TTL, a
//! `sync` handshake on it is answered as a handshake, which is also `200 {}`.

use quick_cache::sync::Cache;
use std::time::{Duration, Instant};
use sync_domain::{ChannelId, ChannelRecord};

/// How long a lookup is reused.
pub const TTL: Duration = Duration::from_secs(30);
/// Entries kept at most (about 200 bytes each by their sizes, so about 4 MB):
/// the channels that notify again within [`TTL`] are what it is for, and past
/// this many quick_cache's S3-FIFO evicts, which keeps a scan of channels seen
/// once (as in the cold mix) from pushing out the busy ones. The bound was
/// 100,000 entries of about 300 bytes, up to 30 MB, which the cold mix filled
/// in step with its throughput (`docs/benchmarks.md`, seventh session).
pub const CAPACITY: usize = 20_000;

/// How long an id the database did not know is answered as unknown without
/// asking again: short, since a channel registered elsewhere meanwhile would
/// go unrecognised for that long (ids are fresh random UUIDs, so in practice
/// only strangers' ids land here).
pub const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Unknown ids kept at most.
pub const UNKNOWN_CAPACITY: usize = 5_000;

/// Channel id to (record, when it was read), and ids recently found unknown.
pub(crate) struct ChannelCache {
    entries: Cache<ChannelId, (ChannelRecord, Instant)>,
    unknown: Cache<ChannelId, Instant>,
}

impl Default for ChannelCache {
    fn default() -> Self {
        Self {
            entries: Cache::new(CAPACITY),
            unknown: Cache::new(UNKNOWN_CAPACITY),
        }
    }
}

impl std::fmt::Debug for ChannelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelCache")
            .field("entries", &self.entries.len())
            .field("unknown", &self.unknown.len())
            .finish()
    }
}

impl ChannelCache {
    /// Whether `channel_id` was found unknown within [`UNKNOWN_TTL`].
    pub(crate) fn is_unknown(&self, channel_id: &ChannelId) -> bool {
        self.unknown
            .get(channel_id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
    }

    /// Remembers that the database does not know `channel_id`.
    pub(crate) fn put_unknown(&self, channel_id: &ChannelId) {
        self.unknown.insert(channel_id.clone(), Instant::now());
    }

    /// A fresh cached record, if any.
    pub(crate) fn get(&self, channel_id: &ChannelId) -> Option<ChannelRecord> {
        let (record, read_at) = self.entries.get(channel_id)?;
        (read_at.elapsed() < TTL).then_some(record)
    }

    /// Remembers an active channel's record (inactive ones are always re-read).
    pub(crate) fn put(&self, channel_id: &ChannelId, record: &ChannelRecord) {
        if !record.calendar_active {
            return;
        }
        self.entries
            .insert(channel_id.clone(), (record.clone(), Instant::now()));
    }

    /// Forgets one channel, known or unknown.
    pub(crate) fn forget(&self, channel_id: &ChannelId) {
        self.entries.remove(channel_id);
        self.unknown.remove(channel_id);
    }

    /// Forgets everything (after this process changed a channel's state).
    pub(crate) fn clear(&self) {
        self.entries.clear();
        self.unknown.clear();
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
        for n in 0..=2 * UNKNOWN_CAPACITY {
            cache.put_unknown(&ChannelId::parse(format!("id-{n}")).unwrap());
        }
        assert!(cache.unknown.len() <= UNKNOWN_CAPACITY);
        for n in 0..=2 * CAPACITY {
            cache.put(&ChannelId::parse(format!("id-{n}")).unwrap(), &record(true));
        }
        assert!(cache.entries.len() <= CAPACITY);
    }
}
