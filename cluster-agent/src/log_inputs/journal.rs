//! The `node` input's journal: the kubelet's and the container runtime's logs from the
//! node's systemd journal, read by `kaas_journal` (no `journalctl` in the image), for
//! the units on an allow-list only.
//!
//! Each entry becomes one record: `MESSAGE` the body, `PRIORITY` the severity (syslog
//! levels as the OpenTelemetry log data model maps them, the syslog name as text),
//! `_SYSTEMD_UNIT` the record attribute `systemd.unit`, `_HOSTNAME` the resource's
//! `host.name` (beside the node and cluster); the time is `_SOURCE_REALTIME_TIMESTAMP`
//! when the entry has it, else when journald received it, and the observed time is
//! when it was read.
//!
//! ## Position
//! The position file holds the journal's per-chain cursors (`DirectoryCursor`'s text,
//! one line per chain), written atomically (temporary file, fsync, rename, fsync of
//! the directory) and only with the position of reads every consumer committed: a
//! read's cursor applies once it and every earlier read are committed. A missing file
//! is a first start: the journal is read from [`JournalSettings::start_at`] and the
//! position written at once, so a crash before the first commit is not another first
//! start. A corrupt position file is an error, not a silent re-read.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use kaas_journal::{DirectoryCursor, Entry, JournalDirectory, UnitFilter};
use kaas_proto::otlp::{LogRecord, Resource, ResourceLogs, ScopeLogs};

use super::consumer::LogBatch;
use super::reader::{InputError, LogReader, ReadBatch};
use super::resource::{NodeIdentity, body, now_unix_nano, text};
use crate::processing::logs::severity;

/// Units read when a pipeline names none: the kubelet and containerd, the node logs
/// the provider collects centrally.
pub const DEFAULT_JOURNAL_UNITS: [&str; 2] = ["kubelet.service", "containerd.service"];

/// Entries per read: at the 1 MiB field cap a batch stays bounded, and a busy kubelet
/// (hundreds of lines a second) is read in one read per poll.
pub const DEFAULT_MAX_BATCH_ENTRIES: usize = 1024;

/// Reads handed out and not committed before reading stops: the tailer's window
/// (`kaas_logfiles::DEFAULT_MAX_UNACKED_BATCHES`).
pub const DEFAULT_MAX_UNCOMMITTED: usize = 64;

/// The syslog names of `PRIORITY` 0 to 7.
const PRIORITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Where to start when there is no position file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JournalStart {
    /// Every entry the journal still holds.
    Beginning,
    /// Entries written from now on (the default, as for files).
    #[default]
    End,
}

/// What the journal input reads and where it keeps its position.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// The journal directory (`/var/log/journal/<machine id>`).
    pub directory: PathBuf,
    /// `_SYSTEMD_UNIT` values read; see [`DEFAULT_JOURNAL_UNITS`].
    pub units: Vec<String>,
    /// The position file.
    pub position_file: PathBuf,
    /// See [`JournalStart`].
    pub start_at: JournalStart,
    /// See [`DEFAULT_MAX_BATCH_ENTRIES`]; at least 1.
    pub max_batch_entries: usize,
    /// See [`DEFAULT_MAX_UNCOMMITTED`]; at least 1.
    pub max_uncommitted: usize,
}

impl JournalSettings {
    /// The default units and bounds for `directory`, positions in `position_file`.
    pub fn new(directory: PathBuf, position_file: PathBuf) -> Self {
        Self {
            directory,
            units: DEFAULT_JOURNAL_UNITS.map(str::to_owned).to_vec(),
            position_file,
            start_at: JournalStart::default(),
            max_batch_entries: DEFAULT_MAX_BATCH_ENTRIES,
            max_uncommitted: DEFAULT_MAX_UNCOMMITTED,
        }
    }
}

/// What the journal reader counted since it opened. Monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalCounters {
    /// Entries turned into records.
    pub entries: u64,
    /// Unreadable entries or files, skipped.
    pub read_errors: u64,
    /// Entries with a field cut at the reader's field cap.
    pub truncated_entries: u64,
}

/// A read's place in the commit order.
#[derive(Debug)]
pub struct JournalTicket(u64);

/// One uncommitted read: the position after it.
struct Uncommitted {
    id: u64,
    position: DirectoryCursor,
    done: bool,
}

/// The journal as a [`LogReader`].
pub struct JournalReader {
    settings: JournalSettings,
    node: NodeIdentity,
    directory: JournalDirectory,
    uncommitted: VecDeque<Uncommitted>,
    next_read: u64,
    committed: DirectoryCursor,
    persisted: Option<DirectoryCursor>,
    /// The last read found nothing new.
    idle: bool,
    counters: JournalCounters,
}

impl JournalReader {
    /// Opens the journal directory at the persisted position (or the start setting)
    /// and writes the starting position.
    pub fn open(mut settings: JournalSettings, node: NodeIdentity) -> Result<Self, InputError> {
        // A zero bound would read nothing, ever.
        settings.max_batch_entries = settings.max_batch_entries.max(1);
        settings.max_uncommitted = settings.max_uncommitted.max(1);
        let start = match load_position(&settings.position_file)? {
            Some(cursor) => kaas_journal::StartAt::After(cursor),
            None if settings.start_at == JournalStart::Beginning => {
                kaas_journal::StartAt::Beginning
            }
            None => kaas_journal::StartAt::End,
        };
        let filter = UnitFilter::units(&settings.units);
        let directory = JournalDirectory::open(&settings.directory, filter, start)?;
        let mut reader = Self {
            committed: directory.position(),
            directory,
            settings,
            node,
            uncommitted: VecDeque::new(),
            next_read: 0,
            persisted: None,
            idle: false,
            counters: JournalCounters::default(),
        };
        reader.persist()?;
        Ok(reader)
    }

    /// What was read, skipped and cut, for telemetry.
    pub fn counters(&self) -> &JournalCounters {
        &self.counters
    }

    /// Up to `max_batch_entries` entries, looking at the directory again once when
    /// nothing is left. Errors are counted and skipped.
    fn next_entries(&mut self) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut polled = false;
        // Bounded: each turn takes an entry, counts an error, or polls once.
        for _ in 0..self.settings.max_batch_entries.saturating_mul(2) {
            if entries.len() == self.settings.max_batch_entries {
                break;
            }
            match self.directory.next_entry() {
                Some(Ok(entry)) => entries.push(entry),
                Some(Err(error)) => {
                    self.counters.read_errors += 1;
                    tracing::warn!(%error, "a journal entry or file is unreadable; reading goes on past it");
                }
                None if polled => break,
                None => {
                    polled = true;
                    if let Err(error) = self.directory.poll() {
                        self.counters.read_errors += 1;
                        tracing::warn!(%error, "listing the journal directory failed; retried next poll");
                        break;
                    }
                }
            }
        }
        entries
    }

    fn shape(&mut self, entries: Vec<Entry>) -> LogBatch {
        let observed = now_unix_nano();
        let records = entries.len();
        let mut by_host: BTreeMap<Option<String>, Vec<LogRecord>> = BTreeMap::new();
        for entry in entries {
            self.counters.entries += 1;
            if entry.fields.iter().any(|f| f.truncated) {
                self.counters.truncated_entries += 1;
            }
            let host = entry.hostname().map(str::to_owned);
            by_host
                .entry(host)
                .or_default()
                .push(entry_record(&entry, observed));
        }
        let resource_logs = by_host
            .into_iter()
            .map(|(host, log_records)| {
                let mut attributes = self.node.attributes();
                if let Some(host) = host {
                    attributes.push(text("host.name", &host));
                }
                ResourceLogs {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records,
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }
            })
            .collect();
        LogBatch {
            resource_logs,
            records,
        }
    }
}

impl LogReader for JournalReader {
    type Ticket = JournalTicket;

    fn read(&mut self) -> Result<Option<ReadBatch<JournalTicket>>, InputError> {
        if self.uncommitted.len() >= self.settings.max_uncommitted {
            self.idle = false;
            return Ok(None);
        }
        let entries = self.next_entries();
        self.idle = entries.is_empty();
        let position = self.directory.position();
        if entries.is_empty() {
            // Entries of other units may have been passed: that position needs
            // nothing durable, but applies only behind earlier reads.
            if self.uncommitted.is_empty() {
                self.committed = position;
            } else if let Some(last) = self.uncommitted.back_mut()
                && last.done
            {
                last.position = position;
            }
            return Ok(None);
        }
        let id = self.next_read;
        self.next_read += 1;
        self.uncommitted.push_back(Uncommitted {
            id,
            position,
            done: false,
        });
        Ok(Some(ReadBatch {
            batch: self.shape(entries),
            ticket: JournalTicket(id),
        }))
    }

    fn commit(&mut self, ticket: JournalTicket) {
        if let Some(read) = self.uncommitted.iter_mut().find(|r| r.id == ticket.0) {
            read.done = true;
        }
        while self.uncommitted.front().is_some_and(|r| r.done) {
            if let Some(read) = self.uncommitted.pop_front() {
                self.committed = read.position;
            }
        }
    }

    fn persist(&mut self) -> Result<(), InputError> {
        if self.persisted.as_ref() == Some(&self.committed) {
            return Ok(());
        }
        store_position(&self.settings.position_file, &self.committed)?;
        self.persisted = Some(self.committed.clone());
        Ok(())
    }

    fn save_position_as(&mut self, path: &Path) -> Result<(), InputError> {
        store_position(path, &self.committed)
    }

    fn open_sibling(&self, path: &Path) -> Result<Self, InputError> {
        let mut settings = self.settings.clone();
        settings.position_file = path.to_path_buf();
        Self::open(settings, self.node.clone())
    }

    fn caught_up(&self) -> bool {
        self.idle && self.uncommitted.is_empty()
    }

    fn same_position(&mut self, other: &mut Self) -> Result<bool, InputError> {
        Ok(self.committed == other.committed)
    }

    fn max_uncommitted(&self) -> usize {
        self.settings.max_uncommitted
    }
}

/// One entry as a record.
fn entry_record(entry: &Entry, observed: u64) -> LogRecord {
    let mut record = LogRecord {
        time_unix_nano: source_time_usec(entry)
            .unwrap_or(entry.realtime_usec())
            .saturating_mul(1000),
        observed_time_unix_nano: observed,
        body: body(String::from_utf8_lossy(entry.message().unwrap_or_default()).into_owned()),
        ..LogRecord::default()
    };
    if let Some(priority) = entry.priority() {
        if let Some(number) = severity::from_number(i64::from(priority)) {
            record.severity_number = number as i32;
        }
        record.severity_text = PRIORITY_NAMES[usize::from(priority)].to_owned();
    }
    if let Some(unit) = entry.unit() {
        record.attributes.push(text("systemd.unit", unit));
    }
    record
}

/// `_SOURCE_REALTIME_TIMESTAMP`: when the process logged it, in microseconds.
fn source_time_usec(entry: &Entry) -> Option<u64> {
    std::str::from_utf8(entry.field("_SOURCE_REALTIME_TIMESTAMP")?)
        .ok()?
        .parse()
        .ok()
}

/// The persisted position, `None` when there is none yet.
fn load_position(path: &Path) -> Result<Option<DirectoryCursor>, InputError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.parse()?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InputError::Position {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the position file atomically: temporary file, fsync, rename, fsync of
/// the directory.
fn store_position(path: &Path, cursor: &DirectoryCursor) -> Result<(), InputError> {
    let io = |source| InputError::Position {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(cursor.to_string().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
    }
    Ok(())
}
