//! `log-bench`: log agents side by side on the same container log files, each sending
//! to the bench's Elasticsearch bulk sink through a disk queue; prints throughput per
//! CPU core, peak RSS and delivery, with ratios (see `kaas_bench::logs`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use kaas_bench::logs::peers::Peer;
use kaas_bench::logs::workload::{self, LogWorkload};
use kaas_bench::logs::{disk_write_rate, measure, report};
use kaas_bench::serve::cluster_agent_binary;

/// Benchmarks log agents on one set of files. Defaults are issue 16's workload: 1,000
/// files, 256-byte mean lines, 10% JSON bodies.
#[derive(Debug, Parser)]
#[command(name = "log-bench", version, about)]
struct Args {
    /// Number of log files.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Total MiB written over all files.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Mean line length in bytes (CRI prefix and newline included).
    #[arg(long, default_value_t = 256)]
    mean_line_bytes: usize,
    /// Share of lines with a JSON body, percent.
    #[arg(long, default_value_t = 10)]
    json_percent: u32,
    /// Which agents to run, in this order: cluster-agent, syslog-ng, rsyslog.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cluster-agent,syslog-ng,rsyslog"
    )]
    agents: Vec<String>,
    /// The cluster-agent binary; default: the one next to this executable (build both
    /// with the same profile, e.g. `--profile bench-fast`).
    #[arg(long)]
    cluster_agent: Option<PathBuf>,
}

/// The agent called `name` on the command line.
fn agent(name: &str, cluster_agent: &Option<PathBuf>) -> anyhow::Result<Peer> {
    match name {
        "cluster-agent" => Ok(Peer::ClusterAgent(cluster_agent_binary(cluster_agent)?)),
        "syslog-ng" => Ok(Peer::SyslogNg),
        "rsyslog" => Ok(Peer::Rsyslog),
        other => bail!("unknown agent {other:?} (cluster-agent, syslog-ng, rsyslog)"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.files == 0 || args.mib == 0 {
        bail!("--files and --mib must be positive");
    }
    if !(128..=4096).contains(&args.mean_line_bytes) || args.json_percent > 100 {
        bail!("--mean-line-bytes must be in 128..=4096 and --json-percent at most 100");
    }
    let agents = args
        .agents
        .iter()
        .map(|name| agent(name, &args.cluster_agent))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let workload = LogWorkload {
        files: args.files,
        total_bytes: args.mib << 20,
        mean_line_bytes: args.mean_line_bytes,
        json_percent: args.json_percent,
    };
    let dir = tempfile::tempdir().context("temp dir")?;
    let root = dir.path().join("pods");
    eprintln!(
        "log-bench: writing {} MiB over {} files",
        args.mib, args.files
    );
    let files = workload::write(&workload, &root).context("writing the workload")?;
    let disk = disk_write_rate(dir.path()).context("disk probe")?;
    let mut results = Vec::new();
    for peer in &agents {
        eprintln!("log-bench: running {}", peer.name());
        results.push(measure(peer, &files, dir.path()).context("running an agent")?);
    }
    print!("{}", report(&workload, &files, disk, &results));
    Ok(())
}
