//! `pipeline_templates`: every generation of every pipeline template, a tenant's own or
//! the provider's (tenant `""`).

use sea_orm::entity::prelude::*;

/// One generation of a template, unique per (tenant, name, generation).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "pipeline_templates")]
pub struct Model {
    /// The owning tenant; `""` for the provider's templates, which every tenant sees.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The template's name, a DNS-1123 label.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Starts at 1, +1 for every accepted change (a rollback included).
    #[sea_orm(primary_key, auto_increment = false)]
    pub generation: i64,
    /// The kind of pipeline it produces (`MetricPipeline`, ...), for queries.
    pub pipeline_kind: String,
    /// The `PipelineTemplate` document as validated.
    #[sea_orm(column_type = "JsonBinary")]
    pub document: Json,
    /// Unix milliseconds when this generation was written.
    pub created_at_ms: i64,
}

/// No relations are navigated through sea-orm; keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
