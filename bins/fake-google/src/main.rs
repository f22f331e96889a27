//! `chronos-fake-google`: Google Calendar's HTTP surface, faked (work in progress).

fn main() {}
