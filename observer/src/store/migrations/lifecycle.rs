//! The migrations of deletion on positive evidence (issue 15, finding 4): cluster
//! incarnations, the history of tombstones a re-registration replaced, and the
//! deletions the mass-deletion guard holds. Like every migration they spell out their
//! own identifiers and are never edited once released.
//!
//! The column helpers and the cascading foreign key are the first migration's (their
//! definitions are as frozen as the migrations that use them).
//!
//! Every existing row keeps working: each cluster's first incarnation is named after
//! its global id (unique, since that is the key), so nothing about a cluster changes
//! until its name is registered again after a deletion.

use sea_orm_migration::prelude::*;

use super::{cascade, json, millis, optional_millis, optional_text, text};

#[derive(DeriveIden)]
enum Clusters {
    Table,
    Name,
    Incarnation,
}

#[derive(DeriveIden)]
enum ClusterTombstones {
    Table,
    Cluster,
    Incarnation,
    Tenant,
    LocalName,
    Labels,
    CreatedAtMs,
    DeletedAtMs,
    SupersededAtMs,
}

#[derive(DeriveIden)]
enum PendingDeletions {
    Table,
    Cluster,
    Tenant,
    Source,
    ToState,
    Reason,
    HeldAtMs,
    ConfirmedAtMs,
    ConfirmedBy,
}

/// Adds `clusters.incarnation` (filled with the global id) and creates
/// `cluster_tombstones`: one row per earlier incarnation of a cluster whose name was
/// registered again, keyed by (`cluster`, `incarnation`), going with its cluster.
pub struct AddClusterIncarnations;

impl MigrationName for AddClusterIncarnations {
    fn name(&self) -> &str {
        "m20261207_000001_add_cluster_incarnations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddClusterIncarnations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .add_column(
                        ColumnDef::new(Clusters::Incarnation)
                            .string()
                            .not_null()
                            .default(""),
                    )
                    .take(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("UPDATE clusters SET incarnation = name")
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterTombstones::Table)
                    .col(text(ClusterTombstones::Cluster))
                    .col(text(ClusterTombstones::Incarnation))
                    .col(text(ClusterTombstones::Tenant))
                    .col(text(ClusterTombstones::LocalName))
                    .col(json(ClusterTombstones::Labels))
                    .col(millis(ClusterTombstones::CreatedAtMs))
                    .col(optional_millis(ClusterTombstones::DeletedAtMs))
                    .col(millis(ClusterTombstones::SupersededAtMs))
                    .primary_key(
                        Index::create()
                            .name("pk_cluster_tombstones")
                            .col(ClusterTombstones::Cluster)
                            .col(ClusterTombstones::Incarnation),
                    )
                    .foreign_key(&mut cascade(
                        "fk_cluster_tombstones_cluster",
                        (ClusterTombstones::Table, ClusterTombstones::Cluster),
                        (Clusters::Table, Clusters::Name),
                    ))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClusterTombstones::Table).take())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .drop_column(Clusters::Incarnation)
                    .take(),
            )
            .await
    }
}

/// Creates `pending_deletions`: the changes the mass-deletion guard holds, one per
/// cluster (key `cluster`, going with it), with the source, the state it would move the
/// cluster to, the evidence, and the administrator's confirmation once given.
pub struct CreatePendingDeletions;

impl MigrationName for CreatePendingDeletions {
    fn name(&self) -> &str {
        "m20261207_000002_create_pending_deletions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePendingDeletions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PendingDeletions::Table)
                    .col(text(PendingDeletions::Cluster).primary_key())
                    .col(text(PendingDeletions::Tenant))
                    .col(text(PendingDeletions::Source))
                    .col(text(PendingDeletions::ToState))
                    .col(text(PendingDeletions::Reason))
                    .col(millis(PendingDeletions::HeldAtMs))
                    .col(optional_millis(PendingDeletions::ConfirmedAtMs))
                    .col(optional_text(PendingDeletions::ConfirmedBy))
                    .foreign_key(&mut cascade(
                        "fk_pending_deletions_cluster",
                        (PendingDeletions::Table, PendingDeletions::Cluster),
                        (Clusters::Table, Clusters::Name),
                    ))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PendingDeletions::Table).take())
            .await
    }
}
