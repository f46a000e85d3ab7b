//! The default central pipelines every cluster runs: its workloads' and runtime's
//! metrics with the cluster health data (`kaas-central`), and the agent's own
//! `/metrics` (`kaas-central-agent`), to the provider's receive gateway
//! (`observer gateway`, [`crate::gateway`]), which files them in Thanos receive.
//!
//! # What they scrape (the input side)
//! Each source with the `job` the alerts in `alerts/` select
//! (`observer/tests/alert_inputs.rs` checks every rule against these jobs):
//!
//! | `job` | pipeline | how |
//! |---|---|---|
//! | `kubelet` | `kaas-central` | the runtime input, `metrics_path` `/metrics`, `/metrics/cadvisor`, `/metrics/resource`, every namespace |
//! | `kube-state-metrics` | `kaas-central` | the Service [`KUBE_STATE_METRICS_ADDRESS`] installed with the agent, `honor_labels` (its `namespace`/`pod` are the objects') |
//! | `node-exporter` | `kaas-central` | the DaemonSet's pods in [`NODE_EXPORTER_NAMESPACE`], found by their `prometheus.io` annotations; also a fixed `host:port` where one is set ([`CentralPipelineSettings::node_exporter_address`]) |
//! | `apiserver`, `kube-scheduler`, `kube-controller-manager`, `etcd`, `coredns` | `kaas-central` | the cluster's control-plane setting ([`crate::control_plane`]) |
//! | [`AGENT_JOB`] | `kaas-central-agent` | the agent's own `/metrics`, and the node agents' (their pods in [`NODE_EXPORTER_NAMESPACE`] labelled [`NODE_AGENT_APP`], found by their `prometheus.io` annotations), each node agent with its `node` |
//!
//! Annotated workloads are collected from every namespace, `kube-system` included: the
//! provider's pipeline watches the whole cluster, while tenant pipelines keep leaving
//! the system namespaces out by default. The cluster health data is always collected,
//! so `kaas-central` exists even with `--central-inputs` empty.
//!
//! Issue 15, finding 3: this pipeline used to scrape only annotated workloads outside
//! the system namespaces, the kubelets and the agent; with no kube-state-metrics, no
//! node exporter and no control plane, 11 of the 15 Kubernetes alerts had no input.//!
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
//! Nothing of the pipelines is stored per cluster but the cluster's control-plane
//! setting: [`central_pipelines_with`] is a pure function of the
//! [`CentralPipelineSettings`] (from `observer serve` flags) and that setting
//! ([`central_pipelines`] with the default one), and the control service adds its
//! result to the tenant pipelines it renders for each cluster. Rendering adds the `cluster` external label
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
use kaas_pipeline::processors::{Processors, RelabelConfig};
use kaas_pipeline::secret::{SecretString, ValueSource};
use kaas_pipeline::units::ByteSize;
use kaas_pipeline::{
    MetricPipeline, MetricPipelineSpec, ProviderPolicy, ValidatedPipeline, ValidationContext,
    ValidationErrors,
};

use crate::control_plane::ValidatedControlPlane;

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

/// The `job` of kube-state-metrics' series.
pub const KUBE_STATE_METRICS_JOB: &str = "kube-state-metrics";
/// kube-state-metrics' Service as the agent reaches it (`deploy/agent/base`, in the
/// agent's namespace, port `http-metrics`); one replica, so one static target.
pub const KUBE_STATE_METRICS_ADDRESS: &str = "kube-state-metrics.kaas-observer.svc:8080";
/// The `job` of the node exporters' series.
pub const NODE_EXPORTER_JOB: &str = "node-exporter";
/// The namespace of the node-exporter DaemonSet (`deploy/agent/base/node-exporter.yaml`),
/// the node-level pods' own, at the `privileged` Pod Security level.
pub const NODE_EXPORTER_NAMESPACE: &str = "kaas-observer-node";
/// The `app.kubernetes.io/name` of the node-exporter pods.
pub const NODE_EXPORTER_APP: &str = "node-exporter";
/// The `app.kubernetes.io/name` of the node agents' pods
/// (`deploy/agent/base/node-agent.yaml`), in [`NODE_EXPORTER_NAMESPACE`]: their own
/// `/metrics` (log buffers, dropped records, input health) go with the cluster-level
/// agent's through the gateway's agent path, as [`AGENT_JOB`].
pub const NODE_AGENT_APP: &str = "cluster-agent-node";

/// Whether `name` is reserved for the observer's own pipelines. The API should refuse
/// tenant pipelines with such names.
pub fn is_reserved_pipeline_name(name: &str) -> bool {
    name.starts_with(RESERVED_PIPELINE_PREFIX)
}

/// Which of a cluster's metrics the central pipeline collects, besides the agent's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralScrape {
    /// Pods and Services annotated `prometheus.io/scrape`, in every namespace (system
    /// namespaces included, unlike tenant pipelines' default); the cluster health
    /// producers' are scraped either way.
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
    /// kube-state-metrics as the agents reach it, `host:port`
    /// ([`KUBE_STATE_METRICS_ADDRESS`], the Service installed with the agent).
    pub kube_state_metrics_address: String,
    /// A node exporter at a fixed `host:port`, scraped with the job [`NODE_EXPORTER_JOB`]
    /// besides the DaemonSet's pods that discovery finds: for installs (and the demo and
    /// tests, which have no Kubernetes) whose node exporter is not the DaemonSet
    /// installed with the agent. `None`: discovery alone.
    pub node_exporter_address: Option<String>,
    /// The CA certificates (PEM) that verify the gateway's server certificate, sent
    /// inline with the pipelines (a CA is no secret); `None`: the system roots.
    pub gateway_ca_pem: Option<String>,
    /// Whether every node also runs the central log pipeline
    /// ([`super::central_logs`], `--central-logs`): the control plane's container logs
    /// and the kubelet's and containerd's journal, to the gateway's Loki route.
    pub logs: bool,
}

impl CentralPipelineSettings {
    /// Settings with the defaults for everything but the URL.
    pub fn new(gateway_url: impl Into<String>) -> Self {
        Self {
            gateway_url: gateway_url.into(),
            scrape: CentralScrape::default(),
            buffer: Buffer::default(),
            agent_metrics_address: DEFAULT_AGENT_METRICS_ADDRESS.to_owned(),
            kube_state_metrics_address: KUBE_STATE_METRICS_ADDRESS.to_owned(),
            node_exporter_address: None,
            gateway_ca_pem: None,
            logs: false,
        }
    }

    /// Checks the settings once, at startup, by building the pipelines: a bad URL, CA
    /// or buffer is reported with its field path before any agent is configured.
    pub fn check(&self) -> Result<(), ValidationErrors> {
        self.validated()?;
        if self.logs {
            super::central_logs::central_log_pipeline(self)?;
        }
        Ok(())
    }

    /// What each pipeline's buffer may hold on every cluster (its `maxBytes`), which
    /// the observer reserves in each cluster's buffer budget, for all of them.
    pub fn buffer_max_bytes(&self) -> u64 {
        self.validated().map_or(
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES,
            |pipelines| pipelines.iter().map(|p| p.buffer.max_bytes.get()).sum(),
        )
    }

    /// What the central log pipeline's buffer may hold on every node (its `maxBytes`;
    /// 0 without `logs`), which the observer reserves in each node's buffer budget.
    pub fn node_buffer_max_bytes(&self) -> u64 {
        if !self.logs {
            return 0;
        }
        super::central_logs::central_log_pipeline(self).map_or(
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES,
            |pipeline| pipeline.buffer.max_bytes.get(),
        )
    }

    fn validated(&self) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
        self.validated_with(&ValidatedControlPlane::default())
    }

    fn validated_with(
        &self,
        control_plane: &ValidatedControlPlane,
    ) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
        self.resources(control_plane)
            .iter()
            .map(|resource| kaas_pipeline::validate(resource, &provider_validation()))
            .collect()
    }

    /// The pipeline resources: the workload pipeline, which always collects the cluster
    /// health data (the control plane as `control_plane` says), and the agent's
    /// self-scrape.
    fn resources(&self, control_plane: &ValidatedControlPlane) -> Vec<MetricPipeline> {
        vec![self.workload_resource(control_plane), self.agent_resource()]
    }

    /// The output every central pipeline shares but for its path: the gateway, the
    /// agent's own certificate, no header.
    fn output(&self, path: &str) -> Output {
        let base = self.gateway_url.trim_end_matches('/');
        Output {
            prometheus_remote_write: Some(RemoteWriteOutput {
                url: format!("{base}{path}").into(),
                tls: Some(self.gateway_tls()),
                ..RemoteWriteOutput::default()
            }),
            otlp: None,
        }
    }

    /// The TLS settings of every central pipeline: the agent's own certificate, the
    /// gateway verified with the configured CA (the system roots without one).
    pub(super) fn gateway_tls(&self) -> Tls {
        Tls {
            agent_identity: true,
            ca: self.gateway_ca_pem.as_ref().map(|pem| ValueSource {
                value: Some(SecretString::new(pem.clone())),
                value_from: None,
            }),
            ..Tls::default()
        }
    }

    /// The workload, runtime and cluster health pipeline, scraping the control plane
    /// as `control_plane` says.
    fn workload_resource(&self, control_plane: &ValidatedControlPlane) -> MetricPipeline {
        let scrape = &self.scrape;
        // kube-state-metrics' own `namespace`, `pod` and `container` labels name the
        // objects it reports on, so they win over the target's.
        let mut targets = vec![StaticTargetGroup {
            addresses: vec![self.kube_state_metrics_address.clone()],
            labels: BTreeMap::from([("job".to_owned(), KUBE_STATE_METRICS_JOB.to_owned())]),
            honor_labels: true,
            ..StaticTargetGroup::default()
        }];
        if let Some(address) = &self.node_exporter_address {
            targets.push(StaticTargetGroup {
                addresses: vec![address.clone()],
                labels: BTreeMap::from([("job".to_owned(), NODE_EXPORTER_JOB.to_owned())]),
                ..StaticTargetGroup::default()
            });
        }
        targets.extend(control_plane.static_groups());
        let input = Input {
            scrape_interval: scrape.interval.clone(),
            prometheus: Some(WorkloadInput {
                enabled: true,
                namespaces: workload_namespaces(scrape.prometheus_annotations, control_plane),
            }),
            runtime: scrape.runtime.then(|| RuntimeInput {
                enabled: true,
                namespaces: NamespaceSelector {
                    system: true,
                    ..NamespaceSelector::default()
                },
                ..RuntimeInput::default()
            }),
            static_targets: Some(StaticInput { targets }),
            ..Input::default()
        };
        MetricPipeline::new(
            CENTRAL_PIPELINE_NAME,
            MetricPipelineSpec {
                input,
                processors: Processors {
                    relabel_configs: job_rules(scrape.prometheus_annotations, control_plane),
                    ..Processors::default()
                },
                output: self.output(GATEWAY_WORKLOAD_PATH),
                buffer: self.buffer.clone(),
                ..MetricPipelineSpec::default()
            },
        )
    }

    /// The agents' self-scrape pipeline: the cluster-level agent's own `/metrics`
    /// and its node agents', nothing else.
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
            // The node agents' pods, by their annotations, in their namespace only.
            prometheus: Some(WorkloadInput {
                enabled: true,
                namespaces: NamespaceSelector {
                    include: vec![NODE_EXPORTER_NAMESPACE.to_owned()],
                    ..NamespaceSelector::default()
                },
            }),
            ..Input::default()
        };
        MetricPipeline::new(
            CENTRAL_AGENT_PIPELINE_NAME,
            MetricPipelineSpec {
                input,
                processors: Processors {
                    relabel_configs: node_agent_rules(),
                    ..Processors::default()
                },
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

/// The central pipelines with the default control-plane setting, the same for every
/// cluster but for that setting (the gateway tells clusters apart by their
/// certificates), with no cluster selector (the observer adds them to each
/// cluster's configuration).
///
/// Pure. It fails only if the settings are invalid (which
/// [`CentralPipelineSettings::check`] reports at startup).
pub fn central_pipelines(
    settings: &CentralPipelineSettings,
) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
    settings.validated()
}

/// [`central_pipelines`] for a cluster whose control-plane setting is `control_plane`
/// (only `kaas-central` depends on it).
pub fn central_pipelines_with(
    settings: &CentralPipelineSettings,
    control_plane: &ValidatedControlPlane,
) -> Result<Vec<ValidatedPipeline>, ValidationErrors> {
    settings.validated_with(control_plane)
}

/// The namespaces annotated workloads are found in: every one, the system namespaces
/// included, when the provider collects annotated workloads; otherwise only those of
/// the cluster health producers (node-exporter, the annotated control-plane Services).
fn workload_namespaces(
    annotations: bool,
    control_plane: &ValidatedControlPlane,
) -> NamespaceSelector {
    if annotations {
        return NamespaceSelector {
            system: true,
            ..NamespaceSelector::default()
        };
    }
    let mut include = vec![NODE_EXPORTER_NAMESPACE.to_owned()];
    for (namespace, _, _) in control_plane.services() {
        if !include.iter().any(|n| n == namespace) {
            include.push(namespace.to_owned());
        }
    }
    NamespaceSelector {
        include,
        ..NamespaceSelector::default()
    }
}

/// The node agents' pods, by namespace and app label (a pod elsewhere, or another
/// app's in that namespace, cannot pass for one).
fn node_agent_selector() -> (Vec<String>, String) {
    let source = [
        "__meta_kubernetes_namespace",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name",
    ];
    (
        source.map(str::to_owned).to_vec(),
        format!("{NODE_EXPORTER_NAMESPACE};{NODE_AGENT_APP}"),
    )
}

/// Target relabel rules of the agents' self-scrape: a node agent's pod becomes
/// [`AGENT_JOB`] with its `node`; every other discovered target is dropped (the
/// cluster-level agent's static target has that job already).
fn node_agent_rules() -> Vec<RelabelConfig> {
    let (source, regex) = node_agent_selector();
    vec![
        RelabelConfig {
            source_labels: Some(source),
            regex: Some(regex),
            target_label: Some("job".to_owned()),
            replacement: Some(AGENT_JOB.to_owned()),
            action: Some("replace".to_owned()),
            ..RelabelConfig::default()
        },
        RelabelConfig {
            source_labels: Some(vec!["job".to_owned()]),
            regex: Some(AGENT_JOB.to_owned()),
            action: Some("keep".to_owned()),
            ..RelabelConfig::default()
        },
        RelabelConfig {
            source_labels: Some(vec!["__meta_kubernetes_pod_node_name".to_owned()]),
            regex: Some("(.+)".to_owned()),
            target_label: Some("node".to_owned()),
            replacement: Some("$1".to_owned()),
            action: Some("replace".to_owned()),
            ..RelabelConfig::default()
        },
    ]
}

/// Target relabel rules naming the jobs of the producers found by discovery: the
/// node-exporter pods (by namespace and app label, so a workload elsewhere cannot pass
/// for one) and the annotated control-plane Services. Without annotated workloads in
/// general, every other discovered target is dropped.
fn job_rules(annotations: bool, control_plane: &ValidatedControlPlane) -> Vec<RelabelConfig> {
    let name = |source: &[&str], regex: String, job: &str| RelabelConfig {
        source_labels: Some(source.iter().map(|s| (*s).to_owned()).collect()),
        regex: Some(regex),
        target_label: Some("job".to_owned()),
        replacement: Some(job.to_owned()),
        action: Some("replace".to_owned()),
        ..RelabelConfig::default()
    };
    // The node agents' pods are the agents' self-scrape's (their families reach the
    // gateway only on its agent path).
    let (node_agents, node_agent_regex) = node_agent_selector();
    let mut rules = vec![
        RelabelConfig {
            source_labels: Some(node_agents),
            regex: Some(node_agent_regex),
            action: Some("drop".to_owned()),
            ..RelabelConfig::default()
        },
        name(
            &[
                "__meta_kubernetes_namespace",
                "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            ],
            format!("{NODE_EXPORTER_NAMESPACE};{NODE_EXPORTER_APP}"),
            NODE_EXPORTER_JOB,
        ),
    ];
    let mut jobs: Vec<String> = [KUBE_STATE_METRICS_JOB, NODE_EXPORTER_JOB, KUBELET_JOB]
        .map(str::to_owned)
        .into();
    for (namespace, service, job) in control_plane.services() {
        rules.push(name(
            &[
                "__meta_kubernetes_namespace",
                "__meta_kubernetes_service_name",
            ],
            format!("{namespace};{service}"),
            job,
        ));
        jobs.push(job.to_owned());
    }
    if !annotations {
        jobs.extend(
            control_plane
                .static_groups()
                .iter()
                .filter_map(|g| g.labels.get("job").cloned()),
        );
        rules.push(RelabelConfig {
            source_labels: Some(vec!["job".to_owned()]),
            regex: Some(jobs.join("|")),
            action: Some("keep".to_owned()),
            ..RelabelConfig::default()
        });
    }
    rules
}

/// The `job` of the kubelet targets of the runtime input (set by the agent, as the
/// kubernetes-mixin expects; `metrics_path` tells its three endpoints apart).
pub const KUBELET_JOB: &str = "kubelet";

/// How the provider's own pipelines are validated: distributed by the observer (so no
/// file reads), but free to write to the central receiver and to present the agent's
/// cluster certificate, which tenant pipelines may not.
pub(super) fn provider_validation() -> ValidationContext {
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
            // The only rules that write name the health producers' jobs and the node
            // agents' node; none sets a tenant.
            assert!(
                (pipeline.processors.relabel.iter())
                    .filter(|rule| rule.action == kaas_pipeline::processors::RelabelAction::Replace)
                    .all(|rule| ["job", "node"].contains(&rule.target_label.as_str())),
                "{:?}",
                pipeline.processors.relabel
            );
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
        assert!(agent.input.runtime.is_none());
        // Discovery only for the node agents' pods (see the test below).
        let discovered = agent.input.prometheus.as_ref().unwrap();
        assert_eq!(discovered.namespaces.include, [NODE_EXPORTER_NAMESPACE]);
        let input = &by_name[CENTRAL_PIPELINE_NAME].spec().input;
        let groups = &input.static_targets.as_ref().unwrap().targets;
        assert!(
            groups.iter().all(|g| !g
                .addresses
                .contains(&DEFAULT_AGENT_METRICS_ADDRESS.to_owned())
                && g.labels["job"] != AGENT_JOB),
            "{groups:?}"
        );
        assert!(input.prometheus.as_ref().is_some_and(|p| p.enabled));
        let runtime = input.runtime.as_ref().unwrap();
        assert!(runtime.enabled && runtime.namespaces.system);
    }

    /// The meta labels of a node-exporter pod, as pod discovery gives them.
    const NODE_EXPORTER_POD: &[(&str, &str)] = &[
        ("__meta_kubernetes_namespace", NODE_EXPORTER_NAMESPACE),
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            NODE_EXPORTER_APP,
        ),
    ];
    /// The meta labels of a node agent's pod, as pod discovery gives them.
    const NODE_AGENT_POD: &[(&str, &str)] = &[
        ("__meta_kubernetes_namespace", NODE_EXPORTER_NAMESPACE),
        (
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            NODE_AGENT_APP,
        ),
        ("__meta_kubernetes_pod_node_name", "node-1"),
    ];
    /// The meta labels of an endpoint of CoreDNS' Service.
    const COREDNS_SERVICE: &[(&str, &str)] = &[
        ("__meta_kubernetes_namespace", "kube-system"),
        ("__meta_kubernetes_service_name", "kube-dns"),
    ];

    /// The `job` a discovered target ends with, through the pipeline's target rules.
    fn job_of(pipeline: &ValidatedPipeline, meta: &[(&str, &str)]) -> Option<String> {
        labels_of(pipeline, meta).map(|labels| labels["job"].clone())
    }

    /// The labels a discovered target ends with, through the pipeline's target rules
    /// (keep, drop and replace with `$1`); `None` when they drop it.
    fn labels_of(
        pipeline: &ValidatedPipeline,
        meta: &[(&str, &str)],
    ) -> Option<BTreeMap<String, String>> {
        let mut labels: BTreeMap<String, String> = meta
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels
            .entry("job".into())
            .or_insert_with(|| pipeline.name().into());
        for rule in &pipeline.processors.relabel {
            let source = rule
                .source_labels
                .iter()
                .map(|l| labels.get(l).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(&rule.separator);
            let matched = rule.regex.is_match(&source);
            match rule.action {
                kaas_pipeline::processors::RelabelAction::Keep if !matched => return None,
                kaas_pipeline::processors::RelabelAction::Drop if matched => return None,
                kaas_pipeline::processors::RelabelAction::Replace if matched => {
                    let value = rule.replacement.replace("$1", &source);
                    labels.insert(rule.target_label.clone(), value);
                }
                _ => {}
            }
        }
        Some(labels)
    }

    /// Issue 16: the node agents' own `/metrics` (their log buffers, drops and input
    /// health) are scraped by the agents' self-scrape as `kaas-agent` with their node,
    /// beside the cluster-level agent, and go to the gateway's agent path; the
    /// workload pipeline leaves them out, and a pod elsewhere calling itself a node
    /// agent is not scraped as one.
    #[test]
    fn the_node_agents_are_scraped_with_the_agent_as_job_kaas_agent() {
        let by_name = pipelines(&settings());
        let agent = &by_name[CENTRAL_AGENT_PIPELINE_NAME];
        let input = &agent.spec().input;
        let workloads = input.prometheus.as_ref().unwrap();
        assert!(workloads.enabled && workloads.namespaces.admits(NODE_EXPORTER_NAMESPACE));
        assert!(
            !workloads.namespaces.admits("shop") && !workloads.namespaces.admits("kube-system")
        );
        let labels = labels_of(agent, NODE_AGENT_POD).expect("a node agent is scraped");
        assert_eq!(labels["job"], AGENT_JOB);
        assert_eq!(labels["node"], "node-1");
        assert_eq!(
            url(agent),
            "https://receive-gateway.example:19291/api/v1/receive/agent"
        );
        let exporter_pod = [
            ("__meta_kubernetes_namespace", NODE_EXPORTER_NAMESPACE),
            (
                "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                NODE_EXPORTER_APP,
            ),
        ];
        assert_eq!(job_of(agent, &exporter_pod), None);
        let impostor = [
            ("__meta_kubernetes_namespace", "shop"),
            (
                "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                NODE_AGENT_APP,
            ),
        ];
        assert_eq!(job_of(agent, &impostor), None);
        // The cluster-level agent's own target keeps its job through the rules.
        let own = [("job", AGENT_JOB)];
        assert_eq!(job_of(agent, &own).as_deref(), Some(AGENT_JOB));
        assert_eq!(
            job_of(&by_name[CENTRAL_PIPELINE_NAME], NODE_AGENT_POD),
            None
        );
    }

    /// Issue 15, finding 3: the cluster health producers are scraped with the jobs the
    /// alerts select; kube-system is collected; a workload elsewhere that calls itself
    /// node-exporter keeps the pipeline's job.
    #[test]
    fn the_cluster_health_producers_are_scraped_with_their_jobs() {
        let by_name = pipelines(&settings());
        let pipeline = &by_name[CENTRAL_PIPELINE_NAME];
        let input = &pipeline.spec().input;
        let groups = &input.static_targets.as_ref().unwrap().targets;
        let ksm = groups
            .iter()
            .find(|g| g.labels["job"] == KUBE_STATE_METRICS_JOB)
            .unwrap();
        assert_eq!(ksm.addresses, [KUBE_STATE_METRICS_ADDRESS]);
        assert!(ksm.honor_labels);
        let namespaces = &input.prometheus.as_ref().unwrap().namespaces;
        assert!(namespaces.admits("kube-system") && namespaces.admits(NODE_EXPORTER_NAMESPACE));
        assert_eq!(
            job_of(pipeline, NODE_EXPORTER_POD).as_deref(),
            Some(NODE_EXPORTER_JOB)
        );
        let impostor = [
            ("__meta_kubernetes_namespace", "shop"),
            (
                "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                NODE_EXPORTER_APP,
            ),
        ];
        assert_eq!(
            job_of(pipeline, &impostor).as_deref(),
            Some(CENTRAL_PIPELINE_NAME)
        );
        assert_eq!(
            job_of(pipeline, COREDNS_SERVICE).as_deref(),
            Some("coredns")
        );
    }

    /// A node exporter at a fixed address (the demo's, on loopback) is scraped with the
    /// job the alerts select, beside the DaemonSet's pods found by discovery; an
    /// invalid address is reported with its field path at startup.
    #[test]
    fn a_node_exporter_at_a_fixed_address_is_scraped_as_job_node_exporter() {
        let mut settings = settings();
        let by_name = pipelines(&settings);
        assert!(
            static_groups(&by_name[CENTRAL_PIPELINE_NAME])
                .iter()
                .all(|g| g.labels["job"] != NODE_EXPORTER_JOB),
            "without the setting, node exporters are found by discovery only"
        );
        settings.scrape.prometheus_annotations = false;
        settings.node_exporter_address = Some("10.0.0.7:9100".into());
        let by_name = pipelines(&settings);
        let pipeline = &by_name[CENTRAL_PIPELINE_NAME];
        let node = static_groups(pipeline)
            .iter()
            .find(|g| g.labels["job"] == NODE_EXPORTER_JOB)
            .unwrap();
        assert_eq!(node.addresses, ["10.0.0.7:9100"]);
        // The keep rule (no annotated workloads) lets the static target's job pass.
        let keep: Vec<_> = pipeline
            .processors
            .relabel
            .iter()
            .filter(|r| r.action == kaas_pipeline::processors::RelabelAction::Keep)
            .collect();
        assert_eq!(keep.len(), 1);
        assert_eq!(keep[0].source_labels, ["job"]);
        assert!(keep[0].regex.is_match(NODE_EXPORTER_JOB));
        settings.node_exporter_address = Some("not an address".into());
        let errors = settings.check().unwrap_err().to_string();
        assert!(errors.contains("spec.input.static.targets[1]"), "{errors}");
    }

    /// The pipeline's static target groups.
    fn static_groups(pipeline: &ValidatedPipeline) -> &[StaticTargetGroup] {
        &pipeline
            .spec()
            .input
            .static_targets
            .as_ref()
            .unwrap()
            .targets
    }

    #[test]
    fn the_clusters_control_plane_setting_decides_what_of_it_is_scraped() {
        let setting: crate::control_plane::ControlPlaneScrape =
            serde_json::from_value(serde_json::json!({
                "etcd": {"addresses": ["10.0.0.10:2381"]},
                "coredns": {"notScraped": "hosted DNS"}
            }))
            .unwrap();
        let control_plane = setting.validate().unwrap();
        let mut settings = settings();
        settings.scrape.prometheus_annotations = false;
        let pipeline = central_pipelines_with(&settings, &control_plane)
            .unwrap()
            .into_iter()
            .find(|p| p.name() == CENTRAL_PIPELINE_NAME)
            .unwrap();
        let etcd = static_groups(&pipeline)
            .iter()
            .find(|g| g.labels["job"] == "etcd")
            .unwrap();
        assert_eq!(etcd.addresses, ["10.0.0.10:2381"]);
        // Without annotated workloads, only the producers' namespaces are watched and
        // any other discovered target is dropped; CoreDNS is not scraped.
        let namespaces = &pipeline
            .spec()
            .input
            .prometheus
            .as_ref()
            .unwrap()
            .namespaces;
        assert_eq!(namespaces.include, [NODE_EXPORTER_NAMESPACE]);
        assert_eq!(job_of(&pipeline, COREDNS_SERVICE), None);
        assert_eq!(
            job_of(&pipeline, NODE_EXPORTER_POD).as_deref(),
            Some(NODE_EXPORTER_JOB)
        );
        assert_eq!(
            job_of(&pipeline, &[]),
            None,
            "an annotated workload is dropped"
        );
    }

    #[test]
    fn inputs_can_be_switched_off_and_the_agent_and_health_data_are_still_scraped() {
        let mut settings = settings();
        settings.scrape = CentralScrape {
            prometheus_annotations: false,
            runtime: false,
            interval: Some("15s".into()),
        };
        let by_name = pipelines(&settings);
        assert_eq!(
            by_name.keys().map(String::as_str).collect::<Vec<_>>(),
            [CENTRAL_PIPELINE_NAME, CENTRAL_AGENT_PIPELINE_NAME]
        );
        for pipeline in by_name.values() {
            assert_eq!(pipeline.scrape.interval, std::time::Duration::from_secs(15));
        }
        // Annotated workloads only in the producers' namespaces (node-exporter, CoreDNS).
        let workload = by_name[CENTRAL_PIPELINE_NAME].spec();
        let prometheus = workload.input.prometheus.as_ref().unwrap();
        assert_eq!(
            prometheus.namespaces.include,
            [NODE_EXPORTER_NAMESPACE, "kube-system"]
        );
        assert!(workload.input.runtime.is_none());
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
        let mut resource = settings().workload_resource(&ValidatedControlPlane::default());
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
