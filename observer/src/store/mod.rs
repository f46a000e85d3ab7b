//! The observer's database: tenants, API tokens, clusters, join tokens, pipelines, agent reports and the audit trail (sea-orm; SQLite embedded, PostgreSQL for HA).
//!
//! # Tables
//! Created by the first migration in [`migrations`]; one entity per table in `entities/`.
//! All timestamps are `i64` Unix milliseconds.
//!
//! | table             | key              | holds |
//! |-------------------|------------------|-------|
//! | `tenants`         | `name`           | creation time |
//! | `api_tokens`      | `id`, unique `token_hash` | SHA-256 of the bearer token; `tenant` NULL = administrator; `revoked_at_ms` |
//! | `clusters`        | `name` (the global id), unique (`tenant`, `local_name`) | tenant, the tenant's name for it, labels (JSON), state, agent version and instance, last seen, connected, certificate serial and expiry, applied config hash, tombstone time |
//! | `join_tokens`     | `token_hash`     | cluster, expiry, `used_at_ms` (set once) |
//! | `pipelines`       | (`tenant`, `name`) | the `MetricPipeline` document as JSON with inline secret values sealed, `generation`, status JSON |
//! | `cluster_reports` | `cluster`        | the agent's last config report and health report (JSON) |
//! | `audit_log`       | increasing `id`  | at, actor, action, kind, tenant, name; never a value |
//! | `cluster_api_namespaces` | `namespace` | the tenant an administrator mapped a Cluster API namespace to ([`tenancy`]) |
//!
//! Later migrations add `probe_endpoints` ([`probe_endpoints`]), `replicas`
//! ([`replicas`]), `cluster_buffer_budgets` ([`budgets`], keyed by tenant and global
//! cluster id), `tenant_quotas` ([`quotas`]: a tenant's clusters, pipelines and probe
//! endpoints are bounded, checked in the creating transaction), `clusters.local_name`
//! and `agent_certificates` ([`certificates`]: one row per issued agent certificate).
//!
//! # Cluster names and global ids
//! A tenant names its clusters; names are unique per tenant, so two tenants may each
//! have `prod`, and asking whether a name is taken only ever looks inside the caller's
//! tenant. Everything provider-wide (agent certificates, the `cluster` label, the
//! observer's series, probe assignment, every row that refers to a cluster) uses the
//! cluster's global id instead ([`Cluster::id`], the `clusters.name` key column):
//! `<tenant>.<name>` ([`global_cluster_id`]) for clusters registered since names are per
//! tenant, the old globally unique name for clusters registered before (their
//! certificates and data keep working unchanged; see `migrations_identity.rs`).
//!
//! Rows of a tenant (tokens, tombstoned clusters) and of a cluster (join tokens,
//! reports) are removed with it by `ON DELETE CASCADE` foreign keys, and explicitly as
//! well, so SQLite databases opened without foreign keys behave the same.
//!
//! # Hashed and encrypted
//! * API tokens (`kot_<base64url of 32 random bytes>`) and join tokens (`kjt_…`) are
//!   returned once and stored only as lower-case hex SHA-256. A leaked database gives
//!   no usable token. The bootstrap admin token from `--admin-token-file` is stored the
//!   same way under the fixed id [`BOOTSTRAP_ADMIN_TOKEN_ID`].
//! * Every inline secret value in a pipeline (`ValueSource.value`, header values) is
//!   sealed with [`SecretBox`] (AES-256-GCM, `enc:v2:<key id>:…`) for its owner (tenant,
//!   `pipeline`, name and field path as associated data, so it opens nowhere else)
//!   before the document is written; the plaintext never reaches the database, the
//!   audit trail, the change feed or an error. Values of the older `enc:v1:` format
//!   still open; [`Store::rekey_secrets`] seals everything with the current key
//!   ([`pipeline_rows`]). A row that cannot be opened degrades only its own pipeline
//!   ([`Store::list_pipeline_rows`]). Reading a pipeline opens them again: [`StoredPipeline::pipeline`] holds
//!   plaintext, because the renderer must send it to the agent. API responses use
//!   [`StoredPipeline::masked_resource`], which shows [`MASKED_SECRET`] instead.
//! * An update whose inline value is exactly `***` keeps the stored value of that same
//!   field path (so get → edit → apply round-trips); if nothing is stored there the
//!   apply fails with [`StoreError::Conflict`] naming the field.
//!
//! # Generations
//! `apply_pipeline` stores the document with metadata reduced to name, labels and
//! annotations. `generation` starts at 1 and grows by one only when the spec differs
//! from the stored one (compared after restoring `***` values, in plaintext, since two
//! seals of one value never look alike). Metadata-only changes are written without a new
//! generation; an identical apply writes nothing at all.
//!
//! # Single-use join tokens
//! Redemption is one conditional statement,
//! `UPDATE join_tokens SET used_at_ms = now WHERE token_hash = ? AND used_at_ms IS NULL
//! AND expires_at_ms > now`, and the redeemer wins only if it affected exactly one row.
//! The database serializes the two writers (a row lock on PostgreSQL, the single
//! writer on SQLite), so of two concurrent redeemers exactly one sees one row affected;
//! the other then reads the row to say why it lost ([`RedeemError::AlreadyUsed`],
//! [`RedeemError::Expired`], [`RedeemError::Unknown`]). A token of a deleted
//! (tombstoned) cluster is refused with [`RedeemError::ClusterGone`]. Deleting a cluster
//! keeps its row as a tombstone (state `deleted`), so the name cannot be reused by
//! accident and its certificates stay refused. The same transaction records the
//! certificate the redemption paid for; a retry of the same request shortly after gets
//! that certificate again, and every check before the redemption only reads (see
//! [`certificates`]).
//!
//! # Change feed
//! Every mutation that changes something commits, then publishes [`Change`]s on an
//! in-process `tokio::sync::broadcast` channel ([`Store::subscribe`]). Changes only say
//! *what* changed; subscribers read the current state. A subscriber that lags
//! (`RecvError::Lagged`) has missed changes and must resync everything.
//! * **SQLite** is single-process: the broadcast channel is the whole feed.
//! * **PostgreSQL**: each mutation also runs `SELECT pg_notify('kaas_observer_changes',
//!   '{"origin":…,"change":…}')` inside its transaction, so the notification goes out
//!   exactly when the data is visible. Each `Store` listens on that channel with a
//!   dedicated `PgListener` connection and republishes other replicas' changes on its
//!   local feed, skipping its own by the random `origin` id. If the listener connection
//!   drops it reconnects with exponential backoff; notifications sent meanwhile are lost,
//!   so after a reconnect it republishes a change for every cluster and pipeline.
//!
//! Writes that change nothing publish nothing (an identical apply, an unchanged status
//! or state). Heartbeat-like writes publish only what subscribers act on:
//! `record_agent_seen` publishes when state, version or instance changes, not for every
//! `last_seen`. Desired state and observations are told apart: `Tenant`, `Cluster`
//! (registration, labels, state, certificate) and `Pipeline` (spec, metadata) wake agent
//! streams; `ClusterReport` (config reports including the applied hash, health,
//! connection, agent version) and `PipelineStatus` do not, so an agent's own report or
//! the status computed from it never sends the observer back to its streams. API token changes publish nothing: [`Change`] has no variant for them and
//! no subscriber acts on them (authentication reads the table on every request).
//!
//! # Connected
//! `clusters.connected` says whether an agent stream of the cluster is open on some
//! replica, and `clusters.connection_id` which connection set it
//! (`<replica id>/<number>`, chosen by the control service). [`Store::set_connected`]
//! records a newly opened connection unconditionally: the newest wins, because an
//! agent that moved to another replica is on the new one. [`Store::release_connection`]
//! clears the flag with one conditional statement,
//! `UPDATE clusters SET connected = false, connection_id = NULL WHERE name = ? AND
//! connection_id = ?`, so a replica that notices late that the agent left (its stream
//! broke after the agent had already connected to another replica) changes nothing.
//! A replica that dies without releasing (SIGKILL, a lost host) leaves the flag set
//! until the agent connects anywhere, which overwrites it; an agent that never returns
//! is caught by `last_seen` (state `silent`), not by this flag.
//!
//! # Audit trail
//! Changes made by an actor (tenants, API tokens, clusters and their state, join tokens,
//! certificates, pipelines) add an `audit_log` row in the same transaction. Observations
//! reported by agents (health, config reports, connection, pipeline status) are not
//! audited: they are not decisions, and they would drown the trail.
//!
//! # Concurrency and crashes
//! Every mutation is one transaction: a crash leaves either all or nothing. SQLite uses
//! a single writing connection in WAL mode with `synchronous=NORMAL`, which serializes
//! writers inside the process (the embedded default runs one observer), and a pool of
//! read-only connections for reads outside transactions: WAL readers do not wait for
//! the writer, and a read sees every commit that finished before it started. On
//! PostgreSQL one pool serves both, and replicas that start together serialize their
//! migrations on an advisory lock.
//!
//! Agent reports (seen, connected, config, health) are written by one task per store
//! that commits everything waiting in one transaction ([`reports`]); each caller still
//! gets its own result after the commit.

pub mod budgets;
pub mod certificates;
mod config_states;
mod entities;
mod errors;
pub mod leases;
pub mod migrations;
mod migrations_budgets;
mod migrations_identity;
mod migrations_probes;
mod migrations_quotas;
mod migrations_replicas;
mod migrations_tenancy;
mod onboarding;
pub mod pipeline_rows;
pub mod probe_endpoints;
pub mod quotas;
pub mod replicas;
pub mod reports;
pub mod tenancy;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kaas_pipeline::secret::SecretString;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::{MetricPipeline, ValidatedPipeline};
use ring::rand::{SecureRandom, SystemRandom};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::sqlx;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::secrets::{SecretBox, SecretError, SecretOwner};
use entities::{api_tokens, audit_log, cluster_reports, clusters, join_tokens, pipelines, tenants};
pub use errors::{RedeemError, StoreError};
use migrations::Migrator;
pub use reports::ReportWrite;
use reports::{ReportQueue, ReportWriter};

/// How many changes the in-process feed holds for a slow subscriber before it lags. A
/// burst larger than this (a resync after a PostgreSQL reconnect of a big installation)
/// makes subscribers resync fully, which is correct, only slower.
const CHANGE_FEED_CAPACITY: usize = 1024;

/// Names bound in one `IN (…)` list: far below SQLite's limit of 32,766 variables and
/// PostgreSQL's 65,535, and small enough to keep one statement quick.
const NAMES_PER_QUERY: usize = 500;

/// The PostgreSQL NOTIFY channel every replica listens on.
pub const NOTIFY_CHANNEL: &str = "kaas_observer_changes";

/// First wait before reconnecting a dropped PostgreSQL listener; short, because a
/// failover or a restarted PgBouncer is usually back within a second.
const LISTENER_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between listener reconnects; keeps a down database from being hammered
/// while still noticing its return within seconds.
const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long [`Store::connect`] waits for the change listener to subscribe before it
/// returns anyway (the listener keeps retrying): LISTEN on a reachable server takes
/// milliseconds.
const LISTENER_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per replica to PostgreSQL: one is held by the change listener, the rest
/// serve API requests and agent reports. Ten is sqlx's default and far below
/// PostgreSQL's default `max_connections` of 100, leaving room for several replicas.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// How long SQLite waits for a lock held by another process (for example a backup or
/// the `sqlite3` shell) before failing a statement.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only SQLite connections beside the single writer. In WAL mode readers never
/// wait for the writer, so API reads, renders, the status task and `/readyz` do not
/// queue behind agent reports. Four: each has its own SQLite thread, and more than the
/// machine's cores buys nothing on the embedded default's small installations.
const SQLITE_READ_CONNECTIONS: u32 = 4;

/// How long a task may wait for a pooled connection before sqlx mentions it, and at
/// which level: under a reconnect storm thousands of agent reports wait in line by
/// design (they are batched), so a wait is routine and logged at debug, not warn.
const SLOW_ACQUIRE_THRESHOLD: Duration = Duration::from_secs(2);

/// Advisory lock key that serializes migrations of replicas starting together
/// (arbitrary, fixed: ASCII "kaasobsv").
const MIGRATION_LOCK_KEY: i64 = 0x6b61_6173_6f62_7376;

/// What API responses show instead of an inline secret value, and what an update may
/// send to keep the stored value.
pub const MASKED_SECRET: &str = "***";

/// Prefix of API bearer tokens, so leaked tokens are recognisable by secret scanners.
pub const API_TOKEN_PREFIX: &str = "kot_";
/// Prefix of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "kjt_";
/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_RANDOM_BYTES: usize = 32;
/// Random bytes in an API token's public id.
const TOKEN_ID_RANDOM_BYTES: usize = 8;
/// Id of the bootstrap administrator token set by [`Store::ensure_admin_token`].
pub const BOOTSTRAP_ADMIN_TOKEN_ID: &str = "bootstrap-admin";

/// `ConfigReport::state` of a configuration the agent runs.
pub const CONFIG_STATE_APPLIED: &str = "APPLIED";
/// `ConfigReport::state` while the agent applies a configuration.
pub const CONFIG_STATE_APPLYING: &str = "APPLYING";
/// `ConfigReport::state` of a configuration the agent refused.
pub const CONFIG_STATE_FAILED: &str = "FAILED";

/// Who is calling the API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// May do everything.
    Admin,
    /// May act within this tenant only.
    Tenant(String),
}

/// Who made a change, for the audit trail: `admin`, `tenant:shop`, `agent:c1`, `system`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    /// An administrator.
    pub fn admin() -> Self {
        Self("admin".into())
    }

    /// A tenant's token.
    pub fn tenant(name: &str) -> Self {
        Self(format!("tenant:{name}"))
    }

    /// A cluster's agent.
    pub fn agent(cluster: &str) -> Self {
        Self(format!("agent:{cluster}"))
    }

    /// The observer itself (lifecycle, bootstrap).
    pub fn system() -> Self {
        Self("system".into())
    }
}

impl From<&Principal> for Actor {
    fn from(principal: &Principal) -> Self {
        match principal {
            Principal::Admin => Self::admin(),
            Principal::Tenant(name) => Self::tenant(name),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// DNS-1123 label.
    pub name: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// An API token as listed; the plaintext is only returned by
/// [`Store::create_api_token`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenInfo {
    /// Public id, used to revoke.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The tenant it acts for; `None` for administrators.
    pub tenant: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// A cluster's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Registered; its agent has not connected yet.
    Provisioning,
    /// The agent reports in.
    Active,
    /// The agent has not been heard from for longer than `--silent-after`.
    Silent,
    /// Being removed.
    Deleting,
    /// Tombstone: the name stays taken and its certificates are refused.
    Deleted,
}

impl ClusterState {
    /// The lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Silent => "silent",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClusterState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "silent" => Self::Silent,
            "deleting" => Self::Deleting,
            "deleted" => Self::Deleted,
            other => return Err(format!("unknown cluster state {other:?}")),
        })
    }
}

/// A registered cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// The cluster's global id, its identity across the provider: the SAN of its
    /// agents' certificates, the `cluster` label on its data and on the observer's
    /// series about it, the probe hashring key. `<tenant>.<name>` for clusters
    /// registered since names are per tenant ([`global_cluster_id`]); a cluster
    /// registered before keeps its old, globally unique name as its id.
    pub id: String,
    /// The DNS-1123 label the tenant named it with; unique within the tenant only.
    pub name: String,
    /// The owning tenant.
    pub tenant: String,
    /// Labels matched by pipelines' cluster selectors.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes API endpoint, informational.
    pub api_endpoint: Option<String>,
    /// Lifecycle state.
    pub state: ClusterState,
    /// Version the agent last reported.
    pub agent_version: Option<String>,
    /// Instance id of the agent process last seen.
    pub agent_instance_id: Option<String>,
    /// When the agent was last heard from.
    pub last_seen_ms: Option<i64>,
    /// Hex serial of the last issued client certificate.
    pub certificate_serial: Option<String>,
    /// Its expiry.
    pub certificate_not_after_ms: Option<i64>,
    /// Hash (hex) of the configuration the agent last reported as applied.
    pub applied_config_hash: Option<String>,
    /// Whether an agent stream of the cluster is open on some replica.
    pub connected: bool,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When the cluster was deleted (tombstoned).
    pub deleted_at_ms: Option<i64>,
}

/// Separates tenant and name in a derived global cluster id. Tenant and cluster names
/// are DNS-1123 labels, which cannot contain it, so `<tenant>.<name>` is unambiguous,
/// and no id kept from before names were per tenant (a label too) can equal one.
pub const GLOBAL_ID_SEPARATOR: char = '.';

/// The global id of the cluster `tenant` names `name`: `<tenant>.<name>`. Two tenants'
/// `prod` are `shop.prod` and `bank.prod`. Clusters registered before names were per
/// tenant keep their old name as their id (see [`Cluster::id`]), so look clusters up
/// by tenant and name ([`Store::get_cluster_named`]) rather than deriving an id.
pub fn global_cluster_id(tenant: &str, name: &str) -> String {
    format!("{tenant}{GLOBAL_ID_SEPARATOR}{name}")
}

/// What registering a cluster needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewCluster {
    /// DNS-1123 label, unique within the tenant; the global id is derived from it and
    /// the tenant ([`global_cluster_id`]).
    pub name: String,
    /// The owning tenant; must exist.
    pub tenant: String,
    /// Initial labels.
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes API endpoint, informational.
    pub api_endpoint: Option<String>,
}

/// A pipeline as stored. `pipeline` holds secrets in plaintext: render it for an agent,
/// but answer API requests with [`StoredPipeline::masked_resource`].
#[derive(Clone, Debug)]
pub struct StoredPipeline {
    /// The owning tenant.
    pub tenant: String,
    /// The validated pipeline, inline secrets in plaintext.
    pub pipeline: ValidatedPipeline,
    /// Starts at 1, +1 for every spec change.
    pub generation: i64,
    /// The status the observer computed from agent reports.
    pub status: MetricPipelineStatus,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last spec or metadata change.
    pub updated_at_ms: i64,
}

impl StoredPipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        self.pipeline.name()
    }

    /// The resource as the API shows it: inline secret values replaced by `***`,
    /// `metadata.generation` and `status` filled in.
    pub fn masked_resource(&self) -> MetricPipeline {
        let mut resource = self.pipeline.resource().clone();
        mask_secrets(&mut resource);
        resource.metadata.generation = Some(self.generation);
        resource.status = Some(self.status.clone());
        resource
    }
}

/// A pipeline without its document: see [`Store::pipeline_summaries`].
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSummary {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's name.
    pub name: String,
    /// Its spec generation.
    pub generation: i64,
    /// Its status as last computed.
    pub status: MetricPipelineStatus,
}

/// Replaces every inline secret value of `resource` with [`MASKED_SECRET`].
pub fn mask_secrets(resource: &mut MetricPipeline) {
    for (_, value) in resource.spec.output.inline_secrets_mut() {
        *value = SecretString::new(MASKED_SECRET);
    }
}

/// An agent's report about a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    /// Hash (hex) of the configuration the report is about.
    pub config_hash: String,
    /// `APPLYING`, `APPLIED` or `FAILED` ([`CONFIG_STATE_APPLIED`], ...).
    pub state: String,
    /// Why it failed, per pipeline and field.
    #[serde(default)]
    pub errors: Vec<ConfigErrorRecord>,
    /// Hash (hex) of the configuration the agent runs now (the last good one after a
    /// failure).
    pub running_config_hash: String,
    /// When the agent made the report, Unix milliseconds.
    pub at_ms: i64,
}

/// One reason an agent refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigErrorRecord {
    /// The pipeline's name.
    pub pipeline: String,
    /// Field path inside it.
    pub field_path: String,
    /// What is wrong; never a secret.
    pub message: String,
}

/// What is known about a cluster's agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// The cluster.
    pub cluster: String,
    /// The last configuration report.
    pub config: Option<ConfigReport>,
    /// The last health report, as the agent sent it.
    pub health: Option<serde_json::Value>,
    /// Whether an agent stream is open to some replica.
    pub connected: bool,
}

/// A cluster's latest reports with what the status task needs to place them
/// ([`Store::reports_of`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedCluster {
    /// The cluster's tenant.
    pub tenant: String,
    /// The cluster's lifecycle state.
    pub state: ClusterState,
    /// The reports, and whether an agent stream is open.
    pub report: ClusterReport,
}

/// Something changed; read the current state to see what. Published after commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// A tenant was created or deleted.
    Tenant(String),
    /// A cluster's registration, labels, state, certificate or agent changed.
    Cluster {
        /// The cluster's tenant.
        tenant: String,
        /// The cluster's global id (`name` on the wire between replicas, as before).
        #[serde(rename = "name")]
        id: String,
    },
    /// A pipeline was created, changed (spec or metadata) or deleted: desired state
    /// that agent streams render.
    Pipeline {
        /// The pipeline's tenant.
        tenant: String,
        /// The pipeline.
        name: String,
    },
    /// A pipeline's status (computed from agent reports) changed. Nothing an agent runs
    /// depends on it, so it wakes no agent stream.
    PipelineStatus {
        /// The pipeline's tenant.
        tenant: String,
        /// The pipeline.
        name: String,
    },
    /// An observation about a cluster's agent changed: a config report (including the
    /// applied hash), health, (dis)connection, or the agent's version or instance.
    /// Observations are not desired state: they wake no agent stream and do not change
    /// probe targets.
    ClusterReport(String),
    /// A tenant's probe endpoint was created, changed or deleted.
    ProbeEndpoint {
        /// The endpoint's tenant.
        tenant: String,
        /// The endpoint.
        name: String,
    },
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What was done: `create`, `update`, `delete`, `apply`, `revoke`, ...
    pub action: String,
    /// To which kind of object: `tenant`, `api-token`, `cluster`, `join-token`, `pipeline`.
    pub kind: String,
    /// The object's name (an API token's id).
    pub name: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
}

/// The payload of a PostgreSQL notification.
#[derive(Serialize, Deserialize)]
struct Notification {
    origin: String,
    change: Change,
}

/// The store. Cheap to clone; all clones share one connection pool and change feed.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every write, and reads inside transactions. On SQLite its single connection.
    db: DatabaseConnection,
    /// Reads outside transactions: SQLite's read-only pool, or the same pool as `db`
    /// (PostgreSQL, in-memory SQLite).
    reader: DatabaseConnection,
    /// What `/readyz` asks: on SQLite a read-only connection of its own, so readiness
    /// does not queue behind the reads of a reconnect storm; otherwise `reader`.
    pinger: DatabaseConnection,
    secrets: SecretBox,
    changes: broadcast::Sender<Change>,
    /// Random id of this store instance, carried in notifications to skip our own.
    origin: String,
    listener: Option<JoinHandle<()>>,
    /// Agent reports go through here to the report writer (group commit).
    reports: ReportQueue,
    report_writer: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        self.report_writer.abort();
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.db.get_database_backend())
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

/// Per-kind names used in errors and the audit trail.
mod kinds {
    pub const TENANT: &str = "tenant";
    pub const API_TOKEN: &str = "api-token";
    pub const CLUSTER: &str = "cluster";
    pub const JOIN_TOKEN: &str = "join-token";
    pub const PIPELINE: &str = "pipeline";
}

impl Store {
    /// Connects to `sqlite:PATH` / `sqlite://PATH` (created if missing) or
    /// `postgres://…` / `postgresql://…`, and applies pending migrations.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn connect(url: &str, secrets: SecretBox) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Database(DbErr::Custom(e.to_string())))?;
            // An in-memory database exists only on its own connection.
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            return Self::open_sqlite_with(options, secrets, !in_memory).await;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // Never echo the URL: it may hold a password.
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(StoreError::Database(DbErr::Custom(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite: or postgres://"
            ))));
        }
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        let transaction = db.begin().await?;
        transaction
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [MIGRATION_LOCK_KEY.into()],
            ))
            .await?;
        Migrator::up(&transaction, None).await?;
        transaction.commit().await?;
        let (store, listening) = Self::build(db.clone(), db.clone(), db, secrets, true);
        // Return only once the listener is subscribed, so every change committed after
        // `connect` returns reaches this replica's feed.
        if let Some(listening) = listening
            && tokio::time::timeout(LISTENER_STARTUP_TIMEOUT, listening)
                .await
                .is_err()
        {
            tracing::warn!(
                timeout = ?LISTENER_STARTUP_TIMEOUT,
                "the PostgreSQL change listener is not subscribed yet; it keeps retrying"
            );
        }
        Ok(store)
    }

    /// Opens (creating if needed) the SQLite database at `path` and applies pending
    /// migrations.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn open_sqlite(path: &Path, secrets: SecretBox) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(DbErr::Custom(format!(
                    "cannot create {}: {e}",
                    parent.display()
                )))
            })?;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        Self::open_sqlite_with(options, secrets, true).await
    }

    /// One writer connection and, with `read_pool`, [`SQLITE_READ_CONNECTIONS`]
    /// read-only ones on the same file.
    async fn open_sqlite_with(
        options: sqlx::sqlite::SqliteConnectOptions,
        secrets: SecretBox,
        read_pool: bool,
    ) -> Result<Store, StoreError> {
        use sqlx::ConnectOptions as _;
        let base = options
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
            .disable_statement_logging();
        // `synchronous=NORMAL` in WAL mode syncs at checkpoints, not at every commit: an
        // observer crash loses nothing, a power loss may lose the last commits (never
        // corrupts the database); agents send their state again after a reconnect.
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        // One writer: SQLite has one writer anyway, and a single connection makes every
        // transaction strictly serial, so read-then-write never hits SQLITE_BUSY.
        let pool = sqlite_pool(1, writer_options).await?;
        let db = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
        Migrator::up(&db, None).await?;
        // Readers open after the migrations, so they find the file in WAL mode.
        let (reader, pinger) = if read_pool {
            let readers =
                sqlite_pool(SQLITE_READ_CONNECTIONS, base.clone().read_only(true)).await?;
            let pinger = sqlite_pool(1, base.read_only(true)).await?;
            (
                sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(readers),
                sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pinger),
            )
        } else {
            (db.clone(), db.clone())
        };
        Ok(Self::build(db, reader, pinger, secrets, false).0)
    }

    /// The store, and with `listen` a receiver that fires once the PostgreSQL listener
    /// is subscribed.
    fn build(
        db: DatabaseConnection,
        reader: DatabaseConnection,
        pinger: DatabaseConnection,
        secrets: SecretBox,
        listen: bool,
    ) -> (Store, Option<oneshot::Receiver<()>>) {
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let origin = random_hex(16).unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        let (listener, listening) = if listen {
            let (ready, listening) = oneshot::channel();
            let task = tokio::spawn(listen_for_changes(
                db.clone(),
                changes.clone(),
                origin.clone(),
                ready,
            ));
            (Some(task), Some(listening))
        } else {
            (None, None)
        };
        let (reports, report_writer) = ReportWriter {
            db: db.clone(),
            origin: origin.clone(),
            changes: changes.clone(),
        }
        .spawn();
        let store = Store {
            inner: Arc::new(Inner {
                db,
                reader,
                pinger,
                secrets,
                changes,
                origin,
                listener,
                reports,
                report_writer,
            }),
        };
        (store, listening)
    }

    fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Where reads outside a transaction go (see [`Inner::reader`]). A read sees every
    /// write committed before it started.
    fn reader(&self) -> &DatabaseConnection {
        &self.inner.reader
    }

    /// Checks that the database answers, for `/readyz`. On SQLite it asks a reading
    /// connection of its own, so neither a busy writer (a burst of agent reports) nor
    /// busy readers (a reconnect storm) make the observer look unready.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.inner.pinger.ping().await?)
    }

    /// The change feed: this replica's changes and, on PostgreSQL, other replicas'.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    async fn begin(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(self.db().begin().await?)
    }

    /// Notifies other replicas (PostgreSQL, inside the transaction), commits, then
    /// publishes locally.
    async fn commit(
        &self,
        transaction: DatabaseTransaction,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        commit_changes(
            transaction,
            changes,
            &self.inner.origin,
            &self.inner.changes,
        )
        .await
    }

    // ---- tenants ----

    /// Creates a tenant.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_tenant(&self, name: &str, actor: &Actor) -> Result<Tenant, StoreError> {
        let transaction = self.begin().await?;
        if tenants::Entity::find_by_id(name)
            .one(&transaction)
            .await?
            .is_some()
        {
            return Err(already_exists(kinds::TENANT, name));
        }
        let now = now_ms();
        let row = tenants::ActiveModel {
            name: Set(name.to_owned()),
            created_at_ms: Set(now),
        };
        tenants::Entity::insert(row)
            .exec_without_returning(&transaction)
            .await
            .map_err(|e| insert_error(e, kinds::TENANT, name))?;
        audit(
            &transaction,
            actor,
            "create",
            kinds::TENANT,
            Some(name),
            name,
        )
        .await?;
        self.commit(transaction, vec![Change::Tenant(name.to_owned())])
            .await?;
        Ok(Tenant {
            name: name.to_owned(),
            created_at_ms: now,
        })
    }

    /// One tenant.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(tenants::Entity::find_by_id(name)
            .one(self.reader())
            .await?
            .map(tenant_from_row))
    }

    /// Every tenant, by name.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Ok(tenants::Entity::find()
            .order_by_asc(tenants::Column::Name)
            .all(self.reader())
            .await?
            .into_iter()
            .map(tenant_from_row)
            .collect())
    }

    /// Deletes a tenant with its API tokens and cluster tombstones. Refused
    /// ([`StoreError::Conflict`]) while it has clusters that are not deleted, or
    /// pipelines.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_tenant(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        if tenants::Entity::find_by_id(name)
            .one(&transaction)
            .await?
            .is_none()
        {
            return Err(not_found(kinds::TENANT, name));
        }
        let live_clusters = clusters::Entity::find()
            .filter(clusters::Column::Tenant.eq(name))
            .filter(clusters::Column::State.ne(ClusterState::Deleted.as_str()))
            .count(&transaction)
            .await?;
        let pipelines = pipelines::Entity::find()
            .filter(pipelines::Column::Tenant.eq(name))
            .count(&transaction)
            .await?;
        if live_clusters > 0 || pipelines > 0 {
            return Err(StoreError::Conflict(format!(
                "tenant {name:?} still has {live_clusters} cluster(s) and {pipelines} \
                 pipeline(s); delete them first"
            )));
        }
        let tenant_clusters = Query::select()
            .column(clusters::Column::Name)
            .from(clusters::Entity)
            .and_where(clusters::Column::Tenant.eq(name))
            .to_owned();
        join_tokens::Entity::delete_many()
            .filter(join_tokens::Column::Cluster.in_subquery(tenant_clusters.clone()))
            .exec(&transaction)
            .await?;
        cluster_reports::Entity::delete_many()
            .filter(cluster_reports::Column::Cluster.in_subquery(tenant_clusters))
            .exec(&transaction)
            .await?;
        clusters::Entity::delete_many()
            .filter(clusters::Column::Tenant.eq(name))
            .exec(&transaction)
            .await?;
        api_tokens::Entity::delete_many()
            .filter(api_tokens::Column::Tenant.eq(name))
            .exec(&transaction)
            .await?;
        entities::tenant_quotas::Entity::delete_many()
            .filter(entities::tenant_quotas::Column::Tenant.eq(name))
            .exec(&transaction)
            .await?;
        entities::cluster_buffer_budgets::Entity::delete_many()
            .filter(entities::cluster_buffer_budgets::Column::Tenant.eq(name))
            .exec(&transaction)
            .await?;
        tenants::Entity::delete_by_id(name)
            .exec(&transaction)
            .await?;
        audit(
            &transaction,
            actor,
            "delete",
            kinds::TENANT,
            Some(name),
            name,
        )
        .await?;
        self.commit(transaction, vec![Change::Tenant(name.to_owned())])
            .await
    }

    // ---- API tokens ----

    /// Creates an API token for a tenant (or an administrator token for `None`).
    /// Returns its description and the plaintext, which is not stored and cannot be
    /// shown again.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_api_token(
        &self,
        tenant: Option<&str>,
        name: &str,
        actor: &Actor,
    ) -> Result<(ApiTokenInfo, String), StoreError> {
        let plaintext = random_token(API_TOKEN_PREFIX)?;
        let id = random_hex(TOKEN_ID_RANDOM_BYTES)?;
        let transaction = self.begin().await?;
        if let Some(tenant) = tenant
            && tenants::Entity::find_by_id(tenant)
                .one(&transaction)
                .await?
                .is_none()
        {
            return Err(not_found(kinds::TENANT, tenant));
        }
        let now = now_ms();
        let row = api_tokens::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_owned()),
            token_hash: Set(token_hash(&plaintext)),
            tenant: Set(tenant.map(str::to_owned)),
            created_at_ms: Set(now),
            revoked_at_ms: Set(None),
        };
        api_tokens::Entity::insert(row)
            .exec_without_returning(&transaction)
            .await
            .map_err(|e| insert_error(e, kinds::API_TOKEN, &id))?;
        audit(&transaction, actor, "create", kinds::API_TOKEN, tenant, &id).await?;
        self.commit(transaction, Vec::new()).await?;
        let info = ApiTokenInfo {
            id,
            name: name.to_owned(),
            tenant: tenant.map(str::to_owned),
            created_at_ms: now,
        };
        Ok((info, plaintext))
    }

    /// Makes `plaintext` the bootstrap administrator token (id
    /// [`BOOTSTRAP_ADMIN_TOKEN_ID`]), replacing a previous bootstrap token. Idempotent.
    ///
    /// A revocation is never lifted: if `plaintext` is the bootstrap token that was
    /// revoked, this fails with [`StoreError::BootstrapTokenRevoked`] (issue 13, finding
    /// 10: a revoked bootstrap token worked again after a restart, so revoking a leaked
    /// one achieved nothing). A different token replaces the revoked one: that is how an
    /// operator gives the observer a new bootstrap token.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn ensure_admin_token(&self, plaintext: &str) -> Result<(), StoreError> {
        let hash = token_hash(plaintext);
        let transaction = self.begin().await?;
        let existing = api_tokens::Entity::find_by_id(BOOTSTRAP_ADMIN_TOKEN_ID)
            .one(&transaction)
            .await?;
        match existing {
            Some(row) if row.token_hash == hash => {
                return match row.revoked_at_ms {
                    None => Ok(()),
                    Some(revoked_at_ms) => Err(StoreError::BootstrapTokenRevoked { revoked_at_ms }),
                };
            }
            Some(row) => {
                let mut row = row.into_active_model();
                row.token_hash = Set(hash);
                row.tenant = Set(None);
                row.revoked_at_ms = Set(None);
                row.update(&transaction)
                    .await
                    .map_err(bootstrap_token_error)?;
            }
            None => {
                let row = api_tokens::ActiveModel {
                    id: Set(BOOTSTRAP_ADMIN_TOKEN_ID.to_owned()),
                    name: Set(BOOTSTRAP_ADMIN_TOKEN_ID.to_owned()),
                    token_hash: Set(hash),
                    tenant: Set(None),
                    created_at_ms: Set(now_ms()),
                    revoked_at_ms: Set(None),
                };
                api_tokens::Entity::insert(row)
                    .exec_without_returning(&transaction)
                    .await
                    .map_err(bootstrap_token_error)?;
            }
        }
        audit(
            &transaction,
            &Actor::system(),
            "ensure",
            kinds::API_TOKEN,
            None,
            BOOTSTRAP_ADMIN_TOKEN_ID,
        )
        .await?;
        self.commit(transaction, Vec::new()).await
    }

    /// Who a bearer token belongs to; `None` for unknown or revoked tokens.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn authenticate(&self, plaintext: &str) -> Result<Option<Principal>, StoreError> {
        if plaintext.is_empty() {
            return Ok(None);
        }
        let row = api_tokens::Entity::find()
            .filter(api_tokens::Column::TokenHash.eq(token_hash(plaintext)))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .one(self.reader())
            .await?;
        Ok(row.map(|row| match row.tenant {
            None => Principal::Admin,
            Some(tenant) => Principal::Tenant(tenant),
        }))
    }

    /// Tokens that are not revoked: of one tenant, or all of them for `None`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_api_tokens(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ApiTokenInfo>, StoreError> {
        let mut query = api_tokens::Entity::find()
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .order_by_asc(api_tokens::Column::CreatedAtMs)
            .order_by_asc(api_tokens::Column::Id);
        if let Some(tenant) = tenant {
            query = query.filter(api_tokens::Column::Tenant.eq(tenant));
        }
        Ok(query
            .all(self.reader())
            .await?
            .into_iter()
            .map(token_info_from_row)
            .collect())
    }

    /// One token that is not revoked, by id (to check who may revoke it).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_api_token(&self, id: &str) -> Result<Option<ApiTokenInfo>, StoreError> {
        Ok(api_tokens::Entity::find_by_id(id)
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .one(self.reader())
            .await?
            .map(token_info_from_row))
    }

    /// Revokes a token; it authenticates nobody from now on. Revoking twice is fine.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn revoke_api_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        let row = api_tokens::Entity::find_by_id(id)
            .one(&transaction)
            .await?
            .ok_or_else(|| not_found(kinds::API_TOKEN, id))?;
        if row.revoked_at_ms.is_some() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let mut row = row.into_active_model();
        row.revoked_at_ms = Set(Some(now_ms()));
        row.update(&transaction).await?;
        audit(
            &transaction,
            actor,
            "revoke",
            kinds::API_TOKEN,
            tenant.as_deref(),
            id,
        )
        .await?;
        self.commit(transaction, Vec::new()).await
    }

    /// Revokes every token of `tenant` that is not revoked yet, at once (an incident:
    /// a tenant's tokens leaked, or the tenant must be locked out). Each gets its audit
    /// entry; returns how many were revoked. Requests with them are refused from the
    /// commit on, by every replica, since every request looks its token up.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn revoke_tenant_api_tokens(
        &self,
        tenant: &str,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let transaction = self.begin().await?;
        let ids: Vec<String> = api_tokens::Entity::find()
            .filter(api_tokens::Column::Tenant.eq(tenant))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .select_only()
            .column(api_tokens::Column::Id)
            .into_tuple()
            .all(&transaction)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let revoked = api_tokens::Entity::update_many()
            .col_expr(
                api_tokens::Column::RevokedAtMs,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(api_tokens::Column::Id.is_in(ids.iter().map(String::as_str)))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .exec(&transaction)
            .await?
            .rows_affected;
        for id in &ids {
            audit(
                &transaction,
                actor,
                "revoke",
                kinds::API_TOKEN,
                Some(tenant),
                id,
            )
            .await?;
        }
        self.commit(transaction, Vec::new()).await?;
        Ok(revoked)
    }

    // ---- clusters and join tokens ----

    /// Registers a cluster in state `provisioning` and mints its first join token.
    /// Returns the cluster and the token's plaintext. A tenant at its cluster quota gets
    /// [`StoreError::QuotaExceeded`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_cluster(
        &self,
        new: NewCluster,
        join_token_ttl: Duration,
        actor: &Actor,
    ) -> Result<(Cluster, String), StoreError> {
        let transaction = self.begin().await?;
        quotas::lock_tenant(&transaction, &new.tenant).await?;
        // Names are unique per tenant: the question is only ever asked within the
        // caller's tenant, so its answer says nothing about other tenants.
        if find_cluster_named(&transaction, &new.tenant, &new.name)
            .await?
            .is_some()
        {
            return Err(already_exists(kinds::CLUSTER, &new.name));
        }
        quotas::enforce(&transaction, &new.tenant, quotas::Quota::Clusters).await?;
        let id = global_cluster_id(&new.tenant, &new.name);
        budgets::forget_cluster_budget(&transaction, &new.tenant, &id).await?;
        let now = now_ms();
        let row = clusters::ActiveModel {
            name: Set(id.clone()),
            local_name: Set(new.name.clone()),
            tenant: Set(new.tenant.clone()),
            labels: Set(labels_to_json(&new.labels)),
            state: Set(ClusterState::Provisioning.as_str().to_owned()),
            api_endpoint: Set(new.api_endpoint.clone()),
            agent_version: Set(None),
            agent_instance_id: Set(None),
            last_seen_ms: Set(None),
            connected: Set(false),
            certificate_serial: Set(None),
            certificate_not_after_ms: Set(None),
            applied_config_hash: Set(None),
            created_at_ms: Set(now),
            deleted_at_ms: Set(None),
            state_changed_at_ms: Set(now),
            connection_id: Set(None),
        };
        clusters::Entity::insert(row)
            .exec_without_returning(&transaction)
            .await
            .map_err(|e| insert_error(e, kinds::CLUSTER, &new.name))?;
        audit(
            &transaction,
            actor,
            "create",
            kinds::CLUSTER,
            Some(&new.tenant),
            &id,
        )
        .await?;
        let token = insert_join_token(&transaction, &id, join_token_ttl, now).await?;
        audit(
            &transaction,
            actor,
            "mint",
            kinds::JOIN_TOKEN,
            Some(&new.tenant),
            &id,
        )
        .await?;
        let cluster = Cluster {
            id: id.clone(),
            name: new.name.clone(),
            tenant: new.tenant.clone(),
            labels: new.labels,
            api_endpoint: new.api_endpoint,
            state: ClusterState::Provisioning,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms: None,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: now,
            deleted_at_ms: None,
        };
        self.commit(
            transaction,
            vec![Change::Cluster {
                tenant: new.tenant,
                id,
            }],
        )
        .await?;
        Ok((cluster, token))
    }

    /// A new single-use join token for an existing cluster (for example to re-join
    /// after losing the agent's certificate). Earlier unused tokens stay valid until
    /// they expire.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn mint_join_token(
        &self,
        cluster: &str,
        ttl: Duration,
        actor: &Actor,
    ) -> Result<String, StoreError> {
        let transaction = self.begin().await?;
        let row = find_cluster(&transaction, cluster).await?;
        if row.state == ClusterState::Deleted.as_str() {
            return Err(StoreError::Conflict(format!(
                "cluster {cluster:?} is deleted; register a new cluster instead"
            )));
        }
        let token = insert_join_token(&transaction, cluster, ttl, now_ms()).await?;
        audit(
            &transaction,
            actor,
            "mint",
            kinds::JOIN_TOKEN,
            Some(&row.tenant),
            cluster,
        )
        .await?;
        self.commit(
            transaction,
            vec![Change::Cluster {
                tenant: row.tenant,
                id: cluster.to_owned(),
            }],
        )
        .await?;
        Ok(token)
    }

    /// One cluster by its global id, including tombstones.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_cluster(&self, id: &str) -> Result<Option<Cluster>, StoreError> {
        clusters::Entity::find_by_id(id)
            .one(self.reader())
            .await?
            .map(cluster_from_row)
            .transpose()
    }

    /// The cluster `tenant` named `name`, including tombstones.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_cluster_named(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Cluster>, StoreError> {
        find_cluster_named(self.reader(), tenant, name)
            .await?
            .map(cluster_from_row)
            .transpose()
    }

    /// Clusters of one tenant, or all for `None`, by name; tombstones included (state
    /// `deleted`).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_clusters(&self, tenant: Option<&str>) -> Result<Vec<Cluster>, StoreError> {
        let mut query = clusters::Entity::find().order_by_asc(clusters::Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(clusters::Column::Tenant.eq(tenant));
        }
        query
            .all(self.reader())
            .await?
            .into_iter()
            .map(cluster_from_row)
            .collect()
    }

    /// Replaces a cluster's labels.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn update_cluster_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<Cluster, StoreError> {
        let transaction = self.begin().await?;
        let row = find_cluster(&transaction, name).await?;
        let mut cluster = cluster_from_row(row.clone())?;
        if cluster.state == ClusterState::Deleted {
            return Err(StoreError::Conflict(format!("cluster {name:?} is deleted")));
        }
        if cluster.labels == labels {
            return Ok(cluster);
        }
        let mut row = row.into_active_model();
        row.labels = Set(labels_to_json(&labels));
        row.update(&transaction).await?;
        audit(
            &transaction,
            actor,
            "update-labels",
            kinds::CLUSTER,
            Some(&cluster.tenant),
            name,
        )
        .await?;
        cluster.labels = labels;
        self.commit(transaction, vec![cluster_change(&cluster)])
            .await?;
        Ok(cluster)
    }

    /// Moves a cluster to `state` (no-op if it is there already). `Deleted` also sets
    /// the tombstone time.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_cluster_state(
        &self,
        name: &str,
        state: ClusterState,
        at_ms: i64,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        let row = find_cluster(&transaction, name).await?;
        if row.state == state.as_str() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let mut row = row.into_active_model();
        row.state = Set(state.as_str().to_owned());
        row.state_changed_at_ms = Set(at_ms);
        if state == ClusterState::Deleted {
            row.deleted_at_ms = Set(Some(at_ms));
            row.connected = Set(false);
            row.connection_id = Set(None);
        }
        row.update(&transaction).await?;
        audit(
            &transaction,
            actor,
            &format!("set-state:{state}"),
            kinds::CLUSTER,
            Some(&tenant),
            name,
        )
        .await?;
        self.commit(
            transaction,
            vec![Change::Cluster {
                tenant,
                id: name.to_owned(),
            }],
        )
        .await
    }

    /// Deletes a cluster, leaving a tombstone: state `deleted`, `deleted_at_ms` set,
    /// join tokens and certificates refused from now on. Deleting a tombstone is a
    /// no-op.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_cluster(&self, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        let row = find_cluster(&transaction, name).await?;
        if row.state == ClusterState::Deleted.as_str() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let now = now_ms();
        let mut row = row.into_active_model();
        row.state = Set(ClusterState::Deleted.as_str().to_owned());
        row.state_changed_at_ms = Set(now);
        row.deleted_at_ms = Set(Some(now));
        row.connected = Set(false);
        row.connection_id = Set(None);
        row.update(&transaction).await?;
        audit(
            &transaction,
            actor,
            "delete",
            kinds::CLUSTER,
            Some(&tenant),
            name,
        )
        .await?;
        self.commit(
            transaction,
            vec![Change::Cluster {
                tenant,
                id: name.to_owned(),
            }],
        )
        .await
    }

    /// Notes that the cluster's agent was heard from; `provisioning` and `silent`
    /// become `active`. Written with other agent reports ([`reports`]).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn record_agent_seen(
        &self,
        name: &str,
        instance_id: &str,
        version: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.agent_heard(name, instance_id, version, at_ms, None)
            .await
    }

    /// An agent stream opened: [`Store::record_agent_seen`] and
    /// [`Store::set_connected`] in one write, with other agent reports ([`reports`]).
    pub async fn record_agent_connected(
        &self,
        name: &str,
        instance_id: &str,
        version: &str,
        at_ms: i64,
        connection: &str,
    ) -> Result<(), StoreError> {
        self.agent_heard(name, instance_id, version, at_ms, Some(connection))
            .await
    }

    async fn agent_heard(
        &self,
        name: &str,
        instance_id: &str,
        version: &str,
        at_ms: i64,
        connection: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner
            .reports
            .write(ReportWrite::Seen {
                cluster: name.to_owned(),
                instance_id: instance_id.to_owned(),
                version: version.to_owned(),
                at_ms,
                connection: connection.map(str::to_owned),
            })
            .await
    }

    /// Stores the agent's latest configuration report; `APPLIED` also sets the
    /// cluster's `applied_config_hash`. Both are observations, announced as
    /// `ClusterReport` only, so they neither wake the reporting stream nor move probe
    /// targets. Written with other agent reports ([`reports`]).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn record_config_report(
        &self,
        cluster: &str,
        report: ConfigReport,
    ) -> Result<(), StoreError> {
        self.inner
            .reports
            .write(ReportWrite::Config {
                cluster: cluster.to_owned(),
                report,
            })
            .await
    }

    /// Queues an agent report and returns once it is queued, without waiting for the
    /// write: what an agent stream does, so that reading its next message (an
    /// `APPLIED` right after the `APPLYING`) does not wait for a commit. Reports are
    /// written in the order submitted; a failed one is logged.
    pub async fn submit_report(&self, report: ReportWrite) -> Result<(), StoreError> {
        self.inner.reports.submit(report).await
    }

    /// Stores the agent's latest health report. Written with other agent reports
    /// ([`reports`]).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn record_health(
        &self,
        cluster: &str,
        health: serde_json::Value,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .reports
            .write(ReportWrite::Health {
                cluster: cluster.to_owned(),
                health,
                at_ms,
            })
            .await
    }

    /// Notes that `connection` (a replica's connection of the cluster's agent) is open:
    /// the cluster is connected, and only `connection` may release it (see "Connected"
    /// in the module documentation).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_connected(&self, cluster: &str, connection: &str) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        let row = find_cluster(&transaction, cluster).await?;
        if row.connected && row.connection_id.as_deref() == Some(connection) {
            return Ok(());
        }
        let was_connected = row.connected;
        let mut row = row.into_active_model();
        row.connected = Set(true);
        row.connection_id = Set(Some(connection.to_owned()));
        row.update(&transaction).await?;
        // Another connection taking over changes nothing subscribers act on.
        let changes = if was_connected {
            Vec::new()
        } else {
            vec![Change::ClusterReport(cluster.to_owned())]
        };
        self.commit(transaction, changes).await
    }

    /// Notes that `connection` ended: the cluster is disconnected if `connection` is
    /// the one that set the flag; otherwise (another replica's connection took over)
    /// nothing changes. Returns whether the flag was cleared.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn release_connection(
        &self,
        cluster: &str,
        connection: &str,
    ) -> Result<bool, StoreError> {
        let transaction = self.begin().await?;
        let released = clusters::Entity::update_many()
            .col_expr(clusters::Column::Connected, Expr::value(false))
            .col_expr(
                clusters::Column::ConnectionId,
                Expr::value(Option::<String>::None),
            )
            .filter(clusters::Column::Name.eq(cluster))
            .filter(clusters::Column::ConnectionId.eq(connection))
            .exec(&transaction)
            .await?
            .rows_affected
            == 1;
        if !released {
            return Ok(false);
        }
        self.commit(transaction, vec![Change::ClusterReport(cluster.to_owned())])
            .await?;
        Ok(true)
    }

    /// The latest reports of a cluster; `None` if the cluster does not exist.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn cluster_report(&self, cluster: &str) -> Result<Option<ClusterReport>, StoreError> {
        let row = with_reports(clusters::Entity::find_by_id(cluster))
            .one(self.reader())
            .await?;
        row.map(|(row, report)| Ok(cluster_with_report(row, report)?.1))
            .transpose()
    }

    /// Clusters of one tenant, or all for `None`, each with its latest reports, in one
    /// query: by name, only names after `after` when given, at most `limit`. Tombstones
    /// included.
    pub async fn list_clusters_with_reports(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<(Cluster, ClusterReport)>, StoreError> {
        let mut query = clusters::Entity::find().order_by_asc(clusters::Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(clusters::Column::Tenant.eq(tenant));
        }
        if let Some(after) = after {
            query = query.filter(clusters::Column::Name.gt(after));
        }
        with_reports(query)
            .limit(limit)
            .all(self.reader())
            .await?
            .into_iter()
            .map(|(row, report)| cluster_with_report(row, report))
            .collect()
    }

    /// The named clusters that exist, each with its latest reports, by name: a few
    /// queries however many names (the status task's incremental update).
    pub async fn clusters_with_reports(
        &self,
        names: &[String],
    ) -> Result<Vec<(Cluster, ClusterReport)>, StoreError> {
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(NAMES_PER_QUERY) {
            let rows = with_reports(
                clusters::Entity::find()
                    .filter(clusters::Column::Name.is_in(chunk.iter().map(String::as_str))),
            )
            .all(self.reader())
            .await?;
            for (row, report) in rows {
                found.push(cluster_with_report(row, report)?);
            }
        }
        found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(found)
    }

    /// The latest reports of the named clusters that exist, with each one's tenant and
    /// state, by name: only the columns a pipeline status depends on that a report can
    /// change (not the registration, labels or certificate), a few queries however many
    /// names. The status task reads this after `Change::ClusterReport`; a report
    /// changes neither labels nor the desired configuration.
    pub async fn reports_of(&self, names: &[String]) -> Result<Vec<ReportedCluster>, StoreError> {
        type Row = (
            String,
            String,
            String,
            bool,
            Option<serde_json::Value>,
            Option<serde_json::Value>,
        );
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(NAMES_PER_QUERY) {
            let rows: Vec<Row> = clusters::Entity::find()
                .select_only()
                .column(clusters::Column::Name)
                .column(clusters::Column::Tenant)
                .column(clusters::Column::State)
                .column(clusters::Column::Connected)
                .column(cluster_reports::Column::ConfigReport)
                .column(cluster_reports::Column::Health)
                .join(sea_orm::JoinType::LeftJoin, reports_relation())
                .filter(clusters::Column::Name.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(self.reader())
                .await?;
            for (name, tenant, state, connected, config, health) in rows {
                let config = config
                    .map(|json| {
                        serde_json::from_value::<ConfigReport>(json).map_err(|e| {
                            StoreError::Corrupt(format!("config report of cluster {name:?}: {e}"))
                        })
                    })
                    .transpose()?;
                found.push(ReportedCluster {
                    tenant,
                    state: parse_state(&state)?,
                    report: ClusterReport {
                        cluster: name,
                        config,
                        health,
                        connected,
                    },
                });
            }
        }
        found.sort_by(|a, b| a.report.cluster.cmp(&b.report.cluster));
        Ok(found)
    }

    // ---- pipelines ----

    /// Replaces every `***` inline value of `resource` with the value stored for the
    /// same field of the tenant's pipeline of that name. The API calls this before
    /// validating an update (validation would refuse `***` as PEM, for example);
    /// [`Store::apply_pipeline`] does it again, so calling it is optional otherwise.
    /// [`StoreError::Conflict`] names a field sent as `***` that has no stored value.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn restore_masked_secrets(
        &self,
        tenant: &str,
        resource: &mut MetricPipeline,
    ) -> Result<(), StoreError> {
        let name = resource.metadata.name.clone().unwrap_or_default();
        let stored = pipelines::Entity::find_by_id((tenant.to_owned(), name))
            .one(self.reader())
            .await?
            // A stored document that cannot be opened keeps no value: `***` is refused
            // and the real value must be sent, which is how such a pipeline is repaired.
            .and_then(|row| self.open_document(&row).ok());
        restore_masked(resource, stored.as_ref())
    }

    /// Creates or updates a pipeline of `tenant`. Inline secret values are sealed
    /// before they are written; `***` keeps the stored value of that field. The
    /// generation grows only when the spec changed. Returns the stored pipeline and
    /// whether it was created. A new pipeline beyond the tenant's quota is
    /// [`StoreError::QuotaExceeded`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_pipeline(
        &self,
        tenant: &str,
        pipeline: ValidatedPipeline,
        actor: &Actor,
    ) -> Result<(StoredPipeline, bool), StoreError> {
        let name = pipeline.name().to_owned();
        let mut resource = normalize(pipeline.into_resource());
        let transaction = self.begin().await?;
        quotas::lock_tenant(&transaction, tenant).await?;
        let existing = pipelines::Entity::find_by_id((tenant.to_owned(), name.clone()))
            .one(&transaction)
            .await?;
        // An unreadable stored document (see `pipeline_rows`) is replaced as if absent.
        let stored = existing
            .as_ref()
            .and_then(|row| self.open_document(row).ok());
        restore_masked(&mut resource, stored.as_ref())?;
        let validated = kaas_pipeline::validate(&resource, &stored_pipeline_validation()).map_err(
            |errors| {
                StoreError::Conflict(format!(
                    "pipeline {name:?} is invalid with the stored secret values: {errors}"
                ))
            },
        )?;
        let now = now_ms();
        let change = Change::Pipeline {
            tenant: tenant.to_owned(),
            name: name.clone(),
        };
        let (result, created) = match existing {
            Some(row) => {
                let spec_changed = stored.as_ref().is_none_or(|s| s.spec != resource.spec);
                if !spec_changed
                    && stored
                        .as_ref()
                        .is_some_and(|s| s.metadata == resource.metadata)
                {
                    return Ok((self.stored_pipeline(row, validated)?, false));
                }
                let generation = row.generation + i64::from(spec_changed);
                let mut active = row.into_active_model();
                active.spec = Set(self.seal_document(tenant, &resource)?);
                active.generation = Set(generation);
                active.updated_at_ms = Set(now);
                let row = active.update(&transaction).await?;
                audit(
                    &transaction,
                    actor,
                    "update",
                    kinds::PIPELINE,
                    Some(tenant),
                    &name,
                )
                .await?;
                (self.stored_pipeline(row, validated)?, false)
            }
            None => {
                let quota = quotas::Quota::Pipelines(kaas_pipeline::KIND);
                quotas::enforce(&transaction, tenant, quota).await?;
                let status = serde_json::to_value(MetricPipelineStatus::default())
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
                let row = pipelines::Model {
                    tenant: tenant.to_owned(),
                    name: name.clone(),
                    spec: self.seal_document(tenant, &resource)?,
                    generation: 1,
                    status,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                pipelines::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(&transaction)
                    .await
                    .map_err(|e| insert_error(e, kinds::PIPELINE, &format!("{tenant}/{name}")))?;
                audit(
                    &transaction,
                    actor,
                    "create",
                    kinds::PIPELINE,
                    Some(tenant),
                    &name,
                )
                .await?;
                (self.stored_pipeline(row, validated)?, true)
            }
        };
        self.commit(transaction, vec![change]).await?;
        Ok((result, created))
    }

    /// One pipeline, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_pipeline(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredPipeline>, StoreError> {
        pipelines::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(self.reader())
            .await?
            .map(|row| self.load_pipeline(row))
            .transpose()
    }

    /// The pipelines the observer can read, of one tenant or all for `None`, by tenant
    /// and name. An unreadable row runs nowhere and is left out here (its own status says
    /// why, see [`pipeline_rows`]), so one such row never fails what reads the others:
    /// renders, budget checks.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_pipelines(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredPipeline>, StoreError> {
        Ok(self
            .list_pipeline_rows(tenant)
            .await?
            .into_iter()
            .filter_map(|row| match row {
                pipeline_rows::PipelineRow::Readable(stored) => Some(*stored),
                pipeline_rows::PipelineRow::Unreadable(_) => None,
            })
            .collect())
    }

    /// Every pipeline's tenant, name, generation and status, by tenant and name: what
    /// the fleet metrics show, in one query that neither reads nor opens the documents.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipeline_summaries(&self) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(None).await
    }

    /// [`Store::pipeline_summaries`] of one tenant.
    pub async fn pipeline_summaries_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(Some(tenant)).await
    }

    async fn summaries(&self, tenant: Option<&str>) -> Result<Vec<PipelineSummary>, StoreError> {
        let mut query = pipelines::Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(pipelines::Column::Tenant.eq(tenant));
        }
        let rows: Vec<(String, String, i64, serde_json::Value)> = query
            .select_only()
            .column(pipelines::Column::Tenant)
            .column(pipelines::Column::Name)
            .column(pipelines::Column::Generation)
            .column(pipelines::Column::Status)
            .order_by_asc(pipelines::Column::Tenant)
            .order_by_asc(pipelines::Column::Name)
            .into_tuple()
            .all(self.reader())
            .await?;
        rows.into_iter()
            .map(|(tenant, name, generation, status)| {
                let status = serde_json::from_value(status).map_err(|e| {
                    StoreError::Corrupt(format!("status of pipeline {tenant}/{name}: {e}"))
                })?;
                Ok(PipelineSummary {
                    tenant,
                    name,
                    generation,
                    status,
                })
            })
            .collect()
    }

    /// Deletes a pipeline.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_pipeline(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let transaction = self.begin().await?;
        let deleted = pipelines::Entity::delete_by_id((tenant.to_owned(), name.to_owned()))
            .exec(&transaction)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(not_found(kinds::PIPELINE, &format!("{tenant}/{name}")));
        }
        audit(
            &transaction,
            actor,
            "delete",
            kinds::PIPELINE,
            Some(tenant),
            name,
        )
        .await?;
        self.commit(
            transaction,
            vec![Change::Pipeline {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }],
        )
        .await
    }

    /// Stores a pipeline's status (no-op if unchanged).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_pipeline_status(
        &self,
        tenant: &str,
        name: &str,
        status: MetricPipelineStatus,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_value(&status)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
        let transaction = self.begin().await?;
        let row = pipelines::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(&transaction)
            .await?
            .ok_or_else(|| not_found(kinds::PIPELINE, &format!("{tenant}/{name}")))?;
        if row.status == json {
            return Ok(());
        }
        let mut row = row.into_active_model();
        row.status = Set(json);
        row.update(&transaction).await?;
        self.commit(
            transaction,
            vec![Change::PipelineStatus {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }],
        )
        .await
    }

    /// The pipelines a cluster runs: its tenant's pipelines whose cluster selector
    /// matches its labels, by name, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipelines_for_cluster(
        &self,
        cluster: &Cluster,
    ) -> Result<Vec<ValidatedPipeline>, StoreError> {
        Ok(self
            .list_pipelines(Some(&cluster.tenant))
            .await?
            .into_iter()
            .map(|stored| stored.pipeline)
            .filter(|pipeline| pipeline.spec().cluster_selector.matches(&cluster.labels))
            .collect())
    }

    // ---- audit ----

    /// The newest `limit` audit entries, newest first.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn audit_entries(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(audit_log::Entity::find()
            .order_by_desc(audit_log::Column::Id)
            .limit(limit)
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| AuditEntry {
                at_ms: row.at_ms,
                actor: row.actor,
                action: row.action,
                kind: row.kind,
                name: row.name,
                tenant: row.tenant,
            })
            .collect())
    }

    // ---- pipeline documents ----

    /// The document as stored: every inline secret value sealed for `tenant`, this
    /// pipeline and its field (see [`secret_field`]).
    fn seal_document(
        &self,
        tenant: &str,
        resource: &MetricPipeline,
    ) -> Result<serde_json::Value, StoreError> {
        let mut sealed = resource.clone();
        let name = sealed.metadata.name.clone().unwrap_or_default();
        for (path, value) in sealed.spec.output.inline_secrets_mut() {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner(tenant, &name, &field);
            *value = SecretString::new(self.inner.secrets.seal(value.expose(), &owner)?);
        }
        serde_json::to_value(&sealed)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a pipeline: {e}")))
    }

    /// The stored document with its secrets opened.
    fn open_document(&self, row: &pipelines::Model) -> Result<MetricPipeline, StoreError> {
        let mut resource: MetricPipeline =
            serde_json::from_value(row.spec.clone()).map_err(|e| {
                StoreError::Corrupt(format!("pipeline {}/{}: {e}", row.tenant, row.name))
            })?;
        for (path, value) in resource.spec.output.inline_secrets_mut() {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner(&row.tenant, &row.name, &field);
            let plaintext =
                self.inner
                    .secrets
                    .open(value.expose(), &owner)
                    .map_err(|e| match e {
                        SecretError::Format => StoreError::Corrupt(format!(
                            "pipeline {}/{}: {field} is not sealed",
                            row.tenant, row.name
                        )),
                        source => StoreError::SecretUnreadable {
                            pipeline: format!("{}/{}", row.tenant, row.name),
                            field,
                            source,
                        },
                    })?;
            *value = SecretString::new(plaintext);
        }
        Ok(resource)
    }

    fn load_pipeline(&self, row: pipelines::Model) -> Result<StoredPipeline, StoreError> {
        let resource = self.open_document(&row)?;
        let validated = kaas_pipeline::validate(&resource, &stored_pipeline_validation()).map_err(
            |errors| {
                StoreError::Corrupt(format!(
                    "stored pipeline {}/{} no longer validates: {errors}",
                    row.tenant, row.name
                ))
            },
        )?;
        self.stored_pipeline(row, validated)
    }

    fn stored_pipeline(
        &self,
        row: pipelines::Model,
        pipeline: ValidatedPipeline,
    ) -> Result<StoredPipeline, StoreError> {
        let status = serde_json::from_value(row.status).map_err(|e| {
            StoreError::Corrupt(format!(
                "status of pipeline {}/{}: {e}",
                row.tenant, row.name
            ))
        })?;
        Ok(StoredPipeline {
            tenant: row.tenant,
            pipeline,
            generation: row.generation,
            status,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }
}

/// The field path of an inline secret, from the spec root: `spec.output.<path>`.
fn secret_field(output_path: &str) -> String {
    format!("spec.output.{output_path}")
}

/// What an inline secret of a pipeline is sealed for.
fn pipeline_secret_owner<'a>(tenant: &'a str, name: &'a str, field: &'a str) -> SecretOwner<'a> {
    SecretOwner {
        tenant,
        kind: kinds::PIPELINE,
        name,
        field,
    }
}

/// Keeps what identifies and describes a pipeline (name, labels, annotations) and its
/// spec; drops server-set metadata and status.
/// How stored pipelines are validated again once their secrets are opened: as pipelines
/// the observer distributes, so no stored row can carry what an agent in observer mode
/// refuses (`valueFrom.file`). The provider's policy (Secret namespaces, tenancy
/// headers) is the API's to check when a pipeline is applied.
fn stored_pipeline_validation() -> kaas_pipeline::ValidationContext {
    kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::unrestricted())
}

fn normalize(mut resource: MetricPipeline) -> MetricPipeline {
    let mut given = std::mem::take(&mut resource.metadata);
    resource.metadata.name = given.name.take();
    resource.metadata.labels = given.labels.take().filter(|labels| !labels.is_empty());
    resource.metadata.annotations = given
        .annotations
        .take()
        .filter(|annotations| !annotations.is_empty());
    resource.status = None;
    resource
}

/// Replaces `***` values by the stored value of the same field path.
fn restore_masked(
    resource: &mut MetricPipeline,
    stored: Option<&MetricPipeline>,
) -> Result<(), StoreError> {
    let mut stored_values: BTreeMap<String, String> = match stored {
        None => BTreeMap::new(),
        Some(stored) => {
            let mut stored = stored.clone();
            stored
                .spec
                .output
                .inline_secrets_mut()
                .into_iter()
                .map(|(path, value)| (path, value.expose().to_owned()))
                .collect()
        }
    };
    let mut missing = BTreeSet::new();
    for (path, value) in resource.spec.output.inline_secrets_mut() {
        if value.expose() != MASKED_SECRET {
            continue;
        }
        match stored_values.remove(&path) {
            Some(stored) if stored != MASKED_SECRET => *value = SecretString::new(stored),
            _ => {
                missing.insert(format!("spec.output.{path}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "{} {} \"***\", which keeps a stored secret, but no value is stored for {}; \
             send the real value",
            missing.iter().cloned().collect::<Vec<_>>().join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
        )))
    }
}

/// See [`Store::commit`]; also used by the report writer.
async fn commit_changes(
    transaction: DatabaseTransaction,
    changes: Vec<Change>,
    origin: &str,
    feed: &broadcast::Sender<Change>,
) -> Result<(), StoreError> {
    if transaction.get_database_backend() == DbBackend::Postgres {
        for change in &changes {
            let payload = serde_json::to_string(&Notification {
                origin: origin.to_owned(),
                change: change.clone(),
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a change: {e}")))?;
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [NOTIFY_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
    }
    transaction.commit().await?;
    for change in changes {
        // No subscriber is fine: nobody is waiting for changes.
        let _ = feed.send(change);
    }
    Ok(())
}

async fn sqlite_pool(
    connections: u32,
    options: sqlx::sqlite::SqliteConnectOptions,
) -> Result<sqlx::SqlitePool, StoreError> {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(connections)
        .acquire_slow_threshold(SLOW_ACQUIRE_THRESHOLD)
        .acquire_slow_level(log::LevelFilter::Debug)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Database(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()))))
}

async fn audit(
    transaction: &DatabaseTransaction,
    actor: &Actor,
    action: &str,
    kind: &str,
    tenant: Option<&str>,
    name: &str,
) -> Result<(), StoreError> {
    let row = audit_log::ActiveModel {
        at_ms: Set(now_ms()),
        actor: Set(actor.0.clone()),
        action: Set(action.to_owned()),
        kind: Set(kind.to_owned()),
        tenant: Set(tenant.map(str::to_owned)),
        name: Set(name.to_owned()),
        ..Default::default()
    };
    audit_log::Entity::insert(row)
        .exec_without_returning(transaction)
        .await?;
    Ok(())
}

/// The cluster `tenant` named `name`, tombstones included.
async fn find_cluster_named(
    connection: &impl ConnectionTrait,
    tenant: &str,
    name: &str,
) -> Result<Option<clusters::Model>, StoreError> {
    Ok(clusters::Entity::find()
        .filter(clusters::Column::Tenant.eq(tenant))
        .filter(clusters::Column::LocalName.eq(name))
        .one(connection)
        .await?)
}

async fn find_cluster(
    transaction: &DatabaseTransaction,
    name: &str,
) -> Result<clusters::Model, StoreError> {
    clusters::Entity::find_by_id(name)
        .one(transaction)
        .await?
        .ok_or_else(|| not_found(kinds::CLUSTER, name))
}

async fn insert_join_token(
    transaction: &DatabaseTransaction,
    cluster: &str,
    ttl: Duration,
    now: i64,
) -> Result<String, StoreError> {
    let plaintext = random_token(JOIN_TOKEN_PREFIX)?;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let row = join_tokens::ActiveModel {
        token_hash: Set(token_hash(&plaintext)),
        cluster: Set(cluster.to_owned()),
        created_at_ms: Set(now),
        expires_at_ms: Set(now.saturating_add(ttl_ms)),
        used_at_ms: Set(None),
        csr_sha256: Set(None),
        certificate_serial: Set(None),
    };
    join_tokens::Entity::insert(row)
        .exec_without_returning(transaction)
        .await?;
    Ok(plaintext)
}

/// Receives other replicas' notifications and republishes them locally, reconnecting
/// with backoff; after a reconnect, republishes every cluster and pipeline because
/// notifications sent in the gap are lost.
async fn listen_for_changes(
    db: DatabaseConnection,
    changes: broadcast::Sender<Change>,
    origin: String,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let pool = db.get_postgres_connection_pool().clone();
    let mut backoff = LISTENER_BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(mut listener) => {
                if connected_before {
                    tracing::info!("change listener reconnected to PostgreSQL; resyncing");
                    if let Err(error) = republish_everything(&db, &changes).await {
                        tracing::warn!(%error, "cannot list clusters and pipelines for a resync");
                    }
                }
                connected_before = true;
                backoff = LISTENER_BACKOFF_MIN;
                if let Some(ready) = ready.take() {
                    // `connect` may have stopped waiting; that is fine.
                    let _ = ready.send(());
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            match serde_json::from_str::<Notification>(notification.payload()) {
                                Ok(message) if message.origin == origin => {}
                                Ok(message) => {
                                    let _ = changes.send(message.change);
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "ignoring a malformed change notification");
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!("change listener lost its PostgreSQL connection");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "change listener failed");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot listen for changes on PostgreSQL");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
    }
}

async fn republish_everything(
    db: &DatabaseConnection,
    changes: &broadcast::Sender<Change>,
) -> Result<(), DbErr> {
    let clusters: Vec<(String, String)> = clusters::Entity::find()
        .select_only()
        .column(clusters::Column::Tenant)
        .column(clusters::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    for (tenant, name) in clusters {
        let _ = changes.send(Change::Cluster { tenant, id: name });
    }
    let pipelines: Vec<(String, String)> = pipelines::Entity::find()
        .select_only()
        .column(pipelines::Column::Tenant)
        .column(pipelines::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    for (tenant, name) in pipelines {
        let _ = changes.send(Change::Pipeline { tenant, name });
    }
    Ok(())
}

fn tenant_from_row(row: tenants::Model) -> Tenant {
    Tenant {
        name: row.name,
        created_at_ms: row.created_at_ms,
    }
}

fn token_info_from_row(row: api_tokens::Model) -> ApiTokenInfo {
    ApiTokenInfo {
        id: row.id,
        name: row.name,
        tenant: row.tenant,
        created_at_ms: row.created_at_ms,
    }
}

fn parse_state(text: &str) -> Result<ClusterState, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

fn cluster_from_row(row: clusters::Model) -> Result<Cluster, StoreError> {
    let labels = serde_json::from_value(row.labels)
        .map_err(|e| StoreError::Corrupt(format!("labels of cluster {:?}: {e}", row.name)))?;
    Ok(Cluster {
        state: parse_state(&row.state)?,
        id: row.name,
        name: row.local_name,
        tenant: row.tenant,
        labels,
        api_endpoint: row.api_endpoint,
        agent_version: row.agent_version,
        agent_instance_id: row.agent_instance_id,
        last_seen_ms: row.last_seen_ms,
        certificate_serial: row.certificate_serial,
        certificate_not_after_ms: row.certificate_not_after_ms,
        applied_config_hash: row.applied_config_hash,
        connected: row.connected,
        created_at_ms: row.created_at_ms,
        deleted_at_ms: row.deleted_at_ms,
    })
}

/// `query` with each cluster's `cluster_reports` row (if any) beside it: one left join.
fn with_reports(
    query: sea_orm::Select<clusters::Entity>,
) -> sea_orm::SelectTwo<clusters::Entity, cluster_reports::Entity> {
    query
        .join(sea_orm::JoinType::LeftJoin, reports_relation())
        .select_also(cluster_reports::Entity)
}

/// `clusters` to their `cluster_reports` row, if any.
fn reports_relation() -> sea_orm::RelationDef {
    clusters::Entity::belongs_to(cluster_reports::Entity)
        .from(clusters::Column::Name)
        .to(cluster_reports::Column::Cluster)
        .into()
}

fn cluster_with_report(
    row: clusters::Model,
    report: Option<cluster_reports::Model>,
) -> Result<(Cluster, ClusterReport), StoreError> {
    let cluster = cluster_from_row(row)?;
    let (config, health) = match report {
        None => (None, None),
        Some(report) => {
            let config = report
                .config_report
                .map(|json| {
                    serde_json::from_value::<ConfigReport>(json).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "config report of cluster {:?}: {e}",
                            cluster.id
                        ))
                    })
                })
                .transpose()?;
            (config, report.health)
        }
    };
    let report = ClusterReport {
        cluster: cluster.id.clone(),
        config,
        health,
        connected: cluster.connected,
    };
    Ok((cluster, report))
}

fn cluster_change(cluster: &Cluster) -> Change {
    Change::Cluster {
        tenant: cluster.tenant.clone(),
        id: cluster.id.clone(),
    }
}

fn labels_to_json(labels: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn not_found(kind: &'static str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.to_owned(),
    }
}

fn already_exists(kind: &'static str, name: &str) -> StoreError {
    StoreError::AlreadyExists {
        kind,
        name: name.to_owned(),
    }
}

/// A concurrent insert of the same key (another replica) reads as "already exists".
fn insert_error(error: DbErr, kind: &'static str, name: &str) -> StoreError {
    if StoreError::is_unique_violation(&error) {
        already_exists(kind, name)
    } else {
        StoreError::Database(error)
    }
}

fn bootstrap_token_error(error: DbErr) -> StoreError {
    if StoreError::is_unique_violation(&error) {
        StoreError::Conflict(
            "the bootstrap admin token is already in use as another API token; choose another"
                .into(),
        )
    } else {
        StoreError::Database(error)
    }
}

/// Lower-case hex SHA-256: how tokens are stored and looked up.
fn token_hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

fn random_bytes(count: usize) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0u8; count];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Secrets(SecretError::Random))?;
    Ok(bytes)
}

fn random_hex(count: usize) -> Result<String, StoreError> {
    Ok(hex::encode(random_bytes(count)?))
}

/// `<prefix><base64url of 32 random bytes>`.
fn random_token(prefix: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(random_bytes(TOKEN_RANDOM_BYTES)?)
    ))
}

/// The current time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
