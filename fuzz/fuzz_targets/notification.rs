//! Fuzzes notification parsing and the verification decision with arbitrary
//! header bytes: neither may panic, and the decision must follow the SPEC's
//! order whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_domain::notification::{ChannelRef, HeaderValue, Notification, headers};
use sync_domain::{CalendarId, ChannelRecord, ChannelToken, MessageNumber, Verdict, verify};

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
        headers::CHANNEL_ID => get(0),
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
    if matches!(notification.channel, ChannelRef::Malformed) {
        assert_eq!(verdict, Verdict::UnknownChannel);
    }
    if notification.token.as_deref() != Some("fuzz-token") && matches!(notification.channel, ChannelRef::Id(_)) {
        assert_eq!(verdict, Verdict::InvalidToken);
    }
    assert_eq!(verify(&notification, None), Verdict::UnknownChannel);
    let _ = format!("{notification:?}");
});
