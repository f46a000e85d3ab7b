//! Trace pipelines end to end (issue 17), on the agent's signal-generic data path:
//!
//! - spans sent by the OpenTelemetry Python SDK (PyPI `opentelemetry-sdk`, an
//!   independent sender) to a standalone agent over OTLP/gRPC (4317's service) and
//!   OTLP/HTTP (`/v1/traces`, plain and gzip) reach a real rotel over gRPC and HTTP;
//! - a span with every field of the protocol set, pushed over HTTP and over gRPC, is
//!   shipped to a recording receiver, decoded there by the official Python bindings
//!   (`opentelemetry-proto`) and compared field by field;
//! - with no trace pipeline the trace receivers answer 404 / `UNIMPLEMENTED`, which the
//!   SDK reports as a failed export;
//! - a backend that accepts connections and never answers holds up no other trace
//!   pipeline, and loses nothing.
//!
//! Needs `rotel`, `opentelemetry-proto` and the OpenTelemetry Python SDK with its OTLP
//! exporters (`scripts/test.sh` installs them).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use kaas_cluster_agent::exporters::TraceExporter;
use kaas_cluster_agent::internal_events::{DropReason, ErrorReason};
use kaas_cluster_agent::outbound::auth::ValueSources;
use kaas_cluster_agent::record::traces::TraceBatch;
use kaas_cluster_agent::topology::sender::SenderConfig;
use kaas_pipeline::policy::ValidationContext;
use kaas_pipeline::traces::output::ValidatedTraceOutput;
use kaas_pipeline::traces::{TracePipeline, validate_trace_pipeline};
use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{
    AnyValue, ArrayValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, KeyValueList,
    Resource, ResourceSpans, ScopeSpans, Span, Status, any_value::Value,
};
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port, wait_for_tcp};
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use prost::Message;
use serde_json::json;

mod data_path;
use data_path::TestPipeline;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp");
/// 2025-12-06T05:46:40.123456789Z.
const T0: u64 = 1_765_000_000_123_456_789;

/// A standalone agent running `trace_pipelines` (the YAML list under
/// `tracePipelines:`), with its OTLP ports.
struct Agent {
    grpc_port: u16,
    http_port: u16,
    zipkin_port: u16,
    _guard: ChildGuard,
}

impl Agent {
    fn start(dir: &Path, trace_pipelines: &str) -> Self {
        let config = if trace_pipelines.is_empty() {
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n".to_owned()
        } else {
            format!(
                "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\ntracePipelines:\n{trace_pipelines}"
            )
        };
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config).expect("the configuration is written");
        let (grpc_port, http_port, zipkin_port) = (free_port(), free_port(), free_port());
        let guard = ChildGuard::spawn(
            "cluster-agent",
            Command::new(AGENT)
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--kubernetes")
                .arg("off")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg("--otlp-grpc-listen-address")
                .arg(format!("127.0.0.1:{grpc_port}"))
                .arg("--otlp-http-listen-address")
                .arg(format!("127.0.0.1:{http_port}"))
                .arg("--zipkin-listen-address")
                .arg(format!("127.0.0.1:{zipkin_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_tcp(([127, 0, 0, 1], http_port).into(), DEADLINE);
        wait_for_tcp(([127, 0, 0, 1], grpc_port).into(), DEADLINE);
        wait_for_tcp(([127, 0, 0, 1], zipkin_port).into(), DEADLINE);
        Self {
            grpc_port,
            http_port,
            zipkin_port,
            _guard: guard,
        }
    }

    fn traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http_port)
    }

    /// Posts an encoded request to `/v1/traces` until a pipeline takes it (the
    /// configuration is applied just after the listeners start); the last answer.
    async fn post_until_taken(&self, body: &[u8]) -> (u16, String) {
        post_until_taken(&self.traces_url(), "application/x-protobuf", body).await
    }
}

/// Posts `body` as `content_type` to `url` until a pipeline takes it (not 404); the
/// last answer.
async fn post_until_taken(url: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let (status, answer) =
            kaas_test_support::http::post(url, &[("Content-Type", content_type)], body)
                .expect("the agent answers");
        if status != 404 || std::time::Instant::now() >= until {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rotel logging the traces it receives, in `dir/rotel`.
fn rotel_logging_traces(dir: &Path) -> Rotel {
    let rotel_dir = dir.join("rotel");
    std::fs::create_dir_all(&rotel_dir).expect("rotel's directory is created");
    Rotel::start_logging(&rotel_dir, &["traces"])
}

/// A trace pipeline `name` taking unauthenticated OTLP, sending to `output` (YAML flow).
fn pipeline(name: &str, output: &str) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {{authentication: {{mode: unauthenticated}}}}\n      output: {output}\n"
    )
}

/// Sends `count` spans named `<name>-<i>` of `service` with the Python SDK.
fn send_spans(
    protocol: &str,
    endpoint: &str,
    service: &str,
    name: &str,
    count: usize,
    gzip: bool,
) -> Result<(), String> {
    let output = Command::new("python3")
        .arg(format!("{FIXTURES}/send_spans.py"))
        .args([protocol, endpoint, service, name])
        .arg(count.to_string())
        .arg(if gzip { "gzip" } else { "none" })
        .output()
        .expect("python3 runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// An OTLP/gRPC `TraceService/Export` call from the agent's own client stack (tonic,
/// prost) to `port`: the gRPC status it answers.
async fn grpc_export(port: u16, request: ExportTraceServiceRequest) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<
        ExportTraceServiceRequest,
        kaas_proto::otlp::ExportTraceServiceResponse,
    >::default();
    grpc.unary(
        tonic::Request::new(request),
        tonic::codegen::http::uri::PathAndQuery::from_static(kaas_proto::otlp::EXPORT_TRACES_PATH),
        codec,
    )
    .await
    .map(|_| ())
}

/// Spans from the SDK over gRPC and HTTP (plain and gzip) reach rotel through two
/// trace pipelines, one exporting over gRPC and one over HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn spans_from_the_sdk_reach_rotel_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = rotel_logging_traces(dir.path());
    let agent = Agent::start(
        dir.path(),
        &[
            pipeline(
                "to-grpc",
                &format!(
                    "{{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}",
                    rotel.grpc_port
                ),
            ),
            pipeline(
                "to-http",
                &format!(
                    "{{otlp: {{endpoint: \"http://127.0.0.1:{}\", protocol: http}}}}",
                    rotel.http_port
                ),
            ),
        ]
        .concat(),
    );
    let until = std::time::Instant::now() + DEADLINE;
    // The configuration is applied just after the listeners start.
    while let Err(error) = send_spans(
        "http",
        &agent.traces_url(),
        "http-sender",
        "over-http",
        3,
        false,
    ) {
        assert!(std::time::Instant::now() < until, "{error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send_spans(
        "http",
        &agent.traces_url(),
        "gzip-sender",
        "over-gzipped-http",
        2,
        true,
    )
    .expect("gzipped OTLP/HTTP is taken");
    let grpc = format!("127.0.0.1:{}", agent.grpc_port);
    send_spans("grpc", &grpc, "grpc-sender", "over-grpc", 2, false).expect("OTLP/gRPC is taken");
    send_spans("grpc", &grpc, "grpc-sender", "over-gzipped-grpc", 1, true)
        .expect("gzipped OTLP/gRPC is taken");
    let log = rotel.wait_for_log(
        &[
            "over-http-2",
            "over-gzipped-http-1",
            "over-grpc-1",
            "over-gzipped-grpc-0",
            "checkpoint",
            "grpc-sender",
        ],
        DEADLINE,
    );
    // Both pipelines delivered every span: each name twice.
    for name in ["over-http-0", "over-grpc-0", "over-gzipped-grpc-0"] {
        let until = std::time::Instant::now() + DEADLINE;
        let mut log = log.clone();
        while log.matches(name).count() < 2 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            log = rotel.log();
        }
        assert!(log.matches(name).count() >= 2, "{name} not delivered twice");
    }
}

/// Zipkin v2 JSON on the Zipkin port (202, empty) and OTLP/JSON on `/v1/traces` (200,
/// `{}` as JSON) reach rotel through a pipeline taking both protocols.
#[tokio::test(flavor = "multi_thread")]
async fn zipkin_and_otlp_json_spans_reach_rotel() {
    let dir = tempfile::tempdir().unwrap();
    let rotel = rotel_logging_traces(dir.path());
    let agent = Agent::start(
        dir.path(),
        &format!(
            "  - metadata: {{name: both}}\n    spec:\n      input: {{zipkin: {{enabled: true}}, authentication: {{mode: unauthenticated}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
            rotel.grpc_port
        ),
    );
    let zipkin_url = format!("http://127.0.0.1:{}/api/v2/spans", agent.zipkin_port);
    let zipkin = br#"[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7","name":"zipkin-span","kind":"SERVER","timestamp":1700000000000000,"duration":1000,"localEndpoint":{"serviceName":"zipkin-sender"}}]"#;
    let (status, answer) = post_until_taken(&zipkin_url, "application/json", zipkin).await;
    assert_eq!((status, answer.as_str()), (202, ""));
    let json = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-sender"}}]},"scopeSpans":[{"spans":[{"traceId":"5bf92f3577b34da6a3ce929d0e0e4736","spanId":"10f067aa0ba902b7","name":"otlp-json-span","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}"#;
    let (status, answer) = kaas_test_support::http::post(
        &agent.traces_url(),
        &[("Content-Type", "application/json")],
        json,
    )
    .expect("the agent answers");
    assert_eq!((status, answer.as_str()), (200, "{}"));
    rotel.wait_for_log(
        &[
            "zipkin-span",
            "zipkin-sender",
            "otlp-json-span",
            "json-sender",
        ],
        DEADLINE,
    );
}

/// With no trace pipeline the trace receivers are not there: 404 over HTTP,
/// `UNIMPLEMENTED` over gRPC, and the SDK's export fails.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_trace_pipeline_spans_are_404_and_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "");
    let body = every_field().encode_to_vec();
    let (status, answer) = kaas_test_support::http::post(
        &agent.traces_url(),
        &[("Content-Type", "application/x-protobuf")],
        &body,
    )
    .unwrap();
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("OTLP traces"), "{answer}");
    let refused = grpc_export(agent.grpc_port, every_field())
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    let grpc = format!("127.0.0.1:{}", agent.grpc_port);
    let failed = send_spans("grpc", &grpc, "s", "refused", 1, false).expect_err("fails");
    assert!(failed.contains("export failed"), "{failed}");
    assert!(!dir.path().join("data/trace-buffers").exists(), "no buffer");
}

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(value.into())),
    })
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
    }
}

/// Attributes of every value type.
fn every_value() -> Vec<KeyValue> {
    vec![
        attribute("s", text("text")),
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
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("x".into())),
                    }],
                })),
            }),
        ),
        attribute(
            "m",
            Some(AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![attribute("k", text("v"))],
                })),
            }),
        ),
    ]
}

/// A request of one span with every field of the protocol set.
fn every_field() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", text("checkout"))],
                dropped_attributes_count: 3,
                entity_refs: Vec::new(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "kaas.test".into(),
                    version: "1.2.3".into(),
                    attributes: vec![attribute("scope.attr", text("yes"))],
                    dropped_attributes_count: 1,
                }),
                spans: vec![Span {
                    trace_id: (1..=16).collect(),
                    span_id: (17..=24).collect(),
                    trace_state: "ot=th:8;rv:0123456789abcd,vendor=x".into(),
                    parent_span_id: (25..=32).collect(),
                    flags: 0x301,
                    name: "POST /checkout".into(),
                    kind: 2,
                    start_time_unix_nano: T0,
                    end_time_unix_nano: T0 + 1_500_000,
                    attributes: every_value(),
                    dropped_attributes_count: 4,
                    events: vec![Event {
                        time_unix_nano: T0 + 1_000,
                        name: "exception".into(),
                        attributes: vec![attribute("exception.type", text("Timeout"))],
                        dropped_attributes_count: 5,
                    }],
                    dropped_events_count: 6,
                    links: vec![Link {
                        trace_id: vec![0xaa; 16],
                        span_id: vec![0xbb; 8],
                        trace_state: "vendor=linked".into(),
                        attributes: vec![attribute("link.kind", text("follows"))],
                        dropped_attributes_count: 7,
                        flags: 0x101,
                    }],
                    dropped_links_count: 8,
                    status: Some(Status {
                        message: "payment declined".into(),
                        code: 2,
                    }),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.29.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.28.0".into(),
        }],
    }
}

/// What protobuf's JSON mapping makes of [`every_field`], written out by hand.
fn every_field_json() -> serde_json::Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let ids = |range: std::ops::RangeInclusive<u8>| b64(&range.collect::<Vec<_>>());
    let every_value = json!([
        {"key": "s", "value": {"string_value": "text"}},
        {"key": "b", "value": {"bool_value": true}},
        {"key": "i", "value": {"int_value": "-7"}},
        {"key": "d", "value": {"double_value": 2.5}},
        {"key": "y", "value": {"bytes_value": b64(&[1, 2, 255])}},
        {"key": "a", "value": {"array_value": {"values": [{"string_value": "x"}]}}},
        {"key": "m", "value": {"kvlist_value": {"values": [{"key": "k", "value": {"string_value": "v"}}]}}},
    ]);
    json!({"resource_spans": [{
        "resource": {
            "attributes": [{"key": "service.name", "value": {"string_value": "checkout"}}],
            "dropped_attributes_count": 3,
        },
        "schema_url": "https://opentelemetry.io/schemas/1.28.0",
        "scope_spans": [{
            "scope": {
                "name": "kaas.test",
                "version": "1.2.3",
                "attributes": [{"key": "scope.attr", "value": {"string_value": "yes"}}],
                "dropped_attributes_count": 1,
            },
            "schema_url": "https://opentelemetry.io/schemas/1.29.0",
            "spans": [{
                "trace_id": ids(1..=16),
                "span_id": ids(17..=24),
                "trace_state": "ot=th:8;rv:0123456789abcd,vendor=x",
                "parent_span_id": ids(25..=32),
                "flags": 0x301,
                "name": "POST /checkout",
                "kind": 2,
                "start_time_unix_nano": T0.to_string(),
                "end_time_unix_nano": (T0 + 1_500_000).to_string(),
                "attributes": every_value,
                "dropped_attributes_count": 4,
                "events": [{
                    "time_unix_nano": (T0 + 1_000).to_string(),
                    "name": "exception",
                    "attributes": [{"key": "exception.type", "value": {"string_value": "Timeout"}}],
                    "dropped_attributes_count": 5,
                }],
                "dropped_events_count": 6,
                "links": [{
                    "trace_id": b64(&[0xaa; 16]),
                    "span_id": b64(&[0xbb; 8]),
                    "trace_state": "vendor=linked",
                    "attributes": [{"key": "link.kind", "value": {"string_value": "follows"}}],
                    "dropped_attributes_count": 7,
                    "flags": 0x101,
                }],
                "dropped_links_count": 8,
                "status": {"message": "payment declined", "code": 2},
            }],
        }],
    }]})
}

/// Decodes a received `ExportTraceServiceRequest` with the official Python bindings.
fn officially_decoded(body: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("request.bin");
    std::fs::write(&file, body).expect("the request is written");
    let output = Command::new("python3")
        .arg(format!("{FIXTURES}/decode_otlp.py"))
        .arg("traces")
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official bindings decode it (pip install opentelemetry-proto): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// A span with every field set, pushed over HTTP and over gRPC, leaves the agent
/// whole: the official bindings decode exactly what was sent, and no field the schema
/// does not know.
#[tokio::test(flavor = "multi_thread")]
async fn a_span_with_every_field_set_arrives_whole_for_the_official_decoder() {
    let sink = RecordingReceiver::start(Reply::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir.path(),
        &pipeline(
            "whole",
            &format!(
                "{{otlp: {{endpoint: \"{}\", protocol: http}}}}",
                sink.base_url()
            ),
        ),
    );
    let (status, answer) = agent.post_until_taken(&every_field().encode_to_vec()).await;
    assert_eq!(status, 200, "{answer}");
    grpc_export(agent.grpc_port, every_field())
        .await
        .expect("taken over gRPC");
    let until = std::time::Instant::now() + DEADLINE;
    let mut spans = 0;
    let mut received = Vec::new();
    while spans < 2 {
        assert!(std::time::Instant::now() < until, "spans not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
        received = sink.received();
        spans = received
            .iter()
            .map(|r| {
                ExportTraceServiceRequest::decode(r.body.as_slice())
                    .unwrap()
                    .resource_spans
                    .len()
            })
            .sum();
    }
    let expected = every_field_json();
    for request in &received {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        let decoded = officially_decoded(&request.body);
        for resource_spans in decoded["resource_spans"].as_array().unwrap() {
            assert_eq!(resource_spans, &expected["resource_spans"][0]);
        }
    }
}

/// The validated output of a trace pipeline with `output` (YAML flow style).
fn validated_output(output: &str) -> ValidatedTraceOutput {
    let text = format!("metadata: {{name: shop-traces}}\nspec:\n  output: {output}\n");
    let pipeline: TracePipeline = serde_yaml::from_str(&text).expect("a trace pipeline");
    validate_trace_pipeline(&pipeline, &ValidationContext::standalone())
        .expect("valid")
        .output
}

/// Pushes `batches` into a fresh buffer and starts the sender with the output's
/// exporter.
fn start(output: &ValidatedTraceOutput, batches: &[TraceBatch]) -> TestPipeline {
    let mut pipeline = TestPipeline::open("shop-traces");
    for batch in batches {
        pipeline
            .inlet
            .push(batch, 1_700_000_000_000)
            .expect("stored");
    }
    let exporter = TraceExporter::new(
        output,
        ValueSources::without_secrets(),
        pipeline.stats.clone(),
    )
    .expect("an exporter");
    let config = SenderConfig {
        shards: 2,
        ..SenderConfig::with_max_age(data_path::NEVER)
    };
    pipeline.start(Arc::new(exporter), config);
    pipeline
}

/// A backend that accepts connections and never answers does not hold up another
/// trace pipeline shipping the same spans, and loses nothing: its spans stay buffered
/// while every attempt fails as retryable.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_backend_keeps_its_spans_and_holds_up_no_other_trace_pipeline() {
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
    let healthy = RecordingReceiver::start(Reply::status(200)).await;
    let batches: Vec<TraceBatch> = (0..20)
        .map(|_| TraceBatch {
            resource_spans: every_field().resource_spans,
        })
        .collect();
    let mut stuck = Vec::new();
    for protocol in ["http", "grpc"] {
        stuck.push(start(
            &validated_output(&format!(
                "{{otlp: {{endpoint: \"http://{hung_address}\", protocol: {protocol}, timeout: 1s}}}}"
            )),
            &batches,
        ));
    }
    let flowing = start(
        &validated_output(&format!(
            "{{otlp: {{endpoint: \"{}\", protocol: http}}}}",
            healthy.base_url()
        )),
        &batches,
    );
    flowing.drained().await;
    let flowing = flowing.stop().await;
    assert_eq!(flowing.samples_sent.load(Ordering::Relaxed), 20);
    for stuck in stuck {
        tokio::time::timeout(DEADLINE, async {
            while stuck.stats.errors_by_reason().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the hung backend's attempts fail");
        let errors: BTreeMap<ErrorReason, u64> =
            stuck.stats.errors_by_reason().into_iter().collect();
        assert_eq!(
            errors.keys().collect::<Vec<_>>(),
            [&ErrorReason::BackendUnreachable],
            "retryable only"
        );
        assert_eq!(stuck.pending_records(), 20, "nothing lost");
        let stats = stuck.stop().await;
        assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 0);
        assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 0);
    }
    held.abort();
}

/// A partial success refusing some spans drops only those (counted), not the batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_partial_success_drops_only_the_rejected_spans() {
    let answer = kaas_proto::otlp::ExportTraceServiceResponse {
        partial_success: Some(kaas_proto::otlp::ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "span too old".into(),
        }),
    };
    let sink = RecordingReceiver::start(Reply {
        status: 200,
        content_type: "application/x-protobuf",
        body: answer.encode_to_vec(),
    })
    .await;
    let mut request = every_field();
    let span = request.resource_spans[0].scope_spans[0].spans[0].clone();
    request.resource_spans[0].scope_spans[0].spans = vec![span; 3];
    let pipeline = start(
        &validated_output(&format!(
            "{{otlp: {{endpoint: \"{}\", protocol: http}}}}",
            sink.base_url()
        )),
        &[TraceBatch {
            resource_spans: request.resource_spans,
        }],
    );
    pipeline.drained().await;
    let stats = pipeline.stop().await;
    assert_eq!(sink.received().len(), 1, "not retried");
    assert_eq!(stats.dropped_total(DropReason::RejectedByBackend), 1);
    assert_eq!(stats.samples_sent.load(Ordering::Relaxed), 2);
    let last = stats.last_error().expect("an error");
    assert_eq!(last.reason, ErrorReason::DataDropped);
    assert!(last.message.contains("span too old"), "{}", last.message);
}
