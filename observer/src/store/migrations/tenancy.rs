//! The migrations of the tenancy boundary: `cluster_api_namespaces`, the admin's
//! mapping of Cluster API namespaces to tenants (see [`crate::store::tenancy`]), and indexes
//! that let the audit trail be read by tenant and by actor. Like every migration they
//! spell out their own identifiers and are never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `cluster_api_namespaces`: key `namespace`, the `tenant` it belongs to (rows
/// go with their tenant, `ON DELETE CASCADE`), indexed by tenant.
pub struct CreateClusterApiNamespaces;

impl MigrationName for CreateClusterApiNamespaces {
    fn name(&self) -> &str {
        "m20261201_000101_create_cluster_api_namespaces"
    }
}

#[derive(DeriveIden)]
enum ClusterApiNamespaces {
    Table,
    Namespace,
    Tenant,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateClusterApiNamespaces {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ClusterApiNamespaces::Table)
                    .col(
                        ColumnDef::new(ClusterApiNamespaces::Namespace)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ClusterApiNamespaces::Tenant)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClusterApiNamespaces::CreatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_cluster_api_namespaces_tenant")
                            .from(ClusterApiNamespaces::Table, ClusterApiNamespaces::Tenant)
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
                    .name("idx_cluster_api_namespaces_tenant")
                    .table(ClusterApiNamespaces::Table)
                    .col(ClusterApiNamespaces::Tenant)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClusterApiNamespaces::Table).take())
            .await
    }
}

/// Indexes `audit_log` by `tenant` and by `actor`, the filters of the admin's audit
/// API: a filtered page is then read from the index, not by scanning the whole trail.
pub struct AddAuditLogIndexes;

impl MigrationName for AddAuditLogIndexes {
    fn name(&self) -> &str {
        "m20261201_000102_add_audit_log_indexes"
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Tenant,
    Actor,
}

/// The indexes [`AddAuditLogIndexes`] creates.
const AUDIT_INDEXES: [&str; 2] = ["idx_audit_log_tenant", "idx_audit_log_actor"];

#[async_trait::async_trait]
impl MigrationTrait for AddAuditLogIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(AUDIT_INDEXES[0])
                    .table(AuditLog::Table)
                    .col(AuditLog::Tenant)
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(AUDIT_INDEXES[1])
                    .table(AuditLog::Table)
                    .col(AuditLog::Actor)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in AUDIT_INDEXES {
            manager
                .drop_index(Index::drop().name(name).table(AuditLog::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
