//! The one table of every route the service mounts, and the only way to mount one.
//!
//! [`ROUTES`] lists each (method, path template). The generated OpenAPI
//! document ([`crate::openapi`], `docs/openapi.json`) must document exactly
//! these (tests here and in `chronos-server` compare the two), and a
//! test against a running server checks that each entry is served. The other
//! direction, that nothing is mounted without being listed here, holds by
//! construction: [`resource`] and [`route`] are the only constructors the
//! crate uses (a test below scans the crate's routing code for direct
//! `web::resource`/`web::get`-style calls) and both check, in debug builds, that
//! what they mount is listed, so any test that starts the app panics on an
//! undocumented route.

use actix_web::http::Method;
use actix_web::{Resource, Route, web};

/// Every (method, path template) the service serves; paths as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/calendar/webhook"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("PUT", "/internal/users/{user_id}/google-credentials"),
    ("POST", "/internal/calendars"),
    ("GET", "/internal/calendars"),
    ("GET", "/internal/calendars/{id}"),
    ("DELETE", "/internal/calendars/{id}"),
    ("GET", "/internal/calendars/{id}/events"),
    ("POST", "/internal/calendars/{id}/sync"),
    ("GET", "/internal/changes"),
    ("GET", "/internal/changes/stream"),
];

/// The resource at `path` (a full path template from [`ROUTES`]), mounted inside
/// the scope `scope` (`""` at the root).
pub(crate) fn resource(scope: &str, path: &'static str) -> Resource {
    debug_assert!(
        ROUTES.iter().any(|(_, p)| *p == path),
        "{path} is not in webhook_http::ROUTES: add it there, and its handler to openapi::ApiDoc"
    );
    web::resource(path.strip_prefix(scope).unwrap_or(path))
}

/// The route for `method` on `path` (a full path template from [`ROUTES`]).
pub(crate) fn route(method: Method, path: &'static str) -> Route {
    debug_assert!(
        ROUTES.contains(&(method.as_str(), path)),
        "{method} {path} is not in webhook_http::ROUTES: add it there, and its handler to openapi::ApiDoc"
    );
    web::method(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_code_mounts_only_through_the_table() {
        for (file, source) in [
            ("lib.rs", include_str!("lib.rs")),
            ("internal.rs", include_str!("internal.rs")),
            ("changes.rs", include_str!("changes.rs")),
        ] {
            for direct in [
                "web::resource(",
                "web::get()",
                "web::post()",
                "web::put()",
                "web::delete()",
                "web::patch()",
                "web::method(",
            ] {
                assert!(
                    !source.contains(direct),
                    "{file} calls {direct} directly; use routes::resource/routes::route"
                );
            }
        }
    }

    #[test]
    fn the_table_has_no_duplicates() {
        for (i, entry) in ROUTES.iter().enumerate() {
            assert!(!ROUTES[i + 1..].contains(entry), "{entry:?} listed twice");
        }
    }
}
