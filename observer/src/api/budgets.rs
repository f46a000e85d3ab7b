//! Cluster buffer budgets: how many bytes the buffers of all pipelines on a cluster's
//! agent may use together (`/api/v1/clusters/{name}/buffer-budget`, the cluster named
//! as on the other cluster routes: `?tenant=` and its name, or an admin's global id),
//! and the check that keeps the pipelines a cluster runs within it. Budgets are kept
//! by the cluster's global id; messages name the cluster as its tenant does.
//!
//! The budget is the provider's: only admins set it; a tenant reads its clusters'
//! budgets and what its pipelines take of them. Every cluster has one: the value set
//! for it, or [`BufferBudgets::default_bytes`] (`observer serve
//! --cluster-buffer-budget`). The provider's central pipeline is counted first
//! ([`BufferBudgets::central_bytes`]).
//!
//! That budget is the cluster-level instance's (its volume). Log pipelines reading node
//! logs (`runtime` and `node` inputs) buffer on each node instead, on the node's own
//! disk ([`kaas_pipeline::role`]), so they are counted against the node budget
//! ([`BufferBudgets::node_bytes`], `observer serve --node-buffer-budget`, the node
//! agents' `--buffer-budget`), which every node has in full, with the provider's
//! central log pipeline counted first there ([`BufferBudgets::central_node_bytes`]). A
//! log pipeline with both kinds of input has a buffer in both places and counts in
//! both.
//!
//! Applying a pipeline (and onboarding a cluster) is refused with 422 naming the
//! cluster when a selected cluster's pipelines would then ask for more buffer
//! (`spec.buffer.maxBytes`) than its budget, unless the change does not raise that sum
//! (so a tenant can always shrink its way back under a lowered budget). The agent
//! enforces the same budget again (its `--buffer-budget`), so a race between two
//! applies or an agent configured differently ends in smaller buffers with a
//! `BufferBudgetExceeded` condition, never a full volume.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use kaas_pipeline::buffer::{DEFAULT_BUFFER_BUDGET, DEFAULT_NODE_BUFFER_BUDGET, MIN_BUFFER_BYTES};
use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::role::AgentRole;
use kaas_pipeline::selector::ClusterSelector;
use kaas_pipeline::units::parse_byte_quantity;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::clusters::{ClusterPathQuery, visible_cluster};
use super::model::FieldProblem;
use super::{ApiError, ApiState, json_body};
use crate::store::pipeline_rows::PipelineRow;
use crate::store::{Cluster, PipelineKind};

/// The budgets the API checks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferBudgets {
    /// The budget of a cluster the provider set none for.
    pub default_bytes: u64,
    /// What the provider's central pipeline takes of every cluster's budget (0 without
    /// one).
    pub central_bytes: u64,
    /// The budget of each node's instance: its log buffers on its node's disk.
    pub node_bytes: u64,
    /// What the provider's central log pipeline takes of every node's budget (0
    /// without one).
    pub central_node_bytes: u64,
}

impl Default for BufferBudgets {
    fn default() -> Self {
        Self {
            default_bytes: DEFAULT_BUFFER_BUDGET,
            central_bytes: 0,
            node_bytes: DEFAULT_NODE_BUFFER_BUDGET,
            central_node_bytes: 0,
        }
    }
}

/// Where a pipeline's buffer lives, each place with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The cluster-level instance's volume: the cluster's budget.
    Cluster,
    /// Each node's disk: the node budget, in full on every node.
    Node,
}

impl Scope {
    const ALL: [Scope; 2] = [Scope::Cluster, Scope::Node];

    fn role(self) -> AgentRole {
        match self {
            Scope::Cluster => AgentRole::Cluster,
            Scope::Node => AgentRole::Node,
        }
    }
}

/// A cluster's budget and what is asked of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BufferBudgetView {
    /// The cluster's name in its tenant.
    pub cluster: String,
    /// The cluster's global id.
    pub cluster_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Bytes the buffers of all pipelines on the cluster's agent may use together.
    pub max_bytes: u64,
    /// Whether that is the observer's default rather than a value set for the cluster.
    pub default: bool,
    /// What the provider's central pipeline takes of it.
    pub reserved_bytes: u64,
    /// What the tenant's pipelines selecting the cluster ask for together of it (those
    /// that buffer on the cluster-level instance).
    pub pipeline_bytes: u64,
    /// Bytes the log buffers of each node's instance may use together on that node's
    /// disk (`observer serve --node-buffer-budget`), every node its own.
    pub node_max_bytes: u64,
    /// What the provider's central log pipeline takes of each node's budget.
    pub node_reserved_bytes: u64,
    /// What the tenant's log pipelines reading node logs ask of each node's budget.
    pub node_pipeline_bytes: u64,
}

/// `PUT /api/v1/clusters/{name}/buffer-budget`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetBufferBudget {
    /// The budget as a Kubernetes quantity (`8Gi`) or a number of bytes; at least `1Mi`.
    pub max_bytes: serde_json::Value,
}

/// `GET /api/v1/clusters/{name}/buffer-budget`: anyone who may see the cluster.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<BufferBudgetView>, ApiError> {
    let cluster = live_cluster(&caller, &state, name, query).await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// `PUT /api/v1/clusters/{name}/buffer-budget` (admin): sets the cluster's budget.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BufferBudgetView>, ApiError> {
    caller.require_admin()?;
    let request: SetBufferBudget = json_body(&headers, body)?;
    let bytes = budget_bytes(&request.max_bytes)
        .map_err(|reason| ApiError::invalid_field("the budget is invalid", "maxBytes", reason))?;
    let cluster = live_cluster(&caller, &state, name, query).await?;
    state
        .store
        .set_cluster_buffer_budget(&cluster.tenant, &cluster.id, Some(bytes), &caller.actor())
        .await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// `DELETE /api/v1/clusters/{name}/buffer-budget` (admin): back to the default.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<BufferBudgetView>, ApiError> {
    caller.require_admin()?;
    let cluster = live_cluster(&caller, &state, name, query).await?;
    state
        .store
        .set_cluster_buffer_budget(&cluster.tenant, &cluster.id, None, &caller.actor())
        .await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// A budget from a quantity string or a number of bytes.
fn budget_bytes(value: &serde_json::Value) -> Result<u64, String> {
    match value {
        serde_json::Value::String(text) => parse_budget(text),
        serde_json::Value::Number(number) => number
            .as_u64()
            .ok_or_else(|| format!("{number} is not a whole number of bytes"))
            .and_then(checked_budget),
        other => Err(format!("expected a quantity such as \"8Gi\", not {other}")),
    }
}

/// A budget written as a Kubernetes quantity (`8Gi`), as `--cluster-buffer-budget`
/// and the API take it: at least one minimal buffer.
pub fn parse_budget(text: &str) -> Result<u64, String> {
    parse_byte_quantity(text).and_then(checked_budget)
}

fn checked_budget(bytes: u64) -> Result<u64, String> {
    if bytes < MIN_BUFFER_BYTES {
        return Err(format!(
            "{bytes} bytes is below the minimum of 1Mi ({MIN_BUFFER_BYTES} bytes)"
        ));
    }
    if i64::try_from(bytes).is_err() {
        return Err(format!("{bytes} bytes is too large"));
    }
    Ok(bytes)
}

/// The cluster the path and query name for `caller` (as on every cluster route), if it
/// is not deleted.
pub(super) async fn live_cluster(
    caller: &Caller,
    state: &ApiState,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Cluster, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let cluster = visible_cluster(caller, state, &name, query.tenant).await?;
    if cluster.state.is_tombstone() {
        return Err(ApiError::NotFound(format!("cluster {name:?} not found")));
    }
    Ok(cluster)
}

async fn view(state: &ApiState, cluster: &Cluster) -> Result<BufferBudgetView, ApiError> {
    let set = state
        .store
        .cluster_buffer_budgets(&cluster.tenant)
        .await?
        .get(&cluster.id)
        .copied();
    let pipelines = buffer_asks(state, &cluster.tenant).await?;
    let budgets = state.buffer_budgets;
    Ok(BufferBudgetView {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id.clone(),
        tenant: cluster.tenant.clone(),
        max_bytes: set.unwrap_or(budgets.default_bytes),
        default: set.is_none(),
        reserved_bytes: budgets.central_bytes,
        pipeline_bytes: asked(&pipelines, Scope::Cluster, &cluster.labels, None),
        node_max_bytes: budgets.node_bytes,
        node_reserved_bytes: budgets.central_node_bytes,
        node_pipeline_bytes: asked(&pipelines, Scope::Node, &cluster.labels, None),
    })
}

/// What one stored pipeline asks of the buffer budget of the clusters it selects.
#[derive(Clone)]
struct BufferAsk {
    kind: &'static str,
    name: String,
    selector: ClusterSelector,
    bytes: u64,
    /// Whether it buffers on the cluster-level instance.
    cluster: bool,
    /// Whether it buffers on every node.
    node: bool,
}

impl BufferAsk {
    /// What it asks of the budget of `scope`.
    fn bytes_in(&self, scope: Scope) -> u64 {
        let there = match scope {
            Scope::Cluster => self.cluster,
            Scope::Node => self.node,
        };
        if there { self.bytes } else { 0 }
    }
}

/// What `pipeline` asks of the budget of each scope, by [`Scope::ALL`].
fn asks_by_scope<P: PipelineKind>(pipeline: &P) -> [u64; 2] {
    Scope::ALL.map(|scope| {
        if pipeline.runs_on(scope.role()) {
            pipeline.buffer_max_bytes()
        } else {
            0
        }
    })
}

/// What the tenant's stored pipelines of every kind the observer can read ask for. One
/// it cannot read runs nowhere, so it takes no buffer, and it must not fail the checks
/// of the tenant's other pipelines and clusters (nor the apply that repairs it).
async fn buffer_asks(state: &ApiState, tenant: &str) -> Result<Vec<BufferAsk>, ApiError> {
    let mut asks = asks_of::<ValidatedPipeline>(state, tenant).await?;
    asks.extend(asks_of::<ValidatedLogPipeline>(state, tenant).await?);
    asks.extend(asks_of::<ValidatedTracePipeline>(state, tenant).await?);
    Ok(asks)
}

async fn asks_of<P: PipelineKind>(
    state: &ApiState,
    tenant: &str,
) -> Result<Vec<BufferAsk>, ApiError> {
    Ok(state
        .store
        .list_pipeline_rows_of::<P>(Some(tenant))
        .await?
        .into_iter()
        .filter_map(|row| match row {
            PipelineRow::Readable(stored) => Some(BufferAsk {
                kind: P::KIND,
                name: stored.name().to_owned(),
                selector: stored.pipeline.cluster_selector().clone(),
                bytes: stored.pipeline.buffer_max_bytes(),
                cluster: stored.pipeline.runs_on(AgentRole::Cluster),
                node: stored.pipeline.runs_on(AgentRole::Node),
            }),
            PipelineRow::Unreadable(_) => None,
        })
        .collect())
}

/// What the stored pipelines selecting a cluster with `labels` ask for together of the
/// budget of `scope`, leaving out the one of kind and name `except`.
fn asked(
    pipelines: &[BufferAsk],
    scope: Scope,
    labels: &BTreeMap<String, String>,
    except: Option<(&str, &str)>,
) -> u64 {
    pipelines
        .iter()
        .filter(|p| Some((p.kind, p.name.as_str())) != except)
        .filter(|p| p.selector.matches(labels))
        .fold(0u64, |sum, p| sum.saturating_add(p.bytes_in(scope)))
}

/// Refuses (422, naming each cluster) a pipeline of any kind whose apply would take a
/// cluster it selects over its budget (see the module documentation): the buffers of
/// every kind share the cluster's budget.
pub(super) async fn check_pipeline<P: PipelineKind>(
    state: &ApiState,
    tenant: &str,
    pipeline: &P,
) -> Result<(), ApiError> {
    let selector = pipeline.cluster_selector();
    let clusters: Vec<Cluster> = state
        .store
        .list_clusters(Some(tenant))
        .await?
        .into_iter()
        .filter(|c| !c.state.is_leaving())
        .filter(|c| selector.matches(&c.labels))
        .collect();
    if clusters.is_empty() {
        return Ok(());
    }
    let pipelines = buffer_asks(state, tenant).await?;
    let this = (P::KIND, pipeline.name());
    let previous = pipelines.iter().find(|p| (p.kind, p.name.as_str()) == this);
    let budgets = state.store.cluster_buffer_budgets(tenant).await?;
    let asks = asks_by_scope(pipeline);
    let problems: Vec<(String, FieldProblem)> = clusters
        .iter()
        .flat_map(|cluster| Scope::ALL.into_iter().zip(asks).map(move |s| (cluster, s)))
        .filter_map(|(cluster, (scope, ask))| {
            let others = asked(&pipelines, scope, &cluster.labels, Some(this));
            let before = previous
                .filter(|p| p.selector.matches(&cluster.labels))
                .map_or(0, |p| p.bytes_in(scope));
            let budget = budgets.get(&cluster.id).copied();
            over_budget(
                state.buffer_budgets,
                scope,
                budget,
                &cluster.name,
                others.saturating_add(before),
                others.saturating_add(ask),
            )
            .map(|message| {
                let path = "spec.buffer.maxBytes".to_owned();
                (cluster.name.clone(), FieldProblem { path, message })
            })
        })
        .collect();
    refuse_if_any("the pipeline would exceed the buffer budget of", problems)
}

/// What `pipeline` asks, as [`buffer_asks`] reads a stored one.
fn ask_of<P: PipelineKind>(pipeline: &P) -> BufferAsk {
    BufferAsk {
        kind: P::KIND,
        name: pipeline.name().to_owned(),
        selector: pipeline.cluster_selector().clone(),
        bytes: pipeline.buffer_max_bytes(),
        cluster: pipeline.runs_on(AgentRole::Cluster),
        node: pipeline.runs_on(AgentRole::Node),
    }
}

/// Refuses (422) a template change whose re-rendered instances (`rendered`, with their
/// tenant) would together take a cluster they select over its budget: each such
/// cluster is named, with every instance asking more of it at
/// `instances["<tenant>/<name>"].spec.buffer.maxBytes`. All the instances are counted
/// at once, as the change writes them all or none. A re-render never adds a pipeline
/// (an instance keeps its kind and name), so the tenant's pipeline quotas still hold.
pub(super) async fn check_rerendered(
    state: &ApiState,
    rendered: &[(String, ValidatedResource)],
) -> Result<(), ApiError> {
    let mut by_tenant: BTreeMap<&str, Vec<BufferAsk>> = BTreeMap::new();
    for (tenant, pipeline) in rendered {
        let ask = match pipeline {
            ValidatedResource::Metric(p) => ask_of::<ValidatedPipeline>(p),
            ValidatedResource::Log(p) => ask_of::<ValidatedLogPipeline>(p),
            ValidatedResource::Trace(p) => ask_of::<ValidatedTracePipeline>(p),
        };
        by_tenant.entry(tenant).or_default().push(ask);
    }
    let mut problems = Vec::new();
    for (tenant, new_asks) in by_tenant {
        let before = buffer_asks(state, tenant).await?;
        let replaced = |p: &BufferAsk| {
            new_asks
                .iter()
                .any(|n| (n.kind, &n.name) == (p.kind, &p.name))
        };
        let after: Vec<BufferAsk> = (before.iter())
            .filter(|p| !replaced(p))
            .cloned()
            .chain(new_asks.iter().cloned())
            .collect();
        let budgets = state.store.cluster_buffer_budgets(tenant).await?;
        let clusters = state.store.list_clusters(Some(tenant)).await?;
        for cluster in clusters.iter().filter(|c| !c.state.is_leaving()) {
            for scope in Scope::ALL {
                let labels = &cluster.labels;
                let message = over_budget(
                    state.buffer_budgets,
                    scope,
                    budgets.get(&cluster.id).copied(),
                    &cluster.name,
                    asked(&before, scope, labels, None),
                    asked(&after, scope, labels, None),
                );
                let Some(message) = message else { continue };
                for ask in new_asks
                    .iter()
                    .filter(|a| a.selector.matches(labels) && a.bytes_in(scope) > 0)
                {
                    let path = format!("instances[\"{tenant}/{}\"].spec.buffer.maxBytes", ask.name);
                    let message = message.clone();
                    problems.push((cluster.name.clone(), FieldProblem { path, message }));
                }
            }
        }
    }
    refuse_if_any(
        "nothing was changed: this template change would take its instances over the buffer budget of",
        problems,
    )
}

/// Refuses (422) a new cluster whose labels would select pipelines asking for more
/// buffer than its budget: the default, since a new cluster starts with it (a budget
/// left by an earlier cluster of the same name is removed when it is registered).
pub(super) async fn check_new_cluster(
    state: &ApiState,
    tenant: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let pipelines = buffer_asks(state, tenant).await?;
    let problems = Scope::ALL
        .into_iter()
        .filter_map(|scope| {
            let total = asked(&pipelines, scope, labels, None);
            over_budget(state.buffer_budgets, scope, None, name, 0, total)
        })
        .map(|message| {
            let path = "labels".to_owned();
            (name.to_owned(), FieldProblem { path, message })
        })
        .collect();
    refuse_if_any("the pipelines would exceed the buffer budget of", problems)
}

/// Why cluster `name` (as its tenant names it), whose budget is `budget` where one was
/// set, would be over its budget of `scope` with its tenant pipelines asking `after`
/// of it (they asked `before` until now); `None` when it is not, or the change does not
/// raise what they ask.
fn over_budget(
    settings: BufferBudgets,
    scope: Scope,
    budget: Option<u64>,
    name: &str,
    before: u64,
    after: u64,
) -> Option<String> {
    let (budget, reserved) = match scope {
        Scope::Cluster => (
            budget.unwrap_or(settings.default_bytes),
            settings.central_bytes,
        ),
        Scope::Node => (settings.node_bytes, settings.central_node_bytes),
    };
    let total = after.saturating_add(reserved);
    (total > budget && after > before).then(|| match scope {
        Scope::Cluster => format!(
            "cluster {name:?}: its pipelines would ask for {after} bytes of buffer, plus \
             {reserved} reserved for the provider's central pipeline, over the cluster's \
             buffer budget of {budget} bytes; lower maxBytes, or ask the provider for a \
             larger budget"
        ),
        Scope::Node => format!(
            "cluster {name:?}: its log pipelines reading node logs would ask for {after} \
             bytes of buffer on each node, plus {reserved} reserved for the provider's \
             central log pipeline, over the node buffer budget of {budget} bytes (each \
             node's own disk); lower maxBytes, or ask the provider for a larger node budget"
        ),
    })
}

/// A 422 saying `message` and the clusters `problems` (one per cluster) name.
fn refuse_if_any(message: &str, problems: Vec<(String, FieldProblem)>) -> Result<(), ApiError> {
    if problems.is_empty() {
        return Ok(());
    }
    let clusters: Vec<String> = problems
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let noun = if clusters.len() == 1 {
        "cluster"
    } else {
        "clusters"
    };
    Err(ApiError::Invalid {
        message: format!("{message} {noun} {}", clusters.join(", ")),
        fields: problems.into_iter().map(|(_, problem)| problem).collect(),
    })
}
