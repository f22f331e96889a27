//! Counts the internal API's requests by route (the pattern, never the raw
//! path, so ids do not multiply the series), method and status.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// Internal API requests by `route`, `method` and `status`.
pub const INTERNAL_REQUESTS_METRIC: &str = "chronos_internal_api_requests_total";

/// The prefix of the routes counted.
const INTERNAL_PREFIX: &str = "/internal";

/// The middleware; wrap the whole app with `middleware::from_fn(route_metrics::middleware)`.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let counted = req.path().starts_with(INTERNAL_PREFIX);
    let method = req.method().as_str().to_owned();
    let result = next.call(req).await;
    if counted {
        let (route, status) = match &result {
            Ok(response) => (
                response.request().match_pattern(),
                response.status().as_u16(),
            ),
            Err(error) => (None, error.as_response_error().status_code().as_u16()),
        };
        metrics::counter!(
            INTERNAL_REQUESTS_METRIC,
            "route" => route.unwrap_or_else(|| "unmatched".to_owned()),
            "method" => method,
            "status" => status.to_string(),
        )
        .increment(1);
    }
    result
}
