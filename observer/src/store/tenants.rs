//! Tenants: creating, listing and deleting them (table `tenants`). Deleting one removes
//! its API tokens, cluster tombstones, quotas and budgets with it, and is refused while
//! it has clusters that are not tombstones, or pipelines.

use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};

use super::entities::{
    self, api_tokens, cluster_reports, clusters, join_tokens, pipelines, tenants,
};
use super::{
    Actor, Change, Store, StoreError, already_exists, insert_error, kinds, not_found,
    not_tombstone, now_ms,
};

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// DNS-1123 label.
    pub name: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

impl Store {
    /// Creates a tenant.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        if tenants::Entity::find_by_id(name)
            .one(transaction)
            .await?
            .is_some()
        {
            return Err(already_exists(kinds::TENANT, name));
        }
        let now = now_ms();
        let row = tenants::ActiveModel {
            name: Set(name.to_owned()),
            created_at_ms: Set(now),
        };
        tenants::Entity::insert(row)
            .exec_without_returning(transaction)
            .await
            .map_err(|e| insert_error(e, kinds::TENANT, name))?;
        mutation
            .audit(actor, "create", kinds::TENANT, Some(name), name)
            .await?;
        mutation
            .commit(vec![Change::Tenant(name.to_owned())])
            .await?;
        Ok(Tenant {
            name: name.to_owned(),
            created_at_ms: now,
        })
    }

    /// One tenant.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(tenants::Entity::find_by_id(name)
            .one(self.reader())
            .await?
            .map(tenant_from_row))
    }

    /// Every tenant, by name.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Ok(tenants::Entity::find()
            .order_by_asc(tenants::Column::Name)
            .all(self.reader())
            .await?
            .into_iter()
            .map(tenant_from_row)
            .collect())
    }

    /// Deletes a tenant with its API tokens and cluster tombstones. Refused
    /// ([`StoreError::Conflict`]) while it has clusters that are not deleted, or
    /// pipelines.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_tenant(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        if tenants::Entity::find_by_id(name)
            .one(transaction)
            .await?
            .is_none()
        {
            return Err(not_found(kinds::TENANT, name));
        }
        let live_clusters = clusters::Entity::find()
            .filter(clusters::Column::Tenant.eq(name))
            .filter(not_tombstone())
            .count(transaction)
            .await?;
        let pipelines = pipelines::Entity::find()
            .filter(pipelines::Column::Tenant.eq(name))
            .count(transaction)
            .await?;
        if live_clusters > 0 || pipelines > 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {name:?} still has {live_clusters} cluster(s) and {pipelines} \
                 pipeline(s); delete them first"
            )));
        }
        let tenant_clusters = Query::select()
            .column(clusters::Column::Name)
            .from(clusters::Entity)
            .and_where(clusters::Column::Tenant.eq(name))
            .to_owned();
        join_tokens::Entity::delete_many()
            .filter(join_tokens::Column::Cluster.in_subquery(tenant_clusters.clone()))
            .exec(transaction)
            .await?;
        cluster_reports::Entity::delete_many()
            .filter(cluster_reports::Column::Cluster.in_subquery(tenant_clusters))
            .exec(transaction)
            .await?;
        clusters::Entity::delete_many()
            .filter(clusters::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        api_tokens::Entity::delete_many()
            .filter(api_tokens::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        entities::tenant_quotas::Entity::delete_many()
            .filter(entities::tenant_quotas::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        entities::cluster_buffer_budgets::Entity::delete_many()
            .filter(entities::cluster_buffer_budgets::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        // Instances have pipelines, so none is left here; templates have no foreign key.
        entities::pipeline_instances::Entity::delete_many()
            .filter(entities::pipeline_instances::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        entities::pipeline_templates::Entity::delete_many()
            .filter(entities::pipeline_templates::Column::Tenant.eq(name))
            .exec(transaction)
            .await?;
        tenants::Entity::delete_by_id(name)
            .exec(transaction)
            .await?;
        mutation
            .audit(actor, "delete", kinds::TENANT, Some(name), name)
            .await?;
        mutation.commit(vec![Change::Tenant(name.to_owned())]).await
    }
}

pub(super) fn tenant_from_row(row: tenants::Model) -> Tenant {
    Tenant {
        name: row.name,
        created_at_ms: row.created_at_ms,
    }
}
