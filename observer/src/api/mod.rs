//! The REST API: tenants, tokens, clusters, pipelines and status, served by axum.
//!
//! [`app`] builds the whole router from an [`ApiState`]; `observer serve` mounts it and
//! tests drive it with `tower::ServiceExt::oneshot`. Every route except `/healthz`,
//! `/readyz` and `/openapi.json` needs a bearer token ([`auth`]). Every answer is JSON;
//! every failure is an [`ApiError`] (`{"error", "fields"}`); every mutation is audited by
//! the store with the caller as actor. Inline secret values of pipelines are shown as
//! `***` in every answer ([`redact`]). `/openapi.json` describes all of it ([`openapi`]).

pub mod audit;
pub mod auth;
pub mod budgets;
pub mod cluster_api;
pub mod clusters;
pub mod control_plane;
pub mod deletions;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod pipelines;
pub mod probes;
pub mod quotas;
pub mod redact;
pub mod secrets;
pub mod status;
pub mod template_instances;
pub mod templates;
pub mod tenants;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::de::DeserializeOwned;

pub use error::ApiError;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};
use model::FieldProblem;

use crate::egress::EgressPolicy;
use crate::store::{Store, now_ms};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// How long a new join token stays valid.
    pub join_token_ttl: Duration,
    /// The observer's gRPC endpoint as agents reach it, e.g. `https://observer:8443`;
    /// written into install manifests.
    pub control_endpoint: String,
    /// The observer's CA certificate (PEM), written into install manifests.
    pub ca_pem: String,
    /// The clusters' default buffer budget and the central pipeline's share of it.
    pub buffer_budgets: budgets::BufferBudgets,
    /// Which addresses and probe methods tenants may name ([`crate::egress`]).
    pub egress: EgressPolicy,
    /// What tenant pipelines may do (`observer serve --agent-secret-namespaces`, the
    /// central pipeline's tenant header and receiver): pipelines are validated under it
    /// as the observer distributes them, and its Secret namespaces go into install
    /// manifests.
    pub tenant_policy: Arc<kaas_pipeline::ProviderPolicy>,
}

impl ApiState {
    /// How a tenant's pipeline is validated: as the observer distributes it, under
    /// [`ApiState::tenant_policy`].
    pub fn tenant_validation(&self) -> kaas_pipeline::ValidationContext {
        kaas_pipeline::ValidationContext::observer((*self.tenant_policy).clone())
    }

    /// The namespaces whose Secrets agents may read, for install manifests.
    pub fn secret_namespaces(&self) -> Vec<String> {
        self.tenant_policy.secret_namespaces.granted()
    }

    /// The provider's central receivers, as the agents' `--central-endpoints`.
    pub fn central_endpoints(&self) -> Vec<String> {
        central_endpoint_args(&self.tenant_policy)
    }
}

/// The whole REST API.
pub fn app(state: ApiState) -> Router {
    let document = Arc::new(openapi::document());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .route("/api/v1/status", get(status::get))
        .route("/api/v1/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/api/v1/tenants/{name}",
            get(tenants::get).delete(tenants::delete),
        )
        .route(
            "/api/v1/tenants/{name}/quotas",
            get(quotas::get).put(quotas::put),
        )
        .route(
            "/api/v1/tokens",
            post(tokens::create)
                .get(tokens::list)
                .delete(tokens::revoke_all),
        )
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route(
            "/api/v1/clusters",
            post(clusters::create).get(clusters::list),
        )
        .route(
            "/api/v1/clusters/{name}",
            get(clusters::get).delete(clusters::delete),
        )
        .route(
            "/api/v1/clusters/{name}/join-token",
            post(clusters::mint_join_token),
        )
        .route(
            "/api/v1/clusters/{name}/certificates",
            delete(clusters::revoke_certificates),
        )
        .route(
            "/api/v1/clusters/{name}/buffer-budget",
            get(budgets::get).put(budgets::put).delete(budgets::delete),
        )
        .route(
            "/api/v1/clusters/{name}/control-plane",
            get(control_plane::get)
                .put(control_plane::put)
                .delete(control_plane::delete),
        )
        .merge(pipeline_routes::<ValidatedPipeline>())
        .merge(pipeline_routes::<ValidatedLogPipeline>())
        .merge(pipeline_routes::<ValidatedTracePipeline>())
        .merge(template_routes())
        .route("/api/v1/probes", post(probes::create).get(probes::list))
        .route(
            "/api/v1/probes/{name}",
            axum::routing::put(probes::put)
                .get(probes::get)
                .delete(probes::delete),
        )
        // Administration of the tenancy boundary (admin tokens only).
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/cluster-api/namespaces", get(cluster_api::list))
        .route(
            "/api/v1/cluster-api/namespaces/{namespace}",
            axum::routing::put(cluster_api::put).delete(cluster_api::delete),
        )
        .route("/api/v1/secrets/rekey", post(secrets::rekey))
        .route("/api/v1/deletions/confirm", post(deletions::confirm))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The routes of pipelines of kind `P`, under `/api/v1/<collection>`
/// ([`pipelines::route_of`]).
fn pipeline_routes<P: crate::store::PipelineKind>() -> Router<ApiState> {
    let base = format!("/api/v1/{}", pipelines::route_of::<P>());
    Router::new()
        .route(
            &base,
            post(pipelines::create::<P>).get(pipelines::list::<P>),
        )
        .route(
            &format!("{base}/{{name}}"),
            axum::routing::put(pipelines::put::<P>)
                .get(pipelines::get::<P>)
                .delete(pipelines::delete::<P>),
        )
        .route(
            &format!("{base}/{{name}}/status"),
            get(pipelines::status::<P>),
        )
}

/// Liveness: the process answers.
/// Templates and their instances.
fn template_routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/pipelinetemplates",
            post(templates::create).get(templates::list),
        )
        .route(
            "/api/v1/pipelinetemplates/{name}",
            axum::routing::put(templates::put)
                .get(templates::get)
                .delete(templates::delete),
        )
        .route(
            "/api/v1/pipelinetemplates/{name}/generations",
            get(templates::generations),
        )
        .route(
            "/api/v1/pipelinetemplates/{name}/rollback",
            post(templates::rollback),
        )
        .route(
            "/api/v1/pipelineinstances",
            post(template_instances::create).get(template_instances::list),
        )
        .route(
            "/api/v1/pipelineinstances/{name}",
            axum::routing::put(template_instances::put)
                .get(template_instances::get)
                .delete(template_instances::delete),
        )
        .route(
            "/api/v1/pipelineinstances/{name}/render",
            get(template_instances::render),
        )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers.
async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Ok("ready\n")
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

async fn method_not_allowed() -> Response {
    let body = model::ErrorBody {
        error: "method not allowed on this route".to_owned(),
        fields: Vec::new(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// How a request body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    /// `application/json` (also assumed when no content type is given).
    Json,
    /// `application/yaml` and its aliases.
    Yaml,
}

/// The body format from `Content-Type`; 415 for anything else.
pub(crate) fn body_format(headers: &HeaderMap, yaml_allowed: bool) -> Result<BodyFormat, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" if yaml_allowed => {
            Ok(BodyFormat::Yaml)
        }
        _ => Err(ApiError::UnsupportedMediaType(if yaml_allowed {
            "send application/json or application/yaml".to_owned()
        } else {
            "send application/json".to_owned()
        })),
    }
}

/// Reads a JSON request body into `T`: 415 for another content type, 400 for malformed
/// JSON, 422 naming the field for a well-formed body of the wrong shape.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    body_format(headers, false)?;
    let body = body?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Invalid {
            message: "the request is invalid".to_owned(),
            fields: vec![FieldProblem {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }],
        }
    })
}

/// A 422 when `problems` is not empty.
pub(crate) fn check(message: &str, problems: Vec<FieldProblem>) -> Result<(), ApiError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            message: message.to_owned(),
            fields: problems,
        })
    }
}

/// `policy`'s central receivers as the agents' `--central-endpoints` take them.
pub fn central_endpoint_args(policy: &kaas_pipeline::ProviderPolicy) -> Vec<String> {
    policy
        .central_endpoints
        .iter()
        .map(ToString::to_string)
        .collect()
}
