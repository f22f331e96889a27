//! When to renew a watch channel, when to retry a failed registration or stop,
//! and when an unfinished registration counts as abandoned (SPEC section 7).
//!
//! Google grants a channel a lifetime of at most what was asked; nothing renews
//! it on its own. A [`RenewalPlan`] renews well before expiry: the lead time is
//! a fifth of the granted lifetime, kept between [`MIN_LEAD`] and [`MAX_LEAD`]
//! (but never more than half the lifetime), plus up to a quarter more as jitter
//! so that channels created together do not all renew in the same second. The
//! renewal instant is never after expiry.

use std::time::Duration;
use time::OffsetDateTime;

/// Shortest lead time before expiry (for lifetimes long enough to allow it).
pub const MIN_LEAD: Duration = Duration::from_secs(10 * 60);
/// Longest lead time before expiry.
pub const MAX_LEAD: Duration = Duration::from_secs(24 * 3600);
/// First retry delay after a failed registration or stop.
pub const RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// Shortest retry delay, even when a channel is about to expire.
pub const RETRY_MIN: Duration = Duration::from_secs(5);
/// How long old and new channel both stay open after a switch-over, so
/// notifications already in flight on the old one are still accepted.
pub const OVERLAP: Duration = Duration::from_secs(60);
/// After this long a channel still `registering` is abandoned: the process that
/// called `events.watch` died (or never got an answer) and will not finish it.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long the channel worker leaves a disconnected calendar's channels to the
/// disconnecting caller, who stops them at once; after that it stops them itself.
pub const DISCONNECT_STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a stopped channel's row is kept (for the record) before it is deleted.
pub const STOPPED_CHANNEL_RETENTION: Duration = Duration::from_secs(72 * 3600);

/// When a granted channel is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPlan {
    /// When Google said the channel expires (or when it was assumed to).
    pub expires_at: OffsetDateTime,
    /// When to create its successor.
    pub renew_at: OffsetDateTime,
}

impl RenewalPlan {
    /// The plan for a channel granted at `granted_at`, expiring at `expires_at`
    /// (`None`: Google gave no expiration, so the requested `ttl` is assumed).
    /// `jitter` is a uniform random number in `[0, 1)`; values outside are clamped.
    pub fn new(
        granted_at: OffsetDateTime,
        expires_at: Option<OffsetDateTime>,
        ttl: Duration,
        jitter: f64,
    ) -> Self {
        let expires_at = expires_at.unwrap_or(granted_at + ttl);
        let lifetime = if expires_at > granted_at {
            (expires_at - granted_at).unsigned_abs()
        } else {
            Duration::ZERO
        };
        let lead = lead_time(lifetime);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Jitter only ever moves renewal earlier, and never past half the lifetime.
        let extra = lead
            .mul_f64(0.25 * jitter)
            .min(lifetime / 2 - lead.min(lifetime / 2));
        let renew_at = (expires_at - (lead + extra)).max(granted_at.min(expires_at));
        Self {
            expires_at,
            renew_at,
        }
    }

    /// Whether the channel should be renewed at `now`.
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        now >= self.renew_at
    }
}

/// The lead time for a channel of this lifetime (before jitter).
pub fn lead_time(lifetime: Duration) -> Duration {
    (lifetime / 5).clamp(MIN_LEAD, MAX_LEAD).min(lifetime / 2)
}

/// Exponential backoff with jitter: after the `failures`-th consecutive
/// failure (1 = first), wait this long. `jitter` in `[0, 1)` adds up to 50 %.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let base = RETRY_BASE.saturating_mul(1 << exponent).min(RETRY_MAX);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (base + base.mul_f64(0.5 * jitter)).min(RETRY_MAX)
}

/// When to retry a failed renewal: the backoff, but while the current channel
/// still lives, no later than halfway to its expiry, so retries keep coming
/// before the gap would open.
pub fn retry_at(
    now: OffsetDateTime,
    failures: u32,
    jitter: f64,
    current_expires_at: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let backoff = now + retry_delay(failures, jitter);
    match current_expires_at {
        Some(expires) if expires > now => {
            let halfway = now + (expires - now).unsigned_abs() / 2;
            backoff.min(halfway.max(now + RETRY_MIN))
        }
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_week_long_channel_renews_a_day_before_expiry_without_jitter() {
        let plan = RenewalPlan::new(at(0), Some(at(0) + WEEK), WEEK, 0.0);
        assert_eq!(plan.renew_at, at(0) + WEEK - MAX_LEAD);
    }

    #[test]
    fn an_hour_long_channel_renews_twelve_minutes_before_expiry() {
        let plan = RenewalPlan::new(at(0), Some(at(3600)), WEEK, 0.0);
        assert_eq!(plan.renew_at, at(3600 - 720));
    }

    #[test]
    fn a_short_channel_renews_at_half_its_life() {
        let plan = RenewalPlan::new(at(0), Some(at(600)), WEEK, 0.99);
        assert_eq!(plan.renew_at, at(300));
    }

    #[test]
    fn missing_expiration_assumes_the_requested_ttl() {
        let plan = RenewalPlan::new(at(0), None, HOUR, 0.0);
        assert_eq!(plan.expires_at, at(3600));
    }

    #[test]
    fn an_already_expired_channel_is_due_at_once() {
        let plan = RenewalPlan::new(at(100), Some(at(50)), HOUR, 0.5);
        assert!(plan.is_due(at(100)));
        assert!(plan.renew_at <= plan.expires_at);
    }

    #[test]
    fn retries_back_off_up_to_an_hour() {
        assert_eq!(retry_delay(1, 0.0), RETRY_BASE);
        assert_eq!(retry_delay(2, 0.0), RETRY_BASE * 2);
        assert_eq!(retry_delay(40, 0.0), RETRY_MAX);
        assert_eq!(retry_delay(40, 0.9), RETRY_MAX);
    }

    #[test]
    fn a_renewal_retry_comes_before_the_current_channel_expires() {
        let now = at(0);
        let retry = retry_at(now, 10, 0.0, Some(at(600)));
        assert_eq!(retry, at(300));
        assert_eq!(retry_at(now, 10, 0.0, None), now + RETRY_MAX);
    }

    proptest! {
        #[test]
        fn renewal_is_never_after_expiry_nor_before_grant(
            granted in 0i64..1_000_000, lifetime in 0u64..2_000_000,
            ttl in 60u64..2_000_000, jitter in -1.0f64..2.0,
        ) {
            let granted_at = at(granted);
            let expires = granted_at + Duration::from_secs(lifetime);
            let plan = RenewalPlan::new(granted_at, Some(expires), Duration::from_secs(ttl), jitter);
            prop_assert!(plan.renew_at <= plan.expires_at);
            prop_assert!(plan.renew_at >= granted_at);
            let lead = (plan.expires_at - plan.renew_at).unsigned_abs();
            let life = Duration::from_secs(lifetime);
            // Well before expiry: at least the unjittered lead, at most half the life.
            prop_assert!(lead >= lead_time(life));
            prop_assert!(lead <= life / 2 + Duration::from_secs(1));
        }

        #[test]
        fn retries_are_bounded_and_grow(failures in 1u32..100, jitter in 0.0f64..1.0) {
            let d = retry_delay(failures, jitter);
            prop_assert!(d >= RETRY_BASE.min(RETRY_MAX) && d <= RETRY_MAX);
            prop_assert!(retry_delay(failures + 1, 0.0) >= retry_delay(failures, 0.0));
        }

        #[test]
        fn renewal_retries_land_before_expiry(
            failures in 1u32..100, jitter in 0.0f64..1.0, remaining in 11i64..2_000_000,
        ) {
            let now = at(0);
            let retry = retry_at(now, failures, jitter, Some(at(remaining)));
            prop_assert!(retry < at(remaining));
            prop_assert!(retry >= now + RETRY_MIN.min(Duration::from_secs(remaining as u64 / 2)));
        }
    }
}
