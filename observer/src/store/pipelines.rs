//! Pipelines: the tenants' pipeline documents of every kind (`MetricPipeline`,
//! `LogPipeline`) with their inline secrets sealed (table `pipelines`, keyed by tenant,
//! kind and name), their generations and the status computed from agent reports. Every
//! operation is generic over the [`PipelineKind`]; the unsuffixed methods are those of
//! metric pipelines, the `_of` ones name the kind. See "Hashed and encrypted" and
//! "Generations" in the store's documentation; rows that cannot be read are
//! [`pipeline_rows`](super::pipeline_rows).

use std::collections::{BTreeMap, BTreeSet};

use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::secret::SecretString;
use kaas_pipeline::status::MetricPipelineStatus;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::entities::pipelines;
use super::mutation::Mutation;
use super::pipeline_kind::PipelineKind;
use super::{
    Actor, Change, Cluster, Store, StoreError, insert_error, not_found, now_ms, pipeline_rows,
    quotas,
};
use crate::secrets::{SecretError, SecretOwner};

/// What API responses show instead of an inline secret value, and what an update may
/// send to keep the stored value.
pub const MASKED_SECRET: &str = "***";

/// A pipeline of kind `P` as stored. `pipeline` holds secrets in plaintext: render it
/// for an agent, but answer API requests with [`StoredPipeline::masked_resource`].
#[derive(Clone, Debug)]
pub struct StoredPipeline<P: PipelineKind = ValidatedPipeline> {
    /// The owning tenant.
    pub tenant: String,
    /// The validated pipeline, inline secrets in plaintext.
    pub pipeline: P,
    /// Starts at 1, +1 for every spec change.
    pub generation: i64,
    /// The status the observer computed from agent reports.
    pub status: MetricPipelineStatus,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last spec or metadata change.
    pub updated_at_ms: i64,
}

impl<P: PipelineKind> StoredPipeline<P> {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        self.pipeline.name()
    }

    /// The resource as the API shows it: inline secret values replaced by `***`,
    /// `metadata.generation` and `status` filled in.
    pub fn masked_resource(&self) -> P::Resource {
        let mut resource = self.pipeline.resource().clone();
        mask_secrets::<P>(&mut resource);
        P::metadata_mut(&mut resource).generation = Some(self.generation);
        P::set_status(&mut resource, Some(self.status.clone()));
        resource
    }
}

/// What [`Store::write_pipeline`] did.
pub(super) struct WrittenPipeline<P: PipelineKind> {
    /// The pipeline as stored now.
    pub stored: StoredPipeline<P>,
    /// Whether it was created.
    pub created: bool,
    /// What changed, `None` when nothing was written.
    pub change: Option<Change>,
}

impl<P: PipelineKind> WrittenPipeline<P> {
    fn new(stored: StoredPipeline<P>, created: bool, change: Option<Change>) -> Self {
        Self {
            stored,
            created,
            change,
        }
    }
}

/// A pipeline without its document: see [`Store::pipeline_summaries`].
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSummary {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's kind (`MetricPipeline`, `LogPipeline`, `TracePipeline`).
    pub kind: String,
    /// The pipeline's name.
    pub name: String,
    /// Its spec generation.
    pub generation: i64,
    /// Its status as last computed.
    pub status: MetricPipelineStatus,
}

/// Replaces every inline secret value of `resource` with [`MASKED_SECRET`].
pub fn mask_secrets<P: PipelineKind>(resource: &mut P::Resource) {
    for (_, value) in P::inline_secrets_mut(resource) {
        *value = SecretString::new(MASKED_SECRET);
    }
}

impl Store {
    /// Replaces every `***` inline value of `resource` with the value stored for the
    /// same field of the tenant's pipeline of that name. The API calls this before
    /// validating an update (validation would refuse `***` as PEM, for example);
    /// [`Store::apply_pipeline`] does it again, so calling it is optional otherwise.
    /// [`StoreError::Conflict`] names a field sent as `***` that has no stored value.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn restore_masked_secrets<P: PipelineKind>(
        &self,
        tenant: &str,
        resource: &mut P::Resource,
    ) -> Result<(), StoreError> {
        let name = P::metadata(resource).name.clone().unwrap_or_default();
        let stored = pipelines::Entity::find_by_id(key::<P>(tenant, &name))
            .one(self.reader())
            .await?
            // A stored document that cannot be opened keeps no value: `***` is refused
            // and the real value must be sent, which is how such a pipeline is repaired.
            .and_then(|row| self.open_document::<P>(&row).ok());
        restore_masked::<P>(resource, stored.as_ref())
    }

    /// Creates or updates a pipeline of `tenant`. Inline secret values are sealed
    /// before they are written; `***` keeps the stored value of that field. The
    /// generation grows only when the spec changed. Returns the stored pipeline and
    /// whether it was created. A new pipeline beyond the tenant's quota is
    /// [`StoreError::QuotaExceeded`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_pipeline<P: PipelineKind>(
        &self,
        tenant: &str,
        pipeline: P,
        actor: &Actor,
    ) -> Result<(StoredPipeline<P>, bool), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        quotas::lock_tenant(transaction, tenant).await?;
        super::template_instances::refuse_rendered::<P>(transaction, tenant, pipeline.name())
            .await?;
        // Boxed: the write's future holds the pipeline more than once, and debug builds
        // of callers that await several applies would otherwise overflow a test thread's
        // stack.
        let written = Box::pin(self.write_pipeline(&mutation, tenant, pipeline, actor)).await?;
        if let Some(change) = written.change {
            mutation.commit(vec![change]).await?;
        }
        Ok((written.stored, written.created))
    }

    /// Writes a pipeline of `tenant` in `mutation`, whose transaction holds the tenant's
    /// lock: what [`Store::apply_pipeline`] does, and what a template instance's
    /// rendering does for its pipeline.
    pub(super) async fn write_pipeline<P: PipelineKind>(
        &self,
        mutation: &Mutation<'_>,
        tenant: &str,
        pipeline: P,
        actor: &Actor,
    ) -> Result<WrittenPipeline<P>, StoreError> {
        let name = pipeline.name().to_owned();
        let mut resource = normalize::<P>(pipeline.into_resource());
        let transaction = mutation.transaction();
        let existing = pipelines::Entity::find_by_id(key::<P>(tenant, &name))
            .one(transaction)
            .await?;
        // An unreadable stored document (see `pipeline_rows`) is replaced as if absent.
        let stored = existing
            .as_ref()
            .and_then(|row| self.open_document::<P>(row).ok());
        restore_masked::<P>(&mut resource, stored.as_ref())?;
        let validated =
            P::validate(&resource, &stored_pipeline_validation()).map_err(|errors| {
                StoreError::Conflict(format!(
                    "{} {name:?} is invalid with the stored secret values: {errors}",
                    P::KIND
                ))
            })?;
        let now = now_ms();
        let change = Change::Pipeline {
            tenant: tenant.to_owned(),
            name: name.clone(),
        };
        match existing {
            Some(row) => {
                let spec_changed = stored.as_ref().is_none_or(|s| !P::same_spec(s, &resource));
                if !spec_changed
                    && stored
                        .as_ref()
                        .is_some_and(|s| P::metadata(s) == P::metadata(&resource))
                {
                    let stored = self.stored_pipeline(row, validated)?;
                    return Ok(WrittenPipeline::new(stored, false, None));
                }
                let generation = row.generation + i64::from(spec_changed);
                let mut active = row.into_active_model();
                active.spec = Set(self.seal_document::<P>(tenant, &resource)?);
                active.generation = Set(generation);
                active.updated_at_ms = Set(now);
                let row = active.update(transaction).await?;
                mutation
                    .audit(actor, "update", P::OBJECT, Some(tenant), &name)
                    .await?;
                let stored = self.stored_pipeline(row, validated)?;
                Ok(WrittenPipeline::new(stored, false, Some(change)))
            }
            None => {
                let quota = quotas::Quota::Pipelines(P::KIND);
                quotas::enforce(transaction, tenant, quota).await?;
                let status = serde_json::to_value(MetricPipelineStatus::default())
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
                let row = pipelines::Model {
                    tenant: tenant.to_owned(),
                    kind: P::KIND.to_owned(),
                    name: name.clone(),
                    spec: self.seal_document::<P>(tenant, &resource)?,
                    generation: 1,
                    status,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                pipelines::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(transaction)
                    .await
                    .map_err(|e| insert_error(e, P::OBJECT, &format!("{tenant}/{name}")))?;
                mutation
                    .audit(actor, "create", P::OBJECT, Some(tenant), &name)
                    .await?;
                let stored = self.stored_pipeline(row, validated)?;
                Ok(WrittenPipeline::new(stored, true, Some(change)))
            }
        }
    }

    /// One metric pipeline, secrets in plaintext.
    pub async fn get_pipeline(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredPipeline>, StoreError> {
        self.get_pipeline_of(tenant, name).await
    }

    /// One pipeline of kind `P`, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_pipeline_of<P: PipelineKind>(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredPipeline<P>>, StoreError> {
        pipelines::Entity::find_by_id(key::<P>(tenant, name))
            .one(self.reader())
            .await?
            .map(|row| self.load_pipeline::<P>(row))
            .transpose()
    }

    /// The pipelines the observer can read, of one tenant or all for `None`, by tenant
    /// and name. An unreadable row runs nowhere and is left out here (its own status says
    /// why, see [`pipeline_rows`]), so one such row never fails what reads the others:
    /// renders, budget checks.
    pub async fn list_pipelines(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredPipeline>, StoreError> {
        self.list_pipelines_of(tenant).await
    }

    /// [`Store::list_pipelines`] of kind `P`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_pipelines_of<P: PipelineKind>(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredPipeline<P>>, StoreError> {
        Ok(self
            .list_pipeline_rows_of::<P>(tenant)
            .await?
            .into_iter()
            .filter_map(|row| match row {
                pipeline_rows::PipelineRow::Readable(stored) => Some(*stored),
                pipeline_rows::PipelineRow::Unreadable(_) => None,
            })
            .collect())
    }

    /// Every metric pipeline's tenant, name, generation and status, by tenant and name:
    /// what the fleet metrics show, in one query that neither reads nor opens the
    /// documents. (Log pipelines get their own series with the log runtime.)
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipeline_summaries(&self) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(None, Some(kaas_pipeline::KIND)).await
    }

    /// The summaries of every pipeline of one tenant, of every kind, by kind and name.
    pub async fn pipeline_summaries_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(Some(tenant), None).await
    }

    pub(super) async fn summaries(
        &self,
        tenant: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        let mut query = pipelines::Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(pipelines::Column::Tenant.eq(tenant));
        }
        if let Some(kind) = kind {
            query = query.filter(pipelines::Column::Kind.eq(kind));
        }
        let rows: Vec<(String, String, String, i64, serde_json::Value)> = query
            .select_only()
            .column(pipelines::Column::Tenant)
            .column(pipelines::Column::Kind)
            .column(pipelines::Column::Name)
            .column(pipelines::Column::Generation)
            .column(pipelines::Column::Status)
            .order_by_asc(pipelines::Column::Tenant)
            .order_by_asc(pipelines::Column::Kind)
            .order_by_asc(pipelines::Column::Name)
            .into_tuple()
            .all(self.reader())
            .await?;
        rows.into_iter()
            .map(|(tenant, kind, name, generation, status)| {
                let status = serde_json::from_value(status).map_err(|e| {
                    StoreError::Corrupt(format!("status of {kind} {tenant}/{name}: {e}"))
                })?;
                Ok(PipelineSummary {
                    tenant,
                    kind,
                    name,
                    generation,
                    status,
                })
            })
            .collect()
    }

    /// Deletes a metric pipeline.
    pub async fn delete_pipeline(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        self.delete_pipeline_of::<ValidatedPipeline>(tenant, name, actor)
            .await
    }

    /// Deletes a pipeline of kind `P`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_pipeline_of<P: PipelineKind>(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        super::template_instances::refuse_rendered::<P>(transaction, tenant, name).await?;
        let deleted = pipelines::Entity::delete_by_id(key::<P>(tenant, name))
            .exec(transaction)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(not_found(P::OBJECT, &format!("{tenant}/{name}")));
        }
        mutation
            .audit(actor, "delete", P::OBJECT, Some(tenant), name)
            .await?;
        mutation
            .commit(vec![Change::Pipeline {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }])
            .await
    }

    /// Stores a metric pipeline's status (no-op if unchanged).
    pub async fn set_pipeline_status(
        &self,
        tenant: &str,
        name: &str,
        status: MetricPipelineStatus,
    ) -> Result<(), StoreError> {
        self.set_pipeline_status_of::<ValidatedPipeline>(tenant, name, status)
            .await
    }

    /// Stores the status of a pipeline of kind `P` (no-op if unchanged).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_pipeline_status_of<P: PipelineKind>(
        &self,
        tenant: &str,
        name: &str,
        status: MetricPipelineStatus,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_value(&status)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = pipelines::Entity::find_by_id(key::<P>(tenant, name))
            .one(transaction)
            .await?
            .ok_or_else(|| not_found(P::OBJECT, &format!("{tenant}/{name}")))?;
        if row.status == json {
            return Ok(());
        }
        let mut row = row.into_active_model();
        row.status = Set(json);
        row.update(transaction).await?;
        mutation
            .commit(vec![Change::PipelineStatus {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }])
            .await
    }

    /// The pipelines of kind `P` a cluster runs: its tenant's pipelines whose cluster
    /// selector matches its labels, by name, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipelines_for_cluster<P: PipelineKind>(
        &self,
        cluster: &Cluster,
    ) -> Result<Vec<P>, StoreError> {
        Ok(self
            .list_pipelines_of::<P>(Some(&cluster.tenant))
            .await?
            .into_iter()
            .map(|stored| stored.pipeline)
            .filter(|pipeline| pipeline.cluster_selector().matches(&cluster.labels))
            .collect())
    }

    /// The document as stored: every inline secret value sealed for `tenant`, this
    /// pipeline (kind and name) and its field (see [`secret_field`]).
    pub(super) fn seal_document<P: PipelineKind>(
        &self,
        tenant: &str,
        resource: &P::Resource,
    ) -> Result<serde_json::Value, StoreError> {
        let mut sealed = resource.clone();
        let name = P::metadata(&sealed).name.clone().unwrap_or_default();
        for (path, value) in P::inline_secrets_mut(&mut sealed) {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner::<P>(tenant, &name, &field);
            *value = SecretString::new(self.inner.secrets.seal(value.expose(), &owner)?);
        }
        serde_json::to_value(&sealed)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a pipeline: {e}")))
    }

    /// The stored document with its secrets opened.
    pub(super) fn open_document<P: PipelineKind>(
        &self,
        row: &pipelines::Model,
    ) -> Result<P::Resource, StoreError> {
        let mut resource: P::Resource = serde_json::from_value(row.spec.clone()).map_err(|e| {
            StoreError::Corrupt(format!("{} {}/{}: {e}", P::KIND, row.tenant, row.name))
        })?;
        for (path, value) in P::inline_secrets_mut(&mut resource) {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner::<P>(&row.tenant, &row.name, &field);
            let plaintext =
                self.inner
                    .secrets
                    .open(value.expose(), &owner)
                    .map_err(|e| match e {
                        SecretError::Format => StoreError::Corrupt(format!(
                            "pipeline {}/{}: {field} is not sealed",
                            row.tenant, row.name
                        )),
                        source => StoreError::SecretUnreadable {
                            pipeline: format!("{}/{}", row.tenant, row.name),
                            field,
                            source,
                        },
                    })?;
            *value = SecretString::new(plaintext);
        }
        Ok(resource)
    }

    pub(super) fn load_pipeline<P: PipelineKind>(
        &self,
        row: pipelines::Model,
    ) -> Result<StoredPipeline<P>, StoreError> {
        let resource = self.open_document::<P>(&row)?;
        let validated =
            P::validate(&resource, &stored_pipeline_validation()).map_err(|errors| {
                StoreError::Corrupt(format!(
                    "stored {} {}/{} no longer validates: {errors}",
                    P::KIND,
                    row.tenant,
                    row.name
                ))
            })?;
        self.stored_pipeline(row, validated)
    }

    pub(super) fn stored_pipeline<P: PipelineKind>(
        &self,
        row: pipelines::Model,
        pipeline: P,
    ) -> Result<StoredPipeline<P>, StoreError> {
        let status = serde_json::from_value(row.status).map_err(|e| {
            StoreError::Corrupt(format!(
                "status of pipeline {}/{}: {e}",
                row.tenant, row.name
            ))
        })?;
        Ok(StoredPipeline {
            tenant: row.tenant,
            pipeline,
            generation: row.generation,
            status,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }
}

/// The field path of an inline secret, from the spec root: `spec.output.<path>`.
pub(super) fn secret_field(output_path: &str) -> String {
    format!("spec.output.{output_path}")
}

/// The key of a pipeline of kind `P` in the `pipelines` table.
pub(super) fn key<P: PipelineKind>(tenant: &str, name: &str) -> (String, String, String) {
    (tenant.to_owned(), P::KIND.to_owned(), name.to_owned())
}

/// What an inline secret of a pipeline is sealed for: its tenant, kind, name and field,
/// so a sealed value copied to a pipeline of another kind does not open.
pub(super) fn pipeline_secret_owner<'a, P: PipelineKind>(
    tenant: &'a str,
    name: &'a str,
    field: &'a str,
) -> SecretOwner<'a> {
    SecretOwner {
        tenant,
        kind: P::OBJECT,
        name,
        field,
    }
}

/// How stored pipelines are validated again once their secrets are opened: as pipelines
/// the observer distributes, so no stored row can carry what an agent in observer mode
/// refuses (`valueFrom.file`). The provider's policy (Secret namespaces, tenancy
/// headers) is the API's to check when a pipeline is applied.
fn stored_pipeline_validation() -> kaas_pipeline::ValidationContext {
    kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::unrestricted())
}

/// Keeps what identifies and describes a pipeline (name, labels, annotations) and its
/// spec; drops server-set metadata and status.
fn normalize<P: PipelineKind>(mut resource: P::Resource) -> P::Resource {
    let metadata = P::metadata_mut(&mut resource);
    let mut given = std::mem::take(metadata);
    metadata.name = given.name.take();
    metadata.labels = given.labels.take().filter(|labels| !labels.is_empty());
    metadata.annotations = given
        .annotations
        .take()
        .filter(|annotations| !annotations.is_empty());
    P::set_status(&mut resource, None);
    resource
}

/// Replaces `***` values by the stored value of the same field path.
fn restore_masked<P: PipelineKind>(
    resource: &mut P::Resource,
    stored: Option<&P::Resource>,
) -> Result<(), StoreError> {
    let mut stored_values: BTreeMap<String, String> = match stored {
        None => BTreeMap::new(),
        Some(stored) => {
            let mut stored = stored.clone();
            P::inline_secrets_mut(&mut stored)
                .into_iter()
                .map(|(path, value)| (path, value.expose().to_owned()))
                .collect()
        }
    };
    let mut missing = BTreeSet::new();
    for (path, value) in P::inline_secrets_mut(resource) {
        if value.expose() != MASKED_SECRET {
            continue;
        }
        match stored_values.remove(&path) {
            Some(stored) if stored != MASKED_SECRET => *value = SecretString::new(stored),
            _ => {
                missing.insert(format!("spec.output.{path}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "{} {} \"***\", which keeps a stored secret, but no value is stored for {}; \
             send the real value",
            missing.iter().cloned().collect::<Vec<_>>().join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
        )))
    }
}
