//! When to retry a rate-limited or transient call, and how long to wait.

use crate::config::RetryPolicy;
use std::time::Duration;
use sync_domain::calendar::GoogleError;
use sync_domain::ports::{Entropy, is_retryable};
use sync_domain::retry::{self, Jitter};
use tokio::time::Instant;

/// The retry state of one logical call.
pub(crate) struct Backoff<'a> {
    policy: RetryPolicy,
    entropy: &'a dyn Entropy,
    started: Instant,
    attempts: u32,
}

impl<'a> Backoff<'a> {
    /// Starts counting: the first attempt is about to be made; jitter is drawn from `entropy`.
    pub(crate) fn start(policy: RetryPolicy, entropy: &'a dyn Entropy) -> Self {
        Self {
            policy,
            entropy,
            started: Instant::now(),
            attempts: 1,
        }
    }

    /// The wait before the next attempt after `error`, or `None` to give up.
    pub(crate) fn next_delay(&mut self, error: &GoogleError) -> Option<Duration> {
        if !is_retryable(error) || self.attempts >= self.policy.max_attempts {
            return None;
        }
        let jittered = full_jitter(self.policy, self.attempts, self.entropy.unit());
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

/// The wait after `failures` failed attempts, uniform in
/// `0..=min(max_delay, base_delay * 2^(failures-1))` for a `unit` draw in `[0, 1]`:
/// the domain's one retry policy with the client's bounds.
fn full_jitter(policy: RetryPolicy, failures: u32, unit: f64) -> Duration {
    retry::RetryPolicy {
        base: policy.base_delay,
        cap: policy.max_delay,
        jitter: Jitter::Full,
    }
    .delay(failures, None, unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_domain::fakes::CountingEntropy;

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
        let entropy = CountingEntropy::default();
        for retry in 0..10 {
            let cap = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_millis(800));
            for _ in 0..200 {
                assert!(full_jitter(policy(5), retry + 1, entropy.unit()) <= cap);
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let entropy = CountingEntropy::default();
        let draws: std::collections::HashSet<Duration> = (0..50)
            .map(|_| full_jitter(policy(5), 4, entropy.unit()))
            .collect();
        assert!(draws.len() > 10);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let entropy = CountingEntropy::default();
        let mut backoff = Backoff::start(policy(3), &entropy);
        let e = GoogleError::Transient("503".into());
        assert!(backoff.next_delay(&e).is_some());
        assert!(backoff.next_delay(&e).is_some());
        assert_eq!(backoff.next_delay(&e), None);
        assert_eq!(backoff.attempts(), 3);
    }

    #[test]
    fn never_retries_what_is_not_retryable() {
        let entropy = CountingEntropy::default();
        let mut backoff = Backoff::start(policy(5), &entropy);
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
        let entropy = CountingEntropy::default();
        let mut backoff = Backoff::start(policy(5), &entropy);
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
        let entropy = CountingEntropy::default();
        let mut backoff = Backoff::start(
            RetryPolicy {
                max_total: Duration::from_millis(50),
                ..policy(10)
            },
            &entropy,
        );
        let hinted = GoogleError::RateLimited {
            retry_after: Some(Duration::from_millis(60)),
        };
        assert_eq!(backoff.next_delay(&hinted), None);
    }
}
