//! Agent reports: what an agent says about its configuration, health and connection
//! ([`ConfigReport`], [`ReportWrite`]), written in groups: one task per store commits every report that
//! waits for the writer in one transaction (group commit).
//!
//! # Why
//! Each agent stream reports on its own (a connect, then APPLYING and APPLIED for every
//! configuration, health every 30 s). A transaction per report costs a BEGIN and a
//! COMMIT beside its statements, each a round trip to SQLite's single writer thread;
//! 10,000 agents answering one pipeline change, or reconnecting after a restart, queue
//! 20,000 such transactions behind each other.
//!
//! # How
//! [`Store::report`] queues a [`ReportWrite`] and waits for its result
//! ([`Store::submit_report`] only queues it; an agent stream reports so; an opened
//! stream is a [`ReportWrite::Seen`] with its connection).
//! The writer takes everything queued (up to
//! [`MAX_REPORT_BATCH`]) and writes it in one transaction:
//! * agent seen / connected: per report, as the single write would (read the row,
//!   update it, audit a state change), in arrival order;
//! * config reports: only the last report of each cluster is stored (an `APPLYING`
//!   followed by its `APPLIED` in the same batch becomes one row write), in one
//!   multi-row upsert; each cluster's applied hash is set from its last `APPLIED`, all
//!   in one `UPDATE … FROM (VALUES …)` that leaves a row alone when its hash is already
//!   stored;
//! * health: the last report of each cluster, in one multi-row upsert;
//! * instance health: the last report of each (cluster, instance), replacing that
//!   instance's rows ([`super::instances`]).
//!
//! The result is what writing the reports one by one in arrival order gives; the
//! callers are answered only after the commit, and the changes are published after it
//! as for every write. If the batch fails (a cluster was removed meanwhile, so a
//! foreign key refuses its report; a database error), it is rolled back and every
//! report is written again on its own, so one bad report fails alone with its own error.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, IntoActiveModel, QueryFilter, Set, Statement, TransactionTrait,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::entities::{cluster_reports, clusters};
use super::instances::{InstanceHealthReport, write_instance_health};
use kaas_pipeline::status::AgentConfigState;
use serde::{Deserialize, Serialize};

use super::{
    Actor, Change, ClusterState, Store, StoreError, audit, feed, find_cluster, now_ms, parse_state,
};

/// An agent's report about a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    /// Hash (hex) of the configuration the report is about.
    pub config_hash: String,
    /// Applying, applied or failed (stored as `APPLYING`, `APPLIED`, `FAILED`).
    pub state: AgentConfigState,
    /// Why it failed, per pipeline and field.
    #[serde(default)]
    pub errors: Vec<ConfigErrorRecord>,
    /// Hash (hex) of the configuration the agent runs now (the last good one after a
    /// failure).
    pub running_config_hash: String,
    /// When the agent made the report, Unix milliseconds.
    pub at_ms: i64,
    /// The agent does not run trace pipelines (its hello did not announce
    /// `CAPABILITY_TRACE_PIPELINES`), so the configuration it was sent, and which this
    /// report is about, leaves them out. Reports stored before the field say nothing,
    /// read as an agent that runs them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_trace_pipelines: bool,
    /// The agent does not render template instances (its hello did not announce
    /// `CAPABILITY_TEMPLATE_INSTANCES`), so the configuration it was sent leaves out the
    /// instances bound to its cluster's Secret or ConfigMap keys. Reports stored before
    /// the field say nothing, read as an agent that renders them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_template_instances: bool,
}

impl ConfigReport {
    /// Whether the agent that made the report runs trace pipelines; an agent with no
    /// report yet is taken to (its first report says otherwise).
    pub fn runs_trace_pipelines(report: Option<&Self>) -> bool {
        report.is_none_or(|report| !report.without_trace_pipelines)
    }

    /// Whether the agent that made the report renders template instances; an agent
    /// with no report yet is taken to (its first report says otherwise).
    pub fn renders_template_instances(report: Option<&Self>) -> bool {
        report.is_none_or(|report| !report.without_template_instances)
    }
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

/// Most reports written in one transaction: large enough that a burst from 10,000
/// agents takes a few dozen commits, small enough that one transaction stays short
/// (the first report of a batch waits for all of it) and a multi-row upsert binds far
/// fewer than SQLite's 32,766 variables.
pub const MAX_REPORT_BATCH: usize = 512;

/// Clusters per `UPDATE … FROM (VALUES …)` statement: a whole batch, two bound values
/// each, far below SQLite's 32,766 variables and PostgreSQL's 65,535.
const SET_VALUES_PER_STATEMENT: usize = MAX_REPORT_BATCH;

/// Reports waiting for the writer. Each stream waits for its own report, so this holds
/// at most one report per stream; when full, reporters wait (back-pressure).
const REPORT_QUEUE_CAPACITY: usize = 4096;

/// One report to write.
#[derive(Debug)]
pub enum ReportWrite {
    /// The agent was heard from (join, stream hello, heartbeat): `provisioning` and
    /// `silent` become `active` ([`ClusterState::when_heard_from`]); with `connection`,
    /// its stream opened and the cluster is connected through it.
    Seen {
        /// The cluster.
        cluster: String,
        /// The agent process.
        instance_id: String,
        /// The agent's version.
        version: String,
        /// When, Unix milliseconds.
        at_ms: i64,
        /// The connection that opened, if this is a connect.
        connection: Option<String>,
    },
    /// A configuration report: stored as the cluster's latest; `APPLIED` also sets the
    /// cluster's `applied_config_hash`. Observations, announced as
    /// [`Change::ClusterReport`] only.
    Config {
        /// The cluster.
        cluster: String,
        /// The report.
        report: ConfigReport,
    },
    /// One agent instance's health report, replacing that instance's rows of
    /// `instance_health` ([`super::instances`]). Observations, announced as
    /// [`Change::ClusterReport`] only.
    InstanceHealth(Box<InstanceHealthReport>),
    /// A health report, stored as the cluster's latest.
    Health {
        /// The cluster.
        cluster: String,
        /// The report as stored.
        health: serde_json::Value,
        /// When the agent made it, Unix milliseconds.
        at_ms: i64,
    },
}

impl ReportWrite {
    fn cluster(&self) -> &str {
        match self {
            Self::Seen { cluster, .. }
            | Self::Config { cluster, .. }
            | Self::Health { cluster, .. } => cluster,
            Self::InstanceHealth(report) => &report.cluster,
        }
    }
}

struct Queued {
    write: ReportWrite,
    /// Who waits for the result; `None` for a report submitted without waiting, whose
    /// failure the writer logs.
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

impl Queued {
    fn finish(self, result: Result<(), StoreError>) {
        match (self.done, result) {
            // The reporter may have stopped waiting (its stream ended); fine.
            (Some(done), result) => {
                let _ = done.send(result);
            }
            (None, Ok(())) => {}
            (None, Err(error)) => {
                tracing::warn!(cluster = %self.write.cluster(), %error, "cannot store an agent report");
            }
        }
    }
}

/// The reporters' end of the queue.
#[derive(Clone)]
pub struct ReportQueue {
    queue: mpsc::Sender<Queued>,
}

impl ReportQueue {
    /// Queues `write` and waits until it is committed (or failed).
    pub async fn write(&self, write: ReportWrite) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.queue
            .send(Queued {
                write,
                done: Some(done),
            })
            .await
            .map_err(|_| writer_gone())?;
        result.await.map_err(|_| writer_gone())?
    }

    /// Queues `write` and returns once it is queued (waiting only while the queue is
    /// full). Reports of one reporter are still written in the order submitted; a
    /// failure is logged by the writer.
    pub async fn submit(&self, write: ReportWrite) -> Result<(), StoreError> {
        self.queue
            .send(Queued { write, done: None })
            .await
            .map_err(|_| writer_gone())
    }
}

fn writer_gone() -> StoreError {
    StoreError::Database(sea_orm::DbErr::Custom(
        "the report writer has stopped".to_owned(),
    ))
}

/// What the writer needs of the store: its write connection and change feed.
pub struct ReportWriter {
    pub db: DatabaseConnection,
    pub origin: String,
    pub changes: broadcast::Sender<Change>,
}

impl ReportWriter {
    /// Starts the writer task; it ends when every [`ReportQueue`] is dropped.
    pub fn spawn(self) -> (ReportQueue, tokio::task::JoinHandle<()>) {
        let (queue, queued) = mpsc::channel(REPORT_QUEUE_CAPACITY);
        let task = tokio::spawn(self.run(queued));
        (ReportQueue { queue }, task)
    }

    async fn run(self, mut queued: mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(MAX_REPORT_BATCH);
        while queued.recv_many(&mut batch, MAX_REPORT_BATCH).await > 0 {
            self.write_batch(std::mem::take(&mut batch)).await;
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(otel.kind = "client", reports = batch.len()))]
    async fn write_batch(&self, batch: Vec<Queued>) {
        if batch.len() > 1 {
            let writes: Vec<&ReportWrite> = batch.iter().map(|q| &q.write).collect();
            match self.write_together(&writes).await {
                Ok(()) => {
                    for queued in batch {
                        queued.finish(Ok(()));
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, reports = batch.len(), "a batch of agent reports failed; writing them one by one");
                }
            }
        }
        for queued in batch {
            let result = self.write_one(&queued.write).await;
            queued.finish(result);
        }
    }

    async fn commit(
        &self,
        transaction: DatabaseTransaction,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        feed::commit(transaction, changes, &self.origin, &self.changes).await
    }

    /// One report in its own transaction.
    async fn write_one(&self, write: &ReportWrite) -> Result<(), StoreError> {
        let transaction = self.db.begin().await?;
        let changes = match write {
            ReportWrite::Seen {
                cluster,
                instance_id,
                version,
                at_ms,
                connection,
            } => {
                write_seen(
                    &transaction,
                    cluster,
                    instance_id,
                    version,
                    *at_ms,
                    connection.as_deref(),
                )
                .await?
            }
            ReportWrite::Config { cluster, report } => {
                let row = find_cluster(&transaction, cluster).await?;
                if report.state == AgentConfigState::Applied
                    && row.applied_config_hash.as_deref() != Some(report.config_hash.as_str())
                {
                    let mut row = row.into_active_model();
                    row.applied_config_hash = Set(Some(report.config_hash.clone()));
                    row.update(&transaction).await?;
                }
                upsert_config_reports(&transaction, &[(cluster.as_str(), report)]).await?;
                vec![Change::ClusterReport(cluster.clone())]
            }
            ReportWrite::Health {
                cluster,
                health,
                at_ms,
            } => {
                find_cluster(&transaction, cluster).await?;
                upsert_health(&transaction, &[(cluster.as_str(), health, *at_ms)]).await?;
                vec![Change::ClusterReport(cluster.clone())]
            }
            ReportWrite::InstanceHealth(report) => {
                find_cluster(&transaction, &report.cluster).await?;
                write_instance_health(&transaction, &[report.as_ref()])
                    .await?
                    .into_iter()
                    .map(Change::ClusterReport)
                    .collect()
            }
        };
        self.commit(transaction, changes).await
    }

    /// Every report of a batch in one transaction (see the module documentation).
    async fn write_together(&self, writes: &[&ReportWrite]) -> Result<(), StoreError> {
        let transaction = self.db.begin().await?;
        let mut changes = Vec::new();
        let mut seen_changes = HashSet::new();
        let mut publish = |change: Change, changes: &mut Vec<Change>| {
            if seen_changes.insert(change.clone()) {
                changes.push(change);
            }
        };
        // The last config report, last APPLIED hash and last health of each cluster.
        let mut configs: BTreeMap<&str, &ConfigReport> = BTreeMap::new();
        let mut applied: BTreeMap<&str, &str> = BTreeMap::new();
        let mut healths: BTreeMap<&str, (&serde_json::Value, i64)> = BTreeMap::new();
        let mut instances: Vec<&InstanceHealthReport> = Vec::new();
        for change in write_seen_together(&transaction, writes).await? {
            publish(change, &mut changes);
        }
        for write in writes {
            match write {
                ReportWrite::Seen { .. } => {}
                ReportWrite::Config { cluster, report } => {
                    configs.insert(cluster, report);
                    if report.state == AgentConfigState::Applied {
                        applied.insert(cluster, &report.config_hash);
                    }
                }
                ReportWrite::Health {
                    cluster,
                    health,
                    at_ms,
                } => {
                    healths.insert(cluster, (health, *at_ms));
                }
                ReportWrite::InstanceHealth(report) => instances.push(report),
            }
        }
        set_cluster_column(
            &transaction,
            "applied_config_hash",
            applied
                .into_iter()
                .map(|(cluster, hash)| (cluster, sea_orm::Value::from(hash)))
                .collect(),
        )
        .await?;
        let configs: Vec<(&str, &ConfigReport)> = configs.into_iter().collect();
        upsert_config_reports(&transaction, &configs).await?;
        let healths: Vec<(&str, &serde_json::Value, i64)> = healths
            .into_iter()
            .map(|(cluster, (health, at_ms))| (cluster, health, at_ms))
            .collect();
        upsert_health(&transaction, &healths).await?;
        // A report of a removed cluster fails the batch on its foreign key, as the
        // other reports do.
        write_instance_health(&transaction, &instances).await?;
        for write in writes {
            if !matches!(write, ReportWrite::Seen { .. }) {
                publish(
                    Change::ClusterReport(write.cluster().to_owned()),
                    &mut changes,
                );
            }
        }
        self.commit(transaction, changes).await
    }
}

/// The agent of `name` was heard from (and with `connection`, its stream opened).
async fn write_seen(
    transaction: &DatabaseTransaction,
    name: &str,
    instance_id: &str,
    version: &str,
    at_ms: i64,
    connection: Option<&str>,
) -> Result<Vec<Change>, StoreError> {
    let row = find_cluster(transaction, name).await?;
    let mut seen = SeenRow::new(row);
    seen.apply(instance_id, version, at_ms, connection)?;
    seen.write(transaction).await
}

/// Every `Seen` report of a batch: the rows read in one query, the reports applied to
/// them in order, then one statement for all rows whose only change is `last_seen`
/// (the common heartbeat) and one update per other row.
async fn write_seen_together(
    transaction: &DatabaseTransaction,
    writes: &[&ReportWrite],
) -> Result<Vec<Change>, StoreError> {
    let names: BTreeSet<&str> = writes
        .iter()
        .filter(|write| matches!(write, ReportWrite::Seen { .. }))
        .map(|write| write.cluster())
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: BTreeMap<String, SeenRow> = BTreeMap::new();
    for chunk in names
        .iter()
        .copied()
        .collect::<Vec<_>>()
        .chunks(super::NAMES_PER_QUERY)
    {
        for row in clusters::Entity::find()
            .filter(clusters::Column::Name.is_in(chunk.iter().copied()))
            .all(transaction)
            .await?
        {
            rows.insert(row.name.clone(), SeenRow::new(row));
        }
    }
    for write in writes {
        if let ReportWrite::Seen {
            cluster,
            instance_id,
            version,
            at_ms,
            connection,
        } = write
        {
            rows.get_mut(cluster)
                .ok_or_else(|| StoreError::NotFound {
                    kind: "cluster",
                    name: cluster.clone(),
                })?
                .apply(instance_id, version, *at_ms, connection.as_deref())?;
        }
    }
    let mut changes = Vec::new();
    let mut last_seen_only = Vec::new();
    for (_, row) in rows {
        if row.only_last_seen_changed() {
            last_seen_only.push((row.original.name, row.current.last_seen_ms));
        } else {
            changes.extend(row.write(transaction).await?);
        }
    }
    set_cluster_column(
        transaction,
        "last_seen_ms",
        last_seen_only
            .iter()
            .map(|(name, at)| (name.as_str(), sea_orm::Value::from(*at)))
            .collect(),
    )
    .await?;
    Ok(changes)
}

/// Sets `column` (a column of `clusters`, named by the caller, never by input) of each
/// named cluster to its value, in one statement per [`SET_VALUES_PER_STATEMENT`]
/// clusters:
/// `WITH v(name, value) AS (VALUES (…), …) UPDATE clusters SET column = v.value FROM v
/// WHERE clusters.name = v.name AND clusters.column IS DISTINCT FROM v.value`.
/// This replaced `SET column = CASE name WHEN … THEN … END WHERE name IN (…)`, which
/// compares each matched row with every name of the batch (quadratic in the batch) and
/// rewrites rows whose value is stored already; here each row is found by its key and
/// left alone when nothing changes. `UPDATE … FROM` needs SQLite 3.33 (sqlx bundles a
/// newer one) or PostgreSQL.
async fn set_cluster_column(
    transaction: &DatabaseTransaction,
    column: &'static str,
    values: Vec<(&str, sea_orm::Value)>,
) -> Result<(), StoreError> {
    let backend = transaction.get_database_backend();
    let (distinct, placeholder): (&str, fn(usize) -> String) = match backend {
        DbBackend::Postgres => ("IS DISTINCT FROM", |n| format!("${n}")),
        _ => ("IS NOT", |_| "?".to_owned()),
    };
    for chunk in values.chunks(SET_VALUES_PER_STATEMENT) {
        let mut sql = String::from("WITH v(name, value) AS (VALUES ");
        let mut bound = Vec::with_capacity(chunk.len() * 2);
        for (i, (name, value)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "({}, {})",
                placeholder(2 * i + 1),
                placeholder(2 * i + 2)
            ));
            bound.push(sea_orm::Value::from(*name));
            bound.push(value.clone());
        }
        sql.push_str(&format!(
            ") UPDATE clusters SET {column} = v.value FROM v \
             WHERE clusters.name = v.name AND clusters.{column} {distinct} v.value"
        ));
        transaction
            .execute_raw(Statement::from_sql_and_values(backend, sql, bound))
            .await?;
    }
    Ok(())
}

/// A cluster row with `Seen` reports applied to it in memory.
struct SeenRow {
    original: clusters::Model,
    current: clusters::Model,
    new_states: Vec<ClusterState>,
    agent_changed: bool,
    connected_now: bool,
}

impl SeenRow {
    fn new(row: clusters::Model) -> Self {
        Self {
            current: row.clone(),
            original: row,
            new_states: Vec::new(),
            agent_changed: false,
            connected_now: false,
        }
    }

    /// What hearing from the agent changes: instance and version, `last_seen` (never
    /// backwards), `provisioning` or `silent` becoming `active`, and with `connection`
    /// the connection.
    fn apply(
        &mut self,
        instance_id: &str,
        version: &str,
        at_ms: i64,
        connection: Option<&str>,
    ) -> Result<(), StoreError> {
        let row = &mut self.current;
        let old_state = parse_state(&row.state)?;
        let heard = old_state.when_heard_from();
        if heard != old_state {
            row.state = heard.as_str().to_owned();
            row.state_changed_at_ms = at_ms;
            self.new_states.push(heard);
        }
        if row.agent_instance_id.as_deref() != Some(instance_id)
            || row.agent_version.as_deref() != Some(version)
        {
            self.agent_changed = true;
            row.agent_instance_id = Some(instance_id.to_owned());
            row.agent_version = Some(version.to_owned());
        }
        row.last_seen_ms = Some(row.last_seen_ms.map_or(at_ms, |seen| Ord::max(seen, at_ms)));
        if let Some(connection) = connection {
            if !row.connected {
                self.connected_now = true;
            }
            row.connected = true;
            row.connection_id = Some(connection.to_owned());
        }
        Ok(())
    }

    fn only_last_seen_changed(&self) -> bool {
        let mut current = self.current.clone();
        current.last_seen_ms = self.original.last_seen_ms;
        current == self.original
    }

    /// Writes the row, audits state changes, and says what to publish: a state change
    /// is a `Cluster` change (probe targets and integrations follow states), a new
    /// agent or a connection only an observation.
    async fn write(self, transaction: &DatabaseTransaction) -> Result<Vec<Change>, StoreError> {
        let row = self.current;
        let mut active = self.original.into_active_model();
        active.agent_instance_id = Set(row.agent_instance_id.clone());
        active.agent_version = Set(row.agent_version.clone());
        active.last_seen_ms = Set(row.last_seen_ms);
        active.state = Set(row.state.clone());
        active.state_changed_at_ms = Set(row.state_changed_at_ms);
        active.connected = Set(row.connected);
        active.connection_id = Set(row.connection_id.clone());
        active.update(transaction).await?;
        let mut changes = Vec::new();
        for state in &self.new_states {
            audit::record(
                transaction,
                &Actor::agent(&row.name),
                &format!("set-state:{state}"),
                "cluster",
                Some(&row.tenant),
                &row.name,
            )
            .await?;
        }
        if !self.new_states.is_empty() {
            changes.push(Change::Cluster {
                tenant: row.tenant.clone(),
                id: row.name.clone(),
            });
        }
        if self.agent_changed || self.connected_now {
            changes.push(Change::ClusterReport(row.name.clone()));
        }
        Ok(changes)
    }
}

/// Stores each cluster's config report (one per cluster), in one statement.
async fn upsert_config_reports(
    transaction: &DatabaseTransaction,
    reports: &[(&str, &ConfigReport)],
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut rows = Vec::with_capacity(reports.len());
    for (cluster, report) in reports {
        let json = serde_json::to_value(report)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a config report: {e}")))?;
        rows.push(cluster_reports::ActiveModel {
            cluster: Set((*cluster).to_owned()),
            config_report: Set(Some(json)),
            updated_at_ms: Set(now),
            ..Default::default()
        });
    }
    upsert_reports(
        transaction,
        rows,
        [
            cluster_reports::Column::ConfigReport,
            cluster_reports::Column::UpdatedAtMs,
        ],
    )
    .await
}

/// Stores each cluster's health report (one per cluster), in one statement.
async fn upsert_health(
    transaction: &DatabaseTransaction,
    reports: &[(&str, &serde_json::Value, i64)],
) -> Result<(), StoreError> {
    let now = now_ms();
    let rows = reports
        .iter()
        .map(|(cluster, health, at_ms)| cluster_reports::ActiveModel {
            cluster: Set((*cluster).to_owned()),
            health: Set(Some((*health).clone())),
            health_at_ms: Set(Some(*at_ms)),
            updated_at_ms: Set(now),
            ..Default::default()
        })
        .collect();
    upsert_reports(
        transaction,
        rows,
        [
            cluster_reports::Column::Health,
            cluster_reports::Column::HealthAtMs,
            cluster_reports::Column::UpdatedAtMs,
        ],
    )
    .await
}

/// Inserts `rows` (at most one per cluster), or for a cluster that has its row already,
/// replaces `columns` in it.
async fn upsert_reports(
    transaction: &DatabaseTransaction,
    rows: Vec<cluster_reports::ActiveModel>,
    columns: impl IntoIterator<Item = cluster_reports::Column>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    cluster_reports::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(cluster_reports::Column::Cluster)
                .update_columns(columns)
                .to_owned(),
        )
        .exec_without_returning(transaction)
        .await?;
    Ok(())
}

impl Store {
    /// Writes an agent report and waits until it is committed (or failed): the one
    /// path of every report, batched with the others waiting ([`ReportWrite`]).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn report(&self, report: ReportWrite) -> Result<(), StoreError> {
        self.inner.reports.write(report).await
    }

    /// Queues an agent report and returns once it is queued, without waiting for the
    /// write: what an agent stream does, so that reading its next message (an
    /// `APPLIED` right after the `APPLYING`) does not wait for a commit. Reports are
    /// written in the order submitted; a failed one is logged.
    pub async fn submit_report(&self, report: ReportWrite) -> Result<(), StoreError> {
        self.inner.reports.submit(report).await
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
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let released = clusters::Entity::update_many()
            .col_expr(clusters::Column::Connected, Expr::value(false))
            .col_expr(
                clusters::Column::ConnectionId,
                Expr::value(Option::<String>::None),
            )
            .filter(clusters::Column::Name.eq(cluster))
            .filter(clusters::Column::ConnectionId.eq(connection))
            .exec(transaction)
            .await?
            .rows_affected
            == 1;
        if !released {
            return Ok(false);
        }
        mutation
            .commit(vec![Change::ClusterReport(cluster.to_owned())])
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::secrets::SecretBox;
    use crate::store::{Actor, NewCluster, Store};

    fn report(state: AgentConfigState, hash: &str) -> ConfigReport {
        ConfigReport {
            config_hash: hash.into(),
            state,
            errors: Vec::new(),
            running_config_hash: hash.into(),
            at_ms: 1,
            without_trace_pipelines: false,
            without_template_instances: false,
        }
    }

    /// The batch path itself (not the one-by-one fallback) writes every kind of
    /// report: the fallback would hide a batch that always fails.
    #[tokio::test]
    async fn a_batch_of_every_kind_of_report_is_written_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("o.db"), SecretBox::generate().unwrap())
            .await
            .unwrap();
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        for name in ["c1", "c2", "c3"] {
            let new = NewCluster {
                name: name.into(),
                tenant: "shop".into(),
                labels: BTreeMap::new(),
                api_endpoint: None,
            };
            store
                .create_cluster(new, Duration::from_secs(60), &Actor::admin())
                .await
                .unwrap();
        }
        let writer = ReportWriter {
            db: store.inner.db.clone(),
            origin: "test".into(),
            changes: store.inner.changes.clone(),
        };
        let seen = |cluster: &str, connection: Option<&str>| ReportWrite::Seen {
            cluster: cluster.into(),
            instance_id: "i1".into(),
            version: "0.1.0".into(),
            at_ms: 5,
            connection: connection.map(str::to_owned),
        };
        let config = |cluster: &str, state: AgentConfigState, hash: &str| ReportWrite::Config {
            cluster: cluster.into(),
            report: report(state, hash),
        };
        let writes = [
            seen("shop.c1", Some("r/1")),
            seen("shop.c2", None),
            config("shop.c1", AgentConfigState::Applied, "aa"),
            config("shop.c1", AgentConfigState::Applying, "bb"),
            config("shop.c2", AgentConfigState::Applying, "aa"),
            config("shop.c2", AgentConfigState::Applied, "aa"),
            config("shop.c3", AgentConfigState::Applied, "cc"),
            ReportWrite::Health {
                cluster: "shop.c3".into(),
                health: serde_json::json!({"n": 1}),
                at_ms: 7,
            },
            ReportWrite::Health {
                cluster: "shop.c3".into(),
                health: serde_json::json!({"n": 2}),
                at_ms: 8,
            },
        ];
        let mut feed = store.subscribe();
        writer
            .write_together(&writes.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let rows = store
            .list_clusters_with_reports(None, None, None)
            .await
            .unwrap();
        let summary: Vec<_> = rows
            .iter()
            .map(|(cluster, report)| {
                (
                    cluster.id.as_str(),
                    cluster.connected,
                    cluster.last_seen_ms,
                    cluster.applied_config_hash.as_deref(),
                    report
                        .config
                        .as_ref()
                        .map(|c| (c.state.as_str(), c.config_hash.as_str())),
                    report.health.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "shop.c1",
                    true,
                    Some(5),
                    Some("aa"),
                    Some(("APPLYING", "bb")),
                    None
                ),
                (
                    "shop.c2",
                    false,
                    Some(5),
                    Some("aa"),
                    Some(("APPLIED", "aa")),
                    None
                ),
                (
                    "shop.c3",
                    false,
                    None,
                    Some("cc"),
                    Some(("APPLIED", "cc")),
                    Some(serde_json::json!({"n": 2}))
                ),
            ]
        );
        let mut changes = Vec::new();
        while let Ok(change) = feed.try_recv() {
            changes.push(change);
        }
        for name in ["shop.c1", "shop.c2", "shop.c3"] {
            assert!(
                changes.contains(&Change::ClusterReport(name.into())),
                "{changes:?}"
            );
        }
        // Heartbeats that only move `last_seen` share one statement; never backwards.
        let beat = |cluster: &str, at_ms: i64| ReportWrite::Seen {
            cluster: cluster.into(),
            instance_id: "i1".into(),
            version: "0.1.0".into(),
            at_ms,
            connection: None,
        };
        let beats = [beat("shop.c2", 9), beat("shop.c1", 3)];
        writer
            .write_together(&beats.iter().collect::<Vec<_>>())
            .await
            .unwrap();
        let seen_at = |name: &'static str| {
            let store = store.clone();
            async move { store.get_cluster(name).await.unwrap().unwrap().last_seen_ms }
        };
        assert_eq!(
            (seen_at("shop.c1").await, seen_at("shop.c2").await),
            (Some(5), Some(9))
        );
        assert!(
            store
                .get_cluster("shop.c1")
                .await
                .unwrap()
                .unwrap()
                .connected
        );
        // A report of a cluster that does not exist fails the batch as a whole (and
        // the writer then writes each report on its own).
        let bad = [
            config("shop.c1", AgentConfigState::Applied, "dd"),
            config("nope", AgentConfigState::Applied, "dd"),
        ];
        assert!(
            writer
                .write_together(&bad.iter().collect::<Vec<_>>())
                .await
                .is_err()
        );
        assert_eq!(
            store
                .get_cluster("shop.c1")
                .await
                .unwrap()
                .unwrap()
                .applied_config_hash
                .as_deref(),
            Some("aa"),
            "rolled back"
        );
    }
}
