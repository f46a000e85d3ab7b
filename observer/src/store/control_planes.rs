//! Cluster control-plane settings: which control-plane components the central pipeline
//! scrapes on a cluster, and how ([`crate::control_plane`]), where onboarding
//! set one (table `cluster_control_planes`, created by the `create_cluster_control_planes`
//! migration); other clusters take the defaults. Only administrators set them
//! (`PUT /api/v1/clusters/{name}/control-plane`); changes are audited as kind
//! `cluster-control-plane`.
//!
//! Rows hold the setting as written, validated before it is stored; a row that does
//! not validate any more (written by a newer observer, or edited by hand) is
//! [`StoreError::Corrupt`], never silently the default. Rows are keyed by tenant and the
//! cluster's global id. A change is published as [`Change::Tenant`] of the cluster's
//! tenant: the central pipeline is rendered from the tenant's cached configurations
//! ([`crate::rendering::tenant_cache`]), which that change invalidates before the
//! tenant's agent streams wake and render again.

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};

use super::entities::cluster_control_planes::{self, Column, Entity};
use super::{Actor, Change, Store, StoreError, now_ms};
use crate::control_plane::{ControlPlaneScrape, ValidatedControlPlane};

/// The audit trail's kind for control-plane settings.
const KIND: &str = "cluster-control-plane";

/// Parses and validates a stored setting.
fn from_row(row: &cluster_control_planes::Model) -> Result<ValidatedControlPlane, StoreError> {
    let corrupt = |why: String| {
        StoreError::Corrupt(format!(
            "control-plane setting of cluster {}/{}: {why}",
            row.tenant, row.cluster
        ))
    };
    serde_json::from_str::<ControlPlaneScrape>(&row.setting)
        .map_err(|e| corrupt(e.to_string()))?
        .validate()
        .map_err(|e| corrupt(e.to_string()))
}

impl Store {
    /// The settings of the clusters (of `tenant`, or of every tenant with `None`) that
    /// have one, by global cluster id.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn cluster_control_planes(
        &self,
        tenant: Option<&str>,
    ) -> Result<BTreeMap<String, ValidatedControlPlane>, StoreError> {
        let mut query = Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(Column::Tenant.eq(tenant));
        }
        query
            .all(self.reader())
            .await?
            .iter()
            .map(|row| Ok((row.cluster.clone(), from_row(row)?)))
            .collect()
    }

    /// Sets the control-plane setting of `cluster` (the global id of a cluster of
    /// `tenant` that is not leaving), or back to the defaults with `None`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_cluster_control_plane(
        &self,
        tenant: &str,
        cluster: &str,
        setting: Option<&ValidatedControlPlane>,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        super::budgets::require_live_cluster(transaction, tenant, cluster).await?;
        let key = (tenant.to_owned(), cluster.to_owned());
        let existing = Entity::find_by_id(key.clone()).one(transaction).await?;
        let action = match (setting, existing) {
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                Entity::delete_by_id(key).exec(transaction).await?;
                "delete"
            }
            (Some(setting), existing) => {
                let text = serde_json::to_string(setting.spec())
                    .map_err(|e| StoreError::Corrupt(format!("control-plane setting: {e}")))?;
                let row = cluster_control_planes::Model {
                    tenant: tenant.to_owned(),
                    cluster: cluster.to_owned(),
                    setting: text,
                    updated_at_ms: now_ms(),
                };
                if existing.is_some() {
                    let mut active = row.clone().into_active_model();
                    active.setting = Set(row.setting);
                    active.updated_at_ms = Set(row.updated_at_ms);
                    active.update(transaction).await?;
                    "update"
                } else {
                    Entity::insert(row.into_active_model())
                        .exec_without_returning(transaction)
                        .await?;
                    "create"
                }
            }
        };
        mutation
            .audit(actor, action, KIND, Some(tenant), cluster)
            .await?;
        mutation
            .commit(vec![Change::Tenant(tenant.to_owned())])
            .await
    }
}

/// Removes the setting left for the cluster `id` of `tenant` (by a cluster of that name
/// that was deleted and purged): a cluster registered under the id starts with the
/// defaults. Called in the registering transaction.
pub(super) async fn forget_cluster_control_plane(
    db: &impl sea_orm::ConnectionTrait,
    tenant: &str,
    id: &str,
) -> Result<(), StoreError> {
    Entity::delete_by_id((tenant.to_owned(), id.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}
