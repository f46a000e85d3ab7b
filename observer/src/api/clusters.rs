//! `/api/v1/clusters`: onboard a cluster (answering with its join token and the agent's
//! install manifests), list and read clusters with their agents' reports, mint a new join
//! token, and delete (tombstone) a cluster.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kaas_pipeline::names::{check_dns1123_label, check_label_key, check_label_value};
use kaas_pipeline::status::ConditionStatus;
use serde::Deserialize;

use super::auth::Caller;
use super::manifest::{ManifestInput, agent_manifest};
use super::model::{
    ClusterList, ClusterView, CreateClusterRequest, CreatedCluster, FieldProblem,
    InstanceCountsView, JoinToken, PipelineHealthView, Revoked,
};
use super::{ApiError, ApiState, check, json_body, now_ms};
use crate::control::status::instances_verdict;
use crate::egress::EgressContext;
use crate::store::instances::PipelineInstances;
use crate::store::{Cluster, GLOBAL_ID_SEPARATOR, NewCluster, Principal};

/// `POST /api/v1/clusters`.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedCluster>), ApiError> {
    let request: CreateClusterRequest = json_body(&headers, body)?;
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(FieldProblem { path, message });
    if let Err(reason) = check_dns1123_label(&request.name) {
        problem("name".to_owned(), reason);
    }
    for (key, value) in &request.labels {
        let path = format!("labels[{key:?}]");
        if let Err(reason) = check_label_key(key) {
            problem(path.clone(), reason);
        }
        if let Err(reason) = check_label_value(value) {
            problem(path.clone(), reason);
        }
        // The observer's own labels decide what an onboarding source adopts: a tenant
        // may not set them (issue 13, finding 1).
        if let Some(reason) = crate::labels::reserved_label_problem(key) {
            problem(path, reason);
        }
    }
    if let Some(endpoint) = &request.api_endpoint {
        match url::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                // The observer probes it: a literal address must be one it may contact.
                if let Err(refusal) = state.egress.check_url(endpoint) {
                    state.egress.count_refusal(EgressContext::Api, &refusal);
                    problem("apiEndpoint".to_owned(), refusal.to_string());
                }
            }
            _ => problem(
                "apiEndpoint".to_owned(),
                format!("not an absolute http(s) URL: {endpoint:?}"),
            ),
        }
    }
    let tenant = match (&caller.principal, request.tenant) {
        (Principal::Admin, Some(tenant)) => tenant,
        (Principal::Admin, None) => {
            problem(
                "tenant".to_owned(),
                "required with an admin token: the tenant that owns the cluster".to_owned(),
            );
            String::new()
        }
        (Principal::Tenant(own), None) => own.clone(),
        (Principal::Tenant(own), Some(asked)) if asked == *own => asked,
        (Principal::Tenant(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "a tenant token can only create clusters for its own tenant".to_owned(),
            ));
        }
    };
    check("the cluster is invalid", problems)?;
    if state.store.get_tenant(&tenant).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {tenant:?} not found")));
    }
    super::budgets::check_new_cluster(&state, &tenant, &request.name, &request.labels).await?;
    let expires_at_ms = expiry(&state);
    let new = NewCluster {
        name: request.name,
        tenant,
        labels: request.labels,
        api_endpoint: request.api_endpoint,
    };
    let (cluster, join_token) = state
        .store
        .create_cluster(new, state.join_token_ttl, &caller.actor())
        .await?;
    let manifest = manifest(&state, &cluster.name, &join_token)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedCluster {
            cluster: ClusterView::from_cluster(cluster),
            join_token,
            join_token_expires_at_ms: expires_at_ms,
            manifest,
        }),
    ))
}

/// Most clusters one `GET /api/v1/clusters` page may hold: a page of this size is read
/// in one query and answered in well under a second.
pub const MAX_CLUSTER_PAGE: u64 = 1000;

/// Query of `GET /api/v1/clusters`.
#[derive(Debug, Deserialize)]
pub struct ClusterListQuery {
    /// Restrict to this tenant.
    pub tenant: Option<String>,
    /// At most this many clusters (1 to [`MAX_CLUSTER_PAGE`]); every cluster without it.
    pub limit: Option<u64>,
    /// Where the previous page ended (its `continue`).
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// `GET /api/v1/clusters`, with each agent's connection and health, in one query.
/// `?limit=` pages through them by global id, Kubernetes style: an answer with more to come
/// carries `continue`, which the next request passes back as `?continue=`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<ClusterListQuery>, QueryRejection>,
) -> Result<Json<ClusterList>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    if let Some(limit) = query.limit
        && !(1..=MAX_CLUSTER_PAGE).contains(&limit)
    {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_CLUSTER_PAGE}, got {limit}"
        )));
    }
    let after = query
        .continue_token
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    // One more than asked tells whether another page follows.
    let rows = state
        .store
        .list_clusters_with_reports(
            scope.as_deref(),
            after.as_deref(),
            query.limit.map(|limit| limit + 1),
        )
        .await?;
    let mut items: Vec<ClusterView> = rows
        .into_iter()
        .map(|(cluster, report)| {
            let mut view = ClusterView::from_cluster(cluster);
            view.connected = report.connected;
            view.health = report.health;
            view
        })
        .collect();
    let continue_token = match query.limit {
        Some(limit) if items.len() as u64 > limit => {
            items.truncate(limit as usize);
            items.last().map(|last| encode_continue(&last.id))
        }
        _ => None,
    };
    Ok(Json(ClusterList {
        items,
        continue_token,
    }))
}

/// The `continue` token after a page ending with the cluster `id`: opaque to clients.
fn encode_continue(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The cluster id a `continue` token stands for: a global id, i.e. a DNS-1123 label
/// or two joined by [`GLOBAL_ID_SEPARATOR`].
fn decode_continue(token: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::BadRequest(
            "continue: not a token from a previous page of this list; start without it".to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let id = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = id.splitn(2, GLOBAL_ID_SEPARATOR);
    if !parts.all(|part| check_dns1123_label(part).is_ok()) {
        return Err(invalid());
    }
    Ok(id)
}

/// Query of the `/api/v1/clusters/{name}` paths.
#[derive(Debug, Deserialize)]
pub struct ClusterPathQuery {
    /// With an admin token: the tenant whose cluster `{name}` is. Without it an admin's
    /// `{name}` is the cluster's global id. Tenant tokens always name their own
    /// tenant's clusters.
    pub tenant: Option<String>,
}

/// `GET /api/v1/clusters/{name}`, with the latest configuration report and health.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<ClusterView>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let cluster = visible_cluster(&caller, &state, &name, query.tenant).await?;
    let id = cluster.id.clone();
    let report = state.store.cluster_report(&id).await?;
    let health = report.as_ref().and_then(|r| r.health.as_ref());
    let components = if cluster.state.is_tombstone() {
        None
    } else {
        Some(super::control_plane::cluster_components(&state, &cluster, health).await?)
    };
    let pipeline_health = if cluster.state.is_tombstone() {
        None
    } else {
        let mut live = state
            .store
            .instance_health_of(std::slice::from_ref(&id))
            .await?;
        let pipelines = live.remove(&id).unwrap_or_default();
        Some(
            (pipelines.iter())
                .map(|instances| pipeline_health_view(None, instances))
                .collect(),
        )
    };
    let mut view = ClusterView::from_cluster(cluster);
    view.control_plane = components;
    view.pipeline_health = pipeline_health;
    if let Some(report) = report {
        view.connected = report.connected;
        view.health = report.health;
        view.config = report.config.map(Into::into);
    }
    Ok(Json(view))
}

/// A pipeline's health on one cluster as the API shows it, in a pipeline's status
/// with the `cluster` named.
pub(super) fn pipeline_health_view(
    cluster: Option<String>,
    instances: &PipelineInstances,
) -> PipelineHealthView {
    let (status, reason, message) = instances_verdict(instances);
    PipelineHealthView {
        cluster,
        kind: instances.kind.clone(),
        pipeline: instances.pipeline.clone(),
        status: match status {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
        .to_owned(),
        reason: reason.as_str().to_owned(),
        message,
        instances: InstanceCountsView {
            reporting: instances.reporting,
            affected: instances.affected,
        },
        worst_instance: instances.worst.as_ref().map(|w| w.instance.clone()),
    }
}

/// `POST /api/v1/clusters/{name}/join-token`: a new single-use join token, e.g. when
/// the first one expired or the agent's identity was lost.
pub async fn mint_join_token(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<JoinToken>), ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let cluster = visible_cluster(&caller, &state, &name, query.tenant).await?;
    if cluster.state.is_leaving() {
        return Err(ApiError::Conflict(format!(
            "cluster {name:?} is {}: it cannot join again, and its name stays taken by its tombstone; onboard the cluster under a new name",
            cluster.state
        )));
    }
    let expires_at_ms = expiry(&state);
    let join_token = state
        .store
        .mint_join_token(&cluster.id, state.join_token_ttl, &caller.actor())
        .await?;
    let manifest = manifest(&state, &cluster.name, &join_token)?;
    Ok((
        StatusCode::CREATED,
        Json(JoinToken {
            cluster: cluster.name,
            cluster_id: cluster.id,
            join_token,
            join_token_expires_at_ms: expires_at_ms,
            manifest,
        }),
    ))
}

/// `DELETE /api/v1/clusters/{name}`: tombstones the cluster; its certificate stops being
/// accepted, and its name stays taken: a cluster onboarded later needs another name.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let cluster = visible_cluster(&caller, &state, &name, query.tenant).await?;
    state
        .store
        .delete_cluster(&cluster.id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/clusters/{name}/certificates`: revokes every agent certificate of
/// the cluster, of every instance. Its streams end at once with `PERMISSION_DENIED`;
/// the cluster, its labels and pipelines stay, and a new join token brings an agent
/// back (the incident runbook's "cut a cluster", docs/security.md).
pub async fn revoke_certificates(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<Revoked>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let cluster = visible_cluster(&caller, &state, &name, query.tenant).await?;
    let revoked = state
        .store
        .revoke_cluster_certificates(&cluster.id, &caller.actor(), now_ms())
        .await?;
    Ok(Json(Revoked { revoked }))
}

/// The cluster `name` names for `caller` (see [`ClusterPathQuery`]): a tenant's own
/// cluster of that name, or for an admin the named tenant's cluster or the cluster with
/// that global id. 404 when there is none; a tenant never reaches another tenant's
/// cluster, and the answer is the same whether another tenant has one of that name.
pub(super) async fn visible_cluster(
    caller: &Caller,
    state: &ApiState,
    name: &str,
    tenant: Option<String>,
) -> Result<Cluster, ApiError> {
    let found = match (&caller.principal, tenant) {
        (Principal::Admin, None) => state.store.get_cluster(name).await?,
        (_, tenant) => {
            let tenant = caller.list_scope(tenant)?.unwrap_or_default();
            state.store.get_cluster_named(&tenant, name).await?
        }
    };
    match found {
        Some(cluster) if caller.may_see(&cluster.tenant) => Ok(cluster),
        _ => Err(ApiError::NotFound(format!("cluster {name:?} not found"))),
    }
}

/// When a join token minted now expires. Taken just before the store mints it, so the
/// answer never promises more time than the token has.
fn expiry(state: &ApiState) -> i64 {
    let ttl_ms = i64::try_from(state.join_token_ttl.as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_add(ttl_ms)
}

fn manifest(state: &ApiState, cluster: &str, join_token: &str) -> Result<String, ApiError> {
    agent_manifest(&ManifestInput {
        cluster,
        control_endpoint: &state.control_endpoint,
        ca_pem: &state.ca_pem,
        join_token,
        secret_namespaces: &state.secret_namespaces(),
        central_endpoints: &state.central_endpoints(),
    })
    .map_err(ApiError::internal)
}
