//! HTTP layer (work in progress).
