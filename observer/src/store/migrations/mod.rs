//! Schema migrations (sea-orm-migration), applied by [`super::Store::connect`]: the
//! first (every table of the first release, each built by its own function) and the
//! second here, each later one in the file of what it adds.
//!
//! Migrations are append-only: a released migration is never edited, a schema change
//! is a new migration at the end of [`Migrator::migrations`]. They spell out the schema
//! with their own identifiers instead of deriving it from the entities, so that a later
//! change to an entity cannot silently change what an old migration creates.
//!
//! On PostgreSQL, replicas starting at the same time serialize their migrations on an
//! advisory lock (see [`super::Store::connect`]); the DDL runs in a transaction.

mod budgets;
mod control_planes;
mod identity;
mod instances;
mod lifecycle;
mod pipeline_kinds;
mod probes;
mod quotas;
mod replicas;
mod templates;
mod tenancy;

use sea_orm_migration::prelude::*;

/// The observer's migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTables),
            Box::new(AddClusterConnectionId),
            Box::new(probes::CreateProbeEndpoints),
            Box::new(replicas::CreateReplicas),
            Box::new(budgets::CreateClusterBufferBudgets),
            Box::new(quotas::CreateTenantQuotas),
            Box::new(tenancy::CreateClusterApiNamespaces),
            Box::new(tenancy::AddAuditLogIndexes),
            Box::new(identity::AddClusterLocalNames),
            Box::new(identity::CreateAgentCertificates),
            Box::new(lifecycle::AddClusterIncarnations),
            Box::new(lifecycle::CreatePendingDeletions),
            Box::new(control_planes::CreateClusterControlPlanes),
            Box::new(pipeline_kinds::AddPipelineKinds),
            Box::new(instances::CreateInstanceHealth),
            Box::new(instances::AddInstanceHealthRole),
            Box::new(templates::CreatePipelineTemplates),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("kaas_observer_migrations").into_iden()
    }
}

/// The first migration: every table with its keys, unique constraints and indexes.
struct CreateTables;

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        "m20250101_000001_create_tables"
    }
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Name,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    Name,
    TokenHash,
    Tenant,
    CreatedAtMs,
    RevokedAtMs,
}

#[derive(DeriveIden)]
enum Clusters {
    Table,
    Name,
    Tenant,
    Labels,
    State,
    ApiEndpoint,
    AgentVersion,
    AgentInstanceId,
    LastSeenMs,
    Connected,
    CertificateSerial,
    CertificateNotAfterMs,
    AppliedConfigHash,
    CreatedAtMs,
    DeletedAtMs,
    StateChangedAtMs,
    /// Added by [`AddClusterConnectionId`].
    ConnectionId,
}

#[derive(DeriveIden)]
enum JoinTokens {
    Table,
    TokenHash,
    Cluster,
    CreatedAtMs,
    ExpiresAtMs,
    UsedAtMs,
}

#[derive(DeriveIden)]
enum Pipelines {
    Table,
    Tenant,
    Name,
    Spec,
    Generation,
    Status,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum ClusterReports {
    Table,
    Cluster,
    ConfigReport,
    Health,
    HealthAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    AtMs,
    Actor,
    Action,
    Kind,
    Tenant,
    Name,
}

fn text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).string().not_null().take()
}

fn optional_text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).string().null().take()
}

fn millis(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().not_null().take()
}

fn optional_millis(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).big_integer().null().take()
}

fn json(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).json_binary().not_null().take()
}

fn optional_json(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).json_binary().null().take()
}

/// Rows of a tenant or cluster go with it; the store checks for live clusters and
/// pipelines before it deletes a tenant, so the cascade only removes tombstones,
/// tokens and reports.
fn cascade(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Restrict)
        .take()
}

fn index(name: &str, table: impl IntoIden, column: impl IntoIden) -> IndexCreateStatement {
    Index::create().name(name).table(table).col(column).take()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Each table, then its indexes; a table after those its foreign keys name.
        let tables: [(TableCreateStatement, Vec<IndexCreateStatement>); 7] = [
            (tenants_table(), vec![]),
            (
                api_tokens_table(),
                vec![index(
                    "idx_api_tokens_tenant",
                    ApiTokens::Table,
                    ApiTokens::Tenant,
                )],
            ),
            (
                clusters_table(),
                vec![index(
                    "idx_clusters_tenant",
                    Clusters::Table,
                    Clusters::Tenant,
                )],
            ),
            (
                join_tokens_table(),
                vec![index(
                    "idx_join_tokens_cluster",
                    JoinTokens::Table,
                    JoinTokens::Cluster,
                )],
            ),
            (pipelines_table(), vec![]),
            (cluster_reports_table(), vec![]),
            (
                audit_log_table(),
                vec![index(
                    "idx_audit_log_at_ms",
                    AuditLog::Table,
                    AuditLog::AtMs,
                )],
            ),
        ];
        for (table, indexes) in tables {
            manager.create_table(table).await?;
            for index in indexes {
                manager.create_index(index).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dependent tables first, so foreign keys never dangle.
        for table in [
            AuditLog::Table.into_iden(),
            ClusterReports::Table.into_iden(),
            Pipelines::Table.into_iden(),
            JoinTokens::Table.into_iden(),
            Clusters::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().take())
                .await?;
        }
        Ok(())
    }
}

/// The `tenants` table of the first migration.
fn tenants_table() -> TableCreateStatement {
    Table::create()
        .table(Tenants::Table)
        .col(text(Tenants::Name).primary_key())
        .col(millis(Tenants::CreatedAtMs))
        .take()
}

/// The `api_tokens` table of the first migration.
fn api_tokens_table() -> TableCreateStatement {
    Table::create()
        .table(ApiTokens::Table)
        .col(text(ApiTokens::Id).primary_key())
        .col(text(ApiTokens::Name))
        .col(text(ApiTokens::TokenHash).unique_key())
        .col(optional_text(ApiTokens::Tenant))
        .col(millis(ApiTokens::CreatedAtMs))
        .col(optional_millis(ApiTokens::RevokedAtMs))
        .foreign_key(&mut cascade(
            "fk_api_tokens_tenant",
            (ApiTokens::Table, ApiTokens::Tenant),
            (Tenants::Table, Tenants::Name),
        ))
        .take()
}

/// The `clusters` table of the first migration.
fn clusters_table() -> TableCreateStatement {
    Table::create()
        .table(Clusters::Table)
        .col(text(Clusters::Name).primary_key())
        .col(text(Clusters::Tenant))
        .col(json(Clusters::Labels))
        .col(text(Clusters::State))
        .col(optional_text(Clusters::ApiEndpoint))
        .col(optional_text(Clusters::AgentVersion))
        .col(optional_text(Clusters::AgentInstanceId))
        .col(optional_millis(Clusters::LastSeenMs))
        .col(
            ColumnDef::new(Clusters::Connected)
                .boolean()
                .not_null()
                .default(false),
        )
        .col(optional_text(Clusters::CertificateSerial))
        .col(optional_millis(Clusters::CertificateNotAfterMs))
        .col(optional_text(Clusters::AppliedConfigHash))
        .col(millis(Clusters::CreatedAtMs))
        .col(optional_millis(Clusters::DeletedAtMs))
        .col(millis(Clusters::StateChangedAtMs))
        .foreign_key(&mut cascade(
            "fk_clusters_tenant",
            (Clusters::Table, Clusters::Tenant),
            (Tenants::Table, Tenants::Name),
        ))
        .take()
}

/// The `join_tokens` table of the first migration.
fn join_tokens_table() -> TableCreateStatement {
    Table::create()
        .table(JoinTokens::Table)
        .col(text(JoinTokens::TokenHash).primary_key())
        .col(text(JoinTokens::Cluster))
        .col(millis(JoinTokens::CreatedAtMs))
        .col(millis(JoinTokens::ExpiresAtMs))
        .col(optional_millis(JoinTokens::UsedAtMs))
        .foreign_key(&mut cascade(
            "fk_join_tokens_cluster",
            (JoinTokens::Table, JoinTokens::Cluster),
            (Clusters::Table, Clusters::Name),
        ))
        .take()
}

/// The `pipelines` table of the first migration.
fn pipelines_table() -> TableCreateStatement {
    Table::create()
        .table(Pipelines::Table)
        .col(text(Pipelines::Tenant))
        .col(text(Pipelines::Name))
        .col(json(Pipelines::Spec))
        .col(millis(Pipelines::Generation))
        .col(json(Pipelines::Status))
        .col(millis(Pipelines::CreatedAtMs))
        .col(millis(Pipelines::UpdatedAtMs))
        .primary_key(
            Index::create()
                .name("pk_pipelines")
                .col(Pipelines::Tenant)
                .col(Pipelines::Name),
        )
        .foreign_key(&mut cascade(
            "fk_pipelines_tenant",
            (Pipelines::Table, Pipelines::Tenant),
            (Tenants::Table, Tenants::Name),
        ))
        .take()
}

/// The `cluster_reports` table of the first migration.
fn cluster_reports_table() -> TableCreateStatement {
    Table::create()
        .table(ClusterReports::Table)
        .col(text(ClusterReports::Cluster).primary_key())
        .col(optional_json(ClusterReports::ConfigReport))
        .col(optional_json(ClusterReports::Health))
        .col(optional_millis(ClusterReports::HealthAtMs))
        .col(millis(ClusterReports::UpdatedAtMs))
        .foreign_key(&mut cascade(
            "fk_cluster_reports_cluster",
            (ClusterReports::Table, ClusterReports::Cluster),
            (Clusters::Table, Clusters::Name),
        ))
        .take()
}

/// The `audit_log` table of the first migration.
fn audit_log_table() -> TableCreateStatement {
    Table::create()
        .table(AuditLog::Table)
        .col(
            ColumnDef::new(AuditLog::Id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(millis(AuditLog::AtMs))
        .col(text(AuditLog::Actor))
        .col(text(AuditLog::Action))
        .col(text(AuditLog::Kind))
        .col(optional_text(AuditLog::Tenant))
        .col(text(AuditLog::Name))
        .take()
}

/// The second migration: `clusters.connection_id`, which control stream set
/// `connected` (see "Connected" in the store's module documentation), so that a
/// replica's late disconnect cannot clear the flag another replica's stream set.
struct AddClusterConnectionId;

impl MigrationName for AddClusterConnectionId {
    fn name(&self) -> &str {
        "m20250102_000001_add_cluster_connection_id"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddClusterConnectionId {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .add_column(optional_text(Clusters::ConnectionId))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Clusters::Table)
                    .drop_column(Clusters::ConnectionId)
                    .take(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database records the ids of the migrations it ran: renaming one would run it
    /// again on every existing database.
    #[test]
    fn migration_ids_never_change() {
        let ids: Vec<String> = Migrator::migrations()
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect();
        assert_eq!(
            ids,
            [
                "m20250101_000001_create_tables",
                "m20250102_000001_add_cluster_connection_id",
                "m20250110_000001_create_probe_endpoints",
                "m20261122_000001_create_replicas",
                "m20261206_000001_create_cluster_buffer_budgets",
                "m20261206_000002_create_tenant_quotas",
                "m20261201_000101_create_cluster_api_namespaces",
                "m20261201_000102_add_audit_log_indexes",
                "m20261201_000001_add_cluster_local_names",
                "m20261201_000002_create_agent_certificates",
                "m20261207_000001_add_cluster_incarnations",
                "m20261207_000002_create_pending_deletions",
                "m20261207_000003_create_cluster_control_planes",
                "m20261207_000004_add_pipeline_kinds",
                "m20261207_000010_create_instance_health",
                "m20261207_000011_add_instance_health_role",
                "m20261207_000020_create_pipeline_templates",
            ]
        );
    }
}
