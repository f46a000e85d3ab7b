//! `GET /api/v1/status`: counts of what the caller may see: tenants, clusters by state,
//! pipelines and connected agents, and the deletions the mass-deletion guard holds for
//! an administrator's confirmation.

use axum::Json;
use axum::extract::State;

use super::auth::Caller;
use super::model::{ClusterCounts, StatusView};
use super::{ApiError, ApiState};
use crate::store::{ClusterState, Principal};

/// `GET /api/v1/status`.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<StatusView>, ApiError> {
    let scope = match &caller.principal {
        Principal::Admin => None,
        Principal::Tenant(own) => Some(own.as_str()),
    };
    let tenants = match scope {
        None => state.store.list_tenants().await?.len(),
        Some(_) => 1,
    };
    let mut clusters = ClusterCounts::default();
    let mut connected_agents = 0;
    for cluster in state.store.list_clusters(scope).await? {
        clusters.total += 1;
        *match cluster.state {
            ClusterState::Provisioning => &mut clusters.provisioning,
            ClusterState::Active => &mut clusters.active,
            ClusterState::Silent => &mut clusters.silent,
            ClusterState::Lost => &mut clusters.lost,
            ClusterState::Deleting => &mut clusters.deleting,
            ClusterState::Deleted => &mut clusters.deleted,
        } += 1;
        if cluster.connected {
            connected_agents += 1;
        }
    }
    // Counted, not read: a pipeline whose stored document cannot be opened must not
    // break the status (issue 13, finding 10).
    let pipelines = state.store.count_pipelines(scope).await?;
    let pending_deletions = state
        .store
        .pending_deletions(scope)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(StatusView {
        tenants: tenants as u64,
        clusters,
        pipelines,
        connected_agents,
        pending_deletions,
    }))
}
