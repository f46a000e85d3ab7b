//! The three log outputs end to end on the agent's signal-generic data path: OTLP log
//! batches go through the real inlet, disk buffer and sender to the exporter a
//! validated `LogPipeline` output builds ([`LogExporter::new`]), and from there to a
//! peer:
//!
//! - OTLP to a real rotel over gRPC and HTTP;
//! - OTLP with every field of the protocol set to a recording receiver, decoded by the
//!   official Python bindings (`opentelemetry-proto`) and compared field by field;
//! - Loki's push API to a recording receiver, decoded with Loki's published schema
//!   (`kaas_test_support::loki`: protox, prost-reflect), every field checked;
//! - the bulk API and JSON lines to a recording receiver, NDJSON read with
//!   `serde_json::Value`, every field checked, and a bulk answer refusing some
//!   documents for good and asking for others again.
//!
//! Needs `rotel` and `opentelemetry-proto` from PyPI (`scripts/test.sh` installs them).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kaas_cluster_agent::exporters::LogExporter;
use kaas_cluster_agent::files::FileAccess;
use kaas_cluster_agent::internal_events::{DropReason, ErrorReason, PipelineStats};
use kaas_cluster_agent::outbound::auth::{SecretStore, ValueSources};
use kaas_cluster_agent::record::logs::LogBatch;
use kaas_cluster_agent::topology::sender::SenderConfig;
use kaas_pipeline::logs::output::ValidatedLogOutput;
use kaas_pipeline::logs::{LogPipeline, validate_log_pipeline};
use kaas_pipeline::policy::ValidationContext;
use kaas_pipeline::secret::SecretString;
use kaas_proto::otlp::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, LogRecord,
    Resource, ResourceLogs, ScopeLogs, any_value::Value,
};
use kaas_test_support::loki::{LokiEntry, loki_streams};
use kaas_test_support::peers::Rotel;
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use serde_json::json;

mod data_path;
use data_path::TestPipeline;

const DEADLINE: Duration = Duration::from_secs(30);
/// 2025-12-06T05:46:40.123456789Z.
const T0: u64 = 1_765_000_000_123_456_789;
const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const SPAN_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

fn text_value(value: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(value.into())),
    }
}

fn string(value: &str) -> Option<AnyValue> {
    Some(text_value(value))
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
    }
}

fn text_attribute(key: &str, value: &str) -> KeyValue {
    attribute(key, string(value))
}

/// A pod's container file as a resource.
fn pod(namespace: &str, name: &str) -> Resource {
    Resource {
        attributes: vec![
            text_attribute("k8s.namespace.name", namespace),
            text_attribute("k8s.pod.name", name),
            text_attribute("k8s.pod.uid", &format!("uid-{name}")),
            text_attribute("k8s.container.name", "app"),
            text_attribute("k8s.pod.label.app.kubernetes.io/name", "shop"),
            text_attribute(
                "log.file.path",
                &format!("/var/log/pods/{namespace}_{name}_uid/app/0.log"),
            ),
        ],
        ..Default::default()
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "kaas.tail".into(),
        version: "1.2.3".into(),
        attributes: vec![text_attribute("reader", "cri")],
        dropped_attributes_count: 1,
    })
}

/// A record with every field set; `n` makes it unique.
fn full_record(n: u64, severity: &str, body: Option<AnyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: T0 + n,
        observed_time_unix_nano: T0 + 1_000 + n,
        severity_number: if severity == "ERROR" { 17 } else { 9 },
        severity_text: severity.into(),
        body,
        attributes: vec![
            attribute(
                "http.status_code",
                Some(AnyValue {
                    value: Some(Value::IntValue(500)),
                }),
            ),
            text_attribute("user", &format!("alice-{n}")),
        ],
        dropped_attributes_count: 2,
        flags: 1,
        trace_id: TRACE_ID.to_vec(),
        span_id: SPAN_ID.to_vec(),
        event_name: "checkout.failed".into(),
    }
}

fn batch(resource_logs: Vec<(Resource, Vec<LogRecord>)>) -> LogBatch {
    LogBatch {
        resource_logs: resource_logs
            .into_iter()
            .map(|(resource, log_records)| ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// The validated output of a log pipeline with `output` (YAML flow style).
fn validated_output(output: &str) -> ValidatedLogOutput {
    let text = format!(
        "metadata: {{name: shop-logs}}\nspec:\n  input: {{otlp: {{enabled: true}}}}\n  output: {output}\n"
    );
    let pipeline: LogPipeline = serde_yaml::from_str(&text).expect("a log pipeline");
    validate_log_pipeline(&pipeline, &ValidationContext::standalone())
        .expect("valid")
        .output
}

/// Pushes `batches` into a fresh buffer and runs the sender with the output's exporter
/// until the buffer is empty; the pipeline's counters.
async fn ship(output: &ValidatedLogOutput, batches: &[LogBatch]) -> Arc<PipelineStats> {
    let pipeline = start(output, batches);
    pipeline.drained().await;
    pipeline.stop().await
}

/// Pushes `batches` into a fresh buffer and starts the sender with the output's
/// exporter.
fn start(output: &ValidatedLogOutput, batches: &[LogBatch]) -> TestPipeline {
    start_with(output, batches, ValueSources::without_secrets())
}

/// [`start`], secrets and files coming from `sources`.
fn start_with(
    output: &ValidatedLogOutput,
    batches: &[LogBatch],
    sources: ValueSources,
) -> TestPipeline {
    let mut pipeline = TestPipeline::open("shop-logs");
    for batch in batches {
        pipeline
            .inlet
            .push(batch, 1_700_000_000_000)
            .expect("stored");
    }
    let exporter = LogExporter::new(output, sources, pipeline.stats.clone()).expect("an exporter");
    let config = SenderConfig {
        shards: 2,
        ..SenderConfig::with_max_age(data_path::NEVER)
    };
    pipeline.start(Arc::new(exporter), config);
    pipeline
}

/// A backend that accepts connections and never answers does not hold up another
/// pipeline shipping the same records, and loses nothing: its records stay buffered
/// while every attempt fails as retryable.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_backend_keeps_its_records_and_holds_up_no_other_pipeline() {
    let hung = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind loopback");
    let hung_address = hung.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = hung.accept().await {
            connections.push(connection);
        }
    });
    let healthy = RecordingReceiver::start(Reply::status(204)).await;
    let batches: Vec<LogBatch> = (1..=20)
        .map(|n| {
            batch(vec![(
                pod("shop", &format!("web-{}", n % 3)),
                vec![full_record(n, "ERROR", string(&format!("boom {n}")))],
            )])
        })
        .collect();
    let stuck = start(
        &validated_output(&format!(
            "{{loki: {{url: \"http://{hung_address}\", timeout: 1s}}}}"
        )),
        &batches,
    );
    let flowing = start(
        &validated_output(&format!("{{loki: {{url: \"{}\"}}}}", healthy.base_url())),
        &batches,
    );
    flowing.drained().await;
    let flowing = flowing.stop().await;
    assert_eq!(flowing.samples_sent.load(Ordering::Relaxed), 20);
    tokio::time::timeout(DEADLINE, async {
        while stuck.stats.errors_by_reason().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the hung backend's attempts fail");
    let errors: BTreeMap<ErrorReason, u64> = stuck.stats.errors_by_reason().into_iter().collect();
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        [&ErrorReason::BackendUnreachable],
        "retryable only"
    );
    assert_eq!(stuck.pending_records(), 20, "nothing lost");
    let stuck = stuck.stop().await;
    assert_eq!(stuck.samples_sent.load(Ordering::Relaxed), 0);
    assert_eq!(stuck.dropped_total(DropReason::RejectedByBackend), 0);
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_reach_rotel_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = Rotel::start_logging(dir.path(), &["logs"]);
    for (protocol, port, body) in [
        ("grpc", rotel.grpc_port, "payment declined over grpc"),
        ("http", rotel.http_port, "payment declined over http"),
    ] {
        let output = validated_output(&format!(
            "{{otlp: {{endpoint: \"http://127.0.0.1:{port}\", protocol: {protocol}, headers: [{{name: X-Tenant, value: shop}}]}}}}"
        ));
        let stats = ship(
            &output,
            &[batch(vec![(
                pod("shop", "web-1"),
                vec![full_record(1, "ERROR", string(body))],
            )])],
        )
        .await;
        assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 1, "{protocol}");
    }
    let log = rotel.wait_for_log(
        &[
            "payment declined over grpc",
            "payment declined over http",
            "k8s.pod.name: Str(web-1)",
            "k8s.namespace.name: Str(shop)",
            "user: Str(alice-1)",
            "http.status_code: Int(500)",
            "ERROR",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ],
        DEADLINE,
    );
    assert!(log.contains("kaas.tail"), "the scope: {log}");
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The structured metadata of a [`full_record`] of `n` in pod `name`, labels being
/// namespace, pod and severity.
fn full_metadata(n: u64, name: &str) -> BTreeMap<String, String> {
    metadata(&[
        ("k8s_pod_uid", &format!("uid-{name}")),
        ("k8s_container_name", "app"),
        ("k8s_pod_label_app_kubernetes_io_name", "shop"),
        (
            "log_file_path",
            &format!("/var/log/pods/shop_{name}_uid/app/0.log"),
        ),
        ("http_status_code", "500"),
        ("user", &format!("alice-{n}")),
        ("scope_name", "kaas.tail"),
        ("scope_version", "1.2.3"),
        ("severity_number", if n == 2 { "9" } else { "17" }),
        ("flags", "1"),
        ("dropped_attributes_count", "2"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("span_id", "00f067aa0ba902b7"),
        ("event_name", "checkout.failed"),
        ("observed_timestamp", &(T0 + 1_000 + n).to_string()),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_push_carries_labels_metadata_timestamps_lines_and_the_tenant() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let output = validated_output(&format!(
        "{{loki: {{url: \"{}\", tenantId: shop-tenant, labels: [k8s.namespace.name, k8s.pod.name, severity_text], headers: [{{name: X-Extra, value: yes}}]}}}}",
        loki.base_url()
    ));
    let structured = AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![text_attribute("msg", "card \"declined\"")],
        })),
    };
    let unlabelled = LogRecord {
        time_unix_nano: 0,
        observed_time_unix_nano: T0 + 9,
        body: string("no labels at all"),
        ..Default::default()
    };
    let stats = ship(
        &output,
        &[batch(vec![
            (
                pod("shop", "web-1"),
                vec![
                    full_record(1, "ERROR", string("boom 1")),
                    full_record(2, "INFO", Some(structured)),
                    full_record(3, "ERROR", string("boom 3")),
                ],
            ),
            (
                pod("shop", "web-2"),
                vec![full_record(4, "ERROR", string("boom 4"))],
            ),
            (Resource::default(), vec![unlabelled]),
        ])],
    )
    .await;
    assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 5);

    // Two shards: the resources' records may come in up to two requests.
    let mut streams = Vec::new();
    for request in loki.received() {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/loki/api/v1/push")
        );
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        assert_eq!(request.headers["content-encoding"], "snappy");
        assert_eq!(request.headers["x-scope-orgid"], "shop-tenant");
        assert_eq!(request.headers["x-extra"], "yes");
        streams.extend(loki_streams(&request.body));
    }

    let entry = |n: u64, line: &str, name: &str| LokiEntry {
        seconds: 1_765_000_000,
        nanos: 123_456_789 + i32::try_from(n).unwrap(),
        line: line.to_owned(),
        metadata: full_metadata(n, name),
    };
    // The receiver does not care about the order of streams; compare them sorted.
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = vec![
        (
            r#"{k8s_namespace_name="shop", k8s_pod_name="web-1", severity_text="ERROR"}"#
                .to_owned(),
            vec![entry(1, "boom 1", "web-1"), entry(3, "boom 3", "web-1")],
        ),
        (
            r#"{k8s_namespace_name="shop", k8s_pod_name="web-1", severity_text="INFO"}"#.to_owned(),
            vec![entry(2, r#"{"msg":"card \"declined\""}"#, "web-1")],
        ),
        (
            r#"{k8s_namespace_name="shop", k8s_pod_name="web-2", severity_text="ERROR"}"#
                .to_owned(),
            vec![entry(4, "boom 4", "web-2")],
        ),
        (
            r#"{service_name="unknown_service"}"#.to_owned(),
            vec![LokiEntry {
                seconds: 1_765_000_000,
                nanos: 123_456_798,
                line: "no labels at all".to_owned(),
                metadata: metadata(&[
                    ("observed_timestamp", &(T0 + 9).to_string()),
                    ("scope_name", "kaas.tail"),
                    ("scope_version", "1.2.3"),
                ]),
            }],
        ),
    ];
    assert_eq!(streams, expected);
}

/// NDJSON lines as JSON values.
fn ndjson(body: &[u8]) -> Vec<serde_json::Value> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(text.ends_with('\n'), "every line ends with a newline");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON value per line"))
        .collect()
}

/// The document of a [`full_record`] of `n` in pod `name` with `body`; `label` is the
/// key the pod label has in it.
fn full_document(n: u64, name: &str, body: serde_json::Value, label: &str) -> serde_json::Value {
    json!({
        "@timestamp": format!("2025-12-06T05:46:40.{:09}Z", 123_456_789 + n),
        "observed_timestamp": format!("2025-12-06T05:46:40.{:09}Z", 123_457_789 + n),
        "severity_text": "ERROR",
        "severity_number": 17,
        "body": body,
        "attributes": {"http.status_code": 500, "user": format!("alice-{n}")},
        "resource": {
            "k8s.namespace.name": "shop",
            "k8s.pod.name": name,
            "k8s.pod.uid": format!("uid-{name}"),
            "k8s.container.name": "app",
            label: "shop",
            "log.file.path": format!("/var/log/pods/shop_{name}_uid/app/0.log"),
        },
        "scope": {"name": "kaas.tail", "version": "1.2.3", "attributes": {"reader": "cri"}},
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "flags": 1,
        "event_name": "checkout.failed",
        "dropped_attributes_count": 2,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_documents_are_framed_indexed_de_dotted_and_partial_failures_classified() {
    let bulk =
        RecordingReceiver::start(Reply::json(200, &json!({"errors": false, "items": []}))).await;
    // The first answer: stored, asked for again, refused for good.
    bulk.script([Reply::json(
        200,
        &json!({"took": 3, "errors": true, "items": [
            {"create": {"_index": "x", "status": 201}},
            {"create": {"_index": "x", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"create": {"_index": "x", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse [user]"}}},
        ]}),
    )]);
    let output = validated_output(&format!(
        "{{http: {{url: \"{}\", format: elasticsearchBulk, index: \"logs-%N-%Y.%m.%d\", headers: [{{name: X-Extra, value: yes}}]}}}}",
        bulk.base_url()
    ));
    let stats = ship(
        &output,
        &[batch(vec![(
            pod("shop", "web-1"),
            (1..=3)
                .map(|n| full_record(n, "ERROR", string(&format!("boom {n}"))))
                .collect(),
        )])],
    )
    .await;

    let received = bulk.received();
    assert_eq!(received.len(), 2, "the first request and one retry");
    for request in &received {
        assert_eq!(request.path, "/_bulk");
        assert_eq!(request.headers["content-type"], "application/x-ndjson");
        assert_eq!(request.headers["x-extra"], "yes");
    }
    let action = json!({"create": {"_index": "logs-shop-2025.12.06"}});
    let label = "k8s.pod.label.app_kubernetes_io_name";
    let document = |n: u64| full_document(n, "web-1", json!(format!("boom {n}")), label);
    assert_eq!(
        ndjson(&received[0].body),
        vec![
            action.clone(),
            document(1),
            action.clone(),
            document(2),
            action.clone(),
            document(3)
        ]
    );
    // Only the document asked for again is sent again: nothing stored twice.
    assert_eq!(ndjson(&received[1].body), vec![action, document(2)]);
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 1);
    // Each record counted by its own outcome: the refused one is not also "sent", and
    // only the one asked for again failed an attempt.
    assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 2);
    assert_eq!(stats.samples_failed.load(Ordering::Relaxed), 1);
    let errors: BTreeMap<ErrorReason, u64> = stats.errors_by_reason().into_iter().collect();
    assert_eq!(errors.get(&ErrorReason::DataDropped), Some(&1));
    assert_eq!(errors.get(&ErrorReason::BackendUnreachable), Some(&1));
}

/// An OTLP partial success refusing one record of three: that record is dropped and
/// counted, the other two are sent; none is counted both ways.
#[tokio::test(flavor = "multi_thread")]
async fn an_otlp_partial_success_counts_only_accepted_records_as_sent() {
    use prost::Message;
    let answer = kaas_proto::otlp::ExportLogsServiceResponse {
        partial_success: Some(kaas_proto::otlp::ExportLogsPartialSuccess {
            rejected_log_records: 1,
            error_message: "record 2 is too old".into(),
        }),
    };
    let receiver = RecordingReceiver::start(Reply {
        status: 200,
        content_type: "application/x-protobuf",
        body: answer.encode_to_vec(),
    })
    .await;
    let output = validated_output(&format!(
        "{{otlp: {{endpoint: \"{}\", protocol: http}}}}",
        receiver.base_url()
    ));
    let stats = ship(
        &output,
        &[batch(vec![(
            pod("shop", "web-1"),
            (1..=3)
                .map(|n| full_record(n, "ERROR", string(&format!("boom {n}"))))
                .collect(),
        )])],
    )
    .await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_carry_one_document_per_record() {
    let sink = RecordingReceiver::start(Reply::status(200)).await;
    let output = validated_output(&format!(
        "{{http: {{url: \"{}/ingest\"}}}}",
        sink.base_url()
    ));
    let kv = AnyValue {
        value: Some(Value::ArrayValue(ArrayValue {
            values: vec![
                text_value("a"),
                AnyValue {
                    value: Some(Value::BoolValue(true)),
                },
                AnyValue {
                    value: Some(Value::DoubleValue(1.5)),
                },
                AnyValue {
                    value: Some(Value::BytesValue(vec![0xca, 0xfe])),
                },
            ],
        })),
    };
    ship(
        &output,
        &[batch(vec![(
            pod("shop", "web-1"),
            vec![
                full_record(1, "ERROR", string("boom 1")),
                full_record(2, "ERROR", Some(kv)),
            ],
        )])],
    )
    .await;
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/ingest");
    assert_eq!(received[0].headers["content-type"], "application/x-ndjson");
    // No de-dotting unless asked for: the label key stays as Kubernetes wrote it.
    let label = "k8s.pod.label.app.kubernetes.io/name";
    let mut second = full_document(2, "web-1", json!(["a", true, 1.5, "cafe"]), label);
    second["severity_number"] = json!(17);
    assert_eq!(
        ndjson(&received[0].body),
        vec![full_document(1, "web-1", json!("boom 1"), label), second]
    );
}

/// A batch with every field of the OTLP logs protocol set, values of every type.
fn every_field() -> LogBatch {
    let every_value = vec![
        text_attribute("s", "text"),
        attribute(
            "b",
            Some(AnyValue {
                value: Some(Value::BoolValue(true)),
            }),
        ),
        attribute(
            "i",
            Some(AnyValue {
                value: Some(Value::IntValue(-7)),
            }),
        ),
        attribute(
            "d",
            Some(AnyValue {
                value: Some(Value::DoubleValue(2.5)),
            }),
        ),
        attribute(
            "y",
            Some(AnyValue {
                value: Some(Value::BytesValue(vec![1, 2, 255])),
            }),
        ),
        attribute(
            "a",
            Some(AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![text_value("x")],
                })),
            }),
        ),
        attribute(
            "m",
            Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![text_attribute("k", "v")],
                })),
            }),
        ),
    ];
    let mut record = full_record(1, "ERROR", string("every field"));
    record.attributes.extend(every_value.clone());
    LogBatch {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: every_value,
                dropped_attributes_count: 3,
                entity_refs: vec![EntityRef {
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                    r#type: "k8s.pod".into(),
                    id_keys: vec!["k8s.pod.uid".into()],
                    description_keys: vec!["k8s.pod.name".into()],
                }],
            }),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![record],
                schema_url: "https://opentelemetry.io/schemas/1.29.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.28.0".into(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_otlp_record_with_every_field_set_arrives_whole_for_the_official_decoder() {
    let sink = RecordingReceiver::start(Reply::status(200)).await;
    let output = validated_output(&format!(
        "{{otlp: {{endpoint: \"{}\", protocol: http}}}}",
        sink.base_url()
    ));
    ship(&output, &[every_field()]).await;
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/logs");
    assert_eq!(
        received[0].headers["content-type"],
        "application/x-protobuf"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.bin");
    std::fs::write(&file, &received[0].body).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/otlp/decode_otlp.py"
    );
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("logs")
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official bindings decode it (pip install opentelemetry-proto): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let decoded: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");

    // What protobuf's JSON mapping makes of every_field(), written out by hand.
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let every_value = json!([
        {"key": "s", "value": {"string_value": "text"}},
        {"key": "b", "value": {"bool_value": true}},
        {"key": "i", "value": {"int_value": "-7"}},
        {"key": "d", "value": {"double_value": 2.5}},
        {"key": "y", "value": {"bytes_value": b64(&[1, 2, 255])}},
        {"key": "a", "value": {"array_value": {"values": [{"string_value": "x"}]}}},
        {"key": "m", "value": {"kvlist_value": {"values": [{"key": "k", "value": {"string_value": "v"}}]}}},
    ]);
    let mut record_attributes = vec![
        json!({"key": "http.status_code", "value": {"int_value": "500"}}),
        json!({"key": "user", "value": {"string_value": "alice-1"}}),
    ];
    record_attributes.extend(every_value.as_array().unwrap().iter().cloned());
    let expected = json!({"resource_logs": [{
        "resource": {
            "attributes": every_value,
            "dropped_attributes_count": 3,
            "entity_refs": [{
                "schema_url": "https://opentelemetry.io/schemas/1.30.0",
                "type": "k8s.pod",
                "id_keys": ["k8s.pod.uid"],
                "description_keys": ["k8s.pod.name"],
            }],
        },
        "schema_url": "https://opentelemetry.io/schemas/1.28.0",
        "scope_logs": [{
            "scope": {
                "name": "kaas.tail",
                "version": "1.2.3",
                "attributes": [{"key": "reader", "value": {"string_value": "cri"}}],
                "dropped_attributes_count": 1,
            },
            "schema_url": "https://opentelemetry.io/schemas/1.29.0",
            "log_records": [{
                "time_unix_nano": (T0 + 1).to_string(),
                "observed_time_unix_nano": (T0 + 1_001).to_string(),
                "severity_number": 17,
                "severity_text": "ERROR",
                "body": {"string_value": "every field"},
                "attributes": record_attributes,
                "dropped_attributes_count": 2,
                "flags": 1,
                "trace_id": b64(&TRACE_ID),
                "span_id": b64(&SPAN_ID),
                "event_name": "checkout.failed",
            }],
        }],
    }]});
    assert_eq!(decoded, expected);
}

/// A backend's answer is read only up to a bound: a bulk answer longer than that is
/// refused as unreadable (its documents dropped and counted), never held whole, even
/// when it would have said that all was stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_bulk_answer_is_not_read_whole() {
    // A valid answer saying all is stored, were it read whole.
    let padding = "x".repeat(kaas_cluster_agent::outbound::http::MAX_RESPONSE_BODY);
    let body = json!({"errors": false, "items": [], "padding": padding})
        .to_string()
        .into_bytes();
    let bulk = RecordingReceiver::start(Reply {
        status: 200,
        content_type: "application/json",
        body,
    })
    .await;
    let output = validated_output(&format!(
        "{{http: {{url: \"{}\", format: elasticsearchBulk}}}}",
        bulk.base_url()
    ));
    let stats = ship(
        &output,
        &[batch(vec![(
            pod("shop", "web-1"),
            vec![full_record(1, "ERROR", string("boom"))],
        )])],
    )
    .await;
    assert_eq!(bulk.received().len(), 1, "dropped, not retried");
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 1);
    let last = stats.last_error().expect("an error");
    assert_eq!(last.reason, ErrorReason::DataDropped);
    assert!(
        last.message.contains("not a bulk response"),
        "{}",
        last.message
    );
}

/// The cluster's Secrets as a test changes them.
#[derive(Debug, Default)]
struct Secrets(Mutex<BTreeMap<(String, String, String), String>>);

impl Secrets {
    fn set(&self, name: &str, key: &str, value: &str) {
        let id = ("kaas-observer".to_owned(), name.to_owned(), key.to_owned());
        self.0.lock().expect("lock").insert(id, value.to_owned());
    }
}

impl SecretStore for Secrets {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
        let id = (namespace.to_owned(), name.to_owned(), key.to_owned());
        self.0.lock().expect("lock").get(&id).map(SecretString::new)
    }
}

/// Credentials and headers from Secrets are resolved for every push: a rotated
/// Secret takes effect with the next push, without restarting the pipeline, as for
/// metric outputs.
#[tokio::test(flavor = "multi_thread")]
async fn loki_credentials_from_secrets_rotate_without_a_restart() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    let secret = |key: &str| {
        format!(
            "{{valueFrom: {{secretKeyRef: {{name: loki, namespace: kaas-observer, key: {key}}}}}}}"
        )
    };
    let output = validated_output(&format!(
        "{{loki: {{url: \"{}\", tenantId: shop, authentication: {{basic: {{user: {}, password: {}}}}}, headers: [{{name: X-Api-Key, valueFrom: {{secretKeyRef: {{name: loki, namespace: kaas-observer, key: api-key}}}}}}]}}}}",
        loki.base_url(),
        secret("user"),
        secret("password"),
    ));
    let secrets = Arc::new(Secrets::default());
    secrets.set("loki", "user", "shop");
    secrets.set("loki", "password", "first");
    secrets.set("loki", "api-key", "key-1");
    let records = |n: u64| {
        batch(vec![(
            pod("shop", "web-1"),
            vec![full_record(n, "ERROR", string("boom"))],
        )])
    };
    let sources = ValueSources::new(secrets.clone(), Arc::new(FileAccess::default()));
    let pipeline = start_with(&output, &[records(1)], sources);
    pipeline.drained().await;
    secrets.set("loki", "password", "second");
    secrets.set("loki", "api-key", "key-2");
    pipeline
        .inlet
        .push(&records(2), 1_700_000_000_000)
        .expect("stored");
    pipeline.drained().await;
    pipeline.stop().await;

    let basic = |password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("shop:{password}"))
        )
    };
    let seen: Vec<(String, String)> = loki
        .received()
        .iter()
        .map(|r| {
            (
                r.headers["authorization"].clone(),
                r.headers["x-api-key"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (basic("first"), "key-1".to_owned()),
            (basic("second"), "key-2".to_owned())
        ]
    );
}

/// Loki's answers are classified where they are read: 429 and 5xx keep the records
/// and retry them, any other 4xx drops the request's records and counts them.
#[tokio::test(flavor = "multi_thread")]
async fn loki_retries_429_and_5xx_and_drops_what_it_refuses() {
    let loki = RecordingReceiver::start(Reply::status(204)).await;
    loki.script([Reply::status(429), Reply::status(503)]);
    let output = validated_output(&format!("{{loki: {{url: \"{}\"}}}}", loki.base_url()));
    let records = batch(vec![(
        pod("shop", "web-1"),
        vec![full_record(1, "ERROR", string("boom"))],
    )]);
    let stats = ship(&output, std::slice::from_ref(&records)).await;
    let statuses: Vec<u16> = loki.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 204]);
    assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 0);

    let refusing = RecordingReceiver::start(Reply::status(400)).await;
    let output = validated_output(&format!("{{loki: {{url: \"{}\"}}}}", refusing.base_url()));
    let stats = ship(&output, &[records]).await;
    assert_eq!(refusing.received().len(), 1, "never sent again");
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 1);
    assert_eq!(
        stats.last_error().map(|e| e.reason),
        Some(ErrorReason::DataDropped)
    );
}
