//! The load generator: keep-alive HTTP/1.1 connections over loopback (a raw
//! hyper client, so the generator costs as little CPU as it can), a request
//! mix, and latency histograms.
//!
//! Two shapes of load: a closed loop (each connection sends its next request
//! as soon as the last is answered: the most the server can take), and an open
//! loop at a fixed rate whose latency is measured from each request's
//! *scheduled* send time, so a stalled server is not hidden by the generator
//! waiting for it (coordinated omission).

use crate::database::SeededChannel;
use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// The webhook's path.
const PATH: &str = "/calendar/webhook";
/// Highest latency the histograms hold, in microseconds (a minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// The kinds of notification in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A change (`exists`) to a known calendar, with its token: a durable write.
    Change,
    /// The `sync` handshake of a known channel: a lookup only.
    Handshake,
    /// A channel id nobody knows: a lookup that finds nothing.
    Unknown,
    /// A known channel with the wrong token: 401.
    BadToken,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Change, Kind::Handshake, Kind::Unknown, Kind::BadToken];

    /// The status SPEC section 2 gives this kind.
    fn expected_status(self) -> u16 {
        match self {
            Kind::BadToken => 401,
            Kind::Change | Kind::Handshake | Kind::Unknown => 200,
        }
    }
}

/// Relative weights of change, handshake, unknown and bad-token notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix([u32; 4]);

impl Mix {
    /// 70% changes, 10% handshakes, 10% unknown channels, 10% bad tokens.
    pub const REALISTIC: Mix = Mix([70, 10, 10, 10]);

    /// The share of change notifications (the first weight) in the mix.
    pub fn change_share(self) -> f64 {
        let total: u32 = self.0.iter().sum();
        f64::from(self.0[0]) / f64::from(total.max(1))
    }

    fn pick(self, rng: &mut Rng) -> Kind {
        let total: u32 = self.0.iter().sum();
        let mut roll = (rng.next() % u64::from(total.max(1))) as u32;
        for (kind, weight) in Kind::ALL.into_iter().zip(self.0) {
            if roll < weight {
                return kind;
            }
            roll -= weight;
        }
        Kind::Change
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("`{s}`: {e}"))?;
        match <[u32; 4]>::try_from(parts) {
            Ok(weights) if weights.iter().sum::<u32>() > 0 => Ok(Mix(weights)),
            _ => Err(format!(
                "`{s}`: give four weights CHANGE,HANDSHAKE,UNKNOWN,BAD_TOKEN, not all zero"
            )),
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a},{b},{c},{d}")
    }
}

/// SplitMix64: a tiny, fast, seedable generator (statistical quality is all a mix needs).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What is sent: the channels to pick from, the mix, and the message counter.
#[derive(Debug)]
pub struct Workload {
    channels: Vec<SeededChannel>,
    mix: Mix,
    /// Whether statuses are checked against SPEC section 2 (not for the ceiling).
    check_statuses: bool,
    /// Google's message numbers increase per channel; one global counter does that.
    message_number: AtomicI64,
    host: String,
    /// The cold mix: changes walk the channels in order, each calendar once
    /// per pass, so (with more calendars than a phase sends changes) none
    /// finds a request pending and every one must be written.
    cold: Option<std::sync::atomic::AtomicUsize>,
}

impl Workload {
    /// A workload over `channels`.
    pub fn new(
        channels: Vec<SeededChannel>,
        mix: Mix,
        check_statuses: bool,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        if channels.is_empty() {
            bail!("a workload needs at least one channel");
        }
        Ok(Self {
            channels,
            mix,
            check_statuses,
            message_number: AtomicI64::new(2),
            host: addr.to_string(),
            cold: None,
        })
    }

    /// The same workload in the cold mix (see [`Workload::cold`]).
    pub fn cold(mut self) -> Self {
        self.cold = Some(std::sync::atomic::AtomicUsize::new(0));
        self
    }

    fn request(&self, rng: &mut Rng) -> anyhow::Result<(Kind, hyper::Request<Empty<Bytes>>)> {
        let kind = self.mix.pick(rng);
        let index = match (&self.cold, kind) {
            (Some(cursor), Kind::Change) => {
                cursor.fetch_add(1, Ordering::Relaxed) % self.channels.len()
            }
            _ => (rng.next() % self.channels.len() as u64) as usize,
        };
        let channel = &self.channels[index];
        let unknown_id;
        let (channel_id, token, state, number) = match kind {
            Kind::Change => (
                channel.channel_id.as_str(),
                channel.token.as_str(),
                "exists",
                self.message_number.fetch_add(1, Ordering::Relaxed),
            ),
            Kind::Handshake => (
                channel.channel_id.as_str(),
                channel.token.as_str(),
                "sync",
                1,
            ),
            Kind::Unknown => {
                unknown_id = format!("{:016x}-unknown-{:016x}", rng.next(), rng.next());
                (unknown_id.as_str(), channel.token.as_str(), "exists", 7)
            }
            Kind::BadToken => (
                channel.channel_id.as_str(),
                "not-the-token",
                "exists",
                self.message_number.fetch_add(1, Ordering::Relaxed),
            ),
        };
        let request = hyper::Request::post(PATH)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::USER_AGENT, "APIs-Google")
            .header(hyper::header::CONTENT_LENGTH, "0")
            .header("x-goog-channel-id", channel_id)
            .header("x-goog-channel-token", token)
            .header("x-goog-resource-state", state)
            .header("x-goog-message-number", number.to_string())
            .header("x-goog-resource-id", "bench-resource")
            .header(
                "x-goog-resource-uri",
                "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
            )
            .header("x-goog-channel-expiration", "Tue, 19 Nov 2030 01:13:52 GMT")
            .body(Empty::new())?;
        Ok((kind, request))
    }
}

/// The figures of one phase.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// Requests answered.
    pub requests: u64,
    /// Change notifications answered 200.
    pub changes_ok: u64,
    /// Answers whose status did not match SPEC section 2 for their kind.
    pub unexpected_status: u64,
    /// Requests that got no answer (connection errors).
    pub errors: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first unexpected answer, for the report.
    pub first_problem: Option<String>,
}

impl PhaseReport {
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            requests: 0,
            changes_ok: 0,
            unexpected_status: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .context("building a latency histogram")?,
            first_problem: None,
        })
    }

    fn merge(&mut self, other: &PhaseReport) -> anyhow::Result<()> {
        self.requests += other.requests;
        self.changes_ok += other.changes_ok;
        self.unexpected_status += other.unexpected_status;
        self.errors += other.errors;
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
        Ok(())
    }

    /// Answered requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile (0.0–1.0) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn record(&mut self, kind: Kind, outcome: Result<u16, String>, latency: Duration, check: bool) {
        match outcome {
            Ok(status) => {
                self.requests += 1;
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                let _ = self.latency_us.record(micros.clamp(1, MAX_LATENCY_US));
                if kind == Kind::Change && status == 200 {
                    self.changes_ok += 1;
                }
                let expected = if check { kind.expected_status() } else { 200 };
                if status != expected {
                    self.unexpected_status += 1;
                    if self.first_problem.is_none() {
                        self.first_problem =
                            Some(format!("{kind:?} answered {status}, expected {expected}"));
                    }
                }
            }
            Err(error) => {
                self.errors += 1;
                if self.first_problem.is_none() {
                    self.first_problem = Some(format!("{kind:?}: {error}"));
                }
            }
        }
    }
}

/// One keep-alive connection; reconnects after an error.
struct Connection {
    addr: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    async fn send(&mut self, request: hyper::Request<Empty<Bytes>>) -> Result<u16, String> {
        let result = self.try_send(request).await;
        if result.is_err() {
            self.sender = None;
        }
        result.map_err(|e| format!("{e:#}"))
    }

    async fn try_send(&mut self, request: hyper::Request<Empty<Bytes>>) -> anyhow::Result<u16> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(connect(self.addr).await?),
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        // Read the whole body so the connection can carry the next request.
        response.into_body().collect().await?;
        Ok(status)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Closed loop: `connections` connections each send back to back for `duration`.
pub async fn closed_loop(
    addr: SocketAddr,
    workload: &Arc<Workload>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<PhaseReport> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..connections.max(1) {
        let workload = Arc::clone(workload);
        tasks.spawn(async move {
            let mut report = PhaseReport::empty()?;
            let mut rng = Rng::new(0xC0FF_EE00 ^ (n as u64) ^ start.elapsed().as_nanos() as u64);
            let mut connection = Connection::new(addr);
            while Instant::now() < deadline {
                let (kind, request) = workload.request(&mut rng)?;
                let sent = Instant::now();
                let outcome = connection.send(request).await;
                report.record(kind, outcome, sent.elapsed(), workload.check_statuses);
            }
            anyhow::Ok(report)
        });
    }
    let mut total = PhaseReport::empty()?;
    while let Some(report) = tasks.join_next().await {
        total.merge(&report.context("a load task panicked")??)?;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Open loop: `rate` requests a second for `duration`, spread over up to
/// `connections` connections; latency counts from each request's scheduled time.
pub async fn open_loop(
    addr: SocketAddr,
    workload: &Arc<Workload>,
    connections: usize,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<PhaseReport> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total_requests = (duration.as_secs_f64() * f64::from(rate)).round() as u64;
    let (schedule, tickets) = mpsc::unbounded_channel::<Instant>();
    let tickets = Arc::new(Mutex::new(tickets));
    let start = Instant::now() + Duration::from_millis(20);
    // A thread paces the schedule: its sleeps are precise to tens of
    // microseconds, where the async timer's are rounded to milliseconds.
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for i in 0..total_requests {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if schedule.send(at).is_err() {
                    break;
                }
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..connections.max(1) {
        let workload = Arc::clone(workload);
        let tickets = Arc::clone(&tickets);
        tasks.spawn(async move {
            let mut report = PhaseReport::empty()?;
            let mut rng = Rng::new(0x0BE7_0000 ^ (n as u64) ^ start.elapsed().as_nanos() as u64);
            let mut connection = Connection::new(addr);
            loop {
                let Some(scheduled) = tickets.lock().await.recv().await else {
                    break;
                };
                let (kind, request) = workload.request(&mut rng)?;
                let outcome = connection.send(request).await;
                report.record(kind, outcome, scheduled.elapsed(), workload.check_statuses);
            }
            anyhow::Ok(report)
        });
    }
    let mut total = PhaseReport::empty()?;
    let mut failure = None;
    while let Some(report) = tasks.join_next().await {
        match report.context("a load task panicked").and_then(|r| r) {
            Ok(report) => total.merge(&report)?,
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                failure.get_or_insert(error);
            }
        }
    }
    let _ = pacer.join();
    if let Some(error) = failure {
        return Err(error);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
