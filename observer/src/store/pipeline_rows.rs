//! Pipelines read row by row, so that one row the observer cannot read degrades only
//! that pipeline, and the re-sealing of every stored secret under the current key.
//!
//! # Unreadable rows
//! A stored pipeline can become unreadable: its secrets were sealed with a key this
//! observer was not given, a sealed value was copied in from another row (it is bound to
//! its owner, see [`crate::secrets`]), or the document no longer parses or validates.
//! Before, one such row failed every read of its tenant's pipelines, so every render of
//! the tenant's clusters and the admin status failed with it (issue 13, finding 10).
//! [`Store::list_pipeline_rows`] returns each row as a [`PipelineRow`]: readable rows as
//! [`StoredPipeline`]s, the others as [`UnreadablePipeline`]s that say why, without a
//! secret. Renders leave those out, their status says why
//! ([`kaas_pipeline::status::reasons::STORED_SPEC_UNREADABLE`]), and the tenant can still
//! see, delete or re-apply them. Database failures still fail the whole read.
//!
//! # Re-keying
//! [`Store::rekey_secrets`] reads every pipeline row in its own transaction, locked
//! (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's single writer serializes anyway), opens
//! every value sealed with a previous key or in the legacy `enc:v1:` format, seals it
//! again with the current key for its owner, and writes the row with an audit entry
//! `rekey`. Plaintext, generation and update time stay the same, so nothing is
//! published and no agent gets a new configuration. A row that cannot be opened is
//! reported and left as it is; running the rekey again once its key is given finishes
//! the job.

use kaas_pipeline::secret::SecretString;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::{
    LOG_KIND, MetricPipeline, TRACE_KIND, ValidatedLogPipeline, ValidatedPipeline,
    ValidatedTracePipeline,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::entities::pipelines;
use super::pipeline_kind::PipelineKind;
use super::pipelines::{key, pipeline_secret_owner, secret_field};
use super::{Actor, Store, StoreError, StoredPipeline, mask_secrets};

/// A stored pipeline the observer cannot read (see the module note).
#[derive(Clone, Debug, PartialEq)]
pub struct UnreadablePipeline<R = MetricPipeline> {
    /// The owning tenant.
    pub tenant: String,
    /// The pipeline's name.
    pub name: String,
    /// Its spec generation.
    pub generation: i64,
    /// Its status as last stored (default if that cannot be read either).
    pub status: MetricPipelineStatus,
    /// Why it cannot be read: field paths and causes, never a secret.
    pub reason: String,
    /// The stored document with every inline secret shown as `***`, if it parses.
    pub masked: Option<Box<R>>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last spec or metadata change.
    pub updated_at_ms: i64,
}

/// One stored pipeline, read or not.
#[derive(Clone, Debug)]
pub enum PipelineRow<P: PipelineKind = ValidatedPipeline> {
    /// Opened and validated (boxed: it is far larger than the other variant).
    Readable(Box<StoredPipeline<P>>),
    /// Left out of every render; see [`UnreadablePipeline::reason`].
    Unreadable(UnreadablePipeline<P::Resource>),
}

impl<P: PipelineKind> PipelineRow<P> {
    /// The owning tenant.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Readable(stored) => &stored.tenant,
            Self::Unreadable(unreadable) => &unreadable.tenant,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Readable(stored) => stored.name(),
            Self::Unreadable(unreadable) => &unreadable.name,
        }
    }

    /// The pipeline's status as stored.
    pub fn status(&self) -> &MetricPipelineStatus {
        match self {
            Self::Readable(stored) => &stored.status,
            Self::Unreadable(unreadable) => &unreadable.status,
        }
    }

    /// The pipeline's spec generation.
    pub fn generation(&self) -> i64 {
        match self {
            Self::Readable(stored) => stored.generation,
            Self::Unreadable(unreadable) => unreadable.generation,
        }
    }
}

/// What [`Store::rekey_secrets`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// The id of the key every value is sealed with now.
    pub key_id: String,
    /// Pipelines, template generations and instances whose values were sealed again.
    pub pipelines_rekeyed: u64,
    /// Secret values sealed again.
    pub values_rekeyed: u64,
    /// Pipelines, template generations and instances already sealed with the current
    /// key.
    pub pipelines_current: u64,
    /// Rows that could not be opened, `tenant/name: reason`; left as they were.
    pub unreadable: Vec<String>,
}

impl Store {
    /// Metric pipelines of one tenant, or all for `None`, by tenant and name; each
    /// readable or not (see the module note).
    pub async fn list_pipeline_rows(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<PipelineRow>, StoreError> {
        self.list_pipeline_rows_of(tenant).await
    }

    /// [`Store::list_pipeline_rows`] of kind `P`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_pipeline_rows_of<P: PipelineKind>(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<PipelineRow<P>>, StoreError> {
        let mut query = pipelines::Entity::find()
            .filter(pipelines::Column::Kind.eq(P::KIND))
            .order_by_asc(pipelines::Column::Tenant)
            .order_by_asc(pipelines::Column::Name);
        if let Some(tenant) = tenant {
            query = query.filter(pipelines::Column::Tenant.eq(tenant));
        }
        Ok(query
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| self.pipeline_row::<P>(row))
            .collect())
    }

    /// One metric pipeline, readable or not.
    pub async fn get_pipeline_row(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PipelineRow>, StoreError> {
        self.get_pipeline_row_of(tenant, name).await
    }

    /// One pipeline of kind `P`, readable or not.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_pipeline_row_of<P: PipelineKind>(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<PipelineRow<P>>, StoreError> {
        Ok(pipelines::Entity::find_by_id(key::<P>(tenant, name))
            .one(self.reader())
            .await?
            .map(|row| self.pipeline_row::<P>(row)))
    }

    /// How many pipelines of every kind one tenant has, or all tenants for `None`; reads
    /// no document.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn count_pipelines(&self, tenant: Option<&str>) -> Result<u64, StoreError> {
        let mut query = pipelines::Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(pipelines::Column::Tenant.eq(tenant));
        }
        Ok(query.count(self.reader()).await?)
    }

    /// Seals every stored secret value again with the current key (see the module note).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn rekey_secrets(&self, actor: &Actor) -> Result<RekeyReport, StoreError> {
        let keys: Vec<(String, String, String)> = pipelines::Entity::find()
            .select_only()
            .column(pipelines::Column::Tenant)
            .column(pipelines::Column::Kind)
            .column(pipelines::Column::Name)
            .order_by_asc(pipelines::Column::Tenant)
            .order_by_asc(pipelines::Column::Kind)
            .order_by_asc(pipelines::Column::Name)
            .into_tuple()
            .all(self.reader())
            .await?;
        let mut report = RekeyReport {
            key_id: self.inner.secrets.key_id().to_owned(),
            ..RekeyReport::default()
        };
        for (tenant, kind, name) in keys {
            let mutation = self.mutation().await?;
            let transaction = mutation.transaction();
            let Some(row) =
                pipelines::Entity::find_by_id((tenant.clone(), kind.clone(), name.clone()))
                    .lock_exclusive()
                    .one(transaction)
                    .await?
            else {
                continue;
            };
            let (resealed, object) = match kind.as_str() {
                LOG_KIND => (
                    self.reseal_document::<ValidatedLogPipeline>(&row),
                    ValidatedLogPipeline::OBJECT,
                ),
                TRACE_KIND => (
                    self.reseal_document::<ValidatedTracePipeline>(&row),
                    ValidatedTracePipeline::OBJECT,
                ),
                _ => (
                    self.reseal_document::<ValidatedPipeline>(&row),
                    ValidatedPipeline::OBJECT,
                ),
            };
            let (spec, resealed) = match resealed {
                Ok(resealed) => resealed,
                Err(error) => {
                    report.unreadable.push(format!("{tenant}/{name}: {error}"));
                    continue;
                }
            };
            if resealed == 0 {
                report.pipelines_current += 1;
                continue;
            }
            let mut active = row.into_active_model();
            active.spec = Set(spec);
            active.update(transaction).await?;
            mutation
                .audit(actor, "rekey", object, Some(&tenant), &name)
                .await?;
            mutation.commit(Vec::new()).await?;
            report.pipelines_rekeyed += 1;
            report.values_rekeyed += resealed;
        }
        self.rekey_templates_and_instances(actor, &mut report)
            .await?;
        Ok(report)
    }

    /// The row's document with every value that needs it sealed again with the current
    /// key, and how many values that was. Values already current are kept as stored.
    fn reseal_document<P: PipelineKind>(
        &self,
        row: &pipelines::Model,
    ) -> Result<(serde_json::Value, u64), StoreError> {
        let mut resource: P::Resource = serde_json::from_value(row.spec.clone()).map_err(|e| {
            StoreError::Corrupt(format!("{} {}/{}: {e}", P::KIND, row.tenant, row.name))
        })?;
        let secrets = &self.inner.secrets;
        let mut resealed = 0;
        for (path, value) in P::inline_secrets_mut(&mut resource) {
            if !secrets.needs_reseal(value.expose()) {
                continue;
            }
            let field = secret_field(&path);
            let owner = pipeline_secret_owner::<P>(&row.tenant, &row.name, &field);
            let plaintext = secrets.open(value.expose(), &owner).map_err(|source| {
                StoreError::SecretUnreadable {
                    pipeline: format!("{}/{}", row.tenant, row.name),
                    field: field.clone(),
                    source,
                }
            })?;
            *value = SecretString::new(secrets.seal(&plaintext, &owner)?);
            resealed += 1;
        }
        let spec = serde_json::to_value(&resource)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a pipeline: {e}")))?;
        Ok((spec, resealed))
    }

    fn pipeline_row<P: PipelineKind>(&self, row: pipelines::Model) -> PipelineRow<P> {
        match self.load_pipeline::<P>(row.clone()) {
            Ok(stored) => PipelineRow::Readable(Box::new(stored)),
            Err(error) => {
                let reason = error.to_string();
                tracing::debug!(
                    tenant = %row.tenant,
                    kind = %row.kind,
                    pipeline = %row.name,
                    %reason,
                    "a stored pipeline cannot be read"
                );
                PipelineRow::Unreadable(unreadable::<P>(row, reason))
            }
        }
    }
}

/// What is known of a row that cannot be read: everything but its secrets.
fn unreadable<P: PipelineKind>(
    row: pipelines::Model,
    reason: String,
) -> UnreadablePipeline<P::Resource> {
    let masked = serde_json::from_value::<P::Resource>(row.spec)
        .ok()
        .map(|mut resource| {
            mask_secrets::<P>(&mut resource);
            Box::new(resource)
        });
    UnreadablePipeline {
        status: serde_json::from_value(row.status).unwrap_or_default(),
        tenant: row.tenant,
        name: row.name,
        generation: row.generation,
        reason,
        masked,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    }
}
