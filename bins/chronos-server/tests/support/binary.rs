//! The built `chronos-server` binary as a subprocess, as an operator runs it.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;
use sync_store::test_support::eventually;

/// The binary with a clean environment (`PATH` only) in the working directory `dir`.
pub fn chronos(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chronos-server"));
    command.current_dir(dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command
}

/// A port nothing listens on (until a server is started on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running subprocess, killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` with no standard input and its output (stdout and
/// stderr) in the file `log`.
pub fn spawn_logging_to(command: &mut Command, log: &Path) -> KillOnDrop {
    let file = std::fs::File::create(log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

/// Runs `command` to its end, or kills it after `secs` (a server that should
/// have refused to start): the output so far, and whether it exited by itself.
pub fn output_within(command: &mut Command, secs: u64) -> (Output, bool) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut exited = true;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            exited = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), exited)
}

/// Waits until `url` answers a 2xx (`/healthz`: the server listens; `/readyz`:
/// its database answers too); fails the test after
/// [`EVENTUALLY`](sync_store::test_support::EVENTUALLY).
pub async fn wait_until_ok(http: &reqwest::Client, url: &str) {
    eventually(&format!("{url} to answer 2xx"), || {
        let response = http.get(url).send();
        async move { response.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

/// SIGTERM, then the exit status once the drain is done (at most
/// [`EVENTUALLY`](sync_store::test_support::EVENTUALLY)).
pub async fn terminate(server: &mut KillOnDrop) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the exit after SIGTERM", || {
        std::future::ready(server.0.try_wait().unwrap())
    })
    .await
}
