//! `trace-bench`: OTLP trace gateways side by side on the same pre-encoded spans, each
//! exporting to the bench's OTLP sink; prints spans per CPU core, peak RSS and
//! delivery, with ratios (see `kaas_bench::traces`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use kaas_bench::serve::cluster_agent_binary;
use kaas_bench::traces::peers::{Gateway, Row};
use kaas_bench::traces::workload::{self, SpanMix};
use kaas_bench::traces::{measure, report};

/// Benchmarks trace gateways on one set of spans. Defaults are issue 17's workload:
/// small spans and Kyma's 40 attributes x 64 characters, cluster-agent against rotel.
#[derive(Debug, Parser)]
#[command(name = "trace-bench", version, about)]
struct Args {
    /// Spans of the small mix.
    #[arg(long, default_value_t = 1_000_000)]
    small_spans: u64,
    /// Spans of the 40 x 64 mix (about 3.3 KiB each, all encoded in memory first).
    #[arg(long, default_value_t = 100_000)]
    kyma_spans: u64,
    /// Spans per OTLP request.
    #[arg(long, default_value_t = 500)]
    spans_per_request: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Which mixes to run, in this order: small, 40x64.
    #[arg(long, value_delimiter = ',', default_value = "small,40x64")]
    mixes: Vec<String>,
    /// Which gateways to run, in this order: cluster-agent, rotel.
    #[arg(long, value_delimiter = ',', default_value = "cluster-agent,rotel")]
    gateways: Vec<String>,
    /// The cluster-agent binary; default: the one next to this executable (build both
    /// with the same profile, e.g. `--profile bench-fast`).
    #[arg(long)]
    cluster_agent: Option<PathBuf>,
}

/// The gateway called `name` on the command line.
fn gateway(name: &str, cluster_agent: &Option<PathBuf>) -> anyhow::Result<Gateway> {
    match name {
        "cluster-agent" => Ok(Gateway::ClusterAgent(cluster_agent_binary(cluster_agent)?)),
        "rotel" => Ok(Gateway::Rotel),
        other => bail!("unknown gateway {other:?} (cluster-agent, rotel)"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.spans_per_request == 0 || args.concurrency == 0 {
        bail!("--spans-per-request and --concurrency must be positive");
    }
    let gateways = args
        .gateways
        .iter()
        .map(|name| gateway(name, &args.cluster_agent))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mixes = args
        .mixes
        .iter()
        .map(|name| SpanMix::parse(name).with_context(|| format!("unknown mix {name:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut sent = Vec::new();
    let mut results = Vec::new();
    for mix in mixes {
        let spans = match mix {
            SpanMix::Small => args.small_spans,
            SpanMix::Kyma => args.kyma_spans,
        };
        eprintln!(
            "trace-bench: encoding {spans} spans of the {} mix",
            mix.name()
        );
        let requests = workload::encode(mix, spans, args.spans_per_request);
        sent.push((mix.name(), spans, requests.bytes()));
        for row in [Row::LikeForLike, Row::Processors] {
            for gateway in gateways.iter().filter(|g| g.runs(row)) {
                eprintln!(
                    "trace-bench: {} on {} ({})",
                    gateway.name(),
                    mix.name(),
                    row.name()
                );
                results.push(
                    measure(gateway, row, &requests, args.concurrency, dir.path())
                        .context("running a gateway")?,
                );
            }
        }
    }
    print!("{}", report(&sent, &results));
    Ok(())
}
