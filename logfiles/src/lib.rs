//! Reads container and node log files the way users of Fluent Bit and the OpenTelemetry
//! filelog receiver expect, for the agent's `runtime` and plain-file log inputs. It knows
//! nothing of pipelines, exporters or Kubernetes APIs: the agent polls a [`Tailer`],
//! writes each [`Batch`]'s records into its pipelines' buffers and commits the batch's
//! [`AckToken`] once they are durable there.
//!
//! ## Using it
//! The API is synchronous file I/O: run the tailer on its own thread (or in
//! `spawn_blocking`), call [`Tailer::poll`] every [`Tailer::poll_interval`] (or
//! [`Tailer::poll_known_at`] between discoveries, and again at once while
//! [`Tailer::more_to_read`]), hand each
//! [`Batch`]'s records to the pipelines, [`Tailer::commit`] its token once they are
//! durable (or dropped by policy and counted) in every pipeline that takes them, and
//! call [`Tailer::save_checkpoint`] after commits (each save is an fsync; saving less
//! often only means more duplicates after a crash, never a loss). [`Tailer::counters`],
//! [`Tailer::discovery_status`] and [`Tailer::unread_bytes`] feed the telemetry.
//!
//! ## What it reads
//! [`discover`] finds `<root>/<namespace>_<pod>_<uid>/<container>/<n>.log` below the pod
//! log root (parsed into a [`PodLogPath`]) and plain files by glob below allowed roots,
//! never following a symlink out of its root and refusing denied paths (the agent's
//! data directory, the service-account token, the identity key) by path and by inode.
//! Container files are CRI ([`cri`]) or Docker json-file ([`docker`]), detected per file
//! from the first line that parses; plain files give one record per line. Partial lines
//! (CRI `P`, Docker `log` without `\n`) are joined up to the record cap, and an optional
//! [`MultilineConfig`] joins lines per stream by a first-line pattern and a timeout.
//!
//! ## Invariants
//! - **Bounded memory.** A line is never held beyond `max_record_bytes` plus
//!   [`FRAMING_ALLOWANCE`]: the rest of a longer line (10 MiB without a newline
//!   included) is skipped and counted. Each stream holds at most one partial line and
//!   one multiline record, each capped. Unterminated lines are re-read, not buffered.
//!   At most `max_unacked_batches` batches are outstanding; polling reads nothing more
//!   until the caller commits.
//! - **Bounded descriptors.** At most `max_open_files` are open; when another is
//!   needed, the least recently read file that is read to its end is closed (else the
//!   least recently read one) and reopened by position later, its identity checked
//!   again. A rotated or deleted file is never closed before it is read to its end
//!   (while closed, a renamed file is found again by inode in its directory).
//! - **Identity.** A file is its device and inode plus a [`Fingerprint`] of its first
//!   [`FINGERPRINT_BYTES`]: a file shrunk below the position (copytruncate) or whose
//!   first bytes changed (reused inode, rewrite) is read again from 0, and positions
//!   acknowledged for its old content are ignored.
//! - **No position ahead of the acknowledgement.** Positions enter the checkpoint only
//!   through [`Tailer::commit`], in batch order: a batch's positions apply once it and
//!   every earlier batch are committed. A position never passes a line that a partial
//!   line or an open multiline record still holds. Per-stream resume offsets make a
//!   re-read skip lines of one stream that were delivered while the other stream's
//!   multiline record was still open.
//!
//! ## On disk
//! One checkpoint file (format in [`checkpoint`]): a header, one line per file with its
//! identity, fingerprint, resume offset, per-stream resume offsets and path, and an
//! `end` line with the entry count and a CRC-32. It is replaced atomically (temporary
//! file, fsync, rename, fsync of the directory) by [`Tailer::save_checkpoint`].
//!
//! ## Crash behaviour
//! After `kill -9` the tailer resumes from the last saved checkpoint: nothing committed
//! is read again (except lines held by an open multiline record, which were not
//! delivered), nothing uncommitted is skipped, so the loss is zero and the duplicates
//! are the records handed out after the last saved commit. A torn or garbage checkpoint
//! is moved aside and every file is read from the beginning
//! ([`CorruptCheckpointPolicy::RereadFromBeginning`], the default) or refused. A file
//! that existed at the first start is read from its end ([`StartAt::End`], default) or
//! beginning; the checkpoint is written at once, so a crash before the first commit does
//! not make the next start a "first" one. Lost are only: bytes of a file deleted while
//! no descriptor was open on it (only beyond `max_open_files`), counted in
//! [`TailCounters::lost_files`].

pub mod checkpoint;
mod config;
pub mod cri;
pub mod discover;
pub mod docker;
mod error;
pub mod fingerprint;
mod glob;
mod multiline;
pub mod path;
mod record;
mod tail;
mod timestamp;

pub use checkpoint::{Checkpoint, FileCheckpoint};
pub use config::{
    CorruptCheckpointPolicy, DEFAULT_DISCOVERY_INTERVAL, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_FILES, DEFAULT_MAX_OPEN_FILES, DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_UNACKED_BATCHES, DEFAULT_POLL_INTERVAL, DEFAULT_ROTATE_WAIT, MultilineConfig,
    StartAt, TailConfig, TailLimits, ValidatedMultiline, ValidatedTailConfig,
};
pub use discover::{DiscoveredFile, Discovery, FileId, Refusal, RefusalReason, Scan, Source};
pub use error::{CheckpointError, ConfigError, TailError};
pub use fingerprint::{FINGERPRINT_BYTES, Fingerprint};
pub use path::PodLogPath;
pub use record::{FileSource, LogRecord, Stream, TailCounters};
pub use tail::{AckToken, Batch, DiscoveryStatus, FRAMING_ALLOWANCE, READ_CHUNK, Startup, Tailer};

#[cfg(test)]
mod tests {
    /// The agent moves the tailer to a blocking thread and batches back to its tasks.
    #[test]
    fn tailer_and_batches_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::Tailer>();
        send::<super::Batch>();
    }
}
