//! The boundary's one error type: each variant maps to a status and a JSON body
//! `{"detail": "..."}`. Server errors are logged here, with their cause chain,
//! and answered with a bland body.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use sync_domain::NotificationError;
use sync_domain::ports::StoreError;

/// Seconds a caller is asked to wait after a 503 (Google backs off on its own anyway).
pub const RETRY_AFTER_SECS: u32 = 5;

/// Why a request was not served normally.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `X-Goog-Channel-ID` missing or blank: 400.
    #[error("Missing channel ID")]
    MissingChannelId,
    /// Channel token missing, empty or wrong: 401.
    #[error("Invalid token")]
    InvalidToken,
    /// The body is larger than the route accepts: 413.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The body stream broke off or could not be decoded: 400.
    #[error("Invalid request body")]
    UnreadableBody(#[source] actix_web::Error),
    /// The body did not arrive within the route's deadline: 408.
    #[error("Request body timed out")]
    BodyTimeout,
    /// No route at this path: 404.
    #[error("Not found")]
    NotFound,
    /// Internal API: bearer token missing, malformed or wrong: 401 with `WWW-Authenticate: Bearer`.
    #[error("Invalid or missing bearer token")]
    Unauthorized,
    /// Internal API: no connected calendar with this id: 404.
    #[error("Calendar not found")]
    CalendarNotFound,
    /// Internal API: an invalid input, with what is wrong: 400.
    #[error("{0}")]
    Invalid(String),
    /// Change feed: the cursor is older than the retention: 410, with what to do.
    #[error("{0}")]
    CursorExpired(String),
    /// The route exists but not for this method: 405 with `Allow`.
    #[error("Method not allowed")]
    MethodNotAllowed {
        /// The methods the route does accept.
        allow: &'static str,
    },
    /// The store could not be reached: 503 with `Retry-After`.
    #[error("store unavailable while {context}")]
    StoreUnavailable {
        /// What the request was doing, e.g. which channel it was looking up.
        context: String,
        /// The store's own error.
        #[source]
        source: StoreError,
    },
}

impl ApiError {
    /// A store failure, with what the request was doing at the time.
    pub fn store_unavailable(context: impl Into<String>, source: StoreError) -> Self {
        Self::StoreUnavailable {
            context: context.into(),
            source,
        }
    }

    /// The `detail` the caller sees: fixed texts, never internals.
    fn detail(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(match self {
            Self::Invalid(detail) | Self::CursorExpired(detail) => {
                return std::borrow::Cow::Borrowed(detail.as_str());
            }
            Self::Unauthorized => "Invalid or missing bearer token",
            Self::CalendarNotFound => "Calendar not found",
            Self::MissingChannelId => "Missing channel ID",
            Self::InvalidToken => "Invalid token",
            Self::PayloadTooLarge => "Payload too large",
            Self::UnreadableBody(_) => "Invalid request body",
            Self::BodyTimeout => "Request body timed out",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::StoreUnavailable { .. } => "Service unavailable",
        })
    }
}

impl From<NotificationError> for ApiError {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::MissingChannelId => Self::MissingChannelId,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// What went wrong, for a person: fixed texts, or what about the input is invalid.
    #[schema(value_type = String)]
    detail: std::borrow::Cow<'a, str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingChannelId | Self::UnreadableBody(_) | Self::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidToken | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound | Self::CalendarNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::CursorExpired(_) => StatusCode::GONE,
            Self::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %error_chain(self), "request failed");
        }
        let mut response = HttpResponse::build(status);
        match self {
            Self::StoreUnavailable { .. } => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            detail: self.detail(),
        })
    }
}

/// An error and its causes on one line, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// A handler answering JSON 405 for a route's unsupported methods.
pub(crate) fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move || std::future::ready(Err(ApiError::MethodNotAllowed { allow }))
}

/// The app's default service, so unknown paths get a JSON 404 too:
/// `App::new().default_service(web::to(webhook_http::error::not_found))`.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
