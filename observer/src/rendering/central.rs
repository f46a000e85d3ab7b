//! The default central pipelines every cluster runs: its workloads' and runtime's
//! metrics (`kaas-central`), and the agent's own `/metrics` (`kaas-central-agent`), to
//! the provider's receive gateway (`observer gateway`, [`crate::gateway`]), which files
//! them in Thanos receive.
//!
//! # Nothing in the workload cluster chooses a tenant
//!
//! The tenant is cluster-admin in its workload cluster and can read everything the
//! agent holds there, so neither pipeline carries a tenant header, a `tenant` label or
//! a credential of the receiver. Both present the agent's own cluster certificate
//! (`tls.agentIdentity`, issued by the observer's CA, never readable by a pipeline),
//! and the gateway derives the cluster and tenant from that certificate alone, sets
//! the tenant header and the `cluster`/`tenant` labels itself, and drops workload
//! series named like the observer's own families. The agent's self-scrape goes to a
//! path of its own ([`GATEWAY_AGENT_PATH`]) so the gateway recognises the agent's
//! families by their origin, never by a label a workload could set.
//!
//! Nothing is stored per cluster, and nothing depends on the cluster:
//! [`central_pipelines`] is a pure function of the [`CentralPipelineSettings`] (from
//! `observer serve` flags), and the control service adds its result to the tenant
//! pipelines it renders for each cluster. Rendering adds the `cluster` external label
//! to every pipeline, these included; the gateway keeps it where it equals the
//! certificate's cluster and renames any other to `exported_cluster`. Thanos receive
//! files each request under the gateway's tenant header as its own tenant label,
//! which must keep its default name `tenant_id` ([`crate::gateway::thanos`]).
//!
//! The names [`CENTRAL_PIPELINE_NAME`] and [`CENTRAL_AGENT_PIPELINE_NAME`] lie in the
//! reserved prefix [`RESERVED_PIPELINE_PREFIX`]: tenant pipelines must not use it, or
//! the agent would see two pipelines of one name ([`is_reserved_pipeline_name`]).

use std::collections::BTreeMap;

use kaas_pipeline::buffer::Buffer;
use kaas_pipeline::input::{
    Input, NamespaceSelector, RuntimeInput, StaticInput, StaticTargetGroup, WorkloadInput,
};
use kaas_pipeline::output::{Output, RemoteWriteOutput, Tls};
use kaas_pipeline::secret::{SecretString, ValueSource};
use kaas_pipeline::units::ByteSize;
use kaas_pipeline::{
    MetricPipeline, MetricPipelineSpec, ProviderPolicy, ValidatedPipeline, ValidationContext,
    ValidationErrors,
};

/// The central workload pipeline's name, the same on every cluster.
pub const CENTRAL_PIPELINE_NAME: &str = "kaas-central";
/// The agent's self-scrape pipeline's name, the same on every cluster.
pub const CENTRAL_AGENT_PIPELINE_NAME: &str = "kaas-central-agent";
/// Pipeline names starting with this are the observer's own; tenants may not use them
/// (agents also serve these pipelines' buffers first).
pub use kaas_pipeline::names::RESERVED_PIPELINE_PREFIX;
/// The header Thanos receive reads the tenant from (its `--receive.tenant-header`
/// default). The receive gateway and the observer's fleet writer set it; no pipeline
/// on a workload cluster does.
pub const DEFAULT_TENANT_HEADER: &str = "THANOS-TENANT";
/// The gateway's path for the central pipeline's workload and runtime series.
pub const GATEWAY_WORKLOAD_PATH: &str = "/api/v1/receive";
/// The gateway's path for the agent's self-scrape only.
pub const GATEWAY_AGENT_PATH: &str = "/api/v1/receive/agent";
/// Where the agent serves its own `/metrics`, seen from inside its pod: the agent's
/// default `--listen-address` port (8429) on loopback, which needs no Service and no
/// network policy.
pub const DEFAULT_AGENT_METRICS_ADDRESS: &str = "127.0.0.1:8429";
/// The `job` of the agent's self-scrape; the alerts (KaasAgentDown) and the self-health
/// dashboard select on it.
pub const AGENT_JOB: &str = "kaas-agent";
/// The disk buffer of the agent's self-scrape pipeline on each cluster: the agent's
/// own few hundred series for the buffer's whole age (6 hours at 30 s are about 5 MiB),
/// with room to spare; the workload pipeline takes the configured size.
pub const AGENT_PIPELINE_BUFFER_MAX_BYTES: u64 = 64 << 20;
/// The label naming a series' tenant, as on the fleet series (`docs/metrics.md`); the
/// gateway sets it.
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

/// Everything the central pipelines are built from; the same for every cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralPipelineSettings {
    /// The receive gateway's base URL as agents reach it, e.g.
    /// `https://receive-gateway.example:19291`; the pipelines append
    /// [`GATEWAY_WORKLOAD_PATH`] and [`GATEWAY_AGENT_PATH`].
    pub gateway_url: String,
    /// What to collect.
    pub scrape: CentralScrape,
    /// The pipelines' disk buffer on each cluster.
    pub buffer: Buffer,
    /// The agent's own `/metrics` as `host:port` ([`DEFAULT_AGENT_METRICS_ADDRESS`]).
    pub agent_metrics_address: String,
    /// The CA certificates (PEM) that verify the gateway's server certificate, sent
    /// inline with the pipelines (a CA is no secret); `None`: the system roots.
    pub gateway_ca_pem: Option<String>,
}

impl CentralPipelineSettings {
    /// Settings with the defaults for everything but the URL.
    pub fn new(gateway_url: impl Into<String>) -> Self {
        Self {
            gateway_url: gateway_url.into(),
            scrape: CentralScrape::default(),
            buffer: Buffer::default(),
            agent_metrics_address: DEFAULT_AGENT_METRICS_ADDRESS.to_owned(),
            gateway_ca_pem: None,
        }
    }

    /// Checks the settings once, at startup, by building the pipelines: a bad URL, CA
    /// or buffer is reported with its field path before any agent is configured.
    pub fn check(&self) -> Result<(), ValidationErrors> {
        self.validated().map(drop)
    }

    /// What each pipeline's buffer may hold on every cluster (its `maxBytes`), which
    /// the observer reserves in each cluster's buffer budget, for all of them.
    pub fn buffer_max_bytes(&self) -> u64 {
        self.validated().map_or(
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES,
            |pipelines| pipelines.iter().map(|p| p.buffer.max_bytes.get()).sum(),
        )
    }

    fn validated(&self) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
        self.resources()
            .iter()
            .map(|resource| kaas_pipeline::validate(resource, &provider_validation()))
            .collect()
    }

    /// The pipeline resources: the workload pipeline when it collects anything, and
    /// always the agent's self-scrape.
    fn resources(&self) -> Vec<MetricPipeline> {
        let mut resources = Vec::with_capacity(2);
        if self.scrape.prometheus_annotations || self.scrape.runtime {
            resources.push(self.workload_resource());
        }
        resources.push(self.agent_resource());
        resources
    }

    /// The output every central pipeline shares but for its path: the gateway, the
    /// agent's own certificate, no header.
    fn output(&self, path: &str) -> Output {
        let base = self.gateway_url.trim_end_matches('/');
        Output {
            prometheus_remote_write: Some(RemoteWriteOutput {
                url: format!("{base}{path}"),
                tls: Some(Tls {
                    agent_identity: true,
                    ca: self.gateway_ca_pem.as_ref().map(|pem| ValueSource {
                        value: Some(SecretString::new(pem.clone())),
                        value_from: None,
                    }),
                    ..Tls::default()
                }),
                ..RemoteWriteOutput::default()
            }),
            otlp: None,
        }
    }

    /// The workload and runtime pipeline.
    fn workload_resource(&self) -> MetricPipeline {
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
            ..Input::default()
        };
        MetricPipeline::new(
            CENTRAL_PIPELINE_NAME,
            MetricPipelineSpec {
                input,
                output: self.output(GATEWAY_WORKLOAD_PATH),
                buffer: self.buffer.clone(),
                ..MetricPipelineSpec::default()
            },
        )
    }

    /// The agent's self-scrape pipeline: its own `/metrics`, nothing else.
    fn agent_resource(&self) -> MetricPipeline {
        let input = Input {
            scrape_interval: self.scrape.interval.clone(),
            static_targets: Some(StaticInput {
                targets: vec![StaticTargetGroup {
                    addresses: vec![self.agent_metrics_address.clone()],
                    labels: BTreeMap::from([("job".to_owned(), AGENT_JOB.to_owned())]),
                    ..StaticTargetGroup::default()
                }],
            }),
            ..Input::default()
        };
        MetricPipeline::new(
            CENTRAL_AGENT_PIPELINE_NAME,
            MetricPipelineSpec {
                input,
                output: self.output(GATEWAY_AGENT_PATH),
                buffer: Buffer {
                    max_bytes: Some(ByteSize::Bytes(AGENT_PIPELINE_BUFFER_MAX_BYTES)),
                    ..self.buffer.clone()
                },
                ..MetricPipelineSpec::default()
            },
        )
    }
}

/// The central pipelines, the same for every cluster (the gateway tells clusters apart
/// by their certificates), with no cluster selector (the observer adds them to each
/// cluster's configuration).
///
/// Pure. It fails only if the settings are invalid (which
/// [`CentralPipelineSettings::check`] reports at startup).
pub fn central_pipelines(
    settings: &CentralPipelineSettings,
) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
    settings.validated()
}

/// How the provider's own pipelines are validated: distributed by the observer (so no
/// file reads), but free to write to the central receiver and to present the agent's
/// cluster certificate, which tenant pipelines may not.
fn provider_validation() -> ValidationContext {
    ValidationContext::observer(ProviderPolicy::unrestricted())
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::output::ValidatedOutput;

    use super::*;

    fn settings() -> CentralPipelineSettings {
        CentralPipelineSettings::new("https://receive-gateway.example:19291/")
    }

    fn pipelines(settings: &CentralPipelineSettings) -> BTreeMap<String, ValidatedPipeline> {
        central_pipelines(settings)
            .unwrap()
            .into_iter()
            .map(|p| (p.name().to_owned(), p))
            .collect()
    }

    fn remote_write(pipeline: &ValidatedPipeline) -> kaas_pipeline::output::RemoteWriteOutput {
        let output = &pipeline.spec().output;
        output.prometheus_remote_write.clone().unwrap()
    }

    fn url(pipeline: &ValidatedPipeline) -> String {
        let ValidatedOutput::RemoteWrite { url, .. } = &pipeline.output else {
            panic!("not remote-write: {:?}", pipeline.output);
        };
        url.to_string()
    }

    /// Issue 15, finding 2: on 552c13e the central pipeline carried the cluster's
    /// tenant in the THANOS-TENANT header and a `tenant` relabel rule, both resolved by
    /// the agent inside the workload cluster, and went straight to Thanos receive.
    #[test]
    fn nothing_in_the_pipelines_chooses_a_tenant_and_both_go_to_the_gateway() {
        let by_name = pipelines(&settings());
        assert_eq!(
            url(&by_name[CENTRAL_PIPELINE_NAME]),
            "https://receive-gateway.example:19291/api/v1/receive"
        );
        assert_eq!(
            url(&by_name[CENTRAL_AGENT_PIPELINE_NAME]),
            "https://receive-gateway.example:19291/api/v1/receive/agent"
        );
        for pipeline in by_name.values() {
            let rw = remote_write(pipeline);
            assert!(rw.headers.is_empty(), "{:?}", rw.headers);
            assert!(rw.authentication.is_none());
            let tls = rw.tls.unwrap();
            assert!(tls.agent_identity && tls.cert.is_none() && tls.key.is_none());
            assert!(pipeline.processors.relabel.is_empty());
        }
    }

    #[test]
    fn the_gateway_ca_is_sent_inline() {
        let mut settings = settings();
        let ca = kaas_test_support::tls::TestPki::generate(&["gateway"]).ca;
        settings.gateway_ca_pem = Some(ca.clone());
        for pipeline in pipelines(&settings).values() {
            let rw = remote_write(pipeline);
            let sent = rw.tls.unwrap().ca.unwrap().value.unwrap();
            assert_eq!(sent.expose(), ca);
        }
    }

    #[test]
    fn the_agent_scrapes_itself_as_job_kaas_agent_in_a_pipeline_of_its_own() {
        let by_name = pipelines(&settings());
        let agent = by_name[CENTRAL_AGENT_PIPELINE_NAME].spec();
        let groups = &agent.input.static_targets.as_ref().unwrap().targets;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].addresses, vec!["127.0.0.1:8429".to_owned()]);
        assert_eq!(
            groups[0].labels.get("job").map(String::as_str),
            Some("kaas-agent")
        );
        assert!(agent.input.prometheus.is_none() && agent.input.runtime.is_none());
        let input = &by_name[CENTRAL_PIPELINE_NAME].spec().input;
        assert!(input.static_targets.is_none());
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
        let by_name = pipelines(&settings);
        assert_eq!(
            by_name.keys().map(String::as_str).collect::<Vec<_>>(),
            [CENTRAL_AGENT_PIPELINE_NAME]
        );
        assert_eq!(
            by_name[CENTRAL_AGENT_PIPELINE_NAME].scrape.interval,
            std::time::Duration::from_secs(15)
        );
    }

    #[test]
    fn the_pipelines_select_every_cluster_and_take_the_buffer_settings() {
        let mut settings = settings();
        settings.buffer.max_age = Some("2h".into());
        for pipeline in pipelines(&settings).values() {
            assert!(pipeline.spec().cluster_selector.matches(&BTreeMap::new()));
            assert_eq!(
                pipeline.buffer.max_age,
                std::time::Duration::from_secs(2 * 3600)
            );
        }
        assert_eq!(
            settings.buffer_max_bytes(),
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES + AGENT_PIPELINE_BUFFER_MAX_BYTES
        );
    }

    #[test]
    fn bad_settings_are_reported_with_their_field_paths() {
        let mut settings = settings();
        settings.gateway_url = "not a url".into();
        settings.buffer.max_age = Some("1s".into());
        let errors = settings.check().unwrap_err().to_string();
        assert!(
            errors.contains("spec.output.prometheusRemoteWrite.url"),
            "{errors}"
        );
        assert!(errors.contains("spec.buffer.maxAge"), "{errors}");
        let mut settings = self::settings();
        settings.gateway_ca_pem = Some("not PEM".into());
        let errors = settings.check().unwrap_err().to_string();
        assert!(errors.contains("tls.ca.value"), "{errors}");
        assert!(self::settings().check().is_ok());
    }

    #[test]
    fn the_central_names_are_reserved_and_cannot_collide_with_a_tenant_pipeline() {
        assert!(is_reserved_pipeline_name(CENTRAL_PIPELINE_NAME));
        assert!(is_reserved_pipeline_name(CENTRAL_AGENT_PIPELINE_NAME));
        assert!(is_reserved_pipeline_name("kaas-anything"));
        assert!(!is_reserved_pipeline_name("kaas"));
        assert!(!is_reserved_pipeline_name("shop-to-vendor"));
        assert!(!is_reserved_pipeline_name("my-kaas-central"));
    }

    #[test]
    fn a_tenant_pipeline_cannot_present_the_agents_certificate() {
        let mut resource = settings().workload_resource();
        resource.metadata.name = Some("shop-to-vendor".into());
        let errors = kaas_pipeline::validate(&resource, &ValidationContext::tenant_default())
            .unwrap_err()
            .to_string();
        assert!(errors.contains("tls.agentIdentity"), "{errors}");
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
        let mut all = vec![tenant];
        all.extend(central_pipelines(&settings()).unwrap());
        let labels = BTreeMap::from([("cluster".to_owned(), "edge-1".to_owned())]);
        let rendered =
            kaas_pipeline::agent_config::AgentConfig::from_validated(labels, &all).render();
        // As an agent in observer mode reads it: the agent's identity passes.
        let parsed = kaas_pipeline::agent_config::AgentConfig::parse(
            std::str::from_utf8(&rendered.body).unwrap(),
            &provider_validation(),
        )
        .unwrap();
        let names: Vec<&str> = parsed.pipelines.iter().map(|p| p.name()).collect();
        assert!(names.contains(&CENTRAL_PIPELINE_NAME), "{names:?}");
        assert!(names.contains(&CENTRAL_AGENT_PIPELINE_NAME), "{names:?}");
        assert_eq!(parsed.external_labels["cluster"], "edge-1");
    }
}
