//! A Google Calendar push notification, parsed from its headers.
//!
//! Parsing never fails on hostile input: anything malformed becomes a value the
//! verification decision knows how to answer (see [`crate::verification`]).

use crate::ids::{ChannelId, ResourceId};

/// Header names Google sends (compared case-insensitively by the HTTP layer).
pub mod headers {
    pub const CHANNEL_ID: &str = "x-goog-channel-id";
    pub const CHANNEL_TOKEN: &str = "x-goog-channel-token";
    pub const RESOURCE_STATE: &str = "x-goog-resource-state";
    pub const RESOURCE_ID: &str = "x-goog-resource-id";
    pub const RESOURCE_URI: &str = "x-goog-resource-uri";
    pub const MESSAGE_NUMBER: &str = "x-goog-message-number";
    pub const CHANNEL_EXPIRATION: &str = "x-goog-channel-expiration";
}

/// One header's value as the request carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// Not sent.
    Absent,
    /// Sent once, with these bytes.
    One(&'a [u8]),
    /// Sent more than once: ambiguous, so never trusted.
    Repeated,
}

impl<'a> HeaderValue<'a> {
    /// The value as trimmed UTF-8 text, when sent exactly once and non-empty.
    fn text(self) -> Option<&'a str> {
        match self {
            HeaderValue::One(bytes) => std::str::from_utf8(bytes)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty()),
            HeaderValue::Absent | HeaderValue::Repeated => None,
        }
    }
}

/// `X-Goog-Resource-State`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceState {
    /// The handshake Google sends when a channel is created.
    Sync,
    /// A resource was created or changed.
    Exists,
    /// A resource was deleted.
    NotExists,
    /// Absent or a state this service does not know; treated as a change.
    Unknown,
}

impl ResourceState {
    /// Parses the header value (ASCII case-insensitive).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some(v) if v.eq_ignore_ascii_case("sync") => Self::Sync,
            Some(v) if v.eq_ignore_ascii_case("exists") => Self::Exists,
            Some(v) if v.eq_ignore_ascii_case("not_exists") => Self::NotExists,
            _ => Self::Unknown,
        }
    }

    /// The label used in logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
            Self::Unknown => "unknown",
        }
    }
}

/// `X-Goog-Message-Number`: increasing on a channel, not consecutive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageNumber(i64);

impl MessageNumber {
    /// Parses a non-negative decimal that fits the database's BIGINT.
    pub fn parse(value: &str) -> Option<Self> {
        value.parse::<i64>().ok().filter(|n| *n >= 0).map(Self)
    }

    /// Wraps a stored value.
    pub fn new(value: i64) -> Self {
        Self(value)
    }

    /// The number.
    pub fn get(self) -> i64 {
        self.0
    }

    /// Whether a notification numbered `new` repeats one already seen on a
    /// channel whose highest accepted number is `last`. Unnumbered notifications
    /// are never duplicates.
    pub fn is_duplicate(new: Option<Self>, last: Option<Self>) -> bool {
        matches!((new, last), (Some(new), Some(last)) if new <= last)
    }
}

/// Which channel a notification names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelRef {
    /// A well-formed id, which may or may not be ours.
    Id(ChannelId),
    /// Present but malformed (too long, control characters, not UTF-8, repeated):
    /// it cannot be one of ours, so it is answered as unknown without a lookup.
    Malformed,
}

/// A parsed push notification.
#[derive(Clone, PartialEq, Eq)]
pub struct Notification {
    pub channel: ChannelRef,
    /// The presented token; `None` when absent, empty, malformed or repeated.
    /// Kept as plain text: it is compared, never stored or logged.
    pub token: Option<String>,
    pub resource_state: ResourceState,
    pub message_number: Option<MessageNumber>,
    pub resource_id: Option<ResourceId>,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("channel", &self.channel)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("resource_state", &self.resource_state)
            .field("message_number", &self.message_number)
            .field("resource_id", &self.resource_id)
            .finish()
    }
}

/// Why a request is not a notification at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// `X-Goog-Channel-ID` is missing or empty (SPEC: 400 "Missing channel ID").
    #[error("Missing channel ID")]
    MissingChannelId,
}

impl Notification {
    /// Parses a notification from a header lookup (the HTTP layer supplies one
    /// that is case-insensitive and reports repeated headers).
    pub fn parse<'a>(header: impl Fn(&str) -> HeaderValue<'a>) -> Result<Self, NotificationError> {
        let channel = match header(headers::CHANNEL_ID) {
            HeaderValue::Absent => return Err(NotificationError::MissingChannelId),
            HeaderValue::One(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                return Err(NotificationError::MissingChannelId);
            }
            value => value
                .text()
                .and_then(|text| ChannelId::parse(text).ok())
                .map_or(ChannelRef::Malformed, ChannelRef::Id),
        };
        Ok(Self {
            channel,
            token: header(headers::CHANNEL_TOKEN).text().map(str::to_owned),
            resource_state: ResourceState::parse(header(headers::RESOURCE_STATE).text()),
            message_number: header(headers::MESSAGE_NUMBER)
                .text()
                .and_then(MessageNumber::parse),
            resource_id: header(headers::RESOURCE_ID)
                .text()
                .and_then(|text| ResourceId::parse(text).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &[u8])]) -> Result<Notification, NotificationError> {
        let map: HashMap<String, &[u8]> = pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        Notification::parse(|name| {
            map.get(name)
                .map_or(HeaderValue::Absent, |v| HeaderValue::One(v))
        })
    }

    #[test]
    fn missing_or_blank_channel_id_is_an_error() {
        assert_eq!(parse(&[]), Err(NotificationError::MissingChannelId));
        assert_eq!(
            parse(&[(headers::CHANNEL_ID, b"")]),
            Err(NotificationError::MissingChannelId)
        );
        assert_eq!(
            parse(&[(headers::CHANNEL_ID, b"  ")]),
            Err(NotificationError::MissingChannelId)
        );
    }

    #[test]
    fn full_notification_parses() {
        let n = parse(&[
            (headers::CHANNEL_ID, b"4ba78bf0-6a47-11e2-bcfd-0800200c9a66"),
            (headers::CHANNEL_TOKEN, b"tok"),
            (headers::RESOURCE_STATE, b"exists"),
            (headers::MESSAGE_NUMBER, b"10"),
            (headers::RESOURCE_ID, b"ret08u3rv24htgh289g"),
        ])
        .unwrap();
        assert!(matches!(n.channel, ChannelRef::Id(_)));
        assert_eq!(n.token.as_deref(), Some("tok"));
        assert_eq!(n.resource_state, ResourceState::Exists);
        assert_eq!(n.message_number, Some(MessageNumber::new(10)));
    }

    #[test]
    fn malformed_channel_id_is_not_an_error_but_cannot_match() {
        let n = parse(&[(headers::CHANNEL_ID, &[0xff, 0xfe])]).unwrap();
        assert_eq!(n.channel, ChannelRef::Malformed);
        let long = "x".repeat(65);
        let n = parse(&[(headers::CHANNEL_ID, long.as_bytes())]).unwrap();
        assert_eq!(n.channel, ChannelRef::Malformed);
        let n = Notification::parse(|name| {
            if name == headers::CHANNEL_ID {
                HeaderValue::Repeated
            } else {
                HeaderValue::Absent
            }
        })
        .unwrap();
        assert_eq!(n.channel, ChannelRef::Malformed);
    }

    #[test]
    fn states_parse_case_insensitively_and_unknown_is_kept_apart() {
        assert_eq!(ResourceState::parse(Some("SYNC")), ResourceState::Sync);
        assert_eq!(
            ResourceState::parse(Some("Not_Exists")),
            ResourceState::NotExists
        );
        assert_eq!(
            ResourceState::parse(Some("exploded")),
            ResourceState::Unknown
        );
        assert_eq!(ResourceState::parse(None), ResourceState::Unknown);
    }

    #[test]
    fn message_number_refuses_negative_and_garbage() {
        assert_eq!(MessageNumber::parse("-1"), None);
        assert_eq!(MessageNumber::parse("1e3"), None);
        assert_eq!(MessageNumber::parse("99999999999999999999"), None);
        assert_eq!(MessageNumber::parse("0"), Some(MessageNumber::new(0)));
    }

    #[test]
    fn repeated_token_is_treated_as_absent() {
        let n = Notification::parse(|name| match name {
            headers::CHANNEL_ID => HeaderValue::One(b"abc"),
            headers::CHANNEL_TOKEN => HeaderValue::Repeated,
            _ => HeaderValue::Absent,
        })
        .unwrap();
        assert_eq!(n.token, None);
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            id in proptest::collection::vec(any::<u8>(), 0..200),
            token in proptest::collection::vec(any::<u8>(), 0..300),
            state in proptest::collection::vec(any::<u8>(), 0..40),
            number in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let result = parse(&[
                (headers::CHANNEL_ID, &id),
                (headers::CHANNEL_TOKEN, &token),
                (headers::RESOURCE_STATE, &state),
                (headers::MESSAGE_NUMBER, &number),
            ]);
            let blank = id.iter().all(u8::is_ascii_whitespace);
            prop_assert_eq!(result.is_err(), blank);
        }

        #[test]
        fn any_decimal_message_number_round_trips(n in 0i64..i64::MAX) {
            prop_assert_eq!(MessageNumber::parse(&n.to_string()), Some(MessageNumber::new(n)));
        }
    }
}
