//! `kaas_pipeline_cluster_config_state{tenant,pipeline,cluster,state}`: for every
//! pipeline and every cluster it selects, 1 for the state of the pipeline's
//! configuration there (`docs/metrics.md`). Served on `/metrics` by every replica and
//! remote-written with the fleet series by the lease holder.
//!
//! # Design
//! * **What a state means.** The observer renders one configuration per cluster (its
//!   selected pipelines plus the central pipeline), and the agent reports on that whole
//!   configuration by its hash. For each pipeline the cluster runs, the state is the
//!   agent's last report if that report is about the configuration the observer wants
//!   the cluster to run now: `applying`, `applied` or `failed` (the agent refused the
//!   configuration and kept its last good one, so none of its pipelines got the
//!   change); otherwise `pending` (no report yet, or a report about an older
//!   configuration). Deleted clusters (tombstones) are left out; so are clusters no
//!   pipeline selects. [`cluster_config_states`] is a pure function of the store's
//!   contents, so every replica computes the same series.
//! * **When.** [`ConfigStates`] recomputes after changes that can alter a state
//!   (pipelines, clusters, agents' reports, tenants, or a lag of the change feed),
//!   at most once per [`DEFAULT_MIN_RECOMPUTE_GAP`], and every [`DEFAULT_REFRESH`]
//!   regardless.
//!   A recompute reads every cluster, pipeline and configuration report (three queries)
//!   and renders each cluster's configuration to learn its hash: the same work the
//!   control service does per woken stream, here once per gap for the whole fleet.
//! * A failed recompute is logged and the previous series stay: slightly stale series
//!   beat vanished ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_pipeline::status::AgentConfigState;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedTracePipeline};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::remote_write::{Series, SeriesSource};
use crate::control_plane::ValidatedControlPlane;
use crate::rendering::CentralPipelineSettings;
use crate::rendering::render_for_cluster_with;
use crate::store::{
    Change, Cluster, ConfigReport, PipelineKind, Store, StoreError, StoredPipeline,
};

/// The metric's name.
pub const METRIC: &str = "kaas_pipeline_cluster_config_state";
/// State: the agent has not reported on the configuration the observer wants it to run.
pub const PENDING: &str = "pending";
/// State: the agent is applying it.
pub const APPLYING: &str = "applying";
/// State: the agent runs it.
pub const APPLIED: &str = "applied";
/// State: the agent refused it (and runs its last good configuration).
pub const FAILED: &str = "failed";
/// The shortest time between two recomputes by default: agents report all the time in
/// a big fleet (health reports arrive on the same feed as configuration reports), and
/// each recompute reads and renders every cluster's configuration; a state ten seconds
/// old is still fresh for a series written every 15 s.
pub const DEFAULT_MIN_RECOMPUTE_GAP: Duration = Duration::from_secs(10);
/// Recompute at least this often, even without a change on the feed: a safety net
/// for a notification lost between replicas, cheap at once a minute.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Tunables of [`ConfigStates`].
#[derive(Clone, Copy, Debug)]
pub struct ConfigStateSettings {
    /// Recompute at least this often ([`DEFAULT_REFRESH`]).
    pub refresh: Duration,
    /// At most one recompute per this time ([`DEFAULT_MIN_RECOMPUTE_GAP`]).
    pub min_gap: Duration,
}

impl Default for ConfigStateSettings {
    fn default() -> Self {
        Self {
            refresh: DEFAULT_REFRESH,
            min_gap: DEFAULT_MIN_RECOMPUTE_GAP,
        }
    }
}

/// One pipeline on one cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterConfigState {
    /// The pipeline's tenant.
    pub tenant: String,
    /// The pipeline.
    pub pipeline: String,
    /// A cluster the pipeline selects.
    pub cluster: String,
    /// [`PENDING`], [`APPLYING`], [`APPLIED`] or [`FAILED`].
    pub state: &'static str,
}

/// The state of the configuration `desired_hash` given the cluster's last report.
fn state_of(report: Option<&ConfigReport>, desired_hash: &str) -> &'static str {
    match report.filter(|r| r.config_hash == desired_hash) {
        Some(report) => match report.state {
            AgentConfigState::Applied => APPLIED,
            AgentConfigState::Applying => APPLYING,
            AgentConfigState::Failed => FAILED,
        },
        None => PENDING,
    }
}

/// Every (pipeline, selected cluster) with its state, sorted. Pure.
pub fn cluster_config_states(
    pipelines: &[StoredPipeline],
    clusters: &[Cluster],
    reports: &BTreeMap<String, ConfigReport>,
    central: Option<&CentralPipelineSettings>,
) -> Vec<ClusterConfigState> {
    let others = (&[][..], &[][..]);
    cluster_config_states_with(
        pipelines,
        others,
        clusters,
        reports,
        central,
        &BTreeMap::new(),
    )
}

/// Every tenant's stored log and trace pipelines: the rest of what a configuration
/// carries beside the metric pipelines.
pub type OtherKinds<'a> = (
    &'a [StoredPipeline<ValidatedLogPipeline>],
    &'a [StoredPipeline<ValidatedTracePipeline>],
);

/// [`cluster_config_states`] with the clusters' control-plane settings (by global id),
/// which shape their central pipelines and so their desired configurations. Pure.
pub fn cluster_config_states_with(
    pipelines: &[StoredPipeline],
    (log_pipelines, trace_pipelines): OtherKinds<'_>,
    clusters: &[Cluster],
    reports: &BTreeMap<String, ConfigReport>,
    central: Option<&CentralPipelineSettings>,
    control_planes: &BTreeMap<String, ValidatedControlPlane>,
) -> Vec<ClusterConfigState> {
    let mut by_tenant: BTreeMap<&str, Vec<&StoredPipeline>> = BTreeMap::new();
    for stored in pipelines {
        by_tenant
            .entry(stored.tenant.as_str())
            .or_default()
            .push(stored);
    }
    let mut states = Vec::new();
    for cluster in clusters {
        if !cluster.state.receives_config() {
            continue;
        }
        let Some(tenant_pipelines) = by_tenant.get(cluster.tenant.as_str()) else {
            continue;
        };
        let selected: Vec<&StoredPipeline> = tenant_pipelines
            .iter()
            .copied()
            .filter(|p| p.pipeline.spec().cluster_selector.matches(&cluster.labels))
            .collect();
        if selected.is_empty() {
            continue;
        }
        let validated: Vec<_> = selected.iter().map(|p| p.pipeline.clone()).collect();
        // The configuration carries the tenant's log and trace pipelines too: without
        // them the desired hash would never match what the agent was sent.
        let logs = selected_of(log_pipelines, cluster);
        // An agent that does not run trace pipelines is sent its configuration without
        // them, and reports on that one.
        let report = reports.get(&cluster.id);
        let traces = if ConfigReport::runs_trace_pipelines(report) {
            selected_of(trace_pipelines, cluster)
        } else {
            Vec::new()
        };
        let desired = render_for_cluster_with(
            cluster,
            (&validated, &logs, &traces),
            central,
            control_planes.get(&cluster.id),
        )
        .hash_hex();
        let state = state_of(report, &desired);
        for stored in selected {
            states.push(ClusterConfigState {
                tenant: stored.tenant.clone(),
                pipeline: stored.name().to_owned(),
                cluster: cluster.id.clone(),
                state,
            });
        }
    }
    states.sort();
    states
}

/// The pipelines of `cluster`'s tenant among `pipelines` that its labels select.
fn selected_of<P: PipelineKind>(pipelines: &[StoredPipeline<P>], cluster: &Cluster) -> Vec<P> {
    pipelines
        .iter()
        .filter(|p| p.tenant == cluster.tenant)
        .filter(|p| p.pipeline.cluster_selector().matches(&cluster.labels))
        .map(|p| p.pipeline.clone())
        .collect()
}

/// The series of `states`, as remote-written.
pub fn config_state_series(states: &[ClusterConfigState]) -> Vec<Series> {
    states
        .iter()
        .map(|s| {
            Series::new(
                METRIC,
                [
                    ("tenant", s.tenant.clone()),
                    ("pipeline", s.pipeline.clone()),
                    ("cluster", s.cluster.clone()),
                    ("state", s.state.to_owned()),
                ],
                1.0,
            )
        })
        .collect()
}

/// Whether `change` can alter a state.
fn alters_states(change: &Change) -> bool {
    match change {
        Change::Pipeline { .. }
        | Change::Cluster { .. }
        | Change::ClusterReport(_)
        | Change::Tenant(_) => true,
        Change::ProbeEndpoint { .. } | Change::PipelineStatus { .. } => false,
    }
}

/// The latest states, replaced whole at every recompute: a `/metrics` request takes a
/// reference instead of copying 10,000 states (three strings each) on every scrape.
type SharedStates = Arc<Mutex<Arc<Vec<ClusterConfigState>>>>;

/// The running computation of the states.
pub struct ConfigStates {
    states: SharedStates,
    task: JoinHandle<()>,
}

impl ConfigStates {
    /// Computes the states now and keeps them current. Must be called inside a Tokio
    /// runtime.
    pub fn start(
        store: Store,
        central: Option<CentralPipelineSettings>,
        settings: ConfigStateSettings,
    ) -> Self {
        let states = SharedStates::default();
        let task = tokio::spawn(run(store, central, settings, states.clone()));
        Self { states, task }
    }

    /// The current states.
    pub fn states(&self) -> Vec<ClusterConfigState> {
        Vec::clone(&self.states.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The series as a source for the remote writer (a shared source: every replica
    /// computes the same).
    pub fn source(&self) -> SeriesSource {
        let states = self.states.clone();
        Arc::new(move || config_state_series(&states.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Registers the metric in `registry` (`/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ConfigStateMetrics {
            states: self.states.clone(),
        }));
    }

    /// Stops recomputing.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ConfigStates {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn compute(
    store: &Store,
    central: Option<&CentralPipelineSettings>,
) -> Result<Vec<ClusterConfigState>, StoreError> {
    // Row by row: a pipeline the observer cannot read runs nowhere and does not stop
    // the others' states (issue 13, finding 10).
    let pipelines: Vec<_> = store
        .list_pipeline_rows(None)
        .await?
        .into_iter()
        .filter_map(|row| match row {
            crate::store::pipeline_rows::PipelineRow::Readable(stored) => Some(*stored),
            crate::store::pipeline_rows::PipelineRow::Unreadable(_) => None,
        })
        .collect();
    if pipelines.is_empty() {
        return Ok(Vec::new());
    }
    let log_pipelines = store
        .list_pipelines_of::<ValidatedLogPipeline>(None)
        .await?;
    let trace_pipelines = store
        .list_pipelines_of::<ValidatedTracePipeline>(None)
        .await?;
    let clusters = store.list_clusters(None).await?;
    let reports = store.config_reports().await?;
    let control_planes = store.cluster_control_planes(None).await?;
    Ok(cluster_config_states_with(
        &pipelines,
        (&log_pipelines, &trace_pipelines),
        &clusters,
        &reports,
        central,
        &control_planes,
    ))
}

async fn run(
    store: Store,
    central: Option<CentralPipelineSettings>,
    settings: ConfigStateSettings,
    states: SharedStates,
) {
    let mut changes = store.subscribe();
    let mut ticks = tokio::time::interval(settings.refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();
    loop {
        match compute(&store, central.as_ref()).await {
            Ok(fresh) => *states.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh),
            Err(error) => {
                tracing::warn!(%error, "cannot compute the pipelines' per-cluster configuration states; keeping the last ones");
            }
        }
        // Wait for a relevant change or the refresh; then let a burst settle.
        let changed = loop {
            tokio::select! {
                _ = ticks.tick() => break false,
                change = changes.recv() => match change {
                    Ok(change) if alters_states(&change) => break true,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break true,
                    Err(RecvError::Closed) => return,
                },
            }
        };
        if changed {
            tokio::time::sleep(settings.min_gap).await;
            // Everything that arrived meanwhile is covered by the next computation.
            changes = changes.resubscribe();
            ticks.reset();
        }
    }
}

/// The `/metrics` collector.
#[derive(Debug)]
struct ConfigStateMetrics {
    states: SharedStates,
}

impl Collector for ConfigStateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut family = encoder.encode_descriptor(
            METRIC,
            "1 for the current state of a pipeline's configuration on one selected cluster (pending, applying, applied, failed).",
            None,
            MetricType::Gauge,
        )?;
        for state in states.iter() {
            let labels = [
                ("tenant", state.tenant.as_str()),
                ("pipeline", state.pipeline.as_str()),
                ("cluster", state.cluster.as_str()),
                ("state", state.state),
            ];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(hash: &str, state: AgentConfigState) -> ConfigReport {
        ConfigReport {
            config_hash: hash.into(),
            state,
            errors: Vec::new(),
            running_config_hash: String::new(),
            at_ms: 0,
            without_trace_pipelines: false,
            without_template_instances: false,
        }
    }

    #[test]
    fn a_state_counts_only_for_the_wanted_configuration() {
        assert_eq!(state_of(None, "h1"), PENDING);
        let applied = AgentConfigState::Applied;
        let failed = AgentConfigState::Failed;
        assert_eq!(state_of(Some(&report("h1", applied)), "h1"), APPLIED);
        assert_eq!(
            state_of(Some(&report("h1", AgentConfigState::Applying)), "h1"),
            APPLYING
        );
        assert_eq!(state_of(Some(&report("h1", failed)), "h1"), FAILED);
        assert_eq!(state_of(Some(&report("h0", applied)), "h1"), PENDING);
        assert_eq!(state_of(Some(&report("h0", failed)), "h1"), PENDING);
    }

    /// A report's state is typed: the stored text of each state reads back, and text
    /// that is no state (which only a damaged row could hold) is refused when the
    /// report is read instead of passing for a pending configuration.
    #[test]
    fn only_the_three_states_are_read_from_a_stored_report() {
        for state in [
            AgentConfigState::Applying,
            AgentConfigState::Applied,
            AgentConfigState::Failed,
        ] {
            let text = serde_json::to_string(&report("h1", state)).unwrap();
            assert!(
                text.contains(&format!("\"state\":\"{}\"", state.as_str())),
                "{text}"
            );
            let read: ConfigReport = serde_json::from_str(&text).unwrap();
            assert_eq!(read.state, state);
        }
        let text = serde_json::to_string(&report("h1", AgentConfigState::Applied))
            .unwrap()
            .replace("APPLIED", "SOMETHING");
        assert!(
            serde_json::from_str::<ConfigReport>(&text).is_err(),
            "{text}"
        );
    }
}
