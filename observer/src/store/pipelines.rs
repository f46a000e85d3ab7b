//! Pipelines: the tenants' `MetricPipeline` documents with their inline secrets sealed
//! (table `pipelines`), their generations and the status computed from agent reports.
//! See "Hashed and encrypted" and "Generations" in the store's documentation; rows that
//! cannot be read are [`pipeline_rows`](super::pipeline_rows).

use std::collections::{BTreeMap, BTreeSet};

use kaas_pipeline::secret::SecretString;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::{MetricPipeline, ValidatedPipeline};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::entities::pipelines;
use super::{
    Actor, Change, Cluster, Store, StoreError, insert_error, kinds, not_found, now_ms,
    pipeline_rows, quotas,
};
use crate::secrets::{SecretError, SecretOwner};

/// What API responses show instead of an inline secret value, and what an update may
/// send to keep the stored value.
pub const MASKED_SECRET: &str = "***";

/// A pipeline as stored. `pipeline` holds secrets in plaintext: render it for an agent,
/// but answer API requests with [`StoredPipeline::masked_resource`].
#[derive(Clone, Debug)]
pub struct StoredPipeline {
    /// The owning tenant.
    pub tenant: String,
    /// The validated pipeline, inline secrets in plaintext.
    pub pipeline: ValidatedPipeline,
    /// Starts at 1, +1 for every spec change.
    pub generation: i64,
    /// The status the observer computed from agent reports.
    pub status: MetricPipelineStatus,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last spec or metadata change.
    pub updated_at_ms: i64,
}

impl StoredPipeline {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        self.pipeline.name()
    }

    /// The resource as the API shows it: inline secret values replaced by `***`,
    /// `metadata.generation` and `status` filled in.
    pub fn masked_resource(&self) -> MetricPipeline {
        let mut resource = self.pipeline.resource().clone();
        mask_secrets(&mut resource);
        resource.metadata.generation = Some(self.generation);
        resource.status = Some(self.status.clone());
        resource
    }
}

/// A pipeline without its document: see [`Store::pipeline_summaries`].
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineSummary {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's name.
    pub name: String,
    /// Its spec generation.
    pub generation: i64,
    /// Its status as last computed.
    pub status: MetricPipelineStatus,
}

/// Replaces every inline secret value of `resource` with [`MASKED_SECRET`].
pub fn mask_secrets(resource: &mut MetricPipeline) {
    for (_, value) in resource.spec.output.inline_secrets_mut() {
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
    pub async fn restore_masked_secrets(
        &self,
        tenant: &str,
        resource: &mut MetricPipeline,
    ) -> Result<(), StoreError> {
        let name = resource.metadata.name.clone().unwrap_or_default();
        let stored = pipelines::Entity::find_by_id((tenant.to_owned(), name))
            .one(self.reader())
            .await?
            // A stored document that cannot be opened keeps no value: `***` is refused
            // and the real value must be sent, which is how such a pipeline is repaired.
            .and_then(|row| self.open_document(&row).ok());
        restore_masked(resource, stored.as_ref())
    }

    /// Creates or updates a pipeline of `tenant`. Inline secret values are sealed
    /// before they are written; `***` keeps the stored value of that field. The
    /// generation grows only when the spec changed. Returns the stored pipeline and
    /// whether it was created. A new pipeline beyond the tenant's quota is
    /// [`StoreError::QuotaExceeded`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_pipeline(
        &self,
        tenant: &str,
        pipeline: ValidatedPipeline,
        actor: &Actor,
    ) -> Result<(StoredPipeline, bool), StoreError> {
        let name = pipeline.name().to_owned();
        let mut resource = normalize(pipeline.into_resource());
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        quotas::lock_tenant(transaction, tenant).await?;
        let existing = pipelines::Entity::find_by_id((tenant.to_owned(), name.clone()))
            .one(transaction)
            .await?;
        // An unreadable stored document (see `pipeline_rows`) is replaced as if absent.
        let stored = existing
            .as_ref()
            .and_then(|row| self.open_document(row).ok());
        restore_masked(&mut resource, stored.as_ref())?;
        let validated = kaas_pipeline::validate(&resource, &stored_pipeline_validation()).map_err(
            |errors| {
                StoreError::Conflict(format!(
                    "pipeline {name:?} is invalid with the stored secret values: {errors}"
                ))
            },
        )?;
        let now = now_ms();
        let change = Change::Pipeline {
            tenant: tenant.to_owned(),
            name: name.clone(),
        };
        let (result, created) = match existing {
            Some(row) => {
                let spec_changed = stored.as_ref().is_none_or(|s| s.spec != resource.spec);
                if !spec_changed
                    && stored
                        .as_ref()
                        .is_some_and(|s| s.metadata == resource.metadata)
                {
                    return Ok((self.stored_pipeline(row, validated)?, false));
                }
                let generation = row.generation + i64::from(spec_changed);
                let mut active = row.into_active_model();
                active.spec = Set(self.seal_document(tenant, &resource)?);
                active.generation = Set(generation);
                active.updated_at_ms = Set(now);
                let row = active.update(transaction).await?;
                mutation
                    .audit(actor, "update", kinds::PIPELINE, Some(tenant), &name)
                    .await?;
                (self.stored_pipeline(row, validated)?, false)
            }
            None => {
                let quota = quotas::Quota::Pipelines(kaas_pipeline::KIND);
                quotas::enforce(transaction, tenant, quota).await?;
                let status = serde_json::to_value(MetricPipelineStatus::default())
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
                let row = pipelines::Model {
                    tenant: tenant.to_owned(),
                    name: name.clone(),
                    spec: self.seal_document(tenant, &resource)?,
                    generation: 1,
                    status,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                pipelines::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(transaction)
                    .await
                    .map_err(|e| insert_error(e, kinds::PIPELINE, &format!("{tenant}/{name}")))?;
                mutation
                    .audit(actor, "create", kinds::PIPELINE, Some(tenant), &name)
                    .await?;
                (self.stored_pipeline(row, validated)?, true)
            }
        };
        mutation.commit(vec![change]).await?;
        Ok((result, created))
    }

    /// One pipeline, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_pipeline(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredPipeline>, StoreError> {
        pipelines::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(self.reader())
            .await?
            .map(|row| self.load_pipeline(row))
            .transpose()
    }

    /// The pipelines the observer can read, of one tenant or all for `None`, by tenant
    /// and name. An unreadable row runs nowhere and is left out here (its own status says
    /// why, see [`pipeline_rows`]), so one such row never fails what reads the others:
    /// renders, budget checks.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_pipelines(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredPipeline>, StoreError> {
        Ok(self
            .list_pipeline_rows(tenant)
            .await?
            .into_iter()
            .filter_map(|row| match row {
                pipeline_rows::PipelineRow::Readable(stored) => Some(*stored),
                pipeline_rows::PipelineRow::Unreadable(_) => None,
            })
            .collect())
    }

    /// Every pipeline's tenant, name, generation and status, by tenant and name: what
    /// the fleet metrics show, in one query that neither reads nor opens the documents.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipeline_summaries(&self) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(None).await
    }

    /// [`Store::pipeline_summaries`] of one tenant.
    pub async fn pipeline_summaries_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        self.summaries(Some(tenant)).await
    }

    pub(super) async fn summaries(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<PipelineSummary>, StoreError> {
        let mut query = pipelines::Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(pipelines::Column::Tenant.eq(tenant));
        }
        let rows: Vec<(String, String, i64, serde_json::Value)> = query
            .select_only()
            .column(pipelines::Column::Tenant)
            .column(pipelines::Column::Name)
            .column(pipelines::Column::Generation)
            .column(pipelines::Column::Status)
            .order_by_asc(pipelines::Column::Tenant)
            .order_by_asc(pipelines::Column::Name)
            .into_tuple()
            .all(self.reader())
            .await?;
        rows.into_iter()
            .map(|(tenant, name, generation, status)| {
                let status = serde_json::from_value(status).map_err(|e| {
                    StoreError::Corrupt(format!("status of pipeline {tenant}/{name}: {e}"))
                })?;
                Ok(PipelineSummary {
                    tenant,
                    name,
                    generation,
                    status,
                })
            })
            .collect()
    }

    /// Deletes a pipeline.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn delete_pipeline(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let deleted = pipelines::Entity::delete_by_id((tenant.to_owned(), name.to_owned()))
            .exec(transaction)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(not_found(kinds::PIPELINE, &format!("{tenant}/{name}")));
        }
        mutation
            .audit(actor, "delete", kinds::PIPELINE, Some(tenant), name)
            .await?;
        mutation
            .commit(vec![Change::Pipeline {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }])
            .await
    }

    /// Stores a pipeline's status (no-op if unchanged).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn set_pipeline_status(
        &self,
        tenant: &str,
        name: &str,
        status: MetricPipelineStatus,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_value(&status)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a status: {e}")))?;
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = pipelines::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(transaction)
            .await?
            .ok_or_else(|| not_found(kinds::PIPELINE, &format!("{tenant}/{name}")))?;
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

    /// The pipelines a cluster runs: its tenant's pipelines whose cluster selector
    /// matches its labels, by name, secrets in plaintext.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn pipelines_for_cluster(
        &self,
        cluster: &Cluster,
    ) -> Result<Vec<ValidatedPipeline>, StoreError> {
        Ok(self
            .list_pipelines(Some(&cluster.tenant))
            .await?
            .into_iter()
            .map(|stored| stored.pipeline)
            .filter(|pipeline| pipeline.spec().cluster_selector.matches(&cluster.labels))
            .collect())
    }

    /// The document as stored: every inline secret value sealed for `tenant`, this
    /// pipeline and its field (see [`secret_field`]).
    pub(super) fn seal_document(
        &self,
        tenant: &str,
        resource: &MetricPipeline,
    ) -> Result<serde_json::Value, StoreError> {
        let mut sealed = resource.clone();
        let name = sealed.metadata.name.clone().unwrap_or_default();
        for (path, value) in sealed.spec.output.inline_secrets_mut() {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner(tenant, &name, &field);
            *value = SecretString::new(self.inner.secrets.seal(value.expose(), &owner)?);
        }
        serde_json::to_value(&sealed)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a pipeline: {e}")))
    }

    /// The stored document with its secrets opened.
    pub(super) fn open_document(
        &self,
        row: &pipelines::Model,
    ) -> Result<MetricPipeline, StoreError> {
        let mut resource: MetricPipeline =
            serde_json::from_value(row.spec.clone()).map_err(|e| {
                StoreError::Corrupt(format!("pipeline {}/{}: {e}", row.tenant, row.name))
            })?;
        for (path, value) in resource.spec.output.inline_secrets_mut() {
            let field = secret_field(&path);
            let owner = pipeline_secret_owner(&row.tenant, &row.name, &field);
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

    pub(super) fn load_pipeline(
        &self,
        row: pipelines::Model,
    ) -> Result<StoredPipeline, StoreError> {
        let resource = self.open_document(&row)?;
        let validated = kaas_pipeline::validate(&resource, &stored_pipeline_validation()).map_err(
            |errors| {
                StoreError::Corrupt(format!(
                    "stored pipeline {}/{} no longer validates: {errors}",
                    row.tenant, row.name
                ))
            },
        )?;
        self.stored_pipeline(row, validated)
    }

    pub(super) fn stored_pipeline(
        &self,
        row: pipelines::Model,
        pipeline: ValidatedPipeline,
    ) -> Result<StoredPipeline, StoreError> {
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

/// What an inline secret of a pipeline is sealed for.
pub(super) fn pipeline_secret_owner<'a>(
    tenant: &'a str,
    name: &'a str,
    field: &'a str,
) -> SecretOwner<'a> {
    SecretOwner {
        tenant,
        kind: kinds::PIPELINE,
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
fn normalize(mut resource: MetricPipeline) -> MetricPipeline {
    let mut given = std::mem::take(&mut resource.metadata);
    resource.metadata.name = given.name.take();
    resource.metadata.labels = given.labels.take().filter(|labels| !labels.is_empty());
    resource.metadata.annotations = given
        .annotations
        .take()
        .filter(|annotations| !annotations.is_empty());
    resource.status = None;
    resource
}

/// Replaces `***` values by the stored value of the same field path.
fn restore_masked(
    resource: &mut MetricPipeline,
    stored: Option<&MetricPipeline>,
) -> Result<(), StoreError> {
    let mut stored_values: BTreeMap<String, String> = match stored {
        None => BTreeMap::new(),
        Some(stored) => {
            let mut stored = stored.clone();
            stored
                .spec
                .output
                .inline_secrets_mut()
                .into_iter()
                .map(|(path, value)| (path, value.expose().to_owned()))
                .collect()
        }
    };
    let mut missing = BTreeSet::new();
    for (path, value) in resource.spec.output.inline_secrets_mut() {
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
