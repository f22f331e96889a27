//! A mirrored event's status as Google gives it (`calendar_events.status`,
//! the `status` the events API and the change feed show). The text forms live
//! here only; the store maps [`EventStatus`] to the column.

use serde::Serialize;

/// Google's status of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// The event is confirmed (Google's default).
    Confirmed,
    /// The event is tentatively confirmed.
    Tentative,
    /// The event was deleted at Google; the mirror keeps it but never lists it.
    Cancelled,
}

impl EventStatus {
    /// Every status, in the order Google's reference lists them.
    pub const ALL: [Self; 3] = [Self::Confirmed, Self::Tentative, Self::Cancelled];

    /// The text form Google sends and the column holds.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Tentative => "tentative",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the text form exactly.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// The status of an event resource whose `status` field is `field`: a
    /// missing or unknown one reads as `confirmed`, Google's documented default
    /// (the resource's own JSON, kept in full, still says what Google sent);
    /// U+0000 is ignored, as everywhere text is mirrored.
    pub fn from_google(field: Option<&str>) -> Self {
        field
            .and_then(|text| Self::parse(&text.replace('\0', "")))
            .unwrap_or(Self::Confirmed)
    }

    /// Whether the event was deleted at Google.
    pub const fn is_cancelled(self) -> bool {
        matches!(self, Self::Cancelled)
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_are_googles() {
        let texts: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["confirmed", "tentative", "cancelled"]);
        for status in EventStatus::ALL {
            assert_eq!(EventStatus::parse(status.as_str()), Some(status));
            assert_eq!(EventStatus::from_google(Some(status.as_str())), status);
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::from(status.as_str()))
            );
        }
        assert_eq!(EventStatus::parse("Cancelled"), None);
    }

    #[test]
    fn a_missing_or_unknown_status_is_confirmed() {
        assert_eq!(EventStatus::from_google(None), EventStatus::Confirmed);
        assert_eq!(
            EventStatus::from_google(Some("cancel\0led")),
            EventStatus::Cancelled
        );
        assert_eq!(
            EventStatus::from_google(Some("postponed")),
            EventStatus::Confirmed
        );
    }

    #[test]
    fn only_cancelled_is_cancelled() {
        for status in EventStatus::ALL {
            assert_eq!(status.is_cancelled(), status == EventStatus::Cancelled);
        }
    }
}
