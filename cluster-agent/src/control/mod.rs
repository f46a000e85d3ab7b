//! Observer-connected mode: join with a token, hold the mTLS control stream, apply what
//! the observer sends through the same path as standalone mode, and keep the
//! last-known-good configuration on disk.
//!
//! # Join and identity
//!
//! An agent without an identity first checks that it can write its data directory
//! ([`identity::check_writable`]: a token must never be spent on an identity that
//! cannot be kept), then generates an ECDSA P-256 key and a certificate signing request
//! ([`identity::generate_key_and_request`]) and calls `Join` with the single-use token
//! from `--join-token-file` (or `KAAS_JOIN_TOKEN`), its `--instance-name` (empty for the
//! cluster-level instance), trusting the CA in `--observer-ca-file`. The observer
//! answers with a client certificate whose SAN URIs name the cluster and the instance,
//! its CA bundle and the cluster id. The key never leaves the machine; key,
//! certificate, CA bundle and cluster id are kept under `<data dir>/identity/` (see
//! [`identity`], replaced atomically) and used for every later connection, so the
//! token is needed exactly once. The key and CSR of an unanswered join are kept in
//! memory and sent again on the next attempt, so a lost answer is answered again
//! instead of spending the token. A refused token (unknown, expired, used, cluster
//! gone) is logged with what to do, and the agent keeps running its last-known-good
//! configuration while it retries, reading the token file again each time.
//!
//! A node instance (`--role node`) has no join token: with `--node-certificate-issuer`
//! it gets its first certificate from its cluster-level instance
//! ([`enrolment`]), which asks the observer over its own stream
//! ([`crate::node_certificates`]).
//!
//! The certificate is renewed over the stream at two thirds of its validity (or when
//! the observer asks, during a CA rotation), and a new CA bundle sent by the observer
//! is saved with the identity ([`renewal`]).
//!
//! # The stream
//!
//! `Connect` is opened with the client certificate. The first message is an
//! `AgentHello` with the cluster id, the agent's capabilities and the hash of its
//! last-known-good configuration; the observer sends a `ConfigUpdate` only when that
//! hash differs from what it wants the agent to run. Every message carries a
//! `sequence_num` starting at 1 on each stream. The agent sends `AgentHealth` every
//! health interval (cumulative counters, see [`health`]) and a `Heartbeat` when it has
//! been quiet for a heartbeat interval. `RESEND_FULL_STATE` is answered with a hello,
//! the latest `ConfigStatus` and a health report; `REJOIN` discards the identity.
//!
//! # Applying a configuration
//!
//! 1. The content type must be the agent configuration's, the body at most
//!    [`MAX_AGENT_CONFIG_BYTES`](kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES)
//!    and the hash must match the body; otherwise FAILED. The stream reads messages up
//!    to [`stream::MAX_OBSERVER_MESSAGE_BYTES`], so a configuration somewhat over the
//!    limit is refused on the open stream rather than breaking it (which would only
//!    lead to the same message after a reconnect); a message over even that breaks the
//!    stream, and the agent then waits the longest backoff before it reconnects.
//!    A FAILED status lists at most [`refusal::MAX_REPORTED_ERRORS`] errors.
//! 2. The body is parsed and validated with `AgentConfig` (the same code as a file in
//!    standalone mode), as pipelines the observer distributes under the agent's policy
//!    ([`ObserverSettings::validation`]): no `valueFrom.file`, Secrets only from
//!    `--secret-namespaces`. Every problem is sent back in one FAILED status with the
//!    pipeline and field path; the running configuration is not touched.
//! 3. APPLYING is sent and the configuration goes through
//!    [`ConfiguredAgent::apply`](crate::agent::ConfiguredAgent::apply), i.e.
//!    [`Agent::apply`](crate::agent::Agent::apply): unchanged pipelines keep running.
//! 4. If a pipeline could not start, FAILED is sent and the last-known-good
//!    configuration is applied again. Otherwise the agent waits the health window
//!    ([`DEFAULT_HEALTH_WINDOW`]), sends APPLIED, and saves the body as the new
//!    last-known-good ([`lkg`]), written atomically.
//!
//! # Last-known-good
//!
//! At startup the last-known-good configuration is applied before the observer is
//! contacted. So an agent restarted while the observer is down ships exactly what it
//! shipped before, and an observer outage never stops data: the stream only carries
//! configuration and status, never samples.
//!
//! # Reconnecting without a stampede
//!
//! Any error (connect, TLS, stream reset, the observer going away) ends the session and
//! the agent reconnects after a delay drawn uniformly from `[0, min(60 s, 1 s × 2^n))`
//! ("full jitter", [`Backoff`](crate::outbound::backoff::Backoff)); `n` counts failures
//! since the last stream that got established. When an observer with 10,000 agents restarts, every agent is
//! disconnected at once, but their retries spread evenly over the growing window
//! instead of arriving in synchronised waves, and within a minute the load is a few
//! hundred hellos per second at most. Each reconnect is cheap on both sides: a hello
//! whose hash matches costs the observer one render and no push. Health reports are
//! timed from each stream's own start, so they do not line up across the fleet either.
//!
//! # Several observer replicas
//!
//! `--observer` may name several endpoints (repeated, or comma-separated): replicas of
//! one observer sharing a database. Each reconnect is a round over them
//! ([`endpoints`]): a fresh random order per round by default, so the fleet spreads
//! over the replicas, with the endpoint that failed last tried last. An endpoint that
//! cannot be reached, or answers `UNAVAILABLE`, is skipped for the next one at once;
//! the jittered backoff above is waited only between rounds (and after a stream that
//! ran ends, so a replica's death spreads its agents' reconnects over a second).
//! `Join` goes to whichever replica answers. Refusals are not retried elsewhere within
//! the round: the replicas share one database, so a refused token or a revoked
//! certificate would be refused by every one of them.

pub mod endpoints;
pub mod enrolment;
pub mod health;
pub mod identity;
pub mod lkg;
pub mod refusal;
pub mod renewal;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

pub use endpoints::{EndpointOrder, check_observer_url};
pub use stream::ObserverConnection;

/// How long a new configuration must run before it is reported APPLIED and becomes
/// last-known-good. Long enough for every pipeline to open its buffer and build its
/// exporter (start failures show up at once), short enough that an operator applying a
/// pipeline sees its status within seconds.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(2);
/// How often health is reported. With the observer's default silence threshold of
/// 5 minutes, ten reports can be lost before a cluster is flagged; 10,000 agents send
/// about 330 reports per second.
pub const DEFAULT_HEALTH_REPORT_INTERVAL: Duration = Duration::from_secs(30);
/// How long the stream may stay quiet before a heartbeat is sent. Health reports
/// already count as a sign of life, so heartbeats only matter when health reporting is
/// slowed down; at 60 s they cost almost nothing.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// First reconnect delay window.
pub const RECONNECT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest reconnect delay window: an observer back from an outage sees every agent
/// again within a minute.
pub const RECONNECT_BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long establishing a TCP and TLS connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle stream: a dead observer (or a NAT that dropped the flow) is
/// noticed within interval + timeout instead of at the next TCP retransmit timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the agent reaches and identifies itself to the observer.
#[derive(Clone, Debug)]
pub struct ObserverSettings {
    /// The observer's control endpoints, `https://host:port` each: one per replica.
    pub urls: Vec<String>,
    /// In which order the endpoints are tried.
    pub endpoint_order: EndpointOrder,
    /// CA certificate to trust when joining.
    pub ca_file: Option<PathBuf>,
    /// File holding the join token.
    pub join_token_file: Option<PathBuf>,
    /// The join token from the environment, used when there is no file.
    pub join_token_env: Option<String>,
    /// A node instance's first certificate comes from its cluster-level instance
    /// instead of a join ([`enrolment`]).
    pub node_enrolment: Option<enrolment::NodeEnrolment>,
    /// The agent's data directory (identity and last-known-good live there).
    pub data_dir: PathBuf,
    /// This process, for the observer's logs and status: `POD_UID` when set (the
    /// Kubernetes downward API), otherwise random.
    pub instance_id: String,
    /// This agent instance's name within its cluster, in its certificate; empty for the
    /// cluster-level (default) instance.
    pub instance_name: String,
    /// The part this instance plays in its cluster, said in its hello: the observer
    /// sends it only the part of the configuration for that role.
    pub role: kaas_pipeline::role::AgentRole,
    /// See [`DEFAULT_HEALTH_WINDOW`].
    pub health_window: Duration,
    /// See [`DEFAULT_HEALTH_REPORT_INTERVAL`].
    pub health_interval: Duration,
    /// See [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// How configurations from the observer (and the last-known-good one) are
    /// validated: as pipelines the observer distributes, so `valueFrom.file` is
    /// refused, under the agent's own policy.
    pub validation: kaas_pipeline::ValidationContext,
}

impl Default for ObserverSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            endpoint_order: EndpointOrder::Random,
            ca_file: None,
            join_token_file: None,
            join_token_env: None,
            node_enrolment: None,
            data_dir: PathBuf::from("data"),
            instance_id: std::env::var("POD_UID")
                .ok()
                .filter(|uid| !uid.is_empty())
                .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..))),
            instance_name: String::new(),
            role: kaas_pipeline::role::AgentRole::Cluster,
            health_window: DEFAULT_HEALTH_WINDOW,
            health_interval: DEFAULT_HEALTH_REPORT_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            validation: kaas_pipeline::ValidationContext::observer(
                kaas_pipeline::ProviderPolicy::agent_default(),
            ),
        }
    }
}

/// Why observer-connected mode cannot start, or why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// `--observer` is not an https URL.
    #[error("--observer {url:?} is not an https:// URL: {reason}")]
    BadUrl {
        /// The value given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The agent has no identity and no token to get one.
    #[error(
        "this agent has not joined yet and has no join token: pass --join-token-file FILE or set KAAS_JOIN_TOKEN (the token is printed by `observer cluster add`)"
    )]
    NoJoinToken,
    /// The agent has no identity and does not know which CA to trust for joining.
    #[error(
        "this agent has not joined yet: pass --observer-ca-file with the observer's CA certificate so the join is not sent to an impostor"
    )]
    NoCaFile,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The identity could not be created, read or written.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The observer could not be reached.
    #[error("cannot reach the observer: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The observer refused the join token.
    #[error(
        "the observer refused the join token ({0}); mint a new join token for this cluster on the observer and put it in --join-token-file or KAAS_JOIN_TOKEN"
    )]
    JoinRefused(String),
    /// The cluster-level instance refused a node's certificate request.
    #[error("the cluster agent refused this node's certificate request ({status}): {reason}")]
    NodeCertificateRefused {
        /// The HTTP status.
        status: u16,
        /// Its reason.
        reason: String,
    },
    /// A node's certificate could not be obtained from the cluster-level instance.
    #[error("cannot get this node's certificate from the cluster agent: {0}")]
    NodeCertificate(String),
    /// The observer answered with an error.
    #[error("the observer answered {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The stream ended.
    #[error("the observer closed the stream")]
    StreamClosed,
}

impl From<tonic::Status> for ControlError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
