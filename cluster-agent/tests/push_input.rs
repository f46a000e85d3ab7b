//! Push input end to end: the real Prometheus agent remote-writes into cluster-agent
//! with the pipeline's push token, and an OTLP request is pushed over HTTP; each
//! reaches exactly the pipelines that enable that input, through their namespace
//! filters and processors.
//!
//! Needs `nginx` and `prometheus` (`scripts/test.sh` installs them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_proto::otlp::{
    AnyValue, ExportMetricsServiceRequest, Gauge, KeyValue, Metric, NumberDataPoint, Resource,
    ResourceMetrics, ScopeMetrics, any_value, metric, number_data_point,
};
use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

fn has(receiver: &RemoteWriteReceiver, name: &str, label: (&str, &str)) -> bool {
    receiver.accepted().keys().any(|labels| {
        labels.iter().any(|(n, v)| n == "__name__" && v == name)
            && labels.iter().any(|(n, v)| n == label.0 && v == label.1)
    })
}

fn names(receiver: &RemoteWriteReceiver) -> Vec<String> {
    receiver
        .accepted()
        .keys()
        .filter_map(|labels| {
            labels
                .iter()
                .find(|(n, _)| n == "__name__")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_data_reaches_the_pipelines_that_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let nginx_dir = dir.path().join("nginx");
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    nginx.serve(
        "metrics",
        "pushed_total 5\nper_namespace{namespace=\"shop\"} 1\nper_namespace{namespace=\"kube-system\"} 2\n",
    );

    let remote_write_pipeline = RemoteWriteReceiver::start().await;
    let otlp_pipeline = RemoteWriteReceiver::start().await;
    let token_path = dir.path().join("push-token");
    std::fs::write(&token_path, "prometheus-push-token\n").unwrap();
    let agent_port = free_port();
    let config = [
        "apiVersion: telemetry.kaas-observer.io/v1alpha1".to_owned(),
        "kind: AgentConfig".to_owned(),
        "pipelines:".to_owned(),
        "  - metadata: {name: takes-remote-write}".to_owned(),
        "    spec:".to_owned(),
        format!(
            "      input: {{remoteWrite: {{enabled: true, authentication: {{mode: bearerToken, bearerToken: {{valueFrom: {{file: \"{}\"}}}}}}}}}}",
            token_path.display()
        ),
        "      processors: {metricRelabelConfigs: [{targetLabel: via, replacement: agent}]}"
            .to_owned(),
        format!(
            "      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}",
            remote_write_pipeline.url()
        ),
        "  - metadata: {name: takes-otlp}".to_owned(),
        "    spec:".to_owned(),
        "      input: {otlp: {enabled: true, namespaces: {include: [shop]}, authentication: {mode: unauthenticated}}}".to_owned(),
        format!(
            "      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}",
            otlp_pipeline.url()
        ),
    ]
    .join("\n");
    let config_path = dir.path().join("agent.yaml");
    std::fs::write(&config_path, config).unwrap();
    let otlp_http_port = free_port();
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{agent_port}"))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg(format!("127.0.0.1:{otlp_http_port}"))
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    kaas_test_support::process::wait_for_tcp(([127, 0, 0, 1], agent_port).into(), DEADLINE);
    kaas_test_support::process::wait_for_tcp(([127, 0, 0, 1], otlp_http_port).into(), DEADLINE);

    // The real Prometheus agent scrapes nginx and pushes to cluster-agent.
    let prometheus_config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: http://127.0.0.1:{agent_port}/api/v1/write\n    authorization: {{credentials: prometheus-push-token}}\n    queue_config: {{batch_send_deadline: 1s}}\n",
        nginx.address()
    );
    let _prometheus = Prometheus::agent(&prometheus_dir, &prometheus_config);

    // An application pushes OTLP over HTTP.
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    };
    let otlp = |namespace: &str| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "cart"),
                    attribute("k8s.namespace.name", namespace),
                ],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: vec![Metric {
                    name: "cart.items".into(),
                    description: String::new(),
                    unit: String::new(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![],
                            start_time_unix_nano: 0,
                            time_unix_nano: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_nanos() as u64,
                            value: Some(number_data_point::Value::AsDouble(3.0)),
                            flags: 0,
                        }],
                    })),
                }],
            }],
        }],
    };
    let client = kaas_cluster_agent::outbound::tls::http_client(&Default::default()).unwrap();
    // "shop" goes to OTLP's own HTTP port, "sandbox" to the deprecated alias on the
    // agent's HTTP port: both are taken; only shop's data passes the namespace filter.
    for (namespace, port) in [("shop", otlp_http_port), ("sandbox", agent_port)] {
        let response = client
            .post(format!("http://127.0.0.1:{port}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .body(otlp(namespace).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    // A push without the pipeline's token is refused before its body is looked at.
    let response = client
        .post(format!("http://127.0.0.1:{agent_port}/api/v1/write"))
        .body("not snappy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // A broken push with the token is refused with a reason, not buffered.
    let response = client
        .post(format!("http://127.0.0.1:{agent_port}/api/v1/write"))
        .bearer_auth("prometheus-push-token")
        .body("not snappy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("the body is not snappy-compressed")
    );

    let until = Instant::now() + DEADLINE;
    while !(has(&remote_write_pipeline, "pushed_total", ("via", "agent"))
        && has(
            &remote_write_pipeline,
            "per_namespace",
            ("namespace", "shop"),
        )
        && has(&otlp_pipeline, "cart_items", ("namespace", "shop")))
    {
        assert!(
            Instant::now() < until,
            "pushed data missing: remote-write pipeline got {:?}, OTLP pipeline got {:?}",
            names(&remote_write_pipeline),
            names(&otlp_pipeline)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Namespace filters: kube-system is a system namespace, sandbox is not included.
    assert!(!has(
        &remote_write_pipeline,
        "per_namespace",
        ("namespace", "kube-system")
    ));
    assert!(!has(&otlp_pipeline, "cart_items", ("namespace", "sandbox")));
    // Each protocol reaches only the pipelines that enable it.
    assert!(!names(&otlp_pipeline).contains(&"pushed_total".to_owned()));
    assert!(!names(&remote_write_pipeline).contains(&"cart_items".to_owned()));
    assert!(has(&otlp_pipeline, "cart_items", ("job", "cart")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_pushed_over_grpc_reaches_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = RemoteWriteReceiver::start().await;
    let grpc_port = free_port();
    let token_path = dir.path().join("push-token");
    std::fs::write(&token_path, "grpc-push-token").unwrap();
    let config = [
        "apiVersion: telemetry.kaas-observer.io/v1alpha1".to_owned(),
        "kind: AgentConfig".to_owned(),
        "pipelines:".to_owned(),
        "  - metadata: {name: takes-otlp}".to_owned(),
        "    spec:".to_owned(),
        format!(
            "      input: {{otlp: {{enabled: true, authentication: {{mode: bearerToken, bearerToken: {{valueFrom: {{file: \"{}\"}}}}}}}}}}",
            token_path.display()
        ),
        format!(
            "      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}",
            receiver.url()
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
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    kaas_test_support::process::wait_for_tcp(([127, 0, 0, 1], grpc_port).into(), DEADLINE);

    // cluster-agent's own OTLP/gRPC exporter is the client.
    let output: kaas_pipeline::output::OtlpOutput = serde_yaml::from_str(&format!(
        "endpoint: http://127.0.0.1:{grpc_port}\nauthentication: {{bearerToken: {{value: grpc-push-token}}}}"
    ))
    .unwrap();
    let exporter = kaas_cluster_agent::exporters::otlp::OtlpExporter::new(
        &output,
        output
            .endpoint
            .plain()
            .unwrap()
            .parse::<url::Url>()
            .unwrap(),
        kaas_pipeline::output::OtlpProtocol::Grpc,
        Duration::from_secs(5),
        kaas_cluster_agent::outbound::auth::ValueSources::without_secrets(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let label = |name: &str, value: &str| kaas_proto::remote_write::v1::Label {
        name: name.into(),
        value: value.into(),
    };
    let batch = kaas_cluster_agent::record::metrics::Batch {
        series: vec![kaas_proto::remote_write::v1::TimeSeries {
            labels: vec![
                label("__name__", "grpc_pushed"),
                label("job", "sender"),
                label("zone", "a"),
            ],
            samples: vec![kaas_proto::remote_write::v1::Sample {
                value: 5.0,
                timestamp: now,
            }],
        }],
        metadata: vec![],
    };
    exporter
        .send(&batch)
        .await
        .expect("the agent accepts OTLP over gRPC");
    let until = Instant::now() + DEADLINE;
    while !has(&receiver, "grpc_pushed", ("zone", "a")) {
        assert!(
            Instant::now() < until,
            "pushed data missing: {:?}",
            names(&receiver)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        has(&receiver, "grpc_pushed", ("job", "sender")),
        "service.name round-trips to job"
    );
}
