//! The trace pipeline's intake on a real disk buffer (no sender, no network): where
//! its buffer lives, how it acknowledges, refuses a full buffer, and refuses to forward
//! spans while its hash key cannot be read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kaas_buffer::{DiskBuffer, Limits};
use kaas_pipeline::ValidationContext;
use kaas_pipeline::buffer::WhenFull;
use kaas_pipeline::secret::SecretString;
use kaas_pipeline::traces::{TracePipeline, validate_trace_pipeline};
use kaas_proto::otlp::{ScopeSpans, Span};
use tokio::sync::Notify;

use super::*;
use crate::files::FileAccess;
use crate::outbound::auth::SecretStore;
use crate::topology::inlet::Inlet;

fn pipeline(spec: &str) -> ValidatedTracePipeline {
    let yaml = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: TracePipeline\nmetadata: {{name: traces}}\nspec:\n{spec}"
    );
    let resource: TracePipeline = serde_yaml::from_str(&yaml).unwrap();
    validate_trace_pipeline(&resource, &ValidationContext::standalone()).unwrap()
}

const PLAIN: &str = "  output: {otlp: {endpoint: 'http://127.0.0.1:4317'}}\n";
const HASHING: &str = "  processors:\n    attributes: [{action: hash, key: enduser.id}]\n    hashKey: {valueFrom: {secretKeyRef: {name: trace-hash, namespace: kaas-observer, key: key}}}\n  output: {otlp: {endpoint: 'http://127.0.0.1:4317'}}\n";

/// Secrets that can change while the intake runs.
#[derive(Debug, Default)]
struct ChangingSecrets(Mutex<BTreeMap<String, String>>);

impl SecretStore for ChangingSecrets {
    fn get(&self, _namespace: &str, name: &str, _key: &str) -> Option<SecretString> {
        let secrets = self.0.lock().unwrap();
        secrets.get(name).map(|v| SecretString::new(v.clone()))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    buffer: Arc<Mutex<DiskBuffer>>,
    intake: TraceIntake,
    secrets: Arc<ChangingSecrets>,
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
    let inlet = Inlet {
        buffer: buffer.clone(),
        stats: Arc::new(PipelineStats::named("traces")),
        wake: Arc::new(Notify::new()),
    };
    let secrets = Arc::new(ChangingSecrets::default());
    let sources = ValueSources::new(secrets.clone(), Arc::new(FileAccess::default()));
    Harness {
        _dir: dir,
        buffer,
        intake: TraceIntake::new(&pipeline, inlet, sources),
        secrets,
    }
}

fn spans(count: usize, name_len: usize) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: (0..count)
                .map(|i| Span {
                    trace_id: vec![i as u8; 16],
                    span_id: vec![1; 8],
                    name: format!("{i}-{}", "x".repeat(name_len)),
                    ..Span::default()
                })
                .collect(),
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }]
}

/// An acknowledgement that records whether it fired.
fn watched_ack() -> (Ack, Arc<Mutex<bool>>) {
    let fired = Arc::new(Mutex::new(false));
    let flag = fired.clone();
    (Ack::new(move || *flag.lock().unwrap() = true), fired)
}

/// Names are unique per kind only: a trace pipeline's buffer is apart from the metric
/// and log pipelines' of the same name, and from any metric pipeline's.
#[test]
fn a_trace_pipeline_buffers_apart_from_other_kinds_of_the_same_name() {
    let data = Path::new("/data");
    let trace = trace_buffer_dir(data, "shop");
    assert_eq!(trace, Path::new("/data/trace-buffers/shop"));
    assert_ne!(trace, crate::pipeline::runtime::buffer_dir(data, "shop"));
    assert_ne!(trace, super::super::logs::log_buffer_dir(data, "shop"));
    assert!(!trace.starts_with(data.join("buffers")));
}

#[test]
fn spans_are_acknowledged_once_durable_and_counted() {
    let harness = harness(PLAIN, 1 << 20, WhenFull::DropNewest);
    let (ack, fired) = watched_ack();
    let buffered = harness.intake.buffer(spans(3, 4), ack).unwrap();
    assert_eq!(buffered.stored, Stored::Kept);
    assert_eq!(buffered.spans.kept, 3);
    assert_eq!(buffered.spans.rate_limited, 0);
    assert!(*fired.lock().unwrap());
    assert_eq!(harness.buffer.lock().unwrap().pending_records(), 1);
}

#[test]
fn a_full_buffer_with_drop_newest_never_acknowledges() {
    let harness = harness(PLAIN, 64 << 10, WhenFull::DropNewest);
    let mut dropped = false;
    for _ in 0..64 {
        let (ack, fired) = watched_ack();
        let buffered = harness.intake.buffer(spans(50, 200), ack).unwrap();
        if buffered.stored == Stored::Dropped {
            assert!(!*fired.lock().unwrap(), "a dropped batch was acknowledged");
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the buffer never filled");
}

/// A pipeline that hashes attributes forwards nothing while its key cannot be read, and
/// takes spans once the Secret is there.
#[test]
fn spans_wait_for_the_hash_key() {
    let harness = harness(HASHING, 1 << 20, WhenFull::DropNewest);
    let (ack, fired) = watched_ack();
    let refused = harness.intake.buffer(spans(1, 1), ack).unwrap_err();
    assert!(
        matches!(refused, IntakeError::HashKeyUnavailable(_)),
        "{refused:?}"
    );
    assert!(!*fired.lock().unwrap());
    assert_eq!(harness.buffer.lock().unwrap().pending_records(), 0);

    harness
        .secrets
        .0
        .lock()
        .unwrap()
        .insert("trace-hash".into(), "k".repeat(32));
    let (ack, fired) = watched_ack();
    harness.intake.buffer(spans(1, 1), ack).unwrap();
    assert!(*fired.lock().unwrap());
}

/// Rotating the hash key rebuilds the processing but not the rate limit's bucket: a
/// burst spent under the old key is still spent under the new one. (At one span a
/// second, a refill of the whole burst would take over 16 minutes.)
#[test]
fn a_rotated_hash_key_does_not_refill_the_rate_limit() {
    let spec = "  processors:\n    attributes: [{action: hash, key: enduser.id}]\n    hashKey: {valueFrom: {secretKeyRef: {name: trace-hash, namespace: kaas-observer, key: key}}}\n    rateLimit: {spansPerSecond: 1, burst: 1000}\n  output: {otlp: {endpoint: 'http://127.0.0.1:4317'}}\n";
    let harness = harness(spec, 1 << 24, WhenFull::DropNewest);
    let key = |value: &str| {
        let mut secrets = harness.secrets.0.lock().unwrap();
        secrets.insert("trace-hash".into(), value.repeat(32));
    };
    key("a");
    let (ack, _) = watched_ack();
    let first = harness.intake.buffer(spans(1000, 1), ack).unwrap();
    assert_eq!((first.spans.kept, first.spans.rate_limited), (1000, 0));

    key("b");
    let (ack, _) = watched_ack();
    let after_rotation = harness.intake.buffer(spans(1000, 1), ack).unwrap();
    assert!(
        after_rotation.spans.kept < 100,
        "the rotation refilled the bucket: {:?}",
        after_rotation.spans
    );
    assert_eq!(
        after_rotation.spans.kept + after_rotation.spans.rate_limited,
        1000
    );
}

/// The intake runs the pipeline's processing before its buffer: spans a `dropSpans`
/// rule names and spans sampling rejects are counted and never stored, the kept ones
/// carry the threshold applied (`ot=th:…`) and their attributes hashed.
#[test]
fn the_pipelines_processing_runs_before_its_buffer() {
    let spec = "  sampling: {ratio: 0.5}\n  processors:\n    dropSpans: [{exact: health}]\n    attributes: [{action: hash, key: enduser.id}]\n    hashKey: {valueFrom: {secretKeyRef: {name: trace-hash, namespace: kaas-observer, key: key}}}\n  output: {otlp: {endpoint: 'http://127.0.0.1:4317'}}\n";
    let harness = harness(spec, 1 << 20, WhenFull::DropNewest);
    harness
        .secrets
        .0
        .lock()
        .unwrap()
        .insert("trace-hash".into(), "k".repeat(32));
    let user = |value: &str| kaas_proto::otlp::KeyValue {
        key: "enduser.id".into(),
        value: Some(kaas_proto::otlp::AnyValue {
            value: Some(kaas_proto::otlp::any_value::Value::StringValue(
                value.into(),
            )),
        }),
    };
    // The low 56 bits of a trace id are its randomness: all ones is kept at any ratio,
    // zero is rejected by any ratio below 1.
    let span = |name: &str, randomness: u8| Span {
        trace_id: [[0u8; 9].as_slice(), &[randomness; 7]].concat(),
        span_id: vec![1; 8],
        name: name.into(),
        attributes: vec![user("alice")],
        ..Span::default()
    };
    let batch = vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![
                span("checkout", 0xff),
                span("health", 0xff),
                span("checkout", 0),
            ],
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }];
    let (ack, fired) = watched_ack();
    let buffered = harness.intake.buffer(batch, ack).unwrap();
    assert!(*fired.lock().unwrap());
    assert_eq!(
        (
            buffered.spans.kept,
            buffered.spans.filtered,
            buffered.spans.sampled_out
        ),
        (1, 1, 1)
    );

    let mut buffer = harness.buffer.lock().unwrap();
    let (_, record) = buffer
        .read_next(now_ms())
        .unwrap()
        .expect("the kept span is buffered");
    // A record's payload is the export request's encoding, snappy-compressed.
    let payload = snap::raw::Decoder::new()
        .decompress_vec(&record.payload)
        .unwrap();
    let stored =
        <kaas_proto::otlp::ExportTraceServiceRequest as prost::Message>::decode(&payload[..])
            .unwrap();
    let kept: Vec<&Span> = stored
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].name, "checkout");
    assert!(
        kept[0].trace_state.starts_with("ot=th:8"),
        "{}",
        kept[0].trace_state
    );
    let hashed = &kept[0].attributes[0];
    assert_eq!(hashed.key, "enduser.id");
    assert_ne!(
        hashed.value,
        user("alice").value,
        "the user id left in clear"
    );
}
