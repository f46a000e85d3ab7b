//! `clusters`: registered workload clusters, including tombstones of deleted ones.

use sea_orm::entity::prelude::*;

/// A cluster. Its key column `name` holds the cluster's global id, its identity
/// across the provider (certificate, `cluster` label); `local_name` is the name its
/// tenant gave it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "clusters")]
pub struct Model {
    /// The global id: `<tenant>.<name>` for clusters registered since names are per
    /// tenant, the old globally unique name for older ones.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The owning tenant.
    #[sea_orm(indexed)]
    pub tenant: String,
    /// Labels as a JSON object of strings, matched by pipelines' cluster selectors.
    #[sea_orm(column_type = "JsonBinary")]
    pub labels: Json,
    /// `provisioning`, `active`, `silent`, `lost`, `deleting` or `deleted`.
    pub state: String,
    /// The cluster's Kubernetes API endpoint, informational.
    pub api_endpoint: Option<String>,
    /// Version the agent last reported.
    pub agent_version: Option<String>,
    /// Instance id of the agent process last seen.
    pub agent_instance_id: Option<String>,
    /// When the agent was last heard from, Unix milliseconds.
    pub last_seen_ms: Option<i64>,
    /// Whether an agent stream is open to some observer replica.
    pub connected: bool,
    /// Hex serial of the client certificate issued last.
    pub certificate_serial: Option<String>,
    /// Expiry of that certificate, Unix milliseconds.
    pub certificate_not_after_ms: Option<i64>,
    /// Hash (hex) of the configuration the agent last reported as applied.
    pub applied_config_hash: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Set when the cluster was deleted (tombstoned).
    pub deleted_at_ms: Option<i64>,
    /// When `state` last changed, Unix milliseconds.
    pub state_changed_at_ms: i64,
    /// Which control stream set `connected` (`<replica id>/<connection number>`);
    /// only that one may clear it. NULL while disconnected.
    pub connection_id: Option<String>,
    /// The DNS-1123 label the tenant named the cluster with; unique per tenant.
    pub local_name: String,
    /// Which registration of the global id this row is: random hex, new each time the
    /// name of a tombstone is registered again (the global id itself for a cluster's
    /// first incarnation registered before incarnations existed).
    pub incarnation: String,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
