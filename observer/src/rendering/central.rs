//! The default central pipeline every cluster runs: its workloads' and runtime's
//! metrics, the cluster health data, and the agent's own `/metrics`, to the provider's
//! Thanos receive, with the cluster's tenant in the tenant header.
//!
//! # What it scrapes (the input side)
//! Each source with the `job` the alerts in `alerts/` select
//! (`observer/tests/alert_inputs.rs` checks every rule against these jobs):
//!
//! | `job` | how |
//! |---|---|
//! | `kubelet` | the runtime input, `metrics_path` `/metrics`, `/metrics/cadvisor`, `/metrics/resource`, every namespace |
//! | `kube-state-metrics` | the Service [`KUBE_STATE_METRICS_ADDRESS`] installed with the agent, `honor_labels` (its `namespace`/`pod` are the objects') |
//! | `node-exporter` | the DaemonSet's pods in [`NODE_EXPORTER_NAMESPACE`], found by their `prometheus.io` annotations |
//! | `apiserver`, `kube-scheduler`, `kube-controller-manager`, `etcd`, `coredns` | the cluster's control-plane setting ([`crate::control_plane`]) |
//! | [`AGENT_JOB`] | the agent's own `/metrics` |
//!
//! Annotated workloads are collected from every namespace, `kube-system` included: the
//! provider's pipeline watches the whole cluster, while tenant pipelines keep leaving
//! the system namespaces out by default.
//!
//! Issue 15, finding 3: this pipeline used to scrape only annotated workloads outside
//! the system namespaces, the kubelets and the agent; with no kube-state-metrics, no
//! node exporter and no control plane, 11 of the 15 Kubernetes alerts had no input.
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

use crate::control_plane::ValidatedControlPlane;
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
        kaas_pipeline::validate(
            &self.resource("example-tenant", &ValidatedControlPlane::default()),
            &provider_validation(),
        )
        .map(drop)
    }

    /// What the pipeline's buffer may hold on every cluster (its `maxBytes`), which
    /// the observer reserves in each cluster's buffer budget.
    pub fn buffer_max_bytes(&self) -> u64 {
        kaas_pipeline::validate(
            &self.resource("example-tenant", &ValidatedControlPlane::default()),
            &provider_validation(),
        )
        .map_or(
            kaas_pipeline::buffer::DEFAULT_BUFFER_MAX_BYTES,
            |pipeline| pipeline.buffer.max_bytes.get(),
        )
    }

    /// The pipeline resource with `tenant` in the tenant header, scraping the control
    /// plane as `control_plane` says.
    fn resource(&self, tenant: &str, control_plane: &ValidatedControlPlane) -> MetricPipeline {
        let scrape = &self.scrape;
        let mut targets = vec![
            StaticTargetGroup {
                addresses: vec![self.agent_metrics_address.clone()],
                labels: BTreeMap::from([("job".to_owned(), AGENT_JOB.to_owned())]),
                ..StaticTargetGroup::default()
            },
            // kube-state-metrics' own `namespace`, `pod` and `container` labels name the
            // objects it reports on, so they win over the target's.
            StaticTargetGroup {
                addresses: vec![KUBE_STATE_METRICS_ADDRESS.to_owned()],
                labels: BTreeMap::from([("job".to_owned(), KUBE_STATE_METRICS_JOB.to_owned())]),
                honor_labels: true,
                ..StaticTargetGroup::default()
            },
        ];
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
        let mut relabel_configs = job_rules(scrape.prometheus_annotations, control_plane);
        // Every target (so `up` and the scrape series too) gets the tenant label.
        relabel_configs.push(RelabelConfig {
            target_label: Some(TENANT_LABEL.to_owned()),
            replacement: Some(tenant.to_owned()),
            action: Some("replace".to_owned()),
            ..RelabelConfig::default()
        });
        let processors = Processors {
            relabel_configs,
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
    central_pipeline_with(settings, &cluster.tenant, &ValidatedControlPlane::default())
}

/// The central pipeline of a cluster of `tenant` with the control-plane setting
/// `control_plane` (see [`central_pipeline`]).
pub fn central_pipeline_with(
    settings: &CentralPipelineSettings,
    tenant: &str,
    control_plane: &ValidatedControlPlane,
) -> Result<ValidatedPipeline, ValidationErrors> {
    kaas_pipeline::validate(
        &settings.resource(tenant, control_plane),
        &provider_validation(),
    )
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
    let mut rules = vec![name(
        &[
            "__meta_kubernetes_namespace",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
        ],
        format!("{NODE_EXPORTER_NAMESPACE};{NODE_EXPORTER_APP}"),
        NODE_EXPORTER_JOB,
    )];
    let mut jobs: Vec<String> = [
        AGENT_JOB,
        KUBE_STATE_METRICS_JOB,
        NODE_EXPORTER_JOB,
        KUBELET_JOB,
    ]
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
        let last = rules.last().unwrap();
        assert_eq!(last.target_label, "tenant");
        assert_eq!(last.replacement, "shop");
        assert!(last.regex.is_match(""));
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
        assert_eq!(groups[0].addresses, vec!["127.0.0.1:8429".to_owned()]);
        assert_eq!(
            groups[0].labels.get("job").map(String::as_str),
            Some("kaas-agent")
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
    /// The meta labels of an endpoint of CoreDNS' Service.
    const COREDNS_SERVICE: &[(&str, &str)] = &[
        ("__meta_kubernetes_namespace", "kube-system"),
        ("__meta_kubernetes_service_name", "kube-dns"),
    ];

    /// The `job` a discovered target ends with, through the pipeline's target rules.
    fn job_of(pipeline: &ValidatedPipeline, meta: &[(&str, &str)]) -> Option<String> {
        let mut labels: BTreeMap<String, String> = meta
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.insert("job".into(), CENTRAL_PIPELINE_NAME.into());
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
                kaas_pipeline::processors::RelabelAction::Replace if matched => {
                    labels.insert(rule.target_label.clone(), rule.replacement.clone());
                }
                _ => {}
            }
        }
        labels.get("job").cloned()
    }

    /// Issue 15, finding 3: the cluster health producers are scraped with the jobs the
    /// alerts select; kube-system is collected; a workload elsewhere that calls itself
    /// node-exporter keeps the pipeline's job.
    #[test]
    fn the_cluster_health_producers_are_scraped_with_their_jobs() {
        let pipeline = central_pipeline(&settings(), &cluster("edge-1", "shop")).unwrap();
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
            job_of(&pipeline, NODE_EXPORTER_POD).as_deref(),
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
            job_of(&pipeline, &impostor).as_deref(),
            Some(CENTRAL_PIPELINE_NAME)
        );
        assert_eq!(
            job_of(&pipeline, COREDNS_SERVICE).as_deref(),
            Some("coredns")
        );
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
        let pipeline = central_pipeline_with(&settings, "shop", &control_plane).unwrap();
        let groups = &pipeline
            .spec()
            .input
            .static_targets
            .as_ref()
            .unwrap()
            .targets;
        let etcd = groups.iter().find(|g| g.labels["job"] == "etcd").unwrap();
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
    fn inputs_can_be_switched_off_and_the_agent_is_still_scraped() {
        let mut settings = settings();
        settings.scrape = CentralScrape {
            prometheus_annotations: false,
            runtime: false,
            interval: Some("15s".into()),
        };
        let pipeline = central_pipeline(&settings, &cluster("edge-1", "shop")).unwrap();
        // Annotated workloads only in the producers' namespaces (node-exporter, CoreDNS).
        let prometheus = pipeline.spec().input.prometheus.as_ref().unwrap();
        assert_eq!(
            prometheus.namespaces.include,
            [NODE_EXPORTER_NAMESPACE, "kube-system"]
        );
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
