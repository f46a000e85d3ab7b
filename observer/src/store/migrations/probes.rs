//! The migration that adds `probe_endpoints`, the endpoints tenants ask the observer to
//! probe (see [`crate::store::probe_endpoints`]). Like every migration it spells out its own
//! identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `probe_endpoints`: key (`tenant`, `name`), the tenant's rows cascade with
/// it, an index on `cluster` for the clusters' endpoints.
pub struct CreateProbeEndpoints;

impl MigrationName for CreateProbeEndpoints {
    fn name(&self) -> &str {
        "m20250110_000001_create_probe_endpoints"
    }
}

#[derive(DeriveIden)]
enum ProbeEndpoints {
    Table,
    Tenant,
    Name,
    Cluster,
    Module,
    Spec,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateProbeEndpoints {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProbeEndpoints::Table)
                    .col(ColumnDef::new(ProbeEndpoints::Tenant).string().not_null())
                    .col(ColumnDef::new(ProbeEndpoints::Name).string().not_null())
                    .col(ColumnDef::new(ProbeEndpoints::Cluster).string().null())
                    .col(ColumnDef::new(ProbeEndpoints::Module).string().not_null())
                    .col(
                        ColumnDef::new(ProbeEndpoints::Spec)
                            .json_binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ProbeEndpoints::CreatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ProbeEndpoints::UpdatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .name("pk_probe_endpoints")
                            .col(ProbeEndpoints::Tenant)
                            .col(ProbeEndpoints::Name),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_probe_endpoints_tenant")
                            .from(ProbeEndpoints::Table, ProbeEndpoints::Tenant)
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
                    .name("idx_probe_endpoints_cluster")
                    .table(ProbeEndpoints::Table)
                    .col(ProbeEndpoints::Cluster)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProbeEndpoints::Table).take())
            .await
    }
}
