//! A fake observer: serves `AgentControl` on a loopback port with the contract's real
//! semantics and records what agents send, so agent tests can run without the real
//! observer.
//!
//! - `Join` accepts each configured token once and returns the configured identity;
//!   unknown or reused tokens get `PERMISSION_DENIED`, as the real observer answers.
//! - `Connect` requires an `AgentHello` first (`FAILED_PRECONDITION` otherwise). After
//!   the hello, and whenever the test sets a new desired configuration, it sends a
//!   `ConfigUpdate` if the agent's last applied hash differs from the desired hash.
//! - Every message received on any stream is recorded in arrival order.
//!
//! [`FakeObserver::start`] serves plain HTTP/2 for gRPC clients in tests;
//! [`FakeObserver::start_tls`] serves TLS with a test certificate, so the real agent
//! (which only speaks TLS to an observer) can be pointed at it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_pipeline::agent_config::{AGENT_CONFIG_CONTENT_TYPE, config_hash};
use kaas_proto::control::v1::agent_control_server::{AgentControl, AgentControlServer};
use kaas_proto::control::v1::{
    AgentMessage, ConfigUpdate, JoinRequest, JoinResponse, ObserverMessage, agent_message,
    observer_message,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// What the fake observer answers to a successful `Join`.
#[derive(Clone, Debug)]
pub struct FakeIdentity {
    /// The cluster id returned.
    pub cluster_id: String,
    /// The "certificate" returned (the fake does not sign anything).
    pub certificate_pem: String,
    /// The CA bundle returned.
    pub ca_bundle_pem: String,
}

#[derive(Default)]
struct State {
    tokens: BTreeSet<String>,
    used_tokens: BTreeSet<String>,
    received: Vec<AgentMessage>,
    join_requests: Vec<JoinRequest>,
    config_updates_sent: usize,
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    identity: FakeIdentity,
    desired: watch::Receiver<Option<ConfigUpdate>>,
    arrived: Arc<Notify>,
}

/// The server certificate and key (PEM) a TLS fake observer presents.
#[derive(Clone, Debug)]
pub struct FakeServerTls {
    /// The certificate chain.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A running fake observer; stops when dropped.
pub struct FakeObserver {
    addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    desired: watch::Sender<Option<ConfigUpdate>>,
    arrived: Arc<Notify>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeObserver {
    /// Starts serving on `127.0.0.1:0`. Must be called inside a Tokio runtime.
    pub async fn start(identity: FakeIdentity, join_tokens: &[&str]) -> Self {
        Self::serve(identity, join_tokens, None).await
    }

    /// Starts serving TLS with `tls` on `127.0.0.1:0`; clients are not asked for a
    /// certificate. Must be called inside a Tokio runtime.
    pub async fn start_tls(
        identity: FakeIdentity,
        join_tokens: &[&str],
        tls: FakeServerTls,
    ) -> Self {
        Self::serve(identity, join_tokens, Some(tls)).await
    }

    async fn serve(
        identity: FakeIdentity,
        join_tokens: &[&str],
        tls: Option<FakeServerTls>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            tokens: join_tokens.iter().map(|t| (*t).to_owned()).collect(),
            ..State::default()
        }));
        let (desired, desired_rx) = watch::channel(None);
        let arrived = Arc::new(Notify::new());
        let service = Service {
            state: state.clone(),
            identity,
            desired: desired_rx,
            arrived: arrived.clone(),
        };
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let mut builder = tonic::transport::Server::builder();
        let secure = tls.is_some();
        if let Some(tls) = tls {
            let identity = tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .expect("the test's server TLS settings");
        }
        tokio::spawn(async move {
            let _ = builder
                .add_service(AgentControlServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        Self {
            addr,
            tls: secure,
            state,
            desired,
            arrived,
            _shutdown: shutdown,
        }
    }

    /// Where it listens, as an `http://` URL for a tonic client (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Sets the configuration every connected and future agent should run. The body is
    /// sent as an agent configuration; the hash is computed as the real observer does.
    pub fn set_desired_config(&self, body: Vec<u8>) -> [u8; 32] {
        let hash = config_hash(&body);
        self.desired.send_replace(Some(ConfigUpdate {
            body,
            content_type: AGENT_CONFIG_CONTENT_TYPE.to_owned(),
            config_hash: hash.to_vec(),
        }));
        hash
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<AgentMessage> {
        self.lock().received.clone()
    }

    /// The `Join` requests received so far.
    pub fn join_requests(&self) -> Vec<JoinRequest> {
        self.lock().join_requests.clone()
    }

    /// How many `ConfigUpdate`s were sent on all streams.
    pub fn config_updates_sent(&self) -> usize {
        self.lock().config_updates_sent
    }

    /// Waits until a received message satisfies `predicate` and returns it, or panics
    /// after `deadline`.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        predicate: impl Fn(&AgentMessage) -> bool,
    ) -> AgentMessage {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if let Some(found) = self.lock().received.iter().find(|m| predicate(m)) {
                    return found.clone();
                }
                notified.await;
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no matching agent message within {deadline:?}; received {:#?}",
                    self.received()
                )
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Service {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, message: AgentMessage) {
        self.lock().received.push(message);
        self.arrived.notify_waiters();
    }
}

type ObserverStream = Pin<Box<dyn Stream<Item = Result<ObserverMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentControl for Service {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        state.join_requests.push(request.clone());
        if !state.tokens.contains(&request.join_token) {
            return Err(Status::permission_denied("unknown join token"));
        }
        if !state.used_tokens.insert(request.join_token) {
            return Err(Status::permission_denied("join token already used"));
        }
        let instance_name = match request.instance_name.as_str() {
            "" => "default".to_owned(),
            named => named.to_owned(),
        };
        Ok(Response::new(JoinResponse {
            cluster_id: self.identity.cluster_id.clone(),
            certificate_pem: self.identity.certificate_pem.clone(),
            ca_bundle_pem: self.identity.ca_bundle_pem.clone(),
            not_after_unix_seconds: 0,
            instance_name,
        }))
    }

    type ConnectStream = ObserverStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::failed_precondition("stream closed before hello"))?;
        let Some(agent_message::Body::Hello(hello)) = first.body.clone() else {
            return Err(Status::failed_precondition(
                "the first message must be a hello",
            ));
        };
        self.record(first);
        let (out, out_rx) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let mut applied_hash = hello.last_applied_config_hash;
            let mut desired = service.desired.clone();
            loop {
                // Offer the desired configuration when it differs from what the agent
                // reported, then wait for news from either side.
                let offer = desired.borrow_and_update().clone();
                if let Some(update) = offer
                    && update.config_hash != applied_hash
                {
                    applied_hash = update.config_hash.clone();
                    service.lock().config_updates_sent += 1;
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
                        Ok(Some(message)) => {
                            if let Some(agent_message::Body::Hello(hello)) = &message.body {
                                applied_hash = hello.last_applied_config_hash.clone();
                            }
                            service.record(message);
                        }
                        _ => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
