//! The webhook's decision (SPEC section 2), a pure function of the parsed
//! notification and what the store knows of its channel.

use crate::ids::CalendarId;
use crate::notification::{ChannelRef, MessageNumber, Notification, ResourceState};
use crate::secret::ChannelToken;

/// What the store knows of a channel, fetched in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The secret Google must echo.
    pub token: ChannelToken,
    /// The calendar the channel watches; `None` once the calendar was disconnected
    /// (the channel then only waits to be stopped at Google).
    pub calendar_id: Option<CalendarId>,
    /// False when the calendar is gone at Google or its user has no credentials.
    pub calendar_active: bool,
    /// The highest message number already accepted on this channel.
    pub last_message_number: Option<MessageNumber>,
}

/// The outcome of verifying one notification: one variant per row of SPEC section 2
/// after the channel id was found present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never ours, stopped or long replaced: 200 `{}`, reveals nothing.
    UnknownChannel,
    /// Token missing, empty or wrong: 401.
    InvalidToken,
    /// The `sync` handshake on a known channel: 200 `{}`, no sync.
    Handshake,
    /// Known channel whose calendar or user is gone: 200 `{}` and nothing else.
    Orphaned,
    /// Message number not above the last seen on the channel: 200 `{}`, no request.
    Duplicate,
    /// A change: record a sync request for the calendar, then 200 `{}`.
    RecordSync {
        calendar_id: CalendarId,
        message_number: Option<MessageNumber>,
    },
}

impl Verdict {
    /// A stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::UnknownChannel => "unknown_channel",
            Verdict::InvalidToken => "invalid_token",
            Verdict::Handshake => "handshake",
            Verdict::Orphaned => "orphaned",
            Verdict::Duplicate => "duplicate",
            Verdict::RecordSync { .. } => "accepted",
        }
    }
}

/// Whether the store must be asked about this notification at all: only a
/// UUID can be one of our channel ids (SPEC section 7), so anything else, and
/// a malformed id, is answered as unknown without a round trip.
pub fn needs_lookup(notification: &Notification) -> bool {
    matches!(&notification.channel, ChannelRef::Id(id) if id.is_uuid())
}

/// Decides what to do with a notification, given what the store knows of its
/// channel (`None`: not known). Checks run in the SPEC's order.
pub fn verify(notification: &Notification, record: Option<&ChannelRecord>) -> Verdict {
    let Some(record) = record.filter(|_| needs_lookup(notification)) else {
        return Verdict::UnknownChannel;
    };
    let token_ok = notification
        .token
        .as_deref()
        .is_some_and(|presented| record.token.matches(presented));
    if !token_ok {
        return Verdict::InvalidToken;
    }
    if notification.resource_state == ResourceState::Sync {
        return Verdict::Handshake;
    }
    let Some(calendar_id) = record.calendar_id.filter(|_| record.calendar_active) else {
        return Verdict::Orphaned;
    };
    if MessageNumber::is_duplicate(notification.message_number, record.last_message_number) {
        return Verdict::Duplicate;
    }
    Verdict::RecordSync {
        calendar_id,
        message_number: notification.message_number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;
    use proptest::prelude::*;
    use uuid::Uuid;

    const TOKEN: &str = "s3cret-token";

    fn calendar() -> CalendarId {
        CalendarId::from_uuid(Uuid::from_u128(7))
    }

    fn notification(
        token: Option<&str>,
        state: ResourceState,
        number: Option<i64>,
    ) -> Notification {
        Notification {
            channel: ChannelRef::Id(
                ChannelId::parse("4ba78bf0-6a47-11e2-bcfd-0800200c9a66").unwrap(),
            ),
            token: token.map(str::to_owned),
            resource_state: state,
            message_number: number.map(MessageNumber::new),
            resource_id: None,
        }
    }

    fn record(active: bool, last: Option<i64>) -> ChannelRecord {
        ChannelRecord {
            token: ChannelToken::new(TOKEN),
            calendar_id: Some(calendar()),
            calendar_active: active,
            last_message_number: last.map(MessageNumber::new),
        }
    }

    #[test]
    fn unknown_channel_is_unknown_whatever_else() {
        let n = notification(Some(TOKEN), ResourceState::Exists, Some(2));
        assert_eq!(verify(&n, None), Verdict::UnknownChannel);
    }

    #[test]
    fn malformed_channel_is_unknown_even_if_a_record_is_passed() {
        let mut n = notification(Some(TOKEN), ResourceState::Exists, Some(2));
        n.channel = ChannelRef::Malformed;
        assert!(!needs_lookup(&n));
        assert_eq!(
            verify(&n, Some(&record(true, None))),
            Verdict::UnknownChannel
        );
    }

    #[test]
    fn only_uuid_channel_ids_are_looked_up() {
        let with = |id: &str| Notification {
            channel: ChannelRef::Id(ChannelId::parse(id).unwrap()),
            ..notification(Some(TOKEN), ResourceState::Exists, Some(2))
        };
        // Ours are v4; the Python original's could be any version or form.
        for ours in [
            "4ba78bf0-6a47-11e2-bcfd-0800200c9a66",
            "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
            "7F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0",
            "7f1e2d3c4b5a49688776a5b4c3d2e1f0",
        ] {
            assert!(needs_lookup(&with(ours)), "{ours}");
        }
        for stranger in ["chan-1", "not-a-uuid", "7f1e2d3c-4b5a-4968-8776", "0"] {
            let n = with(stranger);
            assert!(!needs_lookup(&n), "{stranger}");
            assert_eq!(
                verify(&n, Some(&record(true, None))),
                Verdict::UnknownChannel
            );
        }
    }

    #[test]
    fn missing_empty_or_wrong_token_is_invalid() {
        for token in [None, Some(""), Some("wrong"), Some("s3cret-token ")] {
            let n = notification(token, ResourceState::Exists, Some(2));
            assert_eq!(
                verify(&n, Some(&record(true, None))),
                Verdict::InvalidToken,
                "{token:?}"
            );
        }
    }

    #[test]
    fn token_is_checked_before_the_handshake() {
        let n = notification(Some("wrong"), ResourceState::Sync, Some(1));
        assert_eq!(verify(&n, Some(&record(true, None))), Verdict::InvalidToken);
    }

    #[test]
    fn sync_state_is_a_handshake() {
        let n = notification(Some(TOKEN), ResourceState::Sync, Some(1));
        assert_eq!(verify(&n, Some(&record(true, None))), Verdict::Handshake);
        assert_eq!(verify(&n, Some(&record(false, None))), Verdict::Handshake);
    }

    #[test]
    fn every_change_state_records_a_sync() {
        for state in [
            ResourceState::Exists,
            ResourceState::NotExists,
            ResourceState::Unknown,
        ] {
            let n = notification(Some(TOKEN), state, Some(5));
            assert_eq!(
                verify(&n, Some(&record(true, Some(4)))),
                Verdict::RecordSync {
                    calendar_id: calendar(),
                    message_number: Some(MessageNumber::new(5))
                }
            );
        }
    }

    #[test]
    fn gone_calendar_or_user_is_orphaned() {
        let n = notification(Some(TOKEN), ResourceState::Exists, Some(5));
        assert_eq!(verify(&n, Some(&record(false, None))), Verdict::Orphaned);
        let mut disconnected = record(true, None);
        disconnected.calendar_id = None;
        assert_eq!(verify(&n, Some(&disconnected)), Verdict::Orphaned);
    }

    #[test]
    fn message_number_not_above_last_is_a_duplicate() {
        for number in [3, 4] {
            let n = notification(Some(TOKEN), ResourceState::Exists, Some(number));
            assert_eq!(verify(&n, Some(&record(true, Some(4)))), Verdict::Duplicate);
        }
    }

    #[test]
    fn absent_message_number_is_never_a_duplicate() {
        let n = notification(Some(TOKEN), ResourceState::Exists, None);
        assert!(matches!(
            verify(&n, Some(&record(true, Some(4)))),
            Verdict::RecordSync { .. }
        ));
    }

    fn arb_state() -> impl Strategy<Value = ResourceState> {
        prop_oneof![
            Just(ResourceState::Sync),
            Just(ResourceState::Exists),
            Just(ResourceState::NotExists),
            Just(ResourceState::Unknown),
        ]
    }

    proptest! {
        /// The whole table, exhaustively over its inputs: the verdict is exactly the
        /// first SPEC row that applies.
        #[test]
        fn verdict_is_the_first_matching_row(
            known in any::<bool>(),
            token in proptest::option::of(prop_oneof![Just(TOKEN.to_owned()), "\\PC{0,50}"]),
            state in arb_state(),
            active in any::<bool>(),
            linked in any::<bool>(),
            number in proptest::option::of(0i64..10),
            last in proptest::option::of(0i64..10),
        ) {
            let n = notification(token.as_deref(), state.clone(), number);
            let mut rec = record(active, last);
            if !linked { rec.calendar_id = None; }
            let verdict = verify(&n, known.then_some(&rec));
            let expected = if !known {
                Verdict::UnknownChannel
            } else if token.as_deref() != Some(TOKEN) {
                Verdict::InvalidToken
            } else if state == ResourceState::Sync {
                Verdict::Handshake
            } else if !(active && linked) {
                Verdict::Orphaned
            } else if matches!((number, last), (Some(n), Some(l)) if n <= l) {
                Verdict::Duplicate
            } else {
                Verdict::RecordSync { calendar_id: calendar(), message_number: number.map(MessageNumber::new) }
            };
            prop_assert_eq!(verdict, expected);
        }
    }
}
