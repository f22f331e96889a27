//! Where the machine's CPU went during a measured phase: the server under
//! test, PostgreSQL's processes, the benchmark process itself (the load
//! generator and, with syncs, the in-process fake Google), everything else,
//! idle time and steal (time the hypervisor gave to another guest), plus the
//! machine's context switches. Read from `/proc` with `procfs` before and
//! after the phase.
//!
//! PostgreSQL's share is the sum over processes named `postgres`: the
//! server's pooled connections live through a phase, so their backends are
//! counted; a backend that exits during the phase takes its time with it.

use anyhow::Context as _;
use procfs::CurrentSI as _;
use std::fmt;
use std::time::{Duration, Instant};

/// CPU counters at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    server: Duration,
    postgres: Duration,
    bench: Duration,
    machine: Machine,
}

/// The machine's counters from `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct Machine {
    /// Every state's time, summed over the CPUs.
    total: Duration,
    idle: Duration,
    steal: Duration,
    context_switches: u64,
}

/// CPU time between two snapshots, by where it went.
#[derive(Debug, Clone, Copy)]
pub struct CpuSplit {
    pub wall: Duration,
    pub server: Duration,
    pub postgres: Duration,
    pub bench: Duration,
    /// Busy time of every other process, and the kernel's interrupts.
    pub other: Duration,
    pub idle: Duration,
    pub steal: Duration,
    /// All the machine's time (CPUs x wall clock).
    pub total: Duration,
    pub context_switches: u64,
}

impl CpuSnapshot {
    /// Reads the counters now; `server` is the server child's process id.
    pub fn take(server: u32) -> anyhow::Result<Self> {
        let server = process_cpu(&procfs::process::Process::new(
            i32::try_from(server).context("process id out of range")?,
        )?)?;
        let bench = process_cpu(&procfs::process::Process::myself()?)?;
        let mut postgres = Duration::ZERO;
        for process in procfs::process::all_processes()?.flatten() {
            // A process that exits while it is read is skipped.
            if let Ok(stat) = process.stat()
                && stat.comm == "postgres"
            {
                postgres += ticks(stat.utime + stat.stime);
            }
        }
        let stat = procfs::KernelStats::current().context("reading /proc/stat")?;
        let t = &stat.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let steal = t.steal.unwrap_or(0);
        let all =
            t.user + t.nice + t.system + idle + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + steal;
        Ok(Self {
            at: Instant::now(),
            server,
            postgres,
            bench,
            machine: Machine {
                total: ticks(all),
                idle: ticks(idle),
                steal: ticks(steal),
                context_switches: stat.ctxt,
            },
        })
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuSplit {
        let server = later.server.saturating_sub(self.server);
        let postgres = later.postgres.saturating_sub(self.postgres);
        let bench = later.bench.saturating_sub(self.bench);
        let total = later.machine.total.saturating_sub(self.machine.total);
        let idle = later.machine.idle.saturating_sub(self.machine.idle);
        let steal = later.machine.steal.saturating_sub(self.machine.steal);
        CpuSplit {
            wall: later.at.saturating_duration_since(self.at),
            server,
            postgres,
            bench,
            other: total
                .saturating_sub(idle + steal)
                .saturating_sub(server + postgres + bench),
            idle,
            steal,
            total,
            context_switches: later
                .machine
                .context_switches
                .saturating_sub(self.machine.context_switches),
        }
    }
}

/// User plus system time of a process, all its threads.
fn process_cpu(process: &procfs::process::Process) -> anyhow::Result<Duration> {
    let stat = process
        .stat()
        .with_context(|| format!("reading /proc/{}/stat", process.pid))?;
    Ok(ticks(stat.utime + stat.stime))
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / procfs::ticks_per_second().max(1))
}

impl CpuSplit {
    /// Context switches per request over the phase.
    pub fn switches_per(&self, requests: u64) -> f64 {
        self.context_switches as f64 / requests.max(1) as f64
    }
}

impl fmt::Display for CpuSplit {
    /// `server 41%, PostgreSQL 31%, chronos-bench 23%, other 1%, idle 4%, steal 0% of 12.0
    /// core-seconds (6.0 s x 2.0 cores)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total.as_secs_f64().max(f64::EPSILON);
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total;
        write!(
            f,
            "server {:.0}%, PostgreSQL {:.0}%, chronos-bench {:.0}%, other {:.0}%, idle {:.0}%, \
             steal {:.0}% of {:.1} core-seconds ({:.1} s x {:.1} cores)",
            share(self.server),
            share(self.postgres),
            share(self.bench),
            share(self.other),
            share(self.idle),
            share(self.steal),
            total,
            self.wall.as_secs_f64(),
            total / self.wall.as_secs_f64().max(f64::EPSILON),
        )
    }
}
