//! The migration that adds `replicas`, the heartbeat rows by which observer replicas
//! know each other (see [`crate::store::replicas`]). Like every migration it spells out its
//! own identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `replicas`: key `id`, the last heartbeat `seen_at_ms`, indexed for the
/// "seen since" query and pruning.
pub struct CreateReplicas;

impl MigrationName for CreateReplicas {
    fn name(&self) -> &str {
        "m20261122_000001_create_replicas"
    }
}

#[derive(DeriveIden)]
enum Replicas {
    Table,
    Id,
    SeenAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateReplicas {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Replicas::Table)
                    .col(
                        ColumnDef::new(Replicas::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Replicas::SeenAtMs).big_integer().not_null())
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_replicas_seen_at_ms")
                    .table(Replicas::Table)
                    .col(Replicas::SeenAtMs)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Replicas::Table).take())
            .await
    }
}
