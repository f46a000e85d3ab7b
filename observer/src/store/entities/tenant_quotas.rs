//! `tenant_quotas`: the quota overrides an admin set per tenant.

use sea_orm::entity::prelude::*;

/// One override, unique per (tenant, quota).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_quotas")]
pub struct Model {
    /// The tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The quota's name (`clusters`, `probes`, `pipelines/<kind>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub quota: String,
    /// How many the tenant may have.
    pub max_count: i64,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
