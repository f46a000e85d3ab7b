//! `cluster-agent run` end to end with real peers: nginx as the scrape target and
//! Prometheus as the remote-write receiver; configuration reloads; self-metrics; and
//! at-least-once delivery across `kill -9`.
//!
//! Needs `nginx` and `prometheus` (`scripts/test.sh` installs them).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_test_support::http;
use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

const EXPOSITION: &str = "# HELP nginx_fixture_requests_total Requests.\n\
# TYPE nginx_fixture_requests_total counter\n\
nginx_fixture_requests_total{code=\"200\",job=\"exposed\"} 1027\n\
nginx_fixture_requests_total{code=\"500\",job=\"exposed\"} 3\n\
# TYPE nginx_fixture_temperature gauge\n\
nginx_fixture_temperature 21.5\n\
debug_metric 1\n";

fn config(pipeline: &str, target: &str, url: &str, extra_metric_relabel: &str) -> String {
    format!(
        r#"apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
externalLabels:
  cluster: edge-1
pipelines:
  - metadata:
      name: {pipeline}
    spec:
      input:
        scrapeInterval: 1s
        scrapeTimeout: 1s
        static:
          targets:
            - addresses: ["{target}"]
              labels:
                team: a
      processors:
        metricRelabelConfigs:
          - action: drop
            sourceLabels: [__name__]
            regex: debug_metric
{extra_metric_relabel}
      output:
        prometheusRemoteWrite:
          url: {url}
"#
    )
}

struct Agent {
    port: u16,
    _guard: ChildGuard,
}

fn start_agent(config: &Path, data_dir: &Path, log: &Path) -> Agent {
    let port = free_port();
    let guard = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp-grpc-listen-address")
            .arg("127.0.0.1:0")
            .arg("--otlp-http-listen-address")
            .arg("127.0.0.1:0")
            .arg("--zipkin-listen-address")
            .arg("127.0.0.1:0")
            .arg("--reload-check-ms")
            .arg("200")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("agent log")),
    );
    let agent = Agent {
        port,
        _guard: guard,
    };
    let until = Instant::now() + DEADLINE;
    while agent.get("/readyz").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < until,
            "agent not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

impl Agent {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http::get(&format!("http://127.0.0.1:{}{path}", self.port)).ok()
    }

    /// The value of one series of the agent's /metrics, e.g.
    /// `kaas_agent_pipeline_samples_sent_total{pipeline="e2e"}`; `None` when absent.
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").expect("agent /metrics");
        body.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    fn wait_metric(&self, series: &str, at_least: f64) {
        let until = Instant::now() + DEADLINE;
        while self.metric(series).unwrap_or(0.0) < at_least {
            assert!(Instant::now() < until, "{series} stayed below {at_least}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn value(result: &serde_json::Value) -> f64 {
    result["value"][1]
        .as_str()
        .expect("sample value")
        .parse()
        .expect("number")
}

#[test]
fn scraped_samples_reach_prometheus_and_reloads_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let nginx_dir = dir.path().join("nginx");
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    nginx.serve("metrics", EXPOSITION);
    let prometheus = Prometheus::receiver(&prometheus_dir);

    let config_path = dir.path().join("agent.yaml");
    let target = nginx.address();
    std::fs::write(
        &config_path,
        config("e2e", &target, &prometheus.write_url(), ""),
    )
    .unwrap();
    let agent = start_agent(
        &config_path,
        &dir.path().join("data"),
        &dir.path().join("agent.log"),
    );

    let requests = prometheus.wait_for("nginx_fixture_requests_total{code=\"200\"}", DEADLINE);
    let metric = &requests[0]["metric"];
    assert_eq!(metric["job"], "e2e", "the target label wins");
    assert_eq!(
        metric["exported_job"], "exposed",
        "the exposed label is kept as exported_job"
    );
    assert_eq!(metric["instance"], target.as_str());
    assert_eq!(metric["team"], "a");
    assert_eq!(metric["cluster"], "edge-1", "external label");
    assert_eq!(value(&requests[0]), 1027.0);
    let up = prometheus.wait_for("up{job=\"e2e\"}", DEADLINE);
    assert_eq!(value(&up[0]), 1.0);
    assert!(
        prometheus.query("debug_metric").is_empty(),
        "dropped by metric relabeling"
    );
    let sent = "kaas_agent_pipeline_samples_sent_total{pipeline=\"e2e\"}";
    agent.wait_metric(sent, 1.0);
    agent.wait_metric(
        "kaas_agent_pipeline_send_duration_seconds_count{pipeline=\"e2e\"}",
        1.0,
    );
    let up_targets = "kaas_agent_pipeline_targets{pipeline=\"e2e\",state=\"up\"}";
    assert_eq!(agent.metric(up_targets), Some(1.0));

    // An invalid file is refused and the running configuration keeps shipping.
    std::fs::write(&config_path, config("e2e", &target, "not a url", "")).unwrap();
    agent.wait_metric("kaas_agent_config_reloads_total{result=\"failure\"}", 1.0);
    assert_eq!(
        agent.metric("kaas_agent_config_last_reload_successful"),
        Some(0.0)
    );
    let before = agent.metric(sent).expect("sent counter");
    agent.wait_metric(sent, before + 1.0);

    // A valid change takes effect without a restart of the process.
    let extra = "          - {sourceLabels: [__name__], regex: nginx_fixture_temperature, targetLabel: reloaded, replacement: 'yes'}";
    std::fs::write(
        &config_path,
        config("e2e", &target, &prometheus.write_url(), extra),
    )
    .unwrap();
    let reloaded = prometheus.wait_for("nginx_fixture_temperature{reloaded=\"yes\"}", DEADLINE);
    assert_eq!(value(&reloaded[0]), 21.5);
    assert_eq!(
        agent.metric("kaas_agent_config_last_reload_successful"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_data_survives_kill_9_and_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir);
    nginx.serve("metrics", EXPOSITION);
    // Nothing listens on the backend's port until after the kill.
    let backend_port = free_port();
    let url = format!("http://127.0.0.1:{backend_port}/api/v1/write");
    let config_path = dir.path().join("agent.yaml");
    std::fs::write(&config_path, config("durable", &nginx.address(), &url, "")).unwrap();
    let data = dir.path().join("data");

    let agent = start_agent(&config_path, &data, &dir.path().join("agent-1.log"));
    // Four samples of this series per scrape arrive in the buffer; wait for a few scrapes.
    agent.wait_metric(
        "kaas_agent_pipeline_samples_in_total{pipeline=\"durable\"}",
        30.0,
    );
    let killed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    drop(agent); // SIGKILL: no orderly shutdown, no flush.

    let receiver = RemoteWriteReceiver::start_on(backend_port).await;
    let _agent = start_agent(&config_path, &data, &dir.path().join("agent-2.log"));
    let until = Instant::now() + DEADLINE;
    loop {
        let before_kill: std::collections::BTreeSet<i64> = receiver
            .accepted()
            .iter()
            .filter(|(labels, _)| {
                labels
                    .iter()
                    .any(|(n, v)| n == "__name__" && v == "nginx_fixture_temperature")
            })
            .flat_map(|(_, samples)| samples.iter().map(|(t, _)| *t))
            .filter(|t| *t < killed_at_ms)
            .collect();
        if before_kill.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < until,
            "only {} scrapes from before the kill arrived",
            before_kill.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
