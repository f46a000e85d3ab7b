//! The control service's HTTP/2 and message bounds, end to end: the real `Store` on a
//! temporary SQLite database, the real `ClusterCa`, the tonic server behind the TLS
//! front on a loopback port, and the generated client with a real client certificate.
//! One connection holds at most
//! [`MAX_CONCURRENT_STREAMS_PER_CONNECTION`](kaas_observer::control::MAX_CONCURRENT_STREAMS_PER_CONNECTION)
//! streams, and an agent message over
//! [`MAX_AGENT_MESSAGE_BYTES`](kaas_observer::control::MAX_AGENT_MESSAGE_BYTES) ends
//! its call instead of being read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_observer::control::service::ControlMetrics;
use kaas_observer::control::{
    ControlService, ControlSettings, MAX_AGENT_MESSAGE_BYTES,
    MAX_CONCURRENT_STREAMS_PER_CONNECTION, serve, server_tls_config,
};
use kaas_observer::identity::ClusterCa;
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::{Actor, NewCluster, Store};
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, JoinRequest, ObserverMessage, agent_message,
};
use kaas_test_support::tls::agent_key_and_csr;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Streaming};

/// Generous for a loaded 2-core machine; what is waited for takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);
const TENANT: &str = "shop";
const CLUSTER: &str = "edge-1";
/// The cluster's global id: what its certificate and hellos name.
const CLUSTER_ID: &str = "shop.edge-1";

struct Observer {
    url: String,
    ca_pem: String,
    metrics: Arc<ControlMetrics>,
    /// The agent's certificate and key, after joining.
    identity: Identity,
    _dir: tempfile::TempDir,
}

/// The observer's control service with one joined cluster.
async fn start_observer() -> Observer {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().expect("secrets key"),
    )
    .await
    .expect("open the store");
    let ca = Arc::new(ClusterCa::load_or_create(dir.path()).expect("cluster CA"));
    let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).expect("server TLS");
    let service = ControlService::new(store.clone(), ca.clone(), ControlSettings::default());
    let metrics = service.metrics();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("https://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move { serve(listener, service, tls).await.expect("serve") });
    store
        .create_tenant(TENANT, &Actor::admin())
        .await
        .expect("tenant");
    let new = NewCluster {
        name: CLUSTER.to_owned(),
        tenant: TENANT.to_owned(),
        labels: BTreeMap::new(),
        api_endpoint: None,
    };
    let token = store
        .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
        .await
        .expect("cluster")
        .1;
    let ca_pem = ca.bundle_pem();
    let (key_pem, csr_pem) = agent_key_and_csr();
    let joined = AgentControlClient::new(channel(&url, &ca_pem, None).await)
        .join(JoinRequest {
            join_token: token,
            csr_pem,
            agent_instance_id: "test-agent".to_owned(),
            agent_version: "0.1.0".to_owned(),
            instance_name: String::new(),
        })
        .await
        .expect("join")
        .into_inner();
    Observer {
        url,
        ca_pem,
        metrics,
        identity: Identity::from_pem(joined.certificate_pem, key_pem),
        _dir: dir,
    }
}

/// One connection to the observer (a tonic `Channel` from `connect` is one HTTP/2
/// connection).
async fn channel(url: &str, ca_pem: &str, identity: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(url.to_owned())
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect()
        .await
        .expect("connect")
}

fn hello(attribute_bytes: usize) -> AgentMessage {
    AgentMessage {
        sequence_num: 1,
        body: Some(agent_message::Body::Hello(AgentHello {
            cluster_id: CLUSTER_ID.to_owned(),
            agent_instance_id: "test-agent".to_owned(),
            agent_version: "0.1.0".to_owned(),
            attributes: [("padding".to_owned(), "x".repeat(attribute_bytes))]
                .into_iter()
                .collect(),
            ..AgentHello::default()
        })),
    }
}

/// An open `Connect` call: the sender keeps the agent's side open.
type OpenStream = (mpsc::Sender<AgentMessage>, Streaming<ObserverMessage>);

async fn open_stream(channel: Channel, first: AgentMessage) -> Result<OpenStream, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.expect("queue the hello");
    let inbound = AgentControlClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue 13, finding 6: HTTP/2 streams per connection are bounded. One agent
/// connection asks for twelve `Connect` streams at once; the observer holds four, the
/// others are refused or wait in the client, and a new stream gets in once one ends.
/// On 552c13e the observer advertised no limit and held all twelve.
#[tokio::test]
async fn one_connection_holds_at_most_four_streams() {
    let observer = start_observer().await;
    let agent = channel(
        &observer.url,
        &observer.ca_pem,
        Some(observer.identity.clone()),
    )
    .await;
    let limit = MAX_CONCURRENT_STREAMS_PER_CONNECTION as i64;
    let mut calls = Vec::new();
    for _ in 0..12 {
        calls.push(tokio::spawn(open_stream(agent.clone(), hello(0))));
    }
    until("the first streams to open", || {
        observer.metrics.agent_streams.get() >= limit
    })
    .await;
    // Time for any further stream to open, were it allowed to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(observer.metrics.agent_streams.get(), limit);
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for call in calls {
        if call.is_finished() {
            match call.await.expect("task") {
                Ok(stream) => open.push(stream),
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!(open.len(), 4, "refused: {refused:?}");

    // One stream ends: a new one on the same connection takes its place.
    drop(open.pop());
    until("the observer to notice the ended stream", || {
        observer.metrics.agent_streams.get() == limit - 1
    })
    .await;
    let again = tokio::time::timeout(DEADLINE, open_stream(agent, hello(0)))
        .await
        .expect("a stream opens once there is room")
        .expect("the new stream is accepted");
    assert_eq!(observer.metrics.agent_streams.get(), limit);
    drop((open, again));
}

/// Issue 13, finding 6: an agent message over the observer's decoding limit ends the
/// call with `OUT_OF_RANGE` before the observer acts on it. On 552c13e tonic's default
/// (4 MiB) let a 2 MiB hello through and the stream was accepted.
#[tokio::test]
async fn an_agent_message_over_the_limit_ends_the_call() {
    let observer = start_observer().await;
    let agent = channel(
        &observer.url,
        &observer.ca_pem,
        Some(observer.identity.clone()),
    )
    .await;
    let Err(refused) = open_stream(agent.clone(), hello(2 * MAX_AGENT_MESSAGE_BYTES)).await else {
        panic!("a 2 MiB hello was accepted");
    };
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!(observer.metrics.agent_streams.get(), 0);
    // A hello of ordinary size on the same connection is served.
    let _open = open_stream(agent, hello(100))
        .await
        .expect("an ordinary hello is accepted");
    assert_eq!(observer.metrics.agent_streams.get(), 1);
}
