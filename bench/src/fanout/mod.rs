//! Fan-out benchmark: one real `observer serve` and N simulated agents on this machine.
//!
//! # What runs
//!
//! The observer is the binary under test (`target/release/observer` for real figures),
//! started as its own process with a fresh data directory (SQLite) on two loopback
//! ports. The harness creates one tenant and N clusters labelled alike through the REST
//! API with the bootstrap admin token, a few requests at a time, as an operator's
//! tooling would. Then N simulated agents ([`agent`]) join with their tokens and hold
//! their `Connect` streams, each over its own mTLS connection with its own client
//! certificate, all in this process on a multi-thread runtime.
//!
//! # What is measured
//!
//! 1. **Memory per agent**: the observer's `VmRSS` with the clusters created and no
//!    agent ("idle"), then with all N streams open and every agent on its first
//!    configuration; (connected − idle) / N. `VmHWM` is reported beside it.
//! 2. **Convergence**: one `PUT /api/v1/pipelines/{name}` selecting every cluster.
//!    Measured from the moment the PUT returns, per agent: when its `ConfigUpdate`
//!    arrived (**pushed**; the simulated agent answers APPLIED at once); when the
//!    observer counted the APPLIED answers (**answered**, from
//!    `kaas_observer_config_pushes_total{result="success"}` polled every
//!    [`metrics_poll_interval`]); and when the observer has stored the cluster's new
//!    applied hash (**acknowledged**: its database read through [`Store`] on a second
//!    SQLite connection every [`STORE_POLL_INTERVAL`], because the JSON of
//!    `GET /api/v1/clusters` for every cluster, polled that often, would load the very
//!    observer being measured). Also when the pipeline's `ConfigurationApplied` condition turns True,
//!    and how long one `GET /api/v1/clusters` takes once everything settled.
//! 3. **Reconnect storm**: the observer is killed with SIGKILL and started again at
//!    once on the same ports and data. Every agent reconnects with the real agent's
//!    full-jitter backoff. Settled is when `kaas_observer_agent_streams` equals N and
//!    every agent holds a stream again. Every failed attempt is counted by phase and
//!    kind; a refusal is anything but connection refused, `UNAVAILABLE`, a stream that
//!    ended, and, until the restarted observer listens, a reset connection
//!    ([`FailureKind::is_refusal`]). A failed attempt counts in the phase it started
//!    in, a stream that ended in the phase it ended in.
//!
//! Timings are reported, never asserted; the smoke test checks only that every agent
//! converged and came back.

pub mod agent;
pub mod observer;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use kaas_observer::cli::client::ClientError;
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::Store;
use kaas_pipeline::status::{CONDITION_CONFIGURATION_APPLIED, ConditionStatus};

pub use agent::{FailureKind, Fleet, Phase, SimulatedCluster};
pub use observer::{Memory, ObserverApi, ObserverMetrics, ObserverProcess};
pub use report::{FanoutReport, quantile};

/// The tenant that owns every simulated cluster.
pub const TENANT: &str = "fanout";
/// The pipeline applied to all clusters.
pub const PIPELINE: &str = "fanout";
/// The label every simulated cluster carries and the pipeline selects.
const FLEET_LABEL: (&str, &str) = ("fleet", "fanout-bench");
/// How often `/metrics` is read per agent (see [`metrics_poll_interval`]).
const METRICS_POLL_PER_AGENT: Duration = Duration::from_micros(100);
/// The shortest interval between two reads of `/metrics`.
const METRICS_POLL_MIN: Duration = Duration::from_millis(50);
/// How often the harness checks its own agents while waiting (no request to the
/// observer).
const FLEET_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often `/metrics` is read while waiting for `agents` agents: 50 ms for up to 500
/// agents, then 100 µs per agent (1 s at 10,000). The observer's `/metrics` carries six
/// series per cluster (5 MB and about 70 ms of the observer's CPU at 10,000 clusters
/// before it was made cheaper), so a fixed 50 ms interval had the bench itself take a
/// large part of the CPU of the observer it measures; scaling the interval with the
/// fleet keeps that share small and about the same at every size.
pub fn metrics_poll_interval(agents: usize) -> Duration {
    METRICS_POLL_PER_AGENT
        .saturating_mul(u32::try_from(agents).unwrap_or(u32::MAX))
        .max(METRICS_POLL_MIN)
}
/// How often the observer's database is read for acknowledged configurations: one
/// query over the tenant's clusters, from a second connection (SQLite WAL readers do
/// not block the observer's writer).
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the observer is left alone before memory is read, so the status task's
/// debounced recomputation (250 ms, then one pass over every cluster) is over.
pub const QUIET_BEFORE_MEASURING: Duration = Duration::from_secs(3);
/// File descriptors the bench needs beyond one per agent: join channels, HTTP
/// clients, the runtime, stdio.
const SPARE_FILES: u64 = 256;

/// What to run.
#[derive(Clone, Debug)]
pub struct FanoutSettings {
    /// Simulated agents (and clusters).
    pub agents: usize,
    /// The `observer` binary.
    pub observer: PathBuf,
    /// Agents joining and opening their first stream at a time.
    pub setup_concurrency: usize,
    /// Cluster-creating API requests at a time.
    pub api_concurrency: usize,
    /// Deadline for joining and connecting every agent.
    pub setup_deadline: Duration,
    /// Deadline for the pipeline change to be acknowledged by every agent.
    pub converge_deadline: Duration,
    /// Deadline, from the kill, for every agent to be back.
    pub storm_deadline: Duration,
    /// See [`QUIET_BEFORE_MEASURING`].
    pub quiet: Duration,
    /// How often `/metrics` is read while waiting; see [`metrics_poll_interval`].
    pub metrics_poll: Duration,
    /// Where the observer keeps its data (and its log, `observer.log`), kept after the
    /// run; a temporary directory, removed afterwards, when `None`.
    pub data_dir: Option<PathBuf>,
}

impl FanoutSettings {
    /// Defaults for `agents` agents: setup scaled with the fleet, fixed deadlines for
    /// convergence and the storm (each far beyond its target, so a miss is measured
    /// rather than cut off).
    pub fn new(agents: usize, observer: PathBuf) -> Self {
        Self {
            agents,
            observer,
            setup_concurrency: 64,
            api_concurrency: 16,
            setup_deadline: Duration::from_secs(60) + Duration::from_millis(50) * agents as u32,
            converge_deadline: Duration::from_secs(120),
            storm_deadline: Duration::from_secs(180),
            quiet: QUIET_BEFORE_MEASURING,
            metrics_poll: metrics_poll_interval(agents),
            data_dir: None,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The machine or the harness cannot run it (binary missing, file limit).
    #[error("setup: {0}")]
    Setup(String),
    /// The observer did not start or exited.
    #[error("observer: {0}")]
    Observer(String),
    /// An API call failed.
    #[error("API: {0}")]
    Api(#[from] ClientError),
    /// A phase did not finish in time.
    #[error("{phase} did not finish within {deadline:?}: {detail}")]
    Deadline {
        /// The phase.
        phase: &'static str,
        /// Its deadline.
        deadline: Duration,
        /// How far it got.
        detail: String,
    },
}

/// Open-file limits of this process: (soft, hard).
fn open_file_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|n| {
            if n == "unlimited" {
                Some(u64::MAX)
            } else {
                n.parse().ok()
            }
        });
    Some((numbers.next()??, numbers.next()??))
}

/// Makes sure this process (and the observer it starts, which inherits the limit) may
/// open a descriptor per agent: raises the soft limit to the hard one with util-linux
/// `prlimit` if needed (no `unsafe` here), or fails saying what to raise.
pub fn ensure_open_files(agents: usize) -> Result<(), FanoutError> {
    let needed = agents as u64 + SPARE_FILES;
    let Some((soft, hard)) = open_file_limits() else {
        return Ok(());
    };
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(FanoutError::Setup(format!(
            "{agents} agents need {needed} open files, the hard limit is {hard}: raise it (ulimit -Hn, or LimitNOFILE) first"
        )));
    }
    let hard_text = if hard == u64::MAX {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard_text}:{hard_text}"))
        .status();
    match (status, open_file_limits()) {
        (Ok(status), Some((soft, _))) if status.success() && soft >= needed => Ok(()),
        _ => Err(FanoutError::Setup(format!(
            "{agents} agents need {needed} open files and the soft limit is {soft}; run `ulimit -n {hard_text}` first"
        ))),
    }
}

/// Runs the whole benchmark.
pub async fn run(settings: &FanoutSettings) -> Result<FanoutReport, FanoutError> {
    ensure_open_files(settings.agents)?;
    // One crypto provider for every TLS user in the process (the agents' and the API's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let temporary = tempfile::tempdir().map_err(|e| FanoutError::Setup(e.to_string()))?;
    let data_dir = settings
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| FanoutError::Setup(format!("{}: {e}", data_dir.display())))?;
    let mut observer = ObserverProcess::start(&settings.observer, &data_dir).await?;
    let mut report = FanoutReport::new(settings.agents);
    report.metrics_poll = settings.metrics_poll;

    // Clusters, through the API.
    observer.api().create_tenant(TENANT).await?;
    // One tenant owns the whole simulated fleet: raise its cluster quota to the fleet.
    observer
        .api()
        .set_cluster_quota(TENANT, settings.agents)
        .await?;
    let started = Instant::now();
    let clusters = create_clusters(&observer, settings).await?;
    report.clusters_created = started.elapsed();
    tokio::time::sleep(settings.quiet).await;
    report.idle = observer.memory();

    // The fleet joins and connects.
    let started = Instant::now();
    let cpu_before = observer.cpu_seconds();
    let fleet = Fleet::start(
        &observer.grpc_url(),
        &observer.ca_pem()?,
        clusters,
        settings.setup_concurrency,
    )
    .await?;
    let result = measure_fleet(
        &mut observer,
        &fleet,
        settings,
        &mut report,
        started,
        cpu_before,
    )
    .await;
    report.failures = fleet.failures();
    fleet.stop().await;
    observer.kill();
    result.map(|()| report)
}

async fn create_clusters(
    observer: &ObserverProcess,
    settings: &FanoutSettings,
) -> Result<Vec<SimulatedCluster>, FanoutError> {
    let width = settings.agents.to_string().len();
    let api = observer.api();
    // Concurrent requests on this task: the API client's futures are not `Send`.
    futures_util::stream::iter(0..settings.agents)
        .map(|i| async move {
            let name = format!("c-{i:0width$}");
            let join_token = api.create_cluster(TENANT, &name, &[FLEET_LABEL]).await?;
            Ok(SimulatedCluster { name, join_token })
        })
        .buffered(settings.api_concurrency.max(1))
        .try_collect()
        .await
}

async fn measure_fleet(
    observer: &mut ObserverProcess,
    fleet: &Fleet,
    settings: &FanoutSettings,
    report: &mut FanoutReport,
    started: Instant,
    cpu_before: f64,
) -> Result<(), FanoutError> {
    let n = settings.agents;
    // Every agent connected and on its first (pipeline-less) configuration.
    let until = started + settings.setup_deadline;
    let mut metrics = ObserverMetrics::default();
    let mut metrics_read: Option<Instant> = None;
    loop {
        let records = fleet.records();
        let configured = records.iter().filter(|r| !r.updates.is_empty()).count();
        let fleet_done = fleet.connected() == n && configured == n;
        // The observer's side is read once the agents' side is complete (and now and
        // then for the deadline's message), not at every check.
        if fleet_done || metrics_read.is_none_or(|at| at.elapsed() >= settings.metrics_poll) {
            metrics = observer.metrics().await.unwrap_or_default();
            metrics_read = Some(Instant::now());
        }
        if fleet_done && metrics.agent_streams == n as u64 && metrics.pushes_answered >= n as u64 {
            break;
        }
        if Instant::now() > until {
            return Err(FanoutError::Deadline {
                phase: "joining and connecting",
                deadline: settings.setup_deadline,
                detail: format!(
                    "{} joined, {} streams on the agents' side, {} on the observer's, {configured} configured; failures {:?}",
                    records.iter().filter(|r| r.joined).count(),
                    fleet.connected(),
                    metrics.agent_streams,
                    fleet.failures()
                ),
            });
        }
        tokio::time::sleep(FLEET_POLL_INTERVAL).await;
    }
    report.connected_after = started.elapsed();
    report.setup_cpu_seconds = observer.cpu_seconds() - cpu_before;
    tokio::time::sleep(settings.quiet).await;
    report.connected = observer.memory();
    report.bench = Memory::of(std::process::id());

    fleet.set_phase(Phase::Steady);
    converge(observer, fleet, settings, report).await?;

    storm(observer, fleet, settings, report).await
}

/// A pipeline every simulated cluster runs.
fn pipeline_document() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "MetricPipeline",
        "metadata": {"name": PIPELINE},
        "spec": {
            "input": {"prometheus": {"enabled": true}},
            "output": {"prometheusRemoteWrite": {"url": "https://metrics.example/api/v1/write"}},
            "clusterSelector": {"matchLabels": {FLEET_LABEL.0: FLEET_LABEL.1}}
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

async fn converge(
    observer: &ObserverProcess,
    fleet: &Fleet,
    settings: &FanoutSettings,
    report: &mut FanoutReport,
) -> Result<(), FanoutError> {
    // Our own connections to the observer's database, for reading only: one query per
    // poll, without loading the observer with the API's JSON for every cluster.
    let store = Store::open_sqlite(
        &observer.database_path(),
        SecretBox::generate().map_err(|e| FanoutError::Setup(e.to_string()))?,
    )
    .await
    .map_err(|e| FanoutError::Setup(format!("observer database: {e}")))?;
    let baseline = observer.metrics().await.unwrap_or_default().pushes_answered;
    let cpu_before = observer.cpu_seconds();
    let call = Instant::now();
    observer
        .api()
        .apply_pipeline(TENANT, PIPELINE, &pipeline_document())
        .await?;
    let returned = Instant::now();
    report.convergence.apply_call = returned - call;
    let window = Window {
        call,
        returned,
        until: returned + settings.converge_deadline,
        agents: settings.agents,
    };
    let (samples, acked, status_true) = tokio::join!(
        window.answers(observer, baseline, settings.metrics_poll),
        window.acknowledged(&store, fleet),
        window.status(observer),
    );
    report.convergence.cpu_seconds = observer.cpu_seconds() - cpu_before;
    report.convergence.answered = samples;
    report.convergence.acknowledged = acked.into_iter().flatten().collect();
    report.convergence.status_true = status_true;
    window.listing(observer, fleet, report).await;
    report.convergence.pushed = fleet
        .records()
        .iter()
        .filter_map(|r| r.updates.iter().find(|(at, _)| *at >= call))
        .map(|(at, _)| at.saturating_duration_since(returned))
        .collect();
    Ok(())
}

/// The convergence phase's clock: when the pipeline was applied, when the call
/// returned, and how long to watch the fleet follow.
struct Window {
    call: Instant,
    returned: Instant,
    until: Instant,
    agents: usize,
}

impl Window {
    /// The observer's count of APPLIED answers since `baseline`, sampled every `poll`.
    async fn answers(
        &self,
        observer: &ObserverProcess,
        baseline: u64,
        poll: Duration,
    ) -> Vec<(Duration, u64)> {
        let mut samples = Vec::new();
        loop {
            if let Some(metrics) = observer.metrics().await {
                let count = metrics.pushes_answered.saturating_sub(baseline);
                samples.push((self.returned.elapsed(), count));
                if count >= self.agents as u64 {
                    break;
                }
            }
            if Instant::now() > self.until {
                break;
            }
            tokio::time::sleep(poll).await;
        }
        samples
    }

    /// What the observer stored, per cluster: when its new hash was first seen.
    async fn acknowledged(&self, store: &Store, fleet: &Fleet) -> Vec<Option<Duration>> {
        let mut acked: Vec<Option<Duration>> = vec![None; self.agents];
        loop {
            if let Ok(clusters) = store.list_clusters(Some(TENANT)).await {
                let seen = self.returned.elapsed();
                // Read after the query: a cluster stored with its new hash had its
                // agent receive the update before the query answered.
                let expected = expected_hashes(fleet, self.call);
                for cluster in clusters {
                    let Some(index) = cluster_index(&cluster.name) else {
                        continue;
                    };
                    if let (Some(slot @ None), Some(Some(want))) =
                        (acked.get_mut(index), expected.get(index))
                        && cluster.applied_config_hash.as_deref() == Some(want.as_str())
                    {
                        *slot = Some(seen);
                    }
                }
            }
            if acked.iter().all(Option::is_some) || Instant::now() > self.until {
                break;
            }
            tokio::time::sleep(STORE_POLL_INTERVAL).await;
        }
        acked
    }

    /// When the pipeline's condition turned true, through the API (one pipeline row
    /// per request).
    async fn status(&self, observer: &ObserverProcess) -> Option<Duration> {
        loop {
            if let Ok(view) = observer.api().pipeline_status(TENANT, PIPELINE).await
                && view.status.conditions.iter().any(|c| {
                    c.type_ == CONDITION_CONFIGURATION_APPLIED
                        && c.status == ConditionStatus::True
                        && c.observed_generation == Some(view.generation)
                })
            {
                return Some(self.returned.elapsed());
            }
            if Instant::now() > self.until {
                return None;
            }
            tokio::time::sleep(STORE_POLL_INTERVAL).await;
        }
    }

    /// What an operator sees: the cluster list, once everything settled.
    async fn listing(&self, observer: &ObserverProcess, fleet: &Fleet, report: &mut FanoutReport) {
        let expected = expected_hashes(fleet, self.call);
        let listing = Instant::now();
        match observer.api().list_clusters(TENANT).await {
            Ok(list) => {
                report.convergence.list_request = Some(listing.elapsed());
                report.convergence.listed_with_new_hash = list
                    .items
                    .iter()
                    .filter(|view| {
                        cluster_index(&view.name)
                            .and_then(|i| expected.get(i).cloned().flatten())
                            .is_some_and(|want| view.applied_config_hash.as_deref() == Some(&want))
                    })
                    .count();
            }
            Err(error) => {
                report.convergence.list_error =
                    Some(format!("{error} after {:?}", listing.elapsed()));
            }
        }
    }
}

/// Per agent, the hash (hex) of the first `ConfigUpdate` it received after `since`.
fn expected_hashes(fleet: &Fleet, since: Instant) -> Vec<Option<String>> {
    fleet
        .records()
        .iter()
        .map(|r| {
            r.updates
                .iter()
                .find(|(at, _)| *at >= since)
                .map(|(_, hash)| hex(hash))
        })
        .collect()
}

/// The index of a cluster named `c-<index>`.
fn cluster_index(name: &str) -> Option<usize> {
    name.strip_prefix("c-")?.parse().ok()
}

async fn storm(
    observer: &mut ObserverProcess,
    fleet: &Fleet,
    settings: &FanoutSettings,
    report: &mut FanoutReport,
) -> Result<(), FanoutError> {
    let n = settings.agents;
    fleet.set_phase(Phase::Restart);
    let killed = Instant::now();
    let mut listening_after = Duration::ZERO;
    observer
        .restart(|| {
            fleet.set_phase(Phase::Storm);
            listening_after = killed.elapsed();
        })
        .await?;
    report.storm.listening_after = listening_after;
    report.storm.ready_after = killed.elapsed();
    let until = killed + settings.storm_deadline;
    let mut most = 0;
    let mut most_waiting = 0;
    let mut metrics_read: Option<Instant> = None;
    loop {
        // As in the setup: the observer is asked at every check only once every agent
        // holds a stream again.
        let fleet_done = fleet.connected() == n;
        if fleet_done || metrics_read.is_none_or(|at| at.elapsed() >= settings.metrics_poll) {
            let metrics = observer.metrics().await.unwrap_or_default();
            metrics_read = Some(Instant::now());
            most = most.max(metrics.agent_streams);
            most_waiting = most_waiting.max(metrics.handshakes_waiting);
            if fleet_done && metrics.agent_streams == n as u64 {
                report.storm.settled_after = Some(killed.elapsed());
                break;
            }
        }
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(FLEET_POLL_INTERVAL).await;
    }
    report.storm.most_streams = most;
    report.storm.cpu_seconds = observer.cpu_seconds();
    report.storm.reconnected = fleet
        .records()
        .iter()
        .filter_map(|r| r.connects.iter().find(|at| **at >= killed))
        .map(|at| *at - killed)
        .collect();
    tokio::time::sleep(settings.quiet).await;
    report.storm.memory = observer.memory();
    let after = observer.metrics().await.unwrap_or_default();
    report.storm.pushes_answered = after.pushes_answered;
    report.storm.handshakes = ObserverMetrics {
        handshakes_waiting: most_waiting,
        ..after
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_less_often_for_a_larger_fleet() {
        assert_eq!(metrics_poll_interval(10), Duration::from_millis(50));
        assert_eq!(metrics_poll_interval(1_000), Duration::from_millis(100));
        assert_eq!(metrics_poll_interval(10_000), Duration::from_secs(1));
        assert_eq!(
            metrics_poll_interval(usize::MAX),
            METRICS_POLL_PER_AGENT * u32::MAX
        );
    }
}
