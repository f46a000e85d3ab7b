//! The buffer against a simple in-memory model (property test), and one named test per
//! kind of damage or limit.

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

#[derive(Clone, Debug)]
enum Op {
    Push(usize),
    Read,
    AckRead,
    Rewind,
    Persist,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..3000).prop_map(Op::Push),
        3 => Just(Op::Read),
        2 => Just(Op::AckRead),
        1 => Just(Op::Rewind),
        1 => Just(Op::Persist),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sequence of pushes, reads, acks and restarts, the buffer delivers
    /// what the model says: in order, nothing unacknowledged lost, and after a restart
    /// everything from a point between the last persisted ack and the last ack.
    #[test]
    #[allow(clippy::redundant_closure)]
    fn behaves_like_a_queue_with_at_least_once_restarts(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        // Large enough that nothing is dropped; small segments to cross boundaries often.
        let limits = limits(1 << 30, WhenFull::DropOldest);
        let reopen = || {
            let (mut buffer, _) = open(dir.path(), limits);
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
                    prop_assert_eq!(buffer.push(r.clone()).unwrap(), Ok(()));
                    model.push(r);
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
    }
}

#[test]
fn small_segments_rotate_and_delivered_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // max_bytes/4 = 256 KiB segments.
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    for n in 0..40 {
        buffer.push(record(n, 20_000)).unwrap().unwrap();
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
        buffer.push(record(n, 10)).unwrap().unwrap();
    }
    for _ in 0..2 {
        buffer.read_next(NOW).unwrap().unwrap();
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
    buffer.push_in_stream(expired, Some(7)).unwrap().unwrap();
    buffer
        .push_in_stream(record(1, 10), Some(7))
        .unwrap()
        .unwrap();
    buffer.push(record(2, 10)).unwrap().unwrap();
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
        buffer.push(record(n, 100)).unwrap().unwrap();
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
    buffer.push(record(9, 100)).unwrap().unwrap();
    assert_eq!(drain(&mut buffer), vec![record(9, 100)]);
}

#[test]
fn bad_checksum_ends_its_segment_and_later_segments_survive() {
    let dir = tempfile::tempdir().unwrap();
    let limits = limits(1 << 20, WhenFull::DropOldest);
    let (mut buffer, _) = open(dir.path(), limits);
    for n in 0..30 {
        buffer.push(record(n, 20_000)).unwrap().unwrap();
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
        buffer.push(record(n, 20_000)).unwrap().unwrap();
    }
    // Ack into the second segment, then lose that segment.
    let first_records = buffer.segments[0].records.len();
    for _ in 0..first_records + 1 {
        buffer.read_next(NOW).unwrap().unwrap();
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
        buffer.push(record(n, 10)).unwrap().unwrap();
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
        buffer.push(record(n, 20_000)).unwrap().unwrap();
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
        match buffer.push(record(accepted, 20_000)).unwrap() {
            Ok(()) => accepted += 1,
            Err(refused) => break refused,
        }
    };
    assert_eq!(
        refused.0,
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
    buffer.push(old).unwrap().unwrap();
    buffer.push(record(7, 10)).unwrap().unwrap();
    assert_eq!(drain(&mut buffer), vec![record(7, 10)]);
    assert_eq!(buffer.dropped().expired, 5, "counted in items, not records");
}

#[test]
fn a_record_that_can_never_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut buffer, _) = open(dir.path(), limits(1 << 20, WhenFull::DropOldest));
    let huge = record(1, 2 << 20);
    assert_eq!(buffer.push(huge.clone()).unwrap(), Err(Refused(huge)));
    assert_eq!(buffer.bytes(), 0);
}
