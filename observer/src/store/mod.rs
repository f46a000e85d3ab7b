//! The observer's database: tenants, API tokens, clusters, join tokens, pipelines, agent reports and the audit trail (sea-orm; SQLite embedded, PostgreSQL for HA).
//!
//! # Aggregates
//! One file per aggregate, each with its table(s), types and `impl Store` block:
//! [`tenants`], [`tokens`] (API and join tokens), [`clusters`] (with their reports read
//! back), [`pipelines`] ([`pipeline_rows`] for rows that cannot be read), [`audit`],
//! [`feed`] (the change feed), [`reports`] (what agents report, group-committed),
//! [`certificates`], [`deletions`] (incarnations and held deletions), [`instances`]
//! (health per agent instance),
//! [`probe_endpoints`], [`quotas`], [`budgets`], [`control_planes`], [`tenancy`],
//! [`replicas`], [`leases`], [`templates`] (pipeline templates and their generations) and
//! [`template_instances`] (instances rendered into pipelines). Every decision is written through one
//! [`mutation::Mutation`]: begin, audit, commit and publish.
//!
//! # Tables
//! Created by [`migrations`] (each table by the migration named beside it); one entity
//! per table in `entities/`. All timestamps are `i64` Unix milliseconds.
//!
//! | table             | key              | holds | migration |
//! |-------------------|------------------|-------|-----------|
//! | `tenants`         | `name`           | creation time | first |
//! | `api_tokens`      | `id`, unique `token_hash` | SHA-256 of the bearer token; `tenant` NULL = administrator; `revoked_at_ms` | first |
//! | `clusters`        | `name` (the global id), unique (`tenant`, `local_name`) | tenant, the tenant's name for it, labels (JSON), state ([`ClusterState`]), agent version and instance, last seen, connected and `connection_id`, certificate serial and expiry, applied config hash, tombstone time | first; `connection_id` second; `local_name` `add_cluster_local_names` |
//! | `join_tokens`     | `token_hash`     | cluster, expiry, `used_at_ms` (set once), the CSR and certificate of its redemption | first, extended by `create_agent_certificates` |
//! | `pipelines`       | (`tenant`, `kind`, `name`) | the pipeline document (`MetricPipeline`, `LogPipeline`, `TracePipeline`) as JSON with inline secret values sealed, `generation`, status JSON | first, `add_pipeline_kinds` |
//! | `cluster_reports` | `cluster`        | the cluster-level agent instance's last config report and health report (JSON) | first |
//! | `instance_health` | (`cluster`, `instance`, `kind`, `pipeline`) | each agent instance's latest health of each pipeline, its problems and worst rank, when received ([`instances`]) | `create_instance_health`, `add_instance_health_role` (the reporting instance's role: a live `gateway` row means the cluster's gateway is in use) |
//! | `audit_log`       | increasing `id`  | at, actor, action, kind, tenant, name; never a value | first; indexes `add_audit_log_indexes` |
//! | `probe_endpoints` | (`tenant`, `name`) | the endpoint's cluster, module and spec ([`probe_endpoints`]) | `create_probe_endpoints` |
//! | `replicas`        | `id`             | when each observer replica was last seen ([`replicas`]) | `create_replicas` |
//! | `cluster_buffer_budgets` | (`tenant`, `cluster`) | a cluster's agent buffer budget in bytes ([`budgets`]) | `create_cluster_buffer_budgets` |
//! | `cluster_control_planes` | (`tenant`, `cluster`) | which control-plane components the central pipeline scrapes on a cluster, as validated JSON ([`control_planes`]) | `create_cluster_control_planes` |
//! | `tenant_quotas`   | (`tenant`, `quota`) | a tenant's limits on clusters, pipelines and probe endpoints, checked in the creating transaction ([`quotas`]) | `create_tenant_quotas` |
//! | `cluster_api_namespaces` | `namespace` | the tenant an administrator mapped a Cluster API namespace to ([`tenancy`]) | `create_cluster_api_namespaces` |
//! | `agent_certificates` | `serial`      | one row per issued agent certificate: cluster, instance, PEM, expiry, revocation ([`certificates`]) | `create_agent_certificates` |
//! | `cluster_tombstones` | (`cluster`, `incarnation`) | earlier incarnations of clusters whose name was registered again ([`deletions`]) | `add_cluster_incarnations` (also `clusters.incarnation`) |
//! | `pipeline_templates` | (`tenant`, `name`, `generation`) | every generation of every pipeline template as validated JSON, its pipeline kind; tenant `""` holds the provider's ([`templates`]) | `create_pipeline_templates` |
//! | `pipeline_instances` | (`tenant`, `name`) | each template instance as JSON, the template it binds and the generation it is pinned to (NULL: the latest), its pipeline's kind, the template generation that pipeline was rendered from ([`template_instances`]) | `create_pipeline_templates` |
//! | `pending_deletions` | `cluster`      | changes the mass-deletion guard holds: source, target state, evidence, confirmation ([`deletions`]) | `create_pending_deletions` |
//! | `kaas_observer_migrations` | `version` | the ids of the migrations applied | (sea-orm-migration) |
//!
//! # Cluster names and global ids
//! A tenant names its clusters; names are unique per tenant, so two tenants may each
//! have `prod`, and asking whether a name is taken only ever looks inside the caller's
//! tenant. Everything provider-wide (agent certificates, the `cluster` label, the
//! observer's series, probe assignment, every row that refers to a cluster) uses the
//! cluster's global id instead ([`Cluster::id`], the `clusters.name` key column):
//! `<tenant>.<name>` ([`global_cluster_id`]) for clusters registered since names are per
//! tenant, the old globally unique name for clusters registered before (their
//! certificates and data keep working unchanged; see `migrations/identity.rs`).
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
//! keeps its row as a tombstone (state `deleted`), so its certificates stay refused;
//! registering the name again makes a new incarnation, which revokes them for good and
//! keeps the tombstone in the history ([`deletions`]). The same transaction records the
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
//! an agent seen (`ReportWrite::Seen`) publishes when state, version or instance changes, not for every
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
//! (`<replica id>/<number>`, chosen by the control service). a newly opened connection
//! (a [`ReportWrite::Seen`] with its connection) is recorded unconditionally: the newest wins, because an
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

pub mod audit;
pub mod budgets;
pub mod certificates;
pub mod clusters;
mod config_states;
pub mod control_planes;
pub mod deletions;
mod entities;
mod errors;
pub mod feed;
pub mod instances;
pub mod leases;
pub mod migrations;
mod mutation;
mod onboarding;
pub mod pipeline_kind;
pub mod pipeline_rows;
pub mod pipelines;
pub mod probe_endpoints;
pub mod quotas;
pub mod replicas;
pub mod reports;
pub mod template_instances;
mod template_secrets;
pub(crate) use template_secrets::spec_header_values;
pub mod templates;
pub mod tenancy;
pub mod tenants;
#[cfg(test)]
mod tests;
pub mod tokens;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use sea_orm::sqlx;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

pub use crate::cluster_id::{GLOBAL_ID_SEPARATOR, global_cluster_id};
pub use crate::lifecycle::ClusterState;
use crate::secrets::SecretBox;
pub use audit::{Actor, AuditEntry};
pub use clusters::{Cluster, ClusterReport, NewCluster, ReportedCluster};
use clusters::{
    NAMES_PER_QUERY, cluster_change, cluster_from_row, find_cluster, find_cluster_named,
    labels_to_json, not_tombstone, parse_state,
};
pub use deletions::{ClusterTombstone, HeldDeletion, PendingDeletion};
pub use errors::{RedeemError, StoreError};
use feed::{CHANGE_FEED_CAPACITY, listen_for_changes};
pub use feed::{Change, NOTIFY_CHANNEL};
use migrations::Migrator;
pub use pipeline_kind::PipelineKind;
pub use pipelines::{MASKED_SECRET, PipelineSummary, StoredPipeline, mask_secrets};
pub use reports::{ConfigErrorRecord, ConfigReport, ReportWrite};
use reports::{ReportQueue, ReportWriter};
pub use template_instances::{InstanceWritten, StoredInstance};
pub use templates::{PROVIDER_SCOPE, StoredTemplate, TemplateWritten};
pub use tenants::Tenant;
pub use tokens::{
    API_TOKEN_PREFIX, ApiTokenInfo, BOOTSTRAP_ADMIN_TOKEN_ID, JOIN_TOKEN_PREFIX, Principal,
};
use tokens::{random_hex, token_hash};

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
    /// The time-to-live of instance health, milliseconds ([`instances`]).
    instance_ttl_ms: AtomicI64,
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
                instance_ttl_ms: AtomicI64::new(
                    i64::try_from(instances::DEFAULT_INSTANCE_HEALTH_TTL.as_millis())
                        .unwrap_or(i64::MAX),
                ),
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

/// The current time in Unix milliseconds: the workspace's one wall clock.
pub use kaas_series::clock::now_ms;
