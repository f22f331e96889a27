//! The transcripts in README.md and docs/walkthrough.md, run as written.
//!
//! Every ```` ```console ```` block in those files is a transcript: `$ ` starts
//! a command (`> ` continues it), the lines up to the next command are its
//! output (stdout and stderr). In expected output `[..]` stands for any text
//! within a line (ids, times) and a line `...` for any number of lines. The
//! commands run, in order, in one `bash` per document against the real
//! `chronos-server` (on `PATH`) and a fake Google, started here the way the
//! walkthrough starts them (free ports instead of 8080/8090, passed as `$S`
//! and `$F`), so the documented outputs cannot drift.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use support::binary::{KillOnDrop, chronos, free_port, spawn_logging_to};

/// One command of a transcript and what it prints.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The steps of every `console` block of a Markdown document.
fn transcripts(doc: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    for (n, line) in doc.lines().enumerate() {
        if in_console || in_other {
            if line.trim_start().starts_with("```") {
                in_console = false;
                in_other = false;
                continue;
            }
            if in_other {
                continue;
            }
            if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    line: n + 1,
                    command: command.to_owned(),
                    expected: Vec::new(),
                });
            } else if let Some(more) = line.strip_prefix("> ")
                && let Some(step) = steps.last_mut()
                && step.expected.is_empty()
            {
                step.command.push('\n');
                step.command.push_str(more);
            } else if let Some(step) = steps.last_mut() {
                step.expected.push(line.to_owned());
            }
        } else if line.trim_start().starts_with("```console") {
            in_console = true;
        } else if line.trim_start().starts_with("```") {
            in_other = true;
        }
    }
    steps
}

/// Whether `actual` matches `expected`, where `[..]` matches any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut tail) = actual.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        let last = i == rest.len() - 1;
        if last {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the output lines match the expected ones (`...` skips any lines).
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(first, a) && lines_match(rest, more)),
    }
}

/// A `bash` reading commands from the test; killed when dropped.
struct Shell {
    _child: KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const END: &str = "@@chronos-docs-step-end@@";

impl Shell {
    fn start(dir: &Path, env: &[(String, String)]) -> Self {
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("bash");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut shell = Self {
            _child: KillOnDrop(child),
            stdin,
            stdout,
        };
        shell.run("exec 2>&1");
        shell
    }

    fn run(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}\necho; echo {END}").unwrap();
        self.stdin.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let line = line.trim_end_matches('\n').to_owned();
            if line == END {
                break;
            }
            lines.push(line);
        }
        // The `echo` before the marker ends an output without a final newline.
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The environment of the walkthrough's server (and of its CLI commands).
fn server_env(fake: &str, port: u16) -> Vec<(String, String)> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_chronos-server"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    [
        ("PATH", path.as_str()),
        ("HOME", "/nonexistent"),
        ("CHRONOS_ADMIN_TOKEN", "change-me-to-a-long-secret"),
        ("WEBHOOK_BASE_URL", &format!("http://127.0.0.1:{port}")),
        (
            "CHRONOS_GOOGLE_API_BASE_URL",
            &format!("http://{fake}/calendar/v3"),
        ),
        ("CHRONOS_GOOGLE_TOKEN_URL", &format!("http://{fake}/token")),
        ("CHRONOS_GOOGLE_CLIENT_ID", "fake-client"),
        ("CHRONOS_GOOGLE_CLIENT_SECRET", "fake-secret"),
        ("CHRONOS_BIND", &format!("127.0.0.1:{port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs one document's transcripts against a fresh server and fake Google;
/// returns the server's log.
async fn check_document(path: &str) -> String {
    for tool in ["bash", "curl", "jq"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "the documentation transcripts need `{tool}` on PATH");
    }
    let doc = std::fs::read_to_string(repo_file(path)).unwrap();
    let steps = transcripts(&doc);
    assert!(!steps.is_empty(), "{path} has no console transcript");

    let fake = fake_google::spawn(fake_google::FakeGoogle::default()).unwrap();
    let fake_addr = fake.address.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = server_env(&fake_addr, port);
    // `env` sets its own `PATH`, with the binaries' directory first.
    let _server = spawn_logging_to(
        chronos(dir.path()).envs(env.iter().map(|(k, v)| (k, v))),
        &dir.path().join("server.log"),
    );

    let mut shell_env = env.clone();
    shell_env.extend(
        [
            ("F", fake_addr.clone()),
            ("S", format!("127.0.0.1:{port}")),
            (
                "AUTH",
                "Authorization: Bearer change-me-to-a-long-secret".to_owned(),
            ),
            ("J", "Content-Type: application/json".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let failures = tokio::task::block_in_place(|| {
        let mut shell = Shell::start(dir.path(), &shell_env);
        let ready = shell.run(
            "for i in $(seq 200); do curl -sf $S/healthz >/dev/null && echo up && break; sleep 0.05; done",
        );
        assert_eq!(ready, ["up"], "the server did not start");
        let mut failures = Vec::new();
        for step in &steps {
            let actual = shell.run(&step.command);
            if !lines_match(&step.expected, &actual) {
                failures.push(format!(
                    "{path}:{}: $ {}\n--- expected\n{}\n--- got\n{}\n",
                    step.line,
                    step.command,
                    step.expected.join("\n"),
                    actual.join("\n")
                ));
            }
        }
        failures
    });
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        failures.is_empty(),
        "{} transcript step(s) differ from the documentation:\n{}\nserver log:\n{log}",
        failures.len(),
        failures.join("\n")
    );
    fake.stop().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_transcripts_match_the_real_binaries() {
    let log = check_document("docs/walkthrough.md").await;
    // Logged as the walkthrough says: one `sync completed` line per sync,
    // with the calendar, events applied, pages and duration; no colour codes
    // in a file.
    assert!(
        log.lines().any(|l| l.contains("sync completed")
            && l.contains("google_calendar_id=primary")
            && l.contains("events_applied=")
            && l.contains("pages=")
            && l.contains("duration_ms=")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_transcripts_match_the_real_binaries() {
    check_document("README.md").await;
}

#[test]
fn placeholders_match_ids_and_times_only_where_written() {
    assert!(line_matches(
        r#"{"id":"[..]","ok":true}"#,
        r#"{"id":"5bfa","ok":true}"#
    ));
    assert!(!line_matches(
        r#"{"id":"[..]","ok":true}"#,
        r#"{"id":"5bfa","ok":false}"#
    ));
    assert!(lines_match(
        &["a".into(), "...".into(), "z".into()],
        &["a".into(), "b".into(), "c".into(), "z".into()]
    ));
    assert!(!lines_match(&["a".into()], &["a".into(), "b".into()]));
}
