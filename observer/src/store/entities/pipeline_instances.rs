//! `pipeline_instances`: the tenants' `PipelineInstance`s, each with its binding to a
//! template and the template generation its pipeline was last rendered from.

use sea_orm::entity::prelude::*;

/// An instance, unique per (tenant, name).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "pipeline_instances")]
pub struct Model {
    /// The owning tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The instance's name, which its rendered pipeline has too.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The template it names.
    pub template: String,
    /// The template generation it is pinned to; `None` follows the latest.
    pub pinned_generation: Option<i64>,
    /// The kind of the pipeline it renders to (the template's).
    pub pipeline_kind: String,
    /// The `PipelineInstance` document as validated, each static value that lands in
    /// an inline secret of the pipeline (a header value) replaced by `***`.
    #[sea_orm(column_type = "JsonBinary")]
    pub document: Json,
    /// Those values, sealed, by placeholder name (a JSON object).
    #[sea_orm(column_type = "JsonBinary")]
    pub sealed_values: Json,
    /// Starts at 1, +1 for every change of the instance's spec.
    pub generation: i64,
    /// The template generation its pipeline was last rendered from.
    pub template_generation: i64,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change (its own or a re-render).
    pub updated_at_ms: i64,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
