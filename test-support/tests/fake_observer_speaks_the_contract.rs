//! Drives the fake observer with the generated tonic client over a real HTTP/2
//! connection: proves the contract's code works end to end and that the fake keeps the
//! semantics agent tests rely on.

use std::time::Duration;

use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, Capability, ConfigState, ConfigStatus, Heartbeat, JoinRequest,
    ObserverMessage, agent_message, observer_message,
};
use kaas_test_support::fake_observer::{FakeIdentity, FakeObserver};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(10);

fn identity() -> FakeIdentity {
    FakeIdentity {
        cluster_id: "cluster-1".into(),
        certificate_pem: "CERT".into(),
        ca_bundle_pem: "CA".into(),
    }
}

fn hello(hash: Vec<u8>) -> AgentMessage {
    AgentMessage {
        sequence_num: 1,
        body: Some(agent_message::Body::Hello(AgentHello {
            cluster_id: "cluster-1".into(),
            agent_instance_id: "pod-uid".into(),
            agent_version: "0.1.0".into(),
            capabilities: vec![Capability::AcceptsRemoteConfig as i32],
            attributes: [("kubernetes.version".to_owned(), "1.33".to_owned())].into(),
            last_applied_config_hash: hash,
            trust_bundle_sha256: Vec::new(),
            role: 0,
        })),
    }
}

async fn client(observer: &FakeObserver) -> AgentControlClient<Channel> {
    let channel = Channel::from_shared(observer.url())
        .expect("a valid URL")
        .connect()
        .await
        .expect("the fake observer accepts connections");
    AgentControlClient::new(channel)
}

async fn connect(
    observer: &FakeObserver,
    first: AgentMessage,
) -> (
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<ObserverMessage>,
) {
    let mut client = client(observer).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue the first message");
    let inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .expect("the stream is accepted")
        .into_inner();
    (tx, inbound)
}

async fn next_update(inbound: &mut tonic::Streaming<ObserverMessage>) -> observer_message::Body {
    tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .expect("an observer message in time")
        .expect("no stream error")
        .expect("stream open")
        .body
        .expect("a message body")
}

#[tokio::test]
async fn join_tokens_are_single_use() {
    let observer = FakeObserver::start(identity(), &["token-a"]).await;
    let mut client = client(&observer).await;
    let request = |token: &str| JoinRequest {
        join_token: token.into(),
        csr_pem: "CSR".into(),
        agent_instance_id: "pod".into(),
        agent_version: "0.1.0".into(),
        instance_name: String::new(),
    };
    let joined = client.join(request("token-a")).await.unwrap().into_inner();
    assert_eq!(joined.cluster_id, "cluster-1");
    assert_eq!(joined.certificate_pem, "CERT");
    let reused = client.join(request("token-a")).await.unwrap_err();
    assert_eq!(reused.code(), Code::PermissionDenied);
    let unknown = client.join(request("token-b")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert_eq!(observer.join_requests().len(), 3);
}

#[tokio::test]
async fn a_stream_must_start_with_hello() {
    let observer = FakeObserver::start(identity(), &[]).await;
    let mut client = client(&observer).await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(AgentMessage {
        sequence_num: 1,
        body: Some(agent_message::Body::Heartbeat(Heartbeat {
            timestamp_unix_ms: 1,
        })),
    })
    .await
    .unwrap();
    let refused = client.connect(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn config_is_pushed_only_when_the_hash_differs() {
    let observer = FakeObserver::start(identity(), &[]).await;
    let hash = observer.set_desired_config(b"{\"pipelines\":[]}".to_vec());

    // An agent with no configuration gets the desired one, with its hash.
    let (tx, mut inbound) = connect(&observer, hello(Vec::new())).await;
    let observer_message::Body::ConfigUpdate(update) = next_update(&mut inbound).await else {
        panic!("expected a config update");
    };
    assert_eq!(update.config_hash, hash.to_vec());
    assert_eq!(update.body, b"{\"pipelines\":[]}");
    assert_eq!(
        update.content_type,
        "application/vnd.kaas-observer.agent-config.v1alpha1+json"
    );
    tx.send(AgentMessage {
        sequence_num: 2,
        body: Some(agent_message::Body::ConfigStatus(ConfigStatus {
            config_hash: hash.to_vec(),
            state: ConfigState::Applied as i32,
            errors: Vec::new(),
            running_config_hash: hash.to_vec(),
        })),
    })
    .await
    .unwrap();
    let status = observer
        .wait_for(DEADLINE, |m| {
            matches!(&m.body, Some(agent_message::Body::ConfigStatus(s)) if s.state == ConfigState::Applied as i32)
        })
        .await;
    assert_eq!(status.sequence_num, 2);

    // A change reaches the connected agent without it asking.
    let new_hash = observer.set_desired_config(b"{\"pipelines\":[1]}".to_vec());
    let observer_message::Body::ConfigUpdate(update) = next_update(&mut inbound).await else {
        panic!("expected a config update");
    };
    assert_eq!(update.config_hash, new_hash.to_vec());
    drop(tx);

    // An agent that already runs the desired configuration is sent nothing: once its
    // heartbeat (sent after the hello) is recorded, the hello has been handled.
    let (tx, _inbound) = connect(&observer, hello(new_hash.to_vec())).await;
    tx.send(AgentMessage {
        sequence_num: 2,
        body: Some(agent_message::Body::Heartbeat(Heartbeat {
            timestamp_unix_ms: 42,
        })),
    })
    .await
    .unwrap();
    observer
        .wait_for(DEADLINE, |m| {
            matches!(&m.body, Some(agent_message::Body::Heartbeat(h)) if h.timestamp_unix_ms == 42)
        })
        .await;
    assert_eq!(observer.config_updates_sent(), 2);
}
