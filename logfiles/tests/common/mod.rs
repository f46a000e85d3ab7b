//! Shared harness for the tailing tests: real files in a temporary directory, lines that
//! each carry a unique sequence number, and a ledger of what was delivered.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kaas_logfiles::{LogRecord, StartAt, TailConfig, Tailer};

/// A temporary node: `var/log/pods` below it, and a checkpoint beside.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub pods: PathBuf,
    pub checkpoint: PathBuf,
}

impl Node {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("test harness");
        let base = dir.path().canonicalize().expect("test harness");
        let pods = base.join("var/log/pods");
        std::fs::create_dir_all(&pods).expect("test harness");
        std::fs::create_dir_all(base.join("agent")).expect("test harness");
        let checkpoint = base.join("agent/checkpoint");
        Self {
            dir,
            pods,
            checkpoint,
        }
    }

    pub fn base(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("test harness")
    }

    /// A container's log directory, created.
    pub fn container_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        let dir = self
            .pods
            .join(format!("{namespace}_{pod}_uid-{pod}"))
            .join(container);
        std::fs::create_dir_all(&dir).expect("test harness");
        dir
    }

    /// A configuration reading the pod root from the beginning, with quick rotation.
    pub fn config(&self) -> TailConfig {
        let mut config = TailConfig::new(self.checkpoint.clone());
        config.pod_log_root = Some(self.pods.clone());
        config.start_at = StartAt::Beginning;
        config.limits.rotate_wait = Duration::from_millis(100);
        config
    }

    /// Opens a tailer on `config` and reads until nothing more comes.
    pub fn read_all(&self, config: &TailConfig) -> (Tailer, Ledger) {
        let mut tailer = self.tailer(config);
        let (mut ledger, mut clock) = (Ledger::default(), Instant::now());
        drain(
            &mut tailer,
            &mut ledger,
            &mut clock,
            Duration::from_millis(50),
        );
        (tailer, ledger)
    }

    pub fn tailer(&self, config: &TailConfig) -> Tailer {
        Tailer::open(config.validate().expect("test harness")).expect("test harness")
    }
}

/// A CRI line carrying `seq`.
pub fn cri_line(seq: u64, stream: &str) -> String {
    format!(
        "2024-01-01T00:00:00.{:09}Z {stream} F seq={seq}\n",
        seq % 1_000_000_000
    )
}

/// Appends CRI lines for `seqs` to `path`.
pub fn append_cri(path: &Path, seqs: impl IntoIterator<Item = u64>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("test harness");
    let text: String = seqs
        .into_iter()
        .map(|seq| cri_line(seq, "stdout"))
        .collect();
    file.write_all(text.as_bytes()).expect("test harness");
}

/// Appends CRI lines through an already open handle (a writer that keeps its file open).
pub fn write_cri(file: &mut File, seqs: impl IntoIterator<Item = u64>) {
    let text: String = seqs
        .into_iter()
        .map(|seq| cri_line(seq, "stdout"))
        .collect();
    file.write_all(text.as_bytes()).expect("test harness");
}

/// What was delivered, by sequence number.
#[derive(Default, Debug)]
pub struct Ledger {
    pub seen: BTreeMap<u64, u32>,
    pub records: Vec<LogRecord>,
}

impl Ledger {
    pub fn take(&mut self, records: Vec<LogRecord>) {
        for record in &records {
            for word in record.body.split_whitespace() {
                if let Some(seq) = word.strip_prefix("seq=").and_then(|s| s.parse().ok()) {
                    *self.seen.entry(seq).or_default() += 1;
                }
            }
        }
        self.records.extend(records);
    }

    pub fn delivered(&self) -> BTreeSet<u64> {
        self.seen.keys().copied().collect()
    }

    pub fn duplicates(&self) -> u64 {
        self.seen.values().map(|n| u64::from(n - 1)).sum()
    }

    /// Asserts the delivered set equals `written`, and at most `max_duplicates`.
    pub fn assert_complete(&self, written: impl IntoIterator<Item = u64>, max_duplicates: u64) {
        let written: BTreeSet<u64> = written.into_iter().collect();
        let delivered = self.delivered();
        let missing: Vec<_> = written.difference(&delivered).take(10).collect();
        let extra: Vec<_> = delivered.difference(&written).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, unexpected {extra:?}"
        );
        assert!(
            self.duplicates() <= max_duplicates,
            "{} duplicates, at most {max_duplicates}",
            self.duplicates()
        );
    }
}

/// Polls and commits until three polls in a row deliver and read nothing, advancing a fake
/// clock by `step` each poll; saves the checkpoint at the end. Returns the most
/// descriptors that were open after a poll.
pub fn drain(
    tailer: &mut Tailer,
    ledger: &mut Ledger,
    clock: &mut Instant,
    step: Duration,
) -> usize {
    let (mut quiet, mut most_open, mut unread) = (0, 0, u64::MAX);
    while quiet < 3 {
        *clock += step;
        let delivered = poll_once(tailer, ledger, *clock);
        most_open = most_open.max(tailer.open_files());
        let progressed = delivered > 0 || tailer.unread_bytes() != unread;
        unread = tailer.unread_bytes();
        quiet = if progressed { 0 } else { quiet + 1 };
    }
    tailer.save_checkpoint().expect("test harness");
    most_open
}

/// One poll at `now`, its records taken into the ledger and its batch committed.
/// Returns how many records it delivered.
pub fn poll_once(tailer: &mut Tailer, ledger: &mut Ledger, now: Instant) -> usize {
    let batch = tailer.poll_at(now);
    let delivered = batch.records.len();
    ledger.take(batch.records);
    tailer.commit(batch.token);
    delivered
}
