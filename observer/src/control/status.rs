//! Agent reports turned into each pipeline's Kubernetes-style status: the conditions
//! `ConfigurationApplied`, `AgentConnected` and `FlowHealthy`, each with a reason a user
//! can act on and the generation it was computed from.
//!
//! [`pipeline_status`] is a pure function of what the store holds about the clusters a
//! pipeline selects ([`ClusterObservation`]), so every replica computes the same status
//! from the same data, and it is tested without a database. It is generic over the
//! pipeline's kind: a pipeline's health is read from the report entries of its kind and
//! name only, so a metric and a log pipeline of the same name never mix. Health reports are stored
//! as [`HealthRecord`] JSON, which carries the drop counts since the previous report so
//! that "data was dropped recently" can be judged from one stored record.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use kaas_pipeline::agent_config::check_config_size;
use kaas_pipeline::status::{
    AgentConfigState, CONDITION_AGENT_CONNECTED, CONDITION_CONFIGURATION_APPLIED,
    CONDITION_FLOW_HEALTHY, Condition, ConditionStatus, MetricPipelineStatus, Reason,
};
use kaas_proto::control::v1::{AgentHealth, DropReason};
use serde::{Deserialize, Serialize};

use crate::store::instances::{InstanceProblem, PipelineInstances};
use crate::store::pipeline_kind::STORED_KINDS;
use crate::store::{ConfigReport, PipelineKind};

/// A pipeline error counts for `FlowHealthy` if it happened this long before the
/// health report. The agent refreshes the time of a persisting error at least every
/// 30 s (its log interval), so two minutes tolerates a late report without keeping a
/// condition False long after the problem is gone.
pub const RECENT_ERROR_WINDOW_MS: i64 = 2 * 60 * 1000;
/// At most this many problems are listed in a condition message; the rest are counted.
const MAX_LISTED: usize = 10;

/// What the store knows about one cluster a pipeline selects.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterObservation {
    /// The cluster's name in its tenant (not its global id): conditions are read by
    /// the tenant, and name its clusters as it does.
    pub cluster: String,
    /// Whether its agent has a stream open.
    pub connected: bool,
    /// Hash (hex) of the configuration the observer wants it to run now.
    pub desired_hash: String,
    /// Size of that configuration in bytes: over
    /// [`MAX_AGENT_CONFIG_BYTES`](kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES)
    /// it is not sent, and the pipelines it holds say so.
    pub desired_bytes: usize,
    /// Whether its agent runs trace pipelines ([`ConfigReport::runs_trace_pipelines`]):
    /// one that does not is sent its configuration without them, which
    /// [`ClusterObservation::desired_hash`] is then the hash of.
    pub runs_trace_pipelines: bool,
    /// Whether its agent renders template instances
    /// ([`ConfigReport::renders_template_instances`]): one that does not is sent its
    /// configuration without those bound to Secret or ConfigMap keys.
    pub renders_template_instances: bool,
    /// Its latest configuration report.
    pub config: Option<ConfigReport>,
    /// Its cluster-level instance's latest health report: read for a pipeline only
    /// when no instance reports on it in [`ClusterObservation::instances`] (reports
    /// stored before instances were told apart).
    pub health: Option<HealthRecord>,
    /// Per pipeline, the worst of its live instances with how many report and are
    /// affected ([`crate::store::Store::instance_health_of`]).
    pub instances: Vec<PipelineInstances>,
    /// Where the cluster's pushes go: its desired configuration was rendered for it.
    pub placement: kaas_pipeline::role::PushPlacement,
}

/// An agent's health report as stored (`ReportWrite::Health`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// The agent process that sent it.
    pub agent_instance_id: String,
    /// When the agent took the snapshot, Unix milliseconds.
    pub timestamp_ms: i64,
    /// One entry per running pipeline.
    pub pipelines: Vec<PipelineHealthRecord>,
}

/// One pipeline in a [`HealthRecord`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineHealthRecord {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline's kind; empty for `MetricPipeline` (records and agents from before
    /// other kinds), see [`PipelineHealthRecord::kind`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Samples the backend acknowledged (cumulative).
    pub samples_sent: u64,
    /// Samples in failed attempts that will be retried (cumulative).
    pub samples_failed: u64,
    /// Samples given up on, by reason (`bufferFull`, `maxAgeExceeded`,
    /// `rejectedByBackend`, `limitExceeded`, `other`), cumulative.
    #[serde(default)]
    pub samples_dropped: BTreeMap<String, u64>,
    /// Samples dropped since the previous report of the same agent process (all of
    /// them for its first report).
    #[serde(default)]
    pub dropped_since_last_report: u64,
    /// Bytes in the disk buffer.
    pub buffer_bytes: u64,
    /// Age of the oldest buffered sample, seconds.
    pub buffer_oldest_age_seconds: f64,
    /// The most recent error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorRecord>,
    /// Targets whose last scrape succeeded.
    pub targets_up: u32,
    /// Targets whose last scrape failed.
    pub targets_down: u32,
    /// The failing targets by `job`, with the reason (at most [`MAX_JOBS_DOWN`] jobs,
    /// each reason at most [`MAX_JOB_DOWN_REASON_CHARS`] characters, whatever the agent
    /// sent): an unreachable control-plane component in the cluster's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets_down_by_job: Vec<JobDownRecord>,
}

/// At most this many failing jobs are kept per pipeline of a health report: the
/// agent reports at most 32; a report with more is cut, not trusted to be small.
pub const MAX_JOBS_DOWN: usize = 32;
/// The longest failure reason kept per job (the agent's own bound).
pub const MAX_JOB_DOWN_REASON_CHARS: usize = 300;

/// The failing targets of one job in a [`PipelineHealthRecord`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDownRecord {
    /// The `job` label.
    pub job: String,
    /// How many of its targets' last scrape failed.
    pub targets_down: u32,
    /// Why the latest of them failed.
    pub reason: String,
}

/// A pipeline error with its time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// A CamelCase reason such as `BackendUnreachable`.
    pub reason: String,
    /// Details; never a secret.
    pub message: String,
}

fn drop_reason_key(reason: i32) -> &'static str {
    match DropReason::try_from(reason) {
        Ok(DropReason::BufferFull) => "bufferFull",
        Ok(DropReason::MaxAgeExceeded) => "maxAgeExceeded",
        Ok(DropReason::RejectedByBackend) => "rejectedByBackend",
        Ok(DropReason::LimitExceeded) => "limitExceeded",
        _ => "other",
    }
}

impl PipelineHealthRecord {
    /// The pipeline's kind, `MetricPipeline` when none is given.
    pub fn kind(&self) -> &str {
        if self.kind.is_empty() {
            kaas_pipeline::KIND
        } else {
            &self.kind
        }
    }

    /// Whether this is the entry of the pipeline of `kind` named `name`.
    fn is(&self, kind: &str, name: &str) -> bool {
        self.kind() == kind && self.pipeline == name
    }
}

impl HealthRecord {
    /// The record for `report` from agent `instance`; `previous` is the last record
    /// stored for the cluster, used for the drop counts since then when it came from
    /// the same process (counters restart with the process).
    pub fn from_report(
        instance: &str,
        report: &AgentHealth,
        previous: Option<&HealthRecord>,
    ) -> Self {
        let previous = previous.filter(|p| p.agent_instance_id == instance);
        let pipelines = report
            .pipelines
            .iter()
            // An entry of a kind the observer does not know belongs to no pipeline; it is
            // not kept (nor its kind, a string of the agent's choosing).
            .filter(|p| p.kind.is_empty() || STORED_KINDS.contains(&p.kind.as_str()))
            .map(|p| {
                let mut samples_dropped = BTreeMap::new();
                // The counts are the agent's to choose: added saturating, so a report
                // of huge values cannot overflow.
                for dropped in &p.samples_dropped {
                    let count = samples_dropped
                        .entry(drop_reason_key(dropped.reason).to_owned())
                        .or_insert(0u64);
                    *count = count.saturating_add(dropped.count);
                }
                let sum = |counts: &BTreeMap<String, u64>| {
                    counts.values().fold(0u64, |sum, n| sum.saturating_add(*n))
                };
                let total = sum(&samples_dropped);
                let kind = if p.kind.is_empty() {
                    kaas_pipeline::KIND
                } else {
                    p.kind.as_str()
                };
                let before = previous
                    .and_then(|r| r.pipelines.iter().find(|q| q.is(kind, &p.pipeline)))
                    .map_or(0, |q| sum(&q.samples_dropped));
                PipelineHealthRecord {
                    pipeline: p.pipeline.clone(),
                    // Stored as agents from before other kinds sent it: empty for metric.
                    kind: if kind == kaas_pipeline::KIND {
                        String::new()
                    } else {
                        kind.to_owned()
                    },
                    samples_sent: p.samples_sent,
                    samples_failed: p.samples_failed,
                    samples_dropped,
                    // A pipeline restarted by a configuration change starts counting
                    // again; a smaller total then means everything counted is new.
                    dropped_since_last_report: if total >= before {
                        total - before
                    } else {
                        total
                    },
                    buffer_bytes: p.buffer_bytes,
                    buffer_oldest_age_seconds: p.buffer_oldest_age_seconds,
                    last_error: p.last_error.as_ref().map(|e| ErrorRecord {
                        at_ms: e.timestamp_unix_ms,
                        reason: e.reason.clone(),
                        message: e.message.clone(),
                    }),
                    targets_up: p.targets_up,
                    targets_down: p.targets_down,
                    targets_down_by_job: p
                        .targets_down_by_job
                        .iter()
                        .take(MAX_JOBS_DOWN)
                        .map(|j| JobDownRecord {
                            job: j.job.chars().take(MAX_JOB_DOWN_REASON_CHARS).collect(),
                            targets_down: j.targets_down,
                            reason: j
                                .reason
                                .chars()
                                .filter(|c| !c.is_control())
                                .take(MAX_JOB_DOWN_REASON_CHARS)
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        Self {
            agent_instance_id: instance.to_owned(),
            timestamp_ms: report.timestamp_unix_ms,
            pipelines,
        }
    }
}

/// The status of `pipeline` (of any kind) at `generation`, from the clusters it selects
/// (tombstoned clusters left out). Conditions keep their `lastTransitionTime` from
/// `previous` while their status stays the same.
pub fn pipeline_status<P: PipelineKind, C: Borrow<ClusterObservation>>(
    pipeline: &P,
    generation: i64,
    clusters: &[C],
    previous: &MetricPipelineStatus,
    now_ms: i64,
) -> MetricPipelineStatus {
    // Borrowed, so the caller need not copy the observations of every cluster.
    let clusters: Vec<&ClusterObservation> = clusters.iter().map(Borrow::borrow).collect();
    let clusters = clusters.as_slice();
    let conditions = [
        configuration_applied(
            P::KIND,
            crate::rendering::is_pending_rendering(pipeline),
            clusters,
        ),
        agent_connected(clusters),
        flow_healthy(pipeline, clusters),
    ]
    .into_iter()
    .map(|(type_, status, reason, message)| {
        let last_transition_time = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| rfc3339(now_ms), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.as_str().to_owned(),
            message,
            last_transition_time,
            observed_generation: Some(generation),
        }
    })
    .collect();
    MetricPipelineStatus {
        observed_generation: Some(generation),
        conditions,
        unsupported_mode: P::unsupported_mode(pipeline.resource()),
    }
}

/// The status of a stored pipeline the observer cannot read (see
/// `store::pipeline_rows`): it runs nowhere, and its `ConfigurationApplied` condition
/// says why ([`Reason::StoredSpecUnreadable`]) and how to repair it. The other
/// conditions are left out: nothing is known about a pipeline no agent runs.
pub fn unreadable_status(
    generation: i64,
    reason: &str,
    previous: &MetricPipelineStatus,
    now_ms: i64,
) -> MetricPipelineStatus {
    let status = ConditionStatus::False;
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_CONFIGURATION_APPLIED && c.status == status)
        .map_or_else(|| rfc3339(now_ms), |c| c.last_transition_time.clone());
    MetricPipelineStatus {
        observed_generation: Some(generation),
        conditions: vec![Condition {
            type_: CONDITION_CONFIGURATION_APPLIED.to_owned(),
            status,
            reason: Reason::StoredSpecUnreadable.as_str().to_owned(),
            message: format!(
                "the observer cannot read this pipeline as stored, so no cluster runs it: \
                 {reason}. Apply it again with its secret values, or ask the provider to \
                 restore the secrets key"
            ),
            last_transition_time,
            observed_generation: Some(generation),
        }],
        unsupported_mode: false,
    }
}

type Computed = (&'static str, ConditionStatus, Reason, String);

fn configuration_applied(
    kind: &str,
    agent_rendered: bool,
    clusters: &[&ClusterObservation],
) -> Computed {
    let condition = CONDITION_CONFIGURATION_APPLIED;
    if clusters.is_empty() {
        return no_clusters(condition);
    }
    // Whether or not the agent is connected: the configuration cannot reach it.
    let too_large: Vec<String> = clusters
        .iter()
        .filter_map(|c| {
            check_config_size(c.desired_bytes)
                .err()
                .map(|error| format!("cluster {}: {error}", c.cluster))
        })
        .collect();
    if !too_large.is_empty() {
        return (
            condition,
            ConditionStatus::False,
            Reason::ConfigTooLarge,
            format!(
                "{}; it was not sent and the agent keeps its previous configuration: shrink the pipelines that select the cluster, or select it with fewer",
                listed(&too_large, "; ")
            ),
        );
    }
    if let Some(unsupported) = unsupported_by_agents(kind, clusters) {
        return unsupported;
    }
    if let Some(unsupported) = agent_rendered
        .then(|| instances_unsupported_by_agents(clusters))
        .flatten()
    {
        return unsupported;
    }
    let connected: Vec<&ClusterObservation> =
        clusters.iter().copied().filter(|c| c.connected).collect();
    if connected.is_empty() {
        return (
            condition,
            ConditionStatus::Unknown,
            Reason::NoAgentConnected,
            format!(
                "none of the {} selected clusters has a connected agent",
                clusters.len()
            ),
        );
    }
    let mut rejections = Vec::new();
    let mut pending = Vec::new();
    for cluster in &connected {
        let current = cluster
            .config
            .as_ref()
            .filter(|report| report.config_hash == cluster.desired_hash);
        match current.map(|report| report.state) {
            Some(AgentConfigState::Applied) => {}
            Some(AgentConfigState::Failed) => {
                let report = current.map(|r| r.errors.as_slice()).unwrap_or_default();
                if report.is_empty() {
                    rejections.push(format!(
                        "cluster {}: the agent refused the configuration",
                        cluster.cluster
                    ));
                }
                for error in report {
                    let location = [error.pipeline.as_str(), error.field_path.as_str()]
                        .into_iter()
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ");
                    rejections.push(if location.is_empty() {
                        format!("cluster {}: {}", cluster.cluster, error.message)
                    } else {
                        format!("cluster {}: {location}: {}", cluster.cluster, error.message)
                    });
                }
            }
            _ => pending.push(cluster.cluster.clone()),
        }
    }
    if !rejections.is_empty() {
        return (
            condition,
            ConditionStatus::False,
            Reason::ConfigRejected,
            listed(&rejections, "; "),
        );
    }
    if !pending.is_empty() {
        return (
            condition,
            ConditionStatus::Unknown,
            Reason::Pending,
            format!(
                "waiting for the agents of {} to apply the configuration",
                listed(&pending, ", ")
            ),
        );
    }
    (
        condition,
        ConditionStatus::True,
        Reason::Applied,
        format!(
            "applied by the agents of all {} connected clusters",
            connected.len()
        ),
    )
}

/// A trace pipeline selecting clusters whose agents predate trace pipelines: they were
/// sent their configuration without it, and run the rest of it (so their clusters'
/// other pipelines are `Applied`), but never this one until the agent is upgraded.
fn unsupported_by_agents(kind: &str, clusters: &[&ClusterObservation]) -> Option<Computed> {
    if kind != kaas_pipeline::TRACE_KIND {
        return None;
    }
    unsupported_where(
        clusters,
        |c| !c.runs_trace_pipelines,
        "run trace pipelines",
        "this pipeline",
    )
}

/// A template instance the agents render themselves (bound to Secret or ConfigMap
/// keys) selecting clusters whose agents predate that: they were sent their
/// configuration without it, and never run it until the agent is upgraded.
fn instances_unsupported_by_agents(clusters: &[&ClusterObservation]) -> Option<Computed> {
    unsupported_where(
        clusters,
        |c| !c.renders_template_instances,
        "render template instances bound to Secret or ConfigMap keys",
        "this instance",
    )
}

/// `AgentUnsupported` naming the `clusters` whose agent `lacks` a feature: they do not
/// `what`, so their configuration is sent without `thing`.
fn unsupported_where(
    clusters: &[&ClusterObservation],
    lacks: impl Fn(&ClusterObservation) -> bool,
    what: &str,
    thing: &str,
) -> Option<Computed> {
    let unsupported: Vec<String> = (clusters.iter())
        .filter(|c| lacks(c))
        .map(|c| c.cluster.clone())
        .collect();
    (!unsupported.is_empty()).then(|| {
        (
            CONDITION_CONFIGURATION_APPLIED,
            ConditionStatus::False,
            Reason::AgentUnsupported,
            format!(
                "the agents of {} do not {what} (they predate them), so their configuration is sent without {thing}: upgrade those agents",
                listed(&unsupported, ", ")
            ),
        )
    })
}

fn agent_connected(clusters: &[&ClusterObservation]) -> Computed {
    let condition = CONDITION_AGENT_CONNECTED;
    if clusters.is_empty() {
        return no_clusters(condition);
    }
    let disconnected: Vec<String> = clusters
        .iter()
        .filter(|c| !c.connected)
        .map(|c| c.cluster.clone())
        .collect();
    if disconnected.is_empty() {
        (
            condition,
            ConditionStatus::True,
            Reason::Connected,
            format!(
                "the agents of all {} selected clusters are connected",
                clusters.len()
            ),
        )
    } else {
        (
            condition,
            ConditionStatus::False,
            Reason::AgentDisconnected,
            format!("no agent connected for {}", listed(&disconnected, ", ")),
        )
    }
}

/// Problems in the order they are reported: a missing or refused Secret, an unreachable backend
/// and a buffer that cannot write stop all delivery; other errors, drops, a filling
/// buffer and one reduced by the cluster's budget follow.
fn problem_rank(reason: &str) -> u8 {
    match Reason::parse(reason) {
        Some(Reason::SecretMissing | Reason::SecretInvalid) => 0,
        Some(Reason::BackendUnreachable | Reason::BufferWriteFailed) => 1,
        Some(Reason::DataDropped) => 3,
        Some(Reason::BufferFillingUp | Reason::BufferBudgetExceeded) => 4,
        _ => 2,
    }
}

/// The problems in one pipeline entry of a health report taken at `timestamp_ms`, for a
/// pipeline whose buffer holds at most `max_bytes`, worst first: what an instance's
/// report says about the pipeline (stored per instance, [`crate::store::instances`]).
pub fn entry_problems(
    entry: &PipelineHealthRecord,
    timestamp_ms: i64,
    max_bytes: u64,
) -> Vec<InstanceProblem> {
    let mut problems = Vec::new();
    let mut add = |reason: String, message: String| {
        problems.push(InstanceProblem {
            rank: i32::from(problem_rank(&reason)),
            reason,
            message,
        });
    };
    if let Some(error) = &entry.last_error
        && error.at_ms >= timestamp_ms.saturating_sub(RECENT_ERROR_WINDOW_MS)
    {
        let reason = if error.reason.is_empty() {
            "Error".to_owned()
        } else {
            error.reason.clone()
        };
        add(reason, error.message.clone());
    }
    if entry.dropped_since_last_report > 0 {
        add(
            Reason::DataDropped.as_str().to_owned(),
            format!(
                "{} samples dropped since the previous report",
                entry.dropped_since_last_report
            ),
        );
    }
    if entry.buffer_bytes.saturating_mul(2) > max_bytes {
        add(
            Reason::BufferFillingUp.as_str().to_owned(),
            format!(
                "the buffer holds {} of its {max_bytes} bytes",
                entry.buffer_bytes
            ),
        );
    }
    problems.sort_by_key(|problem| problem.rank);
    problems
}

/// One cluster's verdict on a pipeline: whether any of its instances reports on it,
/// and the problems of its worst instance, each as (rank, reason, message).
fn cluster_problems<P: PipelineKind>(
    pipeline: &P,
    cluster: &ClusterObservation,
) -> Option<Vec<(i32, String, String)>> {
    let name = &cluster.cluster;
    // Per instance: the worst instance, with how many report and are affected.
    if let Some(instances) = cluster
        .instances
        .iter()
        .find(|i| i.kind == P::KIND && i.pipeline == pipeline.name())
    {
        let Some(worst) = &instances.worst else {
            return Some(Vec::new());
        };
        // A single instance reads as the cluster did before instances were told apart.
        let whose = if instances.reporting > 1 {
            format!(
                "cluster {name}, instance {} ({} of {} instances affected)",
                worst.instance, instances.affected, instances.reporting
            )
        } else {
            format!("cluster {name}")
        };
        return Some(
            worst
                .problems
                .iter()
                .map(|p| (p.rank, p.reason.clone(), format!("{whose}: {}", p.message)))
                .collect(),
        );
    }
    // The cluster-level report alone (stored before instances were told apart).
    let health = cluster.health.as_ref()?;
    let entry = health
        .pipelines
        .iter()
        .find(|p| p.is(P::KIND, pipeline.name()))?;
    Some(
        entry_problems(entry, health.timestamp_ms, pipeline.buffer_max_bytes())
            .into_iter()
            .map(|p| (p.rank, p.reason, format!("cluster {name}: {}", p.message)))
            .collect(),
    )
}

/// `FlowHealthy` from the health entries of `pipeline`'s kind and name: per cluster
/// the worst of its live instances ([`ClusterObservation::instances`]), across clusters
/// every problem, worst first. A pipeline no agent reports on stays Unknown with
/// `NoHealthReports`: health is never assumed.
fn flow_healthy<P: PipelineKind>(pipeline: &P, clusters: &[&ClusterObservation]) -> Computed {
    let condition = CONDITION_FLOW_HEALTHY;
    if clusters.is_empty() {
        return no_clusters(condition);
    }
    let mut reported = 0;
    // (rank, reason, message) per problem found.
    let mut problems: Vec<(i32, String, String)> = Vec::new();
    for cluster in clusters.iter().filter(|c| c.connected) {
        if let Some(found) = cluster_problems(pipeline, cluster) {
            reported += 1;
            problems.extend(found);
        }
    }
    if reported == 0 {
        return (
            condition,
            ConditionStatus::Unknown,
            Reason::NoHealthReports,
            "no connected agent has reported on this pipeline yet".to_owned(),
        );
    }
    problems.sort_by_key(|problem| problem.0);
    let Some((_, worst, _)) = problems.first().cloned() else {
        return (
            condition,
            ConditionStatus::True,
            Reason::FlowHealthy,
            format!("data flows from all {reported} reporting clusters"),
        );
    };
    let messages: Vec<String> = problems
        .into_iter()
        .map(|(_, reason, message)| format!("{reason}: {message}"))
        .collect();
    (
        condition,
        ConditionStatus::False,
        known_reason(&worst),
        listed(&messages, "; "),
    )
}

/// One cluster's `FlowHealthy` for a pipeline from its instances: True without an
/// affected instance, else False with the worst instance's worst reason (as
/// [`known_reason`] maps it) and its problems as the message.
pub fn instances_verdict(instances: &PipelineInstances) -> (ConditionStatus, Reason, String) {
    let Some(worst) = &instances.worst else {
        return (ConditionStatus::True, Reason::FlowHealthy, String::new());
    };
    let reason = worst
        .problems
        .first()
        .map_or(Reason::FlowInterrupted, |p| known_reason(&p.reason));
    let messages: Vec<String> = worst
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.reason, p.message))
        .collect();
    (ConditionStatus::False, reason, listed(&messages, "; "))
}

/// The condition reason for an agent's error reason: the same when it is one agents
/// report ([`Reason::is_agent_error`]), otherwise the generic
/// [`Reason::FlowInterrupted`] (the agent's own reason is still in the message), so
/// the reason stays a bounded, documented set.
fn known_reason(reason: &str) -> Reason {
    Reason::parse(reason)
        .filter(|reason| reason.is_agent_error())
        .unwrap_or(Reason::FlowInterrupted)
}

fn no_clusters(condition: &'static str) -> Computed {
    (
        condition,
        ConditionStatus::Unknown,
        Reason::NoClusters,
        "no cluster of the tenant matches the pipeline's clusterSelector".to_owned(),
    )
}

fn listed(items: &[String], separator: &str) -> String {
    let mut text = items
        .iter()
        .take(MAX_LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" (and {} more)", items.len() - MAX_LISTED));
    }
    text
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with second precision, as Kubernetes
/// writes condition times.
pub fn rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use kaas_proto::control::v1::{DroppedSamples, JobTargetsDown, PipelineError, PipelineHealth};

    use super::*;
    use crate::store::ConfigErrorRecord;
    use kaas_pipeline::status::reasons;
    use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline};

    const NOW: i64 = 1_700_000_000_000;

    fn pipeline(max_bytes: &str) -> ValidatedPipeline {
        let text = format!(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: shop}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output: {{prometheusRemoteWrite: {{url: "https://a.example/write"}}}}
  buffer: {{maxBytes: {max_bytes}}}
"#
        );
        kaas_pipeline::document::parse_pipelines(
            &text,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .into_iter()
        .next()
        .unwrap()
        .outcome
        .unwrap()
    }

    fn report(
        hash: &str,
        state: AgentConfigState,
        errors: Vec<ConfigErrorRecord>,
    ) -> Option<ConfigReport> {
        Some(ConfigReport {
            config_hash: hash.to_owned(),
            state,
            errors,
            running_config_hash: String::new(),
            at_ms: NOW,
            without_trace_pipelines: false,
            without_template_instances: false,
        })
    }

    fn cluster(name: &str, connected: bool, config: Option<ConfigReport>) -> ClusterObservation {
        ClusterObservation {
            cluster: name.to_owned(),
            connected,
            desired_hash: "h2".to_owned(),
            desired_bytes: 1000,
            runs_trace_pipelines: true,
            renders_template_instances: true,
            config,
            health: None,
            instances: Vec::new(),
            placement: kaas_pipeline::role::PushPlacement::default(),
        }
    }

    fn condition<'a>(status: &'a MetricPipelineStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn healthy_entry() -> PipelineHealthRecord {
        PipelineHealthRecord {
            pipeline: "shop".to_owned(),
            samples_sent: 100,
            ..PipelineHealthRecord::default()
        }
    }

    fn with_health(
        mut cluster: ClusterObservation,
        entry: PipelineHealthRecord,
    ) -> ClusterObservation {
        cluster.health = Some(HealthRecord {
            agent_instance_id: "i".to_owned(),
            timestamp_ms: NOW,
            pipelines: vec![entry],
        });
        cluster
    }

    /// Issue 18: a pipeline with raw Prometheus scrape configs reports
    /// `unsupportedMode: true` in its status; one without them does not.
    #[test]
    fn raw_scrape_configs_mark_the_status_unsupported() {
        let clusters = [cluster("c1", true, None)];
        let plain = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        assert!(!plain.unsupported_mode);
        let raw = kaas_pipeline::document::parse_pipelines(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\nmetadata: {name: raw}\nspec:\n  input: {unsupported: {scrapeConfigs: [{job_name: a, static_configs: [{targets: ['10.0.0.1:9100']}]}]}}\n  output: {prometheusRemoteWrite: {url: 'https://a.example/write'}}\n",
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .into_iter()
        .next()
        .and_then(|document| document.outcome.ok())
        .expect("a valid pipeline");
        let status = pipeline_status(&raw, 1, &clusters, &Default::default(), NOW);
        assert!(status.unsupported_mode);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["unsupportedMode"], true);
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("unsupportedMode")
                .is_none()
        );
    }

    #[test]
    fn applied_everywhere_is_true_with_the_generation() {
        let clusters = [
            cluster("c1", true, report("h2", AgentConfigState::Applied, vec![])),
            cluster("c2", true, report("h2", AgentConfigState::Applied, vec![])),
            // Disconnected clusters do not hold the condition back.
            cluster("c3", false, None),
        ];
        let status = pipeline_status(&pipeline("1Gi"), 4, &clusters, &Default::default(), NOW);
        assert_eq!(status.observed_generation, Some(4));
        let applied = condition(&status, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied.status, ConditionStatus::True);
        assert_eq!(applied.reason, reasons::APPLIED);
        assert_eq!(applied.observed_generation, Some(4));
        assert_eq!(applied.last_transition_time, "2023-11-14T22:13:20Z");
        let connected = condition(&status, CONDITION_AGENT_CONNECTED);
        assert_eq!(connected.status, ConditionStatus::False);
        assert_eq!(connected.reason, Reason::AgentDisconnected.as_str());
        assert!(connected.message.contains("c3"), "{}", connected.message);
    }

    #[test]
    fn a_rejection_lists_every_error_with_its_cluster_and_path() {
        let errors = vec![
            ConfigErrorRecord {
                pipeline: "shop".to_owned(),
                field_path: "spec.output.prometheusRemoteWrite.url".to_owned(),
                message: "not an absolute http(s) URL".to_owned(),
            },
            ConfigErrorRecord {
                pipeline: "other".to_owned(),
                field_path: String::new(),
                message: "the pipeline could not start".to_owned(),
            },
        ];
        let clusters = [
            cluster("c1", true, report("h2", AgentConfigState::Failed, errors)),
            cluster("c2", true, report("h2", AgentConfigState::Applied, vec![])),
        ];
        let status = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let applied = condition(&status, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied.status, ConditionStatus::False);
        assert_eq!(applied.reason, reasons::CONFIG_REJECTED);
        assert_eq!(
            applied.message,
            "cluster c1: shop spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL; cluster c1: other: the pipeline could not start"
        );
    }

    #[test]
    fn a_configuration_over_the_limit_is_named_with_its_cluster_size_and_limit() {
        let limit = kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES;
        let mut big = cluster("c2", false, None);
        big.desired_bytes = limit + 1;
        let clusters = [
            cluster("c1", true, report("h2", AgentConfigState::Applied, vec![])),
            big,
        ];
        let status = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let applied = condition(&status, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied.status, ConditionStatus::False);
        assert_eq!(applied.reason, reasons::CONFIG_TOO_LARGE);
        assert!(
            applied.message.starts_with(&format!(
                "cluster c2: the agent configuration is {} bytes, over the limit of {limit} bytes; it was not sent",
                limit + 1
            )),
            "{}",
            applied.message
        );
    }

    #[test]
    fn reports_about_an_older_configuration_are_pending() {
        let clusters = [
            cluster("c1", true, report("h1", AgentConfigState::Applied, vec![])),
            cluster("c2", true, report("h2", AgentConfigState::Applying, vec![])),
            cluster("c3", true, None),
            // A refusal of an older configuration no longer counts.
            cluster("c4", true, report("h1", AgentConfigState::Failed, vec![])),
        ];
        let status = pipeline_status(&pipeline("1Gi"), 2, &clusters, &Default::default(), NOW);
        let applied = condition(&status, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied.status, ConditionStatus::Unknown);
        assert_eq!(applied.reason, Reason::Pending.as_str());
        assert!(
            applied.message.contains("c1, c2, c3, c4"),
            "{}",
            applied.message
        );
    }

    #[test]
    fn no_clusters_or_no_agents_is_unknown() {
        let status = pipeline_status(
            &pipeline("1Gi"),
            1,
            &[] as &[ClusterObservation],
            &Default::default(),
            NOW,
        );
        assert!(status.conditions.iter().all(
            |c| c.status == ConditionStatus::Unknown && c.reason == Reason::NoClusters.as_str()
        ));
        let clusters = [cluster("c1", false, None)];
        let status = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let applied = condition(&status, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied.reason, Reason::NoAgentConnected.as_str());
        let flow = condition(&status, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.reason, Reason::NoHealthReports.as_str());
    }

    /// Issue 16: with instance reports, a cluster's verdict on a pipeline is its worst
    /// instance's, named with the count of affected instances (a single instance reads
    /// as the cluster did), and it wins over the older cluster-level record.
    #[test]
    fn a_cluster_is_as_healthy_as_its_worst_instance() {
        use crate::store::instances::WorstInstance;
        let applied = || report("h2", AgentConfigState::Applied, vec![]);
        let problem = |rank: i32, reason: &str, message: &str| InstanceProblem {
            rank,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        let instances = |reporting, affected, worst: Option<(&str, Vec<InstanceProblem>)>| {
            vec![PipelineInstances {
                kind: kaas_pipeline::KIND.to_owned(),
                pipeline: "shop".to_owned(),
                reporting,
                affected,
                worst: worst.map(|(instance, problems)| WorstInstance {
                    instance: instance.to_owned(),
                    problems,
                }),
            }]
        };
        // The cluster-level record says healthy; the instances say otherwise.
        let mut c1 = with_health(cluster("c1", true, applied()), healthy_entry());
        c1.instances = instances(
            3,
            1,
            Some((
                "node-2",
                vec![
                    problem(1, reasons::BACKEND_UNREACHABLE, "refused"),
                    problem(3, reasons::DATA_DROPPED, "5 samples dropped"),
                ],
            )),
        );
        let mut c2 = cluster("c2", true, applied());
        c2.instances = instances(
            1,
            1,
            Some(("default", vec![problem(4, "BufferFillingUp", "full")])),
        );
        let mut c3 = cluster("c3", true, applied());
        c3.instances = instances(5, 0, None);
        let status = pipeline_status(&pipeline("1Gi"), 1, &[c1, c2, c3], &Default::default(), NOW);
        let flow = condition(&status, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.status, ConditionStatus::False);
        assert_eq!(flow.reason, reasons::BACKEND_UNREACHABLE);
        assert_eq!(
            flow.message,
            "BackendUnreachable: cluster c1, instance node-2 (1 of 3 instances affected): refused; \
             DataDropped: cluster c1, instance node-2 (1 of 3 instances affected): 5 samples dropped; \
             BufferFillingUp: cluster c2: full"
        );
        // Every instance healthy: True over the reporting clusters.
        let mut c3 = cluster("c3", true, applied());
        c3.instances = instances(5, 0, None);
        let status = pipeline_status(&pipeline("1Gi"), 1, &[c3], &Default::default(), NOW);
        let flow = condition(&status, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.status, ConditionStatus::True);
        let (status, reason, message) =
            instances_verdict(&instances(3, 1, Some(("n", vec![problem(1, "Weird", "x")])))[0]);
        assert_eq!(
            (status, reason),
            (ConditionStatus::False, Reason::FlowInterrupted)
        );
        assert_eq!(message, "Weird: x");
    }

    #[test]
    fn flow_problems_map_to_their_reasons() {
        let applied = || report("h2", AgentConfigState::Applied, vec![]);
        let error = |reason: &str, at_ms: i64| ErrorRecord {
            at_ms,
            reason: reason.to_owned(),
            message: format!("{reason} happened"),
        };
        let cases = [
            (
                healthy_entry(),
                ConditionStatus::True,
                reasons::FLOW_HEALTHY,
            ),
            (
                PipelineHealthRecord {
                    last_error: Some(error(reasons::BACKEND_UNREACHABLE, NOW - 1000)),
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::BACKEND_UNREACHABLE,
            ),
            (
                // An old error is history, not a problem.
                PipelineHealthRecord {
                    last_error: Some(error(
                        reasons::BACKEND_UNREACHABLE,
                        NOW - RECENT_ERROR_WINDOW_MS - 1,
                    )),
                    ..healthy_entry()
                },
                ConditionStatus::True,
                reasons::FLOW_HEALTHY,
            ),
            (
                PipelineHealthRecord {
                    last_error: Some(error(reasons::SECRET_MISSING, NOW)),
                    dropped_since_last_report: 5,
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::SECRET_MISSING,
            ),
            (
                PipelineHealthRecord {
                    dropped_since_last_report: 5,
                    buffer_bytes: 900 << 20,
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::DATA_DROPPED,
            ),
            (
                PipelineHealthRecord {
                    buffer_bytes: 513 << 20,
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::BUFFER_FILLING_UP,
            ),
            (
                PipelineHealthRecord {
                    buffer_bytes: 512 << 20,
                    ..healthy_entry()
                },
                ConditionStatus::True,
                reasons::FLOW_HEALTHY,
            ),
            (
                PipelineHealthRecord {
                    last_error: Some(error("BufferError", NOW)),
                    ..healthy_entry()
                },
                ConditionStatus::False,
                Reason::FlowInterrupted.as_str(),
            ),
            // Issue 13, finding 10 (buffer faults): a buffer that cannot write (a full
            // data volume) is named as such, ahead of the drops it causes; on 552c13e it
            // showed as the generic FlowInterrupted.
            (
                PipelineHealthRecord {
                    last_error: Some(error(reasons::BUFFER_WRITE_FAILED, NOW)),
                    dropped_since_last_report: 5,
                    buffer_bytes: 900 << 20,
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::BUFFER_WRITE_FAILED,
            ),
            (
                PipelineHealthRecord {
                    last_error: Some(error(reasons::KUBELET_CERTIFICATE_UNTRUSTED, NOW)),
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::KUBELET_CERTIFICATE_UNTRUSTED,
            ),
            (
                PipelineHealthRecord {
                    last_error: Some(error(reasons::TARGET_SEALED, NOW)),
                    ..healthy_entry()
                },
                ConditionStatus::False,
                reasons::TARGET_SEALED,
            ),
        ];
        for (entry, status, reason) in cases {
            let clusters = [with_health(cluster("c1", true, applied()), entry.clone())];
            let computed =
                pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
            let flow = condition(&computed, CONDITION_FLOW_HEALTHY);
            assert_eq!(
                (flow.status, flow.reason.as_str()),
                (status, reason),
                "{entry:?}: {}",
                flow.message
            );
            if status == ConditionStatus::False {
                assert!(flow.message.contains("cluster c1"), "{}", flow.message);
            }
        }
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let pending = [cluster("c1", true, None)];
        let first = pipeline_status(&pipeline("1Gi"), 1, &pending, &Default::default(), NOW);
        let later = NOW + 60_000;
        let same = pipeline_status(&pipeline("1Gi"), 1, &pending, &first, later);
        assert_eq!(first, same);
        let applied = [cluster(
            "c1",
            true,
            report("h2", AgentConfigState::Applied, vec![]),
        )];
        let changed = pipeline_status(&pipeline("1Gi"), 1, &applied, &first, later);
        let condition_of = |s: &MetricPipelineStatus| {
            condition(s, CONDITION_CONFIGURATION_APPLIED)
                .last_transition_time
                .clone()
        };
        assert_eq!(condition_of(&changed), rfc3339(later));
        assert_eq!(
            condition(&changed, CONDITION_AGENT_CONNECTED).last_transition_time,
            rfc3339(NOW)
        );
    }

    #[test]
    fn health_records_count_drops_since_the_previous_report_of_the_same_process() {
        let report = |dropped: u64, at: i64| AgentHealth {
            timestamp_unix_ms: at,
            pipelines: vec![PipelineHealth {
                pipeline: "shop".to_owned(),
                samples_sent: 10,
                samples_dropped: vec![
                    DroppedSamples {
                        reason: DropReason::BufferFull as i32,
                        count: dropped,
                    },
                    DroppedSamples {
                        reason: 99,
                        count: 1,
                    },
                ],
                last_error: Some(PipelineError {
                    timestamp_unix_ms: at,
                    reason: "BackendUnreachable".to_owned(),
                    message: "connection refused".to_owned(),
                }),
                ..PipelineHealth::default()
            }],
        };
        let first = HealthRecord::from_report("i1", &report(4, NOW), None);
        assert_eq!(first.pipelines[0].dropped_since_last_report, 5);
        assert_eq!(
            first.pipelines[0].samples_dropped,
            BTreeMap::from([("bufferFull".to_owned(), 4), ("other".to_owned(), 1)])
        );
        let second = HealthRecord::from_report("i1", &report(4, NOW + 1), Some(&first));
        assert_eq!(second.pipelines[0].dropped_since_last_report, 0);
        let third = HealthRecord::from_report("i1", &report(10, NOW + 2), Some(&second));
        assert_eq!(third.pipelines[0].dropped_since_last_report, 6);
        // A new process starts its counters at zero: everything it counted is new.
        let restarted = HealthRecord::from_report("i2", &report(2, NOW + 3), Some(&third));
        assert_eq!(restarted.pipelines[0].dropped_since_last_report, 3);
        let json = serde_json::to_value(&third).unwrap();
        assert_eq!(
            json["pipelines"][0]["lastError"]["reason"],
            "BackendUnreachable"
        );
        let back: HealthRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, third);
    }

    /// Issue 15: the failing jobs an agent reports are kept bounded, whatever it sends
    /// (the agent runs in the tenant's cluster), without control characters.
    #[test]
    fn failing_jobs_in_a_report_are_bounded() {
        let hostile = AgentHealth {
            timestamp_unix_ms: NOW,
            pipelines: vec![PipelineHealth {
                pipeline: "kaas-central".to_owned(),
                targets_down_by_job: (0..1000)
                    .map(|i| JobTargetsDown {
                        job: format!("job-{i}"),
                        targets_down: 1,
                        reason: format!("refused\n{}", "x".repeat(10_000)),
                    })
                    .collect(),
                ..PipelineHealth::default()
            }],
        };
        let record = HealthRecord::from_report("i1", &hostile, None);
        let jobs = &record.pipelines[0].targets_down_by_job;
        assert_eq!(jobs.len(), MAX_JOBS_DOWN);
        assert!(jobs.iter().all(|j| {
            j.reason.chars().count() == MAX_JOB_DOWN_REASON_CHARS
                && j.reason.starts_with("refusedx")
        }));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["pipelines"][0]["targetsDownByJob"][0]["job"], "job-0");
        let back: HealthRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }

    /// Issue 13, finding 10 (counters saturate): an agent's report is the agent's to
    /// choose; drop counts at the top of `u64` and a timestamp at the bottom of `i64`
    /// give a saturated count and a status, where 552c13e overflowed (a panic in debug
    /// builds, a wrapped count in release builds).
    #[test]
    fn reports_with_extreme_counts_and_times_saturate() {
        let hostile = AgentHealth {
            timestamp_unix_ms: i64::MIN,
            pipelines: vec![PipelineHealth {
                pipeline: "shop".to_owned(),
                samples_dropped: [DropReason::BufferFull, DropReason::MaxAgeExceeded]
                    .into_iter()
                    .map(|reason| DroppedSamples {
                        reason: reason as i32,
                        count: u64::MAX,
                    })
                    .chain([DroppedSamples {
                        reason: 99,
                        count: u64::MAX,
                    }])
                    .collect(),
                last_error: Some(PipelineError {
                    timestamp_unix_ms: i64::MIN,
                    reason: "BackendUnreachable".to_owned(),
                    message: "down".to_owned(),
                }),
                ..PipelineHealth::default()
            }],
        };
        let first = HealthRecord::from_report("i1", &hostile, None);
        assert_eq!(first.pipelines[0].dropped_since_last_report, u64::MAX);
        let again = HealthRecord::from_report("i1", &hostile, Some(&first));
        assert_eq!(again.pipelines[0].dropped_since_last_report, 0);
        let mut observed = cluster("c1", true, report("h2", AgentConfigState::Applied, vec![]));
        observed.health = Some(again);
        let clusters = [observed];
        let computed = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let flow = condition(&computed, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.status, ConditionStatus::False);
    }

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799_000), "2099-12-31T23:59:59Z");
    }

    fn log_pipeline(name: &str) -> ValidatedLogPipeline {
        let text = format!(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {{name: {name}}}
spec:
  input: {{runtime: {{enabled: true}}}}
  output: {{loki: {{url: "https://loki.example"}}}}
"#
        );
        let resource: kaas_pipeline::LogPipeline = serde_yaml::from_str(&text).unwrap();
        kaas_pipeline::validate_log_pipeline(
            &resource,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap()
    }

    /// Issue 16: health is per (kind, name). A metric pipeline's report never makes the
    /// log pipeline of the same name healthy (or unhealthy), and a log pipeline no
    /// agent reports on is Unknown, never assumed healthy.
    #[test]
    fn health_of_a_metric_pipeline_never_counts_for_a_log_pipeline_of_the_same_name() {
        let applied = || cluster("c1", true, report("h2", AgentConfigState::Applied, vec![]));
        let failing = PipelineHealthRecord {
            last_error: Some(ErrorRecord {
                at_ms: NOW,
                reason: reasons::BACKEND_UNREACHABLE.to_owned(),
                message: "down".to_owned(),
            }),
            ..healthy_entry()
        };
        let clusters = [with_health(applied(), failing.clone())];
        let logs = pipeline_status(
            &log_pipeline("shop"),
            1,
            &clusters,
            &Default::default(),
            NOW,
        );
        let flow = condition(&logs, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.status, ConditionStatus::Unknown, "{flow:?}");
        assert_eq!(flow.reason, Reason::NoHealthReports.as_str());
        let applied_condition = condition(&logs, CONDITION_CONFIGURATION_APPLIED);
        assert_eq!(applied_condition.status, ConditionStatus::True);
        let metrics = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let flow = condition(&metrics, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.reason, reasons::BACKEND_UNREACHABLE);

        // An entry of the log kind is the log pipeline's, not the metric one's.
        let log_entry = PipelineHealthRecord {
            kind: kaas_pipeline::LOG_KIND.to_owned(),
            ..failing
        };
        let clusters = [with_health(applied(), log_entry)];
        let logs = pipeline_status(
            &log_pipeline("shop"),
            1,
            &clusters,
            &Default::default(),
            NOW,
        );
        let flow = condition(&logs, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.reason, reasons::BACKEND_UNREACHABLE);
        let metrics = pipeline_status(&pipeline("1Gi"), 1, &clusters, &Default::default(), NOW);
        let flow = condition(&metrics, CONDITION_FLOW_HEALTHY);
        assert_eq!(flow.reason, Reason::NoHealthReports.as_str());
    }

    /// Report entries keep their kind (empty for metric, as older agents send it), and
    /// an entry of a kind the observer does not know is not kept.
    #[test]
    fn report_entries_keep_their_kind_and_unknown_kinds_are_dropped() {
        let entry = |kind: &str| PipelineHealth {
            pipeline: "shop".to_owned(),
            kind: kind.to_owned(),
            ..PipelineHealth::default()
        };
        let report = AgentHealth {
            timestamp_unix_ms: NOW,
            pipelines: vec![
                entry(""),
                entry("MetricPipeline"),
                entry("LogPipeline"),
                entry(&"X".repeat(10_000)),
            ],
        };
        let record = HealthRecord::from_report("i1", &report, None);
        let kinds: Vec<&str> = record.pipelines.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["", "", "LogPipeline"]);
        let kinds: Vec<&str> = record.pipelines.iter().map(|p| p.kind()).collect();
        assert_eq!(kinds, ["MetricPipeline", "MetricPipeline", "LogPipeline"]);
    }
}
