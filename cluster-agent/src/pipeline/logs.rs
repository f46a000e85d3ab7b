//! Starting and stopping one log pipeline: its data path ([`super::data_path`]: the
//! buffer under `<data dir>/log-buffers/<name>`, inlet, sender and [`LogExporter`]),
//! and its [`LogIntake`]: what the pipeline takes of its inputs' records, its log
//! processing ([`crate::processing::logs`]) and the push into its inlet.
//!
//! **Buffer directories.** Names are unique per kind only, so a log pipeline's buffer
//! lives apart from the metric pipelines' (`<data dir>/buffers/<name>`, which never
//! moves: a running agent's buffered samples stay where an upgrade finds them). A
//! separate top-level directory, not a subdirectory of `buffers/`, because a metric
//! pipeline may be named like any subdirectory.
//!
//! **Selection.** The node's inputs read for every pipeline at once and offer each
//! batch to every pipeline ([`crate::log_inputs::FanOut`]); each pipeline's
//! [`InputConsumer`] keeps what its inputs name: container records of the namespaces,
//! containers and pods of its `runtime` input ([`RuntimeSelection`]: system
//! namespaces only when asked, per the model's [`NamespaceSelector`]), plain file
//! records whose `log.file.path` its `node.files` globs match, and journal records
//! whose `systemd.unit` its `node.journal.units` lists.
//!
//! **Acknowledgements.** A batch's [`BatchAck`] completes `Durable` once what the
//! pipeline kept of it is in the buffer file (nothing kept after processing is durable
//! at once), `Dropped` when the buffer was full with `dropNewest` (the inlet counted
//! the records), and `NotTaken` when the pipeline takes none of it. A failed write
//! leaves it uncompleted: the input never commits past records that are not durable,
//! and offers them again on a reader of this pipeline's own.
//!
//! [`NamespaceSelector`]: kaas_pipeline::input::NamespaceSelector

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kaas_buffer::BufferError;
use kaas_pipeline::logs::ValidatedLogPipeline;
use kaas_pipeline::logs::input::FileGlob;
use kaas_pipeline::logs::processors::{AttributeRule, FilterAction, ValidatedRate};
use kaas_proto::otlp::{KeyValue, ResourceLogs, any_value::Value};
use kaas_series::clock::now_ms;

use super::data_path::DataPath;
use super::runtime::{AgentContext, StartError};
use crate::exporters::LogExporter;
use crate::internal_events::{LogProcessingStats, LogRecordsProcessed, PipelineStats};
use crate::log_inputs::{
    BatchAck, LogBatch, LogConsumer, Outcome, PodMetadataCache, RuntimeSelection,
};
use crate::pipeline::budget::BufferGrant;
use crate::processing::logs::{
    AttributeAction, LogFilter, LogProcessing, LogProcessor, MatchRule, MatchTarget, RateLimit,
};
use crate::record::logs::LogBatch as LogRecordBatch;
use crate::topology::inlet::{Ack, Stored};

/// The resource attribute that marks a container's records (the `runtime` input).
const POD_UID: &str = "k8s.pod.uid";
/// The record attribute naming a plain file's path.
const FILE_PATH: &str = "log.file.path";
/// The record attribute naming a journal record's unit.
const SYSTEMD_UNIT: &str = "systemd.unit";

/// Where a log pipeline's buffer lives (see the module documentation).
pub fn log_buffer_dir(data_dir: &Path, pipeline: &str) -> PathBuf {
    data_dir.join("log-buffers").join(pipeline)
}

/// A log pipeline that is running.
pub struct RunningLogPipeline {
    /// The pipeline as validated.
    pub pipeline: ValidatedLogPipeline,
    /// Its buffer, inlet and sender.
    pub data_path: DataPath,
    /// What it takes of its inputs' records, and where they enter it.
    pub intake: Arc<LogIntake>,
    /// Where the pipeline's referenced values come from (its push token too).
    pub value_sources: crate::outbound::auth::ValueSources,
}

impl RunningLogPipeline {
    /// Starts a log pipeline whose buffer holds at most what `grant` says. Must be
    /// called inside a Tokio runtime. Its inputs are wired by whoever reads them (the
    /// node inputs, the push receivers), through [`Self::intake`].
    pub fn start(
        pipeline: ValidatedLogPipeline,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, StartError> {
        let name = pipeline.name().to_owned();
        let stats = Arc::new(PipelineStats::named(&name));
        let exporter = LogExporter::new(&pipeline.output, context.value_sources(), stats.clone())?;
        let data_path = DataPath::start(
            log_buffer_dir(&context.data_dir, &name),
            &pipeline.buffer,
            grant,
            stats,
            exporter,
        )?;
        let intake = Arc::new(LogIntake::new(
            &pipeline,
            data_path.inlet.clone(),
            Instant::now(),
        ));
        Ok(Self {
            pipeline,
            data_path,
            intake,
            value_sources: context.value_sources(),
        })
    }

    /// Stops the pipeline: what is buffered gets the data path's grace period. Its
    /// inputs must stop offering first (a record offered later is not durable, so the
    /// input offers it again after a restart).
    pub async fn stop(self) {
        self.data_path.stop().await;
    }
}

impl std::fmt::Debug for RunningLogPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningLogPipeline")
            .field("name", &self.pipeline.name())
            .finish_non_exhaustive()
    }
}

/// Log pipelines by name.
pub type LogPipelines = BTreeMap<String, RunningLogPipeline>;

/// The processing a log pipeline's records go through, from its validated
/// configuration: its processors, its `runtime` input's `keepOriginalBody` (kept,
/// as in Kyma, when the pipeline has no `runtime` input), and de-dotting when its
/// output asks for it.
pub fn log_processing(pipeline: &ValidatedLogPipeline) -> LogProcessing {
    let processors = &pipeline.processors;
    let mut filter = LogFilter::default();
    for compiled in &processors.filters {
        let rule = MatchRule {
            target: match &compiled.attribute {
                Some(key) => MatchTarget::Attribute(key.clone()),
                None => MatchTarget::Body,
            },
            regex: compiled.regex.clone(),
        };
        match compiled.action {
            FilterAction::Keep => filter.keep.push(rule),
            FilterAction::Drop => filter.drop.push(rule),
        }
    }
    let rate = |rate: &ValidatedRate| RateLimit {
        records_per_second: rate.records_per_second,
        burst: rate.burst,
    };
    LogProcessing {
        parse_json: processors.parse_json,
        keep_original_body: pipeline
            .inputs
            .runtime
            .as_ref()
            .is_none_or(|runtime| runtime.keep_original_body),
        filter,
        attribute_actions: processors
            .attributes
            .iter()
            .filter_map(attribute_action)
            .collect(),
        dedot: pipeline.dedot(),
        max_record_bytes: usize::try_from(processors.max_record_size.get()).unwrap_or(usize::MAX),
        pipeline_rate_limit: processors.per_pipeline.as_ref().map(rate),
        namespace_rate_limit: processors.per_namespace.as_ref().map(rate),
    }
}

/// A validated attribute rule as an action; validation made each complete for its
/// action, so `None` only for a rule that never passed it.
fn attribute_action(rule: &AttributeRule) -> Option<AttributeAction> {
    use kaas_pipeline::logs::processors::AttributeAction as Rule;
    Some(match rule.action? {
        Rule::Set => AttributeAction::Set {
            key: rule.key.clone(),
            value: rule.value.clone()?,
        },
        Rule::Rename => AttributeAction::Rename {
            from: rule.key.clone(),
            to: rule.to.clone()?,
        },
        Rule::Delete => AttributeAction::Delete {
            key: rule.key.clone(),
        },
    })
}

/// What a log pipeline takes of the node's inputs (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct LogSelection {
    /// The `runtime` input's namespaces, containers and pods.
    pub runtime: Option<RuntimeSelection>,
    /// The `node` input's file globs.
    pub files: Vec<FileGlob>,
    /// The `node` input's journal units.
    pub journal_units: Vec<String>,
}

impl LogSelection {
    /// What `pipeline`'s inputs name.
    pub fn of(pipeline: &ValidatedLogPipeline) -> Self {
        let node = pipeline.inputs.node.as_ref();
        Self {
            runtime: pipeline.inputs.runtime.as_ref().map(RuntimeSelection::new),
            files: node.map(|n| n.files.clone()).unwrap_or_default(),
            journal_units: node.map(|n| n.journal_units.clone()).unwrap_or_default(),
        }
    }

    /// Whether it takes a plain file's record at `path`.
    fn takes_file(&self, path: &str) -> bool {
        self.files.iter().any(|glob| glob.matcher.is_match(path))
    }

    /// Whether it takes a journal record of `unit`.
    fn takes_unit(&self, unit: &str) -> bool {
        self.journal_units.iter().any(|u| u == unit)
    }
}

/// The records of `resources` that `keep` keeps, resource by resource; resources left
/// without records are left out.
fn records_where<'a>(
    resources: impl Iterator<Item = &'a ResourceLogs>,
    keep: impl Fn(&kaas_proto::otlp::LogRecord) -> bool,
) -> Vec<ResourceLogs> {
    let mut taken = Vec::new();
    for resource_logs in resources {
        let mut kept = resource_logs.clone();
        if retain_records(&mut kept, &keep) {
            taken.push(kept);
        }
    }
    taken
}

/// A string attribute's value.
fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        Value::StringValue(value) => Some(value),
        _ => None,
    }
}

/// Where a log pipeline's records enter it: its selection, its processing (with its
/// rate limit state) and its inlet.
pub struct LogIntake {
    name: String,
    selection: LogSelection,
    processor: Mutex<LogProcessor>,
    inlet: crate::topology::inlet::Inlet,
    /// What processing dropped, cut or left raw (`kaas_agent_log_processing_total`).
    pub processing: Arc<LogProcessingStats>,
}

/// What became of records handed to [`LogIntake::buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffered {
    /// Whether the buffer kept them (the acknowledgement fires once they are durable)
    /// or dropped them as full.
    pub stored: Stored,
    /// Records left after processing.
    pub records: u64,
}

impl LogIntake {
    /// The intake of `pipeline`, writing into `inlet`, its rate limits full at `now`.
    pub fn new(
        pipeline: &ValidatedLogPipeline,
        inlet: crate::topology::inlet::Inlet,
        now: Instant,
    ) -> Self {
        Self {
            name: pipeline.name().to_owned(),
            selection: LogSelection::of(pipeline),
            processor: Mutex::new(LogProcessor::new(log_processing(pipeline), now)),
            inlet,
            processing: Arc::new(LogProcessingStats::default()),
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Processes records the pipeline takes and writes what is left into its buffer;
    /// `ack` fires once they are durable (at once when processing left nothing). A
    /// failed write is the error (counted and reported by the inlet).
    pub fn buffer(
        &self,
        mut resource_logs: Vec<ResourceLogs>,
        ack: Ack,
    ) -> Result<Buffered, BufferError> {
        let counts = self
            .processor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .process(&mut resource_logs, Instant::now());
        LogRecordsProcessed(counts).emit(&self.processing);
        let batch = LogRecordBatch { resource_logs };
        let records = batch.records() as u64;
        let stored = self.inlet.push_acked(&batch, now_ms(), ack)?;
        Ok(Buffered { stored, records })
    }

    /// Buffers `resource_logs` for an input's batch and completes `ack` (see the
    /// module documentation).
    fn buffer_for(&self, resource_logs: Vec<ResourceLogs>, ack: BatchAck) {
        let pending = Arc::new(Mutex::new(Some(ack)));
        let on_durable = pending.clone();
        let durable = Ack::new(move || {
            if let Some(ack) = take(&on_durable) {
                ack.complete(Outcome::Durable);
            }
        });
        // Kept: the acknowledgement completes it. A failed write leaves it
        // uncompleted (dropped here), so the input does not commit.
        if let Ok(Buffered {
            stored: Stored::Dropped,
            records,
        }) = self.buffer(resource_logs, durable)
            && let Some(ack) = take(&pending)
        {
            ack.complete(Outcome::Dropped { records });
        }
    }
}

fn take(pending: &Mutex<Option<BatchAck>>) -> Option<BatchAck> {
    pending.lock().unwrap_or_else(|e| e.into_inner()).take()
}

impl std::fmt::Debug for LogIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIntake")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Which of the node's readers a consumer is offered batches by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeInput {
    /// A file tailer: container logs and plain files.
    Tailed,
    /// A file tailer, container logs only: the pipeline's plain files are read by a
    /// tailer with another setting (see `node_logs`).
    Containers,
    /// A file tailer, plain files only: the pipeline's container logs are read by a
    /// tailer with another setting.
    Files,
    /// The systemd journal.
    Journal,
}

/// A log pipeline as a consumer of one of the node's readers.
pub struct InputConsumer {
    intake: Arc<LogIntake>,
    input: NodeInput,
    pods: Option<Mutex<PodMetadataCache>>,
}

impl NodeInput {
    /// Whether a consumer of this input takes container records and plain-file
    /// records of a tailer's batch.
    fn tailed_parts(self) -> (bool, bool) {
        match self {
            Self::Tailed => (true, true),
            Self::Containers => (true, false),
            Self::Files => (false, true),
            Self::Journal => (false, false),
        }
    }
}

impl InputConsumer {
    /// The consumer of `input` for the pipeline of `intake`; `pods` is the node's pod
    /// metadata (for pod selectors), when the agent watches pods.
    pub fn new(intake: Arc<LogIntake>, input: NodeInput, pods: Option<PodMetadataCache>) -> Self {
        Self {
            intake,
            input,
            pods: pods.map(Mutex::new),
        }
    }

    /// What the pipeline takes of `batch`.
    fn select(&self, batch: &LogBatch) -> Vec<ResourceLogs> {
        let selection = &self.intake.selection;
        let (containers, files) = self.input.tailed_parts();
        match self.input {
            NodeInput::Tailed | NodeInput::Containers | NodeInput::Files => {
                let mut taken = match &selection.runtime {
                    Some(runtime) if containers => runtime.select(batch, self.pods().as_deref()),
                    _ => Vec::new(),
                };
                if !files {
                    return taken;
                }
                let plain = batch.resource_logs.iter().filter(|resource_logs| {
                    resource_logs
                        .resource
                        .as_ref()
                        .is_none_or(|r| text(&r.attributes, POD_UID).is_none())
                });
                taken.extend(records_where(plain, |record| {
                    text(&record.attributes, FILE_PATH).is_some_and(|p| selection.takes_file(p))
                }));
                taken
            }
            NodeInput::Journal => records_where(batch.resource_logs.iter(), |record| {
                text(&record.attributes, SYSTEMD_UNIT).is_some_and(|u| selection.takes_unit(u))
            }),
        }
    }

    /// The node's pod metadata with the pod watch's latest snapshot, when the agent
    /// watches pods.
    fn pods(&self) -> Option<std::sync::MutexGuard<'_, PodMetadataCache>> {
        let mut pods = self
            .pods
            .as_ref()
            .map(|pods| pods.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(pods) = pods.as_mut() {
            pods.refresh();
        }
        pods
    }

    /// What the pipeline takes of `batch`, moved out of it: the same records as
    /// [`Self::select`] takes.
    fn take(&self, batch: LogBatch) -> Vec<ResourceLogs> {
        let selection = &self.intake.selection;
        let mut resource_logs = batch.resource_logs;
        let (containers, files) = self.input.tailed_parts();
        match self.input {
            NodeInput::Tailed | NodeInput::Containers | NodeInput::Files => {
                let pods = self.pods();
                resource_logs.retain_mut(|resource_logs| {
                    let container = resource_logs
                        .resource
                        .as_ref()
                        .is_some_and(|r| text(&r.attributes, POD_UID).is_some());
                    if container {
                        return containers
                            && selection.runtime.as_ref().is_some_and(|runtime| {
                                runtime.admits(resource_logs, pods.as_deref())
                            });
                    }
                    files
                        && retain_records(resource_logs, |record| {
                            text(&record.attributes, FILE_PATH)
                                .is_some_and(|p| selection.takes_file(p))
                        })
                });
            }
            NodeInput::Journal => resource_logs.retain_mut(|resource_logs| {
                retain_records(resource_logs, |record| {
                    text(&record.attributes, SYSTEMD_UNIT).is_some_and(|u| selection.takes_unit(u))
                })
            }),
        }
        resource_logs
    }
}

/// Keeps the records of `resource_logs` that `keep` keeps; whether any are left.
fn retain_records(
    resource_logs: &mut ResourceLogs,
    keep: impl Fn(&kaas_proto::otlp::LogRecord) -> bool,
) -> bool {
    for scope in &mut resource_logs.scope_logs {
        scope.log_records.retain(&keep);
    }
    resource_logs
        .scope_logs
        .retain(|scope| !scope.log_records.is_empty());
    !resource_logs.scope_logs.is_empty()
}

impl LogConsumer for InputConsumer {
    fn name(&self) -> &str {
        &self.intake.name
    }

    fn offer(&self, batch: Arc<LogBatch>, ack: BatchAck) {
        // The fan-out hands the last consumer the batch itself: when the others are
        // done with it, what this pipeline takes is moved, not copied.
        let taken = match Arc::try_unwrap(batch) {
            Ok(batch) => self.take(batch),
            Err(shared) => self.select(&shared),
        };
        if taken.is_empty() {
            ack.complete(Outcome::NotTaken);
            return;
        }
        self.intake.buffer_for(taken, ack);
    }
}

#[cfg(test)]
mod tests;
