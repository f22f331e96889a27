//! Google Calendar client (work in progress).
