//! The `LogPipeline` resource and its validation: container and node logs, and logs
//! pushed over OTLP, filtered and processed, shipped to exactly one backend with the
//! pipeline's own disk buffer.
//!
//! It sits beside `MetricPipeline` and shares everything that means the same: metadata
//! rules, Secret references and the provider's Secret-namespace allow-list, headers,
//! authentication, TLS, the buffer, the cluster selector, the [`ValidationContext`] and
//! the status conditions. Parsing checks shape only; [`validate_log_pipeline`] checks
//! meaning, collecting every problem with its field path, and only a
//! [`ValidatedLogPipeline`] may be stored, sent or applied.
//!
//! The sections live in [`input`], [`processors`] and [`output`].

pub mod input;
pub mod output;
pub mod processors;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::buffer::{Buffer, ValidatedBuffer};
use crate::errors::{FieldErrors, ValidationErrors, field};
use crate::pipeline::{check_metadata, is_default};
use crate::policy::ValidationContext;
use crate::selector::ClusterSelector;
use crate::status::LogPipelineStatus;

use self::input::{LogInput, ValidatedLogInputs};
use self::output::{LogOutput, ValidatedLogOutput};
use self::processors::{LogProcessors, ValidatedLogProcessors};

/// `kind` of a log pipeline as written in documents.
pub const LOG_KIND: &str = "LogPipeline";

/// A log pipeline: which records to collect in a cluster, how to process them, and the
/// one backend to send them to, with its own disk buffer.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "telemetry.kaas-observer.io",
    version = "v1alpha1",
    kind = "LogPipeline",
    plural = "logpipelines",
    shortname = "lp",
    category = "telemetry",
    status = "LogPipelineStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A log pipeline: inputs, processors, one output and a disk buffer, applied to the clusters its clusterSelector selects.",
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"ConfigurationApplied\")].status"}"#,
    printcolumn = r#"{"name":"Flow","type":"string","jsonPath":".status.conditions[?(@.type==\"FlowHealthy\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogPipelineSpec {
    /// Where records come from. At least one input must be enabled.
    #[serde(default)]
    pub input: LogInput,
    /// What happens to records on the way.
    #[serde(default, skip_serializing_if = "is_default")]
    pub processors: LogProcessors,
    /// The one backend records are sent to.
    #[serde(default)]
    pub output: LogOutput,
    /// The pipeline's own disk buffer, used while the backend is slow or away.
    #[serde(default, skip_serializing_if = "is_default")]
    pub buffer: Buffer,
    /// Which of the tenant's clusters run this pipeline; empty selects all of them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cluster_selector: ClusterSelector,
}

/// A log pipeline that passed [`validate_log_pipeline`]: the original resource plus its
/// checked parts. The only way to obtain one is through validation.
#[derive(Clone, Debug)]
pub struct ValidatedLogPipeline {
    pub(crate) resource: LogPipeline,
    /// The inputs that are on.
    pub inputs: ValidatedLogInputs,
    /// Compiled processing steps.
    pub processors: ValidatedLogProcessors,
    /// The checked output.
    pub output: ValidatedLogOutput,
    /// Buffer limits.
    pub buffer: ValidatedBuffer,
}

impl ValidatedLogPipeline {
    /// The pipeline's name (`metadata.name`).
    pub fn name(&self) -> &str {
        self.resource.metadata.name.as_deref().unwrap_or_default()
    }

    /// The resource as it was validated.
    pub fn resource(&self) -> &LogPipeline {
        &self.resource
    }

    /// The spec as it was validated.
    pub fn spec(&self) -> &LogPipelineSpec {
        &self.resource.spec
    }

    /// Every Secret the pipeline names: its output's credentials and TLS material and
    /// its OTLP push input's bearer token.
    pub fn secret_refs(&self) -> Vec<&crate::secret::SecretKeyRef> {
        let spec = &self.resource.spec;
        let mut refs = spec.output.secret_refs();
        refs.extend(spec.input.otlp.as_ref().and_then(|push| push.secret_ref()));
        refs
    }

    /// Whether its output wants pod label and annotation keys de-dotted.
    pub fn dedot(&self) -> bool {
        matches!(self.output, ValidatedLogOutput::Http { dedot: true, .. })
    }

    /// Gives the resource back.
    pub fn into_resource(self) -> LogPipeline {
        self.resource
    }
}

/// Checks a log pipeline completely and returns every problem, each with its field
/// path. Pure, like [`crate::validate`], and called in the same places with the same
/// context.
pub fn validate_log_pipeline(
    pipeline: &LogPipeline,
    context: &ValidationContext,
) -> Result<ValidatedLogPipeline, ValidationErrors> {
    let mut errors = FieldErrors::default();
    check_metadata(&pipeline.metadata, &mut errors);
    let name = pipeline.metadata.name.as_deref().unwrap_or_default();
    let spec = &pipeline.spec;
    let inputs = spec
        .input
        .validate("spec.input", name, context, &mut errors);
    let processors = spec.processors.validate("spec.processors", &mut errors);
    let output = spec.output.validate("spec.output", context, &mut errors);
    let buffer = spec.buffer.validate("spec.buffer", &mut errors);
    if processors.max_record_size > buffer.max_bytes && spec.processors.max_record_size.is_some() {
        errors.add(
            field("spec.processors", "maxRecordSize"),
            format!(
                "{} bytes is more than the whole buffer holds ({} bytes); raise \
                 spec.buffer.maxBytes or lower the record size",
                processors.max_record_size, buffer.max_bytes
            ),
        );
    }
    spec.cluster_selector
        .validate(&field("spec", "clusterSelector"), &mut errors);
    match (errors.into_result(), output) {
        (Ok(()), Some(output)) => Ok(ValidatedLogPipeline {
            resource: pipeline.clone(),
            inputs,
            processors,
            output,
            buffer,
        }),
        (Err(errors), _) => Err(errors),
        // LogOutput::validate adds an error whenever it returns None; stay safe regardless.
        (Ok(()), None) => Err(ValidationErrors::single(
            "spec.output",
            "set exactly one of otlp, loki or http",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LogPipeline {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_filled_in() {
        let pipeline = parse(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {name: shop}
spec:
  input: {runtime: {enabled: true}}
  output: {http: {url: "https://es.example:9200", format: elasticsearchBulk}}
"#,
        );
        let valid =
            validate_log_pipeline(&pipeline, &ValidationContext::tenant_default()).expect("valid");
        let runtime = valid.inputs.runtime.as_ref().expect("runtime on");
        assert!(runtime.keep_original_body);
        assert_eq!(runtime.start_at, input::StartAt::End);
        assert!(valid.processors.parse_json);
        assert_eq!(
            valid.processors.max_record_size.get(),
            processors::DEFAULT_MAX_RECORD_SIZE
        );
        assert!(valid.dedot(), "bulk output de-dots by default");
        let ValidatedLogOutput::Http { url, index, .. } = &valid.output else {
            panic!("http output");
        };
        assert_eq!(url.describe(), "https://es.example:9200/_bulk");
        assert_eq!(index.as_deref(), Some(output::DEFAULT_BULK_INDEX));
    }

    #[test]
    fn the_otlp_http_endpoint_gets_the_logs_path() {
        let pipeline = parse(
            r#"
metadata: {name: shop}
spec:
  input: {otlp: {enabled: true}}
  output: {otlp: {endpoint: "https://otel.example:4318", protocol: http}}
"#,
        );
        let valid =
            validate_log_pipeline(&pipeline, &ValidationContext::tenant_default()).expect("valid");
        let ValidatedLogOutput::Otlp { endpoint, .. } = &valid.output else {
            panic!("otlp output");
        };
        assert_eq!(endpoint.describe(), "https://otel.example:4318/v1/logs");
        assert!(!valid.dedot());
    }

    #[test]
    fn the_provider_own_pipelines_may_read_the_journal() {
        let text = r#"
metadata: {name: kaas-central-logs}
spec:
  input: {node: {enabled: true, journal: {units: [kubelet.service]}}}
  output: {loki: {url: "https://loki.example"}}
"#;
        let context = ValidationContext::tenant_default();
        assert!(validate_log_pipeline(&parse(text), &context).is_ok());
        let tenant = text.replace("kaas-central-logs", "tenant-logs");
        assert!(validate_log_pipeline(&parse(&tenant), &context).is_err());
        let mut allowing = ValidationContext::tenant_default();
        allowing.policy.node_logs.tenant_journal = true;
        assert!(validate_log_pipeline(&parse(&tenant), &allowing).is_ok());
    }
}
