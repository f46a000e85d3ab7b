//! `/api/v1/tenants`: create, list, read and delete tenants. Admin tokens only.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kaas_pipeline::names::check_dns1123_label;

use super::auth::Caller;
use super::model::{CreateTenantRequest, FieldProblem, TenantList, TenantView};
use super::{ApiError, ApiState, check, json_body};

/// `POST /api/v1/tenants`.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    caller.require_admin()?;
    let request: CreateTenantRequest = json_body(&headers, body)?;
    let mut problems = Vec::new();
    if let Err(reason) = check_dns1123_label(&request.name) {
        problems.push(FieldProblem {
            path: "name".to_owned(),
            message: reason,
        });
    }
    check("the tenant is invalid", problems)?;
    let tenant = state
        .store
        .create_tenant(&request.name, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// `GET /api/v1/tenants`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<TenantList>, ApiError> {
    caller.require_admin()?;
    let items = state
        .store
        .list_tenants()
        .await?
        .into_iter()
        .map(TenantView::from)
        .collect();
    Ok(Json(TenantList { items }))
}

/// `GET /api/v1/tenants/{name}`.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantView>, ApiError> {
    caller.require_admin()?;
    let Path(name) = name?;
    match state.store.get_tenant(&name).await? {
        Some(tenant) => Ok(Json(tenant.into())),
        None => Err(ApiError::NotFound(format!("tenant {name:?} not found"))),
    }
}

/// `DELETE /api/v1/tenants/{name}`: refused (409) while the tenant has clusters or
/// pipelines.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let Path(name) = name?;
    state.store.delete_tenant(&name, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
