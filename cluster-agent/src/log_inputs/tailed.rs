//! The file tailer (`kaas_logfiles::Tailer`) as a [`LogReader`]: container logs
//! ([`super::runtime`]) and plain files ([`super::files`]) from one tailer, each
//! poll's records grouped by resource (one per container, one for the plain files).
//! Its position file is the tailer's checkpoint. The tailer walks its directories
//! every [`DEFAULT_DISCOVERY_INTERVAL`] and reads the files it knows on every read in
//! between.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kaas_logfiles::{
    AckToken, DEFAULT_DISCOVERY_INTERVAL, DiscoveryStatus, FileSource, PodLogPath, Source,
    TailCounters, Tailer, ValidatedTailConfig,
};
use kaas_proto::otlp::{KeyValue, ResourceLogs, ScopeLogs};

use super::consumer::LogBatch;
use super::files::{file_record, file_resource};
use super::reader::{InputError, LogReader, ReadBatch};
use super::resource::{NodeIdentity, now_unix_nano};
use super::runtime::{PodEnrichment, container_record, container_resource, file_path_attribute};

/// Container logs and plain files read by one tailer.
pub struct TailedLogs {
    tailer: Tailer,
    config: ValidatedTailConfig,
    node: NodeIdentity,
    enrichment: PodEnrichment,
    /// When the tailer last walked its directories ([`Tailer::poll_at`]); the reads in
    /// between follow the known files only.
    last_discovery: Option<Instant>,
}

impl TailedLogs {
    /// Opens the tailer of `config` (resuming from its checkpoint).
    pub fn open(
        config: ValidatedTailConfig,
        node: NodeIdentity,
        enrichment: PodEnrichment,
    ) -> Result<Self, InputError> {
        Ok(Self {
            tailer: Tailer::open(config.clone())?,
            config,
            node,
            enrichment,
            last_discovery: None,
        })
    }

    /// What the tailer truncated, skipped or noticed, for telemetry.
    pub fn counters(&self) -> &TailCounters {
        self.tailer.counters()
    }

    /// Descriptors open now and files followed now, for telemetry.
    pub fn files(&self) -> (usize, usize) {
        (self.tailer.open_files(), self.tailer.tracked_files())
    }

    /// What the last poll's discovery refused (credentials, symlinks out of a root)
    /// or left out, for health reports.
    pub fn discovery_status(&self) -> &DiscoveryStatus {
        self.tailer.discovery_status()
    }

    fn shape(&mut self, records: Vec<kaas_logfiles::LogRecord>) -> LogBatch {
        let observed = now_unix_nano();
        let count = records.len();
        let mut resources: Vec<ResourceLogs> = Vec::new();
        // By the address of the record's pod path (shared by every record of one
        // file), so a record costs a pointer hash; `None` for plain files.
        let mut index: HashMap<Option<*const PodLogPath>, usize> = HashMap::new();
        // The tailer hands out a file's records in a run: the run's slot and
        // `log.file.path` attribute serve it without a lookup or a path conversion.
        let mut last: Option<FileRun> = None;
        for record in records {
            let file = Arc::as_ptr(&record.file);
            let pod = match &record.file.source {
                Source::Pod(path) => Some(path),
                Source::Plain => None,
            };
            let run = match last.take() {
                Some(run) if run.file == file => run,
                _ => {
                    let slot = *index.entry(pod.map(Arc::as_ptr)).or_insert_with(|| {
                        let resource = match pod {
                            Some(path) => container_resource(path, &self.node, &self.enrichment),
                            None => file_resource(&self.node),
                        };
                        resources.push(ResourceLogs {
                            resource: Some(resource),
                            scope_logs: vec![ScopeLogs::default()],
                            ..ResourceLogs::default()
                        });
                        resources.len() - 1
                    });
                    FileRun {
                        file,
                        slot,
                        path: file_path_attribute(&record.file),
                    }
                }
            };
            let shaped = match pod {
                Some(_) => container_record(record, observed, &run.path),
                None => file_record(record, observed, &run.path),
            };
            resources[run.slot].scope_logs[0].log_records.push(shaped);
            last = Some(run);
        }
        LogBatch {
            resource_logs: resources,
            records: count,
        }
    }
}

/// The file whose records [`TailedLogs::shape`] is taking: where they go and their
/// `log.file.path` attribute.
struct FileRun {
    file: *const FileSource,
    slot: usize,
    path: KeyValue,
}

impl LogReader for TailedLogs {
    type Ticket = AckToken;

    fn read(&mut self) -> Result<Option<ReadBatch<AckToken>>, InputError> {
        self.enrichment.refresh();
        let now = Instant::now();
        let discover = self
            .last_discovery
            .is_none_or(|last| now.saturating_duration_since(last) >= DEFAULT_DISCOVERY_INTERVAL);
        let batch = if discover {
            self.last_discovery = Some(now);
            self.tailer.poll_at(now)
        } else {
            self.tailer.poll_known_at(now)
        };
        if batch.records.is_empty() {
            // Positions without records (lines skipped, a rotated file finished)
            // need nothing durable; committing them now is safe, as they apply only
            // behind every earlier batch.
            self.tailer.commit(batch.token);
            return Ok(None);
        }
        Ok(Some(ReadBatch {
            batch: self.shape(batch.records),
            ticket: batch.token,
        }))
    }

    fn commit(&mut self, ticket: AckToken) {
        self.tailer.commit(ticket);
    }

    fn persist(&mut self) -> Result<(), InputError> {
        Ok(self.tailer.save_checkpoint()?)
    }

    fn save_position_as(&mut self, path: &Path) -> Result<(), InputError> {
        Ok(self.tailer.committed().store(path)?)
    }

    fn open_sibling(&self, path: &Path) -> Result<Self, InputError> {
        let mut config = self.config.clone();
        config.checkpoint = path.to_path_buf();
        Self::open(config, self.node.clone(), self.enrichment.clone())
    }

    fn caught_up(&self) -> bool {
        self.tailer.unread_bytes() == 0 && self.tailer.unacknowledged_batches() == 0
    }

    fn same_position(&mut self, other: &mut Self) -> Result<bool, InputError> {
        let sorted = |tailed: &Self| {
            let mut files = tailed.tailer.committed().files;
            files.sort_by_key(|file| file.id);
            files
        };
        Ok(sorted(self) == sorted(other))
    }

    fn more_to_read(&self) -> bool {
        self.tailer.more_to_read()
    }

    fn max_uncommitted(&self) -> usize {
        self.config.limits.max_unacked_batches
    }
}
