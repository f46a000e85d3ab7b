//! The scraper's CPU path without the network, for comparing two builds exactly:
//! the anchor workload's exposition (2,500 series per target) goes through
//! `Scraper::ingest` (parse, series cache, remote-write encoding, snappy, the disk
//! buffer) again and again, as a scrape loop would after its first scrape.
//!
//! Wall time per sample is printed, but it moves with the machine's load; for a
//! before/after comparison run both builds under callgrind and compare instruction
//! counts:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/ingest-bench --scrapes 20
//! callgrind_annotate /tmp/cg.out | head -40
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::internal_events::PipelineStats;
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::scrape::config::ScrapeConfig;
use kaas_cluster_agent::scrape::scraper::Scraper;
use kaas_cluster_agent::scrape::target::Target;
use kaas_cluster_agent::topology::inlet::Inlet;
use kaas_pipeline::buffer::WhenFull;

/// Ingests one target's exposition repeatedly.
#[derive(Parser)]
struct Args {
    /// Series in the exposition (the anchor workload has 2,500 per target).
    #[arg(long, default_value_t = 2_500)]
    series: usize,
    /// Scrapes ingested after the first (which fills the series cache).
    #[arg(long, default_value_t = 400)]
    scrapes: usize,
}

/// Buffer bound: large enough that the run never drops; the buffer's segments are
/// written as in the agent.
const BUFFER_BYTES: u64 = 1 << 30;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let limits = Limits {
        max_bytes: BUFFER_BYTES,
        max_age: Duration::from_secs(3600),
        when_full: WhenFull::DropOldest,
    };
    let (buffer, _) = DiskBuffer::open(dir.path(), limits).context("open the buffer")?;
    let inlet = Inlet {
        buffer: Arc::new(Mutex::new(buffer)),
        stats: Arc::new(PipelineStats::default()),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let target = Target::new(Labels::from_pairs([
        ("__address__", "127.0.0.1:8080"),
        ("__scheme__", "http"),
        ("__metrics_path__", "/t0/metrics"),
        ("job", "bench"),
        ("instance", "127.0.0.1:8080"),
        ("target", "t0"),
    ]))
    .map_err(anyhow::Error::msg)?;
    let config = ScrapeConfig::new(Duration::from_secs(5), Duration::from_secs(5));
    let client = kaas_cluster_agent::scrape::client::ScrapeClient::new(&Default::default())?;
    let mut scraper = Scraper::new(
        target,
        config,
        client,
        Arc::default(),
        Arc::new(Labels::from_pairs([("cluster", "bench")])),
        inlet.clone(),
    );
    let body = kaas_bench::exposition(0, args.series).into_bytes();
    let mut timestamp = 1_700_000_000_000;
    let mut scrape = |scraper: &mut Scraper| {
        timestamp += 5_000;
        let fetched = Ok((body.clone(), Some("text/plain; version=0.0.4".to_owned())));
        scraper.ingest(fetched, timestamp, Duration::from_millis(3));
        // Keep the buffer from growing for the whole run, as the sender would.
        let mut buffer = inlet.buffer.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(Some((next, _record))) = buffer.read_next(timestamp) {
            let _ = buffer.ack(next);
        }
    };
    scrape(&mut scraper);
    let started = Instant::now();
    for _ in 0..args.scrapes {
        scrape(&mut scraper);
    }
    let elapsed = started.elapsed();
    let samples = (args.scrapes * (args.series + 5)) as f64;
    println!(
        "{} scrapes of {} series: {:.1} ns per sample (wall time; compare builds with callgrind)",
        args.scrapes,
        args.series,
        elapsed.as_nanos() as f64 / samples
    );
    Ok(())
}
