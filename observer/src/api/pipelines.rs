//! `/api/v1/pipelines` (`MetricPipeline`s), `/api/v1/logpipelines` (`LogPipeline`s) and
//! `/api/v1/tracepipelines` (`TracePipeline`s): create-or-update (`PUT /{name}`, `POST`), validate (`?dryRun=true`), read, list,
//! delete and read the status of pipelines. Every handler is generic over the
//! [`PipelineKind`] and routed once per kind ([`route_of`]); names are unique per tenant
//! and kind, so `/pipelines/shop` and `/logpipelines/shop` are two pipelines.
//!
//! A body is JSON, or YAML with `Content-Type: application/yaml`. It goes through the
//! same parse and validation of its kind as everywhere else, as a pipeline the
//! observer distributes under the tenant policy ([`ApiState::tenant_validation`]: no
//! `valueFrom.file`, Secrets only from the allowed namespaces, no tenancy headers, not
//! to the provider's receiver), and is refused with 422 listing every field error.
//! Before validation, each inline secret written as `***` is replaced by the value
//! stored for the same field, so a document read from the API can be edited and
//! applied again; but not when the place it is sent to changed (see
//! [`restore_redacted`]). `?dryRun=true` answers what would happen without storing.
//! The tenant is the caller's own; an admin names it with `?tenant=`. Answers never hold
//! an inline secret value. A pipeline that alone renders to an agent configuration over
//! the size limit is refused (422 on `spec`): no agent could be sent it.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kaas_pipeline::agent_config::check_config_size;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::auth::Caller;
use super::model::{
    AppliedPipeline, ApplyResult, FieldProblem, PipelineHealthView, PipelineList,
    PipelineStatusView, PipelineView,
};
use super::redact::{redact, restore_redacted};
use super::{ApiError, ApiState, BodyFormat, body_format, now_ms};
use crate::store::pipeline_rows::{PipelineRow, UnreadablePipeline};
use crate::store::{PipelineKind, StoredPipeline};

/// The collection under `/api/v1/` that serves pipelines of kind `P`: `pipelines` for
/// `MetricPipeline` (the first kind, whose routes predate the others), `logpipelines`
/// for `LogPipeline`, `tracepipelines` for `TracePipeline`.
pub fn route_of<P: PipelineKind>() -> &'static str {
    if P::KIND == <ValidatedLogPipeline as PipelineKind>::KIND {
        "logpipelines"
    } else if P::KIND == <ValidatedTracePipeline as PipelineKind>::KIND {
        "tracepipelines"
    } else {
        debug_assert_eq!(P::KIND, <ValidatedPipeline as PipelineKind>::KIND);
        "pipelines"
    }
}

/// Query parameters of pipeline requests.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineQuery {
    /// The tenant (admin tokens only; a tenant token may name only its own).
    pub tenant: Option<String>,
    /// Validate and answer without storing.
    #[serde(default)]
    pub dry_run: bool,
}

/// An apply's answer for kind `P`.
type Applied<P> = (
    StatusCode,
    Json<AppliedPipeline<<P as PipelineKind>::Resource>>,
);

/// `PUT /api/v1/pipelines/{name}`: create or update the named pipeline.
pub async fn put<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied<P>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    apply::<P>(caller, state, Some(name), query, headers, body).await
}

/// `POST /api/v1/pipelines`: create or update the pipeline named in the body.
pub async fn create<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied<P>, ApiError> {
    let Query(query) = query?;
    apply::<P>(caller, state, None, query, headers, body).await
}

async fn apply<P: PipelineKind>(
    caller: Caller,
    state: ApiState,
    url_name: Option<String>,
    query: PipelineQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Applied<P>, ApiError> {
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    let format = body_format(&headers, true)?;
    let mut value = read_body(format, &body?)?;
    let mut problems = name_from_url(url_name.as_deref(), &mut value);
    if let Value::Mapping(map) = &value
        && let Some(name) = body_name(map).or_else(|| url_name.clone())
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
    // Fill in `***` from the stored pipeline and drop what the server owns (status,
    // generation) before validating, so validation sees what will be stored.
    let mut previous = None;
    if let Ok(mut typed) = serde_yaml::from_value::<P::Resource>(value.clone())
        && let Value::Mapping(map) = &mut value
    {
        if let Some(name) = P::metadata(&typed).name.clone() {
            previous = match state.store.get_pipeline_row_of::<P>(&tenant, &name).await? {
                Some(PipelineRow::Readable(stored)) => Some(*stored),
                // A stored pipeline that cannot be read keeps no secret to restore: the
                // document sent replaces it, which is how it is repaired.
                Some(PipelineRow::Unreadable(_)) | None => None,
            };
        }
        problems.extend(restore_redacted::<P>(
            &mut typed,
            previous.as_ref().map(|p| p.pipeline.resource()),
        ));
        let typed = serde_yaml::to_value(&typed).map_err(ApiError::internal)?;
        let spec = typed.get("spec").cloned().unwrap_or(Value::Null);
        map.insert("spec".into(), spec);
        drop_server_owned(map);
    }
    let validated =
        match P::parse_document("body".to_owned(), value, &state.tenant_validation()).outcome {
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
                    .collect();
                fields.extend(problems);
                return Err(invalid(fields));
            }
        };
    check_rendered_size(&validated)?;
    super::budgets::check_pipeline(&state, &tenant, &validated).await?;
    if query.dry_run {
        if state.store.get_tenant(&tenant).await?.is_none() {
            return Err(ApiError::NotFound(format!("tenant {tenant:?} not found")));
        }
        let answer = preview::<P>(&tenant, &validated, previous.as_ref());
        return Ok((StatusCode::OK, Json(answer)));
    }
    let (stored, created) = state
        .store
        .apply_pipeline(&tenant, validated, &caller.actor())
        .await?;
    // The store writes nothing for an identical pipeline, so an unchanged update time
    // means unchanged.
    let result = match &previous {
        _ if created => ApplyResult::Created,
        Some(p) if p.updated_at_ms == stored.updated_at_ms && p.generation == stored.generation => {
            ApplyResult::Unchanged
        }
        _ => ApplyResult::Configured,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(AppliedPipeline {
            result,
            dry_run: false,
            pipeline: view(&stored),
        }),
    ))
}

/// Puts the URL's name into a document that has none; a problem when it has another.
pub(super) fn name_from_url(url_name: Option<&str>, value: &mut Value) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if let (Some(url_name), Value::Mapping(map)) = (url_name, value) {
        match body_name(map) {
            None => set_name(map, url_name),
            Some(name) if name == url_name => {}
            Some(name) => problems.push(FieldProblem {
                path: "metadata.name".to_owned(),
                message: format!("{name:?} does not match the name in the URL, {url_name:?}"),
            }),
        }
    }
    problems
}

/// Removes what the server owns from an applied document (its status and the metadata
/// the store sets), so validation sees what will be stored.
pub(super) fn drop_server_owned(document: &mut Mapping) {
    document.remove("status");
    if let Some(Value::Mapping(metadata)) = document.get_mut("metadata") {
        for owned in [
            "generation",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
        ] {
            metadata.remove(owned);
        }
    }
}

/// What applying `validated` would do, for `?dryRun=true`.
fn preview<P: PipelineKind>(
    tenant: &str,
    validated: &P,
    previous: Option<&StoredPipeline<P>>,
) -> AppliedPipeline<P::Resource> {
    let now = now_ms();
    let (result, pipeline) = match previous {
        None => (
            ApplyResult::Created,
            view_of::<P>(tenant, validated.resource(), 1, now, now, None),
        ),
        Some(p) => {
            let old = p.pipeline.resource();
            let new = validated.resource();
            let spec_changed = !P::same_spec(old, new);
            let (old, new_metadata) = (P::metadata(old), P::metadata(new));
            let changed = spec_changed
                || old.labels != new_metadata.labels
                || old.annotations != new_metadata.annotations;
            let (result, updated) = if changed {
                (ApplyResult::Configured, now)
            } else {
                (ApplyResult::Unchanged, p.updated_at_ms)
            };
            let generation = p.generation + i64::from(spec_changed);
            let view = view_of::<P>(
                tenant,
                new,
                generation,
                p.created_at_ms,
                updated,
                Some(p.status.clone()),
            );
            (result, view)
        }
    };
    AppliedPipeline {
        result,
        dry_run: true,
        pipeline,
    }
}

/// 422 when the pipeline alone renders to an agent configuration over the size limit:
/// no cluster could ever be sent it (a pipeline that fits, but not together with the
/// others a cluster selects, gets the `ConfigTooLarge` condition instead).
pub(super) fn check_rendered_size<P: PipelineKind>(validated: &P) -> Result<(), ApiError> {
    let alone = P::template(std::slice::from_ref(validated)).render(&BTreeMap::new());
    check_config_size(alone.body.len()).map_err(|too_large| {
        invalid(vec![FieldProblem {
            path: "spec".to_owned(),
            message: format!(
                "{too_large} with this pipeline alone; split it into smaller pipelines"
            ),
        }])
    })
}

fn invalid(fields: Vec<FieldProblem>) -> ApiError {
    ApiError::Invalid {
        message: "the pipeline is invalid".to_owned(),
        fields,
    }
}

/// The body as a YAML value (JSON is read as JSON first, for precise syntax errors).
pub(super) fn read_body(format: BodyFormat, body: &[u8]) -> Result<Value, ApiError> {
    match format {
        BodyFormat::Json => {
            let json: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            serde_yaml::to_value(json).map_err(ApiError::internal)
        }
        BodyFormat::Yaml => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".to_owned()))?;
            kaas_pipeline::yaml::bounded_value(
                serde_yaml::Deserializer::from_str(text),
                kaas_pipeline::yaml::MAX_EXPANDED_DOCUMENT_BYTES,
            )
            .map_err(|e| {
                ApiError::BadRequest(format!("the body is not one valid YAML document: {e}"))
            })
        }
    }
}

pub(super) fn body_name(map: &Mapping) -> Option<String> {
    map.get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

fn set_name(map: &mut Mapping, name: &str) {
    match map.get_mut("metadata") {
        Some(Value::Mapping(metadata)) => {
            metadata.insert("name".into(), name.into());
        }
        Some(_) => {} // not an object: validation reports it
        None => {
            let mut metadata = Mapping::new();
            metadata.insert("name".into(), name.into());
            map.insert("metadata".into(), Value::Mapping(metadata));
        }
    }
}

/// The answer for a stored pipeline, secrets redacted.
pub fn view<P: PipelineKind>(stored: &StoredPipeline<P>) -> PipelineView<P::Resource> {
    PipelineView {
        tenant: stored.tenant.clone(),
        name: stored.name().to_owned(),
        generation: stored.generation,
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.updated_at_ms,
        resource: stored.masked_resource(),
    }
}

fn view_of<P: PipelineKind>(
    tenant: &str,
    resource: &P::Resource,
    generation: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    status: Option<MetricPipelineStatus>,
) -> PipelineView<P::Resource> {
    let mut resource = resource.clone();
    redact::<P>(&mut resource);
    // What the store keeps of the metadata (see `StoredPipeline::masked_resource`).
    let metadata = P::metadata_mut(&mut resource);
    let given = std::mem::take(metadata);
    metadata.name = given.name;
    metadata.labels = given.labels.filter(|l| !l.is_empty());
    metadata.annotations = given.annotations.filter(|a| !a.is_empty());
    metadata.generation = Some(generation);
    let name = metadata.name.clone().unwrap_or_default();
    P::set_status(&mut resource, Some(status.unwrap_or_default()));
    PipelineView {
        tenant: tenant.to_owned(),
        name,
        generation,
        created_at_ms,
        updated_at_ms,
        resource,
    }
}

/// `GET /api/v1/pipelines`.
pub async fn list<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
) -> Result<Json<PipelineList<P::Resource>>, ApiError> {
    let Query(query) = query?;
    let scope = caller.list_scope(query.tenant)?;
    // Row by row: a pipeline the observer cannot read is shown as stored, secrets as
    // `***`, and breaks nothing else (issue 13, finding 10).
    let items = state
        .store
        .list_pipeline_rows_of::<P>(scope.as_deref())
        .await?
        .iter()
        .filter_map(|row| match row {
            PipelineRow::Readable(stored) => Some(view(stored)),
            PipelineRow::Unreadable(unreadable) => unreadable_view::<P>(unreadable),
        })
        .collect();
    Ok(Json(PipelineList { items }))
}

/// The answer for a stored pipeline that cannot be read, if its document parses.
fn unreadable_view<P: PipelineKind>(
    unreadable: &UnreadablePipeline<P::Resource>,
) -> Option<PipelineView<P::Resource>> {
    unreadable.masked.as_ref().map(|resource| {
        view_of::<P>(
            &unreadable.tenant,
            resource,
            unreadable.generation,
            unreadable.created_at_ms,
            unreadable.updated_at_ms,
            Some(unreadable.status.clone()),
        )
    })
}

/// `GET /api/v1/pipelines/{name}`.
pub async fn get<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
) -> Result<Json<PipelineView<P::Resource>>, ApiError> {
    match find::<P>(&caller, &state, name, query).await? {
        PipelineRow::Readable(stored) => Ok(Json(view(&stored))),
        PipelineRow::Unreadable(unreadable) => {
            unreadable_view::<P>(&unreadable).map(Json).ok_or_else(|| {
                ApiError::Conflict(format!(
                    "the stored pipeline cannot be read ({}); apply it again or delete it",
                    unreadable.reason
                ))
            })
        }
    }
}

/// `GET /api/v1/pipelines/{name}/status`.
pub async fn status<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
) -> Result<Json<PipelineStatusView>, ApiError> {
    let row = find::<P>(&caller, &state, name, query).await?;
    let clusters = instances_by_cluster::<P>(&state, row.tenant(), row.name()).await?;
    Ok(Json(PipelineStatusView {
        tenant: row.tenant().to_owned(),
        kind: P::KIND.to_owned(),
        name: row.name().to_owned(),
        generation: row.generation(),
        status: row.status().clone(),
        clusters,
    }))
}

/// The pipeline's health on each of the tenant's live clusters whose instances report
/// on it, by cluster name: the cluster view's `pipelineHealth` entry for it.
async fn instances_by_cluster<P: PipelineKind>(
    state: &ApiState,
    tenant: &str,
    name: &str,
) -> Result<Vec<PipelineHealthView>, ApiError> {
    let clusters: Vec<_> = (state.store.list_clusters(Some(tenant)).await?)
        .into_iter()
        .filter(|cluster| !cluster.state.is_tombstone())
        .collect();
    let ids: Vec<String> = clusters.iter().map(|c| c.id.clone()).collect();
    let mut live = state.store.instance_health_of(&ids).await?;
    Ok(clusters
        .into_iter()
        .filter_map(|cluster| {
            let pipelines = live.remove(&cluster.id)?;
            let instances = (pipelines.iter()).find(|p| p.kind == P::KIND && p.pipeline == name)?;
            Some(super::clusters::pipeline_health_view(
                Some(cluster.name),
                instances,
            ))
        })
        .collect())
}

/// `DELETE /api/v1/pipelines/{name}`.
pub async fn delete<P: PipelineKind>(
    caller: Caller,
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let row = find::<P>(&caller, &state, name, query).await?;
    state
        .store
        .delete_pipeline_of::<P>(row.tenant(), row.name(), &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find<P: PipelineKind>(
    caller: &Caller,
    state: &ApiState,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<PipelineQuery>, QueryRejection>,
) -> Result<PipelineRow<P>, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    let tenant = caller.target_tenant(query.tenant, "?tenant=")?;
    state
        .store
        .get_pipeline_row_of::<P>(&tenant, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{} {name:?} not found", P::KIND)))
}
