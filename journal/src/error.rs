//! What can go wrong while reading a journal file, as one typed error.
//!
//! Two kinds of failure matter to a caller. A file that cannot be read at all (not a
//! journal, a header this reader does not understand, unknown incompatible features,
//! I/O) is refused when it is opened or refreshed. A corrupt object inside a readable
//! file is reported as [`JournalError::Corrupt`] with its offset and a [`Corruption`]
//! that names the broken rule; the reader then skips what it cannot read and goes on
//! with what it still can, so one bad object never hides the rest of the file.

use std::io;

/// An error reading a journal file or directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading the file or listing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the journal signature `LPKSHHRH`.
    #[error("not a journal file (bad signature)")]
    NotAJournal,
    /// The header uses incompatible features this reader does not know; reading on
    /// would misinterpret the file, so it is refused as the format requires.
    #[error(
        "journal file uses incompatible features {unknown:#x} this reader does not support \
         (it supports xz, lz4 and zstd compression, keyed hashes and compact mode)"
    )]
    UnsupportedFeatures {
        /// The unknown bits of the header's incompatible flags.
        unknown: u32,
    },
    /// The header itself is inconsistent (too small, larger than the file, ...).
    #[error("bad journal header: {reason}")]
    BadHeader {
        /// The broken rule.
        reason: &'static str,
    },
    /// The header changed identity or layout between two reads of the same open file.
    #[error("journal file changed identity while open: {reason}")]
    FileReplaced {
        /// What changed.
        reason: &'static str,
    },
    /// An object at `offset` breaks the format; the reader skips it.
    #[error("corrupt journal object at offset {offset:#x}: {kind}")]
    Corrupt {
        /// Offset of the object in the file.
        offset: u64,
        /// The broken rule.
        kind: Corruption,
    },
    /// A directory cursor could not be parsed.
    #[error("bad cursor: {reason}")]
    BadCursor {
        /// The broken rule.
        reason: &'static str,
    },
    /// The directory holds more journal files than the reader opens.
    #[error("{path}: more than {limit} journal files; refusing to read the directory")]
    TooManyFiles {
        /// The directory.
        path: String,
        /// The limit (1024: journald keeps 100 files by default).
        limit: usize,
    },
}

/// The rule a corrupt object breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// An offset points outside the file or before the first object.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// An offset is not 8-byte aligned.
    #[error("offset not 8-byte aligned")]
    Misaligned,
    /// The object has another type than the link leading to it promises.
    #[error("expected {expected}, found object type {found}")]
    WrongType {
        /// The type the link promises.
        expected: &'static str,
        /// The type byte found.
        found: u8,
    },
    /// The object's size field is too small for its type, too large, or runs past the
    /// end of the file.
    #[error("object size {size} invalid")]
    BadSize {
        /// The size field.
        size: u64,
    },
    /// An entry has more items than [`crate::MAX_ENTRY_ITEMS`].
    #[error("entry has {items} items, more than the limit of {limit}")]
    TooManyItems {
        /// Items in the entry.
        items: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry-array link points backwards or to itself: following it could loop.
    #[error("entry array chain does not move forward (cycle)")]
    EntryArrayCycle,
    /// The global entry-array chain ends before the header's entry count.
    #[error("entry array chain ends before the last entry")]
    ChainEndsEarly,
    /// An entry-array slot that should hold an entry is empty.
    #[error("empty entry array slot")]
    EmptySlot,
    /// Entries must be stored in increasing offset and sequence number.
    #[error("entry out of order (offset or seqnum not increasing)")]
    OutOfOrder,
    /// A data object has more than one compression flag, or one the header does not
    /// announce.
    #[error("invalid compression flags {flags:#x}")]
    BadCompressionFlags {
        /// The object's flags.
        flags: u8,
    },
    /// A data object's payload has no `=` or a field name that is not UTF-8.
    #[error("data object payload is not NAME=value")]
    BadField,
    /// A compressed payload could not be decompressed.
    #[error("{codec} payload does not decompress: {reason}")]
    Decompress {
        /// The codec.
        codec: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The entry's compressed fields need more decompression than one entry may cost.
    #[error("entry needs more than {limit} bytes of decompression")]
    DecodeBudget {
        /// The limit, in decoded bytes.
        limit: usize,
    },
    /// The file is shorter than the header says it is.
    #[error("file truncated")]
    Truncated,
}

impl JournalError {
    pub(crate) fn corrupt(offset: u64, kind: Corruption) -> Self {
        JournalError::Corrupt { offset, kind }
    }
}
