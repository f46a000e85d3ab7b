//! Side-by-side benchmark of metric agents on one workload.
//!
//! nginx serves `targets` expositions of `series_per_target` series (counters, gauges
//! and histograms); each agent in turn scrapes them every `interval` and remote-writes
//! to a fresh VictoriaMetrics. For each agent the harness measures, over the same
//! window after a warm-up:
//!
//! - **CPU per sample**: user+system CPU time of the agent process divided by the
//!   samples it should have scraped in the window;
//! - **peak RSS per active series**: the process's high-water mark (`VmHWM`) divided by
//!   the active series;
//! - **delivered**: benchmark samples VictoriaMetrics received, divided by the scrapes
//!   it saw (`up` samples) times the series per target.
//!
//! Results are printed with ratios against each peer. Timings are reported, never
//! asserted: the smoke test checks only that every agent delivered.
//!
//! Two builds of cluster-agent are compared round by round in [`compare`]
//! (`agent-bench --baseline-agent`). The observer's fan-out benchmark
//! (`fanout-bench`) lives in [`fanout`]; the log agents' benchmark (`log-bench`) in
//! [`logs`]; the trace gateways' benchmark (`trace-bench`) in [`traces`].

pub mod compare;
#[cfg(feature = "in-process")]
pub mod fanout;
pub mod logs;
pub mod serve;
pub mod traces;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::{Nginx, binary};
use kaas_test_support::process::{ChildGuard, free_port, wait_for_tcp};

/// Report series every agent adds per target and scrape; not counted as workload.
const JOB: &str = "bench";

/// What is scraped, how often, and for how long.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Number of targets.
    pub targets: usize,
    /// Series each target exposes.
    pub series_per_target: usize,
    /// Scrape interval.
    pub interval: Duration,
    /// Time before measuring starts (first scrapes, connection set-up).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

impl Workload {
    /// Active series over all targets.
    pub fn active_series(&self) -> usize {
        self.targets * self.series_per_target
    }

    /// Samples scraped per second.
    pub fn samples_per_second(&self) -> f64 {
        self.active_series() as f64 / self.interval.as_secs_f64()
    }
}

/// An agent under test.
#[derive(Clone, Debug)]
pub enum Agent {
    /// cluster-agent, from the given binary.
    ClusterAgent(PathBuf),
    /// Prometheus in agent mode (Debian's `prometheus`).
    PrometheusAgent,
    /// vmagent (Debian's `victoria-metrics`).
    VmAgent,
}

impl Agent {
    /// The name printed in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClusterAgent(_) => "cluster-agent",
            Self::PrometheusAgent => "prometheus-agent",
            Self::VmAgent => "vmagent",
        }
    }
}

/// What one agent achieved.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The agent's name.
    pub agent: &'static str,
    /// CPU seconds spent in the window.
    pub cpu_seconds: f64,
    /// Samples that should have been scraped in the window.
    pub window_samples: f64,
    /// Peak resident memory in bytes.
    pub peak_rss_bytes: u64,
    /// Active series.
    pub active_series: usize,
    /// Benchmark samples the receiver got.
    pub delivered_samples: f64,
    /// Benchmark samples the receiver should have got for the scrapes it saw.
    pub expected_samples: f64,
}

impl Measurement {
    /// CPU microseconds per sample.
    pub fn cpu_per_sample_us(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.window_samples.max(1.0)
    }

    /// Peak RSS bytes per active series.
    pub fn rss_per_series(&self) -> f64 {
        self.peak_rss_bytes as f64 / self.active_series.max(1) as f64
    }

    /// Share of the expected samples delivered.
    pub fn delivered_ratio(&self) -> f64 {
        if self.expected_samples == 0.0 {
            return 0.0;
        }
        self.delivered_samples / self.expected_samples
    }
}

/// One target's exposition: a third counters, a third gauges, a third histograms.
pub fn exposition(target: usize, series: usize) -> String {
    let mut out = String::with_capacity(series * 80);
    let mut written = 0;
    let mut family = 0;
    while written < series {
        match family % 3 {
            0 => {
                let _ = writeln!(out, "# TYPE bench_requests_{family}_total counter");
                for i in 0..50.min(series - written) {
                    let _ = writeln!(
                        out,
                        "bench_requests_{family}_total{{path=\"/api/v1/items/{i}\",code=\"200\",method=\"GET\"}} {}",
                        target * 1000 + i * 7
                    );
                    written += 1;
                }
            }
            1 => {
                let _ = writeln!(out, "# TYPE bench_inflight_{family} gauge");
                for i in 0..50.min(series - written) {
                    let _ = writeln!(
                        out,
                        "bench_inflight_{family}{{worker=\"w{i}\",pool=\"default\"}} {}.5",
                        i % 13
                    );
                    written += 1;
                }
            }
            _ => {
                let _ = writeln!(out, "# TYPE bench_latency_{family}_seconds histogram");
                'sets: for set in 0..4 {
                    let mut cumulative = 0;
                    for le in ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"] {
                        if written == series {
                            break 'sets;
                        }
                        cumulative += set + 1;
                        let _ = writeln!(
                            out,
                            "bench_latency_{family}_seconds_bucket{{handler=\"h{set}\",le=\"{le}\"}} {cumulative}"
                        );
                        written += 1;
                    }
                    for (suffix, value) in [
                        ("sum", cumulative as f64 * 0.03),
                        ("count", cumulative as f64),
                    ] {
                        if written == series {
                            break 'sets;
                        }
                        let _ = writeln!(
                            out,
                            "bench_latency_{family}_seconds_{suffix}{{handler=\"h{set}\"}} {value}"
                        );
                        written += 1;
                    }
                }
            }
        }
        family += 1;
    }
    out
}

fn seconds(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn prometheus_style_config(
    workload: &Workload,
    target_address: &str,
    write_url: Option<&str>,
) -> String {
    let mut config = format!(
        "global:\n  scrape_interval: {}\n  scrape_timeout: {}\nscrape_configs:\n  - job_name: {JOB}\n    static_configs:\n",
        seconds(workload.interval),
        seconds(workload.interval.min(Duration::from_secs(10)))
    );
    for t in 0..workload.targets {
        let _ = writeln!(
            config,
            "      - targets: ['{target_address}']\n        labels: {{target: 't{t}', __metrics_path__: '/t{t}/metrics'}}"
        );
    }
    if let Some(url) = write_url {
        // vmagent flushes every second; give Prometheus the same deadline so both
        // deliver on the same schedule (its default is 5 s).
        let _ = writeln!(
            config,
            "remote_write:\n  - url: {url}\n    queue_config:\n      batch_send_deadline: 1s"
        );
    }
    config
}

fn cluster_agent_config(workload: &Workload, target_address: &str, write_url: &str) -> String {
    let mut config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: {JOB}}}\n    spec:\n      input:\n        scrapeInterval: {}\n        scrapeTimeout: {}\n        static:\n          targets:\n",
        seconds(workload.interval),
        seconds(workload.interval.min(Duration::from_secs(10)))
    );
    for t in 0..workload.targets {
        let _ = writeln!(
            config,
            "            - addresses: ['{target_address}']\n              metricsPath: /t{t}/metrics\n              labels: {{target: 't{t}'}}"
        );
    }
    let _ = writeln!(
        config,
        "      output:\n        prometheusRemoteWrite:\n          url: {write_url}"
    );
    config
}

/// A fresh VictoriaMetrics to receive one agent's data.
struct Receiver {
    port: u16,
    _guard: ChildGuard,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let guard = ChildGuard::spawn(
            "victoria-metrics",
            Command::new(binary("victoria-metrics", "victoria-metrics"))
                .arg(format!("-storageDataPath={}", dir.join("vm").display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-search.latencyOffset=1s")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(30));
        Self {
            port,
            _guard: guard,
        }
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// The sum of an instant query's result.
    fn query_sum(&self, expr: &str) -> f64 {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let Ok((200, body)) = http::get(&url) else {
            return 0.0;
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0)
    }
}

/// CPU seconds (user + system) of a process so far; 0 if unknown.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: utime and stime are the 12th and 13th fields.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident memory (`VmHWM`) of a process in bytes; 0 if unknown.
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let kb = line
                .strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim();
            kb.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn start_agent(
    agent: &Agent,
    workload: &Workload,
    target: &str,
    write_url: &str,
    dir: &Path,
) -> ChildGuard {
    let listen = format!("127.0.0.1:{}", free_port());
    match agent {
        Agent::ClusterAgent(path) => {
            let config = dir.join("cluster-agent.yaml");
            std::fs::write(&config, cluster_agent_config(workload, target, write_url))
                .expect("write config");
            ChildGuard::spawn(
                "cluster-agent",
                Command::new(path)
                    .arg("run")
                    .arg("--config")
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(dir.join("cluster-agent-data"))
                    .arg("--listen-address")
                    .arg(&listen)
                    .arg("--otlp-grpc-listen-address")
                    .arg("127.0.0.1:0")
                    .arg("--otlp-http-listen-address")
                    .arg("127.0.0.1:0")
                    .arg("--zipkin-listen-address")
                    .arg("127.0.0.1:0")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        }
        Agent::PrometheusAgent => {
            let config = dir.join("prometheus.yml");
            std::fs::write(
                &config,
                prometheus_style_config(workload, target, Some(write_url)),
            )
            .expect("write config");
            ChildGuard::spawn(
                "prometheus",
                Command::new(binary("prometheus", "prometheus"))
                    .arg(format!("--config.file={}", config.display()))
                    .arg("--enable-feature=agent")
                    .arg(format!(
                        "--storage.agent.path={}",
                        dir.join("prometheus-wal").display()
                    ))
                    .arg(format!("--web.listen-address={listen}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        }
        Agent::VmAgent => {
            let config = dir.join("vmagent.yml");
            std::fs::write(&config, prometheus_style_config(workload, target, None))
                .expect("write config");
            ChildGuard::spawn(
                "vmagent",
                Command::new(binary("vmagent", "victoria-metrics"))
                    .arg(format!("-promscrape.config={}", config.display()))
                    .arg(format!("-remoteWrite.url={write_url}"))
                    .arg(format!(
                        "-remoteWrite.tmpDataPath={}",
                        dir.join("vmagent-data").display()
                    ))
                    .arg(format!("-httpListenAddr={listen}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        }
    }
}

/// Runs one agent on the workload and measures it.
pub fn measure(agent: &Agent, workload: &Workload, nginx: &Nginx) -> Measurement {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(dir.path());
    let mut process = start_agent(
        agent,
        workload,
        &nginx.address(),
        &receiver.write_url(),
        dir.path(),
    );
    let pid = process.id();
    std::thread::sleep(workload.warmup);
    process.assert_running();
    let cpu_start = cpu_seconds(pid);
    let started = Instant::now();
    std::thread::sleep(workload.duration);
    let cpu = cpu_seconds(pid) - cpu_start;
    let window = started.elapsed();
    let rss = peak_rss(pid);
    // Let the last scrapes reach the receiver, then stop the agent.
    std::thread::sleep(workload.interval + Duration::from_secs(2));
    drop(process);
    std::thread::sleep(Duration::from_secs(2));
    // Aggregate on the server: 100,000 series per answer would be slow and truncated.
    let scrapes = receiver.query_sum(&format!("sum(count_over_time(up{{job=\"{JOB}\"}}[1h]))"));
    // In groups of targets: one query over all of a 1,000,000-series run would pass
    // VictoriaMetrics' limit of series per query and answer nothing.
    let per_query = (SERIES_PER_QUERY / workload.series_per_target.max(1)).max(1);
    let delivered: f64 = (0..workload.targets)
        .collect::<Vec<_>>()
        .chunks(per_query)
        .map(|group| {
            let targets: Vec<String> = group.iter().map(|t| format!("t{t}")).collect();
            receiver.query_sum(&format!(
                "sum(count_over_time({{__name__=~\"bench_.*\",target=~\"{}\"}}[1h]))",
                targets.join("|")
            ))
        })
        .sum();
    Measurement {
        agent: agent.name(),
        cpu_seconds: cpu,
        window_samples: workload.samples_per_second() * window.as_secs_f64(),
        peak_rss_bytes: rss,
        active_series: workload.active_series(),
        delivered_samples: delivered,
        expected_samples: scrapes * workload.series_per_target as f64,
    }
}

/// Series one counting query may touch: well under VictoriaMetrics'
/// `-search.maxUniqueTimeseries` (300,000 by default on this machine's memory).
const SERIES_PER_QUERY: usize = 100_000;

/// nginx in `dir` serving every target's exposition of the workload.
fn serve_workload(workload: &Workload, dir: &Path) -> Nginx {
    let nginx = Nginx::start(dir);
    for t in 0..workload.targets {
        std::fs::create_dir_all(nginx.root.join(format!("t{t}"))).expect("target dir");
        nginx.serve(
            &format!("t{t}/metrics"),
            &exposition(t, workload.series_per_target),
        );
    }
    nginx
}

/// Serves the workload and measures every agent, one after the other.
pub fn run(workload: &Workload, agents: &[Agent]) -> Vec<Measurement> {
    let dir = tempfile::tempdir().expect("temp dir");
    let nginx = serve_workload(workload, dir.path());
    agents
        .iter()
        .map(|agent| measure(agent, workload, &nginx))
        .collect()
}

/// The results as a table, with ratios of cluster-agent to each peer.
pub fn report(workload: &Workload, results: &[Measurement]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload: {} targets x {} series = {} active series every {:?} ({:.0} samples/s), {:?} measured after {:?} warm-up",
        workload.targets,
        workload.series_per_target,
        workload.active_series(),
        workload.interval,
        workload.samples_per_second(),
        workload.duration,
        workload.warmup
    );
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>14} {:>14} {:>14}",
        "agent", "delivered", "CPU/sample", "peak RSS", "RSS/series"
    );
    for m in results {
        let _ = writeln!(
            out,
            "{:<18} {:>9.1}% {:>11.3} µs {:>10.1} MiB {:>12.0} B",
            m.agent,
            m.delivered_ratio() * 100.0,
            m.cpu_per_sample_us(),
            m.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            m.rss_per_series()
        );
    }
    if let Some(ours) = results.iter().find(|m| m.agent == "cluster-agent") {
        for peer in results.iter().filter(|m| m.agent != "cluster-agent") {
            let _ = writeln!(
                out,
                "cluster-agent / {}: CPU per sample {:.2}x, peak RSS per series {:.2}x",
                peer.agent,
                ours.cpu_per_sample_us() / peer.cpu_per_sample_us().max(f64::MIN_POSITIVE),
                ours.rss_per_series() / peer.rss_per_series().max(f64::MIN_POSITIVE)
            );
        }
    }
    out
}
