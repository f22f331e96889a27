//! Timestamps are stored as UTC without an offset (one SQL type on both backends).

use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Domain instant to database value.
pub(crate) fn to_db(t: OffsetDateTime) -> PrimitiveDateTime {
    let utc = t.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

/// Database value to domain instant.
pub(crate) fn from_db(t: PrimitiveDateTime) -> OffsetDateTime {
    t.assume_utc()
}
