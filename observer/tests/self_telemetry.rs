//! Self-telemetry end to end against a real OTLP receiver (rotel, from PyPI): the
//! `observer serve` binary pushes over OTLP/gRPC, a `cluster-agent` that joins it over
//! OTLP/HTTP. rotel's detailed debug log must show both processes' resources, known
//! metrics with their attributes, and spans: the observer's join (server) with the
//! database call it made as a child, the agent's join and its remote-write sends. And
//! an observer whose OTLP endpoint is dead keeps serving its API and `/metrics`, which
//! count the failed exports.
//!
//! Needs `rotel` and the `cluster-agent` binary, which `cargo nextest run --workspace`
//! builds (scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port, run};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The `cluster-agent` binary beside this test's binary (target/<profile>/).
fn cluster_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("cluster-agent");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p kaas-cluster-agent`",
        binary.display()
    );
    binary
}

struct Observer {
    api: String,
    /// The `/metrics` URL (its own listener).
    metrics: String,
    grpc_port: u16,
    dir: PathBuf,
    _guard: ChildGuard,
}

impl Observer {
    fn start(dir: &Path, otlp: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("observer dir");
        let (api_port, metrics_port, grpc_port) = (free_port(), free_port(), free_port());
        let guard = ChildGuard::spawn(
            "observer",
            Command::new(OBSERVER)
                .arg("serve")
                .arg("--data-dir")
                .arg(dir)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{api_port}"))
                .arg("--metrics-listen-address")
                .arg(format!("127.0.0.1:{metrics_port}"))
                .arg("--grpc-listen-address")
                .arg(format!("127.0.0.1:{grpc_port}"))
                .args(otlp)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("observer.log")).expect("log")),
        );
        let observer = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            grpc_port,
            dir: dir.to_owned(),
            _guard: guard,
        };
        wait_until(
            "the observer is ready",
            || http::get(&format!("{}/readyz", observer.api)).map(|(s, _)| s) == Ok(200),
            || observer.log(),
        );
        observer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("observer.log")).unwrap_or_default()
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned()
    }

    /// Runs the CLI as admin; the JSON it prints (`-o json`).
    fn cli(&self, args: &[&str]) -> serde_json::Value {
        let token = self.admin_token();
        let mut all = vec!["--server", &self.api, "--token", &token];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let output = run(OBSERVER, &all, "");
        assert_eq!(
            output.code(),
            0,
            "{args:?}: {}{}",
            output.stdout,
            output.stderr
        );
        serde_json::from_str(&output.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn metrics(&self) -> String {
        http::get(&self.metrics)
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < until, "timed out: {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One span as rotel's detailed debug log prints it, with the resource it came with.
#[derive(Clone, Debug, Default)]
struct LoggedSpan {
    service: String,
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    kind: String,
}

/// Every span in rotel's log. The log prints a resource's attributes, then its spans
/// as `Span #n` blocks of `Field : value` lines.
fn logged_spans(log: &str) -> Vec<LoggedSpan> {
    let mut spans = Vec::new();
    let mut service = String::new();
    let mut current: Option<LoggedSpan> = None;
    for line in log.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("-> service.name: Str(") {
            service = name.trim_end_matches(')').to_owned();
        }
        if line.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(LoggedSpan {
                service: service.clone(),
                ..LoggedSpan::default()
            });
            continue;
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match field.trim() {
            "Trace ID" => span.trace_id = value,
            "Parent ID" => span.parent_id = value,
            "ID" => span.id = value,
            "Name" => span.name = value,
            "Kind" => span.kind = value,
            _ => {}
        }
        if line.starts_with("Resource") || line.starts_with("Metric") {
            spans.extend(current.take());
        }
    }
    spans.extend(current);
    spans
}

fn find<'a>(spans: &'a [LoggedSpan], service: &str, name: &str) -> Option<&'a LoggedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

fn pipeline(target: &str, receiver: &str) -> String {
    format!(
        r#"apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: own
spec:
  input:
    scrapeInterval: 1s
    scrapeTimeout: 1s
    static:
      targets:
        - addresses: ["{target}"]
  output:
    prometheusRemoteWrite:
      url: {receiver}
  clusterSelector:
    matchLabels: {{env: prod}}
"#
    )
}

#[test]
fn observer_and_agent_push_their_metrics_and_spans_to_rotel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).expect("rotel dir");
    let rotel = Rotel::start_logging(&rotel_dir, &["metrics", "traces"]);
    let grpc = format!("http://127.0.0.1:{}", rotel.grpc_port);
    let observer = Observer::start(
        &dir.path().join("observer"),
        &["--otlp-endpoint", &grpc, "--otlp-push-interval", "1s"],
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = runtime.block_on(RemoteWriteReceiver::start());

    observer.cli(&["tenant", "create", "shop"]);
    let created = observer.cli(&[
        "cluster", "add", "c1", "--tenant", "shop", "--label", "env=prod",
    ]);
    let join_token = created["joinToken"].as_str().expect("join token");
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    std::fs::write(agent_dir.join("token"), join_token).expect("token file");
    let agent_address = format!("127.0.0.1:{}", free_port());
    let http = format!("http://127.0.0.1:{}", rotel.http_port);
    let agent_log = agent_dir.join("agent.log");
    let _agent = ChildGuard::spawn(
        "cluster-agent",
        Command::new(cluster_agent_binary())
            .arg("run")
            .arg("--observer")
            .arg(format!("https://127.0.0.1:{}", observer.grpc_port))
            .arg("--observer-ca-file")
            .arg(observer.dir.join("ca.crt"))
            .arg("--join-token-file")
            .arg(agent_dir.join("token"))
            .arg("--data-dir")
            .arg(agent_dir.join("data"))
            .arg("--listen-address")
            .arg(&agent_address)
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--kubernetes")
            .arg("off")
            .args(["--otlp-endpoint", &http, "--otlp-protocol", "http"])
            .args(["--otlp-push-interval", "1s"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).expect("agent log")),
    );
    let logs = || {
        format!(
            "observer:\n{}\nagent:\n{}",
            observer.log(),
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        )
    };

    // The agent scrapes its own /metrics and remote-writes them.
    let file = dir.path().join("own.yaml");
    std::fs::write(&file, pipeline(&agent_address, &receiver.url())).expect("pipeline");
    observer.cli(&[
        "pipeline",
        "apply",
        "--tenant",
        "shop",
        "-f",
        file.to_str().expect("UTF-8 path"),
    ]);
    wait_until(
        "the agent delivers samples",
        || receiver.accepted_samples() > 0,
        logs,
    );

    // Metrics: both resources, known names, their attributes.
    let log = rotel.wait_for_log(
        &[
            "service.name: Str(kaas-observer)",
            "service.name: Str(kaas-cluster-agent)",
            "service.instance.id: Str(",
            "k8s.cluster.name: Str(shop.c1)",
            "Name: kaas_cluster_info",
            "state: Str(active)",
            "Name: kaas_observer_agent_streams",
            "Name: kaas_agent_pipeline_samples_sent_total",
            "Name: kaas_agent_pipeline_send_duration_seconds",
            "DataType: Histogram",
            "Name: kaas_self_telemetry_export_failures_total",
            "signal: Str(traces)",
        ],
        DEADLINE,
    );
    assert!(
        log.contains("IsMonotonic: true"),
        "counters are monotonic sums"
    );

    // Spans: the join on both sides, the database call inside the observer's join, and
    // the agent's remote-write sends.
    let until = Instant::now() + DEADLINE;
    let spans = loop {
        let spans = logged_spans(&rotel.log());
        let complete = find(&spans, "kaas-observer", "join").is_some()
            && find(&spans, "kaas-observer", "redeem_join_token").is_some()
            && find(&spans, "kaas-cluster-agent", "join").is_some()
            && find(&spans, "kaas-cluster-agent", "export").is_some();
        if complete {
            break spans;
        }
        assert!(
            Instant::now() < until,
            "spans missing; rotel saw {:?}\n{}",
            spans
                .iter()
                .map(|s| format!("{}/{}", s.service, s.name))
                .collect::<Vec<_>>(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let server_join = find(&spans, "kaas-observer", "join").expect("observer join");
    assert_eq!(server_join.kind, "SPAN_KIND_SERVER");
    assert!(server_join.parent_id.is_empty(), "{server_join:?}");
    let redeem = find(&spans, "kaas-observer", "redeem_join_token").expect("redeem");
    assert_eq!(redeem.kind, "SPAN_KIND_CLIENT");
    assert_eq!(redeem.trace_id, server_join.trace_id, "{redeem:?}");
    assert_eq!(redeem.parent_id, server_join.id, "{redeem:?}");
    let client_join = find(&spans, "kaas-cluster-agent", "join").expect("agent join");
    assert_eq!(client_join.kind, "SPAN_KIND_CLIENT");
    let export = find(&spans, "kaas-cluster-agent", "export").expect("agent export");
    assert_eq!(export.kind, "SPAN_KIND_CLIENT");
    assert_eq!(export.trace_id.len(), 32);
    assert_eq!(export.id.len(), 16);
    // One span per request, not per sample: far fewer export spans than samples.
    let exports = spans
        .iter()
        .filter(|s| s.service == "kaas-cluster-agent" && s.name == "export")
        .count();
    assert!(
        exports < receiver.accepted_samples(),
        "{exports} export spans for {} samples",
        receiver.accepted_samples()
    );
}

#[test]
fn a_dead_otlp_endpoint_does_not_disturb_the_observer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let observer = Observer::start(
        &dir.path().join("observer"),
        &["--otlp-endpoint", &dead, "--otlp-push-interval", "1s"],
    );
    // The API and the database work as before.
    observer.cli(&["tenant", "create", "shop"]);
    observer.cli(&["cluster", "add", "c1", "--tenant", "shop"]);
    let clusters = observer.cli(&["cluster", "list"]);
    assert_eq!(clusters["items"][0]["name"], "c1", "{clusters}");
    // /metrics counts the failed exports of both signals.
    let failures = |signal: &str| {
        let prefix = format!("kaas_self_telemetry_export_failures_total{{signal=\"{signal}\"}} ");
        observer
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_until(
        "failed exports are counted",
        || failures("metrics") >= 2.0 && failures("traces") >= 1.0,
        || format!("{}\n{}", observer.metrics(), observer.log()),
    );
    assert!(
        observer
            .log()
            .contains("cannot export own telemetry over OTLP"),
        "{}",
        observer.log()
    );
    assert_eq!(
        http::get(&format!("{}/readyz", observer.api)).map(|(s, _)| s),
        Ok(200)
    );
}

/// Every probe is one client span with its module, target and cluster; a failed probe
/// (nothing listening) is a failed span.
#[test]
fn each_probe_is_one_client_span_failed_when_the_probe_fails() {
    use kaas_observer::probes::config::ProbeTarget;
    use kaas_proto::otlp::any_value::Value;
    use kaas_proto::otlp::{SpanKind, StatusCode};
    use tracing_subscriber::layer::SubscriberExt as _;

    let (sender, mut queue) = tokio::sync::mpsc::channel(16);
    let layer = kaas_self_telemetry::SpanLayer::new(sender, Default::default());
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layer.filtered()));
    let listening = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listening.local_addr().expect("address").to_string();
    let closed = format!("127.0.0.1:{}", free_port());
    let target = |address: &str| -> ProbeTarget {
        serde_json::from_value(serde_json::json!({
            "name": "api", "tenant": "shop", "cluster": "c1",
            "module": {"tcp": {"address": address}},
        }))
        .expect("probe target")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for address in [&open, &closed] {
            let loopback = kaas_observer::egress::EgressPolicy::new(
                vec!["127.0.0.0/8".parse().expect("CIDR")],
                Vec::new(),
            );
            kaas_observer::probes::probe_once(target(address), &loopback, Duration::from_secs(5))
                .await
                .expect("probe runs");
        }
    });
    let mut spans = Vec::new();
    while let Ok(span) = queue.try_recv() {
        spans.push(span);
    }
    assert_eq!(spans.len(), 2, "{spans:?}");
    let attribute = |span: &kaas_proto::otlp::Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    };
    for (span, address) in spans.iter().zip([&open, &closed]) {
        assert_eq!(span.name, "probe");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(
            attribute(span, "probe.module"),
            Some(Value::StringValue("tcp".into()))
        );
        assert_eq!(
            attribute(span, "probe.target"),
            Some(Value::StringValue(address.clone()))
        );
        assert_eq!(
            attribute(span, "cluster"),
            Some(Value::StringValue("c1".into()))
        );
    }
    assert_eq!(spans[0].status, None, "the open port answered");
    assert_eq!(
        spans[1].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "{:?}",
        spans[1]
    );
}

#[test]
fn bad_otlp_flags_stop_the_observer_before_it_starts_with_the_flag_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let output = run(
        OBSERVER,
        &[
            "serve",
            "--data-dir",
            data.to_str().expect("UTF-8 path"),
            "--otlp-endpoint",
            "https://collector:4317",
            "--otlp-client-cert",
            "client.pem",
            "--otlp-header",
            "X-Token=s3cr3t-value",
        ],
        "",
    );
    assert_ne!(output.code(), 0);
    assert!(
        output
            .stderr
            .contains("--otlp-client-cert: needs --otlp-client-key"),
        "{}",
        output.stderr
    );
    assert!(!output.stderr.contains("s3cr3t-value"), "{}", output.stderr);
    assert!(!data.exists(), "nothing started");
}
