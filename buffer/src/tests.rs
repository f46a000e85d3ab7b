//! The buffer against a simple in-memory model (property test), and one named test per
//! kind of damage or limit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kaas_pipeline::buffer::WhenFull;
use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn limits(max_bytes: u64, when_full: WhenFull) -> Limits {
    Limits {
        max_bytes,
        max_age: Duration::from_secs(3600),
        when_full,
    }
}

fn record(n: u32, len: usize) -> Record {
    Record {
        timestamp_ms: NOW,
        items: 1,
        payload: n
            .to_le_bytes()
            .iter()
            .copied()
            .cycle()
            .take(len.max(4))
            .collect(),
    }
}

fn open(dir: &Path, limits: Limits) -> (DiskBuffer, Recovery) {
    DiskBuffer::open(dir, limits).expect("open buffer")
}

/// Reads everything readable, acking as it goes.
fn drain(buffer: &mut DiskBuffer) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some((_, record)) = buffer.read_next(NOW).unwrap() {
        out.push(record);
        let read = buffer.read;
        buffer.ack(read).unwrap();
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// A file system double: segment files are real files, but the "disk" takes only
/// `room` more bytes. A write beyond that writes what fits and then fails with
/// `ENOSPC`, exactly as a full disk cuts a record short; cutting a file back can be
/// made to fail too.
#[derive(Debug)]
struct Disk {
    room: AtomicU64,
    cut_fails: AtomicBool,
}

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;

impl Disk {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            room: AtomicU64::new(u64::MAX),
            cut_fails: AtomicBool::new(false),
        })
    }

    /// The disk takes `bytes` more bytes, then is full.
    fn fill_after(&self, bytes: u64) {
        self.room.store(bytes, Ordering::SeqCst);
    }

    /// Space was freed.
    fn free(&self) {
        self.room.store(u64::MAX, Ordering::SeqCst);
        self.cut_fails.store(false, Ordering::SeqCst);
    }

    fn opener(self: &Arc<Self>) -> SegmentOpener {
        let disk = self.clone();
        SegmentOpener::new(move |path: &Path| {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Box::new(FaultyFile {
                file,
                disk: disk.clone(),
            }) as Box<dyn SegmentWriter>)
        })
    }
}

#[derive(Debug)]
struct FaultyFile {
    file: File,
    disk: Arc<Disk>,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.disk.room.load(Ordering::SeqCst);
        if room == 0 {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let fits = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let written = self.file.write(&buf[..fits])?;
        if room != u64::MAX {
            self.disk.room.fetch_sub(written as u64, Ordering::SeqCst);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl SegmentWriter for FaultyFile {
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.disk.cut_fails.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: the cut fails"));
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Opens the buffer in `dir` on `disk`.
fn open_on(dir: &Path, limits: Limits, disk: &Arc<Disk>) -> DiskBuffer {
    let (mut buffer, _) = open(dir, limits);
    buffer.opener = disk.opener();
    buffer
}

/// The bytes of every segment file, which must be exactly what the index holds.
fn bytes_on_disk(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    /// A push on a disk that fills up after `room` bytes of the record (so the write
    /// fails part way), where cutting the file back also fails if the flag is set;
    /// then space is freed.
    FailingPush(usize, u64, bool),
    Read,
    AckRead,
    Rewind,
    Persist,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..3000).prop_map(Op::Push),
        1 => (1usize..3000, 0u64..3020, any::<bool>())
            .prop_map(|(len, room, cut_fails)| Op::FailingPush(len, room, cut_fails)),
        3 => Just(Op::Read),
        2 => Just(Op::AckRead),
        1 => Just(Op::Rewind),
        1 => Just(Op::Persist),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sequence of pushes, failed writes, reads, acks and restarts, the
    /// buffer delivers what the model says: in order, nothing unacknowledged lost, and
    /// after a restart everything from a point between the last persisted ack and the
    /// last ack. A write that fails part way (a full disk) stores nothing, hands the
    /// record back, and loses none of the records before or after it.
    ///
    /// Issue 13, finding 10 (buffer faults): on 552c13e a write cut short by a full disk
    /// left its bytes in the segment while the index skipped them, so every later record
    /// was read from the wrong offset (and dropped as corrupt after a restart).
    #[test]
    #[allow(clippy::redundant_closure)]
    fn behaves_like_a_queue_with_at_least_once_restarts(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new();
        // Large enough that nothing is dropped; small segments to cross boundaries often.
        let limits = limits(1 << 30, WhenFull::DropOldest);
        let reopen = || {
            let mut buffer = open_on(dir.path(), limits, &disk);
            // Tiny segments, so that reads, acks and restarts cross boundaries often.
            buffer.segment_bytes = 4096;
            buffer
        };
        let mut buffer = reopen();
        let mut model: Vec<Record> = Vec::new();
        let (mut read, mut acked, mut persisted) = (0usize, 0usize, 0usize);
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Push(len) => {
                    let r = record(next_id, len);
                    next_id += 1;
                    prop_assert!(buffer.push(r.clone()).is_ok());
                    model.push(r);
                }
                Op::FailingPush(len, room, cut_fails) => {
                    let r = record(next_id, len);
                    next_id += 1;
                    let framed = HEADER_BYTES + r.payload.len() as u64;
                    disk.fill_after(room.min(framed - 1));
                    disk.cut_fails.store(cut_fails, Ordering::SeqCst);
                    match buffer.push(r.clone()) {
                        Err(PushError::Failed { record, .. }) => prop_assert_eq!(record, r),
                        other => prop_assert!(false, "a failed write answered {:?}", other),
                    }
                    disk.free();
                    if !cut_fails {
                        // The segment written to holds exactly what its index says.
                        let back = buffer.segments.back().unwrap();
                        let file = segment_path(dir.path(), back.id);
                        prop_assert_eq!(fs::metadata(file).unwrap().len(), back.len);
                    }
                }
                Op::Read => {
                    let got = buffer.read_next(NOW).unwrap().map(|(_, r)| r);
                    prop_assert_eq!(got.as_ref(), model.get(read));
                    if got.is_some() { read += 1; }
                }
                Op::AckRead => {
                    let position = buffer.read;
                    buffer.ack(position).unwrap();
                    acked = read;
                }
                Op::Rewind => {
                    buffer.rewind();
                    read = acked;
                }
                Op::Persist => {
                    buffer.persist_ack().unwrap();
                    persisted = acked;
                }
                Op::Restart => {
                    drop(buffer);
                    buffer = reopen();
                    // Delivery resumes between the last explicit persist and the
                    // in-memory ack: never after an unacknowledged record.
                    let resume = model.len() - buffer.pending_records() as usize;
                    prop_assert!(
                        persisted <= resume && resume <= acked,
                        "resumed at {}, persisted {}, acked {}", resume, persisted, acked
                    );
                    read = resume;
                    acked = resume;
                    persisted = resume;
                }
            }
            prop_assert_eq!(buffer.pending_records(), (model.len() - acked) as u64);
        }
        buffer.rewind();
        let rest = drain(&mut buffer);
        prop_assert_eq!(&rest[..], &model[acked..]);
        prop_assert_eq!(buffer.dropped().corrupt, 0);
    }
}

#[test]
fn small_segments_rotate_and_delivered_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // max_bytes/4 = 256 KiB segments.
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    for n in 0..40 {
        buffer.push(record(n, 20_000)).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 3);
    assert_eq!(drain(&mut buffer).len(), 40);
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the open segment remains"
    );
}

#[test]
fn acknowledged_records_are_not_delivered_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..5 {
        buffer.push(record(n, 10)).unwrap();
    }
    for _ in 0..2 {
        buffer.read_next(NOW).unwrap();
    }
    let position = buffer.read;
    buffer.ack(position).unwrap();
    buffer.persist_ack().unwrap();
    buffer.read_next(NOW).unwrap().unwrap(); // read, never acknowledged
    drop(buffer); // as if killed

    let (mut buffer, recovery) = open(dir.path(), limits);
    assert_eq!(recovery.records, 3);
    let again = drain(&mut buffer);
    assert_eq!(again, (2..5).map(|n| record(n, 10)).collect::<Vec<_>>());
}

#[test]
fn streams_are_kept_in_memory_and_peeking_skips_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    let mut expired = record(0, 10);
    expired.timestamp_ms = NOW - 2 * 3600 * 1000;
    buffer.push_in_stream(expired, Some(7)).unwrap();
    buffer.push_in_stream(record(1, 10), Some(7)).unwrap();
    buffer.push(record(2, 10)).unwrap();
    assert_eq!(buffer.peek_next(NOW), Some((1, Some(7))));
    assert_eq!(
        buffer.take_dropped().expired,
        1,
        "the expired record is counted"
    );
    assert_eq!(
        buffer.peek_next(NOW),
        Some((1, Some(7))),
        "peeking reads nothing"
    );
    assert_eq!(buffer.read_next(NOW).unwrap().unwrap().1, record(1, 10));
    assert_eq!(buffer.peek_next(NOW), Some((1, None)));
    drop(buffer);

    // After a restart the records are there, their streams are not.
    let (mut buffer, _) = open(dir.path(), limits);
    assert_eq!(buffer.peek_next(NOW), Some((1, None)));
    assert_eq!(drain(&mut buffer), [record(1, 10), record(2, 10)]);
    assert_eq!(buffer.peek_next(NOW), None);
}

#[test]
fn torn_write_at_the_end_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..3 {
        buffer.push(record(n, 100)).unwrap();
    }
    drop(buffer);
    let file = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    // Cut the last record in half, as a crash during write(2) would.
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 50)
        .unwrap();

    let (mut buffer, recovery) = open(dir.path(), limits);
    assert_eq!(recovery.torn_bytes, HEADER_BYTES + 100 - 50);
    assert_eq!(recovery.corrupt_bytes, 0);
    assert_eq!(drain(&mut buffer), vec![record(0, 100), record(1, 100)]);
    // The buffer keeps working after recovery.
    buffer.push(record(9, 100)).unwrap();
    assert_eq!(drain(&mut buffer), vec![record(9, 100)]);
}

#[test]
fn bad_checksum_ends_its_segment_and_later_segments_survive() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..30 {
        buffer.push(record(n, 20_000)).unwrap();
    }
    drop(buffer);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let first_records = scan_segment(&fs::read(&files[0]).unwrap()).records.len();
    // Flip one payload byte of the second record of the first segment.
    let mut bytes = fs::read(&files[0]).unwrap();
    let second = (HEADER_BYTES + 20_000) as usize;
    bytes[second + HEADER_BYTES as usize + 7] ^= 0xff;
    fs::write(&files[0], &bytes).unwrap();

    let (mut buffer, recovery) = open(dir.path(), limits);
    assert_eq!(
        recovery.corrupt_bytes,
        (first_records as u64 - 1) * (HEADER_BYTES + 20_000)
    );
    let delivered = drain(&mut buffer);
    let mut expected = vec![record(0, 20_000)];
    expected.extend((first_records as u32..30).map(|n| record(n, 20_000)));
    assert_eq!(delivered, expected);
}

#[test]
fn missing_segment_is_skipped_even_when_the_ack_points_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..30 {
        buffer.push(record(n, 20_000)).unwrap();
    }
    // Ack into the second segment, then lose that segment.
    let first_records = buffer.segments[0].records.len();
    for _ in 0..first_records + 1 {
        buffer.read_next(NOW).unwrap();
    }
    let position = buffer.read;
    buffer.ack(position).unwrap();
    buffer.persist_ack().unwrap();
    let second_records = buffer.segments[0].records.len();
    let second_id = buffer.segments[0].id;
    drop(buffer);
    fs::remove_file(segment_path(dir.path(), second_id)).unwrap();

    let (mut buffer, _) = open(dir.path(), limits);
    let delivered = drain(&mut buffer);
    let first_after_gap = (first_records + second_records) as u32;
    assert_eq!(
        delivered,
        (first_after_gap..30)
            .map(|n| record(n, 20_000))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_damaged_ack_file_means_delivering_again_not_losing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..3 {
        buffer.push(record(n, 10)).unwrap();
    }
    buffer.read_next(NOW).unwrap();
    let position = buffer.read;
    buffer.ack(position).unwrap();
    buffer.persist_ack().unwrap();
    drop(buffer);
    fs::write(dir.path().join("ack"), b"garbage").unwrap();
    let (mut buffer, _) = open(dir.path(), limits);
    assert_eq!(drain(&mut buffer).len(), 3);
}

#[test]
fn drop_oldest_keeps_the_bound_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    for n in 0..200 {
        buffer.push(record(n, 20_000)).unwrap();
        assert!(buffer.bytes() <= 1 << 20);
    }
    let delivered = drain(&mut buffer);
    assert_eq!(delivered.len() as u64 + buffer.dropped().full, 200);
    assert!(buffer.dropped().full > 100);
    // What survives is the newest data, in order and without gaps.
    let ids: Vec<u32> = delivered
        .iter()
        .map(|r| u32::from_le_bytes(r.payload[..4].try_into().unwrap()))
        .collect();
    assert_eq!(ids.last(), Some(&199));
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[test]
fn drop_newest_refuses_and_hands_the_record_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropNewest));
    let mut accepted = 0;
    let refused = loop {
        match buffer.push(record(accepted, 20_000)) {
            Ok(()) => accepted += 1,
            Err(PushError::Full(refused)) => break refused,
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(
        refused,
        record(accepted, 20_000),
        "the refused record comes back whole"
    );
    assert!(buffer.bytes() <= 1 << 20);
    let delivered = drain(&mut buffer);
    assert_eq!(
        delivered.first(),
        Some(&record(0, 20_000)),
        "the oldest data is kept"
    );
    assert_eq!(delivered.len() as u32, accepted);
}

#[test]
fn records_older_than_the_maximum_age_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    let old = Record {
        timestamp_ms: NOW - 2 * 3600 * 1000,
        items: 5,
        payload: vec![1],
    };
    buffer.push(old).unwrap();
    buffer.push(record(7, 10)).unwrap();
    assert_eq!(drain(&mut buffer), vec![record(7, 10)]);
    assert_eq!(buffer.dropped().expired, 5, "counted in items, not records");
}

#[test]
fn a_record_that_can_never_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    let huge = record(1, 2 << 20);
    assert!(matches!(buffer.push(huge.clone()), Err(PushError::Full(r)) if r == huge));
    assert_eq!(buffer.bytes(), 0);
}

/// Issue 13, finding 10 (buffer faults): a write that a full disk cuts short mid-record
/// is taken back (the file is cut to its last whole record), refused with the record
/// handed back, and every record before and after it is delivered, before and after a
/// restart. On 552c13e the partial bytes stayed in the file, the index did not know
/// them, and the records after them were read from the wrong offsets (and dropped as
/// corrupt after a restart).
#[test]
fn a_write_cut_short_by_a_full_disk_is_taken_back_and_later_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::new();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let mut buffer = open_on(dir.path(), limits, &disk);
    for n in 0..3 {
        buffer.push(record(n, 100)).unwrap();
    }
    // Room for the header and half the payload of the next record.
    disk.fill_after(HEADER_BYTES + 50);
    let refused = buffer.push(record(3, 100)).unwrap_err();
    assert!(
        matches!(&refused, PushError::Failed { record: r, source }
            if *r == record(3, 100) && source.to_string().contains("append record")),
        "{refused:?}"
    );
    assert_eq!(
        bytes_on_disk(dir.path()),
        buffer.bytes(),
        "the partial record was cut away"
    );
    // While the disk stays full, pushes keep failing cleanly.
    assert!(matches!(
        buffer.push(record(4, 100)),
        Err(PushError::Failed { .. })
    ));
    disk.free();
    for n in 5..8 {
        buffer.push(record(n, 100)).unwrap();
    }
    let expected: Vec<Record> = [0, 1, 2, 5, 6, 7].map(|n| record(n, 100)).to_vec();
    drop(buffer);

    let (mut buffer, recovery) = open(dir.path(), limits);
    assert_eq!((recovery.torn_bytes, recovery.corrupt_bytes), (0, 0));
    assert_eq!(recovery.records, 6);
    assert_eq!(drain(&mut buffer), expected);
    assert_eq!(buffer.dropped().corrupt, 0);
}

/// Issue 13, finding 10 (buffer faults): when the file cannot even be cut back after a
/// failed write, the segment takes no more appends: later records go to a new segment
/// and the damaged tail costs no record, now or after a restart.
#[test]
fn a_failed_write_whose_cut_also_fails_seals_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::new();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let mut buffer = open_on(dir.path(), limits, &disk);
    buffer.push(record(0, 100)).unwrap();
    disk.fill_after(30);
    disk.cut_fails.store(true, Ordering::SeqCst);
    assert!(matches!(
        buffer.push(record(1, 100)),
        Err(PushError::Failed { .. })
    ));
    disk.free();
    buffer.push(record(2, 100)).unwrap();
    buffer.push(record(3, 100)).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "a new segment was started"
    );
    let expected = [0, 2, 3].map(|n| record(n, 100));
    let mut read = Vec::new();
    while let Some((_, record)) = buffer.read_next(NOW).unwrap() {
        read.push(record); // read, not acknowledged
    }
    assert_eq!(read, expected);
    drop(buffer);

    // The first segment ends in the 30 bytes that could not be cut: only those are lost.
    let (mut buffer, recovery) = open(dir.path(), limits);
    assert_eq!(recovery.corrupt_bytes, 30);
    assert_eq!(drain(&mut buffer), expected);
    assert_eq!(buffer.dropped().corrupt, 0);
}

/// Issue 13, finding 10 (buffer faults): a disk that stays full refuses every push
/// without leaving a trail of new, empty segment files behind.
#[test]
fn a_disk_that_stays_full_refuses_pushes_without_a_trail_of_segments() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::new();
    let mut buffer = open_on(dir.path(), limits(1 << 20, WhenFull::DropOldest), &disk);
    buffer.push(record(0, 100)).unwrap();
    disk.fill_after(0);
    for n in 1..50 {
        assert!(matches!(
            buffer.push(record(n, 100)),
            Err(PushError::Failed { .. })
        ));
    }
    assert!(segment_files(dir.path()).len() <= 2);
    disk.free();
    buffer.push(record(50, 100)).unwrap();
    assert_eq!(drain(&mut buffer), [record(0, 100), record(50, 100)]);
}

/// Issue 13, finding 10 (buffer faults): reads are checked. A record damaged on disk
/// after it was written is skipped, counted as corrupt and reported, and reading goes
/// on with the next record. On 552c13e its damaged bytes were handed out as the payload.
#[test]
fn a_record_damaged_after_writing_is_skipped_counted_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    let mut middle = record(1, 100);
    middle.items = 7;
    buffer.push(record(0, 100)).unwrap();
    buffer.push(middle).unwrap();
    buffer.push(record(2, 100)).unwrap();
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let second = (HEADER_BYTES + 100) as usize;
    bytes[second + HEADER_BYTES as usize + 3] ^= 0xff;
    fs::write(&file, &bytes).unwrap();

    assert_eq!(buffer.read_next(NOW).unwrap().unwrap().1, record(0, 100));
    let error = buffer.read_next(NOW).unwrap_err();
    assert!(
        matches!(&error, BufferError::Corrupt { items: 7, reason, .. } if reason == "bad checksum"),
        "{error}"
    );
    assert_eq!(buffer.read_next(NOW).unwrap().unwrap().1, record(2, 100));
    assert_eq!(buffer.take_dropped().corrupt, 7);
}

/// Issue 13, finding 10 (buffer faults): delivered segments are deleted even when the
/// ack position cannot be written (a full disk has no room for it), so delivering frees
/// the space; a restart resumes at the next segment there is and loses nothing. On
/// 552c13e the failed ack kept every delivered segment on the full disk.
#[test]
fn delivered_segments_are_deleted_even_when_the_ack_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..30 {
        buffer.push(record(n, 20_000)).unwrap();
    }
    let files = segment_files(dir.path()).len();
    assert!(files >= 3);
    // The ack can no longer be written: its temporary file's name is taken by a
    // directory.
    fs::create_dir(dir.path().join("ack.tmp")).unwrap();
    let first_segment = buffer.segments[0].records.len();
    for _ in 0..first_segment + 1 {
        buffer.read_next(NOW).unwrap().unwrap();
    }
    let position = buffer.read;
    assert!(buffer.ack(position).is_err(), "the failed ack is reported");
    assert_eq!(
        segment_files(dir.path()).len(),
        files - 1,
        "the delivered segment is gone"
    );
    drop(buffer);
    fs::remove_dir(dir.path().join("ack.tmp")).unwrap();

    let (mut buffer, _) = open(dir.path(), limits);
    let delivered = drain(&mut buffer);
    assert_eq!(
        delivered.first(),
        Some(&record(first_segment as u32, 20_000))
    );
    assert_eq!(delivered.last(), Some(&record(29, 20_000)));
}
