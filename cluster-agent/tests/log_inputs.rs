//! The agent's log inputs (`log_inputs`) on real files: container logs and plain files
//! tailed from a temporary node, and journal files written by Debian's
//! `systemd-journal-remote`, read into OTLP records and fanned out to several
//! consumers. Every line carries a sequence number, so loss and duplicates are
//! counted, not guessed; "crashes" drop the fan-out without a final save, which
//! leaves the disk as `kill -9` would.

use kaas_test_support::journal as journal_common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kaas_cluster_agent::log_inputs::fanout::{DEFAULT_MAX_LAG_BATCHES, REJOIN_CHECK_EVERY};
use kaas_cluster_agent::log_inputs::{
    BatchAck, FanOut, FanOutConfig, JournalReader, JournalSettings, JournalStart, LogBatch,
    LogConsumer, LogReader, NodeIdentity, Outcome, PodEnrichment, PodMetadataCache, TailedLogs,
};
use kaas_logfiles::{StartAt, TailConfig};
use kaas_proto::otlp::{AnyValue, KeyValue, LogRecord, SeverityNumber, any_value::Value};

// ---------------------------------------------------------------- harness

/// A consumer that records what it is offered. It acknowledges at once, or holds the
/// acknowledgements (a hung pipeline) until the test releases them.
struct Recorder {
    name: String,
    hold: AtomicBool,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    /// Every batch offered, in order.
    offered: Vec<Arc<LogBatch>>,
    /// Held acknowledgements with their batches.
    held: Vec<(Arc<LogBatch>, BatchAck)>,
    /// Sequence numbers of the records acknowledged durable, with repeats.
    durable: Vec<u64>,
}

impl Recorder {
    fn new(name: &str, hold: bool) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            hold: AtomicBool::new(hold),
            state: Mutex::default(),
        })
    }

    fn consumer(self: &Arc<Self>) -> Arc<dyn LogConsumer> {
        Arc::clone(self) as Arc<dyn LogConsumer>
    }

    /// Acknowledges every held batch as durable, and the ones to come at once.
    fn recover(&self) {
        self.hold.store(false, Ordering::SeqCst);
        let mut state = self.state.lock().expect("recorder");
        for (batch, ack) in std::mem::take(&mut state.held) {
            state.durable.extend(seqs(&batch));
            ack.complete(Outcome::Durable);
        }
    }

    /// Forgets held acknowledgements without completing them (a crash).
    fn lose_held(&self) {
        self.state.lock().expect("recorder").held.clear();
    }

    fn durable(&self) -> Vec<u64> {
        self.state.lock().expect("recorder").durable.clone()
    }

    fn offered_records(&self) -> Vec<LogRecord> {
        let state = self.state.lock().expect("recorder");
        state
            .offered
            .iter()
            .flat_map(|b| b.resource_logs.iter())
            .flat_map(|r| r.scope_logs.iter())
            .flat_map(|s| s.log_records.iter().cloned())
            .collect()
    }
}

impl LogConsumer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn offer(&self, batch: Arc<LogBatch>, ack: BatchAck) {
        let mut state = self.state.lock().expect("recorder");
        state.offered.push(Arc::clone(&batch));
        if self.hold.load(Ordering::SeqCst) {
            state.held.push((batch, ack));
        } else {
            state.durable.extend(seqs(&batch));
            ack.complete(Outcome::Durable);
        }
    }
}

fn body(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        other => panic!("a string body, not {other:?}"),
    }
}

/// The `seq=N` numbers of a batch's records.
fn seqs(batch: &LogBatch) -> Vec<u64> {
    batch
        .resource_logs
        .iter()
        .flat_map(|r| r.scope_logs.iter())
        .flat_map(|s| s.log_records.iter())
        .filter_map(|record| {
            body(record)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("seq=")?.parse().ok())
        })
        .collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn node() -> NodeIdentity {
    NodeIdentity {
        node_name: "node-a".into(),
        cluster_name: "edge-1".into(),
    }
}

/// Asserts every number of `written` is in `delivered`, and at most `max_duplicates`
/// repeats; returns the repeats.
fn assert_no_loss(
    delivered: &[u64],
    written: std::ops::Range<u64>,
    max_duplicates: usize,
) -> usize {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for seq in delivered {
        *counts.entry(*seq).or_default() += 1;
    }
    let missing: Vec<u64> = written
        .clone()
        .filter(|s| !counts.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert!(
        counts.keys().all(|s| written.contains(s)),
        "only written lines are delivered"
    );
    let duplicates = delivered.len() - counts.len();
    assert!(
        duplicates <= max_duplicates,
        "{duplicates} duplicates, at most {max_duplicates} expected"
    );
    duplicates
}

/// A temporary node with a pod log root, a log root for plain files, and the agent's
/// state directory.
struct TestNode {
    _dir: tempfile::TempDir,
    base: PathBuf,
}

impl TestNode {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("test harness");
        let base = dir.path().canonicalize().expect("test harness");
        for sub in ["var/log/pods", "agent/inputs"] {
            std::fs::create_dir_all(base.join(sub)).expect("test harness");
        }
        Self { _dir: dir, base }
    }

    fn pods(&self) -> PathBuf {
        self.base.join("var/log/pods")
    }

    fn state(&self) -> PathBuf {
        self.base.join("agent/inputs")
    }

    /// `<pods>/<ns>_<pod>_<uid>/<container>/<restarts>.log`, its directory created.
    fn container_log(&self, ns: &str, pod: &str, uid: &str, container: &str, n: u32) -> PathBuf {
        let dir = self
            .pods()
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&dir).expect("test harness");
        dir.join(format!("{n}.log"))
    }

    fn tail_config(&self) -> TailConfig {
        let mut config = TailConfig::new(self.state().join("tail.checkpoint"));
        config.pod_log_root = Some(self.pods());
        config.start_at = StartAt::Beginning;
        config
    }

    fn tailed(&self, config: &TailConfig, enrichment: PodEnrichment) -> TailedLogs {
        TailedLogs::open(config.validate().expect("test harness"), node(), enrichment)
            .expect("test harness")
    }

    fn fan_out<R: LogReader>(&self, reader: R, consumers: &[&Arc<Recorder>]) -> FanOut<R> {
        FanOut::open(
            FanOutConfig::new(self.state().join("detached")),
            reader,
            consumers.iter().map(|c| c.consumer()).collect(),
        )
        .expect("test harness")
    }
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("test harness");
    file.write_all(text.as_bytes()).expect("test harness");
}

fn cri(seqs: std::ops::Range<u64>) -> String {
    seqs.map(|seq| format!("2024-01-01T00:00:00.000000001Z stdout F seq={seq}\n"))
        .collect()
}

/// Rounds until one reads nothing, at most `limit`.
fn drain<R: LogReader>(fan_out: &mut FanOut<R>, limit: usize) {
    for _ in 0..limit {
        let round = fan_out.round();
        assert!(round.errors.is_empty(), "{:?}", round.errors);
        if round.records_read == 0 {
            return;
        }
    }
}

// ---------------------------------------------------------------- runtime

/// Pod `uid-1` (label `app=web`, annotation `team=a`) as the pod watch publishes it,
/// added as `labels` and `annotations` say.
fn enrichment(labels: bool, annotations: bool) -> PodEnrichment {
    let mut pod = Pod::default();
    pod.metadata.uid = Some("uid-1".into());
    pod.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    pod.metadata.annotations = Some([("team".to_owned(), "a".to_owned())].into());
    let (_pods, receiver) = tokio::sync::watch::channel(Arc::new(vec![Arc::new(pod)]));
    PodEnrichment {
        pods: Some(PodMetadataCache::new(receiver)),
        labels,
        annotations,
    }
}

/// Everything the node's container logs hold, read into one consumer.
fn read_containers(node_dir: &TestNode, enrichment: PodEnrichment) -> Arc<Recorder> {
    let consumer = Recorder::new("logs", false);
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&node_dir.tail_config(), enrichment),
        &[&consumer],
    );
    drain(&mut fan_out, 5);
    consumer
}

/// A container's CRI and Docker lines become records with the resource the path, the
/// node and the pod watch give, the record attributes and the runtime's timestamps;
/// labels come only when asked for.
#[test]
fn container_lines_carry_their_pod_container_and_stream() {
    let node_dir = TestNode::new();
    let cri_log = node_dir.container_log("shop", "web-1", "uid-1", "app", 3);
    append(
        &cri_log,
        "2024-01-02T03:04:05.000000006Z stdout F out line\n\
         2024-01-02T03:04:06Z stderr F err line\n",
    );
    let docker_log = node_dir.container_log("shop", "web-1", "uid-1", "sidecar", 0);
    append(
        &docker_log,
        "{\"log\":\"docker line\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-02T03:04:07.5Z\"}\n",
    );
    let consumer = read_containers(&node_dir, enrichment(true, false));

    let state = consumer.state.lock().expect("recorder");
    let resources: Vec<_> = state
        .offered
        .iter()
        .flat_map(|b| b.resource_logs.iter())
        .collect();
    assert_eq!(resources.len(), 2, "one resource per container");
    for resource_logs in &resources {
        let attributes = &resource_logs
            .resource
            .as_ref()
            .expect("test harness")
            .attributes;
        assert_eq!(text(attributes, "k8s.namespace.name"), Some("shop"));
        assert_eq!(text(attributes, "k8s.pod.name"), Some("web-1"));
        assert_eq!(text(attributes, "k8s.pod.uid"), Some("uid-1"));
        assert_eq!(text(attributes, "k8s.node.name"), Some("node-a"));
        assert_eq!(text(attributes, "k8s.cluster.name"), Some("edge-1"));
        assert_eq!(text(attributes, "k8s.pod.label.app"), Some("web"));
        assert_eq!(
            attribute(attributes, "k8s.pod.annotation.team"),
            None,
            "annotations were not asked for"
        );
        let container = text(attributes, "k8s.container.name").expect("test harness");
        let restarts = attribute(attributes, "k8s.container.restart_count");
        let records = &resource_logs.scope_logs[0].log_records;
        match container {
            "app" => {
                assert_eq!(restarts, Some(&Value::IntValue(3)), "from the file name");
                assert_eq!(records.len(), 2);
                assert_eq!(body(&records[0]), "out line");
                assert_eq!(text(&records[0].attributes, "log.iostream"), Some("stdout"));
                assert_eq!(text(&records[1].attributes, "log.iostream"), Some("stderr"));
                assert_eq!(records[0].time_unix_nano, 1_704_164_645_000_000_006);
                assert_eq!(
                    text(&records[0].attributes, "log.file.path"),
                    Some(cri_log.to_str().expect("test harness"))
                );
            }
            "sidecar" => {
                assert_eq!(restarts, Some(&Value::IntValue(0)));
                assert_eq!(body(&records[0]), "docker line");
                assert_eq!(text(&records[0].attributes, "log.iostream"), Some("stderr"));
                assert_eq!(records[0].time_unix_nano, 1_704_164_647_500_000_000);
            }
            other => panic!("unexpected container {other}"),
        }
        for record in records {
            assert!(
                record.observed_time_unix_nano > 1_704_164_647_500_000_000,
                "observed when read, after the runtime's timestamp"
            );
        }
    }
}

/// Without a pipeline asking, no label or annotation reaches a record.
#[test]
fn pod_labels_are_added_only_on_request() {
    let node_dir = TestNode::new();
    let log = node_dir.container_log("shop", "web-1", "uid-1", "app", 0);
    append(&log, &cri(0..1));
    let consumer = read_containers(&node_dir, enrichment(false, false));
    let state = consumer.state.lock().expect("recorder");
    let attributes = &state.offered[0].resource_logs[0]
        .resource
        .as_ref()
        .expect("test harness")
        .attributes;
    assert!(
        attributes
            .iter()
            .all(|kv| !kv.key.starts_with("k8s.pod.label")),
        "{attributes:?}"
    );
    assert_eq!(text(attributes, "k8s.pod.name"), Some("web-1"));
}

// ---------------------------------------------------------------- plain files

/// Plain files by glob below an allowed root: the lines of a real log file arrive;
/// the service-account token and the agent's identity key, reached through symlinks
/// and a hard link inside the root, and a symlink out of the root, deliver nothing.
#[test]
fn plain_files_never_deliver_credentials_or_escape_the_root() {
    let node_dir = TestNode::new();
    let base = &node_dir.base;
    let root = base.join("var/log");
    let app = root.join("app");
    std::fs::create_dir_all(&app).expect("test harness");
    append(&app.join("app.log"), "seq=1 a real line\n");

    let token_dir = base.join("var/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&token_dir).expect("test harness");
    let token = token_dir.join("token");
    append(&token, "SECRET-TOKEN\n");
    let identity = base.join("agent/identity");
    std::fs::create_dir_all(&identity).expect("test harness");
    let key = identity.join("tls.key");
    append(&key, "SECRET-KEY\n");
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).expect("test harness");
    append(&outside.join("elsewhere.log"), "SECRET-OUTSIDE\n");

    std::os::unix::fs::symlink(&token, app.join("token.log")).expect("test harness");
    std::os::unix::fs::symlink(&key, app.join("key.log")).expect("test harness");
    std::os::unix::fs::symlink(outside.join("elsewhere.log"), app.join("escape.log"))
        .expect("test harness");
    std::os::unix::fs::symlink(&outside, app.join("escape-dir")).expect("test harness");
    std::fs::hard_link(&token, app.join("hard-token.log")).expect("test harness");
    std::fs::hard_link(&key, app.join("hard-key.log")).expect("test harness");

    let mut config = TailConfig::new(node_dir.state().join("files.checkpoint"));
    config.start_at = StartAt::Beginning;
    config.allowed_roots = vec![root.clone()];
    config.globs = vec![root.join("**/*.log")];
    config.denied = vec![token_dir.clone(), base.join("agent")];
    let consumer = Recorder::new("node-files", false);
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&consumer],
    );
    drain(&mut fan_out, 5);

    let records = consumer.offered_records();
    let bodies: Vec<String> = records.iter().map(body).collect();
    let paths: Vec<_> = records
        .iter()
        .map(|r| text(&r.attributes, "log.file.path"))
        .collect();
    assert_eq!(
        bodies,
        ["seq=1 a real line"],
        "only the real log file: {paths:?}"
    );
    assert_eq!(
        text(&records[0].attributes, "log.file.path"),
        Some(app.join("app.log").to_str().expect("test harness"))
    );
    assert_eq!(attribute(&records[0].attributes, "log.iostream"), None);
    let status = fan_out.reader().discovery_status();
    let refused: Vec<String> = status
        .refused
        .iter()
        .map(|r| {
            r.path
                .file_name()
                .expect("test harness")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in [
        "token.log",
        "key.log",
        "escape.log",
        "hard-token.log",
        "hard-key.log",
    ] {
        assert!(
            refused.iter().any(|r| r == name),
            "{name} is refused, with a reason: {:?}",
            status.refused
        );
    }
}

// ---------------------------------------------------------------- fan-out

/// A position is committed only once every consumer has the batch durable (or
/// dropped and counted): after a crash with one consumer holding its batches, both
/// are offered everything again; once both acknowledged, nothing.
#[test]
fn position_is_committed_only_behind_every_consumer() {
    let node_dir = TestNode::new();
    let log = node_dir.container_log("shop", "web-1", "uid-1", "app", 0);
    append(&log, &cri(0..10));
    let config = node_dir.tail_config();
    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", true));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &slow],
    );
    drain(&mut fan_out, 5);
    assert_eq!(fast.durable(), (0..10).collect::<Vec<_>>());
    drop(fan_out); // crash: slow never acknowledged
    slow.lose_held();

    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", true));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &slow],
    );
    drain(&mut fan_out, 5);
    assert_eq!(fast.durable(), (0..10).collect::<Vec<_>>(), "read again");
    assert_eq!(
        seqs_offered(&slow),
        (0..10).collect::<Vec<_>>(),
        "read again"
    );
    // The slow pipeline's policy drops the batch: counted, and committed like durable.
    for (_, ack) in std::mem::take(&mut slow.state.lock().expect("recorder").held) {
        ack.complete(Outcome::Dropped { records: 10 });
    }
    drain(&mut fan_out, 5);
    assert_eq!(fan_out.consumers()[1].records_dropped, 10);
    assert_eq!(fan_out.consumers()[1].outstanding, 0);
    drop(fan_out);

    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", false));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &slow],
    );
    drain(&mut fan_out, 5);
    assert!(
        fast.durable().is_empty() && slow.durable().is_empty(),
        "nothing again"
    );
    append(&log, &cri(10..12));
    // The file was at its end when this reader started, so it is not open: its growth
    // is found by the next walk of the pod log directories.
    std::thread::sleep(kaas_logfiles::DEFAULT_DISCOVERY_INTERVAL);
    drain(&mut fan_out, 5);
    assert_eq!(fast.durable(), [10, 11]);
    assert_eq!(slow.durable(), [10, 11]);
}

fn seqs_offered(recorder: &Recorder) -> Vec<u64> {
    let state = recorder.state.lock().expect("recorder");
    state.offered.iter().flat_map(|b| seqs(b)).collect()
}

/// Kill and restart under load, again and again: lines are written between rounds,
/// one consumer acknowledges at once, the other in bursts, and every incarnation ends
/// in a crash that loses whatever was not acknowledged. Over all incarnations each
/// consumer has every line durable, and the repeats stay within what the readers can
/// hold uncommitted.
#[test]
fn kill_and_restart_lose_nothing_and_repeat_boundedly() {
    let node_dir = TestNode::new();
    let logs = [
        node_dir.container_log("shop", "web-1", "uid-1", "app", 0),
        node_dir.container_log("shop", "web-2", "uid-2", "app", 0),
    ];
    let mut config = node_dir.tail_config();
    config.limits.max_batch_bytes = 4096;
    let (mut fast_durable, mut bursty_durable) = (Vec::new(), Vec::new());
    let mut next = 0u64;
    const INCARNATIONS: u64 = 6;
    const ROUNDS: u64 = 13;
    for incarnation in 0..INCARNATIONS {
        let (fast, bursty) = (Recorder::new("fast", false), Recorder::new("bursty", true));
        let mut fan_out = node_dir.fan_out(
            node_dir.tailed(&config, PodEnrichment::default()),
            &[&fast, &bursty],
        );
        // 13 rounds: the last one's batches are still held when the crash comes.
        for round in 0..ROUNDS {
            let count = 20 + (round * 7 + incarnation) % 30;
            append(&logs[(round % 2) as usize], &cri(next..next + count));
            next += count;
            let report = fan_out.round();
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            if round % 3 == 2 {
                bursty.recover();
                bursty.hold.store(true, Ordering::SeqCst);
            }
        }
        // The crash: held acknowledgements are lost with the process.
        assert!(
            !bursty.state.lock().expect("recorder").held.is_empty(),
            "a crash with batches in flight"
        );
        bursty.lose_held();
        drop(fan_out);
        fast_durable.extend(fast.durable());
        bursty_durable.extend(bursty.durable());
    }
    let (fast, bursty) = (Recorder::new("fast", false), Recorder::new("bursty", false));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &bursty],
    );
    drain(&mut fan_out, 200);
    fast_durable.extend(fast.durable());
    bursty_durable.extend(bursty.durable());
    // Per crash, what was read after the last commit: the held round's lines (at
    // most 49), which the fast consumer had durable and is offered again.
    let bound = (INCARNATIONS * 50) as usize;
    let repeats = assert_no_loss(&fast_durable, 0..next, bound);
    assert!(
        repeats > 0,
        "crashes with unacknowledged batches do repeat lines"
    );
    assert_no_loss(&bursty_durable, 0..next, bound);
}

/// One consumer hangs for good (it never acknowledges) while lines keep coming: the
/// other keeps receiving every new line, well past the reader's 64-batch window; the
/// hung one is detached onto its own position, holds a bounded number of batches,
/// and when it recovers it gets every line and rejoins the shared reader.
#[test]
fn a_hung_consumer_does_not_stop_the_others() {
    let node_dir = TestNode::new();
    let log = node_dir.container_log("shop", "web-1", "uid-1", "app", 0);
    let config = node_dir.tail_config();
    let (fast, stuck) = (Recorder::new("fast", false), Recorder::new("stuck", true));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &stuck],
    );
    const LINES: u64 = 200;
    for seq in 0..LINES {
        append(&log, &cri(seq..seq + 1));
        fan_out.round();
        assert_eq!(
            fast.durable().last(),
            Some(&seq),
            "the healthy consumer has line {seq} in the round it was written"
        );
    }
    let status = &fan_out.consumers()[1];
    assert!(status.detached, "{status:?}");
    assert_eq!(status.detachments, 1);
    let window = kaas_logfiles::DEFAULT_MAX_UNACKED_BATCHES;
    assert!(
        status.outstanding <= DEFAULT_MAX_LAG_BATCHES + window,
        "a hung consumer holds a bounded number of batches: {status:?}"
    );
    let position = node_dir.state().join("detached/stuck.position");
    assert!(position.exists(), "its position is its own");

    // A restart while it is detached: it resumes on its own position, the healthy
    // one where the shared reader was, without a repeat.
    drop(fan_out);
    stuck.lose_held();
    let fast_before = fast.durable();
    let (fast, stuck) = (Recorder::new("fast", false), Recorder::new("stuck", true));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&fast, &stuck],
    );
    assert!(
        fan_out.consumers()[1].detached,
        "still detached after the restart"
    );
    append(&log, &cri(LINES..LINES + 1));
    drain(&mut fan_out, 5);
    assert_eq!(
        fast.durable(),
        [LINES],
        "the healthy one: only the new line"
    );
    assert_no_loss(&fast_before, 0..LINES, 0);

    // It recovers while lines keep coming: everything arrives, and it rejoins the
    // shared reader once both are at the same position after a round.
    stuck.recover();
    let mut next = LINES + 1;
    for _ in 0..(REJOIN_CHECK_EVERY * 2 + window as u64) {
        append(&log, &cri(next..next + 1));
        next += 1;
        fan_out.round();
        stuck.recover();
        if !fan_out.consumers()[1].detached {
            break;
        }
    }
    let status = &fan_out.consumers()[1];
    assert!(!status.detached && status.rejoins == 1, "{status:?}");
    assert!(
        !position.exists(),
        "its position file is gone once it rejoined"
    );
    append(&log, &cri(next..next + 1));
    drain(&mut fan_out, 5);
    assert_no_loss(&stuck.durable(), 0..next + 1, 0);
    assert_no_loss(&fast.durable(), LINES..next + 1, 0);
}

// ---------------------------------------------------------------- journal

const SOURCE_TIME_USEC: u64 = 1_700_000_000_123_456;

/// The units entries come from in turn; the first two are the default allow-list.
const JOURNAL_UNITS: [&str; 3] = ["kubelet.service", "containerd.service", "ssh.service"];

/// Entry `n`'s message; every fifth one is long (a stack trace's size), so the writer
/// stores it zstd-compressed.
fn message(n: u64, unit: &str) -> String {
    if n % 5 == 4 {
        format!("seq={n} from {unit} {}", "compressible text ".repeat(200))
    } else {
        format!("seq={n} from {unit}")
    }
}

/// Journal entries numbered from `first`: kubelet, containerd and ssh in turn, with
/// priorities, the host name, and for kubelet a source timestamp.
fn journal_entries(first: u64, count: u64) -> Vec<journal_common::Fed> {
    (first..first + count)
        .map(|n| {
            let unit = JOURNAL_UNITS[(n % 3) as usize];
            let mut fields = vec![
                ("MESSAGE".to_owned(), message(n, unit).into_bytes()),
                ("_SYSTEMD_UNIT".to_owned(), unit.as_bytes().to_vec()),
                (
                    "PRIORITY".to_owned(),
                    if n % 3 == 0 {
                        b"3".to_vec()
                    } else {
                        b"6".to_vec()
                    },
                ),
                ("_HOSTNAME".to_owned(), b"node-a".to_vec()),
            ];
            if n % 3 == 0 {
                fields.push((
                    "_SOURCE_REALTIME_TIMESTAMP".to_owned(),
                    SOURCE_TIME_USEC.to_string().into_bytes(),
                ));
            }
            journal_common::Fed {
                realtime: 1_700_000_001_000_000 + n,
                monotonic: 1_000 + n,
                fields,
            }
        })
        .collect()
}

/// Sequence numbers of the kubelet and containerd entries among `first..first+count`.
fn allowed(range: std::ops::Range<u64>) -> Vec<u64> {
    range.filter(|n| n % 3 != 2).collect()
}

struct Journal {
    binary: PathBuf,
    dir: PathBuf,
}

impl Journal {
    fn new(node_dir: &TestNode) -> Option<Self> {
        let binary = journal_common::journal_remote()?;
        let dir = node_dir.base.join("var/log/journal/machine");
        std::fs::create_dir_all(&dir).expect("test harness");
        Some(Self { binary, dir })
    }

    fn write(&self, entries: &[journal_common::Fed]) {
        journal_common::write_journal(&self.binary, &self.dir.join("system.journal"), entries, &[]);
    }

    fn reader(&self, node_dir: &TestNode) -> JournalReader {
        let mut settings =
            JournalSettings::new(self.dir.clone(), node_dir.state().join("journal.position"));
        settings.start_at = JournalStart::Beginning;
        JournalReader::open(settings, node()).expect("test harness")
    }
}

/// Entries of the allowed units (kubelet, containerd by default) in a compressed
/// journal file become records: MESSAGE the body (decompressed), PRIORITY the severity, the unit and host as attributes, the
/// source timestamp as the time; ssh's entries are not read.
#[test]
fn journal_entries_of_allowed_units_become_records() {
    let node_dir = TestNode::new();
    let Some(journal) = Journal::new(&node_dir) else {
        return;
    };
    journal.write(&journal_entries(0, 30));
    let compressed =
        journal_common::data_objects_by_compression(&journal.dir.join("system.journal"));
    assert!(
        compressed.get(&4).copied().unwrap_or(0) >= 5,
        "long messages are stored zstd-compressed: {compressed:?}"
    );
    let consumer = Recorder::new("node", false);
    let mut fan_out = node_dir.fan_out(journal.reader(&node_dir), &[&consumer]);
    drain(&mut fan_out, 5);
    assert_eq!(consumer.durable(), allowed(0..30));
    let bodies: Vec<String> = consumer.offered_records().iter().map(body).collect();
    let expected: Vec<String> = allowed(0..30)
        .into_iter()
        .map(|n| {
            message(
                n,
                ["kubelet.service", "containerd.service"][(n % 3) as usize],
            )
        })
        .collect();
    assert_eq!(
        bodies, expected,
        "every message whole, compressed ones included"
    );
    let state = consumer.state.lock().expect("recorder");
    let resource = state.offered[0].resource_logs[0]
        .resource
        .as_ref()
        .expect("test harness");
    assert_eq!(text(&resource.attributes, "host.name"), Some("node-a"));
    assert_eq!(text(&resource.attributes, "k8s.node.name"), Some("node-a"));
    assert_eq!(
        text(&resource.attributes, "k8s.cluster.name"),
        Some("edge-1")
    );
    drop(state);
    let records = consumer.offered_records();
    assert_journal_record(
        &records[0],
        ("kubelet.service", "err", SeverityNumber::Error),
        SOURCE_TIME_USEC * 1000,
    );
    assert_eq!(body(&records[0]), "seq=0 from kubelet.service");
    let containerd = &records[1];
    // Without a source time: when journald received it.
    assert_journal_record(
        containerd,
        ("containerd.service", "info", SeverityNumber::Info),
        (1_700_000_001_000_000 + 1) * 1000,
    );
    assert!(containerd.observed_time_unix_nano > containerd.time_unix_nano);
}

/// Asserts a journal record's unit, severity text and number, and time.
fn assert_journal_record(
    record: &LogRecord,
    (unit, severity_text, severity_number): (&str, &str, SeverityNumber),
    time_unix_nano: u64,
) {
    assert_eq!(text(&record.attributes, "systemd.unit"), Some(unit));
    assert_eq!(record.severity_text, severity_text);
    assert_eq!(record.severity_number, severity_number as i32);
    assert_eq!(record.time_unix_nano, time_unix_nano);
}

/// The journal's cursor is committed behind every consumer and persisted: a crash
/// with a consumer holding its batch repeats it, a restart after both acknowledged
/// reads only what was written since, and nothing is ever lost.
#[test]
fn journal_resumes_from_the_committed_cursor() {
    let node_dir = TestNode::new();
    let Some(journal) = Journal::new(&node_dir) else {
        return;
    };
    journal.write(&journal_entries(0, 30));
    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", true));
    let mut fan_out = node_dir.fan_out(journal.reader(&node_dir), &[&fast, &slow]);
    drain(&mut fan_out, 5);
    assert_eq!(fast.durable(), allowed(0..30));
    drop(fan_out); // crash before slow acknowledged
    slow.lose_held();

    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", false));
    let mut fan_out = node_dir.fan_out(journal.reader(&node_dir), &[&fast, &slow]);
    drain(&mut fan_out, 5);
    assert_eq!(
        slow.durable(),
        allowed(0..30),
        "offered again from the cursor"
    );
    assert_eq!(fast.durable(), allowed(0..30));
    drop(fan_out);

    journal.write(&journal_entries(30, 15));
    let (fast, slow) = (Recorder::new("fast", false), Recorder::new("slow", false));
    let mut fan_out = node_dir.fan_out(journal.reader(&node_dir), &[&fast, &slow]);
    drain(&mut fan_out, 5);
    assert_eq!(fast.durable(), allowed(30..45), "only what came since");
    assert_eq!(slow.durable(), allowed(30..45));
}

/// By default the journal is read from its end at the first start, and that start
/// is persisted at once: a restart before anything new was read is not another first
/// start, so what was written in between is read, not skipped.
#[test]
fn journal_starts_at_its_end_once() {
    let node_dir = TestNode::new();
    let Some(journal) = Journal::new(&node_dir) else {
        return;
    };
    journal.write(&journal_entries(0, 9));
    let settings = JournalSettings::new(
        journal.dir.clone(),
        node_dir.state().join("journal.position"),
    );
    let consumer = Recorder::new("node", false);
    let reader = JournalReader::open(settings.clone(), node()).expect("open");
    let mut fan_out = node_dir.fan_out(reader, &[&consumer]);
    drain(&mut fan_out, 5);
    assert!(consumer.durable().is_empty(), "what was there is skipped");
    drop(fan_out); // a crash before anything new came

    journal.write(&journal_entries(9, 9));
    let consumer = Recorder::new("node", false);
    let reader = JournalReader::open(settings, node()).expect("open");
    let mut fan_out = node_dir.fan_out(reader, &[&consumer]);
    drain(&mut fan_out, 5);
    assert_eq!(
        consumer.durable(),
        allowed(9..18),
        "written while it was down"
    );
}

/// A hung consumer of the journal is detached onto its own cursor; the other reads
/// every new entry as it is written.
#[test]
fn a_hung_journal_consumer_does_not_stop_the_other() {
    let node_dir = TestNode::new();
    let Some(journal) = Journal::new(&node_dir) else {
        return;
    };
    let (fast, stuck) = (Recorder::new("fast", false), Recorder::new("stuck", true));
    let mut settings = JournalSettings::new(
        journal.dir.clone(),
        node_dir.state().join("journal.position"),
    );
    settings.start_at = JournalStart::Beginning;
    settings.max_uncommitted = 8;
    // Open only once the directory holds a file.
    journal.write(&journal_entries(0, 3));
    let reader = JournalReader::open(settings, node()).expect("test harness");
    let mut fan_out = node_dir.fan_out(reader, &[&fast, &stuck]);
    fan_out.round();
    const WRITES: u64 = 20;
    for write in 1..=WRITES {
        journal.write(&journal_entries(write * 3, 3));
        fan_out.round();
        assert_eq!(
            fast.durable(),
            allowed(0..write * 3 + 3),
            "the healthy consumer has write {write} at once"
        );
    }
    let status = &fan_out.consumers()[1];
    assert!(status.detached && status.outstanding <= 8 + 8, "{status:?}");
    stuck.recover();
    for _ in 0..20 {
        fan_out.round();
        stuck.recover();
    }
    let status = &fan_out.consumers()[1];
    assert!(
        !status.detached && status.rejoins == 1,
        "caught up at the shared cursor, it rejoined: {status:?}"
    );
    let durable = stuck.durable();
    let delivered: std::collections::BTreeSet<u64> = durable.iter().copied().collect();
    assert_eq!(
        delivered.into_iter().collect::<Vec<_>>(),
        allowed(0..(WRITES + 1) * 3),
        "every allowed entry, none lost"
    );
    assert!(
        durable.len() - allowed(0..(WRITES + 1) * 3).len() <= 2 * 16,
        "repeats bounded by what the shared reader held past its commit"
    );
}

// ---------------------------------------------------------------- position files

/// A consumer name names a file in the input's state directory, so only DNS labels
/// are accepted, each once: a name that would lead elsewhere, or share a file, is
/// refused before anything is written.
#[test]
fn consumer_names_that_are_not_dns_labels_are_refused() {
    let node_dir = TestNode::new();
    for name in [
        "../../identity/tls",
        "a/b",
        "",
        "Upper",
        "-x",
        &"x".repeat(64),
    ] {
        let consumer = Recorder::new(name, false);
        let result = FanOut::open(
            FanOutConfig::new(node_dir.state().join("detached")),
            node_dir.tailed(&node_dir.tail_config(), PodEnrichment::default()),
            vec![consumer.consumer()],
        );
        let Err(error) = result else {
            panic!("{name:?} was accepted");
        };
        assert!(
            error.to_string().contains("is not a DNS label"),
            "{name:?}: {error}"
        );
    }
    let twice = [Recorder::new("logs", false), Recorder::new("logs", false)];
    let result = FanOut::open(
        FanOutConfig::new(node_dir.state().join("detached")),
        node_dir.tailed(&node_dir.tail_config(), PodEnrichment::default()),
        twice.iter().map(Recorder::consumer).collect(),
    );
    assert!(
        matches!(&result, Err(error) if error.to_string().contains("given twice")),
        "one position file per name"
    );
}

/// Position files of consumers that are gone (a deleted pipeline) are removed when the
/// fan-out opens; a known consumer's file makes it start on its own position, and one
/// at the shared position rejoins at once.
#[test]
fn position_files_decide_where_each_consumer_starts() {
    let node_dir = TestNode::new();
    let log = node_dir.container_log("shop", "web-1", "uid-1", "app", 0);
    append(&log, &cri(0..5));
    let detached = node_dir.state().join("detached");
    let config = node_dir.tail_config();
    let start = node_dir.state().join("start.position");
    let mut probe = node_dir.tailed(&config, PodEnrichment::default());
    probe.save_position_as(&start).expect("test harness");
    drop(probe);
    let shared = Recorder::new("shared", false);
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&shared],
    );
    drain(&mut fan_out, 5);
    drop(fan_out);

    // "kept" was detached at the start; "gone" is a pipeline that no longer exists.
    std::fs::copy(&start, detached.join("kept.position")).expect("test harness");
    std::fs::copy(&start, detached.join("gone.position")).expect("test harness");
    let (shared, kept) = (Recorder::new("shared", false), Recorder::new("kept", false));
    let mut fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&shared, &kept],
    );
    assert!(!detached.join("gone.position").exists());
    assert!(
        fan_out.consumers()[1].detached,
        "starts on its own position"
    );
    drain(&mut fan_out, 5);
    assert!(
        shared.durable().is_empty(),
        "the shared position was past it all"
    );
    assert_eq!(kept.durable(), (0..5).collect::<Vec<_>>());
    drop(fan_out);

    let (shared, kept) = (Recorder::new("shared", false), Recorder::new("kept", false));
    let fan_out = node_dir.fan_out(
        node_dir.tailed(&config, PodEnrichment::default()),
        &[&shared, &kept],
    );
    assert!(
        !fan_out.consumers()[1].detached,
        "at the shared position, it rejoins when opened"
    );
    assert!(!detached.join("kept.position").exists());
}

// ---------------------------------------------------------------- kill -9

/// Where the child process finds the node and writes its ledgers.
const CHILD_BASE: &str = "KAAS_LOG_INPUTS_CHILD_BASE";

/// A consumer that makes each batch durable by appending its sequence numbers to a
/// ledger file (synced) before it acknowledges, as the buffer does before its hook.
struct LedgerConsumer {
    name: String,
    ledger: Mutex<std::fs::File>,
}

impl LogConsumer for LedgerConsumer {
    fn name(&self) -> &str {
        &self.name
    }

    fn offer(&self, batch: Arc<LogBatch>, ack: BatchAck) {
        let text: String = seqs(&batch).iter().map(|s| format!("{s}\n")).collect();
        let mut ledger = self.ledger.lock().expect("ledger");
        ledger.write_all(text.as_bytes()).expect("ledger");
        ledger.sync_data().expect("ledger");
        ack.complete(Outcome::Durable);
    }
}

fn ledger(base: &Path, name: &str) -> PathBuf {
    base.join(format!("{name}.ledger"))
}

/// The child side of [`kill_9_under_load_loses_nothing`]: reads the node's container
/// logs into two ledger consumers until it is killed. Run only as that child.
#[test]
#[ignore = "run by kill_9_under_load_loses_nothing as the process it kills"]
fn kill_9_child_reader() {
    let Some(base) = std::env::var_os(CHILD_BASE).map(PathBuf::from) else {
        return;
    };
    let node_dir = TestNode {
        _dir: tempfile::tempdir().expect("child"),
        base,
    };
    let consumers: Vec<Arc<dyn LogConsumer>> = ["a", "b"]
        .iter()
        .map(|name| {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(ledger(&node_dir.base, name))
                .expect("ledger");
            Arc::new(LedgerConsumer {
                name: (*name).to_owned(),
                ledger: Mutex::new(file),
            }) as Arc<dyn LogConsumer>
        })
        .collect();
    let mut fan_out = FanOut::open(
        FanOutConfig::new(node_dir.state().join("detached")),
        node_dir.tailed(&node_dir.tail_config(), PodEnrichment::default()),
        consumers,
    )
    .expect("child");
    loop {
        fan_out.round();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `kill -9` under load, for real: a child process reads while the test writes, and
/// is killed and restarted again and again. Every line written is in both ledgers,
/// and the repeats are bounded by what was read after the last commit.
#[test]
fn kill_9_under_load_loses_nothing() {
    let node_dir = TestNode::new();
    let logs = [
        node_dir.container_log("shop", "web-1", "uid-1", "app", 0),
        node_dir.container_log("shop", "web-2", "uid-2", "app", 0),
    ];
    let spawn = || {
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "kill_9_child_reader", "--ignored", "--nocapture"])
            .env(CHILD_BASE, &node_dir.base)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("child")
    };
    let read = |name: &str| -> Vec<u64> {
        std::fs::read_to_string(ledger(&node_dir.base, name))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.parse().ok())
            .collect()
    };
    let file_bytes = || -> u64 {
        logs.iter()
            .map(|log| std::fs::metadata(log).map_or(0, |m| m.len()))
            .sum()
    };
    let committed_bytes = || -> u64 {
        kaas_logfiles::Checkpoint::load(&node_dir.state().join("tail.checkpoint"))
            .ok()
            .flatten()
            .map_or(0, |c| c.files.iter().map(|f| f.offset).sum())
    };
    // Deadlines only bound a hang; nothing passes or fails by time.
    let wait_until = |done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "the child reads");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let mut written = 0u64;
    // Lines written after a halfway commit: what a kill can make be read again.
    let mut in_flight = 0u64;
    const KILLS: u64 = 5;
    const BURSTS: u64 = 20;
    for incarnation in 0..KILLS {
        let mut child = spawn();
        let mut halfway = 0;
        for burst in 0..BURSTS {
            let count = 10 + (burst * 13 + incarnation) % 40;
            append(&logs[(burst % 2) as usize], &cri(written..written + count));
            written += count;
            if burst == BURSTS / 2 {
                // Halfway, the child has read and committed everything so far.
                wait_until(&|| committed_bytes() == file_bytes());
                halfway = read("a").len();
            } else if burst > BURSTS / 2 {
                in_flight += count;
            }
        }
        // Killed while it reads the second half.
        wait_until(&|| read("a").len() > halfway);
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
    }
    // A last incarnation reads the rest.
    let mut child = spawn();
    let complete = |name: &str| {
        let set: std::collections::BTreeSet<_> = read(name).into_iter().collect();
        set.len() as u64 == written
    };
    wait_until(&|| complete("a") && complete("b"));
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    // Per kill, at most what was read after the last persisted commit: the lines
    // written after that incarnation's halfway commit.
    let bound = in_flight as usize;
    for name in ["a", "b"] {
        let repeats = assert_no_loss(&read(name), 0..written, bound);
        eprintln!("{name}: {written} lines, {repeats} repeated after {KILLS} kills");
    }
}

// ---------------------------------------------------------------- selection

/// Each pipeline takes its part of the shared batch: system namespaces only when
/// asked, containers by name, pods by all of their labels (a pod the watch has not
/// published yet is taken), and nothing of another input.
#[test]
fn each_pipeline_selects_its_containers_from_the_shared_batch() {
    use kaas_cluster_agent::log_inputs::RuntimeSelection;
    use kaas_pipeline::input::NamespaceSelector;
    use kaas_pipeline::logs::input::{
        ContainerSelector, StartAt as InputStart, ValidatedRuntimeLogInput,
    };
    use kaas_pipeline::selector::PodSelector;

    let node_dir = TestNode::new();
    for (ns, pod, uid, container) in [
        ("shop", "web-1", "uid-1", "app"),
        ("shop", "web-1", "uid-1", "istio-proxy"),
        ("shop", "batch-1", "uid-9", "app"),
        ("shop", "new-1", "uid-new", "app"),
        ("kube-system", "dns-1", "uid-2", "coredns"),
    ] {
        append(
            &node_dir.container_log(ns, pod, uid, container, 0),
            &cri(0..1),
        );
    }
    let mut web = Pod::default();
    web.metadata.uid = Some("uid-1".into());
    web.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    let mut batch_pod = Pod::default();
    batch_pod.metadata.uid = Some("uid-9".into());
    batch_pod.metadata.labels = Some([("app".to_owned(), "batch".to_owned())].into());
    let (_pods, receiver) =
        tokio::sync::watch::channel(Arc::new(vec![Arc::new(web), Arc::new(batch_pod)]));
    let pods = PodMetadataCache::new(receiver);
    let consumer = read_containers(&node_dir, PodEnrichment::default());
    // A plain file's resource (node and cluster only) in the same batch.
    let plain = kaas_proto::otlp::ResourceLogs {
        resource: Some(kaas_proto::otlp::Resource {
            attributes: vec![KeyValue {
                key: "k8s.node.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("node-a".into())),
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let batch = LogBatch {
        resource_logs: std::iter::once(plain)
            .chain(
                consumer
                    .state
                    .lock()
                    .expect("recorder")
                    .offered
                    .iter()
                    .flat_map(|b| b.resource_logs.iter().cloned()),
            )
            .collect(),
        records: 6,
    };
    let input = |namespaces, containers, pod_selector| ValidatedRuntimeLogInput {
        namespaces,
        containers,
        pod_selector,
        keep_original_body: true,
        multiline: None,
        start_at: InputStart::End,
        pod_labels: false,
        pod_annotations: false,
    };
    let taken = |selection: &RuntimeSelection| -> Vec<String> {
        let mut taken: Vec<String> = selection
            .select(&batch, Some(&pods))
            .iter()
            .map(|r| {
                let attributes = &r.resource.as_ref().expect("resource").attributes;
                format!(
                    "{}/{}",
                    text(attributes, "k8s.pod.name").expect("pod"),
                    text(attributes, "k8s.container.name").expect("container")
                )
            })
            .collect();
        taken.sort();
        taken
    };
    let everything = RuntimeSelection::new(&input(
        NamespaceSelector::default(),
        ContainerSelector::default(),
        PodSelector::default(),
    ));
    assert_eq!(
        taken(&everything),
        ["batch-1/app", "new-1/app", "web-1/app", "web-1/istio-proxy"],
        "system namespaces are left out by default, and the plain file's resource"
    );
    let web_only = RuntimeSelection::new(&input(
        NamespaceSelector::default(),
        ContainerSelector {
            exclude: vec!["istio-proxy".into()],
            ..ContainerSelector::default()
        },
        PodSelector {
            match_labels: [("app".to_owned(), "web".to_owned())].into(),
            ..PodSelector::default()
        },
    ));
    assert_eq!(
        taken(&web_only),
        ["new-1/app", "web-1/app"],
        "by label, and a pod not published yet is taken rather than lost"
    );
    let system = RuntimeSelection::new(&input(
        NamespaceSelector {
            system: true,
            ..NamespaceSelector::default()
        },
        ContainerSelector {
            include: vec!["coredns".into()],
            ..ContainerSelector::default()
        },
        PodSelector::default(),
    ));
    assert_eq!(taken(&system), ["dns-1/coredns"]);
}
