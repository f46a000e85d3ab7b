//! `cluster-agent run --observer` against an observer that sends a configuration over
//! the size limit anyway (an observer that predates the limit): the agent refuses it
//! with FAILED on the open stream and keeps its last-known-good configuration, instead
//! of breaking the stream and reconnecting into the same message.
//!
//! The observer here is a small `AgentControl` of the test's own on the real TLS front
//! and the real cluster CA: it signs the agent's CSR, and sends whatever configuration
//! the test sets when the agent does not run it, as the real one did before the limit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaas_observer::control::accept::{HandshakeLimits, tls_incoming};
use kaas_observer::control::server_tls_config;
use kaas_observer::identity::{ClusterCa, DEFAULT_INSTANCE};
use kaas_observer::internal_events::HandshakeMetrics;
use kaas_pipeline::agent_config::{
    AGENT_CONFIG_CONTENT_TYPE, AgentConfig, MAX_AGENT_CONFIG_BYTES, config_hash,
};
use kaas_proto::control::v1::agent_control_server::{AgentControl, AgentControlServer};
use kaas_proto::control::v1::{
    AgentMessage, ConfigState, ConfigStatus, ConfigUpdate, JoinRequest, JoinResponse,
    ObserverMessage, agent_message, observer_message,
};
use kaas_test_support::process::{ChildGuard, free_port};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);
const CLUSTER: &str = "edge-1";
const JOIN_TOKEN: &str = "join-token-for-the-test";

/// What the test's observer saw.
#[derive(Default)]
struct Seen {
    connects: AtomicUsize,
    statuses: Mutex<Vec<ConfigStatus>>,
}

#[derive(Clone)]
struct OldObserver {
    ca: Arc<ClusterCa>,
    desired: watch::Receiver<Option<ConfigUpdate>>,
    seen: Arc<Seen>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<ObserverMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentControl for OldObserver {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        if request.join_token != JOIN_TOKEN {
            return Err(Status::permission_denied("unknown join token"));
        }
        let signed = self
            .ca
            .sign_agent_csr(
                CLUSTER,
                DEFAULT_INSTANCE,
                &request.csr_pem,
                Duration::from_secs(3600),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(JoinResponse {
            cluster_id: CLUSTER.to_owned(),
            certificate_pem: signed.pem,
            ca_bundle_pem: self.ca.bundle_pem(),
            not_after_unix_seconds: signed.not_after_ms / 1000,
            instance_name: DEFAULT_INSTANCE.to_owned(),
        }))
    }

    type ConnectStream = Outbound;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        self.seen.connects.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let Some(AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
            ..
        }) = inbound.message().await?
        else {
            return Err(Status::failed_precondition("hello first"));
        };
        let (out, rx) = mpsc::channel(4);
        let (mut desired, seen) = (self.desired.clone(), self.seen.clone());
        tokio::spawn(async move {
            let mut running = hello.last_applied_config_hash;
            let mut offered = Vec::new();
            loop {
                let update = desired.borrow_and_update().clone();
                if let Some(update) = update
                    && update.config_hash != running
                    && update.config_hash != offered
                {
                    offered = update.config_hash.clone();
                    let message = ObserverMessage {
                        body: Some(observer_message::Body::ConfigUpdate(update)),
                    };
                    if out.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = desired.changed() => if changed.is_err() { return },
                    message = inbound.message() => match message {
                        Ok(Some(AgentMessage { body: Some(agent_message::Body::ConfigStatus(status)), .. })) => {
                            running = status.running_config_hash.clone();
                            if status.state == ConfigState::Applied as i32 {
                                running = status.config_hash.clone();
                            }
                            seen.statuses.lock().expect("statuses").push(status);
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn update(body: Vec<u8>) -> ConfigUpdate {
    ConfigUpdate {
        config_hash: config_hash(&body).to_vec(),
        body,
        content_type: AGENT_CONFIG_CONTENT_TYPE.to_owned(),
    }
}

/// A configuration the agent can run: one pipeline scraping and writing to loopback
/// ports where nothing listens (it starts all the same).
fn small_config() -> Vec<u8> {
    let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: edge}
spec:
  input:
    static:
      targets: [{addresses: ["127.0.0.1:1"]}]
  output:
    prometheusRemoteWrite: {url: "http://127.0.0.1:1/api/v1/write"}
"#;
    let pipelines: Vec<_> = kaas_pipeline::document::parse_pipelines(
        text,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .into_iter()
    .map(|parsed| parsed.outcome.expect("pipeline fixture"))
    .collect();
    let labels = BTreeMap::from([("cluster".to_owned(), CLUSTER.to_owned())]);
    AgentConfig::from_validated(labels, &pipelines)
        .render()
        .body
}

fn wait_for_status(
    seen: &Seen,
    log: &Path,
    what: &str,
    hash: &[u8],
    state: ConfigState,
) -> ConfigStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        let found = seen
            .statuses
            .lock()
            .expect("statuses")
            .iter()
            .find(|s| s.config_hash == hash && s.state == state as i32)
            .cloned();
        if let Some(status) = found {
            return status;
        }
        assert!(
            Instant::now() < until,
            "{what}: no such status; connects {}; agent log:\n{}",
            seen.connects.load(Ordering::SeqCst),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_agent(url: &str, data: &Path, ca: &Path, token: &Path, log: &Path) -> ChildGuard {
    ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--observer")
            .arg(url)
            .arg("--observer-ca-file")
            .arg(ca)
            .arg("--join-token-file")
            .arg(token)
            .arg("--data-dir")
            .arg(data)
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
            .arg("--config-health-window-ms")
            .arg("300")
            .env("RUST_LOG", "info")
            .env_remove("KAAS_JOIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("agent log")),
    )
}

/// Issue 13, finding 6 (the agent's side): a configuration over the limit that reaches
/// the agent anyway is refused with FAILED on the open stream, naming its size and the
/// limit; the agent keeps its last-known-good configuration and never reconnects. On
/// 552c13e the agent's transport refused the 5 MiB message (tonic's 4 MiB default):
/// the stream broke, no status came, and the agent reconnected into the same message.
#[test]
fn an_oversized_configuration_is_refused_on_the_open_stream() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = Arc::new(ClusterCa::load_or_create(dir.path()).unwrap());
    let (desired, desired_rx) = watch::channel(Some(update(small_config())));
    let seen = Arc::new(Seen::default());
    let service = OldObserver {
        ca: ca.clone(),
        desired: desired_rx,
        seen: seen.clone(),
    };
    let url = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).unwrap();
        let incoming = tls_incoming(
            listener,
            tls,
            HandshakeLimits::default(),
            HandshakeMetrics::default(),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                // As an observer before the limit: no bound on what it encodes.
                .add_service(AgentControlServer::new(service).max_encoding_message_size(usize::MAX))
                .serve_with_incoming(incoming),
        );
        url
    });
    let ca_file: PathBuf = dir.path().join("observer-ca.crt");
    std::fs::write(&ca_file, ca.bundle_pem()).unwrap();
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, JOIN_TOKEN).unwrap();
    let data = dir.path().join("agent-data");
    let log = dir.path().join("agent.log");
    let _agent = start_agent(&url, &data, &ca_file, &token_file, &log);

    let small = update(small_config());
    wait_for_status(
        &seen,
        &log,
        "the small configuration",
        &small.config_hash,
        ConfigState::Applied,
    );
    let last_known_good = std::fs::read(data.join("last-known-good.config")).unwrap();

    let size = MAX_AGENT_CONFIG_BYTES + MAX_AGENT_CONFIG_BYTES / 4;
    let mut body = br#"{"padding":""#.to_vec();
    body.resize(size - 2, b'x');
    body.extend_from_slice(br#""}"#);
    let big = update(body);
    desired.send_replace(Some(big.clone()));
    let refused = wait_for_status(
        &seen,
        &log,
        "the oversized configuration",
        &big.config_hash,
        ConfigState::Failed,
    );
    assert_eq!(
        refused.running_config_hash, small.config_hash,
        "the small one keeps running"
    );
    assert_eq!(refused.errors.len(), 1, "{:?}", refused.errors);
    assert_eq!(
        refused.errors[0].message,
        format!(
            "the agent configuration is {size} bytes, over the limit of {MAX_AGENT_CONFIG_BYTES} bytes"
        )
    );
    assert_eq!(
        seen.connects.load(Ordering::SeqCst),
        1,
        "the agent reconnected:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read(data.join("last-known-good.config")).unwrap(),
        last_known_good
    );
}
