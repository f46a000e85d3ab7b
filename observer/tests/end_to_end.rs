//! The observer's main job end to end, every part a real process: `observer serve`
//! (SQLite), the `observer` CLI, two `cluster-agent`s joining with their tokens, nginx
//! as the scrape target and Prometheus as the receiver.
//!
//! Two clusters are added with the CLI; their agents join; a pipeline selecting both
//! delivers samples from both; changing its relabel rules reaches both agents, which
//! report APPLIED for the new hash, and the data changes; an invalid pipeline is
//! refused with 422 and every field path while the agents' configurations stay as they
//! were; with the observer stopped the agents keep shipping; restarted, it sees them
//! reconnect, and no scrape was lost meanwhile.
//!
//! Needs `prometheus` and `nginx-light`, and the `cluster-agent` binary, which
//! `cargo nextest run --workspace` builds (scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port, run};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
const DEADLINE: Duration = Duration::from_secs(60);

/// The `cluster-agent` binary beside this test's binary (target/<profile>/).
fn cluster_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let binary = profile_dir.join("cluster-agent");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p kaas-cluster-agent` (scripts/test.sh builds the workspace)",
        binary.display()
    );
    binary
}

struct Observer {
    api_port: u16,
    grpc_port: u16,
    data_dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl Observer {
    fn start(data_dir: &Path) -> Self {
        let mut observer = Self {
            api_port: free_port(),
            grpc_port: free_port(),
            data_dir: data_dir.to_owned(),
            guard: None,
        };
        observer.resume();
        observer
    }

    fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("observer.log"))
            .expect("observer log");
        self.guard = Some(ChildGuard::spawn(
            "observer",
            Command::new(OBSERVER)
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{}", self.api_port))
                .arg("--grpc-listen-address")
                .arg(format!("127.0.0.1:{}", self.grpc_port))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log),
        ));
        let until = Instant::now() + DEADLINE;
        while http::get(&format!("http://127.0.0.1:{}/readyz", self.api_port)).map(|(s, _)| s)
            != Ok(200)
        {
            assert!(
                Instant::now() < until,
                "observer not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.terminate(Duration::from_secs(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("observer.log")).unwrap_or_default()
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("bootstrap admin token")
            .trim()
            .to_owned()
    }

    /// Runs the CLI against this observer with `token`; panics unless it exits 0.
    fn cli(&self, token: &str, args: &[&str]) -> String {
        let output = self.cli_status(token, args);
        assert_eq!(
            output.code(),
            0,
            "observer {args:?} failed:\n{}\n{}",
            output.stdout,
            output.stderr
        );
        output.stdout
    }

    fn cli_status(&self, token: &str, args: &[&str]) -> kaas_test_support::process::CommandOutput {
        let server = format!("http://127.0.0.1:{}", self.api_port);
        let mut all = vec!["--server", server.as_str(), "--token", token];
        all.extend_from_slice(args);
        run(OBSERVER, &all, "")
    }

    fn cli_json(&self, token: &str, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.cli(token, &all)).expect("CLI JSON")
    }
}

struct Agent {
    _guard: ChildGuard,
    log: PathBuf,
}

impl Agent {
    fn join(observer: &Observer, dir: &Path, token: &str) -> Self {
        std::fs::create_dir_all(dir).expect("agent dir");
        let token_file = dir.join("join-token");
        std::fs::write(&token_file, token).expect("token file");
        let log = dir.join("agent.log");
        let guard = ChildGuard::spawn(
            "cluster-agent",
            Command::new(cluster_agent_binary())
                .arg("run")
                .arg("--observer")
                .arg(format!("https://127.0.0.1:{}", observer.grpc_port))
                .arg("--observer-ca-file")
                .arg(observer.data_dir.join("ca.crt"))
                .arg("--join-token-file")
                .arg(&token_file)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg("--otlp-grpc-listen-address")
                .arg("127.0.0.1:0")
                .arg("--kubernetes")
                .arg("off")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("agent log")),
        );
        Self { _guard: guard, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn pipeline(target: &str, receiver: &str, revision: &str) -> String {
    format!(
        r#"apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: fleet
spec:
  input:
    scrapeInterval: 1s
    scrapeTimeout: 1s
    static:
      targets:
        - addresses: ["{target}"]
          labels: {{job: app}}
  processors:
    metricRelabelConfigs:
      - targetLabel: revision
        replacement: "{revision}"
  output:
    prometheusRemoteWrite:
      url: {receiver}
  clusterSelector:
    matchLabels: {{env: prod}}
"#
    )
}

/// Clusters (by name) for which `expr` returns a series, as `cluster` label values.
fn clusters_with(prometheus: &Prometheus, expr: &str) -> Vec<String> {
    let mut clusters: Vec<String> = prometheus
        .query(expr)
        .iter()
        .filter_map(|r| r["metric"]["cluster"].as_str().map(str::to_owned))
        .collect();
    clusters.sort();
    clusters.dedup();
    clusters
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < until, "{what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn applied_hash(observer: &Observer, token: &str, cluster: &str) -> Option<String> {
    observer.cli_json(token, &["cluster", "get", cluster])["appliedConfigHash"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn two_clusters_join_receive_pipelines_and_ride_out_an_observer_outage() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["observer", "nginx", "prometheus"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut observer = Observer::start(&dir.path().join("observer"));
    let admin = observer.admin_token();
    let nginx = Nginx::start(&dir.path().join("nginx"));
    nginx.serve("metrics", "app_requests_total{code=\"200\"} 7\napp_up 1\n");
    let prometheus = Prometheus::receiver(&dir.path().join("prometheus"));

    // Onboard two clusters with the CLI; a tenant token does the tenant's work.
    observer.cli(&admin, &["tenant", "create", "shop"]);
    let tenant = observer.cli_json(
        &admin,
        &["token", "create", "--name", "ci", "--tenant", "shop"],
    )["token"]
        .as_str()
        .expect("tenant token")
        .to_owned();
    let mut agents = Vec::new();
    for cluster in ["c1", "c2"] {
        let created = observer.cli_json(
            &admin,
            &[
                "cluster", "add", cluster, "--tenant", "shop", "--label", "env=prod",
            ],
        );
        let token = created["joinToken"].as_str().expect("join token");
        agents.push(Agent::join(&observer, &dir.path().join(cluster), token));
    }
    let observer_log = observer.data_dir.join("observer.log");
    let logs = || {
        format!(
            "observer:\n{}\nagents:\n{}",
            std::fs::read_to_string(&observer_log).unwrap_or_default(),
            agents
                .iter()
                .map(Agent::log)
                .collect::<Vec<_>>()
                .join("\n---\n")
        )
    };

    // A pipeline selecting both clusters: samples from both arrive.
    let file = dir.path().join("fleet.yaml");
    std::fs::write(
        &file,
        pipeline(&nginx.address(), &prometheus.write_url(), "1"),
    )
    .unwrap();
    observer.cli(
        &tenant,
        &["pipeline", "apply", "-f", file.to_str().unwrap()],
    );
    wait_until(
        "samples from both clusters with revision 1",
        || clusters_with(&prometheus, "app_up{revision=\"1\"}") == ["c1", "c2"],
        logs,
    );
    let applied_everywhere = |generation: i64| {
        wait_until(
            &format!("ConfigurationApplied=True at generation {generation}"),
            || {
                let status = observer.cli_json(&tenant, &["pipeline", "get", "fleet"]);
                status["status"]["conditions"]
                    .as_array()
                    .is_some_and(|conditions| {
                        conditions.iter().any(|c| {
                            c["type"] == "ConfigurationApplied"
                                && c["status"] == "True"
                                && c["observedGeneration"] == generation
                        })
                    })
            },
            || {
                format!(
                    "{:#}",
                    observer.cli_json(&tenant, &["pipeline", "get", "fleet"])
                )
            },
        );
        ["c1", "c2"].map(|c| applied_hash(&observer, &admin, c).expect("an applied hash"))
    };
    let first = applied_everywhere(1);

    // Changing the relabel rules reaches both agents; both report APPLIED with a new
    // hash, and the data changes.
    std::fs::write(
        &file,
        pipeline(&nginx.address(), &prometheus.write_url(), "2"),
    )
    .unwrap();
    observer.cli(
        &tenant,
        &["pipeline", "apply", "-f", file.to_str().unwrap()],
    );
    let second = applied_everywhere(2);
    assert!(
        second[0] != first[0] && second[1] != first[1],
        "{first:?} {second:?}"
    );
    wait_until(
        "samples from both clusters with revision 2",
        || clusters_with(&prometheus, "app_up{revision=\"2\"}") == ["c1", "c2"],
        logs,
    );

    // An invalid pipeline is refused with 422 and every field path; nothing changes.
    let bad = pipeline("not a target", "not a url", "3");
    let (code, body) = http::post(
        &format!("http://127.0.0.1:{}/api/v1/pipelines", observer.api_port),
        &[
            ("Authorization", &format!("Bearer {tenant}")),
            ("Content-Type", "application/yaml"),
        ],
        bad.as_bytes(),
    )
    .expect("POST pipeline");
    assert_eq!(code, 422, "{body}");
    for path in [
        "spec.output.prometheusRemoteWrite.url",
        "spec.input.static.targets[0].addresses[0]",
    ] {
        assert!(body.contains(path), "422 names {path}: {body}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applied_hash(&observer, &admin, "c1").as_ref(),
        Some(&second[0])
    );
    assert_eq!(
        applied_hash(&observer, &admin, "c2").as_ref(),
        Some(&second[1])
    );

    // The observer goes away: both agents keep shipping on their configuration.
    observer.stop();
    let outage_started = Instant::now();
    let count = |cluster: &str| -> f64 {
        prometheus
            .query(&format!(
                "count_over_time(app_up{{cluster=\"{cluster}\",revision=\"2\"}}[10m])"
            ))
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = (count("c1"), count("c2"));
    std::thread::sleep(Duration::from_secs(5));
    let during = (count("c1"), count("c2"));
    assert!(
        during.0 >= before.0 + 3.0 && during.1 >= before.1 + 3.0,
        "agents keep shipping while the observer is down: {before:?} -> {during:?}\n{}",
        logs()
    );

    // It returns: the agents reconnect, and no scrape was lost in between.
    observer.resume();
    wait_until(
        "both agents reconnected",
        || {
            let clusters = observer.cli_json(&admin, &["cluster", "list"]);
            clusters["items"]
                .as_array()
                .is_some_and(|list| list.iter().filter(|c| c["connected"] == true).count() == 2)
        },
        logs,
    );
    let outage = outage_started.elapsed().as_secs_f64();
    let after = (count("c1"), count("c2"));
    // One sample per second per cluster: the outage window is fully covered (the
    // margin allows for scrape alignment at the window's edges).
    for (before, after) in [(before.0, after.0), (before.1, after.1)] {
        assert!(
            after - before >= outage - 3.0,
            "{} samples in a {outage:.0} s outage window",
            after - before
        );
    }
}
