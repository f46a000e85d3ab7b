//! Polls without discovery (`Tailer::poll_known_at`), as the agent makes between its
//! discoveries: known files are read on, a file renamed or deleted while its
//! descriptor was closed is detached as a discovery would have, new files wait for
//! the next discovery, and `more_to_read` says when to poll again at once.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{Ledger, Node, append_cri, drain, poll_once};
use kaas_logfiles::Tailer;

const STEP: Duration = Duration::from_millis(50);

/// One poll without discovery at `now`, its records taken and its batch committed.
fn poll_known(tailer: &mut Tailer, ledger: &mut Ledger, now: Instant) -> usize {
    let batch = tailer.poll_known_at(now);
    let delivered = batch.records.len();
    ledger.take(batch.records);
    tailer.commit(batch.token);
    delivered
}

/// Polls without discovery until three polls in a row deliver nothing and change
/// nothing, advancing the clock by [`STEP`] each time.
fn drain_known(tailer: &mut Tailer, ledger: &mut Ledger, clock: &mut Instant) {
    let (mut quiet, mut unread) = (0, u64::MAX);
    while quiet < 3 {
        *clock += STEP;
        let delivered = poll_known(tailer, ledger, *clock);
        let progressed = delivered > 0 || tailer.unread_bytes() != unread;
        unread = tailer.unread_bytes();
        quiet = if progressed { 0 } else { quiet + 1 };
    }
}

#[test]
fn known_files_are_read_between_discoveries_and_new_ones_at_the_next() {
    let node = Node::new();
    let known = node.container_dir("default", "a", "c").join("0.log");
    append_cri(&known, 0..100);
    let mut tailer = node.tailer(&node.config());
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    append_cri(&known, 100..200);
    let newcomer = node.container_dir("default", "b", "c").join("0.log");
    append_cri(&newcomer, 1000..1010);
    drain_known(&mut tailer, &mut ledger, &mut clock);
    ledger.assert_complete(0..200, 0);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete((0..200).chain(1000..1010), 0);
    assert_eq!(tailer.counters().read_errors, 0);
}

/// Two files, one descriptor: the first is closed with unread lines when it is
/// renamed (rotated) or deleted between discoveries.
fn first_closed_with_unread_lines(node: &Node) -> (Tailer, Ledger, Instant, std::path::PathBuf) {
    let mut config = node.config();
    config.limits.max_open_files = 1;
    config.limits.max_batch_bytes = 1024;
    let first = node.container_dir("default", "a", "c").join("0.log");
    let second = node.container_dir("default", "b", "c").join("0.log");
    append_cri(&first, 0..100);
    let mut tailer = node.tailer(&config);
    let mut ledger = Ledger::default();
    let clock = Instant::now();
    poll_known(&mut tailer, &mut ledger, clock);
    // The newcomer is read first (least recently read) and takes the one descriptor.
    append_cri(&second, 1000..1100);
    poll_once(&mut tailer, &mut ledger, clock);
    assert_eq!(tailer.open_files(), 1);
    assert!(tailer.counters().evictions > 0);
    assert!(ledger.delivered().iter().any(|seq| *seq >= 1000));
    (tailer, ledger, clock, first)
}

#[test]
fn a_file_renamed_while_closed_between_discoveries_is_read_on_under_its_new_name() {
    let node = Node::new();
    let (mut tailer, mut ledger, mut clock, first) = first_closed_with_unread_lines(&node);
    std::fs::rename(&first, first.with_file_name("0.log.20240101-000000")).unwrap();
    append_cri(&first, 2000..2010);
    drain_known(&mut tailer, &mut ledger, &mut clock);
    ledger.assert_complete((0..100).chain(1000..1100), 0);
    assert_eq!(tailer.counters().rotations, 1);
    assert_eq!(tailer.counters().read_errors, 0);
    assert_eq!(tailer.counters().lost_files, 0);
    // The new file at the old path is found by the next discovery.
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete((0..100).chain(1000..1100).chain(2000..2010), 0);
    assert_eq!(tailer.counters().rotations, 1);
}

#[test]
fn a_file_deleted_while_closed_between_discoveries_is_finished_and_counted_as_lost() {
    let node = Node::new();
    let (mut tailer, mut ledger, mut clock, first) = first_closed_with_unread_lines(&node);
    std::fs::remove_file(&first).unwrap();
    drain_known(&mut tailer, &mut ledger, &mut clock);
    assert_eq!(tailer.counters().lost_files, 1, "the documented loss");
    assert_eq!(tailer.counters().read_errors, 0);
    assert_eq!(tailer.tracked_files(), 1);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    let first_lines = ledger.delivered().into_iter().filter(|seq| *seq < 100);
    ledger.assert_complete(first_lines.chain(1000..1100), 0);
}

#[test]
fn more_to_read_while_a_poll_stopped_at_its_budget_not_for_an_unfinished_line() {
    let node = Node::new();
    let mut config = node.config();
    config.limits.max_batch_bytes = 1024;
    let path = node.container_dir("default", "a", "c").join("0.log");
    append_cri(&path, 0..200);
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    assert!(poll_known(&mut tailer, &mut ledger, clock) > 0);
    assert!(tailer.more_to_read(), "stopped at the batch bound");
    drain_known(&mut tailer, &mut ledger, &mut clock);
    ledger.assert_complete(0..200, 0);
    assert!(!tailer.more_to_read());
    // A writer in the middle of a line: nothing to read until it ends.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"2024-01-01T00:00:00.000000000Z stdout F seq=")
        .unwrap();
    poll_known(&mut tailer, &mut ledger, clock);
    assert!(!tailer.more_to_read());
    file.write_all(b"200\n").unwrap();
    drain_known(&mut tailer, &mut ledger, &mut clock);
    ledger.assert_complete(0..201, 0);
    // Nothing read while the window of unacknowledged batches is full, so nothing to
    // poll again for at once either.
    let mut config = node.config();
    config.checkpoint = node.base().join("agent/stalled");
    config.limits.max_batch_bytes = 1024;
    config.limits.max_unacked_batches = 1;
    let mut stalled = node.tailer(&config);
    let held = stalled.poll_known_at(clock);
    assert!(!held.records.is_empty());
    assert!(!stalled.more_to_read(), "the window is full");
    stalled.commit(held.token);
    assert!(stalled.more_to_read());
}
