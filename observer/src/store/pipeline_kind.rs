//! What the observer needs to know of a pipeline kind (`MetricPipeline`, `LogPipeline`,
//! `TracePipeline`) to store, serve, render and report on it, once, so that every
//! mechanism built for metric pipelines (sealing and masking inline secrets, generations, unreadable rows,
//! the API's `***` handling, cluster selection, status conditions) is the same code
//! for every kind.
//!
//! [`PipelineKind`] is implemented by each kind's validated type: only a validated
//! pipeline can be stored, and a stored one is validated again when it is read. Names are
//! unique per tenant *and* kind (the `pipelines` table's key is `(tenant, kind, name)`),
//! so a metric and a log pipeline may share a name; whatever identifies a pipeline
//! outside the store (health reports, audit entries, sealed secrets) carries its kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kaas_pipeline::agent_config::{AgentConfig, ConfigTemplate};
use kaas_pipeline::document::{Document, parse_log_value, parse_trace_value, parse_value};
use kaas_pipeline::output::{Header, OAuth2, Tls};
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::secret::{SecretString, StringSource};
use kaas_pipeline::selector::ClusterSelector;
use kaas_pipeline::status::MetricPipelineStatus;
use kaas_pipeline::{
    LOG_KIND, LogPipeline, MetricPipeline, TRACE_KIND, TracePipeline, ValidatedLogPipeline,
    ValidatedPipeline, ValidatedTracePipeline, ValidationContext, ValidationErrors,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One place an output sends data to, as far as its secrets care: a secret may be kept
/// as `***` only while the place it goes to stays the same.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputEndpoint {
    /// Its field under `spec.output`: `otlp`, `prometheusRemoteWrite`, `loki`, `http`.
    pub base: &'static str,
    /// The name of its URL field: `url` or `endpoint`.
    pub url_field: &'static str,
    /// The URL as written (or the reference it is read from).
    pub url: StringSource,
    /// Its TLS settings.
    pub tls: Option<Tls>,
    /// Its OAuth2 settings, whose token URL receives the client credentials.
    pub oauth2: Option<OAuth2>,
    /// Its header names, lower-cased, in order.
    pub header_names: Vec<String>,
}

impl OutputEndpoint {
    fn new(
        base: &'static str,
        url_field: &'static str,
        url: &StringSource,
        (headers, tls, oauth2): (&[Header], Option<&Tls>, Option<&OAuth2>),
    ) -> Self {
        Self {
            base,
            url_field,
            url: url.clone(),
            tls: tls.cloned(),
            oauth2: oauth2.cloned(),
            header_names: headers
                .iter()
                .map(|h| h.name.to_ascii_lowercase())
                .collect(),
        }
    }
}

fn oauth2(auth: &Option<kaas_pipeline::output::Authentication>) -> Option<&OAuth2> {
    auth.as_ref().and_then(|a| a.oauth2.as_ref())
}

/// A pipeline kind, implemented by its validated type (see the module note).
pub trait PipelineKind: Clone + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// `kind` as written in documents and stored in the `kind` column.
    const KIND: &'static str;
    /// The kind's name in audit entries and in what its sealed secrets are bound to
    /// (`pipeline` for metric pipelines, as before there were other kinds).
    const OBJECT: &'static str;
    /// The resource as written.
    type Resource: Clone
        + std::fmt::Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + schemars::JsonSchema
        + Send
        + Sync
        + 'static;

    /// Parses and validates one document of this kind (see
    /// [`kaas_pipeline::document::parse_value`]).
    fn parse_document(
        location: String,
        value: serde_yaml::Value,
        context: &ValidationContext,
    ) -> Document<Self>;
    /// The kind's validation.
    fn validate(
        resource: &Self::Resource,
        context: &ValidationContext,
    ) -> Result<Self, ValidationErrors>;
    /// `metadata.name`.
    fn name(&self) -> &str;
    /// The resource as validated.
    fn resource(&self) -> &Self::Resource;
    /// Gives the resource back.
    fn into_resource(self) -> Self::Resource;
    /// Which clusters run it.
    fn cluster_selector(&self) -> &ClusterSelector;
    /// Its buffer's byte limit.
    fn buffer_max_bytes(&self) -> u64;
    /// Whether agent instances of `role` run it, each with its own buffer
    /// ([`kaas_pipeline::role`]), in a cluster without a gateway in use (the most the
    /// cluster-level instance ever buffers).
    fn runs_on(&self, role: AgentRole) -> bool;
    /// An agent configuration running `pipelines` (of this kind) and nothing else.
    fn template(pipelines: &[Self]) -> ConfigTemplate;

    /// The resource's metadata.
    fn metadata(resource: &Self::Resource) -> &ObjectMeta;
    /// The resource's metadata, to change.
    fn metadata_mut(resource: &mut Self::Resource) -> &mut ObjectMeta;
    /// Whether two resources have the same spec (a new generation when not).
    fn same_spec(a: &Self::Resource, b: &Self::Resource) -> bool;
    /// Sets the resource's status; its `unsupportedMode` always follows the spec.
    fn set_status(resource: &mut Self::Resource, status: Option<MetricPipelineStatus>);
    /// Whether the resource is in unsupported mode (raw Prometheus scrape configs);
    /// only metric pipelines can be.
    fn unsupported_mode(_resource: &Self::Resource) -> bool {
        false
    }
    /// Every inline secret value with its path relative to `spec.output`.
    fn inline_secrets_mut(resource: &mut Self::Resource) -> Vec<(String, &mut SecretString)>;
    /// The places its output sends to (in practice one).
    fn output_endpoints(resource: &Self::Resource) -> Vec<OutputEndpoint>;
}

/// Implements [`PipelineKind`] for a validated pipeline type whose resource has the
/// usual `metadata`, `spec` (with `output` and `clusterSelector`), `status` and whose
/// validated form has `buffer`.
macro_rules! pipeline_kind {
    (
        $validated:ty, $resource:ty, kind: $kind:expr, object: $object:expr,
        parse: $parse:expr, validate: $validate:expr, template: $template:expr,
        endpoints: $endpoints:expr, runs_on: $runs_on:expr,
        unsupported_mode: $unsupported:expr $(,)?
    ) => {
        impl PipelineKind for $validated {
            const KIND: &'static str = $kind;
            const OBJECT: &'static str = $object;
            type Resource = $resource;

            fn parse_document(
                location: String,
                value: serde_yaml::Value,
                context: &ValidationContext,
            ) -> Document<Self> {
                $parse(location, value, context)
            }
            fn validate(
                resource: &$resource,
                context: &ValidationContext,
            ) -> Result<Self, ValidationErrors> {
                $validate(resource, context)
            }
            fn name(&self) -> &str {
                <$validated>::name(self)
            }
            fn resource(&self) -> &$resource {
                <$validated>::resource(self)
            }
            fn into_resource(self) -> $resource {
                <$validated>::into_resource(self)
            }
            fn cluster_selector(&self) -> &ClusterSelector {
                &self.spec().cluster_selector
            }
            fn buffer_max_bytes(&self) -> u64 {
                self.buffer.max_bytes.get()
            }
            fn runs_on(&self, role: AgentRole) -> bool {
                $runs_on(self, role)
            }
            fn template(pipelines: &[Self]) -> ConfigTemplate {
                $template(pipelines)
            }
            fn metadata(resource: &$resource) -> &ObjectMeta {
                &resource.metadata
            }
            fn metadata_mut(resource: &mut $resource) -> &mut ObjectMeta {
                &mut resource.metadata
            }
            fn same_spec(a: &$resource, b: &$resource) -> bool {
                a.spec == b.spec
            }
            fn set_status(resource: &mut $resource, status: Option<MetricPipelineStatus>) {
                let unsupported_mode = <Self as PipelineKind>::unsupported_mode(resource);
                resource.status = status.map(|mut status| {
                    status.unsupported_mode = unsupported_mode;
                    status
                });
            }
            fn unsupported_mode(resource: &$resource) -> bool {
                $unsupported(resource)
            }
            fn inline_secrets_mut(resource: &mut $resource) -> Vec<(String, &mut SecretString)> {
                resource.spec.output.inline_secrets_mut()
            }
            fn output_endpoints(resource: &$resource) -> Vec<OutputEndpoint> {
                $endpoints(&resource.spec.output)
            }
        }
    };
}

pipeline_kind!(
    ValidatedPipeline, MetricPipeline,
    kind: kaas_pipeline::KIND,
    object: "pipeline",
    parse: parse_value,
    validate: kaas_pipeline::validate,
    template: AgentConfig::template,
    endpoints: metric_endpoints,
    runs_on: |pipeline: &ValidatedPipeline, role: AgentRole| pipeline.runs_on(role, PushPlacement::ClusterInstance),
    unsupported_mode: |resource: &MetricPipeline| resource.spec.unsupported_mode(),
);

pipeline_kind!(
    ValidatedLogPipeline, LogPipeline,
    kind: LOG_KIND,
    object: "log-pipeline",
    parse: parse_log_value,
    validate: kaas_pipeline::validate_log_pipeline,
    template: |pipelines| AgentConfig::template_with_logs(&[], pipelines),
    endpoints: log_endpoints,
    runs_on: |pipeline: &ValidatedLogPipeline, role: AgentRole| pipeline.runs_on(role, PushPlacement::ClusterInstance),
    unsupported_mode: |_: &LogPipeline| false,
);

pipeline_kind!(
    ValidatedTracePipeline, TracePipeline,
    kind: TRACE_KIND,
    object: "trace-pipeline",
    parse: parse_trace_value,
    validate: kaas_pipeline::validate_trace_pipeline,
    template: |pipelines| AgentConfig::template_with_all(&[], &[], pipelines),
    endpoints: trace_endpoints,
    runs_on: |pipeline: &ValidatedTracePipeline, role: AgentRole| pipeline.runs_on(role, PushPlacement::ClusterInstance),
    unsupported_mode: |_: &TracePipeline| false,
);

/// The [`OutputEndpoint`] of an optional output section whose URL field is `$url`.
macro_rules! endpoint {
    ($section:expr, $base:literal, $url:ident) => {
        $section.as_ref().map(|o| {
            let parts = (
                o.headers.as_slice(),
                o.tls.as_ref(),
                oauth2(&o.authentication),
            );
            OutputEndpoint::new($base, stringify!($url), &o.$url, parts)
        })
    };
}

fn metric_endpoints(output: &kaas_pipeline::output::Output) -> Vec<OutputEndpoint> {
    let rw = endpoint!(output.prometheus_remote_write, "prometheusRemoteWrite", url);
    let otlp = endpoint!(output.otlp, "otlp", endpoint);
    rw.into_iter().chain(otlp).collect()
}

fn log_endpoints(output: &kaas_pipeline::logs::output::LogOutput) -> Vec<OutputEndpoint> {
    let otlp = endpoint!(output.otlp, "otlp", endpoint);
    let loki = endpoint!(output.loki, "loki", url);
    let http = endpoint!(output.http, "http", url);
    otlp.into_iter().chain(loki).chain(http).collect()
}

fn trace_endpoints(output: &kaas_pipeline::traces::output::TraceOutput) -> Vec<OutputEndpoint> {
    endpoint!(output.otlp, "otlp", endpoint)
        .into_iter()
        .collect()
}

/// The kinds the store knows, as written in documents.
pub const STORED_KINDS: [&str; 3] = [kaas_pipeline::KIND, LOG_KIND, TRACE_KIND];
