//! The observer's main job end to end, every part a real process: `observer serve`, the
//! `observer` CLI, two `cluster-agent`s joining with their tokens, nginx as the scrape
//! target and Prometheus as the receiver. One scenario, run on two deployments:
//!
//! * **SQLite**: one observer replica with its embedded database.
//! * **PostgreSQL**: two replicas, A and B, on one fresh database (`kaas_e2e_<random>`
//!   on `KAAS_TEST_POSTGRES_URL`'s server, default 127.0.0.1:5432 with trust auth,
//!   dropped at the end even when the test fails), sharing A's CA, secrets key and
//!   admin token. Agent c1 lists A first, c2 lists B first. An unreachable server fails
//!   the test with the reason, unless `KAAS_SKIP_POSTGRES=1`.
//!
//! The scenario: two clusters are added with the CLI; their agents join; a pipeline
//! selecting both delivers samples from both; changing its relabel rules through
//! replica A reaches both agents (c2's through replica B: the time it took is printed),
//! which report APPLIED for the new hash, and the data changes; an invalid pipeline is
//! refused with 422 and every field path while the agents' configurations stay as they
//! were; `/metrics` of every replica shows the pipeline's generation and conditions and
//! each agent's connection. Then replica A goes away: on SQLite it stops and the agents
//! keep shipping until it returns and they reconnect; on PostgreSQL it is killed
//! (SIGKILL), c1 moves to B, and A is restarted. Either way no scrape is lost.
//!
//! A third scenario runs black-box probes on two PostgreSQL replicas: probe endpoints
//! configured through the API and clusters' API endpoints, all on a loopback HTTP
//! server. The replicas heartbeat into the `replicas` table and split the targets: the
//! union of both replicas' `probe_success` series on `/metrics` is every target and
//! none is on both; Prometheus, receiving both replicas' remote-write, has each target
//! once. Then one replica is killed (SIGKILL, its heartbeat row stays): the survivor
//! probes every target within a bounded time (three heartbeats of liveness window, one
//! heartbeat, one probe interval; the time taken is printed).
//!
//! Finally no secret leaks: the pipeline carries an inline bearer token (a random
//! string; Prometheus ignores it), and that string must appear in no API response or
//! CLI output the test received, no observer or agent log, and not in the database
//! (the SQLite files, or every row of every PostgreSQL table).
//!
//! Needs `prometheus` and `nginx-light`, and the `cluster-agent` binary, which
//! `cargo nextest run --workspace` builds (scripts/test.sh).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::{Nginx, Prometheus};
use kaas_test_support::process::{ChildGuard, free_port, run};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
const DEADLINE: Duration = Duration::from_secs(60);
/// The PostgreSQL server used unless `KAAS_TEST_POSTGRES_URL` says otherwise; the same
/// as the store tests' (CI runs it with trust auth and a database `test`).
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The tenant the scenario works in.
const TENANT: &str = "shop";

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

/// Runs `future` to completion on a runtime of its own (the test itself is sync).
fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// A log as written to a file, checked to carry no terminal colour codes (the
/// services colour their logs only on a terminal).
fn plain(text: &str) -> String {
    assert!(
        !text.contains('\u{1b}'),
        "a log written to a file carries terminal escape codes:\n{text}"
    );
    text.to_owned()
}

/// Every API response body and CLI output the test received, searched for secrets at
/// the end.
type Transcript = Rc<RefCell<Vec<String>>>;

/// One `observer serve` replica.
struct Observer {
    name: &'static str,
    api_port: u16,
    /// `/metrics` (its own listener, not the API's).
    metrics_port: u16,
    grpc_port: u16,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    guard: Option<ChildGuard>,
    transcript: Transcript,
}

impl Observer {
    fn start(
        name: &'static str,
        data_dir: &Path,
        extra_args: Vec<String>,
        transcript: &Transcript,
    ) -> Self {
        std::fs::create_dir_all(data_dir).expect("observer data dir");
        let mut observer = Self {
            name,
            api_port: free_port(),
            metrics_port: free_port(),
            grpc_port: free_port(),
            data_dir: data_dir.to_owned(),
            extra_args,
            guard: None,
            transcript: transcript.clone(),
        };
        observer.resume();
        observer
    }

    fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("observer log");
        self.guard = Some(ChildGuard::spawn(
            "observer",
            Command::new(OBSERVER)
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{}", self.api_port))
                .arg("--metrics-listen-address")
                .arg(format!("127.0.0.1:{}", self.metrics_port))
                .arg("--grpc-listen-address")
                .arg(format!("127.0.0.1:{}", self.grpc_port))
                // Every peer of these tests listens on loopback, which the shipped
                // egress policy refuses for tenants' probes and API endpoints.
                .arg("--egress-allow-cidr")
                .arg("127.0.0.0/8")
                .args(&self.extra_args)
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
                "observer {} not ready:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the replica gracefully (SIGTERM).
    fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.terminate(Duration::from_secs(10));
        }
    }

    /// Kills the replica without warning (SIGKILL): no stream is closed, nothing is
    /// released in the database.
    fn kill(&mut self) {
        // Dropping the guard kills the process and reaps it.
        drop(self.guard.take());
    }

    fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("observer.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("bootstrap admin token")
            .trim()
            .to_owned()
    }

    fn record(&self, text: &str) {
        self.transcript.borrow_mut().push(text.to_owned());
    }

    /// Runs the CLI against this replica with `token`; panics unless it exits 0.
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
        let output = run(OBSERVER, &all, "");
        self.record(&output.stdout);
        self.record(&output.stderr);
        output
    }

    fn cli_json(&self, token: &str, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.cli(token, &all)).expect("CLI JSON")
    }

    /// `GET <path>` of the REST API with `token`; the body, which must be a 200.
    fn api_get(&self, token: &str, path: &str) -> String {
        let (code, body) = http::get_with(
            &format!("http://127.0.0.1:{}{path}", self.api_port),
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .unwrap_or_else(|e| panic!("GET {path} on replica {}: {e}", self.name));
        self.record(&body);
        assert_eq!(code, 200, "GET {path} on replica {}: {body}", self.name);
        body
    }

    /// The replica's `/metrics`.
    fn metrics(&self) -> String {
        let (code, body) = http::get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .unwrap_or_else(|e| panic!("GET /metrics on replica {}: {e}", self.name));
        self.record(&body);
        assert_eq!(code, 200, "{body}");
        body
    }

    /// `POST <path>` of the REST API with `token` and a JSON body, which must succeed.
    fn api_post(&self, token: &str, path: &str, body: &serde_json::Value) {
        let auth = format!("Bearer {token}");
        let (code, text) = http::post(
            &format!("http://127.0.0.1:{}{path}", self.api_port),
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST {path} on replica {}: {e}", self.name));
        self.record(&text);
        assert!(
            (200..300).contains(&code),
            "POST {path} on replica {}: {code} {text}",
            self.name
        );
    }

    /// The `target` of every `probe_success` series on this replica's `/metrics`.
    fn probed_targets(&self) -> Vec<String> {
        self.metrics()
            .lines()
            .filter(|line| line.starts_with("probe_success{"))
            .filter_map(|line| {
                let start = line.find("target=\"")? + "target=\"".len();
                let end = start + line[start..].find('"')?;
                Some(line[start..end].to_owned())
            })
            .collect()
    }

    /// Agent streams open on this replica, from its `/metrics`.
    fn agent_streams(&self) -> u64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix("kaas_observer_agent_streams "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The clusters this replica lists as connected, by name.
    fn connected_clusters(&self, token: &str) -> Vec<String> {
        let clusters = self.cli_json(token, &["cluster", "list"]);
        let mut names: Vec<String> = clusters["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["connected"] == true)
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

struct Agent {
    _guard: ChildGuard,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent that joins with `token`, trying `endpoints` in the order given.
    fn join(endpoints: &[String], ca_file: &Path, dir: &Path, token: &str) -> Self {
        std::fs::create_dir_all(dir).expect("agent dir");
        let token_file = dir.join("join-token");
        std::fs::write(&token_file, token).expect("token file");
        let log = dir.join("agent.log");
        let data_dir = dir.join("data");
        let mut command = Command::new(cluster_agent_binary());
        command.arg("run");
        for endpoint in endpoints {
            command.arg("--observer").arg(endpoint);
        }
        let guard = ChildGuard::spawn(
            "cluster-agent",
            command
                // Listed, not random: the scenario decides which replica each agent
                // starts on.
                .arg("--observer-order")
                .arg("listed")
                .arg("--observer-ca-file")
                .arg(ca_file)
                .arg("--join-token-file")
                .arg(&token_file)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg("--otlp-grpc-listen-address")
                .arg("127.0.0.1:0")
                .arg("--otlp-http-listen-address")
                .arg("127.0.0.1:0")
                .arg("--zipkin-listen-address")
                .arg("127.0.0.1:0")
                .arg("--kubernetes")
                .arg("off")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("agent log")),
        );
        Self {
            _guard: guard,
            data_dir,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A fresh PostgreSQL database for one test, dropped when this value is (also when the
/// test panics).
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// `None` when `KAAS_SKIP_POSTGRES=1`; panics with the reason when the server
    /// cannot be reached.
    fn create() -> Option<Self> {
        if std::env::var("KAAS_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("KAAS_SKIP_POSTGRES=1: skipping the PostgreSQL end-to-end scenario");
            return None;
        }
        let admin_url = std::env::var("KAAS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("kaas_e2e_{:016x}", fastrand::u64(..));
        block_on(async {
            connect(&admin_url)
                .await
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        });
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("KAAS_TEST_POSTGRES_URL ends with /<database>");
        Some(Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }

    /// Every row of every table as JSON, one per line: what a dump of the database
    /// would show.
    fn dump(&self) -> String {
        block_on(async {
            let db = connect(&self.url).await;
            let query = |sql: String| {
                let db = &db;
                async move {
                    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
                        .await
                        .expect("dump query")
                }
            };
            let tables: Vec<String> = query(
                "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = 'public' \
                 ORDER BY 1"
                    .to_owned(),
            )
            .await
            .iter()
            .map(|row| row.try_get::<String>("", "name").expect("table name"))
            .collect();
            assert!(
                tables.iter().any(|t| t == "pipelines"),
                "no pipelines table: {tables:?}"
            );
            let mut dump = String::new();
            for table in tables {
                dump += &format!("-- {table}\n");
                for row in query(format!(
                    "SELECT row_to_json(t)::text AS row FROM \"{table}\" t"
                ))
                .await
                {
                    dump += &row.try_get::<String>("", "row").expect("row as JSON");
                    dump.push('\n');
                }
            }
            dump
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin_url = self.admin_url.clone();
        // Drop may run while a panic unwinds; a thread keeps a second panic from
        // aborting the process.
        let dropped = std::thread::spawn(move || {
            block_on(async { connect(&admin_url).await.execute_unprepared(&sql).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("cannot drop the test database {}", self.name);
        }
    }
}

async fn connect(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}\nThe HA end-to-end scenario needs it \
             (CI runs it on 127.0.0.1:5432 with trust auth); set KAAS_TEST_POSTGRES_URL to \
             use another server, or KAAS_SKIP_POSTGRES=1 to skip the scenario."
        )
    })
}

/// Where the observer keeps its data in a scenario.
enum Deployment<'a> {
    /// One replica with its embedded SQLite database.
    Sqlite,
    /// Two replicas sharing this PostgreSQL database.
    Postgres(&'a TestDatabase),
}

impl Deployment<'_> {
    fn replicas(&self) -> usize {
        match self {
            Self::Sqlite => 1,
            Self::Postgres(_) => 2,
        }
    }

    fn database_args(&self) -> Vec<String> {
        match self {
            Self::Sqlite => Vec::new(),
            Self::Postgres(database) => vec!["--database-url".into(), database.url.clone()],
        }
    }

    /// What someone with a copy of the database would see.
    fn database_contents(&self, first_replica_dir: &Path) -> String {
        match self {
            Self::Sqlite => {
                // The database file, its write-ahead log (recent writes live there until
                // a checkpoint) and the shared-memory index.
                let mut contents = String::new();
                let mut files = 0;
                for entry in std::fs::read_dir(first_replica_dir).expect("data dir") {
                    let path = entry.expect("dir entry").path();
                    let is_database = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("observer.db"));
                    if is_database {
                        files += 1;
                        contents += &String::from_utf8_lossy(&std::fs::read(&path).expect("db"));
                    }
                }
                assert!(files >= 1, "no SQLite files in {first_replica_dir:?}");
                contents
            }
            Self::Postgres(database) => database.dump(),
        }
    }
}

fn pipeline(target: &str, receiver: &str, revision: &str, bearer_token: &str) -> String {
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
      authentication:
        bearerToken: {{value: "{bearer_token}"}}
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
    observer.cli_json(token, &["cluster", "get", cluster, "--tenant", TENANT])["appliedConfigHash"]
        .as_str()
        .map(str::to_owned)
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Configurations `observer` has sent to `cluster`'s agent so far, from its log.
fn pushes_to(observer: &Observer, cluster: &str) -> usize {
    let field = format!("cluster={cluster} ");
    plain(&observer.log())
        .lines()
        .filter(|line| line.contains("sending configuration") && line.contains(&field))
        .count()
}

#[test]
fn two_clusters_join_receive_pipelines_and_ride_out_an_observer_outage() {
    scenario(&Deployment::Sqlite);
}

#[test]
fn two_replicas_on_postgresql_serve_the_fleet_and_take_over_when_one_is_killed() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    scenario(&Deployment::Postgres(&database));
    // `database` is dropped here, after every process of the scenario has been.
}

fn scenario(deployment: &Deployment<'_>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    for sub in ["nginx", "prometheus"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("peer directory");
    }
    let transcript = Transcript::default();
    // Distinctive and random: if it shows up anywhere, it came from this run's pipeline.
    let bearer_token = format!(
        "kaas-e2e-bearer-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    );

    // Replica A; with PostgreSQL also replica B, sharing A's CA, key and admin token.
    let first_dir = dir.path().join("observer-a");
    let mut replicas = vec![Observer::start(
        "A",
        &first_dir,
        deployment.database_args(),
        &transcript,
    )];
    if deployment.replicas() == 2 {
        let mut args = deployment.database_args();
        for (flag, path) in [
            ("--ca-dir", first_dir.clone()),
            ("--secrets-key-file", first_dir.join("secrets.key")),
            ("--admin-token-file", first_dir.join("admin.token")),
        ] {
            args.push(flag.to_owned());
            args.push(path.display().to_string());
        }
        replicas.push(Observer::start(
            "B",
            &dir.path().join("observer-b"),
            args,
            &transcript,
        ));
    }
    let admin = replicas[0].admin_token();
    let nginx = Nginx::start(&dir.path().join("nginx"));
    nginx.serve("metrics", "app_requests_total{code=\"200\"} 7\napp_up 1\n");
    let prometheus = Prometheus::receiver(&dir.path().join("prometheus"));

    // Onboard two clusters with the CLI through A; a tenant token does the tenant's
    // work. c1 lists A first, c2 lists the last replica (B) first.
    replicas[0].cli(&admin, &["tenant", "create", TENANT]);
    let tenant = replicas[0].cli_json(
        &admin,
        &["token", "create", "--name", "ci", "--tenant", TENANT],
    )["token"]
        .as_str()
        .expect("tenant token")
        .to_owned();
    let endpoints: Vec<String> = replicas.iter().map(Observer::grpc_url).collect();
    let reversed: Vec<String> = endpoints.iter().rev().cloned().collect();
    let mut agents = Vec::new();
    for (cluster, endpoints) in [("c1", &endpoints), ("c2", &reversed)] {
        let created = replicas[0].cli_json(
            &admin,
            &[
                "cluster", "add", cluster, "--tenant", TENANT, "--label", "env=prod",
            ],
        );
        let token = created["joinToken"].as_str().expect("join token");
        agents.push(Agent::join(
            endpoints,
            &first_dir.join("ca.crt"),
            &dir.path().join(cluster),
            token,
        ));
    }
    let log_files: Vec<PathBuf> = replicas
        .iter()
        .map(Observer::log_path)
        .chain(agents.iter().map(|a| a.log.clone()))
        .collect();
    let logs = || {
        log_files
            .iter()
            .map(|path| {
                format!(
                    "==> {} <==\n{}",
                    path.display(),
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // A pipeline selecting both clusters: samples from both arrive.
    let file = dir.path().join("fleet.yaml");
    let file_arg = file.to_str().expect("a UTF-8 temporary path");
    let target = nginx.address();
    let receiver = prometheus.write_url();
    std::fs::write(&file, pipeline(&target, &receiver, "1", &bearer_token)).expect("pipeline file");
    replicas[0].cli(&tenant, &["pipeline", "apply", "-f", file_arg]);
    wait_until(
        "samples from both clusters with revision 1",
        || clusters_with(&prometheus, "app_up{revision=\"1\"}") == ["shop.c1", "shop.c2"],
        logs,
    );
    // Each agent is on the replica it lists first.
    let expected_streams: Vec<u64> = if replicas.len() == 2 {
        vec![1, 1]
    } else {
        vec![2]
    };
    wait_until(
        "each agent connected to its first replica",
        || {
            replicas
                .iter()
                .map(Observer::agent_streams)
                .collect::<Vec<_>>()
                == expected_streams
        },
        logs,
    );
    let applied_everywhere = |generation: i64| {
        let observer = &replicas[0];
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
        ["c1", "c2"].map(|c| applied_hash(observer, &admin, c).expect("an applied hash"))
    };
    let first = applied_everywhere(1);

    // Changing the relabel rules through A reaches both agents, c2's through the last
    // replica; both report APPLIED with a new hash, and the data changes.
    let c2_replica = replicas.last().expect("a replica");
    let pushed_before = pushes_to(c2_replica, "shop.c2");
    std::fs::write(&file, pipeline(&target, &receiver, "2", &bearer_token)).expect("pipeline file");
    let changed_at = Instant::now();
    replicas[0].cli(&tenant, &["pipeline", "apply", "-f", file_arg]);
    wait_until(
        &format!("replica {} sends c2 the changed pipeline", c2_replica.name),
        || pushes_to(c2_replica, "shop.c2") > pushed_before,
        logs,
    );
    // Informational only: timings depend on the machine.
    eprintln!(
        "a pipeline change through replica A reached c2's stream on replica {} after {:?}",
        c2_replica.name,
        changed_at.elapsed()
    );
    let second = applied_everywhere(2);
    eprintln!(
        "both agents reported it APPLIED after {:?} (including their health window)",
        changed_at.elapsed()
    );
    assert!(
        second[0] != first[0] && second[1] != first[1],
        "{first:?} {second:?}"
    );
    wait_until(
        "samples from both clusters with revision 2",
        || clusters_with(&prometheus, "app_up{revision=\"2\"}") == ["shop.c1", "shop.c2"],
        logs,
    );

    // An invalid pipeline is refused with 422 and every field path; nothing changes.
    let bad = pipeline("not a target", "not a url", "3", &bearer_token);
    let (code, body) = http::post(
        &format!("http://127.0.0.1:{}/api/v1/pipelines", replicas[0].api_port),
        &[
            ("Authorization", &format!("Bearer {tenant}")),
            ("Content-Type", "application/yaml"),
        ],
        bad.as_bytes(),
    )
    .expect("POST pipeline");
    transcript.borrow_mut().push(body.clone());
    assert_eq!(code, 422, "{body}");
    for path in [
        "spec.output.prometheusRemoteWrite.url",
        "spec.input.static.targets[0].addresses[0]",
    ] {
        assert!(body.contains(path), "422 names {path}: {body}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        applied_hash(&replicas[0], &admin, "c1").as_ref(),
        Some(&second[0])
    );
    assert_eq!(
        applied_hash(&replicas[0], &admin, "c2").as_ref(),
        Some(&second[1])
    );

    // Every replica's /metrics shows the pipeline's generation and conditions and
    // each agent's connection (refreshed every lifecycle tick).
    let fleet_series = [
        r#"kaas_pipeline_info{tenant="shop",pipeline="fleet",generation="2"} 1"#,
        r#"kaas_pipeline_condition{tenant="shop",pipeline="fleet",type="ConfigurationApplied",status="True",reason="Applied"} 1"#,
        r#"kaas_pipeline_condition{tenant="shop",pipeline="fleet",type="AgentConnected",status="True",reason="Connected"} 1"#,
        r#"kaas_cluster_agent_connected{cluster="shop.c1",tenant="shop"} 1"#,
        r#"kaas_cluster_agent_connected{cluster="shop.c2",tenant="shop"} 1"#,
    ];
    for replica in &replicas {
        wait_until(
            &format!("the fleet series on /metrics of replica {}", replica.name),
            || {
                let metrics = replica.metrics();
                fleet_series
                    .iter()
                    .all(|series| metrics.lines().any(|line| line == *series))
            },
            || replica.metrics(),
        );
        let metrics = replica.metrics();
        let pipeline_series = |name: &str| {
            metrics
                .lines()
                .filter(|line| line.starts_with(name))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pipeline_series("kaas_pipeline_info{"),
            [fleet_series[0]],
            "one info series per pipeline, at its current generation"
        );
        let conditions = pipeline_series("kaas_pipeline_condition{");
        for condition in ["ConfigurationApplied", "AgentConnected", "FlowHealthy"] {
            assert_eq!(
                conditions
                    .iter()
                    .filter(|line| line.contains(&format!(r#"type="{condition}""#)))
                    .count(),
                1,
                "one series per condition type: {conditions:#?}"
            );
        }
    }

    // The pipeline as every reader of the API sees it: JSON from the REST API, JSON,
    // YAML and tables from the CLI. The token shows as "***".
    for replica in &replicas {
        for path in [
            "/api/v1/pipelines",
            "/api/v1/pipelines/fleet",
            "/api/v1/pipelines/fleet/status",
        ] {
            replica.api_get(&tenant, path);
            replica.api_get(&admin, &format!("{path}?tenant={TENANT}"));
        }
        for format in ["json", "yaml", "table"] {
            let get = replica.cli(&tenant, &["pipeline", "get", "fleet", "-o", format]);
            if format != "table" {
                assert!(
                    get.contains("bearerToken") && get.contains("***"),
                    "the token is shown masked: {get}"
                );
            }
            replica.cli(&tenant, &["pipeline", "list", "-o", format]);
        }
    }

    // Replica A goes away. Data never flows through the observer, so the agents keep
    // shipping; no scrape may be lost.
    let count = |cluster: &str| -> f64 {
        prometheus
            .query(&format!(
                "count_over_time(app_up{{cluster=\"{cluster}\",revision=\"2\"}}[10m])"
            ))
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = (count("shop.c1"), count("shop.c2"));
    let outage_started = Instant::now();
    match deployment {
        Deployment::Sqlite => {
            // The only replica stops: both agents keep shipping on their configuration.
            replicas[0].stop();
            std::thread::sleep(Duration::from_secs(5));
            let during = (count("shop.c1"), count("shop.c2"));
            assert!(
                during.0 >= before.0 + 3.0 && during.1 >= before.1 + 3.0,
                "agents keep shipping while the observer is down: {before:?} -> {during:?}\n{}",
                logs()
            );
            // It returns: the agents reconnect.
            replicas[0].resume();
            wait_until(
                "both agents reconnected",
                || replicas[0].connected_clusters(&admin) == ["c1", "c2"],
                logs,
            );
        }
        Deployment::Postgres(_) => {
            // A dies without a word; c1 moves to B, which then holds both streams and
            // lists both clusters connected.
            replicas[0].kill();
            wait_until(
                "c1 reconnected to replica B",
                || {
                    replicas[1].agent_streams() == 2
                        && replicas[1].connected_clusters(&admin) == ["c1", "c2"]
                },
                logs,
            );
            eprintln!(
                "c1 moved from the killed replica A to B within {:?}",
                outage_started.elapsed()
            );
            std::thread::sleep(Duration::from_secs(5));
            // A is restarted and sees the fleet as B left it.
            replicas[0].resume();
            assert_eq!(replicas[0].connected_clusters(&admin), ["c1", "c2"]);
        }
    }
    let outage = outage_started.elapsed().as_secs_f64();
    let after = (count("shop.c1"), count("shop.c2"));
    // One sample per second per cluster: the outage window is fully covered (the
    // margin allows for scrape alignment at the window's edges).
    for (before, after) in [(before.0, after.0), (before.1, after.1)] {
        assert!(
            after - before >= outage - 3.0,
            "{} samples in a {outage:.0} s outage window\n{}",
            after - before,
            logs()
        );
    }

    // No secret leaks. The token was sent to the agents (it must be, to authenticate
    // their remote-write) and each keeps it in exactly one file: its last-known-good
    // configuration, the rendered config it falls back to after a restart, which is
    // readable by the agent's user only (0600). Everywhere else it must be absent.
    for agent in &agents {
        let path = agent.data_dir.join("last-known-good.config");
        assert_eq!(
            files_containing(&agent.data_dir, &bearer_token),
            std::slice::from_ref(&path),
            "the agent runs the pipeline with its token, kept only in its last-known-good \
             configuration (not in its buffers or identity)"
        );
        let mode = std::fs::metadata(&path).expect("mode").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path:?} has mode {mode:o}");
    }
    for replica in &replicas {
        // Database files, CA, keys, admin token and log alike.
        assert_eq!(
            files_containing(&replica.data_dir, &bearer_token),
            Vec::<PathBuf>::new(),
            "files of replica {} hold the token",
            replica.name
        );
    }
    let database = deployment.database_contents(&first_dir);
    assert!(
        database.contains(kaas_observer::secrets::SEALED_PREFIX),
        "the dump holds the sealed token, so it covers the pipelines"
    );
    let mut places: Vec<(String, String)> = transcript
        .borrow()
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("API response or CLI output #{i}"), text.clone()))
        .collect();
    assert!(
        places.len() > 40,
        "the transcript has {} entries",
        places.len()
    );
    for replica in &replicas {
        places.push((
            format!("the log of replica {}", replica.name),
            replica.log(),
        ));
    }
    for (agent, cluster) in agents.iter().zip(["c1", "c2"]) {
        places.push((format!("the log of agent {cluster}"), agent.log()));
    }
    places.push(("the database".to_owned(), database));
    for (place, text) in &places {
        let leak = text.lines().find(|line| line.contains(&bearer_token));
        assert!(
            leak.is_none(),
            "the pipeline's bearer token leaked into {place}: {}",
            leak.unwrap_or_default()
        );
    }
}

// ---- black-box probes across replicas ----

/// How long the surviving replica may take to own a killed replica's probe targets:
/// the liveness window (3 × 5 s heartbeats), one more heartbeat, one probe interval,
/// and slack for a loaded machine.
const PROBE_TAKEOVER_DEADLINE: Duration = Duration::from_secs(60);
/// Probe endpoints configured through the API in the probe scenario.
const PROBE_ENDPOINTS: usize = 10;
/// Clusters whose API endpoint is probed (`/livez`) in the probe scenario.
const PROBED_CLUSTERS: usize = 4;

/// A loopback HTTP server answering every request with 200, on a thread of its own.
fn http_ok_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

#[test]
fn two_replicas_split_the_probe_targets_and_the_survivor_takes_all_after_a_kill() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let transcript = Transcript::default();
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).expect("a Prometheus directory");
    let prometheus = Prometheus::receiver(&prometheus_dir);
    let web = http_ok_server();

    let first_dir = dir.path().join("observer-a");
    let common = |replica: &str| {
        [
            "--database-url",
            &database.url,
            "--central-remote-write-url",
            &prometheus.write_url(),
            "--central-remote-write-interval",
            "1s",
            "--replica-id",
            replica,
            "--probe-interval",
            "1s",
            "--probe-timeout",
            "900ms",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let a = Observer::start("A", &first_dir, common("observer-a"), &transcript);
    let mut shared = common("observer-b");
    for (flag, path) in [
        ("--ca-dir", first_dir.clone()),
        ("--secrets-key-file", first_dir.join("secrets.key")),
        ("--admin-token-file", first_dir.join("admin.token")),
    ] {
        shared.push(flag.to_owned());
        shared.push(path.display().to_string());
    }
    let mut b = Observer::start("B", &dir.path().join("observer-b"), shared, &transcript);
    let admin = a.admin_token();

    // Targets, configured through both replicas' APIs.
    a.api_post(
        &admin,
        "/api/v1/tenants",
        &serde_json::json!({ "name": TENANT }),
    );
    let mut expected = BTreeSet::new();
    for i in 0..PROBE_ENDPOINTS {
        let url = format!("http://127.0.0.1:{web}/endpoint-{i}");
        let through = if i % 2 == 0 { &a } else { &b };
        through.api_post(
            &admin,
            &format!("/api/v1/probes?tenant={TENANT}"),
            &serde_json::json!({ "name": format!("endpoint-{i}"), "module": { "http": { "url": url } } }),
        );
        expected.insert(url);
    }
    for i in 0..PROBED_CLUSTERS {
        let endpoint = format!("http://127.0.0.1:{web}/cluster-{i}");
        a.api_post(
            &admin,
            "/api/v1/clusters",
            &serde_json::json!({ "name": format!("edge-{i}"), "tenant": TENANT, "apiEndpoint": endpoint }),
        );
        expected.insert(format!("{endpoint}/livez"));
    }

    // Split: every target on exactly one replica.
    let until = Instant::now() + DEADLINE;
    let (on_a, on_b) = loop {
        let on_a = a.probed_targets();
        let on_b = b.probed_targets();
        let union: BTreeSet<String> = on_a.iter().chain(&on_b).cloned().collect();
        if union == expected && on_a.len() + on_b.len() == expected.len() {
            break (on_a, on_b);
        }
        assert!(
            Instant::now() < until,
            "the targets are not split: A {on_a:?}, B {on_b:?}, expected {expected:?}\nA:\n{}\nB:\n{}",
            plain(&a.log()),
            plain(&b.log())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let on_a: BTreeSet<String> = on_a.into_iter().collect();
    assert!(on_a.is_disjoint(&on_b.iter().cloned().collect()));
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "both replicas probe: A {on_a:?}, B {on_b:?}"
    );
    assert!(
        a.log().contains("observer-b") && b.log().contains("observer-a"),
        "each replica logged the other joining"
    );

    // Prometheus receives each target's series once, from whichever replica owns it.
    let until = Instant::now() + DEADLINE;
    loop {
        let result = prometheus.query(r#"probe_success{tenant="shop"} == 1"#);
        let targets: Vec<String> = result
            .iter()
            .map(|r| {
                r["metric"]["target"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let unique: BTreeSet<String> = targets.iter().cloned().collect();
        if unique == expected {
            assert_eq!(targets.len(), expected.len(), "one series per target");
            break;
        }
        assert!(
            Instant::now() < until,
            "Prometheus has {targets:?}, expected {expected:?}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // B dies without a word; A takes every target.
    let killed = Instant::now();
    b.kill();
    let until = killed + PROBE_TAKEOVER_DEADLINE;
    loop {
        let on_a: BTreeSet<String> = a.probed_targets().into_iter().collect();
        if on_a == expected {
            break;
        }
        assert!(
            Instant::now() < until,
            "A probes {on_a:?} of {expected:?} {PROBE_TAKEOVER_DEADLINE:?} after B was killed\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the survivor probed every target {:.1}s after the other replica was killed",
        killed.elapsed().as_secs_f64()
    );
}
