//! The built binary, driven as an operator and as Google would: configuration
//! errors, `config`, `migrate`, and a committed request surviving `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::binary::{
    KillOnDrop, chronos, free_port, output_within, spawn_logging_to, terminate, wait_until_ok,
};
use sync_store::test_on_both_backends;
use sync_store::test_support::{Backend, TEST_ENCRYPTION_KEY, TestDb, eventually, seed_calendar};

const CHANNEL: &str = "0d6c1a52-8a7e-4d8e-b3c1-6b0f4f0e9c21";
const TOKEN: &str = "k9VbQm2Xc4Lp7Rt1Yw8Zs3Nd6Fh0Gj5Ja2Sx9Ce4Uv7";

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
fn config_prints_valid_toml_with_each_source_and_secrets_redacted() {
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
    assert!(!stdout.contains("super-secret-admin-token"));
    let parsed: toml::Table = stdout.parse().unwrap_or_else(|e| panic!("{e}\n{stdout}"));
    assert_eq!(parsed["sync_debounce_ms"].as_integer(), Some(250));
    assert_eq!(
        parsed["webhook_base_url"].as_str(),
        Some("https://hooks.example.com/")
    );
    assert_eq!(parsed["admin_token"].as_str(), Some("***"));
    assert!(!parsed.contains_key("google_client_id"), "{stdout}");
    assert!(stdout.contains("# from $CHRONOS_ADMIN_TOKEN"), "{stdout}");
    assert!(stdout.contains("# from $WEBHOOK_BASE_URL"), "{stdout}");
    assert!(stdout.contains("chronos.toml\n"), "{stdout}");
    assert!(stdout.contains("\"127.0.0.1:8080\"  # default"), "{stdout}");
    assert!(stdout.contains("# google_client_id is unset"), "{stdout}");
}

#[test]
fn config_check_fails_on_postgres_without_a_key_naming_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .args(["config", "--check"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("FAILED  encryption_key"), "{stdout}");
    assert!(stdout.contains("FAILED  database_url"), "{stdout}");
}

#[test]
fn config_check_passes_when_serve_would_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("CHRONOS_BIND", "127.0.0.1:0")
        .env("CHRONOS_GOOGLE_CLIENT_ID", "client")
        .env("CHRONOS_GOOGLE_CLIENT_SECRET", "secret")
        .args(["config", "--check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert!(
        !dir.path().join("chronos.db").exists(),
        "the check created the database"
    );
}

#[test]
fn config_check_names_missing_google_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("CHRONOS_BIND", "127.0.0.1:0")
        .args(["config", "--check"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("FAILED  google_client_id, google_client_secret"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_key_in_chronos_toml_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("chronos.toml"), "admin_tokn = \"x\"\n").unwrap();
    let (output, exited) =
        output_within(chronos(dir.path()).env("CHRONOS_BIND", "127.0.0.1:0"), 10);
    assert!(exited && !output.status.success(), "started anyway");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`admin_tokn`"), "{stderr}");
}

#[test]
fn a_bare_port_as_bind_names_the_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("CHRONOS_BIND", "8085")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("`bind`") && stderr.contains("host:port"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid type"), "{stderr}");
}

#[test]
fn version_names_the_git_commit() {
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path()).arg("--version").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let expected = format!("chronos-server {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(stdout.trim_end().ends_with(')'), "{stdout}");
}

#[test]
fn cli_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["calendars", "list"][..],
        &[
            "calendars",
            "connect",
            "--user",
            "alice",
            "--calendar",
            "primary",
        ],
        &["users", "set-credentials", "alice"],
    ] {
        let output = chronos(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        let looked = dir.path().join("chronos.db");
        assert!(
            stderr.contains(&looked.display().to_string()),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("CHRONOS_DATABASE_URL"), "{stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files created: {left:?}");
}

async fn set_credentials_reads_the_token_from_stdin(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", db.url_string())
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .args(["users", "set-credentials", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"1//refresh-from-stdin\n").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = sync_domain::ports::CredentialStore::credentials(
        &store,
        &sync_domain::UserId::parse("alice").unwrap(),
    )
    .await
    .unwrap()
    .expect("credentials stored");
    assert_eq!(stored.refresh_token.expose(), "1//refresh-from-stdin");
}

test_on_both_backends!(users_set_credentials_reads_the_token_from_stdin, backend => set_credentials_reads_the_token_from_stdin);

/// Creates the SQLite database the CLI finds in `dir`.
fn migrate_in(dir: &std::path::Path) {
    let output = chronos(dir).arg("migrate").output().unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn users_set_credentials_refuses_an_empty_stdin() {
    let dir = tempfile::tempdir().unwrap();
    migrate_in(dir.path());
    let output = chronos(dir.path())
        .args(["users", "set-credentials", "alice"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("no refresh token on standard input"),
        "{stderr}"
    );
}

async fn disconnect_without_google_settings_leaves_the_stop(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let calendar = seed_calendar(&store, "user-1", "primary", CHANNEL, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let output = chronos(dir.path())
        .env("CHRONOS_DATABASE_URL", db.url_string())
        .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        // Were Google called, nothing would answer here.
        .env(
            "CHRONOS_GOOGLE_API_BASE_URL",
            "http://127.0.0.1:1/calendar/v3",
        )
        .args(["calendars", "disconnect", &calendar.id.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "channel {CHANNEL} retired; the running server stops it at Google"
        )),
        "{stdout}"
    );
    assert!(store.calendar(calendar.id).await.unwrap().is_none());
}

test_on_both_backends!(calendars_disconnect_without_google_settings_leaves_the_stop_to_the_server, backend => disconnect_without_google_settings_leaves_the_stop);

/// A server on a fresh SQLite database in `dir`, its output in `dir/server-PORT.log`.
fn serve_in(dir: &std::path::Path, port: u16) -> KillOnDrop {
    spawn_logging_to(
        chronos(dir).env("CHRONOS_BIND", format!("127.0.0.1:{port}")),
        &dir.join(format!("server-{port}.log")),
    )
}

/// Waits until the server on `port` answers `/healthz`.
async fn wait_until_healthy(port: u16) {
    wait_until_ok(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/healthz"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_sqlite_database_stops_naming_it_and_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = serve_in(dir.path(), port);
    wait_until_healthy(port).await;
    let (output, exited) = output_within(
        chronos(dir.path()).env("CHRONOS_BIND", format!("127.0.0.1:{}", free_port())),
        10,
    );
    assert!(
        exited && !output.status.success(),
        "a second server started"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("chronos.db"), "{all}");
    assert!(all.contains(&format!("process {}", first.0.id())), "{all}");
    assert!(!all.contains("took over"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_work_beside_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve_in(dir.path(), port);
    wait_until_healthy(port).await;
    let output = chronos(dir.path())
        .args([
            "calendars",
            "connect",
            "--user",
            "alice",
            "--calendar",
            "primary",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list = chronos(dir.path())
        .args(["calendars", "list"])
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice"));
}

/// The log of a server started with nothing configured, once it listens and
/// has said what is switched off (the channel worker's line follows its start).
async fn unconfigured_server_log() -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve_in(dir.path(), port);
    wait_until_healthy(port).await;
    let log_path = dir.path().join(format!("server-{port}.log"));
    let log = eventually("the switched-off lines", || async {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let said = ["admin_token ", "webhook_base_url ", "google_client_id "]
            .iter()
            .all(|key| log.contains(key));
        if said { Ok(log) } else { Err(log) }
    })
    .await;
    drop(server);
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_says_what_is_switched_off_with_the_key_to_set() {
    let log = unconfigured_server_log().await;
    for key in ["admin_token", "webhook_base_url", "google_client_id"] {
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("{key} ")))
            .count();
        assert_eq!(lines, 1, "{key}: {log}");
    }
    assert!(log.contains("CHRONOS_ADMIN_TOKEN"), "{log}");
    assert!(log.contains("CHRONOS_GOOGLE_CLIENT_ID"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_logs_carry_no_colour_codes_off_a_terminal() {
    let log = unconfigured_server_log().await;
    assert!(log.contains("chronos-server listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log:?}");
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

async fn request_survives_kill_9(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let calendar = seed_calendar(&store, "user-1", "primary", CHANNEL, TOKEN).await;
    // Its initial sync was claimed: the notification must be written itself.
    sync_store::test_support::consume_pending_request(&store, calendar.id).await;
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
    wait_until_ok(&http, &format!("{base}/healthz")).await;

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

test_on_both_backends!(acknowledged_request_survives_kill_9, backend => request_survives_kill_9);

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
    wait_until_ok(&http, &format!("{base}/healthz")).await;
    let answered = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(answered.status().as_u16(), 200);

    let exit = terminate(&mut child).await;
    assert!(exit.success(), "exit status {exit}");
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
        let (output, exited) = output_within(
            chronos(dir.path())
                .env("CHRONOS_DATABASE_URL", &url)
                .env("CHRONOS_ENCRYPTION_KEY", OTHER_KEY)
                .env("CHRONOS_BIND", format!("127.0.0.1:{}", free_port()))
                .args(args),
            15,
        );
        assert!(
            exited,
            "{args:?} kept running with a key that cannot decrypt the credentials"
        );
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

/// `chronos-server changes tail ARGS` on `db`, its stdout read line by line
/// on a thread (the command runs until it is killed).
struct Tail {
    _child: KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Tail {
    fn start(db: &TestDb, dir: &std::path::Path, args: &[&str]) -> Self {
        let mut child = chronos(dir)
            .env("CHRONOS_DATABASE_URL", db.url_string())
            .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
            .args(["changes", "tail"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            _child: KillOnDrop(child),
            lines,
        }
    }

    /// The next line, waiting up to 20 s.
    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("changes tail printed a line in time")
    }

    /// Lines printed within `wait` (none expected, say).
    fn within(&self, wait: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + wait;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }
}

/// Connects `google_calendar` of `user-1` (which logs `calendar_connected`).
async fn connect_for_tail(store: &sync_store::Store, google_calendar: &str) -> String {
    let (calendar, _) = store
        .connect_calendar(
            &sync_domain::UserId::parse("user-1").unwrap(),
            &sync_domain::GoogleCalendarId::parse(google_calendar).unwrap(),
        )
        .await
        .unwrap();
    calendar.id.to_string()
}

async fn tail_from_start_prints_every_kept_entry(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let a = connect_for_tail(&store, "a").await;
    let b = connect_for_tail(&store, "b").await;
    let dir = tempfile::tempdir().unwrap();
    let tail = Tail::start(&db, dir.path(), &["--from-start"]);
    let first = tail.next();
    let second = tail.next();
    assert!(
        first.contains("calendar_connected") && first.contains(&format!("calendar={a}")),
        "{first}"
    );
    assert!(first.contains("user=user-1"), "{first}");
    assert!(second.contains(&format!("calendar={b}")), "{second}");
    // And it goes on following: an entry written now is printed too.
    let c = connect_for_tail(&store, "c").await;
    let third = tail.next();
    assert!(third.contains(&format!("calendar={c}")), "{third}");
}

test_on_both_backends!(changes_tail_from_start_prints_every_kept_entry_then_follows, backend => tail_from_start_prints_every_kept_entry);

async fn tail_of_one_calendar_prints_only_its_entries(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let a = connect_for_tail(&store, "a").await;
    connect_for_tail(&store, "b").await;
    let dir = tempfile::tempdir().unwrap();
    let tail = Tail::start(
        &db,
        dir.path(),
        &["--from-start", "--calendar", &a, "--json"],
    );
    let connected: serde_json::Value = serde_json::from_str(&tail.next()).unwrap();
    assert_eq!(connected["calendar_id"], a.as_str());
    assert_eq!(connected["kind"], "calendar_connected");
    assert!(connected["cursor"].is_string(), "{connected}");
    // Another calendar's entry is not printed; this one's disconnect is.
    connect_for_tail(&store, "c").await;
    sync_domain::admin::CalendarAdmin::disconnect(
        &store,
        sync_domain::CalendarId::parse(&a).unwrap(),
    )
    .await
    .unwrap();
    let next: serde_json::Value = serde_json::from_str(&tail.next()).unwrap();
    assert_eq!(next["calendar_id"], a.as_str(), "{next}");
    assert_eq!(next["kind"], "calendar_disconnected", "{next}");
    assert!(tail.within(Duration::from_millis(500)).is_empty());
}

test_on_both_backends!(changes_tail_of_one_calendar_prints_only_its_entries, backend => tail_of_one_calendar_prints_only_its_entries);

async fn tail_without_from_start_begins_at_now(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.store().await;
    let old = connect_for_tail(&store, "old").await;
    let dir = tempfile::tempdir().unwrap();
    let tail = Tail::start(&db, dir.path(), &[]);
    // The tail takes "now" when its first read runs: keep writing until it
    // prints, then only entries written after it started may show.
    let mut written = Vec::new();
    let first = loop {
        written.push(connect_for_tail(&store, &format!("new-{}", written.len())).await);
        if let Some(line) = tail.within(Duration::from_millis(500)).into_iter().next() {
            break line;
        }
        assert!(written.len() < 40, "changes tail printed nothing");
    };
    assert!(!first.contains(&old), "history is not replayed: {first}");
    assert!(
        written.iter().any(|id| first.contains(id.as_str())),
        "{first}"
    );
}

test_on_both_backends!(changes_tail_without_from_start_begins_at_now, backend => tail_without_from_start_begins_at_now);

#[test]
fn changes_tail_names_a_calendar_that_is_not_a_uuid() {
    let dir = tempfile::tempdir().unwrap();
    migrate_in(dir.path());
    let (output, exited) = output_within(
        chronos(dir.path()).args(["changes", "tail", "--calendar", "primary"]),
        20,
    );
    assert!(exited && !output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("`primary` is not a calendar id (a UUID)"),
        "{stderr}"
    );
}

/// Google URLs holding passwords (user info and `password=`) are unreachable
/// here: the connection errors the sync worker logs, at debug level, the
/// startup line and `config` never show the passwords (issue 11 item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_error_to_a_url_with_a_password_leaves_the_password_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_with_credentials(dir.path()).await;
    let closed = free_port();
    let api = format!("http://g:apipw1@127.0.0.1:{closed}/calendar/v3");
    let token = format!("http://t:tokenpw2@127.0.0.1:{closed}/token?password=querypw3");
    let with_env = |command: &mut Command| {
        command
            .env("CHRONOS_DATABASE_URL", &url)
            .env("CHRONOS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
            .env("CHRONOS_GOOGLE_CLIENT_ID", "client-id")
            .env("CHRONOS_GOOGLE_CLIENT_SECRET", "client-secret")
            .env("CHRONOS_GOOGLE_API_BASE_URL", &api)
            .env("CHRONOS_GOOGLE_TOKEN_URL", &token);
    };
    let mut connect = chronos(dir.path());
    with_env(&mut connect);
    let connected = connect
        .args([
            "calendars",
            "connect",
            "--user",
            "u1",
            "--calendar",
            "primary",
        ])
        .output()
        .unwrap();
    assert!(
        connected.status.success(),
        "{}",
        String::from_utf8_lossy(&connected.stderr)
    );
    let mut config = chronos(dir.path());
    with_env(&mut config);
    let printed = config.arg("config").output().unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(printed.contains("127.0.0.1"), "{printed}");

    let port = free_port();
    let log_path = dir.path().join("server.log");
    let mut serve = chronos(dir.path());
    with_env(&mut serve);
    let server = spawn_logging_to(
        serve
            .env("CHRONOS_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "debug"),
        &log_path,
    );
    wait_until_healthy(port).await;
    let text = eventually("a failed sync in the log", || async {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("sync failed") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    drop(server);
    assert!(text.contains("chronos-server listening"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    for secret in ["apipw1", "tokenpw2", "querypw3"] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
        assert!(!printed.contains(secret), "{secret} in `config`: {printed}");
    }
}
