//! `fanout-bench`: runs the observer fan-out benchmark and prints the report.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kaas_bench::fanout::{FanoutSettings, run};

/// Connects N simulated agents (real mTLS streams, in this process) to one observer on
/// this machine; measures the observer's memory per agent, the time from a pipeline
/// change to every agent acknowledging it, and a reconnect storm after a SIGKILL.
#[derive(Debug, Parser)]
#[command(name = "fanout-bench", version, about)]
struct Args {
    /// Simulated agents (one cluster each).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The observer binary (build it with cargo build --release -p kaas-observer).
    #[arg(long, default_value = "target/release/observer")]
    observer: PathBuf,
    /// Agents joining and opening their first stream at a time.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// Deadline for the pipeline change to reach every agent, in seconds.
    #[arg(long, default_value_t = 120)]
    converge_deadline_seconds: u64,
    /// Deadline for every agent to be back after the restart, in seconds from the kill.
    #[arg(long, default_value_t = 180)]
    storm_deadline_seconds: u64,
    /// Keep the observer's data directory and log here (it must not hold an observer's
    /// data already); by default a temporary directory is used and removed.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = FanoutSettings {
        setup_concurrency: args.setup_concurrency,
        converge_deadline: Duration::from_secs(args.converge_deadline_seconds),
        storm_deadline: Duration::from_secs(args.storm_deadline_seconds),
        data_dir: args.data_dir,
        ..FanoutSettings::new(args.agents, args.observer)
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&settings))?;
    print!("{}", report.render());
    Ok(())
}
