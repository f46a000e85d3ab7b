//! Starting and stopping one pipeline: its buffer (under `<data dir>/buffers/<name>`),
//! exporter and sender, and its targets ([`super::targets`]): the static ones, and for
//! the `prometheus` input the annotated pods of the namespaces it admits, followed as
//! pods come and go.
//!
//! Stopping is orderly: scrape loops stop first and write their staleness markers,
//! then the sender gets a short grace period to deliver what is buffered, then it
//! persists its ack position. Whatever is not delivered stays in the buffer for the
//! next start, which reopens the same directory.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::input::{DEFAULT_METRICS_PATH, Scheme};
use kaas_pipeline::output::ValidatedOutput;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::inlet::Inlet;
use super::sender::{Sender, SenderConfig};
use super::stats::PipelineStats;
use super::targets::{DesiredTarget, TargetSet, TargetState};
use crate::buffer::{BufferError, DiskBuffer, Limits};
use crate::discovery::kubernetes::watch::{NodeSnapshot, PodSnapshot, Snapshot};
use crate::discovery::kubernetes::{annotations, endpointslices, istio, nodes, pods};
use crate::exporters::Exporter;
use crate::exporters::auth::SecretStore;
use crate::exporters::otlp::OtlpExporter;
use crate::exporters::remote_write::RemoteWriteExporter;
use crate::exporters::tls::{TlsError, TlsMaterial};
use crate::labels::{ADDRESS, Labels};
use crate::scrape::client::ScrapeClient;
use crate::scrape::limits::{
    DEFAULT_BODY_SIZE_LIMIT, DEFAULT_LABEL_LIMIT, DEFAULT_LABEL_NAME_LENGTH_LIMIT,
    DEFAULT_LABEL_VALUE_LENGTH_LIMIT, DEFAULT_SAMPLE_LIMIT,
};
use crate::scrape::scraper::{ScrapeConfig, Target};
use crate::scrape::target::{METRICS_PATH, SCHEME, ScrapeDefaults, populate};

/// How long a stopping pipeline may keep sending what it has buffered.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What every pipeline of an agent shares.
#[derive(Clone)]
pub struct AgentContext {
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// Labels added to every series that lacks them.
    pub external_labels: Arc<Labels>,
    /// Where `secretKeyRef` values come from.
    pub secrets: Arc<dyn SecretStore>,
    /// What the agent sees of the cluster; empty without access to the Kubernetes API.
    pub cluster: ClusterView,
    /// Where the service-account token (and CA) are mounted, for kubelet scrapes.
    pub service_account_dir: PathBuf,
}

/// Why a pipeline cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The buffer cannot be opened.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The exporter cannot be built.
    #[error("cannot build the exporter: {0}")]
    Exporter(#[from] TlsError),
    /// The pipeline needs something this agent does not provide.
    #[error("{0}")]
    Unsupported(String),
}

/// A pipeline that is running.
pub struct RunningPipeline {
    /// The pipeline as validated.
    pub pipeline: ValidatedPipeline,
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// The buffer, for size and age.
    pub buffer: Arc<Mutex<DiskBuffer>>,
    /// Where samples enter the pipeline (scrapers and push receivers).
    pub inlet: Inlet,
    /// Labels added to series that lack them.
    pub external_labels: Arc<Labels>,
    /// The scrape loops.
    pub targets: Arc<Mutex<TargetSet>>,
    /// Targets that could not be built, with the reason.
    pub target_errors: Vec<String>,
    /// Where the pipeline's `secretKeyRef` values come from (its push token too).
    pub secrets: Arc<dyn SecretStore>,
    discovery: Option<JoinHandle<()>>,
    stop_sender: watch::Sender<bool>,
    sender: JoinHandle<()>,
}

impl RunningPipeline {
    /// Starts a pipeline. Must be called inside a Tokio runtime.
    pub fn start(pipeline: ValidatedPipeline, context: &AgentContext) -> Result<Self, StartError> {
        let name = pipeline.name().to_owned();
        let limits = Limits::from(&pipeline.buffer);
        let (buffer, _recovery) = DiskBuffer::open(buffer_dir(&context.data_dir, &name), limits)?;
        let buffer = Arc::new(Mutex::new(buffer));
        let exporter = match &pipeline.output {
            ValidatedOutput::RemoteWrite {
                url,
                version,
                timeout,
            } => {
                let output = pipeline
                    .spec()
                    .output
                    .prometheus_remote_write
                    .clone()
                    .unwrap_or_default();
                Exporter::RemoteWrite(RemoteWriteExporter::new(
                    &output,
                    url.clone(),
                    *version,
                    *timeout,
                    context.secrets.clone(),
                )?)
            }
            ValidatedOutput::Otlp {
                endpoint,
                protocol,
                timeout,
            } => {
                let output = pipeline.spec().output.otlp.clone().unwrap_or_default();
                Exporter::Otlp(OtlpExporter::new(
                    &output,
                    endpoint.clone(),
                    *protocol,
                    *timeout,
                    context.secrets.clone(),
                )?)
            }
        };
        let stats = Arc::new(PipelineStats::named(&name));
        let wake = Arc::new(Notify::new());
        let inlet = Inlet {
            buffer: buffer.clone(),
            stats: stats.clone(),
            wake: wake.clone(),
        };
        let sender = Sender {
            buffer: buffer.clone(),
            exporter: Arc::new(exporter),
            config: SenderConfig::with_max_age(pipeline.buffer.max_age),
            stats: stats.clone(),
            wake,
        };
        let (stop_sender, sender_rx) = watch::channel(false);
        let sender = tokio::spawn(sender.run(sender_rx));

        let client = ScrapeClient::new(&TlsMaterial::default())?;
        let targets = Arc::new(Mutex::new(TargetSet::new(
            client,
            Arc::new(pipeline.processors.clone()),
            context.external_labels.clone(),
            inlet.clone(),
        )));
        let (static_targets, target_errors) = static_targets(&pipeline);
        lock(&targets).sync(static_targets.clone());
        let input = &pipeline.spec().input;
        let wants_pods = input.prometheus.as_ref().is_some_and(|i| i.enabled)
            || input.istio.as_ref().is_some_and(|i| i.enabled);
        let wants_nodes = input.runtime.as_ref().is_some_and(|i| i.enabled);
        let wants_services = input.prometheus.as_ref().is_some_and(|i| i.enabled);
        let cluster = ClusterView {
            pods: context.cluster.pods.clone().filter(|_| wants_pods),
            nodes: context.cluster.nodes.clone().filter(|_| wants_nodes),
            services: context.cluster.services.clone().filter(|_| wants_services),
            endpoint_slices: context
                .cluster
                .endpoint_slices
                .clone()
                .filter(|_| wants_services),
        };
        let kubelet = if wants_nodes {
            KubeletAccess::new(&context.service_account_dir).ok()
        } else {
            None
        };
        if (wants_pods && cluster.pods.is_none()) || (wants_nodes && cluster.nodes.is_none()) {
            stats.error(
                "KubernetesUnavailable",
                "the prometheus, istio and runtime inputs need access to the Kubernetes API, which this agent does not have",
            );
        }
        let watches_anything = cluster.pods.is_some()
            || cluster.nodes.is_some()
            || (cluster.services.is_some() && cluster.endpoint_slices.is_some());
        let discovery = watches_anything.then(|| {
            tokio::spawn(discover(
                pipeline.clone(),
                static_targets,
                cluster,
                kubelet,
                targets.clone(),
            ))
        });
        Ok(Self {
            pipeline,
            stats,
            buffer,
            inlet,
            external_labels: context.external_labels.clone(),
            targets,
            target_errors,
            secrets: context.secrets.clone(),
            discovery,
            stop_sender,
            sender,
        })
    }

    /// The targets and their health.
    pub fn target_states(&self) -> Vec<TargetState> {
        lock(&self.targets).states()
    }

    /// Stops the pipeline (see the module documentation).
    pub async fn stop(self) {
        if let Some(discovery) = &self.discovery {
            discovery.abort();
        }
        let mut targets = lock(&self.targets).take();
        targets.stop_all().await;
        // Let the sender deliver what the scrapers just buffered, then stop it.
        let stats = self.stats.clone();
        let buffer = self.buffer.clone();
        let _ = tokio::time::timeout(STOP_GRACE, async {
            loop {
                let pending = buffer.lock().map(|b| b.pending_records()).unwrap_or(0);
                if pending == 0
                    || stats
                        .last_error()
                        .is_some_and(|e| e.reason == "BackendUnreachable")
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.stop_sender.send_replace(true);
        let _ = self.sender.await;
    }
}

impl std::fmt::Debug for RunningPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningPipeline")
            .field("name", &self.pipeline.name())
            .field("targets", &self.target_states().len())
            .finish_non_exhaustive()
    }
}

/// Where a pipeline's buffer lives.
pub fn buffer_dir(data_dir: &Path, pipeline: &str) -> PathBuf {
    data_dir.join("buffers").join(pipeline)
}

fn lock(targets: &Mutex<TargetSet>) -> std::sync::MutexGuard<'_, TargetSet> {
    targets.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the pipeline's targets are scraped.
fn scrape_config(
    pipeline: &ValidatedPipeline,
    honor_labels: bool,
    honor_timestamps: bool,
) -> ScrapeConfig {
    let limits = pipeline
        .spec()
        .processors
        .limits
        .clone()
        .unwrap_or_default();
    ScrapeConfig {
        interval: pipeline.scrape.interval,
        timeout: pipeline.scrape.timeout,
        honor_labels,
        honor_timestamps,
        body_size_limit: DEFAULT_BODY_SIZE_LIMIT,
        // Unset or 0 (which Prometheus reads as "no limit") take the agent's defaults:
        // no target gets the agent's memory without a bound.
        sample_limit: or_default(limits.sample_limit, DEFAULT_SAMPLE_LIMIT),
        label_limit: or_default(limits.label_limit, DEFAULT_LABEL_LIMIT),
        label_name_length_limit: or_default(
            limits.label_name_length_limit,
            DEFAULT_LABEL_NAME_LENGTH_LIMIT,
        ),
        label_value_length_limit: or_default(
            limits.label_value_length_limit,
            DEFAULT_LABEL_VALUE_LENGTH_LIMIT,
        ),
        bearer_token_file: None,
    }
}

/// A pipeline's limit, or `default` when it sets none or 0.
fn or_default(limit: Option<u32>, default: NonZeroU32) -> NonZeroU32 {
    limit.and_then(NonZeroU32::new).unwrap_or(default)
}

fn defaults(pipeline: &ValidatedPipeline, metrics_path: &str, scheme: &str) -> ScrapeDefaults {
    ScrapeDefaults {
        job: pipeline.name().to_owned(),
        interval: pipeline.scrape.interval,
        timeout: pipeline.scrape.timeout,
        metrics_path: metrics_path.to_owned(),
        scheme: scheme.to_owned(),
    }
}

/// The static targets, and the reasons for those that cannot be built.
fn static_targets(pipeline: &ValidatedPipeline) -> (Vec<DesiredTarget>, Vec<String>) {
    let mut desired = Vec::new();
    let mut errors = Vec::new();
    let Some(input) = &pipeline.spec().input.static_targets else {
        return (desired, errors);
    };
    for group in &input.targets {
        let scheme = match group.scheme.unwrap_or(Scheme::Http) {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let path = group
            .metrics_path
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_PATH);
        let defaults = defaults(pipeline, path, scheme);
        let config = scrape_config(
            pipeline,
            group.honor_labels,
            group.honor_timestamps.unwrap_or(true),
        );
        for address in &group.addresses {
            let discovered = Labels::from_pairs(
                group
                    .labels
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .chain([
                        (ADDRESS.to_owned(), address.clone()),
                        (SCHEME.to_owned(), scheme.to_owned()),
                        (METRICS_PATH.to_owned(), path.to_owned()),
                    ]),
            );
            match populate(&discovered, &defaults, &pipeline.processors.relabel)
                .map(|l| l.map(Target::new))
            {
                Ok(Some(Ok(target))) => desired.push(DesiredTarget {
                    target,
                    config: config.clone(),
                    client: None,
                    processors: None,
                }),
                Ok(None) => {}
                Ok(Some(Err(error))) => errors.push(format!("target {address}: {error}")),
                Err(error) => errors.push(format!("target {address}: {error}")),
            }
        }
    }
    (desired, errors)
}

/// Targets from pods: annotated pods for the `prometheus` input (annotation rules) and
/// sidecars for the `istio` input (Istio rules), each in the namespaces its input
/// admits, then through the pipeline's own target relabeling.
pub fn pod_targets(pipeline: &ValidatedPipeline, pods: &[Arc<Pod>]) -> Vec<DesiredTarget> {
    let input = &pipeline.spec().input;
    let mut desired = Vec::new();
    if let Some(prometheus) = input.prometheus.as_ref().filter(|i| i.enabled) {
        desired.extend(pod_targets_with(
            pipeline,
            pods,
            prometheus,
            annotations::rules(),
        ));
    }
    if let Some(istio) = input.istio.as_ref().filter(|i| i.enabled) {
        desired.extend(pod_targets_with(pipeline, pods, istio, istio::rules()));
    }
    desired
}

fn pod_targets_with(
    pipeline: &ValidatedPipeline,
    pods: &[Arc<Pod>],
    input: &kaas_pipeline::input::WorkloadInput,
    mut rules: Vec<kaas_pipeline::processors::RelabelRule>,
) -> Vec<DesiredTarget> {
    rules.extend(pipeline.processors.relabel.iter().cloned());
    let defaults = defaults(pipeline, DEFAULT_METRICS_PATH, "http");
    let config = scrape_config(pipeline, false, true);
    let mut desired = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if !input.namespaces.admits(namespace) {
            continue;
        }
        for discovered in pods::pod_targets(pod) {
            if let Ok(Some(labels)) = populate(&discovered, &defaults, &rules)
                && let Ok(target) = Target::new(labels)
            {
                desired.push(DesiredTarget {
                    target,
                    config: config.clone(),
                    client: None,
                    processors: None,
                });
            }
        }
    }
    desired
}

/// The job of runtime targets, as the kubernetes-mixin dashboards and alerts expect.
pub const KUBELET_JOB: &str = "kubelet";
/// Where a pod's service-account token and CA are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach kubelets: over HTTPS with the agent's service-account token. Kubelet
/// serving certificates are usually self-signed by the node, so they are not verified
/// (as kube-prometheus does); the token is what the kubelet checks.
#[derive(Clone, Debug)]
pub struct KubeletAccess {
    /// A client that accepts the kubelet's certificate.
    pub client: ScrapeClient,
    /// The token file, read for every scrape.
    pub token_file: std::path::PathBuf,
}

impl KubeletAccess {
    /// Access with the service account mounted at `dir`.
    pub fn new(dir: &std::path::Path) -> Result<Self, TlsError> {
        let material = TlsMaterial {
            insecure_skip_verify: true,
            ..TlsMaterial::default()
        };
        Ok(Self {
            client: ScrapeClient::new(&material)?,
            token_file: dir.join("token"),
        })
    }
}

/// Metric relabel rules that apply a namespace filter to series carrying a `namespace`
/// label (container metrics); series without one (node metrics) pass.
fn namespace_rules(
    selector: &kaas_pipeline::input::NamespaceSelector,
) -> Vec<kaas_pipeline::processors::RelabelRule> {
    use kaas_pipeline::processors::{RelabelConfig, compile_rule};
    let mut configs = Vec::new();
    if selector.include.is_empty() {
        let mut excluded: Vec<&str> = selector.exclude.iter().map(String::as_str).collect();
        if !selector.system {
            excluded.extend(kaas_pipeline::input::SYSTEM_NAMESPACES);
        }
        if !excluded.is_empty() {
            configs.push(RelabelConfig {
                action: Some("drop".into()),
                source_labels: Some(vec!["namespace".into()]),
                regex: Some(excluded.join("|")),
                ..Default::default()
            });
        }
    } else {
        configs.push(RelabelConfig {
            source_labels: Some(vec!["namespace".into()]),
            regex: Some(selector.include.join("|")),
            target_label: Some("__tmp_namespace_included".into()),
            replacement: Some("yes".into()),
            ..Default::default()
        });
        configs.push(RelabelConfig {
            action: Some("drop".into()),
            source_labels: Some(vec!["namespace".into(), "__tmp_namespace_included".into()]),
            regex: Some(".+;".into()),
            ..Default::default()
        });
        configs.push(RelabelConfig {
            action: Some("labeldrop".into()),
            regex: Some("__tmp_namespace_included".into()),
            ..Default::default()
        });
    }
    // Namespace names are DNS labels, so these patterns always compile.
    configs
        .iter()
        .filter_map(|c| compile_rule(c).ok())
        .collect()
}

/// Runtime targets of the current nodes: the kubelet's own metrics, cAdvisor's
/// container metrics and the node's resource metrics, as the input's `resources` ask.
pub fn runtime_targets(
    pipeline: &ValidatedPipeline,
    nodes: &[Arc<Node>],
    access: &KubeletAccess,
) -> Vec<DesiredTarget> {
    let Some(input) = pipeline.spec().input.runtime.as_ref().filter(|i| i.enabled) else {
        return Vec::new();
    };
    let resources = &input.resources;
    let paths: Vec<&str> = [
        (resources.kubelet, "/metrics"),
        (resources.cadvisor, "/metrics/cadvisor"),
        (resources.node, "/metrics/resource"),
    ]
    .into_iter()
    .filter(|(on, _)| on.unwrap_or(true))
    .map(|(_, path)| path)
    .collect();
    let mut processors = pipeline.processors.clone();
    let mut metric_relabel = namespace_rules(&input.namespaces);
    metric_relabel.extend(processors.metric_relabel);
    processors.metric_relabel = metric_relabel;
    let processors = Arc::new(processors);
    let mut config = scrape_config(pipeline, false, true);
    config.bearer_token_file = Some(access.token_file.clone());
    let mut desired = Vec::new();
    for node in nodes {
        let Some(discovered) = nodes::node_target(node) else {
            continue;
        };
        for path in &paths {
            let mut defaults = defaults(pipeline, path, "https");
            defaults.job = KUBELET_JOB.to_owned();
            let mut builder = crate::labels::LabelsBuilder::new(&discovered);
            builder.set(METRICS_PATH, path);
            builder.set(SCHEME, "https");
            builder.set("metrics_path", path);
            builder.set("node", discovered.get("__meta_kubernetes_node_name"));
            let with_path = builder.labels();
            if let Ok(Some(labels)) = populate(&with_path, &defaults, &pipeline.processors.relabel)
                && let Ok(target) = Target::new(labels)
            {
                desired.push(DesiredTarget {
                    target,
                    config: config.clone(),
                    client: Some(access.client.clone()),
                    processors: Some(processors.clone()),
                });
            }
        }
    }
    desired
}

/// What the cluster looks like now: one snapshot receiver per watched kind, each
/// `None` when the agent does not watch it.
#[derive(Clone, Default)]
pub struct ClusterView {
    /// Pods.
    pub pods: Option<watch::Receiver<PodSnapshot>>,
    /// Nodes.
    pub nodes: Option<watch::Receiver<NodeSnapshot>>,
    /// Services.
    pub services: Option<watch::Receiver<Snapshot<Service>>>,
    /// EndpointSlices.
    pub endpoint_slices: Option<watch::Receiver<Snapshot<EndpointSlice>>>,
}

/// Targets of annotated Services' endpoints in the namespaces the `prometheus` input
/// admits: the Service annotation rules, then the pipeline's own target relabeling.
pub fn service_targets(
    pipeline: &ValidatedPipeline,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> Vec<DesiredTarget> {
    let Some(input) = pipeline
        .spec()
        .input
        .prometheus
        .as_ref()
        .filter(|i| i.enabled)
    else {
        return Vec::new();
    };
    let mut rules = endpointslices::rules();
    rules.extend(pipeline.processors.relabel.iter().cloned());
    let defaults = defaults(pipeline, DEFAULT_METRICS_PATH, "http");
    let config = scrape_config(pipeline, false, true);
    let mut desired = Vec::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        if !input.namespaces.admits(namespace) {
            continue;
        }
        let service_name = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(endpointslices::SERVICE_NAME_LABEL));
        let service = services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_ref() == service_name
        });
        for discovered in endpointslices::endpointslice_targets(slice, service.map(AsRef::as_ref)) {
            if let Ok(Some(labels)) = populate(&discovered, &defaults, &rules)
                && let Ok(target) = Target::new(labels)
            {
                desired.push(DesiredTarget {
                    target,
                    config: config.clone(),
                    client: None,
                    processors: None,
                });
            }
        }
    }
    desired
}

/// Waits until any watched kind changes; `false` when all publishers are gone.
async fn cluster_changed(cluster: &mut ClusterView) -> bool {
    async fn changed<T>(receiver: &mut Option<watch::Receiver<T>>) -> bool {
        match receiver.as_mut() {
            Some(receiver) => receiver.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        alive = changed(&mut cluster.pods) => alive,
        alive = changed(&mut cluster.nodes) => alive,
        alive = changed(&mut cluster.services) => alive,
        alive = changed(&mut cluster.endpoint_slices) => alive,
    }
}

/// Follows pod and node snapshots and keeps the pipeline's targets in step: static
/// targets plus those of the current pods and nodes.
async fn discover(
    pipeline: ValidatedPipeline,
    static_targets: Vec<DesiredTarget>,
    mut cluster: ClusterView,
    kubelet: Option<KubeletAccess>,
    targets: Arc<Mutex<TargetSet>>,
) {
    loop {
        let mut desired = static_targets.clone();
        if let Some(pods) = cluster.pods.as_mut() {
            let snapshot = pods.borrow_and_update().clone();
            desired.extend(pod_targets(&pipeline, &snapshot));
        }
        if let (Some(nodes), Some(access)) = (cluster.nodes.as_mut(), kubelet.as_ref()) {
            let snapshot = nodes.borrow_and_update().clone();
            desired.extend(runtime_targets(&pipeline, &snapshot, access));
        }
        if let (Some(services), Some(slices)) =
            (cluster.services.as_mut(), cluster.endpoint_slices.as_mut())
        {
            let (services, slices) = (
                services.borrow_and_update().clone(),
                slices.borrow_and_update().clone(),
            );
            desired.extend(service_targets(&pipeline, &services, &slices));
        }
        let report = lock(&targets).sync(desired);
        if report.started + report.stopped > 0 {
            tracing::info!(
                pipeline = %pipeline.name(),
                started = report.started,
                stopped = report.stopped,
                "scrape targets changed"
            );
        }
        let alive = cluster_changed(&mut cluster).await;
        if !alive {
            return;
        }
    }
}

/// Pipelines by name.
pub type Pipelines = BTreeMap<String, RunningPipeline>;

#[cfg(test)]
mod tests {
    use kaas_pipeline::input::NamespaceSelector;

    use super::*;
    use crate::processing::relabel::process;

    fn kept(selector: &NamespaceSelector, namespace: &str) -> bool {
        let labels = Labels::from_pairs([("__name__", "x"), ("namespace", namespace)]);
        let result = process(&labels, &namespace_rules(selector));
        if let Some(labels) = &result {
            assert_eq!(
                labels.get("__tmp_namespace_included"),
                "",
                "helper label removed"
            );
        }
        result.is_some()
    }

    #[test]
    fn namespace_rules_filter_only_series_with_a_namespace() {
        let default = NamespaceSelector::default();
        assert!(kept(&default, "shop"));
        assert!(!kept(&default, "kube-system"));
        assert!(kept(&default, ""), "node-level series have no namespace");
        let include = NamespaceSelector {
            include: vec!["shop".into(), "kube-system".into()],
            ..Default::default()
        };
        assert!(kept(&include, "shop") && kept(&include, "kube-system") && kept(&include, ""));
        assert!(!kept(&include, "billing"));
        let exclude = NamespaceSelector {
            exclude: vec!["billing".into()],
            system: true,
            ..Default::default()
        };
        assert!(kept(&exclude, "kube-system") && !kept(&exclude, "billing"));
    }

    fn pipeline(limits: &str) -> ValidatedPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\nmetadata: {{name: p}}\nspec:\n  input: {{static: {{targets: [{{addresses: ['127.0.0.1:9100']}}]}}}}\n  processors: {{limits: {limits}}}\n  output: {{prometheusRemoteWrite: {{url: 'http://127.0.0.1:9090/api/v1/write'}}}}\n"
        );
        let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate(&resource).unwrap()
    }

    /// Issue 13, finding 10 (scrape): a pipeline that sets no limits, or sets them to
    /// 0 (Prometheus' "unlimited"), scrapes under the agent's named defaults; limits it
    /// sets are kept. 552c13e scraped such pipelines without any sample or label limit.
    #[test]
    fn pipelines_without_limits_get_the_defaults() {
        for limits in [
            "{}",
            "{sampleLimit: 0, labelLimit: 0, labelNameLengthLimit: 0, labelValueLengthLimit: 0}",
        ] {
            let config = scrape_config(&pipeline(limits), false, true);
            assert_eq!(config.body_size_limit, DEFAULT_BODY_SIZE_LIMIT);
            assert_eq!(config.sample_limit, DEFAULT_SAMPLE_LIMIT, "{limits}");
            assert_eq!(config.label_limit, DEFAULT_LABEL_LIMIT, "{limits}");
            assert_eq!(
                config.label_name_length_limit,
                DEFAULT_LABEL_NAME_LENGTH_LIMIT
            );
            assert_eq!(
                config.label_value_length_limit,
                DEFAULT_LABEL_VALUE_LENGTH_LIMIT
            );
        }
        let set = scrape_config(
            &pipeline(
                "{sampleLimit: 5000000, labelLimit: 100, labelNameLengthLimit: 10, labelValueLengthLimit: 20}",
            ),
            false,
            true,
        );
        assert_eq!(
            set.sample_limit.get(),
            5_000_000,
            "a user may raise a limit"
        );
        assert_eq!(set.label_limit.get(), 100);
        assert_eq!(set.label_name_length_limit.get(), 10);
        assert_eq!(set.label_value_length_limit.get(), 20);
    }
}
