//! `tenants`: one row per tenant; the name is the key.

use sea_orm::entity::prelude::*;

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    /// DNS-1123 label.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
