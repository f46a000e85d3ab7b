//! Pipelines of every kind in one table (issue 16): `pipelines` gains a `kind` column
//! and its key becomes (`tenant`, `kind`, `name`), so names are unique per tenant and
//! kind and a `MetricPipeline` and a `LogPipeline` may share a name. Like every
//! migration it spells out its own identifiers and is never edited once released.
//!
//! SQLite cannot change a primary key in place, so the table is rebuilt on both
//! databases the same way: a new table with the new key, every row copied with the kind
//! `MetricPipeline` (the only kind stored before), the old table dropped and the new
//! one renamed. Nothing refers to `pipelines` by foreign key, so nothing else changes;
//! every stored row, its sealed secrets, generation and status stay as they were.

use sea_orm_migration::prelude::*;

use super::{cascade, json, millis, text};

/// The kind every row stored before this migration has; spelled out because a
/// migration must not change when `kaas_pipeline::KIND` does.
const MIGRATED_KIND: &str = "MetricPipeline";

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum PipelinesByKind {
    Table,
    Tenant,
    Kind,
    Name,
    Spec,
    Generation,
    Status,
    CreatedAtMs,
    UpdatedAtMs,
}

/// Rebuilds `pipelines` with a `kind` column in its key (see the module note).
pub struct AddPipelineKinds;

impl MigrationName for AddPipelineKinds {
    fn name(&self) -> &str {
        "m20261207_000004_add_pipeline_kinds"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPipelineKinds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PipelinesByKind::Table)
                    .col(text(PipelinesByKind::Tenant))
                    .col(text(PipelinesByKind::Kind))
                    .col(text(PipelinesByKind::Name))
                    .col(json(PipelinesByKind::Spec))
                    .col(millis(PipelinesByKind::Generation))
                    .col(json(PipelinesByKind::Status))
                    .col(millis(PipelinesByKind::CreatedAtMs))
                    .col(millis(PipelinesByKind::UpdatedAtMs))
                    .primary_key(
                        Index::create()
                            .name("pk_pipelines_by_kind")
                            .col(PipelinesByKind::Tenant)
                            .col(PipelinesByKind::Kind)
                            .col(PipelinesByKind::Name),
                    )
                    .foreign_key(&mut cascade(
                        "fk_pipelines_by_kind_tenant",
                        (PipelinesByKind::Table, PipelinesByKind::Tenant),
                        (Tenants::Table, Tenants::Name),
                    ))
                    .take(),
            )
            .await?;
        let connection = manager.get_connection();
        connection
            .execute_unprepared(&format!(
                "INSERT INTO pipelines_by_kind \
                 (tenant, kind, name, spec, generation, status, created_at_ms, updated_at_ms) \
                 SELECT tenant, '{MIGRATED_KIND}', name, spec, generation, status, \
                 created_at_ms, updated_at_ms FROM pipelines"
            ))
            .await?;
        manager
            .drop_table(Table::drop().table(Alias::new("pipelines")).take())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(PipelinesByKind::Table, Alias::new("pipelines"))
                    .take(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Going back would have to drop every pipeline but metric ones; refuse instead.
        Err(DbErr::Migration(
            "pipelines of several kinds cannot be migrated back to one kind".to_owned(),
        ))
    }
}
