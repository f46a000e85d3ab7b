//! `AgentControl` implemented on the real [`Store`]: `Join`, the `Connect` streams, the
//! dispatcher that routes store changes to streams, and the status task (see the module
//! documentation of [`crate::control`] for the protocol).

use crate::integrations::central::{CentralPipelineSettings, central_pipeline};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::agent_config::{
    AGENT_CONFIG_CONTENT_TYPE, AgentConfig, ConfigTemplate, RenderedConfig, check_config_size,
};
use kaas_proto::control::v1::agent_control_server::{AgentControl, AgentControlServer};
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, Capability, Command, CommandType, ConfigState, ConfigStatus,
    ConfigUpdate, JoinRequest, JoinResponse, ObserverMessage, agent_message, observer_message,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::join::{JoinLimits, JoinMetrics, JoinRateLimiter, Joiner, loggable};
use super::pipelines::TenantPipelines;
use super::routing::{Routes, SharedRegistry, StreamEntry, dispatch_changes, lock};
use super::status::HealthRecord;
use super::status_task::{StatusTask, StatusWork};
use super::stream_identity::{PeerIdentity, StreamCertificate, peer_identity, revoked_status};
use crate::identity::{ClusterCa, DEFAULT_AGENT_CERTIFICATE_VALIDITY};
use crate::store::certificates::CertificateStanding;
use crate::store::{
    CONFIG_STATE_APPLIED, CONFIG_STATE_APPLYING, CONFIG_STATE_FAILED, Cluster, ConfigErrorRecord,
    ConfigReport, ReportWrite, Store, StoreError, now_ms,
};

/// How long an agent may take to send its hello after opening the stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the status task collects reports before recomputing: a burst of reports
/// (an APPLIED from each of 50 clusters) becomes one recomputation per tenant, while a
/// user still sees the status change within a second.
pub const STATUS_DEBOUNCE: Duration = Duration::from_millis(250);
/// Messages queued for one agent; the observer sends rarely (configurations and
/// commands), so a small queue suffices and bounds memory per stream.
const OUTBOX_CAPACITY: usize = 16;
/// How often an agent's messages update its `last_seen`: far below the silence
/// threshold (minutes), while 10,000 agents reporting every 30 s cause one write per
/// agent per interval instead of one per message.
pub const SEEN_RECORD_INTERVAL: Duration = Duration::from_secs(20);

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
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            agent_certificate_validity: DEFAULT_AGENT_CERTIFICATE_VALIDITY,
            join_limits: JoinLimits::default(),
            hello_timeout: HELLO_TIMEOUT,
            status_debounce: STATUS_DEBOUNCE,
            central_pipeline: None,
        }
    }
}

/// `result` label of `kaas_observer_config_pushes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushResult {
    /// `success`: the agent answered with APPLIED or FAILED; `failure`: the stream
    /// ended (or could not take the message) before an answer; `too_large`: not sent,
    /// the configuration is over the size limit.
    pub result: &'static str,
}

/// The control service's metrics (names documented in `docs/metrics.md`).
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Agent control streams open on this replica.
    pub agent_streams: Gauge,
    /// Configurations sent down agent streams, by result.
    pub config_pushes: Family<PushResult, Counter>,
    /// The control port's TLS handshakes ([`super::accept`]).
    pub handshakes: super::accept::HandshakeMetrics,
    /// Refused `Join` calls ([`super::join`]).
    pub joins: Arc<JoinMetrics>,
    /// Open streams whose certificate was signed by the CA being rotated out.
    pub streams_on_previous_ca: Gauge,
}

impl ControlMetrics {
    /// Registers the metrics in `registry` (counters get their `_total` suffix there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_agent_streams",
            "Agent control streams open on this replica.",
            self.agent_streams.clone(),
        );
        registry.register(
            "kaas_observer_config_pushes",
            "Configurations sent down agent streams; result is success (the agent answered), failure (the stream ended first) or too_large (not sent: over the size limit).",
            self.config_pushes.clone(),
        );
        self.handshakes.register(registry);
        self.joins.register(registry);
        registry.register(
            "kaas_observer_agent_streams_on_previous_ca",
            "Agent control streams on this replica whose certificate was signed by the CA being rotated out; retire it once this is 0 everywhere.",
            self.streams_on_previous_ca.clone(),
        );
    }

    fn push(&self, result: &'static str) {
        self.config_pushes
            .get_or_create(&PushResult { result })
            .inc();
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

    /// The tonic service.
    pub fn into_server(self) -> AgentControlServer<Self> {
        AgentControlServer::new(self)
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

/// The rendered configuration for `cluster` running `pipelines` (already selected).
/// With `central`, the provider's central pipeline is added (it cannot collide with a
/// tenant pipeline: the `kaas-` prefix is reserved). Streams and the status task render
/// through [`TenantConfigs::render`](super::pipelines::TenantConfigs::render), which
/// gives the same configuration from a template shared by the tenant's clusters.
pub fn render_for_cluster(
    cluster: &Cluster,
    pipelines: &[ValidatedPipeline],
    central: Option<&CentralPipelineSettings>,
) -> RenderedConfig {
    config_template(cluster, pipelines, central).render(&external_labels(cluster))
}

/// The template of the configuration of `cluster`'s tenant running `pipelines`, plus
/// the central pipeline with `central`; [`external_labels`] complete it for a cluster.
pub(super) fn config_template(
    cluster: &Cluster,
    pipelines: &[ValidatedPipeline],
    central: Option<&CentralPipelineSettings>,
) -> ConfigTemplate {
    let Some(settings) = central else {
        return AgentConfig::template(pipelines);
    };
    let mut all = pipelines.to_vec();
    match central_pipeline(settings, cluster) {
        Ok(pipeline) => all.push(pipeline),
        Err(error) => {
            tracing::error!(cluster = %cluster.id, %error, "the central pipeline is invalid for this cluster; left out");
        }
    }
    AgentConfig::template(&all)
}

/// The external labels of `cluster`'s configuration: its name as `cluster`.
pub(super) fn external_labels(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([("cluster".to_owned(), cluster.id.clone())])
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
            },
        );
        if inner.clusters_routed.load(Ordering::Acquire) != routed_before {
            cluster_changed.store(true, Ordering::Release);
        }
        // Seen and connected in one write.
        if let Err(error) = inner
            .store
            .record_agent_connected(
                &cluster.id,
                &hello.agent_instance_id,
                &hello.agent_version,
                now_ms(),
                &connection_id,
            )
            .await
        {
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
    /// instance's older ones, which ends their streams.
    async fn admit(&self, peer: &PeerIdentity, hello: &AgentHello) -> Result<Cluster, Status> {
        let inner = &self.inner;
        let info = &peer.info;
        if hello.cluster_id != info.cluster {
            tracing::warn!(certificate = %info.cluster, hello = %loggable(&hello.cluster_id), "hello names another cluster");
            return Err(Status::permission_denied(format!(
                "the client certificate belongs to cluster {:?}, not {:?}",
                info.cluster,
                loggable(&hello.cluster_id)
            )));
        }
        let cluster = inner
            .store
            .get_cluster(&info.cluster)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Status::permission_denied(format!("cluster {:?} is not registered", info.cluster))
            })?;
        if !cluster.state.receives_config() {
            return Err(Status::permission_denied(format!(
                "cluster {:?} was deleted",
                cluster.id
            )));
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
                return Err(revoked_status(&standing));
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

fn accepts_remote_config(hello: &AgentHello) -> bool {
    hello
        .capabilities
        .contains(&(Capability::AcceptsRemoteConfig as i32))
}

/// Why a stream task stops.
pub(super) enum StreamEnd {
    /// The agent closed the stream or the connection broke.
    Gone,
    /// The observer ends it with this status.
    Refused(Status),
}

/// One agent's stream, owned by its task.
pub(super) struct AgentStream {
    pub(super) store: Store,
    pipelines: Arc<TenantPipelines>,
    /// See [`StreamEntry::cluster_changed`].
    cluster_changed: Arc<AtomicBool>,
    /// The cluster as last read: its labels select the pipelines.
    registration: Cluster,
    metrics: Arc<ControlMetrics>,
    streams: SharedRegistry,
    id: u64,
    pub(super) cluster: String,
    /// The certificate the stream runs on.
    pub(super) certificate: StreamCertificate,
    instance_id: String,
    version: String,
    accepts_remote_config: bool,
    /// What the agent runs: the hello's hash, then the latest APPLIED (or, after FAILED,
    /// the running hash).
    agent_hash: Vec<u8>,
    /// The last configuration sent on this stream.
    last_sent: Option<Vec<u8>>,
    /// A sent configuration the agent has not answered yet.
    awaiting_answer: Option<Vec<u8>>,
    next_sequence: u64,
    /// The health last stored for the cluster: read at the first health report (`None`
    /// until then), so a connect costs no read for it.
    previous_health: Option<Option<HealthRecord>>,
    /// When the agent was last recorded as seen.
    seen_recorded: Instant,
    out: mpsc::Sender<Outgoing>,
}

/// A message for the agent, or the status that ends its stream. Boxed: the outbox
/// allocates its slots up front (a block of 32), and a `Status` is ~180 bytes, so
/// unboxed slots would cost ~6 KiB per stream for a queue that is nearly always empty.
type Outgoing = Box<Result<ObserverMessage, Status>>;

impl AgentStream {
    async fn run(
        mut self,
        mut inbound: Streaming<AgentMessage>,
        wake: Arc<Notify>,
        mut closing: watch::Receiver<bool>,
    ) {
        // The task lives as long as the agent is connected, mostly waiting: the work
        // (store reads and writes, whose futures are several KiB) is boxed so it takes
        // memory only while it runs, not in every idle task.
        let expiry = tokio::time::sleep_until(self.certificate.expires);
        tokio::pin!(expiry);
        let end = match Box::pin(self.start()).await {
            Err(end) => end,
            Ok(()) => loop {
                let step = tokio::select! {
                    () = wake.notified() => Box::pin(self.sync()).await,
                    () = &mut expiry => Err(StreamEnd::Refused(Status::permission_denied(
                        "the client certificate expired; renew it before it expires, or join again",
                    ))),
                    message = inbound.message() => match message {
                        Ok(Some(message)) => Box::pin(self.receive(message)).await,
                        Ok(None) => Err(StreamEnd::Gone),
                        Err(status) => {
                            tracing::debug!(cluster = %self.cluster, %status, "agent stream broke");
                            Err(StreamEnd::Gone)
                        }
                    },
                    () = self.out.closed() => Err(StreamEnd::Gone),
                    _ = closing.changed() => Err(StreamEnd::Refused(
                        Status::unavailable("the observer is shutting down; reconnect"),
                    )),
                };
                if let Err(end) = step {
                    break end;
                }
            },
        };
        if let StreamEnd::Refused(status) = end {
            let _ = self.out.send(Box::new(Err(status))).await;
        }
        Box::pin(self.finish()).await;
    }

    /// Sends the first configuration if the agent needs one, or records that it runs
    /// the current one; during a CA rotation also the new trust bundle and, for a
    /// certificate of the CA being rotated out, the request to renew.
    async fn start(&mut self) -> Result<(), StreamEnd> {
        self.offer_trust().await?;
        let rendered = self.render().await?;
        if rendered.hash.as_slice() == self.agent_hash.as_slice() {
            let hash = rendered.hash_hex();
            if self.registration.applied_config_hash.as_deref() != Some(hash.as_str()) {
                let report = ConfigReport {
                    config_hash: hash.clone(),
                    state: CONFIG_STATE_APPLIED.to_owned(),
                    errors: Vec::new(),
                    running_config_hash: hash,
                    at_ms: now_ms(),
                };
                self.submit(ReportWrite::Config {
                    cluster: self.cluster.clone(),
                    report,
                })
                .await;
            }
            return Ok(());
        }
        self.offer(rendered).await
    }

    /// Re-renders after a change and offers the result if the agent needs it. Reads
    /// the cluster again only when it changed; the pipelines come from the shared
    /// per-tenant cache.
    async fn sync(&mut self) -> Result<(), StreamEnd> {
        if self.cluster_changed.swap(false, Ordering::AcqRel) {
            let cluster = self
                .store
                .get_cluster(&self.cluster)
                .await
                .map_err(|error| StreamEnd::Refused(unavailable(error)))?;
            self.registration = match cluster {
                Some(cluster) if cluster.state.receives_config() => cluster,
                _ => {
                    return Err(StreamEnd::Refused(Status::permission_denied(format!(
                        "cluster {:?} was deleted",
                        self.cluster
                    ))));
                }
            };
            // A cluster change may be a revocation: a re-join or a renewal of this
            // stream's instance.
            let standing = self
                .store
                .certificate_standing(&self.cluster, &self.certificate.info.serial_hex)
                .await
                .map_err(|error| StreamEnd::Refused(unavailable(error)))?;
            if !matches!(standing, CertificateStanding::Valid { .. }) {
                tracing::info!(cluster = %self.cluster, instance = %self.certificate.info.instance, serial = %self.certificate.info.serial_hex, "the stream's certificate was revoked; ending it");
                return Err(StreamEnd::Refused(revoked_status(&standing)));
            }
        }
        let rendered = self.render().await?;
        if rendered.hash.as_slice() == self.agent_hash.as_slice()
            || self.last_sent.as_deref() == Some(rendered.hash.as_slice())
        {
            return Ok(());
        }
        self.offer(rendered).await
    }

    async fn render(&self) -> Result<RenderedConfig, StreamEnd> {
        let configs = self
            .pipelines
            .get(&self.store, &self.registration.tenant)
            .await
            .map_err(|error| StreamEnd::Refused(unavailable(error)))?;
        Ok(configs.render(&self.registration))
    }

    async fn offer(&mut self, rendered: RenderedConfig) -> Result<(), StreamEnd> {
        if !self.accepts_remote_config {
            tracing::warn!(cluster = %self.cluster, "the agent does not accept remote configuration; nothing sent");
            return Ok(());
        }
        let hash = rendered.hash.to_vec();
        if let Err(too_large) = check_config_size(rendered.body.len()) {
            // Not offered again until it changes; the pipelines' condition says why.
            tracing::warn!(cluster = %self.cluster, %too_large, "configuration not sent");
            self.metrics.push("too_large");
            self.last_sent = Some(hash);
            return Ok(());
        }
        tracing::info!(cluster = %self.cluster, hash = %rendered.hash_hex(), "sending configuration");
        let message = ObserverMessage {
            body: Some(observer_message::Body::ConfigUpdate(ConfigUpdate {
                body: rendered.body,
                content_type: AGENT_CONFIG_CONTENT_TYPE.to_owned(),
                config_hash: hash.clone(),
            })),
        };
        if self.out.send(Box::new(Ok(message))).await.is_err() {
            self.metrics.push("failure");
            return Err(StreamEnd::Gone);
        }
        self.last_sent = Some(hash.clone());
        self.awaiting_answer = Some(hash);
        Ok(())
    }

    pub(super) async fn send(&self, body: observer_message::Body) -> Result<(), StreamEnd> {
        self.out
            .send(Box::new(Ok(ObserverMessage { body: Some(body) })))
            .await
            .map_err(|_| StreamEnd::Gone)
    }

    pub(super) async fn command(&self, kind: CommandType, reason: String) -> Result<(), StreamEnd> {
        let message = ObserverMessage {
            body: Some(observer_message::Body::Command(Command {
                r#type: kind as i32,
                reason,
            })),
        };
        self.out
            .send(Box::new(Ok(message)))
            .await
            .map_err(|_| StreamEnd::Gone)
    }

    async fn receive(&mut self, message: AgentMessage) -> Result<(), StreamEnd> {
        let sequence = message.sequence_num;
        if sequence < self.next_sequence {
            tracing::debug!(cluster = %self.cluster, sequence, "duplicate message ignored");
            return Ok(());
        }
        if sequence > self.next_sequence {
            let reason = format!("expected message {}, got {sequence}", self.next_sequence);
            tracing::warn!(cluster = %self.cluster, %reason, "messages were lost; asking for the full state");
            self.next_sequence = sequence.saturating_add(1);
            return self.command(CommandType::ResendFullState, reason).await;
        }
        self.next_sequence = sequence.saturating_add(1);
        self.touch().await;
        match message.body {
            Some(agent_message::Body::Hello(hello)) => self.hello(hello).await,
            Some(agent_message::Body::ConfigStatus(status)) => {
                self.config_status(status).await;
                Ok(())
            }
            Some(agent_message::Body::Health(health)) => {
                if self.previous_health.is_none() {
                    self.previous_health = Some(self.stored_health().await);
                }
                let record = HealthRecord::from_report(
                    &self.instance_id,
                    &health,
                    self.previous_health.as_ref().and_then(Option::as_ref),
                );
                match serde_json::to_value(&record) {
                    Ok(json) => {
                        self.submit(ReportWrite::Health {
                            cluster: self.cluster.clone(),
                            health: json,
                            at_ms: health.timestamp_unix_ms,
                        })
                        .await;
                    }
                    Err(error) => tracing::error!(%error, "cannot encode a health record"),
                }
                self.previous_health = Some(Some(record));
                Ok(())
            }
            // Every message is a sign of life (see `touch`); a heartbeat is nothing more.
            Some(agent_message::Body::Heartbeat(_)) => Ok(()),
            Some(agent_message::Body::CertificateRequest(request)) => {
                Box::pin(self.issue_certificate(request)).await
            }
            // A message type this observer does not know: ignored, as the contract asks.
            None => Ok(()),
        }
    }

    /// The health record stored for the cluster (by this or an earlier connection).
    async fn stored_health(&self) -> Option<HealthRecord> {
        match self.store.cluster_report(&self.cluster).await {
            Ok(report) => report
                .and_then(|report| report.health)
                .and_then(|json| serde_json::from_value(json).ok()),
            Err(error) => {
                self.log_store_error(Err(error));
                None
            }
        }
    }

    async fn seen(&mut self) {
        self.submit(ReportWrite::Seen {
            cluster: self.cluster.clone(),
            instance_id: self.instance_id.clone(),
            version: self.version.clone(),
            at_ms: now_ms(),
            connection: None,
        })
        .await;
        self.seen_recorded = Instant::now();
    }

    /// Records that the agent is alive, at most once per [`SEEN_RECORD_INTERVAL`].
    async fn touch(&mut self) {
        if self.seen_recorded.elapsed() >= SEEN_RECORD_INTERVAL {
            self.seen().await;
        }
    }

    /// A repeated hello (after RESEND_FULL_STATE): the agent's state may have moved.
    async fn hello(&mut self, hello: AgentHello) -> Result<(), StreamEnd> {
        if hello.cluster_id != self.cluster {
            return Err(StreamEnd::Refused(Status::permission_denied(format!(
                "the client certificate belongs to cluster {:?}, not {:?}",
                self.cluster, hello.cluster_id
            ))));
        }
        self.instance_id = hello.agent_instance_id.clone();
        self.version = hello.agent_version.clone();
        self.accepts_remote_config = accepts_remote_config(&hello);
        self.agent_hash = hello.last_applied_config_hash;
        // Offer again whatever the agent does not run.
        self.last_sent = None;
        self.seen().await;
        self.sync().await
    }

    async fn config_status(&mut self, status: ConfigStatus) {
        let state = match ConfigState::try_from(status.state) {
            Ok(ConfigState::Applying) => CONFIG_STATE_APPLYING,
            Ok(ConfigState::Applied) => CONFIG_STATE_APPLIED,
            Ok(ConfigState::Failed) => CONFIG_STATE_FAILED,
            _ => {
                tracing::debug!(cluster = %self.cluster, state = status.state, "config status with an unknown state ignored");
                return;
            }
        };
        if state == CONFIG_STATE_APPLIED {
            self.agent_hash = status.config_hash.clone();
        } else if state == CONFIG_STATE_FAILED {
            self.agent_hash = status.running_config_hash.clone();
        }
        if state != CONFIG_STATE_APPLYING
            && self.awaiting_answer.as_deref() == Some(status.config_hash.as_slice())
        {
            self.awaiting_answer = None;
            self.metrics.push("success");
        }
        if state == CONFIG_STATE_FAILED {
            tracing::warn!(
                cluster = %self.cluster,
                hash = %hex::encode(&status.config_hash),
                errors = status.errors.len(),
                "the agent refused the configuration"
            );
        }
        let report = ConfigReport {
            config_hash: hex::encode(&status.config_hash),
            state: state.to_owned(),
            errors: status
                .errors
                .into_iter()
                .map(|error| ConfigErrorRecord {
                    pipeline: error.pipeline,
                    field_path: error.field_path,
                    message: error.message,
                })
                .collect(),
            running_config_hash: hex::encode(&status.running_config_hash),
            at_ms: now_ms(),
        };
        self.submit(ReportWrite::Config {
            cluster: self.cluster.clone(),
            report,
        })
        .await;
    }

    /// Queues a report for the store without waiting for its write: the stream goes on
    /// reading (an `APPLIED` right behind the `APPLYING`), and its reports are still
    /// written in order (see [`crate::store::reports`]).
    async fn submit(&self, report: ReportWrite) {
        let result = self.store.submit_report(report).await;
        self.log_store_error(result);
    }

    fn log_store_error(&self, result: Result<(), StoreError>) {
        // A report that cannot be stored is lost, not fatal: the next one replaces it.
        if let Err(error) = result {
            tracing::warn!(cluster = %self.cluster, %error, "cannot store an agent report");
        }
    }

    async fn finish(self) {
        if self.awaiting_answer.is_some() {
            self.metrics.push("failure");
        }
        self.metrics.agent_streams.dec();
        if !self.certificate.signed_by_active {
            self.metrics.streams_on_previous_ca.dec();
        }
        let last = lock(&self.streams).remove(&self.cluster, self.id);
        if let Some(connection) = last {
            match self
                .store
                .release_connection(&self.cluster, &connection)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::debug!(
                    cluster = %self.cluster,
                    "the agent is connected through another replica now; the connection stays recorded"
                ),
                Err(error) => self.log_store_error(Err(error)),
            }
        }
        tracing::info!(cluster = %self.cluster, "agent disconnected");
    }
}
