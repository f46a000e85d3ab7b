//! Secret values of templates and instances at rest.
//!
//! * A template's header values (`…headers[i].value` anywhere in
//!   `spec.template.spec`, written literally or holding placeholders) are sealed in the
//!   stored document like a pipeline's header values, each bound to its template and
//!   path ([`seal_template_document`]), and opened when read
//!   ([`open_template_document`]). A row written before they were sealed holds them in
//!   clear; it reads as it is, and [`Store::rekey_secrets`] seals it.
//! * An instance's static binding values that land in a pipeline's inline secret are
//!   sealed apart in `sealed_values` ([`super::template_instances`]).
//!
//! [`Store::rekey_templates_and_instances`] seals both again with the current key, as
//! `observer secrets rekey` does for pipelines.

use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, QueryOrder, QuerySelect, Set};

use super::entities::{pipeline_instances, pipeline_templates};
use super::pipeline_rows::RekeyReport;
use super::template_instances::INSTANCE;
use super::templates::TEMPLATE;
use super::{Actor, Store, StoreError};
use crate::secrets::{SecretBox, SecretOwner};

/// Where a template's pipeline spec sits in its stored document.
const SPEC_POINTER: &str = "/spec/template/spec";

/// Every header value of the pipeline spec in `document`, with its path.
fn header_values(document: &mut serde_json::Value) -> Vec<(String, &mut String)> {
    match document.pointer_mut(SPEC_POINTER) {
        Some(spec) => spec_header_values(spec),
        None => Vec::new(),
    }
}

/// Every header value (`…headers[i].value`, anywhere) of a template's pipeline `spec`,
/// with its path from the template (`spec.template.spec.…`): what is sealed at rest and
/// masked in the API's answers.
pub(crate) fn spec_header_values(spec: &mut serde_json::Value) -> Vec<(String, &mut String)> {
    fn walk<'a>(
        value: &'a mut serde_json::Value,
        path: String,
        found: &mut Vec<(String, &'a mut String)>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, child) in map.iter_mut() {
                    let path = format!("{path}.{name}");
                    if name != "headers" || !child.is_array() {
                        walk(child, path, found);
                        continue;
                    }
                    let headers = child.as_array_mut().into_iter().flatten();
                    for (i, header) in headers.enumerate() {
                        if let Some(serde_json::Value::String(text)) = header.get_mut("value") {
                            found.push((format!("{path}[{i}].value"), text));
                        }
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, format!("{path}[{i}]"), found);
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    let base = kaas_pipeline::templates::TEMPLATE_SPEC_PATH.to_owned();
    walk(spec, base, &mut found);
    found
}

/// What a template's sealed value is sealed for: its scope (tenant, `""` for the
/// provider), the template and the path.
fn template_owner<'a>(scope: &'a str, name: &'a str, field: &'a str) -> SecretOwner<'a> {
    SecretOwner {
        tenant: scope,
        kind: TEMPLATE,
        name,
        field,
    }
}

/// Seals every header value of a template document for storing.
pub(super) fn seal_template_document(
    secrets: &SecretBox,
    scope: &str,
    name: &str,
    document: &mut serde_json::Value,
) -> Result<(), StoreError> {
    for (field, value) in header_values(document) {
        *value = secrets.seal(value, &template_owner(scope, name, &field))?;
    }
    Ok(())
}

/// Opens every sealed header value of a stored template document; values in clear (a
/// row written before they were sealed) are kept.
pub(super) fn open_template_document(
    secrets: &SecretBox,
    scope: &str,
    name: &str,
    document: &mut serde_json::Value,
) -> Result<(), StoreError> {
    for (field, value) in header_values(document) {
        if !SecretBox::is_sealed(value) {
            continue;
        }
        *value = secrets
            .open(value, &template_owner(scope, name, &field))
            .map_err(|source| StoreError::SecretUnreadable {
                pipeline: format!("template {scope}/{name}"),
                field: field.clone(),
                source,
            })?;
    }
    Ok(())
}

/// What an instance's sealed binding value is sealed for.
pub(super) fn binding_owner<'a>(tenant: &'a str, name: &'a str, field: &'a str) -> SecretOwner<'a> {
    SecretOwner {
        tenant,
        kind: INSTANCE,
        name,
        field,
    }
}

/// The path an instance's sealed binding value is sealed under.
pub(super) fn binding_field(placeholder: &str) -> String {
    format!("spec.bindings[{placeholder:?}].value")
}

/// What sealing one row's values again found: the values with how many were sealed
/// again, or why the row cannot be opened (a value sealed with a key not given).
type Resealed = Result<(serde_json::Value, u64), String>;

/// A template document's header values sealed again with the current key (values in
/// clear sealed for the first time).
fn reseal_template(
    secrets: &SecretBox,
    (scope, name, generation): (&str, &str, i64),
    mut document: serde_json::Value,
) -> Result<Resealed, StoreError> {
    let mut resealed = 0;
    for (field, value) in header_values(&mut document) {
        let owner = template_owner(scope, name, &field);
        let plaintext = if !SecretBox::is_sealed(value) {
            value.clone()
        } else if secrets.needs_reseal(value) {
            match secrets.open(value, &owner) {
                Ok(plaintext) => plaintext,
                Err(e) => {
                    return Ok(Err(format!(
                        "template {scope}/{name} generation {generation} {field}: {e}"
                    )));
                }
            }
        } else {
            continue;
        };
        *value = secrets.seal(&plaintext, &owner)?;
        resealed += 1;
    }
    Ok(Ok((document, resealed)))
}

/// An instance's sealed binding values sealed again with the current key.
fn reseal_bindings(
    secrets: &SecretBox,
    (tenant, name): (&str, &str),
    mut values: serde_json::Value,
) -> Result<Resealed, StoreError> {
    let mut resealed = 0;
    for (placeholder, sealed) in values.as_object_mut().into_iter().flatten() {
        let Some(text) = sealed.as_str().filter(|t| secrets.needs_reseal(t)) else {
            continue;
        };
        let field = binding_field(placeholder);
        let owner = binding_owner(tenant, name, &field);
        match secrets.open(text, &owner) {
            Ok(plaintext) => *sealed = secrets.seal(&plaintext, &owner)?.into(),
            Err(e) => return Ok(Err(format!("instance {tenant}/{name} {field}: {e}"))),
        }
        resealed += 1;
    }
    Ok(Ok((values, resealed)))
}

/// Counts one row in `report`; the values to write when some were sealed again.
fn tally(report: &mut RekeyReport, resealed: Resealed) -> Option<serde_json::Value> {
    match resealed {
        Err(unreadable) => report.unreadable.push(unreadable),
        Ok((_, 0)) => report.pipelines_current += 1,
        Ok((values, count)) => {
            report.pipelines_rekeyed += 1;
            report.values_rekeyed += count;
            return Some(values);
        }
    }
    None
}

impl Store {
    /// Seals every template header value and instance binding value again with the
    /// current key (a template row holding them in clear is sealed), adding to
    /// `report`: each row is one of `pipelines_rekeyed`, `pipelines_current` or
    /// `unreadable`.
    pub(super) async fn rekey_templates_and_instances(
        &self,
        actor: &Actor,
        report: &mut RekeyReport,
    ) -> Result<(), StoreError> {
        let keys: Vec<(String, String, i64)> = pipeline_templates::Entity::find()
            .select_only()
            .column(pipeline_templates::Column::Tenant)
            .column(pipeline_templates::Column::Name)
            .column(pipeline_templates::Column::Generation)
            .order_by_asc(pipeline_templates::Column::Tenant)
            .into_tuple()
            .all(self.reader())
            .await?;
        for (scope, name, generation) in keys {
            let mutation = self.mutation().await?;
            let transaction = mutation.transaction();
            let id = (scope.clone(), name.clone(), generation);
            let found = pipeline_templates::Entity::find_by_id(id).lock_exclusive();
            let Some(row) = found.one(transaction).await? else {
                continue;
            };
            let template = (scope.as_str(), name.as_str(), generation);
            let resealed = reseal_template(&self.inner.secrets, template, row.document.clone())?;
            let Some(document) = tally(report, resealed) else {
                continue;
            };
            let mut active = row.into_active_model();
            active.document = Set(document);
            active.update(transaction).await?;
            let tenant = (!scope.is_empty()).then_some(scope.as_str());
            (mutation.audit(actor, "rekey", TEMPLATE, tenant, &name)).await?;
            mutation.commit(Vec::new()).await?;
        }
        self.rekey_instances(actor, report).await
    }

    async fn rekey_instances(
        &self,
        actor: &Actor,
        report: &mut RekeyReport,
    ) -> Result<(), StoreError> {
        let keys: Vec<(String, String)> = pipeline_instances::Entity::find()
            .select_only()
            .column(pipeline_instances::Column::Tenant)
            .column(pipeline_instances::Column::Name)
            .order_by_asc(pipeline_instances::Column::Tenant)
            .order_by_asc(pipeline_instances::Column::Name)
            .into_tuple()
            .all(self.reader())
            .await?;
        for (tenant, name) in keys {
            let mutation = self.mutation().await?;
            let transaction = mutation.transaction();
            let id = (tenant.clone(), name.clone());
            let found = pipeline_instances::Entity::find_by_id(id).lock_exclusive();
            let Some(row) = found.one(transaction).await? else {
                continue;
            };
            let instance = (tenant.as_str(), name.as_str());
            let resealed =
                reseal_bindings(&self.inner.secrets, instance, row.sealed_values.clone())?;
            let Some(values) = tally(report, resealed) else {
                continue;
            };
            let mut active = row.into_active_model();
            active.sealed_values = Set(values);
            active.update(transaction).await?;
            (mutation.audit(actor, "rekey", INSTANCE, Some(&tenant), &name)).await?;
            mutation.commit(Vec::new()).await?;
        }
        Ok(())
    }
}
