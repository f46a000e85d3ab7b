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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
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
use crate::discovery::kubernetes::watch::PodSnapshot;
use crate::discovery::kubernetes::{annotations, pods};
use crate::exporters::Exporter;
use crate::exporters::auth::SecretStore;
use crate::exporters::otlp::OtlpExporter;
use crate::exporters::remote_write::RemoteWriteExporter;
use crate::exporters::tls::{TlsError, TlsMaterial, http_client};
use crate::labels::{ADDRESS, Labels};
use crate::scrape::scraper::{DEFAULT_BODY_SIZE_LIMIT, ScrapeConfig, Target};
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
    /// The cluster's pods, when the agent can reach the Kubernetes API.
    pub pods: Option<watch::Receiver<PodSnapshot>>,
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

        let client = http_client(&TlsMaterial::default())?;
        let targets = Arc::new(Mutex::new(TargetSet::new(
            client,
            Arc::new(pipeline.processors.clone()),
            context.external_labels.clone(),
            inlet.clone(),
        )));
        let (static_targets, target_errors) = static_targets(&pipeline);
        lock(&targets).sync(static_targets.clone());
        let discovery = match (&pipeline.spec().input.prometheus, &context.pods) {
            (Some(input), Some(pods)) if input.enabled => Some(tokio::spawn(discover_pods(
                pipeline.clone(),
                static_targets,
                pods.clone(),
                targets.clone(),
            ))),
            (Some(input), None) if input.enabled => {
                stats.error(
                    "KubernetesUnavailable",
                    "the prometheus input needs access to the Kubernetes API, which this agent does not have",
                );
                None
            }
            _ => None,
        };
        Ok(Self {
            pipeline,
            stats,
            buffer,
            inlet,
            external_labels: context.external_labels.clone(),
            targets,
            target_errors,
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
        let mut targets = std::mem::replace(
            &mut *lock(&self.targets),
            TargetSet::new(
                http_client(&TlsMaterial::default()).unwrap_or_default(),
                Arc::new(Default::default()),
                self.external_labels.clone(),
                self.inlet.clone(),
            ),
        );
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
        sample_limit: limits.sample_limit.unwrap_or(0),
        label_limit: limits.label_limit.unwrap_or(0),
        label_name_length_limit: limits.label_name_length_limit.unwrap_or(0),
        label_value_length_limit: limits.label_value_length_limit.unwrap_or(0),
    }
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
                }),
                Ok(None) => {}
                Ok(Some(Err(error))) => errors.push(format!("target {address}: {error}")),
                Err(error) => errors.push(format!("target {address}: {error}")),
            }
        }
    }
    (desired, errors)
}

/// Targets from annotated pods in the namespaces the `prometheus` input admits: the
/// annotation rules first, then the pipeline's own target relabeling.
pub fn pod_targets(pipeline: &ValidatedPipeline, pods: &[Arc<Pod>]) -> Vec<DesiredTarget> {
    let Some(input) = &pipeline.spec().input.prometheus else {
        return Vec::new();
    };
    let mut rules = annotations::rules();
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
                });
            }
        }
    }
    desired
}

/// Follows pod snapshots and keeps the pipeline's targets in step: static targets plus
/// those of the current pods.
async fn discover_pods(
    pipeline: ValidatedPipeline,
    static_targets: Vec<DesiredTarget>,
    mut pods: watch::Receiver<PodSnapshot>,
    targets: Arc<Mutex<TargetSet>>,
) {
    loop {
        let snapshot = pods.borrow_and_update().clone();
        let mut desired = static_targets.clone();
        desired.extend(pod_targets(&pipeline, &snapshot));
        let report = lock(&targets).sync(desired);
        if report.started + report.stopped > 0 {
            tracing::info!(
                pipeline = %pipeline.name(),
                started = report.started,
                stopped = report.stopped,
                "scrape targets changed"
            );
        }
        if pods.changed().await.is_err() {
            return;
        }
    }
}

/// Pipelines by name.
pub type Pipelines = BTreeMap<String, RunningPipeline>;
