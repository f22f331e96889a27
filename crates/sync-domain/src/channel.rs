//! The watch channel's state machine and the channel worker's store port
//! (SPEC section 7).
//!
//! A channel is persisted `registering` before `events.watch` is called, becomes
//! `active` (the calendar's current channel) when Google grants it, `retiring`
//! when it is replaced, disconnected or its registration may have reached Google
//! without an answer, and `stopped` once `channels.stop` succeeded (or Google can
//! no longer hold it). `stopped` is final. The text forms of [`ChannelState`] and
//! [`PushMode`] are written here and nowhere else; the store maps them to columns.

use crate::admin::{ChannelToStop, StopLedger};
use crate::calendar::GoogleError;
use crate::ids::{CalendarId, ChannelId, GoogleCalendarId, ResourceId, UserId};
use crate::ports::StoreError;
use crate::secret::ChannelToken;
use async_trait::async_trait;
use std::time::Duration;
use time::OffsetDateTime;

/// Where a watch channel is in its life (`watch_channels.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Persisted, `events.watch` not (yet) answered.
    Registering,
    /// The calendar's current channel.
    Active,
    /// To be stopped at Google once its `stop_after` has passed.
    Retiring,
    /// Stopped at Google (or never created there): nothing left to do.
    Stopped,
}

/// A text that is not one of the forms of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
}

impl ChannelState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 4] = [
        Self::Registering,
        Self::Active,
        Self::Retiring,
        Self::Stopped,
    ];
    /// The states in which Google may hold the channel.
    pub const LIVE: [Self; 3] = [Self::Registering, Self::Active, Self::Retiring];

    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Registering => "registering",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Stopped => "stopped",
        }
    }

    /// Parses the stored text form.
    pub fn parse(text: &str) -> Result<Self, UnknownVariant> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownVariant {
                kind: "channel state",
                value: text.to_owned(),
            })
    }
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a calendar learns about changes (`calendar_sync_state.push_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushMode {
    /// Channels are registered and renewed.
    Push,
    /// Push is unavailable for this calendar: it is polled.
    Polling,
}

impl PushMode {
    /// Every mode.
    pub const ALL: [Self; 2] = [Self::Push, Self::Polling];

    /// The stored text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Polling => "polling",
        }
    }

    /// Parses the stored text form.
    pub fn parse(text: &str) -> Result<Self, UnknownVariant> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| UnknownVariant {
                kind: "push mode",
                value: text.to_owned(),
            })
    }
}

impl serde::Serialize for PushMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for PushMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} channel cannot be {action}")]
pub struct InvalidTransition {
    /// The state the channel was in.
    pub from: ChannelState,
    /// What was attempted.
    pub action: &'static str,
}

/// The state of a channel just persisted, before `events.watch` is called.
pub const fn register() -> ChannelState {
    ChannelState::Registering
}

/// Google granted the channel: only a registering channel becomes current.
pub fn activate(from: ChannelState) -> Result<ChannelState, InvalidTransition> {
    match from {
        ChannelState::Registering => Ok(ChannelState::Active),
        other => Err(InvalidTransition {
            from: other,
            action: "activated",
        }),
    }
}

/// The channel is replaced, disconnected or abandoned: it is stopped at Google
/// later. A channel already retiring stays so; a stopped one cannot come back.
pub fn retire(from: ChannelState) -> Result<ChannelState, InvalidTransition> {
    match from {
        ChannelState::Registering | ChannelState::Active | ChannelState::Retiring => {
            Ok(ChannelState::Retiring)
        }
        ChannelState::Stopped => Err(InvalidTransition {
            from,
            action: "retired",
        }),
    }
}

/// The channel is stopped at Google, or never existed there (a refused
/// registration). A current channel is retired first, never stopped directly.
pub fn stop(from: ChannelState) -> Result<ChannelState, InvalidTransition> {
    match from {
        ChannelState::Registering | ChannelState::Retiring | ChannelState::Stopped => {
            Ok(ChannelState::Stopped)
        }
        ChannelState::Active => Err(InvalidTransition {
            from,
            action: "stopped while current",
        }),
    }
}

/// The states from which `transition` is allowed, as the store filters rows
/// before it writes the transition's result.
pub fn allowed_from(
    transition: fn(ChannelState) -> Result<ChannelState, InvalidTransition>,
) -> Vec<ChannelState> {
    ChannelState::ALL
        .into_iter()
        .filter(|from| transition(*from).is_ok())
        .collect()
}

/// What a failed `events.watch` means for the channel it tried to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedWatch {
    /// Google refused it: the channel does not exist there.
    NotCreated,
    /// The answer was lost (timeout, 5xx, connection reset) or a retry of the
    /// same call found the id already taken: Google may hold the channel.
    MaybeCreated,
}

/// Google's reason when a channel id is already in use.
pub const CHANNEL_ID_NOT_UNIQUE: &str = "channelIdNotUnique";

impl FailedWatch {
    /// Classifies a failed watch. Channel ids are fresh random UUIDs, so
    /// `channelIdNotUnique` can only mean that an earlier attempt of this very
    /// call (the client's retry after a lost answer) created the channel.
    pub fn classify(error: &GoogleError) -> Self {
        match error {
            GoogleError::Transient(_) => Self::MaybeCreated,
            GoogleError::Other { reason, .. } if reason == CHANNEL_ID_NOT_UNIQUE => {
                Self::MaybeCreated
            }
            _ => Self::NotCreated,
        }
    }

    /// The state the failed channel's row moves to: kept for stopping when it
    /// may exist at Google, closed otherwise.
    pub const fn next_state(self) -> ChannelState {
        match self {
            Self::NotCreated => ChannelState::Stopped,
            Self::MaybeCreated => ChannelState::Retiring,
        }
    }
}

/// A calendar claimed for channel work: it needs its first channel, or its
/// current one is due for renewal, or a failed registration is due for retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelWork {
    pub calendar_id: CalendarId,
    pub user_id: UserId,
    pub google_calendar_id: GoogleCalendarId,
    /// The current channel, if any (renewal).
    pub current_channel_id: Option<String>,
    /// When the current channel expires.
    pub current_expires_at: Option<OffsetDateTime>,
    /// Consecutive failed registrations so far.
    pub failure_count: i32,
}

/// A channel about to be registered with `events.watch`.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub channel_id: ChannelId,
    pub token: ChannelToken,
}

/// A channel Google granted, to become the calendar's current one.
#[derive(Debug, Clone, Copy)]
pub struct GrantedChannel<'a> {
    pub calendar_id: CalendarId,
    pub channel_id: &'a ChannelId,
    pub resource_id: &'a ResourceId,
    pub expires_at: Option<OffsetDateTime>,
    /// The instance whose lease the registration ran under.
    pub owner: &'a str,
    /// When to create its successor.
    pub renew_at: OffsetDateTime,
    /// How long the replaced channel stays open.
    pub overlap: Duration,
}

/// How recording a granted channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// It is the calendar's current channel now.
    Activated,
    /// The lease was lost during `events.watch` (another instance may have
    /// registered its own): the channel is retired, not made current.
    LeaseLost,
}

/// The `last_error` of a channel Google granted after its lease was lost.
pub const LEASE_LOST: &str = "lease lost during events.watch; another instance owns the calendar";

/// A failed registration, to be retried.
#[derive(Debug, Clone, Copy)]
pub struct FailedRegistration<'a> {
    pub calendar_id: CalendarId,
    pub channel_id: &'a ChannelId,
    pub owner: &'a str,
    pub error: &'a str,
    pub retry_at: OffsetDateTime,
    pub outcome: FailedWatch,
}

/// What the channel worker needs from the store (and, through [`StopLedger`],
/// where it records its stops). Every method is one transaction.
#[async_trait]
pub trait ChannelStore: StopLedger {
    /// Claims up to `limit` calendars due for channel work for `owner`, for `lease`.
    async fn claim_channel_work(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChannelWork>, StoreError>;

    /// Extends `owner`'s lease on a calendar to `lease` from now; `false` if
    /// `owner` no longer holds it (another instance took it, or it was released).
    async fn renew_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives a calendar's lease back without changing its schedule.
    async fn release_channel_lease(
        &self,
        calendar_id: CalendarId,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// Persists a channel as `registering` before `events.watch` is called;
    /// `false` if the calendar was disconnected since the claim.
    async fn begin_registration(
        &self,
        work: &ChannelWork,
        channel: &NewChannel,
    ) -> Result<bool, StoreError>;

    /// Google granted the channel: if `owner` still holds the lease, it becomes
    /// current, the one it replaces is retired (open for `overlap`), channels
    /// of the calendar whose registration may have been created at Google
    /// learn the resource id and are due for stopping, the renewal is scheduled
    /// and the lease released. Otherwise the channel is retired, due now.
    async fn channel_registered(
        &self,
        granted: GrantedChannel<'_>,
    ) -> Result<Activation, StoreError>;

    /// A registration failed: the channel is closed or kept for stopping (see
    /// [`FailedWatch`]), the retry scheduled and the lease released.
    async fn channel_registration_failed(
        &self,
        failure: FailedRegistration<'_>,
    ) -> Result<(), StoreError>;

    /// Google cannot push for this calendar: it is polled from now on, the
    /// refused channel is closed, any current one retired, the lease released.
    async fn switch_to_polling(
        &self,
        calendar_id: CalendarId,
        channel_id: &ChannelId,
        owner: &str,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Crash recovery: retires channels `registering` since before
    /// `abandoned_before` (they live at Google at most `max_ttl`) and active
    /// channels of disconnected or gone calendars. Returns how many.
    async fn retire_abandoned_channels(
        &self,
        abandoned_before: OffsetDateTime,
        max_ttl: Duration,
    ) -> Result<usize, StoreError>;

    /// Up to `limit` retiring channels whose `stop_after` has passed.
    async fn channels_due_for_stop(&self, limit: i64) -> Result<Vec<ChannelToStop>, StoreError>;

    /// Deletes up to `limit` channels stopped before `stopped_before`. Returns how many.
    async fn delete_stopped_channels(
        &self,
        stopped_before: OffsetDateTime,
        limit: i64,
    ) -> Result<usize, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_state_round_trips_through_its_text() {
        for state in ChannelState::ALL {
            assert_eq!(ChannelState::parse(state.as_str()), Ok(state));
        }
        assert!(ChannelState::parse("Active").is_err());
        assert!(ChannelState::parse("").is_err());
    }

    #[test]
    fn every_push_mode_round_trips_through_its_text() {
        for mode in PushMode::ALL {
            assert_eq!(PushMode::parse(mode.as_str()), Ok(mode));
        }
        assert!(PushMode::parse("pull").is_err());
    }

    #[test]
    fn a_new_channel_is_registering() {
        assert_eq!(register(), ChannelState::Registering);
    }

    #[test]
    fn only_a_registering_channel_is_activated() {
        for from in ChannelState::ALL {
            let expected = (from == ChannelState::Registering).then_some(ChannelState::Active);
            assert_eq!(activate(from).ok(), expected, "from {from}");
        }
    }

    #[test]
    fn every_live_channel_can_be_retired_but_a_stopped_one_cannot() {
        for from in ChannelState::ALL {
            let expected = (from != ChannelState::Stopped).then_some(ChannelState::Retiring);
            assert_eq!(retire(from).ok(), expected, "from {from}");
        }
    }

    #[test]
    fn a_current_channel_is_never_stopped_without_being_retired() {
        for from in ChannelState::ALL {
            let expected = (from != ChannelState::Active).then_some(ChannelState::Stopped);
            assert_eq!(stop(from).ok(), expected, "from {from}");
        }
    }

    #[test]
    fn allowed_from_lists_the_sources_of_a_transition() {
        assert_eq!(allowed_from(activate), vec![ChannelState::Registering]);
        assert_eq!(allowed_from(retire), ChannelState::LIVE.to_vec());
    }

    #[test]
    fn stopped_is_final() {
        assert!(activate(ChannelState::Stopped).is_err());
        assert!(retire(ChannelState::Stopped).is_err());
        assert_eq!(stop(ChannelState::Stopped), Ok(ChannelState::Stopped));
    }

    #[test]
    fn a_lost_answer_may_have_created_the_channel() {
        let lost = GoogleError::Transient("503 Service Unavailable".into());
        assert_eq!(FailedWatch::classify(&lost), FailedWatch::MaybeCreated);
        assert_eq!(
            FailedWatch::classify(&lost).next_state(),
            ChannelState::Retiring
        );
    }

    #[test]
    fn a_duplicate_id_means_an_earlier_attempt_created_the_channel() {
        let duplicate = GoogleError::Other {
            status: 400,
            reason: CHANNEL_ID_NOT_UNIQUE.into(),
            message: "Channel id not unique".into(),
        };
        assert_eq!(FailedWatch::classify(&duplicate), FailedWatch::MaybeCreated);
    }

    #[test]
    fn a_refused_watch_created_nothing() {
        for refused in [
            GoogleError::NotFound,
            GoogleError::Unauthorized,
            GoogleError::InvalidGrant,
            GoogleError::NoCredentials,
            GoogleError::PushNotSupported,
            GoogleError::RateLimited { retry_after: None },
            GoogleError::Other {
                status: 400,
                reason: "invalid".into(),
                message: "bad address".into(),
            },
        ] {
            assert_eq!(
                FailedWatch::classify(&refused),
                FailedWatch::NotCreated,
                "{refused}"
            );
            assert_eq!(
                FailedWatch::classify(&refused).next_state(),
                ChannelState::Stopped
            );
        }
    }
}
