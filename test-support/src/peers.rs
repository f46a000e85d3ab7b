//! Real peers from Debian's packages, started on loopback for one test and stopped when
//! dropped: nginx serving files (a scrape target) and Prometheus (a remote-write
//! receiver, or an agent to compare with), and rotel (an OTLP receiver). A missing binary fails the test with the
//! package to install; `scripts/test.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, free_port, wait_for_tcp};

/// How long a peer may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Finds `name` on PATH (and in /usr/sbin, where nginx lives), or panics naming the
/// Debian package that provides it.
pub fn binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; scripts/test.sh installs it (apt-get install {package})"
            )
        })
}

/// Connections one nginx worker accepts at once: enough for the probe benchmark's
/// 1,000 endpoints probed 20 at a time, with room for keep-alive connections.
const NGINX_WORKER_CONNECTIONS: u32 = 4096;

/// Runs nginx in `dir` (config, pid file, logs and temporary files there) with
/// `http_body` inside its `http { … }` block (`server { … }` blocks, `log_format`…;
/// access logging is off unless a server turns it on), and waits until every one of
/// `ports` listens. One foreground process: `daemon off; master_process off`.
pub fn run_nginx(dir: &Path, http_body: &str, ports: &[u16]) -> ChildGuard {
    let d = dir.display();
    let config = dir.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
             events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             {http_body}\n}}\n"
        ),
    )
    .expect("nginx config");
    let guard = ChildGuard::spawn(
        "nginx",
        Command::new(binary("nginx", "nginx-light"))
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    for port in ports {
        wait_for_tcp(([127, 0, 0, 1], *port).into(), START_DEADLINE);
    }
    guard
}

/// nginx serving the files of a directory under `/`.
pub struct Nginx {
    /// The port it listens on.
    pub port: u16,
    /// The directory it serves.
    pub root: PathBuf,
    _guard: ChildGuard,
}

impl Nginx {
    /// Starts nginx in `dir` (config, logs and `root/`), serving `root/` as
    /// Prometheus text.
    pub fn start(dir: &Path) -> Self {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("nginx root");
        let port = free_port();
        let guard = run_nginx(
            dir,
            &format!(
                "  server {{\n    listen 127.0.0.1:{port};\n    root {};\n\
                     location / {{ default_type \"text/plain; version=0.0.4\"; }}\n  }}",
                root.display()
            ),
            &[port],
        );
        Self {
            port,
            root,
            _guard: guard,
        }
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes (or replaces) a served file.
    pub fn serve(&self, path: &str, body: &str) {
        std::fs::write(self.root.join(path.trim_start_matches('/')), body)
            .expect("write served file");
    }
}

/// A Prometheus server, as a remote-write receiver or in agent mode.
pub struct Prometheus {
    /// The port of its web API.
    pub port: u16,
    log: PathBuf,
    _guard: ChildGuard,
}

impl Prometheus {
    /// A receiver: accepts remote-write on `/api/v1/write`, answers queries.
    pub fn receiver(dir: &Path) -> Self {
        let config = dir.join("receiver.yml");
        std::fs::write(&config, "global: {}\n").expect("receiver config");
        Self::start(
            dir,
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                "--web.enable-remote-write-receiver".into(),
            ],
        )
    }

    /// Agent mode with the given configuration.
    pub fn agent(dir: &Path, config: &str) -> Self {
        let path = dir.join("agent.yml");
        std::fs::write(&path, config).expect("agent config");
        Self::start(
            dir,
            &[
                format!("--config.file={}", path.display()),
                "--enable-feature=agent".into(),
                format!("--storage.agent.path={}", dir.join("wal").display()),
            ],
        )
    }

    fn start(dir: &Path, args: &[String]) -> Self {
        let port = free_port();
        let log = dir.join("prometheus.log");
        let guard = ChildGuard::spawn(
            "prometheus",
            Command::new(binary("prometheus", "prometheus"))
                .args(args)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log")),
        );
        let prometheus = Self {
            port,
            log,
            _guard: guard,
        };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&self) {
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Ok((200, _)) =
                crate::http::get(&format!("http://127.0.0.1:{}/-/ready", self.port))
            {
                return;
            }
            assert!(
                Instant::now() < until,
                "Prometheus did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its remote-write URL.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Runs an instant query and returns `data.result`.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let encoded: String = url_encode(expr);
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let (status, body) = crate::http::get(&url).unwrap_or_else(|e| panic!("query {expr}: {e}"));
        assert_eq!(status, 200, "query {expr}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query JSON");
        json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` until it returns at least one series, or panics after `deadline`.
    pub fn wait_for(&self, expr: &str, deadline: Duration) -> Vec<serde_json::Value> {
        let until = Instant::now() + deadline;
        loop {
            let result = self.query(expr);
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < until,
                "{expr} returned nothing within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// rotel, an OTLP receiver and gateway (PyPI package `rotel`): logging what it receives,
/// or forwarding it to another OTLP receiver.
pub struct Rotel {
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    /// OTLP/HTTP port.
    pub http_port: u16,
    log: PathBuf,
    guard: ChildGuard,
}

impl Rotel {
    /// Starts rotel with a detailed debug log of metrics and no onward export.
    pub fn start(dir: &Path) -> Self {
        Self::start_logging(dir, &["metrics"])
    }

    /// Starts rotel with a detailed debug log of the given signals (`metrics`,
    /// `traces`, `logs`) and no onward export.
    pub fn start_logging(dir: &Path, signals: &[&str]) -> Self {
        let mut command = Command::new(rotel_binary());
        command
            .args(["start", "--exporter", "blackhole"])
            .args(signals.iter().flat_map(|s| ["--debug-log", s]))
            .args(["--debug-log-verbosity", "detailed"]);
        Self::spawn(dir, command, free_port(), free_port())
    }

    /// Starts rotel as an OTLP gateway on the given ports, exporting what it receives
    /// over OTLP/HTTP (protobuf, gzip-compressed: rotel compresses whatever
    /// `--otlp-exporter-compression` says) to `endpoint`, a base URL to which rotel
    /// appends `/v1/traces`, with its default in-memory batching (8,192 spans or
    /// 200 ms). No debug log.
    pub fn forwarding(dir: &Path, grpc_port: u16, http_port: u16, endpoint: &str) -> Self {
        let mut command = Command::new(rotel_binary());
        command
            .args([
                "start",
                "--exporter",
                "otlp",
                "--otlp-exporter-protocol",
                "http",
            ])
            .arg(format!("--otlp-exporter-endpoint={endpoint}"));
        Self::spawn(dir, command, grpc_port, http_port)
    }

    fn spawn(dir: &Path, mut command: Command, grpc_port: u16, http_port: u16) -> Self {
        let log = dir.join("rotel.log");
        let guard = ChildGuard::spawn(
            "rotel",
            command
                .arg(format!("--otlp-grpc-endpoint=127.0.0.1:{grpc_port}"))
                .arg(format!("--otlp-http-endpoint=127.0.0.1:{http_port}"))
                .stdout(std::fs::File::create(&log).expect("rotel log"))
                .stderr(Stdio::null()),
        );
        wait_for_tcp(([127, 0, 0, 1], grpc_port).into(), START_DEADLINE);
        wait_for_tcp(([127, 0, 0, 1], http_port).into(), START_DEADLINE);
        Self {
            grpc_port,
            http_port,
            log,
            guard,
        }
    }

    /// rotel's process id (its CPU time and memory are read from `/proc`).
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Everything rotel logged: each received resource, metric and data point.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains every one of `needles`, or panics after `deadline`.
    pub fn wait_for_log(&self, needles: &[&str], deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) {
                return log;
            }
            assert!(
                Instant::now() < until,
                "rotel never logged {:?}; log so far:\n{}",
                needles
                    .iter()
                    .filter(|n| !log.contains(*n))
                    .collect::<Vec<_>>(),
                &log[log.len().saturating_sub(4000)..]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `rotel-agent` binary inside the installed PyPI package `rotel`.
fn rotel_binary() -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3 runs");
    let binary = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        output.status.success() && binary.is_file(),
        "rotel is not installed; scripts/test.sh installs it (pip install rotel)"
    );
    binary
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// VictoriaMetrics (Debian's `victoria-metrics`), a remote-write receiver that can be
/// stopped and started again on the same port and data, to play a backend outage.
pub struct VictoriaMetrics {
    /// The port it listens on (kept across restarts).
    pub port: u16,
    dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl VictoriaMetrics {
    /// Starts on a free loopback port with its data under `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut vm = Self {
            port: free_port(),
            dir: dir.to_owned(),
            guard: None,
        };
        vm.resume();
        vm
    }

    /// Stops the process gracefully (SIGTERM, so it persists what it acknowledged: a
    /// backend that loses acknowledged data is not what the tests examine); the port
    /// then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.terminate(START_DEADLINE);
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("victoria-metrics.log"))
            .expect("victoria-metrics log");
        self.guard = Some(ChildGuard::spawn(
            "victoria-metrics",
            Command::new(binary("victoria-metrics", "victoria-metrics"))
                .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
                .arg(format!(
                    "-storageDataPath={}",
                    self.dir.join("data").display()
                ))
                // Make just-written samples visible to queries at once.
                .arg("-search.latencyOffset=0s")
                .arg("-search.disableCache")
                .stdout(Stdio::null())
                .stderr(log),
        ));
        wait_for_tcp(([127, 0, 0, 1], self.port).into(), START_DEADLINE);
    }

    /// Its remote-write URL.
    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Every stored sample of the series matching `selector`, as (labels JSON, timestamps),
    /// read through `/api/v1/export` (raw samples, no query-time lookback or dedup).
    pub fn export(&self, selector: &str) -> Vec<(serde_json::Value, Vec<i64>)> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/export?match[]={}",
            self.port,
            url_encode(selector)
        );
        let (status, body) =
            crate::http::get(&url).unwrap_or_else(|e| panic!("export {selector}: {e}"));
        assert_eq!(status, 200, "export {selector}: {body}");
        body.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).expect("export line");
                let timestamps = json["timestamps"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
                    .unwrap_or_default();
                (json["metric"].clone(), timestamps)
            })
            .collect()
    }

    /// Tells it to make everything received so far searchable.
    pub fn flush(&self) {
        let _ = crate::http::get(&format!(
            "http://127.0.0.1:{}/internal/force_flush",
            self.port
        ));
    }
}
