//! What the tenancy boundary keeps in the store: the administrator's mapping of Cluster
//! API namespaces to tenants (table `cluster_api_namespaces`, created by
//! [`super::migrations_tenancy`]), and the audit trail read in pages.
//!
//! # Namespace mapping
//! The Cluster API source registers a `Cluster` only for the tenant its namespace is
//! mapped to here, and adopts a stored cluster only if its tenant is that tenant (issue
//! 13, finding 1: the tenant used to come from a label anyone who can write the `Cluster`
//! could set). Only an administrator maps (the API refuses tenant tokens); each change is
//! audited as kind [`KIND_NAMESPACE`] with actions `map` and `unmap`. A namespace maps to
//! one tenant: mapping it to another is refused until it is unmapped, so clusters
//! registered for one tenant are never silently handed to another. A tenant's mappings
//! go with it (`ON DELETE CASCADE`).
//!
//! # Audit pages
//! [`Store::audit_page`] reads the trail newest first, filtered by tenant, actor and
//! time, at most [`MAX_AUDIT_PAGE`] entries at a time; a page continues below the id the
//! previous one ended with, so entries written meanwhile never shift a page.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::{audit_log, cluster_api_namespaces, tenants};
use super::{Actor, AuditEntry, Store, StoreError, insert_error, kinds, not_found, now_ms};

/// The audit trail's kind for namespace mappings.
pub const KIND_NAMESPACE: &str = "cluster-api-namespace";

/// Most audit entries one page may hold: read in one indexed query and answered in
/// well under a second, and small enough that paging is not a way to make the observer
/// build a large answer.
pub const MAX_AUDIT_PAGE: u64 = 1000;

/// A Cluster API namespace and the tenant its `Cluster`s belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceMapping {
    /// The namespace in the management cluster.
    pub namespace: String,
    /// The tenant.
    pub tenant: String,
    /// When it was mapped, Unix milliseconds.
    pub created_at_ms: i64,
}

/// Which audit entries to read ([`Store::audit_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries about this tenant.
    pub tenant: Option<String>,
    /// Only entries by this actor (`admin`, `tenant:shop`, `agent:c1`, ...).
    pub actor: Option<String>,
    /// Only entries at or after this time, Unix milliseconds.
    pub since_ms: Option<i64>,
    /// Only entries before this time, Unix milliseconds.
    pub until_ms: Option<i64>,
    /// Only entries older than this id: where the previous page ended.
    pub before_id: Option<i64>,
    /// At most this many entries; capped at [`MAX_AUDIT_PAGE`].
    pub limit: u64,
}

/// An audit entry with its id, which orders the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing with time.
    pub id: i64,
    /// The entry.
    pub entry: AuditEntry,
}

impl Store {
    /// Maps a Cluster API namespace to an existing tenant. Mapping it again to the same
    /// tenant changes nothing; to another tenant is a [`StoreError::Conflict`] (unmap it
    /// first). Returns the mapping and whether it is new.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn map_cluster_api_namespace(
        &self,
        namespace: &str,
        tenant: &str,
        actor: &Actor,
    ) -> Result<(NamespaceMapping, bool), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        if tenants::Entity::find_by_id(tenant)
            .one(transaction)
            .await?
            .is_none()
        {
            return Err(not_found(kinds::TENANT, tenant));
        }
        if let Some(row) = cluster_api_namespaces::Entity::find_by_id(namespace)
            .one(transaction)
            .await?
        {
            if row.tenant == tenant {
                return Ok((mapping_from_row(row), false));
            }
            return Err(StoreError::Conflict(format!(
                "namespace {namespace:?} is mapped to tenant {:?}; unmap it first",
                row.tenant
            )));
        }
        let row = cluster_api_namespaces::Model {
            namespace: namespace.to_owned(),
            tenant: tenant.to_owned(),
            created_at_ms: now_ms(),
        };
        cluster_api_namespaces::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(transaction)
            .await
            .map_err(|e| insert_error(e, KIND_NAMESPACE, namespace))?;
        mutation
            .audit(actor, "map", KIND_NAMESPACE, Some(tenant), namespace)
            .await?;
        mutation.commit(Vec::new()).await?;
        Ok((mapping_from_row(row), true))
    }

    /// Removes a namespace's mapping: the Cluster API source registers nothing more
    /// from it and leaves the clusters it registered from it alone.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn unmap_cluster_api_namespace(
        &self,
        namespace: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = cluster_api_namespaces::Entity::find_by_id(namespace)
            .one(transaction)
            .await?
            .ok_or_else(|| not_found(KIND_NAMESPACE, namespace))?;
        let tenant = row.tenant.clone();
        row.into_active_model().delete(transaction).await?;
        mutation
            .audit(actor, "unmap", KIND_NAMESPACE, Some(&tenant), namespace)
            .await?;
        mutation.commit(Vec::new()).await
    }

    /// The tenant a namespace is mapped to.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn cluster_api_namespace_tenant(
        &self,
        namespace: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(cluster_api_namespaces::Entity::find_by_id(namespace)
            .one(self.reader())
            .await?
            .map(|row| row.tenant))
    }

    /// Every mapping, by namespace.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_cluster_api_namespaces(&self) -> Result<Vec<NamespaceMapping>, StoreError> {
        Ok(cluster_api_namespaces::Entity::find()
            .order_by_asc(cluster_api_namespaces::Column::Namespace)
            .all(self.reader())
            .await?
            .into_iter()
            .map(mapping_from_row)
            .collect())
    }

    /// One page of the audit trail, newest first (see the module note).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn audit_page(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut select = audit_log::Entity::find();
        if let Some(tenant) = &query.tenant {
            select = select.filter(audit_log::Column::Tenant.eq(tenant.as_str()));
        }
        if let Some(actor) = &query.actor {
            select = select.filter(audit_log::Column::Actor.eq(actor.as_str()));
        }
        if let Some(since) = query.since_ms {
            select = select.filter(audit_log::Column::AtMs.gte(since));
        }
        if let Some(until) = query.until_ms {
            select = select.filter(audit_log::Column::AtMs.lt(until));
        }
        if let Some(before) = query.before_id {
            select = select.filter(audit_log::Column::Id.lt(before));
        }
        Ok(select
            .order_by_desc(audit_log::Column::Id)
            .limit(query.limit.min(MAX_AUDIT_PAGE))
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| AuditRecord {
                id: row.id,
                entry: AuditEntry {
                    at_ms: row.at_ms,
                    actor: row.actor,
                    action: row.action,
                    kind: row.kind,
                    name: row.name,
                    tenant: row.tenant,
                },
            })
            .collect())
    }
}

fn mapping_from_row(row: cluster_api_namespaces::Model) -> NamespaceMapping {
    NamespaceMapping {
        namespace: row.namespace,
        tenant: row.tenant,
        created_at_ms: row.created_at_ms,
    }
}
