//! `kaas_pipeline_cluster_config_state{tenant,pipeline,cluster,state}`: for every
//! pipeline and every cluster it selects, 1 for the state of the pipeline's
//! configuration there (`docs/metrics.md`). Served on `/metrics` by every replica and
//! remote-written with the fleet series by the lease holder.
//!
//! # Design
//! * **What a state means.** The observer renders one configuration per cluster (its
//!   selected pipelines plus the central pipeline), and the agent reports on that whole
//!   configuration by its hash. The desired hash is the one the status task compares
//!   (`control::status_task`): the cluster-level instance's configuration rendered by
//!   the same [`TenantConfigs::render_for_agent`], with what its last report says the
//!   agent runs (trace pipelines, template instances) and where the cluster's pushes
//!   go, so the two never disagree about a cluster. For each pipeline the cluster runs, the state is the
//!   agent's last report if that report is about the configuration the observer wants
//!   the cluster to run now: `applying`, `applied` or `failed` (the agent refused the
//!   configuration and kept its last good one, so none of its pipelines got the
//!   change); otherwise `pending` (no report yet, or a report about an older
//!   configuration). Deleted clusters (tombstones) are left out; so are clusters no
//!   pipeline selects. [`tenant_config_states`] is a pure function of what the store
//!   holds, so every replica computes the same series.
//! * **When.** [`ConfigStates`] recomputes after changes that can alter a state
//!   (pipelines, clusters, agents' reports, tenants, or a lag of the change feed),
//!   at most once per [`DEFAULT_MIN_RECOMPUTE_GAP`], and every [`DEFAULT_REFRESH`]
//!   regardless.
//!   A recompute reads every cluster and configuration report, which clusters use a
//!   gateway, and each tenant's pipelines as the control service reads them, and
//!   renders each cluster's configuration to learn its hash: the same work the control
//!   service does per woken stream, here once per gap for the whole fleet.
//! * A failed recompute is logged and the previous series stay: slightly stale series
//!   beat vanished ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::status::AgentConfigState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::remote_write::{Series, SeriesSource};
use crate::rendering::{AgentFeatures, CentralPipelineSettings, TenantConfigs, TenantPipelines};
use crate::store::{Change, Cluster, ConfigReport, Store, StoreError};

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

/// Every metric pipeline of a tenant with `configs` and each of its live `clusters` it
/// selects, with its state there given the clusters' `reports` and the clusters whose
/// pushes go to their `gateways`. Pure.
fn tenant_config_states(
    configs: &TenantConfigs,
    clusters: &[&Cluster],
    reports: &BTreeMap<String, ConfigReport>,
    gateways: &BTreeSet<String>,
) -> Vec<ClusterConfigState> {
    let mut states = Vec::new();
    for cluster in clusters {
        let selected: Vec<_> = (configs.pipelines().iter())
            .filter(|p| p.pipeline.spec().cluster_selector.matches(&cluster.labels))
            .collect();
        if selected.is_empty() {
            continue;
        }
        let report = reports.get(&cluster.id);
        let placement = if gateways.contains(&cluster.id) {
            PushPlacement::Gateway
        } else {
            PushPlacement::ClusterInstance
        };
        let desired = configs.render_for_agent(
            cluster,
            (AgentRole::Cluster, placement),
            AgentFeatures {
                trace_pipelines: ConfigReport::runs_trace_pipelines(report),
                template_instances: ConfigReport::renders_template_instances(report),
            },
        );
        let state = state_of(report, &desired.hash_hex());
        for stored in selected {
            states.push(ClusterConfigState {
                tenant: stored.tenant.clone(),
                pipeline: stored.name().to_owned(),
                cluster: cluster.id.clone(),
                state,
            });
        }
    }
    states
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
    let clusters = store.list_clusters(None).await?;
    let mut by_tenant: BTreeMap<&str, Vec<&Cluster>> = BTreeMap::new();
    for cluster in clusters.iter().filter(|c| c.state.receives_config()) {
        by_tenant.entry(&cluster.tenant).or_default().push(cluster);
    }
    if by_tenant.is_empty() {
        return Ok(Vec::new());
    }
    let reports = store.config_reports().await?;
    let live: Vec<String> = by_tenant.values().flatten().map(|c| c.id.clone()).collect();
    let gateways = store.clusters_with_gateway(&live).await?;
    // A cache of its own, dropped after this computation: the control service's
    // would have to be told of every change this task already waits for.
    let tenants = TenantPipelines::new(central.cloned().map(Arc::new));
    let mut states = Vec::new();
    for (tenant, clusters) in by_tenant {
        // A pipeline the observer cannot read runs nowhere and does not stop the
        // others' states (issue 13, finding 10): the tenant's configs leave it out.
        let configs = tenants.get(store, tenant).await?;
        states.extend(tenant_config_states(
            &configs, &clusters, &reports, &gateways,
        ));
    }
    states.sort();
    Ok(states)
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
