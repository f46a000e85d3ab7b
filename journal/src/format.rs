//! The on-disk layout of a journal file: the header and the objects this reader uses.
//!
//! Everything is little-endian; offsets are from the start of the file and every object
//! starts 8-byte aligned. The layout below is the published one (systemd.io, "Journal
//! File Format", and `journal-def.h`), restated here in the reader's own words.
//!
//! ```text
//! Header (272 bytes in systemd 254+, 264 in 252; every field up to n_data is always there)
//!    0 signature "LPKSHHRH"        8 compatible_flags u32     12 incompatible_flags u32
//!   16 state u8 (0 offline, 1 online, 2 archived)             24 file_id [16]
//!   40 machine_id [16]            56 tail_entry_boot_id [16] 72 seqnum_id [16]
//!   88 header_size                96 arena_size              136 tail_object_offset
//!  144 n_objects                 152 n_entries              160 tail_entry_seqnum
//!  168 head_entry_seqnum         176 entry_array_offset     184 head_entry_realtime
//!  192 tail_entry_realtime       200 tail_entry_monotonic   208 n_data ...
//!
//! ObjectHeader (16 bytes, starts every object)
//!    0 type u8   1 flags u8 (data compression: 1 xz, 2 lz4, 4 zstd)   8 size u64 (whole object)
//!
//! DATA (type 1)         16 hash  24 next_hash  32 next_field  40 entry_offset
//!                       48 entry_array_offset  56 n_entries
//!                       payload "NAME=value" at 64, or at 72 in compact files
//! ENTRY (type 3)        16 seqnum  24 realtime  32 monotonic  40 boot_id [16]  56 xor_hash
//!                       items at 64: {offset u64, hash u64} each, or {offset u32} compact
//! ENTRY_ARRAY (type 6)  16 next_entry_array_offset
//!                       items at 24: entry offsets, u64 each or u32 compact
//! ```
//!
//! The header's `entry_array_offset` starts the global chain of entry arrays listing
//! every entry in file order; arrays are appended as the file grows, so each link points
//! forward. The incompatible flags say which compressions data objects may use, whether
//! hashes are keyed, and whether the file is compact (32-bit offsets); a reader must
//! refuse a file with an incompatible flag it does not know.

use crate::error::JournalError;
use crate::id128::Id128;

/// The first eight bytes of every journal file.
pub(crate) const SIGNATURE: [u8; 8] = *b"LPKSHHRH";
/// Every header revision has all fields up to `n_data`, which ends here; a smaller
/// header is not a journal file this reader (or systemd) can read.
pub(crate) const HEADER_SIZE_MIN: u64 = 208;
/// The largest header this reader knows (systemd 254 added `tail_entry_offset`); a
/// larger header is read only this far, as the format allows.
pub(crate) const HEADER_READ_SIZE: usize = 272;
/// Why a file too short to hold a header is refused (an active file journald has just
/// created looks like this for a moment).
pub(crate) const SHORT_HEADER: &str = "file shorter than a header";
/// Bytes of the common object header.
pub(crate) const OBJECT_HEADER_SIZE: u64 = 16;

pub(crate) const INCOMPATIBLE_COMPRESSED_XZ: u32 = 1 << 0;
pub(crate) const INCOMPATIBLE_COMPRESSED_LZ4: u32 = 1 << 1;
pub(crate) const INCOMPATIBLE_KEYED_HASH: u32 = 1 << 2;
pub(crate) const INCOMPATIBLE_COMPRESSED_ZSTD: u32 = 1 << 3;
pub(crate) const INCOMPATIBLE_COMPACT: u32 = 1 << 4;
/// The incompatible features this reader implements; any other bit refuses the file.
pub(crate) const INCOMPATIBLE_SUPPORTED: u32 = INCOMPATIBLE_COMPRESSED_XZ
    | INCOMPATIBLE_COMPRESSED_LZ4
    | INCOMPATIBLE_KEYED_HASH
    | INCOMPATIBLE_COMPRESSED_ZSTD
    | INCOMPATIBLE_COMPACT;

pub(crate) const OBJECT_DATA: u8 = 1;
pub(crate) const OBJECT_ENTRY: u8 = 3;
pub(crate) const OBJECT_ENTRY_ARRAY: u8 = 6;

pub(crate) const OBJECT_COMPRESSED_XZ: u8 = 1 << 0;
pub(crate) const OBJECT_COMPRESSED_LZ4: u8 = 1 << 1;
pub(crate) const OBJECT_COMPRESSED_ZSTD: u8 = 1 << 2;
pub(crate) const OBJECT_COMPRESSED_MASK: u8 =
    OBJECT_COMPRESSED_XZ | OBJECT_COMPRESSED_LZ4 | OBJECT_COMPRESSED_ZSTD;

/// Offset of a data object's payload in regular files.
pub(crate) const DATA_PAYLOAD_OFFSET: u64 = 64;
/// Offset of a data object's payload in compact files (two u32 fields come first).
pub(crate) const DATA_PAYLOAD_OFFSET_COMPACT: u64 = 72;
/// Offset of an entry's item array.
pub(crate) const ENTRY_ITEMS_OFFSET: u64 = 64;
/// Offset of an entry array's items.
pub(crate) const ENTRY_ARRAY_ITEMS_OFFSET: u64 = 24;

/// What the writer says about the file in the header's `state` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Closed cleanly; the writer may reopen it and append.
    Offline,
    /// Open for writing: entries may be appended while it is read.
    Online,
    /// Rotated: finished, nothing is appended any more.
    Archived,
    /// A state byte this reader does not know; read like an online file.
    Unknown(u8),
}

/// The header fields this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The incompatible feature flags (see the module notes).
    pub incompatible_flags: u32,
    /// The writer's state.
    pub state: FileState,
    /// Random id of this file, fixed at creation.
    pub file_id: Id128,
    /// Id of the sequence-number space; shared by files of one journald instance.
    pub seqnum_id: Id128,
    /// Size of the header in bytes.
    pub header_size: u64,
    /// Bytes of objects after the header.
    pub arena_size: u64,
    /// Offset of the last object.
    pub tail_object_offset: u64,
    /// Entries linked into the global entry-array chain.
    pub n_entries: u64,
    /// Sequence number of the first entry, 0 when empty.
    pub head_entry_seqnum: u64,
    /// Sequence number of the last entry, 0 when empty.
    pub tail_entry_seqnum: u64,
    /// Wall-clock time of the first entry, 0 when empty.
    pub head_entry_realtime: u64,
    /// Wall-clock time of the last entry, 0 when empty.
    pub tail_entry_realtime: u64,
    /// Offset of the first entry array of the global chain, 0 when empty.
    pub entry_array_offset: u64,
}

impl Header {
    /// Parses and checks a header read from the start of a file of `file_size` bytes.
    pub(crate) fn parse(bytes: &[u8], file_size: u64) -> Result<Header, JournalError> {
        if bytes.len() < HEADER_SIZE_MIN as usize || bytes[..8] != SIGNATURE {
            return Err(if bytes.len() >= 8 && bytes[..8] != SIGNATURE {
                JournalError::NotAJournal
            } else {
                JournalError::BadHeader {
                    reason: SHORT_HEADER,
                }
            });
        }
        let incompatible_flags = le32(bytes, 12);
        let unknown = incompatible_flags & !INCOMPATIBLE_SUPPORTED;
        if unknown != 0 {
            return Err(JournalError::UnsupportedFeatures { unknown });
        }
        let header = Header {
            incompatible_flags,
            state: match bytes[16] {
                0 => FileState::Offline,
                1 => FileState::Online,
                2 => FileState::Archived,
                other => FileState::Unknown(other),
            },
            file_id: id128(bytes, 24),
            seqnum_id: id128(bytes, 72),
            header_size: le64(bytes, 88),
            arena_size: le64(bytes, 96),
            tail_object_offset: le64(bytes, 136),
            n_entries: le64(bytes, 152),
            tail_entry_seqnum: le64(bytes, 160),
            head_entry_seqnum: le64(bytes, 168),
            head_entry_realtime: le64(bytes, 184),
            tail_entry_realtime: le64(bytes, 192),
            entry_array_offset: le64(bytes, 176),
        };
        if header.header_size < HEADER_SIZE_MIN || !header.header_size.is_multiple_of(8) {
            return Err(JournalError::BadHeader {
                reason: "header_size too small or not 8-byte aligned",
            });
        }
        if header.header_size > file_size {
            return Err(JournalError::BadHeader {
                reason: "header_size larger than the file",
            });
        }
        Ok(header)
    }

    /// Whether the file uses compact (32-bit offset) objects.
    pub fn is_compact(&self) -> bool {
        self.incompatible_flags & INCOMPATIBLE_COMPACT != 0
    }

    /// The end of the used part of the file, clamped to the file's size: objects must
    /// lie before it.
    pub(crate) fn arena_end(&self, file_size: u64) -> u64 {
        self.header_size
            .saturating_add(self.arena_size)
            .min(file_size)
    }

    /// The compression flags a data object may carry in this file.
    pub(crate) fn allowed_compression(&self) -> u8 {
        let mut allowed = 0;
        if self.incompatible_flags & INCOMPATIBLE_COMPRESSED_XZ != 0 {
            allowed |= OBJECT_COMPRESSED_XZ;
        }
        if self.incompatible_flags & INCOMPATIBLE_COMPRESSED_LZ4 != 0 {
            allowed |= OBJECT_COMPRESSED_LZ4;
        }
        if self.incompatible_flags & INCOMPATIBLE_COMPRESSED_ZSTD != 0 {
            allowed |= OBJECT_COMPRESSED_ZSTD;
        }
        allowed
    }
}

/// Reads a little-endian u64 at `at`; the caller guarantees the bounds.
pub(crate) fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads a little-endian u32 at `at`; the caller guarantees the bounds.
pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Reads a 128-bit id at `at`; the caller guarantees the bounds.
pub(crate) fn id128(bytes: &[u8], at: usize) -> Id128 {
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[at..at + 16]);
    Id128(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes() -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_READ_SIZE];
        bytes[..8].copy_from_slice(&SIGNATURE);
        bytes[88..96].copy_from_slice(&272u64.to_le_bytes());
        bytes
    }

    #[test]
    fn unknown_incompatible_flags_are_refused_by_name() {
        let mut bytes = header_bytes();
        bytes[12..16].copy_from_slice(&(INCOMPATIBLE_COMPACT | 1 << 7).to_le_bytes());
        let error = Header::parse(&bytes, 4096).expect_err("unknown flag");
        assert!(matches!(
            error,
            JournalError::UnsupportedFeatures { unknown: 0x80 }
        ));
        assert!(error.to_string().contains("incompatible features 0x80"));
    }

    #[test]
    fn every_known_flag_is_accepted() {
        let mut bytes = header_bytes();
        bytes[12..16].copy_from_slice(&INCOMPATIBLE_SUPPORTED.to_le_bytes());
        let header = Header::parse(&bytes, 4096).expect("known flags");
        assert!(header.is_compact());
        assert_eq!(header.allowed_compression(), OBJECT_COMPRESSED_MASK);
    }

    #[test]
    fn bad_signature_and_short_headers_are_refused() {
        let mut bytes = header_bytes();
        bytes[0] = b'X';
        assert!(matches!(
            Header::parse(&bytes, 4096),
            Err(JournalError::NotAJournal)
        ));
        let bytes = header_bytes();
        assert!(matches!(
            Header::parse(&bytes[..100], 4096),
            Err(JournalError::BadHeader { .. })
        ));
        assert!(matches!(
            Header::parse(&bytes, 200),
            Err(JournalError::BadHeader { .. })
        ));
    }
}
