//! The migration that adds `instance_health`: the latest health of each pipeline as
//! each agent instance of a cluster reports it (the cluster-level instance and one node
//! instance per node), so that a pipeline's condition per cluster is the worst of its
//! instances (see [`crate::store::instances`]). Like every migration it spells out its
//! own identifiers and is never edited once released.

use sea_orm_migration::prelude::*;

/// Creates `instance_health`: key (`cluster`, `instance`, `kind`, `pipeline`), the
/// instance's entry and the problems found in it as JSON, the worst problem's rank,
/// and when the observer received it (indexed: the time-to-live prunes by it). A
/// cluster's rows cascade with it.
pub struct CreateInstanceHealth;

impl MigrationName for CreateInstanceHealth {
    fn name(&self) -> &str {
        "m20261207_000010_create_instance_health"
    }
}

#[derive(DeriveIden)]
enum InstanceHealth {
    Table,
    Cluster,
    Instance,
    Kind,
    Pipeline,
    AgentInstanceId,
    Entry,
    Problems,
    WorstRank,
    ReportedAtMs,
    ReceivedAtMs,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    Name,
}

fn text(column: InstanceHealth) -> ColumnDef {
    ColumnDef::new(column).string().not_null().take()
}

fn millis(column: InstanceHealth) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().take()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateInstanceHealth {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(InstanceHealth::Table)
                    .col(text(InstanceHealth::Cluster))
                    .col(text(InstanceHealth::Instance))
                    .col(text(InstanceHealth::Kind))
                    .col(text(InstanceHealth::Pipeline))
                    .col(text(InstanceHealth::AgentInstanceId))
                    .col(
                        ColumnDef::new(InstanceHealth::Entry)
                            .json_binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(InstanceHealth::Problems)
                            .json_binary()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(InstanceHealth::WorstRank)
                            .integer()
                            .not_null(),
                    )
                    .col(millis(InstanceHealth::ReportedAtMs))
                    .col(millis(InstanceHealth::ReceivedAtMs))
                    .primary_key(
                        Index::create()
                            .name("pk_instance_health")
                            .col(InstanceHealth::Cluster)
                            .col(InstanceHealth::Instance)
                            .col(InstanceHealth::Kind)
                            .col(InstanceHealth::Pipeline),
                    )
                    .foreign_key(
                        &mut ForeignKey::create()
                            .name("fk_instance_health_cluster")
                            .from(InstanceHealth::Table, InstanceHealth::Cluster)
                            .to(Clusters::Table, Clusters::Name)
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
                    .name("idx_instance_health_received_at_ms")
                    .table(InstanceHealth::Table)
                    .col(InstanceHealth::ReceivedAtMs)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(InstanceHealth::Table).take())
            .await
    }
}

/// Adds `instance_health.role`: the role the reporting instance named in its hello
/// (`cluster`, `node`, `gateway`; empty for rows written before), so the observer can
/// tell whether a cluster's gateway is in use (`Store::clusters_with_gateway`).
pub struct AddInstanceHealthRole;

impl MigrationName for AddInstanceHealthRole {
    fn name(&self) -> &str {
        "m20261207_000011_add_instance_health_role"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddInstanceHealthRole {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceHealth::Table)
                    .add_column(
                        ColumnDef::new(InstanceHealthRole::Role)
                            .string()
                            .not_null()
                            .default(""),
                    )
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceHealth::Table)
                    .drop_column(InstanceHealthRole::Role)
                    .take(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum InstanceHealthRole {
    Role,
}
