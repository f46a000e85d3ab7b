//! The agent's own telemetry over OTLP/gRPC to a real receiver (rotel, from PyPI), in
//! standalone mode: its metrics (with the cluster from the `cluster` external label as
//! `k8s.cluster.name`) and one span per remote-write request. And with a dead OTLP
//! endpoint the agent ships its pipeline's data as before, serves `/metrics`, and
//! counts the failed exports there.
//!
//! Needs `rotel` (`scripts/test.sh` installs it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

/// Starts an agent that scrapes its own `/metrics` and remote-writes them to
/// `receiver`, pushing its telemetry to `otlp_endpoint` every second.
fn start_agent(dir: &Path, receiver: &str, otlp_endpoint: &str) -> (ChildGuard, String) {
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
"
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
            .arg("127.0.0.1:0")
            .args(["--otlp-endpoint", otlp_endpoint, "--otlp-push-interval", "1s"])
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
fn the_agent_pushes_its_metrics_and_export_spans_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["metrics", "traces"]);
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
