//! The OpenAPI document of every route, generated from the handlers (their
//! `#[utoipa::path]` attributes), the types they read and write, and the
//! constants they validate with. `docs/openapi.json` is this document as
//! [`document_json`] prints it; a test fails when the file is stale, and
//! `UPDATE_OPENAPI=1 cargo test -p webhook-http --test api openapi` rewrites it.
//!
//! What every route shares is added here once, as the code does it once: the
//! `X-Request-Id` rule ([`crate::request_id`]), and the internal API's
//! authentication and store failures ([`crate::internal::Admin`], [`ApiError`]).

use crate::error::{ApiError, RETRY_AFTER_SECS};
use actix_web::ResponseError as _;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// The document's root: info, servers, tags and every path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chronos calendar sync",
        description = "Every HTTP route of chronos-server. `POST /calendar/webhook` is Google's push endpoint; `/internal/*` is the internal API for other Chronos services and operators (bearer `admin_token`); the probes and `/metrics` are for the platform. Unknown paths get 404 `{\"detail\": \"Not found\"}`, a known path with a wrong method 405 with `Allow`. Generated from crates/webhook-http (`webhook_http::openapi`); a test keeps docs/openapi.json equal to it and to `webhook_http::ROUTES`.",
    ),
    servers(
        (url = "http://127.0.0.1:8080", description = "the default `bind`; in production the public HTTPS address in front of it"),
    ),
    tags(
        (name = "webhook", description = "Google's push notifications (SPEC section 2)."),
        (name = "probes", description = "Liveness, readiness and metrics."),
        (name = "internal", description = "The internal API (SPEC section 5), behind `Authorization: Bearer <admin_token>`."),
    ),
    paths(
        crate::webhook::receive,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::metrics,
        crate::internal::put_credentials,
        crate::internal::connect,
        crate::internal::list,
        crate::internal::show,
        crate::internal::disconnect,
        crate::internal::events,
        crate::internal::sync,
        crate::changes::changes,
        crate::changes::stream,
    ),
    modifiers(&Shared),
)]
pub struct ApiDoc;

/// The generated document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The generated document as `docs/openapi.json` holds it (pretty, with a final newline).
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        // Plain data: serialising it cannot fail.
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// `{}`: the body that reveals nothing.
pub(crate) struct Empty;

impl PartialSchema for Empty {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some("Always `{}`."))
            .into()
    }
}

impl ToSchema for Empty {}

/// A query parameter that may be left out.
pub(crate) fn query(name: &str, description: &str, schema: RefOr<Schema>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A whole number from `min` to `max` that defaults to `default`.
pub(crate) fn integer(min: u64, max: u64, default: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .default(Some(default.into()))
        .into()
}

/// A JSON error response with `ApiError`'s body.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(ErrorRef::schema())))
}

/// A reference to the `Error` schema.
struct ErrorRef;

impl PartialSchema for ErrorRef {
    fn schema() -> RefOr<Schema> {
        RefOr::Ref(Ref::from_schema_name(crate::error::ErrorBody::name()))
    }
}

/// The name of the shared `X-Request-Id` parameter and response header.
const REQUEST_ID: &str = "RequestId";
/// The shared responses of the internal API, by status.
const INTERNAL_RESPONSES: [(&str, &str); 3] = [
    ("401", "Unauthorized"),
    ("404", "InternalApiOff"),
    ("503", "Unavailable"),
];

/// What every route shares: the request id, and for the internal API the
/// bearer scheme and the answers of its extractor and of a failing store.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "admin".to_owned(),
            RefOr::T(SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`admin_token` from the configuration, compared in constant time.",
                    ))
                    .build(),
            )),
        );
        components
            .parameters
            .insert(REQUEST_ID.to_owned(), RefOr::T(request_id_parameter()));
        components
            .headers
            .insert(REQUEST_ID.to_owned(), RefOr::T(request_id_header()));
        for ((_, name), response) in INTERNAL_RESPONSES.iter().zip(internal_responses()) {
            components
                .responses
                .insert((*name).to_owned(), RefOr::T(with_request_id(response)));
        }
        if let Some(body) = openapi
            .paths
            .paths
            .get_mut(crate::webhook::PATH)
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
            && let RefOr::T(body) = body
        {
            // Any bytes, optional: what the handler reads before discarding them.
            for content in body.content.values_mut() {
                *content = RefOr::T(Content::new(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::Custom("binary".to_owned())))
                        .max_length(Some(crate::webhook::MAX_BODY_BYTES)),
                )));
            }
        }
        for (path, item) in &mut openapi.paths.paths {
            let internal = path.starts_with(crate::internal::PREFIX);
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        *response = with_request_id(std::mem::take(response));
                    }
                }
                if internal {
                    add_internal_responses(operation);
                }
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(RefOr::Ref(Ref::new(format!(
                        "#/components/parameters/{REQUEST_ID}"
                    ))));
            }
        }
    }
}

/// The internal API's 401, 404 and 503 as [`crate::internal::Admin`] and
/// [`ApiError`] produce them, in the order of [`INTERNAL_RESPONSES`].
fn internal_responses() -> [utoipa::openapi::Response; 3] {
    debug_assert_eq!(ApiError::Unauthorized.status_code().as_str(), "401");
    debug_assert_eq!(ApiError::NotFound.status_code().as_str(), "404");
    [
        error_response("`Invalid or missing bearer token` (also before any method or path check).")
            .header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(String::schema()))
                    .description(Some("`Bearer`."))
                    .build(),
            )
            .build(),
        error_response("No admin token is configured: the internal API is off (`Not found`).")
            .build(),
        error_response("`Service unavailable`: the database cannot be reached.")
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0))
                            .examples([RETRY_AFTER_SECS])
                            .build(),
                    ))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            )
            .build(),
    ]
}

/// Each shared internal response the operation does not describe itself, and
/// the bearer requirement.
fn add_internal_responses(operation: &mut Operation) {
    for (status, name) in INTERNAL_RESPONSES {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
    }
    operation.security = Some(vec![SecurityRequirement::new(
        "admin",
        Vec::<String>::new(),
    )]);
}

/// The response with the `X-Request-Id` header every reply carries.
fn with_request_id(mut response: utoipa::openapi::Response) -> utoipa::openapi::Response {
    response.headers.insert(
        "X-Request-Id".to_owned(),
        RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}"))),
    );
    response
}

/// `X-Request-Id` on the request: any value is accepted (one that breaks the
/// rule is replaced, not refused).
fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(format!(
            "Kept and echoed if it is 1 to {} ASCII letters, digits, `-`, `_` or `.`; any other value is replaced by a fresh UUID (never refused).",
            crate::request_id::MAX_LEN
        )))
        .schema(Some(String::schema()))
        .build()
}

/// `X-Request-Id` on every response: what was kept, or the UUID made.
fn request_id_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(crate::request_id::MAX_LEN))
                .pattern(Some(crate::request_id::PATTERN))
                .build(),
        ))
        .description(Some(
            "The request's id: the caller's when it was kept, else a fresh UUID; also on the request's log lines.",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_route_table() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut table: Vec<(String, String)> = crate::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        table.sort();
        assert_eq!(documented, table);
    }
}
