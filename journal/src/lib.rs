//! A pure-Rust reader for systemd journal files, for reading a node's kubelet and
//! containerd logs where there is no `journalctl` and no libsystemd.
//!
//! ## What is supported
//! Journal files as systemd 252 (Debian 12) and newer write them, and the older layouts
//! they extend: regular and compact objects, keyed (siphash) and unkeyed hashes, and
//! data objects compressed with zstd, LZ4 or xz. A file whose header has an
//! incompatible feature flag this reader does not know is refused with a clear error,
//! as the format requires. Entries are read in file order through the global
//! entry-array chain; hash tables, field objects, per-data entry arrays and sealing
//! tags are not needed for that and are not read (seals and hashes are not verified).
//! Every field comes back as bytes, with `MESSAGE`, `_SYSTEMD_UNIT`, `PRIORITY`,
//! `_HOSTNAME`, the timestamps, seqnum and boot id at hand; a [`UnitFilter`] keeps only
//! the units on an allow-list and is checked before the rest of an entry is read.
//! Cursors are journald's own text form, so they can be compared with `journalctl`'s.
//! [`JournalFile`] follows one file as journald appends to it (a torn tail waits for
//! the next refresh); [`JournalDirectory`] reads a journal directory (`system.journal`,
//! its `system@….journal` archives, `user-*.journal` files) as one stream that
//! continues across rotation, and resumes from a persisted [`DirectoryCursor`] without
//! loss or duplicates. Not supported: journal namespaces and remote directories as one
//! stream (open one [`JournalDirectory`] per directory), and seeking by time.
//!
//! ## Hostile files
//! Every offset is checked against the file's size and alignment before it is read,
//! every read has a bound, entry-array links must point forward (no cycles), a
//! decompressed field stops at [`MAX_FIELD_BYTES`], an entry keeps at most 4 MiB at
//! full length and may cost at most 32 MiB of decompression. A corrupt object gives a
//! typed [`JournalError::Corrupt`] and the reader goes on with what it can still read.
//!
//! The on-disk layout is described in the module notes of [`mod@format`].

mod compress;
mod cursor;
mod directory;
mod entry;
mod error;
mod file;
pub mod format;
mod id128;
mod payload;
mod source;

pub use cursor::Cursor;
pub use directory::{DirectoryCursor, JournalDirectory, StartAt};
pub use entry::{Entry, Field, UnitFilter};
pub use error::{Corruption, JournalError};
pub use file::{Entries, JournalFile};
pub use id128::Id128;
pub use source::ReadAt;

/// Bytes kept of one field's value; longer values keep their start and are marked
/// [`Field::truncated`]. This is the product's record cap (a log record is at most
/// 1 MiB), so nothing the pipeline could ship is lost, and it bounds what one
/// compressed field can make the reader allocate.
pub const MAX_FIELD_BYTES: usize = 1024 * 1024;

/// Items (fields) one entry may have. journald and systemd-journal-remote refuse
/// entries with more than 1024 fields, so a larger entry is corrupt.
pub const MAX_ENTRY_ITEMS: u64 = 1024;
