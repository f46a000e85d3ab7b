//! The data path is signal-generic: a second signal, defined only here (log lines),
//! runs through the real inlet, disk buffer and sender to a test exporter. It brings
//! its own frame encoding and sharding key and nothing else; acknowledgements fire
//! once each record is durable, retries and per-pipeline counters work as for metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::exporters::Export;
use kaas_cluster_agent::internal_events::{ErrorReason, PipelineStats};
use kaas_cluster_agent::outbound::retry::SendError;
use kaas_cluster_agent::record::signal::{Frame, FrameEncoding, FrameError, Payload, ShardingKey};
use kaas_cluster_agent::topology::inlet::{Ack, Inlet};
use kaas_cluster_agent::topology::sender::SenderConfig;
use kaas_pipeline::buffer::WhenFull;
use tokio::sync::Notify;

mod data_path;
use data_path::TestPipeline;

const NOW_MS: i64 = 1_700_000_000_000;

/// Log lines, one frame each: `source\tmessage\n`; lines of one source stay in order.
struct Lines;

/// A request of log lines: frames joined, or a whole record still compressed.
enum LinesRequest {
    Frames { body: Vec<u8>, lines: u64 },
    Compressed { body: Vec<u8>, lines: u64 },
}

impl LinesRequest {
    fn lines(&self) -> Vec<(String, String)> {
        let body = match self {
            Self::Frames { body, .. } => body.clone(),
            Self::Compressed { body, .. } => snap::raw::Decoder::new()
                .decompress_vec(body)
                .expect("a compressed record"),
        };
        String::from_utf8(body)
            .expect("UTF-8")
            .lines()
            .map(|line| {
                let (source, message) = line.split_once('\t').expect("a tab");
                (source.to_owned(), message.to_owned())
            })
            .collect()
    }
}

impl FrameEncoding for Lines {
    type Request = LinesRequest;

    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
        payload
            .split_inclusive(|b| *b == b'\n')
            .map(|line| {
                let tab = line
                    .iter()
                    .position(|b| *b == b'\t')
                    .ok_or_else(|| FrameError("a line without a source".to_owned()))?;
                Ok(Frame::Items {
                    body: line,
                    key: &line[..tab],
                    items: 1,
                })
            })
            .collect()
    }

    fn request(frames: &[&[u8]], shared: &[&[u8]], items: u64, _oldest_ms: i64) -> LinesRequest {
        assert!(shared.is_empty(), "log lines share nothing");
        LinesRequest::Frames {
            body: frames.concat(),
            lines: items,
        }
    }

    fn whole_record(compressed: Vec<u8>, items: u64, _oldest_ms: i64) -> LinesRequest {
        LinesRequest::Compressed {
            body: compressed,
            lines: items,
        }
    }

    fn items(request: &LinesRequest) -> u64 {
        match request {
            LinesRequest::Frames { lines, .. } | LinesRequest::Compressed { lines, .. } => *lines,
        }
    }

    fn oldest_ms(_request: &LinesRequest) -> i64 {
        NOW_MS
    }
}

impl ShardingKey for Lines {
    fn shard_key(source: &[u8]) -> u64 {
        source.iter().map(|b| u64::from(*b)).sum()
    }
}

/// Log lines as a receiver (a file tailer) hands them in.
struct LogBatch(Vec<(String, String)>);

impl Payload for LogBatch {
    fn payload(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|(source, message)| format!("{source}\t{message}\n").into_bytes())
            .collect()
    }

    fn items(&self) -> usize {
        self.0.len()
    }

    fn oldest_ms(&self) -> Option<i64> {
        Some(NOW_MS)
    }
}

/// Records every request; refuses the first `fail_first` with a retryable error.
#[derive(Default)]
struct TestExporter {
    received: Mutex<Vec<Vec<(String, String)>>>,
    fail_first: AtomicUsize,
}

impl Export for TestExporter {
    type Signal = Lines;

    async fn send(&self, request: &LinesRequest) -> Result<(), SendError> {
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SendError::Retryable {
                reason: "the test backend is down".to_owned(),
                retry_after: Some(Duration::from_millis(10)),
                condition: ErrorReason::BackendUnreachable,
            });
        }
        self.received.lock().expect("lock").push(request.lines());
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_travel_the_same_inlet_buffer_and_sender_as_metrics() {
    let mut pipeline = TestPipeline::open("logs");
    let (inlet, stats) = (pipeline.inlet.clone(), pipeline.stats.clone());

    // Three sources, ten records of five lines each, pushed before the sender runs so
    // they are read as one round and split across shards.
    let sources = ["a.log", "b.log", "c.log"];
    let acks = Arc::new(AtomicUsize::new(0));
    let mut pushed = 0;
    for record in 0..10 {
        let lines = (0..5)
            .map(|i| {
                let source = sources[(record + i) % sources.len()];
                (source.to_owned(), format!("line {record}.{i}"))
            })
            .collect();
        let counter = acks.clone();
        inlet
            .push_acked(
                &LogBatch(lines),
                NOW_MS,
                Ack::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .expect("stored");
        pushed += 5;
        assert_eq!(acks.load(Ordering::SeqCst), record + 1, "durable on return");
    }
    // One record of a single producer, pushed as the scrapers push: sent whole.
    let whole = LogBatch(vec![("d.log".to_owned(), "whole".to_owned())]);
    inlet
        .push_encoded(&whole.payload(), 1, NOW_MS, Some(7))
        .expect("stored");
    pushed += 1;

    let exporter = Arc::new(TestExporter {
        fail_first: AtomicUsize::new(1),
        ..TestExporter::default()
    });
    let config = SenderConfig {
        shards: 2,
        max_samples_per_request: 4,
        ..SenderConfig::with_max_age(data_path::NEVER)
    };
    pipeline.start(exporter.clone(), config);
    pipeline.drained().await;
    pipeline.stop().await;

    let received = exporter.received.lock().expect("lock").clone();
    let mut per_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in &received {
        for (source, message) in request {
            per_source
                .entry(source.clone())
                .or_default()
                .push(message.clone());
        }
    }
    assert_eq!(per_source.values().map(Vec::len).sum::<usize>(), pushed);
    assert_eq!(per_source["d.log"], ["whole"]);
    for source in sources {
        let mut expected = Vec::new();
        for record in 0..10 {
            for i in 0..5 {
                if sources[(record + i) % sources.len()] == source {
                    expected.push(format!("line {record}.{i}"));
                }
            }
        }
        assert_eq!(per_source[source], expected, "{source} in order");
    }
    assert!(
        received.iter().any(|r| r.len() > 1) && received.len() > 2,
        "split into several requests of several lines: {received:?}"
    );
    assert_eq!(
        stats.samples_sent.load(Ordering::Relaxed),
        pushed as u64,
        "counted as sent once"
    );
    assert!(
        stats.samples_failed.load(Ordering::Relaxed) > 0,
        "the retry is counted"
    );
}

#[tokio::test]
async fn a_record_the_buffer_refuses_is_never_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        max_bytes: 256,
        max_age: Duration::from_secs(3600),
        when_full: WhenFull::DropNewest,
    };
    let (buffer, _) = DiskBuffer::open(dir.path(), limits).expect("open buffer");
    let inlet = Inlet {
        buffer: Arc::new(Mutex::new(buffer)),
        stats: Arc::new(PipelineStats::named("logs")),
        wake: Arc::new(Notify::new()),
    };
    let acks = Arc::new(AtomicUsize::new(0));
    for record in 0..20 {
        let counter = acks.clone();
        inlet
            .push_acked(
                &LogBatch(vec![(
                    "a.log".to_owned(),
                    format!("line {record} {}", "x".repeat(40)),
                )]),
                NOW_MS,
                Ack::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .expect("a full buffer is not an error");
    }
    let pending = inlet.buffer.lock().expect("lock").pending_records();
    assert_eq!(acks.load(Ordering::SeqCst) as u64, pending);
    assert!(
        pending > 0 && pending < 20,
        "the buffer filled up: {pending}"
    );
}
