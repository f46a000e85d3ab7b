//! `cluster-agent run --observer` end to end: the real agent binary against the real
//! observer control service (a real `Store` on SQLite, the real cluster CA, TLS on a
//! loopback port), shipping to the recording remote-write receiver from a scrape target
//! served in-process.
//!
//! The observer runs on a runtime of its own so the test can stop it the way a crash
//! would: every task and socket gone at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_observer::control::{ControlService, ControlSettings, serve, server_tls_config};
use kaas_observer::identity::{AgentCertificateInfo, ClusterCa, rotation};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::certificates::{CertificateStanding, JoinTokenCheck};
use kaas_observer::store::{Actor, NewCluster, Store};
use kaas_pipeline::status::{CONDITION_CONFIGURATION_APPLIED, Condition, ConditionStatus, reasons};
use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, free_port};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use rustls::pki_types::pem::PemObject;
use tokio::runtime::Runtime;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);
const TENANT: &str = "shop";
const CLUSTER: &str = "edge-1";
/// The cluster's global id: the `cluster` label on its data and its certificate's name.
const CLUSTER_ID: &str = "shop.edge-1";

/// The observer's control service on its own runtime.
struct Observer {
    runtime: Option<Runtime>,
    store: Store,
    url: String,
}

/// How a test runs the observer.
#[derive(Clone, Copy, Default)]
struct Options {
    /// `agent_certificate_validity`, when not the default.
    validity: Option<Duration>,
    /// The port to listen on (a restart on the port the agent knows); any when `None`.
    port: Option<u16>,
}

impl Observer {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, Options::default())
    }

    fn start_with(dir: &Path, options: Options) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (store, url) = runtime.block_on(async {
            let store = Store::open_sqlite(
                &dir.join("observer.db"),
                SecretBox::generate().expect("secrets key"),
            )
            .await
            .expect("open the store");
            let ca = Arc::new(ClusterCa::load_or_create(dir).expect("cluster CA"));
            let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).expect("server TLS");
            let mut settings = ControlSettings {
                status_debounce: Duration::from_millis(50),
                ..ControlSettings::default()
            };
            if let Some(validity) = options.validity {
                settings.agent_certificate_validity = validity;
            }
            let service = ControlService::new(store.clone(), ca, settings);
            let listener = bind(options.port.unwrap_or(0)).await;
            let url = format!("https://{}", listener.local_addr().expect("local address"));
            tokio::spawn(async move {
                serve(listener, service, tls)
                    .await
                    .expect("serve AgentControl")
            });
            (store, url)
        });
        Self {
            runtime: Some(runtime),
            store,
            url,
        }
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime
            .as_ref()
            .expect("the observer was stopped")
            .block_on(future)
    }

    /// Stops the observer as a crash would.
    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    fn apply(&self, text: &str) {
        let pipeline = kaas_pipeline::document::parse_pipelines(
            text,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .into_iter()
        .next()
        .expect("pipeline fixture")
        .outcome
        .expect("pipeline fixture");
        self.block_on(self.store.apply_pipeline(TENANT, pipeline, &Actor::admin()))
            .expect("apply the pipeline");
    }

    fn condition(&self, pipeline: &str, type_: &str) -> Option<Condition> {
        let stored = self
            .block_on(self.store.get_pipeline(TENANT, pipeline))
            .expect("read the pipeline")?;
        stored
            .status
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    }

    fn wait_condition(
        &self,
        pipeline: &str,
        type_: &str,
        predicate: impl Fn(&Condition) -> bool,
        log: &Path,
    ) -> Condition {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(condition) = self.condition(pipeline, type_)
                && predicate(&condition)
            {
                return condition;
            }
            assert!(
                Instant::now() < until,
                "{type_} of {pipeline} is {:?}; agent log:\n{}",
                self.condition(pipeline, type_),
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Binds `127.0.0.1:port`, retrying briefly while a stopped observer's socket on that
/// port is still being released.
async fn bind(port: u16) -> tokio::net::TcpListener {
    let until = Instant::now() + DEADLINE;
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(Instant::now() < until, "bind 127.0.0.1:{port}: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The recording receiver and a scrape target, on the test's own runtime.
struct Peers {
    /// Keeps the receiver and the target running.
    _runtime: Runtime,
    receiver: RemoteWriteReceiver,
    target: String,
}

impl Peers {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (receiver, target) = runtime.block_on(async {
            let receiver = RemoteWriteReceiver::start().await;
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(|| async {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        "# TYPE observer_mode_fixture gauge\nobserver_mode_fixture 42\n",
                    )
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let target = listener.local_addr().expect("local address").to_string();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (receiver, target)
        });
        Self {
            _runtime: runtime,
            receiver,
            target,
        }
    }

    /// Samples of the fixture series that carry the cluster's external label.
    fn fixture_samples(&self) -> usize {
        self.receiver
            .accepted()
            .iter()
            .filter(|(labels, _)| {
                labels
                    .iter()
                    .any(|(n, v)| n == "__name__" && v == "observer_mode_fixture")
                    && labels
                        .iter()
                        .any(|(n, v)| n == "cluster" && v == CLUSTER_ID)
            })
            .map(|(_, samples)| samples.len())
            .sum()
    }

    /// Waits until `more` fixture samples arrived beyond what is there now.
    fn wait_for_more(&self, more: usize, what: &str, log: &Path) {
        let start = self.fixture_samples();
        let until = Instant::now() + DEADLINE;
        while self.fixture_samples() < start + more {
            assert!(
                Instant::now() < until,
                "{what}: only {} new samples; agent log:\n{}",
                self.fixture_samples() - start,
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pipeline(name: &str, target: &str, url: &str) -> String {
    format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: {name}}}
spec:
  input:
    scrapeInterval: 1s
    scrapeTimeout: 1s
    static:
      targets:
        - addresses: ["{target}"]
  output:
    prometheusRemoteWrite:
      url: {url}
"#
    )
}

struct Files {
    data: PathBuf,
    ca: PathBuf,
    token: PathBuf,
}

fn start_agent(observer_url: &str, files: &Files, log: &Path) -> (ChildGuard, u16) {
    start_agent_with(observer_url, files, log, &[])
}

fn start_agent_with(
    observer_url: &str,
    files: &Files,
    log: &Path,
    extra: &[&str],
) -> (ChildGuard, u16) {
    let port = free_port();
    let guard = ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--observer")
            .arg(observer_url)
            .arg("--observer-ca-file")
            .arg(&files.ca)
            .arg("--join-token-file")
            .arg(&files.token)
            .arg("--data-dir")
            .arg(&files.data)
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
            .arg("--config-health-window-ms")
            .arg("300")
            .arg("--health-report-interval-ms")
            .arg("500")
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("KAAS_JOIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("agent log")),
    );
    (guard, port)
}

fn wait_ready(port: u16, log: &Path) {
    let until = Instant::now() + DEADLINE;
    while http::get(&format!("http://127.0.0.1:{port}/readyz"))
        .map(|(status, _)| status)
        .ok()
        != Some(200)
    {
        assert!(
            Instant::now() < until,
            "agent not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_agent_joins_ships_what_the_observer_sends_and_survives_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers::start();
    let mut observer = Observer::start(&dir.path().join("observer"));
    let token = observer.block_on(async {
        observer
            .store
            .create_tenant(TENANT, &Actor::admin())
            .await
            .unwrap();
        let new = NewCluster {
            name: CLUSTER.to_owned(),
            tenant: TENANT.to_owned(),
            labels: BTreeMap::new(),
            api_endpoint: None,
        };
        observer
            .store
            .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
            .await
            .unwrap()
            .1
    });
    let files = Files {
        data: dir.path().join("agent-data"),
        ca: dir.path().join("observer-ca.crt"),
        token: dir.path().join("join-token"),
    };
    std::fs::copy(dir.path().join("observer").join("ca.crt"), &files.ca).unwrap();
    std::fs::write(&files.token, format!("{token}\n")).unwrap();
    observer.apply(&pipeline("edge", &peers.target, &peers.receiver.url()));

    // Join, receive the pipeline, ship with the cluster label.
    let log = dir.path().join("agent-1.log");
    let (agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    peers.wait_for_more(3, "after joining", &log);
    let applied = observer.wait_condition(
        "edge",
        CONDITION_CONFIGURATION_APPLIED,
        |c| c.status == ConditionStatus::True,
        &log,
    );
    assert_eq!(applied.reason, reasons::APPLIED);
    assert!(files.data.join("identity").join("tls.key").exists());
    let last_known_good = std::fs::read(files.data.join("last-known-good.config")).unwrap();
    let cluster = observer
        .block_on(observer.store.get_cluster(CLUSTER_ID))
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&last_known_good)
            .contains(cluster.applied_config_hash.as_deref().unwrap()),
        "the last-known-good file holds the applied configuration"
    );
    assert!(cluster.agent_version.is_some());

    // A configuration the agent cannot run is answered FAILED, and the old pipeline
    // keeps shipping: a file where the new pipeline's buffer directory must go makes
    // its start fail.
    std::fs::create_dir_all(files.data.join("buffers")).unwrap();
    std::fs::write(files.data.join("buffers").join("broken"), b"in the way").unwrap();
    observer.apply(&pipeline("broken", &peers.target, &peers.receiver.url()));
    let rejected = observer.wait_condition(
        "broken",
        CONDITION_CONFIGURATION_APPLIED,
        |c| c.status == ConditionStatus::False,
        &log,
    );
    assert_eq!(rejected.reason, reasons::CONFIG_REJECTED);
    assert!(
        rejected.message.contains("broken") && rejected.message.contains("could not start"),
        "{}",
        rejected.message
    );
    peers.wait_for_more(3, "after the refused configuration", &log);
    assert_eq!(
        std::fs::read(files.data.join("last-known-good.config")).unwrap(),
        last_known_good,
        "a refused configuration never becomes last-known-good"
    );

    // The observer goes away: data keeps flowing.
    observer.stop();
    peers.wait_for_more(3, "with the observer stopped", &log);

    // The agent restarts while the observer is still down: it runs its
    // last-known-good configuration from disk.
    drop(agent);
    let log = dir.path().join("agent-2.log");
    let (_agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    peers.wait_for_more(3, "after a restart with the observer down", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("applying the last-known-good configuration"),
        "{text}"
    );
}

/// Issue 13, Disk budget: pipelines that reach an agent asking for more buffer than
/// its `--buffer-budget` (stored without the API's check, as an older observer or a
/// budget set higher on the observer than on the agent would let them through) run
/// with smaller buffers, and the pipeline's `FlowHealthy` condition says so, naming the
/// budget. On 552c13e the agent had no budget and reported nothing.
#[test]
fn pipelines_over_the_agents_buffer_budget_report_a_condition_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers::start();
    let observer_dir = dir.path().join("observer");
    let observer = Observer::start(&observer_dir);
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    for name in ["big-a", "big-b"] {
        let text = pipeline(name, &peers.target, &peers.receiver.url())
            + "  buffer:\n    maxBytes: 64Mi\n";
        observer.apply(&text);
    }
    let log = dir.path().join("agent.log");
    let (_agent, port) =
        start_agent_with(&observer.url, &files, &log, &["--buffer-budget", "32Mi"]);
    wait_ready(port, &log);
    for name in ["big-a", "big-b"] {
        let flow = observer.wait_condition(
            name,
            kaas_pipeline::status::CONDITION_FLOW_HEALTHY,
            |c| c.reason == reasons::BUFFER_BUDGET_EXCEEDED,
            &log,
        );
        assert_eq!(flow.status, ConditionStatus::False);
        assert!(
            flow.message.contains(CLUSTER)
                && flow.message.contains("16777216 of the 67108864 bytes")
                && flow.message.contains("buffer budget of 33554432 bytes"),
            "{}",
            flow.message
        );
    }
    // The buffers are smaller; the data still flows.
    peers.wait_for_more(3, "with reduced buffers", &log);
    let metrics = http::get(&format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .1;
    assert!(
        metrics.contains("kaas_agent_pipeline_buffer_max_bytes{pipeline=\"big-a\"} 16777216"),
        "{metrics}"
    );
}

/// A log pipeline `edge` collecting container logs and pushed OTLP logs into Loki; the
/// cluster-level agent these tests start is sent its OTLP part (issue 16: the runtime
/// input is the node instances').
const LOG_PIPELINE: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {name: edge}
spec:
  input: {runtime: {enabled: true}, otlp: {enabled: true}}
  output: {loki: {url: "https://loki.example"}}
"#;

/// Issue 16: a configuration carrying `logPipelines` (beside a metric pipeline of the
/// same name) is applied by the agent and kept as its last-known-good, which it runs
/// again after a restart without the observer. The log pipeline's status says the
/// configuration was applied, and its flow comes from the agent's health reports,
/// which carry the log pipeline with its kind (apart from the metric pipeline of the
/// same name).
#[test]
fn a_configuration_carrying_log_pipelines_is_applied_and_kept_as_last_known_good() {
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers::start();
    let observer_dir = dir.path().join("observer");
    let mut observer = Observer::start(&observer_dir);
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    observer.apply(&pipeline("edge", &peers.target, &peers.receiver.url()));
    let logs = kaas_pipeline::document::parse_documents(
        LOG_PIPELINE,
        &kaas_pipeline::ValidationContext::tenant_default(),
    );
    let Some(Ok(kaas_pipeline::document::ValidatedResource::Log(log_pipeline))) =
        logs.into_iter().next().map(|d| d.outcome)
    else {
        panic!("log pipeline fixture");
    };
    observer
        .block_on(
            observer
                .store
                .apply_pipeline(TENANT, *log_pipeline, &Actor::admin()),
        )
        .unwrap();

    let log = dir.path().join("agent-1.log");
    let (agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    peers.wait_for_more(3, "with a log pipeline beside", &log);
    observer.wait_condition(
        "edge",
        kaas_pipeline::status::CONDITION_FLOW_HEALTHY,
        |c| c.status == ConditionStatus::True,
        &log,
    );
    let log_condition = |type_: &str| {
        observer
            .block_on(
                observer
                    .store
                    .get_pipeline_of::<kaas_pipeline::ValidatedLogPipeline>(TENANT, "edge"),
            )
            .unwrap()
            .unwrap()
            .status
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    };
    let until = Instant::now() + DEADLINE;
    while log_condition(CONDITION_CONFIGURATION_APPLIED).map(|c| c.status)
        != Some(ConditionStatus::True)
    {
        assert!(
            Instant::now() < until,
            "the log pipeline's configuration is {:?}",
            log_condition(CONDITION_CONFIGURATION_APPLIED)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let flow = log_condition(kaas_pipeline::status::CONDITION_FLOW_HEALTHY).unwrap();
        if flow.reason != kaas_pipeline::status::Reason::NoHealthReports.as_str() {
            assert_eq!(flow.status, ConditionStatus::True, "{flow:?}");
            break;
        }
        assert!(
            Instant::now() < until,
            "no health report for the log pipeline: {flow:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let saved = std::fs::read_to_string(files.data.join("last-known-good.config")).unwrap();
    assert!(
        saved.contains("logPipelines") && saved.contains("https://loki.example"),
        "{saved}"
    );
    assert!(!saved.contains("runtime"), "{saved}");

    // Restarted without the observer, the agent runs its last-known-good configuration,
    // log pipelines and all.
    observer.stop();
    drop(agent);
    let log = dir.path().join("agent-2.log");
    let (_agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    peers.wait_for_more(3, "after a restart from the last-known-good", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("applying the last-known-good configuration"),
        "{text}"
    );
}

/// A pipeline whose relabeling alone renders to `bytes` bytes or more: rules that each
/// set a label to a 64 KiB value.
fn huge_pipeline(name: &str, target: &str, url: &str, bytes: usize) -> String {
    let value = "x".repeat(64 * 1024);
    let rules: String = (0..bytes / (64 * 1024) + 1)
        .map(|i| format!("      - {{targetLabel: pad_{i}, replacement: \"{value}\"}}\n"))
        .collect();
    format!(
        "{}  processors:\n    relabelConfigs:\n{rules}",
        pipeline(name, target, url)
    )
}

/// How many times the agent's log says it connected to the observer.
fn connects(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("connected to the observer")
        .count()
}

/// Issue 13, finding 6: a configuration over the size limit is refused when it is
/// rendered, with a condition naming the cluster, the size and the limit, and never
/// sent: the agent's stream stays connected (its connect count is unchanged) and its
/// running pipeline keeps shipping. On 552c13e the observer sent the 5 MiB
/// configuration, the agent's transport refused it (tonic's 4 MiB default), the stream
/// broke, and the agent reconnected into the same configuration again and again; no
/// condition said why.
#[test]
fn a_configuration_over_the_limit_is_not_sent_and_the_agent_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers::start();
    let observer_dir = dir.path().join("observer");
    let observer = Observer::start(&observer_dir);
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    observer.apply(&pipeline("edge", &peers.target, &peers.receiver.url()));
    let log = dir.path().join("agent.log");
    let (_agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    observer.wait_condition(
        "edge",
        CONDITION_CONFIGURATION_APPLIED,
        |c| c.status == ConditionStatus::True,
        &log,
    );
    let last_known_good = std::fs::read(files.data.join("last-known-good.config")).unwrap();
    let connected = connects(&log);
    assert_eq!(connected, 1, "{}", std::fs::read_to_string(&log).unwrap());

    let limit = kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES;
    observer.apply(&huge_pipeline(
        "huge",
        &peers.target,
        &peers.receiver.url(),
        limit + limit / 4,
    ));
    for name in ["huge", "edge"] {
        let refused = observer.wait_condition(
            name,
            CONDITION_CONFIGURATION_APPLIED,
            |c| c.reason == reasons::CONFIG_TOO_LARGE,
            &log,
        );
        assert_eq!(refused.status, ConditionStatus::False);
        assert!(
            refused
                .message
                .starts_with(&format!("cluster {CLUSTER}: the agent configuration is "))
                && refused
                    .message
                    .contains(&format!("bytes, over the limit of {limit} bytes")),
            "{}",
            refused.message
        );
    }
    // Seconds of scraping later the agent still runs the old configuration on the
    // stream it had: nothing was sent, so nothing broke it.
    peers.wait_for_more(3, "with the oversized configuration refused", &log);
    assert_eq!(
        connects(&log),
        connected,
        "the agent reconnected:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(
        std::fs::read(files.data.join("last-known-good.config")).unwrap(),
        last_known_good
    );
    let cluster = observer
        .block_on(observer.store.get_cluster(CLUSTER_ID))
        .unwrap()
        .unwrap();
    assert!(
        cluster.connected,
        "the agent's stream is still recorded as connected"
    );
}

/// Registers [`CLUSTER`] of [`TENANT`] and returns its join token.
fn add_cluster(observer: &Observer) -> String {
    observer.block_on(async {
        observer
            .store
            .create_tenant(TENANT, &Actor::admin())
            .await
            .expect("create the tenant");
        let new = NewCluster {
            name: CLUSTER.to_owned(),
            tenant: TENANT.to_owned(),
            labels: BTreeMap::new(),
            api_endpoint: None,
        };
        observer
            .store
            .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("create the cluster")
            .1
    })
}

/// The agent's files in `dir`, with the observer's CA bundle and `token` in place.
fn agent_files(dir: &Path, observer_dir: &Path, token: &str) -> Files {
    let files = Files {
        data: dir.join("agent-data"),
        ca: dir.join("observer-ca.crt"),
        token: dir.join("join-token"),
    };
    std::fs::copy(observer_dir.join("ca.crt"), &files.ca).expect("copy the CA");
    std::fs::write(&files.token, format!("{token}\n")).expect("write the token");
    files
}

/// The certificate the agent has saved, if any.
fn saved_certificate(files: &Files) -> Option<(AgentCertificateInfo, Vec<u8>)> {
    let pem = std::fs::read(files.data.join("identity").join("tls.crt")).ok()?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).ok()?;
    Some((AgentCertificateInfo::parse(&der)?, der.to_vec()))
}

/// Waits until `done` holds, showing the agent's log when it does not.
fn wait_until(what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < until,
            "{what}; agent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Observer {
    /// Whether the agent's stream is open and it was heard from after `since_ms`.
    fn connected_since(&self, since_ms: i64) -> bool {
        let cluster = self
            .block_on(self.store.get_cluster(CLUSTER_ID))
            .expect("read the cluster");
        let report = self
            .block_on(self.store.cluster_report(CLUSTER_ID))
            .expect("read the report");
        cluster.is_some_and(|c| c.last_seen_ms.is_some_and(|seen| seen > since_ms))
            && report.is_some_and(|r| r.connected)
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port in the URL")
    }
}

/// Issue 13, finding 7 (renewal): the agent renews its certificate over its stream well
/// before it expires, saves the new identity and reconnects with it; the observer
/// records the new serial and revokes the old one at the switch, and the agent keeps
/// running past the first certificate's expiry without a new join token (on 552c13e
/// nothing renewed: the agent was locked out at expiry).
#[test]
fn the_agent_renews_its_certificate_over_its_stream_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let observer_dir = dir.path().join("observer");
    let observer = Observer::start_with(
        &observer_dir,
        Options {
            validity: Some(Duration::from_secs(9)),
            port: None,
        },
    );
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    let log = dir.path().join("agent.log");
    let (_agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    wait_until("the agent joined", &log, || {
        saved_certificate(&files).is_some()
    });
    let (first, _) = saved_certificate(&files).unwrap();
    wait_until("the agent renewed its certificate", &log, || {
        saved_certificate(&files).is_some_and(|(info, _)| info.serial_hex != first.serial_hex)
    });
    wait_until(
        "the observer revoked the first certificate once the agent used the new one",
        &log,
        || {
            observer
                .block_on(
                    observer
                        .store
                        .certificate_standing(CLUSTER_ID, &first.serial_hex),
                )
                .unwrap()
                == CertificateStanding::Revoked
        },
    );
    // Well past the first certificate's expiry, the agent is still connected.
    let first_expiry_ms = first.not_after_unix_seconds * 1000;
    wait_until(
        "the agent is connected after the first expiry",
        &log,
        || observer.connected_since(first_expiry_ms + 1000),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("renewed certificate saved"), "{text}");
    assert_eq!(text.matches("joined the observer").count(), 1, "{text}");
}

/// Issue 13, finding 7 (token): an agent whose data directory cannot be written does
/// not redeem its join token (it checks first), and joins with the same token once the
/// directory is fixed (on 552c13e the token was spent before the save failed, and the
/// agent could never join with it again).
#[test]
fn an_unwritable_data_directory_does_not_spend_the_join_token() {
    let dir = tempfile::tempdir().unwrap();
    let observer_dir = dir.path().join("observer");
    let observer = Observer::start(&observer_dir);
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    // A file where the identity directory must go: nothing can be written there (root
    // ignores permission bits, a file in the way it cannot ignore).
    std::fs::create_dir_all(&files.data).unwrap();
    std::fs::write(files.data.join("identity"), b"in the way").unwrap();
    let log = dir.path().join("agent.log");
    let (_agent, _) = start_agent(&observer.url, &files, &log);
    wait_until("the agent reports the unwritable directory", &log, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("cannot join the observer"))
    });
    let check = observer
        .block_on(
            observer
                .store
                .check_join_token(&token, "any", kaas_observer::store::now_ms()),
        )
        .unwrap();
    assert!(
        matches!(check, JoinTokenCheck::Redeemable(_)),
        "the token was spent: {check:?}"
    );
    std::fs::remove_file(files.data.join("identity")).unwrap();
    wait_until("the agent joins with the same token", &log, || {
        observer.connected_since(0)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("already used"), "{text}");
}

/// Issue 13, finding 7 (CA rotation): the real agent follows a CA rotation without a new
/// join: after `rotate` it keeps connecting on its old bundle, saves the new bundle,
/// renews with the new CA when asked, and after `retire` goes on with the new CA.
#[test]
fn the_agent_follows_a_ca_rotation_without_joining_again() {
    let dir = tempfile::tempdir().unwrap();
    let observer_dir = dir.path().join("observer");
    let mut observer = Observer::start(&observer_dir);
    let port_of_observer = observer.port();
    let token = add_cluster(&observer);
    let files = agent_files(dir.path(), &observer_dir, &token);
    let log = dir.path().join("agent.log");
    let (_agent, port) = start_agent(&observer.url, &files, &log);
    wait_ready(port, &log);
    wait_until("the agent joined", &log, || observer.connected_since(0));
    observer.stop();

    rotation::rotate(&observer_dir).unwrap();
    let rotated = ClusterCa::load_or_create(&observer_dir).unwrap();
    let at_port = Options {
        port: Some(port_of_observer),
        ..Options::default()
    };
    let mut observer = Observer::start_with(&observer_dir, at_port);
    wait_until(
        "the agent saved the new bundle and renewed with the new CA",
        &log,
        || {
            let bundle = std::fs::read_to_string(files.data.join("identity").join("ca.crt"));
            bundle.is_ok_and(|bundle| bundle == rotated.bundle_pem())
                && saved_certificate(&files).is_some_and(|(_, der)| rotated.signed_by_active(&der))
        },
    );
    let renewed_at = kaas_observer::store::now_ms();
    wait_until(
        "the agent connects with the renewed certificate",
        &log,
        || observer.connected_since(renewed_at),
    );
    observer.stop();

    rotation::retire(&observer_dir).unwrap();
    let observer = Observer::start_with(&observer_dir, at_port);
    let restarted_at = kaas_observer::store::now_ms();
    wait_until(
        "the agent connects after the old CA is retired",
        &log,
        || observer.connected_since(restarted_at),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("joined the observer").count(), 1, "{text}");
}
