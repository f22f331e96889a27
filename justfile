# Chronos calendar sync: common tasks. `just --list` shows them.
# Tests that need PostgreSQL read CHRONOS_TEST_DATABASE_URL.

pg_url := env_var_or_default("CHRONOS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

# Serve on the embedded SQLite default (chronos.db in this folder).
run *ARGS:
    cargo run -p chronos-server -- {{ARGS}}

# The whole test suite, PostgreSQL included.
test:
    CHRONOS_TEST_DATABASE_URL={{pg_url}} cargo test --workspace

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    cargo clippy -p webhook-http -p chronos-server --all-targets --no-default-features -- -D warnings

# Regenerate docs/openapi.json from the handlers and types (a test fails while it is stale).
openapi:
    UPDATE_OPENAPI=1 cargo test -p webhook-http --test api openapi::docs_openapi_json_is_the_generated_document

# Format the code.
fmt:
    cargo fmt --all

# Exactly what CI runs.
ci:
    bash .ci/run

# Apply pending migrations to the configured database.
migrate:
    cargo run -p chronos-server -- migrate

# The benchmarks of issue 7, one after the other (figures in docs/benchmarks.md):
# the webhook load benchmark (the release server on PostgreSQL and SQLite next
# to a minimal actix-web ceiling; ARGS go to it), hot mix then cold mix (every
# change for a calendar without a pending request) and with the sync worker
# running against a fake Google, then the sync benchmark (with the change log on
# and off), the coalescing figure and the change feed's latency (against an
# in-process fake Google).
# PostgreSQL: CHRONOS_BENCH_DATABASE_URL, else CHRONOS_TEST_DATABASE_URL.
bench *ARGS:
    cargo build --release -p chronos-server -p chronos-bench
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" webhook {{ARGS}}
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" webhook --cold --calendars 100000 {{ARGS}}
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" webhook --with-syncs --calendars 2000 {{ARGS}}
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" sync --compare-change-log
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" coalesce
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" feed-latency
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" feed-latency --instances 2 --backends postgres

# The sync benchmark alone: a full sync of 10,000 and 100,000 events, events/s and peak RSS.
bench-sync *ARGS:
    cargo build --release -p chronos-server -p chronos-bench
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" sync {{ARGS}}

# The coalescing figure alone: 10,000 notifications for 100 calendars, syncs per calendar.
bench-coalesce *ARGS:
    cargo build --release -p chronos-server -p chronos-bench
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" coalesce {{ARGS}}

# The fake Google (docs/fake-google.md) on 127.0.0.1:8090; point chronos-server at it with
# CHRONOS_GOOGLE_API_BASE_URL=http://127.0.0.1:8090/calendar/v3 CHRONOS_GOOGLE_TOKEN_URL=http://127.0.0.1:8090/token
fake-google *ARGS:
    cargo run -p fake-google -- {{ARGS}}

# Reliability soak tests (issue 7): the long SIGKILL run and the PostgreSQL
# restart (restarts the local cluster with pg_ctlcluster). Minutes, not seconds.
soak:
    CHRONOS_TEST_DATABASE_URL={{pg_url}} cargo test -p chronos-server --test soak -- --ignored --test-threads=1 --nocapture

# The change feed's latency alone: notification -> entry at a long-polling
# consumer, p50/p99, debounce 0 and 1000 ms (ARGS: e.g. --instances 2 --backends postgres).
bench-feed *ARGS:
    cargo build --release -p chronos-server -p chronos-bench
    "${CARGO_TARGET_DIR:-target}/release/chronos-bench" feed-latency {{ARGS}}
