//! The control service end to end: a real `Store` on a temporary SQLite database, a
//! real `ClusterCa`, the tonic server with TLS on a loopback port, and the generated
//! tonic client with real client certificates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_observer::control::{ControlService, ControlSettings, serve, server_tls_config};
use kaas_observer::identity::{ClusterCa, cluster_from_certificate, serial_hex_from_certificate};
use kaas_observer::rendering::render_for_cluster;
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::{Actor, NewCluster, Store};
use kaas_pipeline::agent_config::{AGENT_CONFIG_CONTENT_TYPE, config_hash};
use kaas_pipeline::status::{
    CONDITION_AGENT_CONNECTED, CONDITION_CONFIGURATION_APPLIED, Condition, ConditionStatus, reasons,
};
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, Capability, CommandType, ConfigError, ConfigState, ConfigStatus,
    ConfigUpdate, Heartbeat, JoinRequest, ObserverMessage, agent_message, observer_message,
};
use kaas_test_support::tls::agent_key_and_csr;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Streaming};

/// Generous for a loaded 2-core machine; the pushes themselves take milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);
const TENANT: &str = "shop";

struct Observer {
    url: String,
    ca_pem: String,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn start_observer() -> Observer {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().expect("secrets key"),
    )
    .await
    .expect("open the store");
    let ca = Arc::new(ClusterCa::load_or_create(dir.path()).expect("cluster CA"));
    let tls = server_tls_config(&ca, &["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server TLS");
    let settings = ControlSettings {
        status_debounce: Duration::from_millis(20),
        ..ControlSettings::default()
    };
    let service = ControlService::new(store.clone(), ca.clone(), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("https://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move {
        serve(listener, service, tls)
            .await
            .expect("serve AgentControl")
    });
    store
        .create_tenant(TENANT, &Actor::admin())
        .await
        .expect("create the tenant");
    Observer {
        url,
        ca_pem: ca.bundle_pem(),
        store,
        _dir: dir,
    }
}

impl Observer {
    /// Registers a cluster and returns its join token.
    async fn add_cluster(&self, name: &str) -> String {
        let new = NewCluster {
            name: name.to_owned(),
            tenant: TENANT.to_owned(),
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            api_endpoint: None,
        };
        self.store
            .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("create the cluster")
            .1
    }

    async fn channel(&self, identity: Option<&Joined>) -> Channel {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some(joined) = identity {
            tls = tls.identity(Identity::from_pem(&joined.cert_pem, &joined.key_pem));
        }
        Endpoint::from_shared(self.url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("client TLS")
            .connect()
            .await
            .expect("connect to the observer")
    }

    async fn join(&self, token: &str) -> Result<Joined, tonic::Status> {
        let (key_pem, csr_pem) = agent_key_and_csr();
        let response = AgentControlClient::new(self.channel(None).await)
            .join(JoinRequest {
                join_token: token.to_owned(),
                csr_pem,
                agent_instance_id: "test-agent".to_owned(),
                agent_version: "0.1.0".to_owned(),
                instance_name: String::new(),
            })
            .await?
            .into_inner();
        Ok(Joined {
            cluster_id: response.cluster_id,
            cert_pem: response.certificate_pem,
            key_pem,
            ca_bundle_pem: response.ca_bundle_pem,
            not_after_unix_seconds: response.not_after_unix_seconds,
        })
    }

    async fn joined_cluster(&self, name: &str) -> Joined {
        let token = self.add_cluster(name).await;
        self.join(&token).await.expect("join")
    }

    async fn apply_pipeline(&self, name: &str, url: &str) {
        let text = format!(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: {name}}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output: {{prometheusRemoteWrite: {{url: "{url}"}}}}
  clusterSelector: {{matchLabels: {{env: prod}}}}
"#
        );
        let pipeline = kaas_pipeline::document::parse_pipelines(
            &text,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .into_iter()
        .next()
        .expect("pipeline fixture")
        .outcome
        .expect("pipeline fixture");
        self.store
            .apply_pipeline(TENANT, pipeline, &Actor::admin())
            .await
            .expect("apply the pipeline");
    }

    /// What the observer should send to `cluster` now.
    async fn desired(&self, cluster: &str) -> (Vec<u8>, [u8; 32]) {
        let cluster = self
            .store
            .get_cluster(cluster)
            .await
            .expect("read the cluster")
            .expect("the cluster exists");
        let pipelines = self
            .store
            .pipelines_for_cluster(&cluster)
            .await
            .expect("read the pipelines");
        let rendered = render_for_cluster(&cluster, &pipelines, None);
        (rendered.body, rendered.hash)
    }

    /// Waits until `pipeline`'s condition `type_` satisfies `predicate`.
    async fn wait_condition(
        &self,
        pipeline: &str,
        type_: &str,
        predicate: impl Fn(&Condition) -> bool,
    ) -> Condition {
        let until = Instant::now() + DEADLINE;
        loop {
            let stored = self
                .store
                .get_pipeline(TENANT, pipeline)
                .await
                .expect("read the pipeline")
                .expect("the pipeline exists");
            if let Some(condition) = stored.status.conditions.iter().find(|c| c.type_ == type_)
                && predicate(condition)
            {
                return condition.clone();
            }
            assert!(
                Instant::now() < until,
                "condition {type_} of {pipeline} never matched: {:#?}",
                stored.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Joined {
    cluster_id: String,
    cert_pem: String,
    key_pem: String,
    ca_bundle_pem: String,
    not_after_unix_seconds: i64,
}

impl Joined {
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("certificate PEM")
            .to_vec()
    }
}

/// The agent side of one stream.
struct AgentSide {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ObserverMessage>,
    sequence: u64,
}

fn hello(cluster: &str, last_applied: Vec<u8>) -> agent_message::Body {
    agent_message::Body::Hello(AgentHello {
        cluster_id: cluster.to_owned(),
        agent_instance_id: "test-agent".to_owned(),
        agent_version: "0.1.0".to_owned(),
        capabilities: vec![
            Capability::AcceptsRemoteConfig as i32,
            Capability::ReportsConfigStatus as i32,
        ],
        attributes: Default::default(),
        last_applied_config_hash: last_applied,
        trust_bundle_sha256: Vec::new(),
        role: 0,
    })
}

async fn open_stream(
    channel: Channel,
    first: agent_message::Body,
) -> Result<AgentSide, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(AgentMessage {
        sequence_num: 1,
        body: Some(first),
    })
    .await
    .expect("queue the hello");
    let inbound = AgentControlClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(AgentSide {
        tx,
        inbound,
        sequence: 1,
    })
}

impl AgentSide {
    async fn send(&mut self, body: agent_message::Body) {
        self.sequence += 1;
        self.tx
            .send(AgentMessage {
                sequence_num: self.sequence,
                body: Some(body),
            })
            .await
            .expect("queue the hello");
    }

    async fn next(&mut self, within: Duration) -> observer_message::Body {
        tokio::time::timeout(within, self.inbound.message())
            .await
            .expect("no message from the observer in time")
            .expect("stream error")
            .expect("stream ended")
            .body
            .expect("empty message")
    }

    async fn next_update(&mut self, within: Duration) -> ConfigUpdate {
        match self.next(within).await {
            observer_message::Body::ConfigUpdate(update) => update,
            other => panic!("expected a ConfigUpdate, got {other:?}"),
        }
    }

    async fn status(
        &mut self,
        hash: &[u8],
        state: ConfigState,
        errors: Vec<ConfigError>,
        running: &[u8],
    ) {
        self.send(agent_message::Body::ConfigStatus(ConfigStatus {
            config_hash: hash.to_vec(),
            state: state as i32,
            errors,
            running_config_hash: running.to_vec(),
        }))
        .await;
    }
}

#[tokio::test]
async fn join_with_a_valid_token_issues_a_certificate_naming_the_cluster() {
    let observer = start_observer().await;
    let token = observer.add_cluster("edge-1").await;
    let joined = observer.join(&token).await.unwrap();
    assert_eq!(joined.cluster_id, "shop.edge-1");
    assert_eq!(joined.ca_bundle_pem, observer.ca_pem);
    let der = joined.der();
    assert_eq!(
        cluster_from_certificate(&der).as_deref(),
        Some("shop.edge-1")
    );
    let stored = observer
        .store
        .get_cluster("shop.edge-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.certificate_serial, serial_hex_from_certificate(&der));
    assert_eq!(
        stored.certificate_not_after_ms,
        Some(joined.not_after_unix_seconds * 1000)
    );
}

#[tokio::test]
async fn used_expired_and_unknown_tokens_are_refused() {
    let observer = start_observer().await;
    let token = observer.add_cluster("edge-1").await;
    observer.join(&token).await.unwrap();

    let used = observer
        .join(&token)
        .await
        .err()
        .expect("a used token joined");
    assert_eq!(used.code(), Code::PermissionDenied);
    assert!(
        used.message().contains("already used"),
        "{}",
        used.message()
    );
    assert!(!used.message().contains(&token));

    observer.add_cluster("edge-2").await;
    let expired_token = observer
        .store
        .mint_join_token("shop.edge-2", Duration::ZERO, &Actor::admin())
        .await
        .unwrap();
    let expired = observer
        .join(&expired_token)
        .await
        .err()
        .expect("an expired token joined");
    assert_eq!(expired.code(), Code::PermissionDenied);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    let unknown = observer
        .join("kaas-join-not-a-real-token")
        .await
        .err()
        .expect("an unknown token joined");
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert!(
        unknown.message().contains("unknown"),
        "{}",
        unknown.message()
    );
    assert!(!unknown.message().contains("not-a-real-token"));
}

#[tokio::test]
async fn a_garbage_csr_does_not_use_the_token_up() {
    let observer = start_observer().await;
    let token = observer.add_cluster("edge-1").await;
    let refused = AgentControlClient::new(observer.channel(None).await)
        .join(JoinRequest {
            join_token: token.clone(),
            csr_pem: "not a csr".to_owned(),
            ..JoinRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    observer.join(&token).await.unwrap();
}

#[tokio::test]
async fn connect_without_a_client_certificate_is_refused() {
    let observer = start_observer().await;
    observer.add_cluster("edge-1").await;
    let refused = open_stream(observer.channel(None).await, hello("shop.edge-1", vec![]))
        .await
        .err()
        .expect("connected without a certificate");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_hello_for_another_cluster_is_refused() {
    let observer = start_observer().await;
    let a = observer.joined_cluster("cluster-a").await;
    observer.joined_cluster("cluster-b").await;
    let refused = open_stream(observer.channel(Some(&a)).await, hello("cluster-b", vec![]))
        .await
        .err()
        .expect("cluster A spoke for cluster B");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("cluster-a"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn the_first_message_must_be_a_hello() {
    let observer = start_observer().await;
    let a = observer.joined_cluster("cluster-a").await;
    let heartbeat = agent_message::Body::Heartbeat(Heartbeat {
        timestamp_unix_ms: 1,
    });
    let refused = open_stream(observer.channel(Some(&a)).await, heartbeat)
        .await
        .err()
        .expect("a stream without a hello");
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_deleted_clusters_certificate_is_refused() {
    let observer = start_observer().await;
    let joined = observer.joined_cluster("edge-1").await;
    observer
        .store
        .delete_cluster("shop.edge-1", &Actor::admin())
        .await
        .unwrap();
    let refused = open_stream(
        observer.channel(Some(&joined)).await,
        hello("shop.edge-1", vec![]),
    )
    .await
    .err()
    .expect("a deleted cluster connected");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn joining_again_revokes_the_previous_certificate() {
    let observer = start_observer().await;
    let first = observer.joined_cluster("edge-1").await;
    let token = observer
        .store
        .mint_join_token("shop.edge-1", Duration::from_secs(60), &Actor::admin())
        .await
        .unwrap();
    let second = observer.join(&token).await.unwrap();
    let refused = open_stream(
        observer.channel(Some(&first)).await,
        hello("shop.edge-1", vec![]),
    )
    .await
    .err()
    .expect("a replaced certificate connected");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    open_stream(
        observer.channel(Some(&second)).await,
        hello("shop.edge-1", vec![]),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn configuration_changes_reach_the_stream_and_reports_become_conditions() {
    let observer = start_observer().await;
    let joined = observer.joined_cluster("edge-1").await;
    let mut agent = open_stream(
        observer.channel(Some(&joined)).await,
        hello("shop.edge-1", vec![]),
    )
    .await
    .unwrap();
    // An agent without a configuration gets the (empty) desired one at once.
    let initial = agent.next_update(DEADLINE).await;
    assert_eq!(initial.content_type, AGENT_CONFIG_CONTENT_TYPE);
    assert_eq!(
        initial.config_hash,
        observer.desired("shop.edge-1").await.1.to_vec()
    );
    let report = observer
        .store
        .cluster_report("shop.edge-1")
        .await
        .unwrap()
        .unwrap();
    assert!(report.connected);
    let cluster = observer
        .store
        .get_cluster("shop.edge-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.agent_instance_id.as_deref(), Some("test-agent"));

    // A pipeline applied through the store reaches the stream within a second.
    observer
        .apply_pipeline("metrics", "https://a.example/write")
        .await;
    let applied_at = Instant::now();
    let update = agent.next_update(DEADLINE).await;
    let latency = applied_at.elapsed();
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    let (body, hash) = observer.desired("shop.edge-1").await;
    assert_eq!(update.body, body);
    assert_eq!(update.config_hash, hash.to_vec());
    assert_eq!(config_hash(&update.body).to_vec(), update.config_hash);
    let text = String::from_utf8(update.body.clone()).unwrap();
    assert!(text.contains("https://a.example/write"), "{text}");
    assert!(text.contains(r#""cluster":"shop.edge-1""#), "{text}");

    // A second change arrives too.
    observer
        .apply_pipeline("metrics", "https://b.example/write")
        .await;
    let second = agent.next_update(Duration::from_secs(1)).await;
    assert_ne!(second.config_hash, update.config_hash);
    assert_eq!(
        second.config_hash,
        observer.desired("shop.edge-1").await.1.to_vec()
    );

    // APPLIED is recorded and the pipeline's conditions say so.
    agent
        .status(
            &second.config_hash,
            ConfigState::Applying,
            vec![],
            &initial.config_hash,
        )
        .await;
    agent
        .status(
            &second.config_hash,
            ConfigState::Applied,
            vec![],
            &second.config_hash,
        )
        .await;
    let applied = observer
        .wait_condition("metrics", CONDITION_CONFIGURATION_APPLIED, |c| {
            c.status == ConditionStatus::True
        })
        .await;
    assert_eq!(applied.reason, reasons::APPLIED);
    assert_eq!(applied.observed_generation, Some(2));
    let connected = observer
        .wait_condition("metrics", CONDITION_AGENT_CONNECTED, |c| {
            c.status == ConditionStatus::True
        })
        .await;
    assert_eq!(connected.observed_generation, Some(2));
    let cluster = observer
        .store
        .get_cluster("shop.edge-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cluster.applied_config_hash,
        Some(hex::encode(&second.config_hash))
    );

    // A refused configuration shows as ConfigRejected with the agent's errors.
    observer
        .apply_pipeline("metrics", "https://c.example/write")
        .await;
    let third = agent.next_update(DEADLINE).await;
    agent
        .status(
            &third.config_hash,
            ConfigState::Failed,
            vec![ConfigError {
                pipeline: "metrics".to_owned(),
                field_path: "spec.output.prometheusRemoteWrite.url".to_owned(),
                message: "the backend refused the certificate".to_owned(),
            }],
            &second.config_hash,
        )
        .await;
    let rejected = observer
        .wait_condition("metrics", CONDITION_CONFIGURATION_APPLIED, |c| {
            c.status == ConditionStatus::False
        })
        .await;
    assert_eq!(rejected.reason, reasons::CONFIG_REJECTED);
    assert!(
        rejected
            .message
            .contains("spec.output.prometheusRemoteWrite.url: the backend refused the certificate"),
        "{}",
        rejected.message
    );
    assert_eq!(rejected.observed_generation, Some(3));

    // The stream ends: the cluster is no longer connected.
    drop(agent);
    let until = Instant::now() + DEADLINE;
    while observer
        .store
        .cluster_report("shop.edge-1")
        .await
        .unwrap()
        .unwrap()
        .connected
    {
        assert!(
            Instant::now() < until,
            "still connected after the stream ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_agent_that_is_current_gets_nothing_and_a_sequence_gap_asks_for_the_full_state() {
    let observer = start_observer().await;
    let joined = observer.joined_cluster("edge-1").await;
    observer
        .apply_pipeline("metrics", "https://a.example/write")
        .await;
    let (_, hash) = observer.desired("shop.edge-1").await;
    let mut agent = open_stream(
        observer.channel(Some(&joined)).await,
        hello("shop.edge-1", hash.to_vec()),
    )
    .await
    .unwrap();
    // Current: its APPLIED state is recorded, and nothing is pushed.
    observer
        .wait_condition("metrics", CONDITION_CONFIGURATION_APPLIED, |c| {
            c.status == ConditionStatus::True
        })
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), agent.inbound.message())
            .await
            .is_err(),
        "an up-to-date agent was sent something"
    );
    // Message 3 after message 1: message 2 was lost.
    agent.sequence += 1;
    agent
        .send(agent_message::Body::Heartbeat(Heartbeat {
            timestamp_unix_ms: 1,
        }))
        .await;
    match agent.next(DEADLINE).await {
        observer_message::Body::Command(command) => {
            assert_eq!(command.r#type, CommandType::ResendFullState as i32);
        }
        other => panic!("expected RESEND_FULL_STATE, got {other:?}"),
    }
}

/// Issue 18: an instance whose non-secret placeholder is bound to a ConfigMap key goes
/// from `apply_instance` to the agent's stream as the instance itself (its template
/// generation and the pending binding), never as the sample rendering. An agent that
/// does not announce `CAPABILITY_TEMPLATE_INSTANCES` is sent its configuration
/// without it, and the instance's status says `AgentUnsupported`.
#[tokio::test]
async fn an_instance_with_pending_bindings_reaches_the_stream_for_the_agent_to_render() {
    use kaas_pipeline::templates::{PipelineInstance, PipelineTemplate};
    use kaas_pipeline::templates::{validate_instance, validate_template};

    let observer = start_observer().await;
    let context = kaas_pipeline::ValidationContext::tenant_default();
    let template: PipelineTemplate = serde_yaml::from_str(
        r#"
metadata: {name: remote-write}
spec:
  pipelineKind: MetricPipeline
  placeholders:
    - {name: url, type: url, description: Where to write., required: true}
  template:
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "%{url}"}}
      clusterSelector: {matchLabels: {env: prod}}
"#,
    )
    .unwrap();
    let instance: PipelineInstance = serde_yaml::from_str(
        r#"
metadata: {name: metrics}
spec:
  template: {name: remote-write}
  bindings:
    url: {configMapKeyRef: {name: backend, namespace: kaas-observer, key: url}}
"#,
    )
    .unwrap();
    let (store, admin) = (&observer.store, Actor::admin());
    let template = validate_template(&template, &context).unwrap();
    store
        .apply_template(TENANT, template, &context, &admin, false)
        .await
        .expect("apply the template");
    let instance = validate_instance(&instance, &context).unwrap();
    store
        .apply_instance(TENANT, instance, &context, &admin, false)
        .await
        .expect("apply the instance");

    let joined = observer.joined_cluster("edge-1").await;
    let mut current = hello("shop.edge-1", vec![]);
    if let agent_message::Body::Hello(hello) = &mut current {
        hello
            .capabilities
            .push(Capability::TemplateInstances as i32);
    }
    let mut agent = open_stream(observer.channel(Some(&joined)).await, current)
        .await
        .unwrap();
    let update = agent.next_update(DEADLINE).await;
    let sent: serde_json::Value = serde_json::from_slice(&update.body).unwrap();
    assert_eq!(
        sent["pipelines"],
        serde_json::json!([]),
        "never the sample rendering: {sent}"
    );
    let instances = sent["pipelineInstances"].as_array().expect("the instance");
    assert_eq!(instances.len(), 1, "{sent}");
    assert_eq!(instances[0]["templateGeneration"], 1);
    assert_eq!(
        instances[0]["instance"]["spec"]["bindings"]["url"],
        serde_json::json!({ "configMapKeyRef": { "name": "backend", "namespace": "kaas-observer", "key": "url" } })
    );
    let agent_context =
        kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::agent_default());
    let parsed = kaas_pipeline::agent_config::AgentConfig::parse(
        std::str::from_utf8(&update.body).unwrap(),
        &agent_context,
    )
    .expect("the agent accepts it");
    assert_eq!(parsed.pipeline_instances[0].pending()[0].placeholder, "url");

    // An older agent: no instance, and the instance says why.
    let older = observer.joined_cluster("edge-2").await;
    let mut old_agent = open_stream(
        observer.channel(Some(&older)).await,
        hello("shop.edge-2", vec![]),
    )
    .await
    .unwrap();
    let old_update = old_agent.next_update(DEADLINE).await;
    let text = String::from_utf8(old_update.body.clone()).unwrap();
    assert!(!text.contains("pipelineInstances"), "{text}");
    assert!(!text.contains("backend"), "{text}");
    let hash = old_update.config_hash.clone();
    old_agent
        .status(&hash, ConfigState::Applied, vec![], &hash)
        .await;
    let condition = observer
        .wait_condition("metrics", CONDITION_CONFIGURATION_APPLIED, |c| {
            c.reason == kaas_pipeline::status::Reason::AgentUnsupported.as_str()
        })
        .await;
    assert!(condition.message.contains("edge-2"), "{condition:?}");
    assert!(!condition.message.contains("edge-1"), "{condition:?}");
}
