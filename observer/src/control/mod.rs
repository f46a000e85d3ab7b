//! The agent control service: `Join` and the `Connect` stream, configuration push and status.
//!
//! # Join
//!
//! An agent without an identity calls `Join` with its single-use join token, a CSR and
//! the name of its instance in the cluster (empty for the default, cluster-level one).
//! [`join`] bounds what an unauthenticated caller costs: a rate limit per source
//! address, field sizes, a token check that only reads, caller-chosen fields logged
//! truncated and escaped. For a valid token the CA signs the CSR as that instance of
//! the cluster ([`crate::identity`]), then the token is redeemed and the certificate
//! recorded in one transaction ([`crate::store::certificates`]), which revokes the
//! instance's earlier certificates: joining again replaces an instance's identity and
//! ends its old stream, never another instance's. Unknown, expired and used tokens,
//! and tokens of deleted clusters, are refused with `PERMISSION_DENIED` and a message
//! naming the reason, never the token; the same token with the same CSR within a short
//! window gets the same certificate again, so a lost answer does not burn the token.
//!
//! # The stream
//!
//! `Connect` requires a client certificate verified against the cluster CA bundle (the
//! TLS layer makes client certificates optional only because `Join` has none). The
//! cluster and the instance come from the certificate's SAN URIs, never from the
//! message. The first message must be an `AgentHello` (`FAILED_PRECONDITION` otherwise)
//! naming the same cluster (`PERMISSION_DENIED` otherwise); the cluster must exist and
//! not be deleted, and the certificate's serial must be recorded for it and not
//! revoked (`PERMISSION_DENIED` otherwise). A first connection with a renewed
//! certificate revokes the instance's older ones. The observer then records the agent
//! as seen and connected (every later message counts as a sign of life, written at
//! most every 20 s), and the stream runs until either side ends it, or until its
//! certificate stops being valid: the stream ends with `PERMISSION_DENIED` at the
//! certificate's expiry and as soon as a change of the cluster (a re-join or renewal
//! switch of its instance, a deletion) revokes it (`stream_identity.rs`). During a CA
//! rotation the stream also carries the new CA bundle and, for a certificate of the CA
//! being rotated out, `RENEW_CERTIFICATE`; a `CertificateRequest` is answered with a
//! `CertificateIssued`. The streams of one cluster on one replica share a connection
//! id (`<replica id>/<number>`), recorded with `connected`; when the last of them ends
//! the replica releases that id, which clears `connected` only if no other replica's
//! connection has replaced it since. So an agent that moved to replica B stays
//! connected when replica A notices late that the old stream broke (see "Connected" in
//! [`crate::store`]).
//!
//! Every agent message carries a sequence number growing by one. A message whose
//! number skips ahead is ignored and answered with `RESEND_FULL_STATE`; the agent then
//! sends its hello, latest `ConfigStatus` and health again. Repeated numbers are
//! dropped as duplicates.
//!
//! # When a `ConfigUpdate` is sent
//!
//! The desired configuration of a cluster is rendered from the store
//! ([`crate::rendering`]):
//! `AgentConfig::from_validated({"cluster": <global id>}, pipelines_for_cluster)`, canonical
//! JSON with its SHA-256. It is sent when its hash differs both from what the agent
//! runs (the hello's `last_applied_config_hash`, then every APPLIED status; after
//! FAILED, the `running_config_hash`) and from what was last sent on this stream (so
//! a refused configuration is not offered again until something changes). An agent
//! that reconnects with the current hash costs one render and no push; its APPLIED
//! state is recorded so the pipeline status stays right.
//!
//! A rendered configuration over
//! [`MAX_AGENT_CONFIG_BYTES`](kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES) is
//! never sent (an agent could not take it, and would reconnect into it again and
//! again): the stream stays open, the push is counted as `too_large`, and the status
//! task, which renders the same configuration, sets `ConfigurationApplied` to False
//! with reason `ConfigTooLarge` on every pipeline the cluster selects, naming the size
//! and the limit. The API refuses at once (422) a pipeline that alone is over it.
//!
//! # How changes reach the streams in under a second
//!
//! Every store write publishes a [`Change`](crate::store::Change) after its commit.
//! One dispatcher task per service (`dispatch.rs`) subscribes to the feed and routes
//! each change to the streams it concerns (`registry.rs`), through a per-stream
//! `Notify`: a pipeline or tenant change invalidates the tenant's cached pipelines
//! ([`crate::rendering::tenant_cache`]) and wakes every stream of that tenant; a
//! cluster change (labels, state, certificate) wakes that cluster's
//! streams and marks their cluster as changed. Observations (`ClusterReport`,
//! `PipelineStatus`) wake no stream. A woken stream reads its cluster again only if it
//! changed, takes the tenant's pipelines from the cache (the first stream of the tenant
//! reads them, the others share that read), renders, and pushes if the hash differs.
//! Nothing polls, so the delay is the commit plus one render: milliseconds. If the
//! dispatcher falls behind the feed (the broadcast channel reports lag), it clears the
//! cache, wakes every stream and recomputes every status, which is always correct.
//!
//! # High availability
//!
//! With PostgreSQL, the store's change feed also carries other replicas' changes
//! (LISTEN/NOTIFY), so a pipeline applied through replica A reaches an agent connected
//! to replica B the same way, with one notification's delay. Each replica serves the
//! streams connected to it; nothing is shared in memory.
//!
//! # Status
//!
//! Reports (config status, health, connect and disconnect) are stored as they arrive
//! (committed in groups, see [`crate::store::reports`]) and announced as
//! `Change::ClusterReport`. The status task ([`status_task`]) collects the clusters and
//! tenants concerned for a short debounce interval, updates what it holds about them
//! (the clusters named in a few queries, a tenant whose pipelines changed in one joined
//! query), then recomputes each pipeline's conditions ([`status`]) and writes those that
//! changed, as `Change::PipelineStatus`, which causes no further work. The computation is
//! a pure function of stored data, so replicas that both compute it agree (and a write
//! of an identical status is a no-op).

pub mod accept;
pub mod codec;
mod dispatch;
pub mod join;
mod registry;
pub mod service;
pub mod status;
pub mod status_task;
mod stream;
mod stream_identity;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::agent_config::MAX_AGENT_CONFIG_BYTES;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tonic::transport::Server;

pub use accept::HandshakeLimits;
pub use service::{ControlMetrics, ControlService, ControlSettings};
pub use stream::GATEWAY_CHECK_INTERVAL;

use crate::identity::{ClusterCa, IdentityError};

/// How long a client may take to finish the TLS handshake once it started (see
/// [`accept`]); a client that stalls is dropped instead of holding a handshake slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections: a vanished agent (host died, network cut) is
/// noticed within interval + timeout, and its cluster marked disconnected.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one HTTP/2 connection may have open at once. An agent runs one `Connect`
/// stream per connection (and `Join` on a connection of its own); 4 leaves room for a
/// client that overlaps a new stream with an old one, while one connection can no
/// longer make the observer hold thousands of stream tasks (hyper's default is 200,
/// tonic's none at all).
pub const MAX_CONCURRENT_STREAMS_PER_CONNECTION: u32 = 4;
/// The largest header block a client may send. A gRPC call's headers are a few hundred
/// bytes (path, content type, timeout, user agent); 16 KiB is hyper's default, set
/// here so it does not move with a dependency.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a client may open and reset before the connection is closed with GOAWAY
/// (the HTTP/2 "rapid reset" attack, CVE-2023-44487): an agent never resets streams in
/// bulk.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// How long a call may take until its answer starts: all of `Join` (reading the
/// request, signing), and `Connect` until the stream is accepted (the hello deadline,
/// [`service::HELLO_TIMEOUT`], plus the store's reads). A client trickling a request
/// body holds a stream no longer than this.
pub const CALL_SETUP_TIMEOUT: Duration = Duration::from_secs(45);
/// The largest message the observer decodes from an agent: a hello, a `Join` request
/// (a CSR), a health report of a few hundred pipelines or a `ConfigStatus` (the agent
/// lists at most 100 errors, each cut to 1 KiB) are all far below it.
pub const MAX_AGENT_MESSAGE_BYTES: usize = 1024 * 1024;
/// The largest message the observer encodes for an agent: a `ConfigUpdate` whose body
/// is at most [`MAX_AGENT_CONFIG_BYTES`] (larger configurations are refused when
/// rendered, see `stream.rs`) plus its content type and hash.
pub const MAX_OBSERVER_MESSAGE_BYTES: usize = MAX_AGENT_CONFIG_BYTES + 64 * 1024;

/// ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// The gRPC server's TLS settings: a fresh server certificate for `hostnames` signed by
/// the cluster CA, and client certificates verified against the same CA when presented
/// (optional at this layer because `Join` has none; `Connect` insists on one).
///
/// No TLS 1.3 session tickets are sent: an agent holds one connection for as long as
/// it can, and after an observer restart, when all of them reconnect, an in-memory
/// session cache would be empty anyway; tickets would only cost every handshake two
/// more messages and cache entries.
pub fn server_tls_config(
    ca: &ClusterCa,
    hostnames: &[String],
) -> Result<Arc<ServerConfig>, IdentityError> {
    let (cert_pem, key_pem) = ca.server_certificate(hostnames)?;
    let provider = kaas_tls::provider();
    let roots = kaas_tls::roots(ca.bundle_pem().as_bytes(), "the cluster CA bundle")?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(kaas_tls::TlsError::from)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(kaas_tls::TlsError::from)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            kaas_tls::certificates(cert_pem.as_bytes(), "the server certificate")?,
            kaas_tls::private_key(key_pem.as_bytes(), "the server key")?,
        )
        .map_err(kaas_tls::TlsError::from)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Serves `AgentControl` on `listener` with `tls` until the process ends, with the
/// default [`HandshakeLimits`].
pub async fn serve(
    listener: TcpListener,
    service: ControlService,
    tls: Arc<ServerConfig>,
) -> Result<(), tonic::transport::Error> {
    serve_with_shutdown(
        listener,
        service,
        tls,
        HandshakeLimits::default(),
        std::future::pending(),
    )
    .await
}

/// Serves `AgentControl` until `shutdown` completes (then stops accepting and lets open
/// calls finish). TLS is terminated by [`accept`] under `limits`; HTTP/2 and message
/// sizes are bounded by this module's constants.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    service: ControlService,
    tls: Arc<ServerConfig>,
    limits: HandshakeLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let streams = service.clone();
    let shutdown = async move {
        shutdown.await;
        // Open streams never end by themselves; end them so the server can stop.
        streams.close_streams();
    };
    let incoming =
        accept::tls_incoming(listener, tls, limits, service.metrics().handshakes.clone());
    bounded_server()
        .add_service(codec::CompactAgentControl::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The gRPC server with every HTTP/2 bound of this module set.
fn bounded_server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .timeout(CALL_SETUP_TIMEOUT)
}
