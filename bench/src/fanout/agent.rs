//! Simulated cluster-agents: the real agent's wire behaviour without its data path.
//!
//! Each simulated agent is one task on the bench's multi-thread runtime. It joins like
//! `cluster-agent` does (a fresh ECDSA P-256 key and CSR from
//! [`generate_key_and_request`], `Join` with its single-use token), then holds the
//! `Connect` stream over its own TCP connection with its own client certificate, with
//! the agent's endpoint settings (connect timeout, HTTP/2 keepalive). It answers every
//! `ConfigUpdate` at once with `APPLYING` and `APPLIED`, echoing the hash (the real
//! agent waits a 2 s health window first; the benchmark measures the observer, not
//! that window), answers `RESEND_FULL_STATE`, and sends a `Heartbeat` only after a quiet
//! [`DEFAULT_HEARTBEAT_INTERVAL`]. It sends no health reports.
//!
//! After any failure it reconnects with the real agent's [`Backoff`] (full jitter from
//! [`RECONNECT_BACKOFF_BASE`] up to [`RECONNECT_BACKOFF_CAP`], reset once a stream is
//! established), so a restarted observer sees the reconnect storm a real fleet makes.
//!
//! Only setup is throttled: joins and each agent's first connection go through a
//! semaphore, as a fleet is onboarded over time rather than in one instant. Joins share
//! a few TLS connections without client certificates; every `Connect` has its own.
//!
//! Every failure is counted by [`Phase`] and kind ([`FailureKind`]), so the report can
//! tell an observer that was down or restarting (connection refused, a connection reset
//! by the killed process, `UNAVAILABLE`) from one that turned agents away (any other
//! status, timeouts, transport failures once it is ready).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_cluster_agent::control::identity::generate_key_and_request;
use kaas_cluster_agent::control::{
    CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP,
};
use kaas_cluster_agent::outbound::backoff::Backoff;
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, Capability, CommandType, ConfigState, ConfigStatus, Heartbeat,
    JoinRequest, agent_message, observer_message,
};
use sha2::Digest as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::FanoutError;

/// The version simulated agents report.
const AGENT_VERSION: &str = "0.0.0-fanout-bench";
/// Messages queued for the observer, as in the real agent.
const OUTBOX_CAPACITY: usize = 16;
/// TLS connections shared by all joins: enough to keep the observer's signing busy,
/// few enough that they are not what is measured.
const JOIN_CHANNELS: usize = 4;
/// How often a join is tried before the agent gives up; a join only fails on a loaded
/// observer (timeouts), never by design.
const JOIN_ATTEMPTS: u32 = 5;
/// How long a `Join` may take, as in the real agent.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Which part of the benchmark a failure happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Joining and the first connections.
    Setup = 0,
    /// All agents connected; the pipeline change is pushed.
    Steady = 1,
    /// From the SIGKILL until the restarted observer's control port accepts
    /// connections.
    Restart = 2,
    /// The restarted observer listens; the agents come back.
    Storm = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Setup,
            1 => Self::Steady,
            2 => Self::Restart,
            _ => Self::Storm,
        }
    }

    /// The name printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Steady => "steady",
            Self::Restart => "restart",
            Self::Storm => "storm",
        }
    }
}

/// What went wrong for one agent, once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// Nothing listened: the observer was down. Expected while it restarts.
    ConnectionRefused,
    /// The TCP connection was reset while connecting: it was queued on a listener
    /// that closed before accepting it (at a kill, the killed observer's).
    ConnectionReset,
    /// TCP or TLS did not complete within the agent's connect timeout.
    ConnectTimeout,
    /// Another transport failure while connecting (TLS alert, reset), with its text.
    Transport(String),
    /// The observer answered `Connect` or `Join` with this status code.
    Status(i32),
    /// An established stream ended (the observer closed it or the connection broke).
    /// Expected when the observer is killed.
    StreamEnded,
    /// `Join` did not answer within the agent's join timeout.
    JoinTimeout,
}

impl FailureKind {
    /// A status answer.
    pub fn status(code: tonic::Code) -> Self {
        Self::Status(code as i32)
    }

    /// Whether, in `phase`, this failure means the observer turned the agent away rather
    /// than being down or going away. Never: connection refused, `UNAVAILABLE`, an
    /// established stream ending. Until the restarted observer listens, transport
    /// failures are expected too (a connection queued on the killed process's listener
    /// is reset); once it listens they count, like every other status and timeouts.
    pub fn is_refusal(&self, phase: Phase) -> bool {
        match self {
            Self::ConnectionRefused | Self::StreamEnded => false,
            Self::Status(code) => *code != tonic::Code::Unavailable as i32,
            Self::ConnectionReset | Self::Transport(_) => phase != Phase::Restart,
            Self::ConnectTimeout | Self::JoinTimeout => true,
        }
    }

    /// The text printed in reports.
    pub fn describe(&self) -> String {
        match self {
            Self::ConnectionRefused => "connection refused".to_owned(),
            Self::ConnectionReset => "connection reset while connecting".to_owned(),
            Self::ConnectTimeout => "connect timeout".to_owned(),
            Self::Transport(text) => format!("transport: {text}"),
            Self::Status(code) => format!("status {:?}", tonic::Code::from(*code)),
            Self::StreamEnded => "established stream ended".to_owned(),
            Self::JoinTimeout => "join timeout".to_owned(),
        }
    }
}

fn classify_transport(error: &tonic::transport::Error) -> FailureKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut texts = Vec::new();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return FailureKind::ConnectionRefused,
                // Only TCP connect errors are classified here; a reset during TLS is a
                // transport failure like any other.
                std::io::ErrorKind::ConnectionReset
                    if texts.iter().any(|t: &String| t.contains("tcp connect")) =>
                {
                    return FailureKind::ConnectionReset;
                }
                std::io::ErrorKind::TimedOut => return FailureKind::ConnectTimeout,
                _ => {}
            }
        }
        let text = cause.to_string();
        if text.contains("timed out") {
            return FailureKind::ConnectTimeout;
        }
        if !texts.iter().any(|t: &String| t.contains(&text)) {
            texts.push(text);
        }
        source = cause.source();
    }
    FailureKind::Transport(texts.join(": "))
}

/// What happened to one agent.
#[derive(Clone, Debug, Default)]
pub struct AgentRecord {
    /// The cluster it speaks for.
    pub cluster: String,
    /// Whether it joined.
    pub joined: bool,
    /// When each of its streams was established.
    pub connects: Vec<Instant>,
    /// Each `ConfigUpdate` received: when, and its hash.
    pub updates: Vec<(Instant, Vec<u8>)>,
}

/// State shared by the fleet's tasks and the harness.
struct Shared {
    url: String,
    ca_pem: String,
    /// SHA-256 of `ca_pem`, which each hello reports, as a real agent does.
    ca_sha256: Vec<u8>,
    phase: AtomicU8,
    connected: AtomicUsize,
    records: Mutex<Vec<AgentRecord>>,
    failures: Mutex<BTreeMap<(Phase, FailureKind), u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn fail(&self, kind: FailureKind) {
        self.fail_in(self.phase(), kind);
    }

    fn fail_in(&self, phase: Phase, kind: FailureKind) {
        *lock(&self.failures).entry((phase, kind)).or_default() += 1;
    }

    fn record(&self, index: usize, change: impl FnOnce(&mut AgentRecord)) {
        if let Some(record) = lock(&self.records).get_mut(index) {
            change(record);
        }
    }
}

/// Counts an established stream while it lasts.
struct ConnectedGuard(Arc<Shared>);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The simulated fleet.
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// A cluster to simulate: its name and join token.
#[derive(Clone, Debug)]
pub struct SimulatedCluster {
    /// The cluster's name.
    pub name: String,
    /// Its single-use join token.
    pub join_token: String,
}

impl Fleet {
    /// Starts one agent per cluster against the observer at `url` (`https://…`),
    /// trusting `ca_pem`. At most `setup_concurrency` agents join and open their first
    /// stream at a time.
    pub async fn start(
        url: &str,
        ca_pem: &str,
        clusters: Vec<SimulatedCluster>,
        setup_concurrency: usize,
    ) -> Result<Self, FanoutError> {
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            ca_pem: ca_pem.to_owned(),
            ca_sha256: sha2::Sha256::digest(ca_pem.as_bytes()).to_vec(),
            phase: AtomicU8::new(Phase::Setup as u8),
            connected: AtomicUsize::new(0),
            records: Mutex::new(
                clusters
                    .iter()
                    .map(|cluster| AgentRecord {
                        cluster: cluster.name.clone(),
                        ..AgentRecord::default()
                    })
                    .collect(),
            ),
            failures: Mutex::default(),
        });
        let mut join_channels = Vec::with_capacity(JOIN_CHANNELS);
        for _ in 0..JOIN_CHANNELS {
            let channel = endpoint(&shared, None)
                .map_err(|e| FanoutError::Setup(format!("join channel: {e}")))?
                .connect()
                .await
                .map_err(|e| FanoutError::Setup(format!("join channel: {e}")))?;
            join_channels.push(channel);
        }
        let (stop, stopped) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(setup_concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (index, cluster) in clusters.into_iter().enumerate() {
            let agent = SimulatedAgent {
                index,
                cluster,
                shared: shared.clone(),
                join_channel: join_channels[index % JOIN_CHANNELS].clone(),
                gate: gate.clone(),
                stop: stopped.clone(),
            };
            tasks.spawn(agent.run());
        }
        Ok(Self {
            shared,
            stop,
            tasks,
        })
    }

    /// Moves the fleet to `phase`; later failures are counted under it.
    pub fn set_phase(&self, phase: Phase) {
        self.shared.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Streams established now, as the agents see them.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// A copy of every agent's record.
    pub fn records(&self) -> Vec<AgentRecord> {
        lock(&self.shared.records).clone()
    }

    /// Failures so far, by phase and kind.
    pub fn failures(&self) -> BTreeMap<(Phase, FailureKind), u64> {
        lock(&self.shared.failures).clone()
    }

    /// Ends every agent and waits for their tasks.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn endpoint(
    shared: &Shared,
    identity: Option<&Joined>,
) -> Result<Endpoint, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&shared.ca_pem));
    if let Some(joined) = identity {
        tls = tls.identity(Identity::from_pem(&joined.cert_pem, &joined.key_pem));
    }
    // The real agent's settings (cluster-agent's `ObserverConnection::channel`).
    Endpoint::from_shared(shared.url.clone())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tls_config(tls)
}

/// The identity `Join` gave an agent.
struct Joined {
    cluster_id: String,
    cert_pem: String,
    key_pem: String,
}

/// How one connection attempt ended.
enum SessionEnd {
    /// The harness stopped the fleet.
    Stopped,
    /// The stream was never established.
    NotEstablished(FailureKind),
    /// The stream was established, then ended.
    Ended,
}

struct SimulatedAgent {
    index: usize,
    cluster: SimulatedCluster,
    shared: Arc<Shared>,
    join_channel: Channel,
    gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// What the agent runs and last reported, kept across streams.
#[derive(Default)]
struct AgentState {
    running_hash: Vec<u8>,
    last_status: Option<ConfigStatus>,
}

impl SimulatedAgent {
    async fn run(mut self) {
        let Ok(permit) = self.gate.clone().acquire_owned().await else {
            return;
        };
        let mut permit = Some(permit);
        let Some(joined) = self.join().await else {
            return;
        };
        self.shared.record(self.index, |r| r.joined = true);
        let mut state = AgentState::default();
        let mut backoff = Backoff::new(RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP);
        loop {
            // A failed attempt counts in the phase it started in: which observer it
            // reached is decided then, while the failure may be seen a little later.
            let started_in = self.shared.phase();
            let end = self
                .session(&joined, &mut state, &mut backoff, &mut permit)
                .await;
            // The first attempt, established or not, no longer holds up the others.
            permit = None;
            match end {
                SessionEnd::Stopped => return,
                SessionEnd::NotEstablished(kind) => self.shared.fail_in(started_in, kind),
                SessionEnd::Ended => self.shared.fail(FailureKind::StreamEnded),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn join(&mut self) -> Option<Joined> {
        let mut backoff = Backoff::new(RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP);
        // One key for every attempt, as the real agent keeps it: a retry after a lost
        // answer gets the same certificate instead of a used token.
        let generated = match generate_key_and_request() {
            Ok(generated) => generated,
            Err(error) => {
                self.shared.fail(FailureKind::Transport(error.to_string()));
                return None;
            }
        };
        for _ in 0..JOIN_ATTEMPTS {
            let request = JoinRequest {
                join_token: self.cluster.join_token.clone(),
                csr_pem: generated.csr_pem.clone(),
                agent_instance_id: format!("sim-{}", self.index),
                agent_version: AGENT_VERSION.to_owned(),
                instance_name: String::new(),
            };
            let mut client = AgentControlClient::new(self.join_channel.clone());
            match tokio::time::timeout(JOIN_TIMEOUT, client.join(request)).await {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    return Some(Joined {
                        cluster_id: response.cluster_id,
                        cert_pem: response.certificate_pem,
                        key_pem: generated.key_pem.clone(),
                    });
                }
                Ok(Err(status)) if status.code() == tonic::Code::PermissionDenied => {
                    // The token is used up or unknown: retrying cannot help.
                    self.shared.fail(FailureKind::status(status.code()));
                    return None;
                }
                Ok(Err(status)) => self.shared.fail(FailureKind::status(status.code())),
                Err(_) => self.shared.fail(FailureKind::JoinTimeout),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        None
    }

    fn hello(&self, joined: &Joined, state: &AgentState) -> agent_message::Body {
        agent_message::Body::Hello(AgentHello {
            cluster_id: joined.cluster_id.clone(),
            agent_instance_id: format!("sim-{}", self.index),
            agent_version: AGENT_VERSION.to_owned(),
            capabilities: vec![
                Capability::AcceptsRemoteConfig as i32,
                Capability::ReportsConfigStatus as i32,
            ],
            attributes: Default::default(),
            last_applied_config_hash: state.running_hash.clone(),
            trust_bundle_sha256: self.shared.ca_sha256.clone(),
            role: 0,
        })
    }

    /// One stream, from connecting to its end.
    async fn session(
        &mut self,
        joined: &Joined,
        state: &mut AgentState,
        backoff: &mut Backoff,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> SessionEnd {
        if *self.stop.borrow() {
            return SessionEnd::Stopped;
        }
        let channel = match endpoint(&self.shared, Some(joined)) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(error) => return SessionEnd::NotEstablished(classify_transport(&error)),
            },
            Err(error) => return SessionEnd::NotEstablished(classify_transport(&error)),
        };
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let mut outbox = Outbox {
            tx,
            next_sequence: 1,
            last_sent: Instant::now(),
        };
        if !outbox.send(self.hello(joined, state)).await {
            return SessionEnd::NotEstablished(FailureKind::StreamEnded);
        }
        let mut inbound = match AgentControlClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return SessionEnd::NotEstablished(FailureKind::status(status.code())),
        };
        backoff.reset();
        *permit = None;
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        let _connected = ConnectedGuard(self.shared.clone());
        self.shared
            .record(self.index, |r| r.connects.push(Instant::now()));
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + DEFAULT_HEARTBEAT_INTERVAL,
            DEFAULT_HEARTBEAT_INTERVAL,
        );
        loop {
            tokio::select! {
                message = inbound.message() => {
                    let Ok(Some(message)) = message else {
                        return SessionEnd::Ended;
                    };
                    let received = Instant::now();
                    if !self.answer(message.body, received, joined, state, &mut outbox).await {
                        return SessionEnd::Ended;
                    }
                }
                _ = heartbeat.tick() => {
                    if outbox.last_sent.elapsed() >= DEFAULT_HEARTBEAT_INTERVAL
                        && !outbox.send(heartbeat_now()).await
                    {
                        return SessionEnd::Ended;
                    }
                }
                _ = self.stop.changed() => return SessionEnd::Stopped,
            }
        }
    }

    /// Answers one observer message as the agent would, at once; false when the stream
    /// is gone.
    async fn answer(
        &self,
        body: Option<observer_message::Body>,
        received: Instant,
        joined: &Joined,
        state: &mut AgentState,
        outbox: &mut Outbox,
    ) -> bool {
        match body {
            Some(observer_message::Body::ConfigUpdate(update)) => {
                let hash = update.config_hash;
                self.shared
                    .record(self.index, |r| r.updates.push((received, hash.clone())));
                let applying = ConfigStatus {
                    config_hash: hash.clone(),
                    state: ConfigState::Applying as i32,
                    errors: Vec::new(),
                    running_config_hash: state.running_hash.clone(),
                };
                let applied = ConfigStatus {
                    config_hash: hash.clone(),
                    state: ConfigState::Applied as i32,
                    errors: Vec::new(),
                    running_config_hash: hash.clone(),
                };
                state.running_hash = hash;
                state.last_status = Some(applied.clone());
                outbox
                    .send(agent_message::Body::ConfigStatus(applying))
                    .await
                    && outbox
                        .send(agent_message::Body::ConfigStatus(applied))
                        .await
            }
            Some(observer_message::Body::Command(command))
                if CommandType::try_from(command.r#type) == Ok(CommandType::ResendFullState) =>
            {
                if !outbox.send(self.hello(joined, state)).await {
                    return false;
                }
                match state.last_status.clone() {
                    Some(status) => outbox.send(agent_message::Body::ConfigStatus(status)).await,
                    None => true,
                }
            }
            // Other commands (REJOIN) and unknown messages: nothing to answer.
            _ => true,
        }
    }
}

/// A heartbeat stamped with the wall clock.
fn heartbeat_now() -> agent_message::Body {
    let timestamp_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    agent_message::Body::Heartbeat(Heartbeat { timestamp_unix_ms })
}

/// The messages going to the observer on one stream, numbered from 1.
struct Outbox {
    tx: mpsc::Sender<AgentMessage>,
    next_sequence: u64,
    last_sent: Instant,
}

impl Outbox {
    /// Queues a message; false when the stream is gone.
    async fn send(&mut self, body: agent_message::Body) -> bool {
        let message = AgentMessage {
            sequence_num: self.next_sequence,
            body: Some(body),
        };
        if self.tx.send(message).await.is_err() {
            return false;
        }
        self.next_sequence += 1;
        self.last_sent = Instant::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_being_turned_away_counts_as_a_refusal() {
        for phase in [Phase::Setup, Phase::Restart, Phase::Storm] {
            assert!(!FailureKind::ConnectionRefused.is_refusal(phase));
            assert!(!FailureKind::status(tonic::Code::Unavailable).is_refusal(phase));
            assert!(!FailureKind::StreamEnded.is_refusal(phase));
            assert!(FailureKind::status(tonic::Code::ResourceExhausted).is_refusal(phase));
            assert!(FailureKind::status(tonic::Code::DeadlineExceeded).is_refusal(phase));
            assert!(FailureKind::ConnectTimeout.is_refusal(phase));
        }
        let reset = FailureKind::Transport("Connection reset by peer".to_owned());
        assert!(!reset.is_refusal(Phase::Restart));
        assert!(!FailureKind::ConnectionReset.is_refusal(Phase::Restart));
        assert!(reset.is_refusal(Phase::Storm));
        assert!(FailureKind::ConnectionReset.is_refusal(Phase::Storm));
    }
}
