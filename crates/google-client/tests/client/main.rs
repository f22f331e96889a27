//! Wiremock tests of the real client: requests sent and answers mapped.
