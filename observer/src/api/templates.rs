//! `/api/v1/pipelinetemplates`: a tenant's `PipelineTemplate`s, and the provider's,
//! which every tenant reads and binds but none may change. Create-or-update (`PUT
//! /{name}`, `POST`; `?dryRun=true` answers what would happen, the instances it would
//! re-render included), read (the latest generation, or `?generation=`), list, delete,
//! the generations of one, and `POST /{name}/rollback` to an earlier generation.
//!
//! A body is JSON, or YAML with `Content-Type: application/yaml`, checked by
//! [`validate_template`](kaas_pipeline::templates::validate_template) under the tenant
//! policy (422 with every field error). Every accepted change is a new generation and
//! re-renders the instances that follow the template, all or none: a change that would
//! break any of them is refused with 422, each broken instance's problems under
//! `instances["<name>"]` (see [`crate::store::templates`]), and so is one whose
//! re-rendered instances would together take a cluster over its buffer budget, each
//! such instance under `instances["<tenant>/<name>"]`
//! ([`check_rerendered`](super::budgets::check_rerendered)). A tenant reaches only its
//! own templates and the provider's; another tenant's are "not found".
//!
//! A header value written literally in a template is a secret as a pipeline's is:
//! sealed at rest, and shown as `***` in every answer ([`view`]); `***` in an applied
//! template keeps the value stored at the same path of its latest generation
//! ([`restore_masked`]). A header value holding a placeholder (`Bearer %{token}`) is
//! shown as written: the secret is in the binding, which the agent reads.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kaas_pipeline::templates::syntax::{self, Segment};
use kaas_pipeline::templates::{PipelineTemplate, parse_template_value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::model::{ApplyResult, FieldProblem};
use super::pipelines::{body_name, drop_server_owned, name_from_url, read_body};
use super::redact::REDACTED;
use super::{ApiError, ApiState, body_format, json_body};
use crate::store::{StoredTemplate, TemplateWritten, spec_header_values};

/// Query parameters of template requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateQuery {
    /// The tenant (admin tokens only; a tenant token may name only its own).
    pub tenant: Option<String>,
    /// Validate and answer without storing.
    #[serde(default)]
    pub dry_run: bool,
    /// One generation instead of the latest (reads only).
    pub generation: Option<i64>,
}

/// A template as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    /// The owning tenant; empty for a provider template.
    pub tenant: String,
    /// Whether it is the provider's: every tenant may bind it, none may change it.
    pub provider: bool,
    /// Its name.
    pub name: String,
    /// This generation.
    pub generation: i64,
    /// Unix milliseconds when this generation was written.
    pub created_at_ms: i64,
    /// The same: a generation is never changed once written.
    pub updated_at_ms: i64,
    /// The template, `metadata.generation` filled in.
    pub resource: PipelineTemplate,
}

/// Templates.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TemplateList {
    /// The templates (for a list of generations, oldest first).
    pub items: Vec<TemplateView>,
}

/// What applying (or rolling back) a template did.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTemplate {
    /// Created, configured (a new generation) or unchanged.
    pub result: ApplyResult,
    /// Whether nothing was stored (`?dryRun=true`).
    pub dry_run: bool,
    /// The template's latest generation (with dryRun: what it would be).
    pub template: TemplateView,
    /// The instances re-rendered from it (with dryRun: that would be), by name.
    pub rerendered: Vec<String>,
}

/// The body of a rollback.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The earlier generation to make the latest again.
    pub generation: i64,
}

/// Whether a header value is a secret written in place: it holds no placeholder.
fn is_literal(text: &str) -> bool {
    !syntax::parse(text)
        .is_ok_and(|segments| (segments.iter()).any(|s| matches!(s, Segment::Placeholder(_))))
}

/// The answer for a stored template, its literal header values masked.
pub fn view(stored: &StoredTemplate) -> TemplateView {
    let mut resource = stored.template.resource().clone();
    resource.metadata.generation = Some(stored.generation);
    for (_, value) in spec_header_values(&mut resource.spec.template.spec) {
        if is_literal(value) {
            REDACTED.clone_into(value);
        }
    }
    TemplateView {
        tenant: stored.tenant.clone(),
        provider: stored.is_provider(),
        name: stored.name().to_owned(),
        generation: stored.generation,
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.created_at_ms,
        resource,
    }
}

fn applied(written: TemplateWritten, dry_run: bool) -> (StatusCode, Json<AppliedTemplate>) {
    let result = match (written.created, written.changed) {
        (true, _) => ApplyResult::Created,
        (false, true) => ApplyResult::Configured,
        (false, false) => ApplyResult::Unchanged,
    };
    let status = if written.created && !dry_run {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let rerendered = written
        .rerendered
        .into_iter()
        .map(|(tenant, name)| {
            if written.stored.is_provider() {
                format!("{tenant}/{name}")
            } else {
                name
            }
        })
        .collect();
    (
        status,
        Json(AppliedTemplate {
            result,
            dry_run,
            template: view(&written.stored),
            rerendered,
        }),
    )
}

type Applied = (StatusCode, Json<AppliedTemplate>);

/// `PUT /api/v1/pipelinetemplates/{name}`.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    apply(caller, state, Some(name), query, headers, body).await
}

/// `POST /api/v1/pipelinetemplates`.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let Query(query) = query?;
    apply(caller, state, None, query, headers, body).await
}

async fn apply(
    caller: Caller,
    state: ApiState,
    url_name: Option<String>,
    query: TemplateQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    let format = body_format(&headers, true)?;
    let mut value = read_body(format, &body?)?;
    let mut problems = name_from_url(url_name.as_deref(), &mut value);
    if let serde_yaml::Value::Mapping(map) = &mut value {
        drop_server_owned(map);
        problems.extend(restore_masked(&state, &tenant, map).await?);
    }
    let context = state.tenant_validation();
    let template = match parse_template_value("body".to_owned(), value, &context).outcome {
        Ok(template) if problems.is_empty() => template,
        Ok(_) => return Err(invalid("the template is invalid", problems)),
        Err(errors) => {
            let mut fields = problems_of(errors);
            fields.extend(problems);
            return Err(invalid("the template is invalid", fields));
        }
    };
    // Written first as a dry run, for the budgets of the instances it re-renders.
    let actor = caller.actor();
    let store = &state.store;
    let preview = (store.apply_template(&tenant, template.clone(), &context, &actor, true)).await?;
    super::budgets::check_rerendered(&state, &preview.rendered).await?;
    let written = if query.dry_run {
        preview
    } else {
        (store.apply_template(&tenant, template, &context, &actor, false)).await?
    };
    Ok(applied(written, query.dry_run))
}

/// Puts back, in an applied template `document`, each header value sent as `***` (as
/// an answer showed it) from the same path of the template's latest stored generation;
/// a `***` with no stored value there is a problem at its path.
async fn restore_masked(
    state: &ApiState,
    tenant: &str,
    document: &mut serde_yaml::Mapping,
) -> Result<Vec<FieldProblem>, ApiError> {
    let Some(spec) = (document.get_mut("spec"))
        .and_then(|spec| spec.get_mut("template"))
        .and_then(|template| template.get_mut("spec"))
    else {
        return Ok(Vec::new());
    };
    let Ok(mut applied) = serde_json::to_value(&*spec) else {
        // Not plain data: validation says what is wrong with it.
        return Ok(Vec::new());
    };
    let masked: Vec<String> = (spec_header_values(&mut applied).into_iter())
        .filter(|(_, value)| value.as_str() == REDACTED)
        .map(|(path, _)| path)
        .collect();
    if masked.is_empty() {
        return Ok(Vec::new());
    }
    let name = body_name(document).unwrap_or_default();
    let stored = match state.store.get_template(tenant, &name, None).await? {
        Some(stored) if !stored.is_provider() => {
            let mut spec = stored.template.resource().spec.template.spec.clone();
            (spec_header_values(&mut spec).into_iter())
                .map(|(path, value)| (path, value.clone()))
                .collect()
        }
        _ => std::collections::BTreeMap::new(),
    };
    let mut problems = Vec::new();
    for (path, value) in spec_header_values(&mut applied) {
        if value.as_str() != REDACTED {
            continue;
        }
        match stored.get(&path) {
            Some(kept) if kept.as_str() != REDACTED => kept.clone_into(value),
            _ => problems.push(FieldProblem {
                path,
                message: format!(
                    "{REDACTED} stands for the value stored at this path, and the template \
                     stores none there: write the value"
                ),
            }),
        }
    }
    if let Some(spec) = (document.get_mut("spec"))
        .and_then(|spec| spec.get_mut("template"))
        .and_then(|template| template.get_mut("spec"))
        && let Ok(restored) = serde_yaml::to_value(&applied)
    {
        *spec = restored;
    }
    Ok(problems)
}

/// `GET /api/v1/pipelinetemplates`: the caller's templates and the provider's.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<Json<TemplateList>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    let items = state
        .store
        .list_templates(scope.as_deref())
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(TemplateList { items }))
}

/// `GET /api/v1/pipelinetemplates/{name}` (`?generation=` for an earlier one).
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<Json<TemplateView>, ApiError> {
    let (tenant, name, query) = target(&caller, name, query)?;
    let stored = find(&state, &tenant, &name, query.generation).await?;
    Ok(Json(view(&stored)))
}

/// `GET /api/v1/pipelinetemplates/{name}/generations`: every generation, oldest first.
pub async fn generations(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<Json<TemplateList>, ApiError> {
    let (tenant, name, _) = target(&caller, name, query)?;
    let latest = find(&state, &tenant, &name, None).await?;
    let items = state
        .store
        .template_generations(&latest.tenant, &name)
        .await?
        .iter()
        .map(view)
        .collect();
    Ok(Json(TemplateList { items }))
}

/// `POST /api/v1/pipelinetemplates/{name}/rollback`: makes an earlier generation the
/// latest again, as a new generation.
pub async fn rollback(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let (tenant, name, query) = target(&caller, name, query)?;
    let request: RollbackRequest = json_body(&headers, body)?;
    writable(&state, &tenant, &name).await?;
    if request.generation < 1 {
        return Err(ApiError::invalid_field(
            "the rollback is invalid",
            "generation",
            "a generation counts from 1",
        ));
    }
    let (context, actor) = (state.tenant_validation(), caller.actor());
    let rollback = |dry_run: bool| {
        let (store, tenant, name) = (&state.store, &tenant, &name);
        let (context, actor) = (&context, &actor);
        async move {
            (store.rollback_template(tenant, name, request.generation, context, actor, dry_run))
                .await
        }
    };
    let preview = rollback(true).await?;
    super::budgets::check_rerendered(&state, &preview.rendered).await?;
    let written = if query.dry_run {
        preview
    } else {
        rollback(false).await?
    };
    Ok(applied(written, query.dry_run))
}

/// `DELETE /api/v1/pipelinetemplates/{name}`: refused while instances bind it.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let (tenant, name, _) = target(&caller, name, query)?;
    writable(&state, &tenant, &name).await?;
    state
        .store
        .delete_template(&tenant, &name, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn target(
    caller: &Caller,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<(String, String, TemplateQuery), ApiError> {
    let Path(name) = name?;
    let Query(mut query) = query?;
    let tenant = caller.target_tenant(query.tenant.take(), "?tenant=")?;
    Ok((tenant, name, query))
}

async fn find(
    state: &ApiState,
    tenant: &str,
    name: &str,
    generation: Option<i64>,
) -> Result<StoredTemplate, ApiError> {
    state
        .store
        .get_template(tenant, name, generation)
        .await?
        .ok_or_else(|| match generation {
            Some(g) => ApiError::NotFound(format!("template {name:?} has no generation {g}")),
            None => ApiError::NotFound(format!("PipelineTemplate {name:?} not found")),
        })
}

/// Refuses changes to a provider template (403); 404 when there is no such template.
async fn writable(state: &ApiState, tenant: &str, name: &str) -> Result<(), ApiError> {
    if find(state, tenant, name, None).await?.is_provider() {
        return Err(ApiError::Forbidden(format!(
            "{name:?} is a provider template: every tenant may bind it, none may change it"
        )));
    }
    Ok(())
}

/// Field problems of validation errors.
pub(super) fn problems_of(errors: kaas_pipeline::ValidationErrors) -> Vec<FieldProblem> {
    errors
        .0
        .into_iter()
        .map(|e| FieldProblem {
            path: e.path,
            message: e.reason,
        })
        .collect()
}

pub(super) fn invalid(message: &str, fields: Vec<FieldProblem>) -> ApiError {
    ApiError::Invalid {
        message: message.to_owned(),
        fields,
    }
}
