//! The checkpoint across restarts: a torn or garbage file is refused with a clear error
//! or moved aside and everything read again (nothing lost); and an open multiline record
//! in one stream neither loses nor duplicates the other stream's lines after a restart.

mod common;

use std::time::{Duration, Instant};

use common::{Ledger, Node, append_cri, cri_line, drain};
use kaas_logfiles::{
    CheckpointError, CorruptCheckpointPolicy, MultilineConfig, Startup, TailError, Tailer,
};

const STEP: Duration = Duration::from_millis(50);

fn damaged_checkpoint(damage: impl Fn(&[u8]) -> Vec<u8>) -> (Node, Ledger) {
    let node = Node::new();
    let path = node.container_dir("default", "web", "app").join("0.log");
    append_cri(&path, 0..100);
    let mut tailer = node.tailer(&node.config());
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    drop(tailer);
    append_cri(&path, 100..150);
    let good = std::fs::read(&node.checkpoint).expect("test setup");
    std::fs::write(&node.checkpoint, damage(&good)).expect("test setup");
    (node, ledger)
}

#[test]
fn a_corrupt_checkpoint_is_refused_with_its_reason_when_asked() {
    for (damage, reason) in [
        (
            Box::new(|good: &[u8]| good[..good.len() - 12].to_vec())
                as Box<dyn Fn(&[u8]) -> Vec<u8>>,
            "torn",
        ),
        (
            Box::new(|_: &[u8]| b"\x7fELF \xff\xfe garbage".to_vec()),
            "not UTF-8",
        ),
        (
            // One digit of the first entry (right after the header line) changed.
            Box::new(|good: &[u8]| {
                let mut bad = good.to_vec();
                let first_entry = good.iter().position(|b| *b == b'\n').expect("test setup") + 1;
                bad[first_entry] = if good[first_entry] == b'1' {
                    b'2'
                } else {
                    b'1'
                };
                bad
            }),
            "checksum",
        ),
    ] {
        let (node, _) = damaged_checkpoint(damage);
        let mut config = node.config();
        config.on_corrupt_checkpoint = CorruptCheckpointPolicy::Refuse;
        let error = Tailer::open(config.validate().expect("test setup"))
            .err()
            .expect("refused");
        assert!(
            matches!(
                error,
                TailError::Checkpoint(CheckpointError::Corrupt { .. })
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("is corrupt") && message.contains(reason),
            "{message}"
        );
        assert!(
            message.contains(&node.checkpoint.display().to_string()),
            "{message}"
        );
    }
}

#[test]
fn a_corrupt_checkpoint_is_moved_aside_and_everything_read_again() {
    let (node, mut ledger) = damaged_checkpoint(|good| good[..good.len() / 2].to_vec());
    let mut tailer = node.tailer(&node.config());
    assert!(
        matches!(tailer.startup(), Startup::RecoveredFromCorruptCheckpoint(reason) if reason.contains("torn"))
    );
    let mut aside = node.checkpoint.clone().into_os_string();
    aside.push(".corrupt");
    assert!(std::path::Path::new(&aside).exists(), "kept for inspection");
    let mut clock = Instant::now();
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..150, 100);
    assert_eq!(
        ledger.duplicates(),
        100,
        "the first 100 lines are read again, not skipped"
    );
    // The next start resumes from the new, good checkpoint.
    drop(tailer);
    let tailer = node.tailer(&node.config());
    assert_eq!(*tailer.startup(), Startup::Resumed);
}

#[test]
fn an_open_multiline_record_does_not_duplicate_the_other_streams_lines_after_a_restart() {
    let node = Node::new();
    let mut config = node.config();
    config.multiline = Some(MultilineConfig {
        first_line: "^seq=".into(),
        flush_after: Duration::from_secs(3600),
        max_lines: 1000,
    });
    let path = node.container_dir("default", "java", "app").join("0.log");
    // stdout opens a multiline record (seq=0 plus continuation lines); stderr writes
    // complete records meanwhile.
    let mut text = cri_line(0, "stdout");
    for seq in 1..50 {
        text.push_str(&cri_line(seq, "stderr"));
        text.push_str("2024-01-01T00:00:00Z stdout F \tat frame\n");
    }
    std::fs::write(&path, &text).expect("test setup");
    let mut tailer = node.tailer(&config);
    let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    // Each stream's last record waits for its next first line (or the timeout).
    assert_eq!(
        ledger.delivered().len(),
        48,
        "stderr's records are out but its last, stdout's is open"
    );
    drop(tailer);
    // After the restart the stdout record completes with the next first line.
    append_cri(&path, 50..60);
    let mut tailer = node.tailer(&config);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    assert_eq!(
        ledger.delivered().len(),
        58,
        "stdout's record completed with seq=50"
    );
    clock += Duration::from_secs(7200);
    drain(&mut tailer, &mut ledger, &mut clock, STEP);
    ledger.assert_complete(0..60, 0);
    let first = ledger
        .records
        .iter()
        .find(|r| r.body.starts_with("seq=0"))
        .expect("test setup");
    assert_eq!(
        first.body.lines().count(),
        50,
        "seq=0 with its 49 frames, rebuilt after the restart"
    );
}
