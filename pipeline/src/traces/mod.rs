//! The `TracePipeline` resource and its validation: spans pushed to the agent over OTLP
//! or Zipkin, sampled, filtered and processed, shipped to exactly one OTLP backend with
//! the pipeline's own disk buffer. Any number of trace pipelines may select a cluster,
//! each with its own buffer.
//!
//! It sits beside `MetricPipeline` and `LogPipeline` and shares everything that means
//! the same: metadata rules, the push inputs' namespaces and authentication, Secret
//! references and the provider's Secret-namespace allow-list, the OTLP output with its
//! headers, authentication and TLS, the buffer, the cluster selector, the
//! [`ValidationContext`] and the status conditions. Parsing checks shape only;
//! [`validate_trace_pipeline`] checks meaning, collecting every problem with its field
//! path, and only a [`ValidatedTracePipeline`] may be stored, sent or applied.
//!
//! The sections live in [`input`], [`sampling`], [`processors`] and [`output`], in the
//! order spans meet them.

pub mod input;
pub mod output;
pub mod processors;
pub mod sampling;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::buffer::{Buffer, ValidatedBuffer};
use crate::errors::{FieldErrors, ValidationErrors, field};
use crate::pipeline::{check_metadata, is_default};
use crate::policy::ValidationContext;
use crate::secret::SecretKeyRef;
use crate::selector::ClusterSelector;
use crate::status::TracePipelineStatus;

use self::input::{TraceInput, ValidatedTraceInputs};
use self::output::{TraceOutput, ValidatedTraceOutput};
use self::processors::{TraceProcessors, ValidatedTraceProcessors};
use self::sampling::{Sampling, ValidatedSampling};

/// `kind` of a trace pipeline as written in documents.
pub const TRACE_KIND: &str = "TracePipeline";

/// A trace pipeline: which spans to take in a cluster, which of them to keep and how
/// to change them, and the one OTLP backend to send them to, with its own disk buffer.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "telemetry.kaas-observer.io",
    version = "v1alpha1",
    kind = "TracePipeline",
    plural = "tracepipelines",
    shortname = "tp",
    category = "telemetry",
    status = "TracePipelineStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A trace pipeline: push inputs, sampling, processors, one OTLP output and a disk buffer, applied to the clusters its clusterSelector selects.",
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"ConfigurationApplied\")].status"}"#,
    printcolumn = r#"{"name":"Flow","type":"string","jsonPath":".status.conditions[?(@.type==\"FlowHealthy\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracePipelineSpec {
    /// Where spans come from: OTLP (on by default) and Zipkin (opt-in), by namespace.
    #[serde(default, skip_serializing_if = "is_default")]
    pub input: TraceInput,
    /// Which traces to keep; every trace when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// What happens to spans on the way.
    #[serde(default, skip_serializing_if = "is_default")]
    pub processors: TraceProcessors,
    /// The one backend spans are sent to.
    #[serde(default)]
    pub output: TraceOutput,
    /// The pipeline's own disk buffer, used while the backend is slow or away.
    #[serde(default, skip_serializing_if = "is_default")]
    pub buffer: Buffer,
    /// Which of the tenant's clusters run this pipeline; empty selects all of them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cluster_selector: ClusterSelector,
}

/// A trace pipeline that passed [`validate_trace_pipeline`]: the original resource plus
/// its checked parts. The only way to obtain one is through validation.
#[derive(Clone, Debug)]
pub struct ValidatedTracePipeline {
    pub(crate) resource: TracePipeline,
    /// The protocols that are on.
    pub inputs: ValidatedTraceInputs,
    /// The sampling ratio.
    pub sampling: ValidatedSampling,
    /// Compiled processing steps.
    pub processors: ValidatedTraceProcessors,
    /// The checked output.
    pub output: ValidatedTraceOutput,
    /// Buffer limits.
    pub buffer: ValidatedBuffer,
}

impl ValidatedTracePipeline {
    /// The pipeline's name (`metadata.name`).
    pub fn name(&self) -> &str {
        self.resource.metadata.name.as_deref().unwrap_or_default()
    }

    /// The resource as it was validated.
    pub fn resource(&self) -> &TracePipeline {
        &self.resource
    }

    /// The spec as it was validated.
    pub fn spec(&self) -> &TracePipelineSpec {
        &self.resource.spec
    }

    /// Every Secret the pipeline names: its output's credentials and TLS material, its
    /// pushers' bearer token and its hash key.
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let spec = &self.resource.spec;
        let mut refs = spec.output.secret_refs();
        let push = self.inputs.otlp.as_ref().or(self.inputs.zipkin.as_ref());
        refs.extend(push.and_then(|push| push.secret_ref()));
        refs.extend(spec.processors.secret_ref());
        refs
    }

    /// Gives the resource back.
    pub fn into_resource(self) -> TracePipeline {
        self.resource
    }
}

/// Checks a trace pipeline completely and returns every problem, each with its field
/// path. Pure, like [`crate::validate`], and called in the same places with the same
/// context.
pub fn validate_trace_pipeline(
    pipeline: &TracePipeline,
    context: &ValidationContext,
) -> Result<ValidatedTracePipeline, ValidationErrors> {
    let mut errors = FieldErrors::default();
    check_metadata(&pipeline.metadata, &mut errors);
    let spec = &pipeline.spec;
    let inputs = spec.input.validate("spec.input", context, &mut errors);
    let sampling = spec
        .sampling
        .as_ref()
        .map(|s| s.validate("spec.sampling", &mut errors))
        .unwrap_or_default();
    let processors = spec
        .processors
        .validate("spec.processors", context, &mut errors);
    let output = spec.output.validate("spec.output", context, &mut errors);
    let buffer = spec.buffer.validate("spec.buffer", &mut errors);
    spec.cluster_selector
        .validate(&field("spec", "clusterSelector"), &mut errors);
    match (errors.into_result(), output) {
        (Ok(()), Some(output)) => Ok(ValidatedTracePipeline {
            resource: pipeline.clone(),
            inputs,
            sampling,
            processors,
            output,
            buffer,
        }),
        (Err(errors), _) => Err(errors),
        // TraceOutput::validate adds an error whenever it returns None; stay safe
        // regardless.
        (Ok(()), None) => Err(ValidationErrors::single("spec.output", "set otlp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TracePipeline {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_filled_in() {
        let pipeline = parse(
            r#"
metadata: {name: shop}
spec:
  output: {otlp: {endpoint: "https://tempo.example:4317"}}
"#,
        );
        let valid = validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default())
            .expect("valid");
        let otlp = valid.inputs.otlp.as_ref().expect("OTLP is on by default");
        assert!(otlp.enabled);
        assert!(!otlp.namespaces.admits("kube-system"));
        assert!(otlp.namespaces.admits("shop"));
        assert!(valid.inputs.zipkin.is_none(), "Zipkin is opt-in");
        assert_eq!(valid.sampling.ratio, sampling::DEFAULT_SAMPLING_RATIO);
        assert!(valid.processors.rate_limit.is_none());
        assert_eq!(valid.output.protocol, crate::output::OtlpProtocol::Grpc);
        assert_eq!(
            valid.buffer.max_bytes.get(),
            crate::buffer::DEFAULT_BUFFER_MAX_BYTES
        );
    }

    #[test]
    fn the_otlp_http_endpoint_gets_the_traces_path() {
        let pipeline = parse(
            r#"
metadata: {name: shop}
spec:
  input: {zipkin: {enabled: true}}
  sampling: {ratio: 0.25}
  output: {otlp: {endpoint: "https://otel.example:4318", protocol: http}}
"#,
        );
        let valid = validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default())
            .expect("valid");
        assert_eq!(
            valid.output.endpoint.to_string(),
            "https://otel.example:4318/v1/traces"
        );
        assert!(valid.inputs.zipkin.is_some() && valid.inputs.otlp.is_some());
        assert_eq!(valid.sampling.ratio, 0.25);
    }

    #[test]
    fn sampling_ratio_bounds() {
        let at = |ratio: &str| {
            let text = format!(
                "metadata: {{name: s}}\nspec:\n  sampling: {{ratio: {ratio}}}\n  output: \
                 {{otlp: {{endpoint: \"https://t.example:4317\"}}}}\n"
            );
            // A number YAML cannot hold as one is refused when parsing.
            let Ok(pipeline) = serde_yaml::from_str::<TracePipeline>(&text) else {
                return Err(());
            };
            validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default())
                .map(|v| v.sampling.ratio)
                .map_err(|_| ())
        };
        assert_eq!(at("1"), Ok(1.0));
        assert_eq!(at("1.0"), Ok(1.0));
        assert_eq!(at("0.1"), Ok(0.1));
        assert_eq!(
            at("1.3877787807814457e-17"),
            Ok(sampling::MIN_SAMPLING_RATIO)
        );
        for refused in [
            "0",
            "-0.5",
            "1.0000001",
            "2",
            "1e-17",
            "18446744073709551616",
        ] {
            assert!(at(refused).is_err(), "{refused} was accepted");
        }
    }

    #[test]
    fn spans_match_by_name_or_attribute_exactly_or_by_regex() {
        let pipeline = parse(
            r#"
metadata: {name: shop}
spec:
  processors:
    dropSpans:
      - {exact: "GET /healthz"}
      - {attribute: url.path, regex: "^/metrics"}
  output: {otlp: {endpoint: "https://tempo.example:4317"}}
"#,
        );
        let valid = validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default())
            .expect("valid");
        let [name, path] = &valid.processors.drop_spans[..] else {
            panic!("two rules");
        };
        assert!(name.attribute.is_none());
        assert!(name.matches("GET /healthz"));
        assert!(!name.matches("GET /healthz/ready"), "exact is whole");
        assert_eq!(path.attribute.as_deref(), Some("url.path"));
        assert!(path.matches("/metrics/cadvisor"));
        assert!(!path.matches("/api/metrics"));
    }

    #[test]
    fn every_secret_is_listed() {
        let pipeline = parse(
            r#"
metadata: {name: shop}
spec:
  input:
    authentication:
      mode: bearerToken
      bearerToken: {valueFrom: {secretKeyRef: {name: push, namespace: kaas-observer, key: token}}}
  processors:
    attributes: [{action: hash, key: enduser.id}]
    hashKey: {valueFrom: {secretKeyRef: {name: salt, namespace: kaas-observer, key: key}}}
  output:
    otlp:
      endpoint: "https://tempo.example:4317"
      authentication:
        bearerToken: {valueFrom: {secretKeyRef: {name: out, namespace: kaas-observer, key: t}}}
"#,
        );
        let valid = validate_trace_pipeline(&pipeline, &ValidationContext::tenant_default())
            .expect("valid");
        let names: Vec<&str> = valid
            .secret_refs()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["out", "push", "salt"]);
    }
}
