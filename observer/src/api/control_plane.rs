//! A cluster's control-plane setting (`/api/v1/clusters/{name}/control-plane`, the
//! cluster named as on the other cluster routes): which control-plane components the
//! provider's central pipeline scrapes on it, and how ([`crate::control_plane`]).
//!
//! The setting is the provider's: only admins set it (at onboarding or later); a tenant
//! reads it for its clusters. The view lists every component with whether it is
//! scraped and, when it is not, the reason: a component that is not scraped has no
//! series, so no alert fires for it, and this is where the provider and the tenant see
//! why (issue 15, finding 3).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::budgets::live_cluster;
use super::clusters::ClusterPathQuery;
use super::model::FieldProblem;
use super::{ApiError, ApiState, json_body};
use crate::control_plane::{ControlPlaneScrape, ValidatedComponent, ValidatedControlPlane};
use crate::store::Cluster;

/// One component as the cluster's central pipeline scrapes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    /// The component, named by the `job` of its series.
    pub job: String,
    /// Whether the central pipeline scrapes it.
    pub scraped: bool,
    /// How: `addresses host:port,...`, `service namespace/name`, or `notScraped`.
    pub how: String,
    /// Why it is not scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A cluster's control-plane setting and what it means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneView {
    /// The cluster's name in its tenant.
    pub cluster: String,
    /// The cluster's global id.
    pub cluster_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Whether the cluster has the defaults rather than a setting of its own.
    pub default: bool,
    /// The setting as written (empty for the defaults).
    pub setting: ControlPlaneScrape,
    /// Every component, in a fixed order.
    pub components: Vec<ComponentView>,
}

/// `GET /api/v1/clusters/{name}/control-plane`: anyone who may see the cluster.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<ControlPlaneView>, ApiError> {
    let cluster = live_cluster(&caller, &state, name, query).await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// `PUT /api/v1/clusters/{name}/control-plane` (admin): sets the cluster's setting; a
/// wrong field is a 422 naming it.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ControlPlaneView>, ApiError> {
    caller.require_admin()?;
    let request: ControlPlaneScrape = json_body(&headers, body)?;
    let validated = validate(&request)?;
    let cluster = live_cluster(&caller, &state, name, query).await?;
    state
        .store
        .set_cluster_control_plane(
            &cluster.tenant,
            &cluster.id,
            Some(&validated),
            &caller.actor(),
        )
        .await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// `DELETE /api/v1/clusters/{name}/control-plane` (admin): back to the defaults.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ClusterPathQuery>, QueryRejection>,
) -> Result<Json<ControlPlaneView>, ApiError> {
    caller.require_admin()?;
    let cluster = live_cluster(&caller, &state, name, query).await?;
    state
        .store
        .set_cluster_control_plane(&cluster.tenant, &cluster.id, None, &caller.actor())
        .await?;
    Ok(Json(view(&state, &cluster).await?))
}

/// Validates a setting, as a 422 listing every wrong field.
pub fn validate(setting: &ControlPlaneScrape) -> Result<ValidatedControlPlane, ApiError> {
    setting.validate().map_err(|error| ApiError::Invalid {
        message: "the control-plane setting is invalid".to_owned(),
        fields: error
            .errors
            .into_iter()
            .map(|e| FieldProblem {
                path: e.field,
                message: e.message,
            })
            .collect(),
    })
}

async fn view(state: &ApiState, cluster: &Cluster) -> Result<ControlPlaneView, ApiError> {
    let set = state
        .store
        .cluster_control_planes(Some(&cluster.tenant))
        .await?
        .remove(&cluster.id);
    let default = set.is_none();
    let validated = set.unwrap_or_default();
    Ok(ControlPlaneView {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id.clone(),
        tenant: cluster.tenant.clone(),
        default,
        setting: if default {
            ControlPlaneScrape::default()
        } else {
            validated.spec().clone()
        },
        components: components(&validated),
    })
}

/// Every component of `setting` as the view shows it. Pure.
pub fn components(setting: &ValidatedControlPlane) -> Vec<ComponentView> {
    setting
        .components()
        .iter()
        .map(|(component, how)| {
            let job = component.job().to_owned();
            match how {
                ValidatedComponent::Addresses {
                    addresses,
                    scheme,
                    metrics_path,
                    service_account_credentials,
                } => ComponentView {
                    job,
                    scraped: true,
                    how: format!(
                        "addresses {} ({}, {metrics_path}{})",
                        addresses.join(","),
                        match scheme {
                            kaas_pipeline::input::Scheme::Http => "http",
                            kaas_pipeline::input::Scheme::Https => "https",
                        },
                        if *service_account_credentials {
                            ", the agent's token"
                        } else {
                            ""
                        }
                    ),
                    reason: None,
                },
                ValidatedComponent::Service { namespace, name } => ComponentView {
                    job,
                    scraped: true,
                    how: format!("service {namespace}/{name}"),
                    reason: None,
                },
                ValidatedComponent::NotScraped { reason } => ComponentView {
                    job,
                    scraped: false,
                    how: "notScraped".to_owned(),
                    reason: Some(reason.clone()),
                },
            }
        })
        .collect()
}
