//! The fleet tick: applies the lifecycle policy ([`crate::lifecycle::next_state`]) to
//! every cluster at a fixed interval (level-triggered, see [`crate::lifecycle`]),
//! prunes the health of agent instances gone longer than their time-to-live
//! ([`crate::store::instances`]), and serves what it read as the fleet's metrics.
//!
//! # Metrics
//! The tick also refreshes a snapshot ([`FleetSnapshot`]: every cluster, and every
//! pipeline's generation and status, two queries per tick whatever the fleet's size)
//! from which `/metrics` serves `kaas_cluster_info{cluster,tenant,state}`,
//! `kaas_cluster_agent_connected{cluster,tenant}`,
//! `kaas_cluster_last_seen_timestamp_seconds`, `kaas_cluster_created_timestamp_seconds`,
//! `kaas_cluster_deleted_timestamp_seconds`,
//! `kaas_cluster_agent_certificate_expiry_timestamp_seconds`,
//! `kaas_cluster_tombstone_info{cluster,tenant,incarnation}` (the history),
//! `kaas_pipeline_info{tenant,pipeline,generation}` and
//! `kaas_pipeline_condition{tenant,pipeline,type,status,reason}` (see
//! `docs/metrics.md`). The series describe shared state, so every replica serves the
//! same values (up to one tick apart). Which clusters have series is
//! [`ClusterState::is_exported`](crate::lifecycle::ClusterState::is_exported): every
//! one, tombstones included, so that the rules see `deleted` and stay quiet. A global
//! id has one row, its current incarnation: after a tombstone's name is registered
//! again the series describe the new incarnation only (the tombstone is history in the
//! store), so the rules' guards, which match on `cluster`, key on the current
//! incarnation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use kaas_pipeline::status::ConditionStatus;

use crate::lifecycle::{DEFAULT_SILENT_AFTER, next_state};
use crate::store::{Actor, Cluster, ClusterTombstone, PipelineSummary, Store, now_ms};

/// How often clusters are re-examined: well below any sensible `--silent-after`, so a
/// silent cluster is noticed within a small fraction of the threshold.
pub const DEFAULT_TICK: Duration = Duration::from_secs(10);

/// Tunables.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// How long an agent may be unheard before its cluster is silent.
    pub silent_after: Duration,
    /// How often clusters are examined.
    pub tick: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            silent_after: DEFAULT_SILENT_AFTER,
            tick: DEFAULT_TICK,
        }
    }
}

/// What `/metrics` shows about the fleet, as of the last tick.
#[derive(Clone, Debug, Default)]
pub struct FleetSnapshot {
    /// Every cluster whose state is exported
    /// ([`ClusterState::is_exported`](crate::lifecycle::ClusterState::is_exported)).
    pub clusters: Vec<Cluster>,
    /// Every pipeline's generation and status.
    pub pipelines: Vec<PipelineSummary>,
    /// The earlier incarnations of clusters whose name was registered again: history,
    /// served as `kaas_cluster_tombstone_info`, never as `kaas_cluster_info`.
    pub tombstones: Vec<ClusterTombstone>,
}

/// The latest [`FleetSnapshot`], replaced whole at every tick: a `/metrics` request
/// takes a reference to it instead of copying every cluster (10,000 clusters are
/// 150,000 allocations to copy, on every scrape).
type SharedSnapshot = Arc<Mutex<Arc<FleetSnapshot>>>;

/// The running lifecycle task and its metrics snapshot.
pub struct ClusterLifecycle {
    snapshot: SharedSnapshot,
    task: JoinHandle<()>,
}

impl ClusterLifecycle {
    /// Starts ticking. Must be called inside a Tokio runtime.
    pub fn start(store: Store, settings: LifecycleSettings) -> Self {
        let snapshot = SharedSnapshot::default();
        let task = tokio::spawn(run(store, settings, snapshot.clone()));
        Self { snapshot, task }
    }

    /// Registers the cluster metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(FleetMetrics {
            snapshot: self.snapshot.clone(),
        }));
    }

    /// Reads the latest snapshot, for other users of the same series (the remote writer).
    pub fn snapshot_reader(&self) -> impl Fn() -> FleetSnapshot + Send + Sync + 'static {
        let snapshot = self.snapshot.clone();
        move || FleetSnapshot::clone(&snapshot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops ticking.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ClusterLifecycle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One pass: moves clusters whose state is due to change and returns them all as they
/// are afterwards.
pub async fn tick(
    store: &Store,
    settings: &LifecycleSettings,
) -> Result<Vec<Cluster>, crate::store::StoreError> {
    let now = now_ms();
    let mut clusters = store.list_clusters(None).await?;
    for cluster in &mut clusters {
        if let Some(state) = next_state(cluster, now, settings.silent_after) {
            tracing::warn!(
                cluster = %cluster.id,
                tenant = %cluster.tenant,
                from = %cluster.state,
                to = %state,
                "cluster state changed"
            );
            store
                .set_cluster_state(&cluster.id, state, now, &Actor::system())
                .await?;
            cluster.state = state;
        }
    }
    // Agent instances unheard longer than the time-to-live leave their pipelines'
    // health (`store::instances`); the states above never depend on them. A failure
    // leaves the rows for the next tick (they are ignored meanwhile).
    match store.prune_instance_health(now).await {
        Ok(0) => {}
        Ok(pruned) => tracing::debug!(pruned, "health of gone agent instances pruned"),
        Err(error) => tracing::warn!(%error, "cannot prune the health of gone agent instances"),
    }
    Ok(clusters)
}

/// One tick and the pipelines' summaries: the new snapshot.
async fn refresh(
    store: &Store,
    settings: &LifecycleSettings,
) -> Result<FleetSnapshot, crate::store::StoreError> {
    let mut clusters = tick(store, settings).await?;
    clusters.retain(|cluster| cluster.state.is_exported());
    let pipelines = store.pipeline_summaries().await?;
    let tombstones = store.list_cluster_tombstones().await?;
    Ok(FleetSnapshot {
        clusters,
        pipelines,
        tombstones,
    })
}

async fn run(store: Store, settings: LifecycleSettings, snapshot: SharedSnapshot) {
    let mut interval = tokio::time::interval(settings.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match refresh(&store, &settings).await {
            Ok(fresh) => *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh),
            // The previous snapshot stays: slightly stale series beat vanished ones.
            Err(error) => tracing::error!(%error, "cluster lifecycle pass failed; retrying"),
        }
    }
}

/// The `/metrics` collector over the [`FleetSnapshot`].
#[derive(Debug)]
struct FleetMetrics {
    snapshot: SharedSnapshot,
}

/// `status` label of `kaas_pipeline_condition`, as Kubernetes spells it.
fn condition_status(status: ConditionStatus) -> &'static str {
    match status {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// `kaas_cluster_tombstone_info`: the earlier incarnations of clusters whose name was
/// registered again.
fn encode_tombstones(
    encoder: &mut DescriptorEncoder<'_>,
    tombstones: &[ClusterTombstone],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "kaas_cluster_tombstone_info",
        "1 for each earlier incarnation of a cluster whose name was registered again (history; the cluster's other series describe its current incarnation).",
        None,
        MetricType::Gauge,
    )?;
    for tombstone in tombstones {
        let l = [
            ("cluster", tombstone.cluster.as_str()),
            ("tenant", tombstone.tenant.as_str()),
            ("incarnation", tombstone.incarnation.as_str()),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&l)?)?;
    }
    Ok(())
}

impl Collector for FleetMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let FleetSnapshot {
            clusters,
            pipelines,
            tombstones,
        } = snapshot.as_ref();
        // Borrowed labels: a series costs no allocation (60,000 series at 10,000
        // clusters).
        fn labels(c: &Cluster) -> [(&'static str, &str); 2] {
            [("cluster", c.id.as_str()), ("tenant", c.tenant.as_str())]
        }
        {
            let mut family = encoder.encode_descriptor(
                "kaas_cluster_info",
                "1 for each cluster, labelled with its lifecycle state.",
                None,
                MetricType::Gauge,
            )?;
            for cluster in clusters {
                let [name, tenant] = labels(cluster);
                let l = [name, tenant, ("state", cluster.state.as_str())];
                ConstGauge::new(1i64).encode(family.encode_family(&l)?)?;
            }
        }
        encode_tombstones(&mut encoder, tombstones)?;
        {
            let mut family = encoder.encode_descriptor(
                "kaas_cluster_agent_connected",
                "1 while the cluster's agent holds a control stream to any observer replica, else 0.",
                None,
                MetricType::Gauge,
            )?;
            for cluster in clusters {
                ConstGauge::new(i64::from(cluster.connected))
                    .encode(family.encode_family(&labels(cluster))?)?;
            }
        }
        type Field = fn(&Cluster) -> Option<i64>;
        let timestamps: [(&str, &str, Field); 4] = [
            (
                "kaas_cluster_last_seen_timestamp_seconds",
                "When the cluster's agent was last heard from.",
                |c| c.last_seen_ms,
            ),
            (
                "kaas_cluster_created_timestamp_seconds",
                "When the cluster was registered.",
                |c| Some(c.created_at_ms),
            ),
            (
                "kaas_cluster_deleted_timestamp_seconds",
                "When the cluster was deleted (tombstones only).",
                |c| c.deleted_at_ms,
            ),
            (
                "kaas_cluster_agent_certificate_expiry_timestamp_seconds",
                "When the agent's client certificate expires.",
                |c| c.certificate_not_after_ms,
            ),
        ];
        for (name, help, field) in timestamps {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for cluster in clusters {
                if let Some(ms) = field(cluster) {
                    ConstGauge::new(seconds(ms)).encode(family.encode_family(&labels(cluster))?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "kaas_pipeline_info",
                "Always 1, one series per pipeline; generation is its spec generation.",
                None,
                MetricType::Gauge,
            )?;
            for pipeline in pipelines {
                let l = [
                    ("tenant", pipeline.tenant.clone()),
                    ("pipeline", pipeline.name.clone()),
                    ("generation", pipeline.generation.to_string()),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&l)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "kaas_pipeline_condition",
                "1 for each current condition of a pipeline, by type, status and reason.",
                None,
                MetricType::Gauge,
            )?;
            for pipeline in pipelines {
                for condition in &pipeline.status.conditions {
                    let l = [
                        ("tenant", pipeline.tenant.clone()),
                        ("pipeline", pipeline.name.clone()),
                        ("type", condition.type_.clone()),
                        ("status", condition_status(condition.status).to_owned()),
                        ("reason", condition.reason.clone()),
                    ];
                    ConstGauge::new(1i64).encode(family.encode_family(&l)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::ClusterState;

    fn cluster(state: ClusterState, last_seen_ms: Option<i64>) -> Cluster {
        Cluster {
            id: "c1".into(),
            name: "c1".into(),
            tenant: "shop".into(),
            labels: Default::default(),
            api_endpoint: None,
            state,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: 1_000,
            deleted_at_ms: None,
            incarnation: String::new(),
        }
    }

    #[test]
    fn metrics_show_connection_pipeline_generation_and_conditions() {
        use kaas_pipeline::status::{Condition, MetricPipelineStatus};

        let mut connected = cluster(ClusterState::Active, Some(5_000));
        connected.connected = true;
        let mut gone = cluster(ClusterState::Deleted, None);
        gone.id = "c2".into();
        let condition = |type_: &str, status, reason: &str| Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: "never a label".into(),
            last_transition_time: "2025-01-01T00:00:00Z".into(),
            observed_generation: Some(3),
        };
        let snapshot = FleetSnapshot {
            clusters: vec![connected, gone],
            pipelines: vec![PipelineSummary {
                tenant: "shop".into(),
                kind: "MetricPipeline".into(),
                name: "fleet".into(),
                generation: 3,
                status: MetricPipelineStatus {
                    observed_generation: Some(3),
                    conditions: vec![
                        condition("ConfigurationApplied", ConditionStatus::True, "Applied"),
                        condition("FlowHealthy", ConditionStatus::False, "BackendUnreachable"),
                    ],
                    unsupported_mode: false,
                },
            }],
            tombstones: vec![ClusterTombstone {
                cluster: "c1".into(),
                incarnation: "0a1b2c3d4e5f6071".into(),
                tenant: "shop".into(),
                name: "c1".into(),
                created_at_ms: 0,
                deleted_at_ms: Some(500),
                superseded_at_ms: 900,
            }],
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(FleetMetrics {
            snapshot: Arc::new(Mutex::new(Arc::new(snapshot))),
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"kaas_cluster_agent_connected{cluster="c1",tenant="shop"} 1"#,
            r#"kaas_cluster_agent_connected{cluster="c2",tenant="shop"} 0"#,
            r#"kaas_cluster_tombstone_info{cluster="c1",tenant="shop",incarnation="0a1b2c3d4e5f6071"} 1"#,
            r#"kaas_pipeline_info{tenant="shop",pipeline="fleet",generation="3"} 1"#,
            r#"kaas_pipeline_condition{tenant="shop",pipeline="fleet",type="ConfigurationApplied",status="True",reason="Applied"} 1"#,
            r#"kaas_pipeline_condition{tenant="shop",pipeline="fleet",type="FlowHealthy",status="False",reason="BackendUnreachable"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("never a label"), "{text}");
    }
}
