//! A minimal journal-file writer for tests: the layouts systemd-journal-remote 252 does
//! not write (LZ4 and xz payloads) and the hand-made corrupt fixtures. It writes only
//! what a reader walking the entry-array chain needs: header, data objects, entries
//! and entry arrays (no hash tables or field objects, whose offsets stay 0).

pub const HEADER_SIZE: usize = 272;
pub const COMPACT: u32 = 1 << 4;
pub const ZSTD: u32 = 1 << 3;
pub const LZ4: u32 = 1 << 1;
pub const XZ: u32 = 1 << 0;

/// A data object's payload as stored: compression flag (0, 1 xz, 2 lz4, 4 zstd) and
/// bytes.
#[derive(Clone)]
pub struct Payload {
    pub flags: u8,
    pub bytes: Vec<u8>,
}

impl Payload {
    pub fn plain(field: &[u8]) -> Payload {
        Payload {
            flags: 0,
            bytes: field.to_vec(),
        }
    }
}

/// Builds a file in memory.
pub struct Writer {
    pub bytes: Vec<u8>,
    /// An entry array allocated before the entries, as journald allocates its first
    /// one: (offset, capacity).
    early_array: Option<(u64, usize)>,
    pub incompatible: u32,
    pub state: u8,
    pub entries: Vec<u64>,
    /// Sequence number of the last entry written (set it to start elsewhere than 1).
    pub seqnum: u64,
    pub file_id: [u8; 16],
    pub seqnum_id: [u8; 16],
    /// (seqnum, realtime) of the first and last entries.
    head: Option<(u64, u64)>,
    tail: Option<(u64, u64)>,
    tail_object: u64,
}

impl Writer {
    pub fn new(incompatible: u32) -> Writer {
        let mut bytes = vec![0u8; HEADER_SIZE];
        bytes[..8].copy_from_slice(b"LPKSHHRH");
        Writer {
            bytes,
            early_array: None,
            incompatible,
            state: 0,
            entries: Vec::new(),
            seqnum: 0,
            file_id: [0xf1; 16],
            seqnum_id: [0x5e; 16],
            head: None,
            tail: None,
            tail_object: 0,
        }
    }

    fn compact(&self) -> bool {
        self.incompatible & COMPACT != 0
    }

    fn object(&mut self, kind: u8, flags: u8, body: &[u8]) -> u64 {
        let offset = self.bytes.len() as u64;
        self.bytes.push(kind);
        self.bytes.push(flags);
        self.bytes.extend_from_slice(&[0; 6]);
        self.bytes
            .extend_from_slice(&(16 + body.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(body);
        while !self.bytes.len().is_multiple_of(8) {
            self.bytes.push(0);
        }
        self.tail_object = offset;
        offset
    }

    /// Appends a data object and returns its offset.
    pub fn data(&mut self, payload: &Payload) -> u64 {
        // hash, next_hash, next_field, entry_offset, entry_array_offset, n_entries
        let mut body = vec![0u8; 48];
        if self.compact() {
            body.extend_from_slice(&[0; 8]);
        }
        body.extend_from_slice(&payload.bytes);
        self.object(1, payload.flags, &body)
    }

    /// Appends an entry referencing `items` and returns its offset.
    pub fn entry(&mut self, realtime: u64, monotonic: u64, items: &[u64]) -> u64 {
        self.seqnum += 1;
        let mut body = Vec::new();
        body.extend_from_slice(&self.seqnum.to_le_bytes());
        body.extend_from_slice(&realtime.to_le_bytes());
        body.extend_from_slice(&monotonic.to_le_bytes());
        body.extend_from_slice(&[0xb0; 16]);
        body.extend_from_slice(&0u64.to_le_bytes());
        for item in items {
            if self.compact() {
                body.extend_from_slice(&(*item as u32).to_le_bytes());
            } else {
                body.extend_from_slice(&item.to_le_bytes());
                body.extend_from_slice(&0u64.to_le_bytes());
            }
        }
        let offset = self.object(3, 0, &body);
        self.entries.push(offset);
        self.head.get_or_insert((self.seqnum, realtime));
        self.tail = Some((self.seqnum, realtime));
        offset
    }

    /// Appends an entry whose fields are plain `NAME=value` payloads.
    pub fn plain_entry(&mut self, realtime: u64, fields: &[&[u8]]) -> u64 {
        let items: Vec<u64> = fields
            .iter()
            .map(|field| self.data(&Payload::plain(field)))
            .collect();
        self.entry(realtime, realtime, &items)
    }

    /// Allocates an empty entry array of `capacity` slots now, before the entries,
    /// as journald does; `finish` fills it first.
    pub fn early_array(&mut self, capacity: usize) -> u64 {
        let slot = if self.compact() { 4 } else { 8 };
        let offset = self.object(6, 0, &vec![0u8; 8 + capacity * slot]);
        self.early_array = Some((offset, capacity));
        offset
    }

    fn set_slot(&mut self, array: u64, index: usize, entry: u64) {
        let at = array as usize + 24;
        if self.compact() {
            let at = at + index * 4;
            self.bytes[at..at + 4].copy_from_slice(&(entry as u32).to_le_bytes());
        } else {
            self.put_u64(at + index * 8, entry);
        }
    }

    /// Appends the entry arrays (`capacity` slots each, chained) and fills in the
    /// header. Returns the arrays' offsets.
    pub fn finish(&mut self, capacity: usize) -> Vec<u64> {
        let mut entries = self.entries.clone();
        let mut arrays = Vec::new();
        if let Some((early, early_capacity)) = self.early_array {
            let taken = early_capacity.min(entries.len());
            for (index, entry) in entries.drain(..taken).enumerate() {
                self.set_slot(early, index, entry);
            }
            arrays.push(early);
        }
        for chunk in entries.chunks(capacity.max(1)) {
            let mut body = 0u64.to_le_bytes().to_vec();
            for slot in 0..capacity {
                let entry = chunk.get(slot).copied().unwrap_or(0);
                if self.compact() {
                    body.extend_from_slice(&(entry as u32).to_le_bytes());
                } else {
                    body.extend_from_slice(&entry.to_le_bytes());
                }
            }
            let offset = self.object(6, 0, &body);
            if let Some(previous) = arrays.last() {
                self.put_u64(*previous as usize + 16, offset);
            }
            arrays.push(offset);
        }
        let file_size = self.bytes.len() as u64;
        self.bytes[12..16].copy_from_slice(&self.incompatible.to_le_bytes());
        self.bytes[16] = self.state;
        self.bytes[24..40].copy_from_slice(&self.file_id.clone());
        self.bytes[72..88].copy_from_slice(&self.seqnum_id.clone());
        self.put_u64(88, HEADER_SIZE as u64);
        self.put_u64(96, file_size - HEADER_SIZE as u64);
        self.put_u64(136, self.tail_object);
        self.put_u64(152, self.entries.len() as u64);
        let (head, tail) = (self.head.unwrap_or_default(), self.tail.unwrap_or_default());
        self.put_u64(160, tail.0);
        self.put_u64(168, head.0);
        self.put_u64(184, head.1);
        self.put_u64(192, tail.1);
        self.put_u64(176, arrays.first().copied().unwrap_or(0));
        arrays
    }

    pub fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
}
