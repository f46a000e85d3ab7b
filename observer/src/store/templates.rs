//! Pipeline templates (table `pipeline_templates`): every generation of every
//! `PipelineTemplate`, a tenant's own or the provider's.
//!
//! # Generations and rollback
//! Every accepted change of a template is a new row, generation = the latest + 1; no
//! generation is ever rewritten or removed while the template lives, so an instance
//! pinned to one keeps rendering from it, and a rollback to generation `n` is a new
//! generation holding `n`'s document (as `kubectl rollout undo` makes a new revision).
//! An identical apply writes nothing. A template's `pipelineKind` never changes: its
//! instances' pipelines would change kind under them.
//!
//! Header values in a template's spec are sealed at rest like a pipeline's
//! ([`super::template_secrets`]).
//!
//! # Provider templates
//! The provider's templates (bundled in `examples/templates/`, or a configured
//! directory) are stored under tenant [`PROVIDER_SCOPE`] (`""`, never a tenant's name)
//! by [`Store::sync_provider_templates`] when the observer starts, a new generation
//! when the file changed. Every tenant sees them and may bind them; none may change or
//! delete them, nor name a template of its own like one.
//!
//! # Propagation, all or none
//! Writing a generation re-renders, in the same transaction, every instance that
//! follows the template (no pinned generation): each rendered pipeline is written
//! through the pipelines' own path ([`Store::write_pipeline`], so agents are sent it
//! like any pipeline change) and the instance records the template generation it now
//! runs ([`template_instances`](super::template_instances)). If any instance does not
//! render, nothing is written and [`StoreError::Invalid`] lists every instance it
//! would break with its problems, under `instances["<name>"]`.

use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::templates::{PipelineTemplate, ValidatedTemplate, validate_template};
use kaas_pipeline::{FieldError, ProviderPolicy, ValidationContext, ValidationErrors};
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};

use super::entities::{pipeline_instances, pipeline_templates};
use super::mutation::Mutation;
use super::template_secrets::{open_template_document, seal_template_document};
use super::{Actor, Store, StoreError, insert_error, not_found, now_ms, quotas};
use crate::secrets::SecretBox;

/// The tenant column of the provider's templates: no tenant has an empty name.
pub const PROVIDER_SCOPE: &str = "";
/// Templates in audit entries and errors.
pub(super) const TEMPLATE: &str = "pipeline-template";

/// One generation of a template as stored.
#[derive(Clone, Debug)]
pub struct StoredTemplate {
    /// The owning tenant; [`PROVIDER_SCOPE`] for a provider template.
    pub tenant: String,
    /// The template, validated again when read.
    pub template: ValidatedTemplate,
    /// Its generation.
    pub generation: i64,
    /// Unix milliseconds when this generation was written.
    pub created_at_ms: i64,
}

impl StoredTemplate {
    /// The template's name.
    pub fn name(&self) -> &str {
        self.template.name()
    }

    /// Whether it is the provider's (read-only for tenants).
    pub fn is_provider(&self) -> bool {
        self.tenant == PROVIDER_SCOPE
    }
}

/// What writing a template did.
#[derive(Clone, Debug)]
pub struct TemplateWritten {
    /// The template's latest generation now.
    pub stored: StoredTemplate,
    /// Whether it was created (its first generation).
    pub created: bool,
    /// Whether a generation was written (false for an identical apply).
    pub changed: bool,
    /// The instances re-rendered from it, by tenant and name.
    pub rerendered: Vec<(String, String)>,
    /// Their pipelines as re-rendered, with their tenant (inline secrets in plaintext):
    /// for the checks a pipeline applied directly passes ([`crate::api`] refuses the
    /// change when they would exceed a budget).
    pub rendered: Vec<(String, ValidatedResource)>,
}

/// How stored templates are validated again when read: as the observer distributes
/// pipelines, without the provider's policy, which was checked when they were written.
pub(super) fn read_validation() -> ValidationContext {
    ValidationContext::observer(ProviderPolicy::unrestricted())
}

/// A stored generation, validated again.
pub(super) fn decode(
    secrets: &SecretBox,
    row: pipeline_templates::Model,
) -> Result<StoredTemplate, StoreError> {
    let corrupt = |reason: String| {
        StoreError::Corrupt(format!(
            "template {}/{} generation {}: {reason}",
            row.tenant, row.name, row.generation
        ))
    };
    let mut document = row.document.clone();
    open_template_document(secrets, &row.tenant, &row.name, &mut document)?;
    let resource: PipelineTemplate =
        serde_json::from_value(document).map_err(|e| corrupt(e.to_string()))?;
    let template = validate_template(&resource, &read_validation())
        .map_err(|e| corrupt(format!("no longer validates: {e}")))?;
    Ok(StoredTemplate {
        tenant: row.tenant,
        template,
        generation: row.generation,
        created_at_ms: row.created_at_ms,
    })
}

/// The document as stored: name, labels and annotations of its metadata, and its spec.
fn document(template: &ValidatedTemplate) -> Result<serde_json::Value, StoreError> {
    let mut resource = template.resource().clone();
    let given = std::mem::take(&mut resource.metadata);
    resource.metadata.name = given.name;
    resource.metadata.labels = given.labels.filter(|l| !l.is_empty());
    resource.metadata.annotations = given.annotations.filter(|a| !a.is_empty());
    serde_json::to_value(&resource)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a template: {e}")))
}

/// The latest generation of `scope`'s template `name`.
async fn latest_row(
    db: &impl sea_orm::ConnectionTrait,
    scope: &str,
    name: &str,
) -> Result<Option<pipeline_templates::Model>, StoreError> {
    Ok(pipeline_templates::Entity::find()
        .filter(pipeline_templates::Column::Tenant.eq(scope))
        .filter(pipeline_templates::Column::Name.eq(name))
        .order_by_desc(pipeline_templates::Column::Generation)
        .one(db)
        .await?)
}

/// The template `name` as `tenant` sees it (its own, else the provider's), at
/// `generation` or the latest.
pub(super) async fn resolve(
    db: &impl sea_orm::ConnectionTrait,
    secrets: &SecretBox,
    tenant: &str,
    name: &str,
    generation: Option<i64>,
) -> Result<Option<StoredTemplate>, StoreError> {
    for scope in [tenant, PROVIDER_SCOPE] {
        let Some(latest) = latest_row(db, scope, name).await? else {
            continue;
        };
        let row = match generation {
            None => Some(latest),
            Some(generation) => {
                pipeline_templates::Entity::find_by_id((
                    scope.to_owned(),
                    name.to_owned(),
                    generation,
                ))
                .one(db)
                .await?
            }
        };
        return row.map(|row| decode(secrets, row)).transpose();
    }
    Ok(None)
}

impl Store {
    /// Creates or changes `tenant`'s template (a new generation), re-rendering every
    /// instance that follows it (see the module note); with `dry_run`, answers the same
    /// and writes nothing. `context` is the one instances are rendered in.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn apply_template(
        &self,
        tenant: &str,
        template: ValidatedTemplate,
        context: &ValidationContext,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<TemplateWritten, StoreError> {
        let mutation = self.mutation().await?;
        quotas::lock_tenant(mutation.transaction(), tenant).await?;
        if latest_row(mutation.transaction(), PROVIDER_SCOPE, template.name())
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "{:?} is the name of a provider template; choose another name",
                template.name()
            )));
        }
        self.write_template(mutation, tenant, template, context, actor, dry_run)
            .await
    }

    /// Makes generation `generation` of `tenant`'s template `name` its latest again, as
    /// a new generation, with the same all-or-none propagation as a change.
    pub async fn rollback_template(
        &self,
        tenant: &str,
        name: &str,
        generation: i64,
        context: &ValidationContext,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<TemplateWritten, StoreError> {
        let mutation = self.mutation().await?;
        quotas::lock_tenant(mutation.transaction(), tenant).await?;
        let row = pipeline_templates::Entity::find_by_id((
            tenant.to_owned(),
            name.to_owned(),
            generation,
        ))
        .one(mutation.transaction())
        .await?
        .ok_or_else(|| {
            not_found(
                TEMPLATE,
                &format!("{tenant}/{name} generation {generation}"),
            )
        })?;
        let earlier = decode(&self.inner.secrets, row)?;
        // Checked again in today's context: the policy may have changed since.
        let template =
            validate_template(earlier.template.resource(), context).map_err(|errors| {
                StoreError::Invalid {
                    message: format!(
                        "generation {generation} of template {name:?} is no longer valid"
                    ),
                    errors,
                }
            })?;
        self.write_template(mutation, tenant, template, context, actor, dry_run)
            .await
    }

    /// Writes a generation in `mutation` (the tenant locked) and re-renders.
    async fn write_template(
        &self,
        mutation: Mutation<'_>,
        scope: &str,
        template: ValidatedTemplate,
        context: &ValidationContext,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<TemplateWritten, StoreError> {
        let transaction = mutation.transaction();
        let name = template.name().to_owned();
        let secrets = &self.inner.secrets;
        let plain = document(&template)?;
        let latest = latest_row(transaction, scope, &name).await?;
        if let Some(latest) = latest.as_ref() {
            let mut stored = latest.document.clone();
            let same = open_template_document(secrets, scope, &name, &mut stored).is_ok()
                && stored == plain;
            if same {
                return Ok(TemplateWritten {
                    stored: decode(secrets, latest.clone())?,
                    created: false,
                    changed: false,
                    rerendered: Vec::new(),
                    rendered: Vec::new(),
                });
            }
        }
        let mut document = plain;
        seal_template_document(secrets, scope, &name, &mut document)?;
        let kind = template.kind().name();
        if let Some(latest) = latest.as_ref().filter(|l| l.pipeline_kind != kind) {
            return Err(StoreError::Invalid {
                message: format!("template {name:?} cannot change its pipeline kind"),
                errors: ValidationErrors::single(
                    "spec.pipelineKind",
                    format!(
                        "was {}: its instances' pipelines would change kind; make a new template",
                        latest.pipeline_kind
                    ),
                ),
            });
        }
        let row = pipeline_templates::Model {
            tenant: scope.to_owned(),
            name: name.clone(),
            generation: latest.as_ref().map_or(1, |l| l.generation + 1),
            pipeline_kind: kind.to_owned(),
            document,
            created_at_ms: now_ms(),
        };
        pipeline_templates::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(transaction)
            .await
            .map_err(|e| insert_error(e, TEMPLATE, &format!("{scope}/{name}")))?;
        let stored = StoredTemplate {
            tenant: scope.to_owned(),
            template,
            generation: row.generation,
            created_at_ms: row.created_at_ms,
        };
        let rerendered = self
            .rerender_following(&mutation, &stored, context, actor)
            .await?;
        let action = if latest.is_none() { "create" } else { "update" };
        let audit_tenant = (!stored.is_provider()).then_some(scope);
        mutation
            .audit(actor, action, TEMPLATE, audit_tenant, &name)
            .await?;
        if !dry_run {
            mutation.commit(rerendered.changes).await?;
        }
        Ok(TemplateWritten {
            stored,
            created: latest.is_none(),
            changed: true,
            rerendered: rerendered.names,
            rendered: rerendered.pipelines,
        })
    }

    /// `tenant`'s template `name` as the tenant sees it (its own, else the provider's),
    /// at `generation` or the latest.
    pub async fn get_template(
        &self,
        tenant: &str,
        name: &str,
        generation: Option<i64>,
    ) -> Result<Option<StoredTemplate>, StoreError> {
        resolve(self.reader(), &self.inner.secrets, tenant, name, generation).await
    }

    /// Every generation of `scope`'s template `name`, oldest first.
    pub async fn template_generations(
        &self,
        scope: &str,
        name: &str,
    ) -> Result<Vec<StoredTemplate>, StoreError> {
        pipeline_templates::Entity::find()
            .filter(pipeline_templates::Column::Tenant.eq(scope))
            .filter(pipeline_templates::Column::Name.eq(name))
            .order_by_asc(pipeline_templates::Column::Generation)
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| decode(&self.inner.secrets, row))
            .collect()
    }

    /// The latest generation of every template `tenant` sees (its own and the
    /// provider's), or of every template for `None`, by tenant (the provider's first)
    /// and name.
    pub async fn list_templates(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredTemplate>, StoreError> {
        let mut query = pipeline_templates::Entity::find();
        if let Some(tenant) = tenant {
            query =
                query.filter(pipeline_templates::Column::Tenant.is_in([tenant, PROVIDER_SCOPE]));
        }
        let rows = query
            .order_by_asc(pipeline_templates::Column::Tenant)
            .order_by_asc(pipeline_templates::Column::Name)
            .order_by_desc(pipeline_templates::Column::Generation)
            .all(self.reader())
            .await?;
        let mut latest: Vec<pipeline_templates::Model> = Vec::new();
        for row in rows {
            if latest
                .last()
                .is_some_and(|l| l.tenant == row.tenant && l.name == row.name)
            {
                continue;
            }
            latest.push(row);
        }
        (latest.into_iter())
            .map(|row| decode(&self.inner.secrets, row))
            .collect()
    }

    /// Deletes `tenant`'s template `name` with every generation; refused while an
    /// instance binds it (the message names them).
    pub async fn delete_template(
        &self,
        tenant: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        quotas::lock_tenant(transaction, tenant).await?;
        let bound: Vec<String> = pipeline_instances::Entity::find()
            .filter(pipeline_instances::Column::Tenant.eq(tenant))
            .filter(pipeline_instances::Column::Template.eq(name))
            .order_by_asc(pipeline_instances::Column::Name)
            .all(transaction)
            .await?
            .into_iter()
            .map(|row| row.name)
            .collect();
        if !bound.is_empty() {
            return Err(StoreError::Conflict(format!(
                "template {name:?} is bound by instance(s) {}; delete them or bind them to \
                 another template first",
                bound.join(", ")
            )));
        }
        let deleted = pipeline_templates::Entity::delete_many()
            .filter(pipeline_templates::Column::Tenant.eq(tenant))
            .filter(pipeline_templates::Column::Name.eq(name))
            .exec(transaction)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(not_found(TEMPLATE, &format!("{tenant}/{name}")));
        }
        mutation
            .audit(actor, "delete", TEMPLATE, Some(tenant), name)
            .await?;
        mutation.commit(Vec::new()).await
    }

    /// Stores the provider's templates (each a new generation when it changed), as the
    /// observer starts. Each is written on its own, with the same propagation as a
    /// tenant's change: one that would break an instance is not written, and its error
    /// is returned beside its name for the caller to log.
    pub async fn sync_provider_templates(
        &self,
        templates: Vec<ValidatedTemplate>,
        context: &ValidationContext,
    ) -> Vec<(String, Result<TemplateWritten, StoreError>)> {
        let mut results = Vec::new();
        for template in templates {
            let name = template.name().to_owned();
            let result = match self.mutation().await {
                Ok(mutation) => {
                    self.write_template(
                        mutation,
                        PROVIDER_SCOPE,
                        template,
                        context,
                        &Actor::system(),
                        false,
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            results.push((name, result));
        }
        results
    }
}

/// `instances["<name>"].<path>`: where an instance's problem is reported in a refused
/// template change.
pub(super) fn broken_instance(
    tenant: &str,
    name: &str,
    scope: &str,
    error: FieldError,
) -> FieldError {
    let instance = if scope == PROVIDER_SCOPE {
        format!("{tenant}/{name}")
    } else {
        name.to_owned()
    };
    FieldError {
        path: format!("instances[{instance:?}].{}", error.path),
        reason: error.reason,
    }
}
