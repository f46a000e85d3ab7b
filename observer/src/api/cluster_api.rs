//! `/api/v1/cluster-api/namespaces`: the administrator's mapping of Cluster API
//! namespaces to tenants. The Cluster API source registers a namespace's `Cluster`s for
//! its tenant only (see `onboarding::capi`); nothing a tenant writes can name a tenant,
//! so every route here needs an admin token (403 for tenant tokens). Changes are
//! audited by the store.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kaas_pipeline::names::check_dns1123_label;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::model::FieldProblem;
use super::{ApiError, ApiState, check, json_body};
use crate::store::tenancy::NamespaceMapping;

/// `PUT /api/v1/cluster-api/namespaces/{namespace}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapNamespaceRequest {
    /// The tenant the namespace's `Cluster`s belong to; it must exist.
    #[serde(default)]
    pub tenant: String,
}

/// A mapped namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceMappingView {
    /// The namespace in the management cluster.
    pub namespace: String,
    /// Its tenant.
    pub tenant: String,
    /// When it was mapped.
    pub created_at_ms: i64,
}

impl From<NamespaceMapping> for NamespaceMappingView {
    fn from(mapping: NamespaceMapping) -> Self {
        Self {
            namespace: mapping.namespace,
            tenant: mapping.tenant,
            created_at_ms: mapping.created_at_ms,
        }
    }
}

/// `GET /api/v1/cluster-api/namespaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceMappingList {
    /// Every mapping, by namespace.
    pub items: Vec<NamespaceMappingView>,
}

/// `GET /api/v1/cluster-api/namespaces`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<NamespaceMappingList>, ApiError> {
    caller.require_admin()?;
    let items = state
        .store
        .list_cluster_api_namespaces()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(NamespaceMappingList { items }))
}

/// `PUT /api/v1/cluster-api/namespaces/{namespace}`: 201 when mapped now, 200 when it
/// was mapped to that tenant already, 409 when it is mapped to another tenant.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<NamespaceMappingView>), ApiError> {
    caller.require_admin()?;
    let Path(namespace) = namespace?;
    let request: MapNamespaceRequest = json_body(&headers, body)?;
    let mut problems = Vec::new();
    if let Err(reason) = check_dns1123_label(&namespace) {
        problems.push(FieldProblem {
            path: "namespace".to_owned(),
            message: reason,
        });
    }
    if let Err(reason) = check_dns1123_label(&request.tenant) {
        problems.push(FieldProblem {
            path: "tenant".to_owned(),
            message: reason,
        });
    }
    check("the namespace mapping is invalid", problems)?;
    let (mapping, created) = state
        .store
        .map_cluster_api_namespace(&namespace, &request.tenant, &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(mapping.into())))
}

/// `DELETE /api/v1/cluster-api/namespaces/{namespace}`: the source registers nothing
/// more from it; clusters registered from it stay as they are.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    namespace: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let Path(namespace) = namespace?;
    state
        .store
        .unmap_cluster_api_namespace(&namespace, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
