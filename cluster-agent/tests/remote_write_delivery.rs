//! A pipeline's buffer and sender against a recording receiver: retries, `Retry-After`,
//! permanent refusals, ordering across shards, protocol headers, credentials, 2.0, and
//! isolation from a dead backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::exporters::Exporter;
use kaas_cluster_agent::exporters::remote_write::RemoteWriteExporter;
use kaas_cluster_agent::internal_events::{DropReason, ErrorReason, PipelineStats};
use kaas_cluster_agent::outbound::auth::ValueSources;
use kaas_cluster_agent::record::metrics::Batch;
use kaas_cluster_agent::topology::inlet::Inlet;
use kaas_cluster_agent::topology::sender::{Sender, SenderConfig};
use kaas_pipeline::buffer::WhenFull;
use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_proto::remote_write::v1::{Label, MetricMetadata, MetricType, Sample, TimeSeries};
use kaas_test_support::remote_write_receiver::{Answer, RemoteWriteReceiver};
use tokio::sync::{Notify, watch};

const DEADLINE: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// `series` series named `test_metric{series="i"}`, each with `samples` samples one
/// second apart starting at `start_ms`.
fn batch(series: usize, samples: usize, start_ms: i64) -> Batch {
    Batch {
        series: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "test_metric_total".into(),
                    },
                    Label {
                        name: "series".into(),
                        value: i.to_string(),
                    },
                ],
                samples: (0..samples)
                    .map(|k| Sample {
                        value: k as f64,
                        timestamp: start_ms + k as i64 * 1000,
                    })
                    .collect(),
            })
            .collect(),
        metadata: vec![MetricMetadata {
            r#type: MetricType::Counter as i32,
            metric_family_name: "test_metric".into(),
            help: "A test counter.".into(),
            unit: String::new(),
        }],
    }
}

struct Pipeline {
    inlet: Inlet,
    stats: Arc<PipelineStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn output(yaml: &str) -> RemoteWriteOutput {
    serde_yaml::from_str(yaml).expect("remote-write output YAML")
}

fn start(output: RemoteWriteOutput, version: RemoteWriteVersion, config: SenderConfig) -> Pipeline {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        max_bytes: 64 << 20,
        max_age: config.max_age,
        when_full: WhenFull::DropOldest,
    };
    let (buffer, _) = DiskBuffer::open(dir.path(), limits).expect("open buffer");
    let buffer = Arc::new(Mutex::new(buffer));
    let stats = Arc::new(PipelineStats::default());
    let wake = Arc::new(Notify::new());
    let url: url::Url = output.url.describe().parse().expect("URL");
    let exporter = RemoteWriteExporter::new(
        &output,
        url,
        version,
        Duration::from_secs(5),
        ValueSources::without_secrets(),
    )
    .expect("exporter");
    let sender = Sender {
        buffer: buffer.clone(),
        exporter: Arc::new(Exporter::RemoteWrite(exporter)),
        config,
        stats: stats.clone(),
        wake: wake.clone(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(sender.run(shutdown_rx));
    Pipeline {
        inlet: Inlet {
            buffer,
            stats: stats.clone(),
            wake,
        },
        stats,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Pipeline {
    fn push(&self, batch: &Batch) {
        self.inlet.push(batch, now_ms()).expect("push");
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        self.task.await.expect("sender task");
    }

    fn pending(&self) -> u64 {
        self.inlet
            .buffer
            .lock()
            .expect("buffer lock")
            .pending_records()
    }

    /// Waits until everything pushed is acknowledged (delivered or dropped).
    async fn drained(&self) {
        tokio::time::timeout(DEADLINE, async {
            while self.pending() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("everything pushed is acknowledged");
    }
}

fn config() -> SenderConfig {
    SenderConfig::with_max_age(Duration::from_secs(3600))
}

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let receiver = RemoteWriteReceiver::start().await;
    receiver.script([Answer::status(503), Answer::status(500)]);
    let pipeline = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V1,
        config(),
    );
    pipeline.push(&batch(10, 3, now_ms()));
    receiver.wait_for_samples(30, DEADLINE).await;
    pipeline.drained().await;

    let statuses: Vec<u16> = receiver.received().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], &[503, 500]);
    assert!(statuses[2..].iter().all(|s| *s == 204));
    assert_eq!(
        receiver.accepted_samples(),
        30,
        "delivered exactly once after the retries"
    );
    assert_eq!(
        pipeline
            .stats
            .samples_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        30
    );
    assert!(
        pipeline
            .stats
            .samples_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_eq!(
        pipeline.stats.last_error().unwrap().reason,
        ErrorReason::BackendUnreachable
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = RemoteWriteReceiver::start().await;
    receiver.script([Answer {
        status: 429,
        retry_after: Some("1".into()),
    }]);
    let pipeline = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V1,
        config(),
    );
    pipeline.push(&batch(1, 1, now_ms()));
    receiver.wait_for_samples(1, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received[0].status, 429);
    // The backend asked for a second; the exponential backoff alone would wait 30 ms.
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn a_refused_batch_is_dropped_and_counted_and_delivery_goes_on() {
    let receiver = RemoteWriteReceiver::start().await;
    receiver.script([Answer::status(400)]);
    let mut config = config();
    config.shards = 1;
    let pipeline = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V1,
        config,
    );
    pipeline.push(&batch(5, 1, now_ms()));
    // Wait for the refusal before pushing more, so the two land in different rounds.
    tokio::time::timeout(DEADLINE, async {
        while pipeline.stats.dropped_total(DropReason::RejectedByBackend) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refusal is counted");
    pipeline.push(&batch(5, 1, now_ms() + 1000));
    receiver.wait_for_samples(5, DEADLINE).await;
    assert_eq!(
        pipeline.stats.dropped_total(DropReason::RejectedByBackend),
        5
    );
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|r| r.status == 400)
            .count(),
        1,
        "not retried"
    );
    assert_eq!(
        pipeline.stats.last_error().unwrap().reason,
        ErrorReason::DataDropped
    );
    pipeline.stop().await;
}

/// A receiver that fails some requests (so shards retry at different times) and a
/// pipeline with four shards sending to it.
async fn flaky_receiver_pipeline(mut config: SenderConfig) -> (RemoteWriteReceiver, Pipeline) {
    let receiver = RemoteWriteReceiver::start().await;
    receiver.script([
        Answer::status(503),
        Answer::status(200),
        Answer::status(503),
    ]);
    config.shards = 4;
    let pipeline = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V1,
        config,
    );
    (receiver, pipeline)
}

/// Every accepted series has `samples` samples, in timestamp order.
fn assert_each_series_in_order(receiver: &RemoteWriteReceiver, samples: usize) {
    for (labels, got) in &receiver.accepted() {
        let timestamps: Vec<i64> = got.iter().map(|(t, _)| *t).collect();
        assert!(
            timestamps.windows(2).all(|w| w[0] < w[1]),
            "{labels:?} out of order: {timestamps:?}"
        );
        assert_eq!(timestamps.len(), samples, "{labels:?}");
    }
}

#[tokio::test]
async fn every_series_arrives_in_order_across_shards_and_rounds() {
    let mut config = config();
    config.max_samples_per_request = 37;
    let (receiver, pipeline) = flaky_receiver_pipeline(config).await;
    let start_ms = now_ms() - 600_000;
    for round in 0..6 {
        pipeline.push(&batch(40, 5, start_ms + round * 5000));
    }
    receiver.wait_for_samples(40 * 5 * 6, DEADLINE).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 40);
    assert_each_series_in_order(&receiver, 30);
    // Requests close at a group boundary after 37 samples; here a group is one
    // series' 5 buffered samples, so no request holds more than 37 + 4.
    let largest = receiver
        .received()
        .iter()
        .map(|r| r.series.iter().map(|s| s.1.len()).sum::<usize>())
        .max()
        .unwrap_or(0);
    assert!(largest <= 41, "a request held {largest} samples");
    pipeline.drained().await;
    pipeline.stop().await;
}

/// A scraper-like record: every series of `stream` (`test_metric{stream, series}`) with
/// one sample at `at_ms`, encoded as the scrapers encode it.
fn stream_record(stream: u64, series: usize, at_ms: i64) -> Vec<u8> {
    use kaas_cluster_agent::labels::Labels;
    use kaas_cluster_agent::record::wire::{RequestWriter, encode_labels};
    let mut writer = RequestWriter::default();
    for i in 0..series {
        let labels = Labels::from_pairs([
            ("__name__", "test_metric_total".to_owned()),
            ("stream", stream.to_string()),
            ("series", i.to_string()),
        ]);
        writer.sample(&encode_labels(&labels), at_ms, i as f64);
    }
    writer.into_bytes()
}

#[tokio::test]
async fn stream_records_are_sent_whole_in_order_and_never_mixed_with_split_rounds() {
    let mut config = config();
    config.max_samples_per_request = 7;
    config.max_whole_record_samples = 30;
    let (receiver, pipeline) = flaky_receiver_pipeline(config).await;
    let start_ms = now_ms() - 600_000;
    // Six scrapes of five targets, with pushed (split) batches in between; stream 9's
    // records are too large to go whole.
    for scrape in 0..6 {
        let at = start_ms + scrape * 5000;
        for stream in 0..5u64 {
            let series = if stream == 4 { 40 } else { 20 };
            let record = stream_record(stream, series, at);
            pipeline
                .inlet
                .push_encoded(
                    &record,
                    series,
                    at,
                    Some(if stream == 4 { 9 } else { stream }),
                )
                .expect("push");
        }
        pipeline.push(&batch(3, 1, at));
    }
    let expected = 6 * (4 * 20 + 40 + 3);
    receiver.wait_for_samples(expected, DEADLINE).await;
    assert_eq!(receiver.accepted().len(), 4 * 20 + 40 + 3);
    assert_each_series_in_order(&receiver, 6);
    // Small stream records arrive as they were pushed: one request of 20 samples
    // each; everything else was split into requests of about 7.
    let sizes: Vec<usize> = receiver
        .received()
        .iter()
        .filter(|r| r.status < 300)
        .map(|r| r.series.iter().map(|s| s.1.len()).sum::<usize>())
        .collect();
    assert_eq!(
        sizes.iter().filter(|n| **n == 20).count(),
        6 * 4,
        "{sizes:?}"
    );
    assert!(sizes.iter().all(|n| *n == 20 || *n <= 7 + 2), "{sizes:?}");
    pipeline.drained().await;
    pipeline.stop().await;
}

#[tokio::test]
async fn requests_carry_protocol_headers_credentials_and_metadata() {
    let receiver = RemoteWriteReceiver::start().await;
    let yaml = format!(
        "url: {}\nheaders:\n  - {{name: THANOS-TENANT, value: team-a}}\nauthentication:\n  basic:\n    user: {{value: agent}}\n    password: {{value: s3cret}}\n",
        receiver.url()
    );
    let pipeline = start(output(&yaml), RemoteWriteVersion::V1, config());
    pipeline.push(&batch(2, 1, now_ms()));
    receiver.wait_for_samples(2, DEADLINE).await;
    let request = &receiver.received()[0];
    let header = |name: &str| request.headers.get(name).map(String::as_str);
    assert_eq!(header("content-encoding"), Some("snappy"));
    assert_eq!(header("content-type"), Some("application/x-protobuf"));
    assert_eq!(header("x-prometheus-remote-write-version"), Some("0.1.0"));
    assert!(
        header("user-agent")
            .unwrap()
            .starts_with("kaas-observer-agent/")
    );
    assert_eq!(header("thanos-tenant"), Some("team-a"));
    // "agent:s3cret" in base64.
    assert_eq!(header("authorization"), Some("Basic YWdlbnQ6czNjcmV0"));
    assert_eq!(
        request.metadata,
        [("test_metric".to_owned(), MetricType::Counter as i32)]
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn remote_write_2_sends_interned_series_with_metadata() {
    let receiver = RemoteWriteReceiver::start().await;
    let pipeline = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V2,
        config(),
    );
    pipeline.push(&batch(3, 2, now_ms()));
    receiver.wait_for_samples(6, DEADLINE).await;
    let received = receiver.received();
    for request in &received {
        assert!(request.v2);
        let version = request.headers.get("x-prometheus-remote-write-version");
        assert_eq!(version.map(String::as_str), Some("2.0.0"));
    }
    // Series may be spread over shards; every one of them carries its metadata.
    let metadata: Vec<_> = received.iter().flat_map(|r| r.metadata.clone()).collect();
    let counter = MetricType::Counter as i32;
    assert!(
        metadata
            .iter()
            .all(|(name, kind)| name == "test_metric_total" && *kind == counter)
    );
    assert_eq!(metadata.len(), 3, "metadata on every series");
    pipeline.stop().await;
}

#[tokio::test]
async fn a_dead_backend_does_not_hold_up_another_pipeline() {
    let receiver = RemoteWriteReceiver::start().await;
    // Nothing listens on the dead pipeline's port: every attempt fails fast.
    let dead_port = kaas_test_support::process::free_port();
    let dead = start(
        output(&format!("url: http://127.0.0.1:{dead_port}/api/v1/write")),
        RemoteWriteVersion::V1,
        config(),
    );
    let healthy = start(
        output(&format!("url: {}", receiver.url())),
        RemoteWriteVersion::V1,
        config(),
    );
    for round in 0..20 {
        let data = batch(50, 1, now_ms() + round * 1000);
        dead.push(&data);
        healthy.push(&data);
    }
    receiver.wait_for_samples(50 * 20, DEADLINE).await;
    assert_eq!(
        dead.stats
            .samples_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(
        dead.pending() > 0,
        "the dead pipeline keeps its data buffered"
    );
    assert_eq!(
        dead.stats.last_error().unwrap().reason,
        ErrorReason::BackendUnreachable
    );
    dead.stop().await;
    healthy.stop().await;
}

#[tokio::test]
async fn data_older_than_the_maximum_age_is_dropped_not_retried_forever() {
    let dead_port = kaas_test_support::process::free_port();
    let mut config = config();
    config.max_age = Duration::from_secs(60);
    let pipeline = start(
        output(&format!("url: http://127.0.0.1:{dead_port}/api/v1/write")),
        RemoteWriteVersion::V1,
        config,
    );
    // Already 30 s past its maximum age when pushed.
    pipeline.push(&batch(4, 1, now_ms() - 90_000));
    tokio::time::timeout(DEADLINE, async {
        while pipeline.stats.dropped_total(DropReason::MaxAgeExceeded) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("expired data is dropped and counted");
    pipeline.stop().await;
}
