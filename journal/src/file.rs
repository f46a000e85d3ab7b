//! Reading one journal file: its entries in file order, followed as the file grows.
//!
//! ## How entries are found
//! The reader walks the global entry-array chain from the header's `entry_array_offset`,
//! reading at most `n_entries` slots (the header's count of linked entries). Each link
//! must point forward and each entry must sit after the previous one with a larger
//! sequence number, so a corrupt file cannot send the reader round in a cycle, and
//! every loop is bounded by the file's size.
//!
//! ## Following a file journald is writing
//! [`JournalFile::refresh`] re-reads the header's counters. journald writes an entry's
//! data objects, then the entry, then links it into the chain and only then counts it,
//! so everything below `n_entries` should be complete. Should a read still find an
//! inconsistent object in an online file (a torn tail, or a store not yet visible on a
//! weakly ordered CPU), the reader stops before it and tries again after the next
//! refresh. It is declared corrupt only when it is still broken after a refresh that
//! shows journald has linked later entries, or once the file is no longer online.
//!
//! ## Corruption
//! A corrupt entry or data object yields one [`JournalError::Corrupt`] and the reader
//! moves to the next entry. A broken chain (an empty slot, a bad link) switches the
//! reader to scanning objects one by one from the last good entry, which finds the
//! entries the chain can no longer reach; a bad object size there ends the file.

use std::fs::File;
use std::path::Path;

use crate::cursor::Cursor;
use crate::entry::{Entry, Field, UnitFilter};
use crate::error::{Corruption, JournalError};
use crate::format::{
    self, DATA_PAYLOAD_OFFSET, DATA_PAYLOAD_OFFSET_COMPACT, ENTRY_ARRAY_ITEMS_OFFSET,
    ENTRY_ITEMS_OFFSET, FileState, HEADER_READ_SIZE, Header, OBJECT_COMPRESSED_MASK, OBJECT_DATA,
    OBJECT_ENTRY, OBJECT_ENTRY_ARRAY, OBJECT_HEADER_SIZE,
};
use crate::payload::{MAX_ENTRY_DECODE_WORK, PayloadCache, PayloadLocation, read_payload};
use crate::source::{CachedSource, ReadAt};
use crate::{MAX_ENTRY_ITEMS, MAX_FIELD_BYTES};

/// Decoded bytes one entry may hold at full length: a `MESSAGE` at the 1 MiB record cap
/// plus three more fields as long. Fields after the budget is spent are cut to
/// [`FIELD_BYTES_AFTER_BUDGET`], so an entry of a thousand compression bombs costs at
/// most about 9 MiB of memory and the work to produce it.
const MAX_ENTRY_BYTES: usize = 4 * MAX_FIELD_BYTES;
/// What each field keeps once the entry's budget is spent: enough for any field name
/// and a useful start of its value.
const FIELD_BYTES_AFTER_BUDGET: usize = 4096;
/// Bytes read beyond a value's cap for the `NAME=` before it: journald's field names
/// are at most 64 characters, so every real name fits and the value keeps its full cap.
const FIELD_NAME_ALLOWANCE: usize = 256;
/// The field the unit filter reads.
const UNIT_PREFIX: &[u8] = b"_SYSTEMD_UNIT=";
/// Bytes of an entry object before its items.
const ENTRY_FIXED_SIZE: usize = ENTRY_ITEMS_OFFSET as usize;

/// An open journal file, read entry by entry.
pub struct JournalFile<S: ReadAt = File> {
    source: CachedSource<S>,
    payloads: PayloadCache,
    header: Header,
    /// Objects must end before this offset (arena end clamped to the file size).
    end: u64,
    /// Counts refreshes, to tell a retry after a refresh from one before it.
    generation: u64,
    /// A later file of the same journal has entries: this one will not grow.
    superseded: bool,
    mode: Mode,
    array: ArrayPosition,
    /// Chain slots consumed (entries yielded, filtered out or skipped as corrupt).
    consumed: u64,
    /// Offset of the last entry consumed, 0 before the first.
    last_offset: u64,
    /// Where the object after the last consumed entry starts.
    last_end: u64,
    /// The last entry consumed.
    last: Option<Cursor>,
    /// Entries up to and including this one are skipped (resume after a cursor).
    skip_until: Option<Cursor>,
    /// A failure seen in an online file, waiting for a refresh to be confirmed.
    pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Walking the global entry-array chain.
    Chain,
    /// The chain is broken: scanning objects from `next`.
    Scan { next: u64 },
    /// Nothing more can be read from this file.
    Stopped,
}

#[derive(Debug, Clone, Copy, Default)]
struct ArrayPosition {
    /// Offset of the current entry array, 0 before the first.
    offset: u64,
    /// Slots in it.
    capacity: u64,
    /// The next slot to read.
    index: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    consumed: u64,
    last_offset: u64,
    generation: u64,
}

/// An entry object's fixed part and item offsets, before its fields are read.
#[derive(Debug, Clone)]
struct EntryHead {
    offset: u64,
    size: u64,
    cursor: Cursor,
    items: Vec<u64>,
}

/// Where the next entry is, or why there is none.
enum Located {
    At(u64),
    NoMoreNow,
    Broken(JournalError),
}

impl JournalFile<File> {
    /// Opens a journal file and reads its header.
    pub fn open(path: &Path) -> Result<JournalFile<File>, JournalError> {
        let with_path = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(with_path)?;
        JournalFile::from_source(file).map_err(|error| match error {
            JournalError::Io { source, .. } => with_path(source),
            other => other,
        })
    }
}

impl<S: ReadAt> JournalFile<S> {
    /// Reads a journal from any [`ReadAt`] source (a file, or bytes in memory).
    pub fn from_source(source: S) -> Result<JournalFile<S>, JournalError> {
        let mut source = CachedSource::new(source);
        let (header, end) = read_header(&mut source)?;
        Ok(JournalFile {
            source,
            payloads: PayloadCache::default(),
            end,
            generation: 0,
            superseded: false,
            mode: Mode::Chain,
            array: ArrayPosition::default(),
            consumed: 0,
            last_offset: 0,
            last_end: header.header_size,
            last: None,
            skip_until: None,
            pending: None,
            header,
        })
    }

    /// The header as of the last refresh.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The last entry read, filtered out or skipped: resuming after it loses nothing.
    pub fn last_cursor(&self) -> Option<Cursor> {
        self.last
    }

    /// Re-reads the header's counters and the file's size, to see entries appended
    /// since. Fails if the file changed identity under the open descriptor.
    pub fn refresh(&mut self) -> Result<(), JournalError> {
        let (header, end) = read_header(&mut self.source)?;
        if header.file_id != self.header.file_id {
            return Err(JournalError::FileReplaced {
                reason: "file id changed",
            });
        }
        if header.incompatible_flags != self.header.incompatible_flags
            || header.header_size != self.header.header_size
        {
            return Err(JournalError::FileReplaced {
                reason: "layout flags changed",
            });
        }
        self.header = header;
        self.end = end;
        self.generation += 1;
        self.payloads.clear();
        Ok(())
    }

    /// Skips every entry up to and including `cursor`'s (resuming after a persisted
    /// cursor). Whole entry arrays before it are passed over without reading their
    /// entries.
    pub fn seek_after(&mut self, cursor: &Cursor) {
        self.skip_until = Some(*cursor);
        if self.mode != Mode::Chain || self.consumed != 0 {
            return;
        }
        // An optimisation only: on any failure the skip check in `next_entry` still
        // holds, entry by entry.
        while let Ok(Some(skipped)) = self.skippable_array(cursor) {
            self.consumed += skipped;
            self.array.index = self.array.capacity;
        }
    }

    /// The next entry that passes `filter`, an error for a corrupt one (the reader
    /// moves past it), or `None` when no more entries are readable now: call
    /// [`JournalFile::refresh`] later to see new ones.
    pub fn next_entry(&mut self, filter: &UnitFilter) -> Option<Result<Entry, JournalError>> {
        loop {
            let head = match self.next_head() {
                None => return None,
                Some(Err(error)) => return Some(Err(error)),
                Some(Ok(head)) => head,
            };
            if self
                .skip_until
                .is_some_and(|cursor| !head.cursor.is_after(&cursor))
            {
                self.consume(&head);
                continue;
            }
            let mut budget = MAX_ENTRY_DECODE_WORK;
            match self.matches(&head, filter, &mut budget) {
                Ok(false) => {
                    self.consume(&head);
                    continue;
                }
                Ok(true) => {}
                Err(error) => return self.entry_failed(&head, error),
            }
            return match self.read_fields(&head, &mut budget) {
                Ok(fields) => {
                    self.consume(&head);
                    Some(Ok(Entry {
                        cursor: head.cursor,
                        fields,
                    }))
                }
                Err(error) => self.entry_failed(&head, error),
            };
        }
    }

    /// The entries readable now, as an iterator.
    pub fn entries<'a>(&'a mut self, filter: &'a UnitFilter) -> Entries<'a, S> {
        Entries { file: self, filter }
    }

    /// The position of the next entry that passes `filter`, without reading its
    /// fields; entries filtered out on the way are consumed.
    pub(crate) fn peek(&mut self, filter: &UnitFilter) -> Option<Result<Cursor, JournalError>> {
        loop {
            let head = match self.next_head()? {
                Err(error) => return Some(Err(error)),
                Ok(head) => head,
            };
            let skipped = self
                .skip_until
                .is_some_and(|cursor| !head.cursor.is_after(&cursor));
            if skipped {
                self.consume(&head);
                continue;
            }
            let mut budget = MAX_ENTRY_DECODE_WORK;
            match self.matches(&head, filter, &mut budget) {
                Ok(true) => return Some(Ok(head.cursor)),
                Ok(false) => self.consume(&head),
                Err(error) => return self.entry_failed(&head, error),
            }
        }
    }

    /// Marks the file as finished growing: a later file of its journal has entries.
    pub(crate) fn mark_superseded(&mut self) {
        self.superseded = true;
    }

    /// Whether journald may still append to this file.
    pub(crate) fn may_grow(&self) -> bool {
        !self.superseded && self.header.state != FileState::Archived
    }

    fn is_online(&self) -> bool {
        !self.superseded && matches!(self.header.state, FileState::Online | FileState::Unknown(_))
    }

    /// Finds and reads the next entry's head, handling broken chains and torn tails.
    fn next_head(&mut self) -> Option<Result<EntryHead, JournalError>> {
        let located = match self.mode {
            Mode::Chain => self.locate_in_chain(),
            Mode::Scan { next } => self.locate_by_scan(next),
            Mode::Stopped => return None,
        };
        let offset = match located {
            Located::At(offset) => offset,
            Located::NoMoreNow => return None,
            Located::Broken(error) => {
                if !self.confirmed() {
                    return None;
                }
                self.pending = None;
                self.mode = match self.mode {
                    Mode::Chain => Mode::Scan {
                        next: self.last_end,
                    },
                    _ => Mode::Stopped,
                };
                return Some(Err(error));
            }
        };
        match self.read_entry_head(offset) {
            Ok(head) => {
                if let Mode::Scan { .. } = self.mode
                    && head.cursor.seqnum > self.header.tail_entry_seqnum
                {
                    // Written but not linked yet.
                    return None;
                }
                Some(Ok(head))
            }
            Err(error) => {
                if !self.confirmed() {
                    return None;
                }
                self.pending = None;
                // The slot or object is garbage: step over it without moving the last
                // good position.
                match self.mode {
                    Mode::Chain => {
                        self.array.index += 1;
                        self.consumed += 1;
                    }
                    Mode::Scan { .. } => {
                        self.mode = match self.object_end(offset) {
                            Some(next) => Mode::Scan { next },
                            None => Mode::Stopped,
                        };
                    }
                    Mode::Stopped => {}
                }
                Some(Err(error))
            }
        }
    }

    /// Reports a failure inside an entry (a bad data object) once confirmed, and moves
    /// past the entry.
    fn entry_failed<T>(
        &mut self,
        head: &EntryHead,
        error: JournalError,
    ) -> Option<Result<T, JournalError>> {
        if !self.confirmed() {
            return None;
        }
        self.pending = None;
        self.consume(head);
        Some(Err(error))
    }

    /// Whether a failure at the current position is real corruption rather than a
    /// tail journald is still writing; records it for a retry when it is not yet.
    fn confirmed(&mut self) -> bool {
        if !self.is_online() {
            return true;
        }
        let here = (self.consumed, self.last_offset);
        match self.pending {
            Some(pending)
                if (pending.consumed, pending.last_offset) == here
                    && pending.generation < self.generation
                    && self.moved_on() =>
            {
                true
            }
            Some(pending) if (pending.consumed, pending.last_offset) == here => false,
            _ => {
                self.pending = Some(Pending {
                    consumed: self.consumed,
                    last_offset: self.last_offset,
                    generation: self.generation,
                });
                false
            }
        }
    }

    /// Whether journald has linked entries after the current position since.
    fn moved_on(&self) -> bool {
        match self.mode {
            Mode::Chain => self.header.n_entries > self.consumed + 1,
            _ => self
                .last
                .is_none_or(|last| self.header.tail_entry_seqnum > last.seqnum + 1),
        }
    }

    fn consume(&mut self, head: &EntryHead) {
        self.last_offset = head.offset;
        self.last_end = head.offset.saturating_add(align8(head.size));
        self.last = Some(head.cursor);
        match self.mode {
            Mode::Chain => {
                self.array.index += 1;
                self.consumed += 1;
            }
            Mode::Scan { .. } => {
                self.mode = Mode::Scan {
                    next: self.last_end,
                }
            }
            Mode::Stopped => {}
        }
    }

    fn item_size(&self, compact: u64, regular: u64) -> u64 {
        if self.header.is_compact() {
            compact
        } else {
            regular
        }
    }

    /// The offset of the entry in the current chain slot.
    fn locate_in_chain(&mut self) -> Located {
        if self.consumed >= self.header.n_entries {
            return Located::NoMoreNow;
        }
        if self.array.offset == 0 {
            let first = self.header.entry_array_offset;
            match self.read_array(first) {
                Ok(capacity) => {
                    self.array = ArrayPosition {
                        offset: first,
                        capacity,
                        index: 0,
                    }
                }
                Err(error) => return Located::Broken(error),
            }
        }
        let slot_size = self.item_size(4, 8);
        loop {
            let array = self.array;
            if array.index < array.capacity {
                let slot = array.offset + ENTRY_ARRAY_ITEMS_OFFSET + array.index * slot_size;
                return match self.read_offset(slot, slot_size) {
                    Ok(0) => Located::Broken(JournalError::corrupt(slot, Corruption::EmptySlot)),
                    Ok(entry) => Located::At(entry),
                    Err(kind) => Located::Broken(JournalError::corrupt(array.offset, kind)),
                };
            }
            let next = match self.read_offset(array.offset + 16, 8) {
                Ok(next) => next,
                Err(kind) => return Located::Broken(JournalError::corrupt(array.offset, kind)),
            };
            if next == 0 {
                return Located::Broken(JournalError::corrupt(
                    array.offset,
                    Corruption::ChainEndsEarly,
                ));
            }
            if next <= array.offset {
                return Located::Broken(JournalError::corrupt(
                    array.offset,
                    Corruption::EntryArrayCycle,
                ));
            }
            match self.read_array(next) {
                Ok(capacity) => {
                    self.array = ArrayPosition {
                        offset: next,
                        capacity,
                        index: 0,
                    }
                }
                Err(error) => return Located::Broken(error),
            }
        }
    }

    /// The next entry object at or after `next`, scanning object by object.
    fn locate_by_scan(&mut self, mut next: u64) -> Located {
        loop {
            if next > self.header.tail_object_offset || next >= self.end {
                self.mode = Mode::Scan { next };
                return Located::NoMoreNow;
            }
            let (kind, _, _) = match self.object_header(next) {
                Ok(header) => header,
                Err(kind) => return Located::Broken(JournalError::corrupt(next, kind)),
            };
            if kind == OBJECT_ENTRY && next > self.last_offset {
                self.mode = Mode::Scan { next };
                return Located::At(next);
            }
            match self.object_end(next) {
                Some(after) => next = after,
                None => {
                    return Located::Broken(JournalError::corrupt(
                        next,
                        Corruption::BadSize { size: 0 },
                    ));
                }
            }
        }
    }

    /// Where the object after the one at `offset` starts, if its size is sane.
    fn object_end(&mut self, offset: u64) -> Option<u64> {
        let (_, _, size) = self.object_header(offset).ok()?;
        Some(offset + align8(size)).filter(|after| *after > offset)
    }

    /// Reads and checks the common header of the object at `offset`: (type, flags,
    /// size), with the whole object inside the arena.
    fn object_header(&mut self, offset: u64) -> Result<(u8, u8, u64), Corruption> {
        if !offset.is_multiple_of(8) {
            return Err(Corruption::Misaligned);
        }
        if offset < self.header.header_size {
            return Err(Corruption::OffsetOutOfRange);
        }
        let mut bytes = [0u8; OBJECT_HEADER_SIZE as usize];
        self.source
            .read_exact(offset, &mut bytes)
            .map_err(|_| Corruption::OffsetOutOfRange)?;
        let size = format::le64(&bytes, 8);
        if size < OBJECT_HEADER_SIZE || offset.saturating_add(size) > self.end {
            return Err(Corruption::BadSize { size });
        }
        Ok((bytes[0], bytes[1], size))
    }

    /// Checks the entry array at `offset` and returns its number of slots.
    fn read_array(&mut self, offset: u64) -> Result<u64, JournalError> {
        let (kind, _, size) = self
            .object_header(offset)
            .map_err(|kind| JournalError::corrupt(offset, kind))?;
        if kind != OBJECT_ENTRY_ARRAY {
            return Err(JournalError::corrupt(
                offset,
                Corruption::WrongType {
                    expected: "an entry array",
                    found: kind,
                },
            ));
        }
        if size < ENTRY_ARRAY_ITEMS_OFFSET {
            return Err(JournalError::corrupt(offset, Corruption::BadSize { size }));
        }
        Ok((size - ENTRY_ARRAY_ITEMS_OFFSET) / self.item_size(4, 8))
    }

    /// Reads a 4- or 8-byte little-endian offset.
    fn read_offset(&mut self, at: u64, width: u64) -> Result<u64, Corruption> {
        let mut bytes = [0u8; 8];
        self.source
            .read_exact(at, &mut bytes[..width as usize])
            .map_err(|_| Corruption::Truncated)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn read_entry_head(&mut self, offset: u64) -> Result<EntryHead, JournalError> {
        let corrupt = |kind| JournalError::corrupt(offset, kind);
        let (kind, _, size) = self.object_header(offset).map_err(corrupt)?;
        if kind != OBJECT_ENTRY {
            return Err(corrupt(Corruption::WrongType {
                expected: "an entry",
                found: kind,
            }));
        }
        let item_size = self.item_size(4, 16);
        if size < ENTRY_ITEMS_OFFSET {
            return Err(corrupt(Corruption::BadSize { size }));
        }
        let items = (size - ENTRY_ITEMS_OFFSET) / item_size;
        if items > MAX_ENTRY_ITEMS {
            return Err(corrupt(Corruption::TooManyItems {
                items,
                limit: MAX_ENTRY_ITEMS,
            }));
        }
        let bytes = self
            .source
            .read_vec(offset, (ENTRY_ITEMS_OFFSET + items * item_size) as usize)
            .map_err(|_| corrupt(Corruption::Truncated))?;
        let cursor = Cursor {
            seqnum_id: self.header.seqnum_id,
            seqnum: format::le64(&bytes, 16),
            realtime: format::le64(&bytes, 24),
            monotonic: format::le64(&bytes, 32),
            boot_id: format::id128(&bytes, 40),
            xor_hash: format::le64(&bytes, 56),
        };
        if offset <= self.last_offset || self.last.is_some_and(|last| cursor.seqnum <= last.seqnum)
        {
            return Err(corrupt(Corruption::OutOfOrder));
        }
        let items = bytes[ENTRY_FIXED_SIZE..]
            .chunks_exact(item_size as usize)
            .map(|item| {
                if item_size == 4 {
                    u64::from(format::le32(item, 0))
                } else {
                    format::le64(item, 0)
                }
            })
            .collect();
        Ok(EntryHead {
            offset,
            size,
            cursor,
            items,
        })
    }

    /// Whether the entry passes the unit filter, reading only the start of each data
    /// object.
    fn matches(
        &mut self,
        head: &EntryHead,
        filter: &UnitFilter,
        budget: &mut usize,
    ) -> Result<bool, JournalError> {
        if let UnitFilter::All = filter {
            return Ok(true);
        }
        let cap = UNIT_PREFIX.len() + filter.longest() + 1;
        for &item in &head.items {
            let (bytes, truncated) = self.read_payload(item, cap, budget)?;
            if let Some(unit) = bytes.strip_prefix(UNIT_PREFIX)
                && !truncated
                && filter.allows(unit)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads every field of the entry, within the entry's byte budget.
    fn read_fields(
        &mut self,
        head: &EntryHead,
        budget: &mut usize,
    ) -> Result<Vec<Field>, JournalError> {
        let mut kept = MAX_ENTRY_BYTES;
        let mut fields = Vec::with_capacity(head.items.len());
        for &item in &head.items {
            let value_cap = MAX_FIELD_BYTES.min(kept).max(FIELD_BYTES_AFTER_BUDGET);
            let (mut bytes, truncated) =
                self.read_payload(item, value_cap + FIELD_NAME_ALLOWANCE, budget)?;
            let equals = bytes
                .iter()
                .position(|byte| *byte == b'=')
                .filter(|at| *at > 0)
                .ok_or(JournalError::corrupt(item, Corruption::BadField))?;
            let mut value = bytes.split_off(equals + 1);
            let truncated = truncated || value.len() > value_cap;
            value.truncate(value_cap);
            kept = kept.saturating_sub(value.len());
            bytes.truncate(equals);
            let name = String::from_utf8(bytes)
                .map_err(|_| JournalError::corrupt(item, Corruption::BadField))?;
            fields.push(Field {
                name,
                value,
                truncated,
            });
        }
        Ok(fields)
    }

    /// Reads the payload of the data object at `offset`, decompressed, at most `cap`
    /// bytes; the flag says whether it was longer.
    fn read_payload(
        &mut self,
        offset: u64,
        cap: usize,
        budget: &mut usize,
    ) -> Result<(Vec<u8>, bool), JournalError> {
        let corrupt = |kind| JournalError::corrupt(offset, kind);
        let (kind, flags, size) = self.object_header(offset).map_err(corrupt)?;
        if kind != OBJECT_DATA {
            return Err(corrupt(Corruption::WrongType {
                expected: "a data object",
                found: kind,
            }));
        }
        let payload_offset = if self.header.is_compact() {
            DATA_PAYLOAD_OFFSET_COMPACT
        } else {
            DATA_PAYLOAD_OFFSET
        };
        if size < payload_offset {
            return Err(corrupt(Corruption::BadSize { size }));
        }
        let compression = flags & OBJECT_COMPRESSED_MASK;
        if flags != compression
            || compression.count_ones() > 1
            || compression & !self.header.allowed_compression() != 0
        {
            return Err(corrupt(Corruption::BadCompressionFlags { flags }));
        }
        let location = PayloadLocation {
            object: offset,
            start: offset + payload_offset,
            len: size - payload_offset,
            compression,
        };
        read_payload(&mut self.source, &mut self.payloads, &location, cap, budget)
    }

    /// If the whole current entry array holds only entries up to `cursor`, returns how
    /// many unconsumed slots it has (after moving to it when needed).
    fn skippable_array(&mut self, cursor: &Cursor) -> Result<Option<u64>, JournalError> {
        if self.array.offset == 0 {
            let first = self.header.entry_array_offset;
            let capacity = self.read_array(first)?;
            self.array = ArrayPosition {
                offset: first,
                capacity,
                index: 0,
            };
        } else if self.array.index >= self.array.capacity {
            let next = self
                .read_offset(self.array.offset + 16, 8)
                .map_err(|kind| JournalError::corrupt(self.array.offset, kind))?;
            if next <= self.array.offset {
                return Ok(None);
            }
            let capacity = self.read_array(next)?;
            self.array = ArrayPosition {
                offset: next,
                capacity,
                index: 0,
            };
        }
        let remaining = self.array.capacity - self.array.index;
        if remaining == 0 || self.consumed + remaining > self.header.n_entries {
            return Ok(None);
        }
        let slot_size = self.item_size(4, 8);
        let last_slot =
            self.array.offset + ENTRY_ARRAY_ITEMS_OFFSET + (self.array.capacity - 1) * slot_size;
        let entry = self
            .read_offset(last_slot, slot_size)
            .map_err(|kind| JournalError::corrupt(last_slot, kind))?;
        let mut fixed = [0u8; ENTRY_FIXED_SIZE];
        self.source
            .read_exact(entry, &mut fixed)
            .map_err(|_| JournalError::corrupt(entry, Corruption::OffsetOutOfRange))?;
        if fixed[0] != OBJECT_ENTRY {
            return Ok(None);
        }
        let last = Cursor {
            seqnum_id: self.header.seqnum_id,
            seqnum: format::le64(&fixed, 16),
            realtime: format::le64(&fixed, 24),
            monotonic: format::le64(&fixed, 32),
            boot_id: format::id128(&fixed, 40),
            xor_hash: format::le64(&fixed, 56),
        };
        Ok((!last.is_after(cursor)).then_some(remaining))
    }
}

/// Reads and checks the header, and takes the file's size: (header, arena end).
fn read_header<S: ReadAt>(source: &mut CachedSource<S>) -> Result<(Header, u64), JournalError> {
    let io = |source| JournalError::Io {
        path: "journal file".into(),
        source,
    };
    let size = source.refresh().map_err(io)?;
    let mut bytes = vec![0u8; (HEADER_READ_SIZE as u64).min(size) as usize];
    source.read_exact(0, &mut bytes).map_err(io)?;
    let header = Header::parse(&bytes, size)?;
    let end = header.arena_end(size);
    source.set_limit(end);
    Ok((header, end))
}

fn align8(size: u64) -> u64 {
    size.saturating_add(7) & !7
}

/// The entries of a [`JournalFile`] readable now; see [`JournalFile::next_entry`].
pub struct Entries<'a, S: ReadAt> {
    file: &'a mut JournalFile<S>,
    filter: &'a UnitFilter,
}

impl<S: ReadAt> Iterator for Entries<'_, S> {
    type Item = Result<Entry, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.file.next_entry(self.filter)
    }
}
