//! `/api/v1/pipelineinstances`: a tenant's `PipelineInstance`s, each a pipeline made
//! from a template (its own or the provider's). Create-or-update (`PUT /{name}`,
//! `POST`; `?dryRun=true` answers what would happen, the rendered pipeline included),
//! read, list, delete, and `GET /{name}/render?cluster=` (the pipeline as its agent
//! runs it, secrets masked, and whether that cluster runs it).
//!
//! An instance is checked on its own ([`validate_instance`](kaas_pipeline::templates::validate_instance))
//! and then rendered from its template in the tenant policy: an unbound required
//! placeholder, a wrongly typed static value or a template that does not exist is a
//! 422 naming the binding. A non-secret placeholder bound to a Secret or ConfigMap key
//! is rendered with its type's sample here and by the agent with the key's value; a
//! missing key or a value the agent refuses shows in the status, the binding named in
//! `status.failingBinding`. The rendered pipeline joins the tenant's pipelines of its
//! kind (see [`crate::store::template_instances`]) after the same size and buffer budget
//! checks as a pipeline applied directly. Its status is the instance's status, with
//! the template generation it runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::templates::{PipelineInstance, PipelineInstanceStatus, parse_instance_value};
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::model::{ApplyResult, FieldProblem};
use super::pipelines::{check_rendered_size, drop_server_owned, name_from_url, read_body};
use super::templates::{invalid, problems_of};
use super::{ApiError, ApiState, body_format};
use crate::store::{InstanceWritten, MASKED_SECRET, PipelineKind, StoredInstance, mask_secrets};

/// Query parameters of instance requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceQuery {
    /// The tenant (admin tokens only; a tenant token may name only its own).
    pub tenant: Option<String>,
    /// Validate and answer without storing.
    #[serde(default)]
    pub dry_run: bool,
    /// For `render`: the cluster (the tenant's name for it).
    pub cluster: Option<String>,
}

/// An instance as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// The owning tenant.
    pub tenant: String,
    /// Its name, which its pipeline has too.
    pub name: String,
    /// The kind of its pipeline.
    pub pipeline_kind: String,
    /// Its spec generation.
    pub generation: i64,
    /// The template generation its pipeline runs.
    pub template_generation: i64,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change (its own or a re-render).
    pub updated_at_ms: i64,
    /// The instance, with `metadata.generation` and `status` filled in.
    pub resource: PipelineInstance,
}

/// Instances.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct InstanceList {
    /// The instances, by tenant and name.
    pub items: Vec<InstanceView>,
}

/// What applying an instance did.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedInstance {
    /// Created, configured or unchanged.
    pub result: ApplyResult,
    /// Whether nothing was stored (`?dryRun=true`).
    pub dry_run: bool,
    /// The instance (with dryRun: as it would be).
    pub instance: InstanceView,
    /// Its rendered pipeline, inline secrets `***`.
    pub pipeline: serde_json::Value,
}

/// An instance's pipeline as a cluster runs it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderedInstance {
    /// The cluster asked about.
    pub cluster: String,
    /// Whether the pipeline's cluster selector selects it.
    pub selected: bool,
    /// The template generation it was rendered from.
    pub template_generation: i64,
    /// The pipeline, inline secrets `***`.
    pub pipeline: serde_json::Value,
}

/// The answer for a stored instance: its status is its pipeline's conditions, with
/// the template generation it runs.
pub fn view(stored: &StoredInstance) -> InstanceView {
    let mut resource = stored.instance.resource().clone();
    for (placeholder, binding) in &mut resource.spec.bindings {
        if stored.sealed.contains(placeholder) && binding.value.is_some() {
            binding.value = Some(MASKED_SECRET.to_owned());
        }
    }
    resource.metadata.generation = Some(stored.generation);
    resource.status = Some(PipelineInstanceStatus {
        observed_generation: Some(stored.generation),
        template_generation: Some(stored.template_generation),
        failing_binding: failing_binding(&stored.status.conditions),
        conditions: stored.status.conditions.clone(),
    });
    InstanceView {
        tenant: stored.tenant.clone(),
        name: stored.name().to_owned(),
        pipeline_kind: stored.pipeline_kind.clone(),
        generation: stored.generation,
        template_generation: stored.template_generation,
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.updated_at_ms,
        resource,
    }
}

/// The binding a failing condition names (`spec.bindings["name"]` in its message, as
/// agents report a missing key or a refused bound value), by placeholder name.
fn failing_binding(conditions: &[kaas_pipeline::status::Condition]) -> Option<String> {
    const AT: &str = "spec.bindings[\"";
    conditions
        .iter()
        .filter(|c| c.status != kaas_pipeline::status::ConditionStatus::True)
        .find_map(|c| {
            let start = c.message.find(AT)? + AT.len();
            let end = c.message[start..].find('"')?;
            Some(c.message[start..start + end].to_owned())
        })
}

/// A rendered pipeline as JSON, inline secrets replaced by `***`.
pub fn masked(pipeline: &ValidatedResource) -> Result<serde_json::Value, ApiError> {
    fn of<P: PipelineKind>(pipeline: &P) -> Result<serde_json::Value, ApiError> {
        let mut resource = pipeline.resource().clone();
        mask_secrets::<P>(&mut resource);
        serde_json::to_value(&resource).map_err(ApiError::internal)
    }
    match pipeline {
        ValidatedResource::Metric(p) => of::<ValidatedPipeline>(p),
        ValidatedResource::Log(p) => of::<ValidatedLogPipeline>(p),
        ValidatedResource::Trace(p) => of::<ValidatedTracePipeline>(p),
    }
}

/// The checks a pipeline applied directly passes before it is stored: alone it fits an
/// agent configuration, and its buffer fits every selected cluster's budget.
async fn check_rendered(
    state: &ApiState,
    tenant: &str,
    pipeline: &ValidatedResource,
) -> Result<(), ApiError> {
    async fn of<P: PipelineKind>(state: &ApiState, tenant: &str, p: &P) -> Result<(), ApiError> {
        check_rendered_size(p)?;
        super::budgets::check_pipeline(state, tenant, p).await
    }
    match pipeline {
        ValidatedResource::Metric(p) => of::<ValidatedPipeline>(state, tenant, p).await,
        ValidatedResource::Log(p) => of::<ValidatedLogPipeline>(state, tenant, p).await,
        ValidatedResource::Trace(p) => of::<ValidatedTracePipeline>(state, tenant, p).await,
    }
}

type Applied = (StatusCode, Json<AppliedInstance>);

/// `PUT /api/v1/pipelineinstances/{name}`.
pub async fn put(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    apply(caller, state, Some(name), query, headers, body).await
}

/// `POST /api/v1/pipelineinstances`.
pub async fn create(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
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
    query: InstanceQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied, ApiError> {
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    let format = body_format(&headers, true)?;
    let mut value = read_body(format, &body?)?;
    let mut problems = name_from_url(url_name.as_deref(), &mut value);
    if let serde_yaml::Value::Mapping(map) = &mut value {
        drop_server_owned(map);
        if let Some(name) = super::pipelines::body_name(map)
            && crate::rendering::is_reserved_pipeline_name(&name)
        {
            problems.push(FieldProblem {
                path: "metadata.name".to_owned(),
                message: format!(
                    "{name:?} starts with {:?}, which is reserved for the observer's own pipelines",
                    crate::rendering::central::RESERVED_PIPELINE_PREFIX
                ),
            });
        }
    }
    problems.extend(restore_masked_values(&state, &tenant, &mut value).await?);
    let context = state.tenant_validation();
    let instance = match parse_instance_value("body".to_owned(), value, &context).outcome {
        Ok(instance) if problems.is_empty() => instance,
        Ok(_) => return Err(invalid("the instance is invalid", problems)),
        Err(errors) => {
            let mut fields = problems_of(errors);
            fields.extend(problems);
            return Err(invalid("the instance is invalid", fields));
        }
    };
    let actor = caller.actor();
    // Rendered first without writing, for the checks a directly applied pipeline passes.
    let preview = (state.store)
        .apply_instance(&tenant, instance.clone(), &context, &actor, true)
        .await?;
    check_rendered(&state, &tenant, &preview.pipeline).await?;
    let written = if query.dry_run {
        preview
    } else {
        (state.store)
            .apply_instance(&tenant, instance, &context, &actor, false)
            .await?
    };
    applied(written, query.dry_run)
}

/// Replaces each binding `value` sent as `***` by the value stored for it, so an
/// instance read from the API can be applied again; a problem when none is stored.
async fn restore_masked_values(
    state: &ApiState,
    tenant: &str,
    value: &mut serde_yaml::Value,
) -> Result<Vec<FieldProblem>, ApiError> {
    let name = match value {
        serde_yaml::Value::Mapping(map) => super::pipelines::body_name(map),
        _ => None,
    };
    let Some(bindings) = value
        .get_mut("spec")
        .and_then(|spec| spec.get_mut("bindings"))
        .and_then(serde_yaml::Value::as_mapping_mut)
    else {
        return Ok(Vec::new());
    };
    let masked: Vec<String> = bindings
        .iter()
        .filter(|(_, binding)| {
            binding.get("value").and_then(serde_yaml::Value::as_str) == Some(MASKED_SECRET)
        })
        .filter_map(|(placeholder, _)| placeholder.as_str().map(str::to_owned))
        .collect();
    if masked.is_empty() {
        return Ok(Vec::new());
    }
    let stored = match name {
        Some(name) => state.store.get_instance(tenant, &name).await?,
        None => None,
    };
    let mut problems = Vec::new();
    for placeholder in masked {
        let kept = (stored.as_ref())
            .filter(|s| s.sealed.contains(&placeholder))
            .and_then(|s| s.instance.resource().spec.bindings.get(&placeholder))
            .and_then(|binding| binding.value.clone());
        match kept {
            Some(kept) => {
                if let Some(serde_yaml::Value::Mapping(binding)) =
                    bindings.get_mut(placeholder.as_str())
                {
                    binding.insert("value".into(), kept.into());
                }
            }
            None => problems.push(FieldProblem {
                path: format!("spec.bindings[{placeholder:?}].value"),
                message:
                    "\"***\" keeps a stored secret value, but none is stored here; send the value"
                        .to_owned(),
            }),
        }
    }
    Ok(problems)
}

fn applied(written: InstanceWritten, dry_run: bool) -> Result<Applied, ApiError> {
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
    Ok((
        status,
        Json(AppliedInstance {
            result,
            dry_run,
            instance: view(&written.stored),
            pipeline: masked(&written.pipeline)?,
        }),
    ))
}

/// `GET /api/v1/pipelineinstances`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<Json<InstanceList>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    let items = (state.store.list_instances(scope.as_deref()).await?)
        .iter()
        .map(view)
        .collect();
    Ok(Json(InstanceList { items }))
}

/// `GET /api/v1/pipelineinstances/{name}`.
pub async fn get(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<Json<InstanceView>, ApiError> {
    let (stored, _) = find(&caller, &state, name, query).await?;
    Ok(Json(view(&stored)))
}

/// `DELETE /api/v1/pipelineinstances/{name}`: the instance and its pipeline.
pub async fn delete(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let (stored, _) = find(&caller, &state, name, query).await?;
    (state.store)
        .delete_instance(&stored.tenant, stored.name(), &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/pipelineinstances/{name}/render?cluster=`: the stored pipeline of the
/// instance, secrets masked, and whether the cluster's labels select it.
pub async fn render(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<Json<RenderedInstance>, ApiError> {
    let (stored, query) = find(&caller, &state, name, query).await?;
    let cluster_name = query
        .cluster
        .ok_or_else(|| ApiError::BadRequest("name the cluster with ?cluster=".to_owned()))?;
    let cluster = (state
        .store
        .get_cluster_named(&stored.tenant, &cluster_name)
        .await?)
        .filter(|c| !c.state.is_tombstone())
        .ok_or_else(|| ApiError::NotFound(format!("cluster {cluster_name:?} not found")))?;
    async fn of<P: PipelineKind>(
        state: &ApiState,
        stored: &StoredInstance,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(bool, serde_json::Value), ApiError> {
        let pipeline = (state
            .store
            .get_pipeline_of::<P>(&stored.tenant, stored.name())
            .await?)
            .ok_or_else(|| {
                ApiError::Conflict("the instance's pipeline cannot be read".to_owned())
            })?;
        let selected = pipeline.pipeline.cluster_selector().matches(labels);
        let resource = pipeline.masked_resource();
        Ok((
            selected,
            serde_json::to_value(&resource).map_err(ApiError::internal)?,
        ))
    }
    let labels = &cluster.labels;
    let (selected, pipeline) = match stored.pipeline_kind.as_str() {
        k if k == <ValidatedLogPipeline as PipelineKind>::KIND => {
            of::<ValidatedLogPipeline>(&state, &stored, labels).await?
        }
        k if k == <ValidatedTracePipeline as PipelineKind>::KIND => {
            of::<ValidatedTracePipeline>(&state, &stored, labels).await?
        }
        _ => of::<ValidatedPipeline>(&state, &stored, labels).await?,
    };
    Ok(Json(RenderedInstance {
        cluster: cluster_name,
        selected,
        template_generation: stored.template_generation,
        pipeline,
    }))
}

async fn find(
    caller: &Caller,
    state: &ApiState,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<InstanceQuery>, QueryRejection>,
) -> Result<(StoredInstance, InstanceQuery), ApiError> {
    let Path(name) = name?;
    let Query(mut query) = query?;
    let tenant = caller.target_tenant(query.tenant.take(), "?tenant=")?;
    let stored = (state.store.get_instance(&tenant, &name).await?)
        .ok_or_else(|| ApiError::NotFound(format!("PipelineInstance {name:?} not found")))?;
    Ok((stored, query))
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::status::{Condition, ConditionStatus};

    use super::failing_binding;

    fn condition(status: ConditionStatus, message: &str) -> Condition {
        Condition {
            type_: "FlowHealthy".to_owned(),
            status,
            reason: "SecretMissing".to_owned(),
            message: message.to_owned(),
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }

    /// The binding an agent names in a failing condition (a missing key, a refused
    /// value) is the instance's `failingBinding`; a condition that holds names none.
    #[test]
    fn the_failing_binding_is_the_one_a_failing_condition_names() {
        let missing = condition(
            ConditionStatus::False,
            "cluster prod-1: the instance cannot be rendered: spec.bindings[\"endpoint\"].configMapKeyRef: ConfigMap kaas-observer/tempo key \"url\" does not exist",
        );
        assert_eq!(failing_binding(&[missing]).as_deref(), Some("endpoint"));
        let fine = condition(ConditionStatus::True, "spec.bindings[\"endpoint\"]");
        assert_eq!(failing_binding(&[fine]), None);
        assert_eq!(
            failing_binding(&[condition(ConditionStatus::False, "backend down")]),
            None
        );
    }
}
