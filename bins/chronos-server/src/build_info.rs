//! What this binary is: its version and the git commit it was built from (see `build.rs`).

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or `unknown` when built outside a checkout
/// without `CHRONOS_BUILD_COMMIT` (`build.rs` sets `CHRONOS_GIT_COMMIT`).
pub const COMMIT: &str = env!("CHRONOS_GIT_COMMIT");
