//! The tailer: discovers files each poll, follows them across rotation and truncation
//! within the open-descriptor bound, hands out [`Batch`]es of records, and persists
//! positions only as far as the caller has committed.

mod ack;
mod file;
mod reconcile;

use std::collections::HashMap;
use std::time::Instant;

pub use ack::{AckToken, Batch};
pub use file::{FRAMING_ALLOWANCE, READ_CHUNK};

use crate::checkpoint::{Checkpoint, FileCheckpoint};
use crate::config::{CorruptCheckpointPolicy, StartAt, ValidatedTailConfig};
use crate::discover::{Discovery, FileId, Refusal};
use crate::error::{CheckpointError, TailError};
use crate::record::TailCounters;
use ack::{AckQueue, PendingMark};
use file::{Reading, TrackedFile};

/// How the tailer started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// No checkpoint: files that exist now start at [`crate::TailConfig::start_at`].
    First,
    /// Resumed from the checkpoint.
    Resumed,
    /// The checkpoint was corrupt ([`CheckpointError::Corrupt`]'s reason kept here); it
    /// was moved aside and every file is read from the beginning.
    RecoveredFromCorruptCheckpoint(String),
}

/// What the last poll's discovery left out, for health reports: values of that poll,
/// not counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// The first refused paths, with the reason.
    pub refused: Vec<Refusal>,
    /// All refused paths.
    pub refused_total: u64,
    /// Admissible files not followed because `max_files` files are followed already.
    pub over_file_limit: u64,
    /// Whether the scan stopped at [`crate::discover::MAX_SCAN_ENTRIES`].
    pub incomplete: bool,
}

/// Follows the configured files. Not thread-safe by itself: one task polls and commits.
pub struct Tailer {
    config: ValidatedTailConfig,
    discovery: Discovery,
    files: HashMap<FileId, TrackedFile>,
    /// Open descriptors, least recently used first.
    open: Vec<FileId>,
    acks: AckQueue,
    reading: Reading,
    polls: u64,
    next_generation: u64,
    dirty: bool,
    startup: Startup,
    discovery_status: DiscoveryStatus,
}

impl Tailer {
    /// Loads the checkpoint, finds the files and stores the starting positions (so that
    /// a restart before the first commit is not mistaken for a first start).
    pub fn open(config: ValidatedTailConfig) -> Result<Self, TailError> {
        let (restored, startup) = match Checkpoint::load(&config.checkpoint) {
            Ok(Some(checkpoint)) => (Some(checkpoint), Startup::Resumed),
            Ok(None) => (None, Startup::First),
            Err(CheckpointError::Corrupt { path, reason })
                if config.on_corrupt_checkpoint == CorruptCheckpointPolicy::RereadFromBeginning =>
            {
                let mut aside = path.clone().into_os_string();
                aside.push(".corrupt");
                std::fs::rename(&path, &aside).map_err(|source| CheckpointError::Io {
                    path: path.clone(),
                    source,
                })?;
                (
                    Some(Checkpoint::default()),
                    Startup::RecoveredFromCorruptCheckpoint(reason),
                )
            }
            Err(error) => return Err(error.into()),
        };
        let mut tailer = Self {
            discovery: Discovery::new(&config),
            files: HashMap::new(),
            open: Vec::new(),
            acks: AckQueue::default(),
            reading: Reading::default(),
            polls: 0,
            next_generation: 1,
            dirty: true,
            startup,
            discovery_status: DiscoveryStatus::default(),
            config,
        };
        let skip_existing =
            tailer.startup == Startup::First && tailer.config.start_at == StartAt::End;
        tailer.start(restored.unwrap_or_default(), skip_existing);
        tailer.save_checkpoint()?;
        Ok(tailer)
    }

    /// How this tailer started.
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// What the last poll's discovery refused or left out.
    pub fn discovery_status(&self) -> &DiscoveryStatus {
        &self.discovery_status
    }

    /// How often the caller should poll ([`crate::TailLimits::poll_interval`]).
    pub fn poll_interval(&self) -> std::time::Duration {
        self.config.limits.poll_interval
    }

    /// Everything counted since the start.
    pub fn counters(&self) -> &TailCounters {
        &self.reading.counters
    }

    /// Files followed now (including rotated ones not yet finished).
    pub fn tracked_files(&self) -> usize {
        self.files.len()
    }

    /// Descriptors open now; never more than `max_open_files`.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    /// Bytes known to be in tracked files beyond their read position (as of the last
    /// poll's sizes): the input lag, for telemetry.
    pub fn unread_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| !f.finished)
            .map(|f| f.size.saturating_sub(f.read_offset))
            .sum()
    }

    /// Batches handed out and not yet committed.
    pub fn unacknowledged_batches(&self) -> usize {
        self.acks.len()
    }

    /// One poll at the current time; see [`Tailer::poll_at`].
    pub fn poll(&mut self) -> Batch {
        self.poll_at(Instant::now())
    }

    /// Discovers, reads up to `max_batch_bytes`, flushes expired multiline records and
    /// finishes idle rotated files. Reads nothing while `max_unacked_batches` batches
    /// are outstanding.
    pub fn poll_at(&mut self, now: Instant) -> Batch {
        self.poll_with(now, true)
    }

    /// A poll of the files followed now, without discovery: new, renamed and deleted
    /// files are noticed by the next [`Tailer::poll_at`]. Open files' sizes come from
    /// their descriptors (an `fstat` each, no path lookup); closed files are read
    /// with the sizes the last discovery saw. Everything else is as in
    /// [`Tailer::poll_at`]: a file renamed or deleted in between is still read through
    /// its descriptor, truncation and replaced content are checked on every read, and
    /// positions are committed only through [`Tailer::commit`].
    ///
    /// The walk of the pod log directories costs about as much as reading 1 MiB of
    /// lines on a node with 1,000 containers; callers poll often for low latency and
    /// discover every [`crate::DEFAULT_DISCOVERY_INTERVAL`].
    pub fn poll_known_at(&mut self, now: Instant) -> Batch {
        self.poll_with(now, false)
    }

    /// Whether the last poll stopped at `max_batch_bytes` with bytes left that it
    /// knows of: polling again at once reads more. Lines not yet terminated are not
    /// counted, so a writer in the middle of a line does not make this true.
    pub fn more_to_read(&self) -> bool {
        self.acks.len() < self.config.limits.max_unacked_batches
            && self.files.values().any(TrackedFile::has_new_bytes)
    }

    fn poll_with(&mut self, now: Instant, discover: bool) -> Batch {
        if self.acks.len() >= self.config.limits.max_unacked_batches {
            return Batch {
                records: Vec::new(),
                token: AckQueue::empty_token(),
            };
        }
        self.polls += 1;
        if discover {
            let scan = self.discovery.scan();
            self.discovery_status = DiscoveryStatus {
                refused: scan.refused,
                refused_total: scan.refused_total,
                over_file_limit: 0,
                incomplete: scan.incomplete,
            };
            self.reconcile(scan.files);
        } else {
            self.refresh_open_sizes();
        }
        let mut records = Vec::new();
        let mut touched = Vec::new();
        self.read_files(now, &mut records, &mut touched);
        let marks: Vec<PendingMark> = touched
            .into_iter()
            .filter_map(|id| {
                self.files.get(&id).map(|f| PendingMark {
                    id,
                    generation: f.generation,
                    mark: f.mark(),
                })
            })
            .collect();
        self.forget_finished();
        // A batch that moves no position needs no place in the queue.
        let token = if records.is_empty() && marks.is_empty() {
            AckQueue::empty_token()
        } else {
            self.acks.push(marks)
        };
        Batch { records, token }
    }

    /// Records that `token`'s batch is durable downstream. Its positions take effect once
    /// every earlier batch is committed too; [`Tailer::save_checkpoint`] persists them.
    pub fn commit(&mut self, token: AckToken) {
        for pending in self.acks.acknowledge(token) {
            if let Some(file) = self
                .files
                .get_mut(&pending.id)
                .filter(|f| f.generation == pending.generation)
            {
                file.committed = pending.mark;
                self.dirty = true;
            }
        }
        self.forget_finished();
    }

    /// Writes the committed positions to the checkpoint file if they changed.
    pub fn save_checkpoint(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        self.committed().store(&self.config.checkpoint)?;
        self.dirty = false;
        Ok(())
    }

    /// The committed positions as [`Tailer::save_checkpoint`] writes them (files in no
    /// particular order), without touching the disk: to compare two tailers'
    /// positions.
    pub fn committed(&self) -> Checkpoint {
        let files = self
            .files
            .values()
            .map(|file| FileCheckpoint {
                id: file.id,
                fingerprint: file.fingerprint,
                offset: file.committed.offset,
                resume: file.committed.resume,
                path: file.source.path.clone(),
            })
            .collect();
        Checkpoint { files }
    }

    /// Drops finished files whose every position is committed.
    fn forget_finished(&mut self) {
        let before = self.files.len();
        self.files
            .retain(|_, file| !(file.finished && file.committed.offset >= file.read_offset));
        self.dirty |= self.files.len() != before;
    }
}
