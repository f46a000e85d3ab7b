//! `/api/v1/tokens`: API tokens. An admin creates tokens for anyone (an admin token when
//! no tenant is given); a tenant token creates, lists and revokes tokens of its own
//! tenant only; `DELETE /api/v1/tokens?tenant=` revokes all of a tenant's at once. The
//! plaintext is shown once, in the create answer.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::auth::Caller;
use super::model::{CreateTokenRequest, CreatedToken, FieldProblem, Revoked, TokenList, TokenView};
use super::{ApiError, ApiState, check, json_body};
use crate::store::Principal;

/// Longest token name accepted; names are labels for people, not documents.
const MAX_TOKEN_NAME_LEN: usize = 253;

/// `?tenant=` of list requests.
#[derive(Debug, Default, Deserialize)]
pub struct TenantQuery {
    /// Restrict to this tenant.
    pub tenant: Option<String>,
}

/// `POST /api/v1/tokens`.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let request: CreateTokenRequest = json_body(&headers, body)?;
    let mut problems = Vec::new();
    let name = request.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_TOKEN_NAME_LEN
        || name.chars().any(char::is_control)
    {
        problems.push(FieldProblem {
            path: "name".to_owned(),
            message: format!("required: 1 to {MAX_TOKEN_NAME_LEN} printable characters"),
        });
    }
    check("the token request is invalid", problems)?;
    let tenant = match (&caller.principal, request.tenant) {
        (Principal::Admin, tenant) => tenant,
        (Principal::Tenant(own), None) => Some(own.clone()),
        (Principal::Tenant(own), Some(asked)) if asked == *own => Some(asked),
        (Principal::Tenant(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "a tenant token can only create tokens for its own tenant".to_owned(),
            ));
        }
    };
    if let Some(tenant) = &tenant
        && state.store.get_tenant(tenant).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("tenant {tenant:?} not found")));
    }
    let (info, token) = state
        .store
        .create_api_token(tenant.as_deref(), name, &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: info.id,
            name: info.name,
            tenant: info.tenant,
            created_at_ms: info.created_at_ms,
            token,
        }),
    ))
}

/// `GET /api/v1/tokens`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<TokenList>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    let items = state
        .store
        .list_api_tokens(scope.as_deref())
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { items }))
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke(
    caller: Caller,
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    match state.store.get_api_token(&id).await? {
        Some(token)
            if caller.is_admin() || token.tenant.as_deref().is_some_and(|t| caller.may_see(t)) => {}
        _ => return Err(ApiError::NotFound(format!("token {id:?} not found"))),
    }
    state.store.revoke_api_token(&id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/tokens?tenant=`: revokes every token of the tenant at once (an
/// admin names the tenant; a tenant token may only name its own). The incident
/// runbook's "lock a tenant out" (docs/security.md).
pub async fn revoke_all(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<Revoked>, ApiError> {
    let Query(query) = query?;
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    if state.store.get_tenant(&tenant).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {tenant:?} not found")));
    }
    let revoked = state
        .store
        .revoke_tenant_api_tokens(&tenant, &caller.actor())
        .await?;
    Ok(Json(Revoked { revoked }))
}
