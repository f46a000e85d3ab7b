//! OTLP logs pushed to a standalone agent (issue 16): a log pipeline with an `otlp`
//! input takes `POST /v1/logs` on the OTLP/HTTP port (protobuf, gzip) and
//! `LogsService/Export` on the OTLP/gRPC port, and ships the records to a real OTLP
//! receiver (rotel, from PyPI). Needs `rotel` (`scripts/test.sh` installs it).

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
    let (status, _) =
        kaas_test_support::http::post(&url, &[("Content-Type", "application/json")], b"{}")
            .unwrap();
    assert_eq!(status, 415, "JSON is not read yet");

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
    let sent = kaas_cluster_agent::record::logs::LogRequest {
        body: request("grpc-sender", "pushed-over-grpc").encode_to_vec(),
        snappy: false,
        records: 1,
        oldest_ms: 0,
        settled: Default::default(),
    };
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
            "service.name: Str(grpc-sender)",
        ],
        DEADLINE,
    );
    assert!(log.contains("service.name: Str(http-sender)"));
}
