//! Fuzzes notification parsing and the verification decision with arbitrary
//! header bytes: neither may panic, and the decision must follow the SPEC's
//! order whatever the input. Only a UUID can be one of our channel ids (issue
//! 14 item 6), and random bytes are almost never one: a channel id value that
//! starts with 0xFD stands for a fixed UUID, so the checks after the lookup
//! are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_domain::notification::{ChannelRef, HeaderValue, Notification, headers};
use sync_domain::verification::needs_lookup;
use sync_domain::{CalendarId, ChannelRecord, ChannelToken, MessageNumber, Verdict, verify};

/// The channel id a value starting with 0xFD stands for.
const UUID_CHANNEL: &[u8] = b"4d2c0b9e-6f1a-4c3e-9a5b-1e2f3a4b5c6d";

/// Splits the input into header values; a 0xFF byte separates them, and a
/// value starting with 0xFE counts as a repeated header.
fn values(data: &[u8]) -> Vec<HeaderValue<'_>> {
    data.split(|b| *b == 0xff)
        .map(|v| match v {
            [] => HeaderValue::Absent,
            [0xfe, ..] => HeaderValue::Repeated,
            bytes => HeaderValue::One(bytes),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let parts = values(data);
    let get = |i: usize| parts.get(i).copied().unwrap_or(HeaderValue::Absent);
    let Ok(notification) = Notification::parse(|name| match name {
        headers::CHANNEL_ID => match get(0) {
            HeaderValue::One([0xfd, ..]) => HeaderValue::One(UUID_CHANNEL),
            other => other,
        },
        headers::CHANNEL_TOKEN => get(1),
        headers::RESOURCE_STATE => get(2),
        headers::MESSAGE_NUMBER => get(3),
        headers::RESOURCE_ID => get(4),
        _ => HeaderValue::Absent,
    }) else {
        return;
    };
    let record = ChannelRecord {
        token: ChannelToken::new("fuzz-token"),
        calendar_id: Some(CalendarId::from_uuid(uuid::Uuid::nil())),
        calendar_active: data.len() % 2 == 0,
        last_message_number: Some(MessageNumber::new(5)),
    };
    let verdict = verify(&notification, Some(&record));
    if !needs_lookup(&notification) {
        // Malformed, or not a UUID: unknown, whatever the store would say.
        assert_eq!(verdict, Verdict::UnknownChannel);
    } else if notification.token.as_deref() != Some("fuzz-token") {
        assert!(matches!(notification.channel, ChannelRef::Id(_)));
        assert_eq!(verdict, Verdict::InvalidToken);
    }
    assert_eq!(verify(&notification, None), Verdict::UnknownChannel);
    let _ = format!("{notification:?}");
});
