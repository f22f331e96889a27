//! When to retry a rate-limited or transient call, and how long to wait.

use crate::config::RetryPolicy;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use sync_domain::calendar::GoogleError;
use sync_domain::ports::is_retryable;
use tokio::time::Instant;

/// The retry state of one logical call.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    started: Instant,
    attempts: u32,
}

impl Backoff {
    /// Starts counting: the first attempt is about to be made.
    pub(crate) fn start(policy: RetryPolicy) -> Self {
        Self {
            policy,
            started: Instant::now(),
            attempts: 1,
        }
    }

    /// The wait before the next attempt after `error`, or `None` to give up.
    pub(crate) fn next_delay(&mut self, error: &GoogleError) -> Option<Duration> {
        if !is_retryable(error) || self.attempts >= self.policy.max_attempts {
            return None;
        }
        let jittered = full_jitter(self.policy, self.attempts - 1);
        let delay = match error {
            // Google's own hint wins over our guess, unless it exceeds our bound:
            // then the caller gets the error (with the hint) and schedules later.
            GoogleError::RateLimited {
                retry_after: Some(hint),
            } => {
                if *hint > self.policy.max_delay {
                    return None;
                }
                (*hint).max(jittered)
            }
            _ => jittered,
        };
        if self.started.elapsed() + delay > self.policy.max_total {
            return None;
        }
        self.attempts += 1;
        Some(delay)
    }

    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// A delay drawn uniformly from `0..=min(max_delay, base_delay * 2^retry)`.
fn full_jitter(policy: RetryPolicy, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    let cap = policy
        .base_delay
        .checked_mul(factor)
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay);
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    if cap_nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % (cap_nanos + 1).max(1))
}

/// Jitter needs spread, not secrecy: a per-process random hash key over a counter.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            max_total: Duration::from_secs(3600),
        }
    }

    #[test]
    fn jitter_stays_within_the_exponential_cap() {
        for retry in 0..10 {
            let cap = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_millis(800));
            for _ in 0..200 {
                assert!(full_jitter(policy(5), retry) <= cap);
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let draws: std::collections::HashSet<Duration> =
            (0..50).map(|_| full_jitter(policy(5), 3)).collect();
        assert!(draws.len() > 10);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let mut backoff = Backoff::start(policy(3));
        let e = GoogleError::Transient("503".into());
        assert!(backoff.next_delay(&e).is_some());
        assert!(backoff.next_delay(&e).is_some());
        assert_eq!(backoff.next_delay(&e), None);
        assert_eq!(backoff.attempts(), 3);
    }

    #[test]
    fn never_retries_what_is_not_retryable() {
        let mut backoff = Backoff::start(policy(5));
        for e in [
            GoogleError::FullSyncRequired,
            GoogleError::NotFound,
            GoogleError::InvalidGrant,
            GoogleError::PushNotSupported,
            GoogleError::Unauthorized,
        ] {
            assert_eq!(backoff.next_delay(&e), None);
        }
    }

    #[test]
    fn retry_after_is_honoured_and_bounded() {
        let mut backoff = Backoff::start(policy(5));
        let hinted = GoogleError::RateLimited {
            retry_after: Some(Duration::from_millis(700)),
        };
        let delay = backoff.next_delay(&hinted).unwrap();
        assert!(delay >= Duration::from_millis(700));
        let too_long = GoogleError::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(backoff.next_delay(&too_long), None);
    }

    #[test]
    fn total_time_bounds_the_retries() {
        let mut backoff = Backoff::start(RetryPolicy {
            max_total: Duration::from_millis(50),
            ..policy(10)
        });
        let hinted = GoogleError::RateLimited {
            retry_after: Some(Duration::from_millis(60)),
        };
        assert_eq!(backoff.next_delay(&hinted), None);
    }
}
