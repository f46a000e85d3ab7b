//! `PipelineTemplate`: a complete pipeline spec of one kind (`MetricPipeline`,
//! `LogPipeline` or `TracePipeline`) with placeholders in its string fields, which a
//! tenant turns into a pipeline by binding each placeholder ([`instance`]).
//!
//! Like every pipeline kind it is read in three steps: serde with
//! `deny_unknown_fields` for the envelope and the placeholder declarations (the
//! pipeline spec itself stays JSON until it is filled in, since its strings are not yet
//! values); [`validate_template`], pure and complete, every error with its field path;
//! and a [`ValidatedTemplate`], the only thing [`instance::render`] takes.
//!
//! # The placeholder syntax: `%{name}`, with `%%{` for a literal `%{`
//!
//! A placeholder is `%{` + a name (a letter, then letters, digits or `_`) + `}`;
//! `%%{` is a literal `%{`; every other character is itself ([`syntax`]). `%{` always
//! opens a placeholder, so a malformed one (`%{ name }`, `%{2}`, an unclosed `%{`) is
//! refused with its path instead of passing through as text, and [`syntax::escape`]
//! turns any pipeline string into template text meaning exactly that string. It was
//! chosen against every string syntax the model already accepts:
//! - **relabel replacements** (`$1`, `${1}`, `${name}`, `$$`) and everything else
//!   Prometheus, envsubst or Kustomize give `$` a meaning in: `$` means nothing here,
//!   so `replacement: ${1}` survives templating unchanged (fixture
//!   `good/relabel-replacement-survives.yaml`). `${name}` or `$(name)` would collide.
//! - **regexes** (filters, relabel `regex`, multiline patterns, span matchers; RE2
//!   syntax): `{` after an atom opens a counted repetition, which takes digits only, so
//!   no valid regex contains `%{name}`; the rare `%{2}` ("two percent signs") is written
//!   `%%{2}` in a template.
//! - **Elasticsearch index patterns** (`logs-%Y.%m.%d`, `%N`, `%%`): `%` followed by
//!   a letter or `%` keeps its meaning; `%{` is no specifier (the index check refuses
//!   it), so a pattern never needs it. A pattern holding `%%{` (a literal `%` and `{`)
//!   is written `%%%{`.
//! - **URLs**: `%` starts a percent-encoded byte, always two hex digits; `%{` is never
//!   valid percent-encoding, and `{` is not a URL character.
//! - **Go templates** (`{{ .name }}`, Helm, Alertmanager) and shell arithmetic
//!   (`$(( ))`): a template can itself be shipped inside a Helm chart or a script
//!   without either tool touching it.
//!
//! Substitution is a single pass over the parsed string: a bound value is inserted as
//! it is, so a value containing `%{other}` or `%%{` is never expanded again.
//!
//! # What a placeholder may stand for
//!
//! Placeholders stand in string values only, never in field names or map keys. Each is
//! declared with a [type](placeholder::PlaceholderType): `string`, `url`, `duration`,
//! `quantity`, or `secret`, which is bound to a Secret key only and stands only as the
//! whole `value` of a credential, TLS material or header value, where the model accepts
//! `valueFrom.secretKeyRef` (it is rendered as exactly that, so the observer never sees
//! the value). Credentials and TLS keys and certificates take secret placeholders
//! only (a CA is public). A header name and a label name (relabel `targetLabel` and
//! `sourceLabels`, Loki stream labels, selector keys) are never placeholders: the
//! reserved headers and labels must be checked where the template is written, not
//! where it is bound. The central
//! receive endpoint and the reserved headers are refused wherever a default, an
//! example or a static value lands, since every rendered pipeline passes the kind's own
//! validator in the observer's [`ValidationContext`]; a value the agent reads from a
//! Secret or ConfigMap key is checked when the agent renders the instance again with
//! it ([`instance::KeyValues::Resolved`]), in the agent's context.
//!
//! # Validation
//!
//! Every placeholder used is declared and every declared one is used; the spec, with
//! each placeholder's sample (its example, else its default, else a sample of its type;
//! a secret becomes a reference to a sample key in an allowed namespace) substituted,
//! passes the kind's validator, and its errors are reported at their field in the
//! template (`spec.template.spec.output...`), naming the placeholder whose sample was
//! used there.

pub mod instance;
pub mod kinds;
pub mod pending;
pub mod placeholder;
pub mod scan;
pub mod syntax;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::document::{Document, ValidatedResource};
use crate::errors::{FieldError, FieldErrors, ValidationErrors, field, index};
use crate::pipeline::check_metadata;
use crate::policy::{DEFAULT_AGENT_NAMESPACE, ValidationContext};
use crate::secret::SecretKeyRef;

pub use self::instance::{
    Binding, INSTANCE_KIND, KeyRef, KeySource, KeyValues, PENDING_BINDINGS_ANNOTATION,
    PendingBinding, PipelineInstance, PipelineInstanceSpec, PipelineInstanceStatus,
    RenderedPipeline, TEMPLATE_ANNOTATION, TEMPLATE_GENERATION_ANNOTATION, ValidatedInstance,
    parse_instance_value, parse_instances, render, validate_instance,
};
pub use self::kinds::PipelineKind;
pub use self::pending::{
    PendingInstance, ValidatedPendingInstance, pending_instance, validate_pending,
};
pub use self::placeholder::{Placeholder, PlaceholderType};
pub use self::scan::PlaceholderUse;

use self::placeholder::{MAX_DESCRIPTION_LEN, MAX_PLACEHOLDERS};
use self::scan::{Fill, fill, is_at_or_below, scan};

/// `kind` of a template as written in documents.
pub const TEMPLATE_KIND: &str = "PipelineTemplate";
/// Where the pipeline spec sits in a template; error paths into it start with this.
pub const TEMPLATE_SPEC_PATH: &str = "spec.template.spec";
/// Most places placeholders stand in one template: with [`placeholder::MAX_VALUE_BYTES`]
/// per value, bound values add at most 2 MiB to a pipeline, half the agent's limit
/// for a whole configuration.
pub const MAX_PLACEHOLDER_USES: usize = 128;
/// The name a template's pipeline is checked under: a tenant's name, so the check
/// grants nothing the provider's own pipelines (`kaas-*`) may do.
const CHECK_NAME: &str = "template-check";

/// A pipeline template: a pipeline spec of one kind with placeholders, and their
/// declarations.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.kaas-observer.io",
    version = "v1alpha1",
    kind = "PipelineTemplate",
    plural = "pipelinetemplates",
    shortname = "ptpl",
    category = "telemetry",
    derive = "PartialEq",
    derive = "Default",
    doc = "A pipeline template: a pipeline spec of one kind with %{placeholders} in its strings, which PipelineInstances bind.",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.pipelineKind"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineTemplateSpec {
    /// The kind of pipeline the template produces: `MetricPipeline`, `LogPipeline` or
    /// `TracePipeline`.
    pub pipeline_kind: PipelineKind,
    /// What the template is for, shown to tenants choosing one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The placeholders the spec uses, each declared once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placeholders: Vec<Placeholder>,
    /// The pipeline the template produces.
    #[serde(default)]
    pub template: PipelineBody,
}

/// The pipeline a template produces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineBody {
    /// A spec of the template's pipeline kind, with `%{name}` placeholders in its
    /// strings (`%%{` for a literal `%{`).
    #[serde(default)]
    #[schemars(schema_with = "pipeline_spec_schema")]
    pub spec: serde_json::Value,
}

/// Any object: the spec is checked as its kind's spec once placeholders are filled in.
fn pipeline_spec_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A spec of the template's pipelineKind, with %{name} placeholders in its strings.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A template that passed [`validate_template`]. The only way to obtain one is through
/// validation.
#[derive(Clone, Debug)]
pub struct ValidatedTemplate {
    resource: PipelineTemplate,
    uses: Vec<PlaceholderUse>,
    checked: ValidatedResource,
}

impl ValidatedTemplate {
    /// The template's name (`metadata.name`).
    pub fn name(&self) -> &str {
        self.resource.metadata.name.as_deref().unwrap_or_default()
    }

    /// The resource as it was validated.
    pub fn resource(&self) -> &PipelineTemplate {
        &self.resource
    }

    /// The kind of pipeline it produces.
    pub fn kind(&self) -> PipelineKind {
        self.resource.spec.pipeline_kind
    }

    /// The declared placeholders.
    pub fn placeholders(&self) -> &[Placeholder] {
        &self.resource.spec.placeholders
    }

    /// The placeholder declared as `name`.
    pub fn placeholder(&self, name: &str) -> Option<&Placeholder> {
        self.placeholders().iter().find(|p| p.name == name)
    }

    /// Every place a placeholder stands, in document order.
    pub fn uses(&self) -> &[PlaceholderUse] {
        &self.uses
    }

    /// The pipeline with every placeholder's sample: what validation checked.
    pub fn checked_with_samples(&self) -> &ValidatedResource {
        &self.checked
    }

    pub(crate) fn spec_json(&self) -> &serde_json::Value {
        &self.resource.spec.template.spec
    }
}

/// Checks a template completely and returns every problem, each with its field path.
/// Pure, like [`crate::validate`]; `context` is the one its instances' pipelines will
/// be validated in.
pub fn validate_template(
    template: &PipelineTemplate,
    context: &ValidationContext,
) -> Result<ValidatedTemplate, ValidationErrors> {
    let mut errors = FieldErrors::default();
    check_metadata(&template.metadata, &mut errors);
    let spec = &template.spec;
    if spec.description.len() > MAX_DESCRIPTION_LEN {
        errors.add(
            "spec.description",
            format!("longer than {MAX_DESCRIPTION_LEN} bytes; keep it to a few sentences"),
        );
    }
    if spec.placeholders.len() > MAX_PLACEHOLDERS {
        errors.add(
            "spec.placeholders",
            format!(
                "{} placeholders, more than {MAX_PLACEHOLDERS}: a template is a short form for \
                 tenants; split it or fix values in the spec",
                spec.placeholders.len()
            ),
        );
    }
    let mut declared = BTreeMap::new();
    for (i, placeholder) in spec.placeholders.iter().enumerate() {
        let path = index("spec.placeholders", i);
        placeholder.validate(&path, &mut errors);
        if declared
            .insert(placeholder.name.as_str(), placeholder)
            .is_some()
        {
            errors.add(
                field(&path, "name"),
                format!("%{{{}}} is declared twice", placeholder.name),
            );
        }
    }
    if !spec.template.spec.is_object() {
        errors.add(
            TEMPLATE_SPEC_PATH,
            format!(
                "required: the {} spec the template produces, as an object",
                spec.pipeline_kind.name()
            ),
        );
        return Err(errors.into_errors());
    }
    let uses = scan(
        &spec.template.spec,
        TEMPLATE_SPEC_PATH,
        &declared,
        &mut errors,
    );
    if uses.len() > MAX_PLACEHOLDER_USES {
        errors.add(
            TEMPLATE_SPEC_PATH,
            format!(
                "placeholders stand in {} places, more than {MAX_PLACEHOLDER_USES}",
                uses.len()
            ),
        );
    }
    for (i, placeholder) in spec.placeholders.iter().enumerate() {
        if !uses.iter().any(|u| u.name == placeholder.name) {
            errors.add(
                field(&index("spec.placeholders", i), "name"),
                format!(
                    "%{{{}}} is declared but used nowhere in spec.template.spec",
                    placeholder.name
                ),
            );
        }
    }
    errors.into_result()?;
    let sample_secret = sample_secret(context);
    let filled = fill(&spec.template.spec, &|name| match declared
        .get(name)
        .map(|p| (p.type_, p.sample()))
    {
        Some((PlaceholderType::Secret, _)) => Fill::Secret(sample_secret.clone()),
        Some((_, sample)) => Fill::Text(sample.to_owned()),
        None => Fill::Text(String::new()),
    });
    let metadata = ObjectMeta {
        name: Some(CHECK_NAME.to_owned()),
        ..ObjectMeta::default()
    };
    let checked = kinds::read_spec(spec.pipeline_kind, filled)
        .map_err(|error| ValidationErrors(vec![error]))
        .and_then(|kind_spec| kinds::validate_spec(kind_spec, metadata, context))
        .map_err(|invalid| {
            let mut errors = FieldErrors::default();
            for error in invalid.0 {
                sample_error(error, &uses, &mut errors);
            }
            errors.into_errors()
        })?;
    Ok(ValidatedTemplate {
        resource: template.clone(),
        uses,
        checked,
    })
}

/// The Secret key a secret placeholder is checked with: in the first namespace the
/// provider allows (the agent's own when any is allowed).
fn sample_secret(context: &ValidationContext) -> SecretKeyRef {
    let namespace = context
        .policy
        .secret_namespaces
        .listed()
        .and_then(|listed| listed.iter().next().cloned())
        .unwrap_or_else(|| DEFAULT_AGENT_NAMESPACE.to_owned());
    SecretKeyRef {
        name: "sample".to_owned(),
        namespace,
        key: "sample".to_owned(),
    }
}

/// Where the filled-in pipeline's `spec.X` is in the template: `spec.template.spec.X`.
pub(crate) fn template_path(path: &str) -> String {
    match path.strip_prefix("spec") {
        Some(rest) if rest.is_empty() || rest.starts_with(['.', '[']) => {
            format!("{TEMPLATE_SPEC_PATH}{rest}")
        }
        _ => path.to_owned(),
    }
}

/// The uses an error at `path` (a template path) comes from: those at or above it,
/// and a secret's `value` for errors in the `valueFrom` it became.
pub(crate) fn blamed<'a>(
    uses: &'a [PlaceholderUse],
    path: &'a str,
) -> impl Iterator<Item = &'a PlaceholderUse> {
    uses.iter().filter(move |u| {
        is_at_or_below(path, &u.path)
            || u.path
                .strip_suffix(".value")
                .is_some_and(|base| is_at_or_below(path, &format!("{base}.valueFrom")))
    })
}

/// Reports an error of the pipeline checked with samples at its template path.
fn sample_error(error: FieldError, uses: &[PlaceholderUse], errors: &mut FieldErrors) {
    let path = template_path(&error.path);
    let mut names: Vec<&str> = blamed(uses, &path).map(|u| u.name.as_str()).collect();
    names.dedup();
    if let Some(secret) = uses.iter().find(|u| {
        u.path
            .strip_suffix(".value")
            .is_some_and(|base| path == format!("{base}.valueFrom"))
    }) && error.reason.starts_with("unknown field")
    {
        errors.add(
            &secret.path,
            format!(
                "the secret placeholder %{{{}}} stands where no valueFrom.secretKeyRef is \
                 accepted: this value is plain text",
                secret.name
            ),
        );
        return;
    }
    let reason = match names.as_slice() {
        [] => error.reason,
        names => format!(
            "{} (checked with the sample of {})",
            error.reason,
            names
                .iter()
                .map(|n| format!("%{{{n}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    errors.push(FieldError { path, reason });
}

/// Parses and validates every `PipelineTemplate` in `text` (YAML or JSON, several
/// documents, a list), each on its own, as [`crate::document::parse_documents`] reads
/// pipelines.
pub fn parse_templates(
    text: &str,
    context: &ValidationContext,
) -> Vec<Document<ValidatedTemplate>> {
    crate::document::parse_text(text, context, parse_template_value)
}

/// Parses and validates one `PipelineTemplate` given as a YAML or JSON value.
pub fn parse_template_value(
    location: String,
    value: serde_yaml::Value,
    context: &ValidationContext,
) -> Document<ValidatedTemplate> {
    crate::document::parse_kind(
        location,
        value,
        context,
        &[TEMPLATE_KIND],
        validate_template,
    )
}

/// A validated document of any kind the observer takes: a pipeline of any kind, a
/// template or an instance.
#[derive(Clone, Debug)]
pub enum ValidatedDocument {
    /// A `MetricPipeline`, `LogPipeline` or `TracePipeline`.
    Pipeline(ValidatedResource),
    /// A `PipelineTemplate`.
    Template(Box<ValidatedTemplate>),
    /// A `PipelineInstance` (checked on its own: its template is the observer's).
    Instance(Box<ValidatedInstance>),
}

impl ValidatedDocument {
    /// `kind` as written in documents.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pipeline(pipeline) => pipeline.kind(),
            Self::Template(_) => TEMPLATE_KIND,
            Self::Instance(_) => INSTANCE_KIND,
        }
    }
}

/// Parses and validates every document in `text`, each by its `kind`: pipelines of
/// every kind, templates and instances, as [`crate::document::parse_documents`] reads
/// pipelines.
pub fn parse_all_documents(
    text: &str,
    context: &ValidationContext,
) -> Vec<Document<ValidatedDocument>> {
    crate::document::parse_text(text, context, parse_any_document_value)
}

/// Parses and validates one document of any kind ([`parse_all_documents`]).
pub fn parse_any_document_value(
    location: String,
    value: serde_yaml::Value,
    context: &ValidationContext,
) -> Document<ValidatedDocument> {
    fn wrap<T>(
        document: Document<T>,
        into: fn(T) -> ValidatedDocument,
    ) -> Document<ValidatedDocument> {
        Document {
            location: document.location,
            name: document.name,
            outcome: document.outcome.map(into),
        }
    }
    match value.get("kind").and_then(serde_yaml::Value::as_str) {
        Some(TEMPLATE_KIND) => wrap(parse_template_value(location, value, context), |t| {
            ValidatedDocument::Template(Box::new(t))
        }),
        Some(INSTANCE_KIND) => wrap(parse_instance_value(location, value, context), |i| {
            ValidatedDocument::Instance(Box::new(i))
        }),
        _ => wrap(
            crate::document::parse_any_value(location, value, context),
            ValidatedDocument::Pipeline,
        ),
    }
}
