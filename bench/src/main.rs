//! `agent-bench`: runs the side-by-side benchmark and prints the report, or with
//! `--baseline-agent` compares two builds of cluster-agent round by round.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kaas_bench::compare::{self, MIN_ROUNDS};
use kaas_bench::{Agent, Workload, report, run};

/// Benchmarks cluster-agent against the Prometheus agent and vmagent on one workload.
/// Defaults are the design's anchor workload: 40 targets x 2,500 series every 5 s.
#[derive(Debug, Parser)]
#[command(name = "agent-bench", version, about)]
struct Args {
    /// Number of targets.
    #[arg(long, default_value_t = 40)]
    targets: usize,
    /// Series per target.
    #[arg(long, default_value_t = 2500)]
    series: usize,
    /// Scrape interval in seconds.
    #[arg(long, default_value_t = 5)]
    interval_seconds: u64,
    /// Warm-up before measuring, in seconds.
    #[arg(long, default_value_t = 15)]
    warmup_seconds: u64,
    /// Measured window in seconds.
    #[arg(long, default_value_t = 60)]
    duration_seconds: u64,
    /// The cluster-agent binary (build it with --release).
    #[arg(long, default_value = "target/release/cluster-agent")]
    cluster_agent: PathBuf,
    /// Which agents to run, in this order (comparing two builds of cluster-agent on a
    /// busy machine: run `cluster-agent` alone, back to back).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "prometheus-agent,vmagent,cluster-agent"
    )]
    agents: Vec<String>,
    /// Compare --cluster-agent (new) with this build of cluster-agent (old, e.g. the
    /// previous commit's) instead of running --agents: both run alternately, --rounds
    /// times each, and the report prints medians and new/old (see bench/README.md).
    #[arg(long, value_name = "PATH")]
    baseline_agent: Option<PathBuf>,
    /// Rounds of each build with --baseline-agent (at least 3).
    #[arg(long, default_value_t = MIN_ROUNDS)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let needs_new =
        args.baseline_agent.is_some() || args.agents.iter().any(|a| a == "cluster-agent");
    anyhow::ensure!(
        !needs_new || args.cluster_agent.is_file(),
        "{} not found; run cargo build --release -p kaas-cluster-agent first",
        args.cluster_agent.display()
    );
    let workload = Workload {
        targets: args.targets,
        series_per_target: args.series,
        interval: Duration::from_secs(args.interval_seconds),
        warmup: Duration::from_secs(args.warmup_seconds),
        duration: Duration::from_secs(args.duration_seconds),
    };
    if let Some(baseline) = args.baseline_agent {
        anyhow::ensure!(
            baseline.is_file(),
            "--baseline-agent {} not found; build the previous commit first (bench/README.md)",
            baseline.display()
        );
        anyhow::ensure!(
            args.rounds >= MIN_ROUNDS,
            "--rounds {} is too few; at least {MIN_ROUNDS}",
            args.rounds
        );
        let comparison = compare::compare(&workload, baseline, args.cluster_agent, args.rounds);
        print!("{}", compare::report(&workload, &comparison));
        return Ok(());
    }
    let agents = args
        .agents
        .iter()
        .map(|name| match name.as_str() {
            "prometheus-agent" => Ok(Agent::PrometheusAgent),
            "vmagent" => Ok(Agent::VmAgent),
            "cluster-agent" => Ok(Agent::ClusterAgent(args.cluster_agent.clone())),
            other => Err(anyhow::anyhow!(
                "unknown agent {other:?}; known: prometheus-agent, vmagent, cluster-agent"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let results = run(&workload, &agents);
    print!("{}", report(&workload, &results));
    Ok(())
}
