//! Pipeline instances (table `pipeline_instances`): a tenant's `PipelineInstance`s, each
//! with its binding to a template (pinned to a generation, or following the latest) and
//! the template generation its pipeline runs.
//!
//! An instance is rendered by the observer ([`render`] with [`KeyValues::Deferred`]) into
//! a pipeline of its template's kind, stored as a row of `pipelines` with the
//! instance's name, through the pipelines' own path ([`Store::write_pipeline`]): it is
//! sealed, counted against the tenant's quota, selected for clusters and sent to agents,
//! and gets its status from agent reports, exactly like a pipeline applied through the
//! API. That row belongs to the instance: the pipeline API refuses to change or delete
//! it ([`refuse_rendered`]), and deleting the instance deletes it.
//!
//! Writing the instance and its pipeline is one transaction with the tenant locked, and
//! so is re-rendering the instances of a changed template
//! ([`Store::rerender_following`]): an instance is never left running a pipeline
//! rendered from anything but the generation it records.
//!
//! A placeholder bound to a Secret key stays a `valueFrom.secretKeyRef` in the pipeline,
//! which the agent resolves as for any pipeline. A non-secret placeholder bound to a
//! Secret or ConfigMap key is read by the agent before rendering
//! ([`KeyValues::Resolved`]): the row of `pipelines` then holds the pipeline rendered
//! with that type's sample, marked with
//! [`PENDING_BINDINGS_ANNOTATION`](kaas_pipeline::templates::PENDING_BINDINGS_ANNOTATION)
//! (its quota, budget, selection and status are the instance's), and agents are sent
//! the instance itself instead ([`Store::pending_instances`],
//! [`kaas_pipeline::templates::pending`]).

use std::collections::{BTreeMap, BTreeSet};

use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::templates::{
    KeyValues, PipelineInstance, ValidatedInstance, ValidatedPendingInstance, pending_instance,
    render, validate_instance,
};
use kaas_pipeline::{
    ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline, ValidationContext,
    ValidationErrors,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};

use super::entities::{pipeline_instances, pipelines};
use super::mutation::Mutation;
use super::pipeline_kind::PipelineKind;
use super::template_secrets::{binding_field, binding_owner};
use super::templates::{StoredTemplate, broken_instance, read_validation};
use super::{
    Actor, Change, MASKED_SECRET, Store, StoreError, insert_error, not_found, now_ms, quotas,
};

/// Instances in audit entries and errors.
pub(super) const INSTANCE: &str = "pipeline-instance";

/// An instance as stored, with the status of its pipeline.
#[derive(Clone, Debug)]
pub struct StoredInstance {
    /// The owning tenant.
    pub tenant: String,
    /// The instance, validated again when read.
    pub instance: ValidatedInstance,
    /// The kind of its pipeline.
    pub pipeline_kind: String,
    /// Starts at 1, +1 for every change of its spec.
    pub generation: i64,
    /// The template generation its pipeline was rendered from.
    pub template_generation: i64,
    /// Its pipeline's status, computed from agent reports.
    pub status: MetricPipelineStatus,
    /// The placeholders whose static value lands in an inline secret of the pipeline (a
    /// header value): sealed at rest and shown as `***`, like the pipeline's own.
    pub sealed: BTreeSet<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change (its own, or a re-render).
    pub updated_at_ms: i64,
}

impl StoredInstance {
    /// The instance's name, which its pipeline has too.
    pub fn name(&self) -> &str {
        self.instance.name()
    }
}

/// What applying an instance did.
#[derive(Clone, Debug)]
pub struct InstanceWritten {
    /// The instance as stored now.
    pub stored: StoredInstance,
    /// Whether it was created.
    pub created: bool,
    /// Whether anything was written.
    pub changed: bool,
    /// Its pipeline as rendered (inline secrets in plaintext: mask before showing).
    pub pipeline: ValidatedResource,
}

/// What re-rendering a template's followers did.
pub(super) struct Rerendered {
    /// The instances re-rendered, by tenant and name.
    pub(super) names: Vec<(String, String)>,
    /// Their pipelines as rendered now, with their tenant.
    pub(super) pipelines: Vec<(String, ValidatedResource)>,
    /// The changes to publish.
    pub(super) changes: Vec<Change>,
}

/// Renders `instance` from `template` for the observer, every problem at its field: the
/// pipeline to store, rendered with each pending binding's sample where the agent reads
/// a Secret or ConfigMap key (see the module note).
pub fn render_instance(
    template: &StoredTemplate,
    instance: &ValidatedInstance,
    context: &ValidationContext,
) -> Result<ValidatedResource, ValidationErrors> {
    let rendered = render(
        &template.template,
        template.generation,
        instance,
        KeyValues::Deferred,
        context,
    )?;
    Ok(rendered.preview().clone())
}

/// Refuses a change through the pipeline API to the pipeline of kind `P` named `name`
/// when it is an instance's rendered pipeline.
pub(super) async fn refuse_rendered<P: PipelineKind>(
    db: &impl ConnectionTrait,
    tenant: &str,
    name: &str,
) -> Result<(), StoreError> {
    let owned = pipeline_instances::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
        .one(db)
        .await?
        .is_some_and(|row| row.pipeline_kind == P::KIND);
    if owned {
        return Err(StoreError::Conflict(format!(
            "{} {name:?} is rendered from the PipelineInstance {name:?}; change or delete the \
             instance instead",
            P::KIND
        )));
    }
    Ok(())
}

/// The placeholders of `instance` bound to a static value that stands in an inline
/// secret of `pipeline` (its rendering): a header value, in practice. A value found
/// inside a secret is counted as one, so a short value may be sealed needlessly, never
/// the other way round.
pub fn secret_bindings(
    instance: &ValidatedInstance,
    pipeline: &ValidatedResource,
) -> BTreeSet<String> {
    fn of<P: PipelineKind>(pipeline: &P) -> Vec<String> {
        let mut resource = pipeline.resource().clone();
        P::inline_secrets_mut(&mut resource)
            .into_iter()
            .map(|(_, value)| value.expose().to_owned())
            .collect()
    }
    let secrets = match pipeline {
        ValidatedResource::Metric(p) => of::<ValidatedPipeline>(p),
        ValidatedResource::Log(p) => of::<ValidatedLogPipeline>(p),
        ValidatedResource::Trace(p) => of::<ValidatedTracePipeline>(p),
    };
    (instance.resource().spec.bindings.iter())
        .filter_map(|(name, binding)| {
            let value = binding.value.as_deref().filter(|v| !v.is_empty())?;
            secrets
                .iter()
                .any(|secret| secret.contains(value))
                .then(|| name.clone())
        })
        .collect()
}

/// The document of `instance` as validated, metadata reduced to name, labels and
/// annotations.
fn plain_document(instance: &ValidatedInstance) -> PipelineInstance {
    let mut resource = instance.resource().clone();
    let given = std::mem::take(&mut resource.metadata);
    resource.metadata.name = given.name;
    resource.metadata.labels = given.labels.filter(|l| !l.is_empty());
    resource.metadata.annotations = given.annotations.filter(|a| !a.is_empty());
    resource.status = None;
    resource
}

fn encode<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an instance: {e}")))
}

/// The stored document of an instance and its sealed values.
struct InstanceDocument {
    document: serde_json::Value,
    sealed_values: serde_json::Value,
}

impl Store {
    /// `instance` as stored: each value of `sealed` sealed apart, `***` in its place.
    fn seal_instance(
        &self,
        tenant: &str,
        instance: &ValidatedInstance,
        sealed: &BTreeSet<String>,
    ) -> Result<InstanceDocument, StoreError> {
        let mut resource = plain_document(instance);
        let name = instance.name();
        let mut values = serde_json::Map::new();
        for (placeholder, binding) in &mut resource.spec.bindings {
            if let (true, Some(value)) = (sealed.contains(placeholder), binding.value.as_mut()) {
                let field = binding_field(placeholder);
                let owner = binding_owner(tenant, name, &field);
                let ciphertext = self.inner.secrets.seal(value, &owner)?;
                values.insert(placeholder.clone(), ciphertext.into());
                *value = MASKED_SECRET.to_owned();
            }
        }
        Ok(InstanceDocument {
            document: encode(&resource)?,
            sealed_values: serde_json::Value::Object(values),
        })
    }

    /// A stored instance with its sealed values opened, validated again.
    fn open_instance(
        &self,
        row: pipeline_instances::Model,
        status: MetricPipelineStatus,
    ) -> Result<StoredInstance, StoreError> {
        let corrupt = |reason: String| {
            StoreError::Corrupt(format!("instance {}/{}: {reason}", row.tenant, row.name))
        };
        let mut resource: PipelineInstance =
            serde_json::from_value(row.document.clone()).map_err(|e| corrupt(e.to_string()))?;
        let values: BTreeMap<String, String> = serde_json::from_value(row.sealed_values.clone())
            .map_err(|e| corrupt(e.to_string()))?;
        for (placeholder, ciphertext) in &values {
            let field = binding_field(placeholder);
            let owner = binding_owner(&row.tenant, &row.name, &field);
            let plaintext = self
                .inner
                .secrets
                .open(ciphertext, &owner)
                .map_err(|source| StoreError::SecretUnreadable {
                    pipeline: format!("instance {}/{}", row.tenant, row.name),
                    field: field.clone(),
                    source,
                })?;
            if let Some(binding) = resource.spec.bindings.get_mut(placeholder) {
                binding.value = Some(plaintext);
            }
        }
        let instance = validate_instance(&resource, &read_validation())
            .map_err(|e| corrupt(format!("no longer validates: {e}")))?;
        Ok(StoredInstance {
            tenant: row.tenant,
            instance,
            pipeline_kind: row.pipeline_kind,
            generation: row.generation,
            template_generation: row.template_generation,
            status,
            sealed: values.into_keys().collect(),
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }

    /// Creates or changes `tenant`'s instance and writes its rendered pipeline, in one
    /// transaction; with `dry_run` answers the same and writes nothing. An instance its
    /// template does not render is [`StoreError::Invalid`] naming every problem; a
    /// pipeline of the same kind and name applied through the API is a conflict.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_instance(
        &self,
        tenant: &str,
        instance: ValidatedInstance,
        context: &ValidationContext,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<InstanceWritten, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        quotas::lock_tenant(transaction, tenant).await?;
        let name = instance.name().to_owned();
        let template = template_of(transaction, &self.inner.secrets, tenant, &instance).await?;
        let pipeline = render_instance(&template, &instance, context).map_err(|errors| {
            StoreError::Invalid {
                message: format!(
                    "instance {name:?} does not render from template {:?}",
                    template.name()
                ),
                errors,
            }
        })?;
        let kind = pipeline.kind();
        let existing = pipeline_instances::Entity::find_by_id((tenant.to_owned(), name.clone()))
            .one(transaction)
            .await?;
        make_room(transaction, tenant, &name, kind, existing.as_ref()).await?;
        let mut changes = Vec::new();
        changes.extend(
            self.write_rendered(&mutation, tenant, pipeline.clone(), actor)
                .await?,
        );
        let sealed = secret_bindings(&instance, &pipeline);
        let plain = encode(&plain_document(&instance))?;
        let stored_document = self.seal_instance(tenant, &instance, &sealed)?;
        let now = now_ms();
        let (row, created, changed) = match existing {
            Some(row) => {
                let before = self
                    .open_instance(row.clone(), MetricPipelineStatus::default())
                    .ok();
                let same_spec = before.as_ref().is_some_and(|b| {
                    encode(&plain_document(&b.instance)).ok() == Some(plain.clone())
                });
                let same = same_spec
                    && before.as_ref().is_some_and(|b| b.sealed == sealed)
                    && row.template_generation == template.generation;
                if same {
                    (row, false, !changes.is_empty())
                } else {
                    let generation = row.generation + i64::from(!same_spec);
                    let mut active = row.into_active_model();
                    active.document = Set(stored_document.document);
                    active.sealed_values = Set(stored_document.sealed_values);
                    active.template = Set(instance.template().name.clone());
                    active.pinned_generation = Set(instance.template().generation);
                    active.pipeline_kind = Set(kind.to_owned());
                    active.generation = Set(generation);
                    active.template_generation = Set(template.generation);
                    active.updated_at_ms = Set(now);
                    let row = active.update(transaction).await?;
                    mutation
                        .audit(actor, "update", INSTANCE, Some(tenant), &name)
                        .await?;
                    (row, false, true)
                }
            }
            None => {
                let row = pipeline_instances::Model {
                    tenant: tenant.to_owned(),
                    name: name.clone(),
                    template: instance.template().name.clone(),
                    pinned_generation: instance.template().generation,
                    pipeline_kind: kind.to_owned(),
                    document: stored_document.document,
                    sealed_values: stored_document.sealed_values,
                    generation: 1,
                    template_generation: template.generation,
                    created_at_ms: now,
                    updated_at_ms: now,
                };
                pipeline_instances::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(transaction)
                    .await
                    .map_err(|e| insert_error(e, INSTANCE, &format!("{tenant}/{name}")))?;
                mutation
                    .audit(actor, "create", INSTANCE, Some(tenant), &name)
                    .await?;
                (row, true, true)
            }
        };
        let status = pipeline_status(transaction, tenant, kind, &name).await?;
        let stored = self.open_instance(row, status)?;
        if changed && !dry_run {
            changes.push(Change::Pipeline {
                tenant: tenant.to_owned(),
                name: name.clone(),
            });
            mutation.commit(changes).await?;
        }
        Ok(InstanceWritten {
            stored,
            created,
            changed,
            pipeline,
        })
    }

    /// Writes an instance's rendered pipeline in `mutation`; the change, if any.
    async fn write_rendered(
        &self,
        mutation: &Mutation<'_>,
        tenant: &str,
        pipeline: ValidatedResource,
        actor: &Actor,
    ) -> Result<Option<Change>, StoreError> {
        Ok(match pipeline {
            ValidatedResource::Metric(p) => {
                Box::pin(self.write_pipeline::<ValidatedPipeline>(mutation, tenant, *p, actor))
                    .await?
                    .change
            }
            ValidatedResource::Log(p) => {
                Box::pin(self.write_pipeline::<ValidatedLogPipeline>(mutation, tenant, *p, actor))
                    .await?
                    .change
            }
            ValidatedResource::Trace(p) => {
                Box::pin(self.write_pipeline::<ValidatedTracePipeline>(mutation, tenant, *p, actor))
                    .await?
                    .change
            }
        })
    }

    /// Re-renders, in `mutation`, every instance that follows `template` (for a provider
    /// template: in every tenant without a template of that name), and writes their
    /// pipelines, or nothing at all: [`StoreError::Invalid`] lists every instance that
    /// does not render. Returns the instances re-rendered with their pipelines, and the
    /// changes to publish.
    pub(super) async fn rerender_following(
        &self,
        mutation: &Mutation<'_>,
        template: &StoredTemplate,
        context: &ValidationContext,
        actor: &Actor,
    ) -> Result<Rerendered, StoreError> {
        let transaction = mutation.transaction();
        let mut query = pipeline_instances::Entity::find()
            .filter(pipeline_instances::Column::Template.eq(template.name()))
            .filter(pipeline_instances::Column::PinnedGeneration.is_null());
        if !template.is_provider() {
            query = query.filter(pipeline_instances::Column::Tenant.eq(&template.tenant));
        }
        let rows = query
            .order_by_asc(pipeline_instances::Column::Tenant)
            .order_by_asc(pipeline_instances::Column::Name)
            .all(transaction)
            .await?;
        let mut shadowed = BTreeSet::new();
        let mut rendered = Vec::new();
        let mut broken = Vec::new();
        for row in rows {
            if template.is_provider() {
                // A tenant's own template of the name is the one its instances follow.
                let own = shadowed.contains(&row.tenant)
                    || super::templates::resolve(
                        transaction,
                        &self.inner.secrets,
                        &row.tenant,
                        template.name(),
                        None,
                    )
                    .await?
                    .is_some_and(|t| !t.is_provider());
                if own {
                    shadowed.insert(row.tenant.clone());
                    continue;
                }
            }
            let (tenant, name) = (row.tenant.clone(), row.name.clone());
            let stored = self.open_instance(row.clone(), MetricPipelineStatus::default())?;
            match render_instance(template, &stored.instance, context) {
                Ok(pipeline) => rendered.push((row, stored.instance, pipeline)),
                Err(errors) => broken.extend(
                    errors
                        .0
                        .into_iter()
                        .map(|e| broken_instance(&tenant, &name, &template.tenant, e)),
                ),
            }
        }
        if !broken.is_empty() {
            return Err(StoreError::Invalid {
                message: format!(
                    "this change of template {:?} would break the instances named in the fields; \
                     nothing was changed",
                    template.name()
                ),
                errors: ValidationErrors(broken),
            });
        }
        let mut changes = Vec::new();
        let mut names = Vec::new();
        let mut pipelines = Vec::new();
        let mut locked = BTreeSet::new();
        for (row, instance, pipeline) in rendered {
            let tenant = row.tenant.clone();
            if template.tenant != tenant && locked.insert(tenant.clone()) {
                quotas::lock_tenant(transaction, &tenant).await?;
            }
            let sealed = secret_bindings(&instance, &pipeline);
            let stored_document = self.seal_instance(&tenant, &instance, &sealed)?;
            pipelines.push((tenant.clone(), pipeline.clone()));
            changes.extend(
                self.write_rendered(mutation, &tenant, pipeline, actor)
                    .await?,
            );
            let name = row.name.clone();
            let mut active = row.into_active_model();
            active.document = Set(stored_document.document);
            active.sealed_values = Set(stored_document.sealed_values);
            active.template_generation = Set(template.generation);
            active.updated_at_ms = Set(now_ms());
            active.update(transaction).await?;
            names.push((tenant, name));
        }
        Ok(Rerendered {
            names,
            pipelines,
            changes,
        })
    }

    /// One instance of `tenant`, with its pipeline's status.
    pub async fn get_instance(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<StoredInstance>, StoreError> {
        let db = self.reader();
        let Some(row) =
            pipeline_instances::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
                .one(db)
                .await?
        else {
            return Ok(None);
        };
        let status = pipeline_status(db, tenant, &row.pipeline_kind, name).await?;
        self.open_instance(row, status).map(Some)
    }

    /// The instances of `tenant`, or of every tenant for `None`, by tenant and name.
    pub async fn list_instances(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredInstance>, StoreError> {
        let db = self.reader();
        let mut query = pipeline_instances::Entity::find();
        if let Some(tenant) = tenant {
            query = query.filter(pipeline_instances::Column::Tenant.eq(tenant));
        }
        let rows = query
            .order_by_asc(pipeline_instances::Column::Tenant)
            .order_by_asc(pipeline_instances::Column::Name)
            .all(db)
            .await?;
        let mut instances = Vec::with_capacity(rows.len());
        for row in rows {
            let status = pipeline_status(db, &row.tenant, &row.pipeline_kind, &row.name).await?;
            instances.push(self.open_instance(row, status)?);
        }
        Ok(instances)
    }

    /// The instances of `tenant` its agents render themselves (a non-secret placeholder
    /// bound to a Secret or ConfigMap key), each with the template generation it runs,
    /// as they are sent; by name. One that no longer renders with samples (a stored row
    /// the observer cannot read as it wrote it) is logged and left out, so its clusters
    /// get the rest of their configuration.
    pub async fn pending_instances(
        &self,
        tenant: &str,
    ) -> Result<Vec<ValidatedPendingInstance>, StoreError> {
        let db = self.reader();
        let rows = pipeline_instances::Entity::find()
            .filter(pipeline_instances::Column::Tenant.eq(tenant))
            .order_by_asc(pipeline_instances::Column::Name)
            .all(db)
            .await?;
        let context = read_validation();
        let mut pending = Vec::new();
        for row in rows {
            let generation = row.template_generation;
            let stored = self.open_instance(row, MetricPipelineStatus::default())?;
            if stored.instance.key_refs().is_empty() {
                continue;
            }
            let reference = stored.instance.template();
            let Some(template) = super::templates::resolve(
                db,
                &self.inner.secrets,
                tenant,
                &reference.name,
                Some(generation),
            )
            .await?
            else {
                tracing::error!(
                    tenant,
                    instance = stored.name(),
                    generation,
                    "the template generation an instance runs is gone; not sent"
                );
                continue;
            };
            match pending_instance(&template.template, generation, &stored.instance, &context) {
                Ok(instance) if !instance.pending().is_empty() => pending.push(instance),
                Ok(_) => {}
                Err(errors) => {
                    tracing::error!(tenant, instance = stored.name(), %errors, "a stored instance no longer renders; not sent");
                }
            }
        }
        Ok(pending)
    }

    /// Deletes `tenant`'s instance and its pipeline; agents stop running it.
    pub async fn delete_instance(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = pipeline_instances::Entity::find_by_id((tenant.to_owned(), name.to_owned()))
            .one(transaction)
            .await?
            .ok_or_else(|| not_found(INSTANCE, &format!("{tenant}/{name}")))?;
        delete_pipeline_row(transaction, tenant, &row.pipeline_kind, name).await?;
        pipeline_instances::Entity::delete_by_id((tenant.to_owned(), name.to_owned()))
            .exec(transaction)
            .await?;
        mutation
            .audit(actor, "delete", INSTANCE, Some(tenant), name)
            .await?;
        mutation
            .commit(vec![Change::Pipeline {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            }])
            .await
    }
}

/// The template `instance` names, as its tenant sees it; [`StoreError::Invalid`] at
/// the reference when there is none.
async fn template_of(
    db: &impl ConnectionTrait,
    secrets: &crate::secrets::SecretBox,
    tenant: &str,
    instance: &ValidatedInstance,
) -> Result<StoredTemplate, StoreError> {
    let reference = instance.template();
    let found =
        super::templates::resolve(db, secrets, tenant, &reference.name, reference.generation)
            .await?;
    found.ok_or_else(|| {
        let (path, reason) = match reference.generation {
            Some(g) => (
                "spec.template.generation",
                format!("template {:?} has no generation {g}", reference.name),
            ),
            None => (
                "spec.template.name",
                format!(
                    "no template {:?}, of the tenant or the provider",
                    reference.name
                ),
            ),
        };
        StoreError::Invalid {
            message: format!("instance {:?} names no template there is", instance.name()),
            errors: ValidationErrors::single(path, reason),
        }
    })
}

/// Makes room for the instance `name`'s pipeline of kind `kind`: the pipeline of its
/// former kind goes; a pipeline applied through the API under that name is a conflict.
async fn make_room(
    db: &impl ConnectionTrait,
    tenant: &str,
    name: &str,
    kind: &str,
    existing: Option<&pipeline_instances::Model>,
) -> Result<(), StoreError> {
    match existing {
        Some(row) if row.pipeline_kind != kind => {
            delete_pipeline_row(db, tenant, &row.pipeline_kind, name).await
        }
        Some(_) => Ok(()),
        None => {
            let key = (tenant.to_owned(), kind.to_owned(), name.to_owned());
            if pipelines::Entity::find_by_id(key).one(db).await?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a {kind} {name:?} was applied through the API; an instance cannot take \
                     its name"
                )));
            }
            Ok(())
        }
    }
}

/// Deletes the pipeline row of kind `kind` named `name`, if there is one.
async fn delete_pipeline_row(
    db: &impl ConnectionTrait,
    tenant: &str,
    kind: &str,
    name: &str,
) -> Result<(), StoreError> {
    pipelines::Entity::delete_by_id((tenant.to_owned(), kind.to_owned(), name.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}

/// The status of the pipeline of kind `kind` named `name` (the default when it has no
/// row, which only a concurrent delete can cause).
async fn pipeline_status(
    db: &impl ConnectionTrait,
    tenant: &str,
    kind: &str,
    name: &str,
) -> Result<MetricPipelineStatus, StoreError> {
    let Some(row) =
        pipelines::Entity::find_by_id((tenant.to_owned(), kind.to_owned(), name.to_owned()))
            .one(db)
            .await?
    else {
        return Ok(MetricPipelineStatus::default());
    };
    serde_json::from_value(row.status)
        .map_err(|e| StoreError::Corrupt(format!("status of {kind} {tenant}/{name}: {e}")))
}
