//! `/api/v1/tenants/{name}/quotas`: how many clusters, pipelines of each kind and probe
//! endpoints a tenant may have ([`crate::store::quotas`]).
//!
//! `GET` shows each quota's limit, use and default, to an admin or to the tenant
//! itself (another tenant's token gets 404, as for a tenant that does not exist). `PUT`
//! (admin only) replaces the tenant's overrides: `{"limits": {"clusters": 2000}}`; a
//! quota left out returns to its default. Creating an object over a quota answers 409
//! naming the quota.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::model::FieldProblem;
use super::{ApiError, ApiState, check, json_body};
use crate::store::quotas::{MAX_QUOTA_LIMIT, QUOTAS, Quota, QuotaStatus};

/// `PUT /api/v1/tenants/{name}/quotas`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetQuotasRequest {
    /// The limits to set, by quota name (`clusters`, `pipelines/MetricPipeline`,
    /// `probes`); a quota left out returns to its default.
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

/// One quota of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaView {
    /// The quota's name.
    pub name: String,
    /// How many the tenant may have.
    pub limit: u64,
    /// How many it has.
    pub used: u64,
    /// The default limit.
    pub default: u64,
    /// Whether an admin set the limit for this tenant.
    pub overridden: bool,
}

/// `GET /api/v1/tenants/{name}/quotas`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantQuotasView {
    /// The tenant.
    pub tenant: String,
    /// Every quota, by name.
    pub quotas: Vec<QuotaView>,
}

fn view(tenant: String, statuses: Vec<QuotaStatus>) -> TenantQuotasView {
    TenantQuotasView {
        tenant,
        quotas: statuses
            .into_iter()
            .map(|s| QuotaView {
                name: s.name,
                limit: s.limit,
                used: s.used,
                default: s.default,
                overridden: s.overridden,
            })
            .collect(),
    }
}

/// `GET /api/v1/tenants/{name}/quotas`.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantQuotasView>, ApiError> {
    let Path(name) = name?;
    if !caller.may_see(&name) {
        return Err(ApiError::NotFound(format!("tenant {name:?} not found")));
    }
    let statuses = state.store.tenant_quotas(&name).await?;
    Ok(Json(view(name, statuses)))
}

/// `PUT /api/v1/tenants/{name}/quotas` (admin).
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TenantQuotasView>, ApiError> {
    caller.require_admin()?;
    let Path(name) = name?;
    let request: SetQuotasRequest = json_body(&headers, body)?;
    let known: Vec<String> = QUOTAS.iter().map(|q| q.name()).collect();
    let mut problems = Vec::new();
    for (quota, limit) in &request.limits {
        let path = format!("limits[{quota:?}]");
        if Quota::from_name(quota).is_none() {
            problems.push(FieldProblem {
                path,
                message: format!("no such quota; the quotas are {}", known.join(", ")),
            });
        } else if *limit > MAX_QUOTA_LIMIT {
            problems.push(FieldProblem {
                path,
                message: format!("{limit} is above the largest limit, {MAX_QUOTA_LIMIT}"),
            });
        }
    }
    check("the quotas are invalid", problems)?;
    let statuses = state
        .store
        .set_tenant_quotas(&name, &request.limits, &caller.actor())
        .await?;
    Ok(Json(view(name, statuses)))
}
