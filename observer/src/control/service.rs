//! `AgentControl` implemented on the real [`Store`]: the service with its settings and
//! metrics, `Join`, and `Connect` up to the stream's admission, when a task of its own
//! takes it over (`stream.rs`); it starts the dispatcher (`dispatch.rs`) and the status
//! task. See the module documentation of [`crate::control`] for the protocol.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_proto::control::v1::agent_control_server::AgentControl;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, JoinRequest, JoinResponse, ObserverMessage, agent_message,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::dispatch::{Routes, dispatch_changes};
use super::join::{JoinLimits, JoinRateLimiter, Joiner, loggable};
use super::registry::{SharedRegistry, StreamEntry, lock};
use super::status_task::{StatusTask, StatusWork};
use super::stream::{
    AgentStream, GATEWAY_CHECK_INTERVAL, OUTBOX_CAPACITY, Outgoing, accepts_remote_config,
    agent_features, role_of,
};
use super::stream_identity::{PeerIdentity, StreamCertificate, peer_identity, revoked_status};
use crate::identity::{ClusterCa, DEFAULT_AGENT_CERTIFICATE_VALIDITY};
use crate::internal_events::{
    ConfigPushes, HandshakeMetrics, JoinMetrics, StreamRefusal, StreamRefusals, StreamRefused,
};
use crate::rendering::{CentralPipelineSettings, TenantPipelines};
use crate::store::certificates::CertificateStanding;
use crate::store::{Cluster, ReportWrite, Store, StoreError, now_ms};

/// How long an agent may take to send its hello after opening the stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the status task collects reports before recomputing: a burst of reports
/// (an APPLIED from each of 50 clusters) becomes one recomputation per tenant, while a
/// user still sees the status change within a second.
pub const STATUS_DEBOUNCE: Duration = Duration::from_millis(250);

/// Tunables of the control service.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// How long agent certificates issued by `Join` or over a stream are valid.
    pub agent_certificate_validity: Duration,
    /// How `Join` is limited per source address.
    pub join_limits: JoinLimits,
    /// See [`HELLO_TIMEOUT`].
    pub hello_timeout: Duration,
    /// See [`STATUS_DEBOUNCE`].
    pub status_debounce: Duration,
    /// The provider's central pipeline (to Thanos receive), added to every cluster's
    /// configuration; `None` when the observer runs without one.
    pub central_pipeline: Option<Arc<CentralPipelineSettings>>,
    /// See [`GATEWAY_CHECK_INTERVAL`].
    pub gateway_check_interval: Duration,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            agent_certificate_validity: DEFAULT_AGENT_CERTIFICATE_VALIDITY,
            join_limits: JoinLimits::default(),
            hello_timeout: HELLO_TIMEOUT,
            status_debounce: STATUS_DEBOUNCE,
            central_pipeline: None,
            gateway_check_interval: GATEWAY_CHECK_INTERVAL,
        }
    }
}

/// The control service's metrics (names documented in `docs/metrics.md`).
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Agent control streams open on this replica.
    pub agent_streams: Gauge,
    /// Configurations sent down agent streams, by outcome.
    pub config_pushes: ConfigPushes,
    /// The control port's TLS handshakes ([`super::accept`]).
    pub handshakes: HandshakeMetrics,
    /// Refused `Join` calls ([`super::join`]).
    pub joins: Arc<JoinMetrics>,
    /// Open streams whose certificate was signed by the CA being rotated out.
    pub streams_on_previous_ca: Gauge,
    /// Streams refused at their admission, by reason.
    pub stream_refusals: StreamRefusals,
}

impl ControlMetrics {
    /// Registers the metrics in `registry` (counters get their `_total` suffix there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_agent_streams",
            "Agent control streams open on this replica.",
            self.agent_streams.clone(),
        );
        self.config_pushes.register(registry);
        self.stream_refusals.register(registry);
        self.handshakes.register(registry);
        self.joins.register(registry);
        registry.register(
            "kaas_observer_agent_streams_on_previous_ca",
            "Agent control streams on this replica whose certificate was signed by the CA being rotated out; retire it once this is 0 everywhere.",
            self.streams_on_previous_ca.clone(),
        );
    }
}

/// The `AgentControl` service. Cheap to clone.
#[derive(Clone)]
pub struct ControlService {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    store: Store,
    pub(super) ca: Arc<ClusterCa>,
    joiner: Joiner,
    pub(super) settings: ControlSettings,
    metrics: Arc<ControlMetrics>,
    streams: SharedRegistry,
    pipelines: Arc<TenantPipelines>,
    /// Cluster changes the dispatcher has routed so far; see `connect`.
    clusters_routed: Arc<AtomicU64>,
    next_stream_id: AtomicU64,
    /// Random id of this service instance, the first half of its connection ids.
    replica_id: String,
    closing: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ControlService {
    /// The service, with its change dispatcher and status task running. Must be called
    /// inside a Tokio runtime; the tasks stop when the last clone is dropped.
    pub fn new(store: Store, ca: Arc<ClusterCa>, settings: ControlSettings) -> Self {
        let streams = SharedRegistry::default();
        let pipelines = Arc::new(TenantPipelines::new(settings.central_pipeline.clone()));
        let clusters_routed = Arc::new(AtomicU64::new(0));
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let dispatcher = tokio::spawn(dispatch_changes(
            store.subscribe(),
            Routes {
                streams: streams.clone(),
                pipelines: pipelines.clone(),
                clusters_routed: clusters_routed.clone(),
            },
            status_tx.clone(),
        ));
        let statuses = tokio::spawn(
            StatusTask::new(store.clone(), pipelines.clone())
                .run(status_rx, settings.status_debounce),
        );
        // Pipelines changed while no replica ran get their status on start.
        let _ = status_tx.send(StatusWork::All);
        let metrics = Arc::new(ControlMetrics::default());
        let joiner = Joiner {
            store: store.clone(),
            ca: ca.clone(),
            validity: settings.agent_certificate_validity,
            limiter: JoinRateLimiter::new(settings.join_limits),
            metrics: metrics.joins.clone(),
        };
        Self {
            inner: Arc::new(Inner {
                store,
                ca,
                joiner,
                settings,
                metrics,
                streams,
                pipelines,
                clusters_routed,
                next_stream_id: AtomicU64::new(1),
                replica_id: format!("{:016x}", fastrand::u64(..)),
                closing: watch::channel(false).0,
                tasks: vec![dispatcher, statuses],
            }),
        }
    }

    /// The service's metrics, to register in the observer's registry.
    pub fn metrics(&self) -> Arc<ControlMetrics> {
        self.inner.metrics.clone()
    }

    /// Ends every open stream with `UNAVAILABLE`, so agents reconnect (to another
    /// replica, during a rolling update) instead of holding a shutdown open.
    pub fn close_streams(&self) {
        self.inner.closing.send_replace(true);
    }
}

/// A store failure as the agent sees it: generic, retryable; the cause goes to the log.
pub(super) fn unavailable(error: StoreError) -> Status {
    tracing::error!(%error, "store error in the control service");
    Status::unavailable("the observer cannot reach its database; retry later")
}

type ObserverStream = Pin<Box<dyn Stream<Item = Result<ObserverMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentControl for ControlService {
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "server"))]
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = request.remote_addr();
        self.inner
            .joiner
            .join(remote, request.into_inner())
            .await
            .map(Response::new)
    }

    type ConnectStream = ObserverStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let inner = &self.inner;
        let peer = peer_identity(&request, &inner.ca)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(inner.settings.hello_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no AgentHello in time"))??
            .ok_or_else(|| Status::failed_precondition("the stream ended before the hello"))?;
        let Some(agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::failed_precondition(
                "the first message must be an AgentHello",
            ));
        };
        // A change of the cluster routed between the admission's read and the stream's
        // registration below would reach no stream: if any cluster change was routed
        // meanwhile, the stream reads its cluster (and certificate) again at its first
        // wake.
        let routed_before = inner.clusters_routed.load(Ordering::Acquire);
        let cluster = self.admit(&peer, &hello).await?;
        // Registered before it is recorded as connected, so that an older stream of the
        // cluster ending meanwhile sees this one and does not release the connection.
        let id = inner.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let role = role_of(&hello);
        let cluster_level = role == AgentRole::Cluster;
        let wake = Arc::new(Notify::new());
        let cluster_changed = Arc::new(AtomicBool::new(false));
        let connection_id = lock(&inner.streams).add(
            &cluster.id,
            &inner.replica_id,
            StreamEntry {
                id,
                tenant: cluster.tenant.clone(),
                wake: wake.clone(),
                cluster_changed: cluster_changed.clone(),
                cluster_level,
            },
        );
        if inner.clusters_routed.load(Ordering::Acquire) != routed_before {
            cluster_changed.store(true, Ordering::Release);
        }
        // Seen and connected in one write. The cluster's agent (process, version,
        // connection, last sign of life) is its cluster-level instance: a node
        // instance connecting is tracked by its own health reports
        // (`instance_health`), never as the cluster's agent.
        let seen = cluster_level.then(|| ReportWrite::Seen {
            cluster: cluster.id.clone(),
            instance_id: hello.agent_instance_id.clone(),
            version: hello.agent_version.clone(),
            at_ms: now_ms(),
            connection: Some(connection_id.clone()),
        });
        let recorded = match seen {
            Some(seen) => inner.store.report(seen).await,
            None => Ok(()),
        };
        if let Err(error) = recorded {
            // Nothing was recorded under this stream; another stream of the cluster on
            // this replica (if any) keeps the connection.
            lock(&inner.streams).remove(&cluster.id, id);
            return Err(unavailable(error));
        }
        inner.metrics.agent_streams.inc();
        if !peer.signed_by_active {
            inner.metrics.streams_on_previous_ca.inc();
        }
        tracing::info!(
            cluster = %cluster.id,
            instance = %peer.info.instance,
            agent = %loggable(&hello.agent_instance_id),
            version = %loggable(&hello.agent_version),
            hash = %hex::encode(&hello.last_applied_config_hash),
            "agent connected"
        );
        let (out, out_rx) = mpsc::channel(OUTBOX_CAPACITY);
        let stream = AgentStream {
            store: inner.store.clone(),
            pipelines: inner.pipelines.clone(),
            cluster_changed,
            registration: cluster.clone(),
            metrics: inner.metrics.clone(),
            streams: inner.streams.clone(),
            id,
            cluster: cluster.id.clone(),
            certificate: StreamCertificate::new(peer, &hello, inner),
            instance_id: hello.agent_instance_id.clone(),
            version: hello.agent_version.clone(),
            accepts_remote_config: accepts_remote_config(&hello),
            features: agent_features(&hello),
            role,
            placement: PushPlacement::default(),
            placement_read: None,
            gateway_check_interval: inner.settings.gateway_check_interval,
            agent_hash: hello.last_applied_config_hash.clone(),
            last_sent: None,
            awaiting_answer: None,
            next_sequence: first.sequence_num.saturating_add(1),
            previous_health: None,
            seen_recorded: Instant::now(),
            out,
        };
        let closing = inner.closing.subscribe();
        tokio::spawn(stream.run(inbound, wake, closing));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(out_rx).map(|message: Outgoing| *message),
        )))
    }
}

impl ControlService {
    /// Checks that `peer` may open a stream with `hello`: the hello names the
    /// certificate's cluster, the cluster is live, and the certificate is recorded for
    /// it and not revoked. A first connection with a renewed certificate revokes the
    /// instance's older ones, which ends their streams. A refusal is counted by reason.
    async fn admit(&self, peer: &PeerIdentity, hello: &AgentHello) -> Result<Cluster, Status> {
        let inner = &self.inner;
        let info = &peer.info;
        let refused = |reason: StreamRefusal, status: Status| {
            StreamRefused { reason }.emit(&inner.metrics.stream_refusals);
            status
        };
        if hello.cluster_id != info.cluster {
            tracing::warn!(certificate = %info.cluster, hello = %loggable(&hello.cluster_id), "hello names another cluster");
            return Err(refused(
                StreamRefusal::WrongCluster,
                Status::permission_denied(format!(
                    "the client certificate belongs to cluster {:?}, not {:?}",
                    info.cluster,
                    loggable(&hello.cluster_id)
                )),
            ));
        }
        // The role decides which credentials the stream is sent: it must be the one the
        // certificate allows (see `crate::identity`), checked before anything is read.
        let role = role_of(hello);
        if role != info.allowed_role {
            tracing::warn!(cluster = %info.cluster, instance = %info.instance, claimed = role.as_str(), allowed = info.allowed_role.as_str(), "hello claims a role its certificate does not allow");
            return Err(refused(
                StreamRefusal::WrongRole,
                Status::permission_denied(format!(
                    "instance {:?}'s certificate allows the role {}, not {}",
                    info.instance,
                    info.allowed_role.as_str(),
                    role.as_str()
                )),
            ));
        }
        let cluster = inner
            .store
            .get_cluster(&info.cluster)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                refused(
                    StreamRefusal::UnknownCluster,
                    Status::permission_denied(format!(
                        "cluster {:?} is not registered",
                        info.cluster
                    )),
                )
            })?;
        if !cluster.state.receives_config() {
            return Err(refused(
                StreamRefusal::DeletedCluster,
                Status::permission_denied(format!("cluster {:?} was deleted", cluster.id)),
            ));
        }
        let standing = inner
            .store
            .certificate_standing(&cluster.id, &info.serial_hex)
            .await
            .map_err(unavailable)?;
        match &standing {
            CertificateStanding::Valid { instance } if *instance == info.instance => {}
            _ => {
                tracing::warn!(cluster = %cluster.id, instance = %info.instance, serial = %info.serial_hex, ?standing, "certificate refused");
                return Err(refused(
                    StreamRefusal::Certificate,
                    revoked_status(&standing),
                ));
            }
        }
        let revoked = inner
            .store
            .activate_certificate(&cluster.id, &info.serial_hex, now_ms())
            .await
            .map_err(unavailable)?;
        if revoked > 0 {
            tracing::info!(cluster = %cluster.id, instance = %info.instance, serial = %info.serial_hex, revoked, "the instance switched to a renewed certificate; its older ones are revoked");
        }
        Ok(cluster)
    }
}
