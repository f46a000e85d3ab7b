//! Upgrade safety: what an agent of an earlier build left in its data directory (a
//! pipeline's disk buffer, the last-known-good configuration, the identity) is drained
//! and used by this build.
//!
//! The files under `tests/fixtures/upgrade/data/` were written by
//! [`write_upgrade_fixtures`] at commit 303d3e1 (before the data path became
//! signal-generic) and are committed as they came out; never regenerate them to make a
//! test pass. Regenerate (`cargo nextest run -p kaas-cluster-agent --run-ignored only
//! -E 'test(write_upgrade_fixtures)'`) only when a format changes on purpose, and then
//! keep the old files as a second fixture.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::control::identity::AgentIdentity;
use kaas_cluster_agent::control::lkg::LastKnownGood;
use kaas_cluster_agent::exporters::Exporter;
use kaas_cluster_agent::exporters::remote_write::RemoteWriteExporter;
use kaas_cluster_agent::internal_events::PipelineStats;
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::outbound::auth::ValueSources;
use kaas_cluster_agent::record::metrics::Batch;
use kaas_cluster_agent::record::wire::{RequestWriter, encode_labels};
use kaas_cluster_agent::topology::inlet::Inlet;
use kaas_cluster_agent::topology::sender::{Sender, SenderConfig};
use kaas_pipeline::agent_config::AgentConfig;
use kaas_pipeline::buffer::WhenFull;
use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_proto::remote_write::v1::{Label, MetricMetadata, MetricType, Sample, TimeSeries};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use tokio::sync::{Notify, watch};

/// The pipeline whose buffer the fixture holds.
const PIPELINE: &str = "metrics";
/// Records in the fixture buffer; the first is acknowledged (its ack persisted).
const RECORDS: usize = 8;
/// Series per record, each with [`SAMPLES`] samples.
const SERIES: usize = 3;
const SAMPLES: usize = 2;
/// Sample timestamps start here (the fixture is old: tests read it with no age limit).
const START_MS: i64 = 1_700_000_000_000;
/// The cluster id in the fixture identity.
const CLUSTER_ID: &str = "upgrade-fixture-cluster";
/// The fixture buffer's bound: small, so the records span several segments.
const FIXTURE_BUFFER_BYTES: u64 = 4096;
/// No record of the fixture is too old to deliver.
const NO_AGE_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn fixture_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade/data")
}

fn limits(max_bytes: u64) -> Limits {
    Limits {
        max_bytes,
        max_age: NO_AGE_LIMIT,
        when_full: WhenFull::DropOldest,
    }
}

/// The labels of series `series` of record `record`.
fn series_labels(record: usize, series: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".to_owned(), "upgrade_fixture_total".to_owned()),
        ("record".to_owned(), record.to_string()),
        ("series".to_owned(), series.to_string()),
    ]
}

/// The samples of every series of record `record`.
fn samples(record: usize) -> Vec<(i64, f64)> {
    (0..SAMPLES)
        .map(|k| {
            (
                START_MS + (record * SAMPLES + k) as i64 * 1000,
                (record * 10 + k) as f64,
            )
        })
        .collect()
}

/// The configuration the fixture's last-known-good file holds.
const LAST_KNOWN_GOOD: &str = r#"{"apiVersion":"telemetry.kaas-observer.io/v1alpha1","kind":"AgentConfig","externalLabels":{"cluster":"upgrade-fixture"},"pipelines":[{"apiVersion":"telemetry.kaas-observer.io/v1alpha1","kind":"MetricPipeline","metadata":{"name":"metrics"},"spec":{"input":{"static":{"targets":[{"addresses":["127.0.0.1:9100"]}]}},"output":{"prometheusRemoteWrite":{"url":"https://metrics.example.test/api/v1/write"}}}}]}"#;

/// Writes the fixtures with this build's code. Ignored: run only when a format changes
/// on purpose (see the module documentation).
#[test]
#[ignore = "writes the committed upgrade fixtures"]
fn write_upgrade_fixtures() {
    let data = fixture_data();
    if data.exists() {
        std::fs::remove_dir_all(&data).expect("remove old fixtures");
    }
    // The buffer: half the records as the scrapers push them (an encoded request in
    // a stream), half as push receivers do (a batch).
    let dir = data.join("buffers").join(PIPELINE);
    let (buffer, _) = DiskBuffer::open(&dir, limits(FIXTURE_BUFFER_BYTES)).expect("open");
    let inlet = Inlet {
        buffer: Arc::new(Mutex::new(buffer)),
        stats: Arc::new(PipelineStats::default()),
        wake: Arc::new(Notify::new()),
    };
    for record in 0..RECORDS {
        if record % 2 == 0 {
            let mut writer = RequestWriter::default();
            for series in 0..SERIES {
                let labels = encode_labels(&Labels::from_pairs(series_labels(record, series)));
                for (timestamp, value) in samples(record) {
                    writer.sample(&labels, timestamp, value);
                }
            }
            let (count, oldest) = (writer.samples(), writer.oldest_ms().expect("samples"));
            inlet
                .push_encoded(&writer.into_bytes(), count, oldest, Some(record as u64))
                .expect("push encoded");
        } else {
            let batch = Batch {
                series: (0..SERIES)
                    .map(|series| TimeSeries {
                        labels: series_labels(record, series)
                            .into_iter()
                            .map(|(name, value)| Label { name, value })
                            .collect(),
                        samples: samples(record)
                            .into_iter()
                            .map(|(timestamp, value)| Sample { value, timestamp })
                            .collect(),
                    })
                    .collect(),
                metadata: vec![MetricMetadata {
                    r#type: MetricType::Counter as i32,
                    metric_family_name: "upgrade_fixture".into(),
                    help: "Written by the build before.".into(),
                    unit: String::new(),
                }],
            };
            inlet.push(&batch, START_MS).expect("push batch");
        }
    }
    let mut buffer = inlet.buffer.lock().expect("lock");
    buffer.read_next(START_MS).expect("read").expect("a record");
    let after_first = buffer.read_position();
    buffer.ack(after_first).expect("ack");
    buffer.persist_ack().expect("persist ack");
    drop(buffer);

    LastKnownGood::new(LAST_KNOWN_GOOD.as_bytes().to_vec())
        .save(&data)
        .expect("save last-known-good");

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![CLUSTER_ID.to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let cert = params.self_signed(&key).expect("certificate");
    AgentIdentity {
        cluster_id: CLUSTER_ID.to_owned(),
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
        ca_pem: cert.pem(),
    }
    .save(&data)
    .expect("save identity");
}

/// Copies a directory tree (the fixture is never opened in place: opening a buffer
/// may write to it).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_buffer_written_by_the_previous_build_is_drained_except_what_it_acknowledged() {
    let data = tempfile::tempdir().expect("temp dir");
    copy_tree(&fixture_data(), data.path());
    let receiver = RemoteWriteReceiver::start().await;
    let (buffer, recovery) =
        DiskBuffer::open(data.path().join("buffers").join(PIPELINE), limits(64 << 20))
            .expect("open the old buffer");
    assert_eq!(recovery.records, (RECORDS - 1) as u64);
    assert_eq!((recovery.torn_bytes, recovery.corrupt_bytes), (0, 0));
    let buffer = Arc::new(Mutex::new(buffer));
    let stats = Arc::new(PipelineStats::default());
    let output: RemoteWriteOutput =
        serde_yaml::from_str(&format!("url: {}", receiver.url())).expect("output");
    let exporter = RemoteWriteExporter::new(
        &output,
        receiver.url().parse::<url::Url>().expect("URL"),
        RemoteWriteVersion::V1,
        Duration::from_secs(5),
        ValueSources::without_secrets(),
    )
    .expect("exporter");
    let sender = Sender {
        buffer: buffer.clone(),
        exporter: Arc::new(Exporter::RemoteWrite(exporter)),
        config: SenderConfig::with_max_age(NO_AGE_LIMIT),
        stats: stats.clone(),
        wake: Arc::new(Notify::new()),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(sender.run(shutdown_rx));
    let expected = (RECORDS - 1) * SERIES * SAMPLES;
    receiver
        .wait_for_samples(expected, Duration::from_secs(20))
        .await;
    shutdown.send_replace(true);
    task.await.expect("sender");
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), (RECORDS - 1) * SERIES, "{accepted:?}");
    for record in 1..RECORDS {
        for series in 0..SERIES {
            assert_eq!(
                accepted.get(&series_labels(record, series)),
                Some(&samples(record)),
                "record {record}, series {series}"
            );
        }
    }
    assert_eq!(buffer.lock().expect("lock").pending_records(), 0);
}

#[test]
fn the_last_known_good_configuration_and_identity_of_the_previous_build_are_used() {
    let data = tempfile::tempdir().expect("temp dir");
    copy_tree(&fixture_data(), data.path());

    let saved = LastKnownGood::load(data.path())
        .expect("readable")
        .expect("present");
    assert_eq!(saved.body, LAST_KNOWN_GOOD.as_bytes());
    let config = AgentConfig::parse(
        std::str::from_utf8(&saved.body).expect("UTF-8"),
        &kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::agent_default()),
    )
    .expect("still valid for this build");
    assert_eq!(config.pipelines.len(), 1);
    assert_eq!(config.pipelines[0].name(), PIPELINE);

    let identity = AgentIdentity::load(data.path())
        .expect("readable")
        .expect("present");
    assert_eq!(identity.cluster_id, CLUSTER_ID);
    assert!(identity.key_pem.contains("PRIVATE KEY"));
    let validity = identity.validity().expect("a certificate it can read");
    assert!(validity.not_after > std::time::SystemTime::now());
}
