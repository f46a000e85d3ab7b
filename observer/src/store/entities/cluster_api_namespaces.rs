//! `cluster_api_namespaces`: which tenant the `Cluster` objects of a Cluster API
//! namespace belong to, as an administrator said.

use sea_orm::entity::prelude::*;

/// One mapped namespace.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_api_namespaces")]
pub struct Model {
    /// The namespace in the management cluster.
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    /// The tenant its clusters are registered for.
    pub tenant: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
