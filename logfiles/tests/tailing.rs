//! Tailing real files under rotation, truncation, deletion, inode reuse and restarts:
//! every written line carries a unique sequence number, and the delivered set must
//! equal the written set with duplicates counted separately.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Ledger, Node, append_cri, drain, poll_once, write_cri};
use kaas_logfiles::{StartAt, Startup};

const STEP: Duration = Duration::from_millis(50);

#[test]
fn rotation_by_rename_finishes_the_old_file_then_reads_the_new_one() {
    let node = Node::new();
    let dir = node.container_dir("default", "web", "nginx");
    let live = dir.join("0.log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&live)
        .unwrap();
    write_cri(&mut writer, 0..500);
    let mut tailer = node.tailer(&node.config());
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    // The kubelet renames the file; the runtime still writes a few lines to its open
    // handle before it reopens, then writes to the new file.
    std::fs::rename(&live, dir.join("0.log.20240101-000000")).unwrap();
    write_cri(&mut writer, 500..600);
    drop(writer);
    append_cri(&live, 600..700);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..700, 0);
    let order: Vec<u64> = ledger.seen.keys().copied().collect();
    assert_eq!(order.len(), 700);
    let position = |seq: u64| {
        ledger
            .records
            .iter()
            .position(|r| r.body == format!("seq={seq}"))
            .unwrap()
    };
    assert!(
        position(599) < position(600),
        "the old file is finished before the new one"
    );
    assert_eq!(tailer.counters().rotations, 1);
    assert_eq!(
        tailer.tracked_files(),
        1,
        "the finished file is forgotten once committed"
    );
}

#[test]
fn rotation_while_the_descriptor_was_closed_finds_the_renamed_file() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_open_files = 1;
    let first = node.container_dir("default", "a", "c").join("0.log");
    let second = node.container_dir("default", "b", "c").join("0.log");
    append_cri(&first, 0..100);
    append_cri(&second, 1000..1100);
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    append_cri(&first, 100..200);
    poll_once(&mut tailer, &mut ledger, clock);
    // Reading the second file closes the first one's descriptor (one at a time).
    append_cri(&second, 1100..1200);
    poll_once(&mut tailer, &mut ledger, clock);
    assert!(tailer.counters().evictions > 0);
    // The writer keeps its handle across the rename and writes a last burst.
    let mut writer = OpenOptions::new().append(true).open(&first).unwrap();
    std::fs::rename(&first, first.with_file_name("0.log.1")).unwrap();
    write_cri(&mut writer, 200..300);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete((0..300).chain(1000..1200), 0);
    assert!(tailer.open_files() <= 1);
    assert_eq!(tailer.counters().lost_files, 0);
}

#[test]
fn copytruncate_restarts_at_zero() {
    let node = Node::new();
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..300);
    let mut tailer = node.tailer(&node.config());
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    // logrotate's copytruncate: copy (not watched) and truncate in place.
    std::fs::copy(&path, path.with_file_name("copy.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append_cri(&path, 300..310);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..310, 0);
    assert_eq!(tailer.counters().truncations, 1);
}

#[test]
fn a_file_deleted_while_open_is_read_to_its_end_then_forgotten() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 4096;
    let path = node.container_dir("default", "job", "run").join("0.log");
    append_cri(&path, 0..2000);
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    let delivered = poll_once(&mut tailer, &mut ledger, clock);
    assert!(
        delivered > 0 && delivered < 2000,
        "the budget leaves most unread"
    );
    std::fs::remove_file(&path).unwrap();
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..2000, 0);
    assert_eq!(tailer.tracked_files(), 0);
    assert_eq!(
        tailer.open_files(),
        0,
        "the deleted file's descriptor is closed"
    );
}

#[test]
fn the_same_inode_with_new_first_bytes_is_read_as_a_new_file() {
    let node = Node::new();
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..50);
    let mut tailer = node.tailer(&node.config());
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    // Same device and inode, different content, longer than the old position: only the
    // fingerprint tells it apart.
    let replacement: String = (50..150)
        .map(|seq| common::cri_line(seq, "stderr"))
        .collect();
    std::fs::write(&path, replacement).unwrap();
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..150, 0);
    // And across a restart: the checkpoint's fingerprint no longer matches.
    drop(tailer);
    let replacement: String = (150..400)
        .map(|seq| common::cri_line(seq, "stdout"))
        .collect();
    std::fs::write(&path, replacement).unwrap();
    let mut tailer = node.tailer(&node.config());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..400, 0);
}

#[test]
fn kill_without_commit_rereads_from_the_checkpoint_and_loses_nothing() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 8 * 1024;
    let paths: Vec<_> = (0..4)
        .map(|i| {
            node.container_dir("load", &format!("p{i}"), "c")
                .join("0.log")
        })
        .collect();
    let mut written = Vec::new();
    let mut seq = 0;
    let mut ledger = Ledger::default();
    let mut clock = Instant::now();
    let mut uncommitted_max = 0;
    for round in 0..5 {
        for path in &paths {
            append_cri(path, seq..seq + 300);
            written.extend(seq..seq + 300);
            seq += 300;
        }
        let mut tailer = node.tailer(&config);
        assert_eq!(
            *tailer.startup(),
            if round == 0 {
                Startup::First
            } else {
                Startup::Resumed
            }
        );
        // Some batches committed and saved, then some handed out and never committed:
        // the process dies with them in flight.
        for _ in 0..3 {
            clock += STEP;
            poll_once(&mut tailer, &mut ledger, clock);
        }
        tailer.save_checkpoint().unwrap();
        let mut in_flight = 0;
        for _ in 0..2 {
            clock += STEP;
            let batch = tailer.poll_at(clock);
            in_flight += batch.records.len() as u64;
            ledger.take(batch.records);
            drop(batch.token);
        }
        uncommitted_max += in_flight;
        drop(tailer);
    }
    let mut tailer = node.tailer(&config);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(written, uncommitted_max);
    assert!(
        ledger.duplicates() > 0,
        "the in-flight batches were delivered again"
    );
}

#[test]
fn a_later_batch_committed_first_does_not_move_the_checkpoint() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 4096;
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..1000);
    let mut tailer = node.tailer(&config);
    let clock = Instant::now();
    let first = tailer.poll_at(clock);
    let second = tailer.poll_at(clock);
    let first_seq = first.records[0].body.clone();
    tailer.commit(second.token);
    tailer.save_checkpoint().unwrap();
    drop(first.token);
    drop(tailer);
    let mut tailer = node.tailer(&config);
    let again = tailer.poll_at(clock);
    assert_eq!(
        again.records[0].body, first_seq,
        "nothing was committed: the first batch is read again"
    );
}

#[test]
fn start_at_end_skips_existing_lines_but_reads_new_files_whole() {
    let node = Node::new();
    let mut config = node.config();
    config.start_at = StartAt::End;
    let old = node.container_dir("default", "old", "c").join("0.log");
    append_cri(&old, 0..100);
    // A line being written at the start is read whole once it is complete.
    OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b"2024-01-01T00:00:00Z stdout F seq=")
        .unwrap();
    let mut tailer = node.tailer(&config);
    assert_eq!(*tailer.startup(), Startup::First);
    OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b"100\n")
        .unwrap();
    append_cri(&old, 101..110);
    let new = node.container_dir("default", "new", "c").join("0.log");
    append_cri(&new, 1000..1010);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete((100..110).chain(1000..1010), 0);
    // A restart is not a first start, even before anything new was committed.
    drop(tailer);
    append_cri(&old, 110..120);
    let mut tailer = node.tailer(&config);
    assert_eq!(*tailer.startup(), Startup::Resumed);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete((100..120).chain(1000..1010), 0);
}

#[test]
fn thousands_of_files_are_read_within_a_small_descriptor_bound() {
    let node = Node::new();
    let base = node.base();
    let apps = base.join("var/log/apps");
    std::fs::create_dir_all(&apps).unwrap();
    let mut config = node.config();
    config.pod_log_root = None;
    config.allowed_roots = vec![base.join("var/log")];
    config.globs = vec![apps.join("*.log")];
    config.limits.max_open_files = 8;
    const FILES: u64 = 2000;
    for file in 0..FILES {
        let text: String = (0..3).map(|i| format!("seq={}\n", file * 10 + i)).collect();
        std::fs::write(apps.join(format!("{file:05}.log")), text).unwrap();
    }
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    let mut most_open = drain(&mut tailer, &mut ledger, &mut clock, STEP);
    for file in (0..FILES).step_by(7) {
        let path = apps.join(format!("{file:05}.log"));
        let mut handle = OpenOptions::new().append(true).open(path).unwrap();
        writeln!(handle, "seq={}", file * 10 + 5).unwrap();
    }
    most_open = most_open.max(drain(&mut tailer, &mut ledger, &mut clock, STEP));
    let written = (0..FILES)
        .flat_map(|f| (0..3).map(move |i| f * 10 + i))
        .chain((0..FILES).step_by(7).map(|f| f * 10 + 5));
    ledger.assert_complete(written, 0);
    assert!(most_open <= 8, "{most_open} descriptors open");
    assert!(tailer.counters().evictions > 0);
    assert_eq!(tailer.tracked_files(), FILES as usize);
}

#[test]
fn a_file_rotated_while_the_agent_was_down_is_finished_from_its_checkpoint() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 2048;
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..200);
    let mut tailer = node.tailer(&config);
    let mut ledger = Ledger::default();
    poll_once(&mut tailer, &mut ledger, Instant::now());
    tailer.save_checkpoint().unwrap();
    let read_before = ledger.records.len();
    assert!(read_before > 0 && read_before < 200);
    drop(tailer);
    std::fs::rename(&path, path.with_file_name("0.log.20240101-000000")).unwrap();
    append_cri(&path, 200..300);
    // Down again after a little of the rotated file was read: its checkpoint entry must
    // still say where it was found and what it is.
    let mut tailer = node.tailer(&config);
    poll_once(&mut tailer, &mut ledger, Instant::now());
    tailer.save_checkpoint().unwrap();
    drop(tailer);
    let mut tailer = node.tailer(&config);
    let mut clock = Instant::now();
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..300, 0);
    for record in &ledger.records {
        assert_eq!(
            record.stream,
            kaas_logfiles::Stream::Stdout,
            "still read as a container log"
        );
        assert_eq!(
            record.file.path, path,
            "reported at the path it was found at"
        );
    }
}

#[test]
fn a_stalled_consumer_stops_reading_without_growing_the_queue() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 1024;
    config.limits.max_unacked_batches = 3;
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..500);
    let mut tailer = node.tailer(&config);
    let clock = Instant::now();
    let held: Vec<_> = (0..3).map(|_| tailer.poll_at(clock)).collect();
    assert!(held.iter().all(|batch| !batch.records.is_empty()));
    for _ in 0..10 {
        let stalled = tailer.poll_at(clock);
        assert!(
            stalled.records.is_empty(),
            "nothing is read beyond the bound"
        );
        tailer.commit(stalled.token);
    }
    assert_eq!(tailer.unacknowledged_batches(), 3);
    let mut ledger = Ledger::default();
    for batch in held {
        ledger.take(batch.records);
        tailer.commit(batch.token);
    }
    assert_eq!(tailer.unacknowledged_batches(), 0);
    let mut clock = clock;
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..500, 0);
    let idle = tailer.poll_at(clock);
    assert!(idle.records.is_empty());
    assert_eq!(
        tailer.unacknowledged_batches(),
        0,
        "an idle poll takes no place in the queue"
    );
}

#[test]
fn a_file_deleted_unread_while_its_descriptor_was_closed_is_counted_as_lost() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_open_files = 1;
    config.limits.max_batch_bytes = 1024;
    let first = node.container_dir("default", "a", "c").join("0.log");
    let second = node.container_dir("default", "b", "c").join("0.log");
    append_cri(&first, 0..100);
    let mut tailer = node.tailer(&config);
    let mut ledger = Ledger::default();
    let clock = Instant::now();
    poll_once(&mut tailer, &mut ledger, clock);
    // The newcomer is read first (least recently read) and takes the one descriptor.
    append_cri(&second, 1000..1100);
    poll_once(&mut tailer, &mut ledger, clock);
    assert_eq!(tailer.open_files(), 1);
    assert_eq!(tailer.counters().evictions, 1);
    std::fs::remove_file(&first).unwrap();
    let mut clock = clock;
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    assert_eq!(
        tailer.counters().lost_files,
        1,
        "the documented loss is counted"
    );
    ledger.assert_complete(
        ledger
            .delivered()
            .into_iter()
            .filter(|seq| *seq < 100)
            .chain(1000..1100),
        0,
    );
    assert_eq!(tailer.tracked_files(), 1);
}

#[test]
fn the_descriptor_bound_closes_a_file_read_to_its_end_before_one_with_unread_lines() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_open_files = 2;
    config.limits.max_batch_bytes = 1024;
    let path = |pod: &str| node.container_dir("default", pod, "c").join("0.log");
    let (behind, caught_up, newcomer) = (path("behind"), path("caught-up"), path("newcomer"));
    append_cri(&behind, 0..200);
    let mut tailer = node.tailer(&config);
    let mut ledger = Ledger::default();
    let clock = Instant::now();
    poll_once(&mut tailer, &mut ledger, clock);
    // 21 lines of 49 bytes: read whole within the budget, which leaves nothing for the
    // file behind, so that one is now the least recently read.
    append_cri(&caught_up, 2000..2021);
    poll_once(&mut tailer, &mut ledger, clock);
    append_cri(&newcomer, 3000..3010);
    poll_once(&mut tailer, &mut ledger, clock);
    assert_eq!(tailer.counters().evictions, 1);
    // Deleting the file behind loses nothing: its descriptor was kept.
    std::fs::remove_file(&behind).unwrap();
    let mut clock = clock;
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    assert_eq!(tailer.counters().lost_files, 0);
    ledger.assert_complete((0..200).chain(2000..2021).chain(3000..3010), 0);
}
