//! Per-tenant quotas: how many clusters, pipelines of each kind and probe endpoints one
//! tenant may have (table `tenant_quotas`, created by [`super::migrations_quotas`]).
//!
//! Every quota has a named default ([`DEFAULT_MAX_CLUSTERS`],
//! [`DEFAULT_MAX_PIPELINES_PER_KIND`], [`DEFAULT_MAX_PROBE_ENDPOINTS`]); an admin
//! overrides any of them per tenant ([`Store::set_tenant_quotas`], `PUT
//! /api/v1/tenants/{name}/quotas`, `observer tenant quota`), stored as one row per
//! (tenant, quota) that goes with the tenant.
//!
//! A quota is checked in the transaction that creates the object, after the tenant's
//! row is locked (`SELECT … FOR NO KEY UPDATE` on PostgreSQL; SQLite has one writer),
//! so creations racing on several replicas cannot overshoot it. Only creations count:
//! replacing or updating an object never does, and lowering a quota below what a tenant
//! has removes nothing, it only refuses new objects. Tombstones (deleted clusters) do
//! not count. A creation over quota fails with [`StoreError::QuotaExceeded`] naming the
//! quota, for every creator (the API, the onboarding sources).

use std::collections::BTreeMap;

use sea_orm::sea_query::LockType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QuerySelect,
};

use super::entities::{clusters, pipelines, probe_endpoints, tenant_quotas, tenants};
use super::{Actor, Store, StoreError, kinds, not_found, now_ms};

/// Clusters per tenant: the fan-out benchmark ran 10,000 agents on one observer; one
/// tenant's default share is a tenth of that, far above a customer's usual fleet.
pub const DEFAULT_MAX_CLUSTERS: u64 = 1_000;
/// Pipelines of one kind per tenant: each runs on every cluster it selects, with its own
/// disk buffer and sender in the agent and its share of the rendered configuration, so
/// the number is bounded; ten times what Kyma allows (5), room for a pipeline per team.
pub const DEFAULT_MAX_PIPELINES_PER_KIND: u64 = 50;
/// Probe endpoints per tenant: each is probed every interval by the observer and becomes
/// five series, so the number is bounded, well above what a tenant's services need.
pub const DEFAULT_MAX_PROBE_ENDPOINTS: u64 = 200;
/// The largest limit an admin may set: a mistyped extra digit should not silently
/// remove the bound.
pub const MAX_QUOTA_LIMIT: u64 = 1_000_000;
/// The audit trail's kind for quota changes.
const KIND: &str = "tenant-quota";

/// A quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quota {
    /// Clusters that are not deleted.
    Clusters,
    /// Pipelines of a kind (`MetricPipeline`, `LogPipeline`, `TracePipeline`).
    Pipelines(&'static str),
    /// Probe endpoints.
    ProbeEndpoints,
}

/// Every quota, by name.
pub const QUOTAS: [Quota; 5] = [
    Quota::Clusters,
    Quota::Pipelines(kaas_pipeline::KIND),
    Quota::Pipelines(kaas_pipeline::LOG_KIND),
    Quota::Pipelines(kaas_pipeline::TRACE_KIND),
    Quota::ProbeEndpoints,
];

impl Quota {
    /// Its name: `clusters`, `pipelines/<kind>`, `probes`.
    pub fn name(self) -> String {
        match self {
            Self::Clusters => "clusters".to_owned(),
            Self::Pipelines(kind) => format!("pipelines/{kind}"),
            Self::ProbeEndpoints => "probes".to_owned(),
        }
    }

    /// The quota called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        QUOTAS.into_iter().find(|quota| quota.name() == name)
    }

    /// Its default limit.
    pub fn default_limit(self) -> u64 {
        match self {
            Self::Clusters => DEFAULT_MAX_CLUSTERS,
            Self::Pipelines(_) => DEFAULT_MAX_PIPELINES_PER_KIND,
            Self::ProbeEndpoints => DEFAULT_MAX_PROBE_ENDPOINTS,
        }
    }

    /// What it counts, for messages.
    fn counted(self) -> &'static str {
        match self {
            Self::Clusters => "clusters",
            Self::Pipelines(_) => "pipelines of that kind",
            Self::ProbeEndpoints => "probe endpoints",
        }
    }

    /// How many the tenant has now.
    async fn used(self, db: &impl ConnectionTrait, tenant: &str) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Clusters => {
                clusters::Entity::find()
                    .filter(clusters::Column::Tenant.eq(tenant))
                    .filter(super::not_tombstone())
                    .count(db)
                    .await?
            }
            Self::Pipelines(kind) => {
                pipelines::Entity::find()
                    .filter(pipelines::Column::Tenant.eq(tenant))
                    .filter(pipelines::Column::Kind.eq(kind))
                    .count(db)
                    .await?
            }
            Self::ProbeEndpoints => {
                probe_endpoints::Entity::find()
                    .filter(probe_endpoints::Column::Tenant.eq(tenant))
                    .count(db)
                    .await?
            }
        })
    }
}

/// A quota of one tenant as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaStatus {
    /// The quota's name.
    pub name: String,
    /// How many the tenant may have.
    pub limit: u64,
    /// How many it has.
    pub used: u64,
    /// The default limit.
    pub default: u64,
    /// Whether an admin set the limit for this tenant.
    pub overridden: bool,
}

/// The overrides of `tenant`, by quota name.
async fn overrides(
    db: &impl ConnectionTrait,
    tenant: &str,
) -> Result<BTreeMap<String, u64>, StoreError> {
    Ok(tenant_quotas::Entity::find()
        .filter(tenant_quotas::Column::Tenant.eq(tenant))
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.quota, u64::try_from(row.max_count).unwrap_or(0)))
        .collect())
}

/// Locks `tenant`'s row for the rest of the transaction, so quota checks of concurrent
/// creations in the tenant run one after the other; [`StoreError::NotFound`] if there
/// is no such tenant.
pub(super) async fn lock_tenant(db: &impl ConnectionTrait, tenant: &str) -> Result<(), StoreError> {
    tenants::Entity::find_by_id(tenant)
        .lock(LockType::NoKeyUpdate)
        .one(db)
        .await?
        .map(drop)
        .ok_or_else(|| not_found(kinds::TENANT, tenant))
}

/// Refuses one more object under `quota` when `tenant` is at its limit. Call after
/// [`lock_tenant`] in the creating transaction.
pub(super) async fn enforce(
    db: &impl ConnectionTrait,
    tenant: &str,
    quota: Quota,
) -> Result<(), StoreError> {
    let name = quota.name();
    let limit = tenant_quotas::Entity::find_by_id((tenant.to_owned(), name.clone()))
        .one(db)
        .await?
        .map_or(quota.default_limit(), |row| {
            u64::try_from(row.max_count).unwrap_or(0)
        });
    let used = quota.used(db, tenant).await?;
    if used >= limit {
        return Err(StoreError::QuotaExceeded {
            tenant: tenant.to_owned(),
            quota: name,
            limit,
            counted: quota.counted(),
        });
    }
    Ok(())
}

impl Store {
    /// Every quota of `tenant`: limit, use, default and whether it is overridden.
    pub async fn tenant_quotas(&self, tenant: &str) -> Result<Vec<QuotaStatus>, StoreError> {
        let db = self.reader();
        if tenants::Entity::find_by_id(tenant).one(db).await?.is_none() {
            return Err(not_found(kinds::TENANT, tenant));
        }
        let overrides = overrides(db, tenant).await?;
        let mut statuses = Vec::with_capacity(QUOTAS.len());
        for quota in QUOTAS {
            let name = quota.name();
            let default = quota.default_limit();
            let limit = overrides.get(&name).copied();
            statuses.push(QuotaStatus {
                used: quota.used(db, tenant).await?,
                limit: limit.unwrap_or(default),
                default,
                overridden: limit.is_some(),
                name,
            });
        }
        Ok(statuses)
    }

    /// Replaces `tenant`'s overrides with `limits` (quota name → limit); a quota not
    /// named returns to its default. Unknown names and limits above
    /// [`MAX_QUOTA_LIMIT`] are a [`StoreError::Conflict`] (the API checks them first).
    /// Audited as kind `tenant-quota`.
    pub async fn set_tenant_quotas(
        &self,
        tenant: &str,
        limits: &BTreeMap<String, u64>,
        actor: &Actor,
    ) -> Result<Vec<QuotaStatus>, StoreError> {
        for (name, limit) in limits {
            if Quota::from_name(name).is_none() {
                return Err(StoreError::Conflict(format!("no quota {name:?}")));
            }
            if *limit > MAX_QUOTA_LIMIT {
                return Err(StoreError::Conflict(format!(
                    "quota {name:?}: at most {MAX_QUOTA_LIMIT}"
                )));
            }
        }
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        lock_tenant(transaction, tenant).await?;
        if overrides(transaction, tenant).await? != *limits {
            tenant_quotas::Entity::delete_many()
                .filter(tenant_quotas::Column::Tenant.eq(tenant))
                .exec(transaction)
                .await?;
            let now = now_ms();
            for (name, limit) in limits {
                let row = tenant_quotas::Model {
                    tenant: tenant.to_owned(),
                    quota: name.clone(),
                    max_count: i64::try_from(*limit).unwrap_or(i64::MAX),
                    updated_at_ms: now,
                };
                tenant_quotas::Entity::insert(row.into_active_model())
                    .exec_without_returning(transaction)
                    .await?;
            }
            mutation
                .audit(actor, "update", KIND, Some(tenant), tenant)
                .await?;
        }
        mutation.commit(Vec::new()).await?;
        self.tenant_quotas(tenant).await
    }
}
