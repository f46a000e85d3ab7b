//! `cluster_tombstones`: earlier incarnations of clusters whose name was registered
//! again after a deletion (see [`crate::store::deletions`]).

use sea_orm::entity::prelude::*;

/// One replaced tombstone.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_tombstones")]
pub struct Model {
    /// The cluster's global id (shared by its incarnations).
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// The incarnation this tombstone was.
    #[sea_orm(primary_key, auto_increment = false)]
    pub incarnation: String,
    /// The owning tenant.
    pub tenant: String,
    /// The tenant's name for it.
    pub local_name: String,
    /// Its labels when it was deleted, a JSON object of strings.
    #[sea_orm(column_type = "JsonBinary")]
    pub labels: Json,
    /// When that incarnation was registered, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it was deleted.
    pub deleted_at_ms: Option<i64>,
    /// When the name was registered again.
    pub superseded_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
