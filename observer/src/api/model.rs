//! The REST API's wire types: request and response bodies in camelCase JSON.
//!
//! The server serializes them and the command line deserializes them, so both sides share
//! one definition, and the OpenAPI document takes their schemas from the same types
//! (`schemars`), so the document cannot drift from what is sent. Timestamps are Unix
//! milliseconds, as in the store.

use std::collections::BTreeMap;

use kaas_pipeline::MetricPipeline;
use kaas_pipeline::status::MetricPipelineStatus;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::{ApiTokenInfo, Cluster, ClusterState, ConfigReport, Tenant};

/// A DNS-1123 label, as the OpenAPI document states it (validation in the handlers
/// uses `kaas_pipeline::names`, which checks the same).
const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// For 422 answers: every invalid field; otherwise empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldProblem {
    /// Dotted path to the field, e.g. `spec.output.prometheusRemoteWrite.url`; empty for
    /// the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// `POST /api/v1/tenants`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// The tenant's name, a DNS-1123 label.
    #[serde(default)]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
}

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantView {
    /// The tenant's name.
    pub name: String,
    /// When it was created.
    pub created_at_ms: i64,
}

impl From<Tenant> for TenantView {
    fn from(tenant: Tenant) -> Self {
        Self {
            name: tenant.name,
            created_at_ms: tenant.created_at_ms,
        }
    }
}

/// `GET /api/v1/tenants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantList {
    /// Every tenant, by name.
    pub items: Vec<TenantView>,
}

/// `POST /api/v1/tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What the token is for, e.g. `ci`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The tenant the token acts for; absent for an admin token (admins only). A tenant
    /// token may only create tokens for its own tenant, which is also the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// An API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenView {
    /// The token's id, for revoking it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The tenant it acts for; absent for an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When it was created.
    pub created_at_ms: i64,
}

impl From<ApiTokenInfo> for TokenView {
    fn from(info: ApiTokenInfo) -> Self {
        Self {
            id: info.id,
            name: info.name,
            tenant: info.tenant,
            created_at_ms: info.created_at_ms,
        }
    }
}

/// `POST /api/v1/tokens` answer: the token, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatedToken {
    /// The token's id, for revoking it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The tenant it acts for; absent for an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When it was created.
    pub created_at_ms: i64,
    /// The bearer token. The observer keeps only its hash: this is the only time it is
    /// shown.
    pub token: String,
}

/// `GET /api/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenList {
    /// The tokens the caller may see.
    pub items: Vec<TokenView>,
}

/// `DELETE /api/v1/tokens?tenant=` and `DELETE /api/v1/clusters/{name}/certificates`:
/// how many were revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revoked {
    /// How many tokens or certificates this request revoked (0 when none was valid).
    pub revoked: u64,
}

/// `POST /api/v1/clusters`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateClusterRequest {
    /// The cluster's name, a DNS-1123 label unique across all tenants; it becomes the
    /// `cluster` label of every sample.
    #[serde(default)]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    /// The owning tenant. Required with an admin token; a tenant token may leave it out
    /// (its own tenant) but not name another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Labels that pipelines' `clusterSelector`s match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The cluster's Kubernetes API endpoint, for information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
}

/// Where a cluster is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStateView {
    /// Created; its agent has not joined yet.
    Provisioning,
    /// Its agent reports in.
    Active,
    /// Its agent has not been heard from for a while.
    Silent,
    /// Its onboarding source lost it without a deletion the observer saw; it alerts.
    Lost,
    /// Being removed.
    Deleting,
    /// Removed (tombstone); its certificate is no longer accepted.
    Deleted,
}

impl From<ClusterState> for ClusterStateView {
    fn from(state: ClusterState) -> Self {
        match state {
            ClusterState::Provisioning => Self::Provisioning,
            ClusterState::Active => Self::Active,
            ClusterState::Silent => Self::Silent,
            ClusterState::Lost => Self::Lost,
            ClusterState::Deleting => Self::Deleting,
            ClusterState::Deleted => Self::Deleted,
        }
    }
}

/// A cluster with what its agent last reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterView {
    /// The cluster's name, unique within its tenant.
    pub name: String,
    /// The cluster's global id: its identity across the provider (the `cluster` label
    /// on its data, its agents' certificates). `<tenant>.<name>`, or for a cluster
    /// registered before names were per tenant, its name.
    pub id: String,
    /// The owning tenant.
    pub tenant: String,
    /// Labels that pipelines' `clusterSelector`s match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The cluster's Kubernetes API endpoint, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// Lifecycle state.
    pub state: ClusterStateView,
    /// Whether its cluster-level agent holds a control stream to an observer replica
    /// right now (node instances are in `pipelineHealth[].instances`).
    pub connected: bool,
    /// The agent's version, once it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The agent process's instance id, once it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_instance_id: Option<String>,
    /// When the agent was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// Serial number (hex) of the agent's client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// When the agent's client certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after_ms: Option<i64>,
    /// Hash (hex) of the configuration the agent last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_config_hash: Option<String>,
    /// When the cluster was created.
    pub created_at_ms: i64,
    /// When the cluster was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<i64>,
    /// Which registration of the global id this is: a name registered again after its
    /// deletion is a new incarnation (the old one stays in the history, its
    /// certificates refused).
    #[serde(default)]
    pub incarnation: String,
    /// While the cluster waits for its first agent and the observer does not install
    /// it (a cluster registered through the API, or listed by an inventory without a
    /// kubeconfig): the command that prints its install manifests with a fresh join
    /// token and applies them (run it with the workload cluster's kubeconfig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_command: Option<String>,
    /// The agent's last health report, as it sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<serde_json::Value>,
    /// The agent's last configuration report (only when one cluster is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReportView>,
    /// Every control-plane component: whether the central pipeline scrapes it, why
    /// not, and a scraped one the agent cannot reach with the reason (only when one
    /// cluster is read; `/api/v1/clusters/{name}/control-plane` has the setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<Vec<super::control_plane::ComponentView>>,
    /// Each pipeline the cluster's agent instances report on (the cluster-level
    /// instance and one per node): the worst of its instances, with how many report
    /// and how many are affected. Instances unheard longer than the observer's
    /// `--instance-health-ttl` are left out (only when one cluster is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_health: Option<Vec<PipelineHealthView>>,
}

/// A pipeline's health on one cluster, over the agent instances reporting on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineHealthView {
    /// The cluster's name (in a pipeline's status; a cluster's view leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The pipeline's kind, e.g. `LogPipeline`.
    pub kind: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// `True` when no reporting instance has a problem with it, else `False` (the
    /// pipeline's `FlowHealthy` as this cluster sees it).
    pub status: String,
    /// The worst instance's worst problem as a condition reason (`FlowHealthy` when
    /// none has one).
    pub reason: String,
    /// What the worst instance reports, each problem with the agent's own reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How many instances report on the pipeline, and how many of them are affected.
    pub instances: InstanceCountsView,
    /// The worst affected instance (its certificate's instance name, e.g. the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_instance: Option<String>,
}

/// Agent instances reporting on a pipeline, and those with a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceCountsView {
    /// Instances whose latest report on the pipeline is within the time-to-live.
    pub reporting: u32,
    /// Those of them reporting a problem.
    pub affected: u32,
}

impl ClusterView {
    /// The view of a stored cluster, without agent reports.
    pub fn from_cluster(cluster: Cluster) -> Self {
        let install_command = (cluster.awaits_agent()
            && !crate::labels::agent_installed_by_observer(&cluster.labels))
        .then(|| install_command(&cluster));
        Self {
            install_command,
            name: cluster.name,
            id: cluster.id,
            tenant: cluster.tenant,
            labels: cluster.labels,
            api_endpoint: cluster.api_endpoint,
            state: cluster.state.into(),
            connected: cluster.connected,
            agent_version: cluster.agent_version,
            agent_instance_id: cluster.agent_instance_id,
            last_seen_ms: cluster.last_seen_ms,
            certificate_serial: cluster.certificate_serial,
            certificate_not_after_ms: cluster.certificate_not_after_ms,
            applied_config_hash: cluster.applied_config_hash,
            created_at_ms: cluster.created_at_ms,
            deleted_at_ms: cluster.deleted_at_ms,
            incarnation: cluster.incarnation,
            health: None,
            config: None,
            control_plane: None,
            pipeline_health: None,
        }
    }
}

/// The command that installs `cluster`'s agent by hand: a fresh join token and the
/// manifests from the observer, applied with `kubectl` (whose current context must be
/// the workload cluster).
pub fn install_command(cluster: &Cluster) -> String {
    format!(
        "observer cluster join-token {} --tenant {} | kubectl apply -f -",
        cluster.name, cluster.tenant
    )
}

/// What an agent said about the last configuration it was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigReportView {
    /// Hash (hex) of the configuration the report is about.
    pub config_hash: String,
    /// `APPLYING`, `APPLIED` or `FAILED`.
    pub state: String,
    /// Why it failed, per pipeline and field.
    #[serde(default)]
    pub errors: Vec<ConfigErrorView>,
    /// Hash (hex) of the configuration the agent runs now.
    pub running_config_hash: String,
    /// When the report arrived.
    pub at_ms: i64,
}

/// One reason an agent refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigErrorView {
    /// The pipeline at fault.
    pub pipeline: String,
    /// The field at fault.
    pub field_path: String,
    /// What is wrong.
    pub message: String,
}

impl From<ConfigReport> for ConfigReportView {
    fn from(report: ConfigReport) -> Self {
        Self {
            config_hash: report.config_hash,
            state: report.state.as_str().to_owned(),
            errors: report
                .errors
                .into_iter()
                .map(|e| ConfigErrorView {
                    pipeline: e.pipeline,
                    field_path: e.field_path,
                    message: e.message,
                })
                .collect(),
            running_config_hash: report.running_config_hash,
            at_ms: report.at_ms,
        }
    }
}

/// `GET /api/v1/clusters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterList {
    /// The clusters the caller may see, by name (one page of them with `limit`).
    pub items: Vec<ClusterView>,
    /// Present when more clusters follow: pass it as `continue` to get the next page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// `POST /api/v1/clusters` answer: the cluster and how to install its agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatedCluster {
    /// The new cluster.
    pub cluster: ClusterView,
    /// The single-use join token; shown only here.
    pub join_token: String,
    /// When the join token stops working.
    pub join_token_expires_at_ms: i64,
    /// Kubernetes manifests (YAML, several documents) that install the agent with this
    /// join token; apply them in the cluster with `kubectl apply -f -`.
    pub manifest: String,
}

/// `POST /api/v1/clusters/{name}/join-token` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinToken {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's global id.
    pub cluster_id: String,
    /// The single-use join token; shown only here.
    pub join_token: String,
    /// When the join token stops working.
    pub join_token_expires_at_ms: i64,
    /// The agent's install manifests with this join token.
    pub manifest: String,
}

/// A stored pipeline of the kind `R` (`MetricPipeline` by default, `LogPipeline`,
/// `TracePipeline`).
/// Inline secret values read `***`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "{R}View")]
pub struct PipelineView<R = MetricPipeline> {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's name.
    pub name: String,
    /// Grows by one whenever the spec changes.
    pub generation: i64,
    /// When the pipeline was created.
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
    /// The resource, with `metadata.generation` and `status` filled in; it can be edited
    /// and applied again as it is (`***` keeps the stored secret).
    pub resource: R,
}

/// `GET /api/v1/pipelines`, `GET /api/v1/logpipelines` and `GET /api/v1/tracepipelines`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "{R}List")]
pub struct PipelineList<R = MetricPipeline> {
    /// The pipelines the caller may see.
    pub items: Vec<PipelineView<R>>,
}

/// What applying a pipeline did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApplyResult {
    /// It did not exist before.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and is the same.
    Unchanged,
}

impl ApplyResult {
    /// The word printed by the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        }
    }
}

/// `PUT /api/v1/pipelines/{name}` and `POST /api/v1/pipelines` answer (and the same of
/// `/api/v1/logpipelines` and `/api/v1/tracepipelines`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "Applied{R}")]
pub struct AppliedPipeline<R = MetricPipeline> {
    /// What happened (or, for a dry run, what would happen).
    pub result: ApplyResult,
    /// True when nothing was stored.
    pub dry_run: bool,
    /// The pipeline as stored (or as it would be stored).
    pub pipeline: PipelineView<R>,
}

/// `GET /api/v1/pipelines/{name}/status` (and the same under `/api/v1/logpipelines` and
/// `/api/v1/tracepipelines`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineStatusView {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's kind.
    #[serde(default = "metric_kind")]
    pub kind: String,
    /// The pipeline's name.
    pub name: String,
    /// The pipeline's current generation.
    pub generation: i64,
    /// Conditions, as computed from the agents' reports.
    pub status: MetricPipelineStatus,
    /// Per cluster whose agent instances report on the pipeline (by cluster name):
    /// the worst of its live instances, with how many report and how many are
    /// affected, as in `GET /api/v1/clusters/{name}` (`pipelineHealth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<PipelineHealthView>,
}

/// How many clusters are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterCounts {
    /// All clusters, deleted ones included.
    pub total: u64,
    /// Waiting for their agent.
    pub provisioning: u64,
    /// Reporting.
    pub active: u64,
    /// Not heard from for a while.
    pub silent: u64,
    /// Lost by their onboarding source without a deletion the observer saw.
    pub lost: u64,
    /// Being removed.
    pub deleting: u64,
    /// Removed.
    pub deleted: u64,
}

/// `GET /api/v1/status`: an overview of what the caller may see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusView {
    /// Tenants (1 for a tenant token: its own).
    pub tenants: u64,
    /// Clusters by state.
    pub clusters: ClusterCounts,
    /// Pipelines.
    pub pipelines: u64,
    /// Agents holding a control stream now.
    pub connected_agents: u64,
    /// Deletions the mass-deletion guard holds until an administrator confirms them
    /// (`POST /api/v1/deletions/confirm`), of the clusters the caller may see.
    pub pending_deletions: Vec<PendingDeletionView>,
}

/// A cluster change an onboarding source wants to make and the mass-deletion guard
/// holds (see `crate::lifecycle::guard`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingDeletionView {
    /// The cluster's global id.
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// The source that wants to make the change (`inventory`, `cluster-api`).
    pub source: String,
    /// The state it would move the cluster to (`deleting`, `deleted` or `lost`).
    pub to_state: ClusterStateView,
    /// The source's evidence.
    pub reason: String,
    /// When the guard first held it, Unix milliseconds.
    pub held_at_ms: i64,
    /// When an administrator confirmed it; the source applies it at its next pass if
    /// its evidence still holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at_ms: Option<i64>,
}

/// `POST /api/v1/deletions/confirm`: what the confirmation released.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfirmedDeletions {
    /// The held changes now confirmed, applied by their source at its next pass.
    pub confirmed: Vec<PendingDeletionView>,
}

fn metric_kind() -> String {
    kaas_pipeline::KIND.to_owned()
}
