//! The one retry policy (issue 12): exponential backoff with jitter drawn
//! from the [`Entropy`] port, every wait capped at [`MAX_DELAY`] (SPEC
//! section 6), and checked arithmetic for every duration added to an instant.
//!
//! The Google client (between attempts of one call), the sync worker (between
//! failed syncs) and the channel worker (between failed registrations and
//! stops) all compute their waits here; they differ only in their parameters
//! ([`RetryPolicy::SYNC`], [`RetryPolicy::CHANNEL`], the client's own bounds).

use crate::ports::Entropy;
use std::time::Duration;
use time::OffsetDateTime;

/// No wait is ever longer than this, whatever `Retry-After` or the backoff says:
/// a rate limit must not park a calendar for years.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How a wait is spread around its exponential ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]` ("full jitter"): spreads many callers most.
    Full,
    /// The ceiling plus up to half of it again: never earlier than the ceiling.
    UpToHalfMore,
}

/// Exponential backoff: the ceiling doubles per failure from `base` up to
/// `cap`, jittered, floored by Google's `Retry-After`, and never above
/// [`MAX_DELAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling after the first failure.
    pub base: Duration,
    /// The ceiling never grows past this (jitter may add to it, [`MAX_DELAY`] bounds all).
    pub cap: Duration,
    /// How the wait is drawn below or around the ceiling.
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// Between failed syncs of a calendar.
    pub const SYNC: Self = Self {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(15 * 60),
        jitter: Jitter::Full,
    };

    /// Between failed channel registrations and stops.
    pub const CHANNEL: Self = Self {
        base: Duration::from_secs(30),
        cap: MAX_DELAY,
        jitter: Jitter::UpToHalfMore,
    };

    /// The ceiling after `failures` consecutive failures (1 = the first).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        self.base
            .saturating_mul(1u32 << exponent)
            .min(self.cap)
            .min(MAX_DELAY)
    }

    /// The wait after `failures` consecutive failures, for a `unit` draw in
    /// `[0, 1]` (clamped; not finite counts as 0): jittered, never shorter than
    /// `retry_after`, never longer than [`MAX_DELAY`].
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = self.ceiling(failures);
        let jittered = match self.jitter {
            Jitter::Full => ceiling.mul_f64(unit),
            Jitter::UpToHalfMore => ceiling.saturating_add(ceiling.mul_f64(0.5 * unit)),
        };
        retry_after
            .map_or(jittered, |floor| jittered.max(floor))
            .min(MAX_DELAY)
    }

    /// [`Self::delay`] with the draw taken from `entropy`.
    pub fn draw(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        entropy: &dyn Entropy,
    ) -> Duration {
        self.delay(failures, retry_after, entropy.unit())
    }

    /// When to retry, failing at `now`: [`Self::delay`] added with [`later`].
    pub fn retry_at(
        &self,
        now: OffsetDateTime,
        failures: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> OffsetDateTime {
        later(now, self.delay(failures, retry_after, unit))
    }
}

/// The latest instant [`later`] returns: the end of year 9999, which every
/// database column and formatter still holds.
pub fn far_future() -> OffsetDateTime {
    time::macros::datetime!(9999-12-31 23:59:59 UTC)
}

/// `at + by`, saturating at [`far_future`] instead of overflowing (a duration
/// from outside, such as `expires_in` or `Retry-After`, can be anything).
pub fn later(at: OffsetDateTime, by: Duration) -> OffsetDateTime {
    time::Duration::try_from(by)
        .ok()
        .and_then(|by| at.checked_add(by))
        .map_or_else(far_future, |t| t.min(far_future()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn full_jitter_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: SECOND,
            cap: Duration::from_secs(10),
            jitter: Jitter::Full,
        };
        assert_eq!(p.delay(1, None, 1.0), SECOND);
        assert_eq!(p.delay(2, None, 1.0), 2 * SECOND);
        assert_eq!(p.delay(4, None, 1.0), 8 * SECOND);
        assert_eq!(p.delay(5, None, 1.0), 10 * SECOND);
        assert_eq!(p.delay(500, None, 1.0), 10 * SECOND);
        assert_eq!(p.delay(3, None, 0.0), Duration::ZERO);
    }

    #[test]
    fn channel_retries_wait_at_least_the_ceiling_and_at_most_an_hour() {
        let p = RetryPolicy::CHANNEL;
        assert_eq!(p.delay(1, None, 0.0), Duration::from_secs(30));
        assert_eq!(p.delay(2, None, 0.0), Duration::from_secs(60));
        assert_eq!(p.delay(1, None, 1.0), Duration::from_secs(45));
        assert_eq!(p.delay(40, None, 0.9), MAX_DELAY);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let wait = Some(Duration::from_secs(120));
        assert_eq!(
            RetryPolicy::SYNC.delay(1, wait, 0.5),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn retry_after_of_thousands_of_years_is_capped_at_an_hour() {
        let years = Some(Duration::from_secs(3_000 * 365 * 24 * 3600));
        assert_eq!(RetryPolicy::SYNC.delay(1, years, 0.5), MAX_DELAY);
        let huge = Some(Duration::from_secs(u64::MAX));
        assert_eq!(RetryPolicy::CHANNEL.delay(1, huge, 0.5), MAX_DELAY);
    }

    #[test]
    fn adding_ten_to_the_twelve_seconds_saturates_instead_of_panicking() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            later(now, Duration::from_secs(1_000_000_000_000)),
            far_future()
        );
        assert_eq!(later(now, Duration::MAX), far_future());
        assert_eq!(later(now, SECOND), now + SECOND);
    }

    #[test]
    fn a_draw_that_is_not_finite_counts_as_zero() {
        assert_eq!(RetryPolicy::SYNC.delay(3, None, f64::NAN), Duration::ZERO);
        assert_eq!(
            RetryPolicy::CHANNEL.delay(1, None, f64::INFINITY),
            Duration::from_secs(30)
        );
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_its_bounds(
            failures in 0u32..200, unit in proptest::num::f64::ANY,
            base_ms in 0u64..10_000_000, cap_ms in 0u64..100_000_000,
            after in proptest::option::of(proptest::num::u64::ANY),
            full: bool,
        ) {
            let p = RetryPolicy {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
                jitter: if full { Jitter::Full } else { Jitter::UpToHalfMore },
            };
            let after = after.map(Duration::from_secs);
            let d = p.delay(failures, after, unit);
            prop_assert!(d <= MAX_DELAY);
            if let Some(floor) = after { prop_assert!(d >= floor.min(MAX_DELAY)); }
            let at = p.retry_at(OffsetDateTime::UNIX_EPOCH, failures, after, unit);
            prop_assert!(at <= OffsetDateTime::UNIX_EPOCH + MAX_DELAY);
        }

        #[test]
        fn later_never_panics_and_never_goes_back(secs in proptest::num::u64::ANY, nanos in 0u32..1_000_000_000) {
            let now = OffsetDateTime::UNIX_EPOCH;
            let t = later(now, Duration::new(secs, nanos));
            prop_assert!(t >= now && t <= far_future());
        }
    }
}
