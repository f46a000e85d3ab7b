//! The migration that adds `cluster_buffer_budgets`, the disk budget a provider set for
//! a cluster's agent buffers (see [`crate::store::budgets`]). Like every migration it spells
//! out its own identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `cluster_buffer_budgets`: key (`tenant`, `cluster`), the budget in bytes;
/// the tenant's rows cascade with it.
pub struct CreateClusterBufferBudgets;

impl MigrationName for CreateClusterBufferBudgets {
    fn name(&self) -> &str {
        "m20261206_000001_create_cluster_buffer_budgets"
    }
}

#[derive(DeriveIden)]
enum ClusterBufferBudgets {
    Table,
    Tenant,
    Cluster,
    MaxBytes,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateClusterBufferBudgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterBufferBudgets::Table)
                    .col(
                        ColumnDef::new(ClusterBufferBudgets::Tenant)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterBufferBudgets::Cluster)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterBufferBudgets::MaxBytes)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterBufferBudgets::UpdatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .name("pk_cluster_buffer_budgets")
                            .col(ClusterBufferBudgets::Tenant)
                            .col(ClusterBufferBudgets::Cluster),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_cluster_buffer_budgets_tenant")
                            .from(ClusterBufferBudgets::Table, ClusterBufferBudgets::Tenant)
                            .to(Tenants::Table, Tenants::Name)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Restrict)
                            .take(),
                    )
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClusterBufferBudgets::Table).take())
            .await
    }
}
