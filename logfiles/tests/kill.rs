//! `kill -9` under load: a child process (this test binary, re-run with
//! [`CHILD_ENV`] set) tails container logs into a "downstream" file, fsyncs it, then
//! commits and saves the checkpoint; the parent writes numbered lines into three
//! containers' logs, rotating them by rename, and SIGKILLs the child at random moments.
//! After the last run drained everything, every written number is downstream (zero
//! loss) and the duplicates are reported.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kaas_logfiles::{StartAt, TailConfig, Tailer};

/// Set (to the work directory) in the child process.
const CHILD_ENV: &str = "KAAS_LOGFILES_KILL_CHILD";
const PODS: u64 = 3;
const LINES_PER_POD: u64 = 6000;
const ROTATE_EVERY: u64 = 1500;

fn config(work: &Path) -> TailConfig {
    let mut config = TailConfig::new(work.join("checkpoint"));
    config.pod_log_root = Some(work.join("pods"));
    config.start_at = StartAt::Beginning;
    config.limits.rotate_wait = Duration::from_millis(200);
    config.limits.max_batch_bytes = 16 * 1024;
    config
}

/// The child: tail, write downstream durably, then commit. Runs until killed, or until
/// the stop file exists and a second passed without records.
fn run_child(work: &Path) {
    let downstream_path = work.join("downstream");
    // A write torn by the kill is cut back to the last whole line: it was never
    // committed, so its records are read again.
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(&downstream_path) {
        file.read_to_end(&mut bytes).expect("read downstream");
    }
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let downstream = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&downstream_path)
        .expect("downstream");
    downstream.set_len(whole as u64).expect("cut the torn tail");
    let mut downstream = OpenOptions::new()
        .append(true)
        .open(&downstream_path)
        .expect("downstream");
    let mut tailer = Tailer::open(config(work).validate().expect("valid")).expect("open");
    let mut idle_since = Instant::now();
    loop {
        let batch = tailer.poll();
        if batch.records.is_empty() {
            tailer.commit(batch.token);
            if work.join("stop").exists()
                && idle_since.elapsed() > Duration::from_secs(1)
                && tailer.unread_bytes() == 0
            {
                tailer.save_checkpoint().expect("save");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        idle_since = Instant::now();
        let text: String = batch
            .records
            .iter()
            .map(|r| format!("{}\n", r.body))
            .collect();
        downstream
            .write_all(text.as_bytes())
            .expect("write downstream");
        downstream.sync_data().expect("sync downstream");
        tailer.commit(batch.token);
        tailer.save_checkpoint().expect("save");
    }
}

fn spawn_child(work: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_process_entry_point", "--exact", "--nocapture"])
        .env(CHILD_ENV, work)
        .spawn()
        .expect("spawn the child")
}

/// The entry point of the child process; without [`CHILD_ENV`] it returns at once.
#[test]
fn child_process_entry_point() {
    if let Some(work) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&work));
    }
}

/// Writes every pod's numbered lines, rotating by rename like the kubelet.
fn write_logs(work: PathBuf) {
    let mut writers: Vec<(PathBuf, File)> = (0..PODS)
        .map(|pod| {
            let dir = work.join(format!("pods/default_p{pod}_uid{pod}/c"));
            std::fs::create_dir_all(&dir).expect("pod dir");
            let path = dir.join("0.log");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("log");
            (path, file)
        })
        .collect();
    for line in 0..LINES_PER_POD {
        for (pod, (path, file)) in writers.iter_mut().enumerate() {
            let seq = pod as u64 * LINES_PER_POD + line;
            writeln!(file, "2024-01-01T00:00:00.{seq:09}Z stdout F seq={seq}").expect("write");
            if line > 0 && line % ROTATE_EVERY == 0 {
                std::fs::rename(&*path, path.with_file_name(format!("0.log.{line}")))
                    .expect("rotate");
                *file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*path)
                    .expect("reopen");
            }
        }
        if line % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn kill_9_under_load_loses_nothing() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let work_path = work.path().to_path_buf();
    std::fs::create_dir_all(work_path.join("pods")).expect("pods");
    let writer = std::thread::spawn({
        let work = work_path.clone();
        move || write_logs(work)
    });
    let mut kills = 0;
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    while !writer.is_finished() {
        let mut child = spawn_child(&work_path);
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(Duration::from_millis(30 + random % 200));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
    }
    writer.join().expect("writer");
    File::create(work_path.join("stop")).expect("stop file");
    let mut last = spawn_child(&work_path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the last run did not drain in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(last.wait().expect("status").success());

    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for line in std::fs::read_to_string(work_path.join("downstream"))
        .expect("downstream")
        .lines()
    {
        let seq = line
            .strip_prefix("seq=")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad record {line:?}"));
        *seen.entry(seq).or_default() += 1;
    }
    let written = PODS * LINES_PER_POD;
    let missing: Vec<u64> = (0..written)
        .filter(|seq| !seen.contains_key(seq))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost after {kills} kills: {missing:?}");
    assert_eq!(seen.len() as u64, written, "nothing but the written lines");
    let duplicates: u64 = seen.values().map(|n| u64::from(n - 1)).sum();
    eprintln!("{kills} kills, {written} lines, {duplicates} duplicates");
    assert!(kills >= 3, "the child was killed during the run ({kills})");
    // Durable downstream but not yet committed at the kill: at most one batch per kill,
    // and a batch is the 16 KiB budget plus at most one line per file (lines are 48+
    // bytes).
    let batch_lines = 16 * 1024 / 48 + PODS;
    assert!(
        duplicates <= kills * batch_lines,
        "{duplicates} duplicates for {kills} kills"
    );
}
