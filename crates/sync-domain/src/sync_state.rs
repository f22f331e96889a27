//! A calendar's sync state (`calendar_sync_state.sync_state`, SPEC section 5)
//! and its transitions, as pure functions. The text form lives here only; the
//! store writes [`SyncState::as_str`] and the migrations constrain the column
//! to [`SyncState::ALL`].

use crate::sync::FailureKind;

/// Where a calendar's sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// Waiting to be synced.
    Pending,
    /// Claimed by a sync worker.
    Syncing,
    /// Synced, nothing to do.
    Idle,
    /// The last sync failed: a retry is scheduled, or, after the same failure
    /// on the same page [`crate::repeats::IDENTICAL_FAILURE_LIMIT`] times, none
    /// is until a new sync request (see [`crate::repeats`]).
    Failing,
    /// Google refused the user's refresh token; waits for new credentials.
    NeedsReauth,
    /// The calendar no longer exists at Google; it takes no syncs.
    Gone,
}

impl SyncState {
    /// Every state, in the order the SPEC lists them.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Syncing,
        Self::Idle,
        Self::Failing,
        Self::NeedsReauth,
        Self::Gone,
    ];

    /// The column's text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Syncing => "syncing",
            Self::Idle => "idle",
            Self::Failing => "failing",
            Self::NeedsReauth => "needs_reauth",
            Self::Gone => "gone",
        }
    }

    /// Parses the column's text form.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Parked: waits for something outside the sync engine (new credentials)
    /// or for nothing at all (gone). A parked state is never overwritten by
    /// a sync that finishes meanwhile.
    pub const fn is_parked(self) -> bool {
        matches!(self, Self::NeedsReauth | Self::Gone)
    }

    /// A sync was requested: the state does not change (a parked calendar
    /// keeps the request until it recovers).
    pub const fn on_request(self) -> Self {
        self
    }

    /// A worker claims the calendar: `syncing`, unless it is parked (then it
    /// cannot be claimed: `None`).
    pub const fn on_claim(self) -> Option<Self> {
        if self.is_parked() {
            None
        } else {
            Some(Self::Syncing)
        }
    }

    /// The sync completed: `idle`, unless parked meanwhile.
    pub const fn on_success(self) -> Self {
        if self.is_parked() { self } else { Self::Idle }
    }

    /// The sync failed with an error of `kind`.
    pub const fn on_failure(self, kind: FailureKind) -> Self {
        match kind {
            FailureKind::Gone => Self::Gone,
            _ if self.is_parked() => self,
            FailureKind::NeedsReauth => Self::NeedsReauth,
            FailureKind::Retry => Self::Failing,
        }
    }

    /// A claim was given back unfinished (shutdown): `pending`, unless parked.
    pub const fn on_release(self) -> Self {
        if self.is_parked() {
            self
        } else {
            Self::Pending
        }
    }

    /// New credentials arrived for the calendar's user: a calendar waiting for
    /// them is `pending` again (and gets a sync request); others are unchanged.
    pub const fn on_new_credentials(self) -> Self {
        match self {
            Self::NeedsReauth => Self::Pending,
            other => other,
        }
    }

    /// Google says the calendar is gone (404).
    pub const fn on_gone(self) -> Self {
        Self::Gone
    }
}

impl serde::Serialize for SyncState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [FailureKind; 3] = [
        FailureKind::Retry,
        FailureKind::Gone,
        FailureKind::NeedsReauth,
    ];

    #[test]
    fn text_forms_round_trip_and_are_the_specs() {
        let texts: Vec<&str> = SyncState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "pending",
                "syncing",
                "idle",
                "failing",
                "needs_reauth",
                "gone"
            ]
        );
        for state in SyncState::ALL {
            assert_eq!(SyncState::parse(state.as_str()), Some(state));
        }
        assert_eq!(SyncState::parse("Idle"), None);
    }

    #[test]
    fn only_unparked_calendars_can_be_claimed() {
        for state in SyncState::ALL {
            assert_eq!(
                state.on_claim(),
                (!state.is_parked()).then_some(SyncState::Syncing),
                "{state}"
            );
        }
    }

    #[test]
    fn a_finishing_sync_never_overwrites_a_parked_state() {
        for state in SyncState::ALL {
            let parked = state.is_parked();
            assert_eq!(
                state.on_success() == state,
                parked || state == SyncState::Idle
            );
            assert_eq!(
                state.on_release() == state,
                parked || state == SyncState::Pending
            );
        }
    }

    #[test]
    fn failures_map_to_states_and_gone_always_wins() {
        for state in SyncState::ALL {
            for kind in KINDS {
                let next = state.on_failure(kind);
                match kind {
                    FailureKind::Gone => assert_eq!(next, SyncState::Gone),
                    _ if state.is_parked() => assert_eq!(next, state),
                    FailureKind::NeedsReauth => assert_eq!(next, SyncState::NeedsReauth),
                    FailureKind::Retry => assert_eq!(next, SyncState::Failing),
                }
            }
        }
    }

    #[test]
    fn new_credentials_resume_only_a_calendar_waiting_for_them() {
        for state in SyncState::ALL {
            let expected = if state == SyncState::NeedsReauth {
                SyncState::Pending
            } else {
                state
            };
            assert_eq!(state.on_new_credentials(), expected);
        }
    }

    #[test]
    fn requests_change_no_state_and_gone_is_terminal_for_syncs() {
        for state in SyncState::ALL {
            assert_eq!(state.on_request(), state);
            assert_eq!(state.on_gone(), SyncState::Gone);
            assert_eq!(SyncState::Gone.on_failure(KINDS[0]), SyncState::Gone);
        }
    }
}
