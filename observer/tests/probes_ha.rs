//! Black-box probes with two `observer serve` processes on one PostgreSQL database
//! (a fresh `kaas_probes_ha_<random>` on `KAAS_TEST_POSTGRES_URL`'s server, default
//! 127.0.0.1:5432 with trust auth, dropped at the end; `KAAS_SKIP_POSTGRES=1` skips).
//!
//! Targets: probe endpoints configured through the API and clusters' API endpoints,
//! all pointing at a loopback HTTP server. The replicas heartbeat into the `replicas`
//! table and split the targets: the union of both replicas' `probe_success` series on
//! `/metrics` is every target and no target is in both; Prometheus, receiving both
//! replicas' remote-write, has every target once. Then one replica is killed with
//! SIGKILL (no goodbye): the survivor probes every target within a bounded time (the
//! liveness window of three heartbeats, one heartbeat, one probe interval; the time it
//! took is printed). Needs `prometheus`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::peers::Prometheus;
use kaas_test_support::process::{ChildGuard, free_port};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Deadline for things that take a few seconds.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the survivor may take to own a killed replica's targets: the liveness
/// window (3 × 5 s heartbeats), one more heartbeat, one probe interval, and slack for
/// a loaded machine.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(60);
const TENANT: &str = "shop";
/// Probe endpoints configured through the API.
const ENDPOINTS: usize = 10;
/// Clusters whose API endpoint is probed (`/livez`).
const CLUSTERS: usize = 4;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

async fn connect(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {url}: {e} (KAAS_SKIP_POSTGRES=1 skips this test)")
    })
}

/// A fresh database, dropped with this value.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> Option<Self> {
        if std::env::var("KAAS_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("KAAS_SKIP_POSTGRES=1: skipped");
            return None;
        }
        let admin_url = std::env::var("KAAS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("kaas_probes_ha_{:016x}", fastrand::u64(..));
        block_on(async {
            connect(&admin_url)
                .await
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create {name}: {e}"));
        });
        let (base, _) = admin_url.rsplit_once('/').expect("a URL ending in /<db>");
        Some(Self {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin_url = self.admin_url.clone();
        let dropped = std::thread::spawn(move || {
            block_on(async { connect(&admin_url).await.execute_unprepared(&sql).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("cannot drop the test database {}", self.name);
        }
    }
}

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

/// One `observer serve` replica.
struct Replica {
    api_port: u16,
    data_dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl Replica {
    fn start(name: &'static str, data_dir: &Path, args: &[String]) -> Self {
        std::fs::create_dir_all(data_dir).expect("a data dir");
        let api_port = free_port();
        let log = std::fs::File::create(data_dir.join("observer.log")).expect("a log file");
        let guard = ChildGuard::spawn(
            "observer",
            Command::new(OBSERVER)
                .arg("serve")
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--listen-address")
                .arg(format!("127.0.0.1:{api_port}"))
                .arg("--grpc-listen-address")
                .arg(format!("127.0.0.1:{}", free_port()))
                .args(["--replica-id", name])
                .args(["--probe-interval", "1s", "--probe-timeout", "900ms"])
                .args(args)
                .env("RUST_LOG", "info")
                .env_remove("POD_NAME")
                .stdout(Stdio::null())
                .stderr(log),
        );
        let replica = Self {
            api_port,
            data_dir: data_dir.to_owned(),
            guard: Some(guard),
        };
        let until = Instant::now() + DEADLINE;
        while http::get(&replica.url("/readyz")).map(|(s, _)| s) != Ok(200) {
            assert!(
                Instant::now() < until,
                "replica {name} not ready:\n{}",
                replica.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("observer.log")).unwrap_or_default()
    }

    fn post(&self, token: &str, path: &str, body: serde_json::Value) {
        let auth = format!("Bearer {token}");
        let (status, text) = http::post(
            &self.url(path),
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert!((200..300).contains(&status), "POST {path}: {status} {text}");
    }

    /// The `target` label of every `probe_success` series on this replica's `/metrics`.
    fn probed_targets(&self) -> Vec<String> {
        let Ok((200, text)) = http::get(&self.url("/metrics")) else {
            return Vec::new();
        };
        text.lines()
            .filter(|line| line.starts_with("probe_success{"))
            .filter_map(|line| {
                let start = line.find("target=\"")? + "target=\"".len();
                let end = start + line[start..].find('"')?;
                Some(line[start..end].to_owned())
            })
            .collect()
    }

    /// Kills the replica without warning: its heartbeat row stays behind.
    fn kill(&mut self) {
        drop(self.guard.take());
    }
}

#[test]
fn two_replicas_split_the_probe_targets_and_the_survivor_takes_all_after_a_kill() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).expect("a Prometheus directory");
    let prometheus = Prometheus::receiver(&prometheus_dir);
    let web = http_ok_server();

    let first_dir = dir.path().join("observer-a");
    let common = vec![
        "--database-url".to_owned(),
        database.url.clone(),
        "--central-remote-write-url".to_owned(),
        prometheus.write_url(),
        "--central-remote-write-interval".to_owned(),
        "1s".to_owned(),
    ];
    let a = Replica::start("observer-a", &first_dir, &common);
    let mut shared = common.clone();
    for (flag, path) in [
        ("--ca-dir", first_dir.clone()),
        ("--secrets-key-file", first_dir.join("secrets.key")),
        ("--admin-token-file", first_dir.join("admin.token")),
    ] {
        shared.push(flag.to_owned());
        shared.push(path.display().to_string());
    }
    let mut b = Replica::start("observer-b", &dir.path().join("observer-b"), &shared);
    let admin = std::fs::read_to_string(first_dir.join("admin.token"))
        .expect("the admin token")
        .trim()
        .to_owned();

    // Targets, configured through both replicas' APIs.
    a.post(
        &admin,
        "/api/v1/tenants",
        serde_json::json!({ "name": TENANT }),
    );
    let mut expected = BTreeSet::new();
    for i in 0..ENDPOINTS {
        let url = format!("http://127.0.0.1:{web}/endpoint-{i}");
        let through = if i % 2 == 0 { &a } else { &b };
        through.post(
            &admin,
            &format!("/api/v1/probes?tenant={TENANT}"),
            serde_json::json!({ "name": format!("endpoint-{i}"), "module": { "http": { "url": url } } }),
        );
        expected.insert(url);
    }
    for i in 0..CLUSTERS {
        let endpoint = format!("http://127.0.0.1:{web}/cluster-{i}");
        a.post(
            &admin,
            "/api/v1/clusters",
            serde_json::json!({ "name": format!("edge-{i}"), "tenant": TENANT, "apiEndpoint": endpoint }),
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
            a.log(),
            b.log()
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
    let until = killed + TAKEOVER_DEADLINE;
    loop {
        let on_a: BTreeSet<String> = a.probed_targets().into_iter().collect();
        if on_a == expected {
            break;
        }
        assert!(
            Instant::now() < until,
            "A probes {on_a:?} of {expected:?} {TAKEOVER_DEADLINE:?} after B was killed\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "the survivor probed every target {:.1}s after the other replica was killed",
        killed.elapsed().as_secs_f64()
    );
}
