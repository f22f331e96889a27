//! The sync engine's rules (SPEC section 6) and its store port.
//!
//! Pure and synchronous: the backoff after a failure, which calendars the
//! safety-net poll requests, the lease timing, and what each Google error means
//! for a calendar. [`SyncQueue`] is the store side the worker drives; every call
//! that writes on behalf of a claim checks the claim's owner, so a worker whose
//! lease expired can never overwrite a newer claim.

use crate::calendar::{GoogleError, GoogleEvent};
use crate::ids::{CalendarId, GoogleCalendarId, UserId};
use crate::ports::StoreError;
use crate::repeats::{FailureFingerprint, RepeatedFailure};
use crate::retry::{RetryPolicy, later};
use crate::schedule::DueCutoffs;
use async_trait::async_trait;
use std::time::Duration;
use time::OffsetDateTime;

/// `events.list` page size the worker asks for (Google's maximum).
pub const PAGE_SIZE: u32 = 2500;

/// How often a calendar is synced without any notification when push is unavailable.
pub const POLLING_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The claim lease: how long a claim lives without a heartbeat, and how often
/// the worker renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// A claim not renewed for this long is considered abandoned.
    pub duration: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
        }
    }
}

impl LeasePolicy {
    /// The heartbeat period: a third of the lease, so two beats may be missed.
    pub fn heartbeat(&self) -> Duration {
        self.duration / 3
    }

    /// When a claim taken or renewed at `now` expires.
    pub fn expires_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        later(now, self.duration)
    }
}

/// The safety net: when a calendar not synced for a while is synced anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPolicy {
    /// For calendars with a push channel (`poll_interval_secs`).
    pub push_interval: Duration,
    /// For calendars without push (`push_mode = 'polling'`, or no `webhook_base_url`).
    pub polling_interval: Duration,
}

impl PollPolicy {
    /// The policy for a configured `poll_interval`, with or without push
    /// (`webhook_base_url` set or not). Polled calendars never wait longer than
    /// [`POLLING_INTERVAL`], nor longer than `poll_interval`.
    pub fn new(poll_interval: Duration, push_available: bool) -> Self {
        let polling_interval = poll_interval.min(POLLING_INTERVAL);
        Self {
            push_interval: if push_available {
                poll_interval
            } else {
                polling_interval
            },
            polling_interval,
        }
    }

    /// The cut-offs a store compares a calendar's last sync against at `now`.
    pub fn cutoffs(&self, now: OffsetDateTime) -> PollCutoffs {
        PollCutoffs {
            push_synced_before: earlier(now, self.push_interval),
            polling_synced_before: earlier(now, self.polling_interval),
        }
    }

    /// Whether a calendar last synced at `last_sync` (or connected at, if never)
    /// is due for a safety-net sync at `now`.
    pub fn is_due(&self, push: bool, last_sync: OffsetDateTime, now: OffsetDateTime) -> bool {
        let interval = if push {
            self.push_interval
        } else {
            self.polling_interval
        };
        later(last_sync, interval) <= now
    }
}

/// Calendars idle, without a pending request, and last synced (or connected)
/// before these instants get a safety-net request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollCutoffs {
    /// For `push_mode = 'push'`.
    pub push_synced_before: OffsetDateTime,
    /// For `push_mode = 'polling'`.
    pub polling_synced_before: OffsetDateTime,
}

/// What a claim holds: enough to sync the calendar without another read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub calendar_id: CalendarId,
    pub user_id: UserId,
    pub google_calendar_id: GoogleCalendarId,
    /// `None`: no incremental sync possible, do a full sync.
    pub sync_token: Option<String>,
    /// The mirror generation rows are stamped with.
    pub generation: i64,
    /// Consecutive failed syncs so far (drives the backoff).
    pub failure_count: i32,
    /// The last failure counted by [`crate::repeats`] and how many times in a
    /// row it happened (`None` after a success or an uncounted failure).
    pub last_failure: Option<(FailureFingerprint, i32)>,
    /// The first unserved request this claim serves (kept across failed
    /// attempts): where notification-to-synced latency starts.
    pub requested_at: Option<OffsetDateTime>,
    /// This claim's fencing token: each claim of a calendar gets a higher one.
    pub epoch: i64,
}

impl Claim {
    /// The reference every write under this claim carries.
    pub fn by<'a>(&self, owner: &'a str) -> ClaimRef<'a> {
        ClaimRef {
            calendar_id: self.calendar_id,
            owner,
            epoch: self.epoch,
        }
    }
}

/// Which claim a write is made under: the store refuses the write unless both
/// the owner and the fencing epoch still match, so a claim taken over (by
/// another instance, or another task of the same one) can change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef<'a> {
    pub calendar_id: CalendarId,
    /// The worker instance that holds the lease.
    pub owner: &'a str,
    /// The claim's fencing token ([`Claim::epoch`]).
    pub epoch: i64,
}

/// One page of changes to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct PageWrite<'a> {
    pub events: &'a [GoogleEvent],
    /// The generation to stamp the rows with.
    pub generation: i64,
    /// Present on the last page: completes the sync in the same transaction.
    pub completion: Option<SyncCompletion<'a>>,
    /// Extends the lease to this instant (every page is also a heartbeat).
    pub lease_until: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// How the last page completes a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCompletion<'a> {
    /// The `nextSyncToken` to store.
    pub sync_token: &'a str,
    /// A full sync: delete mirrored rows stamped with an older generation.
    pub sweep: bool,
}

/// What a failed sync does to its calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Keep the request pending; retry at `next_attempt_at`. `repeat`: the
    /// failure as [`crate::repeats`] counts it (`None`: not counted, e.g. a
    /// Google rate limit; the store forgets any earlier count).
    Retry {
        next_attempt_at: OffsetDateTime,
        error: String,
        repeat: Option<RepeatedFailure>,
    },
    /// The same failure on the same page [`crate::repeats::IDENTICAL_FAILURE_LIMIT`]
    /// times in a row: state `failing` with `error`, no retry scheduled, the
    /// request not put back. A new sync request tries once more.
    StopRetrying {
        error: String,
        repeat: RepeatedFailure,
    },
    /// The calendar no longer exists at Google (404): state `gone`, its channel retired.
    Gone { error: String },
    /// The user's credentials were refused or are missing: state `needs_reauth`
    /// until new credentials arrive (which re-request a sync).
    NeedsReauth { error: String },
}

/// How a Google error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Back off and retry (rate limits, 5xx, and anything unexpected: nothing is dropped).
    Retry,
    /// Calendar deleted at Google.
    Gone,
    /// Credentials refused (`invalid_grant`) or missing.
    NeedsReauth,
}

/// Classifies a Google error for the sync worker.
pub fn classify(error: &GoogleError) -> FailureKind {
    match error {
        GoogleError::NotFound => FailureKind::Gone,
        GoogleError::InvalidGrant | GoogleError::NoCredentials => FailureKind::NeedsReauth,
        _ => FailureKind::Retry,
    }
}

/// The `Retry-After` Google asked for, if any.
pub fn retry_after(error: &GoogleError) -> Option<Duration> {
    match error {
        GoogleError::RateLimited { retry_after } => *retry_after,
        _ => None,
    }
}

/// What a failed sync does to its calendar (the error-to-action mapping):
/// `google` is the Google error behind the failure, if it was one (store
/// failures and lost leases are retried); `failure_count` the failures before
/// this one; `repeat` the failure as [`crate::repeats::count_identical_failures`]
/// counted it, for failures that count (never Google's). Retries back off under
/// `policy` with the draw `jitter` in `[0, 1]`, honouring (and capping)
/// Google's `Retry-After`, until a repeated failure reaches its limit.
pub fn failure_action(
    google: Option<&GoogleError>,
    error: String,
    failure_count: i32,
    repeat: Option<RepeatedFailure>,
    now: OffsetDateTime,
    policy: &RetryPolicy,
    jitter: f64,
) -> FailureAction {
    let kind = google.map(classify);
    match (kind, repeat) {
        (Some(FailureKind::Gone), _) => FailureAction::Gone { error },
        (Some(FailureKind::NeedsReauth), _) => FailureAction::NeedsReauth { error },
        (None, Some(repeat)) if repeat.stops_retrying() => FailureAction::StopRetrying {
            error: format!(
                "stopped retrying after {} identical failures on {} \
                 (a new sync request tries again): {error}",
                repeat.count, repeat.site
            ),
            repeat,
        },
        (Some(FailureKind::Retry) | None, repeat) => {
            let failures = u32::try_from(failure_count.saturating_add(1)).unwrap_or(1);
            FailureAction::Retry {
                next_attempt_at: policy.retry_at(
                    now,
                    failures,
                    google.and_then(retry_after),
                    jitter,
                ),
                error,
                // Google's errors are retried for as long as they last.
                repeat: if kind.is_some() { None } else { repeat },
            }
        }
    }
}

/// `at - by`, saturating at the earliest instant `time` represents.
fn earlier(at: OffsetDateTime, by: Duration) -> OffsetDateTime {
    time::Duration::try_from(by)
        .ok()
        .and_then(|by| at.checked_sub(by))
        .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc())
}

/// What claiming asks of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRequest<'a> {
    /// This worker instance.
    pub owner: &'a str,
    pub now: OffsetDateTime,
    /// The coalescing cut-offs at `now`.
    pub cutoffs: DueCutoffs,
    /// The lease of the new claims.
    pub lease_until: OffsetDateTime,
    /// At most this many calendars.
    pub limit: i64,
}

/// The sync worker's view of the store.
#[async_trait]
pub trait SyncQueue: Send + Sync + 'static {
    /// Claims up to `limit` due calendars (or ones whose lease expired) for
    /// `owner`: takes the lease, marks them `syncing`, and consumes their
    /// pending request, so requests arriving during the sync make one follow-up.
    /// No two owners ever hold the same calendar.
    async fn claim_due(&self, request: ClaimRequest<'_>) -> Result<Vec<Claim>, StoreError>;

    /// Extends a claim; `false` if it is no longer held.
    async fn renew_lease(
        &self,
        claim: ClaimRef<'_>,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Starts a full sync: forgets the sync token and returns the new generation
    /// (`None` if the claim is no longer held).
    async fn begin_full_sync(
        &self,
        claim: ClaimRef<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError>;

    /// Applies one page in one transaction (one upsert for all its events);
    /// with a completion, also stores the sync token, sweeps if asked, marks
    /// the calendar synced and releases the claim. `false` if the claim is no
    /// longer held (nothing is written).
    async fn apply_page(
        &self,
        claim: ClaimRef<'_>,
        page: PageWrite<'_>,
    ) -> Result<bool, StoreError>;

    /// Ends a failed sync and releases the claim; `false` if it was not held.
    async fn fail(
        &self,
        claim: ClaimRef<'_>,
        action: FailureAction,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Gives a claim back unfinished (shutdown): the request stays pending.
    async fn release(&self, claim: ClaimRef<'_>, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Records a safety-net request for every idle calendar last synced before
    /// the cut-offs; returns how many.
    async fn request_polls(
        &self,
        cutoffs: PollCutoffs,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    #[test]
    fn google_errors_map_to_what_the_worker_does() {
        let now = at(1_000);
        let act = |e: Option<&GoogleError>| {
            failure_action(e, "why".into(), 0, None, now, &RetryPolicy::SYNC, 1.0)
        };
        assert_eq!(
            act(Some(&GoogleError::NotFound)),
            FailureAction::Gone {
                error: "why".into()
            }
        );
        assert_eq!(
            act(Some(&GoogleError::InvalidGrant)),
            FailureAction::NeedsReauth {
                error: "why".into()
            }
        );
        assert_eq!(
            act(Some(&GoogleError::Transient("503".into()))),
            FailureAction::Retry {
                next_attempt_at: now + Duration::from_secs(2),
                error: "why".into(),
                repeat: None,
            }
        );
        assert_eq!(
            act(None),
            FailureAction::Retry {
                next_attempt_at: now + Duration::from_secs(2),
                error: "why".into(),
                repeat: None,
            }
        );
    }

    #[test]
    fn a_retry_after_of_ten_to_the_twelve_seconds_retries_within_an_hour() {
        let now = at(1_000);
        let limited = GoogleError::RateLimited {
            retry_after: Some(Duration::from_secs(1_000_000_000_000)),
        };
        let action = failure_action(
            Some(&limited),
            "x".into(),
            7,
            None,
            now,
            &RetryPolicy::SYNC,
            0.3,
        );
        assert_eq!(
            action,
            FailureAction::Retry {
                next_attempt_at: now + crate::retry::MAX_DELAY,
                error: "x".into(),
                repeat: None,
            }
        );
    }

    fn repeated(count: i32) -> RepeatedFailure {
        let site = crate::repeats::FailureSite::Page {
            sync_token: None,
            page: 2,
        };
        let fingerprint = crate::repeats::FailureFingerprint::of(site, "constraint");
        let previous = (count > 1).then(|| (fingerprint, count - 1));
        crate::repeats::count_identical_failures(
            previous.as_ref().map(|(f, c)| (f, *c)),
            site,
            "constraint",
        )
    }

    #[test]
    fn a_store_failure_repeated_up_to_the_limit_stops_retrying() {
        let now = at(1_000);
        let act = |count: i32| {
            failure_action(
                None,
                "store: constraint".into(),
                count - 1,
                Some(repeated(count)),
                now,
                &RetryPolicy::SYNC,
                1.0,
            )
        };
        for count in 1..crate::repeats::IDENTICAL_FAILURE_LIMIT {
            assert!(
                matches!(act(count), FailureAction::Retry { repeat: Some(r), .. } if r.count == count),
                "try {count} is retried"
            );
        }
        let limit = crate::repeats::IDENTICAL_FAILURE_LIMIT;
        let FailureAction::StopRetrying { error, repeat } = act(limit) else {
            panic!("the limit stops the retries")
        };
        assert_eq!(repeat.count, limit);
        assert_eq!(
            error,
            "stopped retrying after 5 identical failures on page 2 of a full sync \
             (a new sync request tries again): store: constraint"
        );
    }

    #[test]
    fn google_errors_never_stop_retrying_and_forget_the_count() {
        let now = at(1_000);
        let limit = crate::repeats::IDENTICAL_FAILURE_LIMIT;
        let action = failure_action(
            Some(&GoogleError::Transient("503".into())),
            "503".into(),
            limit * 10,
            Some(repeated(limit * 10)),
            now,
            &RetryPolicy::SYNC,
            0.0,
        );
        assert!(matches!(action, FailureAction::Retry { repeat: None, .. }));
    }

    #[test]
    fn a_huge_poll_interval_never_panics() {
        let p = PollPolicy::new(Duration::MAX, true);
        let c = p.cutoffs(at(0));
        assert!(c.push_synced_before <= at(0));
        assert!(!p.is_due(true, at(0), at(10)));
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(classify(&GoogleError::NotFound), FailureKind::Gone);
        assert_eq!(
            classify(&GoogleError::InvalidGrant),
            FailureKind::NeedsReauth
        );
        assert_eq!(
            classify(&GoogleError::NoCredentials),
            FailureKind::NeedsReauth
        );
        assert_eq!(
            classify(&GoogleError::Transient("x".into())),
            FailureKind::Retry
        );
        assert_eq!(
            classify(&GoogleError::RateLimited { retry_after: None }),
            FailureKind::Retry
        );
        assert_eq!(classify(&GoogleError::Unauthorized), FailureKind::Retry);
    }

    #[test]
    fn polling_is_at_most_fifteen_minutes_and_push_uses_the_interval() {
        let p = PollPolicy::new(Duration::from_secs(21_600), true);
        assert_eq!(p.push_interval, Duration::from_secs(21_600));
        assert_eq!(p.polling_interval, POLLING_INTERVAL);
        let without_push = PollPolicy::new(Duration::from_secs(21_600), false);
        assert_eq!(without_push.push_interval, POLLING_INTERVAL);
        let short = PollPolicy::new(Duration::from_secs(60), false);
        assert_eq!(short.polling_interval, Duration::from_secs(60));
    }

    #[test]
    fn heartbeat_is_well_inside_the_lease() {
        let l = LeasePolicy::default();
        assert!(l.heartbeat() * 2 < l.duration);
    }

    proptest! {
        #[test]
        fn poll_cutoffs_agree_with_is_due(
            last in 0i64..10_000_000, now in 0i64..10_000_000,
            interval in 1u64..100_000, push: bool, available: bool,
        ) {
            let p = PollPolicy::new(Duration::from_secs(interval), available);
            let at = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
            let c = p.cutoffs(at(now));
            let cutoff = if push { c.push_synced_before } else { c.polling_synced_before };
            prop_assert_eq!(p.is_due(push, at(last), at(now)), at(last) <= cutoff);
        }
    }
}
