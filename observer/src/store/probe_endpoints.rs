//! Probe endpoints: what each tenant asked the observer to probe besides its clusters'
//! API servers (table `probe_endpoints`, created by the migration `create_probe_endpoints`).
//!
//! A row holds one validated [`ProbeTarget`] without its tenant (the key's) and cluster
//! (a column): the module as JSON. Rows are unique per (tenant, name), go with their
//! tenant (`ON DELETE CASCADE`), and are audited as kind `probe-endpoint`. A tenant has
//! at most its quota `probes` ([`super::quotas`]). A create, change or delete publishes
//! [`Change::ProbeEndpoint`] (an identical apply publishes nothing), so the prober
//! (`probes::follow_store`) picks it up at once, on every replica; deleting a tenant
//! removes its endpoints with [`Change::Tenant`].

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};

use super::entities::probe_endpoints::{self, Column, Entity};
use super::quotas::Quota;
use super::{
    Actor, Change, ClusterState, Store, StoreError, insert_error, not_found, now_ms, parse_state,
};
use crate::probe_target::{ProbeModule, ProbeOrigin, ProbeTarget, ValidatedProbeTarget};

/// The audit trail's kind for probe endpoints.
const KIND: &str = "probe-endpoint";

/// A stored probe endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProbeEndpoint {
    /// The target, tenant and cluster included.
    pub target: ProbeTarget,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: i64,
}

impl Store {
    /// Creates or replaces the endpoint `target.name` of `target.tenant`. The tenant
    /// must exist, and a named cluster must be one of the tenant's that is not deleted
    /// ([`StoreError::NotFound`] otherwise); a new endpoint beyond the tenant's quota is
    /// [`StoreError::QuotaExceeded`]. An identical apply writes nothing. Returns the stored
    /// endpoint and whether it was created.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_probe_endpoint(
        &self,
        target: ValidatedProbeTarget,
        actor: &Actor,
    ) -> Result<(StoredProbeEndpoint, bool), StoreError> {
        let target = target.into_target();
        let tenant = target.tenant.clone();
        let name = target.name.clone();
        let spec = serde_json::to_value(&target.module)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a probe module: {e}")))?;
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        super::quotas::lock_tenant(transaction, &tenant).await?;
        // The endpoint names its tenant's cluster by name (names are per tenant).
        if let Some(cluster) = &target.cluster {
            let live = super::find_cluster_named(transaction, &tenant, cluster)
                .await?
                .is_some_and(|row| parse_state(&row.state).is_ok_and(ClusterState::is_probed));
            if !live {
                return Err(not_found(super::kinds::CLUSTER, cluster));
            }
        }
        let existing = Entity::find_by_id((tenant.clone(), name.clone()))
            .one(transaction)
            .await?;
        let now = now_ms();
        let (row, created) = match existing {
            Some(row) if row.cluster == target.cluster && row.spec == spec => {
                return Ok((stored(row)?, false));
            }
            Some(row) => {
                let mut active = row.into_active_model();
                active.cluster = Set(target.cluster.clone());
                active.module = Set(target.module.kind().to_owned());
                active.spec = Set(spec);
                active.updated_at_ms = Set(now);
                let row = active.update(transaction).await?;
                mutation
                    .audit(actor, "update", KIND, Some(&tenant), &name)
                    .await?;
                (row, false)
            }
            None => {
                super::quotas::enforce(transaction, &tenant, Quota::ProbeEndpoints).await?;
                let row = probe_endpoints::Model {
                    tenant: tenant.clone(),
                    name: name.clone(),
                    cluster: target.cluster.clone(),
                    module: target.module.kind().to_owned(),
                    spec,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(transaction)
                    .await
                    .map_err(|e| insert_error(e, KIND, &format!("{tenant}/{name}")))?;
                mutation
                    .audit(actor, "create", KIND, Some(&tenant), &name)
                    .await?;
                (row, true)
            }
        };
        mutation.commit(vec![change(&tenant, &name)]).await?;
        Ok((stored(row)?, created))
    }

    /// One endpoint of a tenant.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_probe_endpoint(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredProbeEndpoint>, StoreError> {
        Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(self.reader())
            .await?
            .map(stored)
            .transpose()
    }

    /// The endpoints of one tenant, or of all for `None`, by tenant and name.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_probe_endpoints(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredProbeEndpoint>, StoreError> {
        let mut query = Entity::find()
            .order_by_asc(Column::Tenant)
            .order_by_asc(Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(Column::Tenant.eq(tenant));
        }
        query
            .all(self.reader())
            .await?
            .into_iter()
            .map(stored)
            .collect()
    }

    /// Deletes an endpoint; its probes stop once the prober sees the change.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_probe_endpoint(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let deleted = Entity::delete_by_id((tenant.to_owned(), name.to_owned()))
            .exec(transaction)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(not_found(KIND, &format!("{tenant}/{name}")));
        }
        mutation
            .audit(actor, "delete", KIND, Some(tenant), name)
            .await?;
        mutation.commit(vec![change(tenant, name)]).await
    }
}

fn change(tenant: &str, name: &str) -> Change {
    Change::ProbeEndpoint {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
    }
}

/// A row as a validated target; a row that no longer validates is corrupt.
fn stored(row: probe_endpoints::Model) -> Result<StoredProbeEndpoint, StoreError> {
    let corrupt = |reason: String| {
        StoreError::Corrupt(format!(
            "probe endpoint {}/{}: {reason}",
            row.tenant, row.name
        ))
    };
    let module: ProbeModule =
        serde_json::from_value(row.spec.clone()).map_err(|e| corrupt(e.to_string()))?;
    let target = ProbeTarget {
        name: row.name.clone(),
        tenant: row.tenant.clone(),
        cluster: row.cluster.clone(),
        origin: ProbeOrigin::Tenant,
        module,
    }
    .validate()
    .map_err(|e| corrupt(e.to_string()))?
    .into_target();
    Ok(StoredProbeEndpoint {
        target,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    })
}
