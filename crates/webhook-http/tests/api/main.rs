//! The routes, driven through `actix_web::test` with the in-memory fakes: one
//! test binary, one module per route family.

// A test binary: a failed unwrap in a helper is a failed test, as in a #[test].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod health;
mod helpers;
mod openapi;
mod webhook;
