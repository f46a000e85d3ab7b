//! What the tailer hands out: [`LogRecord`]s with their source, and the [`TailCounters`]
//! of everything it truncated, skipped, replaced or noticed, for the agent's telemetry.

use std::path::PathBuf;
use std::sync::Arc;

use crate::discover::Source;

/// The stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// A container's standard output (`log.iostream=stdout`).
    Stdout,
    /// A container's standard error (`log.iostream=stderr`).
    Stderr,
    /// A plain file's lines, or container lines in no known format.
    Plain,
}

impl Stream {
    /// All streams, in the order of [`Stream::index`].
    pub const ALL: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Plain];

    /// A dense index for per-stream arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in attributes and in the checkpoint file.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Plain => "plain",
        }
    }

    /// The stream of a name as [`Stream::name`] writes it.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|stream| stream.name().as_bytes() == name)
    }
}

/// The file a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// `log.file.path`: the path the file was found at.
    pub path: PathBuf,
    /// The pod and container for container logs.
    pub source: Source,
}

/// One log record: a line, a reassembled partial line, or a multiline group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where it was read.
    pub file: Arc<FileSource>,
    /// Its stream.
    pub stream: Stream,
    /// The runtime's timestamp (CRI and Docker), nanoseconds since the epoch.
    pub time_unix_nano: Option<u64>,
    /// The text; invalid UTF-8 replaced by U+FFFD.
    pub body: String,
    /// Whether part of it was skipped for exceeding the record cap.
    pub truncated: bool,
    /// The byte offset of its first line in the file.
    pub offset: u64,
}

/// What the tailer dropped, replaced or noticed since it started. Monotonic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailCounters {
    /// Records handed out.
    pub records: u64,
    /// Bytes of files read past (lines and the parts of oversize records skipped).
    pub bytes_read: u64,
    /// Lines or records cut at the record cap.
    pub truncated_records: u64,
    /// Bytes skipped beyond the record cap.
    pub skipped_bytes: u64,
    /// Records in which invalid UTF-8 was replaced.
    pub invalid_utf8_records: u64,
    /// Container log lines in neither CRI nor Docker format, passed on as plain text.
    pub unparsed_lines: u64,
    /// Files that shrank below the read position or were rewritten (copytruncate).
    pub truncations: u64,
    /// Files that were renamed or deleted while tracked, read to their end and forgotten.
    pub rotations: u64,
    /// Tracked files that vanished before they were read to their end, while no
    /// descriptor was open on them (only possible beyond the open-descriptor bound).
    pub lost_files: u64,
    /// Descriptors closed to stay within the open-descriptor bound.
    pub evictions: u64,
    /// Errors opening or reading files (retried next poll).
    pub read_errors: u64,
}
