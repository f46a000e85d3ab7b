//! The agent's own telemetry over OTLP/gRPC to a real receiver (rotel, from PyPI), in
//! standalone mode: its metrics (with the cluster from the `cluster` external label as
//! `k8s.cluster.name`), one span per remote-write request, and its log lines. And with a dead OTLP
//! endpoint the agent ships its pipeline's data as before, serves `/metrics`, and
//! counts the failed exports there. And pointed at its own trace pipeline, the agent's
//! spans reach it without a feedback loop: the pipeline's export path makes no spans.
//!
//! Needs `rotel` (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::{MtlsNginx, TestPki};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

/// Starts an agent that scrapes its own `/metrics` and remote-writes them to
/// `receiver`, pushing its telemetry to `otlp_endpoint` every second.
fn start_agent(dir: &Path, receiver: &str, otlp_endpoint: &str) -> (ChildGuard, String) {
    start_agent_with(dir, receiver, otlp_endpoint, "", "127.0.0.1:0")
}

/// [`start_agent`] with `more` appended to its configuration, taking OTLP/gRPC pushes
/// on `otlp_grpc_address`.
fn start_agent_with(
    dir: &Path,
    receiver: &str,
    otlp_endpoint: &str,
    more: &str,
    otlp_grpc_address: &str,
) -> (ChildGuard, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
externalLabels: {{cluster: edge-1}}
pipelines:
  - metadata: {{name: own}}
    spec:
      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, static: {{targets: [{{addresses: [\"{address}\"]}}]}}}}
      output: {{prometheusRemoteWrite: {{url: \"{receiver}\"}}}}
{more}"
    );
    let config_path = dir.join("agent.yaml");
    std::fs::write(&config_path, config).expect("config");
    let guard = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-address")
            .arg(&address)
            .arg("--otlp-grpc-listen-address")
            .arg(otlp_grpc_address)
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .args([
                "--otlp-endpoint",
                otlp_endpoint,
                "--otlp-push-interval",
                "1s",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).expect("log")),
    );
    (guard, address)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < until, "timed out: {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_pushes_its_metrics_export_spans_and_logs_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["metrics", "traces", "logs"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(RemoteWriteReceiver::start());
    let endpoint = format!("http://127.0.0.1:{}", rotel.grpc_port);
    let (_agent, _) = start_agent(dir.path(), &receiver.url(), &endpoint);
    rotel.wait_for_log(
        &[
            "service.name: Str(kaas-cluster-agent)",
            "k8s.cluster.name: Str(edge-1)",
            "Name: kaas_agent_pipeline_samples_sent_total",
            "pipeline: Str(own)",
            "Name: kaas_agent_pipeline_send_duration_seconds",
            "Name           : export",
            "SPAN_KIND_CLIENT",
            // A log line of the agent's, as a log record.
            "pushing own metrics, spans and logs over OTLP",
            "code.namespace: Str(kaas_self_telemetry)",
        ],
        DEADLINE,
    );
    assert!(receiver.accepted_samples() > 0);
}

#[test]
fn a_dead_otlp_endpoint_does_not_disturb_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(RemoteWriteReceiver::start());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (_agent, address) = start_agent(dir.path(), &receiver.url(), &dead);
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    let metrics = || {
        http::get(&format!("http://{address}/metrics"))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let failures = |signal: &str| {
        let prefix = format!("kaas_self_telemetry_export_failures_total{{signal=\"{signal}\"}} ");
        metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_until(
        "failed exports of both signals are counted",
        || failures("metrics") >= 2.0 && failures("traces") >= 1.0,
        || format!("{}\n{}", metrics(), log()),
    );
    // The pipeline ships all the while: more samples keep arriving.
    let before = receiver.accepted_samples();
    assert!(before > 0, "{}", log());
    wait_until(
        "more samples arrive",
        || receiver.accepted_samples() > before,
        log,
    );
    assert!(
        log().contains("cannot export own telemetry over OTLP"),
        "{}",
        log()
    );
}

/// Kubernetes API calls need no instrumentation of ours: kube-client opens an
/// `otel.kind = "client"` span per request, which the span layer exports, named after
/// the verb, failed when the API server answers an error.
#[test]
fn kubernetes_api_requests_become_client_spans() {
    use k8s_openapi::api::core::v1::Pod;
    use kaas_proto::otlp::{SpanKind, StatusCode};
    use tracing_subscriber::layer::SubscriberExt as _;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sender, mut queue) = tokio::sync::mpsc::channel(64);
    let layer = kaas_self_telemetry::SpanLayer::new(sender, Default::default());
    let subscriber = tracing_subscriber::registry().with(layer.filtered());
    let _default = tracing::subscriber::set_default(subscriber);
    runtime.block_on(async {
        // A fake API server: an empty pod list, and 404 for everything else.
        let app = axum::Router::new()
            .route(
                "/api/v1/pods",
                axum::routing::get(|| async {
                    (
                        [("content-type", "application/json")],
                        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}"#,
                    )
                }),
            )
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "{}") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let pods: kube::Api<Pod> = kube::Api::all(client.clone());
        pods.list(&Default::default()).await.unwrap();
        let missing: kube::Api<Pod> = kube::Api::namespaced(client, "default");
        assert!(missing.get("nope").await.is_err());
    });
    let mut spans = Vec::new();
    while let Ok(span) = queue.try_recv() {
        spans.push(span);
    }
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["list", "get"], "{spans:?}");
    assert!(spans.iter().all(|s| s.kind == SpanKind::Client as i32));
    assert_eq!(spans[0].status, None);
    assert_eq!(
        spans[1].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

#[test]
fn mutual_tls_and_headers_reach_the_receiver_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let [rotel_dir, nginx_dir, agent_dir] =
        ["rotel", "nginx", "agent"].map(|name| dir.path().join(name));
    for d in [&rotel_dir, &nginx_dir, &agent_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let rotel = Rotel::start_logging(&rotel_dir, &["metrics", "traces"]);
    let pki = TestPki::generate(&["localhost"]);
    let nginx = MtlsNginx::start(
        &nginx_dir,
        &pki,
        "$request $status $ssl_client_verify tenant=$http_x_scope_orgid",
        &format!("proxy_pass http://127.0.0.1:{};", rotel.http_port),
    );
    let files = pki.write(&agent_dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(RemoteWriteReceiver::start());
    let address = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {{name: own}}
    spec:
      input: {{scrapeInterval: 1s, scrapeTimeout: 1s, static: {{targets: [{{addresses: [\"{address}\"]}}]}}}}
      output: {{prometheusRemoteWrite: {{url: \"{}\"}}}}
",
        receiver.url()
    );
    std::fs::write(agent_dir.join("agent.yaml"), config).unwrap();
    let secret = "tenant-secret-42";
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(agent_dir.join("agent.yaml"))
            .arg("--data-dir")
            .arg(agent_dir.join("data"))
            .arg("--listen-address")
            .arg(&address)
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-endpoint")
            .arg(format!("https://localhost:{}", nginx.port))
            .args(["--otlp-protocol", "http", "--otlp-push-interval", "1s"])
            .arg("--otlp-ca-file")
            .arg(&files.ca)
            .arg("--otlp-client-cert")
            .arg(&files.client_cert)
            .arg("--otlp-client-key")
            .arg(&files.client_key)
            .env("KAAS_OTLP_HEADERS", format!("X-Scope-OrgID={secret}"))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(agent_dir.join("agent.log")).unwrap()),
    );
    rotel.wait_for_log(
        &[
            "service.name: Str(kaas-cluster-agent)",
            "Name: kaas_agent_pipeline_samples_sent_total",
            "Name           : export",
        ],
        DEADLINE,
    );
    let access = nginx.log();
    for path in ["/v1/metrics", "/v1/traces"] {
        let expected = format!("POST {path} HTTP/1.1 200 SUCCESS tenant={secret}");
        assert!(access.contains(&expected), "{expected} not in:\n{access}");
    }
    let log = std::fs::read_to_string(agent_dir.join("agent.log")).unwrap();
    assert!(!log.contains(secret), "a header value was logged:\n{log}");
}

#[test]
fn bad_otlp_flags_stop_the_agent_before_it_starts_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let base = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    for (flags, expected) in [
        (
            &["--otlp-endpoint", "collector:4317"][..],
            "--otlp-endpoint: scheme \"collector\" is not supported",
        ),
        (
            &[
                "--otlp-endpoint",
                "http://c:4317",
                "--otlp-header",
                "Authorization",
            ][..],
            "--otlp-header[0]: expected NAME=VALUE",
        ),
        (
            &["--otlp-client-key", "k.pem"][..],
            "--otlp-client-key: needs --otlp-endpoint",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(flags).copied().collect();
        let output = kaas_test_support::process::run(AGENT, &args, "");
        assert_eq!(output.code(), 2, "{flags:?}: {}", output.stderr);
        assert!(
            output.stderr.contains(expected),
            "{flags:?}: expected {expected:?} in {}",
            output.stderr
        );
        assert!(!data.exists(), "nothing started for {flags:?}");
    }
}

/// The spans of every request `sink` received, each with its `server.address`.
fn delivered_spans(
    sink: &kaas_test_support::recording_receiver::RecordingReceiver,
) -> Vec<(kaas_proto::otlp::Span, String)> {
    use kaas_proto::otlp::ExportTraceServiceRequest;
    use kaas_proto::otlp::any_value::Value;
    use prost::Message as _;
    let mut spans = Vec::new();
    for request in sink.received() {
        let decoded = ExportTraceServiceRequest::decode(request.body.as_slice()).expect("OTLP");
        for span in (decoded.resource_spans.into_iter())
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
        {
            let address = (span.attributes.iter())
                .find(|kv| kv.key == "server.address")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(text) => text.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            spans.push((span, address));
        }
    }
    spans
}

fn unix_nanos_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let since = since.expect("the clock is after 1970");
    u64::try_from(since.as_nanos()).expect("before 2554")
}

/// Issue 17: the agent's own spans pushed to its own trace pipeline (`--otlp-endpoint`
/// on its own OTLP/gRPC port) arrive at the pipeline's backend, and the count stays
/// bounded: the only spans there are the metric pipeline's exports (to `localhost`),
/// never one of the trace pipeline's own exports (to `127.0.0.1`), each of which would
/// be carried by the next export, for ever.
///
/// When the backend answered its first request, that export's span closed; the agent's
/// span queue, its own pipeline's buffer and that pipeline's sender all keep order, so
/// once a metric export span opened a second later has arrived, the trace export's span
/// would have arrived before it.
#[test]
fn the_agents_spans_in_its_own_trace_pipeline_make_no_feedback_loop() {
    use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(RemoteWriteReceiver::start());
    let sink = runtime.block_on(RecordingReceiver::start(Reply::status(200)));
    let grpc_address = format!("127.0.0.1:{}", free_port());
    let traces = format!(
        "tracePipelines:
  - metadata: {{name: own-spans}}
    spec:
      input: {{authentication: {{mode: unauthenticated}}}}
      output: {{otlp: {{endpoint: \"{}\", protocol: http}}}}
",
        sink.base_url()
    );
    // The metric pipeline's exports name `localhost`, the trace pipeline's `127.0.0.1`.
    let metrics_url = receiver.url().replace("127.0.0.1", "localhost");
    let (_agent, _) = start_agent_with(
        dir.path(),
        &metrics_url,
        &format!("http://{grpc_address}"),
        &traces,
        &grpc_address,
    );
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    wait_until(
        "the agent's spans reach its own trace pipeline's backend",
        || !sink.received().is_empty(),
        log,
    );
    let answered = unix_nanos_now() + 1_000_000_000;
    wait_until(
        "a metric export span opened after the first delivery arrives",
        || {
            delivered_spans(&sink).iter().any(|(span, address)| {
                address == "localhost" && span.start_time_unix_nano > answered
            })
        },
        || format!("{:?}\n{}", delivered_spans(&sink), log()),
    );
    let spans = delivered_spans(&sink);
    let looped: Vec<_> = (spans.iter())
        .filter(|(_, address)| address != "localhost")
        .collect();
    assert!(
        looped.is_empty(),
        "the trace pipeline's own exports were traced: {looped:?}"
    );
    assert!(
        spans.iter().all(|(span, _)| span.name == "export"),
        "{spans:?}"
    );
    assert!(receiver.accepted_samples() > 0);
}
