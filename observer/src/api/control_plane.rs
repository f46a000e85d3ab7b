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
use crate::control::status::HealthRecord;
use crate::control_plane::{ControlPlaneScrape, ValidatedComponent, ValidatedControlPlane};
use crate::rendering::central::CENTRAL_PIPELINE_NAME;
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
    /// A scraped component the agent cannot reach: how many of its targets fail and
    /// why, from the agent's last health report (the central pipeline's failing
    /// targets with the component's `job`). Shown here and never alerted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
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
    validated
        .check_secret_namespaces(&state.tenant_policy.secret_namespaces)
        .map_err(invalid)?;
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
    setting.validate().map_err(invalid)
}

/// A refused setting as a 422 listing every wrong field.
fn invalid(error: crate::control_plane::ControlPlaneError) -> ApiError {
    ApiError::Invalid {
        message: "the control-plane setting is invalid".to_owned(),
        fields: error
            .errors
            .into_iter()
            .map(|e| FieldProblem {
                path: e.field,
                message: e.message,
            })
            .collect(),
    }
}

async fn view(state: &ApiState, cluster: &Cluster) -> Result<ControlPlaneView, ApiError> {
    let set = cluster_setting(state, cluster).await?;
    let default = set.is_none();
    let validated = set.unwrap_or_default();
    let health = state
        .store
        .cluster_report(&cluster.id)
        .await?
        .and_then(|report| report.health);
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
        components: components(&validated, health.as_ref()),
    })
}

/// The cluster's own setting, `None` for the defaults.
async fn cluster_setting(
    state: &ApiState,
    cluster: &Cluster,
) -> Result<Option<ValidatedControlPlane>, ApiError> {
    Ok(state
        .store
        .cluster_control_planes(Some(&cluster.tenant))
        .await?
        .remove(&cluster.id))
}

/// Every component of the cluster's setting as its view shows it, each scraped one
/// that fails marked unreachable from the stored `health` report.
pub async fn cluster_components(
    state: &ApiState,
    cluster: &Cluster,
    health: Option<&serde_json::Value>,
) -> Result<Vec<ComponentView>, ApiError> {
    let setting = cluster_setting(state, cluster).await?.unwrap_or_default();
    Ok(components(&setting, health))
}

/// Why each failing job of the central pipeline fails, from a stored health report
/// (a report that does not parse shows nothing unreachable).
fn failing_jobs(health: Option<&serde_json::Value>) -> Vec<(String, u32, String)> {
    let Some(record) = health.and_then(|h| serde_json::from_value::<HealthRecord>(h.clone()).ok())
    else {
        return Vec::new();
    };
    record
        .pipelines
        .into_iter()
        .filter(|p| p.pipeline == CENTRAL_PIPELINE_NAME)
        .flat_map(|p| p.targets_down_by_job)
        .map(|j| (j.job, j.targets_down, j.reason))
        .collect()
}

/// Every component of `setting` as the view shows it, scraped ones the agent's last
/// `health` report names as failing marked unreachable with the reason. Pure.
pub fn components(
    setting: &ValidatedControlPlane,
    health: Option<&serde_json::Value>,
) -> Vec<ComponentView> {
    let failing = failing_jobs(health);
    setting
        .components()
        .iter()
        .map(|(component, how)| {
            let job = component.job().to_owned();
            let unreachable = || {
                failing
                    .iter()
                    .find(|(j, _, _)| *j == job)
                    .map(|(_, count, reason)| format!("{count} target(s) failing: {reason}"))
            };
            match how {
                ValidatedComponent::Addresses {
                    addresses,
                    scheme,
                    metrics_path,
                    service_account_credentials,
                    client_certificate_secret,
                } => ComponentView {
                    unreachable: unreachable(),
                    scraped: true,
                    how: format!(
                        "addresses {} ({}, {metrics_path}{}{})",
                        addresses.join(","),
                        match scheme {
                            kaas_pipeline::input::Scheme::Http => "http",
                            kaas_pipeline::input::Scheme::Https => "https",
                        },
                        if *service_account_credentials {
                            ", the agent's token"
                        } else {
                            ""
                        },
                        client_certificate_secret
                            .as_ref()
                            .map(|(namespace, name)| {
                                format!(", client certificate from Secret {namespace}/{name}")
                            })
                            .unwrap_or_default()
                    ),
                    reason: None,
                    job,
                },
                ValidatedComponent::Service { namespace, name } => ComponentView {
                    unreachable: unreachable(),
                    scraped: true,
                    how: format!("service {namespace}/{name}"),
                    reason: None,
                    job,
                },
                ValidatedComponent::NotScraped { reason } => ComponentView {
                    job,
                    scraped: false,
                    how: "notScraped".to_owned(),
                    reason: Some(reason.clone()),
                    unreachable: None,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: a scraped component whose targets the agent reports failing shows as
    /// unreachable with the reason; one not scraped keeps its reason; another
    /// pipeline's failing job of the same name is not the control plane's.
    #[test]
    fn a_failing_component_is_unreachable_with_the_agents_reason() {
        let setting: ControlPlaneScrape = serde_json::from_value(serde_json::json!({
            "etcd": {"addresses": ["10.0.0.10:2379"], "scheme": "https"}
        }))
        .unwrap();
        let health = serde_json::json!({
            "agentInstanceId": "i1", "timestampMs": 1,
            "pipelines": [
                {"pipeline": "kaas-central", "samplesSent": 0, "samplesFailed": 0,
                 "bufferBytes": 0, "bufferOldestAgeSeconds": 0.0, "targetsUp": 3, "targetsDown": 1,
                 "targetsDownByJob": [{"job": "etcd", "targetsDown": 1, "reason": "tls handshake: certificate required"}]},
                {"pipeline": "shop", "samplesSent": 0, "samplesFailed": 0,
                 "bufferBytes": 0, "bufferOldestAgeSeconds": 0.0, "targetsUp": 0, "targetsDown": 1,
                 "targetsDownByJob": [{"job": "apiserver", "targetsDown": 1, "reason": "refused"}]}
            ]
        });
        let views = components(&setting.validate().unwrap(), Some(&health));
        let by_job = |job: &str| views.iter().find(|v| v.job == job).unwrap().clone();
        let etcd = by_job("etcd");
        assert!(etcd.scraped);
        assert_eq!(
            etcd.unreachable.as_deref(),
            Some("1 target(s) failing: tls handshake: certificate required")
        );
        assert_eq!(by_job("apiserver").unreachable, None);
        let scheduler = by_job("kube-scheduler");
        assert!(!scheduler.scraped && scheduler.reason.is_some());
        assert_eq!(scheduler.unreachable, None);
        // No report, or one that does not parse: nothing is unreachable.
        for health in [None, Some(&serde_json::json!({"pipelines": "x"}))] {
            let views = components(&setting.validate().unwrap(), health);
            assert!(views.iter().all(|v| v.unreachable.is_none()));
        }
    }
}
