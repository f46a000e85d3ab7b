//! Remote-writes the fleet series (`kaas_cluster_*`, `kaas_pipeline_*`, and whatever
//! else is given as a [`SeriesSource`]) and each replica's own probe series (`probe_*`)
//! to the central receiver, so rules evaluated in Thanos see the observer's view of
//! every cluster and endpoint.
//!
//! # Design
//! * **Two kinds of source.** *Shared* sources describe state every replica sees alike
//!   (the fleet series from the database); *per-replica* sources hold what only this
//!   replica has (the probe series of the targets it owns, see `probes/mod.rs`).
//! * **One writer of the shared series.** Every replica runs a [`RemoteWriter`], but only
//!   the one holding the store lease [`LEASE_NAME`] writes the shared series (a
//!   PostgreSQL advisory lock; always granted on SQLite, see `store/leases.rs`). The
//!   series carry no `job` or `instance`, so whichever replica writes, each cluster has
//!   exactly one series per metric. Each round first checks the lease is still held; a
//!   replica that lost it stops writing them and tries to take the lease again in the
//!   next round.
//! * **Every replica writes its own per-replica series, without a lease.** Each probe
//!   target is owned by exactly one replica, so the replicas' probe series are disjoint
//!   and their writes never collide. They carry no `job` or `instance` either, so a
//!   target that moves to another replica (one stopped or died) keeps its series.
//!   Both kinds go in one request per round when this replica holds the lease.
//! * **Rounds.** Every `interval` (default [`DEFAULT_INTERVAL`]) the writer reads the
//!   sources (for the fleet: the lifecycle's last snapshot, [`fleet_series`]) and sends
//!   every series with one sample at the current time, in one Prometheus remote-write
//!   1.0 request (protobuf, snappy, `Content-Encoding: snappy`,
//!   `X-Prometheus-Remote-Write-Version: 0.1.0`, the tenant header naming the
//!   provider's tenant). A round with no series still sends an empty request: it
//!   proves the path works and keeps `kaas_observer_remote_write_last_success_timestamp_seconds`
//!   fresh in an empty fleet.
//! * **Staleness.** A series sent by the last delivered round and missing from this one
//!   (a cluster that changed state: `kaas_cluster_info{state="active"}` gives way to
//!   `{state="silent"}`; a pipeline's new generation; a removed tombstone; a removed
//!   probe target) gets a Prometheus staleness marker ([`STALE_NAN`]) in this round, so
//!   queries stop returning it at once instead of after the 5 minute lookback. Shared
//!   and per-replica series keep separate records of what was delivered, so losing the
//!   lease never marks the shared series stale (the new holder writes them). A probe
//!   target that moves away from this replica is marked stale too; its new owner's
//!   first sample, a probe interval later at most, revives it. In the rare case that
//!   marker carries a later timestamp than the new owner's first sample, the receiver
//!   refuses that one sample as out of order and the owner's next round is accepted.
//! * **Results** (`kaas_observer_remote_write_samples_total{result}`): a 2xx is
//!   `success`; 5xx, 429 and network errors are `failure`: nothing is resent as such,
//!   but the next round sends current values again and repeats the staleness markers
//!   that were not delivered; any other 4xx is `dropped` (the receiver refuses the
//!   content for good, so its markers are not repeated).
//! * **Failover.** A replica that takes the lease over does not know what the previous
//!   writer sent, so a state change during the handover gets no staleness marker; the
//!   alerts do not depend on markers (docs/alerts.md, "Deleted and new clusters").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::status::ConditionStatus;
use kaas_proto::remote_write::{self, v1};
use kaas_series::STALE_NAN_BITS;
use kaas_tls::http::{HttpClientSettings, http_client};
use prost::Message;
use tokio::task::JoinHandle;
use url::Url;

use crate::fleet::FleetSnapshot;
use crate::internal_events::{RemoteWriteMetrics, SeriesWritten, WriteOutcome};
use crate::probes::Prober;
use crate::rendering::central::DEFAULT_TENANT_HEADER;
use crate::store::leases::Lease;
use crate::store::{Store, now_ms};

/// How often the fleet series are written: the usual scrape interval of the central
/// Prometheus setups, and fine-grained enough next to the lifecycle's 10 s tick.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// How long one request may take: well inside one round, so a hung receiver never makes
/// rounds pile up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The store lease that elects the writing replica.
pub const LEASE_NAME: &str = "fleet-remote-write";
/// The tenant the observer's own series are written as, by default.
pub const DEFAULT_PROVIDER_TENANT: &str = "kaas-provider";
/// Prometheus' staleness marker as a value.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// One series: its labels, `__name__` included, and its current value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Labels sorted by name (as remote-write requires), `__name__` first.
    pub labels: SeriesLabels,
    /// The value.
    pub value: f64,
}

/// Sorted label pairs identifying a series.
pub type SeriesLabels = Vec<(String, String)>;

impl Series {
    /// A series named `name` with `labels` (sorted here).
    pub fn new<'a>(
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, String)>,
        value: f64,
    ) -> Self {
        let mut labels: SeriesLabels = labels
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .chain([("__name__".to_owned(), name.to_owned())])
            .collect();
        labels.sort();
        Self { labels, value }
    }
}

/// Produces the series to write; called once per round.
pub type SeriesSource = Arc<dyn Fn() -> Vec<Series> + Send + Sync>;

/// The fleet series as a source, from the lifecycle's snapshot reader
/// (`ClusterLifecycle::snapshot_reader`).
pub fn fleet_source(read: impl Fn() -> FleetSnapshot + Send + Sync + 'static) -> SeriesSource {
    Arc::new(move || fleet_series(&read()))
}

/// This replica's probe series as a per-replica source (`probe_*`, labels as on
/// `/metrics`).
pub fn probe_source(prober: Prober) -> SeriesSource {
    Arc::new(move || {
        prober
            .series()
            .into_iter()
            .map(|series| {
                let labels = series
                    .labels()
                    .map(|(name, value)| (name, value.to_owned()));
                Series::new(series.name, labels, series.value)
            })
            .collect()
    })
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// `status` of `kaas_pipeline_condition`, as Kubernetes spells it.
fn condition_status(status: ConditionStatus) -> &'static str {
    match status {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

/// The series the lifecycle serves on `/metrics`, from its snapshot (names and labels
/// as in `docs/metrics.md`). Pure.
pub fn fleet_series(snapshot: &FleetSnapshot) -> Vec<Series> {
    let mut series = Vec::new();
    for cluster in &snapshot.clusters {
        let labels = || {
            [
                ("cluster", cluster.id.clone()),
                ("tenant", cluster.tenant.clone()),
            ]
        };
        let mut info = labels().to_vec();
        info.push(("state", cluster.state.as_str().to_owned()));
        series.push(Series::new("kaas_cluster_info", info, 1.0));
        series.push(Series::new(
            "kaas_cluster_agent_connected",
            labels(),
            if cluster.connected { 1.0 } else { 0.0 },
        ));
        for (name, ms) in [
            (
                "kaas_cluster_last_seen_timestamp_seconds",
                cluster.last_seen_ms,
            ),
            (
                "kaas_cluster_created_timestamp_seconds",
                Some(cluster.created_at_ms),
            ),
            (
                "kaas_cluster_deleted_timestamp_seconds",
                cluster.deleted_at_ms,
            ),
            (
                "kaas_cluster_agent_certificate_expiry_timestamp_seconds",
                cluster.certificate_not_after_ms,
            ),
        ] {
            if let Some(ms) = ms {
                series.push(Series::new(name, labels(), seconds(ms)));
            }
        }
    }
    for tombstone in &snapshot.tombstones {
        series.push(Series::new(
            "kaas_cluster_tombstone_info",
            [
                ("cluster", tombstone.cluster.clone()),
                ("tenant", tombstone.tenant.clone()),
                ("incarnation", tombstone.incarnation.clone()),
            ],
            1.0,
        ));
    }
    for pipeline in &snapshot.pipelines {
        series.push(Series::new(
            "kaas_pipeline_info",
            [
                ("tenant", pipeline.tenant.clone()),
                ("pipeline", pipeline.name.clone()),
                ("generation", pipeline.generation.to_string()),
            ],
            1.0,
        ));
        for condition in &pipeline.status.conditions {
            series.push(Series::new(
                "kaas_pipeline_condition",
                [
                    ("tenant", pipeline.tenant.clone()),
                    ("pipeline", pipeline.name.clone()),
                    ("type", condition.type_.clone()),
                    ("status", condition_status(condition.status).to_owned()),
                    ("reason", condition.reason.clone()),
                ],
                1.0,
            ));
        }
    }
    series
}

/// What one round sends: current values and staleness markers.
#[derive(Debug, PartialEq)]
pub struct Round {
    /// Every current series with its value.
    pub current: BTreeMap<SeriesLabels, f64>,
    /// Series of the last delivered round that are gone now.
    pub stale: Vec<SeriesLabels>,
}

impl Round {
    /// The round after `delivered` (the series of the last delivered round). Pure.
    pub fn plan(series: Vec<Series>, delivered: &BTreeSet<SeriesLabels>) -> Self {
        let current: BTreeMap<SeriesLabels, f64> =
            series.into_iter().map(|s| (s.labels, s.value)).collect();
        let stale = delivered
            .iter()
            .filter(|labels| !current.contains_key(*labels))
            .cloned()
            .collect();
        Self { current, stale }
    }

    /// Samples in the round.
    pub fn samples(&self) -> u64 {
        (self.current.len() + self.stale.len()) as u64
    }

    /// The remote-write 1.0 request, every sample at `at_ms`.
    pub fn request(&self, at_ms: i64) -> v1::WriteRequest {
        let series = |labels: &SeriesLabels, value: f64| v1::TimeSeries {
            labels: labels
                .iter()
                .map(|(name, value)| v1::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            samples: vec![v1::Sample {
                value,
                timestamp: at_ms,
            }],
        };
        v1::WriteRequest {
            timeseries: self
                .current
                .iter()
                .map(|(labels, value)| series(labels, *value))
                .chain(self.stale.iter().map(|labels| series(labels, STALE_NAN)))
                .collect(),
            metadata: Vec::new(),
        }
    }
}

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct RemoteWriteSettings {
    /// The receiver's remote-write URL (Thanos receive: `…/api/v1/receive`).
    pub url: Url,
    /// The tenant header ([`DEFAULT_TENANT_HEADER`]).
    pub tenant_header: String,
    /// The tenant the series are written as ([`DEFAULT_PROVIDER_TENANT`]).
    pub tenant: String,
    /// Time between rounds.
    pub interval: Duration,
    /// Time one request may take.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust for an `https` URL.
    pub ca_pem: Option<Vec<u8>>,
}

impl RemoteWriteSettings {
    /// Checks the URL's scheme and the tenant header, without I/O.
    pub fn check(&self) -> Result<(), RemoteWriteError> {
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(RemoteWriteError::Scheme(self.url.scheme().to_owned()));
        }
        reqwest::header::HeaderName::from_bytes(self.tenant_header.as_bytes()).map_err(|e| {
            RemoteWriteError::TenantHeader {
                header: self.tenant_header.clone(),
                reason: e.to_string(),
            }
        })?;
        reqwest::header::HeaderValue::from_str(&self.tenant).map_err(|e| {
            RemoteWriteError::TenantHeader {
                header: self.tenant_header.clone(),
                reason: format!("tenant {:?}: {e}", self.tenant),
            }
        })?;
        Ok(())
    }

    /// Settings with the defaults for everything but the URL.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            tenant_header: DEFAULT_TENANT_HEADER.to_owned(),
            tenant: DEFAULT_PROVIDER_TENANT.to_owned(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
        }
    }
}

/// Why the writer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The URL is not http(s).
    #[error("the remote-write URL must be http or https, not {0:?}")]
    Scheme(String),
    /// The tenant header is not a valid header name, or the tenant not a valid value.
    #[error("invalid tenant header {header:?}: {reason}")]
    TenantHeader {
        /// The header name.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// The interval between rounds is zero.
    #[error("the remote-write interval must be positive")]
    Interval,
    /// The HTTP client cannot be built (for example a bad CA file).
    #[error("cannot build the remote-write client: {0}")]
    Client(String),
}

/// Sends requests to the receiver.
struct Sender {
    http: reqwest::Client,
    settings: RemoteWriteSettings,
}

/// Longest receiver answer quoted in a log line.
const MAX_LOGGED_BODY: usize = 512;

impl Sender {
    fn new(settings: RemoteWriteSettings) -> Result<Self, RemoteWriteError> {
        settings.check()?;
        let trust = match &settings.ca_pem {
            Some(pem) => kaas_tls::system_roots_and(pem, "--central-remote-write-ca-file")
                .map_err(|e| RemoteWriteError::Client(e.to_string()))?,
            None => kaas_tls::Trust::System,
        };
        let http = http_client(HttpClientSettings {
            timeout: Some(settings.timeout),
            ..HttpClientSettings::new(
                kaas_tls::ClientTls {
                    trust,
                    ..kaas_tls::ClientTls::default()
                },
                concat!("kaas-observer/", env!("CARGO_PKG_VERSION")),
            )
        })
        .map_err(|e| RemoteWriteError::Client(e.to_string()))?;
        Ok(Self { http, settings })
    }

    #[tracing::instrument(name = "remote_write", level = "debug", skip_all, fields(otel.kind = "client", series = request.timeseries.len()))]
    async fn send(&self, request: &v1::WriteRequest) -> WriteOutcome {
        let body = match snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()) {
            Ok(body) => body,
            Err(error) => return WriteOutcome::Refused(0, format!("snappy: {error}")),
        };
        let response = self
            .http
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, v1::CONTENT_TYPE)
            .header(
                reqwest::header::CONTENT_ENCODING,
                remote_write::CONTENT_ENCODING,
            )
            .header(remote_write::VERSION_HEADER, v1::VERSION_HEADER_VALUE)
            .header(self.settings.tenant_header.as_str(), &self.settings.tenant)
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return WriteOutcome::Failed(kaas_self_telemetry::error_chain(&error)),
        };
        let status = response.status();
        if status.is_success() {
            return WriteOutcome::Delivered;
        }
        let mut text = response.text().await.unwrap_or_default();
        if let Some((cut, _)) = text.char_indices().nth(MAX_LOGGED_BODY) {
            text.truncate(cut);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            WriteOutcome::Failed(format!("HTTP {status}: {text}"))
        } else {
            WriteOutcome::Refused(status.as_u16(), text)
        }
    }
}

/// What a [`RemoteWriter`] writes.
#[derive(Clone, Default)]
pub struct WriterSources {
    /// Series every replica sees alike, written only by the lease holder.
    pub shared: Vec<SeriesSource>,
    /// Series only this replica has (its probe series), written by every replica.
    pub per_replica: Vec<SeriesSource>,
}

impl From<Vec<SeriesSource>> for WriterSources {
    /// Shared sources only.
    fn from(shared: Vec<SeriesSource>) -> Self {
        Self {
            shared,
            per_replica: Vec::new(),
        }
    }
}

/// The running writer.
pub struct RemoteWriter {
    metrics: Arc<RemoteWriteMetrics>,
    task: JoinHandle<()>,
}

impl RemoteWriter {
    /// Checks the settings and starts writing every `settings.interval`: the shared
    /// sources while this replica holds the lease, the per-replica ones always (a
    /// `Vec` of sources converts to shared ones). Must be called inside a Tokio runtime.
    pub fn start(
        store: Store,
        settings: RemoteWriteSettings,
        sources: impl Into<WriterSources>,
    ) -> Result<Self, RemoteWriteError> {
        let sources = sources.into();
        let interval = settings.interval;
        if interval.is_zero() {
            return Err(RemoteWriteError::Interval);
        }
        let sender = Sender::new(settings)?;
        let metrics = Arc::new(RemoteWriteMetrics::default());
        let task = tokio::spawn(run(store, sender, interval, sources, metrics.clone()));
        Ok(Self { metrics, task })
    }

    /// The writer's metrics.
    pub fn metrics(&self) -> &RemoteWriteMetrics {
        &self.metrics
    }

    /// Registers the writer's metrics in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Stops writing; the lease goes with the task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The series of one kind of source and what of them the receiver last accepted.
struct Channel {
    sources: Vec<SeriesSource>,
    /// The series of the last delivered round, for staleness markers.
    delivered: BTreeSet<SeriesLabels>,
}

impl Channel {
    fn new(sources: Vec<SeriesSource>) -> Self {
        Self {
            sources,
            delivered: BTreeSet::new(),
        }
    }

    fn plan(&self) -> Round {
        let series = self.sources.iter().flat_map(|source| source()).collect();
        Round::plan(series, &self.delivered)
    }
}

/// Takes, keeps or loses the lease for this round; `true` while it is held.
async fn hold_lease(store: &Store, lease: &mut Option<Lease>, shared: &mut Channel) -> bool {
    if let Some(held) = lease
        && !held.is_held().await
    {
        tracing::warn!(lease = LEASE_NAME, "lost the remote-write lease");
        *lease = None;
    }
    if lease.is_some() {
        return true;
    }
    match store.try_lease(LEASE_NAME).await {
        Ok(Some(taken)) => {
            tracing::info!(lease = LEASE_NAME, "this replica writes the fleet series");
            // What an earlier holder sent is unknown: no markers for it.
            shared.delivered.clear();
            *lease = Some(taken);
            true
        }
        Ok(None) => {
            tracing::debug!(
                lease = LEASE_NAME,
                "another replica writes the fleet series"
            );
            false
        }
        Err(error) => {
            tracing::warn!(%error, lease = LEASE_NAME, "cannot take the remote-write lease");
            false
        }
    }
}

async fn run(
    store: Store,
    sender: Sender,
    interval: Duration,
    sources: WriterSources,
    metrics: Arc<RemoteWriteMetrics>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease: Option<Lease> = None;
    let mut shared = Channel::new(sources.shared);
    let mut per_replica = Channel::new(sources.per_replica);
    loop {
        ticks.tick().await;
        let leader = hold_lease(&store, &mut lease, &mut shared).await;
        if !leader && per_replica.sources.is_empty() {
            continue;
        }
        let mine = per_replica.plan();
        let fleet = leader.then(|| shared.plan());
        let at_ms = now_ms();
        let mut request = mine.request(at_ms);
        let mut samples = mine.samples();
        if let Some(fleet) = &fleet {
            request.timeseries.extend(fleet.request(at_ms).timeseries);
            samples += fleet.samples();
        }
        let outcome = sender.send(&request).await;
        SeriesWritten {
            outcome: &outcome,
            samples,
            at_ms,
        }
        .emit(&metrics);
        if !matches!(outcome, WriteOutcome::Failed(_)) {
            per_replica.delivered = mine.current.into_keys().collect();
            if let Some(fleet) = fleet {
                shared.delivered = fleet.current.into_keys().collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kaas_pipeline::status::{Condition, MetricPipelineStatus};

    use super::*;
    use crate::store::{Cluster, ClusterState, PipelineSummary};

    fn cluster(name: &str, state: ClusterState) -> Cluster {
        Cluster {
            id: name.into(),
            name: name.into(),
            tenant: "shop".into(),
            labels: BTreeMap::new(),
            api_endpoint: None,
            state,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms: Some(2_000),
            certificate_serial: None,
            certificate_not_after_ms: Some(9_000_000),
            applied_config_hash: None,
            connected: true,
            created_at_ms: 1_500,
            deleted_at_ms: None,
            incarnation: String::new(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> SeriesLabels {
        let mut labels: SeriesLabels = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        labels
    }

    #[test]
    fn the_stale_marker_is_prometheus_stale_nan() {
        assert!(STALE_NAN.is_nan());
        assert_eq!(STALE_NAN.to_bits(), 0x7ff0000000000002);
        let round = Round {
            current: BTreeMap::new(),
            stale: vec![labels(&[("__name__", "x")])],
        };
        let request = round.request(5);
        let encoded = request.encode_to_vec();
        let decoded = v1::WriteRequest::decode(encoded.as_slice()).unwrap();
        assert_eq!(
            decoded.timeseries[0].samples[0].value.to_bits(),
            STALE_NAN_BITS
        );
        assert_eq!(decoded.timeseries[0].samples[0].timestamp, 5);
    }

    #[test]
    fn fleet_series_have_the_documented_names_and_labels_and_no_job() {
        let mut deleted = cluster("old", ClusterState::Deleted);
        deleted.deleted_at_ms = Some(3_000);
        deleted.connected = false;
        let snapshot = FleetSnapshot {
            clusters: vec![cluster("edge-1", ClusterState::Active), deleted],
            pipelines: vec![PipelineSummary {
                tenant: "shop".into(),
                kind: "MetricPipeline".into(),
                name: "to-vendor".into(),
                generation: 3,
                status: MetricPipelineStatus {
                    conditions: vec![Condition {
                        type_: "ConfigurationApplied".into(),
                        status: ConditionStatus::True,
                        reason: "Applied".into(),
                        ..Condition::default()
                    }],
                    ..MetricPipelineStatus::default()
                },
            }],
            tombstones: vec![crate::store::ClusterTombstone {
                cluster: "edge-1".into(),
                incarnation: "0a1b2c3d4e5f6071".into(),
                tenant: "shop".into(),
                name: "edge-1".into(),
                created_at_ms: 0,
                deleted_at_ms: Some(500),
                superseded_at_ms: 900,
            }],
        };
        let series: BTreeMap<SeriesLabels, f64> = fleet_series(&snapshot)
            .into_iter()
            .map(|s| (s.labels, s.value))
            .collect();
        let get = |pairs: &[(&str, &str)]| series.get(&labels(pairs)).copied();
        assert_eq!(
            get(&[
                ("__name__", "kaas_cluster_info"),
                ("cluster", "edge-1"),
                ("tenant", "shop"),
                ("state", "active")
            ]),
            Some(1.0)
        );
        assert_eq!(
            get(&[
                ("__name__", "kaas_cluster_info"),
                ("cluster", "old"),
                ("tenant", "shop"),
                ("state", "deleted")
            ]),
            Some(1.0)
        );
        assert_eq!(
            get(&[
                ("__name__", "kaas_cluster_tombstone_info"),
                ("cluster", "edge-1"),
                ("tenant", "shop"),
                ("incarnation", "0a1b2c3d4e5f6071")
            ]),
            Some(1.0),
            "the history of a name registered again, beside its current incarnation"
        );
        let edge = [("cluster", "edge-1"), ("tenant", "shop")];
        let with = |name: &'static str, base: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.push(("__name__", name));
            get(&pairs)
        };
        assert_eq!(
            with("kaas_cluster_last_seen_timestamp_seconds", &edge),
            Some(2.0)
        );
        assert_eq!(
            with("kaas_cluster_created_timestamp_seconds", &edge),
            Some(1.5)
        );
        assert_eq!(
            with(
                "kaas_cluster_agent_certificate_expiry_timestamp_seconds",
                &edge
            ),
            Some(9_000.0)
        );
        assert_eq!(with("kaas_cluster_agent_connected", &edge), Some(1.0));
        assert_eq!(with("kaas_cluster_deleted_timestamp_seconds", &edge), None);
        assert_eq!(
            with(
                "kaas_cluster_deleted_timestamp_seconds",
                &[("cluster", "old"), ("tenant", "shop")]
            ),
            Some(3.0)
        );
        assert_eq!(
            get(&[
                ("__name__", "kaas_pipeline_info"),
                ("tenant", "shop"),
                ("pipeline", "to-vendor"),
                ("generation", "3")
            ]),
            Some(1.0)
        );
        assert_eq!(
            get(&[
                ("__name__", "kaas_pipeline_condition"),
                ("tenant", "shop"),
                ("pipeline", "to-vendor"),
                ("type", "ConfigurationApplied"),
                ("status", "True"),
                ("reason", "Applied")
            ]),
            Some(1.0)
        );
        for labels in series.keys() {
            assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "{labels:?}");
            assert!(
                labels.iter().all(|(n, _)| n != "job" && n != "instance"),
                "{labels:?}"
            );
        }
    }

    #[test]
    fn a_state_change_marks_the_old_series_stale_once() {
        let active = fleet_series(&FleetSnapshot {
            clusters: vec![cluster("edge-1", ClusterState::Active)],
            ..FleetSnapshot::default()
        });
        let first = Round::plan(active, &BTreeSet::new());
        assert!(first.stale.is_empty());
        let delivered: BTreeSet<SeriesLabels> = first.current.keys().cloned().collect();

        let silent = fleet_series(&FleetSnapshot {
            clusters: vec![cluster("edge-1", ClusterState::Silent)],
            ..FleetSnapshot::default()
        });
        let second = Round::plan(silent.clone(), &delivered);
        assert_eq!(
            second.stale,
            vec![labels(&[
                ("__name__", "kaas_cluster_info"),
                ("cluster", "edge-1"),
                ("state", "active"),
                ("tenant", "shop")
            ])]
        );
        assert_eq!(second.samples(), second.current.len() as u64 + 1);

        let delivered: BTreeSet<SeriesLabels> = second.current.keys().cloned().collect();
        assert!(Round::plan(silent, &delivered).stale.is_empty());
    }

    #[test]
    fn an_empty_fleet_still_makes_a_valid_request() {
        let round = Round::plan(Vec::new(), &BTreeSet::new());
        assert_eq!(round.samples(), 0);
        assert!(round.request(1).timeseries.is_empty());
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut settings = RemoteWriteSettings::new(Url::parse("ftp://example/").unwrap());
        assert!(matches!(
            Sender::new(settings.clone()),
            Err(RemoteWriteError::Scheme(_))
        ));
        settings.url = Url::parse("http://127.0.0.1:1/api/v1/write").unwrap();
        settings.tenant_header = "bad header".into();
        assert!(matches!(
            Sender::new(settings),
            Err(RemoteWriteError::TenantHeader { .. })
        ));
    }
}
