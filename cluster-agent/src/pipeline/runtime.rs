//! Starting and stopping one metric pipeline: its data path ([`super::data_path`]: the
//! buffer under `<data dir>/buffers/<name>`, inlet, sender and exporter), and its
//! targets ([`super::targets`]): the static ones, for the `prometheus` input the
//! annotated pods of the namespaces it admits, followed as pods come and go, for
//! the `runtime` input the kubelets ([`super::kubelet`]), and in unsupported mode the
//! targets of its raw scrape configs ([`super::scrape_jobs`]).
//!
//! Stopping is orderly: scrape loops stop first and write their staleness markers,
//! then the data path stops (a short grace period to deliver what is buffered, then
//! the ack position is persisted). Whatever is not delivered stays in the buffer for
//! the next start, which reopens the same directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::input::{DEFAULT_METRICS_PATH, Scheme};
use kaas_pipeline::output::ValidatedOutput;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::kubelet::{KubeletAccess, runtime_targets};
use super::scrape_jobs::{ClusterObjects, ScrapeJobs};
use super::targets::{DesiredTarget, TargetSet, TargetState};
use crate::discovery::kubernetes::watch::{NodeSnapshot, PodSnapshot, Snapshot};
use crate::discovery::kubernetes::{annotations, endpointslices, istio, pods};
use crate::exporters::Exporter;
use crate::exporters::otlp::OtlpExporter;
use crate::exporters::remote_write::RemoteWriteExporter;
use crate::files::FileAccess;
use crate::internal_events::{ErrorReason, PipelineFailed, PipelineStats};
use crate::labels::{ADDRESS, Labels};
use crate::outbound::auth::{SecretStore, ValueSources};
use crate::outbound::destination::BoundUrlRules;
use crate::outbound::tls::{TlsError, TlsMaterial};
use crate::pipeline::budget::BufferGrant;
use crate::pipeline::data_path::DataPath;
use crate::scrape::client::ScrapeClient;
use crate::scrape::config::ScrapeConfig;
use crate::scrape::target::{METRICS_PATH, SCHEME, ScrapeDefaults, Target, populate};
use crate::topology::inlet::Inlet;
use kaas_buffer::BufferError;

/// What every pipeline of an agent shares.
#[derive(Clone)]
pub struct AgentContext {
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// Labels added to every series that lacks them.
    pub external_labels: Arc<Labels>,
    /// Where `secretKeyRef` values come from.
    pub secrets: Arc<dyn SecretStore>,
    /// How `valueFrom.file` values are read (standalone agents only).
    pub files: Arc<FileAccess>,
    /// What the agent sees of the cluster; empty without access to the Kubernetes API.
    pub cluster: ClusterView,
    /// Where the service-account token (and CA) are mounted, for kubelet scrapes.
    pub service_account_dir: PathBuf,
    /// The provider's per-cluster setting to accept any kubelet serving certificate
    /// (`--kubelet-insecure-skip-tls-verify`); off verifies them against the cluster CA.
    pub kubelet_insecure_skip_verify: bool,
    /// The rules output URLs read from Secrets are checked under
    /// (`--central-endpoints` refused).
    pub bound_urls: BoundUrlRules,
}

impl AgentContext {
    /// Where the values pipelines reference come from.
    pub(super) fn value_sources(&self) -> ValueSources {
        let mut sources = ValueSources::new(self.secrets.clone(), self.files.clone())
            .with_agent_identity(self.data_dir.join(crate::files::IDENTITY_DIR));
        sources.bound_urls = self.bound_urls.clone();
        sources
    }
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
    /// Its buffer, inlet (where scrapers and push receivers put samples) and sender.
    pub data_path: DataPath,
    /// Labels added to series that lack them.
    pub external_labels: Arc<Labels>,
    /// The scrape loops.
    pub targets: Arc<Mutex<TargetSet>>,
    /// Targets that could not be built, with the reason.
    pub target_errors: Vec<String>,
    /// Where the pipeline's referenced values come from (its push token too).
    pub value_sources: ValueSources,
    discovery: Option<JoinHandle<()>>,
}

impl RunningPipeline {
    /// Starts a pipeline whose buffer holds at most what `grant` says. Must be called
    /// inside a Tokio runtime.
    pub fn start(
        pipeline: ValidatedPipeline,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, StartError> {
        let name = pipeline.name().to_owned();
        let stats = Arc::new(PipelineStats::named(&name));
        let exporter = exporter(&pipeline, context, &stats)?;
        let data_path = DataPath::start(
            buffer_dir(&context.data_dir, &name),
            &pipeline.buffer,
            grant,
            stats.clone(),
            exporter,
        )?;
        let scraping = start_scraping(&pipeline, context, &data_path.inlet, &stats)?;
        Ok(Self {
            pipeline,
            data_path,
            external_labels: context.external_labels.clone(),
            targets: scraping.targets,
            target_errors: scraping.target_errors,
            value_sources: context.value_sources(),
            discovery: scraping.discovery,
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
        // The sender delivers what the scrapers just buffered, then stops.
        self.data_path.stop().await;
    }
}

/// The pipeline's exporter.
fn exporter(
    pipeline: &ValidatedPipeline,
    context: &AgentContext,
    stats: &Arc<PipelineStats>,
) -> Result<Exporter, StartError> {
    let sources = context.value_sources().reporting_to(stats.clone());
    Ok(match &pipeline.output {
        ValidatedOutput::RemoteWrite {
            url,
            version,
            timeout,
            settings,
        } => Exporter::RemoteWrite(RemoteWriteExporter::new(
            settings,
            url.clone(),
            *version,
            *timeout,
            sources,
        )?),
        ValidatedOutput::Otlp {
            endpoint,
            protocol,
            timeout,
            settings,
        } => Exporter::Otlp(OtlpExporter::new(
            settings,
            endpoint.clone(),
            *protocol,
            *timeout,
            sources,
        )?),
    })
}

/// A pipeline's scrape loops and the task that follows the cluster for them.
struct Scraping {
    targets: Arc<Mutex<TargetSet>>,
    target_errors: Vec<String>,
    discovery: Option<JoinHandle<()>>,
}

/// Starts the static targets' scrape loops, and the discovery of the targets the
/// pipeline's inputs find in the cluster.
fn start_scraping(
    pipeline: &ValidatedPipeline,
    context: &AgentContext,
    inlet: &Inlet,
    stats: &Arc<PipelineStats>,
) -> Result<Scraping, StartError> {
    let client = ScrapeClient::new(&TlsMaterial::default())?;
    let targets = Arc::new(Mutex::new(TargetSet::new(
        client,
        Arc::new(pipeline.processors.clone()),
        context.external_labels.clone(),
        inlet.clone(),
    )));
    let inputs = &pipeline.inputs;
    let jobs = ScrapeJobs::prepare(pipeline, &context.value_sources());
    let wants_pods = inputs.prometheus.is_some() || inputs.istio.is_some() || jobs.wants_pods();
    let wants_nodes = inputs.runtime.is_some();
    let wants_services = inputs.prometheus.is_some() || jobs.wants_services();
    let wants_credentials = wants_nodes
        || inputs
            .static_targets
            .iter()
            .any(|g| g.service_account_credentials);
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
    let kubelet = if wants_credentials {
        KubeletAccess::new(
            &context.service_account_dir,
            context.kubelet_insecure_skip_verify,
        )
        .map_err(|error| {
            PipelineFailed::new(ErrorReason::KubeletAccessUnavailable, error.to_string())
                .emit(stats)
        })
        .ok()
    } else {
        None
    };
    let (static_targets, mut target_errors) =
        static_targets(pipeline, kubelet.as_ref(), &context.value_sources());
    let (job_targets, job_errors) = jobs.targets(ClusterObjects::default());
    target_errors.extend(jobs.errors.iter().cloned().chain(job_errors));
    let mut first = static_targets.clone();
    first.extend(job_targets);
    lock(&targets).sync(first);
    if (wants_pods && cluster.pods.is_none()) || (wants_nodes && cluster.nodes.is_none()) {
        PipelineFailed::new(ErrorReason::KubernetesUnavailable,
            "the prometheus, istio and runtime inputs need access to the Kubernetes API, which this agent does not have").emit(stats);
    }
    let watches_anything = cluster.pods.is_some()
        || cluster.nodes.is_some()
        || (cluster.services.is_some() && cluster.endpoint_slices.is_some())
        || jobs.refresh_interval().is_some();
    let discovery = watches_anything.then(|| {
        tokio::spawn(discover(
            pipeline.clone(),
            (static_targets, jobs),
            cluster,
            kubelet,
            targets.clone(),
            stats.clone(),
        ))
    });
    Ok(Scraping {
        targets,
        target_errors,
        discovery,
    })
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
pub(super) fn scrape_config(
    pipeline: &ValidatedPipeline,
    honor_labels: bool,
    honor_timestamps: bool,
) -> ScrapeConfig {
    ScrapeConfig {
        honor_labels,
        honor_timestamps,
        ..ScrapeConfig::new(pipeline.scrape.interval, pipeline.scrape.timeout)
    }
    .limited_by(pipeline.limits)
}

pub(super) fn defaults(
    pipeline: &ValidatedPipeline,
    metrics_path: &str,
    scheme: &str,
) -> ScrapeDefaults {
    ScrapeDefaults {
        job: pipeline.name().to_owned(),
        interval: pipeline.scrape.interval,
        timeout: pipeline.scrape.timeout,
        metrics_path: metrics_path.to_owned(),
        scheme: scheme.to_owned(),
    }
}

/// The error reason when a control-plane target's certificate is not signed by the
/// cluster CA (its condition is `FlowInterrupted`, with [`TARGET_CERTIFICATE_FIXES`]).
pub const TARGET_CERTIFICATE_REASON: ErrorReason = ErrorReason::TargetCertificateUntrusted;
/// What fixes it, said in the pipeline's condition.
pub const TARGET_CERTIFICATE_FIXES: &str = "the target's serving certificate must be \
    signed by the cluster CA, since the agent's token goes only to targets it verifies: \
    point the target at an address its certificate names";

/// The static targets, and the reasons for those that cannot be built. Groups with
/// `serviceAccountCredentials` are scraped with the agent's token through `access`
/// (the cluster CA's client), bound to the target's URL as the kubelet's are; without
/// access they are not scraped. Groups with `tls` get a client of their own with that
/// material, read from `sources` (e.g. etcd's client certificate from its Secret);
/// material that cannot be read leaves the group unscraped, with the reason.
fn static_targets(
    pipeline: &ValidatedPipeline,
    access: Option<&KubeletAccess>,
    sources: &ValueSources,
) -> (Vec<DesiredTarget>, Vec<String>) {
    let mut desired = Vec::new();
    let mut errors = Vec::new();
    for group in &pipeline.inputs.static_targets {
        let group_client = match &group.tls {
            None => None,
            Some(tls) => match crate::outbound::auth::tls_material(Some(tls), sources)
                .map_err(|e| e.to_string())
                .and_then(|material| ScrapeClient::new(&material).map_err(|e| e.to_string()))
            {
                Ok(client) => Some(client),
                Err(reason) => {
                    errors.push(format!(
                        "targets {}: TLS settings: {reason}",
                        group.addresses.join(",")
                    ));
                    continue;
                }
            },
        };
        let scheme = match group.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let path = group.metrics_path.as_str();
        let defaults = defaults(pipeline, path, scheme);
        let config = scrape_config(pipeline, group.honor_labels, group.honor_timestamps);
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
            let (client, credentials) = if group.service_account_credentials {
                let Some(access) = access else {
                    errors.push(format!(
                        "target {address}: needs the agent's service-account token and the \
                         cluster CA, which this agent cannot read"
                    ));
                    continue;
                };
                let Ok(bound_to) = url::Url::parse(&format!("https://{address}{path}")) else {
                    errors.push(format!("target {address}: not a URL with {path}"));
                    continue;
                };
                (
                    Some(access.client.clone()),
                    Some(crate::scrape::credentials::ScrapeCredentials {
                        token_file: access.token_file.clone(),
                        bound_to,
                        untrusted_certificate_reason: TARGET_CERTIFICATE_REASON,
                        untrusted_certificate_advice: TARGET_CERTIFICATE_FIXES,
                    }),
                )
            } else {
                (group_client.clone(), None)
            };
            match populate(&discovered, &defaults, &pipeline.processors.relabel)
                .map(|l| l.map(Target::new))
            {
                Ok(Some(Ok(target))) => {
                    let mut config = config.clone();
                    config.credentials = credentials;
                    desired.push(DesiredTarget {
                        target,
                        config,
                        client,
                        processors: None,
                    });
                }
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
    let inputs = &pipeline.inputs;
    let mut desired = Vec::new();
    if let Some(prometheus) = &inputs.prometheus {
        desired.extend(pod_targets_with(
            pipeline,
            pods,
            prometheus,
            annotations::rules().to_vec(),
        ));
    }
    if let Some(istio) = &inputs.istio {
        desired.extend(pod_targets_with(
            pipeline,
            pods,
            istio,
            istio::rules().to_vec(),
        ));
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
    let Some(input) = &pipeline.inputs.prometheus else {
        return Vec::new();
    };
    let mut rules = endpointslices::rules().to_vec();
    rules.extend(pipeline.processors.relabel.iter().cloned());
    let defaults = defaults(pipeline, DEFAULT_METRICS_PATH, "http");
    let config = scrape_config(pipeline, false, true);
    let mut desired = Vec::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
        if !input.namespaces.admits(namespace) {
            continue;
        }
        let service = endpointslices::service_of(slice, services);
        for discovered in endpointslices::endpointslice_targets(slice, service) {
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

/// Waits until any watched kind changes or `tick` (file discovery's refresh) passes;
/// `false` when all publishers are gone.
async fn cluster_changed(cluster: &mut ClusterView, tick: Option<std::time::Duration>) -> bool {
    async fn changed<T>(receiver: &mut Option<watch::Receiver<T>>) -> bool {
        match receiver.as_mut() {
            Some(receiver) => receiver.changed().await.is_ok(),
            None => std::future::pending().await,
        }
    }
    let tick = async {
        match tick {
            Some(tick) => tokio::time::sleep(tick).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = tick => true,
        alive = changed(&mut cluster.pods) => alive,
        alive = changed(&mut cluster.nodes) => alive,
        alive = changed(&mut cluster.services) => alive,
        alive = changed(&mut cluster.endpoint_slices) => alive,
    }
}

/// Follows pod and node snapshots (and, for file discovery, its refresh interval) and
/// keeps the pipeline's targets in step: static targets plus those of the current
/// pods and nodes, and its raw scrape jobs' targets.
async fn discover(
    pipeline: ValidatedPipeline,
    (static_targets, jobs): (Vec<DesiredTarget>, ScrapeJobs),
    mut cluster: ClusterView,
    kubelet: Option<KubeletAccess>,
    targets: Arc<Mutex<TargetSet>>,
    stats: Arc<PipelineStats>,
) {
    loop {
        let mut desired = static_targets.clone();
        let mut objects = (None, None);
        if let Some(pods) = cluster.pods.as_mut() {
            let snapshot = pods.borrow_and_update().clone();
            desired.extend(pod_targets(&pipeline, &snapshot));
            objects.0 = Some(snapshot);
        }
        if let (Some(nodes), Some(access)) = (cluster.nodes.as_mut(), kubelet.as_ref()) {
            let snapshot = nodes.borrow_and_update().clone();
            desired.extend(runtime_targets(&pipeline, &snapshot, access, &stats));
        }
        if let (Some(services), Some(slices)) =
            (cluster.services.as_mut(), cluster.endpoint_slices.as_mut())
        {
            let (services, slices) = (
                services.borrow_and_update().clone(),
                slices.borrow_and_update().clone(),
            );
            desired.extend(service_targets(&pipeline, &services, &slices));
            objects.1 = Some((services, slices));
        }
        let (job_targets, job_errors) = jobs.targets(ClusterObjects {
            pods: objects.0.as_deref().map(|pods| &pods[..]),
            services: objects.1.as_ref().map(|(services, _)| &services[..]),
            endpoint_slices: objects.1.as_ref().map(|(_, slices)| &slices[..]),
        });
        desired.extend(job_targets);
        for error in job_errors {
            PipelineFailed::new(ErrorReason::InputNotRead, error).emit(&stats);
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
        let alive = cluster_changed(&mut cluster, jobs.refresh_interval()).await;
        if !alive {
            return;
        }
    }
}

/// Pipelines by name.
pub type Pipelines = BTreeMap<String, RunningPipeline>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::limits::{
        DEFAULT_BODY_SIZE_LIMIT, DEFAULT_LABEL_LIMIT, DEFAULT_LABEL_NAME_LENGTH_LIMIT,
        DEFAULT_LABEL_VALUE_LENGTH_LIMIT, DEFAULT_SAMPLE_LIMIT,
    };

    fn pipeline(limits: &str) -> ValidatedPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\nmetadata: {{name: p}}\nspec:\n  input: {{static: {{targets: [{{addresses: ['127.0.0.1:9100']}}]}}}}\n  processors: {{limits: {limits}}}\n  output: {{prometheusRemoteWrite: {{url: 'http://127.0.0.1:9090/api/v1/write'}}}}\n"
        );
        let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate(&resource, &kaas_pipeline::ValidationContext::standalone()).unwrap()
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

    /// Issue 15, finding 3: a static group with `serviceAccountCredentials` (the API
    /// server, for the provider's central pipeline) is scraped through the cluster-CA
    /// client with the agent's token bound to that target's URL; without kubelet access
    /// it is not scraped and says why; other groups carry no credentials.
    #[test]
    fn credentialed_static_targets_carry_the_token_bound_to_their_url() {
        let yaml = "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\nmetadata: {name: kaas-central}\nspec:\n  input: {static: {targets: [{addresses: ['kubernetes.default.svc:443'], scheme: https, serviceAccountCredentials: true, labels: {job: apiserver}}, {addresses: ['127.0.0.1:8429']}]}}\n  output: {prometheusRemoteWrite: {url: 'http://127.0.0.1:9090/api/v1/write'}}\n";
        let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(yaml).unwrap();
        let pipeline = kaas_pipeline::validate(
            &resource,
            &kaas_pipeline::ValidationContext::observer(
                kaas_pipeline::ProviderPolicy::unrestricted(),
            ),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let access = KubeletAccess::new(dir.path(), true).unwrap();
        let sources = ValueSources::without_secrets();
        let (targets, errors) = static_targets(&pipeline, Some(&access), &sources);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(targets.len(), 2);
        let apiserver = &targets[0];
        let credentials = apiserver.config.credentials.as_ref().unwrap();
        assert_eq!(
            credentials.bound_to.as_str(),
            "https://kubernetes.default.svc/metrics"
        );
        assert_eq!(credentials.token_file, dir.path().join("token"));
        assert!(apiserver.client.is_some());
        assert!(targets[1].config.credentials.is_none());
        assert!(targets[1].client.is_none());

        let (targets, errors) = static_targets(&pipeline, None, &sources);
        assert_eq!(targets.len(), 1, "only the plain target is scraped");
        assert!(errors[0].contains("service-account token"), "{errors:?}");
    }
}
