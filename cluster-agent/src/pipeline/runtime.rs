//! Starting and stopping one pipeline: its buffer (under `<data dir>/buffers/<name>`),
//! exporter and sender, and one scrape loop per target.
//!
//! Stopping is orderly: scrape loops stop first and write their staleness markers,
//! then the sender gets a short grace period to deliver what is buffered, then it
//! persists its ack position. Whatever is not delivered stays in the buffer for the
//! next start, which reopens the same directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::input::{DEFAULT_METRICS_PATH, Scheme};
use kaas_pipeline::output::ValidatedOutput;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::inlet::Inlet;
use super::sender::{Sender, SenderConfig};
use super::stats::PipelineStats;
use crate::buffer::{BufferError, DiskBuffer, Limits};
use crate::exporters::Exporter;
use crate::exporters::auth::SecretStore;
use crate::exporters::otlp::OtlpExporter;
use crate::exporters::remote_write::RemoteWriteExporter;
use crate::exporters::tls::{TlsError, TlsMaterial, http_client};
use crate::labels::{ADDRESS, Labels};
use crate::scrape::scraper::{
    DEFAULT_BODY_SIZE_LIMIT, ScrapeConfig, Scraper, Target, TargetHealth,
};
use crate::scrape::target::{METRICS_PATH, SCHEME, ScrapeDefaults, populate};

/// How long a stopping pipeline may keep sending what it has buffered.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What every pipeline of an agent shares.
#[derive(Clone, Debug)]
pub struct AgentContext {
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// Labels added to every series that lacks them.
    pub external_labels: Arc<Labels>,
    /// Where `secretKeyRef` values come from.
    pub secrets: Arc<dyn SecretStore>,
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

/// A target's state, for health reports.
#[derive(Clone, Debug)]
pub struct TargetState {
    /// The target's public labels.
    pub labels: Labels,
    /// Its health.
    pub health: Arc<Mutex<TargetHealth>>,
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
    /// Targets and their health.
    pub targets: Vec<TargetState>,
    /// Targets that could not be built, with the reason.
    pub target_errors: Vec<String>,
    stop_scrapers: watch::Sender<bool>,
    stop_sender: watch::Sender<bool>,
    scrapers: Vec<JoinHandle<()>>,
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

        let (stop_scrapers, scrapers_rx) = watch::channel(false);
        let (scrapers, targets, target_errors) =
            start_static_targets(&pipeline, context, &inlet, &scrapers_rx)?;
        Ok(Self {
            pipeline,
            stats,
            buffer,
            inlet,
            external_labels: context.external_labels.clone(),
            targets,
            target_errors,
            stop_scrapers,
            stop_sender,
            scrapers,
            sender,
        })
    }

    /// Stops the pipeline (see the module documentation).
    pub async fn stop(self) {
        self.stop_scrapers.send_replace(true);
        for scraper in self.scrapers {
            let _ = scraper.await;
        }
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
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

/// Where a pipeline's buffer lives.
pub fn buffer_dir(data_dir: &Path, pipeline: &str) -> PathBuf {
    data_dir.join("buffers").join(pipeline)
}

type Started = (Vec<JoinHandle<()>>, Vec<TargetState>, Vec<String>);

fn start_static_targets(
    pipeline: &ValidatedPipeline,
    context: &AgentContext,
    inlet: &Inlet,
    stop: &watch::Receiver<bool>,
) -> Result<Started, StartError> {
    let spec = pipeline.spec();
    let mut handles = Vec::new();
    let mut states = Vec::new();
    let mut errors = Vec::new();
    let Some(input) = &spec.input.static_targets else {
        return Ok((handles, states, errors));
    };
    let client = http_client(&TlsMaterial::default())?;
    let processors = Arc::new(pipeline.processors.clone());
    let limits = spec.processors.limits.clone().unwrap_or_default();
    for group in &input.targets {
        let scheme = match group.scheme.unwrap_or(Scheme::Http) {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let defaults = ScrapeDefaults {
            job: pipeline.name().to_owned(),
            interval: pipeline.scrape.interval,
            timeout: pipeline.scrape.timeout,
            metrics_path: group
                .metrics_path
                .clone()
                .unwrap_or_else(|| DEFAULT_METRICS_PATH.to_owned()),
            scheme: scheme.to_owned(),
        };
        let config = ScrapeConfig {
            interval: pipeline.scrape.interval,
            timeout: pipeline.scrape.timeout,
            honor_labels: group.honor_labels,
            honor_timestamps: group.honor_timestamps.unwrap_or(true),
            body_size_limit: DEFAULT_BODY_SIZE_LIMIT,
            sample_limit: limits.sample_limit.unwrap_or(0),
            label_limit: limits.label_limit.unwrap_or(0),
            label_name_length_limit: limits.label_name_length_limit.unwrap_or(0),
            label_value_length_limit: limits.label_value_length_limit.unwrap_or(0),
        };
        for address in &group.addresses {
            let discovered = Labels::from_pairs(
                group
                    .labels
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .chain([
                        (ADDRESS.to_owned(), address.clone()),
                        (SCHEME.to_owned(), scheme.to_owned()),
                        (METRICS_PATH.to_owned(), defaults.metrics_path.clone()),
                    ]),
            );
            let labels = match populate(&discovered, &defaults, &pipeline.processors.relabel) {
                Ok(Some(labels)) => labels,
                Ok(None) => continue,
                Err(error) => {
                    errors.push(format!("target {address}: {error}"));
                    continue;
                }
            };
            let target = match Target::new(labels) {
                Ok(target) => target,
                Err(error) => {
                    errors.push(format!("target {address}: {error}"));
                    continue;
                }
            };
            let scraper = Scraper::new(
                target.clone(),
                config.clone(),
                client.clone(),
                processors.clone(),
                context.external_labels.clone(),
                inlet.clone(),
            );
            states.push(TargetState {
                labels: target.public.clone(),
                health: scraper.health.clone(),
            });
            handles.push(tokio::spawn(scraper.run(stop.clone())));
        }
    }
    Ok((handles, states, errors))
}

/// Pipelines by name.
pub type Pipelines = BTreeMap<String, RunningPipeline>;
