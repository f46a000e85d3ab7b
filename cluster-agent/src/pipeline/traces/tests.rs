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
