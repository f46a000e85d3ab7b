//! The task that keeps pipeline statuses current: it holds, per tenant, what the store
//! says about each cluster (connection, config report, health, desired hash) and
//! updates it incrementally as reports arrive.
//!
//! # Work
//! The dispatcher sends [`StatusWork`] for every change: `Cluster(name)` for a report or
//! a cluster's registration, `Tenant(name)` for a pipeline or tenant change, `All` when
//! the change feed lagged (and once at start). The task collects work for a short
//! debounce, then:
//! * reads the named clusters with their reports in a few queries (`IN` lists), and
//!   replaces their observations in tenants it already holds;
//! * reads a tenant afresh (its pipelines from the shared cache, its clusters with their
//!   reports in one joined query) when its pipelines changed, when it is not held yet,
//!   or after `All`;
//! * recomputes the status of every pipeline of each tenant touched
//!   ([`pipeline_status`], a pure function) and writes those that differ from the stored
//!   status, read fresh in one query so another replica's writes are respected.
//!
//! A tenant without pipelines keeps no observations. The desired hash of a cluster is
//! rendered when its observation is read, not at every recomputation, from the
//! template its streams render from too ([`TenantConfigs`](super::pipelines::TenantConfigs)). Pipeline status
//! writes publish `Change::PipelineStatus`, which the dispatcher does not turn into
//! work, so a status write never causes another recomputation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::pipelines::{Pipelines, TenantPipelines};
use super::status::{ClusterObservation, HealthRecord, pipeline_status};
use crate::store::{Cluster, ClusterReport, ClusterState, Store, StoreError, now_ms};

/// What the status task should recompute.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusWork {
    /// Every pipeline of a tenant, re-reading the tenant.
    Tenant(String),
    /// The cluster's observation, then every pipeline of its tenant.
    Cluster(String),
    /// Everything, re-reading every tenant.
    All,
}

/// What the task holds about one tenant.
struct TenantView {
    pipelines: Pipelines,
    /// Clusters that are not deleted, by name, with their labels.
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
            }
        }
        let mut touched = BTreeSet::new();
        for (cluster, report) in self.store.clusters_with_reports(&names).await? {
            let tenant = cluster.tenant.clone();
            if reload.contains(&tenant) {
                continue;
            }
            let Some(view) = self.tenants.get_mut(&tenant) else {
                reload.insert(tenant);
                continue;
            };
            if view.pipelines.pipelines().is_empty() {
                continue;
            }
            if cluster.state == ClusterState::Deleted {
                view.clusters.remove(&cluster.name);
            } else {
                let observed = observe(&view.pipelines, cluster, report);
                view.clusters.insert(observed.1.cluster.clone(), observed);
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
        if !pipelines.pipelines().is_empty() {
            for (cluster, report) in self
                .store
                .list_clusters_with_reports(Some(tenant), None, None)
                .await?
            {
                if cluster.state == ClusterState::Deleted {
                    continue;
                }
                let observed = observe(&pipelines, cluster, report);
                clusters.insert(observed.1.cluster.clone(), observed);
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
        if view.pipelines.pipelines().is_empty() {
            return Ok(());
        }
        let stored: HashMap<String, _> = self
            .store
            .pipeline_summaries_of(tenant)
            .await?
            .into_iter()
            .map(|summary| (summary.name.clone(), summary))
            .collect();
        let now = now_ms();
        for pipeline in view.pipelines.pipelines() {
            // Deleted since it was read: its delete has queued a reload.
            let Some(current) = stored.get(pipeline.name()) else {
                continue;
            };
            let selector = &pipeline.pipeline.spec().cluster_selector;
            let selected: Vec<ClusterObservation> = view
                .clusters
                .values()
                .filter(|(labels, _)| selector.matches(labels))
                .map(|(_, observation)| observation.clone())
                .collect();
            let status = pipeline_status(
                &pipeline.pipeline,
                pipeline.generation,
                &selected,
                &current.status,
                now,
            );
            if status != current.status {
                match self
                    .store
                    .set_pipeline_status(tenant, pipeline.name(), status)
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }
}

/// The observation of `cluster` for a tenant running `pipelines`, with its labels.
fn observe(
    pipelines: &Pipelines,
    cluster: Cluster,
    report: ClusterReport,
) -> (BTreeMap<String, String>, ClusterObservation) {
    let desired_hash = pipelines.render(&cluster).hash_hex();
    let observation = ClusterObservation {
        cluster: cluster.name,
        connected: report.connected,
        desired_hash,
        config: report.config,
        health: report
            .health
            .and_then(|json| serde_json::from_value::<HealthRecord>(json).ok()),
    };
    (cluster.labels, observation)
}
