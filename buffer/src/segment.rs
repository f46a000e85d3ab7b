//! Record framing inside a segment file: encoding and the recovery scan.

use super::MAX_RECORD_BYTES;

/// Bytes before each payload: length (4), CRC-32 (4), timestamp (8), items (4).
pub const HEADER_BYTES: u64 = 20;

/// Writes the header of a record into the first [`HEADER_BYTES`] of `framed`, whose
/// rest is the payload.
pub(super) fn frame_in_place(framed: &mut [u8], timestamp_ms: i64, items: u32) {
    let (header, payload) = framed.split_at_mut(HEADER_BYTES as usize);
    // Callers check the size against MAX_RECORD_BYTES first.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let timestamp = timestamp_ms.to_le_bytes();
    let items = items.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&timestamp);
    crc.update(&items);
    crc.update(payload);
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    header[8..16].copy_from_slice(&timestamp);
    header[16..].copy_from_slice(&items);
}

/// Checks a record read back (`framed`: header and payload) against what the index
/// says of it and against its checksum; why it does not match, if it does not.
pub(super) fn check_record(framed: &[u8], timestamp_ms: i64, items: u32) -> Result<(), String> {
    let Some((header, payload)) = framed.split_at_checked(HEADER_BYTES as usize) else {
        return Err("shorter than a record header".to_owned());
    };
    let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
    if field(0..4)
        != u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes()
    {
        return Err("the length does not match the index".to_owned());
    }
    if field(8..16) != timestamp_ms.to_le_bytes() || field(16..20) != items.to_le_bytes() {
        return Err("the header does not match the index".to_owned());
    }
    if field(4..8) != crc32fast::hash(&framed[8..]).to_le_bytes() {
        return Err("bad checksum".to_owned());
    }
    Ok(())
}

/// How a scan ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// The last record is cut short.
    Torn,
    /// A record has a bad checksum or an impossible length.
    Corrupt,
}

/// What a scan found.
#[derive(Debug)]
pub(super) struct Scan {
    /// Bytes of valid records from the start.
    pub valid_len: u64,
    /// Start offset, timestamp and item count of each valid record.
    pub records: Vec<(u64, i64, u32)>,
    pub end: ScanEnd,
}

/// Walks a segment's bytes and stops at the first record that is incomplete or damaged.
pub(super) fn scan_segment(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let end = loop {
        let rest = &bytes[offset..];
        if rest.is_empty() {
            break ScanEnd::Clean;
        }
        if rest.len() < HEADER_BYTES as usize {
            break ScanEnd::Torn;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len > MAX_RECORD_BYTES {
            break ScanEnd::Corrupt;
        }
        let total = HEADER_BYTES as usize + len as usize;
        if rest.len() < total {
            break ScanEnd::Torn;
        }
        let stored_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if crc32fast::hash(&rest[8..total]) != stored_crc {
            break ScanEnd::Corrupt;
        }
        let mut timestamp = [0u8; 8];
        timestamp.copy_from_slice(&rest[8..16]);
        let items = u32::from_le_bytes([rest[16], rest[17], rest[18], rest[19]]);
        records.push((offset as u64, i64::from_le_bytes(timestamp), items));
        offset += total;
    };
    Scan {
        valid_len: offset as u64,
        records,
        end,
    }
}
