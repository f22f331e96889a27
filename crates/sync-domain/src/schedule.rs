//! When a recorded sync request becomes due (SPEC section 6).
//!
//! Requests coalesce per calendar: a request is due once no new request arrived
//! for `debounce`, or once `max_delay` passed since the first unserved request,
//! whichever is earlier, so a continuous stream never starves the sync.

use std::time::Duration;
use time::OffsetDateTime;

/// The coalescing window and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescingPolicy {
    pub debounce: Duration,
    pub max_delay: Duration,
}

impl Default for CoalescingPolicy {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(1000),
            max_delay: Duration::from_millis(10_000),
        }
    }
}

/// The instants a store compares its request timestamps against to find due
/// calendars: due if `last_requested_at <= quiet_since` or `first_requested_at <= overdue_since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueCutoffs {
    pub quiet_since: OffsetDateTime,
    pub overdue_since: OffsetDateTime,
}

impl DueCutoffs {
    /// For requests whose last time equals their first (a window that starts
    /// at the first request and is not extended, as the store keeps them):
    /// due if the first request is at or before this. One bound, so a store can
    /// find the due requests in an index on the first request's time rather
    /// than test both cut-offs on every pending request.
    pub fn first_request_due_by(&self) -> OffsetDateTime {
        self.quiet_since.max(self.overdue_since)
    }
}

impl CoalescingPolicy {
    /// When a calendar whose unserved requests span `first..=last` becomes due.
    pub fn due_at(&self, first: OffsetDateTime, last: OffsetDateTime) -> OffsetDateTime {
        (last + self.debounce).min(first + self.max_delay)
    }

    /// Whether such a calendar is due at `now`.
    pub fn is_due(&self, first: OffsetDateTime, last: OffsetDateTime, now: OffsetDateTime) -> bool {
        self.due_at(first, last) <= now
    }

    /// The cut-offs equivalent to [`Self::is_due`] at `now`, for a database query.
    pub fn cutoffs(&self, now: OffsetDateTime) -> DueCutoffs {
        DueCutoffs {
            quiet_since: now - self.debounce,
            overdue_since: now - self.max_delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms)
    }

    #[test]
    fn a_single_request_waits_for_the_debounce() {
        let p = CoalescingPolicy::default();
        assert_eq!(p.due_at(at(0), at(0)), at(1000));
    }

    #[test]
    fn a_continuous_stream_is_bounded_by_max_delay() {
        let p = CoalescingPolicy::default();
        assert_eq!(p.due_at(at(0), at(9_900)), at(10_000));
    }

    proptest! {
        #[test]
        fn due_is_never_later_than_the_bound_and_cutoffs_agree(
            first in 0i64..1_000_000, gap in 0i64..100_000, now in 0i64..2_000_000,
            debounce in 0u64..20_000, extra in 0u64..60_000,
        ) {
            let p = CoalescingPolicy {
                debounce: Duration::from_millis(debounce),
                max_delay: Duration::from_millis(debounce + extra),
            };
            let (first, last, now) = (at(first), at(first + gap), at(now));
            prop_assert!(p.due_at(first, last) <= first + p.max_delay);
            prop_assert!(p.due_at(first, last) <= last + p.debounce);
            let c = p.cutoffs(now);
            let by_cutoffs = last <= c.quiet_since || first <= c.overdue_since;
            prop_assert_eq!(p.is_due(first, last, now), by_cutoffs);
            prop_assert_eq!(p.is_due(first, first, now), first <= c.first_request_due_by());
        }
    }
}
