//! A fixture holding the fakes, and a way to send it one request.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{App, test, web};
use std::sync::Arc;
use sync_domain::fakes::{FakeClock, InMemoryWebhookStore, message};
use sync_domain::ports::{RecordOutcome, StoreError, SyncRequest, WebhookStore};
use sync_domain::{CalendarId, ChannelId, ChannelRecord, ChannelToken};
use webhook_http::error::not_found;
use webhook_http::{WebhookState, configure};

/// The registered channel's id (a UUID, as ours are).
pub const CHANNEL: &str = "4ba78bf0-6a47-11e2-bcfd-0800200c9a66";
/// The registered channel's token.
pub const TOKEN: &str = "Y2hyb25vcy10ZXN0LXRva2VuLW9mLTQzLWNoYXJzLi4";
/// The calendar the registered channel watches.
pub const CALENDAR: &str = "00000000-0000-0000-0000-000000000007";

/// The watched calendar's id.
pub fn calendar() -> CalendarId {
    CalendarId::parse(CALENDAR).unwrap()
}

/// The registered channel's id.
pub fn channel() -> ChannelId {
    ChannelId::parse(CHANNEL).unwrap()
}

/// An active channel record whose last accepted message number is `last`.
pub fn record(last: Option<i64>) -> ChannelRecord {
    ChannelRecord {
        token: ChannelToken::new(TOKEN),
        calendar_id: Some(calendar()),
        calendar_active: true,
        last_message_number: last.map(message),
    }
}

/// What a test sees of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    /// The `Content-Type` header, as text.
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts status, JSON content type and body in one go.
    #[track_caller]
    pub fn assert(&self, status: u16, body: &serde_json::Value) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type(), "application/json", "{self:?}");
        assert_eq!(&self.body, body, "{self:?}");
    }
}

/// A store whose lookups work but whose writes fail, to show a 200 waits for the commit.
#[derive(Debug, Default)]
pub struct WriteFailingStore(pub InMemoryWebhookStore);

#[async_trait::async_trait]
impl WebhookStore for WriteFailingStore {
    async fn find_channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        self.0.find_channel(id).await
    }

    async fn record_sync_request(&self, _: &SyncRequest) -> Result<RecordOutcome, StoreError> {
        Err(StoreError::Query("disk full".into()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

/// The fakes behind one app.
pub struct Fixture {
    pub store: Arc<InMemoryWebhookStore>,
    pub clock: Arc<FakeClock>,
}

impl Fixture {
    /// A store that knows [`CHANNEL`] (active, nothing seen yet).
    pub fn new() -> Self {
        let fixture = Self::empty();
        fixture.store.insert_channel(channel(), record(None));
        fixture
    }

    /// A store that knows no channel.
    pub fn empty() -> Self {
        Self {
            store: Arc::new(InMemoryWebhookStore::default()),
            clock: Arc::new(FakeClock::default()),
        }
    }

    /// Sends one request to an app wired as the binary wires it.
    pub async fn send(&self, req: test::TestRequest) -> Reply {
        self.send_edited(req, |_| {}).await
    }

    /// Sends one request after editing its final headers (e.g. removing `Content-Length`).
    pub async fn send_edited(
        &self,
        req: test::TestRequest,
        edit: impl FnOnce(&mut HeaderMap),
    ) -> Reply {
        send_to(
            WebhookState::new(self.store.clone(), self.clock.clone()),
            req,
            edit,
        )
        .await
    }
}

/// Sends one request to an app over the given state.
pub async fn send_to(
    state: WebhookState,
    req: test::TestRequest,
    edit: impl FnOnce(&mut HeaderMap),
) -> Reply {
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state))
            .configure(configure)
            .default_service(web::to(not_found)),
    )
    .await;
    let mut req = req.to_request();
    edit(req.headers_mut());
    let resp = test::call_service(&app, req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {bytes:?}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// A notification from Google with the given headers (name, value).
pub fn notification(headers: &[(&str, &str)]) -> test::TestRequest {
    headers.iter().fold(
        test::TestRequest::post().uri("/calendar/webhook"),
        |req, (k, v)| req.append_header((*k, *v)),
    )
}

/// A well-formed change notification on [`CHANNEL`] with [`TOKEN`].
pub fn change(state: &str, number: i64) -> test::TestRequest {
    let number = number.to_string();
    notification(&[
        ("X-Goog-Channel-ID", CHANNEL),
        ("X-Goog-Channel-Token", TOKEN),
        ("X-Goog-Resource-State", state),
        ("X-Goog-Resource-ID", "ret08u3rv24htgh289g"),
        ("X-Goog-Message-Number", &number),
    ])
}
