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
//!   renders with the type's sample there, lists the binding as
//!   [pending](RenderedPipeline::pending) and marks the preview with
//!   [`PENDING_BINDINGS_ANNOTATION`]; the agent renders again with what it read
//!   ([`KeyValues::Resolved`]), through the same function, in its own context
//!   ([`super::pending`]).
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
/// Annotation of a pipeline rendered with pending bindings (a [preview](RenderedPipeline::preview)):
/// the placeholders the agent reads from a Secret or ConfigMap key, comma-separated.
/// Such a pipeline is never run as it is: the observer sends its instance instead,
/// for the agent to render ([`super::pending`]).
pub const PENDING_BINDINGS_ANNOTATION: &str = "telemetry.kaas-observer.io/pending-bindings";
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

/// Parses and validates every `PipelineInstance` in `text` (YAML or JSON, several
/// documents, a list), each on its own, as [`crate::document::parse_documents`] reads
/// pipelines.
pub fn parse_instances(
    text: &str,
    context: &ValidationContext,
) -> Vec<crate::document::Document<ValidatedInstance>> {
    crate::document::parse_text(text, context, parse_instance_value)
}

/// Parses and validates one `PipelineInstance` given as a YAML or JSON value.
pub fn parse_instance_value(
    location: String,
    value: serde_yaml::Value,
    context: &ValidationContext,
) -> crate::document::Document<ValidatedInstance> {
    crate::document::parse_kind(
        location,
        value,
        context,
        &[INSTANCE_KIND],
        validate_instance,
    )
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
    check_names(template, generation, spec, &mut errors);
    let (fills, pending) = fills_for(template, spec, values, context, &mut errors);
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
    let mut annotations = BTreeMap::from([
        (TEMPLATE_ANNOTATION.to_owned(), template.name().to_owned()),
        (
            TEMPLATE_GENERATION_ANNOTATION.to_owned(),
            generation.to_string(),
        ),
    ]);
    if !pending.is_empty() {
        let names: Vec<&str> = pending.iter().map(|b| b.placeholder.as_str()).collect();
        annotations.insert(PENDING_BINDINGS_ANNOTATION.to_owned(), names.join(","));
    }
    metadata.annotations = Some(annotations);
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

/// Checks that `spec` names `template` and, if it pins one, `generation`; and binds
/// only placeholders the template declares.
fn check_names(
    template: &ValidatedTemplate,
    generation: i64,
    spec: &PipelineInstanceSpec,
    errors: &mut FieldErrors,
) {
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
}

/// What each placeholder is filled with (a sample where its binding fails, with an
/// error), and the bindings left for the agent.
fn fills_for<'t>(
    template: &'t ValidatedTemplate,
    spec: &PipelineInstanceSpec,
    values: KeyValues<'_>,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> (BTreeMap<&'t str, Fill>, Vec<PendingBinding>) {
    let sample = sample_secret(context);
    let mut pending = Vec::new();
    let mut fills: BTreeMap<&str, Fill> = BTreeMap::new();
    for placeholder in template.placeholders() {
        let path = key("spec.bindings", &placeholder.name);
        let bound = match spec.bindings.get(&placeholder.name) {
            Some(binding) => bind(placeholder, binding, &path, values, errors, &mut pending),
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
    (fills, pending)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ProviderPolicy;
    use crate::templates::{PipelineTemplate, validate_template};

    const TEMPLATE: &str = r#"
metadata: {name: otlp-token}
spec:
  pipelineKind: TracePipeline
  placeholders:
    - {name: endpoint, type: url, description: The OTLP endpoint., required: true}
    - {name: token, type: secret, description: The bearer token., required: true}
    - {name: timeout, type: duration, description: The export timeout., default: 30s}
    - {name: tenant, type: string, description: The tenant header's value., default: shop}
  template:
    spec:
      output:
        otlp:
          endpoint: "%{endpoint}"
          timeout: "%{timeout}"
          headers: [{name: X-Tenant, value: "%{tenant}"}]
          authentication: {bearerToken: {value: "%{token}"}}
"#;

    fn context() -> ValidationContext {
        ValidationContext::tenant_default()
    }

    fn template() -> ValidatedTemplate {
        let resource: PipelineTemplate = serde_yaml::from_str(TEMPLATE).unwrap();
        validate_template(&resource, &context()).expect("a valid template")
    }

    fn instance(spec: &str) -> Result<ValidatedInstance, ValidationErrors> {
        let text = format!("metadata: {{name: shop-traces}}\nspec:\n{spec}");
        let resource: PipelineInstance = serde_yaml::from_str(&text).unwrap();
        validate_instance(&resource, &context())
    }

    const BOUND: &str = r#"
  template: {name: otlp-token}
  bindings:
    endpoint: {value: "https://tempo.shop.example:4317"}
    token: {secretKeyRef: {name: tempo-binding, namespace: kaas-observer, key: token}}
"#;

    fn rendered(spec: &str, values: KeyValues<'_>) -> Result<RenderedPipeline, Vec<String>> {
        let instance = instance(spec).map_err(|e| e.lines())?;
        render(&template(), 4, &instance, values, &context()).map_err(|e| e.lines())
    }

    fn trace(pipeline: ValidatedResource) -> Box<crate::traces::ValidatedTracePipeline> {
        match pipeline {
            ValidatedResource::Trace(pipeline) => pipeline,
            other => panic!("a TracePipeline, got {}", other.kind()),
        }
    }

    #[test]
    fn a_bound_instance_renders_with_defaults_and_a_secret_reference() {
        let rendered = rendered(BOUND, KeyValues::Deferred).expect("renders");
        assert_eq!(
            (rendered.template(), rendered.generation()),
            ("otlp-token", 4)
        );
        let pipeline = trace(rendered.into_pipeline().expect("nothing pending"));
        assert_eq!(pipeline.name(), "shop-traces");
        let otlp = pipeline.spec().output.otlp.as_ref().unwrap();
        assert_eq!(otlp.endpoint, "https://tempo.shop.example:4317");
        assert_eq!(otlp.timeout.as_deref(), Some("30s"));
        assert_eq!(otlp.headers[0].value.as_ref().unwrap().expose(), "shop");
        let token = otlp
            .authentication
            .as_ref()
            .unwrap()
            .bearer_token
            .as_ref()
            .unwrap();
        assert!(token.value.is_none(), "the secret is never a value");
        assert_eq!(token.secret_ref().unwrap().name, "tempo-binding");
    }

    #[test]
    fn unbound_required_placeholders_are_named() {
        let errors = rendered("  template: {name: otlp-token}\n", KeyValues::Deferred).unwrap_err();
        assert_eq!(
            errors,
            [
                r#"spec.bindings["endpoint"]: required by template "otlp-token": The OTLP endpoint. (url); bind it to a value, a Secret or ConfigMap key"#,
                r#"spec.bindings["token"]: required by template "otlp-token": The bearer token. (secret); bind it to a value, a Secret or ConfigMap key"#,
            ]
        );
    }

    #[test]
    fn wrongly_typed_static_values_are_named() {
        let spec = BOUND.replace("https://tempo.shop.example:4317", "tempo:4317")
            + "    timeout: {value: soon}\n";
        let errors = rendered(&spec, KeyValues::Deferred).unwrap_err();
        assert_eq!(
            errors,
            [
                r#"spec.bindings["endpoint"].value: "tempo:4317" is not a url: an absolute http(s) URL without credentials in it, which %{endpoint} (url) needs"#,
                r#"spec.bindings["timeout"].value: "soon" is not a duration: a number and a unit (ms, s, m, h, d, w, y), which %{timeout} (duration) needs"#,
            ]
        );
    }

    #[test]
    fn a_secret_takes_only_a_secret_key() {
        let as_value = BOUND.replace(
            "token: {secretKeyRef: {name: tempo-binding, namespace: kaas-observer, key: token}}",
            "token: {value: hunter2}",
        );
        let errors = rendered(&as_value, KeyValues::Deferred).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(r#"spec.bindings["token"].value: %{token} is a secret"#));
        assert!(!errors[0].contains("hunter2"));
        let from_config_map = BOUND.replace("token: {secretKeyRef:", "token: {configMapKeyRef:");
        let errors = rendered(&from_config_map, KeyValues::Deferred).unwrap_err();
        assert_eq!(
            errors,
            [
                r#"spec.bindings["token"].configMapKeyRef: %{token} is a secret: bind it to a Secret key, not a ConfigMap's"#
            ]
        );
    }

    #[test]
    fn bindings_name_declared_placeholders_and_existing_defaults() {
        let spec = format!("{BOUND}    region: {{value: eu}}\n    endpoint2: {{default: true}}\n");
        let errors = rendered(&spec, KeyValues::Deferred).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with(
                r#"spec.bindings["region"]: template "otlp-token" declares no placeholder %{region}; it declares endpoint, token, timeout, tenant"#
            )),
            "{errors:?}"
        );
        let default_less = BOUND.replace(
            r#"endpoint: {value: "https://tempo.shop.example:4317"}"#,
            "endpoint: {default: true}",
        );
        let errors = rendered(&default_less, KeyValues::Deferred).unwrap_err();
        assert_eq!(
            errors,
            [
                r#"spec.bindings["endpoint"].default: %{endpoint} has no default; bind it to a value or a key"#
            ]
        );
    }

    #[test]
    fn a_value_refused_where_it_stands_is_blamed_on_its_binding() {
        let spec = format!("{BOUND}    tenant: {{value: \"shop\\nX-Evil: 1\"}}\n");
        let errors = rendered(&spec, KeyValues::Deferred).unwrap_err();
        assert_eq!(
            errors,
            [
                r#"spec.bindings["tenant"]: contains a control character (such as a line break), which HTTP headers cannot carry (where %{tenant} stands, spec.template.spec.output.otlp.headers[0].value)"#
            ]
        );
        let mut policy = ProviderPolicy::tenant_default();
        policy.central_endpoints =
            vec![url::Url::parse("https://tempo.shop.example:4317").unwrap()];
        let instance = instance(BOUND).unwrap();
        let errors = render(
            &template(),
            1,
            &instance,
            KeyValues::Deferred,
            &ValidationContext::observer(policy),
        )
        .unwrap_err()
        .lines();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                r#"spec.bindings["endpoint"]: this is the provider's central receiver"#
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bound_value_is_inserted_once_never_expanded_again() {
        let spec = format!("{BOUND}    tenant: {{value: \"%{{endpoint}}-%%{{x}}\"}}\n");
        let pipeline = trace(
            rendered(&spec, KeyValues::Deferred)
                .unwrap()
                .into_pipeline()
                .unwrap(),
        );
        let header = &pipeline.spec().output.otlp.as_ref().unwrap().headers[0];
        assert_eq!(header.value.as_ref().unwrap().expose(), "%{endpoint}-%%{x}");
    }

    #[test]
    fn key_bound_values_are_pending_for_the_observer_and_read_by_the_agent() {
        let spec = BOUND.replace(
            r#"endpoint: {value: "https://tempo.shop.example:4317"}"#,
            "endpoint: {configMapKeyRef: {name: tempo, namespace: kaas-observer, key: url}}",
        );
        let rendered_here = rendered(&spec, KeyValues::Deferred).expect("renders with a sample");
        let key = KeyRef {
            source: KeySource::ConfigMap,
            namespace: "kaas-observer".into(),
            name: "tempo".into(),
            key: "url".into(),
        };
        assert_eq!(
            rendered_here.pending(),
            [PendingBinding {
                placeholder: "endpoint".into(),
                type_: PlaceholderType::Url,
                key: key.clone()
            }]
        );
        let preview = trace(rendered_here.preview().clone());
        assert_eq!(
            preview.spec().output.otlp.as_ref().unwrap().endpoint,
            "https://sample.example"
        );
        assert_eq!(
            preview.resource().metadata.annotations.as_ref().unwrap()[PENDING_BINDINGS_ANNOTATION],
            "endpoint",
            "a preview says it is one"
        );
        assert!(
            rendered_here.into_pipeline().is_err(),
            "never run with a sample"
        );

        let read = BTreeMap::from([(key.clone(), "https://tempo.internal:4317".to_owned())]);
        let agent = rendered(&spec, KeyValues::Resolved(&read)).expect("renders");
        let pipeline = trace(agent.into_pipeline().expect("complete"));
        assert_eq!(
            pipeline.spec().output.otlp.as_ref().unwrap().endpoint,
            "https://tempo.internal:4317"
        );
        let annotations = pipeline.resource().metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(PENDING_BINDINGS_ANNOTATION));

        let missing = rendered(&spec, KeyValues::Resolved(&BTreeMap::new())).unwrap_err();
        assert_eq!(
            missing,
            [
                r#"spec.bindings["endpoint"].configMapKeyRef: ConfigMap kaas-observer/tempo key "url" does not exist"#
            ]
        );
        let wrong = BTreeMap::from([(key, "s3cret-ish".to_owned())]);
        let errors = rendered(&spec, KeyValues::Resolved(&wrong)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].contains("s3cret"), "{errors:?}");
    }

    #[test]
    fn the_template_name_and_a_pinned_generation_must_match() {
        let spec = BOUND.replace("{name: otlp-token}", "{name: otlp-token, generation: 3}");
        assert_eq!(
            rendered(&spec, KeyValues::Deferred).unwrap_err(),
            ["spec.template.generation: pins generation 3, but was rendered with generation 4"]
        );
        let other = BOUND.replace("{name: otlp-token}", "{name: other}");
        assert_eq!(
            rendered(&other, KeyValues::Deferred).unwrap_err(),
            [r#"spec.template.name: names template "other", but was rendered with "otlp-token""#]
        );
    }

    #[test]
    fn inputs_and_clusters_narrow_never_widen() {
        let spec = format!(
            "{BOUND}  inputs: {{namespaces: [shop, kube-system]}}\n  clusterSelector: {{matchLabels: {{env: prod}}}}\n"
        );
        let pipeline = trace(
            rendered(&spec, KeyValues::Deferred)
                .unwrap()
                .into_pipeline()
                .unwrap(),
        );
        let namespaces = &pipeline.spec().input.namespaces;
        assert_eq!(
            namespaces.include,
            ["shop"],
            "kube-system is not the template's to give"
        );
        assert_eq!(pipeline.spec().cluster_selector.match_labels["env"], "prod");
        let pods = format!("{BOUND}  inputs: {{podSelector: {{matchLabels: {{app: shop}}}}}}\n");
        assert_eq!(
            rendered(&pods, KeyValues::Deferred).unwrap_err(),
            [
                "spec.inputs.podSelector: a TracePipeline takes pushed spans, whose pods' labels it cannot check; narrow with namespaces"
            ]
        );
        let nothing = format!("{BOUND}  inputs: {{namespaces: [kube-system]}}\n");
        let errors = rendered(&nothing, KeyValues::Deferred).unwrap_err();
        assert!(errors[0].starts_with("spec.inputs.namespaces: the template's otlp and zipkin input takes none of kube-system"), "{errors:?}");
    }

    #[test]
    fn an_instance_is_checked_before_its_template_is_known() {
        let errors = instance(
            r#"
  template: {name: Otlp_Token, generation: 0}
  bindings:
    endpoint: {value: "https://x.example", default: true}
    token: {secretKeyRef: {name: t, namespace: kube-system, key: token}}
    "bad-name": {default: true}
    empty: {}
  inputs: {namespaces: [Shop]}
"#,
        )
        .unwrap_err()
        .lines();
        let paths: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.split_once(": ").map(|(p, _)| p))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.template.name",
                "spec.template.generation",
                r#"spec.bindings["bad-name"]"#,
                r#"spec.bindings["empty"]"#,
                r#"spec.bindings["endpoint"]"#,
                r#"spec.bindings["token"].secretKeyRef.namespace"#,
                "spec.inputs.namespaces[0]",
            ],
            "{errors:#?}"
        );
    }
}
