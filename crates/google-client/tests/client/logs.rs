//! Nothing secret reaches the logs, even at TRACE level.

use super::*;
use google_client::GoogleError;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;
use sync_domain::calendar::{CalendarApi, EventsQuery, WatchRequest};
use sync_domain::ids::{ChannelId, GoogleCalendarId};
use sync_domain::secret::ChannelToken;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The whole test binary's logs from the first call on, at TRACE level, through
/// a global subscriber. A subscriber set for this test's thread alone
/// (`set_default`) missed the retry line now and then in CI, even after
/// rebuilding tracing's callsite interest: other tests of this binary hit the
/// same callsites at the same time, and interest is cached per callsite for
/// the whole process. A global subscriber leaves nothing to race: every
/// callsite is enabled for it. Other tests' lines land here too, which only
/// widens the check for secrets.
fn captured() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this test binary");
        logs
    })
}

#[tokio::test]
async fn no_token_or_secret_is_logged() {
    let logs = captured();

    let google = Google::start()
        .await
        .with_cached_token("ya29.rejected-secret")
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.fresh-secret", "expires_in": 3599,
            "refresh_token": "1//0rotated-secret", "token_type": "Bearer"
        })))
        .mount(&google.server)
        .await;
    Mock::given(header("authorization", "Bearer ya29.rejected-secret"))
        .respond_with(google_error(401, "authError", "Invalid Credentials"))
        .mount(&google.server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API_PATH}/calendars/primary/events/watch")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "kind": "api#channel", "id": "chan-1", "resourceId": "res-1",
            "resourceUri": "https://x", "token": "channel-token-secret",
            "expiration": "1735689600000"
        })))
        .mount(&google.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(google_error(503, "backendError", "Backend Error"))
        .mount(&google.server)
        .await;

    let primary = GoogleCalendarId::parse("primary").unwrap();
    let request = WatchRequest {
        channel_id: ChannelId::parse("chan-1").unwrap(),
        token: ChannelToken::new("channel-token-secret"),
        address: "https://chronos.example.com/calendar/webhook".into(),
        ttl: Duration::from_secs(60),
    };
    google
        .client
        .watch(&user(), &primary, &request)
        .await
        .unwrap();
    let query = EventsQuery {
        sync_token: Some("sync-token-value".into()),
        page_token: None,
        max_results: 250,
    };
    let error = google
        .client
        .list_events(&user(), &primary, &query)
        .await
        .unwrap_err();
    assert!(matches!(error, GoogleError::Transient(_)));

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("retrying Google call"),
        "logs were captured: {text}"
    );
    for secret in [
        CLIENT_SECRET,
        REFRESH,
        "ya29.rejected-secret",
        "ya29.fresh-secret",
        "1//0rotated-secret",
        "channel-token-secret",
    ] {
        assert!(!text.contains(secret), "{secret} was logged:\n{text}");
    }
}
