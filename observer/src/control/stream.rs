//! One agent's `Connect` stream, owned by its task: renders and offers the cluster's
//! configuration when the agent needs it, reads the agent's messages in sequence
//! (hello, config status, health, heartbeats, certificate requests) and queues their
//! reports for the store, and ends the stream when the agent leaves, the certificate
//! expires or is revoked, the cluster is deleted, or the observer shuts down (see the
//! module documentation of [`crate::control`] for the protocol).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kaas_pipeline::agent_config::{AGENT_CONFIG_CONTENT_TYPE, RenderedConfig, check_config_size};
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::status::AgentConfigState;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline};
use kaas_proto::control::v1::{
    AgentHealth, AgentHello, AgentMessage, AgentRole as ProtoRole, Capability, Command,
    CommandType, ConfigState, ConfigStatus, ConfigUpdate, ObserverMessage, agent_message,
    observer_message,
};
use tokio::sync::{Notify, mpsc, watch};
use tonic::{Status, Streaming};

use super::registry::{SharedRegistry, lock};
use super::service::{ControlMetrics, unavailable};
use super::status::{HealthRecord, entry_problems};
use super::stream_identity::{StreamCertificate, revoked_status};
use crate::internal_events::{ConfigPushOutcome, ConfigPushed};
use crate::rendering::{AgentFeatures, TenantPipelines};
use crate::store::certificates::CertificateStanding;
use crate::store::instances::{
    InstanceHealthReport, InstancePipelineHealth, MAX_PIPELINES_PER_INSTANCE_REPORT,
};
use crate::store::{
    Cluster, ConfigErrorRecord, ConfigReport, PipelineKind, ReportWrite, Store, StoreError, now_ms,
};

/// Messages queued for one agent; the observer sends rarely (configurations and
/// commands), so a small queue suffices and bounds memory per stream.
pub(super) const OUTBOX_CAPACITY: usize = 16;
/// How often an agent's messages update its `last_seen`: far below the silence
/// threshold (minutes), while 10,000 agents reporting every 30 s cause one write per
/// agent per interval instead of one per message.
pub const SEEN_RECORD_INTERVAL: Duration = Duration::from_secs(20);
/// How often a cluster-level instance's stream asks the store again whether the
/// cluster's gateway is in use (at a health report of the instance, so at most once
/// per health interval): a gateway installed or gone moves the pushed inputs within
/// about a minute, at one indexed read per cluster per minute.
pub const GATEWAY_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The role the hello names; an agent that predates roles is the cluster instance.
pub(super) fn role_of(hello: &AgentHello) -> AgentRole {
    match ProtoRole::try_from(hello.role) {
        Ok(ProtoRole::Node) => AgentRole::Node,
        Ok(ProtoRole::Gateway) => AgentRole::Gateway,
        _ => AgentRole::Cluster,
    }
}

pub(super) fn accepts_remote_config(hello: &AgentHello) -> bool {
    hello
        .capabilities
        .contains(&(Capability::AcceptsRemoteConfig as i32))
}

/// Whether the agent runs trace pipelines: one that does not say so predates them and
/// is sent its configuration without them.
fn runs_trace_pipelines(hello: &AgentHello) -> bool {
    hello
        .capabilities
        .contains(&(Capability::TracePipelines as i32))
}

/// What the agent says in its hello it runs beyond metric and log pipelines: an agent
/// that does not announce a feature predates it and is sent its configuration without
/// it.
pub(super) fn agent_features(hello: &AgentHello) -> AgentFeatures {
    AgentFeatures {
        trace_pipelines: runs_trace_pipelines(hello),
        template_instances: hello
            .capabilities
            .contains(&(Capability::TemplateInstances as i32)),
    }
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
    pub(super) pipelines: Arc<TenantPipelines>,
    /// See [`StreamEntry::cluster_changed`].
    pub(super) cluster_changed: Arc<AtomicBool>,
    /// The cluster as last read: its labels select the pipelines.
    pub(super) registration: Cluster,
    pub(super) metrics: Arc<ControlMetrics>,
    pub(super) streams: SharedRegistry,
    pub(super) id: u64,
    pub(super) cluster: String,
    /// The certificate the stream runs on.
    pub(super) certificate: StreamCertificate,
    pub(super) instance_id: String,
    pub(super) version: String,
    pub(super) accepts_remote_config: bool,
    /// What the agent runs beyond metric and log pipelines ([`agent_features`]).
    pub(super) features: AgentFeatures,
    /// The instance's role, from its hello: which part of the configuration it gets.
    pub(super) role: AgentRole,
    /// Where the cluster's pushed inputs go (for a cluster-level instance: whether it
    /// keeps them), as last read from the store ([`GATEWAY_CHECK_INTERVAL`]).
    pub(super) placement: PushPlacement,
    /// When the placement was last read; `None` before the first read.
    pub(super) placement_read: Option<Instant>,
    /// How often the placement is read again ([`GATEWAY_CHECK_INTERVAL`]).
    pub(super) gateway_check_interval: Duration,
    /// What the agent runs: the hello's hash, then the latest APPLIED (or, after FAILED,
    /// the running hash).
    pub(super) agent_hash: Vec<u8>,
    /// The last configuration sent on this stream.
    pub(super) last_sent: Option<Vec<u8>>,
    /// A sent configuration the agent has not answered yet.
    pub(super) awaiting_answer: Option<Vec<u8>>,
    pub(super) next_sequence: u64,
    /// The health last stored for this instance (the cluster's, for the cluster-level
    /// instance): read at the first health report (`None` until then), so a connect
    /// costs no read for it.
    pub(super) previous_health: Option<Option<HealthRecord>>,
    /// When the agent was last recorded as seen.
    pub(super) seen_recorded: Instant,
    pub(super) out: mpsc::Sender<Outgoing>,
}

/// A message for the agent, or the status that ends its stream. Boxed: the outbox
/// allocates its slots up front (a block of 32), and a `Status` is ~180 bytes, so
/// unboxed slots would cost ~6 KiB per stream for a queue that is nearly always empty.
pub(super) type Outgoing = Box<Result<ObserverMessage, Status>>;

impl AgentStream {
    pub(super) async fn run(
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
        self.read_placement().await;
        let rendered = self.render().await?;
        if rendered.hash.as_slice() == self.agent_hash.as_slice() {
            let hash = rendered.hash_hex();
            if self.registration.applied_config_hash.as_deref() != Some(hash.as_str()) {
                let report = ConfigReport {
                    config_hash: hash.clone(),
                    state: AgentConfigState::Applied,
                    errors: Vec::new(),
                    running_config_hash: hash,
                    at_ms: now_ms(),
                    without_trace_pipelines: !self.features.trace_pipelines,
                    without_template_instances: !self.features.template_instances,
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
        Ok(configs.render_for_agent(
            &self.registration,
            (self.role, self.placement),
            self.features,
        ))
    }

    /// Reads whether the cluster's gateway is in use, for a cluster-level instance
    /// (the only role whose part depends on it); returns whether the placement
    /// changed. A store error keeps the placement last read: the next health report
    /// asks again.
    async fn read_placement(&mut self) -> bool {
        if self.role != AgentRole::Cluster {
            return false;
        }
        self.placement_read = Some(Instant::now());
        let found = self
            .store
            .clusters_with_gateway(std::slice::from_ref(&self.cluster))
            .await;
        let placement = match found {
            Ok(found) if found.contains(&self.cluster) => PushPlacement::Gateway,
            Ok(_) => PushPlacement::ClusterInstance,
            Err(error) => {
                tracing::warn!(cluster = %self.cluster, %error, "cannot read whether the cluster's gateway is in use; keeping the last answer");
                return false;
            }
        };
        let changed = placement != self.placement;
        if changed {
            tracing::info!(cluster = %self.cluster, ?placement, "the cluster's pushed inputs move");
        }
        self.placement = placement;
        changed
    }

    /// At a health report of a cluster-level instance, at most every
    /// [`GATEWAY_CHECK_INTERVAL`]: whether the cluster's gateway came or went, and if
    /// so the configuration without (or with) the pushed inputs.
    async fn check_gateway(&mut self) -> Result<(), StreamEnd> {
        let due = self
            .placement_read
            .is_none_or(|read| read.elapsed() >= self.gateway_check_interval);
        if self.role == AgentRole::Cluster && due && self.read_placement().await {
            return self.sync().await;
        }
        Ok(())
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
            ConfigPushed {
                outcome: ConfigPushOutcome::TooLarge,
            }
            .emit(&self.metrics.config_pushes);
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
            ConfigPushed {
                outcome: ConfigPushOutcome::Failure,
            }
            .emit(&self.metrics.config_pushes);
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
                Box::pin(self.health(health)).await;
                Box::pin(self.check_gateway()).await
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

    /// A health report: stored as this instance's ([`ReportWrite::InstanceHealth`],
    /// every role), and from the cluster-level instance also as the cluster's
    /// ([`ReportWrite::Health`], which older readers and the control-plane view read).
    async fn health(&mut self, health: AgentHealth) {
        if self.previous_health.is_none() {
            self.previous_health = Some(match self.role {
                AgentRole::Cluster => self.stored_health().await,
                AgentRole::Node | AgentRole::Gateway => self.stored_instance_health().await,
            });
        }
        let record = HealthRecord::from_report(
            &self.instance_id,
            &health,
            self.previous_health.as_ref().and_then(Option::as_ref),
        );
        let instance = InstanceHealthReport {
            cluster: self.cluster.clone(),
            instance: self.certificate.info.instance.clone(),
            agent_instance_id: self.instance_id.clone(),
            role: self.role,
            reported_at_ms: health.timestamp_unix_ms,
            received_at_ms: now_ms(),
            pipelines: self.judge(&record).await,
        };
        self.submit(ReportWrite::InstanceHealth(Box::new(instance)))
            .await;
        if self.role == AgentRole::Cluster {
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
        }
        self.previous_health = Some(Some(record));
    }

    /// Each pipeline of `record` with the problems it shows, judged against the
    /// pipeline's buffer bound (a pipeline the tenant does not hold, such as the
    /// central one, is not judged on its buffer).
    async fn judge(&self, record: &HealthRecord) -> Vec<InstancePipelineHealth> {
        let configs = match self
            .pipelines
            .get(&self.store, &self.registration.tenant)
            .await
        {
            Ok(configs) => Some(configs),
            Err(error) => {
                self.log_store_error(Err(error));
                None
            }
        };
        let max_bytes = |kind: &str, name: &str| -> u64 {
            let Some(configs) = &configs else {
                return u64::MAX;
            };
            let metric = (configs.pipelines().iter())
                .filter(|_| kind == ValidatedPipeline::KIND)
                .find(|p| p.name() == name)
                .map(|p| p.pipeline.buffer_max_bytes());
            let log = (configs.log_pipelines().iter())
                .filter(|_| kind == ValidatedLogPipeline::KIND)
                .find(|p| p.name() == name)
                .map(|p| p.pipeline.buffer_max_bytes());
            metric.or(log).unwrap_or(u64::MAX)
        };
        record
            .pipelines
            .iter()
            .take(MAX_PIPELINES_PER_INSTANCE_REPORT)
            .map(|entry| {
                let kind = entry.kind();
                InstancePipelineHealth {
                    kind: kind.to_owned(),
                    pipeline: entry.pipeline.clone(),
                    entry: serde_json::to_value(entry).unwrap_or_default(),
                    problems: entry_problems(
                        entry,
                        record.timestamp_ms,
                        max_bytes(kind, &entry.pipeline),
                    ),
                }
            })
            .collect()
    }

    /// This instance's entries as stored (by this or an earlier connection), as the
    /// record its next report's drop counts are compared with.
    async fn stored_instance_health(&self) -> Option<HealthRecord> {
        let stored = self
            .store
            .instance_entries(&self.cluster, &self.certificate.info.instance)
            .await;
        let entries = match stored {
            Ok(entries) => entries,
            Err(error) => {
                self.log_store_error(Err(error));
                return None;
            }
        };
        let pipelines = entries
            .into_values()
            // Counters restart with the process: another process's counts do not apply.
            .filter(|stored| stored.agent_instance_id == self.instance_id)
            .filter_map(|stored| serde_json::from_value(stored.entry).ok())
            .collect();
        Some(HealthRecord {
            agent_instance_id: self.instance_id.clone(),
            timestamp_ms: 0,
            pipelines,
        })
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
        // The role decides which reports are the cluster's and whether the stream
        // holds the cluster's connection (see the registry): fixed for the stream.
        if role_of(&hello) != self.role {
            return Err(StreamEnd::Refused(Status::failed_precondition(format!(
                "the stream was opened by a {} instance; a new role needs a new stream",
                self.role.as_str()
            ))));
        }
        self.instance_id = hello.agent_instance_id.clone();
        self.version = hello.agent_version.clone();
        self.accepts_remote_config = accepts_remote_config(&hello);
        self.features = agent_features(&hello);
        self.agent_hash = hello.last_applied_config_hash;
        // Offer again whatever the agent does not run.
        self.last_sent = None;
        self.seen().await;
        self.sync().await
    }

    async fn config_status(&mut self, status: ConfigStatus) {
        let state = match ConfigState::try_from(status.state) {
            Ok(ConfigState::Applying) => AgentConfigState::Applying,
            Ok(ConfigState::Applied) => AgentConfigState::Applied,
            Ok(ConfigState::Failed) => AgentConfigState::Failed,
            _ => {
                tracing::debug!(cluster = %self.cluster, state = status.state, "config status with an unknown state ignored");
                return;
            }
        };
        match state {
            AgentConfigState::Applied => self.agent_hash = status.config_hash.clone(),
            AgentConfigState::Failed => self.agent_hash = status.running_config_hash.clone(),
            AgentConfigState::Applying => {}
        }
        if state != AgentConfigState::Applying
            && self.awaiting_answer.as_deref() == Some(status.config_hash.as_slice())
        {
            self.awaiting_answer = None;
            ConfigPushed {
                outcome: ConfigPushOutcome::Success,
            }
            .emit(&self.metrics.config_pushes);
        }
        if state == AgentConfigState::Failed {
            tracing::warn!(
                cluster = %self.cluster,
                hash = %hex::encode(&status.config_hash),
                errors = status.errors.len(),
                "the agent refused the configuration"
            );
        }
        let report = ConfigReport {
            config_hash: hex::encode(&status.config_hash),
            state,
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
            without_trace_pipelines: !self.features.trace_pipelines,
            without_template_instances: !self.features.template_instances,
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
    ///
    /// The cluster's report (its applied configuration, health and last sign of life)
    /// is its cluster-level instance's: a node instance's would replace it with the
    /// state of a different configuration, so those are not stored as the cluster's.
    /// Every instance's health is stored as that instance's
    /// ([`ReportWrite::InstanceHealth`]).
    async fn submit(&self, report: ReportWrite) {
        if self.role != AgentRole::Cluster && !matches!(report, ReportWrite::InstanceHealth(_)) {
            tracing::debug!(cluster = %self.cluster, instance = %self.certificate.info.instance, role = self.role.as_str(), "a node or gateway instance's report is not the cluster's; not stored");
            return;
        }
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
            ConfigPushed {
                outcome: ConfigPushOutcome::Failure,
            }
            .emit(&self.metrics.config_pushes);
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
