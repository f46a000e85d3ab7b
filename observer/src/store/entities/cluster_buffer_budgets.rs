//! `cluster_buffer_budgets`: the disk budget set for a cluster's agent buffers, where
//! the provider set one (the others have the observer's default).

use sea_orm::entity::prelude::*;

/// A cluster's buffer budget, unique per (tenant, cluster).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_buffer_budgets")]
pub struct Model {
    /// The owning tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The cluster's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// Bytes the buffers of all pipelines on the cluster's agent may use together.
    pub max_bytes: i64,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
