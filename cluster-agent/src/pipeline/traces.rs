//! Starting and stopping one trace pipeline: its data path ([`super::data_path`]: the
//! buffer under `<data dir>/trace-buffers/<name>`, inlet, sender and
//! [`TraceExporter`]), and its [`TraceIntake`]: the pipeline's span processing
//! (sampling, filters, attribute rules, rate limit) and the push into its inlet. Trace
//! pipelines run on the cluster-level instance only ([`kaas_pipeline::role`]): spans
//! are only ever pushed, and the push receivers ([`crate::push`]) feed the intake.
//!
//! **Buffer directories.** Names are unique per kind only, so a trace pipeline's buffer
//! lives apart from the other kinds' (`buffers/`, `log-buffers/`), in its own
//! top-level directory for the same reason as log pipelines' ([`super::logs`]).
//!
//! **Processing.** Every batch goes through the pipeline's span processing, built by
//! [`TraceProcessing`] (sampling, `dropSpans`, the rate limit, attribute rules), with the
//! pipeline's `hashKey` resolved to bytes per batch, so a rotated Secret takes effect without a restart
//! (the processing is rebuilt when the key changes, its rate limit's bucket kept as it is). A `hashKey` that does not
//! resolve refuses the batch ([`IntakeError::HashKeyUnavailable`]): forwarding values
//! the tenant asked to hash, unhashed, would leak them.
//!
//! **Acknowledgements.** A batch is acknowledged once what processing kept of it is in
//! the buffer file (nothing kept is durable at once); a full buffer (`dropNewest`) or a
//! failed write never fires the acknowledgement, so the push receiver refuses the
//! request and the pusher retries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kaas_buffer::BufferError;
use kaas_pipeline::traces::ValidatedTracePipeline;
use kaas_proto::otlp::ResourceSpans;
use kaas_series::clock::now_ms;

use super::data_path::DataPath;
use super::runtime::{AgentContext, StartError};
use crate::exporters::TraceExporter;
use crate::internal_events::PipelineStats;
use crate::outbound::auth::{ValueSources, resolve};
use crate::pipeline::budget::BufferGrant;
use crate::processing::traces::{TraceOutcome, TraceProcessing};
use crate::record::traces::TraceBatch;
use crate::topology::inlet::{Ack, Stored};

/// Where a trace pipeline's buffer lives (see the module documentation).
pub fn trace_buffer_dir(data_dir: &Path, pipeline: &str) -> PathBuf {
    data_dir.join("trace-buffers").join(pipeline)
}

/// A trace pipeline that is running.
pub struct RunningTracePipeline {
    /// The pipeline as validated.
    pub pipeline: ValidatedTracePipeline,
    /// Its buffer, inlet and sender.
    pub data_path: DataPath,
    /// Where its spans enter it: processing, then the inlet.
    pub intake: Arc<TraceIntake>,
    /// Where the pipeline's referenced values come from (its push token and hash key
    /// too).
    pub value_sources: ValueSources,
}

impl RunningTracePipeline {
    /// Starts a trace pipeline whose buffer holds at most what `grant` says. Must be
    /// called inside a Tokio runtime. The push receivers feed it through
    /// [`Self::intake`].
    pub fn start(
        pipeline: ValidatedTracePipeline,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, StartError> {
        let name = pipeline.name().to_owned();
        let stats = Arc::new(PipelineStats::named(&name));
        let value_sources = context.value_sources();
        let exporter = TraceExporter::new(&pipeline.output, value_sources.clone(), stats.clone())?;
        let data_path = DataPath::start(
            trace_buffer_dir(&context.data_dir, &name),
            &pipeline.buffer,
            grant,
            stats,
            exporter,
        )?;
        let intake = Arc::new(TraceIntake::new(
            &pipeline,
            data_path.inlet.clone(),
            value_sources.clone(),
        ));
        Ok(Self {
            pipeline,
            data_path,
            intake,
            value_sources,
        })
    }

    /// Stops the pipeline: what is buffered gets the data path's grace period. The
    /// push receivers stop offering first (they hold the pipelines' lock while they
    /// write, and stopping takes it).
    pub async fn stop(self) {
        self.data_path.stop().await;
    }
}

impl std::fmt::Debug for RunningTracePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningTracePipeline")
            .field("name", &self.pipeline.name())
            .finish_non_exhaustive()
    }
}

/// Trace pipelines by name.
pub type TracePipelines = BTreeMap<String, RunningTracePipeline>;

/// What became of spans handed to [`TraceIntake::buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffered {
    /// Whether the buffer kept them (the acknowledgement fires once they are durable)
    /// or dropped them as full.
    pub stored: Stored,
    /// What processing did.
    pub spans: TraceOutcome,
}

/// Why a trace pipeline cannot take a batch.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The pipeline's `hashKey` does not resolve: spans are not forwarded unhashed.
    #[error("the pipeline's hashKey cannot be read: {0}")]
    HashKeyUnavailable(String),
    /// The buffer could not write (counted and reported by the inlet).
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// Where a trace pipeline's spans enter it: its processing and its inlet.
pub struct TraceIntake {
    name: String,
    pipeline: ValidatedTracePipeline,
    value_sources: ValueSources,
    processing: Mutex<Option<KeyedProcessing>>,
    inlet: crate::topology::inlet::Inlet,
}

/// The processing built for one value of the hash key.
struct KeyedProcessing {
    hash_key: Option<Vec<u8>>,
    processing: Arc<TraceProcessing>,
}

impl TraceIntake {
    /// The intake of `pipeline`, writing into `inlet`, reading the hash key from
    /// `value_sources`.
    pub fn new(
        pipeline: &ValidatedTracePipeline,
        inlet: crate::topology::inlet::Inlet,
        value_sources: ValueSources,
    ) -> Self {
        Self {
            name: pipeline.name().to_owned(),
            pipeline: pipeline.clone(),
            value_sources,
            processing: Mutex::new(None),
            inlet,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Processes spans the pipeline takes and writes what is left into its buffer;
    /// `ack` fires once they are durable (at once when processing left nothing).
    pub fn buffer(
        &self,
        mut resource_spans: Vec<ResourceSpans>,
        ack: Ack,
    ) -> Result<Buffered, IntakeError> {
        let spans = self.process(&mut resource_spans)?;
        let batch = TraceBatch { resource_spans };
        let stored = self.inlet.push_acked(&batch, now_ms(), ack)?;
        Ok(Buffered { stored, spans })
    }

    /// Runs the pipeline's processing over `resource_spans`, with the hash key as it
    /// reads now.
    fn process(
        &self,
        resource_spans: &mut Vec<ResourceSpans>,
    ) -> Result<TraceOutcome, IntakeError> {
        let hash_key = match &self.pipeline.processors.hash_key {
            Some(source) => Some(
                resolve(source, &self.value_sources)
                    .map_err(|e| IntakeError::HashKeyUnavailable(e.to_string()))?
                    .expose()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        // Built again only when the key changes (keeping the rate limit's bucket, which
        // a rotation must not refill); processed outside the lock, so concurrent pushes
        // do not queue here.
        let processing = {
            let mut slot = self.processing.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(built) if built.hash_key == hash_key => built.processing.clone(),
                previous => {
                    let processing = Arc::new(match previous {
                        Some(built) => {
                            (built.processing).rebuilt(&self.pipeline, hash_key.as_deref())
                        }
                        None => TraceProcessing::new(&self.pipeline, hash_key.as_deref()),
                    });
                    *slot = Some(KeyedProcessing {
                        processing: processing.clone(),
                        hash_key,
                    });
                    processing
                }
            }
        };
        Ok(processing.process(resource_spans))
    }
}

impl std::fmt::Debug for TraceIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceIntake")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
