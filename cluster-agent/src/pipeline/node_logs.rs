//! The node's log inputs at run time: one [`FanOut`] over the file tailer
//! ([`TailedLogs`]: container logs below the pod log directory and plain files by
//! glob) and one over the journal ([`JournalReader`]), each with a consumer per log
//! pipeline that has a `runtime` or `node` input ([`InputConsumer`]), and a blocking
//! thread that runs both fan-outs' [`FanOut::round`] every poll interval and then
//! publishes the inputs' counters and the fan-outs' state ([`LogInputStats`]).
//!
//! **Lifecycle.** [`NodeLogInputs::stop`] ends the thread and drops the fan-outs
//! before any log pipeline is stopped or restarted (an input must never write into a
//! buffer directory that a restarted pipeline reopens); [`NodeLogInputs::start`]
//! builds new fan-outs for the pipelines that run now. The fan-outs reopen the same
//! position files under `<data dir>/log-inputs/`, so a change of pipelines repeats at
//! most what was read and not yet acknowledged, and loses nothing.
//!
//! **What is read for everyone.** The tailer reads the pod log directory when some
//! pipeline has a `runtime` input, the union of the pipelines' file globs below the
//! provider's allowed roots (never the agent's data directory or credentials), and
//! the union of their journal units; each pipeline's consumer keeps its own part. Where
//! to start in files that existed before the first start is the tailer's one choice:
//! from their beginning when some pipeline asks for it (the others' consumers take what
//! they select either way). Multiline recombination, a tailer-wide setting too, is not
//! wired yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kaas_logfiles::{StartAt as TailStart, TailConfig};
use kaas_pipeline::logs::input::StartAt;
use kaas_pipeline::paths::PathPolicy;

use super::logs::{InputConsumer, LogPipelines, NodeInput};
use crate::internal_events::{
    ConsumerLag, FILE_EVENTS, InputSnapshot, JOURNAL_EVENTS, LogInputStats,
};
use crate::log_inputs::{
    FanOut, FanOutConfig, InputError, JournalReader, JournalSettings, JournalStart, LogConsumer,
    NodeIdentity, PodEnrichment, PodMetadataCache, TailedLogs,
};

/// Where the kubelet writes container logs.
pub const DEFAULT_POD_LOG_DIR: &str = "/var/log/pods";
/// Where systemd keeps the persistent journal.
pub const DEFAULT_JOURNAL_DIR: &str = "/var/log/journal";

/// How often the fan-outs read: the tailer's own poll interval, short enough that a
/// line is shipped within a second and long enough that an idle node costs nothing.
pub const POLL_INTERVAL: Duration = kaas_logfiles::DEFAULT_POLL_INTERVAL;

/// What the node's log inputs read and where they keep their positions.
#[derive(Clone, Debug)]
pub struct NodeLogSettings {
    /// The pod log directory ([`DEFAULT_POD_LOG_DIR`]; `--pod-log-dir`).
    pub pod_log_dir: PathBuf,
    /// The journal directory ([`DEFAULT_JOURNAL_DIR`]; `--journal-dir`).
    pub journal_dir: PathBuf,
    /// Where position files live: `<data dir>/log-inputs`.
    pub state_dir: PathBuf,
    /// The node and cluster every resource names.
    pub node: NodeIdentity,
    /// The node's pods, for pod selectors and labels; `None` without a pod watch.
    pub pods: Option<PodMetadataCache>,
    /// Where plain files may be read, and what never.
    pub files: PathPolicy,
}

/// The running fan-outs' thread.
struct Reading {
    stop: Arc<AtomicBool>,
    thread: tokio::task::JoinHandle<()>,
}

/// The node's log inputs (see the module documentation).
pub struct NodeLogInputs {
    settings: NodeLogSettings,
    reading: Option<Reading>,
    stats: Arc<LogInputStats>,
}

impl NodeLogInputs {
    /// Inputs with `settings`, reading nothing yet, publishing what they read to
    /// `stats` (`/metrics` reads it).
    pub fn new(settings: NodeLogSettings, stats: Arc<LogInputStats>) -> Self {
        Self {
            settings,
            reading: None,
            stats,
        }
    }

    /// Stops reading and drops the fan-outs (their consumers hold the pipelines'
    /// inlets); waits for a round in progress to end.
    pub async fn stop(&mut self) {
        if let Some(reading) = self.reading.take() {
            reading.stop.store(true, Ordering::Relaxed);
            let _ = reading.thread.await;
            self.stats.publish(Vec::new());
        }
    }

    /// Starts reading for the `pipelines` that have a `runtime` or `node` input (none:
    /// nothing is read), naming `cluster` (the `cluster` external label) in every
    /// resource when given. Stops what reads now first. Must be called inside a Tokio
    /// runtime.
    pub async fn start(&mut self, pipelines: &LogPipelines, cluster: Option<&str>) {
        self.stop().await;
        if let Some(cluster) = cluster {
            cluster.clone_into(&mut self.settings.node.cluster_name);
        }
        let plan = ReadPlan::of(&self.settings, pipelines);
        let stop = Arc::new(AtomicBool::new(false));
        let (tailed, journal) = match plan.open(&self.settings) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::error!(%error, "the node's log inputs cannot start");
                return;
            }
        };
        if tailed.is_none() && journal.is_none() {
            return;
        }
        let flag = stop.clone();
        let stats = self.stats.clone();
        let thread = tokio::task::spawn_blocking(move || read(tailed, journal, &flag, &stats));
        self.reading = Some(Reading { stop, thread });
    }
}

/// Runs the fan-outs until `stop` is set, publishing their state to `stats` after
/// every round.
fn read(
    mut tailed: Option<FanOut<TailedLogs>>,
    mut journal: Option<FanOut<JournalReader>>,
    stop: &AtomicBool,
    stats: &LogInputStats,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut errors = Vec::new();
        if let Some(fan_out) = tailed.as_mut() {
            errors.extend(fan_out.round().errors);
        }
        if let Some(fan_out) = journal.as_mut() {
            errors.extend(fan_out.round().errors);
        }
        for error in errors {
            tracing::warn!(%error, "reading the node's logs");
        }
        let snapshots = tailed
            .as_ref()
            .map(files_snapshot)
            .into_iter()
            .chain(journal.as_ref().map(journal_snapshot))
            .collect();
        stats.publish(snapshots);
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A fan-out's consumers, for telemetry.
fn consumer_lags<R: crate::log_inputs::LogReader>(fan_out: &FanOut<R>) -> Vec<ConsumerLag> {
    fan_out
        .consumers()
        .into_iter()
        .map(|status| ConsumerLag {
            pipeline: status.name,
            outstanding_batches: status.outstanding as u64,
            detached: status.detached,
            detachments: status.detachments,
        })
        .collect()
}

/// The tailer's counters and its fan-out's state.
fn files_snapshot(fan_out: &FanOut<TailedLogs>) -> InputSnapshot {
    let counters = fan_out.reader().counters();
    let (open, tracked) = fan_out.reader().files();
    InputSnapshot {
        input: "files",
        files_open: open as u64,
        files_tracked: tracked as u64,
        bytes_read: counters.bytes_read,
        records: counters.records,
        events: FILE_EVENTS
            .iter()
            .copied()
            .zip([
                counters.truncations,
                counters.rotations,
                counters.lost_files,
                counters.evictions,
                counters.read_errors,
                counters.truncated_records,
                counters.invalid_utf8_records,
                counters.unparsed_lines,
            ])
            .collect(),
        consumers: consumer_lags(fan_out),
    }
}

/// The journal reader's counters and its fan-out's state.
fn journal_snapshot(fan_out: &FanOut<JournalReader>) -> InputSnapshot {
    let counters = fan_out.reader().counters();
    InputSnapshot {
        input: "journal",
        records: counters.entries,
        events: JOURNAL_EVENTS
            .iter()
            .copied()
            .zip([counters.read_errors, counters.truncated_entries])
            .collect(),
        consumers: consumer_lags(fan_out),
        ..InputSnapshot::default()
    }
}

/// What the node's inputs read for the running pipelines.
struct ReadPlan {
    tailed: Vec<Arc<dyn LogConsumer>>,
    journal: Vec<Arc<dyn LogConsumer>>,
    pod_logs: bool,
    globs: Vec<PathBuf>,
    units: Vec<String>,
    from_beginning: bool,
    pod_labels: bool,
    pod_annotations: bool,
}

impl ReadPlan {
    fn of(settings: &NodeLogSettings, pipelines: &LogPipelines) -> Self {
        let mut plan = Self {
            tailed: Vec::new(),
            journal: Vec::new(),
            pod_logs: false,
            globs: Vec::new(),
            units: Vec::new(),
            from_beginning: false,
            pod_labels: false,
            pod_annotations: false,
        };
        let consumer = |pipeline: &super::logs::RunningLogPipeline, input| {
            Arc::new(InputConsumer::new(
                pipeline.intake.clone(),
                input,
                settings.pods.clone(),
            )) as Arc<dyn LogConsumer>
        };
        for pipeline in pipelines.values() {
            let inputs = &pipeline.pipeline.inputs;
            let node = inputs.node.as_ref();
            let files = node.map_or(&[][..], |n| &n.files[..]);
            let units = node.map_or(&[][..], |n| &n.journal_units[..]);
            if let Some(runtime) = &inputs.runtime {
                plan.pod_logs = true;
                plan.from_beginning |= runtime.start_at == StartAt::Beginning;
                plan.pod_labels |= runtime.pod_labels;
                plan.pod_annotations |= runtime.pod_annotations;
            }
            if inputs.runtime.is_some() || !files.is_empty() {
                plan.tailed.push(consumer(pipeline, NodeInput::Tailed));
            }
            if !files.is_empty() && node.is_some_and(|n| n.start_at == StartAt::Beginning) {
                plan.from_beginning = true;
            }
            for glob in files {
                let pattern = PathBuf::from(&glob.pattern);
                if !plan.globs.contains(&pattern) {
                    plan.globs.push(pattern);
                }
            }
            if !units.is_empty() {
                plan.journal.push(consumer(pipeline, NodeInput::Journal));
                for unit in units {
                    if !plan.units.contains(unit) {
                        plan.units.push(unit.clone());
                    }
                }
            }
        }
        plan
    }

    /// Opens the fan-outs the plan needs.
    #[allow(clippy::type_complexity)]
    fn open(
        self,
        settings: &NodeLogSettings,
    ) -> Result<(Option<FanOut<TailedLogs>>, Option<FanOut<JournalReader>>), InputError> {
        let state = &settings.state_dir;
        std::fs::create_dir_all(state).map_err(|source| InputError::Position {
            path: state.clone(),
            source,
        })?;
        let tailed = if self.tailed.is_empty() {
            None
        } else {
            let mut config = TailConfig::new(state.join("tail.checkpoint"));
            config.pod_log_root = self.pod_logs.then(|| settings.pod_log_dir.clone());
            config.globs = self.globs;
            config.allowed_roots = settings.files.allowed_roots().to_vec();
            config.denied = settings.files.denied().map(PathBuf::from).collect();
            config.denied.push(state.clone());
            if self.from_beginning {
                config.start_at = TailStart::Beginning;
            }
            let config = config.validate().map_err(|errors| InputError::Config {
                reason: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
            let enrichment = PodEnrichment {
                pods: settings.pods.clone(),
                labels: self.pod_labels,
                annotations: self.pod_annotations,
            };
            let reader = TailedLogs::open(config, settings.node.clone(), enrichment)?;
            Some(FanOut::open(
                FanOutConfig::new(state.join("tail-detached")),
                reader,
                self.tailed,
            )?)
        };
        let journal = if self.journal.is_empty() {
            None
        } else {
            let mut journal =
                JournalSettings::new(settings.journal_dir.clone(), state.join("journal.position"));
            journal.units = self.units;
            if self.from_beginning {
                journal.start_at = JournalStart::Beginning;
            }
            let reader = JournalReader::open(journal, settings.node.clone())?;
            Some(FanOut::open(
                FanOutConfig::new(state.join("journal-detached")),
                reader,
                self.journal,
            )?)
        };
        Ok((tailed, journal))
    }
}
