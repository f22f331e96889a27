//! The built binary as an operator deploys it: TLS to PostgreSQL, passwords
//! kept out of what it prints, `/metrics` on its own address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use std::process::Stdio;
use support::binary::{KillOnDrop, chronos, free_port, wait_until_ok};
use sync_store::test_support::{TEST_DATABASE_URL, TEST_ENCRYPTION_KEY, TestDb};

#[derive(QueryableByName)]
struct Connections {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    encrypted: i64,
}

/// The server's connections to `database`, as PostgreSQL sees them.
async fn connections_to(database: &str) -> Connections {
    let admin_url = std::env::var(TEST_DATABASE_URL).unwrap();
    let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap();
    diesel::sql_query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(database)
    .get_result(&mut admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_sslmode_require_over_encrypted_connections_only() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = format!("{}?sslmode=require", db.url_string());
    let database = url::Url::parse(&url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = chronos(dir.path())
        .env("DATABASE_URL", &url)
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("CHRONOS_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let http = reqwest::Client::new();
    // Ready means the database answered through the pool.
    wait_until_ok(&http, &format!("http://127.0.0.1:{port}/readyz")).await;
    let seen = connections_to(&database).await;
    assert!(seen.total >= 1, "the server holds a connection");
    assert_eq!(seen.encrypted, seen.total, "every connection is encrypted");

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("does not verify the server's identity"),
        "the startup log says require does not verify: {log}"
    );
}

#[test]
fn an_unknown_sslmode_stops_startup_with_one_line_naming_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env(
            "DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/x?sslmode=verify_full",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`database_url`"), "{stderr}");
    assert!(stderr.contains("verify_full"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn verify_full_against_an_untrusted_server_stops_startup_with_one_clear_line() {
    let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
        eprintln!("skipped: {TEST_DATABASE_URL} is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env(
            "DATABASE_URL",
            format!("{admin_url}?sslmode=verify-full&sslrootcert=system"),
        )
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("invalid peer certificate") && last.contains("sslmode=verify-full"),
        "{stderr}"
    );
}

#[test]
fn config_never_prints_a_password_from_any_url() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .arg("config")
        .env(
            "DATABASE_URL",
            "postgres://chronos:userinfopw@db/chronos?password=querypw&sslmode=require",
        )
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env(
            "WEBHOOK_BASE_URL",
            "https://hook:webhookpw@chronos.example.com",
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    for secret in ["userinfopw", "querypw", "webhookpw"] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
    }
    assert!(stdout.contains("sslmode=require"), "{stdout}");
}

#[test]
fn a_refused_url_is_shown_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env(
            "WEBHOOK_BASE_URL",
            "ftp://hook:webhookpw@chronos.example.com",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("`webhook_base_url`"), "{stderr}");
    assert!(!stderr.contains("webhookpw"), "{stderr}");
}
