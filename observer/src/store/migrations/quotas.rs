//! The migration that adds `tenant_quotas`, the per-tenant quota overrides an admin
//! sets (see [`crate::store::quotas`]). Like every migration it spells out its own identifiers
//! and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `tenant_quotas`: key (`tenant`, `quota`), the override `max_count`; the
/// tenant's rows cascade with it.
pub struct CreateTenantQuotas;

impl MigrationName for CreateTenantQuotas {
    fn name(&self) -> &str {
        "m20261206_000002_create_tenant_quotas"
    }
}

#[derive(DeriveIden)]
enum TenantQuotas {
    Table,
    Tenant,
    Quota,
    MaxCount,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTenantQuotas {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantQuotas::Table)
                    .col(ColumnDef::new(TenantQuotas::Tenant).string().not_null())
                    .col(ColumnDef::new(TenantQuotas::Quota).string().not_null())
                    .col(
                        ColumnDef::new(TenantQuotas::MaxCount)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TenantQuotas::UpdatedAtMs)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .name("pk_tenant_quotas")
                            .col(TenantQuotas::Tenant)
                            .col(TenantQuotas::Quota),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_tenant_quotas_tenant")
                            .from(TenantQuotas::Table, TenantQuotas::Tenant)
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
            .drop_table(Table::drop().table(TenantQuotas::Table).take())
            .await
    }
}
