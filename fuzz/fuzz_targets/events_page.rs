//! Fuzzes `events.list` page decoding with arbitrary bytes: it may refuse the
//! page, but never panic, and whatever it accepts holds only events with an id
//! and no U+0000 in the fields the mirror stores, every other item reported
//! by a position on the page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_domain::page::decode_events_page;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = decode_events_page(data) else {
        return;
    };
    let total = page.items.len() + page.skipped.len();
    for event in &page.items {
        assert!(!event.id.is_empty());
        for text in [Some(&event.id), event.etag.as_ref(), event.summary.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(!text.contains('\0'));
        }
    }
    for skipped in &page.skipped {
        assert!(skipped.position < total);
    }
});
