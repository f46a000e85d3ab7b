//! OTLP export to a real OTLP receiver (rotel, from PyPI) over gRPC and over
//! HTTP/protobuf: what rotel logs must show the resource, the metric types and the
//! values nginx exposed.
//!
//! Needs `nginx` and `rotel` (`scripts/test.sh` installs them).

use std::process::{Command, Stdio};
use std::time::Duration;

use kaas_test_support::peers::{Nginx, Rotel};
use kaas_test_support::process::{ChildGuard, free_port};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn metrics_reach_rotel_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let nginx_dir = dir.path().join("nginx");
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    nginx.serve(
        "metrics",
        "# TYPE shop_orders_total counter\nshop_orders_total{status=\"paid\"} 42\n\
         # TYPE shop_queue_depth gauge\nshop_queue_depth 7.5\n\
         # TYPE shop_latency_seconds histogram\n\
         shop_latency_seconds_bucket{le=\"0.5\"} 3\nshop_latency_seconds_bucket{le=\"+Inf\"} 4\n\
         shop_latency_seconds_sum 1.25\nshop_latency_seconds_count 4\n",
    );
    let rotel = Rotel::start(&rotel_dir);
    let target = nginx.address();
    let input = format!(
        "{{scrapeInterval: 1s, scrapeTimeout: 1s, static: {{targets: [{{addresses: [\"{target}\"]}}]}}}}"
    );
    let config = [
        "apiVersion: telemetry.kaas-observer.io/v1alpha1".to_owned(),
        "kind: AgentConfig".to_owned(),
        "pipelines:".to_owned(),
        "  - metadata: {name: over-grpc}".to_owned(),
        "    spec:".to_owned(),
        format!("      input: {input}"),
        format!(
            "      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\", headers: [{{name: X-Tenant, value: shop}}]}}}}",
            rotel.grpc_port
        ),
        "  - metadata: {name: over-http}".to_owned(),
        "    spec:".to_owned(),
        format!("      input: {input}"),
        format!(
            "      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\", protocol: http}}}}",
            rotel.http_port
        ),
    ]
    .join("\n");
    let config_path = dir.path().join("agent.yaml");
    std::fs::write(&config_path, config).unwrap();
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let instance = format!("service.instance.id: Str({target})");
    // Everything must show up in what rotel decoded: resources, types and values.
    rotel.wait_for_log(
        &[
            "service.name: Str(over-grpc)",
            "service.name: Str(over-http)",
            instance.as_str(),
            "Name: shop_orders_total",
            "DataType: Sum",
            "IsMonotonic: true",
            "AGGREGATION_TEMPORALITY_CUMULATIVE",
            "status: Str(paid)",
            "Value: 42",
            "Name: shop_queue_depth",
            "DataType: Gauge",
            "Value: 7.5",
            "Name: shop_latency_seconds",
            "DataType: Histogram",
            "ExplicitBounds #0: 0.5",
            "Buckets #0, Count: 3",
            "Buckets #1, Count: 1",
            "Sum: 1.25",
        ],
        DEADLINE,
    );
}
