//! The migrations of the identity model (issue 13, findings 7 and 8): cluster names
//! unique per tenant beside a provider-wide global id, and agent certificates per
//! instance with idempotent join tokens. Like every migration they spell out their own
//! identifiers and are never edited once released.
//!
//! Both keep every existing row working:
//!
//! - `clusters.name` stays the key and becomes the cluster's **global id**; existing
//!   clusters keep theirs (their old, globally unique name), so the certificates issued
//!   to them (SAN `kaas-observer://cluster/<name>`), the `cluster` label on their data
//!   and every row that refers to them stay valid. The new `local_name` (the name the
//!   tenant gave the cluster) is filled from it and is unique per tenant.
//! - Each existing cluster's recorded certificate serial becomes a row of
//!   `agent_certificates` for the cluster's default instance, so an agent that joined
//!   before the upgrade connects exactly as before.

use sea_orm_migration::prelude::*;

/// The instance name migrated certificates are recorded under; the same value as
/// [`crate::identity::DEFAULT_INSTANCE`], spelled out because a migration must not
/// change when that constant does.
const MIGRATED_INSTANCE: &str = "default";

#[derive(DeriveIden)]
enum Clusters {
    Table,
    Name,
    Tenant,
    LocalName,
}

#[derive(DeriveIden)]
enum JoinTokens {
    Table,
    CsrSha256,
    CertificateSerial,
}

#[derive(DeriveIden)]
enum AgentCertificates {
    Table,
    Serial,
    Cluster,
    Instance,
    CertificatePem,
    IssuedAtMs,
    NotAfterMs,
    RevokedAtMs,
}

/// Adds `clusters.local_name` (filled from `name`) and the unique index on
/// (`tenant`, `local_name`).
pub struct AddClusterLocalNames;

impl MigrationName for AddClusterLocalNames {
    fn name(&self) -> &str {
        "m20261201_000001_add_cluster_local_names"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddClusterLocalNames {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .add_column(
                        ColumnDef::new(Clusters::LocalName)
                            .string()
                            .not_null()
                            .default(""),
                    )
                    .take(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("UPDATE clusters SET local_name = name")
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_clusters_tenant_local_name")
                    .table(Clusters::Table)
                    .col(Clusters::Tenant)
                    .col(Clusters::LocalName)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_clusters_tenant_local_name")
                    .table(Clusters::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .drop_column(Clusters::LocalName)
                    .take(),
            )
            .await
    }
}

/// Creates `agent_certificates` (one row per issued agent certificate, key `serial`,
/// cascading with its cluster), copies each cluster's recorded serial into it, and
/// adds `join_tokens.csr_sha256` and `join_tokens.certificate_serial`, which let a
/// retried `Join` get the answer it lost.
pub struct CreateAgentCertificates;

impl MigrationName for CreateAgentCertificates {
    fn name(&self) -> &str {
        "m20261201_000002_create_agent_certificates"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAgentCertificates {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let text = |column| ColumnDef::new(column).string().not_null().take();
        let millis = |column| ColumnDef::new(column).big_integer().not_null().take();
        manager
            .create_table(
                Table::create()
                    .table(AgentCertificates::Table)
                    .col(text(AgentCertificates::Serial).primary_key())
                    .col(text(AgentCertificates::Cluster))
                    .col(text(AgentCertificates::Instance))
                    .col(
                        ColumnDef::new(AgentCertificates::CertificatePem)
                            .string()
                            .null(),
                    )
                    .col(millis(AgentCertificates::IssuedAtMs))
                    .col(millis(AgentCertificates::NotAfterMs))
                    .col(
                        ColumnDef::new(AgentCertificates::RevokedAtMs)
                            .big_integer()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_agent_certificates_cluster")
                            .from(AgentCertificates::Table, AgentCertificates::Cluster)
                            .to(Clusters::Table, Clusters::Name)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Restrict),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_agent_certificates_cluster_instance")
                    .table(AgentCertificates::Table)
                    .col(AgentCertificates::Cluster)
                    .col(AgentCertificates::Instance)
                    .take(),
            )
            .await?;
        // Certificates issued before this migration: the cluster's one recorded serial
        // (tombstones' certificates stay refused: they are not copied).
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO agent_certificates \
                 (serial, cluster, instance, certificate_pem, issued_at_ms, not_after_ms, revoked_at_ms) \
                 SELECT certificate_serial, name, '{MIGRATED_INSTANCE}', NULL, created_at_ms, \
                 COALESCE(certificate_not_after_ms, 0), NULL \
                 FROM clusters WHERE certificate_serial IS NOT NULL AND state <> 'deleted'"
            ))
            .await?;
        for column in [JoinTokens::CsrSha256, JoinTokens::CertificateSerial] {
            manager
                .alter_table(
                    Table::alter()
                        .table(JoinTokens::Table)
                        .add_column(ColumnDef::new(column).string().null())
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [JoinTokens::CertificateSerial, JoinTokens::CsrSha256] {
            manager
                .alter_table(
                    Table::alter()
                        .table(JoinTokens::Table)
                        .drop_column(column)
                        .take(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(AgentCertificates::Table).take())
            .await
    }
}
