//! OTLP logs pushed to a standalone agent (issue 16): a log pipeline with an `otlp`
//! input takes `POST /v1/logs` on the OTLP/HTTP port (protobuf, gzip) and
//! `LogsService/Export` on the OTLP/gRPC port, and ships the records to a real OTLP
//! receiver (rotel, from PyPI). OTLP/JSON bodies are written by the official Python
//! bindings (`opentelemetry-proto`), independent of the agent's decoder. Needs `rotel`
//! and `opentelemetry-proto` (`scripts/test.sh` installs them).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord, Resource, ResourceLogs, ScopeLogs,
    any_value::Value,
};
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port, wait_for_tcp};
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(value.to_owned())),
    })
}

/// A request of one record with `body`, from the service `service`.
fn request(service: &str, body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text(service),
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: text(body),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// OTLP logs pushed over HTTP (plain and gzip) and over gRPC reach rotel; the HTTP
/// push is answered with an `ExportLogsServiceResponse` only once the records are
/// durable; a push to a port no log pipeline takes is refused as before.
#[tokio::test(flavor = "multi_thread")]
async fn otlp_logs_pushed_over_http_and_grpc_reach_rotel() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    let (grpc_port, http_port) = (free_port(), free_port());
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\nlogPipelines:\n  - metadata: {{name: pushed-logs}}\n    spec:\n      input: {{otlp: {{enabled: true, authentication: {{mode: unauthenticated}}}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
        rotel.grpc_port
    );
    let config_path = dir.path().join("agent.yaml");
    std::fs::write(&config_path, config).unwrap();
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--kubernetes")
            .arg("off")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--otlp-grpc-listen-address")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-listen-address")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_tcp(([127, 0, 0, 1], http_port).into(), DEADLINE);
    let url = format!("http://127.0.0.1:{http_port}/v1/logs");
    let protobuf = [("Content-Type", "application/x-protobuf")];
    // The configuration is applied just after the listeners start: retry until a
    // pipeline takes the push.
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let body = request("http-sender", "pushed-over-http").encode_to_vec();
        let (status, answer) = kaas_test_support::http::post(&url, &protobuf, &body).unwrap();
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < until && status == 404,
            "{status}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&request("gzip-sender", "pushed-gzipped").encode_to_vec())
        .unwrap();
    let (status, answer) = kaas_test_support::http::post(
        &url,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip.finish().unwrap(),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    // OTLP/JSON, written by the official Python bindings, plain and gzipped.
    let json = to_otlp_json(&request("json-sender", "pushed-as-json"));
    let (status, answer) =
        kaas_test_support::http::post(&url, &[("Content-Type", "application/json")], &json)
            .unwrap();
    assert_eq!((status, answer.as_str()), (200, "{}"));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&to_otlp_json(&request(
        "json-sender",
        "pushed-as-gzipped-json",
    )))
    .unwrap();
    let (status, answer) = kaas_test_support::http::post(
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip.finish().unwrap(),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (status, _) =
        kaas_test_support::http::post(&url, &[("Content-Type", "text/plain")], b"{}").unwrap();
    assert_eq!(status, 415);

    // The agent's own OTLP/gRPC log exporter is the gRPC client.
    let output: kaas_pipeline::logs::LogPipeline = serde_yaml::from_str(&format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\nmetadata: {{name: client}}\nspec:\n  input: {{otlp: {{enabled: true}}}}\n  output: {{otlp: {{endpoint: \"http://127.0.0.1:{grpc_port}\"}}}}\n"
    ))
    .unwrap();
    let output = kaas_pipeline::validate_log_pipeline(
        &output,
        &kaas_pipeline::ValidationContext::standalone(),
    )
    .unwrap();
    let stats = std::sync::Arc::new(kaas_cluster_agent::internal_events::PipelineStats::named(
        "client",
    ));
    let exporter = kaas_cluster_agent::exporters::LogExporter::new(
        &output.output,
        kaas_cluster_agent::outbound::auth::ValueSources::without_secrets(),
        stats,
    )
    .unwrap();
    let sent = kaas_cluster_agent::record::logs::LogRequest::new(
        request("grpc-sender", "pushed-over-grpc").encode_to_vec(),
        1,
        0,
    );
    use kaas_cluster_agent::exporters::Export;
    exporter
        .send(&sent)
        .await
        .expect("the gRPC push is accepted");

    let log = rotel.wait_for_log(
        &[
            "pushed-over-http",
            "pushed-gzipped",
            "pushed-over-grpc",
            "pushed-as-json",
            "pushed-as-gzipped-json",
            "service.name: Str(grpc-sender)",
            "service.name: Str(json-sender)",
        ],
        DEADLINE,
    );
    assert!(log.contains("service.name: Str(http-sender)"));
}

/// `request` as OTLP/JSON, written by the official Python bindings
/// (`tests/fixtures/otlp/logs_to_otlp_json.py`).
fn to_otlp_json(request: &ExportLogsServiceRequest) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("test harness");
    let file = dir.path().join("request.bin");
    std::fs::write(&file, request.encode_to_vec()).expect("test harness");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/otlp/logs_to_otlp_json.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official bindings write OTLP/JSON (pip install opentelemetry-proto): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Issue 16: a request with every field of the OTLP logs protocol set, values of
/// every type, written as OTLP/JSON by the official bindings, decodes to the request
/// it was written from.
#[test]
fn otlp_json_from_the_official_bindings_decodes_to_the_same_request() {
    use kaas_proto::otlp::{
        ArrayValue, EntityRef, InstrumentationScope, KeyValueList, SeverityNumber,
    };
    let value = |value: Value| Some(AnyValue { value: Some(value) });
    let keyed = |key: &str, value: Option<AnyValue>| KeyValue {
        key: key.into(),
        value,
    };
    let every_value = vec![
        keyed("s", text("text")),
        keyed("b", value(Value::BoolValue(true))),
        keyed("i", value(Value::IntValue(i64::MIN))),
        keyed("d", value(Value::DoubleValue(-0.125))),
        keyed("inf", value(Value::DoubleValue(f64::INFINITY))),
        keyed("bytes", value(Value::BytesValue(vec![0, 0xfb, 0xff, 7]))),
        keyed(
            "array",
            value(Value::ArrayValue(ArrayValue {
                values: vec![text("a").unwrap(), AnyValue::default()],
            })),
        ),
        keyed(
            "map",
            value(Value::KvlistValue(KeyValueList {
                values: vec![keyed("nested", value(Value::IntValue(u32::MAX.into())))],
            })),
        ),
        keyed("unset", None),
    ];
    let sent = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: every_value.clone(),
                dropped_attributes_count: 1,
                entity_refs: vec![EntityRef {
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                    r#type: "service".into(),
                    id_keys: vec!["service.name".into(), "service.namespace".into()],
                    description_keys: vec!["service.version".into()],
                }],
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "checkout".into(),
                    version: "1.2.3".into(),
                    attributes: vec![keyed("reader", text("cri"))],
                    dropped_attributes_count: 2,
                }),
                log_records: vec![
                    LogRecord {
                        time_unix_nano: u64::MAX,
                        observed_time_unix_nano: 1_765_000_000_123_456_789,
                        severity_number: SeverityNumber::Error3 as i32,
                        severity_text: "ERROR".into(),
                        body: value(Value::KvlistValue(KeyValueList {
                            values: every_value.clone(),
                        })),
                        attributes: every_value,
                        dropped_attributes_count: 3,
                        flags: 0x1ff,
                        trace_id: (1..=16).collect(),
                        span_id: (0xf0..=0xf7).collect(),
                        event_name: "checkout.failed".into(),
                    },
                    LogRecord::default(),
                ],
                schema_url: "https://opentelemetry.io/schemas/1.29.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.28.0".into(),
        }],
    };
    let json = to_otlp_json(&sent);
    let text = String::from_utf8_lossy(&json);
    assert!(
        text.contains(r#""traceId": "0102030405060708090a0b0c0d0e0f10""#),
        "{text}"
    );
    assert!(
        text.contains(r#""timeUnixNano": "18446744073709551615""#),
        "{text}"
    );
    let decoded =
        kaas_series::otlp_logs_json::decode(&json, &kaas_series::PushLimits::default()).unwrap();
    assert_eq!(decoded, sent);
}
