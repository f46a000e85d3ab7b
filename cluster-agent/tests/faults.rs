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
        Self::start_with(dir, config, &[], None)
    }

    /// Starts the agent with `extra` flags; with `volume_size`, its data directory is a
    /// tmpfs of that size (e.g. `1m`), mounted in a user and mount namespace of its own:
    /// a real file system that fills up.
    fn start_with(dir: &Path, config: &str, extra: &[&str], volume_size: Option<&str>) -> Self {
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config).expect("agent config");
        let port = free_port();
        let log = dir.join("agent.log");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data directory");
        let mut command = match volume_size {
            None => Command::new(AGENT),
            Some(size) => {
                let mut command = Command::new("unshare");
                command
                    .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={size} kaas-agent-data \"$0\" && exec \"$@\""
                    ))
                    .arg(&data)
                    .arg(AGENT);
                command
            }
        };
        let guard = ChildGuard::spawn(
            "cluster-agent",
            command
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--otlp-grpc-listen-address")
                .arg("127.0.0.1:0")
                .arg("--otlp-http-listen-address")
                .arg("127.0.0.1:0")
                .arg("--zipkin-listen-address")
                .arg("127.0.0.1:0")
                .arg("--kubernetes")
                .arg("off")
                .args(extra)
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

    /// Remote-writes one sample per series, `value` at `timestamp_ms`, into the agent,
    /// which must accept it.
    fn push(&self, series: &[Vec<(&str, String)>], value: f64, timestamp_ms: i64) {
        let (status, answer) = self.try_push(series, value, timestamp_ms);
        assert!(
            status == 204 || status == 200,
            "push answered {status}: {answer}"
        );
    }

    /// Remote-writes one sample per series and returns the agent's answer.
    fn try_push(
        &self,
        series: &[Vec<(&str, String)>],
        value: f64,
        timestamp_ms: i64,
    ) -> (u16, String) {
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
        (status, answer)
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

/// `count` series of `name` with a label of 64 pseudo-random hex digits each, which
/// compress poorly: about 100 bytes per sample in the buffer.
fn padded_series(name: &str, count: usize) -> Vec<Vec<(&'static str, String)>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
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
                ("__name__", name.to_owned()),
                ("n", n.to_string()),
                ("pad", pad),
            ]
        })
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
    let workload = padded_series("fill_series", SERIES);
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

/// Issue 13, finding 10 (buffer faults), on a real file system that fills up: the
/// agent's data directory is a 1 MiB tmpfs and its backend is down, so the buffer's
/// writes fail part way through records (`ENOSPC`). Each refused batch is counted
/// (`buffer_write_failed`) and reported (`BufferWriteFailed`); once the backend is back,
/// every batch that was stored arrives, delivering frees the volume, and every batch
/// pushed after that arrives too: nothing is corrupt, nothing written after the
/// recovery is lost. On 552c13e the partial record stayed in the segment file, the one
/// segment was never deleted, the volume stayed full, and nothing pushed after the
/// recovery was ever delivered. The pusher is told: each refused round is answered 503
/// (552c13e answered 204 and lost it).
#[test]
fn a_full_data_volume_refuses_batches_and_loses_nothing_written_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["vm", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut backend = VictoriaMetrics::start(&dir.path().join("vm"));
    backend.stop();
    let agent = Agent::start_with(
        &dir.path().join("agent"),
        &agent_config(&[pipeline(
            "on-full-disk",
            &backend.write_url(),
            "      buffer: {maxBytes: 64Mi}\n",
        )]),
        &[],
        Some("1m"),
    );
    const SERIES: usize = 300;
    const ROUNDS_WHILE_DOWN: usize = 60;
    const ROUNDS_AFTER_RECOVERY: usize = 10;
    let workload = padded_series("full_volume_series", SERIES);
    let start = now_ms();
    // About 30 KB per round: the volume is full long before the last round. A round
    // the buffer cannot store is answered 503 with Retry-After, so its pusher retries
    // instead of believing it was kept.
    let mut answered_unavailable = 0;
    for round in 0..ROUNDS_WHILE_DOWN {
        match agent.try_push(&workload, round as f64, start + round as i64) {
            (204, _) => {}
            (503, answer) => {
                assert!(answer.contains("could not store the data"), "{answer}");
                answered_unavailable += 1;
            }
            (status, answer) => panic!("push answered {status}: {answer}"),
        }
    }
    let series = |name: &str, reason: &str| {
        format!("kaas_agent_pipeline_{name}{{pipeline=\"on-full-disk\",reason=\"{reason}\"}}")
    };
    agent.wait_metric(&series("errors_total", "BufferWriteFailed"), 1.0);
    let refused = agent
        .metric(&series("samples_dropped_total", "buffer_write_failed"))
        .expect("samples refused by the full volume are counted");
    assert!(refused > 0.0 && refused % SERIES as f64 == 0.0, "{refused}");
    let refused_rounds = (refused as usize) / SERIES;
    assert_eq!(
        refused_rounds, answered_unavailable,
        "every refused round, and only those, was answered 503"
    );
    assert!(
        refused_rounds < ROUNDS_WHILE_DOWN,
        "some rounds were stored"
    );
    eprintln!("{refused_rounds} of {ROUNDS_WHILE_DOWN} rounds refused by the full volume");
    assert!(
        agent.log().contains("BufferWriteFailed"),
        "the failure is logged:\n{}",
        agent.log()
    );

    // The backend returns: everything stored is delivered, which frees the volume.
    backend.resume();
    let stored_rounds = ROUNDS_WHILE_DOWN - refused_rounds;
    let rounds_at_backend = |backend: &VictoriaMetrics| {
        backend.flush();
        let exported = backend.export("full_volume_series");
        let mut per_series: Vec<Vec<i64>> = exported.into_iter().map(|(_, ts)| ts).collect();
        for timestamps in &mut per_series {
            timestamps.sort_unstable();
            timestamps.dedup();
        }
        per_series
    };
    let until = Instant::now() + DEADLINE;
    while rounds_at_backend(&backend)
        .iter()
        .map(Vec::len)
        .sum::<usize>()
        < stored_rounds * SERIES
    {
        assert!(
            Instant::now() < until,
            "the stored rounds never all arrived:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Pushed after the recovery: every one arrives.
    let after = start + ROUNDS_WHILE_DOWN as i64;
    for round in 0..ROUNDS_AFTER_RECOVERY {
        agent.push(&workload, round as f64, after + round as i64);
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let per_series = rounds_at_backend(&backend);
        let complete = per_series.len() == SERIES
            && per_series
                .iter()
                .all(|ts| ts.len() == stored_rounds + ROUNDS_AFTER_RECOVERY);
        if complete {
            for timestamps in &per_series {
                let recovered: Vec<i64> = timestamps
                    .iter()
                    .copied()
                    .filter(|ts| *ts >= after)
                    .collect();
                assert_eq!(recovered.len(), ROUNDS_AFTER_RECOVERY);
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "after the recovery the backend has {:?} samples per series, not {}:\n{}",
            per_series
                .iter()
                .map(Vec::len)
                .collect::<std::collections::BTreeSet<_>>(),
            stored_rounds + ROUNDS_AFTER_RECOVERY,
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for reason in ["corrupt", "rejected_by_backend"] {
        assert_eq!(
            agent.metric(&series("samples_dropped_total", reason)),
            Some(0.0),
            "nothing {reason}"
        );
    }
    assert_eq!(
        agent.metric(&series("samples_dropped_total", "buffer_write_failed")),
        Some(refused),
        "nothing refused after the recovery"
    );
}

/// Issue 13, Disk budget: two pipelines ask for 64 MiB of buffer each on an agent whose
/// data volume is a real 8 MiB file system and whose `--buffer-budget` is 6 MiB. The
/// agent gives each 3 MiB and says why (`BufferBudgetExceeded`, naming the budget).
/// One backend is dead: its buffer stays within its share and drops its oldest data,
/// the volume never fills, and the other pipeline delivers every round. On 552c13e
/// there was no budget: the dead backend's buffer grew until the volume was full, and
/// from then on the healthy pipeline's batches could not be written either.
#[test]
fn a_dead_backend_fills_only_its_share_of_the_volume_and_the_other_pipeline_keeps_sending() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["prometheus", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let backend = Prometheus::receiver(&dir.path().join("prometheus"));
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let buffer = "      buffer: {maxBytes: 64Mi}\n";
    let agent = Agent::start_with(
        &dir.path().join("agent"),
        &agent_config(&[
            pipeline("to-dead", &dead, buffer),
            pipeline("to-live", &backend.write_url(), buffer),
        ]),
        &["--buffer-budget", "6Mi"],
        Some("8m"),
    );
    let metric = |name: &str, pipeline: &str, reason: Option<&str>| {
        let reason = reason.map_or(String::new(), |r| format!(",reason=\"{r}\""));
        agent.metric(&format!(
            "kaas_agent_pipeline_{name}{{pipeline=\"{pipeline}\"{reason}}}"
        ))
    };
    for pipeline in ["to-dead", "to-live"] {
        assert_eq!(
            metric("buffer_max_bytes", pipeline, None),
            Some(f64::from(3 << 20)),
            "{pipeline} gets half of the budget"
        );
        assert!(
            metric("errors_total", pipeline, Some("BufferBudgetExceeded")).unwrap_or(0.0) >= 1.0,
            "{pipeline} says its buffer was reduced"
        );
    }
    assert_eq!(
        agent.metric("kaas_agent_buffer_budget_bytes"),
        Some(f64::from(6 << 20))
    );
    let log = agent.log();
    assert!(
        log.contains("BufferBudgetExceeded") && log.contains("buffer budget of 6291456 bytes"),
        "{log}"
    );

    // About 30 KB per round, 400 rounds: 12 MB for the dead backend alone, more than the
    // whole volume.
    const SERIES: usize = 300;
    const ROUNDS: usize = 400;
    let workload = padded_series("budget_series", SERIES);
    let start = now_ms();
    for round in 0..ROUNDS {
        agent.push(&workload, round as f64, start + round as i64);
    }
    wait_value(
        &backend,
        "sum(count_over_time(budget_series{via=\"to-live\"}[1h]))",
        (SERIES * ROUNDS) as f64,
        DEADLINE,
    );
    let dead_bytes = metric("buffer_bytes", "to-dead", None).expect("buffer bytes");
    assert!(
        dead_bytes <= f64::from(3 << 20),
        "the dead backend's buffer keeps its share: {dead_bytes} bytes"
    );
    assert!(
        metric("samples_dropped_total", "to-dead", Some("buffer_full")).unwrap_or(0.0) > 0.0,
        "the dead backend's oldest data was dropped"
    );
    for pipeline in ["to-dead", "to-live"] {
        assert_eq!(
            metric(
                "samples_dropped_total",
                pipeline,
                Some("buffer_write_failed")
            ),
            Some(0.0),
            "the volume never filled up:\n{}",
            agent.log()
        );
    }
    assert_eq!(
        metric("samples_dropped_total", "to-live", Some("buffer_full")),
        Some(0.0)
    );
}
