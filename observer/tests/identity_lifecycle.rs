//! The agent identity lifecycle end to end, on real streams: a real `Store` on SQLite,
//! the real cluster CA on disk, the control service with TLS on a loopback port, and
//! the generated tonic client presenting real certificates.
//!
//! "Promptly" is asserted with every interval of the observer that could re-check a
//! stream (status debounce, hello timeout) at 60 s or more, and nothing in the service
//! polls: a stream that ends within [`DEADLINE`] was ended by the event itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_observer::control::accept::HandshakeLimits;
use kaas_observer::control::join::JoinLimits;
use kaas_observer::control::{
    ControlService, ControlSettings, serve_with_shutdown, server_tls_config,
};
use kaas_observer::identity::{AgentCertificateInfo, ClusterCa, rotation};
use kaas_observer::rendering::render_for_cluster;
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::{Actor, ClusterState, NewCluster, Store};
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, AgentRole, Capability, CertificateIssued, CertificateRequest,
    CommandType, Heartbeat, JoinRequest, ObserverMessage, agent_message, observer_message,
};
use kaas_test_support::tls::agent_key_and_csr;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sea_orm::{ConnectionTrait, TransactionTrait};
use sha2::Digest as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

/// How long an event may take to reach a stream: generous for a loaded 2-core machine,
/// far below every interval the observer runs with here.
const DEADLINE: Duration = Duration::from_secs(10);
/// Every periodic interval of the observer under test: longer than any wait below.
const SLOW: Duration = Duration::from_secs(60);
const TENANT: &str = "shop";

/// Settings under which nothing in the observer re-checks a stream on its own.
fn slow_settings() -> ControlSettings {
    ControlSettings {
        status_debounce: SLOW,
        hello_timeout: SLOW,
        ..ControlSettings::default()
    }
}

/// A running control service on a store and CA directory that outlive it.
struct Observer {
    url: String,
    store: Store,
    service: ControlService,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Serves the control service on a fresh loopback port with the CA in `dir`.
    async fn start(dir: &Path, store: &Store, settings: ControlSettings) -> Self {
        let ca = Arc::new(ClusterCa::load_or_create(dir).expect("cluster CA"));
        let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).expect("server TLS");
        let service = ControlService::new(store.clone(), ca, settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("https://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = service.clone();
        let server = tokio::spawn(async move {
            serve_with_shutdown(listener, serving, tls, HandshakeLimits::default(), async {
                let _ = stopped.await;
            })
            .await
            .expect("serve AgentControl");
        });
        Self {
            url,
            store: store.clone(),
            service,
            stop: Some(stop),
            server,
        }
    }

    /// Stops serving (open streams end) and waits until the port is closed.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(DEADLINE, &mut self.server).await;
    }

    /// Registers a cluster of [`TENANT`] and returns its global id and join token.
    async fn add_cluster(&self, name: &str) -> (String, String) {
        let new = NewCluster {
            name: name.to_owned(),
            tenant: TENANT.to_owned(),
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            api_endpoint: None,
        };
        let (cluster, token) = self
            .store
            .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("create the cluster");
        (cluster.id, token)
    }

    async fn mint(&self, cluster_id: &str) -> String {
        self.store
            .mint_join_token(cluster_id, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("mint a join token")
    }

    /// `Join` with a fresh key as `instance` (empty: the default instance), trusting
    /// `bundle`.
    async fn join(&self, bundle: &str, token: &str, instance: &str) -> Result<Agent, Status> {
        let (key_pem, csr_pem) = agent_key_and_csr();
        self.join_with(bundle, token, instance, key_pem, csr_pem)
            .await
    }

    async fn join_with(
        &self,
        bundle: &str,
        token: &str,
        instance: &str,
        key_pem: String,
        csr_pem: String,
    ) -> Result<Agent, Status> {
        let response = AgentControlClient::new(channel(&self.url, bundle, None).await)
            .join(JoinRequest {
                join_token: token.to_owned(),
                csr_pem,
                agent_instance_id: "test-agent".to_owned(),
                agent_version: "0.1.0".to_owned(),
                instance_name: instance.to_owned(),
            })
            .await?
            .into_inner();
        Ok(Agent {
            cluster_id: response.cluster_id,
            key_pem,
            cert_pem: response.certificate_pem,
            bundle_pem: response.ca_bundle_pem,
        })
    }

    /// The hash of the configuration the observer wants `cluster_id` to run.
    async fn desired_hash(&self, cluster_id: &str) -> Vec<u8> {
        let cluster = self
            .store
            .get_cluster(cluster_id)
            .await
            .expect("read the cluster")
            .expect("the cluster exists");
        let pipelines = self
            .store
            .pipelines_for_cluster(&cluster)
            .await
            .expect("read the pipelines");
        render_for_cluster(&cluster, &pipelines, None).hash.to_vec()
    }

    /// Opens a stream for `agent` that runs the desired configuration already, so
    /// nothing is pushed unless something changes.
    async fn open(&self, agent: &Agent) -> Result<AgentStream, Status> {
        let hash = self.desired_hash(&agent.cluster_id).await;
        AgentStream::open(&self.url, agent, hash).await
    }

    /// [`Observer::open`] for a node's instance (its certificate allows only that role).
    async fn open_node(&self, agent: &Agent) -> Result<AgentStream, Status> {
        let hash = self.desired_hash(&agent.cluster_id).await;
        AgentStream::open_as(&self.url, agent, hash, AgentRole::Node).await
    }

    /// The observer's metrics as OpenMetrics text.
    fn metrics(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.service.metrics().register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }
}

/// What an agent holds after joining or renewing.
#[derive(Clone)]
struct Agent {
    cluster_id: String,
    key_pem: String,
    cert_pem: String,
    bundle_pem: String,
}

impl Agent {
    fn info(&self) -> AgentCertificateInfo {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("PEM");
        AgentCertificateInfo::parse(&der).expect("an agent certificate")
    }

    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("PEM")
            .to_vec()
    }
}

/// A TLS channel to `url` trusting `bundle`, with `agent`'s certificate if given.
async fn channel(url: &str, bundle: &str, agent: Option<&Agent>) -> Channel {
    try_channel(url, bundle, agent)
        .await
        .expect("connect to the observer")
}

async fn try_channel(
    url: &str,
    bundle: &str,
    agent: Option<&Agent>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(bundle));
    if let Some(agent) = agent {
        tls = tls.identity(Identity::from_pem(&agent.cert_pem, &agent.key_pem));
    }
    Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect()
        .await
}

/// The agent side of one stream.
struct AgentStream {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ObserverMessage>,
    sequence: u64,
}

impl AgentStream {
    async fn open(url: &str, agent: &Agent, last_applied: Vec<u8>) -> Result<Self, Status> {
        Self::open_as(url, agent, last_applied, AgentRole::Unspecified).await
    }

    /// [`AgentStream::open`] for an instance that says it plays `role`.
    async fn open_as(
        url: &str,
        agent: &Agent,
        last_applied: Vec<u8>,
        role: AgentRole,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(16);
        let hello = AgentHello {
            cluster_id: agent.cluster_id.clone(),
            agent_instance_id: "test-agent".to_owned(),
            agent_version: "0.1.0".to_owned(),
            capabilities: vec![Capability::AcceptsRemoteConfig as i32],
            attributes: Default::default(),
            last_applied_config_hash: last_applied,
            trust_bundle_sha256: sha2::Sha256::digest(agent.bundle_pem.as_bytes()).to_vec(),
            role: role as i32,
        };
        tx.send(AgentMessage {
            sequence_num: 1,
            body: Some(agent_message::Body::Hello(hello)),
        })
        .await
        .expect("queue the hello");
        let channel = try_channel(url, &agent.bundle_pem, Some(agent))
            .await
            .map_err(|error| Status::unavailable(format!("connect: {error}")))?;
        let inbound = AgentControlClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            tx,
            inbound,
            sequence: 1,
        })
    }

    async fn send(&mut self, body: agent_message::Body) {
        self.sequence += 1;
        self.tx
            .send(AgentMessage {
                sequence_num: self.sequence,
                body: Some(body),
            })
            .await
            .expect("the stream is open");
    }

    /// The next message within `within`; `Err` with the status the stream ended with.
    async fn next(&mut self, within: Duration) -> Result<observer_message::Body, Status> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Err(_) => panic!("nothing from the observer within {within:?}"),
            Ok(Ok(Some(message))) => Ok(message.body.expect("a message body")),
            Ok(Ok(None)) => Err(Status::cancelled("the stream ended without a status")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// The status the stream ends with, skipping messages before it; panics when it
    /// is still open after [`DEADLINE`].
    async fn ended(&mut self) -> Status {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.inbound.message()).await {
                Err(_) => panic!("the stream is still open after {DEADLINE:?}"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Status::cancelled("ended without a status"),
                Ok(Err(status)) => return status,
            }
        }
    }

    /// Whether the stream is still open: a heartbeat goes through and nothing ends it
    /// within a moment.
    async fn is_open(&mut self) -> bool {
        self.send(agent_message::Body::Heartbeat(Heartbeat {
            timestamp_unix_ms: 1,
        }))
        .await;
        matches!(
            tokio::time::timeout(Duration::from_millis(300), self.inbound.message()).await,
            Err(_) | Ok(Ok(Some(_)))
        )
    }

    /// Asks for a certificate for `instance` (empty: its own) with a fresh key; the
    /// answer and the key.
    async fn request_certificate(&mut self, instance: &str) -> (CertificateIssued, String) {
        let (key_pem, csr_pem) = agent_key_and_csr();
        self.send(agent_message::Body::CertificateRequest(
            CertificateRequest {
                csr_pem,
                instance_name: instance.to_owned(),
                ..CertificateRequest::default()
            },
        ))
        .await;
        loop {
            match self.next(DEADLINE).await {
                Ok(observer_message::Body::CertificateIssued(issued)) => return (issued, key_pem),
                Ok(_) => continue,
                Err(status) => panic!("the stream ended: {status:?}"),
            }
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    store: Store,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().expect("secrets key"),
    )
    .await
    .expect("open the store");
    store
        .create_tenant(TENANT, &Actor::admin())
        .await
        .expect("create the tenant");
    Setup { dir, store }
}

fn bundle(dir: &Path) -> String {
    ClusterCa::load_or_create(dir)
        .expect("cluster CA")
        .bundle_pem()
}

async fn apply_pipeline(store: &Store) {
    let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: metrics}
spec:
  input: {prometheus: {enabled: true}}
  output: {prometheusRemoteWrite: {url: "https://a.example/write"}}
  clusterSelector: {matchLabels: {env: prod}}
"#;
    let pipeline = kaas_pipeline::document::parse_pipelines(
        text,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .into_iter()
    .next()
    .expect("pipeline fixture")
    .outcome
    .expect("pipeline fixture");
    store
        .apply_pipeline(TENANT, pipeline, &Actor::admin())
        .await
        .expect("apply the pipeline");
}

/// Issue 13, finding 7: joining again ends the stream of the replaced certificate at
/// once with PERMISSION_DENIED (on 552c13e it stayed open, and configurations kept
/// flowing to the old key), while the new certificate's stream gets them.
#[tokio::test]
async fn a_rejoin_ends_the_old_certificates_stream_promptly() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, token) = observer.add_cluster("edge-1").await;
    let ca = bundle(s.dir.path());
    let first = observer.join(&ca, &token, "").await.unwrap();
    let mut old = observer.open(&first).await.unwrap();
    assert!(old.is_open().await);

    let token = observer.mint(&cluster).await;
    let second = observer.join(&ca, &token, "").await.unwrap();
    let ended = old.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("revoked"), "{}", ended.message());

    // The new certificate's stream gets the next configuration; the old one is refused.
    let mut new = observer.open(&second).await.unwrap();
    apply_pipeline(&s.store).await;
    match new.next(DEADLINE).await {
        Ok(observer_message::Body::ConfigUpdate(_)) => {}
        other => panic!("expected a ConfigUpdate, got {other:?}"),
    }
    let refused = observer
        .open(&first)
        .await
        .err()
        .expect("the old one connected");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

/// Issue 13, finding 7 (regression guard, not its proof: 552c13e already ended a
/// deleted cluster's streams): deleting a cluster ends its agents' streams at once,
/// also now that the stream checks its certificate on every cluster change.
#[tokio::test]
async fn deleting_the_cluster_ends_its_stream_promptly() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, token) = observer.add_cluster("edge-1").await;
    let agent = observer
        .join(&bundle(s.dir.path()), &token, "")
        .await
        .unwrap();
    let mut stream = observer.open(&agent).await.unwrap();
    assert!(stream.is_open().await);
    s.store
        .delete_cluster(&cluster, &Actor::admin())
        .await
        .unwrap();
    let ended = stream.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("deleted"), "{}", ended.message());
}

/// The incident runbook's "cut a cluster" (docs/security.md): revoking a cluster's
/// certificates ends its streams at once with PERMISSION_DENIED, refuses the
/// certificate from then on, keeps the cluster, and a new join token brings an agent
/// back. Every interval is 60 s or more, so only the revocation explains the end.
#[tokio::test]
async fn revoking_a_clusters_certificates_cuts_its_agents_at_once() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, token) = observer.add_cluster("edge-1").await;
    let agent = observer
        .join(&bundle(s.dir.path()), &token, "")
        .await
        .unwrap();
    let mut stream = observer.open(&agent).await.unwrap();
    assert!(stream.is_open().await);
    let revoked = s
        .store
        .revoke_cluster_certificates(&cluster, &Actor::admin(), kaas_observer::store::now_ms())
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    let ended = stream.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    let refused = observer.open(&agent).await.err().expect("still accepted");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let kept = s.store.get_cluster(&cluster).await.unwrap().expect("kept");
    assert_ne!(kept.state, ClusterState::Deleted);
    let token = s
        .store
        .mint_join_token(&cluster, Duration::from_secs(3600), &Actor::admin())
        .await
        .unwrap();
    let back = observer
        .join(&bundle(s.dir.path()), &token, "")
        .await
        .unwrap();
    let mut stream = observer.open(&back).await.unwrap();
    assert!(stream.is_open().await);
}

/// Issue 13, finding 7: the certificate validity is a setting (here seconds), and a
/// stream ends with PERMISSION_DENIED when its certificate expires (on 552c13e it ran
/// on: TLS checks the expiry only at the handshake).
#[tokio::test]
async fn a_stream_ends_when_its_certificate_expires() {
    let s = setup().await;
    let validity = Duration::from_secs(4);
    let settings = ControlSettings {
        agent_certificate_validity: validity,
        ..slow_settings()
    };
    let observer = Observer::start(s.dir.path(), &s.store, settings).await;
    let (_, token) = observer.add_cluster("edge-1").await;
    let agent = observer
        .join(&bundle(s.dir.path()), &token, "")
        .await
        .unwrap();
    let info = agent.info();
    let lifetime = info.not_after_unix_seconds - kaas_observer::store::now_ms() / 1000;
    assert!((3..=4).contains(&lifetime), "valid for {lifetime} s");
    let mut stream = observer.open(&agent).await.unwrap();
    assert!(stream.is_open().await);
    let ended = stream.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!(ended.message().contains("expired"), "{}", ended.message());
}

/// Issue 13, finding 7: a certificate is renewed over the authenticated stream (new
/// key, new serial recorded); the old certificate keeps working until the agent
/// connects with the new one, and is revoked then, which ends the old stream.
#[tokio::test]
async fn a_certificate_renewed_over_the_stream_replaces_the_old_one_at_the_switch() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, token) = observer.add_cluster("edge-1").await;
    let old = observer
        .join(&bundle(s.dir.path()), &token, "")
        .await
        .unwrap();
    let mut old_stream = observer.open(&old).await.unwrap();
    let (issued, key_pem) = old_stream.request_certificate("").await;
    assert_eq!(issued.refused, "", "{issued:?}");
    let renewed = Agent {
        cluster_id: old.cluster_id.clone(),
        key_pem,
        cert_pem: issued.certificate_pem,
        bundle_pem: issued.ca_bundle_pem,
    };
    assert_eq!(renewed.info().cluster, cluster);
    assert_eq!(renewed.info().instance, "default");
    assert_ne!(renewed.info().serial_hex, old.info().serial_hex);
    assert!(
        old_stream.is_open().await,
        "the old stream goes on until the switch"
    );

    let _new_stream = observer.open(&renewed).await.unwrap();
    let ended = old_stream.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    let refused = observer
        .open(&old)
        .await
        .err()
        .expect("the old one connected");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let stored = s.store.get_cluster(&cluster).await.unwrap().unwrap();
    assert_eq!(
        stored.certificate_serial.as_deref(),
        Some(renewed.info().serial_hex.as_str())
    );
}

/// A new cluster "edge-1" with its default instance joined and connected, and the
/// certificate of its instance "node-1", issued over the default instance's stream.
async fn with_node_instance(observer: &Observer, dir: &Path) -> (String, AgentStream, Agent) {
    let (cluster, token) = observer.add_cluster("edge-1").await;
    let ca = bundle(dir);
    let default = observer
        .join(&ca, &token, "")
        .await
        .expect("the default instance joins");
    let mut default_stream = observer
        .open(&default)
        .await
        .expect("the default instance connects");
    let (issued, key_pem) = default_stream.request_certificate("node-1").await;
    assert_eq!(issued.refused, "", "{issued:?}");
    let node = Agent {
        cluster_id: cluster.clone(),
        key_pem,
        cert_pem: issued.certificate_pem,
        bundle_pem: issued.ca_bundle_pem,
    };
    (cluster, default_stream, node)
}

/// Issue 13, finding 7 (instances): each agent instance of a cluster has its own
/// certificate, issued over the cluster's authenticated stream by its default
/// instance; re-joining one instance cuts only that instance's stream.
#[tokio::test]
async fn instances_have_their_own_certificates_and_never_cut_each_other() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, mut default_stream, node) = with_node_instance(&observer, s.dir.path()).await;
    let ca = bundle(s.dir.path());
    assert_eq!(node.info().instance, "node-1");
    let mut node_stream = observer.open_node(&node).await.unwrap();
    // A node instance cannot issue certificates for other instances.
    let (refused, _) = node_stream.request_certificate("node-2").await;
    assert!(refused.certificate_pem.is_empty());
    assert!(refused.refused.contains("default"), "{}", refused.refused);

    // The node joins again with a token of its own: its old stream ends, the default
    // instance's stream goes on and still gets configurations.
    let token = observer.mint(&cluster).await;
    let rejoined = observer.join(&ca, &token, "node-1").await.unwrap();
    assert_eq!(rejoined.info().instance, "node-1");
    let ended = node_stream.ended().await;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    apply_pipeline(&s.store).await;
    loop {
        match default_stream.next(DEADLINE).await {
            Ok(observer_message::Body::ConfigUpdate(_)) => break,
            Ok(_) => continue,
            Err(status) => panic!("the default instance's stream ended: {status:?}"),
        }
    }
    let _rejoined_stream = observer.open_node(&rejoined).await.unwrap();
    assert!(default_stream.is_open().await);
}

/// Issue 16: node instances are named after their node, and node names are DNS-1123
/// subdomains: a dotted name is issued over the stream and by `Join`, named in the
/// certificate and connects; names that are not subdomains are refused with the rule.
#[tokio::test]
async fn instance_names_may_be_node_names_with_dots() {
    const NODE: &str = "ip-10-0-1-7.eu-west-1.compute.internal";
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (cluster, mut default_stream, _) = with_node_instance(&observer, s.dir.path()).await;
    let (issued, key_pem) = default_stream.request_certificate(NODE).await;
    assert_eq!(issued.refused, "", "{issued:?}");
    assert_eq!(issued.instance_name, NODE);
    let node = Agent {
        cluster_id: cluster.clone(),
        key_pem,
        cert_pem: issued.certificate_pem,
        bundle_pem: issued.ca_bundle_pem,
    };
    assert_eq!(node.info().instance, NODE);
    let mut node_stream = observer.open_node(&node).await.expect("the node connects");
    assert!(node_stream.is_open().await);
    for bad in ["Node_1", "node..1", ".node", "a/b"] {
        let (refused, _) = default_stream.request_certificate(bad).await;
        assert!(
            refused.refused.contains("not a valid DNS-1123 subdomain"),
            "{bad:?}: {refused:?}"
        );
    }
    let (refused, _) = default_stream.request_certificate(&"a".repeat(254)).await;
    assert!(refused.refused.contains("longer than 253"), "{refused:?}");
    let ca = bundle(s.dir.path());
    let token = observer.mint(&cluster).await;
    let joined = observer
        .join(&ca, &token, "node-2.example.internal")
        .await
        .expect("a dotted name joins");
    assert_eq!(joined.info().instance, "node-2.example.internal");
}

/// The next configuration `stream` is sent, as JSON.
async fn next_config(stream: &mut AgentStream) -> (serde_json::Value, String) {
    loop {
        match stream.next(DEADLINE).await {
            Ok(observer_message::Body::ConfigUpdate(update)) => {
                let text = String::from_utf8(update.body).expect("UTF-8");
                return (serde_json::from_str(&text).expect("JSON"), text);
            }
            Ok(_) => continue,
            Err(status) => panic!("the stream ended: {status:?}"),
        }
    }
}

/// Issue 16 (where it runs): each instance is sent the part of its cluster's
/// configuration for the role its hello names. A node instance gets the log pipeline
/// with only its runtime input and never a metric pipeline, so never a metric
/// pipeline's credentials; the cluster instance (and an agent that names no role) gets
/// the metric pipeline and the log pipeline with only its OTLP input.
#[tokio::test]
async fn each_instance_gets_only_the_configuration_of_its_role() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (_, mut default_stream, node) = with_node_instance(&observer, s.dir.path()).await;
    const METRIC_SECRET: &str = "metric-password-never-on-a-node";
    let text = format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: metrics}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output:
    prometheusRemoteWrite:
      url: "https://a.example/write"
      authentication: {{basic: {{user: {{value: agent}}, password: {{value: {METRIC_SECRET}}}}}}}
---
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {{name: logs}}
spec:
  input: {{runtime: {{enabled: true}}, otlp: {{enabled: true}}}}
  output: {{loki: {{url: "https://loki.example"}}}}
"#
    );
    let context = kaas_pipeline::ValidationContext::tenant_default();
    let mut documents = kaas_pipeline::document::parse_documents(&text, &context).into_iter();
    let metrics = documents.next().unwrap().outcome.expect("metric pipeline");
    let logs = documents.next().unwrap().outcome.expect("log pipeline");
    let (
        kaas_pipeline::document::ValidatedResource::Metric(metrics),
        kaas_pipeline::document::ValidatedResource::Log(logs),
    ) = (metrics, logs)
    else {
        panic!("the fixture's kinds");
    };
    s.store
        .apply_pipeline(TENANT, *metrics, &Actor::admin())
        .await
        .expect("apply the metric pipeline");
    s.store
        .apply_pipeline(TENANT, *logs, &Actor::admin())
        .await
        .expect("apply the log pipeline");

    let mut node_stream = AgentStream::open_as(&observer.url, &node, Vec::new(), AgentRole::Node)
        .await
        .unwrap();
    let (config, text) = next_config(&mut node_stream).await;
    assert!(!text.contains(METRIC_SECRET), "{text}");
    assert_eq!(config["pipelines"], serde_json::json!([]), "{text}");
    let input = &config["logPipelines"][0]["spec"]["input"];
    assert!(input.get("runtime").is_some(), "{text}");
    assert!(input.get("otlp").is_none(), "{text}");

    // The default instance names no role (an agent from before roles): the cluster's.
    let config = loop {
        let (config, text) = next_config(&mut default_stream).await;
        if config.get("logPipelines").is_some() {
            assert!(text.contains(METRIC_SECRET));
            break config;
        }
    };
    assert_eq!(config["pipelines"][0]["metadata"]["name"], "metrics");
    let input = &config["logPipelines"][0]["spec"]["input"];
    assert!(input.get("otlp").is_some());
    assert!(input.get("runtime").is_none());
}

/// Issue 13, finding 7: a `Join` retried with the same token and CSR (its answer was
/// lost) gets the same certificate instead of burning the single-use token (on
/// 552c13e: PERMISSION_DENIED "already used"); another CSR is still refused.
#[tokio::test]
async fn a_retried_join_with_the_same_csr_gets_the_same_certificate() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let (_, token) = observer.add_cluster("edge-1").await;
    let ca = bundle(s.dir.path());
    let (key_pem, csr_pem) = agent_key_and_csr();
    let first = observer
        .join_with(&ca, &token, "", key_pem.clone(), csr_pem.clone())
        .await
        .unwrap();
    let again = observer
        .join_with(&ca, &token, "", key_pem, csr_pem)
        .await
        .expect("the retry is answered");
    assert_eq!(again.cert_pem, first.cert_pem);
    assert_eq!(again.cluster_id, first.cluster_id);
    let other = observer.join(&ca, &token, "").await.err().expect("joined");
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(
        other.message().contains("already used"),
        "{}",
        other.message()
    );
    let mut stream = observer.open(&again).await.unwrap();
    assert!(stream.is_open().await);
}

/// Issue 13, finding 7 (CA rotation): after `rotate`, an agent on the old bundle keeps
/// streaming, learns the new bundle and is asked to renew; a new agent joins under the
/// new CA; after `retire`, the old CA's certificates are refused while renewed agents
/// go on.
#[tokio::test]
async fn a_ca_rotation_needs_no_rejoin_and_retiring_refuses_the_old_ca() {
    let s = setup().await;
    let dir = s.dir.path();
    let old_bundle = bundle(dir);
    let observer = Observer::start(dir, &s.store, slow_settings()).await;
    let (_, token) = observer.add_cluster("edge-1").await;
    let (_, stale_token) = observer.add_cluster("edge-2").await;
    let agent = observer.join(&old_bundle, &token, "").await.unwrap();
    // A second cluster's agent that will never renew.
    let stale = observer.join(&old_bundle, &stale_token, "").await.unwrap();
    observer.stop().await;

    rotation::rotate(dir).unwrap();
    let rotated = ClusterCa::load_or_create(dir).unwrap();
    let observer = Observer::start(dir, &s.store, slow_settings()).await;
    // The agent still trusts only the old CA, and keeps streaming.
    let mut stream = observer.open(&agent).await.unwrap();
    let mut learned = None;
    let mut asked_to_renew = false;
    while learned.is_none() || !asked_to_renew {
        match stream.next(DEADLINE).await.unwrap() {
            observer_message::Body::TrustBundle(bundle) => learned = Some(bundle.ca_bundle_pem),
            observer_message::Body::Command(command)
                if command.r#type == CommandType::RenewCertificate as i32 =>
            {
                asked_to_renew = true;
            }
            _ => {}
        }
    }
    let new_bundle = learned.unwrap();
    assert_eq!(new_bundle, rotated.bundle_pem());
    assert!(new_bundle.contains(old_bundle.as_str()));
    assert!(
        observer
            .metrics()
            .contains("kaas_observer_agent_streams_on_previous_ca 1"),
        "{}",
        observer.metrics()
    );

    // The agent that never renews still connects while both CAs are trusted.
    let mut stale_stream = observer.open(&stale).await.unwrap();
    assert!(stale_stream.is_open().await);
    drop(stale_stream);
    // A new agent joins under the new CA.
    let (_, new_token) = observer.add_cluster("edge-3").await;
    let newcomer = observer.join(&new_bundle, &new_token, "").await.unwrap();
    assert!(rotated.signed_by_active(&newcomer.der()));
    // The old agent renews: its new certificate is the new CA's.
    let (issued, key_pem) = stream.request_certificate("").await;
    let renewed = Agent {
        key_pem,
        cert_pem: issued.certificate_pem,
        bundle_pem: issued.ca_bundle_pem,
        ..agent.clone()
    };
    assert!(rotated.signed_by_active(&renewed.der()));
    observer.stop().await;

    rotation::retire(dir).unwrap();
    let observer = Observer::start(dir, &s.store, slow_settings()).await;
    let retired_bundle = bundle(dir);
    assert!(!retired_bundle.contains(old_bundle.as_str()));
    // The old CA's certificate is refused at the handshake, even by a client that
    // still trusts the server.
    let refused = AgentStream::open(
        &observer.url,
        &Agent {
            bundle_pem: new_bundle.clone(),
            ..stale.clone()
        },
        Vec::new(),
    )
    .await
    .err()
    .expect("a certificate of the retired CA connected");
    assert_ne!(refused.code(), Code::Ok);
    // Renewed and new agents go on.
    let mut renewed_stream = observer.open(&renewed).await.unwrap();
    assert!(renewed_stream.is_open().await);
    let mut newcomer_stream = observer.open(&newcomer).await.unwrap();
    assert!(newcomer_stream.is_open().await);
}

/// Issue 13, finding 6 (Join): `Join` is rate-limited per source address and every
/// refusal is counted by reason (on 552c13e any number of attempts were answered and
/// nothing was counted).
#[tokio::test]
async fn join_is_rate_limited_per_address_and_refusals_are_counted() {
    let s = setup().await;
    let settings = ControlSettings {
        join_limits: JoinLimits {
            rate_per_second: 0.01,
            burst: 3,
            ..JoinLimits::default()
        },
        ..slow_settings()
    };
    let observer = Observer::start(s.dir.path(), &s.store, settings).await;
    let ca = bundle(s.dir.path());
    let mut client = AgentControlClient::new(channel(&observer.url, &ca, None).await);
    let request = |token: &str, instance: &str| JoinRequest {
        join_token: token.to_owned(),
        csr_pem: agent_key_and_csr().1,
        agent_instance_id: "a".to_owned(),
        agent_version: "0".to_owned(),
        instance_name: instance.to_owned(),
    };
    let unknown = client.join(request("kjt_unknown", "")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
    let malformed = client
        .join(request("kjt_unknown", "Not A Label"))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(
        malformed.message().contains("instance_name"),
        "{malformed:?}"
    );
    let too_big = JoinRequest {
        agent_instance_id: "x".repeat(100_000),
        ..request("kjt_unknown", "")
    };
    assert_eq!(
        client.join(too_big).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let limited = client.join(request("kjt_unknown", "")).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains("retry in"),
        "{}",
        limited.message()
    );
    // Another source address has its own budget.
    let elsewhere = Endpoint::from_shared(observer.url.clone())
        .unwrap()
        .local_address(Some(std::net::IpAddr::from([127, 0, 0, 2])))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answered = AgentControlClient::new(elsewhere)
        .join(request("kjt_unknown", ""))
        .await
        .unwrap_err();
    assert_eq!(answered.code(), Code::PermissionDenied, "{answered:?}");
    let metrics = observer.metrics();
    for line in [
        r#"kaas_observer_join_failures_total{reason="unknown_token"} 2"#,
        r#"kaas_observer_join_failures_total{reason="malformed"} 2"#,
        r#"kaas_observer_join_failures_total{reason="rate_limited"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Issue 13, finding 6 (Join): a token is checked without the store's single writer,
/// so while the writer is held (here by another connection's open write transaction)
/// unauthenticated joins are still answered (on 552c13e every Join took the writer:
/// UNAVAILABLE after the busy timeout).
#[tokio::test]
async fn joins_with_a_bad_token_are_answered_while_the_writer_is_busy() {
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let ca = bundle(s.dir.path());
    let url = format!(
        "sqlite://{}?mode=rw",
        s.dir.path().join("observer.db").display()
    );
    let other = sea_orm::Database::connect(url.as_str()).await.unwrap();
    let holding = other.begin().await.unwrap();
    holding
        .execute_unprepared("INSERT INTO tenants (name, created_at_ms) VALUES ('lock', 0)")
        .await
        .unwrap();
    let refused = tokio::time::timeout(DEADLINE, observer.join(&ca, "kjt_unknown", ""))
        .await
        .expect("an answer while the writer is held")
        .err()
        .expect("an unknown token joined");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    holding.rollback().await.unwrap();
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 13, finding 6 (Join): what a caller of `Join` chose reaches the log truncated
/// and escaped, so it can neither forge log lines nor flood the log (on 552c13e the
/// instance id was logged verbatim, newlines included).
#[tokio::test]
async fn join_logs_what_callers_chose_truncated_and_escaped() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = setup().await;
    let observer = Observer::start(s.dir.path(), &s.store, slow_settings()).await;
    let ca = bundle(s.dir.path());
    let forged = format!(
        "pod\n2026-01-01T00:00:00Z ERROR forged line{}",
        "x".repeat(180)
    );
    let mut client = AgentControlClient::new(channel(&observer.url, &ca, None).await);
    let refused = client
        .join(JoinRequest {
            join_token: "kjt_unknown".to_owned(),
            csr_pem: agent_key_and_csr().1,
            agent_instance_id: forged.clone(),
            agent_version: "0".to_owned(),
            instance_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|line| line.contains("join refused"))
        .unwrap_or_else(|| panic!("no join log line in\n{log}"));
    assert!(line.contains(r"pod\n2026-01-01"), "{line}");
    assert!(line.contains('…'), "{line}");
    assert!(
        !log.contains("\n2026-01-01T00:00:00Z ERROR forged"),
        "{log}"
    );
    assert!(!log.contains(&"x".repeat(180)), "{log}");
}

/// Issue 13, findings 7 and 8, the upgrade path of their fix (a guard, not the proof
/// of a finding: 552c13e had nothing to migrate): a database and an agent identity
/// created the way 552c13e creates them (its four migrations; a cluster row with the recorded
/// serial; a certificate naming only `kaas-observer://cluster/<name>`, signed by the CA
/// in the data directory) keep working after the upgrade: the old certificate opens a
/// stream as the cluster's default instance, under the cluster's old name as its id.
#[tokio::test]
async fn an_identity_from_before_the_upgrade_keeps_working() {
    use sea_orm_migration::MigratorTrait as _;
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = ClusterCa::load_or_create(dir.path()).expect("cluster CA");
    let ca_key = std::fs::read_to_string(dir.path().join("ca.key")).expect("CA key");
    let ca_cert = std::fs::read_to_string(dir.path().join("ca.crt")).expect("CA certificate");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &ca_cert,
        rcgen::KeyPair::from_pem(&ca_key).expect("CA key"),
    )
    .expect("issuer");
    // The certificate as 552c13e issued it: the cluster URI only, client auth.
    let key = rcgen::KeyPair::generate().expect("agent key");
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "kaas-observer://cluster/edge-1".try_into().expect("URI"),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x5e, 0x01]));
    let certificate = params.signed_by(&key, &issuer).expect("sign");
    let old = Agent {
        cluster_id: "edge-1".to_owned(),
        key_pem: key.serialize_pem(),
        cert_pem: certificate.pem(),
        bundle_pem: ca.bundle_pem(),
    };

    let path = dir.path().join("observer.db");
    let raw = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", path.display()).as_str())
        .await
        .expect("open the database");
    kaas_observer::store::migrations::Migrator::up(&raw, Some(4))
        .await
        .expect("the migrations of 552c13e");
    for sql in [
        "INSERT INTO tenants (name, created_at_ms) VALUES ('shop', 1)",
        "INSERT INTO clusters (name, tenant, labels, state, connected, certificate_serial, \
         certificate_not_after_ms, created_at_ms, state_changed_at_ms) VALUES \
         ('edge-1', 'shop', '{\"env\":\"prod\"}', 'active', false, '5e01', 9000000000000, 5, 5)",
    ] {
        raw.execute_unprepared(sql).await.expect("old rows");
    }
    drop(raw);

    let store = Store::open_sqlite(&path, SecretBox::generate().expect("secrets key"))
        .await
        .expect("the upgraded store");
    let observer = Observer::start(dir.path(), &store, slow_settings()).await;
    let mut stream = observer
        .open(&old)
        .await
        .expect("the old certificate connects");
    assert!(stream.is_open().await);
    let cluster = store
        .get_cluster_named("shop", "edge-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.id, "edge-1");
    // A re-join of the migrated cluster still ends the old certificate's stream.
    let token = observer.mint("edge-1").await;
    let rejoined = observer.join(&ca.bundle_pem(), &token, "").await.unwrap();
    assert_eq!(rejoined.cluster_id, "edge-1");
    assert_eq!(stream.ended().await.code(), Code::PermissionDenied);
}

/// The identity flags of `observer serve` are checked before anything starts, with the
/// flag named: a validity too short to renew in, a negative join rate.
#[test]
fn bad_identity_flags_stop_the_observer_with_the_flag_named() {
    for (flag, value, expected) in [
        (
            "--agent-certificate-validity",
            "1s",
            "--agent-certificate-validity: at least",
        ),
        (
            "--agent-certificate-validity",
            "soon",
            "--agent-certificate-validity:",
        ),
        ("--join-rate-limit", "-1", "--join-rate-limit:"),
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let argument = format!("{flag}={value}");
        let output = kaas_test_support::process::run(
            env!("CARGO_BIN_EXE_observer"),
            &[
                "serve",
                "--data-dir",
                data.to_str().expect("UTF-8 path"),
                &argument,
            ],
            "",
        );
        assert_ne!(output.code(), 0, "{flag} {value}");
        assert!(
            output.stderr.contains(expected),
            "{flag} {value}: {}",
            output.stderr
        );
    }
}
