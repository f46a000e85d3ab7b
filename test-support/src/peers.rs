//! Real peers from Debian's packages, started on loopback for one test and stopped when
//! dropped: nginx serving files (a scrape target) and Prometheus (a remote-write
//! receiver, or an agent to compare with). A missing binary fails the test with the
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
        let config = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
                   fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
                   server {{\n    listen 127.0.0.1:{port};\n    root {};\n\
                     location / {{ default_type \"text/plain; version=0.0.4\"; }}\n  }}\n}}\n",
                root.display()
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
        wait_for_tcp(([127, 0, 0, 1], port).into(), START_DEADLINE);
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
