//! `pipelines`: each tenant's pipelines of every kind (`MetricPipeline`, `LogPipeline`,
//! `TracePipeline`), with inline secret values sealed.

use sea_orm::entity::prelude::*;

/// A pipeline, unique per (tenant, kind, name).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "pipelines")]
pub struct Model {
    /// The owning tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// `kind` as written in documents: `MetricPipeline`, `LogPipeline`, `TracePipeline`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    /// `metadata.name`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The pipeline document (metadata name, labels and annotations, and spec;
    /// no status) as JSON, every inline secret value replaced by its sealed form
    /// `enc:v2:<key id>:...` (or `enc:v1:...` from before key ids).
    #[sea_orm(column_type = "JsonBinary")]
    pub spec: Json,
    /// Starts at 1; incremented whenever the spec changes.
    pub generation: i64,
    /// The pipeline's status (`MetricPipelineStatus`, shared by every kind) as JSON.
    #[sea_orm(column_type = "JsonBinary")]
    pub status: Json,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change of spec or metadata.
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
