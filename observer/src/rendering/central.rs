//! The default central pipeline every cluster runs: its workloads' and runtime's
//! metrics, and the agent's own `/metrics`, to the provider's Thanos receive, with the
//! cluster's tenant in the tenant header.
//!
//! Nothing is stored per cluster: [`central_pipeline`] is a pure function of the
//! [`CentralPipelineSettings`] (from `observer serve` flags) and the cluster, and the
//! control service adds its result to the tenant pipelines it renders for the cluster.
//! Rendering adds the `cluster` external label to every pipeline, this one included,
//! so every series arrives with `cluster`; a target relabel rule adds `tenant` (the
//! label the fleet series, the alerts and the Alertmanager routes use). Thanos receive
//! additionally files the series under the tenant of the header, as its own tenant
//! label, which must keep its default name `tenant_id`: the observer writes its fleet
//! series, which carry the clusters' `tenant`, as the provider's tenant, and a Thanos
//! tenant label named `tenant` would clash with theirs.
//!
//! The name [`CENTRAL_PIPELINE_NAME`] lies in the reserved prefix
//! [`RESERVED_PIPELINE_PREFIX`]: tenant pipelines must not use it, or the agent would
//! see two pipelines of one name ([`is_reserved_pipeline_name`]).

use std::collections::BTreeMap;

use kaas_pipeline::buffer::Buffer;
use kaas_pipeline::input::{
    Input, NamespaceSelector, RuntimeInput, StaticInput, StaticTargetGroup, WorkloadInput,
};
use kaas_pipeline::output::{Authentication, Header, Output, RemoteWriteOutput, Tls};
use kaas_pipeline::processors::{Processors, RelabelConfig};
use kaas_pipeline::secret::SecretString;
use kaas_pipeline::{
    MetricPipeline, MetricPipelineSpec, ProviderPolicy, ValidatedPipeline, ValidationContext,
    ValidationErrors,
};

use crate::store::Cluster;

/// The central pipeline's name, the same on every cluster.
pub const CENTRAL_PIPELINE_NAME: &str = "kaas-central";
/// Pipeline names starting with this are the observer's own; tenants may not use them
/// (agents also serve these pipelines' buffers first).
pub use kaas_pipeline::names::RESERVED_PIPELINE_PREFIX;
/// The header Thanos receive reads the tenant from (its `--receive.tenant-header`
/// default).
pub const DEFAULT_TENANT_HEADER: &str = "THANOS-TENANT";
/// Where the agent serves its own `/metrics`, seen from inside its pod: the agent's
/// default `--listen-address` port (8429) on loopback, which needs no Service and no
/// network policy.
pub const DEFAULT_AGENT_METRICS_ADDRESS: &str = "127.0.0.1:8429";
/// The `job` of the agent's self-scrape; the alerts (KaasAgentDown) and the self-health
/// dashboard select on it.
pub const AGENT_JOB: &str = "kaas-agent";
/// The label naming a series' tenant, as on the fleet series (`docs/metrics.md`).
pub const TENANT_LABEL: &str = "tenant";

/// Whether `name` is reserved for the observer's own pipelines. The API should refuse
/// tenant pipelines with such names.
pub fn is_reserved_pipeline_name(name: &str) -> bool {
    name.starts_with(RESERVED_PIPELINE_PREFIX)
}

/// Which of a cluster's metrics the central pipeline collects, besides the agent's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralScrape {
    /// Pods and Services annotated `prometheus.io/scrape` (system namespaces excluded,
    /// as for tenant pipelines).
    pub prometheus_annotations: bool,
    /// kubelet, cAdvisor and node metrics, system namespaces included: the provider
    /// watches the whole cluster.
    pub runtime: bool,
    /// Scrape interval as a Prometheus duration; `None` takes the pipeline default.
    pub interval: Option<String>,
}

impl Default for CentralScrape {
    fn default() -> Self {
        Self {
            prometheus_annotations: true,
            runtime: true,
            interval: None,
        }
    }
}

/// Everything the central pipeline is built from; the same for every cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralPipelineSettings {
    /// Thanos receive's remote-write URL, e.g.
    /// `https://thanos-receive.example:19291/api/v1/receive`.
    pub receive_url: String,
    /// The header that carries the tenant ([`DEFAULT_TENANT_HEADER`]).
    pub tenant_header: String,
    /// What to collect.
    pub scrape: CentralScrape,
    /// The pipeline's disk buffer on each cluster.
    pub buffer: Buffer,
    /// The agent's own `/metrics` as `host:port` ([`DEFAULT_AGENT_METRICS_ADDRESS`]).
    pub agent_metrics_address: String,
    /// How the agents authenticate to the receiver, if it asks (secrets from the
    /// workload cluster, as in any pipeline).
    pub authentication: Option<Authentication>,
    /// TLS towards the receiver (e.g. a CA from a Secret in the agent's namespace).
    pub tls: Option<Tls>,
}

impl CentralPipelineSettings {
    /// Settings with the defaults for everything but the URL.
    pub fn new(receive_url: impl Into<String>) -> Self {
        Self {
            receive_url: receive_url.into(),
            tenant_header: DEFAULT_TENANT_HEADER.to_owned(),
            scrape: CentralScrape::default(),
            buffer: Buffer::default(),
            agent_metrics_address: DEFAULT_AGENT_METRICS_ADDRESS.to_owned(),
            authentication: None,
            tls: None,
        }
    }

    /// Checks the settings once, at startup, by building the pipeline for an example
    /// tenant: a bad URL, header or buffer is reported with its field path before any
    /// agent is configured.
    pub fn check(&self) -> Result<(), ValidationErrors> {
        kaas_pipeline::validate(&self.resource("example-tenant"), &provider_validation()).map(drop)
    }

    /// What the pipeline's buffer may hold on every cluster (its `maxBytes`), which
    /// the observer reserves in each cluster's buffer budget.
    pub fn buffer_max_bytes(&self) -> u64 {
        kaas_pipeline::validate(&self.resource("example-tenant"), &provider_validation()).map_or(
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES,
            |pipeline| pipeline.buffer.max_bytes.get(),
        )
    }

    /// The pipeline resource with `tenant` in the tenant header.
    fn resource(&self, tenant: &str) -> MetricPipeline {
        let scrape = &self.scrape;
        let input = Input {
            scrape_interval: scrape.interval.clone(),
            prometheus: scrape.prometheus_annotations.then(|| WorkloadInput {
                enabled: true,
                namespaces: NamespaceSelector::default(),
            }),
            runtime: scrape.runtime.then(|| RuntimeInput {
                enabled: true,
                namespaces: NamespaceSelector {
                    system: true,
                    ..NamespaceSelector::default()
                },
                ..RuntimeInput::default()
            }),
            static_targets: Some(StaticInput {
                targets: vec![StaticTargetGroup {
                    addresses: vec![self.agent_metrics_address.clone()],
                    labels: BTreeMap::from([("job".to_owned(), AGENT_JOB.to_owned())]),
                    ..StaticTargetGroup::default()
                }],
            }),
            ..Input::default()
        };
        let output = Output {
            prometheus_remote_write: Some(RemoteWriteOutput {
                url: self.receive_url.clone(),
                headers: vec![Header {
                    name: self.tenant_header.clone(),
                    value: Some(SecretString::new(tenant)),
                    ..Header::default()
                }],
                authentication: self.authentication.clone(),
                tls: self.tls.clone(),
                ..RemoteWriteOutput::default()
            }),
            otlp: None,
        };
        // Every target (so `up` and the scrape series too) gets the tenant label.
        let processors = Processors {
            relabel_configs: vec![RelabelConfig {
                target_label: Some(TENANT_LABEL.to_owned()),
                replacement: Some(tenant.to_owned()),
                action: Some("replace".to_owned()),
                ..RelabelConfig::default()
            }],
            ..Processors::default()
        };
        MetricPipeline::new(
            CENTRAL_PIPELINE_NAME,
            MetricPipelineSpec {
                input,
                processors,
                output,
                buffer: self.buffer.clone(),
                ..MetricPipelineSpec::default()
            },
        )
    }
}

/// The central pipeline for `cluster`: its tenant in the tenant header, no cluster
/// selector (the observer adds it to exactly this cluster's configuration).
///
/// Pure. It fails only if the settings are invalid (which
/// [`CentralPipelineSettings::check`] reports at startup) or the tenant name could not
/// be a header value (tenant names are DNS-1123 labels, which always can).
pub fn central_pipeline(
    settings: &CentralPipelineSettings,
    cluster: &Cluster,
) -> Result<ValidatedPipeline, ValidationErrors> {
    kaas_pipeline::validate(&settings.resource(&cluster.tenant), &provider_validation())
}

/// How the provider's own pipeline is validated: distributed by the observer (so no
/// file reads), but free to set the tenant header tenants may not, to write to the
/// central receiver, and to read the receiver's credentials from the agent's namespace.
fn provider_validation() -> ValidationContext {
    ValidationContext::observer(ProviderPolicy::unrestricted())
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::output::ValidatedOutput;

    use super::*;
    use crate::store::ClusterState;

    fn cluster(name: &str, tenant: &str) -> Cluster {
        Cluster {
            id: name.into(),
            name: name.into(),
            tenant: tenant.into(),
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            api_endpoint: None,
            state: ClusterState::Active,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms: None,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: 0,
            deleted_at_ms: None,
            incarnation: String::new(),
        }
    }

    fn settings() -> CentralPipelineSettings {
        CentralPipelineSettings::new("https://thanos-receive.example:19291/api/v1/receive")
    }

    #[test]
    fn the_pipeline_validates_and_carries_the_clusters_tenant_in_the_header() {
        let pipeline = central_pipeline(&settings(), &cluster("edge-1", "shop")).unwrap();
        assert_eq!(pipeline.name(), CENTRAL_PIPELINE_NAME);
        let ValidatedOutput::RemoteWrite { url, .. } = &pipeline.output else {
            panic!("not remote-write: {:?}", pipeline.output);
        };
        assert_eq!(
            url.as_str(),
            "https://thanos-receive.example:19291/api/v1/receive"
        );
        let rw = pipeline
            .spec()
            .output
            .prometheus_remote_write
            .as_ref()
            .unwrap();
        assert_eq!(rw.headers.len(), 1);
        assert_eq!(rw.headers[0].name, "THANOS-TENANT");
        assert_eq!(rw.headers[0].value.as_ref().unwrap().expose(), "shop");

        let other = central_pipeline(&settings(), &cluster("edge-2", "bank")).unwrap();
        let rw = other.spec().output.prometheus_remote_write.clone().unwrap();
        assert_eq!(rw.headers[0].value.as_ref().unwrap().expose(), "bank");
    }

    #[test]
    fn every_target_is_labelled_with_the_clusters_tenant() {
        let pipeline = central_pipeline(&settings(), &cluster("edge-1", "shop")).unwrap();
        let rules = &pipeline.processors.relabel;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].target_label, "tenant");
        assert_eq!(rules[0].replacement, "shop");
        assert!(rules[0].regex.is_match(""));
    }

    #[test]
    fn the_tenant_header_name_is_configurable() {
        let mut settings = settings();
        settings.tenant_header = "X-Scope-OrgID".into();
        let pipeline = central_pipeline(&settings, &cluster("edge-1", "shop")).unwrap();
        let rw = pipeline
            .spec()
            .output
            .prometheus_remote_write
            .clone()
            .unwrap();
        assert_eq!(rw.headers[0].name, "X-Scope-OrgID");
    }

    #[test]
    fn the_agent_scrapes_itself_as_job_kaas_agent() {
        let pipeline = central_pipeline(&settings(), &cluster("edge-1", "shop")).unwrap();
        let input = &pipeline.spec().input;
        let groups = &input.static_targets.as_ref().unwrap().targets;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].addresses, vec!["127.0.0.1:8429".to_owned()]);
        assert_eq!(
            groups[0].labels.get("job").map(String::as_str),
            Some("kaas-agent")
        );
        assert!(input.prometheus.as_ref().is_some_and(|p| p.enabled));
        let runtime = input.runtime.as_ref().unwrap();
        assert!(runtime.enabled && runtime.namespaces.system);
    }

    #[test]
    fn inputs_can_be_switched_off_and_the_agent_is_still_scraped() {
        let mut settings = settings();
        settings.scrape = CentralScrape {
            prometheus_annotations: false,
            runtime: false,
            interval: Some("15s".into()),
        };
        let pipeline = central_pipeline(&settings, &cluster("edge-1", "shop")).unwrap();
        assert!(pipeline.spec().input.prometheus.is_none());
        assert!(pipeline.spec().input.runtime.is_none());
        assert_eq!(pipeline.scrape.interval, std::time::Duration::from_secs(15));
    }

    #[test]
    fn the_pipeline_selects_every_cluster_and_takes_the_buffer_settings() {
        let mut settings = settings();
        settings.buffer.max_age = Some("2h".into());
        let pipeline = central_pipeline(&settings, &cluster("edge-1", "shop")).unwrap();
        assert!(pipeline.spec().cluster_selector.matches(&BTreeMap::new()));
        assert_eq!(
            pipeline.buffer.max_age,
            std::time::Duration::from_secs(2 * 3600)
        );
    }

    #[test]
    fn bad_settings_are_reported_with_their_field_paths() {
        let mut settings = settings();
        settings.receive_url = "not a url".into();
        settings.buffer.max_age = Some("1s".into());
        let errors = settings.check().unwrap_err().to_string();
        assert!(
            errors.contains("spec.output.prometheusRemoteWrite.url"),
            "{errors}"
        );
        assert!(errors.contains("spec.buffer.maxAge"), "{errors}");
        assert!(self::settings().check().is_ok());
    }

    #[test]
    fn the_central_name_is_reserved_and_cannot_collide_with_a_tenant_pipeline() {
        assert!(is_reserved_pipeline_name(CENTRAL_PIPELINE_NAME));
        assert!(is_reserved_pipeline_name("kaas-anything"));
        assert!(!is_reserved_pipeline_name("kaas"));
        assert!(!is_reserved_pipeline_name("shop-to-vendor"));
        assert!(!is_reserved_pipeline_name("my-kaas-central"));
    }

    #[test]
    fn it_renders_beside_tenant_pipelines_into_a_valid_agent_config() {
        let tenant: MetricPipeline = serde_yaml::from_str(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: shop-to-vendor}
spec:
  input: {prometheus: {enabled: true}}
  output: {prometheusRemoteWrite: {url: "https://vendor.example/api/v1/push"}}
"#,
        )
        .unwrap();
        let tenant =
            kaas_pipeline::validate(&tenant, &ValidationContext::tenant_default()).unwrap();
        let central = central_pipeline(&settings(), &cluster("edge-1", "shop")).unwrap();
        let labels = BTreeMap::from([("cluster".to_owned(), "edge-1".to_owned())]);
        let rendered =
            kaas_pipeline::agent_config::AgentConfig::from_validated(labels, &[tenant, central])
                .render();
        // As an agent in observer mode reads it: the provider's tenant header passes.
        let parsed = kaas_pipeline::agent_config::AgentConfig::parse(
            std::str::from_utf8(&rendered.body).unwrap(),
            &provider_validation(),
        )
        .unwrap();
        let names: Vec<&str> = parsed.pipelines.iter().map(|p| p.name()).collect();
        assert!(names.contains(&CENTRAL_PIPELINE_NAME), "{names:?}");
        assert_eq!(parsed.external_labels["cluster"], "edge-1");
    }
}
