//! The per-pipeline disk buffer: an append-only queue of records in segment files,
//! bounded by bytes and age, that survives `kill -9` and restarts with at-least-once
//! delivery. Each pipeline has its own directory, so a dead backend fills only its own
//! buffer and never slows another pipeline. A record's payload is opaque bytes: the
//! buffer serves every signal (metrics, logs, traces) alike.
//!
//! # On-disk format
//!
//! A buffer directory holds segment files `<id>.seg` (`id` a zero-padded, strictly
//! increasing `u64`) and one `ack` file. A segment is a sequence of records:
//!
//! ```text
//! +---------------+---------------+-------------------+---------------+------------------+
//! | length: u32LE | crc32: u32LE  | timestamp: i64LE  | items: u32LE  | payload (length) |
//! +---------------+---------------+-------------------+---------------+------------------+
//! ```
//!
//! `crc32` (IEEE) covers the timestamp, the item count and the payload. `timestamp` is
//! the record's age reference in Unix milliseconds (its oldest sample); `items` is how
//! many samples the payload holds, so drops can be counted in samples without reading
//! payloads. `ack` holds the position
//! (segment id, byte offset) of the first record not yet acknowledged, followed by a
//! CRC of those 16 bytes; it is replaced atomically (write, fsync, rename).
//!
//! # Invariants
//!
//! - Records are read in the order they were pushed; a position only moves forward.
//! - Nothing unacknowledged is lost by a restart: delivery resumes at the persisted ack
//!   position, which lies between the last explicit [`DiskBuffer::persist_ack`] and the
//!   in-memory ack (the ack is also persisted before a delivered segment is deleted).
//!   Acknowledged records may thus be delivered again: at-least-once, never
//!   at-most-once.
//! - `bytes()` never exceeds the configured maximum after a push returns: with
//!   [`WhenFull::DropOldest`] whole oldest segments are deleted (their unacknowledged
//!   records counted as dropped); with [`WhenFull::DropNewest`] the push is refused and
//!   the record handed back.
//! - Records older than the maximum age are skipped when read and counted as dropped.
//! - A record may belong to a [`Stream`]; that is kept in memory only, not in the format
//!   above, so records found on disk at open belong to none.
//!
//! # Crashes and damage
//!
//! Writes go to the kernel with `write(2)` before `push` returns, so a killed process
//! loses nothing it pushed (surviving power loss needs [`DiskBuffer::sync`]). On open,
//! every segment is scanned: a record cut short at the end of the newest segment (a
//! torn write) is truncated away; a record with a bad checksum or impossible length
//! ends its segment there (the rest is counted as corrupt and never delivered, since
//! lengths after it cannot be trusted); a missing segment is simply absent, and an ack
//! pointing into it moves to the next segment that exists. Opening never fails because
//! of damaged data, only because of I/O errors.
//!
//! # Write and read failures
//!
//! A full disk (`ENOSPC`), a file-size limit (`EFBIG`) or an I/O error can fail an
//! append after part of the record reached the file. The index never runs ahead of the
//! file: it gains a record only after the whole record was written. After a failed
//! append the file is cut back to its last whole record, the segment takes no more
//! appends (the next push starts a new segment, so a segment whose cut failed is never
//! appended to, and a delivered segment can be deleted to free space), and the push is
//! refused with the record handed back ([`PushError::Failed`]). Pushes after the
//! failure are stored and delivered as usual once there is room again. Segments that
//! are delivered are deleted even when the ack position cannot be persisted (a full
//! disk has no room for it either): a restart then resumes at the next segment that
//! exists, delivering again at most what remains.
//!
//! Every read is checked: the record's header must match the index and its checksum its
//! bytes. A record damaged after it was written (or unreadable) is skipped, counted in
//! [`Dropped::corrupt`] and reported ([`BufferError::Corrupt`]); reading goes on with
//! the next record.

mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kaas_pipeline::buffer::{ValidatedBuffer, WhenFull};

pub use segment::HEADER_BYTES;
use segment::{ScanEnd, check_record, frame_in_place, scan_segment};
use writer::{SegmentOpener, SegmentWriter};

/// Largest segment file. Small enough that dropping the oldest segment frees a modest
/// share of the buffer, large enough that file counts stay low.
pub const MAX_SEGMENT_BYTES: u64 = 8 << 20;
/// Largest record accepted, to bound memory when reading a damaged file.
pub const MAX_RECORD_BYTES: u32 = 64 << 20;

/// Which producer a record came from, as the producer names it (a scrape loop uses a
/// hash of its target). A stream's records hold only that producer's series, so a
/// reader may send them whole, one stream after another, and still keep every series'
/// samples in order. Kept in memory only: records found on disk when the buffer is
/// opened have none, and readers treat them as mixed.
pub type Stream = u64;

/// Where a record starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment id.
    pub segment: u64,
    /// Byte offset within the segment.
    pub offset: u64,
}

/// One buffered record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Age reference, Unix milliseconds.
    pub timestamp_ms: i64,
    /// How many items (samples) the payload holds; counted when the record is dropped.
    pub items: u32,
    /// The payload, encoded as its signal encodes records.
    pub payload: Vec<u8>,
}

/// The buffer's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes on disk, headers included.
    pub max_bytes: u64,
    /// Oldest record delivered.
    pub max_age: Duration,
    /// What a push does when the buffer is full.
    pub when_full: WhenFull,
}

impl From<&ValidatedBuffer> for Limits {
    fn from(buffer: &ValidatedBuffer) -> Self {
        Self {
            max_bytes: buffer.max_bytes.get(),
            max_age: buffer.max_age,
            when_full: buffer.when_full,
        }
    }
}

/// Why the buffer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A file operation failed.
    #[error("buffer {dir}: {operation}: {source}")]
    Io {
        /// The buffer directory.
        dir: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record read back does not match what was written (damaged on disk since, or
    /// unreadable); it was skipped and its items counted in [`Dropped::corrupt`].
    #[error(
        "buffer {dir}: the record at segment {segment}, offset {offset} is damaged ({reason}); its {items} samples are dropped"
    )]
    Corrupt {
        /// The buffer directory.
        dir: PathBuf,
        /// The segment id.
        segment: u64,
        /// The record's offset in the segment.
        offset: u64,
        /// How many items it held.
        items: u32,
        /// What was wrong.
        reason: String,
    },
}

/// A push that was not stored; either way the record is handed back, so the caller
/// decides what becomes of it and nothing is lost silently.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The buffer is full ([`WhenFull::DropNewest`]) or the record can never fit.
    #[error("buffer full: record of {} bytes refused", .0.payload.len())]
    Full(Record),
    /// Writing failed (a full disk, an I/O error); the buffer took back whatever part
    /// of the record reached the file and stays usable.
    #[error("{source}; record of {} bytes not stored", .record.payload.len())]
    Failed {
        /// The record, as given.
        record: Record,
        /// Why writing failed.
        #[source]
        source: BufferError,
    },
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting for delivery.
    pub records: u64,
    /// Bytes cut from the end of the newest segment (a torn write).
    pub torn_bytes: u64,
    /// Bytes after a damaged record, never delivered.
    pub corrupt_bytes: u64,
}

/// Items (samples) dropped since the buffer was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Dropped because the buffer was full.
    pub full: u64,
    /// Dropped because they were older than the maximum age.
    pub expired: u64,
    /// Dropped because their record was damaged when read back.
    pub corrupt: u64,
}

/// Start offset, timestamp, item count and stream of a record.
type RecordIndex = (u64, i64, u32, Option<Stream>);

#[derive(Debug)]
struct SegmentInfo {
    id: u64,
    /// Bytes of valid records.
    len: u64,
    /// Start offset, timestamp, item count and stream of each record; lets drops be
    /// counted and expired records skipped without reading files.
    records: Vec<RecordIndex>,
}

/// One pipeline's disk buffer. Not shared between threads by itself: the pipeline puts
/// it behind a lock.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    limits: Limits,
    segments: VecDeque<SegmentInfo>,
    writer: Option<Box<dyn SegmentWriter>>,
    /// Opens segment files for appending.
    opener: SegmentOpener,
    /// The newest segment takes no more appends (an append to it failed).
    sealed: bool,
    /// Next record to read.
    read: Position,
    /// First record not acknowledged.
    acked: Position,
    /// `acked` as last written to disk.
    persisted_ack: Position,
    dropped: Dropped,
    /// The segment last read from, kept open for sequential reads.
    reader: Option<(u64, File)>,
    /// When to start a new segment.
    segment_bytes: u64,
}

fn io_error(dir: &Path, operation: &'static str) -> impl FnOnce(io::Error) -> BufferError {
    let dir = dir.to_owned();
    move |source| BufferError::Io {
        dir,
        operation,
        source,
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, recovering whatever a previous process
    /// left there.
    pub fn open(dir: impl Into<PathBuf>, limits: Limits) -> Result<(Self, Recovery), BufferError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir, "create directory"))?;
        let mut ids: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_error(&dir, "list directory"))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let acked = read_ack(&dir).unwrap_or_default();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let newest = ids.last().copied();
        for id in ids {
            let path = segment_path(&dir, id);
            let bytes = fs::read(&path).map_err(io_error(&dir, "read segment"))?;
            let scan = scan_segment(&bytes);
            match scan.end {
                ScanEnd::Clean => {}
                ScanEnd::Torn if Some(id) == newest => {
                    recovery.torn_bytes += bytes.len() as u64 - scan.valid_len;
                }
                ScanEnd::Torn | ScanEnd::Corrupt => {
                    recovery.corrupt_bytes += bytes.len() as u64 - scan.valid_len;
                }
            }
            if scan.valid_len < bytes.len() as u64 {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&dir, "open segment"))?;
                file.set_len(scan.valid_len)
                    .map_err(io_error(&dir, "truncate damaged segment"))?;
            }
            segments.push_back(SegmentInfo {
                id,
                len: scan.valid_len,
                records: scan
                    .records
                    .into_iter()
                    .map(|(offset, timestamp, items)| (offset, timestamp, items, None))
                    .collect(),
            });
        }
        let mut buffer = Self {
            dir,
            limits,
            segments,
            writer: None,
            opener: SegmentOpener::default(),
            sealed: false,
            read: acked,
            acked,
            persisted_ack: acked,
            dropped: Dropped::default(),
            reader: None,
            segment_bytes: MAX_SEGMENT_BYTES.min((limits.max_bytes / 4).max(HEADER_BYTES + 1)),
        };
        buffer.normalize_positions();
        // Segments wholly before the ack are delivered; remove them.
        buffer.remove_acked_segments()?;
        recovery.records = buffer.pending_records();
        Ok((buffer, recovery))
    }

    /// Appends a record. When full, [`WhenFull::DropOldest`] deletes whole oldest
    /// segments to make room; [`WhenFull::DropNewest`] refuses and returns the record.
    /// A failed write returns the record too (see the module documentation).
    pub fn push(&mut self, record: Record) -> Result<(), PushError> {
        self.push_in_stream(record, None)
    }

    /// Appends a record that belongs to `stream` (see [`Stream`]); otherwise as
    /// [`Self::push`].
    pub fn push_in_stream(
        &mut self,
        record: Record,
        stream: Option<Stream>,
    ) -> Result<(), PushError> {
        let mut framed = vec![0; HEADER_BYTES as usize];
        framed.extend_from_slice(&record.payload);
        match self.push_framed(&mut framed, record.timestamp_ms, record.items, stream) {
            Ok(true) => Ok(()),
            Ok(false) => Err(PushError::Full(record)),
            Err(source) => Err(PushError::Failed { record, source }),
        }
    }

    /// Appends a record the caller assembled in its own buffer: [`HEADER_BYTES`] of room
    /// (overwritten here) followed by the payload, so a producer can compress straight
    /// into the bytes that are written. `Ok(false)` when refused, as [`Self::push`]
    /// refuses; an error when writing failed (the buffer took back what reached the
    /// file). Either way the caller keeps its bytes.
    pub fn push_framed(
        &mut self,
        framed: &mut [u8],
        timestamp_ms: i64,
        items: u32,
        stream: Option<Stream>,
    ) -> Result<bool, BufferError> {
        let size = framed.len() as u64;
        if size < HEADER_BYTES {
            return Ok(false);
        }
        if size - HEADER_BYTES > u64::from(MAX_RECORD_BYTES) || size > self.limits.max_bytes {
            return Ok(false);
        }
        while self.bytes().saturating_add(size) > self.limits.max_bytes {
            match self.limits.when_full {
                WhenFull::DropNewest => return Ok(false),
                WhenFull::DropOldest => {
                    if !self.drop_oldest_segment()? {
                        return Ok(false);
                    }
                }
            }
        }
        let segment_full = self.sealed
            || self
                .segments
                .back()
                .is_none_or(|s| s.len > 0 && s.len + size > self.segment_bytes);
        if segment_full || self.writer.is_none() {
            self.open_writer(segment_full)?;
        }
        frame_in_place(framed, timestamp_ms, items);
        let written = match self.writer.as_mut() {
            Some(writer) => writer.write_all(framed),
            None => Err(io::Error::other("no open segment")),
        };
        if let Err(source) = written {
            self.take_back_failed_append();
            return Err(BufferError::Io {
                dir: self.dir.clone(),
                operation: "append record",
                source,
            });
        }
        // Only a record that is wholly in the file enters the index.
        let segment = self.segments.back_mut().ok_or_else(|| BufferError::Io {
            dir: self.dir.clone(),
            operation: "append",
            source: io::Error::other("no segment"),
        })?;
        segment
            .records
            .push((segment.len, timestamp_ms, items, stream));
        segment.len += size;
        self.normalize_positions();
        Ok(true)
    }

    /// After a failed append: cuts the file back to its last whole record and closes it.
    /// A segment that holds records, or whose cut failed, takes no more appends; an
    /// empty one that was cut cleanly is reused, so a disk that stays full does not
    /// leave a trail of empty segments.
    fn take_back_failed_append(&mut self) {
        let Some(segment) = self.segments.back() else {
            self.writer = None;
            return;
        };
        let cut = self
            .writer
            .take()
            .is_some_and(|writer| writer.set_len(segment.len).is_ok());
        self.sealed = segment.len > 0 || !cut;
    }

    /// What the next [`Self::read_next`] with the same `now_ms` returns, without
    /// reading it: the record's item count and stream. Expired records before it are
    /// skipped and counted, as [`Self::read_next`] would.
    pub fn peek_next(&mut self, now_ms: i64) -> Option<(u32, Option<Stream>)> {
        self.skip_expired(now_ms)
            .map(|((_, _, items, stream), _)| (items, stream))
    }

    /// Reads the next unread record, skipping (and counting) records older than the
    /// maximum age relative to `now_ms`. `None` when everything has been read. A record
    /// that fails its check is skipped, counted in [`Dropped::corrupt`] and returned as
    /// [`BufferError::Corrupt`]; the next call reads on after it.
    pub fn read_next(&mut self, now_ms: i64) -> Result<Option<(Position, Record)>, BufferError> {
        let Some(((offset, timestamp_ms, items, _), next_offset)) = self.skip_expired(now_ms)
        else {
            return Ok(None);
        };
        let position = self.read;
        self.read = Position {
            segment: position.segment,
            offset: next_offset,
        };
        match self.read_payload(position.segment, offset, next_offset, timestamp_ms, items) {
            Ok(payload) => Ok(Some((
                position,
                Record {
                    timestamp_ms,
                    items,
                    payload,
                },
            ))),
            Err(reason) => {
                self.reader = None;
                self.dropped.corrupt = self.dropped.corrupt.saturating_add(u64::from(items));
                Err(BufferError::Corrupt {
                    dir: self.dir.clone(),
                    segment: position.segment,
                    offset,
                    items,
                    reason,
                })
            }
        }
    }

    /// Moves the read position past records older than the maximum age (counting
    /// them); returns the index entry of the record there and where that record ends.
    fn skip_expired(&mut self, now_ms: i64) -> Option<(RecordIndex, u64)> {
        let max_age_ms = i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX);
        loop {
            self.normalize_read();
            let segment = self.segments.iter().find(|s| s.id == self.read.segment)?;
            let index = segment
                .records
                .binary_search_by_key(&self.read.offset, |(offset, _, _, _)| *offset)
                .ok()?;
            let entry = segment.records[index];
            let next_offset = segment
                .records
                .get(index + 1)
                .map_or(segment.len, |(o, _, _, _)| *o);
            let segment_id = segment.id;
            if now_ms.saturating_sub(entry.1) <= max_age_ms {
                return Some((entry, next_offset));
            }
            self.dropped.expired = self.dropped.expired.saturating_add(u64::from(entry.2));
            self.read = Position {
                segment: segment_id,
                offset: next_offset,
            };
        }
    }

    /// Marks every record before `next` as delivered (in memory; see
    /// [`Self::persist_ack`]) and deletes segments that are wholly delivered.
    pub fn ack(&mut self, next: Position) -> Result<(), BufferError> {
        if next > self.acked {
            self.acked = next;
        }
        self.normalize_positions();
        self.remove_acked_segments()
    }

    /// Writes the ack position to disk so a restart does not deliver again what was
    /// acknowledged. Cheap to call often: it writes only when the position moved.
    pub fn persist_ack(&mut self) -> Result<(), BufferError> {
        if self.acked == self.persisted_ack {
            return Ok(());
        }
        write_ack(&self.dir, self.acked)?;
        self.persisted_ack = self.acked;
        Ok(())
    }

    /// Moves the read position back to the first unacknowledged record, so records read
    /// but not delivered (a failed send) are read again.
    pub fn rewind(&mut self) {
        self.read = self.acked;
    }

    /// Flushes segment data to stable storage (survives power loss, not just a crash).
    pub fn sync(&mut self) -> Result<(), BufferError> {
        if let Some(writer) = &self.writer {
            writer
                .sync_data()
                .map_err(io_error(&self.dir, "sync segment"))?;
        }
        Ok(())
    }

    /// Where the next read starts; acknowledging this acknowledges everything read.
    pub fn read_position(&self) -> Position {
        self.read
    }

    /// Bytes on disk, headers included.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Records not yet acknowledged.
    pub fn pending_records(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                s.records
                    .iter()
                    .filter(|(offset, _, _, _)| {
                        Position {
                            segment: s.id,
                            offset: *offset,
                        } >= self.acked
                    })
                    .count() as u64
            })
            .sum()
    }

    /// Timestamp of the oldest record not yet acknowledged.
    pub fn oldest_timestamp_ms(&self) -> Option<i64> {
        self.segments.iter().find_map(|s| {
            s.records
                .iter()
                .find(|(offset, _, _, _)| {
                    Position {
                        segment: s.id,
                        offset: *offset,
                    } >= self.acked
                })
                .map(|(_, ts, _, _)| *ts)
        })
    }

    /// Items dropped since opening (or since the last [`Self::take_dropped`]).
    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// Returns the drop counters and resets them, for callers that keep their own
    /// cumulative counters.
    pub fn take_dropped(&mut self) -> Dropped {
        std::mem::take(&mut self.dropped)
    }

    fn open_writer(&mut self, new_segment: bool) -> Result<(), BufferError> {
        let id = match self.segments.back() {
            Some(last) if !new_segment => last.id,
            Some(last) => last.id + 1,
            // Never reuse the id of a segment the ack position already points past.
            None if self.acked.offset > 0 => self.acked.segment + 1,
            None => self.acked.segment.max(1),
        };
        let path = segment_path(&self.dir, id);
        let file = self
            .opener
            .open(&path)
            .map_err(io_error(&self.dir, "open segment for appending"))?;
        if self.segments.back().is_none_or(|s| s.id != id) {
            self.segments.push_back(SegmentInfo {
                id,
                len: 0,
                records: Vec::new(),
            });
        }
        self.writer = Some(file);
        self.sealed = false;
        Ok(())
    }

    /// Deletes the oldest segment, counting its unacknowledged records as dropped.
    /// Returns false when there is nothing that can be deleted.
    fn drop_oldest_segment(&mut self) -> Result<bool, BufferError> {
        let Some(oldest) = self.segments.front() else {
            return Ok(false);
        };
        let id = oldest.id;
        let unacked: u64 = oldest
            .records
            .iter()
            .filter(|(offset, _, _, _)| {
                Position {
                    segment: id,
                    offset: *offset,
                } >= self.acked
            })
            .map(|(_, _, items, _)| u64::from(*items))
            .sum();
        self.dropped.full = self.dropped.full.saturating_add(unacked);
        if self.segments.len() == 1 {
            self.writer = None;
        }
        self.reader = None;
        fs::remove_file(segment_path(&self.dir, id))
            .map_err(io_error(&self.dir, "delete oldest segment"))?;
        self.segments.pop_front();
        let next = Position {
            segment: id + 1,
            offset: 0,
        };
        if self.acked < next {
            self.acked = next;
        }
        if self.read < next {
            self.read = next;
        }
        self.normalize_positions();
        Ok(true)
    }

    /// Deletes segments every record of which is acknowledged, except the one being
    /// written to.
    fn remove_acked_segments(&mut self) -> Result<(), BufferError> {
        let deletable = self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|front| self.acked.segment > front.id);
        // The ack goes to disk first, so a restart does not deliver again what it
        // covers. If that fails (a full disk has no room for it either) the segments
        // are deleted all the same, to free the space: a restart then finds the older
        // persisted position's segment gone and resumes at the next one that exists.
        let persisted = if deletable {
            self.persist_ack()
        } else {
            Ok(())
        };
        while self.segments.len() > 1 {
            let Some(front) = self.segments.front() else {
                break;
            };
            if self.acked.segment <= front.id {
                break;
            }
            self.reader = None;
            fs::remove_file(segment_path(&self.dir, front.id))
                .map_err(io_error(&self.dir, "delete delivered segment"))?;
            self.segments.pop_front();
        }
        persisted
    }

    /// A position at the end of a segment, or in a segment that no longer exists, means
    /// the start of the next existing segment.
    fn normalize_positions(&mut self) {
        self.acked = self.normalize(self.acked);
        self.read = self.normalize(self.read).max(self.acked);
    }

    fn normalize_read(&mut self) {
        self.read = self.normalize(self.read);
    }

    fn normalize(&self, position: Position) -> Position {
        let mut position = position;
        for segment in &self.segments {
            if segment.id < position.segment {
                continue;
            }
            if segment.id > position.segment {
                return Position {
                    segment: segment.id,
                    offset: 0,
                };
            }
            if position.offset < segment.len
                || self.segments.back().map(|s| s.id) == Some(segment.id)
            {
                return position;
            }
            // At the end of a finished segment: continue with the next one.
            position = Position {
                segment: segment.id + 1,
                offset: 0,
            };
        }
        position
    }

    /// The payload of the record at `start..end` of `segment`, checked against the index
    /// (length, timestamp, items) and its checksum; why not, when it fails.
    fn read_payload(
        &mut self,
        segment: u64,
        start: u64,
        end: u64,
        timestamp_ms: i64,
        items: u32,
    ) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek, SeekFrom};
        if self.reader.as_ref().is_none_or(|(id, _)| *id != segment) {
            let file = File::open(segment_path(&self.dir, segment))
                .map_err(|e| format!("cannot open the segment: {e}"))?;
            self.reader = Some((segment, file));
        }
        let Some((_, file)) = self.reader.as_mut() else {
            return Err("no open segment".to_owned());
        };
        file.seek(SeekFrom::Start(start))
            .map_err(|e| format!("cannot seek: {e}"))?;
        let len = usize::try_from(end.saturating_sub(start))
            .map_err(|_| "the record is too large".to_owned())?;
        let mut framed = vec![0; len];
        file.read_exact(&mut framed)
            .map_err(|e| format!("cannot read: {e}"))?;
        check_record(&framed, timestamp_ms, items)?;
        framed.drain(..HEADER_BYTES as usize);
        Ok(framed)
    }
}

fn read_ack(dir: &Path) -> Option<Position> {
    let bytes = fs::read(dir.join("ack")).ok()?;
    let bytes: [u8; 20] = bytes.try_into().ok()?;
    let (body, crc) = bytes.split_at(16);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let segment = u64::from_le_bytes(body[..8].try_into().ok()?);
    let offset = u64::from_le_bytes(body[8..].try_into().ok()?);
    Some(Position { segment, offset })
}

fn write_ack(dir: &Path, position: Position) -> Result<(), BufferError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&position.segment.to_le_bytes());
    bytes.extend_from_slice(&position.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temp = dir.join("ack.tmp");
    let mut file = File::create(&temp).map_err(io_error(dir, "create ack"))?;
    file.write_all(&bytes).map_err(io_error(dir, "write ack"))?;
    file.sync_all().map_err(io_error(dir, "sync ack"))?;
    fs::rename(&temp, dir.join("ack")).map_err(io_error(dir, "replace ack"))?;
    Ok(())
}
