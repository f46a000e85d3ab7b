//! The migration that adds `pipeline_templates` (every generation of every template, a
//! tenant's or the provider's) and `pipeline_instances` (the tenants' instances with
//! their binding), see [`crate::store::templates`]. Like every migration it spells out
//! its own identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `pipeline_templates`, key (`tenant`, `name`, `generation`), and
/// `pipeline_instances`, key (`tenant`, `name`), indexed by (`tenant`, `template`) for
/// the instances of a template; an instance cascades with its tenant. Templates have no
/// foreign key: the provider's are kept under tenant `""`, and a tenant's are removed
/// with it explicitly.
pub struct CreatePipelineTemplates;

impl MigrationName for CreatePipelineTemplates {
    fn name(&self) -> &str {
        "m20261207_000020_create_pipeline_templates"
    }
}

#[derive(DeriveIden)]
enum PipelineTemplates {
    Table,
    Tenant,
    Name,
    Generation,
    PipelineKind,
    Document,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum PipelineInstances {
    Table,
    Tenant,
    Name,
    Template,
    PinnedGeneration,
    PipelineKind,
    Document,
    SealedValues,
    Generation,
    TemplateGeneration,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

fn text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).string().not_null().take()
}

fn number(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().take()
}

fn json(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).json_binary().not_null().take()
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePipelineTemplates {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PipelineTemplates::Table)
                    .col(text(PipelineTemplates::Tenant))
                    .col(text(PipelineTemplates::Name))
                    .col(number(PipelineTemplates::Generation))
                    .col(text(PipelineTemplates::PipelineKind))
                    .col(json(PipelineTemplates::Document))
                    .col(number(PipelineTemplates::CreatedAtMs))
                    .primary_key(
                        Index::create()
                            .name("pk_pipeline_templates")
                            .col(PipelineTemplates::Tenant)
                            .col(PipelineTemplates::Name)
                            .col(PipelineTemplates::Generation),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PipelineInstances::Table)
                    .col(text(PipelineInstances::Tenant))
                    .col(text(PipelineInstances::Name))
                    .col(text(PipelineInstances::Template))
                    .col(
                        ColumnDef::new(PipelineInstances::PinnedGeneration)
                            .big_integer()
                            .null(),
                    )
                    .col(text(PipelineInstances::PipelineKind))
                    .col(json(PipelineInstances::Document))
                    .col(json(PipelineInstances::SealedValues))
                    .col(number(PipelineInstances::Generation))
                    .col(number(PipelineInstances::TemplateGeneration))
                    .col(number(PipelineInstances::CreatedAtMs))
                    .col(number(PipelineInstances::UpdatedAtMs))
                    .primary_key(
                        Index::create()
                            .name("pk_pipeline_instances")
                            .col(PipelineInstances::Tenant)
                            .col(PipelineInstances::Name),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_pipeline_instances_tenant")
                            .from(PipelineInstances::Table, PipelineInstances::Tenant)
                            .to(Tenants::Table, Tenants::Name)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Restrict)
                            .take(),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_pipeline_instances_template")
                    .table(PipelineInstances::Table)
                    .col(PipelineInstances::Tenant)
                    .col(PipelineInstances::Template)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PipelineInstances::Table).take())
            .await?;
        manager
            .drop_table(Table::drop().table(PipelineTemplates::Table).take())
            .await
    }
}
