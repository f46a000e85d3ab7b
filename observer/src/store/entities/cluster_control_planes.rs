//! `cluster_control_planes`: which control-plane components the central pipeline
//! scrapes on a cluster, where onboarding set it (the others take the defaults).

use sea_orm::entity::prelude::*;

/// A cluster's control-plane setting, unique per (tenant, cluster).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_control_planes")]
pub struct Model {
    /// The owning tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The cluster's global id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// The setting as written (JSON of `ControlPlaneScrape`), validated before storing.
    pub setting: String,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
