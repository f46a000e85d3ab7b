//! log-bench: log agents side by side on the same files (issue 16).
//!
//! [`workload::write`] writes `files` container log files in the kubelet's layout
//! before any agent starts. Each agent in turn reads them all from the start, with its
//! own fresh state, and sends every line to one Elasticsearch bulk endpoint served by
//! the bench ([`sink`]), each through a disk queue (cluster-agent's log pipeline in
//! [`peers::cluster_agent_config`], the peers' configurations in `bench/peers/`).
//! For each agent the harness measures, from its start until the sink has every line
//! (or nothing arrived for [`STALL`]):
//!
//! - **MiB/s and lines/s per CPU core**: bytes and lines of the distinct lines
//!   delivered, over the agent process's own user+system CPU seconds;
//! - **peak RSS** (`VmHWM`);
//! - **delivered/expected** (distinct lines) and duplicates: 100% is the precondition
//!   for the other figures to mean anything, and the report says when it is not met.
//!
//! The disk's raw write rate (a file of [`DISK_PROBE_BYTES`] written and fsynced in
//! the same directory) is measured in the same run, as the ceiling any agent with a
//! disk queue works under. Timings are reported, never asserted.

pub mod peers;
pub mod sink;
pub mod workload;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use self::peers::Peer;
use self::sink::{Received, Sink};
use self::workload::WrittenFiles;
use crate::{cpu_seconds, peak_rss};

/// An agent stops being waited for when the sink got nothing new for this long: long
/// enough for a disk queue to flush and a bulk batch to time out several times over.
pub const STALL: Duration = Duration::from_secs(30);

/// How much the disk probe writes: enough to pass through the page cache into the
/// device's sustained rate on this machine kind.
pub const DISK_PROBE_BYTES: usize = 256 << 20;

/// How often the harness asks the sink how far an agent is.
const POLL: Duration = Duration::from_millis(100);

/// One agent's run.
#[derive(Clone, Debug)]
pub struct LogMeasurement {
    /// The agent's name.
    pub agent: &'static str,
    /// What the sink received.
    pub received: Received,
    /// Lines written.
    pub expected_lines: u64,
    /// From the agent's start until the last new line arrived.
    pub elapsed: Duration,
    /// The agent's user+system CPU seconds over that time.
    pub cpu_seconds: f64,
    /// The agent's peak resident set, bytes.
    pub peak_rss: u64,
}

const MIB: f64 = 1024.0 * 1024.0;

impl LogMeasurement {
    /// Distinct lines delivered over lines written.
    pub fn delivered_ratio(&self) -> f64 {
        self.received.distinct as f64 / self.expected_lines.max(1) as f64
    }

    /// MiB of distinct lines delivered per CPU second.
    pub fn mib_per_core_second(&self) -> f64 {
        self.received.distinct_bytes as f64 / MIB / self.cpu_seconds.max(1e-9)
    }

    /// Distinct lines delivered per CPU second.
    pub fn lines_per_core_second(&self) -> f64 {
        self.received.distinct as f64 / self.cpu_seconds.max(1e-9)
    }

    /// MiB of distinct lines delivered per second of wall time.
    pub fn mib_per_second(&self) -> f64 {
        self.received.distinct_bytes as f64 / MIB / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `peer` on the written files and measures it.
pub fn measure(peer: &Peer, files: &WrittenFiles, work: &Path) -> std::io::Result<LogMeasurement> {
    let sink = Sink::start(files.line_bytes.clone())?;
    let expected = files.lines();
    let work = work.join(peer.name());
    let started = Instant::now();
    let mut process = peers::start(peer, &files.root, &work, sink.port, files.line_bytes.len());
    let pid = process.id();
    let mut last = sink.received();
    let mut last_change = Instant::now();
    let mut cpu = 0.0;
    let mut rss = 0;
    let mut elapsed = Duration::ZERO;
    loop {
        std::thread::sleep(POLL);
        // Read before the sink, so the CPU counted covers at least the lines counted.
        let now_cpu = cpu_seconds(pid);
        let now_rss = peak_rss(pid);
        let received = sink.received();
        if received.distinct != last.distinct {
            last_change = Instant::now();
            cpu = now_cpu;
            rss = now_rss;
            elapsed = started.elapsed();
        }
        last = received;
        if last.distinct >= expected || last_change.elapsed() > STALL {
            break;
        }
        if let Some(status) = process.try_wait() {
            eprintln!("log-bench: {} exited early ({status})", peer.name());
            break;
        }
    }
    process.terminate(Duration::from_secs(10));
    Ok(LogMeasurement {
        agent: peer.name(),
        received: last,
        expected_lines: expected,
        elapsed,
        cpu_seconds: cpu,
        peak_rss: rss,
    })
}

/// The disk's raw sequential write rate in `dir`, MiB/s: [`DISK_PROBE_BYTES`] written
/// in 1 MiB writes and fsynced.
pub fn disk_write_rate(dir: &Path) -> std::io::Result<f64> {
    let path = dir.join("disk-probe");
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    {
        let mut file = std::fs::File::create(&path)?;
        for _ in 0..DISK_PROBE_BYTES / chunk.len() {
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(DISK_PROBE_BYTES as f64 / MIB / seconds.max(1e-9))
}

/// The results side by side, with each agent's per-core throughput over every other's.
pub fn report(
    workload: &workload::LogWorkload,
    files: &WrittenFiles,
    disk_mib_per_second: f64,
    results: &[LogMeasurement],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "log-bench: {} files, {:.1} MiB in {} lines (mean {:.0} B, {}% JSON bodies); disk raw write {:.0} MiB/s",
        files.line_bytes.len(),
        files.bytes() as f64 / MIB,
        files.lines(),
        files.bytes() as f64 / files.lines().max(1) as f64,
        workload.json_percent,
        disk_mib_per_second,
    );
    let _ = writeln!(
        out,
        "\n| agent | delivered | duplicates | MiB/s per core | lines/s per core | MiB/s (wall) | CPU s | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.1}% | {} | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} MiB |",
            r.agent,
            r.delivered_ratio() * 100.0,
            r.received.duplicates,
            r.mib_per_core_second(),
            r.lines_per_core_second(),
            r.mib_per_second(),
            r.cpu_seconds,
            r.peak_rss as f64 / MIB,
        );
    }
    let incomplete: Vec<&str> = results
        .iter()
        .filter(|r| r.received.distinct < r.expected_lines)
        .map(|r| r.agent)
        .collect();
    if !incomplete.is_empty() {
        let _ = writeln!(
            out,
            "\nNOT COMPARABLE: {} did not deliver every line (delivery is the precondition)",
            incomplete.join(", ")
        );
    }
    let _ = writeln!(out);
    for a in results {
        for b in results.iter().filter(|b| b.agent != a.agent) {
            let _ = writeln!(
                out,
                "{} / {}: {:.2}x per core, peak RSS {:.2}x",
                a.agent,
                b.agent,
                a.mib_per_core_second() / b.mib_per_core_second().max(1e-9),
                a.peak_rss as f64 / (b.peak_rss as f64).max(1.0),
            );
        }
    }
    out
}
