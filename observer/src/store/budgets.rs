//! Cluster buffer budgets: how many bytes the buffers of all pipelines on a cluster's
//! agent may use together, where the provider set it (table `cluster_buffer_budgets`,
//! created by [`super::migrations_budgets`]); other clusters have the observer's
//! default (`observer serve --cluster-buffer-budget`). Only admins set them
//! (`PUT /api/v1/clusters/{name}/buffer-budget`); changes are audited as kind
//! `cluster-buffer-budget`. The API checks pipelines against them when they are applied.
//!
//! Rows are keyed by tenant and the cluster's global id ([`super::Cluster::id`]; for a
//! cluster registered before names were per tenant that is its old name, which is what
//! rows written then hold). A cluster registered again under a name whose earlier
//! cluster was purged starts at the default: [`super::Store::create_cluster`] removes a
//! row left for its id.

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};

use super::entities::cluster_buffer_budgets::{self, Column, Entity};
use super::{Actor, Store, StoreError, find_cluster, not_found, now_ms, parse_state};

/// The audit trail's kind for buffer budgets.
const KIND: &str = "cluster-buffer-budget";

impl Store {
    /// The budgets set for the clusters of `tenant`, by global cluster id.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn cluster_buffer_budgets(
        &self,
        tenant: &str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        Entity::find()
            .filter(Column::Tenant.eq(tenant))
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| {
                let bytes = u64::try_from(row.max_bytes).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "buffer budget of cluster {}/{}: {} bytes",
                        row.tenant, row.cluster, row.max_bytes
                    ))
                })?;
                Ok((row.cluster, bytes))
            })
            .collect()
    }

    /// Sets the budget of `cluster` (the global id of a cluster of `tenant` that is not
    /// deleted) to `max_bytes`, or back to the default with `None`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_cluster_buffer_budget(
        &self,
        tenant: &str,
        cluster: &str,
        max_bytes: Option<u64>,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        require_live_cluster(transaction, tenant, cluster).await?;
        let key = (tenant.to_owned(), cluster.to_owned());
        let existing = Entity::find_by_id(key.clone()).one(transaction).await?;
        match (max_bytes, existing) {
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                Entity::delete_by_id(key).exec(transaction).await?;
                mutation
                    .audit(actor, "delete", KIND, Some(tenant), cluster)
                    .await?;
            }
            (Some(bytes), existing) => {
                let max_bytes = i64::try_from(bytes).map_err(|_| {
                    StoreError::Conflict(format!("a budget of {bytes} bytes is too large"))
                })?;
                let row = cluster_buffer_budgets::Model {
                    tenant: tenant.to_owned(),
                    cluster: cluster.to_owned(),
                    max_bytes,
                    updated_at_ms: now_ms(),
                };
                let action = if existing.is_some() {
                    let mut active = row.clone().into_active_model();
                    active.max_bytes = Set(row.max_bytes);
                    active.updated_at_ms = Set(row.updated_at_ms);
                    active.update(transaction).await?;
                    "update"
                } else {
                    Entity::insert(row.into_active_model())
                        .exec_without_returning(transaction)
                        .await?;
                    "create"
                };
                mutation
                    .audit(actor, action, KIND, Some(tenant), cluster)
                    .await?;
            }
        }
        mutation.commit(Vec::new()).await
    }
}

/// Refuses as not found a `cluster` (global id) that is not one of `tenant`'s or is
/// leaving: per-cluster settings are kept for live clusters only.
pub(super) async fn require_live_cluster(
    transaction: &sea_orm::DatabaseTransaction,
    tenant: &str,
    cluster: &str,
) -> Result<(), StoreError> {
    let live = find_cluster(transaction, cluster).await.is_ok_and(|row| {
        row.tenant == tenant && parse_state(&row.state).is_ok_and(|state| !state.is_leaving())
    });
    if live {
        Ok(())
    } else {
        Err(not_found(super::kinds::CLUSTER, cluster))
    }
}

/// Removes the budget row left for the cluster `id` of `tenant` (by a cluster of that
/// name that was deleted and purged): a cluster registered under the id starts at the
/// default. Called in the registering transaction.
pub(super) async fn forget_cluster_budget(
    db: &impl sea_orm::ConnectionTrait,
    tenant: &str,
    id: &str,
) -> Result<(), StoreError> {
    Entity::delete_by_id((tenant.to_owned(), id.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}
