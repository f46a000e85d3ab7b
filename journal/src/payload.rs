//! Data-object payloads: read plain or decompressed, within a per-entry budget of
//! decompression work, with a small cache of decoded payloads.
//!
//! journald stores each distinct field once and lets every entry that has it point to
//! that one data object, so a long message repeated by many entries is one object: the
//! cache decodes it once. The budget bounds what one entry can make the reader do:
//! a crafted entry that points at many compression bombs is refused once it has cost
//! [`MAX_ENTRY_DECODE_WORK`], instead of costing gigabytes of decoding.

use crate::MAX_FIELD_BYTES;
use crate::compress;
use crate::error::{Corruption, JournalError};
use crate::source::{CachedSource, ReadAt};

/// Decompression work one entry may cost: twice journald's largest entry (13 MiB), as a
/// zstd field costs its window on top of its bytes. Real entries stay far below.
pub(crate) const MAX_ENTRY_DECODE_WORK: usize = 32 * 1024 * 1024;
/// Compressed bytes read for one field. journald stores a field compressed only when
/// that is smaller, so the first 1 MiB of any real field decodes from less than twice
/// that much input, even when its data does not compress.
const MAX_COMPRESSED_INPUT_BYTES: usize = 2 * MAX_FIELD_BYTES;
/// Decoded payloads kept per open file (at most about 4 MiB): enough for the long
/// fields a run of entries shares.
const CACHED_PAYLOADS: usize = 4;

/// Where a data object's payload is and how it is stored.
pub(crate) struct PayloadLocation {
    /// Offset of the data object (for errors and the cache).
    pub(crate) object: u64,
    /// Offset of the payload.
    pub(crate) start: u64,
    /// Payload bytes as stored.
    pub(crate) len: u64,
    /// The object's compression flag (0 for plain).
    pub(crate) compression: u8,
}

struct Cached {
    object: u64,
    cap: usize,
    bytes: Vec<u8>,
    truncated: bool,
    last_use: u64,
}

/// Recently decoded compressed payloads, by object offset.
#[derive(Default)]
pub(crate) struct PayloadCache {
    entries: Vec<Cached>,
    clock: u64,
}

impl PayloadCache {
    /// Forgets everything (at a refresh: what was read may have been mid-write).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    fn get(&mut self, object: u64, cap: usize) -> Option<(Vec<u8>, bool)> {
        self.clock += 1;
        let cached = self
            .entries
            .iter_mut()
            .find(|cached| cached.object == object && (cached.cap >= cap || !cached.truncated))?;
        cached.last_use = self.clock;
        let len = cached.bytes.len().min(cap);
        Some((
            cached.bytes[..len].to_vec(),
            cached.truncated || cached.bytes.len() > cap,
        ))
    }

    fn put(&mut self, object: u64, cap: usize, bytes: &[u8], truncated: bool) {
        let cached = Cached {
            object,
            cap,
            bytes: bytes.to_vec(),
            truncated,
            last_use: self.clock,
        };
        if let Some(slot) = self.entries.iter().position(|c| c.object == object) {
            self.entries[slot] = cached;
        } else if self.entries.len() < CACHED_PAYLOADS {
            self.entries.push(cached);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|c| c.last_use) {
            *oldest = cached;
        }
    }
}

/// Reads a payload, decompressed, at most `cap` bytes, and whether it was longer.
/// Decompression is charged to `budget`; an entry whose budget is spent gets an error.
pub(crate) fn read_payload<S: ReadAt>(
    source: &mut CachedSource<S>,
    cache: &mut PayloadCache,
    at: &PayloadLocation,
    cap: usize,
    budget: &mut usize,
) -> Result<(Vec<u8>, bool), JournalError> {
    let corrupt = |kind| JournalError::corrupt(at.object, kind);
    if at.compression == 0 {
        let len = at.len.min(cap as u64) as usize;
        let bytes = source
            .read_vec(at.start, len)
            .map_err(|_| corrupt(Corruption::Truncated))?;
        return Ok((bytes, at.len > cap as u64));
    }
    if let Some(hit) = cache.get(at.object, cap) {
        return Ok(hit);
    }
    if *budget == 0 {
        return Err(corrupt(Corruption::DecodeBudget {
            limit: MAX_ENTRY_DECODE_WORK,
        }));
    }
    let len = at.len.min(MAX_COMPRESSED_INPUT_BYTES as u64) as usize;
    let input = source
        .read_vec(at.start, len)
        .map_err(|_| corrupt(Corruption::Truncated))?;
    let complete = len as u64 == at.len;
    let decoded = compress::decompress(at.compression, &input, cap, complete).map_err(corrupt)?;
    *budget = budget.saturating_sub(decoded.work);
    cache.put(at.object, cap, &decoded.bytes, decoded.truncated);
    Ok((decoded.bytes, decoded.truncated))
}
