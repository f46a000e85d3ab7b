//! The Cluster API source's periodic relist: a complete list of `Cluster`s compared
//! with the clusters registered from it (see "Deletion only on positive evidence" in
//! [the module note](super)). A registered cluster whose object is gone becomes `lost`,
//! or `deleted` if its deletion was seen ([`when_gone`]); lost ones pass the
//! mass-deletion guard first. A failed list, or an empty one while the source manages
//! live clusters, changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::Api;
use kube::api::ListParams;
use kube::core::DynamicObject;

use super::decide::{
    NAMESPACE_LABEL, cluster_api_resource, gone_clusters, registered_from, when_gone,
};
use super::{CapiError, Context};
use crate::onboarding::{ClusterAction, Source, hold_deletions};
use crate::store::{Cluster, ClusterState, HeldDeletion, now_ms};

/// Relists every `relist_interval`, the first time at once; each outcome is counted.
pub(super) async fn relist_every(context: Arc<Context>) {
    let mut ticks = tokio::time::interval(context.settings.relist_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match relist(&context).await {
            Ok(_) => context.metrics.sync_succeeded(Source::ClusterApi),
            Err(error) => context
                .metrics
                .sync_failed(Source::ClusterApi, error.failure(), &error),
        }
    }
}

/// What one relist did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelistReport {
    /// Clusters moved to `lost` (global ids).
    pub lost: Vec<String>,
    /// Clusters tombstoned: their deletion was seen, their object is gone.
    pub deleted: Vec<String>,
    /// Changes the mass-deletion guard holds (global ids).
    pub held: Vec<String>,
}

/// One change a relist wants to make.
struct Gone {
    id: String,
    tenant: String,
    to: ClusterState,
}

/// Lists every `Cluster` and compares the list with the registered clusters (see the
/// module note): a registered cluster whose object is gone becomes `lost`, or
/// `deleted` if its deletion was seen ([`when_gone`]), through the
/// mass-deletion guard. An empty list while this source manages live clusters is
/// refused ([`CapiError::EmptyList`]) and changes nothing.
pub async fn relist(context: &Context) -> Result<RelistReport, CapiError> {
    let listed_at = now_ms();
    let api: Api<DynamicObject> = Api::all_with(context.client.clone(), &cluster_api_resource());
    let objects = api.list(&ListParams::default()).await?;
    let present: BTreeSet<(String, String)> = objects
        .items
        .iter()
        .filter_map(|o| Some((o.metadata.namespace.clone()?, o.metadata.name.clone()?)))
        .collect();
    let stored = context.store.list_clusters(None).await?;
    let mapped: BTreeMap<String, String> = context
        .store
        .list_cluster_api_namespaces()
        .await?
        .into_iter()
        .map(|m| (m.namespace, m.tenant))
        .collect();
    let fleet = managed_live(&stored, &mapped);
    if present.is_empty() && fleet > 0 {
        return Err(CapiError::EmptyList { managed: fleet });
    }
    let mut changes = Vec::new();
    for gone in gone_clusters(&stored, &present, &mapped, listed_at) {
        // The controller may have moved it since the store was read.
        let Some(current) = context.store.get_cluster(&gone.id).await? else {
            continue;
        };
        if let Some(to) = when_gone(current.state) {
            changes.push(Gone {
                id: current.id,
                tenant: current.tenant,
                to,
            });
        }
    }
    // A tombstone of a cluster whose deletion was seen is not weighed: it left the
    // live fleet when its deletion began. Lost clusters are.
    let (seen_deleted, lost): (Vec<Gone>, Vec<Gone>) = changes
        .into_iter()
        .partition(|change| change.to.is_tombstone());
    let source = Source::ClusterApi;
    let confirmed = context.store.confirmed_deletions(source.as_str()).await?;
    let verdict = context
        .settings
        .guard
        .split(lost, fleet, &confirmed, |change| change.id.as_str());
    let mut report = RelistReport::default();
    for change in seen_deleted.into_iter().chain(verdict.proceed) {
        apply_gone(context, change, &mut report).await?;
    }
    let held: Vec<HeldDeletion> = verdict
        .held
        .into_iter()
        .map(|change| HeldDeletion {
            reason: gone_reason(change.to).to_owned(),
            cluster: change.id,
            tenant: change.tenant,
            to_state: change.to,
        })
        .collect();
    report.held = hold_deletions(&context.store, &context.metrics, source, &held).await?;
    Ok(report)
}

/// Live clusters this source manages: the fleet the mass-deletion guard measures.
fn managed_live(stored: &[Cluster], mapped: &BTreeMap<String, String>) -> usize {
    stored
        .iter()
        .filter(|c| !c.state.is_tombstone())
        .filter(|c| {
            let namespace = c.labels.get(NAMESPACE_LABEL).cloned().unwrap_or_default();
            registered_from(c, &namespace, mapped.get(&namespace).map(String::as_str))
        })
        .count()
}

fn gone_reason(to: ClusterState) -> &'static str {
    if to.is_tombstone() {
        "its deletion was seen and its Cluster object is gone (found by the relist)"
    } else {
        "its Cluster object, which carried the observer's finalizer, is gone without a \
         deletion the observer saw (found by the relist)"
    }
}

async fn apply_gone(
    context: &Context,
    change: Gone,
    report: &mut RelistReport,
) -> Result<(), CapiError> {
    let actor = Source::ClusterApi.actor();
    let reason = gone_reason(change.to);
    if change.to.is_tombstone() {
        context.store.delete_cluster(&change.id, &actor).await?;
        context.metrics.cluster_changed(
            Source::ClusterApi,
            ClusterAction::Deleted,
            &change.id,
            &change.tenant,
            &format!("{reason}; tombstoned"),
        );
        report.deleted.push(change.id);
    } else {
        context
            .store
            .set_cluster_state(&change.id, change.to, now_ms(), &actor)
            .await?;
        context.metrics.cluster_changed(
            Source::ClusterApi,
            ClusterAction::Lost,
            &change.id,
            &change.tenant,
            &format!("{reason}; lost (alerts) until it is listed again or deleted"),
        );
        report.lost.push(change.id);
    }
    Ok(())
}
