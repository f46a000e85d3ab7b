//! Fault tests with real peers, against the `cluster-agent` binary:
//!
//! - an outage of one backend (VictoriaMetrics, killed and restarted on the same port)
//!   delays no other pipeline (Prometheus keeps receiving every round on time), and
//!   when the backend returns, everything buffered for it arrives: zero loss;
//! - a buffer that reaches its byte bound drops the oldest data, counts it, and keeps
//!   its bound, while the other pipeline delivers everything;
//! - a receiver that accepts connections and never answers times out, is counted, and
//!   holds up no one;
//! - an unreadable secret is a clear `SecretMissing` error and metric, never a crash,
//!   and delivery starts once the file appears (rotation without restart).
//!
//! Data enters through the agent's push input (remote-write), so every pipeline sees
//! exactly the same samples with known timestamps and loss can be counted exactly.
//! Needs `prometheus` and `victoria-metrics` (`scripts/test.sh` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries, WriteRequest};
use kaas_test_support::http;
use kaas_test_support::peers::{Prometheus, VictoriaMetrics};
use kaas_test_support::process::{ChildGuard, free_port};
use prost::Message;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(60);
/// How late a healthy pipeline's data may be while another backend is down. The agent
/// sends within a second of receiving; this leaves room for a loaded CI machine.
const ON_TIME: Duration = Duration::from_secs(5);

struct Agent {
    port: u16,
    log: PathBuf,
    _guard: ChildGuard,
}

impl Agent {
    fn start(dir: &Path, config: &str) -> Self {
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config).expect("agent config");
        let port = free_port();
        let log = dir.join("agent.log");
        let guard = ChildGuard::spawn(
            "cluster-agent",
            Command::new(AGENT)
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--otlp-grpc-listen-address")
                .arg("127.0.0.1:0")
                .arg("--kubernetes")
                .arg("off")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("agent log")),
        );
        let agent = Self {
            port,
            log,
            _guard: guard,
        };
        let until = Instant::now() + DEADLINE;
        while http::get(&agent.url("/readyz")).map(|(s, _)| s) != Ok(200) {
            assert!(Instant::now() < until, "agent not ready:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One series of /metrics, e.g. `kaas_agent_pipeline_samples_sent_total{pipeline="a"}`.
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http::get(&self.url("/metrics")).expect("agent /metrics");
        body.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    fn wait_metric(&self, series: &str, at_least: f64) {
        let until = Instant::now() + DEADLINE;
        while self.metric(series).unwrap_or(0.0) < at_least {
            assert!(
                Instant::now() < until,
                "{series} stayed below {at_least}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Remote-writes one sample per series, `value` at `timestamp_ms`, into the agent.
    fn push(&self, series: &[Vec<(&str, String)>], value: f64, timestamp_ms: i64) {
        let request = WriteRequest {
            timeseries: series
                .iter()
                .map(|labels| TimeSeries {
                    labels: labels
                        .iter()
                        .map(|(name, value)| Label {
                            name: (*name).to_owned(),
                            value: value.clone(),
                        })
                        .collect(),
                    samples: vec![Sample {
                        value,
                        timestamp: timestamp_ms,
                    }],
                })
                .collect(),
            metadata: Vec::new(),
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy");
        let (status, answer) = http::post(
            &self.url("/api/v1/write"),
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            &body,
        )
        .expect("push to the agent");
        assert!(
            status == 204 || status == 200,
            "push answered {status}: {answer}"
        );
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn scalar(prometheus: &Prometheus, expr: &str) -> f64 {
    prometheus
        .query(expr)
        .first()
        .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Waits until `expr` evaluates to `expected` in `prometheus`; returns how long it took.
fn wait_value(prometheus: &Prometheus, expr: &str, expected: f64, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let value = scalar(prometheus, expr);
        if value == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{expr} is {value}, not {expected}, after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pipeline(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {{remoteWrite: {{enabled: true, authentication: {{mode: unauthenticated}}}}}}\n      \
         processors: {{metricRelabelConfigs: [{{targetLabel: via, replacement: {name}}}]}}\n      \
         output:\n        prometheusRemoteWrite:\n          url: {url}\n{extra}"
    )
}

fn agent_config(pipelines: &[String]) -> String {
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n{}",
        pipelines.concat()
    )
}

fn series(name: &str, count: usize) -> Vec<Vec<(&str, String)>> {
    (0..count)
        .map(|n| vec![("__name__", name.to_owned()), ("n", n.to_string())])
        .collect()
}

#[test]
fn an_outage_of_one_backend_delays_no_other_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["vm", "prometheus", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut backend_a = VictoriaMetrics::start(&dir.path().join("vm"));
    let backend_b = Prometheus::receiver(&dir.path().join("prometheus"));
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&[
            pipeline("to-a", &backend_a.write_url(), ""),
            pipeline("to-b", &backend_b.write_url(), ""),
        ]),
    );

    const SERIES: usize = 100;
    const ROUNDS: usize = 30;
    const OUTAGE: std::ops::Range<usize> = 8..22;
    let workload = series("isolation_series", SERIES);
    let mut slowest_b = Duration::ZERO;
    let mut timestamp = now_ms();
    for round in 0..ROUNDS {
        if round == OUTAGE.start {
            backend_a.stop();
        }
        if round == OUTAGE.end {
            backend_a.resume();
        }
        timestamp = timestamp.max(now_ms()) + 1;
        agent.push(&workload, round as f64, timestamp);
        // Pipeline B must have this round promptly, whatever A's state.
        let took = wait_value(
            &backend_b,
            &format!("count(isolation_series{{via=\"to-b\"}} == {round})"),
            SERIES as f64,
            ON_TIME,
        );
        slowest_b = slowest_b.max(took);
        if OUTAGE.contains(&round) {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    eprintln!("slowest round at B while A was down or recovering: {slowest_b:?}");

    // A's buffer held the outage; once A is back every sample arrives.
    let until = Instant::now() + DEADLINE;
    loop {
        backend_a.flush();
        let exported = backend_a.export("isolation_series");
        let samples: usize = exported.iter().map(|(_, ts)| ts.len()).sum();
        if exported.len() == SERIES && samples == SERIES * ROUNDS {
            for (labels, timestamps) in &exported {
                let mut unique = timestamps.clone();
                unique.dedup();
                assert_eq!(unique.len(), ROUNDS, "{labels}: {timestamps:?}");
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "A has {samples} of {} samples in {} series after its outage:\n{}",
            SERIES * ROUNDS,
            exported.len(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        scalar(
            &backend_b,
            "sum(count_over_time(isolation_series{via=\"to-b\"}[1h]))"
        ),
        (SERIES * ROUNDS) as f64
    );
    // The outage was seen and counted against A only; nothing was dropped anywhere.
    assert!(
        agent
            .metric(
                "kaas_agent_pipeline_errors_total{pipeline=\"to-a\",reason=\"BackendUnreachable\"}"
            )
            .unwrap_or(0.0)
            > 0.0,
        "A's outage is counted"
    );
    assert_eq!(
        agent.metric(
            "kaas_agent_pipeline_errors_total{pipeline=\"to-b\",reason=\"BackendUnreachable\"}"
        ),
        None
    );
    for pipeline in ["to-a", "to-b"] {
        assert_eq!(
            agent.metric(&format!(
                "kaas_agent_pipeline_samples_dropped_total{{pipeline=\"{pipeline}\",reason=\"buffer_full\"}}"
            )),
            Some(0.0)
        );
    }
}

#[test]
fn a_full_buffer_drops_the_oldest_counts_it_and_keeps_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["prometheus", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let backend = Prometheus::receiver(&dir.path().join("prometheus"));
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&[
            pipeline(
                "small",
                &dead,
                "      buffer: {maxBytes: 1Mi, whenFull: dropOldest}\n",
            ),
            pipeline("healthy", &backend.write_url(), ""),
        ]),
    );
    // 2,000 series with incompressible padding, 40 rounds: several MiB for a 1 MiB buffer.
    const SERIES: usize = 2000;
    const ROUNDS: usize = 40;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let workload: Vec<Vec<(&str, String)>> = (0..SERIES)
        .map(|n| {
            let pad: String = (0..4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("{state:016x}")
                })
                .collect();
            vec![
                ("__name__", "fill_series".to_owned()),
                ("n", n.to_string()),
                ("pad", pad),
            ]
        })
        .collect();
    let start = now_ms();
    for round in 0..ROUNDS {
        agent.push(&workload, round as f64, start + round as i64);
    }
    let until = Instant::now() + DEADLINE;
    while agent
        .metric(
            "kaas_agent_pipeline_samples_dropped_total{pipeline=\"small\",reason=\"buffer_full\"}",
        )
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            Instant::now() < until,
            "nothing dropped; buffer holds {:?} bytes:\n{}",
            agent.metric("kaas_agent_pipeline_buffer_bytes{pipeline=\"small\"}"),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = agent
        .metric("kaas_agent_pipeline_buffer_bytes{pipeline=\"small\"}")
        .expect("buffer bytes of the small pipeline");
    assert!(
        bytes <= (1 << 20) as f64,
        "the buffer keeps its bound: {bytes} bytes"
    );
    wait_value(
        &backend,
        "sum(count_over_time(fill_series{via=\"healthy\"}[1h]))",
        (SERIES * ROUNDS) as f64,
        DEADLINE,
    );
    assert_eq!(
        agent.metric(
            "kaas_agent_pipeline_samples_dropped_total{pipeline=\"healthy\",reason=\"buffer_full\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_receiver_that_never_answers_times_out_and_holds_up_no_one() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["prometheus", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let backend = Prometheus::receiver(&dir.path().join("prometheus"));
    // Accepts connections, reads nothing, answers nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/api/v1/write", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&[
            pipeline("silent", &silent_url, "          timeout: 1s\n"),
            pipeline("healthy", &backend.write_url(), ""),
        ]),
    );
    let workload = series("timeout_series", 10);
    let mut timestamp = now_ms();
    for round in 0..8 {
        timestamp = timestamp.max(now_ms()) + 1;
        agent.push(&workload, f64::from(round), timestamp);
        wait_value(
            &backend,
            &format!("count(timeout_series{{via=\"healthy\"}} == {round})"),
            10.0,
            ON_TIME,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    agent.wait_metric(
        "kaas_agent_pipeline_errors_total{pipeline=\"silent\",reason=\"BackendUnreachable\"}",
        1.0,
    );
    assert_eq!(
        agent.metric("kaas_agent_pipeline_samples_sent_total{pipeline=\"silent\"}"),
        Some(0.0)
    );
    assert!(
        agent
            .metric("kaas_agent_pipeline_buffer_bytes{pipeline=\"silent\"}")
            .unwrap_or(0.0)
            > 0.0,
        "the silent backend's data stays buffered"
    );
    assert_eq!(http::get(&agent.url("/healthz")).map(|(s, _)| s), Ok(200));
}

#[test]
fn an_unreadable_secret_is_a_clear_error_and_delivery_starts_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["prometheus", "agent", "secrets"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let backend = Prometheus::receiver(&dir.path().join("prometheus"));
    let token_file = dir.path().join("secrets").join("token");
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&[
            pipeline(
                "needs-token",
                &backend.write_url(),
                &format!(
                    "          authentication: {{bearerToken: {{valueFrom: {{file: {}}}}}}}\n",
                    token_file.display()
                ),
            ),
            pipeline("healthy", &backend.write_url(), ""),
        ]),
    );
    let workload = series("secret_series", 5);
    let start = now_ms();
    agent.push(&workload, 1.0, start);
    wait_value(
        &backend,
        "count(secret_series{via=\"healthy\"})",
        5.0,
        ON_TIME,
    );
    agent.wait_metric(
        "kaas_agent_pipeline_errors_total{pipeline=\"needs-token\",reason=\"SecretMissing\"}",
        1.0,
    );
    let log = agent.log();
    assert!(
        log.contains("SecretMissing") && log.contains(&token_file.display().to_string()),
        "the log names the reason and the file:\n{log}"
    );
    assert_eq!(http::get(&agent.url("/healthz")).map(|(s, _)| s), Ok(200));

    // The secret appears: the buffered data is delivered without a restart.
    let token = "s3cr3t-token-value";
    std::fs::write(&token_file, token).unwrap();
    wait_value(
        &backend,
        "count(secret_series{via=\"needs-token\"})",
        5.0,
        DEADLINE,
    );
    assert!(
        !agent.log().contains(token),
        "the secret itself is never logged"
    );
}
