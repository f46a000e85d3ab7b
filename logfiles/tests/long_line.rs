//! A hostile line: 10 MiB without a newline, in a container log and a plain file, read
//! with bounded memory (this binary holds one test so the process's peak RSS is its
//! own), truncated at the record cap and counted, a restart in the middle of it neither
//! duplicates the cut record nor loses the lines after it, and invalid UTF-8 beside it
//! is replaced and counted.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Ledger, Node, drain};
use kaas_logfiles::DEFAULT_MAX_RECORD_BYTES;

const HOSTILE_BYTES: usize = 10 * 1024 * 1024;
const STEP: Duration = Duration::from_millis(50);

/// The process's peak resident set (VmHWM) in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("test setup");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("test setup");
    line.split_whitespace()
        .nth(1)
        .expect("test setup")
        .parse()
        .expect("test setup")
}

/// Appends `HOSTILE_BYTES` of `x` in small writes (the test itself must not hold them).
fn append_hostile(file: &mut File) {
    let chunk = [b'x'; 64 * 1024];
    for _ in 0..HOSTILE_BYTES / chunk.len() {
        file.write_all(&chunk).expect("test setup");
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("test setup")
}

#[test]
fn ten_mib_without_a_newline_is_cut_at_the_cap_with_bounded_memory() {
    let node = Node::new();
    let base = node.base();
    std::fs::create_dir_all(base.join("var/log/app")).expect("test setup");
    let mut config = node.config();
    config.allowed_roots = vec![base.join("var/log")];
    config.globs = vec![base.join("var/log/app/*.log")];
    let container = node.container_dir("default", "evil", "c").join("0.log");
    let plain = base.join("var/log/app/evil.log");
    let mut cri = open_append(&container);
    let mut text = open_append(&plain);
    cri.write_all(b"2024-01-01T00:00:00Z stdout F seq=1\n2024-01-01T00:00:00Z stdout F ")
        .expect("test setup");
    text.write_all(b"seq=101\n").expect("test setup");
    append_hostile(&mut cri);
    append_hostile(&mut text);

    let before = peak_rss_kib();
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    // The cut records are out although their lines have not ended.
    assert_eq!(ledger.records.iter().filter(|r| r.truncated).count(), 2);
    // A restart while the rest of the lines is still being skipped.
    drop(tailer);
    append_hostile(&mut cri);
    let mut tailer = node.tailer(&config);
    cri.write_all(
        b"\n2024-01-01T00:00:00Z stdout F seq=2\n2024-01-01T00:00:00Z stderr F seq=3 \xff\n",
    )
    .expect("test setup");
    text.write_all(b"\nseq=102\n").expect("test setup");
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    let growth_kib = peak_rss_kib().saturating_sub(before);

    ledger.assert_complete([1, 2, 3, 101, 102], 0);
    let cut: Vec<_> = ledger.records.iter().filter(|r| r.truncated).collect();
    assert_eq!(
        cut.len(),
        2,
        "each cut record once, also across the restart"
    );
    for record in &cut {
        assert_eq!(record.body.len(), DEFAULT_MAX_RECORD_BYTES);
        assert!(record.body.bytes().all(|b| b == b'x'));
    }
    let counters = tailer.counters();
    assert_eq!(counters.invalid_utf8_records, 1);
    assert!(ledger.records.iter().any(|r| r.body == "seq=3 \u{fffd}"));
    assert!(
        growth_kib < 12 * 1024,
        "peak RSS grew by {growth_kib} KiB reading 30 MiB of one-line input"
    );
}
