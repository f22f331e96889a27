//! A sync that fails the same way on the same page every time (a
//! deterministic database error) stops retrying (issue 14): the rule that
//! counts identical consecutive failures, as a pure function.
//!
//! Google's rate limits and 5xx, and an unreachable database, are retried for
//! as long as they last (SPEC section 6) and are never counted here. Any other
//! failure is identified by where it happened (the pass and the page) and its
//! error text; the store keeps the last failure's [`FailureFingerprint`] and
//! how many times in a row it happened. Once that reaches
//! [`IDENTICAL_FAILURE_LIMIT`], the calendar stays `failing` with no retry
//! scheduled, until a new sync request (a notification, the internal API, the
//! operator's `calendars sync`, new credentials, or the safety-net poll once
//! per poll interval) gives it one more try.

/// How many times in a row a sync may fail identically on the same page
/// before it stops retrying.
pub const IDENTICAL_FAILURE_LIMIT: i32 = 5;

/// Where in a sync a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSite<'a> {
    /// Before any page, while starting a full sync.
    FullSyncStart,
    /// Applying page `page` (1 = the first) of the pass that started from
    /// `sync_token` (`None`: a full sync).
    Page {
        sync_token: Option<&'a str>,
        page: usize,
    },
}

impl std::fmt::Display for FailureSite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FullSyncStart => f.write_str("the start of a full sync"),
            Self::Page {
                sync_token: None,
                page,
            } => write!(f, "page {page} of a full sync"),
            Self::Page {
                sync_token: Some(_),
                page,
            } => write!(f, "page {page} of an incremental sync"),
        }
    }
}

/// A failure's identity (`calendar_sync_state.failure_fingerprint`): a
/// stable hash of its site and error text, so neither the sync token nor the
/// error is stored twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailureFingerprint(String);

impl FailureFingerprint {
    /// The fingerprint of `error` at `site`: FNV-1a (64 bits, hex), which
    /// every release computes the same way.
    pub fn of(site: FailureSite<'_>, error: &str) -> Self {
        let mut hash = Fnv1a::default();
        match site {
            FailureSite::FullSyncStart => hash.write(b"start"),
            FailureSite::Page { sync_token, page } => {
                hash.write(b"page");
                hash.write(&page.to_be_bytes());
                match sync_token {
                    None => hash.write(b"full"),
                    Some(token) => {
                        hash.write(b"token");
                        hash.write(&token.len().to_be_bytes());
                        hash.write(token.as_bytes());
                    }
                }
            }
        }
        hash.write(b"error");
        hash.write(error.as_bytes());
        Self(format!("{:016x}", hash.0))
    }

    /// A fingerprint as the store holds it.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The stored text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The 64-bit FNV-1a hash.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A failure that counts toward stopping the retries, with how many times in
/// a row it has now happened (1 = the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedFailure {
    pub fingerprint: FailureFingerprint,
    pub count: i32,
    /// Where it happened, for `last_error`.
    pub site: String,
}

impl RepeatedFailure {
    /// Whether the retries stop now (at [`IDENTICAL_FAILURE_LIMIT`] and after).
    pub fn stops_retrying(&self) -> bool {
        self.count >= IDENTICAL_FAILURE_LIMIT
    }
}

/// The rule: a failure with `error` at `site`, after a previous failure
/// `previous` (its fingerprint and consecutive count, as stored; `None` after
/// a success or an uncounted failure), is the same failure once more (count
/// + 1) or a new one (count 1).
pub fn count_identical_failures(
    previous: Option<(&FailureFingerprint, i32)>,
    site: FailureSite<'_>,
    error: &str,
) -> RepeatedFailure {
    let fingerprint = FailureFingerprint::of(site, error);
    let count = match previous {
        Some((last, count)) if *last == fingerprint => count.max(0).saturating_add(1),
        _ => 1,
    };
    RepeatedFailure {
        fingerprint,
        count,
        site: site.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE_3: FailureSite<'static> = FailureSite::Page {
        sync_token: Some("tok"),
        page: 3,
    };

    fn after(
        previous: Option<&RepeatedFailure>,
        site: FailureSite<'_>,
        error: &str,
    ) -> RepeatedFailure {
        count_identical_failures(previous.map(|p| (&p.fingerprint, p.count)), site, error)
    }

    #[test]
    fn the_same_error_on_the_same_page_stops_retrying_at_the_limit() {
        let mut last = after(None, PAGE_3, "check constraint");
        assert_eq!(last.count, 1);
        for expected in 2..=IDENTICAL_FAILURE_LIMIT {
            assert!(!last.stops_retrying(), "try {}", last.count);
            last = after(Some(&last), PAGE_3, "check constraint");
            assert_eq!(last.count, expected);
        }
        assert!(last.stops_retrying());
        // A request after the stop tries once; the same failure stops it again.
        assert!(after(Some(&last), PAGE_3, "check constraint").stops_retrying());
    }

    #[test]
    fn a_different_error_or_page_or_pass_starts_the_count_again() {
        let first = after(None, PAGE_3, "e");
        let twice = after(Some(&first), PAGE_3, "e");
        assert_eq!(twice.count, 2);
        assert_eq!(after(Some(&twice), PAGE_3, "other").count, 1);
        let page_4 = FailureSite::Page {
            sync_token: Some("tok"),
            page: 4,
        };
        assert_eq!(after(Some(&twice), page_4, "e").count, 1);
        let other_token = FailureSite::Page {
            sync_token: Some("tok2"),
            page: 3,
        };
        assert_eq!(after(Some(&twice), other_token, "e").count, 1);
        let full = FailureSite::Page {
            sync_token: None,
            page: 3,
        };
        assert_eq!(after(Some(&twice), full, "e").count, 1);
        assert_eq!(
            after(Some(&twice), FailureSite::FullSyncStart, "e").count,
            1
        );
    }

    #[test]
    fn a_stored_count_that_is_corrupt_or_huge_never_overflows() {
        let fingerprint = FailureFingerprint::of(PAGE_3, "e");
        let next = count_identical_failures(Some((&fingerprint, i32::MAX)), PAGE_3, "e");
        assert_eq!(next.count, i32::MAX);
        let negative = count_identical_failures(Some((&fingerprint, -7)), PAGE_3, "e");
        assert_eq!(negative.count, 1);
    }

    #[test]
    fn fingerprints_are_stable_hex_and_round_trip() {
        let a = FailureFingerprint::of(PAGE_3, "e");
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(FailureFingerprint::from_stored(a.as_str()), a);
        // Pinned: a release that hashed differently would restart every count.
        assert_eq!(
            FailureFingerprint::of(FailureSite::FullSyncStart, "").as_str(),
            "882c64029b26354f"
        );
    }

    #[test]
    fn sites_say_where_in_words() {
        assert_eq!(PAGE_3.to_string(), "page 3 of an incremental sync");
        assert_eq!(
            FailureSite::Page {
                sync_token: None,
                page: 1
            }
            .to_string(),
            "page 1 of a full sync"
        );
        assert_eq!(
            FailureSite::FullSyncStart.to_string(),
            "the start of a full sync"
        );
    }

    proptest! {
        #[test]
        fn the_count_is_one_more_only_for_the_same_failure(
            page in 0usize..10, other_page in 0usize..10,
            error in ".{0,20}", other_error in ".{0,20}", count in 0i32..1000,
        ) {
            let site = FailureSite::Page { sync_token: None, page };
            let previous = FailureFingerprint::of(site, &error);
            let other = FailureSite::Page { sync_token: None, page: other_page };
            let next = count_identical_failures(Some((&previous, count)), other, &other_error);
            let same = page == other_page && error == other_error;
            prop_assert_eq!(next.count, if same { count + 1 } else { 1 });
            prop_assert_eq!(next.stops_retrying(), next.count >= IDENTICAL_FAILURE_LIMIT);
        }
    }
}
