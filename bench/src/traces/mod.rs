//! trace-bench: OTLP trace gateways side by side on the same spans (issue 17).
//!
//! [`workload::encode`] encodes the run's `ExportTraceServiceRequest`s before any
//! gateway starts. Each gateway in turn, fresh, takes them over OTLP/HTTP from the
//! bench's generator ([`Generator`]: a few connections replaying the encoded requests,
//! each one again after a refusal) and exports OTLP/HTTP to one sink served by the
//! bench ([`sink`]): cluster-agent through a trace pipeline's disk buffer, rotel with
//! its in-memory batching ([`peers`]). For each gateway and row the harness measures,
//! from its start until the sink has every expected span (or nothing arrived for
//! [`STALL`]):
//!
//! - **spans/s per CPU core**: the spans sent to the gateway (all of them, taken in by
//!   the time every expected span arrived; in the processors row some are dropped or
//!   sampled out on purpose) over the gateway process's own user+system CPU seconds
//!   (the generator and the sink run in the bench's process);
//! - **peak RSS** (`VmHWM`);
//! - **delivered/expected** (distinct spans; expected follows from the row: the
//!   processors row drops the health checks and samples at 0.5, computed from the
//!   encoded trace ids) and duplicates: 100% is the precondition for the other figures
//!   to mean anything, and the report says when it is not met.
//!
//! Timings are reported, never asserted.

pub mod peers;
pub mod sink;
pub mod workload;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use self::peers::{Gateway, Row};
use self::sink::{Received, Sink};
use self::workload::EncodedRequests;
use crate::{cpu_seconds, peak_rss};

/// A gateway stops being waited for when the sink got nothing new for this long: long
/// enough for a refused request's retries and a batch timeout several times over.
pub const STALL: Duration = Duration::from_secs(30);

/// The target for the small mix, like for like, with the disk buffer on.
pub const TARGET_SPANS_PER_CORE_SECOND: f64 = 300_000.0;

/// Kyma's published figure for its OpenTelemetry Collector based trace gateway, spans
/// per second per core, quoted in the report for context (not measured here).
pub const KYMA_OTEL_COLLECTOR_SPANS_PER_CORE_SECOND: f64 = 28_000.0;

/// How often the harness asks the sink how far a gateway is.
const POLL: Duration = Duration::from_millis(100);

/// How long the generator waits before sending a refused request again.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// One gateway's run of one row.
#[derive(Clone, Debug)]
pub struct TraceMeasurement {
    /// The gateway's name.
    pub gateway: &'static str,
    /// The span mix.
    pub mix: &'static str,
    /// The row.
    pub row: Row,
    /// What the sink received.
    pub received: Received,
    /// Spans the sink should get.
    pub expected: u64,
    /// Requests the gateway refused (any answer but 200, or none), sent again.
    pub refused: u64,
    /// From the gateway's start until the last new span arrived.
    pub elapsed: Duration,
    /// The gateway's user+system CPU seconds over that time.
    pub cpu_seconds: f64,
    /// The gateway's peak resident set, bytes.
    pub peak_rss: u64,
}

impl TraceMeasurement {
    /// Distinct spans delivered over spans expected.
    pub fn delivered_ratio(&self) -> f64 {
        self.received.distinct as f64 / self.expected.max(1) as f64
    }

    /// Spans taken in per CPU second: every span sent counts, dropped or delivered,
    /// once all expected arrived.
    pub fn spans_per_core_second(&self, sent: u64) -> f64 {
        sent as f64 / self.cpu_seconds.max(1e-9)
    }

    /// Distinct spans delivered per second of wall time.
    pub fn spans_per_second(&self) -> f64 {
        self.received.distinct as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Replays the encoded requests to a gateway over `concurrency` connections, each
/// request until it is answered 200.
pub struct Generator {
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Generator {
    /// Starts sending `requests` to `url`.
    pub fn start(url: String, requests: Arc<Vec<Vec<u8>>>, concurrency: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_refused) = (stop.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("generator runtime");
            runtime.block_on(send_all(
                url,
                requests,
                concurrency,
                thread_stop,
                thread_refused,
            ));
        });
        Self {
            stop,
            refused,
            thread: Some(thread),
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn send_all(
    url: String,
    requests: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
) {
    // reqwest is built without a TLS provider of its own; plain HTTP still asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    else {
        eprintln!("trace-bench: no HTTP client");
        return;
    };
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, url, requests) = (client.clone(), url.clone(), requests.clone());
            let (next, stop, refused) = (next.clone(), stop.clone(), refused.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = requests.get(index) else {
                        return;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let answer = client
                            .post(&url)
                            .header("Content-Type", "application/x-protobuf")
                            .body(body.clone())
                            .send()
                            .await;
                        match answer {
                            Ok(response) if response.status().as_u16() == 200 => break,
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(RETRY_AFTER).await;
                            }
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// Runs `gateway` on the encoded requests for `row` and measures it.
pub fn measure(
    gateway: &Gateway,
    row: Row,
    requests: &EncodedRequests,
    concurrency: usize,
    work: &Path,
) -> std::io::Result<TraceMeasurement> {
    let sink = Sink::start(requests.spans)?;
    let (drop_health_checks, threshold) = row.expectation();
    let expected = requests.expected(drop_health_checks, threshold);
    let work = work.join(format!(
        "{}-{}-{}",
        gateway.name(),
        requests.mix.name(),
        row == Row::LikeForLike
    ));
    let started = Instant::now();
    let mut running = peers::start(gateway, row, &sink.base_url(), &work);
    let generator = Generator::start(
        running.traces_url.clone(),
        requests.bodies.clone(),
        concurrency,
    );
    let pid = running.pid;
    let mut last = sink.received();
    let mut last_change = Instant::now();
    let (mut cpu, mut rss, mut elapsed) = (0.0, 0, Duration::ZERO);
    loop {
        std::thread::sleep(POLL);
        // Read before the sink, so the CPU counted covers at least the spans counted.
        let now_cpu = cpu_seconds(pid);
        let now_rss = peak_rss(pid);
        let received = sink.received();
        if received.distinct != last.distinct {
            last_change = Instant::now();
            (cpu, rss, elapsed) = (now_cpu, now_rss, started.elapsed());
        }
        last = received;
        if last.distinct >= expected || last_change.elapsed() > STALL {
            break;
        }
        if running.exited() {
            eprintln!("trace-bench: {} exited early", gateway.name());
            break;
        }
    }
    let refused = generator.refused();
    drop(generator);
    running.stop();
    Ok(TraceMeasurement {
        gateway: gateway.name(),
        mix: requests.mix.name(),
        row,
        received: last,
        expected,
        refused,
        elapsed,
        cpu_seconds: cpu,
        peak_rss: rss,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

/// The results side by side: per mix, each gateway's rows, cluster-agent's per-core
/// throughput over rotel's, and the target. `sent` is spans sent per mix name.
pub fn report(sent: &[(&'static str, u64, u64)], results: &[TraceMeasurement]) -> String {
    let mut out = String::new();
    for &(mix, spans, bytes) in sent {
        let _ = writeln!(
            out,
            "trace-bench: mix {mix}: {spans} spans in {:.1} MiB of OTLP requests ({:.0} B per span)",
            bytes as f64 / MIB,
            bytes as f64 / spans.max(1) as f64
        );
    }
    let _ = writeln!(
        out,
        "\n| mix | gateway | row | delivered | duplicates | refused requests | spans/s per core | spans/s (wall) | CPU s | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let spans_of = |mix: &str| {
        sent.iter()
            .find(|(m, _, _)| *m == mix)
            .map_or(0, |(_, spans, _)| *spans)
    };
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1}% of {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.1} MiB |",
            r.mix,
            r.gateway,
            r.row.name(),
            r.delivered_ratio() * 100.0,
            r.expected,
            r.received.duplicates,
            r.refused,
            r.spans_per_core_second(spans_of(r.mix)),
            r.spans_per_second(),
            r.cpu_seconds,
            r.peak_rss as f64 / MIB,
        );
    }
    let incomplete: Vec<String> = results
        .iter()
        .filter(|r| r.received.distinct < r.expected || r.received.unknown > 0)
        .map(|r| format!("{} ({}, {})", r.gateway, r.mix, r.row.name()))
        .collect();
    if !incomplete.is_empty() {
        let _ = writeln!(
            out,
            "\nNOT COMPARABLE: {} did not deliver exactly the expected spans (delivery is the precondition)",
            incomplete.join(", ")
        );
    }
    let _ = writeln!(out);
    let like = |gateway: &str, mix: &str| {
        results
            .iter()
            .find(|r| r.gateway == gateway && r.mix == mix && r.row == Row::LikeForLike)
    };
    for &(mix, spans, _) in sent {
        if let (Some(agent), Some(rotel)) = (like("cluster-agent", mix), like("rotel", mix)) {
            let _ = writeln!(
                out,
                "mix {mix}, like for like: cluster-agent / rotel: {:.2}x spans per core, peak RSS {:.2}x",
                agent.spans_per_core_second(spans) / rotel.spans_per_core_second(spans).max(1e-9),
                agent.peak_rss as f64 / (rotel.peak_rss as f64).max(1.0),
            );
        }
        if let Some(agent) = like("cluster-agent", mix) {
            let _ = writeln!(
                out,
                "mix {mix}: cluster-agent {:.0} spans/s per core = {:.1}x Kyma's published OpenTelemetry Collector gateway figure (~{:.0} spans/s per core, not measured here)",
                agent.spans_per_core_second(spans),
                agent.spans_per_core_second(spans) / KYMA_OTEL_COLLECTOR_SPANS_PER_CORE_SECOND,
                KYMA_OTEL_COLLECTOR_SPANS_PER_CORE_SECOND,
            );
        }
    }
    if let Some(agent) = like("cluster-agent", workload::SpanMix::Small.name()) {
        let per_core = agent.spans_per_core_second(spans_of(agent.mix));
        let _ = writeln!(
            out,
            "target (small mix, disk buffer on): {:.0} spans/s per core: {}",
            TARGET_SPANS_PER_CORE_SECOND,
            if per_core >= TARGET_SPANS_PER_CORE_SECOND {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    out
}
