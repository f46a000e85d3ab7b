//! Health per agent instance end to end (issue 16): a cluster's cluster-level instance
//! and two node instances, each with its own certificate, report over real control
//! streams (TLS on a loopback port) different health for the same log pipeline; the
//! pipeline's condition and the cluster's API view show the worst instance with the
//! count of affected ones, and a node instance gone past the time-to-live is dropped
//! by the fleet tick without the cluster turning silent.
//!
//! Issue 17: an agent that predates trace pipelines applies the rest of its
//! configuration, and the trace pipeline says why it does not run there; a gateway
//! replica connects with its role, gets the pushed part of the cluster's pipelines,
//! reports health as an instance of its own, and once it does the cluster-level
//! instance is sent its configuration without the pushed inputs.

mod api_harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{ADMIN, Harness};
use kaas_observer::control::{
    ControlMetrics, ControlService, ControlSettings, serve, server_tls_config,
};
use kaas_observer::fleet::{LifecycleSettings, tick};
use kaas_observer::identity::ClusterCa;
use kaas_observer::internal_events::StreamRefusal;
use kaas_observer::store::{Actor, ClusterState, NewCluster, Store, now_ms};
use kaas_pipeline::status::{
    CONDITION_CONFIGURATION_APPLIED, CONDITION_FLOW_HEALTHY, Condition, ConditionStatus,
};
use kaas_pipeline::{ValidatedLogPipeline, ValidatedTracePipeline};
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHealth, AgentHello, AgentMessage, AgentRole, Capability, CertificateIssued,
    CertificateRequest, ConfigState, ConfigStatus, JoinRequest, ObserverMessage, PipelineError,
    PipelineHealth, agent_message, observer_message,
};
use kaas_test_support::tls::agent_key_and_csr;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(15);
const TENANT: &str = "shop";
const PIPELINE: &str = "logs";
const TRACE_PIPELINE: &str = "traces";

/// An agent instance's credentials.
struct Credentials {
    key_pem: String,
    cert_pem: String,
}

/// The control service on the API harness's store, and one cluster.
struct Setup {
    harness: Harness,
    metrics: Arc<ControlMetrics>,
    url: String,
    bundle: String,
    cluster: String,
}

async fn setup() -> Setup {
    let harness = Harness::new().await;
    let store = harness.store.clone();
    store
        .create_tenant(TENANT, &Actor::admin())
        .await
        .expect("the test step succeeds");
    let ca = Arc::new(ClusterCa::load_or_create(harness.dir.path()).expect("cluster CA"));
    let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).expect("server TLS");
    let settings = ControlSettings {
        status_debounce: Duration::from_millis(20),
        // The cluster instance's stream asks whether the gateway is in use at every
        // health report (instead of once a minute), so a test waits for reports only.
        gateway_check_interval: Duration::ZERO,
        ..ControlSettings::default()
    };
    let service = ControlService::new(store.clone(), ca.clone(), settings);
    let metrics = service.metrics();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the test step succeeds");
    let url = format!(
        "https://{}",
        listener.local_addr().expect("the test step succeeds")
    );
    tokio::spawn(async move { serve(listener, service, tls).await.expect("serve") });
    let (cluster, _) = store
        .create_cluster(
            NewCluster {
                name: "edge-1".to_owned(),
                tenant: TENANT.to_owned(),
                labels: Default::default(),
                api_endpoint: None,
            },
            Duration::from_secs(3600),
            &Actor::admin(),
        )
        .await
        .expect("the test step succeeds");
    apply_log_pipeline(&store).await;
    Setup {
        harness,
        metrics,
        url,
        bundle: ca.bundle_pem(),
        cluster: cluster.id,
    }
}

/// A trace pipeline [`TRACE_PIPELINE`] selecting every cluster of the tenant.
async fn apply_trace_pipeline(store: &Store) {
    let text = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: TracePipeline\nmetadata: {{name: {TRACE_PIPELINE}}}\nspec:\n  output: {{otlp: {{endpoint: \"https://otlp.example\"}}}}\n"
    );
    let context = kaas_pipeline::ValidationContext::tenant_default();
    let document = kaas_pipeline::document::parse_documents(&text, &context).remove(0);
    let Ok(kaas_pipeline::document::ValidatedResource::Trace(pipeline)) = document.outcome else {
        panic!("the fixture is a valid trace pipeline");
    };
    store
        .apply_pipeline(TENANT, *pipeline, &Actor::admin())
        .await
        .expect("the test step succeeds");
}

async fn apply_log_pipeline(store: &Store) {
    let text = format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: LogPipeline
metadata: {{name: {PIPELINE}}}
spec:
  input: {{runtime: {{enabled: true}}, otlp: {{enabled: true}}}}
  output: {{loki: {{url: "https://loki.example"}}}}
"#
    );
    let context = kaas_pipeline::ValidationContext::tenant_default();
    let document = kaas_pipeline::document::parse_documents(&text, &context)
        .into_iter()
        .next()
        .expect("the test step succeeds");
    let kaas_pipeline::document::ValidatedResource::Log(pipeline) =
        document.outcome.expect("the test step succeeds")
    else {
        panic!("the fixture is a log pipeline");
    };
    store
        .apply_pipeline(TENANT, *pipeline, &Actor::admin())
        .await
        .expect("the test step succeeds");
}

impl Setup {
    async fn channel(&self, credentials: Option<&Credentials>) -> Channel {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.bundle));
        if let Some(c) = credentials {
            tls = tls.identity(Identity::from_pem(&c.cert_pem, &c.key_pem));
        }
        Endpoint::from_shared(self.url.clone())
            .expect("the test step succeeds")
            .tls_config(tls)
            .expect("the test step succeeds")
            .connect()
            .await
            .expect("connect to the observer")
    }

    /// The cluster-level instance joins with a fresh token.
    async fn join(&self) -> Credentials {
        let token = (self.harness.store)
            .mint_join_token(&self.cluster, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("the test step succeeds");
        let (key_pem, csr_pem) = agent_key_and_csr();
        let response = AgentControlClient::new(self.channel(None).await)
            .join(JoinRequest {
                join_token: token,
                csr_pem,
                agent_instance_id: "default-process".to_owned(),
                agent_version: "0.1.0".to_owned(),
                instance_name: String::new(),
            })
            .await
            .expect("join")
            .into_inner();
        Credentials {
            key_pem,
            cert_pem: response.certificate_pem,
        }
    }

    async fn open(&self, credentials: &Credentials, process: &str, role: AgentRole) -> Agent {
        self.open_version(credentials, process, "0.1.0", role).await
    }

    async fn open_version(
        &self,
        credentials: &Credentials,
        process: &str,
        version: &str,
        role: AgentRole,
    ) -> Agent {
        let capabilities = [Capability::AcceptsRemoteConfig];
        (self.open_with(credentials, process, version, role, &capabilities)).await
    }

    /// [`Setup::open_version`] announcing `capabilities`.
    async fn open_with(
        &self,
        credentials: &Credentials,
        process: &str,
        version: &str,
        role: AgentRole,
        capabilities: &[Capability],
    ) -> Agent {
        (self
            .try_open(credentials, (process, version), role, capabilities)
            .await)
            .expect("the stream opens")
    }

    /// [`Setup::open_with`], or the status the observer refuses the stream with.
    async fn try_open(
        &self,
        credentials: &Credentials,
        (process, version): (&str, &str),
        role: AgentRole,
        capabilities: &[Capability],
    ) -> Result<Agent, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let hello = AgentHello {
            cluster_id: self.cluster.clone(),
            agent_instance_id: process.to_owned(),
            agent_version: version.to_owned(),
            capabilities: capabilities.iter().map(|c| *c as i32).collect(),
            role: role as i32,
            ..AgentHello::default()
        };
        let mut agent = Agent {
            tx,
            inbound: None,
            sequence: 0,
        };
        agent.send(agent_message::Body::Hello(hello)).await;
        let inbound = AgentControlClient::new(self.channel(Some(credentials)).await)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        agent.inbound = Some(inbound);
        Ok(agent)
    }

    /// The log pipeline's `FlowHealthy` once it satisfies `predicate`.
    async fn flow_healthy(&self, predicate: impl Fn(&Condition) -> bool) -> Condition {
        let until = Instant::now() + DEADLINE;
        loop {
            let stored = (self.harness.store)
                .get_pipeline_of::<ValidatedLogPipeline>(TENANT, PIPELINE)
                .await
                .expect("the test step succeeds")
                .expect("the test step succeeds");
            let status = stored.status;
            if let Some(condition) = (status.conditions.iter())
                .find(|c| c.type_ == CONDITION_FLOW_HEALTHY)
                .filter(|c| predicate(c))
            {
                return condition.clone();
            }
            assert!(
                Instant::now() < until,
                "FlowHealthy never matched: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The condition `type_` of pipeline `name` of kind `P` once it satisfies
    /// `predicate`.
    async fn condition_of<P: kaas_observer::store::PipelineKind>(
        &self,
        name: &str,
        type_: &str,
        predicate: impl Fn(&Condition) -> bool,
    ) -> Condition {
        let until = Instant::now() + DEADLINE;
        loop {
            let stored = (self.harness.store)
                .get_pipeline_of::<P>(TENANT, name)
                .await
                .expect("the test step succeeds")
                .expect("the pipeline is stored");
            let status = stored.status;
            if let Some(condition) = (status.conditions.iter())
                .find(|c| c.type_ == type_)
                .filter(|c| predicate(c))
            {
                return condition.clone();
            }
            assert!(
                Instant::now() < until,
                "{name}'s {type_} never matched: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the cluster's agent is recorded as disconnected.
    async fn disconnected(&self) {
        let until = Instant::now() + DEADLINE;
        loop {
            let cluster = (self.harness.store)
                .get_cluster(&self.cluster)
                .await
                .expect("the test step succeeds")
                .expect("the test step succeeds");
            if !cluster.connected {
                return;
            }
            assert!(Instant::now() < until, "the cluster stayed connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log pipeline's entry in the cluster's API view.
    async fn pipeline_health(&self) -> serde_json::Value {
        let (entry, view) = self.pipeline_health_entry().await;
        entry.unwrap_or_else(|| panic!("no pipelineHealth entry: {view:#}"))
    }

    /// `GET /api/v1/logpipelines/{name}/status`.
    async fn pipeline_status(&self) -> serde_json::Value {
        let uri = format!("/api/v1/logpipelines/{PIPELINE}/status?tenant={TENANT}");
        let answer = self.harness.get(&uri, ADMIN).await;
        assert!(answer.status.is_success(), "{}", answer.text);
        answer.json()
    }

    /// The log pipeline's entry in the cluster's API view, if it has one, and the view.
    async fn pipeline_health_entry(&self) -> (Option<serde_json::Value>, serde_json::Value) {
        let uri = format!("/api/v1/clusters/{}", self.cluster);
        let answer = self.harness.get(&uri, ADMIN).await;
        assert!(answer.status.is_success(), "{}", answer.text);
        let view = answer.json();
        let entry = (view["pipelineHealth"]
            .as_array()
            .cloned()
            .unwrap_or_default())
        .into_iter()
        .find(|p| p["pipeline"] == PIPELINE && p["kind"] == "LogPipeline");
        (entry, view)
    }
}

/// The agent side of one stream.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Option<Streaming<ObserverMessage>>,
    sequence: u64,
}

impl Agent {
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

    /// A certificate for the cluster's instance `instance` in `role`, asked for over
    /// this stream.
    async fn certificate_for(&mut self, instance: &str, role: AgentRole) -> Credentials {
        let (issued, key_pem) = self.ask_certificate(instance, role).await;
        assert_eq!(issued.refused, "", "{issued:?}");
        Credentials {
            key_pem,
            cert_pem: issued.certificate_pem,
        }
    }

    /// The observer's answer to a request for `instance`'s certificate in `role`.
    async fn ask_certificate(
        &mut self,
        instance: &str,
        role: AgentRole,
    ) -> (CertificateIssued, String) {
        let (key_pem, csr_pem) = agent_key_and_csr();
        self.send(agent_message::Body::CertificateRequest(
            CertificateRequest {
                csr_pem,
                instance_name: instance.to_owned(),
                role: role as i32,
            },
        ))
        .await;
        let inbound = self.inbound.as_mut().expect("the test step succeeds");
        loop {
            let message = tokio::time::timeout(DEADLINE, inbound.message())
                .await
                .expect("an answer in time")
                .expect("the stream is open")
                .expect("the stream is open");
            if let Some(observer_message::Body::CertificateIssued(issued)) = message.body {
                return (issued, key_pem);
            }
        }
    }

    /// Waits for the configuration the observer offers, answers that it is applied,
    /// and returns it.
    async fn apply_offered(&mut self) -> String {
        let inbound = self.inbound.as_mut().expect("the stream is open");
        let update = loop {
            let message = tokio::time::timeout(DEADLINE, inbound.message())
                .await
                .expect("a configuration in time")
                .expect("the stream is open")
                .expect("the stream is open");
            if let Some(observer_message::Body::ConfigUpdate(update)) = message.body {
                break update;
            }
        };
        self.send(agent_message::Body::ConfigStatus(ConfigStatus {
            config_hash: update.config_hash.clone(),
            state: ConfigState::Applied as i32,
            errors: Vec::new(),
            running_config_hash: update.config_hash,
        }))
        .await;
        String::from_utf8(update.body).expect("a YAML configuration")
    }

    /// The next configuration the observer sends, as JSON; `None` when none comes
    /// within `within`.
    async fn config_within(&mut self, within: Duration) -> Option<serde_json::Value> {
        let inbound = self.inbound.as_mut().expect("the test step succeeds");
        let until = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(until, inbound.message())
                .await
                .ok()?;
            let message = message
                .expect("the stream is open")
                .expect("the stream is open");
            if let Some(observer_message::Body::ConfigUpdate(update)) = message.body {
                return Some(serde_json::from_slice(&update.body).expect("JSON"));
            }
        }
    }

    /// Reports the log pipeline's health: with `error`, a backend that refuses.
    async fn report(&mut self, error: Option<&str>) {
        let now = now_ms();
        let pipeline = PipelineHealth {
            pipeline: PIPELINE.to_owned(),
            kind: "LogPipeline".to_owned(),
            samples_sent: 10,
            last_error: error.map(|message| PipelineError {
                timestamp_unix_ms: now,
                reason: "BackendUnreachable".to_owned(),
                message: message.to_owned(),
            }),
            ..PipelineHealth::default()
        };
        self.send(agent_message::Body::Health(AgentHealth {
            timestamp_unix_ms: now,
            pipelines: vec![pipeline],
        }))
        .await;
    }
}

/// The cluster-level instance and node instances `node-1` and `node-2`, connected.
async fn three_instances(s: &Setup) -> (Agent, Agent, Agent) {
    let default_credentials = s.join().await;
    let mut default = s
        .open(&default_credentials, "default-process", AgentRole::Cluster)
        .await;
    let node1 = default.certificate_for("node-1", AgentRole::Node).await;
    let node2 = default.certificate_for("node-2", AgentRole::Node).await;
    let node1 = s.open(&node1, "node-1-process", AgentRole::Node).await;
    let node2 = s.open(&node2, "node-2-process", AgentRole::Node).await;
    (default, node1, node2)
}

/// Issue 16: a cluster instance and two node instances report different health for
/// the same log pipeline: `FlowHealthy` is the worst (False, the failing node named)
/// with 1 of 3 instances affected, and the cluster's API view says so in numbers.
#[tokio::test]
async fn a_pipeline_is_the_worst_of_its_instances_with_the_count_affected() {
    let s = setup().await;
    let (mut default, mut node1, mut node2) = three_instances(&s).await;
    default.report(None).await;
    node1.report(None).await;
    let healthy = s.flow_healthy(|c| c.status == ConditionStatus::True).await;
    assert!(
        healthy.message.contains("1 reporting cluster"),
        "{healthy:?}"
    );

    node2.report(Some("connection refused by loki")).await;
    let condition = s.flow_healthy(|c| c.status == ConditionStatus::False).await;
    assert_eq!(condition.reason, "BackendUnreachable");
    assert!(
        condition
            .message
            .contains("cluster edge-1, instance node-2 (1 of 3 instances affected)"),
        "{}",
        condition.message
    );
    assert!(condition.message.contains("connection refused by loki"));

    let view = s.pipeline_health().await;
    assert_eq!(view["status"], "False", "{view:#}");
    assert_eq!(view["reason"], "BackendUnreachable");
    assert_eq!(view["worstInstance"], "node-2");
    assert_eq!(
        view["instances"],
        serde_json::json!({"reporting": 3, "affected": 1})
    );
    // The pipeline's status says the same per cluster, in numbers.
    let status = s.pipeline_status().await;
    let clusters = status["clusters"].as_array().expect("per-cluster health");
    assert_eq!(clusters.len(), 1, "{status:#}");
    assert_eq!(clusters[0]["cluster"], "edge-1");
    assert_eq!(clusters[0]["status"], "False");
    assert_eq!(clusters[0]["worstInstance"], "node-2");
    assert_eq!(
        clusters[0]["instances"],
        serde_json::json!({"reporting": 3, "affected": 1})
    );

    // node-2 recovers: healthy again, all three reporting.
    node2.report(None).await;
    s.flow_healthy(|c| c.status == ConditionStatus::True).await;
    let view = s.pipeline_health().await;
    assert_eq!(
        view["instances"],
        serde_json::json!({"reporting": 3, "affected": 0})
    );
    assert!(view.get("worstInstance").is_none(), "{view:#}");
}

/// Issue 16: a failing node instance that goes away is dropped from the pipeline's
/// health once its last report is older than the time-to-live (the fleet tick prunes
/// it), and neither its leaving nor the prune makes the cluster silent or
/// disconnected: liveness stays with the cluster's stream.
#[tokio::test]
async fn a_gone_instance_is_dropped_after_the_ttl_and_the_cluster_stays_alive() {
    let s = setup().await;
    let store = s.harness.store.clone();
    let ttl = Duration::from_millis(1500);
    store.set_instance_health_ttl(ttl);
    let (mut default, mut node1, mut node2) = three_instances(&s).await;
    default.report(None).await;
    node1.report(None).await;
    node2.report(Some("connection refused by loki")).await;
    s.flow_healthy(|c| c.status == ConditionStatus::False).await;
    let view = s.pipeline_health().await;
    assert_eq!(
        view["instances"],
        serde_json::json!({"reporting": 3, "affected": 1})
    );

    // node-2's node goes away: its stream ends, the others keep reporting.
    drop(node2);
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    default.report(None).await;
    node1.report(None).await;
    let settings = LifecycleSettings {
        silent_after: Duration::from_secs(60),
        ..LifecycleSettings::default()
    };
    let until = Instant::now() + DEADLINE;
    loop {
        // The fleet tick: the lifecycle pass, with the prune.
        let clusters = tick(&store, &settings)
            .await
            .expect("the test step succeeds");
        let cluster = clusters
            .iter()
            .find(|c| c.id == s.cluster)
            .expect("the test step succeeds");
        assert_eq!(cluster.state, ClusterState::Active, "never silent");
        // The live instances' fresh reports are written in batches: until they land,
        // a tick may find every row past the TTL and the entry briefly absent.
        let (entry, view) = s.pipeline_health_entry().await;
        if entry
            .is_some_and(|e| e["instances"] == serde_json::json!({"reporting": 2, "affected": 0}))
        {
            break;
        }
        assert!(Instant::now() < until, "node-2 was never dropped: {view:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let condition = s.flow_healthy(|c| c.status == ConditionStatus::True).await;
    assert_eq!(condition.reason, "FlowHealthy");
    let cluster = store
        .get_cluster(&s.cluster)
        .await
        .expect("the test step succeeds")
        .expect("the test step succeeds");
    assert_eq!(cluster.state, ClusterState::Active);
    assert!(
        cluster.connected,
        "a node instance leaving does not disconnect the cluster"
    );
}

/// Issue 16: the cluster's agent (its process id, version and connection) is its
/// cluster-level instance: node instances connecting with another process and version
/// change none of it, and when the cluster-level stream ends the cluster is
/// disconnected although node streams stay open.
#[tokio::test]
async fn node_instances_do_not_replace_the_clusters_agent() {
    let s = setup().await;
    let store = s.harness.store.clone();
    let default_credentials = s.join().await;
    let mut default = s
        .open(&default_credentials, "default-process", AgentRole::Cluster)
        .await;
    let node1 = default.certificate_for("node-1", AgentRole::Node).await;
    // The health report is written behind the connect: once it is stored, so is the
    // cluster-level stream's connect.
    default.report(None).await;
    s.flow_healthy(|c| c.status == ConditionStatus::True).await;
    let mut node = s
        .open_version(&node1, "node-1-process", "9.9.9-node", AgentRole::Node)
        .await;
    node.report(None).await;
    let until = Instant::now() + DEADLINE;
    while s.pipeline_health().await["instances"]["reporting"] != 2 {
        assert!(Instant::now() < until, "the node's report never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = s
        .harness
        .get(&format!("/api/v1/clusters/{}", s.cluster), ADMIN)
        .await
        .json();
    assert_eq!(view["agentInstanceId"], "default-process", "{view:#}");
    assert_eq!(view["agentVersion"], "0.1.0", "{view:#}");
    assert_eq!(view["connected"], true, "{view:#}");

    // The cluster-level instance goes; the node's stream stays open.
    drop(default);
    let until = Instant::now() + DEADLINE;
    loop {
        let cluster = store
            .get_cluster(&s.cluster)
            .await
            .expect("the test step succeeds")
            .expect("the test step succeeds");
        if !cluster.connected {
            assert_eq!(
                cluster.agent_instance_id.as_deref(),
                Some("default-process")
            );
            break;
        }
        assert!(
            Instant::now() < until,
            "a node stream kept the cluster connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.report(None).await;
}

/// Issue 17: an agent that does not announce `CAPABILITY_TRACE_PIPELINES` is sent its
/// configuration without the trace pipeline; once it applies that, its other pipelines
/// are `Applied` (the desired hash is of what it was sent, not of a configuration it
/// was never offered), and the trace pipeline is `AgentUnsupported`, naming the
/// cluster. The same agent upgraded gets the trace pipeline, and it is `Applied`.
#[tokio::test]
async fn an_agent_without_trace_pipelines_applies_the_rest_and_the_trace_pipeline_says_why() {
    let s = setup().await;
    apply_trace_pipeline(&s.harness.store).await;
    let credentials = s.join().await;
    let older = [Capability::AcceptsRemoteConfig];
    let mut agent = s
        .open_with(
            &credentials,
            "old-process",
            "0.1.0",
            AgentRole::Cluster,
            &older,
        )
        .await;
    let sent = agent.apply_offered().await;
    assert!(!sent.contains("tracePipelines"), "{sent}");
    let applied = s
        .condition_of::<ValidatedLogPipeline>(PIPELINE, CONDITION_CONFIGURATION_APPLIED, |c| {
            c.status == ConditionStatus::True
        })
        .await;
    assert_eq!(applied.reason, "Applied");
    let unsupported = s
        .condition_of::<ValidatedTracePipeline>(
            TRACE_PIPELINE,
            CONDITION_CONFIGURATION_APPLIED,
            |c| c.reason == "AgentUnsupported",
        )
        .await;
    assert_eq!(unsupported.status, ConditionStatus::False);
    assert!(
        unsupported.message.contains("edge-1"),
        "{}",
        unsupported.message
    );

    drop(agent);
    s.disconnected().await;
    let upgraded = [Capability::AcceptsRemoteConfig, Capability::TracePipelines];
    let mut agent = s
        .open_with(
            &credentials,
            "new-process",
            "0.2.0",
            AgentRole::Cluster,
            &upgraded,
        )
        .await;
    let sent = agent.apply_offered().await;
    assert!(sent.contains("tracePipelines"), "{sent}");
    let applied = s
        .condition_of::<ValidatedTracePipeline>(
            TRACE_PIPELINE,
            CONDITION_CONFIGURATION_APPLIED,
            |c| c.status == ConditionStatus::True,
        )
        .await;
    assert_eq!(applied.reason, "Applied", "{}", applied.message);
}

/// A metric pipeline that scrapes annotated workloads and takes remote-write pushes.
async fn apply_metric_pipeline(store: &Store) {
    let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: metrics}
spec:
  input: {prometheus: {enabled: true}, remoteWrite: {enabled: true}}
  output: {prometheusRemoteWrite: {url: "https://rw.example/api/v1/write"}}
"#;
    let context = kaas_pipeline::ValidationContext::tenant_default();
    let document = kaas_pipeline::document::parse_documents(text, &context)
        .into_iter()
        .next()
        .expect("the test step succeeds");
    let kaas_pipeline::document::ValidatedResource::Metric(pipeline) =
        document.outcome.expect("the test step succeeds")
    else {
        panic!("the fixture is a metric pipeline");
    };
    store
        .apply_pipeline(TENANT, *pipeline, &Actor::admin())
        .await
        .expect("the test step succeeds");
}

/// The inputs of `config`'s pipeline named `name` in `list` (`pipelines`,
/// `logPipelines`), as their keys; `None` when it has no such pipeline.
fn inputs(config: &serde_json::Value, list: &str, name: &str) -> Option<Vec<String>> {
    let pipeline =
        (config[list].as_array().into_iter().flatten()).find(|p| p["metadata"]["name"] == name)?;
    let input = pipeline["spec"]["input"].as_object().expect("an input");
    Some(input.keys().cloned().collect())
}

/// Issue 17: a gateway replica (its own certificate, issued over the cluster's stream
/// like a node's) connects with its role and gets only the pushed inputs: the metric
/// pipeline's remote-write and the log pipeline's OTLP, never the scrape or the
/// container logs. It reports health as an instance of its own; from then on the
/// gateway is in use, and the cluster-level instance, which had every input but the
/// node's, is sent its configuration with the scrape alone.
#[tokio::test]
async fn a_gateway_replica_takes_the_pushed_inputs_from_the_cluster_instance() {
    let s = setup().await;
    apply_metric_pipeline(&s.harness.store).await;
    let default_credentials = s.join().await;
    let mut default = s
        .open(&default_credentials, "default-process", AgentRole::Cluster)
        .await;
    let before = default
        .config_within(DEADLINE)
        .await
        .expect("a configuration");
    assert_eq!(
        inputs(&before, "pipelines", "metrics").unwrap(),
        ["prometheus", "remoteWrite"]
    );
    assert_eq!(inputs(&before, "logPipelines", PIPELINE).unwrap(), ["otlp"]);

    let replica = default
        .certificate_for("cluster-agent-gateway-0", AgentRole::Gateway)
        .await;
    let mut gateway = s
        .open(&replica, "gateway-0-process", AgentRole::Gateway)
        .await;
    let part = gateway
        .config_within(DEADLINE)
        .await
        .expect("a configuration");
    assert_eq!(
        inputs(&part, "pipelines", "metrics").unwrap(),
        ["remoteWrite"],
        "{part:#}"
    );
    assert_eq!(inputs(&part, "logPipelines", PIPELINE).unwrap(), ["otlp"]);
    assert_eq!(
        part["pipelines"].as_array().map(Vec::len),
        Some(1),
        "{part:#}"
    );

    // The gateway's health is its own instance's, as a node's is.
    gateway.report(None).await;
    let until = Instant::now() + DEADLINE;
    while s
        .pipeline_health_entry()
        .await
        .0
        .map(|e| e["instances"]["reporting"].clone())
        != Some(1.into())
    {
        assert!(Instant::now() < until, "the gateway's report never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // At its next health report the cluster instance learns the gateway is in use.
    let until = Instant::now() + DEADLINE;
    let after = loop {
        default.report(None).await;
        if let Some(config) = default.config_within(Duration::from_millis(500)).await {
            break config;
        }
        assert!(
            Instant::now() < until,
            "the cluster instance kept the pushes"
        );
    };
    assert_eq!(
        inputs(&after, "pipelines", "metrics").unwrap(),
        ["prometheus"],
        "{after:#}"
    );
    assert_eq!(inputs(&after, "logPipelines", PIPELINE), None, "{after:#}");
}

/// The role is bound to the certificate: a node's certificate claiming the cluster role
/// (all credentials) or the gateway's (the pushed pipelines'), or a gateway replica's
/// claiming the cluster role, is refused before anything is sent; only `default` is
/// the cluster (also when it names no role), and no other instance's certificate can
/// be asked for as the cluster's. Before the binding each of these streams opened and
/// received its claimed role's configuration.
#[tokio::test]
async fn an_instance_may_claim_only_the_role_its_certificate_allows() {
    let s = setup().await;
    apply_metric_pipeline(&s.harness.store).await;
    let joined = s.join().await;
    let mut default = s.open(&joined, "default", AgentRole::Unspecified).await;
    assert!(default.config_within(DEADLINE).await.is_some());
    let node = default.certificate_for("node-1", AgentRole::Node).await;
    let gateway = (default.certificate_for("cluster-agent-gateway-0", AgentRole::Gateway)).await;
    let (issued, _) = default.ask_certificate("node-2", AgentRole::Cluster).await;
    assert!(issued.refused.contains("cluster-level"), "{issued:?}");
    let capabilities = [Capability::AcceptsRemoteConfig];
    for (credentials, claimed, expected) in [
        (
            &node,
            AgentRole::Cluster,
            "\"node-1\"'s certificate allows the role node, not cluster",
        ),
        (
            &node,
            AgentRole::Unspecified,
            "allows the role node, not cluster",
        ),
        (
            &node,
            AgentRole::Gateway,
            "allows the role node, not gateway",
        ),
        (
            &gateway,
            AgentRole::Cluster,
            "\"cluster-agent-gateway-0\"'s certificate allows the role gateway, not cluster",
        ),
        (
            &gateway,
            AgentRole::Node,
            "allows the role gateway, not node",
        ),
    ] {
        let opened = s.try_open(credentials, ("p", "0.1.0"), claimed, &capabilities);
        let refused = opened.await.err().expect("refused, so no configuration");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains(expected),
            "{claimed:?}: {refused:?}"
        );
    }
    // Counted where the provider can alert on it, apart from other refusals.
    assert_eq!(s.metrics.stream_refusals.count(StreamRefusal::WrongRole), 5);
    assert_eq!(
        s.metrics.stream_refusals.count(StreamRefusal::Certificate),
        0
    );
    s.open(&node, "node-1", AgentRole::Node).await;
    let mut gateway = s.open(&gateway, "gateway-0", AgentRole::Gateway).await;
    assert!(gateway.config_within(DEADLINE).await.is_some());
    let joined = s.try_open(&joined, ("d", "0.1.0"), AgentRole::Node, &capabilities);
    let refused = joined
        .await
        .err()
        .expect("the default instance is the cluster's");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}
