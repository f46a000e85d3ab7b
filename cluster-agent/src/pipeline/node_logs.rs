//! The node's log inputs at run time: a [`FanOut`] over each file tailer
//! ([`TailedLogs`]: container logs below the pod log directory and plain files by
//! glob; one tailer per distinct [`TailSetting`]) and one over the journal
//! ([`JournalReader`]), each with a consumer per log pipeline that takes what it reads
//! ([`InputConsumer`]), and a blocking thread that runs every fan-out's
//! [`FanOut::round`] every poll interval (at once again after a round that stopped at
//! a batch's size bound with more to read) and then publishes the inputs' counters
//! and the fan-outs' state ([`LogInputStats`]).
//!
//! **Lifecycle.** [`NodeLogInputs::stop`] ends the thread and drops the fan-outs
//! before any log pipeline is stopped or restarted (an input must never write into a
//! buffer directory that a restarted pipeline reopens); [`NodeLogInputs::start`]
//! builds new fan-outs for the pipelines that run now. The fan-outs reopen the same
//! position files under `<data dir>/log-inputs/`, so a change of pipelines repeats at
//! most what was read and not yet acknowledged, and loses nothing.
//!
//! **Per-pipeline settings: one tailer per setting.** Multiline recombination (a
//! first-line pattern and a flush timeout) and where to start in files that existed
//! before (`startAt`) change what a tailer reads, so they cannot be applied per
//! consumer to a shared read. The pipelines' container logs (`input.runtime`) and
//! plain files (`input.node.files`, never multiline) are grouped by their
//! [`TailSetting`] ([`assign_tail_groups`]): equal settings share one tailer, its
//! fan-out and its position files, different settings read the files separately,
//! each with position files named by [`TailSetting::state_stem`] (`tail.checkpoint`
//! for no multiline and `startAt: end`, the name from before settings were per
//! pipeline; `tail-<digest>.checkpoint` otherwise). Each fan-out commits its own
//! position behind its own consumers, so the durability rule holds per tailer. A
//! pipeline whose container logs and plain files have different settings has a
//! consumer on each tailer that takes only its part ([`NodeInput::Containers`],
//! [`NodeInput::Files`]). At most [`MAX_TAIL_GROUPS`] tailers run: settings without
//! multiline are placed first (at most two, so they always fit), and a multiline
//! pipeline that would need one more is not read: its health reports
//! [`ErrorReason::InputNotRead`] with the reason, and [`NodeLogInputs::refused`]
//! lists it. A pipeline whose setting changes moves to another
//! tailer: it reads as a new pipeline would (`startAt` decides for files that tailer
//! has not seen). Position files of settings no longer in use are removed at each
//! start, so a tenant changing patterns cannot fill the data directory; a setting
//! that comes back starts as new.
//!
//! **The journal** has no multiline; one reader serves every pipeline with journal
//! units, reading the union of their units, from the beginning at its first start
//! when some pipeline asks for `startAt: beginning` (the others' consumers take what
//! they select either way).
//!
//! **An input that cannot open** (no journal directory on this node, an unreadable
//! state file) stops only the pipelines that read it: they report
//! [`ErrorReason::InputNotRead`] with the error, and the other inputs run. The reading
//! thread tries it again every [`NodeLogSettings::reopen_interval`]
//! ([`REOPEN_INTERVAL`]): while it fails the pipelines report the error again (so it
//! stays a current problem, not one that ages out of the observer's window), and once
//! it opens it is read and the error is withdrawn ([`PipelineRecovered`]). A journal
//! that appears only after the agent set its input up (journald creating the
//! directory at its first flush) is read from its beginning: everything in it was
//! written after the node's input was configured. Pipelines beyond the tailers' bound
//! report their `InputNotRead` again at the same pace until the next start.
//!
//! **Upgrades from one tailer.** Agents before per-pipeline settings read every file
//! with one tailer (`tail.checkpoint`). At the first start of an agent with one tailer
//! per setting, a tailer of another setting without position files of its own starts
//! from a copy of `tail.checkpoint` (what the single tailer had committed covers every
//! pipeline), so a pipeline with `startAt: beginning` does not read every file once
//! more; the marker file [`PER_SETTING_LAYOUT_MARKER`] records that this was done, so
//! a setting that appears later starts as new (its `startAt` decides).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kaas_logfiles::{MultilineConfig, StartAt as TailStart, TailConfig};
use kaas_pipeline::logs::input::{
    StartAt, ValidatedLogInputs, ValidatedNodeLogInput, ValidatedRuntimeLogInput,
};
use kaas_pipeline::paths::PathPolicy;

use super::logs::{InputConsumer, LogPipelines, NodeInput};
use crate::internal_events::{
    ConsumerLag, ErrorReason, FILE_EVENTS, InputSnapshot, JOURNAL_EVENTS, LogInputStats,
    PipelineFailed, PipelineRecovered, PipelineStats,
};
use crate::log_inputs::{
    FanOut, FanOutConfig, InputError, JournalReader, JournalSettings, JournalStart, LogConsumer,
    NodeIdentity, PodEnrichment, PodMetadataCache, TailedLogs,
};

/// Where the kubelet writes container logs.
pub const DEFAULT_POD_LOG_DIR: &str = "/var/log/pods";
/// Where systemd keeps the persistent journal.
pub const DEFAULT_JOURNAL_DIR: &str = "/var/log/journal";

/// The name of the node the agent runs on: `NODE_NAME` (the downward API's
/// `spec.nodeName` in the DaemonSet), else the host's name.
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_default()
}

/// How often the fan-outs read: the tailer's own poll interval, short enough that a
/// line is shipped within a second and long enough that an idle node costs nothing.
pub const POLL_INTERVAL: Duration = kaas_logfiles::DEFAULT_POLL_INTERVAL;

/// How often an input that could not open is tried again: a journal directory that
/// journald creates after the agent started, or a log directory mounted late, is read
/// within this; a try costs a directory listing. It also paces the repeated
/// `InputNotRead` of pipelines still unread, well inside the observer's two-minute
/// window for recent errors.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(10);

/// The file in the position directory that says its tailer positions are laid out one
/// tailer per setting (see "Upgrades from one tailer" in the module documentation).
pub const PER_SETTING_LAYOUT_MARKER: &str = "tail-per-setting.layout";

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
    /// How often an input that could not open is tried again ([`REOPEN_INTERVAL`]).
    pub reopen_interval: Duration,
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
    refused: Vec<Refused>,
}

impl NodeLogInputs {
    /// Inputs with `settings`, reading nothing yet, publishing what they read to
    /// `stats` (`/metrics` reads it).
    pub fn new(settings: NodeLogSettings, stats: Arc<LogInputStats>) -> Self {
        Self {
            settings,
            reading: None,
            stats,
            refused: Vec::new(),
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

    /// The pipelines (or parts) the last [`Self::start`] left unread, with why.
    pub fn refused(&self) -> &[Refused] {
        &self.refused
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
        let stats_of = |name: &str| pipelines.get(name).map(|p| p.data_path.stats.clone());
        let mut unread = Unread::new(self.settings.clone());
        for refused in &plan.refused {
            if let Some(stats) = stats_of(&refused.pipeline) {
                PipelineFailed::new(ErrorReason::InputNotRead, refused.reason.clone()).emit(&stats);
                unread.refused.push((stats, refused.reason.clone()));
            }
        }
        self.refused.clone_from(&plan.refused);
        let stop = Arc::new(AtomicBool::new(false));
        let Opened {
            mut tailed,
            mut journal,
            failed,
        } = match plan.open(&self.settings) {
            Ok(opened) => opened,
            Err(error) => {
                tracing::error!(%error, "the node's log inputs cannot start");
                return;
            }
        };
        // An input that cannot open (no journal on this node, say) stops only the
        // pipelines that read it; the other inputs run, and it is tried again.
        for (input, error) in failed {
            let readers: Vec<_> = (input.names().iter())
                .filter_map(|name| stats_of(name))
                .collect();
            tracing::error!(%error, pipelines = ?input.names(), "a node log input cannot start; the other inputs run, and it is tried again");
            unread.add(input, readers, &error);
        }
        if tailed.is_empty() && journal.is_none() && unread.is_empty() {
            return;
        }
        let flag = stop.clone();
        let stats = self.stats.clone();
        let thread = tokio::task::spawn_blocking(move || {
            read(&mut tailed, &mut journal, &mut unread, &flag, &stats);
        });
        self.reading = Some(Reading { stop, thread });
    }
}

/// An input that did not open, with what opens it again.
enum PendingInput {
    /// A tailer group.
    Tail(TailGroup),
    /// The journal, its settings and consumers.
    Journal(JournalSettings, Vec<Arc<dyn LogConsumer>>),
}

impl PendingInput {
    /// The pipelines reading it.
    fn names(&self) -> Vec<String> {
        match self {
            Self::Tail(group) => consumer_names(&group.consumers),
            Self::Journal(_, consumers) => consumer_names(consumers),
        }
    }
}

/// What the node does not read now, and why: inputs that did not open (tried again
/// every [`NodeLogSettings::reopen_interval`]) and pipelines beyond the tailers'
/// bound; each of their pipelines reports `InputNotRead` again at each try.
struct Unread {
    settings: NodeLogSettings,
    inputs: Vec<(PendingInput, Vec<Arc<PipelineStats>>)>,
    refused: Vec<(Arc<PipelineStats>, String)>,
    next_try: Instant,
}

impl Unread {
    fn new(settings: NodeLogSettings) -> Self {
        let next_try = Instant::now() + settings.reopen_interval;
        Self {
            settings,
            inputs: Vec::new(),
            refused: Vec::new(),
            next_try,
        }
    }

    fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.refused.is_empty()
    }

    /// `input`, read by the pipelines with `readers`, failed to open with `error`:
    /// they say so, and it is tried again.
    fn add(&mut self, input: PendingInput, readers: Vec<Arc<PipelineStats>>, error: &InputError) {
        for stats in &readers {
            PipelineFailed::new(ErrorReason::InputNotRead, error.to_string()).emit(stats);
        }
        self.inputs.push((input, readers));
    }

    /// Once per interval: opens what opens now (into `tailed` and `journal`),
    /// withdrawing its pipelines' `InputNotRead`, and repeats the error of the rest.
    fn retry(
        &mut self,
        tailed: &mut Vec<FanOut<TailedLogs>>,
        journal: &mut Option<FanOut<JournalReader>>,
    ) {
        if self.is_empty() || Instant::now() < self.next_try {
            return;
        }
        self.next_try = Instant::now() + self.settings.reopen_interval;
        for (stats, reason) in &self.refused {
            PipelineFailed::new(ErrorReason::InputNotRead, reason.clone()).emit(stats);
        }
        for (input, readers) in std::mem::take(&mut self.inputs) {
            let names = input.names();
            let opened = match &input {
                PendingInput::Tail(group) => {
                    open_group(group.clone(), &self.settings).map(|fan_out| tailed.push(fan_out))
                }
                PendingInput::Journal(settings, consumers) => {
                    let mut settings = settings.clone();
                    // No position yet: the journal appeared after the input was set
                    // up, so all of it is new to the node.
                    if !settings.position_file.exists() {
                        settings.start_at = JournalStart::Beginning;
                    }
                    open_journal(settings, consumers.clone(), &self.settings)
                        .map(|fan_out| *journal = Some(fan_out))
                }
            };
            match opened {
                Ok(()) => {
                    tracing::info!(pipelines = ?names, "a node log input that could not open is read now");
                    for stats in &readers {
                        PipelineRecovered::new(ErrorReason::InputNotRead).emit(stats);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, pipelines = ?names, "a node log input still cannot open");
                    self.add(input, readers, &error);
                }
            }
        }
    }
}

/// Runs the fan-outs until `stop` is set, publishing their state to `stats` after
/// every round, and tries the `unread` inputs again.
fn read(
    tailed: &mut Vec<FanOut<TailedLogs>>,
    journal: &mut Option<FanOut<JournalReader>>,
    unread: &mut Unread,
    stop: &AtomicBool,
    stats: &LogInputStats,
) {
    while !stop.load(Ordering::Relaxed) {
        unread.retry(tailed, journal);
        let mut errors = Vec::new();
        let mut more = false;
        for fan_out in tailed.iter_mut() {
            let round = fan_out.round();
            more |= round.more;
            errors.extend(round.errors);
        }
        if let Some(fan_out) = journal.as_mut() {
            let round = fan_out.round();
            more |= round.more;
            errors.extend(round.errors);
        }
        for error in errors {
            tracing::warn!(%error, "reading the node's logs");
        }
        let snapshots = files_snapshot(tailed)
            .into_iter()
            .chain(journal.as_ref().map(journal_snapshot))
            .collect();
        stats.publish(snapshots);
        // A round that filled a batch leaves a backlog: the next starts at once (a
        // batch is still bounded, and so is the window of unacknowledged ones). Sleeping
        // after every round capped a node at one batch per poll interval.
        if !more {
            std::thread::sleep(POLL_INTERVAL);
        }
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

/// The tailers' counters and their fan-outs' state, summed over the tailer groups
/// (one `files` input on `/metrics`; a pipeline read by two groups is one consumer
/// there, its outstanding batches summed); `None` without a tailer.
fn files_snapshot(fan_outs: &[FanOut<TailedLogs>]) -> Option<InputSnapshot> {
    let mut snapshot = InputSnapshot {
        input: "files",
        events: FILE_EVENTS.iter().map(|event| (*event, 0)).collect(),
        ..InputSnapshot::default()
    };
    for fan_out in fan_outs {
        let counters = fan_out.reader().counters();
        let (open, tracked) = fan_out.reader().files();
        snapshot.files_open += open as u64;
        snapshot.files_tracked += tracked as u64;
        snapshot.bytes_read += counters.bytes_read;
        snapshot.records += counters.records;
        let events = [
            counters.truncations,
            counters.rotations,
            counters.lost_files,
            counters.evictions,
            counters.read_errors,
            counters.truncated_records,
            counters.invalid_utf8_records,
            counters.unparsed_lines,
        ];
        for ((_, total), count) in snapshot.events.iter_mut().zip(events) {
            *total += count;
        }
        for lag in consumer_lags(fan_out) {
            match snapshot
                .consumers
                .iter_mut()
                .find(|c| c.pipeline == lag.pipeline)
            {
                Some(known) => {
                    known.outstanding_batches += lag.outstanding_batches;
                    known.detached |= lag.detached;
                    known.detachments += lag.detachments;
                }
                None => snapshot.consumers.push(lag),
            }
        }
    }
    (!fan_outs.is_empty()).then_some(snapshot)
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

/// Tailers reading at once, one per distinct [`TailSetting`]: each reads every
/// selected file itself (a descriptor, a read and a position file per file), so the
/// cost on the node grows with their number. Four leave room for the two settings
/// without multiline (`startAt: end` and `beginning`), which always fit, and two
/// multiline patterns; a pipeline that would need a fifth is refused (see
/// [`ReadPlan::of`]).
pub const MAX_TAIL_GROUPS: usize = 4;

/// Lines one multiline record may combine: a Java stack trace of the JVM's default
/// depth (`MaxJavaStackTraceDepth`, 1024 frames) with its message and `Caused by`
/// headers. Its bytes are bounded by the tailer's record cap (1 MiB) either way.
pub const MULTILINE_MAX_LINES: usize = 1100;

/// How one tailer reads: the pipelines (or parts of pipelines) with equal settings
/// share one tailer and its positions, different settings read the files separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailSetting {
    /// The first-line pattern and flush timeout, for a `runtime` input with
    /// `multiline`; never for plain files (the model has no multiline there).
    pub multiline: Option<(String, Duration)>,
    /// Where to start in files that existed before this tailer first started.
    pub start_at: StartAt,
}

impl TailSetting {
    /// The setting of a pipeline's container logs.
    pub fn of_runtime(input: &ValidatedRuntimeLogInput) -> Self {
        Self {
            multiline: input
                .multiline
                .as_ref()
                .map(|m| (m.first_line.as_str().to_owned(), m.flush_timeout)),
            start_at: input.start_at,
        }
    }

    /// The setting of a pipeline's plain files.
    pub fn of_files(input: &ValidatedNodeLogInput) -> Self {
        Self {
            multiline: None,
            start_at: input.start_at,
        }
    }

    /// The stem of this tailer's position files below `<data dir>/log-inputs/`:
    /// `tail` (the name from before settings were per pipeline, so an upgraded agent
    /// resumes where it was) for no multiline and `startAt: end`, else
    /// `tail-<16 hex digits of a SHA-256 of the setting>`, stable across restarts and
    /// versions.
    pub fn state_stem(&self) -> String {
        if *self == Self::default() {
            return LEGACY_TAIL_STEM.to_owned();
        }
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let start_at = match self.start_at {
            StartAt::Beginning => "beginning",
            StartAt::End => "end",
        };
        hash.update(format!("startAt={start_at}\n"));
        if let Some((pattern, flush)) = &self.multiline {
            hash.update(format!(
                "flush={}ms\nfirstLine={pattern}",
                flush.as_millis()
            ));
        }
        format!("{LEGACY_TAIL_STEM}-{}", hex::encode(&hash.finalize()[..8]))
    }
}

impl Default for TailSetting {
    fn default() -> Self {
        Self {
            multiline: None,
            start_at: StartAt::End,
        }
    }
}

/// The tailer's position file stem before settings were per pipeline.
const LEGACY_TAIL_STEM: &str = "tail";

/// What one tailer reads and for whom.
#[derive(Clone)]
struct TailGroup {
    setting: TailSetting,
    consumers: Vec<Arc<dyn LogConsumer>>,
    pod_logs: bool,
    globs: Vec<PathBuf>,
    pod_labels: bool,
    pod_annotations: bool,
}

/// A pipeline (or part of one) left unread: its setting would need a tailer beyond
/// [`MAX_TAIL_GROUPS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The pipeline.
    pub pipeline: String,
    /// Why, for its health and the log.
    pub reason: String,
}

/// What the node's inputs read for the running pipelines.
struct ReadPlan {
    tailed: Vec<TailGroup>,
    journal: Vec<Arc<dyn LogConsumer>>,
    units: Vec<String>,
    journal_from_beginning: bool,
    refused: Vec<Refused>,
}

/// What [`assign_tail_groups`] decided.
#[derive(Debug)]
pub struct TailGroups {
    /// The tailers' settings, one per tailer.
    pub settings: Vec<TailSetting>,
    /// Per pipeline part: the pipeline, the index of its tailer in `settings`, and
    /// the input its consumer takes.
    pub assigned: Vec<(String, usize, NodeInput)>,
    /// The pipelines (or parts) left unread.
    pub refused: Vec<Refused>,
}

/// Which tailer group reads which part of which pipeline: the groups' settings, and
/// per pipeline part (pipeline name, group index, the input its consumer takes).
/// Parts without multiline are placed first, so they always fit (at most two plain
/// settings); multiline parts follow in pipeline-name order, and one that needs a
/// group beyond [`MAX_TAIL_GROUPS`] is refused.
pub fn assign_tail_groups<'a>(
    pipelines: impl Iterator<Item = (&'a str, &'a ValidatedLogInputs)>,
) -> TailGroups {
    let mut parts = Vec::new();
    for (name, inputs) in pipelines {
        let runtime = inputs.runtime.as_ref().map(TailSetting::of_runtime);
        let files = inputs
            .node
            .as_ref()
            .filter(|node| !node.files.is_empty())
            .map(TailSetting::of_files);
        match (runtime, files) {
            (Some(r), Some(f)) if r == f => parts.push((name, r, NodeInput::Tailed)),
            (r, f) => {
                parts.extend(r.map(|r| (name, r, NodeInput::Containers)));
                parts.extend(f.map(|f| (name, f, NodeInput::Files)));
            }
        }
    }
    parts.sort_by_key(|(_, setting, _)| setting.multiline.is_some());
    let (mut settings, mut assigned, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for (name, setting, input) in parts {
        let group = match settings.iter().position(|s| *s == setting) {
            Some(group) => group,
            None if settings.len() < MAX_TAIL_GROUPS => {
                settings.push(setting);
                settings.len() - 1
            }
            None => {
                refused.push(Refused {
                    pipeline: name.to_owned(),
                    reason: format!(
                        "its container logs are not read: the node already reads them with \
                         {MAX_TAIL_GROUPS} distinct multiline/startAt settings, the most it \
                         reads at once; use the same multiline setting as another pipeline"
                    ),
                });
                continue;
            }
        };
        assigned.push((name.to_owned(), group, input));
    }
    TailGroups {
        settings,
        assigned,
        refused,
    }
}

impl ReadPlan {
    fn of(settings: &NodeLogSettings, pipelines: &LogPipelines) -> Self {
        let consumer = |pipeline: &super::logs::RunningLogPipeline, input| {
            Arc::new(InputConsumer::new(
                pipeline.intake.clone(),
                input,
                settings.pods.clone(),
            )) as Arc<dyn LogConsumer>
        };
        let TailGroups {
            settings: groups,
            assigned,
            refused,
        } = assign_tail_groups(
            pipelines
                .iter()
                .map(|(name, p)| (name.as_str(), &p.pipeline.inputs)),
        );
        let mut plan = Self {
            tailed: groups
                .into_iter()
                .map(|setting| TailGroup {
                    setting,
                    consumers: Vec::new(),
                    pod_logs: false,
                    globs: Vec::new(),
                    pod_labels: false,
                    pod_annotations: false,
                })
                .collect(),
            journal: Vec::new(),
            units: Vec::new(),
            journal_from_beginning: false,
            refused,
        };
        for (name, group, input) in assigned {
            let pipeline = &pipelines[&name];
            let inputs = &pipeline.pipeline.inputs;
            let group = &mut plan.tailed[group];
            group.consumers.push(consumer(pipeline, input));
            if let Some(runtime) = inputs
                .runtime
                .as_ref()
                .filter(|_| input != NodeInput::Files)
            {
                group.pod_logs = true;
                group.pod_labels |= runtime.pod_labels;
                group.pod_annotations |= runtime.pod_annotations;
            }
            let files = inputs.node.as_ref().map_or(&[][..], |n| &n.files[..]);
            for glob in files.iter().filter(|_| input != NodeInput::Containers) {
                let pattern = PathBuf::from(&glob.pattern);
                if !group.globs.contains(&pattern) {
                    group.globs.push(pattern);
                }
            }
        }
        for pipeline in pipelines.values() {
            let Some(node) = pipeline.pipeline.inputs.node.as_ref() else {
                continue;
            };
            if node.journal_units.is_empty() {
                continue;
            }
            plan.journal.push(consumer(pipeline, NodeInput::Journal));
            plan.journal_from_beginning |= node.start_at == StartAt::Beginning;
            for unit in &node.journal_units {
                if !plan.units.contains(unit) {
                    plan.units.push(unit.clone());
                }
            }
        }
        plan
    }

    /// Opens the fan-outs the plan needs: one per tailer group, and the journal's.
    #[allow(clippy::type_complexity)]
    fn open(self, settings: &NodeLogSettings) -> Result<Opened, InputError> {
        let state = &settings.state_dir;
        std::fs::create_dir_all(state).map_err(|source| InputError::Position {
            path: state.clone(),
            source,
        })?;
        let stems: Vec<String> = self.tailed.iter().map(|g| g.setting.state_stem()).collect();
        prune_unused_positions(state, &stems);
        if let Err(error) = adopt_single_tailer_positions(state, &stems) {
            tracing::warn!(%error, "cannot carry the single tailer's positions over to the tailers per setting");
        }
        let mut opened = Opened {
            tailed: Vec::new(),
            journal: None,
            failed: Vec::new(),
        };
        for group in self.tailed {
            match open_group(group.clone(), settings) {
                Ok(fan_out) => opened.tailed.push(fan_out),
                Err(error) => opened.failed.push((PendingInput::Tail(group), error)),
            }
        }
        if !self.journal.is_empty() {
            let mut journal =
                JournalSettings::new(settings.journal_dir.clone(), state.join("journal.position"));
            journal.units = self.units;
            if self.journal_from_beginning {
                journal.start_at = JournalStart::Beginning;
            }
            match open_journal(journal.clone(), self.journal.clone(), settings) {
                Ok(fan_out) => opened.journal = Some(fan_out),
                Err(error) => {
                    let pending = PendingInput::Journal(journal, self.journal);
                    opened.failed.push((pending, error));
                }
            }
        }
        Ok(opened)
    }
}

/// The journal's fan-out to `consumers`.
fn open_journal(
    journal: JournalSettings,
    consumers: Vec<Arc<dyn LogConsumer>>,
    settings: &NodeLogSettings,
) -> Result<FanOut<JournalReader>, InputError> {
    let reader = JournalReader::open(journal, settings.node.clone())?;
    let detached = settings.state_dir.join("journal-detached");
    FanOut::open(FanOutConfig::new(detached), reader, consumers)
}

/// At the first start with one tailer per setting (no [`PER_SETTING_LAYOUT_MARKER`]),
/// gives each tailer of `stems` without a position file of its own a copy of the
/// single tailer's `tail.checkpoint` (see the module documentation), then writes the
/// marker. Each copy is written atomically; a crash before the marker repeats the
/// copies of tailers still without positions, which is the same decision.
fn adopt_single_tailer_positions(state: &std::path::Path, stems: &[String]) -> std::io::Result<()> {
    let marker = state.join(PER_SETTING_LAYOUT_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let single = state.join(format!("{LEGACY_TAIL_STEM}.checkpoint"));
    if single.exists() {
        for stem in stems.iter().filter(|stem| *stem != LEGACY_TAIL_STEM) {
            let target = state.join(format!("{stem}.checkpoint"));
            if target.exists() {
                continue;
            }
            let partial = state.join(format!("{stem}.checkpoint.adopting"));
            std::fs::copy(&single, &partial)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &target)?;
            tracing::info!(tailer = %stem, "an upgraded node resumes this tailer where the single tailer was");
        }
    }
    std::fs::write(&marker, "one tailer per setting\n")?;
    std::fs::File::open(state)?.sync_all()
}

/// The node's inputs that opened, and those that did not with what opens them.
struct Opened {
    tailed: Vec<FanOut<TailedLogs>>,
    journal: Option<FanOut<JournalReader>>,
    failed: Vec<(PendingInput, InputError)>,
}

/// The pipelines behind `consumers`, each once.
fn consumer_names(consumers: &[Arc<dyn LogConsumer>]) -> Vec<String> {
    let mut names: Vec<String> = consumers.iter().map(|c| c.name().to_owned()).collect();
    names.dedup();
    names
}

/// Removes the position files of tailer settings no pipeline uses now
/// (`tail-<digest>.checkpoint`, `tail-<digest>-detached` and their temporary
/// siblings), so settings that come and go cannot fill the data directory; a setting
/// that comes back starts as new. The default setting's `tail.*` files are kept.
fn prune_unused_positions(state: &std::path::Path, in_use: &[String]) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(setting_stem) else {
            continue;
        };
        if in_use.iter().any(|used| used == stem) {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            tracing::warn!(%error, path = %path.display(), "removing an unused log position");
        }
    }
}

/// The `tail-<16 hex digits>` stem a position file name starts with, if any.
fn setting_stem(name: &str) -> Option<&str> {
    let digest = name.strip_prefix("tail-")?.get(..16)?;
    let stem = &name[..LEGACY_TAIL_STEM.len() + 1 + 16];
    let rest = &name[stem.len()..];
    (digest.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.starts_with('.') || rest.starts_with('-')))
    .then_some(stem)
}

/// The tailer and fan-out of one group, on the position files its setting names.
fn open_group(
    group: TailGroup,
    settings: &NodeLogSettings,
) -> Result<FanOut<TailedLogs>, InputError> {
    let state = &settings.state_dir;
    let stem = group.setting.state_stem();
    let mut config = TailConfig::new(state.join(format!("{stem}.checkpoint")));
    config.pod_log_root = group.pod_logs.then(|| settings.pod_log_dir.clone());
    config.globs = group.globs;
    config.allowed_roots = settings.files.allowed_roots().to_vec();
    config.denied = settings.files.denied().map(PathBuf::from).collect();
    config.denied.push(state.clone());
    if group.setting.start_at == StartAt::Beginning {
        config.start_at = TailStart::Beginning;
    }
    config.multiline = group
        .setting
        .multiline
        .map(|(first_line, flush_after)| MultilineConfig {
            first_line,
            flush_after,
            max_lines: MULTILINE_MAX_LINES,
        });
    let config = config.validate().map_err(|errors| InputError::Config {
        reason: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let enrichment = PodEnrichment {
        pods: settings.pods.clone(),
        labels: group.pod_labels,
        annotations: group.pod_annotations,
    };
    let reader = TailedLogs::open(config, settings.node.clone(), enrichment)?;
    FanOut::open(
        FanOutConfig::new(state.join(format!("{stem}-detached"))),
        reader,
        group.consumers,
    )
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::ValidationContext;
    use kaas_pipeline::logs::{LogPipeline, ValidatedLogPipeline, validate_log_pipeline};

    use super::*;

    fn pipeline(input: &str) -> ValidatedLogPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: logs}}\nspec:\n  input: {input}\n  output: {{otlp: {{endpoint: 'http://127.0.0.1:4317'}}}}\n"
        );
        let resource: LogPipeline = serde_yaml::from_str(&yaml).unwrap();
        validate_log_pipeline(&resource, &ValidationContext::standalone()).unwrap()
    }

    fn multiline(pattern: &str, start_at: &str) -> String {
        format!(
            "{{runtime: {{enabled: true, startAt: {start_at}, multiline: {{firstLinePattern: '{pattern}'}}}}}}"
        )
    }

    fn assign(pipelines: &[(&str, ValidatedLogPipeline)]) -> TailGroups {
        assign_tail_groups(pipelines.iter().map(|(n, p)| (*n, &p.inputs)))
    }

    /// Equal settings share a tailer, different ones get their own; a pipeline
    /// whose container logs and plain files have different settings is split into
    /// a container-only and a file-only consumer.
    #[test]
    fn pipelines_are_grouped_by_their_multiline_and_start_setting() {
        let pipelines = [
            ("a-plain", pipeline("{runtime: {enabled: true}}")),
            ("b-java", pipeline(&multiline(r"^\d{4}-", "end"))),
            ("c-java-too", pipeline(&multiline(r"^\d{4}-", "end"))),
            (
                "d-both",
                pipeline(
                    "{runtime: {enabled: true, multiline: {firstLinePattern: '^x'}}, node: {enabled: true, startAt: beginning, files: {paths: ['/var/log/app/*.log']}}}",
                ),
            ),
            (
                "e-same",
                pipeline(
                    "{runtime: {enabled: true}, node: {enabled: true, files: {paths: ['/var/log/app/*.log']}}}",
                ),
            ),
        ];
        let TailGroups {
            settings: groups,
            assigned,
            refused,
        } = assign(&pipelines);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(groups.len(), 4, "{groups:?}");
        let group_of = |name: &str, input: NodeInput| {
            assigned
                .iter()
                .find(|(n, _, i)| n == name && *i == input)
                .map(|(_, g, _)| &groups[*g])
                .unwrap_or_else(|| panic!("{name} {input:?} in {assigned:?}"))
        };
        assert_eq!(
            *group_of("a-plain", NodeInput::Containers),
            TailSetting::default()
        );
        assert_eq!(
            *group_of("e-same", NodeInput::Tailed),
            TailSetting::default()
        );
        assert_eq!(
            group_of("b-java", NodeInput::Containers),
            group_of("c-java-too", NodeInput::Containers)
        );
        let java = group_of("b-java", NodeInput::Containers);
        assert_eq!(java.multiline.as_ref().unwrap().0, r"^\d{4}-");
        assert_eq!(java.multiline.as_ref().unwrap().1, Duration::from_secs(2));
        let files = group_of("d-both", NodeInput::Files);
        assert_eq!(
            (files.multiline.is_none(), files.start_at),
            (true, StartAt::Beginning)
        );
        assert_eq!(
            group_of("d-both", NodeInput::Containers)
                .multiline
                .as_ref()
                .unwrap()
                .0,
            "^x"
        );
        assert_eq!(assigned.len(), 6, "{assigned:?}");
    }

    /// Beyond [`MAX_TAIL_GROUPS`] a multiline pipeline is refused with a reason, in
    /// name order; settings without multiline are placed first and always fit.
    #[test]
    fn settings_beyond_the_bound_are_refused_never_the_plain_ones() {
        let mut pipelines: Vec<(String, ValidatedLogPipeline)> = (0..MAX_TAIL_GROUPS)
            .map(|i| {
                (
                    format!("m{i}"),
                    pipeline(&multiline(&format!("^p{i}"), "end")),
                )
            })
            .collect();
        pipelines.push(("z-plain".into(), pipeline("{runtime: {enabled: true}}")));
        pipelines.push((
            "z-plain-beginning".into(),
            pipeline("{runtime: {enabled: true, startAt: beginning}}"),
        ));
        let named: Vec<(&str, ValidatedLogPipeline)> = pipelines
            .iter()
            .map(|(n, p)| (n.as_str(), p.clone()))
            .collect();
        let TailGroups {
            settings: groups,
            assigned,
            refused,
        } = assign(&named);
        assert_eq!(groups.len(), MAX_TAIL_GROUPS);
        let refused_names: Vec<&str> = refused.iter().map(|r| r.pipeline.as_str()).collect();
        assert_eq!(refused_names, ["m2", "m3"]);
        assert!(
            refused[0]
                .reason
                .contains("4 distinct multiline/startAt settings")
        );
        for name in ["m0", "m1", "z-plain", "z-plain-beginning"] {
            assert!(assigned.iter().any(|(n, _, _)| n == name), "{name} is read");
        }
    }

    /// Only the position files of settings in use survive a start; the default
    /// setting's and the journal's are never touched.
    #[test]
    fn position_files_of_unused_settings_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let used = "tail-0123456789abcdef";
        let unused = "tail-fedcba9876543210";
        let keep = [
            "tail.checkpoint".to_owned(),
            "journal.position".to_owned(),
            format!("{used}.checkpoint"),
            "tail-detached".to_owned(),
        ];
        for name in keep.iter().chain([&format!("{unused}.checkpoint")]) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        for name in [format!("{used}-detached"), format!("{unused}-detached")] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        prune_unused_positions(dir.path(), &[used.to_owned(), "tail".to_owned()]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = keep.to_vec();
        expected.push(format!("{used}-detached"));
        expected.sort();
        assert_eq!(left, expected);
    }

    /// The default setting keeps the position files of the single tailer before
    /// settings were per pipeline; the others are named by a digest that is stable
    /// (fixed here) and differs with every part of the setting.
    #[test]
    fn position_files_are_named_by_a_stable_digest_of_the_setting() {
        assert_eq!(TailSetting::default().state_stem(), "tail");
        let java = TailSetting {
            multiline: Some((r"^\d{4}-".into(), Duration::from_secs(2))),
            start_at: StartAt::End,
        };
        let stem = java.state_stem();
        // SHA-256 of "startAt=end\nflush=2000ms\nfirstLine=^\d{4}-": a change of
        // this name would make every multiline pipeline start over after an upgrade.
        assert_eq!(stem, "tail-66d8050690a37b52");
        let mut stems = vec![
            stem,
            TailSetting {
                start_at: StartAt::Beginning,
                ..java.clone()
            }
            .state_stem(),
            TailSetting {
                multiline: Some((r"^\d{4}-".into(), Duration::from_secs(3))),
                ..java.clone()
            }
            .state_stem(),
            TailSetting {
                multiline: None,
                start_at: StartAt::Beginning,
            }
            .state_stem(),
        ];
        stems.sort();
        stems.dedup();
        assert_eq!(stems.len(), 4, "{stems:?}");
    }
}
