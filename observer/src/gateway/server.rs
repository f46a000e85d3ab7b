//! The gateway's HTTP side: [`app`] serves remote-write 1.0 on [`WORKLOAD_PATH`] and
//! [`AGENT_PATH`] to agents that presented a client certificate of the observer's CA
//! ([`tls_config`] refuses every other at the handshake), and each request goes
//! identity → bounded decode → [`rewrite`](super::rewrite::rewrite) → per-tenant
//! [limits](super::limits) → [upstream](super::forward). Loki pushes on
//! [`super::loki::LOGS_PATH`] take the same identity and body checks
//! ([`super::loki`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use kaas_series::PushLimits;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use super::forward::Upstream;
use super::limits::{IngestLimiter, LogRateLimiter, Refused};
use super::peer::identify;
use super::rewrite::{Origin, admits, rewrite};
use super::standing::{CertificateStandings, StandingRefusal};
use crate::internal_events::{
    GatewayAnswered, GatewayForwarded, GatewayMetrics, GatewayRefused, GatewaySeriesDropped,
};
use crate::listeners::TlsListener;

/// Where only the agent's self-scrape pipeline sends (the agent's own families pass
/// here and nowhere else).
pub use crate::rendering::central::GATEWAY_AGENT_PATH as AGENT_PATH;
/// Where the central pipeline sends its workloads' and the runtime's series.
pub use crate::rendering::central::GATEWAY_WORKLOAD_PATH as WORKLOAD_PATH;
/// ALPN of HTTP/1.1, the HTTP the gateway serves.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a connection's TLS layer verified: the leaf certificate of the agent.
#[derive(Clone, Debug, Default)]
pub struct AgentPeer {
    /// The DER of the client certificate, verified against the observer's CA.
    pub leaf: Option<Arc<[u8]>>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for AgentPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let leaf = stream
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| Arc::from(der.as_ref()));
        Self { leaf }
    }
}

/// The TLS settings of the agents' port: the gateway's certificate, and client
/// certificates required and verified against `client_ca_pem` (the observer's CA
/// bundle, both CAs during a rotation).
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>, kaas_tls::TlsError> {
    tls_config_with(
        cert_pem,
        key_pem,
        Arc::new(ReloadingClientVerifier::new(client_ca_pem)?),
    )
}

/// [`tls_config`] verifying client certificates with `verifier`, whose CA bundle can
/// be replaced while the gateway serves ([`ReloadingClientVerifier::reload`]).
pub fn tls_config_with(
    cert_pem: &[u8],
    key_pem: &[u8],
    verifier: Arc<ReloadingClientVerifier>,
) -> Result<Arc<ServerConfig>, kaas_tls::TlsError> {
    let chain = kaas_tls::certificates(cert_pem, "--tls-cert-file")?;
    let key = kaas_tls::private_key(key_pem, "--tls-key-file")?;
    let mut config = ServerConfig::builder_with_provider(kaas_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Verifies client certificates against the observer's CA bundle as last loaded:
/// `observer ca rotate` and `retire` change the bundle, and the gateway takes the new
/// one without a restart ([`super::watch_client_ca`]). Each handshake uses the bundle
/// current when it starts.
///
/// It sends no list of acceptable issuers in the handshake (the agents present their
/// one certificate whatever the list says), so that list need not follow the bundle.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    current: std::sync::RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ReloadingClientVerifier {
    /// A verifier for `client_ca_pem`.
    pub fn new(client_ca_pem: &[u8]) -> Result<Self, kaas_tls::TlsError> {
        Ok(Self {
            current: std::sync::RwLock::new(Self::build(client_ca_pem)?),
        })
    }

    /// Verifies against `client_ca_pem` from the next handshake on; an unusable bundle
    /// is refused and the current one kept.
    pub fn reload(&self, client_ca_pem: &[u8]) -> Result<(), kaas_tls::TlsError> {
        let verifier = Self::build(client_ca_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = verifier;
        Ok(())
    }

    fn build(client_ca_pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, kaas_tls::TlsError> {
        let roots = Arc::new(kaas_tls::roots(client_ca_pem, "--client-ca-dir")?);
        Ok(WebPkiClientVerifier::builder_with_provider(roots, kaas_tls::provider()).build()?)
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// What every request shares.
pub struct GatewayState {
    /// Decoding limits of one request.
    pub push_limits: PushLimits,
    /// The tenants' limits.
    pub limiter: IngestLimiter,
    /// The tenants' log rates on the Loki route.
    pub log_limiter: LogRateLimiter,
    /// Thanos receive.
    pub upstream: Upstream,
    /// The central Loki (`--loki-upstream-url`); `None`: the Loki route answers 404.
    pub loki: Option<Upstream>,
    /// The gateway's metrics.
    pub metrics: GatewayMetrics,
    /// The store's word on each certificate (`--database-url`); `None`: revoked
    /// certificates are accepted until they expire.
    pub standings: Option<CertificateStandings>,
}

/// The gateway's routes. A request's body is read only once its certificate names a
/// tenant, and only up to the body limit, before anything is decompressed; the decoder
/// then checks the size the body declares.
pub fn app(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(WORKLOAD_PATH, receiver(Origin::Workload))
        .route(AGENT_PATH, receiver(Origin::AgentSelf))
        .route(super::loki::LOGS_PATH, post(super::loki::receive))
        .with_state(state)
}

/// The handler of one path, which decides the batches' origin.
fn receiver(origin: Origin) -> MethodRouter<Arc<GatewayState>> {
    post(
        move |state: State<Arc<GatewayState>>,
              peer: ConnectInfo<AgentPeer>,
              headers: HeaderMap,
              body: Body| receive(state, peer, origin, headers, body),
    )
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(listener: TlsListener, app: Router) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<AgentPeer>(),
    )
    .await
}

/// An answer with a reason in its body, counted.
fn answer(
    metrics: &GatewayMetrics,
    origin: Origin,
    status: StatusCode,
    reason: String,
) -> Response {
    answer_on(metrics, origin.as_str(), status, reason)
}

/// An answer on the path labelled `path` with a reason in its body, counted.
pub(super) fn answer_on(
    metrics: &GatewayMetrics,
    path: &'static str,
    status: StatusCode,
    reason: String,
) -> Response {
    GatewayAnswered {
        path,
        code: status.as_u16(),
    }
    .emit(metrics);
    if !status.is_success() {
        tracing::debug!(path, %status, %reason, "request refused");
    }
    (status, reason).into_response()
}

/// The 429 answer to a request of `tenant` on the path labelled `path` that a limit
/// refused, with `Retry-After`; counted as a refusal of that limit.
pub(super) fn over_limit(
    metrics: &GatewayMetrics,
    path: &'static str,
    tenant: &str,
    Refused { limit, retry_after }: Refused,
) -> Response {
    GatewayRefused {
        tenant,
        limit: limit.as_str(),
    }
    .emit(metrics);
    let reason = format!(
        "tenant {tenant:?} is over its ingest limit ({}); retry later",
        limit.as_str()
    );
    let mut response = answer_on(metrics, path, StatusCode::TOO_MANY_REQUESTS, reason);
    if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn receive(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<AgentPeer>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &state.metrics;
    let (identity, serial) = match identify(peer.leaf.as_deref()) {
        Ok(identified) => identified,
        Err(refusal) => {
            return answer(metrics, origin, StatusCode::FORBIDDEN, refusal.to_string());
        }
    };
    if let Some((status, reason)) = standing_refusal(&state, &identity.cluster, &serial).await {
        return answer(metrics, origin, status, reason);
    }
    if let Some(refusal) = unsupported_encoding(&headers) {
        return answer(metrics, origin, StatusCode::UNSUPPORTED_MEDIA_TYPE, refusal);
    }
    let body = match read_body(body, state.push_limits.max_body_bytes).await {
        Ok(body) => body,
        Err((status, reason)) => return answer(metrics, origin, status, reason),
    };
    let pushed = match kaas_series::remote_write::decode(&body, &state.push_limits) {
        Ok(pushed) => pushed,
        Err(error) => {
            let status = if error.is_too_large() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return answer(metrics, origin, status, error.to_string());
        }
    };
    drop(body);
    let metadata = pushed
        .metadata
        .into_iter()
        .filter(|m| admits(origin, &m.metric_family_name))
        .collect();
    let rewritten = rewrite(pushed.series, &identity, origin);
    GatewaySeriesDropped {
        tenant: &identity.tenant,
        reason: "reserved_family",
        series: rewritten.dropped_reserved,
    }
    .emit(metrics);
    let admitted = match state
        .limiter
        .admit(&identity.tenant, rewritten.series, Instant::now())
    {
        Ok(admitted) => admitted,
        Err(refused) => {
            return over_limit(metrics, origin.as_str(), &identity.tenant, refused);
        }
    };
    for (limit, count) in &admitted.dropped {
        GatewaySeriesDropped {
            tenant: &identity.tenant,
            reason: limit.as_str(),
            series: *count,
        }
        .emit(metrics);
    }
    state.metrics.set_tracked(state.limiter.tracked());
    if admitted.series.is_empty() {
        return answer(metrics, origin, StatusCode::NO_CONTENT, String::new());
    }
    let samples: usize = admitted.series.iter().map(|s| s.samples.len()).sum();
    let upstream = state
        .upstream
        .send(&identity.tenant, admitted.series, metadata)
        .await;
    if upstream.status.is_success() {
        GatewayForwarded {
            tenant: &identity.tenant,
            samples,
        }
        .emit(metrics);
    }
    answer(metrics, origin, upstream.status, upstream.reason)
}

/// Why the certificate's standing in the store refuses the request, with the answer's
/// status, if it does (with `--database-url`; without it every certificate the CA
/// signed stands).
pub(super) async fn standing_refusal(
    state: &GatewayState,
    cluster: &str,
    serial: &str,
) -> Option<(StatusCode, String)> {
    let standings = state.standings.as_ref()?;
    let refusal = standings
        .check(cluster, serial, Instant::now())
        .await
        .err()?;
    let status = match refusal {
        StandingRefusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        StandingRefusal::Revoked | StandingRefusal::ClusterDeleted | StandingRefusal::Unknown => {
            StatusCode::FORBIDDEN
        }
    };
    Some((status, refusal.to_string()))
}

/// The body, read up to `limit` bytes; too large is 413, unreadable 400.
pub(super) async fn read_body(
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, (StatusCode, String)> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = error
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if too_large {
            let reason = format!("the body is larger than {limit} bytes");
            (StatusCode::PAYLOAD_TOO_LARGE, reason)
        } else {
            (
                StatusCode::BAD_REQUEST,
                "the body could not be read".to_owned(),
            )
        }
    })
}

/// Why a request's encoding is not remote-write 1.0 with snappy, if it is not.
fn unsupported_encoding(headers: &HeaderMap) -> Option<String> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(kaas_proto::remote_write::CONTENT_ENCODING);
    if !encoding.eq_ignore_ascii_case(kaas_proto::remote_write::CONTENT_ENCODING) {
        return Some(format!(
            "Content-Encoding {encoding:?}: only snappy is accepted"
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(kaas_proto::remote_write::v1::CONTENT_TYPE);
    if content_type != kaas_proto::remote_write::v1::CONTENT_TYPE {
        return Some(format!(
            "Content-Type {content_type:?}: only remote-write 1.0 ({}) is accepted",
            kaas_proto::remote_write::v1::CONTENT_TYPE
        ));
    }
    None
}
