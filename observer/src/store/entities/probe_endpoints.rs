//! `probe_endpoints`: the endpoints each tenant asked the observer to probe.

use sea_orm::entity::prelude::*;

/// A probe endpoint, unique per (tenant, name).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "probe_endpoints")]
pub struct Model {
    /// The owning tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The endpoint's name, a DNS-1123 label.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The cluster it belongs to, if any.
    pub cluster: Option<String>,
    /// The module (`http`, `tcp`, `tls`, `dns`), for queries; `spec` holds its settings.
    pub module: String,
    /// The `ProbeModule` as JSON (`{"http": {...}}`).
    #[sea_orm(column_type = "JsonBinary")]
    pub spec: Json,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
