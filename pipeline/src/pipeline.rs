//! The `MetricPipeline` resource and its validation.
//!
//! One Rust type serves as the REST API body, the Kubernetes CRD (derived with
//! `kube::CustomResource`, schema from `schemars`) and what the agent receives. Parsing
//! only checks shape (`deny_unknown_fields`); [`validate`] then checks meaning and
//! collects every problem at once, and only a [`ValidatedPipeline`] may be stored, sent
//! or applied.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::buffer::{Buffer, ValidatedBuffer};
use crate::errors::{FieldErrors, ValidationErrors, field, key};
use crate::input::{Input, ValidatedInputs, ValidatedScrape};
use crate::names::{check_dns1123_label, check_label_key, check_label_value};
use crate::output::{Output, ValidatedOutput};
use crate::policy::ValidationContext;
pub use crate::processors::ValidatedLimits;
use crate::processors::{Processors, ValidatedProcessors};
use crate::selector::ClusterSelector;
use crate::status::MetricPipelineStatus;

/// The API group of every kaas-observer resource.
pub const API_GROUP: &str = "telemetry.kaas-observer.io";
/// The version of the `MetricPipeline` resource.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` as written in documents.
pub const API_GROUP_VERSION: &str = "telemetry.kaas-observer.io/v1alpha1";
/// `kind` as written in documents.
pub const KIND: &str = "MetricPipeline";

/// A metric pipeline: which samples to collect in a cluster, how to process them, and
/// the one backend to send them to, with its own disk buffer.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "telemetry.kaas-observer.io",
    version = "v1alpha1",
    kind = "MetricPipeline",
    plural = "metricpipelines",
    shortname = "mp",
    category = "telemetry",
    status = "MetricPipelineStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A metric pipeline: inputs, processors, one output and a disk buffer, applied to the clusters its clusterSelector selects.",
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"ConfigurationApplied\")].status"}"#,
    printcolumn = r#"{"name":"Flow","type":"string","jsonPath":".status.conditions[?(@.type==\"FlowHealthy\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricPipelineSpec {
    /// Where samples come from. At least one input must be enabled.
    #[serde(default)]
    pub input: Input,
    /// What happens to samples on the way: relabeling, filtering, limits.
    #[serde(default, skip_serializing_if = "is_default")]
    pub processors: Processors,
    /// The one backend samples are sent to.
    #[serde(default)]
    pub output: Output,
    /// The pipeline's own disk buffer, used while the backend is slow or away.
    #[serde(default, skip_serializing_if = "is_default")]
    pub buffer: Buffer,
    /// Which of the tenant's clusters run this pipeline; empty selects all of them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cluster_selector: ClusterSelector,
}

impl MetricPipelineSpec {
    /// Whether the spec carries raw Prometheus scrape configs: unsupported mode, which
    /// its status and `observer pipeline get` show as `unsupportedMode: true`.
    pub fn unsupported_mode(&self) -> bool {
        self.input.unsupported.is_some()
    }
}

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A pipeline that passed [`validate`]: the original resource plus its checked parts.
/// The only way to obtain one is through validation.
#[derive(Clone, Debug)]
pub struct ValidatedPipeline {
    pub(crate) resource: MetricPipeline,
    /// Scrape interval and timeout.
    pub scrape: ValidatedScrape,
    /// Compiled relabel rules and name filters.
    pub processors: ValidatedProcessors,
    /// The checked output.
    pub output: ValidatedOutput,
    /// Buffer limits.
    pub buffer: ValidatedBuffer,
    /// The inputs that are on.
    pub inputs: ValidatedInputs,
    /// The scrape limits the pipeline sets.
    pub limits: ValidatedLimits,
    /// The raw Prometheus scrape jobs of unsupported mode; empty otherwise.
    pub unsupported: Vec<crate::input::unsupported::ValidatedScrapeJob>,
}

impl ValidatedPipeline {
    /// The pipeline's name (`metadata.name`).
    pub fn name(&self) -> &str {
        self.resource.metadata.name.as_deref().unwrap_or_default()
    }

    /// The resource as it was validated.
    pub fn resource(&self) -> &MetricPipeline {
        &self.resource
    }

    /// The spec as it was validated.
    pub fn spec(&self) -> &MetricPipelineSpec {
        &self.resource.spec
    }

    /// Every Secret the pipeline names: its output's credentials and TLS material, its
    /// push inputs' bearer tokens and its static targets' TLS material; what an agent
    /// must be able to read to run it.
    pub fn secret_refs(&self) -> Vec<&crate::secret::SecretKeyRef> {
        let input = &self.resource.spec.input;
        let push = [&input.otlp, &input.remote_write]
            .into_iter()
            .flatten()
            .filter_map(|push| push.secret_ref());
        let mut refs = self.resource.spec.output.secret_refs();
        refs.extend(push);
        refs.extend(input.static_targets.iter().flat_map(|s| s.secret_refs()));
        refs
    }

    /// Whether the pipeline is in unsupported mode (raw Prometheus scrape configs).
    pub fn unsupported_mode(&self) -> bool {
        self.resource.spec.unsupported_mode()
    }

    /// Gives the resource back.
    pub fn into_resource(self) -> MetricPipeline {
        self.resource
    }
}

/// Checks a pipeline's name (required, a DNS-1123 label) and labels; shared by every
/// kind of pipeline.
pub(crate) fn check_metadata(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    errors: &mut FieldErrors,
) {
    match metadata.name.as_deref() {
        None | Some("") => errors.add("metadata.name", "required"),
        Some(name) => {
            if let Err(reason) = check_dns1123_label(name) {
                errors.add("metadata.name", reason);
            }
        }
    }
    for (label, value) in metadata.labels.iter().flatten() {
        let path = key("metadata.labels", label);
        if let Err(reason) = check_label_key(label) {
            errors.add(&path, reason);
        }
        if let Err(reason) = check_label_value(value) {
            errors.add(&path, reason);
        }
    }
}

/// Checks a pipeline completely and returns every problem, each with its field path.
/// Pure: no I/O, no clock, no randomness. The API, the CLI `validate` command, the
/// observer's renderer and the agent all call this same function, each with the
/// context it knows: where the pipeline comes from and the provider's policy.
pub fn validate(
    pipeline: &MetricPipeline,
    context: &ValidationContext,
) -> Result<ValidatedPipeline, ValidationErrors> {
    let mut errors = FieldErrors::default();
    let metadata = &pipeline.metadata;
    check_metadata(metadata, &mut errors);
    let spec = &pipeline.spec;
    let scrape = spec.input.validate("spec.input", context, &mut errors);
    spec.input.check_credentials(
        "spec.input",
        metadata.name.as_deref().unwrap_or_default(),
        context,
        &mut errors,
    );
    let limits = ValidatedLimits::from(spec.processors.limits.as_ref());
    let unsupported = spec.input.unsupported.as_ref().map(|input| {
        let defaults = crate::input::unsupported::checks::PipelineDefaults {
            name: metadata.name.as_deref().unwrap_or_default(),
            scrape: &scrape,
            limits,
        };
        crate::input::unsupported::checks::validate(
            input,
            "spec.input.unsupported",
            &defaults,
            context,
            &mut errors,
        )
    });
    let processors = spec.processors.validate("spec.processors", &mut errors);
    if let Some(input) = spec.input.credential_bearing_input() {
        crate::sealed::check_relabel_rules(
            &spec.processors.relabel_configs,
            "spec.processors.relabelConfigs",
            input,
            &mut errors,
        );
    }
    let output = spec.output.validate("spec.output", context, &mut errors);
    let buffer = spec.buffer.validate("spec.buffer", &mut errors);
    spec.cluster_selector
        .validate(&field("spec", "clusterSelector"), &mut errors);
    match (errors.into_result(), output) {
        (Ok(()), Some(output)) => Ok(ValidatedPipeline {
            resource: pipeline.clone(),
            scrape,
            processors,
            output,
            buffer,
            inputs: spec.input.validated(),
            limits,
            unsupported: unsupported.unwrap_or_default(),
        }),
        (Err(errors), _) => Err(errors),
        // Output::validate adds an error whenever it returns None; stay safe regardless.
        (Ok(()), None) => Err(ValidationErrors::single(
            "spec.output",
            "set exactly one of prometheusRemoteWrite or otlp",
        )),
    }
}
