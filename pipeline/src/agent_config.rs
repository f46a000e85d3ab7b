//! The agent configuration: what the observer renders for one cluster and sends in a
//! `ConfigUpdate`, and what `cluster-agent` reads from a file in standalone mode.
//!
//! It is the set of validated pipelines selected for the cluster (metric, log and trace
//! pipelines, names unique per kind) plus agent-wide external labels. Rendering is
//! canonical (pipelines sorted by name, maps sorted, no
//! insignificant whitespace), so the same desired state always has the same SHA-256 and
//! the observer can skip a push when the agent's last-applied hash already matches.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::ENVELOPE_FIELDS;
use crate::errors::{FieldErrors, ValidationErrors, field, index, key};
use crate::logs::{LOG_KIND, LogPipeline, ValidatedLogPipeline, validate_log_pipeline};
use crate::names::check_prometheus_label_name;
use crate::pipeline::{API_GROUP_VERSION, KIND, MetricPipeline, ValidatedPipeline, validate};
use crate::policy::ValidationContext;
use crate::templates::{PendingInstance, ValidatedPendingInstance, validate_pending};
use crate::traces::{TRACE_KIND, TracePipeline, ValidatedTracePipeline, validate_trace_pipeline};

/// The content type of a rendered agent configuration in `ConfigUpdate.content_type`.
pub const AGENT_CONFIG_CONTENT_TYPE: &str =
    "application/vnd.kaas-observer.agent-config.v1alpha1+json";
/// `kind` of an agent configuration document.
pub const AGENT_CONFIG_KIND: &str = "AgentConfig";
/// The largest rendered agent configuration, in bytes: the observer sends none larger
/// (it sets the `ConfigTooLarge` condition instead) and an agent refuses one larger
/// with FAILED. Real configurations are far smaller (a hundred pipelines with their
/// relabel rules render to a few hundred KiB); the bound keeps what one tenant's
/// pipelines cost the observer per push and the agent per update small, and it is
/// gRPC's customary 4 MiB message limit, the most that agents which predate it decode.
pub const MAX_AGENT_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Everything one agent runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Always `telemetry.kaas-observer.io/v1alpha1`.
    pub api_version: String,
    /// Always `AgentConfig`.
    pub kind: String,
    /// Labels added to every series the agent sends (as Prometheus' `external_labels`),
    /// typically `cluster`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_labels: BTreeMap<String, String>,
    /// The metric pipelines to run.
    #[serde(default)]
    pub pipelines: Vec<MetricPipeline>,
    /// The log pipelines to run. Left out when there are none, so a configuration of
    /// metric pipelines only renders (and hashes) as it did before logs existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_pipelines: Vec<LogPipeline>,
    /// The trace pipelines to run. Left out when there are none, so a configuration
    /// without them renders (and hashes) as it did before traces existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_pipelines: Vec<TracePipeline>,
    /// Template instances the agent renders itself, with values it reads from Secret
    /// or ConfigMap keys ([`crate::templates::pending`]). Left out when there are none,
    /// so a configuration without them renders (and hashes) as it did before; sent
    /// only to agents announcing `CAPABILITY_TEMPLATE_INSTANCES`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline_instances: Vec<PendingInstance>,
    /// Set for a cluster-level instance that renders template instances while the
    /// cluster's pushes go to its gateway replicas: it runs only the part of what it
    /// renders without pushed inputs, as the observer cut the pipelines it rendered
    /// itself ([`crate::role::PushPlacement`]). Left out otherwise, so every other
    /// configuration renders (and hashes) as before, and an agent that cannot render
    /// instances (and would refuse the field) never gets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pushes_to_gateway: bool,
}

/// An agent configuration whose every pipeline passed validation.
#[derive(Clone, Debug, Default)]
pub struct ValidatedAgentConfig {
    /// External labels.
    pub external_labels: BTreeMap<String, String>,
    /// The validated metric pipelines, in the order given.
    pub pipelines: Vec<ValidatedPipeline>,
    /// The validated log pipelines, in the order given.
    pub log_pipelines: Vec<ValidatedLogPipeline>,
    /// The validated trace pipelines, in the order given.
    pub trace_pipelines: Vec<ValidatedTracePipeline>,
    /// The template instances the agent renders before running them, in the order
    /// given; empty once rendered into the pipeline lists.
    pub pipeline_instances: Vec<ValidatedPendingInstance>,
    /// [`AgentConfig::pushes_to_gateway`].
    pub pushes_to_gateway: bool,
}

/// A configuration in its wire form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedConfig {
    /// Canonical JSON.
    pub body: Vec<u8>,
    /// SHA-256 of `body`.
    pub hash: [u8; 32],
}

impl RenderedConfig {
    /// The hash in lower-case hex, for logs and the API.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// A rendered configuration over [`MAX_AGENT_CONFIG_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the agent configuration is {bytes} bytes, over the limit of {limit} bytes",
    limit = MAX_AGENT_CONFIG_BYTES
)]
pub struct ConfigTooLarge {
    /// The configuration's size.
    pub bytes: usize,
}

/// Checks a configuration body's size against [`MAX_AGENT_CONFIG_BYTES`].
pub fn check_config_size(bytes: usize) -> Result<(), ConfigTooLarge> {
    if bytes > MAX_AGENT_CONFIG_BYTES {
        Err(ConfigTooLarge { bytes })
    } else {
        Ok(())
    }
}

/// SHA-256 of a configuration body, as carried in the control contract.
pub fn config_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Why an agent configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// Not JSON or YAML of the right shape.
    #[error("cannot parse the agent configuration: {0}")]
    Parse(String),
    /// Parsed, but invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
}

impl AgentConfig {
    /// A configuration holding these pipelines. Taking validated pipelines means nothing
    /// unchecked can be rendered and sent.
    pub fn from_validated(
        external_labels: BTreeMap<String, String>,
        pipelines: &[ValidatedPipeline],
    ) -> Self {
        Self {
            api_version: API_GROUP_VERSION.to_owned(),
            kind: AGENT_CONFIG_KIND.to_owned(),
            external_labels,
            pipelines: pipelines.iter().map(|p| p.resource().clone()).collect(),
            log_pipelines: Vec::new(),
            trace_pipelines: Vec::new(),
            pipeline_instances: Vec::new(),
            pushes_to_gateway: false,
        }
    }

    /// The same configuration running these log pipelines too.
    pub fn with_log_pipelines(mut self, log_pipelines: &[ValidatedLogPipeline]) -> Self {
        self.log_pipelines = log_pipelines.iter().map(|p| p.resource().clone()).collect();
        self
    }

    /// The same configuration running these trace pipelines too.
    pub fn with_trace_pipelines(mut self, trace_pipelines: &[ValidatedTracePipeline]) -> Self {
        self.trace_pipelines = trace_pipelines
            .iter()
            .map(|p| p.resource().clone())
            .collect();
        self
    }

    /// The same configuration with these template instances for the agent to render,
    /// cut to their part without pushed inputs when `pushes_to_gateway` (ignored
    /// without instances: see [`AgentConfig::pushes_to_gateway`]).
    pub fn with_pipeline_instances(
        mut self,
        instances: &[ValidatedPendingInstance],
        pushes_to_gateway: bool,
    ) -> Self {
        self.pipeline_instances = instances.iter().map(|i| i.document()).collect();
        self.pushes_to_gateway = pushes_to_gateway && !instances.is_empty();
        self
    }

    /// Reads a configuration from YAML or JSON (JSON is YAML) and validates it in
    /// `context`: a standalone agent's file, or what the observer sent.
    pub fn parse(
        text: &str,
        context: &ValidationContext,
    ) -> Result<ValidatedAgentConfig, AgentConfigError> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| AgentConfigError::Parse(e.to_string()))?;
        // The pipeline resource type accepts unknown top-level fields (it is a
        // Kubernetes object); a misplaced `buffer:` beside `spec:` must not be ignored.
        let mut errors = FieldErrors::default();
        for (list, kind) in [
            ("pipelines", KIND),
            ("logPipelines", LOG_KIND),
            ("tracePipelines", TRACE_KIND),
        ] {
            let Some(pipelines) = value.get(list).and_then(|p| p.as_sequence()) else {
                continue;
            };
            for (i, pipeline) in pipelines.iter().enumerate() {
                let Some(map) = pipeline.as_mapping() else {
                    continue;
                };
                for name in map.keys() {
                    let name = name.as_str().unwrap_or("<non-string key>");
                    if !ENVELOPE_FIELDS.contains(&name) {
                        errors.add(
                            field(&index(list, i), name),
                            format!("unknown field; a {kind} has {}", ENVELOPE_FIELDS.join(", ")),
                        );
                    }
                }
            }
        }
        errors.into_result()?;
        let config: AgentConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| AgentConfigError::Parse(format!("{}: {}", e.path(), e.inner())))?;
        Ok(config.validate(context)?)
    }

    /// Checks the envelope, the external labels, that pipeline names are unique, and
    /// every pipeline in `context`; errors inside a pipeline are prefixed with
    /// `pipelines[i].`.
    pub fn validate(
        &self,
        context: &ValidationContext,
    ) -> Result<ValidatedAgentConfig, ValidationErrors> {
        let mut errors = FieldErrors::default();
        if self.api_version != API_GROUP_VERSION {
            errors.add(
                "apiVersion",
                format!("{:?} is not {API_GROUP_VERSION}", self.api_version),
            );
        }
        if self.kind != AGENT_CONFIG_KIND {
            errors.add(
                "kind",
                format!("{:?} is not {AGENT_CONFIG_KIND}", self.kind),
            );
        }
        for name in self.external_labels.keys() {
            if let Err(reason) = check_prometheus_label_name(name) {
                errors.add(key("externalLabels", name), reason);
            }
        }
        let pipelines = validate_list(
            "pipelines",
            &self.pipelines,
            |p| validate(p, context),
            ValidatedPipeline::name,
            &mut errors,
        );
        let log_pipelines = validate_list(
            "logPipelines",
            &self.log_pipelines,
            |p| validate_log_pipeline(p, context),
            ValidatedLogPipeline::name,
            &mut errors,
        );
        let trace_pipelines = validate_list(
            "tracePipelines",
            &self.trace_pipelines,
            |p| validate_trace_pipeline(p, context),
            ValidatedTracePipeline::name,
            &mut errors,
        );
        let pipeline_instances = validate_list(
            "pipelineInstances",
            &self.pipeline_instances,
            |p| validate_pending(p, context),
            ValidatedPendingInstance::name,
            &mut errors,
        );
        check_instance_names(
            &pipeline_instances,
            (&pipelines, &log_pipelines, &trace_pipelines),
            &mut errors,
        );
        errors.into_result()?;
        Ok(ValidatedAgentConfig {
            external_labels: self.external_labels.clone(),
            pipelines,
            log_pipelines,
            trace_pipelines,
            pipeline_instances,
            pushes_to_gateway: self.pushes_to_gateway,
        })
    }

    /// The canonical wire form and its hash.
    ///
    /// Rendering the same pipelines for many clusters that differ only in their
    /// external labels is cheaper through [`AgentConfig::template`].
    pub fn render(&self) -> RenderedConfig {
        let mut canonical = self.clone();
        canonical.sort_pipelines();
        // Serialising plain data with string keys cannot fail; fall back to an empty
        // body (which every agent refuses) rather than panicking if it ever did.
        let body = serde_json::to_vec(&canonical).unwrap_or_default();
        let hash = config_hash(&body);
        RenderedConfig { body, hash }
    }
}

impl AgentConfig {
    /// Sorts every kind's pipelines by name: the canonical order.
    fn sort_pipelines(&mut self) {
        self.pipelines
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.log_pipelines
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.trace_pipelines
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.pipeline_instances
            .sort_by(|a, b| a.instance.metadata.name.cmp(&b.instance.metadata.name));
    }
}

/// Refuses an instance whose pipeline would take the name of a pipeline of its kind in
/// the same configuration: names are unique per kind.
fn check_instance_names(
    instances: &[ValidatedPendingInstance],
    (pipelines, log_pipelines, trace_pipelines): (
        &[ValidatedPipeline],
        &[ValidatedLogPipeline],
        &[ValidatedTracePipeline],
    ),
    errors: &mut FieldErrors,
) {
    for (i, instance) in instances.iter().enumerate() {
        let name = instance.name();
        let taken = match instance.kind() {
            KIND => pipelines.iter().any(|p| p.name() == name),
            LOG_KIND => log_pipelines.iter().any(|p| p.name() == name),
            _ => trace_pipelines.iter().any(|p| p.name() == name),
        };
        if taken {
            errors.add(
                field(&index("pipelineInstances", i), "instance.metadata.name"),
                format!("a {} {name:?} is in the configuration too", instance.kind()),
            );
        }
    }
}

/// Validates each pipeline of one list, prefixing its errors with `list[i].`, and
/// refuses a name used twice in the list: names are unique per kind.
fn validate_list<R, V>(
    list: &str,
    resources: &[R],
    validate: impl Fn(&R) -> Result<V, ValidationErrors>,
    name: fn(&V) -> &str,
    errors: &mut FieldErrors,
) -> Vec<V> {
    let mut names = BTreeSet::new();
    let mut valid = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        let path = index(list, i);
        match validate(resource) {
            Ok(pipeline) => {
                if !names.insert(name(&pipeline).to_owned()) {
                    errors.add(
                        field(&path, "metadata.name"),
                        format!("pipeline {:?} appears twice", name(&pipeline)),
                    );
                }
                valid.push(pipeline);
            }
            Err(invalid) => errors.extend(ValidationErrors(
                invalid
                    .0
                    .into_iter()
                    .map(|mut e| {
                        e.path = field(&path, &e.path);
                        e
                    })
                    .collect(),
            )),
        }
    }
    valid
}

/// The canonical rendering of a set of pipelines, prepared once to be rendered for many
/// clusters with their own external labels ([`ConfigTemplate::render`]).
///
/// An observer sends every cluster of a tenant the same pipelines with the cluster's
/// name as an external label: the pipelines are copied and serialised once here, and
/// each cluster's configuration costs only its labels, a copy of bytes and its hash.
/// The result is byte for byte what [`AgentConfig::render`] gives.
#[derive(Clone, Debug)]
pub struct ConfigTemplate {
    form: TemplateForm,
}

#[derive(Clone, Debug)]
enum TemplateForm {
    /// The canonical body without external labels, split where they go: `head` is the
    /// envelope up to the pipelines (`{"apiVersion":…,"kind":…,`), the rest of `body`
    /// the pipelines and the closing brace.
    Split { body: Vec<u8>, head: usize },
    /// The envelope did not serialise as expected (a change of [`AgentConfig`]'s
    /// fields): every render serialises the whole configuration, still correctly.
    Whole(AgentConfig),
}

impl AgentConfig {
    /// See [`ConfigTemplate`].
    pub fn template(pipelines: &[ValidatedPipeline]) -> ConfigTemplate {
        Self::template_with_logs(pipelines, &[])
    }

    /// See [`ConfigTemplate`]; with log pipelines too.
    pub fn template_with_logs(
        pipelines: &[ValidatedPipeline],
        log_pipelines: &[ValidatedLogPipeline],
    ) -> ConfigTemplate {
        Self::template_of(
            Self::from_validated(BTreeMap::new(), pipelines).with_log_pipelines(log_pipelines),
        )
    }

    /// See [`ConfigTemplate`]; with log and trace pipelines too.
    pub fn template_with_all(
        pipelines: &[ValidatedPipeline],
        log_pipelines: &[ValidatedLogPipeline],
        trace_pipelines: &[ValidatedTracePipeline],
    ) -> ConfigTemplate {
        Self::template_with_instances(pipelines, log_pipelines, trace_pipelines, (&[], false))
    }

    /// See [`ConfigTemplate`]; with log and trace pipelines and template instances for
    /// the agent to render (with whether their pushed inputs go to the gateway instead,
    /// [`AgentConfig::pushes_to_gateway`]).
    pub fn template_with_instances(
        pipelines: &[ValidatedPipeline],
        log_pipelines: &[ValidatedLogPipeline],
        trace_pipelines: &[ValidatedTracePipeline],
        (instances, pushes_to_gateway): (&[ValidatedPendingInstance], bool),
    ) -> ConfigTemplate {
        Self::template_of(
            Self::from_validated(BTreeMap::new(), pipelines)
                .with_log_pipelines(log_pipelines)
                .with_trace_pipelines(trace_pipelines)
                .with_pipeline_instances(instances, pushes_to_gateway),
        )
    }

    /// The template of `canonical`, a configuration without external labels.
    fn template_of(mut canonical: Self) -> ConfigTemplate {
        canonical.sort_pipelines();
        let head = serde_json::to_string(&canonical.api_version)
            .and_then(|api| Ok((api, serde_json::to_string(&canonical.kind)?)))
            .map(|(api, kind)| format!("{{\"apiVersion\":{api},\"kind\":{kind},"));
        let form = match (head, serde_json::to_vec(&canonical)) {
            (Ok(head), Ok(body)) if body.starts_with(head.as_bytes()) => TemplateForm::Split {
                body,
                head: head.len(),
            },
            _ => TemplateForm::Whole(canonical),
        };
        ConfigTemplate { form }
    }
}

impl ConfigTemplate {
    /// The configuration of these pipelines with `external_labels`, as
    /// [`AgentConfig::render`] renders it.
    pub fn render(&self, external_labels: &BTreeMap<String, String>) -> RenderedConfig {
        match &self.form {
            TemplateForm::Split { body, .. } if external_labels.is_empty() => RenderedConfig {
                body: body.clone(),
                hash: config_hash(body),
            },
            TemplateForm::Split { body, head } => {
                // A map of strings always serialises; see `AgentConfig::render`.
                let labels = serde_json::to_vec(external_labels).unwrap_or_default();
                let (envelope, pipelines) = body.split_at(*head);
                let mut out = Vec::with_capacity(body.len() + labels.len() + 20);
                out.extend_from_slice(envelope);
                out.extend_from_slice(b"\"externalLabels\":");
                out.extend_from_slice(&labels);
                out.push(b',');
                out.extend_from_slice(pipelines);
                let hash = config_hash(&out);
                RenderedConfig { body: out, hash }
            }
            TemplateForm::Whole(config) => AgentConfig {
                external_labels: external_labels.clone(),
                ..config.clone()
            }
            .render(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse_pipelines;

    fn pipelines(text: &str) -> Vec<ValidatedPipeline> {
        parse_pipelines(text, &ValidationContext::tenant_default())
            .into_iter()
            .map(|d| d.outcome.unwrap())
            .collect()
    }

    const TWO: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: b}
spec:
  input: {prometheus: {enabled: true}}
  output: {prometheusRemoteWrite: {url: "https://b.example/write"}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: a}
spec:
  input: {runtime: {enabled: true}}
  output: {otlp: {endpoint: "https://a.example:4317"}}
"#;

    #[test]
    fn a_configuration_over_the_limit_is_named_with_its_size_and_the_limit() {
        assert_eq!(check_config_size(MAX_AGENT_CONFIG_BYTES), Ok(()));
        let error = check_config_size(MAX_AGENT_CONFIG_BYTES + 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the agent configuration is 4194305 bytes, over the limit of 4194304 bytes"
        );
    }

    #[test]
    fn rendering_is_canonical_whatever_the_order() {
        let mut list = pipelines(TWO);
        let labels = BTreeMap::from([("cluster".to_owned(), "c1".to_owned())]);
        let first = AgentConfig::from_validated(labels.clone(), &list).render();
        list.reverse();
        let second = AgentConfig::from_validated(labels, &list).render();
        assert_eq!(first, second);
        assert_eq!(first.hash, config_hash(&first.body));
        assert_eq!(first.hash_hex().len(), 64);
    }

    #[test]
    fn a_template_renders_what_render_renders() {
        let list = pipelines(TWO);
        let label_sets = [
            BTreeMap::new(),
            BTreeMap::from([("cluster".to_owned(), "c-0001".to_owned())]),
            BTreeMap::from([
                ("cluster".to_owned(), "quote\" back\\ ünï \u{1}".to_owned()),
                ("a_first".to_owned(), String::new()),
                ("z_last".to_owned(), "z".to_owned()),
            ]),
        ];
        for selected in [&list[..], &list[..1], &list[1..], &[]] {
            let template = AgentConfig::template(selected);
            assert!(
                matches!(template.form, TemplateForm::Split { .. }),
                "the fast path was not taken"
            );
            for labels in &label_sets {
                assert_eq!(
                    template.render(labels),
                    AgentConfig::from_validated(labels.clone(), selected).render(),
                    "{labels:?} with {} pipelines",
                    selected.len()
                );
            }
        }
    }

    #[test]
    fn any_change_changes_the_hash() {
        let list = pipelines(TWO);
        let base = AgentConfig::from_validated(BTreeMap::new(), &list).render();
        let labelled = AgentConfig::from_validated(
            BTreeMap::from([("cluster".to_owned(), "c1".to_owned())]),
            &list,
        )
        .render();
        let fewer = AgentConfig::from_validated(BTreeMap::new(), &list[..1]).render();
        assert_ne!(base.hash, labelled.hash);
        assert_ne!(base.hash, fewer.hash);
    }

    /// `pushesToGateway` goes only with instances (an agent that cannot render them
    /// would refuse the field), leaves every other configuration's hash as it was, and
    /// reads back as sent.
    #[test]
    fn pushes_to_gateway_is_sent_only_with_instances_and_read_back() {
        let list = pipelines(TWO);
        let base = AgentConfig::from_validated(BTreeMap::new(), &list);
        let without_instances = base.clone().with_pipeline_instances(&[], true);
        assert!(!without_instances.pushes_to_gateway);
        assert_eq!(without_instances.render(), base.render());
        let mut flagged = base.clone();
        flagged.pushes_to_gateway = true;
        let body = String::from_utf8(flagged.render().body).unwrap();
        assert!(body.contains("\"pushesToGateway\":true"), "{body}");
        let parsed = AgentConfig::parse(&body, &ValidationContext::tenant_default()).unwrap();
        assert!(parsed.pushes_to_gateway);
        let plain = String::from_utf8(base.render().body).unwrap();
        assert!(!plain.contains("pushesToGateway"), "{plain}");
    }

    #[test]
    fn rendered_config_parses_back_to_the_same_pipelines() {
        let list = pipelines(TWO);
        let rendered = AgentConfig::from_validated(BTreeMap::new(), &list).render();
        let text = String::from_utf8(rendered.body).unwrap();
        let parsed = AgentConfig::parse(&text, &ValidationContext::tenant_default()).unwrap();
        let names: Vec<_> = parsed
            .pipelines
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn duplicate_names_and_bad_pipelines_are_reported_with_their_index() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
externalLabels: {cluster-name: c1}
pipelines:
  - metadata: {name: a}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "https://a.example/write"}}
  - metadata: {name: a}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "nope"}}
  - metadata: {name: a}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "https://a.example/write"}}
"#;
        let Err(AgentConfigError::Invalid(errors)) =
            AgentConfig::parse(text, &ValidationContext::tenant_default())
        else {
            panic!("accepted");
        };
        assert_eq!(
            errors.lines(),
            [
                r#"externalLabels["cluster-name"]: "cluster-name" is not a valid Prometheus label name: use letters, digits and '_', not starting with a digit"#,
                r#"pipelines[1].spec.output.prometheusRemoteWrite.url: not an absolute http(s) URL: "nope""#,
                r#"pipelines[2].metadata.name: pipeline "a" appears twice"#,
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let text =
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipeline: []\n";
        let Err(AgentConfigError::Parse(message)) =
            AgentConfig::parse(text, &ValidationContext::tenant_default())
        else {
            panic!("accepted");
        };
        assert!(
            message.starts_with("pipeline: unknown field `pipeline`"),
            "{message}"
        );
    }

    #[test]
    fn a_field_misplaced_beside_spec_is_refused_not_ignored() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {name: a}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "https://a.example/write"}}
    buffer: {maxBytes: 1Mi}
"#;
        let Err(AgentConfigError::Invalid(errors)) =
            AgentConfig::parse(text, &ValidationContext::tenant_default())
        else {
            panic!("accepted");
        };
        assert_eq!(
            errors.lines(),
            [
                "pipelines[0].buffer: unknown field; a MetricPipeline has apiVersion, kind, metadata, spec, status"
            ]
        );
    }

    const LOGS: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {name: b}
spec:
  input: {runtime: {enabled: true}}
  output: {loki: {url: "https://loki.example"}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {name: a}
spec:
  input: {otlp: {enabled: true}}
  output: {otlp: {endpoint: "https://otel.example:4317"}}
"#;

    fn log_pipelines(text: &str) -> Vec<ValidatedLogPipeline> {
        crate::document::parse_documents(text, &ValidationContext::tenant_default())
            .into_iter()
            .map(|d| match d.outcome.unwrap() {
                crate::document::ValidatedResource::Log(pipeline) => *pipeline,
                other => panic!("not a log pipeline: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_metric_only_configuration_renders_without_log_pipelines() {
        let list = pipelines(TWO);
        let rendered = AgentConfig::from_validated(BTreeMap::new(), &list)
            .with_log_pipelines(&[])
            .render();
        let text = String::from_utf8(rendered.body.clone()).unwrap();
        assert!(!text.contains("logPipelines"), "{text}");
        assert_eq!(
            rendered,
            AgentConfig::from_validated(BTreeMap::new(), &list).render()
        );
    }

    #[test]
    fn log_pipelines_render_canonically_and_parse_back() {
        let metrics = pipelines(TWO);
        let mut logs = log_pipelines(LOGS);
        let labels = BTreeMap::from([("cluster".to_owned(), "c1".to_owned())]);
        let first = AgentConfig::from_validated(labels.clone(), &metrics)
            .with_log_pipelines(&logs)
            .render();
        logs.reverse();
        let second = AgentConfig::from_validated(labels.clone(), &metrics)
            .with_log_pipelines(&logs)
            .render();
        assert_eq!(first, second);
        assert_eq!(
            AgentConfig::template_with_logs(&metrics, &logs).render(&labels),
            first
        );
        let text = String::from_utf8(first.body).unwrap();
        let parsed = AgentConfig::parse(&text, &ValidationContext::tenant_default()).unwrap();
        let names: Vec<_> = parsed.log_pipelines.iter().map(|p| p.name()).collect();
        // The same names as the metric pipelines: names are unique per kind.
        assert_eq!(names, ["a", "b"]);
        assert_eq!(parsed.pipelines.len(), 2);
    }

    #[test]
    fn bad_log_pipelines_are_reported_with_their_index() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
logPipelines:
  - metadata: {name: a}
    spec:
      input: {runtime: {enabled: true}}
      output: {loki: {url: "https://loki.example"}}
  - metadata: {name: a}
    spec:
      input: {runtime: {enabled: true}}
      output: {loki: {url: "nope"}}
  - metadata: {name: a}
    spec:
      input: {runtime: {enabled: true}}
      output: {loki: {url: "https://loki.example"}}
    buffer: {}
"#;
        let Err(AgentConfigError::Invalid(errors)) =
            AgentConfig::parse(text, &ValidationContext::tenant_default())
        else {
            panic!("accepted");
        };
        assert_eq!(
            errors.lines(),
            [
                "logPipelines[2].buffer: unknown field; a LogPipeline has apiVersion, kind, metadata, spec, status"
            ]
        );
        let fixed = text.replace("    buffer: {}\n", "");
        let Err(AgentConfigError::Invalid(errors)) =
            AgentConfig::parse(&fixed, &ValidationContext::tenant_default())
        else {
            panic!("accepted");
        };
        assert_eq!(
            errors.lines(),
            [
                r#"logPipelines[1].spec.output.loki.url: not an absolute http(s) URL: "nope""#,
                r#"logPipelines[2].metadata.name: pipeline "a" appears twice"#,
            ]
        );
    }

    const TRACES: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: TracePipeline
metadata: {name: b}
spec:
  output: {otlp: {endpoint: "https://tempo.example:4317"}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: TracePipeline
metadata: {name: a}
spec:
  input: {zipkin: {enabled: true}}
  sampling: {ratio: 0.1}
  output: {otlp: {endpoint: "https://otel.example:4318", protocol: http}}
"#;

    fn trace_pipelines(text: &str) -> Vec<ValidatedTracePipeline> {
        crate::document::parse_documents(text, &ValidationContext::tenant_default())
            .into_iter()
            .map(|d| match d.outcome.unwrap() {
                crate::document::ValidatedResource::Trace(pipeline) => *pipeline,
                other => panic!("not a trace pipeline: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_configuration_without_traces_renders_as_before_traces() {
        let metrics = pipelines(TWO);
        let logs = log_pipelines(LOGS);
        let rendered = AgentConfig::from_validated(BTreeMap::new(), &metrics)
            .with_log_pipelines(&logs)
            .with_trace_pipelines(&[])
            .render();
        let text = String::from_utf8(rendered.body.clone()).unwrap();
        assert!(!text.contains("tracePipelines"), "{text}");
        assert_eq!(
            rendered,
            AgentConfig::from_validated(BTreeMap::new(), &metrics)
                .with_log_pipelines(&logs)
                .render()
        );
        assert_eq!(
            AgentConfig::template_with_all(&metrics, &logs, &[]).render(&BTreeMap::new()),
            AgentConfig::template_with_logs(&metrics, &logs).render(&BTreeMap::new())
        );
    }

    #[test]
    fn trace_pipelines_render_canonically_and_parse_back() {
        let metrics = pipelines(TWO);
        let logs = log_pipelines(LOGS);
        let mut traces = trace_pipelines(TRACES);
        let labels = BTreeMap::from([("cluster".to_owned(), "c1".to_owned())]);
        let render = |traces: &[ValidatedTracePipeline]| {
            AgentConfig::from_validated(labels.clone(), &metrics)
                .with_log_pipelines(&logs)
                .with_trace_pipelines(traces)
                .render()
        };
        let first = render(&traces);
        traces.reverse();
        assert_eq!(render(&traces), first);
        assert_eq!(
            AgentConfig::template_with_all(&metrics, &logs, &traces).render(&labels),
            first
        );
        let text = String::from_utf8(first.body).unwrap();
        let parsed = AgentConfig::parse(&text, &ValidationContext::tenant_default()).unwrap();
        let names: Vec<_> = parsed.trace_pipelines.iter().map(|p| p.name()).collect();
        // The same names as the metric and log pipelines: names are unique per kind.
        assert_eq!(names, ["a", "b"]);
        assert_eq!(parsed.trace_pipelines[0].sampling.ratio, 0.1);
        assert!(parsed.trace_pipelines[0].inputs.zipkin.is_some());
    }

    /// The lines of a configuration's refusal.
    fn refusal(text: &str) -> Vec<String> {
        match AgentConfig::parse(text, &ValidationContext::tenant_default()) {
            Err(AgentConfigError::Invalid(errors)) => errors.lines(),
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn bad_trace_pipelines_are_reported_with_their_index() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
tracePipelines:
  - metadata: {name: a}
    spec:
      output: {otlp: {endpoint: "https://tempo.example:4317"}}
  - metadata: {name: a}
    spec:
      sampling: {ratio: 2}
      output: {otlp: {endpoint: "https://tempo.example:4317"}}
  - metadata: {name: a}
    spec:
      output: {otlp: {endpoint: "https://tempo.example:4317"}}
    sampling: {}
"#;
        assert_eq!(
            refusal(text),
            [
                "tracePipelines[2].sampling: unknown field; a TracePipeline has apiVersion, kind, metadata, spec, status"
            ]
        );
        let fixed = text.replace("    sampling: {}\n", "");
        assert_eq!(
            refusal(&fixed),
            [
                "tracePipelines[1].spec.sampling.ratio: 2 is not a sampling ratio: it must be above 0 and at most 1 (1 keeps every trace)",
                r#"tracePipelines[2].metadata.name: pipeline "a" appears twice"#,
            ]
        );
    }
}
