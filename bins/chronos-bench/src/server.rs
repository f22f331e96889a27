//! A server under test as a child process: started with a clean environment,
//! waited for until it answers, measured through `/proc/<pid>` (peak RSS from
//! `VmHWM`; CPU time in [`crate::cpu`]), and killed when dropped.

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server child.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

/// What to start: a program, its arguments and its whole environment.
#[derive(Debug)]
pub struct Launch<'a> {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: &'a Path,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the child with only `PATH` kept from this environment; its output
    /// goes to `server.log` in `workdir`.
    pub fn spawn(launch: &Launch<'_>) -> anyhow::Result<Self> {
        let log = launch.workdir.join("server.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(launch.workdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.program.display()))?;
        Ok(Self {
            child,
            addr: launch.addr,
            log,
        })
    }

    /// Waits until `GET /healthz` answers 200, failing early if the child exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("polling the server child")? {
                bail!(
                    "the server exited ({status}) before answering; its log:\n{}",
                    self.log_tail()
                );
            }
            if healthz(self.addr).await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not answer /healthz within {timeout:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM line in {path}"))
    }

    /// How many lines of the server's log are warnings or errors, and the first few.
    pub fn log_warnings(&self, samples: usize) -> (usize, Vec<String>) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .collect();
        let first = warnings
            .iter()
            .take(samples)
            .map(|l| (*l).to_owned())
            .collect();
        (warnings.len(), first)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the child and reaps it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.kill()
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill().context("killing the server child")?;
            self.child.wait().context("reaping the server child")?;
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A loopback address with a port free right now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading the free port")
}

/// A binary built next to this one (`target/release/NAME`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating chronos-bench")?;
    let dir = exe
        .parent()
        .context("chronos-bench has no parent directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p chronos-server -p chronos-bench)",
            path.display()
        );
    }
    Ok(path)
}

/// Whether `GET /healthz` answers 200.
async fn healthz(addr: SocketAddr) -> anyhow::Result<bool> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/healthz")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let ok = response.status().is_success();
    response.into_body().collect().await?;
    Ok(ok)
}
