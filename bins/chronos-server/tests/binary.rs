//! The built binary, driven as an operator and as Google would: configuration
//! errors, `config`, `migrate`, and a committed request surviving `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sync_store::test_support::seed_calendar;
use sync_store::test_support::{Backend, TEST_ENCRYPTION_KEY, TestDb};

const CHANNEL: &str = "0d6c1a52-8a7e-4d8e-b3c1-6b0f4f0e9c21";
const TOKEN: &str = "k9VbQm2Xc4Lp7Rt1Yw8Zs3Nd6Fh0Gj5Ja2Sx9Ce4Uv7";

/// The binary with a clean environment and an empty working directory.
fn chronos(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chronos-server"));
    command.current_dir(dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
}

#[test]
fn bad_configuration_stops_startup_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        (
            "CHRONOS_DATABASE_URL",
            "mysql://db/chronos",
            "`database_url`",
        ),
        ("CHRONOS_BIND", "not-an-address", "`bind`"),
        ("CHRONOS_ENCRYPTION_KEY", "dG9vLXNob3J0", "`encryption_key`"),
        ("CHRONOS_LOG_FORMAT", "xml", "`log_format`"),
        ("CHRONOS_SYNC_DEBOUNCE_MS", "soon", "`sync_debounce_ms`"),
    ] {
        let output = chronos(dir.path()).env(var, value).output().unwrap();
        assert!(!output.status.success(), "{var} accepted");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{var}: {stderr}");
        if var == "CHRONOS_ENCRYPTION_KEY" {
            assert!(!stderr.contains(value), "secret printed: {stderr}");
        }
    }
}

#[test]
fn postgres_without_encryption_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("encryption_key"), "{stderr}");
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chronos.toml"), "sync_debounce_ms = 250\n").unwrap();
    let output = chronos(dir.path())
        .env("CHRONOS_ADMIN_TOKEN", "super-secret-admin-token")
        .env("WEBHOOK_BASE_URL", "https://hooks.example.com")
        .arg("config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("sync_debounce_ms = 250"), "{stdout}");
    assert!(
        stdout.contains("webhook_base_url = https://hooks.example.com/"),
        "{stdout}"
    );
    assert!(stdout.contains("admin_token = ***"), "{stdout}");
    assert!(!stdout.contains("super-secret-admin-token"));
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path()).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("chronos.db").exists());
    let again = chronos(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("applied 0 migration(s)"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(response) = http.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become healthy");
}

async fn request_survives_kill_9(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let calendar = seed_calendar(&store, "user-1", "primary", CHANNEL, TOKEN).await;
    let before = calendar.sync_request_count;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", db.url_string())
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("CHRONOS_BIND", format!("127.0.0.1:{port}"))
        .env("CHRONOS_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until_healthy(&http, &base).await;

    let response = http
        .post(format!("{base}/calendar/webhook"))
        .header("X-Goog-Channel-ID", CHANNEL)
        .header("X-Goog-Channel-Token", TOKEN)
        .header("X-Goog-Resource-State", "exists")
        .header("X-Goog-Message-Number", "42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // SIGKILL right after the reply: no chance to flush anything.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let after = store.calendar(calendar.id).await.unwrap().unwrap();
    assert_eq!(
        after.sync_request_count,
        before + 1,
        "the acknowledged request was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_request_survives_kill_9_on_sqlite() {
    request_survives_kill_9(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_request_survives_kill_9_on_postgres() {
    request_survives_kill_9(Backend::Postgres).await;
}

/// SIGTERM drains and exits cleanly (SPEC section 8), and a request sent just
/// before it is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", db.url_string())
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("CHRONOS_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_until_healthy(&http, &base).await;
    let answered = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(answered.status().as_u16(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const OTHER_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// A SQLite database in `dir` holding one user's credentials sealed under `TEST_ENCRYPTION_KEY`.
async fn database_with_credentials(dir: &std::path::Path) -> String {
    use sync_domain::ports::CredentialStore as _;
    let url = format!("sqlite://{}", dir.join("chronos.db").display());
    let store = sync_store::Store::open(
        sync_store::DatabaseUrl::parse(&url).unwrap(),
        Some(TEST_ENCRYPTION_KEY),
        Default::default(),
    )
    .await
    .unwrap();
    store
        .put_refresh_token(
            &sync_domain::UserId::parse("u1").unwrap(),
            &sync_domain::RefreshToken::new("1//r"),
        )
        .await
        .unwrap();
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_cannot_decrypt_the_stored_credentials_stops_serve_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_with_credentials(dir.path()).await;
    for args in [&["serve"][..], &["calendars", "list"][..]] {
        let mut child = chronos(dir.path())
            .env("CHRONOS_DATABASE_URL", &url)
            .env("CHRONOS_ENCRYPTION_KEY", OTHER_KEY)
            .env("CHRONOS_BIND", format!("127.0.0.1:{}", free_port()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{args:?} kept running with a key that cannot decrypt the credentials");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(last.contains("encryption_key"), "{args:?}: {stderr}");
        assert!(!stderr.contains(OTHER_KEY), "secret printed: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_reencrypts_under_the_new_key_so_the_old_one_can_go() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_with_credentials(dir.path()).await;
    let output = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", &url)
        .env("CHRONOS_ENCRYPTION_KEY", OTHER_KEY)
        .env("CHRONOS_RETIRED_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEY)
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("re-encrypted 1 credential(s)"), "{stdout}");
    let output = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", &url)
        .env("CHRONOS_ENCRYPTION_KEY", OTHER_KEY)
        .args(["calendars", "list"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}
