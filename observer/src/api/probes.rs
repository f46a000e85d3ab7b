//! `/api/v1/probes`: the endpoints a tenant asks the observer to probe (HTTP(S), TCP,
//! TLS expiry, DNS), besides its clusters' API servers which are probed anyway.
//!
//! `PUT /{name}` and `POST` create or replace an endpoint; `GET` lists or reads; `DELETE`
//! removes. A body is a [`ProbeEndpointRequest`]; it is checked with
//! [`ProbeTarget::validate`] and refused with 422 listing every field error
//! (`module.http.url: …`). A named `cluster` must be one of the tenant's live clusters
//! (422 otherwise, the same answer for another tenant's cluster as for none). A literal
//! address the observer's egress policy refuses (loopback, link-local, private, ... unless
//! the provider allows it), and an HTTP method other than GET and HEAD the provider did
//! not allow, are refused the same way, naming the field and the range; a name is
//! checked each time it is resolved, at probe time. The tenant
//! is the caller's own; an admin names it with `?tenant=`. The results appear as the
//! `probe_*` series (`docs/metrics.md`), not here: the replica that answers a request
//! is not necessarily the one probing.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::model::FieldProblem;
use super::tokens::TenantQuery;
use super::{ApiError, ApiState, json_body};
use crate::egress::EgressContext;
use crate::probes::{ProbeModule, ProbeOrigin, ProbeTarget};
use crate::store::probe_endpoints::StoredProbeEndpoint;

/// `PUT /api/v1/probes/{name}` and `POST /api/v1/probes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeEndpointRequest {
    /// The endpoint's name, a DNS-1123 label; required in a POST, optional in a PUT
    /// (where it must equal the name in the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of the tenant's clusters the endpoint belongs to (its `cluster` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How to probe: exactly one of `http`, `tcp`, `tls`, `dns`.
    pub module: ProbeModule,
}

/// A stored probe endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeEndpointView {
    /// The owning tenant.
    pub tenant: String,
    /// The endpoint's name.
    pub name: String,
    /// The cluster it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How it is probed.
    pub module: ProbeModule,
    /// When it was created, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it last changed, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// `GET /api/v1/probes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeEndpointList {
    /// The endpoints, by tenant and name.
    pub items: Vec<ProbeEndpointView>,
}

impl From<StoredProbeEndpoint> for ProbeEndpointView {
    fn from(stored: StoredProbeEndpoint) -> Self {
        Self {
            tenant: stored.target.tenant,
            name: stored.target.name,
            cluster: stored.target.cluster,
            module: stored.target.module,
            created_at_ms: stored.created_at_ms,
            updated_at_ms: stored.updated_at_ms,
        }
    }
}

/// `PUT /api/v1/probes/{name}`: create or replace the named endpoint.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ProbeEndpointView>), ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    apply(caller, state, Some(name), query, headers, body).await
}

/// `POST /api/v1/probes`: create or replace the endpoint named in the body.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TenantQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ProbeEndpointView>), ApiError> {
    let Query(query) = query?;
    apply(caller, state, None, query, headers, body).await
}

async fn apply(
    caller: Caller,
    state: ApiState,
    url_name: Option<String>,
    query: TenantQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ProbeEndpointView>), ApiError> {
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    let request: ProbeEndpointRequest = json_body(&headers, body)?;
    let mut problems = Vec::new();
    let name_missing = url_name.is_none() && request.name.is_none();
    let name = match (url_name, request.name) {
        (Some(url_name), Some(name)) if name != url_name => {
            problems.push(FieldProblem {
                path: "name".to_owned(),
                message: format!("{name:?} does not match the name in the URL, {url_name:?}"),
            });
            url_name
        }
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => {
            problems.push(FieldProblem {
                path: "name".to_owned(),
                message: "required: the endpoint's name".to_owned(),
            });
            String::new()
        }
    };
    let target = ProbeTarget {
        name,
        tenant: tenant.clone(),
        cluster: request.cluster,
        origin: ProbeOrigin::Tenant,
        module: request.module,
    };
    for (field, refusal) in target.egress_problems(&state.egress) {
        match &refusal {
            Some(refusal) => state.egress.count_refusal(EgressContext::Api, refusal),
            None => state.egress.count_method_refusal(EgressContext::Api),
        }
        problems.push(FieldProblem {
            path: field.path,
            message: field.reason,
        });
    }
    if let Some(cluster) = &target.cluster
        && !cluster.is_empty()
    {
        let live = state
            .store
            .get_cluster_named(&tenant, cluster)
            .await?
            .is_some_and(|c| c.state.is_probed());
        if !live {
            problems.push(FieldProblem {
                path: "cluster".to_owned(),
                message: format!("no cluster {cluster:?} in tenant {tenant:?}"),
            });
        }
    }
    let validated = match target.validate() {
        Ok(validated) if problems.is_empty() => validated,
        Ok(_) => return Err(invalid(problems)),
        Err(errors) => {
            let mut fields: Vec<FieldProblem> = errors
                .0
                .into_iter()
                .map(|e| FieldProblem {
                    path: e.path,
                    message: e.reason,
                })
                // `tenant` comes from the caller, not the body: a bad one is a missing
                // tenant, answered below. A missing name is reported once, below.
                .filter(|p| p.path != "tenant" && !(name_missing && p.path == "name"))
                .collect();
            fields.extend(problems);
            if !fields.is_empty() {
                return Err(invalid(fields));
            }
            return Err(ApiError::NotFound(format!("tenant {tenant:?} not found")));
        }
    };
    let (stored, created) = state
        .store
        .apply_probe_endpoint(validated, &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored.into())))
}

fn invalid(fields: Vec<FieldProblem>) -> ApiError {
    ApiError::Invalid {
        message: "the probe endpoint is invalid".to_owned(),
        fields,
    }
}

/// `GET /api/v1/probes`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<ProbeEndpointList>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    let items = state
        .store
        .list_probe_endpoints(scope.as_deref())
        .await?
        .into_iter()
        .map(ProbeEndpointView::from)
        .collect();
    Ok(Json(ProbeEndpointList { items }))
}

/// `GET /api/v1/probes/{name}`.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<ProbeEndpointView>, ApiError> {
    let stored = find(&caller, &state, name, query).await?;
    Ok(Json(stored.into()))
}

/// `DELETE /api/v1/probes/{name}`.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let stored = find(&caller, &state, name, query).await?;
    state
        .store
        .delete_probe_endpoint(&stored.target.tenant, &stored.target.name, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find(
    caller: &Caller,
    state: &ApiState,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<StoredProbeEndpoint, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    state
        .store
        .get_probe_endpoint(&tenant, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("probe endpoint {name:?} not found")))
}
