//! `cluster_reports`: what each cluster's agent last reported (configuration and health).

use sea_orm::entity::prelude::*;

/// The latest reports of one cluster.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cluster_reports")]
pub struct Model {
    /// The cluster.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// The last `ConfigReport` as JSON.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub config_report: Option<Json>,
    /// The last health report as JSON.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub health: Option<Json>,
    /// When the health report was made, Unix milliseconds.
    pub health_at_ms: Option<i64>,
    /// When any report last changed, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
