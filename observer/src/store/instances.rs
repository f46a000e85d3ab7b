//! Health per agent instance: a cluster runs a cluster-level agent instance (`default`)
//! and one node instance per node, and each reports the health of the pipelines it
//! runs. The store keeps the latest entry per (cluster, instance, pipeline kind,
//! pipeline name) in `instance_health`, with the problems found in it
//! ([`InstanceProblem`], judged by the control stream when the report arrives), and
//! answers per cluster and pipeline with the worst instance and how many instances
//! report and how many are affected ([`PipelineInstances`]).
//!
//! # Design note
//! * **Written with the other reports.** An instance's report is a
//!   [`ReportWrite::InstanceHealth`](super::ReportWrite::InstanceHealth), group-committed
//!   by the report writer ([`super::reports`]): the instance's rows are replaced whole
//!   (a pipeline the instance no longer runs goes with its next report), and
//!   `Change::ClusterReport` is published, so the status task recomputes.
//! * **Bounded.** At most [`MAX_INSTANCES_PER_CLUSTER`] instances per cluster (the
//!   bound on instances holding certificates): a report of one more instance is not
//!   stored (logged); at most [`MAX_PIPELINES_PER_INSTANCE_REPORT`] pipelines per report
//!   and [`MAX_PROBLEMS_PER_ENTRY`] problems of at most [`MAX_PROBLEM_MESSAGE_CHARS`]
//!   characters per pipeline, whatever the agent sends.
//! * **Time-to-live.** An instance that stopped reporting (a node drained or removed,
//!   an agent crash-looping) is not evidence about the pipeline any more: rows received
//!   longer than the time-to-live ago ([`DEFAULT_INSTANCE_HEALTH_TTL`], `observer serve
//!   --instance-health-ttl`) are left out of every answer, and pruned by the fleet tick
//!   ([`Store::prune_instance_health`], at most [`INSTANCE_HEALTH_PRUNE_BATCH`] rows a
//!   tick). The time is the observer's clock at receipt, never the agent's.
//! * **Never liveness.** These rows say nothing about whether the cluster is alive:
//!   `last_seen` and `connected` (and so `silent`, see [`crate::lifecycle`]) are written
//!   only by the agent's stream (`ReportWrite::Seen`), and pruning touches only this
//!   table, so node instances coming and going never make a cluster silent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use kaas_pipeline::role::AgentRole;

use super::certificates::MAX_INSTANCES_PER_CLUSTER;
use super::clusters::NAMES_PER_QUERY;
use super::entities::instance_health::{ActiveModel, Column, Entity};
use super::{Change, Store, StoreError, now_ms};

/// How long an instance's last report counts: the agent reports health every 30 s, so
/// five minutes is ten missed reports, past a node's reboot or an agent's restart with
/// back-off, while a removed node stops counting within minutes. Well below the
/// default `--silent-after`, which is about the cluster, not its instances.
pub const DEFAULT_INSTANCE_HEALTH_TTL: Duration = Duration::from_secs(5 * 60);
/// The rank of an entry without problems: above every problem's rank (problems rank
/// 0 = worst, see `control::status`).
pub const HEALTHY_RANK: i32 = 100;
/// Pipelines kept per instance report: far above what a cluster runs (50 per kind by
/// the default quota, plus the central ones); the rest of a larger report is ignored.
pub const MAX_PIPELINES_PER_INSTANCE_REPORT: usize = 512;
/// Problems kept per pipeline entry (the status lists at most three kinds per entry).
pub const MAX_PROBLEMS_PER_ENTRY: usize = 8;
/// The longest problem message kept, in characters (an agent's error text is its own
/// to choose).
pub const MAX_PROBLEM_MESSAGE_CHARS: usize = 1000;
/// Rows pruned per fleet tick at most: a whole 5,000-node cluster's instances with a
/// pipeline each in one tick, while one tick's transaction stays short.
pub const INSTANCE_HEALTH_PRUNE_BATCH: u64 = 10_000;
/// Rows per multi-row statement: ten values each, far below SQLite's 32,766 variables.
const ROWS_PER_STATEMENT: usize = 1000;
/// Keys per `OR`ed delete: four values each.
const KEYS_PER_DELETE: usize = 500;

/// One problem an instance reports for a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceProblem {
    /// Lower is worse (`control::status` ranks reasons).
    pub rank: i32,
    /// A condition reason, e.g. `BackendUnreachable`.
    pub reason: String,
    /// What happened; never a secret.
    pub message: String,
}

/// One pipeline in an instance's report.
#[derive(Clone, Debug, PartialEq)]
pub struct InstancePipelineHealth {
    /// The pipeline's kind.
    pub kind: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The entry as stored (JSON of `PipelineHealthRecord`).
    pub entry: serde_json::Value,
    /// The problems found in it, worst first; empty when healthy.
    pub problems: Vec<InstanceProblem>,
}

/// An instance's health report, as the report writer stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceHealthReport {
    /// The cluster's global id.
    pub cluster: String,
    /// The instance, as its certificate names it.
    pub instance: String,
    /// The agent process.
    pub agent_instance_id: String,
    /// The role the instance named in its hello.
    pub role: AgentRole,
    /// When the agent took the snapshot, Unix milliseconds.
    pub reported_at_ms: i64,
    /// When the observer received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// Its pipelines.
    pub pipelines: Vec<InstancePipelineHealth>,
}

/// A pipeline's health on one cluster, over its live instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInstances {
    /// The pipeline's kind.
    pub kind: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Instances whose report on it is within the time-to-live.
    pub reporting: u32,
    /// Those of them with a problem.
    pub affected: u32,
    /// The worst affected instance (lowest rank, then name); `None` when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst: Option<WorstInstance>,
}

/// The worst instance of a [`PipelineInstances`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorstInstance {
    /// The instance's name.
    pub instance: String,
    /// Its problems, worst first.
    pub problems: Vec<InstanceProblem>,
}

/// A stored entry of one instance, read back for the drop counts of its next report.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredInstanceEntry {
    /// The pipeline's kind.
    pub kind: String,
    /// The agent process that sent it.
    pub agent_instance_id: String,
    /// The entry (JSON of `PipelineHealthRecord`).
    pub entry: serde_json::Value,
}

/// Cuts what an agent chose to an entry's bounds.
fn bounded(problems: &[InstanceProblem]) -> Vec<InstanceProblem> {
    problems
        .iter()
        .take(MAX_PROBLEMS_PER_ENTRY)
        .map(|p| InstanceProblem {
            rank: p.rank.clamp(0, HEALTHY_RANK - 1),
            reason: p.reason.chars().take(MAX_PROBLEM_MESSAGE_CHARS).collect(),
            message: p.message.chars().take(MAX_PROBLEM_MESSAGE_CHARS).collect(),
        })
        .collect()
}

/// Stores the latest report of each instance in `reports` (later ones win), replacing
/// each instance's rows; returns the clusters whose rows changed. A report of an
/// instance beyond [`MAX_INSTANCES_PER_CLUSTER`] is skipped (logged), not an error, so
/// it cannot fail the batch it is in.
pub(super) async fn write_instance_health(
    transaction: &DatabaseTransaction,
    reports: &[&InstanceHealthReport],
) -> Result<BTreeSet<String>, StoreError> {
    let mut latest: BTreeMap<(&str, &str), &InstanceHealthReport> = BTreeMap::new();
    for report in reports {
        latest.insert((report.cluster.as_str(), report.instance.as_str()), *report);
    }
    if latest.is_empty() {
        return Ok(BTreeSet::new());
    }
    let keys: Vec<(&str, &str)> = latest.keys().copied().collect();
    let known = known_instances(transaction, &keys).await?;
    let mut new_per_cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (cluster, instance) in &keys {
        if !known.contains(&((*cluster).to_owned(), (*instance).to_owned())) {
            new_per_cluster.entry(*cluster).or_default().push(*instance);
        }
    }
    for (cluster, new) in new_per_cluster {
        let count = instance_count(transaction, cluster).await?;
        let room = MAX_INSTANCES_PER_CLUSTER.saturating_sub(count);
        for instance in new
            .into_iter()
            .skip(usize::try_from(room).unwrap_or(usize::MAX))
        {
            tracing::warn!(%cluster, %instance, limit = MAX_INSTANCES_PER_CLUSTER, "the cluster has the most agent instances the observer keeps health for; this instance's report is not stored");
            latest.remove(&(cluster, instance));
        }
    }
    let keys: Vec<(&str, &str)> = latest.keys().copied().collect();
    for chunk in keys.chunks(KEYS_PER_DELETE) {
        let mut any = Condition::any();
        for (cluster, instance) in chunk {
            any = any.add(
                Condition::all()
                    .add(Column::Cluster.eq(*cluster))
                    .add(Column::Instance.eq(*instance)),
            );
        }
        Entity::delete_many().filter(any).exec(transaction).await?;
    }
    let mut rows = Vec::new();
    for report in latest.values() {
        let mut seen = BTreeSet::new();
        for pipeline in report.pipelines.iter() {
            if seen.len() == MAX_PIPELINES_PER_INSTANCE_REPORT {
                break;
            }
            // One row per pipeline: the first entry of a (kind, name) counts.
            if !seen.insert((pipeline.kind.as_str(), pipeline.pipeline.as_str())) {
                continue;
            }
            let problems = bounded(&pipeline.problems);
            let worst = problems
                .iter()
                .map(|p| p.rank)
                .min()
                .unwrap_or(HEALTHY_RANK);
            let problems = serde_json::to_value(&problems)
                .map_err(|e| StoreError::Corrupt(format!("cannot encode problems: {e}")))?;
            rows.push(ActiveModel {
                cluster: Set(report.cluster.clone()),
                instance: Set(report.instance.clone()),
                kind: Set(pipeline.kind.clone()),
                pipeline: Set(pipeline.pipeline.clone()),
                agent_instance_id: Set(report.agent_instance_id.clone()),
                entry: Set(pipeline.entry.clone()),
                problems: Set(problems),
                worst_rank: Set(worst),
                reported_at_ms: Set(report.reported_at_ms),
                received_at_ms: Set(report.received_at_ms),
                role: Set(report.role.as_str().to_owned()),
            });
        }
    }
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
        Entity::insert_many(std::mem::replace(&mut rows, rest))
            .exec_without_returning(transaction)
            .await?;
    }
    Ok(latest
        .keys()
        .map(|(cluster, _)| (*cluster).to_owned())
        .collect())
}

/// Which of `keys` have rows already: one query per chunk (clusters × instances of the
/// chunk through the primary key, filtered exactly here).
async fn known_instances(
    transaction: &DatabaseTransaction,
    keys: &[(&str, &str)],
) -> Result<BTreeSet<(String, String)>, StoreError> {
    let mut known = BTreeSet::new();
    for chunk in keys.chunks(NAMES_PER_QUERY / 2) {
        let clusters: BTreeSet<&str> = chunk.iter().map(|(c, _)| *c).collect();
        let instances: BTreeSet<&str> = chunk.iter().map(|(_, i)| *i).collect();
        let wanted: BTreeSet<(&str, &str)> = chunk.iter().copied().collect();
        let rows: Vec<(String, String)> = Entity::find()
            .select_only()
            .column(Column::Cluster)
            .column(Column::Instance)
            .distinct()
            .filter(Column::Cluster.is_in(clusters))
            .filter(Column::Instance.is_in(instances))
            .into_tuple()
            .all(transaction)
            .await?;
        known.extend(
            rows.into_iter()
                .filter(|(c, i)| wanted.contains(&(c.as_str(), i.as_str()))),
        );
    }
    Ok(known)
}

/// How many instances of `cluster` have rows (only asked when a new one reports).
async fn instance_count(
    connection: &impl ConnectionTrait,
    cluster: &str,
) -> Result<u64, StoreError> {
    let count: Option<i64> = Entity::find()
        .select_only()
        .expr_as(Func::count_distinct(Expr::col(Column::Instance)), "n")
        .filter(Column::Cluster.eq(cluster))
        .into_tuple()
        .one(connection)
        .await?;
    Ok(u64::try_from(count.unwrap_or(0)).unwrap_or(0))
}

/// Folds one row into its pipeline's answer.
fn fold(answer: &mut PipelineInstances, instance: String, rank: i32, problems: serde_json::Value) {
    answer.reporting += 1;
    if rank >= HEALTHY_RANK {
        return;
    }
    answer.affected += 1;
    // Rows come by instance name, so the first of the lowest rank wins ties.
    let worse = answer
        .worst
        .as_ref()
        .is_none_or(|worst| rank < worst.problems.first().map_or(HEALTHY_RANK, |p| p.rank));
    if worse {
        // A row that does not parse still counts as affected; its problems are unknown.
        let problems: Vec<InstanceProblem> =
            serde_json::from_value(problems).unwrap_or_else(|_| {
                vec![InstanceProblem {
                    rank,
                    reason: String::new(),
                    message: "the stored problem cannot be read".to_owned(),
                }]
            });
        answer.worst = Some(WorstInstance { instance, problems });
    }
}

impl Store {
    /// Sets the time-to-live of instance health (`--instance-health-ttl`).
    pub fn set_instance_health_ttl(&self, ttl: Duration) {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.inner.instance_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// The time-to-live of instance health.
    pub fn instance_health_ttl(&self) -> Duration {
        let ms = self.inner.instance_ttl_ms.load(Ordering::Relaxed);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Oldest receipt time that still counts at `now_ms`.
    fn instance_cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.inner.instance_ttl_ms.load(Ordering::Relaxed))
    }

    /// Each named cluster's pipelines over their live instances (see
    /// [`PipelineInstances`]), by cluster, then kind and name; clusters without live
    /// instance reports are absent.
    pub async fn instance_health_of(
        &self,
        clusters: &[String],
    ) -> Result<BTreeMap<String, Vec<PipelineInstances>>, StoreError> {
        self.instance_health_at(clusters, now_ms()).await
    }

    /// [`Store::instance_health_of`] as of `now_ms` (tests inject the clock).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn instance_health_at(
        &self,
        clusters: &[String],
        now_ms: i64,
    ) -> Result<BTreeMap<String, Vec<PipelineInstances>>, StoreError> {
        type Row = (String, String, String, String, i32, serde_json::Value);
        let cutoff = self.instance_cutoff(now_ms);
        let mut answers: BTreeMap<String, BTreeMap<(String, String), PipelineInstances>> =
            BTreeMap::new();
        for chunk in clusters.chunks(NAMES_PER_QUERY) {
            let rows: Vec<Row> = Entity::find()
                .select_only()
                .column(Column::Cluster)
                .column(Column::Kind)
                .column(Column::Pipeline)
                .column(Column::Instance)
                .column(Column::WorstRank)
                .column(Column::Problems)
                .filter(Column::Cluster.is_in(chunk.iter().map(String::as_str)))
                .filter(Column::ReceivedAtMs.gte(cutoff))
                .order_by_asc(Column::Instance)
                .into_tuple()
                .all(self.reader())
                .await?;
            for (cluster, kind, pipeline, instance, rank, problems) in rows {
                let answer = answers
                    .entry(cluster)
                    .or_default()
                    .entry((kind.clone(), pipeline.clone()))
                    .or_insert_with(|| PipelineInstances {
                        kind,
                        pipeline,
                        ..PipelineInstances::default()
                    });
                fold(answer, instance, rank, problems);
            }
        }
        Ok(answers
            .into_iter()
            .map(|(cluster, pipelines)| (cluster, pipelines.into_values().collect()))
            .collect())
    }

    /// Which of `clusters` have their gateway in use at `now_ms`: a gateway instance
    /// (role `gateway`) whose report on some pipeline is within the time-to-live. A
    /// gateway replica runs the pushed parts of the cluster's pipelines and reports
    /// them every health interval, so a cluster's gateway counts from its first report
    /// until the time-to-live after its last one (see `crate::rendering`).
    pub async fn clusters_with_gateway_at(
        &self,
        clusters: &[String],
        now_ms: i64,
    ) -> Result<BTreeSet<String>, StoreError> {
        let cutoff = self.instance_cutoff(now_ms);
        let mut found = BTreeSet::new();
        for chunk in clusters.chunks(NAMES_PER_QUERY) {
            let rows: Vec<String> = Entity::find()
                .select_only()
                .column(Column::Cluster)
                .distinct()
                .filter(Column::Cluster.is_in(chunk.iter().map(String::as_str)))
                .filter(Column::Role.eq(AgentRole::Gateway.as_str()))
                .filter(Column::ReceivedAtMs.gte(cutoff))
                .into_tuple()
                .all(self.reader())
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// [`Store::clusters_with_gateway_at`] now.
    pub async fn clusters_with_gateway(
        &self,
        clusters: &[String],
    ) -> Result<BTreeSet<String>, StoreError> {
        self.clusters_with_gateway_at(clusters, now_ms()).await
    }

    /// The live entries `instance` of `cluster` reported last, by (kind, pipeline): the
    /// previous report a stream compares drop counts with after a reconnect.
    pub async fn instance_entries(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Result<BTreeMap<(String, String), StoredInstanceEntry>, StoreError> {
        let rows = Entity::find()
            .filter(Column::Cluster.eq(cluster))
            .filter(Column::Instance.eq(instance))
            .filter(Column::ReceivedAtMs.gte(self.instance_cutoff(now_ms())))
            .all(self.reader())
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    (row.kind.clone(), row.pipeline),
                    StoredInstanceEntry {
                        kind: row.kind,
                        agent_instance_id: row.agent_instance_id,
                        entry: row.entry,
                    },
                )
            })
            .collect())
    }

    /// Deletes rows received before the time-to-live as of `now_ms`, at most
    /// [`INSTANCE_HEALTH_PRUNE_BATCH`] (the oldest first; the rest go at the next
    /// tick, and are left out of every answer meanwhile), and announces the clusters
    /// whose rows went. Returns how many rows were deleted. Touches nothing else: a
    /// cluster's liveness is not its instances' (see the module documentation).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn prune_instance_health(&self, now_ms: i64) -> Result<u64, StoreError> {
        type Key = (String, String, String, String);
        let cutoff = self.instance_cutoff(now_ms);
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let expired: Vec<Key> = Entity::find()
            .select_only()
            .column(Column::Cluster)
            .column(Column::Instance)
            .column(Column::Kind)
            .column(Column::Pipeline)
            .filter(Column::ReceivedAtMs.lt(cutoff))
            .order_by_asc(Column::ReceivedAtMs)
            .limit(INSTANCE_HEALTH_PRUNE_BATCH)
            .into_tuple()
            .all(transaction)
            .await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let mut deleted = 0;
        for chunk in expired.chunks(KEYS_PER_DELETE) {
            let mut any = Condition::any();
            for (cluster, instance, kind, pipeline) in chunk {
                any = any.add(
                    Condition::all()
                        .add(Column::Cluster.eq(cluster.as_str()))
                        .add(Column::Instance.eq(instance.as_str()))
                        .add(Column::Kind.eq(kind.as_str()))
                        .add(Column::Pipeline.eq(pipeline.as_str())),
                );
            }
            // A report received meanwhile is fresh: kept.
            deleted += Entity::delete_many()
                .filter(any)
                .filter(Column::ReceivedAtMs.lt(cutoff))
                .exec(transaction)
                .await?
                .rows_affected;
        }
        let clusters: BTreeSet<String> = expired.into_iter().map(|key| key.0).collect();
        mutation
            .commit(clusters.into_iter().map(Change::ClusterReport).collect())
            .await?;
        Ok(deleted)
    }
}
