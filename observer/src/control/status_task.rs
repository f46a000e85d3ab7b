//! The task that keeps pipeline statuses current: it holds, per tenant, what the store
//! says about each cluster (connection, config report, health, desired hash) and
//! updates it incrementally as reports arrive.
//!
//! # Work
//! The dispatcher sends [`StatusWork`] for every change: `Report(name)` for an agent's
//! report (configuration, health, (dis)connection), `Cluster(name)` for a cluster's
//! registration, labels or state, `Tenant(name)` for a pipeline or tenant change, `All`
//! when the change feed lagged (and once at start). The task collects work for a short
//! debounce, then:
//! * for reports, reads only the reported columns of the named clusters (connection,
//!   configuration and health reports, with tenant and state; [`Store::reports_of`];
//!   their pipelines over their live agent instances, [`Store::instance_health_of`]) and
//!   updates the observations it holds in place: a report changes neither the labels
//!   nor the desired hash, so the cluster is neither read whole nor rendered again (at
//!   10,000 agents answering a pipeline change, re-reading every reporting cluster was
//!   the task's main cost). A cluster it does not hold yet is read whole;
//! * reads the clusters named by `Cluster` work with their reports in a few queries
//!   (`IN` lists), and replaces their observations in tenants it already holds;
//! * reads a tenant afresh (its pipelines from the shared cache, its clusters with their
//!   reports in one joined query) when its pipelines changed, when it is not held yet,
//!   or after `All`;
//! * recomputes the status of every pipeline of each tenant touched
//!   ([`pipeline_status`], a pure function) and writes those that differ from the stored
//!   status, read fresh in one query so another replica's writes are respected.
//!
//! A tenant without pipelines keeps no observations. The desired hash of a cluster is
//! rendered when its observation is read, not at every recomputation, from the
//! template its streams render from too ([`TenantConfigs`](crate::rendering::TenantConfigs)). Pipeline status
//! writes publish `Change::PipelineStatus`, which the dispatcher does not turn into
//! work, so a status write never causes another recomputation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};
use tokio::sync::mpsc;

use super::status::{ClusterObservation, HealthRecord, pipeline_status, unreadable_status};
use crate::rendering::{AgentFeatures, Pipelines, TenantPipelines};
use crate::store::instances::PipelineInstances;
use crate::store::{
    Cluster, ClusterReport, ConfigReport, PipelineKind, PipelineSummary, Store, StoreError,
    StoredPipeline, now_ms,
};

/// What the status task should recompute.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusWork {
    /// Every pipeline of a tenant, re-reading the tenant.
    Tenant(String),
    /// The cluster's observation, then every pipeline of its tenant.
    Cluster(String),
    /// The cluster's reports only (its registration is unchanged), then every pipeline
    /// of its tenant.
    Report(String),
    /// Everything, re-reading every tenant.
    All,
}

/// What the task holds about one tenant.
struct TenantView {
    pipelines: Pipelines,
    /// Clusters that are not deleted, by global id, with their labels.
    clusters: BTreeMap<String, (BTreeMap<String, String>, ClusterObservation)>,
}

/// The status task's state; see the module documentation.
pub struct StatusTask {
    store: Store,
    pipelines: Arc<TenantPipelines>,
    tenants: HashMap<String, TenantView>,
}

impl StatusTask {
    /// A task with nothing read yet.
    pub fn new(store: Store, pipelines: Arc<TenantPipelines>) -> Self {
        Self {
            store,
            pipelines,
            tenants: HashMap::new(),
        }
    }

    /// Runs until `work` closes: collects work for `debounce`, then updates.
    pub async fn run(mut self, mut work: mpsc::UnboundedReceiver<StatusWork>, debounce: Duration) {
        let mut failed = false;
        while let Some(first) = work.recv().await {
            tokio::time::sleep(debounce).await;
            let mut batch = BTreeSet::from([first]);
            while let Ok(more) = work.try_recv() {
                batch.insert(more);
            }
            if failed {
                // The failed batch's work is lost: read everything again.
                batch.insert(StatusWork::All);
            }
            failed = match self.update(batch).await {
                Ok(()) => false,
                Err(error) => {
                    tracing::warn!(%error, "cannot recompute pipeline statuses");
                    true
                }
            };
        }
    }

    /// Applies one batch of work and writes the statuses that changed.
    pub async fn update(&mut self, batch: BTreeSet<StatusWork>) -> Result<(), StoreError> {
        let mut reload: BTreeSet<String> = BTreeSet::new();
        let mut names = Vec::new();
        let mut reported = Vec::new();
        for work in batch {
            match work {
                StatusWork::All => {
                    self.tenants.clear();
                    reload.extend(self.store.list_tenants().await?.into_iter().map(|t| t.name));
                }
                StatusWork::Tenant(tenant) => {
                    reload.insert(tenant);
                }
                StatusWork::Cluster(name) => names.push(name),
                StatusWork::Report(name) => reported.push(name),
            }
        }
        let mut touched = BTreeSet::new();
        // Clusters read whole below need no report read.
        let whole: BTreeSet<&String> = names.iter().collect();
        reported.retain(|name| !whole.contains(name));
        let mut unknown = Vec::new();
        let mut instances = self.store.instance_health_of(&reported).await?;
        let gateways = self.store.clusters_with_gateway(&reported).await?;
        for reported in self.store.reports_of(&reported).await? {
            let tenant = reported.tenant;
            let Some(view) = held_view(&mut self.tenants, &mut reload, &tenant) else {
                continue;
            };
            let report = reported.report;
            if !reported.state.receives_config() {
                view.clusters.remove(&report.cluster);
            } else if let Some((_, observation)) = view.clusters.get_mut(&report.cluster)
                && ConfigReport::runs_trace_pipelines(report.config.as_ref())
                    == observation.runs_trace_pipelines
                && ConfigReport::renders_template_instances(report.config.as_ref())
                    == observation.renders_template_instances
                && observation.placement == placement_of(&gateways, &report.cluster)
            {
                observation.connected = report.connected;
                observation.config = report.config;
                observation.health = health_record(report.health);
                observation.instances = instances.remove(&report.cluster).unwrap_or_default();
            } else {
                // Not held, its agent now runs trace pipelines or renders template
                // instances or no longer does (an upgrade, a rollback), or its gateway came or went: its desired
                // configuration changed with it, so it is read whole.
                unknown.push(report.cluster);
                continue;
            }
            touched.insert(tenant);
        }
        names.extend(unknown);
        let mut instances = self.store.instance_health_of(&names).await?;
        let gateways = self.store.clusters_with_gateway(&names).await?;
        for (cluster, report) in self.store.clusters_with_reports(&names).await? {
            let tenant = cluster.tenant.clone();
            let Some(view) = held_view(&mut self.tenants, &mut reload, &tenant) else {
                continue;
            };
            if !cluster.state.receives_config() {
                view.clusters.remove(&cluster.id);
            } else {
                let live = instances.remove(&cluster.id).unwrap_or_default();
                let placement = placement_of(&gateways, &cluster.id);
                let (id, observed) = observe(&view.pipelines, cluster, report, (live, placement));
                view.clusters.insert(id, observed);
            }
            touched.insert(tenant);
        }
        for tenant in reload {
            self.reload(&tenant).await?;
            touched.insert(tenant);
        }
        for tenant in touched {
            self.write_statuses(&tenant).await?;
        }
        Ok(())
    }

    /// Reads the tenant afresh: its pipelines, and if it has any, its clusters.
    async fn reload(&mut self, tenant: &str) -> Result<(), StoreError> {
        let pipelines = self.pipelines.get(&self.store, tenant).await?;
        let mut clusters = BTreeMap::new();
        if !pipelines.is_empty() {
            let listed = (self.store)
                .list_clusters_with_reports(Some(tenant), None, None)
                .await?;
            let ids: Vec<String> = listed.iter().map(|(c, _)| c.id.clone()).collect();
            let mut instances = self.store.instance_health_of(&ids).await?;
            let gateways = self.store.clusters_with_gateway(&ids).await?;
            for (cluster, report) in listed {
                if !cluster.state.receives_config() {
                    continue;
                }
                let live = instances.remove(&cluster.id).unwrap_or_default();
                let placement = placement_of(&gateways, &cluster.id);
                let (id, observed) = observe(&pipelines, cluster, report, (live, placement));
                clusters.insert(id, observed);
            }
        }
        self.tenants.insert(
            tenant.to_owned(),
            TenantView {
                pipelines,
                clusters,
            },
        );
        Ok(())
    }

    /// Recomputes the tenant's pipeline statuses and writes those that changed.
    async fn write_statuses(&self, tenant: &str) -> Result<(), StoreError> {
        let Some(view) = self.tenants.get(tenant) else {
            return Ok(());
        };
        if view.pipelines.is_empty() {
            return Ok(());
        }
        // By (kind, name): a metric and a log pipeline may share a name.
        let stored: HashMap<(String, String), _> = self
            .store
            .pipeline_summaries_of(tenant)
            .await?
            .into_iter()
            .map(|summary| ((summary.kind.clone(), summary.name.clone()), summary))
            .collect();
        let now = now_ms();
        let pipelines = &view.pipelines;
        self.write_kind(tenant, view, &stored, pipelines.pipelines(), now)
            .await?;
        self.write_kind(tenant, view, &stored, pipelines.log_pipelines(), now)
            .await?;
        self.write_kind(tenant, view, &stored, pipelines.trace_pipelines(), now)
            .await?;
        // A pipeline the observer cannot read runs nowhere; its condition says why
        // (issue 13, finding 10).
        let unreadable = (pipelines.unreadable().iter())
            .map(|u| (ValidatedPipeline::KIND, &u.name, u.generation, &u.reason))
            .chain(
                (pipelines.unreadable_logs().iter())
                    .map(|u| (ValidatedLogPipeline::KIND, &u.name, u.generation, &u.reason)),
            )
            .chain((pipelines.unreadable_traces().iter()).map(|u| {
                (
                    ValidatedTracePipeline::KIND,
                    &u.name,
                    u.generation,
                    &u.reason,
                )
            }));
        for (kind, name, generation, reason) in unreadable {
            let Some(current) = stored.get(&(kind.to_owned(), name.clone())) else {
                continue;
            };
            let status = unreadable_status(generation, reason, &current.status, now);
            if status != current.status {
                self.write_status(tenant, kind, name, status).await?;
            }
        }
        Ok(())
    }

    /// Recomputes the statuses of the tenant's readable pipelines of kind `P`.
    async fn write_kind<P: PipelineKind>(
        &self,
        tenant: &str,
        view: &TenantView,
        stored: &HashMap<(String, String), PipelineSummary>,
        pipelines: &[StoredPipeline<P>],
        now: i64,
    ) -> Result<(), StoreError> {
        for pipeline in pipelines {
            // Deleted since it was read: its delete has queued a reload.
            let Some(current) = stored.get(&(P::KIND.to_owned(), pipeline.name().to_owned()))
            else {
                continue;
            };
            let selector = pipeline.pipeline.cluster_selector();
            let selected: Vec<&ClusterObservation> = view
                .clusters
                .values()
                .filter(|(labels, _)| selector.matches(labels))
                .map(|(_, observation)| observation)
                .collect();
            let status = pipeline_status(
                &pipeline.pipeline,
                pipeline.generation,
                &selected,
                &current.status,
                now,
            );
            if status != current.status {
                self.write_status(tenant, P::KIND, pipeline.name(), status)
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes the status of the pipeline of `kind` named `name`; a pipeline deleted
    /// meanwhile is no error (its delete has queued a reload).
    async fn write_status(
        &self,
        tenant: &str,
        kind: &str,
        name: &str,
        status: kaas_pipeline::status::MetricPipelineStatus,
    ) -> Result<(), StoreError> {
        let written = if kind == ValidatedLogPipeline::KIND {
            (self.store)
                .set_pipeline_status_of::<ValidatedLogPipeline>(tenant, name, status)
                .await
        } else if kind == ValidatedTracePipeline::KIND {
            (self.store)
                .set_pipeline_status_of::<ValidatedTracePipeline>(tenant, name, status)
                .await
        } else {
            self.store.set_pipeline_status(tenant, name, status).await
        };
        match written {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// The view of `tenant` to update in place: `None` if the tenant is to be read afresh
/// anyway (then queued for that if it is not held) or has no pipelines to compute.
fn held_view<'a>(
    tenants: &'a mut HashMap<String, TenantView>,
    reload: &mut BTreeSet<String>,
    tenant: &str,
) -> Option<&'a mut TenantView> {
    if reload.contains(tenant) {
        return None;
    }
    let Some(view) = tenants.get_mut(tenant) else {
        reload.insert(tenant.to_owned());
        return None;
    };
    (!view.pipelines.is_empty()).then_some(view)
}

/// Where the pushes of `cluster` go, given the clusters whose gateway is in use.
fn placement_of(gateways: &BTreeSet<String>, cluster: &str) -> PushPlacement {
    if gateways.contains(cluster) {
        PushPlacement::Gateway
    } else {
        PushPlacement::ClusterInstance
    }
}

/// The observation of `cluster` for a tenant running `pipelines`, with its labels,
/// under its global id; `instances` are its pipelines over its live instances, and
/// `placement` where its pushes go (which shapes its cluster instance's configuration).
fn observe(
    pipelines: &Pipelines,
    cluster: Cluster,
    report: ClusterReport,
    (instances, placement): (Vec<PipelineInstances>, PushPlacement),
) -> (String, (BTreeMap<String, String>, ClusterObservation)) {
    // The configuration its agent is sent: without trace pipelines for one that does
    // not run them, which is what it then reports on.
    let runs_trace_pipelines = ConfigReport::runs_trace_pipelines(report.config.as_ref());
    let renders_template_instances =
        ConfigReport::renders_template_instances(report.config.as_ref());
    let desired = pipelines.render_for_agent(
        &cluster,
        (AgentRole::Cluster, placement),
        AgentFeatures {
            trace_pipelines: runs_trace_pipelines,
            template_instances: renders_template_instances,
        },
    );
    let observation = ClusterObservation {
        // Conditions are the tenant's to read: they name its clusters as it does.
        cluster: cluster.name,
        connected: report.connected,
        desired_hash: desired.hash_hex(),
        desired_bytes: desired.body.len(),
        runs_trace_pipelines,
        renders_template_instances,
        config: report.config,
        health: health_record(report.health),
        instances,
        placement,
    };
    (cluster.id, (cluster.labels, observation))
}

/// A stored health report as read by [`pipeline_status`]; one that does not parse
/// counts as none.
fn health_record(json: Option<serde_json::Value>) -> Option<HealthRecord> {
    json.and_then(|json| serde_json::from_value::<HealthRecord>(json).ok())
}
