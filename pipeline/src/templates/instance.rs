//! `PipelineInstance`: a pipeline made from a [`PipelineTemplate`](super::PipelineTemplate).
//! It names the template (pinned to one generation, or following the latest), binds
//! each placeholder, and may narrow the template's inputs to some namespaces or pods
//! and its clusters to some of them.
//!
//! A placeholder is bound to one of:
//! - a static `value`, checked against the placeholder's type (never for a `secret`);
//! - a key of a Secret (`secretKeyRef`) or ConfigMap (`configMapKeyRef`) in the
//!   workload cluster, within the namespaces the provider allows. A `secret`
//!   placeholder becomes the pipeline's own `valueFrom.secretKeyRef`, which the agent
//!   resolves as for any pipeline. Any other type is read by the agent: the observer
//!   renders with the type's sample there and lists the binding as
//!   [pending](RenderedPipeline::pending); the agent renders again with what it read
//!   ([`KeyValues::Resolved`]), through the same function, in its own context.
//! - `default: true`, the template's default; an optional placeholder left unbound
//!   gets it too.
//!
//! [`render`] is pure: (template, generation, instance, key values, context) → a
//! validated pipeline of the template's kind, or every error, a binding's at
//! `spec.bindings["name"]` naming the placeholder.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::document::ValidatedResource;
use crate::errors::{FieldError, FieldErrors, ValidationErrors, field, index, key};
use crate::names::check_dns1123_label;
use crate::pipeline::{check_metadata, is_default};
use crate::policy::ValidationContext;
use crate::secret::SecretKeyRef;
use crate::selector::{ClusterSelector, PodSelector};
use crate::status::Condition;

use super::kinds::{self, Narrowing};
use super::placeholder::{MAX_PLACEHOLDERS, MAX_VALUE_BYTES, Placeholder, PlaceholderType};
use super::scan::{Fill, fill};
use super::syntax::is_placeholder_name;
use super::{ValidatedTemplate, blamed, sample_secret, template_path};

/// `kind` of an instance as written in documents.
pub const INSTANCE_KIND: &str = "PipelineInstance";
/// Annotation of a rendered pipeline: the template it was made from.
pub const TEMPLATE_ANNOTATION: &str = "telemetry.kaas-observer.io/template";
/// Annotation of a rendered pipeline: the template generation it was made from.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "telemetry.kaas-observer.io/template-generation";
/// Most namespaces an instance narrows its inputs to.
pub const MAX_NARROWING_NAMESPACES: usize = 64;

/// A pipeline made from a template: which template, and what each placeholder is.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "telemetry.kaas-observer.io",
    version = "v1alpha1",
    kind = "PipelineInstance",
    plural = "pipelineinstances",
    shortname = "pi",
    category = "telemetry",
    status = "PipelineInstanceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A pipeline made from a PipelineTemplate: the template, a binding for each placeholder, and optionally narrower inputs and clusters.",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.template.name"}"#,
    printcolumn = r#"{"name":"Generation","type":"integer","jsonPath":".status.templateGeneration"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"ConfigurationApplied\")].status"}"#,
    printcolumn = r#"{"name":"Flow","type":"string","jsonPath":".status.conditions[?(@.type==\"FlowHealthy\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineInstanceSpec {
    /// The template, and which of its generations.
    #[serde(default)]
    pub template: TemplateRef,
    /// A binding for each placeholder, by name; optional ones may be left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bindings: BTreeMap<String, Binding>,
    /// Narrower inputs than the template's.
    #[serde(default, skip_serializing_if = "is_default")]
    pub inputs: InstanceInputs,
    /// Only clusters this selects, besides those the template selects.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cluster_selector: ClusterSelector,
}

/// Names a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateRef {
    /// The template's name.
    #[serde(default)]
    pub name: String,
    /// The template generation to use; the latest, and every later one, when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// What one placeholder is bound to; exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    /// The value itself (not for a `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A key of a Secret in the workload cluster, read by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A key of a ConfigMap in the workload cluster, read by the agent (not for a
    /// `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<SecretKeyRef>,
    /// The template's default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

/// How an instance narrows the template's inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceInputs {
    /// Only these namespaces, of those the template's inputs take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Only pods these labels select (log pipelines' runtime input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<PodSelector>,
}

/// What is known about an instance: the pipeline conditions, and which template
/// generation it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInstanceStatus {
    /// The generation of the instance this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The template generation the running pipeline was rendered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_generation: Option<i64>,
    /// The binding that keeps the instance from being rendered (e.g. its Secret key is
    /// missing), by placeholder name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_binding: Option<String>,
    /// Current conditions, one per type, as a pipeline's.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// An instance that passed [`validate_instance`].
#[derive(Clone, Debug)]
pub struct ValidatedInstance {
    resource: PipelineInstance,
}

impl ValidatedInstance {
    /// The instance's name, which its pipeline gets.
    pub fn name(&self) -> &str {
        self.resource.metadata.name.as_deref().unwrap_or_default()
    }

    /// The resource as it was validated.
    pub fn resource(&self) -> &PipelineInstance {
        &self.resource
    }

    /// The template it names.
    pub fn template(&self) -> &TemplateRef {
        &self.resource.spec.template
    }

    /// Every Secret or ConfigMap key it binds, with the placeholder's name: what an
    /// agent reads (and reports missing) for it.
    pub fn key_refs(&self) -> Vec<(&str, KeyRef)> {
        self.resource
            .spec
            .bindings
            .iter()
            .filter_map(|(name, binding)| Some((name.as_str(), binding.key_ref()?)))
            .collect()
    }
}

/// Where a key-bound value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeySource {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// One key of one Secret or ConfigMap in the workload cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef {
    /// Secret or ConfigMap.
    pub source: KeySource,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The key.
    pub key: String,
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            KeySource::Secret => "Secret",
            KeySource::ConfigMap => "ConfigMap",
        };
        write!(
            f,
            "{source} {}/{} key {:?}",
            self.namespace, self.name, self.key
        )
    }
}

impl Binding {
    /// The Secret or ConfigMap key it binds, if it binds one.
    pub fn key_ref(&self) -> Option<KeyRef> {
        let (source, reference) = match (&self.secret_key_ref, &self.config_map_key_ref) {
            (Some(reference), _) => (KeySource::Secret, reference),
            (None, Some(reference)) => (KeySource::ConfigMap, reference),
            (None, None) => return None,
        };
        Some(KeyRef {
            source,
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        })
    }

    fn sources(&self) -> Vec<&'static str> {
        [
            ("value", self.value.is_some()),
            ("secretKeyRef", self.secret_key_ref.is_some()),
            ("configMapKeyRef", self.config_map_key_ref.is_some()),
            ("default", self.default),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Checks an instance on its own, before its template is known: its name, the
/// template it names, each binding's shape and references, its narrowing. Pure.
pub fn validate_instance(
    instance: &PipelineInstance,
    context: &ValidationContext,
) -> Result<ValidatedInstance, ValidationErrors> {
    let mut errors = FieldErrors::default();
    check_metadata(&instance.metadata, &mut errors);
    let spec = &instance.spec;
    if let Err(reason) = check_dns1123_label(&spec.template.name) {
        errors.add("spec.template.name", reason);
    }
    if spec.template.generation.is_some_and(|g| g < 1) {
        errors.add(
            "spec.template.generation",
            "a generation counts from 1; leave it out to follow the latest",
        );
    }
    if spec.bindings.len() > MAX_PLACEHOLDERS {
        errors.add(
            "spec.bindings",
            format!(
                "more than {MAX_PLACEHOLDERS} bindings; no template has that many placeholders"
            ),
        );
    }
    for (name, binding) in &spec.bindings {
        let path = key("spec.bindings", name);
        if !is_placeholder_name(name) {
            errors.add(&path, format!("{name:?} is not a placeholder name"));
        }
        match binding.sources().as_slice() {
            [_] => {}
            [] => errors.add(
                &path,
                "set one of value, secretKeyRef, configMapKeyRef or default",
            ),
            several => errors.add(
                &path,
                format!(
                    "set only one of value, secretKeyRef, configMapKeyRef or default; found {}",
                    several.join(" and ")
                ),
            ),
        }
        if binding
            .value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_VALUE_BYTES)
        {
            errors.add(
                field(&path, "value"),
                format!("longer than {MAX_VALUE_BYTES} bytes"),
            );
        }
        if let Some(reference) = &binding.secret_key_ref {
            reference.validate(&field(&path, "secretKeyRef"), context, &mut errors);
        }
        if let Some(reference) = &binding.config_map_key_ref {
            reference.validate(&field(&path, "configMapKeyRef"), context, &mut errors);
        }
    }
    let namespaces = &spec.inputs.namespaces;
    if namespaces.len() > MAX_NARROWING_NAMESPACES {
        errors.add(
            "spec.inputs.namespaces",
            format!("more than {MAX_NARROWING_NAMESPACES} namespaces"),
        );
    }
    for (i, namespace) in namespaces.iter().enumerate() {
        if let Err(reason) = check_dns1123_label(namespace) {
            errors.add(index("spec.inputs.namespaces", i), reason);
        }
    }
    if let Some(selector) = &spec.inputs.pod_selector {
        selector.validate("spec.inputs.podSelector", &mut errors);
    }
    spec.cluster_selector
        .validate("spec.clusterSelector", &mut errors);
    errors.into_result()?;
    Ok(ValidatedInstance {
        resource: instance.clone(),
    })
}

/// The values of key-bound placeholders, as far as the caller knows them.
#[derive(Clone, Copy, Debug)]
pub enum KeyValues<'a> {
    /// The observer: it never reads workload-cluster keys. Key-bound values are checked
    /// with their type's sample and listed as pending.
    Deferred,
    /// The agent: the values it read, by key; a bound key not among them is missing.
    Resolved(&'a BTreeMap<KeyRef, String>),
}

/// A binding the agent resolves before the pipeline can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingBinding {
    /// The placeholder's name.
    pub placeholder: String,
    /// Its type, which the value read must have.
    pub type_: PlaceholderType,
    /// Where the value is read from.
    pub key: KeyRef,
}

/// An instance rendered into a pipeline of its template's kind.
#[derive(Clone, Debug)]
pub struct RenderedPipeline {
    pipeline: ValidatedResource,
    template: String,
    generation: i64,
    pending: Vec<PendingBinding>,
}

impl RenderedPipeline {
    /// The template it was rendered from.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The template generation it was rendered from.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// Bindings only the agent can resolve; where they stand, [`Self::preview`] holds
    /// their type's sample.
    pub fn pending(&self) -> &[PendingBinding] {
        &self.pending
    }

    /// The pipeline as rendered, samples standing for pending bindings: for showing and
    /// diffing, never for running.
    pub fn preview(&self) -> &ValidatedResource {
        &self.pipeline
    }

    /// The pipeline to run, once nothing is pending; otherwise the pending bindings.
    pub fn into_pipeline(self) -> Result<ValidatedResource, Vec<PendingBinding>> {
        if self.pending.is_empty() {
            Ok(self.pipeline)
        } else {
            Err(self.pending)
        }
    }
}

/// Renders `instance` from generation `generation` of `template` and validates the
/// pipeline with the kind's validator in `context`. Pure. Every problem is returned:
/// an unbound required placeholder, a wrongly typed value or a value refused where it
/// stands at the binding (`spec.bindings["name"]`), others at their field.
pub fn render(
    template: &ValidatedTemplate,
    generation: i64,
    instance: &ValidatedInstance,
    values: KeyValues<'_>,
    context: &ValidationContext,
) -> Result<RenderedPipeline, ValidationErrors> {
    let mut errors = FieldErrors::default();
    let spec = &instance.resource.spec;
    if spec.template.name != template.name() {
        errors.add(
            "spec.template.name",
            format!(
                "names template {:?}, but was rendered with {:?}",
                spec.template.name,
                template.name()
            ),
        );
    }
    if let Some(pinned) = spec.template.generation
        && pinned != generation
    {
        errors.add(
            "spec.template.generation",
            format!("pins generation {pinned}, but was rendered with generation {generation}"),
        );
    }
    for name in spec.bindings.keys() {
        if template.placeholder(name).is_none() {
            let declared: Vec<&str> = template
                .placeholders()
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            errors.add(
                key("spec.bindings", name),
                format!(
                    "template {:?} declares no placeholder %{{{name}}}; it declares {}",
                    template.name(),
                    declared.join(", ")
                ),
            );
        }
    }
    let sample = sample_secret(context);
    let mut pending = Vec::new();
    let mut fills: BTreeMap<&str, Fill> = BTreeMap::new();
    for placeholder in template.placeholders() {
        let path = key("spec.bindings", &placeholder.name);
        let bound = match spec.bindings.get(&placeholder.name) {
            Some(binding) => bind(
                placeholder,
                binding,
                &path,
                values,
                &mut errors,
                &mut pending,
            ),
            None if placeholder.required => {
                errors.add(
                    &path,
                    format!(
                        "required by template {:?}: {} ({}); bind it to a value, a Secret or \
                         ConfigMap key{}",
                        template.name(),
                        placeholder.description,
                        placeholder.type_.name(),
                        if placeholder.default.is_some() {
                            " or the default"
                        } else {
                            ""
                        }
                    ),
                );
                None
            }
            None => placeholder.default.clone().map(Fill::Text),
        };
        let fallback = || match placeholder.type_ {
            PlaceholderType::Secret => Fill::Secret(sample.clone()),
            other => Fill::Text(other.sample().to_owned()),
        };
        fills.insert(&placeholder.name, bound.unwrap_or_else(fallback));
    }
    let filled = fill(template.spec_json(), &|name| {
        fills
            .get(name)
            .cloned()
            .unwrap_or(Fill::Text(String::new()))
    });
    let uses = template.uses();
    let report = |error: FieldError, errors: &mut FieldErrors| {
        let path = template_path(&error.path);
        let blamed = blamed(uses, &path).next().map(|u| u.name.clone());
        match blamed {
            Some(blamed) => errors.push(FieldError {
                path: key("spec.bindings", &blamed),
                reason: format!("{} (where %{{{blamed}}} stands, {path})", error.reason),
            }),
            None => errors.push(FieldError {
                path,
                reason: error.reason,
            }),
        }
    };
    let mut kind_spec = match kinds::read_spec(template.kind(), filled) {
        Ok(kind_spec) => kind_spec,
        Err(error) => {
            report(error, &mut errors);
            return Err(errors.into_errors());
        }
    };
    let narrowing = Narrowing {
        namespaces: &spec.inputs.namespaces,
        pod_selector: spec.inputs.pod_selector.as_ref(),
        cluster_selector: &spec.cluster_selector,
    };
    for (at, reason) in kind_spec.narrow(narrowing) {
        errors.push(FieldError {
            path: field("spec", at),
            reason,
        });
    }
    let mut metadata = ObjectMeta {
        name: instance.resource.metadata.name.clone(),
        labels: instance.resource.metadata.labels.clone(),
        ..ObjectMeta::default()
    };
    metadata.annotations = Some(BTreeMap::from([
        (TEMPLATE_ANNOTATION.to_owned(), template.name().to_owned()),
        (
            TEMPLATE_GENERATION_ANNOTATION.to_owned(),
            generation.to_string(),
        ),
    ]));
    match kinds::validate_spec(kind_spec, metadata, context) {
        Ok(pipeline) => {
            errors.into_result()?;
            Ok(RenderedPipeline {
                pipeline,
                template: template.name().to_owned(),
                generation,
                pending,
            })
        }
        Err(invalid) => {
            for error in invalid.0 {
                report(error, &mut errors);
            }
            Err(errors.into_errors())
        }
    }
}

/// What `binding` fills `placeholder` with, or `None` (and an error) when it cannot.
fn bind(
    placeholder: &Placeholder,
    binding: &Binding,
    path: &str,
    values: KeyValues<'_>,
    errors: &mut FieldErrors,
    pending: &mut Vec<PendingBinding>,
) -> Option<Fill> {
    let name = &placeholder.name;
    let type_ = placeholder.type_;
    let secret = type_ == PlaceholderType::Secret;
    if binding.default {
        if placeholder.default.is_none() {
            errors.add(
                field(path, "default"),
                format!("%{{{name}}} has no default; bind it to a value or a key"),
            );
        }
        return placeholder.default.clone().map(Fill::Text);
    }
    if let Some(value) = &binding.value {
        if secret {
            errors.add(
                field(path, "value"),
                format!(
                    "%{{{name}}} is a secret: bind it to a Secret key with secretKeyRef, so its \
                     value never passes through the observer"
                ),
            );
            return None;
        }
        if let Err(reason) = type_.check(value, true) {
            errors.add(
                field(path, "value"),
                format!("{reason}, which %{{{name}}} ({}) needs", type_.name()),
            );
            return None;
        }
        return Some(Fill::Text(value.clone()));
    }
    if let (true, Some(reference)) = (secret, &binding.secret_key_ref) {
        return Some(Fill::Secret(reference.clone()));
    }
    let key_ref = binding.key_ref()?;
    let key_path = field(
        path,
        match key_ref.source {
            KeySource::Secret => "secretKeyRef",
            KeySource::ConfigMap => "configMapKeyRef",
        },
    );
    if secret {
        errors.add(
            &key_path,
            format!("%{{{name}}} is a secret: bind it to a Secret key, not a ConfigMap's"),
        );
        return None;
    }
    match values {
        KeyValues::Deferred => {
            pending.push(PendingBinding {
                placeholder: name.clone(),
                type_,
                key: key_ref,
            });
            None
        }
        KeyValues::Resolved(read) => match read.get(&key_ref) {
            None => {
                errors.add(&key_path, format!("{key_ref} does not exist"));
                None
            }
            Some(value) => match type_.check(value, false) {
                Ok(()) => Some(Fill::Text(value.clone())),
                Err(reason) => {
                    errors.add(
                        &key_path,
                        format!(
                            "{reason} in {key_ref}, which %{{{name}}} ({}) needs",
                            type_.name()
                        ),
                    );
                    None
                }
            },
        },
    }
}
