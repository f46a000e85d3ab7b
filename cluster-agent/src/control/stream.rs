//! The agent's side of the control contract: joining, the mTLS `Connect` stream, and
//! turning each `ConfigUpdate` into running pipelines or a precise refusal (see the
//! module documentation of [`crate::control`] for the protocol and its reasons).

use std::time::{Duration, Instant, SystemTime};

use kaas_pipeline::agent_config::{
    AGENT_CONFIG_CONTENT_TYPE, AgentConfig, AgentConfigError, MAX_AGENT_CONFIG_BYTES,
    ValidatedAgentConfig, check_config_size, config_hash,
};
use kaas_pipeline::role::AgentRole;
use kaas_proto::control::v1::agent_control_client::AgentControlClient;
use kaas_proto::control::v1::{
    AgentHello, AgentMessage, AgentRole as ProtoRole, Capability, CommandType, ConfigError,
    ConfigState, ConfigStatus, ConfigUpdate, Heartbeat, JoinRequest, ObserverMessage,
    agent_message, observer_message,
};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::endpoints::{Endpoints, check_observer_url};
use super::identity::{AgentIdentity, KeyAndRequest, check_writable, generate_key_and_request};
use super::lkg::LastKnownGood;
use super::refusal::{bounded_errors, config_errors, whole_config_error};
use super::renewal::Renewal;
use super::{
    CONNECT_TIMEOUT, ControlError, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, ObserverSettings,
    RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP,
};
use crate::agent::ConfiguredAgent;
use crate::internal_events::{ConfigLoaded, ConfigRefused, ConfigReloaded, ConfigSource};
use crate::node_certificates::{Issuance, IssuanceQueue};
use crate::outbound::backoff::Backoff;

/// How long a `Join` call may take before it is retried.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages queued for the observer before sending waits; a handful is plenty, as the
/// agent sends at most a few messages per configuration and per health interval.
const OUTBOX_CAPACITY: usize = 16;
/// The largest message the agent decodes from the observer. The observer sends no
/// configuration over [`MAX_AGENT_CONFIG_BYTES`]; one that does anyway (an older
/// observer) up to four times that is still read, and refused with FAILED on the open
/// stream. Refused by the transport instead, the stream would break, and the agent
/// would reconnect only to be sent the same message again.
pub const MAX_OBSERVER_MESSAGE_BYTES: usize = 4 * MAX_AGENT_CONFIG_BYTES;
/// How a session ended without an error.
enum SessionEnd {
    /// The observer asked for a new join (`REJOIN`), with its reason.
    Rejoin(String),
    /// A renewed certificate was saved: reconnect with it at once.
    Renewed,
    /// The stream asked for as many node certificates as the observer answers on one
    /// stream: reconnect at once for the nodes still waiting.
    IssuancesSpent,
}

/// What the reconnect loop does after a round.
enum RoundEnd {
    /// Wait the jittered backoff first.
    Backoff,
    /// Reconnect at once (the identity was renewed).
    Now,
}

/// The messages going to the observer on one stream, numbered from 1.
struct Outbox {
    tx: mpsc::Sender<AgentMessage>,
    next_sequence: u64,
    last_sent: Instant,
}

impl Outbox {
    async fn send(&mut self, body: agent_message::Body) -> Result<(), ControlError> {
        let message = AgentMessage {
            sequence_num: self.next_sequence,
            body: Some(body),
        };
        self.tx
            .send(message)
            .await
            .map_err(|_| ControlError::StreamClosed)?;
        self.next_sequence += 1;
        self.last_sent = Instant::now();
        Ok(())
    }
}

/// The configuration the agent falls back to: the last one that passed the health
/// window, with its validated form ready to apply.
struct Fallback {
    saved: LastKnownGood,
    config: ValidatedAgentConfig,
}

/// The agent's connection to the observer: identity, last-known-good configuration and
/// the reconnect loop.
pub struct ObserverConnection {
    settings: ObserverSettings,
    endpoints: Endpoints,
    identity: Option<AgentIdentity>,
    last_known_good: Option<Fallback>,
    last_status: Option<ConfigStatus>,
    backoff: Backoff,
    /// The key and CSR of a join that has not been answered and saved yet: a retry
    /// sends the same CSR, so the observer answers again instead of refusing the used
    /// token.
    pending_join: Option<KeyAndRequest>,
    renewal: Renewal,
    /// Node certificate requests to pass to the observer (the cluster-level instance,
    /// [`crate::node_certificates`]).
    issuances: Option<IssuanceQueue>,
}

impl ObserverConnection {
    /// Checks the settings and loads the identity from the data directory. Fails when
    /// the agent could never connect: no endpoint, an endpoint that is not https, or no
    /// identity and no token or CA to join with.
    pub fn new(settings: ObserverSettings) -> Result<Self, ControlError> {
        if settings.urls.is_empty() {
            return Err(ControlError::BadUrl {
                url: String::new(),
                reason: "no observer endpoint given".to_owned(),
            });
        }
        for url in &settings.urls {
            check_observer_url(url)?;
        }
        let identity = AgentIdentity::load(&settings.data_dir)?;
        match &identity {
            Some(identity) => tracing::info!(
                cluster = %identity.cluster_id,
                "using the identity in the data directory; no join token needed"
            ),
            None => {
                if settings.node_enrolment.is_none()
                    && settings.join_token_file.is_none()
                    && settings.join_token_env.is_none()
                {
                    return Err(ControlError::NoJoinToken);
                }
                if settings.ca_file.is_none() {
                    return Err(ControlError::NoCaFile);
                }
            }
        }
        Ok(Self {
            endpoints: Endpoints::new(settings.urls.clone(), settings.endpoint_order),
            settings,
            identity,
            last_known_good: None,
            last_status: None,
            backoff: Backoff::new(RECONNECT_BACKOFF_BASE, RECONNECT_BACKOFF_CAP),
            pending_join: None,
            renewal: Renewal::default(),
            issuances: None,
        })
    }

    /// Applies the last-known-good configuration, then joins if needed and keeps the
    /// control stream open, reconnecting after any failure. Never returns; the caller
    /// drops it to stop.
    pub async fn run(&mut self, agent: &mut ConfiguredAgent) {
        if self.issuances.is_none() {
            self.issuances = agent.take_issuance_queue();
        }
        self.apply_last_known_good(agent).await;
        loop {
            if let RoundEnd::Now = self.round(agent).await {
                continue;
            }
            let delay = self.backoff.next_delay();
            tracing::info!(retry_in = ?delay, "reconnecting to the observer");
            tokio::time::sleep(delay).await;
        }
    }

    /// One round over the endpoints (see [`super::endpoints`]): joins if needed and
    /// runs a stream through the first replica that takes it; returns when that stream
    /// ends, when a refusal makes trying further replicas pointless, or when every
    /// endpoint failed.
    async fn round(&mut self, agent: &mut ConfiguredAgent) -> RoundEnd {
        for url in self.endpoints.round() {
            let identity = match &self.identity {
                Some(identity) => identity.clone(),
                None => match self.join_or_enrol(&url).await {
                    Ok(identity) => {
                        self.identity = Some(identity.clone());
                        identity
                    }
                    Err(error) => {
                        let reachable = matches!(
                            error,
                            ControlError::Transport(_) | ControlError::Status { .. }
                        );
                        if self.settings.node_enrolment.is_some() {
                            // The cluster agent, not the observer, was asked.
                            let error = kaas_self_telemetry::error_chain(&error);
                            tracing::error!(%error, "no certificate for this node yet; retrying");
                            return RoundEnd::Backoff;
                        }
                        let error = kaas_self_telemetry::error_chain(&error);
                        tracing::error!(observer = %url, %error, "cannot join the observer");
                        if !reachable {
                            // A refused token (every replica reads the same token
                            // table) or a local problem (token file, CA file, key, an
                            // unwritable data directory): another replica would not
                            // help.
                            return RoundEnd::Backoff;
                        }
                        self.endpoints.failed(&url);
                        continue;
                    }
                },
            };
            let (outbox, inbound) = match self.open(agent, &identity, &url).await {
                Ok(opened) => opened,
                Err(ControlError::Status { code, message }) if is_refusal(code) => {
                    log_refused_certificate(&url, &identity, code, &message);
                    self.enrol_again();
                    return RoundEnd::Backoff;
                }
                Err(error) => {
                    let error = kaas_self_telemetry::error_chain(&error);
                    tracing::warn!(observer = %url, %error, "cannot open the control stream; trying the next observer endpoint");
                    self.endpoints.failed(&url);
                    continue;
                }
            };
            match self.session(agent, &identity, outbox, inbound).await {
                Ok(SessionEnd::Renewed) => {
                    tracing::info!(observer = %url, cluster = %identity.cluster_id, "the certificate was renewed; reconnecting with it");
                    return RoundEnd::Now;
                }
                Ok(SessionEnd::IssuancesSpent) => {
                    tracing::info!(observer = %url, cluster = %identity.cluster_id, "reconnecting for more node certificates");
                    return RoundEnd::Now;
                }
                Ok(SessionEnd::Rejoin(reason)) => {
                    tracing::error!(
                        observer = %url,
                        cluster = %identity.cluster_id,
                        %reason,
                        "the observer asked this agent to join again: its identity is discarded and a new join token is needed (--join-token-file or KAAS_JOIN_TOKEN); the last-known-good configuration keeps running meanwhile"
                    );
                    if let Err(error) = AgentIdentity::discard(&self.settings.data_dir) {
                        tracing::error!(%error, "cannot remove the old identity");
                    }
                    self.identity = None;
                }
                Err(ControlError::Status { code, message }) if is_refusal(code) => {
                    log_refused_certificate(&url, &identity, code, &message);
                    self.enrol_again();
                }
                Err(ControlError::Status {
                    code: tonic::Code::OutOfRange,
                    message,
                }) => {
                    // A message over a size limit, this agent's (MAX_OBSERVER_MESSAGE_BYTES)
                    // or the observer's own: it would come again at once.
                    tracing::error!(
                        observer = %url,
                        %message,
                        "the stream broke on a message over the size limit; the last-known-good configuration keeps running, and the agent reconnects only after the longest backoff"
                    );
                    self.backoff.at_cap();
                }
                Err(error) => {
                    let error = kaas_self_telemetry::error_chain(&error);
                    tracing::warn!(observer = %url, %error, "the control stream failed");
                }
            }
            // The stream ended: this replica goes last in the next round, which starts
            // after the (reset, so short) jittered backoff, so that the agents of a
            // replica that died do not all arrive at another one in the same instant.
            self.endpoints.failed(&url);
            return RoundEnd::Backoff;
        }
        RoundEnd::Backoff
    }

    /// A node instance whose certificate the observer refuses (revoked: another
    /// enrolment of its node, the cluster's certificates revoked) discards it and asks
    /// its cluster-level instance again in the next round; that succeeds only while the
    /// cluster-level instance is admitted, and revokes whatever certificate was issued
    /// for this node in between. Joined instances keep theirs (a token is needed).
    fn enrol_again(&mut self) {
        if self.settings.node_enrolment.is_none() {
            return;
        }
        tracing::warn!(
            "discarding the refused certificate; asking the cluster agent for a new one"
        );
        if let Err(error) = AgentIdentity::discard(&self.settings.data_dir) {
            tracing::error!(%error, "cannot remove the refused identity");
        }
        self.identity = None;
    }

    /// The hash of the configuration the agent runs, empty when it has none.
    fn running_hash(&self) -> Vec<u8> {
        self.last_known_good
            .as_ref()
            .map(|fallback| fallback.saved.hash.to_vec())
            .unwrap_or_default()
    }

    async fn apply_last_known_good(&mut self, agent: &mut ConfiguredAgent) {
        let saved = match LastKnownGood::load(&self.settings.data_dir) {
            Ok(Some(saved)) => saved,
            Ok(None) => {
                tracing::info!("no last-known-good configuration yet; waiting for the observer");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "cannot use the last-known-good configuration; waiting for the observer");
                return;
            }
        };
        let parsed = std::str::from_utf8(&saved.body)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                AgentConfig::parse(text, &self.settings.validation).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(config) => {
                tracing::info!(
                    hash = %hex::encode(saved.hash),
                    "applying the last-known-good configuration before contacting the observer"
                );
                agent.apply(config.clone()).await;
                ConfigLoaded(ConfigSource::LastKnownGood).emit(&agent.reloads);
                self.last_known_good = Some(Fallback { saved, config });
            }
            Err(error) => tracing::error!(
                %error,
                "the last-known-good configuration is no longer valid for this agent version; waiting for the observer"
            ),
        }
    }

    fn join_token(&self) -> Result<String, ControlError> {
        if let Some(path) = &self.settings.join_token_file {
            // Read at every attempt, so an operator can drop a fresh token in place.
            let token = std::fs::read_to_string(path).map_err(|source| ControlError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(token.trim().to_owned());
        }
        self.settings
            .join_token_env
            .as_ref()
            .map(|token| token.trim().to_owned())
            .ok_or(ControlError::NoJoinToken)
    }

    fn join_ca(&self) -> Result<String, ControlError> {
        let path = self
            .settings
            .ca_file
            .as_ref()
            .ok_or(ControlError::NoCaFile)?;
        std::fs::read_to_string(path).map_err(|source| ControlError::Read {
            path: path.clone(),
            source,
        })
    }

    async fn channel(
        &self,
        url: &str,
        ca_pem: &str,
        identity: Option<&AgentIdentity>,
    ) -> Result<Channel, ControlError> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        }
        let endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tls_config(tls)?;
        Ok(endpoint.connect().await?)
    }

    /// Gets a first identity: from the cluster-level instance for a node instance with
    /// an issuer ([`super::enrolment`]), otherwise by redeeming the join token at `url`.
    async fn join_or_enrol(&mut self, url: &str) -> Result<AgentIdentity, ControlError> {
        let Some(enrolment) = self.settings.node_enrolment.clone() else {
            return self.join(url).await;
        };
        let ca_pem = self.join_ca()?;
        check_writable(&self.settings.data_dir)?;
        let generated = match &self.pending_join {
            Some(pending) => pending.clone(),
            None => generate_key_and_request()?,
        };
        self.pending_join = Some(generated.clone());
        let identity = enrolment
            .request(&self.settings.instance_name, &generated, ca_pem)
            .await?;
        identity.save(&self.settings.data_dir)?;
        self.pending_join = None;
        tracing::info!(
            issuer = %enrolment.issuer_url,
            cluster = %identity.cluster_id,
            instance = %self.settings.instance_name,
            "got this node's certificate from the cluster agent; the identity is saved in the data directory"
        );
        Ok(identity)
    }

    /// Redeems the join token at `url` for an identity and saves it. The data directory
    /// is checked to be writable first, and the key and CSR are kept until the identity
    /// is saved, so neither an unwritable directory nor a lost answer uses the token up
    /// for nothing: a retry sends the same CSR and gets the same certificate again.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client", observer = %url))]
    async fn join(&mut self, url: &str) -> Result<AgentIdentity, ControlError> {
        let token = self.join_token()?;
        let ca_pem = self.join_ca()?;
        check_writable(&self.settings.data_dir)?;
        let generated = match &self.pending_join {
            Some(pending) => pending.clone(),
            None => generate_key_and_request()?,
        };
        self.pending_join = Some(generated.clone());
        let channel = self.channel(url, &ca_pem, None).await?;
        let request = JoinRequest {
            join_token: token,
            csr_pem: generated.csr_pem.clone(),
            agent_instance_id: self.settings.instance_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_name: self.settings.instance_name.clone(),
        };
        let mut client = AgentControlClient::new(channel);
        let response = match tokio::time::timeout(JOIN_TIMEOUT, client.join(request)).await {
            Err(_) => {
                return Err(ControlError::Status {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer to Join within {JOIN_TIMEOUT:?}"),
                });
            }
            Ok(Err(status)) if status.code() == tonic::Code::PermissionDenied => {
                // A new token comes with a new request.
                self.pending_join = None;
                return Err(ControlError::JoinRefused(status.message().to_owned()));
            }
            Ok(result) => result?.into_inner(),
        };
        let identity = AgentIdentity {
            cluster_id: response.cluster_id,
            key_pem: generated.key_pem,
            cert_pem: response.certificate_pem,
            ca_pem: response.ca_bundle_pem,
        };
        identity.save(&self.settings.data_dir)?;
        self.pending_join = None;
        tracing::info!(
            observer = %url,
            cluster = %identity.cluster_id,
            instance = %response.instance_name,
            not_after_unix_seconds = response.not_after_unix_seconds,
            "joined the observer; the identity is saved in the data directory"
        );
        Ok(identity)
    }

    fn hello(&self, identity: &AgentIdentity, agent: &ConfiguredAgent) -> AgentHello {
        let mut capabilities = vec![
            Capability::AcceptsRemoteConfig,
            Capability::ReportsConfigStatus,
            Capability::ReportsHealth,
            Capability::RemoteWriteV2,
            Capability::OtlpGrpc,
            Capability::OtlpHttp,
            Capability::DiskBuffer,
            Capability::TracePipelines,
            Capability::TemplateInstances,
        ];
        if agent.has_kubernetes() {
            capabilities.push(Capability::KubernetesDiscovery);
        }
        AgentHello {
            cluster_id: identity.cluster_id.clone(),
            agent_instance_id: self.settings.instance_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: capabilities.into_iter().map(|c| c as i32).collect(),
            attributes: [(
                "kubernetes.available".to_owned(),
                agent.has_kubernetes().to_string(),
            )]
            .into_iter()
            .collect(),
            last_applied_config_hash: self.running_hash(),
            trust_bundle_sha256: sha2::Sha256::digest(identity.ca_pem.as_bytes()).to_vec(),
            role: match self.settings.role {
                AgentRole::Cluster => ProtoRole::Cluster,
                AgentRole::Node => ProtoRole::Node,
                AgentRole::Gateway => ProtoRole::Gateway,
            } as i32,
        }
    }

    async fn send_health(
        &self,
        agent: &ConfiguredAgent,
        outbox: &mut Outbox,
    ) -> Result<(), ControlError> {
        let (pipelines, log_pipelines) = (agent.pipelines(), agent.log_pipelines());
        let trace_pipelines = agent.trace_pipelines();
        let report = super::health::snapshot(
            &*pipelines.read().await,
            &*log_pipelines.read().await,
            &*trace_pipelines.read().await,
            SystemTime::now(),
        );
        let report = super::health::with_instance_problems(report, &agent.instance_problems());
        outbox.send(agent_message::Body::Health(report)).await
    }

    /// One stream, from connecting to its end.
    /// Opens a stream at `url`: connects, sends the hello and waits for the observer
    /// to accept it (the observer answers `Connect` only after checking the hello).
    async fn open(
        &mut self,
        agent: &ConfiguredAgent,
        identity: &AgentIdentity,
        url: &str,
    ) -> Result<(Outbox, Streaming<ObserverMessage>), ControlError> {
        let channel = self.channel(url, &identity.ca_pem, Some(identity)).await?;
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let mut outbox = Outbox {
            tx,
            next_sequence: 1,
            last_sent: Instant::now(),
        };
        outbox
            .send(agent_message::Body::Hello(self.hello(identity, agent)))
            .await?;
        let inbound = AgentControlClient::new(channel)
            .max_decoding_message_size(MAX_OBSERVER_MESSAGE_BYTES)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        self.backoff.reset();
        tracing::info!(observer = %url, cluster = %identity.cluster_id, "connected to the observer");
        Ok((outbox, inbound))
    }

    /// Serves an open stream until it ends; node certificate requests sent on it and
    /// not answered are told it ended (their answers cannot come on another stream).
    async fn session(
        &mut self,
        agent: &mut ConfiguredAgent,
        identity: &AgentIdentity,
        outbox: Outbox,
        inbound: Streaming<ObserverMessage>,
    ) -> Result<SessionEnd, ControlError> {
        let end = self.serve(agent, identity, outbox, inbound).await;
        if let Some(queue) = self.issuances.as_mut() {
            queue.stream_ended();
        }
        end
    }

    async fn serve(
        &mut self,
        agent: &mut ConfiguredAgent,
        identity: &AgentIdentity,
        mut outbox: Outbox,
        mut inbound: Streaming<ObserverMessage>,
    ) -> Result<SessionEnd, ControlError> {
        let health_interval = self.settings.health_interval;
        let heartbeat_interval = self.settings.heartbeat_interval;
        let start = tokio::time::Instant::now();
        let mut health = tokio::time::interval_at(start + health_interval, health_interval);
        let mut heartbeat =
            tokio::time::interval_at(start + heartbeat_interval, heartbeat_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renew = renewal_deadline(self.renewal.due(identity, SystemTime::now()));
            tokio::select! {
                message = inbound.message() => {
                    let Some(message) = message? else {
                        return Err(ControlError::StreamClosed);
                    };
                    if let Some(end) = self.on_message(agent, identity, message, &mut outbox).await? {
                        return Ok(end);
                    }
                    if self.issuances.as_ref().is_some_and(IssuanceQueue::stream_spent) {
                        return Ok(SessionEnd::IssuancesSpent);
                    }
                }
                () = tokio::time::sleep_until(renew) => {
                    let request = self.renewal.request(SystemTime::now())?;
                    tracing::info!(cluster = %identity.cluster_id, "renewing the certificate");
                    outbox.send(agent_message::Body::CertificateRequest(request)).await?;
                }
                issuance = next_issuance(self.issuances.as_mut()) => {
                    if let Some(queue) = self.issuances.as_mut() {
                        tracing::info!(instance = %issuance.instance_name, "asking the observer for a node's certificate");
                        let request = queue.send(issuance);
                        outbox.send(agent_message::Body::CertificateRequest(request)).await?;
                    }
                }
                _ = health.tick() => {
                    // A changed Secret or ConfigMap key re-renders the instances bound to it.
                    agent.refresh_instances().await;
                    self.send_health(agent, &mut outbox).await?;
                }
                _ = heartbeat.tick() => {
                    if outbox.last_sent.elapsed() >= heartbeat_interval {
                        let timestamp_unix_ms = kaas_series::clock::now_ms();
                        outbox.send(agent_message::Body::Heartbeat(Heartbeat { timestamp_unix_ms })).await?;
                    }
                }
            }
        }
    }

    /// Handles one message from the observer; `Some` ends the session.
    async fn on_message(
        &mut self,
        agent: &mut ConfiguredAgent,
        identity: &AgentIdentity,
        message: ObserverMessage,
        outbox: &mut Outbox,
    ) -> Result<Option<SessionEnd>, ControlError> {
        match message.body {
            Some(observer_message::Body::ConfigUpdate(update)) => {
                self.handle_update(agent, update, outbox).await?;
            }
            Some(observer_message::Body::Command(command)) => {
                match CommandType::try_from(command.r#type) {
                    Ok(CommandType::ResendFullState) => {
                        tracing::info!(reason = %command.reason, "the observer asked for the full state");
                        outbox
                            .send(agent_message::Body::Hello(self.hello(identity, agent)))
                            .await?;
                        if let Some(status) = self.last_status.clone() {
                            outbox
                                .send(agent_message::Body::ConfigStatus(status))
                                .await?;
                        }
                        self.send_health(agent, outbox).await?;
                    }
                    Ok(CommandType::Rejoin) => return Ok(Some(SessionEnd::Rejoin(command.reason))),
                    Ok(CommandType::RenewCertificate) => {
                        tracing::info!(reason = %command.reason, "the observer asked for a certificate renewal");
                        self.renewal.request_now();
                    }
                    // Unknown commands are ignored, as the contract asks.
                    _ => tracing::debug!(command = command.r#type, "ignoring an unknown command"),
                }
            }
            Some(observer_message::Body::CertificateIssued(issued)) => {
                // A node's certificate goes to the node agent that asked for it.
                let issued = match self.issuances.as_mut() {
                    Some(queue) => match queue.answer(issued, &identity.cluster_id) {
                        Some(own) => own,
                        None => return Ok(None),
                    },
                    None => issued,
                };
                let current = self.identity.clone().unwrap_or_else(|| identity.clone());
                match self
                    .renewal
                    .complete(&current, issued, &self.settings.data_dir)
                {
                    Ok(renewed) => {
                        tracing::info!(cluster = %renewed.cluster_id, "renewed certificate saved");
                        self.identity = Some(renewed);
                        return Ok(Some(SessionEnd::Renewed));
                    }
                    // The request is asked again when it is due.
                    Err(error) => tracing::error!(%error, "the certificate was not renewed"),
                }
            }
            Some(observer_message::Body::TrustBundle(bundle)) => {
                let mut updated = self.identity.clone().unwrap_or_else(|| identity.clone());
                updated.ca_pem = bundle.ca_bundle_pem;
                match updated.save(&self.settings.data_dir) {
                    Ok(()) => {
                        tracing::info!("saved the observer's new CA bundle");
                        self.identity = Some(updated);
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot save the observer's new CA bundle")
                    }
                }
            }
            None => {}
        }
        Ok(None)
    }

    async fn send_status(
        &mut self,
        outbox: &mut Outbox,
        hash: &[u8],
        state: ConfigState,
        errors: Vec<ConfigError>,
    ) -> Result<(), ControlError> {
        let status = ConfigStatus {
            config_hash: hash.to_vec(),
            state: state as i32,
            errors,
            running_config_hash: self.running_hash(),
        };
        self.last_status = Some(status.clone());
        outbox.send(agent_message::Body::ConfigStatus(status)).await
    }

    async fn refuse(
        &mut self,
        agent: &ConfiguredAgent,
        outbox: &mut Outbox,
        hash: &[u8],
        errors: Vec<ConfigError>,
    ) -> Result<(), ControlError> {
        let errors = bounded_errors(errors);
        for error in &errors {
            tracing::error!(
                hash = %hex::encode(hash),
                pipeline = %error.pipeline,
                field = %error.field_path,
                message = %error.message,
                "configuration from the observer refused; keeping the last-known-good configuration"
            );
        }
        ConfigRefused(ConfigSource::Observer).emit(&agent.reloads);
        self.send_status(outbox, hash, ConfigState::Failed, errors)
            .await
    }

    /// Validates, applies and reports one configuration (see the module documentation
    /// of [`crate::control`]).
    async fn handle_update(
        &mut self,
        agent: &mut ConfiguredAgent,
        update: ConfigUpdate,
        outbox: &mut Outbox,
    ) -> Result<(), ControlError> {
        let hash = update.config_hash;
        if update.content_type != AGENT_CONFIG_CONTENT_TYPE {
            let message = format!(
                "content type {:?} is not supported; this agent reads {AGENT_CONFIG_CONTENT_TYPE}",
                update.content_type
            );
            return self
                .refuse(agent, outbox, &hash, vec![whole_config_error(message)])
                .await;
        }
        if let Err(too_large) = check_config_size(update.body.len()) {
            return self
                .refuse(
                    agent,
                    outbox,
                    &hash,
                    vec![whole_config_error(too_large.to_string())],
                )
                .await;
        }
        if config_hash(&update.body).as_slice() != hash.as_slice() {
            let message = "the body does not match config_hash".to_owned();
            return self
                .refuse(agent, outbox, &hash, vec![whole_config_error(message)])
                .await;
        }
        if hash == self.running_hash() {
            // Already running it (e.g. a repeated offer): nothing to apply.
            return self
                .send_status(outbox, &hash, ConfigState::Applied, vec![])
                .await;
        }
        let parsed = match std::str::from_utf8(&update.body) {
            Ok(text) => AgentConfig::parse(text, &self.settings.validation),
            Err(_) => Err(AgentConfigError::Parse("the body is not UTF-8".to_owned())),
        };
        let config = match parsed {
            Ok(config) => config,
            Err(error) => {
                let errors = config_errors(&update.body, &error);
                return self.refuse(agent, outbox, &hash, errors).await;
            }
        };
        self.send_status(outbox, &hash, ConfigState::Applying, vec![])
            .await?;
        let report = agent.apply(config.clone()).await;
        if !report.failed.is_empty() {
            let errors = report
                .failed
                .iter()
                .map(|(pipeline, reason)| ConfigError {
                    pipeline: pipeline.name.clone(),
                    field_path: String::new(),
                    message: format!("the {} could not start: {reason}", pipeline.kind),
                })
                .collect();
            // Back to what ran before; with no last-known-good that is nothing.
            let fallback = self
                .last_known_good
                .as_ref()
                .map(|fallback| fallback.config.clone())
                .unwrap_or_default();
            agent.apply(fallback).await;
            return self.refuse(agent, outbox, &hash, errors).await;
        }
        tokio::time::sleep(self.settings.health_window).await;
        let saved = LastKnownGood::new(update.body);
        if let Err(error) = saved.save(&self.settings.data_dir) {
            // It runs; only a restart would fall back to the older configuration.
            tracing::error!(%error, "cannot save the last-known-good configuration");
        }
        self.last_known_good = Some(Fallback { saved, config });
        ConfigReloaded(ConfigSource::Observer).emit(&agent.reloads);
        tracing::info!(hash = %hex::encode(&hash), "configuration from the observer applied");
        self.send_status(outbox, &hash, ConfigState::Applied, vec![])
            .await
    }
}

/// The next node certificate request, when this instance takes them; never otherwise.
async fn next_issuance(queue: Option<&mut IssuanceQueue>) -> Issuance {
    match queue {
        Some(queue) => queue.next().await,
        None => std::future::pending().await,
    }
}

/// The Tokio deadline of a renewal due at `due` (never, when nothing is due).
fn renewal_deadline(due: Option<SystemTime>) -> tokio::time::Instant {
    // Far beyond any certificate's lifetime, and within Tokio's timer range.
    const NEVER: Duration = Duration::from_secs(100 * 365 * 86_400);
    let now = tokio::time::Instant::now();
    match due {
        Some(due) => now + due.duration_since(SystemTime::now()).unwrap_or_default(),
        None => now + NEVER,
    }
}

/// Whether `code` refuses the agent itself (its certificate), as opposed to a replica
/// being unable to serve it right now.
fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    )
}

fn log_refused_certificate(url: &str, identity: &AgentIdentity, code: tonic::Code, message: &str) {
    tracing::error!(
        observer = %url,
        cluster = %identity.cluster_id,
        ?code,
        %message,
        "the observer refused this agent's certificate (the cluster was deleted, or it joined again with another agent); the last-known-good configuration keeps running"
    );
}
