//! The one thing every input is to the fan-out: a [`LogReader`] that reads batches,
//! commits them by ticket in read order, persists its committed position, and can
//! open a sibling reader of the same input at a position of its own (how a lagging
//! consumer is detached).

use std::path::{Path, PathBuf};

use kaas_logfiles::{CheckpointError, TailError};

use super::consumer::LogBatch;

/// A read: its records and the ticket that commits its position.
#[derive(Debug)]
pub struct ReadBatch<T> {
    /// The records.
    pub batch: LogBatch,
    /// Commits the position after these records, once every batch before is committed.
    pub ticket: T,
}

/// An input's reader. Used by one thread at a time.
pub trait LogReader: Sized + Send {
    /// Commits one read's position.
    type Ticket: Send;

    /// Reads what is new, `None` when nothing is (or when the reader holds as many
    /// uncommitted reads as it may). Problems with single files or entries are counted
    /// and skipped, not returned.
    fn read(&mut self) -> Result<Option<ReadBatch<Self::Ticket>>, InputError>;

    /// Marks a read durable downstream; its position takes effect once every earlier
    /// read is committed too. Tickets may come in any order.
    fn commit(&mut self, ticket: Self::Ticket);

    /// Writes the committed position to the reader's position file if it changed.
    fn persist(&mut self) -> Result<(), InputError>;

    /// Writes the committed position to `path` (atomically), in the reader's own
    /// position-file format.
    fn save_position_as(&mut self, path: &Path) -> Result<(), InputError>;

    /// A reader of the same input, with the same settings, resuming from the position
    /// file `path` and persisting there.
    fn open_sibling(&self, path: &Path) -> Result<Self, InputError>;

    /// Whether nothing is left to read now and nothing read is uncommitted.
    fn caught_up(&self) -> bool;

    /// Whether this reader and `other` have committed the same position.
    fn same_position(&mut self, other: &mut Self) -> Result<bool, InputError>;

    /// Whether the last read stopped at its size bound with more known to be ready,
    /// so reading again at once (not after the poll interval) reads more.
    fn more_to_read(&self) -> bool {
        false
    }

    /// Reads this reader may hold uncommitted before it stops reading.
    fn max_uncommitted(&self) -> usize;
}

/// Why an input could not read or keep its position.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file tailer could not open (bad checkpoint under the refuse policy, I/O).
    #[error("opening the file tailer: {0}")]
    Tail(#[from] TailError),
    /// The file tailer's checkpoint could not be written or read.
    #[error("file positions: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The journal directory could not be read.
    #[error("journal: {0}")]
    Journal(#[from] kaas_journal::JournalError),
    /// A position file could not be written or read.
    #[error("position file {}: {source}", path.display())]
    Position {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Two consumers have one name, so they would share one position file.
    #[error("consumer name {name:?} is given twice")]
    DuplicateConsumer {
        /// The name.
        name: String,
    },
    /// The tailer's configuration, assembled from the pipelines, is refused (a glob
    /// outside the allowed roots that validation let through).
    #[error("the file tailer's configuration: {reason}")]
    Config {
        /// Every problem, joined.
        reason: String,
    },
    /// A consumer's name cannot name a position file.
    #[error("consumer name {name:?} is not a DNS label")]
    ConsumerName {
        /// The name.
        name: String,
    },
}
