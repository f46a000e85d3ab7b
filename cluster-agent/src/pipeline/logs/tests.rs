//! The log pipeline's intake on a real disk buffer (no sender, no network): what it
//! takes of each input, how it completes acknowledgements, and the processing it is
//! built with.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kaas_buffer::{DiskBuffer, Limits};
use kaas_pipeline::ValidationContext;
use kaas_pipeline::buffer::WhenFull;
use kaas_pipeline::logs::{LogPipeline, ValidatedLogPipeline, validate_log_pipeline};
use kaas_proto::otlp::{KeyValue, LogRecord, ResourceLogs};
use tokio::sync::Notify;

use super::*;
use crate::internal_events::{DropReason, LogProcessingOutcome};
use crate::processing::logs::attributes::{string_attribute, string_value};
use crate::topology::inlet::Inlet;

fn pipeline(spec: &str) -> ValidatedLogPipeline {
    let yaml = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: logs}}\nspec:\n{spec}"
    );
    let resource: LogPipeline = serde_yaml::from_str(&yaml).unwrap();
    validate_log_pipeline(&resource, &ValidationContext::standalone()).unwrap()
}

const OTLP_OUT: &str = "  output: {otlp: {endpoint: 'http://127.0.0.1:4317'}}\n";

fn string(key: &str, value: &str) -> KeyValue {
    string_attribute(key, value)
}

fn record(body: &str, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        body: Some(string_value(body.to_owned())),
        attributes,
        ..LogRecord::default()
    }
}

fn resource_logs(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ResourceLogs {
    crate::processing::logs::tests::batch(resource, records).remove(0)
}

/// A container's resource.
fn container(namespace: &str, name: &str) -> Vec<KeyValue> {
    vec![
        string("k8s.namespace.name", namespace),
        string("k8s.pod.name", "pod"),
        string("k8s.pod.uid", &format!("uid-{namespace}-{name}")),
        string("k8s.container.name", name),
    ]
}

fn batch(resource_logs: Vec<ResourceLogs>) -> Arc<LogBatch> {
    let records = resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    Arc::new(LogBatch {
        resource_logs,
        records,
    })
}

struct Harness {
    _dir: tempfile::TempDir,
    buffer: Arc<Mutex<DiskBuffer>>,
    stats: Arc<PipelineStats>,
    intake: Arc<LogIntake>,
}

fn harness(spec: &str, max_bytes: u64, when_full: WhenFull) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline(spec);
    let limits = Limits {
        max_bytes,
        when_full,
        ..Limits::from(&pipeline.buffer)
    };
    let (buffer, _) = DiskBuffer::open(dir.path().join("b"), limits).unwrap();
    let buffer = Arc::new(Mutex::new(buffer));
    let stats = Arc::new(PipelineStats::named("logs"));
    let inlet = Inlet {
        buffer: buffer.clone(),
        stats: stats.clone(),
        wake: Arc::new(Notify::new()),
    };
    let intake = Arc::new(LogIntake::new(&pipeline, inlet, Instant::now()));
    Harness {
        _dir: dir,
        buffer,
        stats,
        intake,
    }
}

impl Harness {
    fn consumer(&self, input: NodeInput) -> InputConsumer {
        InputConsumer::new(self.intake.clone(), input, None)
    }

    fn offer(&self, input: NodeInput, batch: Arc<LogBatch>) -> Option<Outcome> {
        let (ack, outcome) = BatchAck::for_test();
        self.consumer(input).offer(batch, ack);
        outcome.outcome()
    }

    fn buffered_records(&self) -> u64 {
        self.buffer.lock().unwrap().pending_records()
    }
}

/// Issue 16: names are unique per kind only, so a log pipeline named like a metric
/// pipeline has a buffer directory of its own, and the metric pipelines' directories
/// stay where they were.
#[test]
fn a_log_pipeline_buffers_apart_from_a_metric_pipeline_of_the_same_name() {
    let data = Path::new("/data");
    let metric = crate::pipeline::runtime::buffer_dir(data, "shop");
    assert_eq!(metric, Path::new("/data/buffers/shop"));
    let log = log_buffer_dir(data, "shop");
    assert_ne!(log, metric);
    assert!(!log.starts_with(data.join("buffers")), "{log:?}");
    // A metric pipeline named like the log buffers' directory stays below `buffers/`.
    assert!(!log.starts_with(crate::pipeline::runtime::buffer_dir(data, "log-buffers")));
    assert_ne!(
        crate::pipeline::runtime::buffer_dir(data, "log-buffers"),
        data.join("log-buffers")
    );
}

/// Issue 16: system namespaces are left out unless the runtime input asks for them;
/// namespace and container selectors decide the rest; a pipeline without a runtime
/// input takes no container records.
#[test]
fn container_records_are_taken_by_namespace_and_container() {
    let logs = batch(vec![
        resource_logs(
            container("kube-system", "etcd"),
            vec![record("sys", vec![])],
        ),
        resource_logs(container("shop", "app"), vec![record("app", vec![])]),
        resource_logs(
            container("shop", "istio-proxy"),
            vec![record("proxy", vec![])],
        ),
    ]);
    let default = harness(
        &format!("  input: {{runtime: {{enabled: true}}}}\n{OTLP_OUT}"),
        1 << 30,
        WhenFull::DropOldest,
    );
    assert_eq!(
        default.offer(NodeInput::Tailed, logs.clone()),
        Some(Outcome::Durable)
    );
    assert_eq!(
        default
            .stats
            .samples_in
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    let selective = harness(
        &format!(
            "  input: {{runtime: {{enabled: true, namespaces: {{system: true}}, containers: {{exclude: [istio-proxy]}}}}}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    let taken = selective.consumer(NodeInput::Tailed).select(&logs);
    let names: Vec<_> = taken
        .iter()
        .map(|r| {
            text(
                &r.resource.as_ref().unwrap().attributes,
                "k8s.container.name",
            )
            .unwrap()
        })
        .collect();
    assert_eq!(names, ["etcd", "app"]);

    let included = harness(
        &format!(
            "  input: {{runtime: {{enabled: true, namespaces: {{include: [other]}}}}}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    assert_eq!(
        included.offer(NodeInput::Tailed, logs.clone()),
        Some(Outcome::NotTaken)
    );
    assert_eq!(included.buffered_records(), 0);

    let pushed_only = harness(
        &format!("  input: {{otlp: {{enabled: true}}}}\n{OTLP_OUT}"),
        1 << 30,
        WhenFull::DropOldest,
    );
    assert_eq!(
        pushed_only.offer(NodeInput::Tailed, logs),
        Some(Outcome::NotTaken)
    );
}

/// Issue 16: plain file records are taken by the node input's globs, journal
/// records by its units, each record on its own.
#[test]
fn file_and_journal_records_are_taken_by_glob_and_unit() {
    let h = harness(
        &format!(
            "  input: {{node: {{enabled: true, files: {{paths: ['/var/log/app/*.log']}}, journal: {{units: [kubelet.service]}}}}}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    let node = vec![string("k8s.node.name", "n1")];
    let files = batch(vec![resource_logs(
        node.clone(),
        vec![
            record("a", vec![string("log.file.path", "/var/log/app/a.log")]),
            record("b", vec![string("log.file.path", "/var/log/other/b.log")]),
        ],
    )]);
    let taken = h.consumer(NodeInput::Tailed).select(&files);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].scope_logs[0].log_records.len(), 1);
    let journal = batch(vec![resource_logs(
        node,
        vec![
            record("k", vec![string("systemd.unit", "kubelet.service")]),
            record("c", vec![string("systemd.unit", "containerd.service")]),
            record("s", vec![string("systemd.unit", "sshd.service")]),
        ],
    )]);
    let taken = h.consumer(NodeInput::Journal).select(&journal);
    assert_eq!(taken[0].scope_logs[0].log_records.len(), 1);
    assert_eq!(h.offer(NodeInput::Journal, journal), Some(Outcome::Durable));
    assert_eq!(h.buffered_records(), 1);
}

/// A batch the consumer holds alone is taken by moving records out of it: the same
/// records, in batch order, as a shared batch's copies, for containers, plain files
/// and the journal alike.
#[test]
fn an_unshared_batch_is_taken_as_a_shared_one_is_selected() {
    let h = harness(
        &format!(
            "  input: {{runtime: {{enabled: true, containers: {{exclude: [istio-proxy]}}}}, node: {{enabled: true, files: {{paths: ['/var/log/app/*.log']}}, journal: {{units: [kubelet.service]}}}}}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    let node = vec![string("k8s.node.name", "n1")];
    let logs = batch(vec![
        resource_logs(container("shop", "app"), vec![record("app", vec![])]),
        resource_logs(
            node.clone(),
            vec![
                record("a", vec![string("log.file.path", "/var/log/app/a.log")]),
                record("b", vec![string("log.file.path", "/var/log/other/b.log")]),
                record("k", vec![string("systemd.unit", "kubelet.service")]),
            ],
        ),
        resource_logs(
            container("shop", "istio-proxy"),
            vec![record("proxy", vec![])],
        ),
        resource_logs(
            container("kube-system", "etcd"),
            vec![record("sys", vec![])],
        ),
        resource_logs(
            node,
            vec![record("s", vec![string("systemd.unit", "sshd")])],
        ),
    ]);
    let owned = || LogBatch {
        resource_logs: logs.resource_logs.clone(),
        records: logs.records,
    };
    for input in [NodeInput::Tailed, NodeInput::Journal] {
        let consumer = h.consumer(input);
        let mut shared = consumer.select(&logs);
        let taken = consumer.take(owned());
        // Order between resources is not kept by the shared path (containers first).
        let key = |r: &ResourceLogs| format!("{r:?}");
        shared.sort_by_key(key);
        let mut sorted = taken.clone();
        sorted.sort_by_key(key);
        assert_eq!(sorted, shared, "{input:?}");
        assert!(!taken.is_empty(), "{input:?}");
    }
    // Offered alone, the batch is moved, and what was taken is buffered: one buffer
    // record holding the two log records the pipeline takes (the container's line and
    // the allowed file's).
    assert_eq!(
        h.offer(NodeInput::Tailed, Arc::new(owned())),
        Some(Outcome::Durable)
    );
    assert_eq!(h.buffered_records(), 1);
    let (_, record) = h
        .buffer
        .lock()
        .unwrap()
        .read_next(kaas_series::clock::now_ms())
        .unwrap()
        .expect("the taken records are buffered");
    assert_eq!(record.items, 2);
}

/// Issue 16: a batch processing empties is durable at once (nothing to keep); what
/// processing dropped is counted by outcome.
#[test]
fn a_batch_processing_empties_is_durable_and_counted() {
    let h = harness(
        &format!(
            "  input: {{runtime: {{enabled: true}}}}\n  processors: {{filters: [{{action: drop, regex: 'health'}}]}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    let logs = batch(vec![resource_logs(
        container("shop", "app"),
        vec![
            record("GET /health", vec![]),
            record("GET /healthz", vec![]),
        ],
    )]);
    assert_eq!(h.offer(NodeInput::Tailed, logs), Some(Outcome::Durable));
    assert_eq!(h.buffered_records(), 0);
    assert_eq!(h.intake.processing.total(LogProcessingOutcome::Filtered), 2);
}

/// Pseudo-random text, which snappy cannot shrink.
fn noise(len: usize, seed: u64) -> String {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// Issue 16: a full buffer with `dropNewest` drops the batch: the acknowledgement says
/// `Dropped` with the records (so the input commits and does not read them again),
/// and the inlet counted them as `buffer_full`.
#[test]
fn a_full_buffer_with_drop_newest_completes_dropped() {
    let h = harness(
        &format!(
            "  input: {{runtime: {{enabled: true}}}}\n  buffer: {{maxBytes: 1Mi, whenFull: dropNewest}}\n{OTLP_OUT}"
        ),
        1 << 20,
        WhenFull::DropNewest,
    );
    let mut outcomes = Vec::new();
    for seed in 0..12 {
        let logs = batch(vec![resource_logs(
            container("shop", "app"),
            vec![
                record(&noise(200_000, seed + 1), vec![]),
                record("short", vec![]),
            ],
        )]);
        outcomes.push(h.offer(NodeInput::Tailed, logs));
    }
    assert_eq!(outcomes[0], Some(Outcome::Durable));
    assert!(
        outcomes.contains(&Some(Outcome::Dropped { records: 2 })),
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(Option::is_some), "{outcomes:?}");
    let dropped = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Outcome::Dropped { .. })))
        .count() as u64;
    assert_eq!(h.stats.dropped_total(DropReason::BufferFull), 2 * dropped);
}

/// Issue 16: the processing a pipeline is built with: `keepOriginalBody` from the
/// runtime input, de-dotting from an output that asks for it, filters by action,
/// attribute actions and rate limits.
#[test]
fn processing_is_built_from_the_pipeline() {
    let plain = log_processing(&pipeline(&format!(
        "  input: {{runtime: {{enabled: true}}}}\n{OTLP_OUT}"
    )));
    assert!(plain.parse_json && plain.keep_original_body && !plain.dedot);
    let configured = log_processing(&pipeline(
        "  input: {runtime: {enabled: true, keepOriginalBody: false}}\n  processors:\n    filters: [{action: keep, attribute: level, regex: error}, {action: drop, regex: noise}]\n    attributes: [{action: set, key: team, value: shop}, {action: rename, key: a, to: b}, {action: delete, key: c}]\n    rateLimit: {perPipeline: {recordsPerSecond: 10}, perNamespace: {recordsPerSecond: 5, burst: 7}}\n    maxRecordSize: 4Ki\n  output: {http: {url: 'http://127.0.0.1:9200', format: elasticsearchBulk}}\n",
    ));
    assert!(!configured.keep_original_body);
    assert!(configured.dedot, "the bulk output de-dots by default");
    assert_eq!(configured.filter.keep.len(), 1);
    assert_eq!(configured.filter.drop.len(), 1);
    assert_eq!(
        configured.attribute_actions,
        [
            AttributeAction::Set {
                key: "team".into(),
                value: "shop".into()
            },
            AttributeAction::Rename {
                from: "a".into(),
                to: "b".into()
            },
            AttributeAction::Delete { key: "c".into() },
        ]
    );
    assert_eq!(configured.max_record_bytes, 4096);
    assert_eq!(
        configured
            .pipeline_rate_limit
            .map(|r| r.records_per_second.get()),
        Some(10)
    );
    assert_eq!(
        configured.namespace_rate_limit.map(|r| r.burst.get()),
        Some(7)
    );
}

/// Issue 16: a pipeline whose container logs and plain files are read by tailers with
/// different settings has a consumer on each that takes only its part, so neither
/// part arrives twice or through the other's multiline setting.
#[test]
fn split_tailed_consumers_take_only_their_part() {
    let h = harness(
        &format!(
            "  input: {{runtime: {{enabled: true}}, node: {{enabled: true, files: {{paths: ['/var/log/app/*.log']}}}}}}\n{OTLP_OUT}"
        ),
        1 << 30,
        WhenFull::DropOldest,
    );
    let make = || {
        batch(vec![
            resource_logs(container("shop", "app"), vec![record("c", Vec::new())]),
            resource_logs(
                vec![string("k8s.node.name", "n1")],
                vec![record(
                    "f",
                    vec![string("log.file.path", "/var/log/app/a.log")],
                )],
            ),
        ])
    };
    let mixed = make();
    let bodies = |input: NodeInput| -> Vec<String> {
        h.consumer(input)
            .select(&mixed)
            .iter()
            .flat_map(|r| &r.scope_logs[0].log_records)
            .map(|r| format!("{:?}", r.body))
            .collect()
    };
    let (all, containers, files) = (
        bodies(NodeInput::Tailed),
        bodies(NodeInput::Containers),
        bodies(NodeInput::Files),
    );
    assert_eq!(all.len(), 2);
    assert_eq!(containers.len(), 1);
    assert!(containers[0].contains("\"c\""), "{containers:?}");
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("\"f\""), "{files:?}");
    for input in [NodeInput::Containers, NodeInput::Files] {
        let owned = Arc::try_unwrap(make()).unwrap();
        let taken = h.consumer(input).take(owned);
        assert_eq!(taken.len(), 1, "{input:?} takes one part");
    }
}
