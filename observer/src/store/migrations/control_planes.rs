//! The migration that adds `cluster_control_planes`, each cluster's setting of which
//! control-plane components the central pipeline scrapes (see
//! [`crate::store::control_planes`]). Like every migration it spells out its own
//! identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `cluster_control_planes`: key (`tenant`, `cluster`), the setting as JSON;
/// the tenant's rows cascade with it.
pub struct CreateClusterControlPlanes;

impl MigrationName for CreateClusterControlPlanes {
    fn name(&self) -> &str {
        "m20261207_000003_create_cluster_control_planes"
    }
}

#[derive(DeriveIden)]
enum ClusterControlPlanes {
    Table,
    Tenant,
    Cluster,
    Setting,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateClusterControlPlanes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterControlPlanes::Table)
                    .col(
                        ColumnDef::new(ClusterControlPlanes::Tenant)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterControlPlanes::Cluster)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterControlPlanes::Setting)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterControlPlanes::UpdatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .name("pk_cluster_control_planes")
                            .col(ClusterControlPlanes::Tenant)
                            .col(ClusterControlPlanes::Cluster),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_cluster_control_planes_tenant")
                            .from(ClusterControlPlanes::Table, ClusterControlPlanes::Tenant)
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
            .drop_table(Table::drop().table(ClusterControlPlanes::Table).take())
            .await
    }
}
