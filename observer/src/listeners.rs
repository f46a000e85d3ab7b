//! The observer's HTTP listeners: the REST API, in plain HTTP or over TLS with the
//! operator's certificate, and `/metrics` on an address of its own, optionally behind a
//! bearer token.
//!
//! # Why `/metrics` has an address of its own
//!
//! The observer's metrics describe the whole fleet: every tenant, cluster, pipeline and
//! probe target by name. The REST API's port is the one every tenant reaches, so
//! `/metrics` is not routed there at all (404, like any unknown path); its own listener
//! is for the provider's monitoring only (a Service port of its own, a NetworkPolicy),
//! and `--metrics-token-file` adds a bearer token as a second lock. The token is
//! compared by its SHA-256, so the comparison takes the same time whatever the guess.
//!
//! # The REST API over TLS
//!
//! With `--api-tls-cert-file` and `--api-tls-key-file` the API speaks HTTPS only, so
//! the bearer tokens in its `Authorization` headers never cross the network in clear
//! (the API reads tokens from that header only). TLS is terminated by the control
//! port's front ([`crate::control::accept`]): a few handshakes at a time, a wait
//! deadline, a per-address cap, and a handshake timeout, with the front's defaults.
//! A plaintext request on that port fails the handshake and its connection is closed
//! without an answer. ALPN offers HTTP/1.1, the only HTTP the API serves.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt as _};

use crate::control::accept::{HandshakeLimits, tls_incoming};
use crate::internal_events::HandshakeMetrics;

/// ALPN protocol of HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a listener's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The metrics token file holds no token.
    #[error("{path} is empty; it must hold the bearer token /metrics requires")]
    EmptyToken {
        /// The file.
        path: String,
    },
    /// The certificate or key cannot be used.
    #[error("the REST API's TLS certificate or key: {0}")]
    Tls(#[from] kaas_tls::TlsError),
}

fn read(path: &Path) -> Result<Vec<u8>, ListenerError> {
    std::fs::read(path).map_err(|source| ListenerError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The bearer token `/metrics` requires, kept as its SHA-256 only.
#[derive(Clone)]
pub struct MetricsToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(***)")
    }
}

impl MetricsToken {
    /// The token in `path` (surrounding whitespace ignored); never logged.
    pub fn from_file(path: &Path) -> Result<Self, ListenerError> {
        let text = String::from_utf8_lossy(&read(path)?).trim().to_owned();
        if text.is_empty() {
            return Err(ListenerError::EmptyToken {
                path: path.display().to_string(),
            });
        }
        Ok(Self::new(&text))
    }

    /// `token` itself.
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (the scheme in any
    /// case, as the API reads it).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        presented.is_some_and(|token| {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            digest == self.digest
        })
    }
}

/// The metrics listener's routes: `GET /metrics` (behind `token` when given), and 404
/// for everything else.
pub fn metrics_router(registry: Arc<Registry>, token: Option<MetricsToken>) -> Router {
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let registry = registry.clone();
            let token = token.clone();
            async move {
                match token {
                    Some(token) if !token.admits(&headers) => (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "/metrics needs the bearer token configured with --metrics-token-file\n",
                    )
                        .into_response(),
                    _ => encode(&registry),
                }
            }
        }),
    )
}

fn encode(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The REST API's TLS settings: the certificate chain and key (PEM) from the given
/// files, no client certificates, HTTP/1.1 by ALPN.
pub fn api_tls_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, ListenerError> {
    let chain = kaas_tls::certificates(&read(cert_file)?, "--api-tls-cert-file")?;
    let key = kaas_tls::private_key(&read(key_file)?, "--api-tls-key-file")?;
    let mut config = ServerConfig::builder_with_provider(kaas_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(kaas_tls::TlsError::from)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(kaas_tls::TlsError::from)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

type Connections = Pin<Box<dyn Stream<Item = io::Result<TlsStream<TcpStream>>> + Send>>;

/// A listener whose connections have finished their TLS handshake, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    connections: Connections,
}

impl TlsListener {
    /// TLS over `listener` with `config`, handshakes under `limits`, counted in
    /// `metrics`.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        limits: HandshakeLimits,
        metrics: HandshakeMetrics,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            local,
            connections: Box::pin(tls_incoming(listener, config, limits, metrics)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => {
                    // A client gone already has no address; its connection is dropped.
                    if let Ok(peer) = stream.get_ref().0.peer_addr() {
                        return (stream, peer);
                    }
                }
                Some(Err(error)) => tracing::debug!(%error, "an API connection failed"),
                // The accepting task ended: no connection will come any more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn registry() -> Arc<Registry> {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        counter.inc();
        registry.register("fixture_events", "Events.", counter);
        Arc::new(registry)
    }

    async fn get(router: Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_are_served_and_nothing_else() {
        let router = metrics_router(registry(), None);
        let (status, body) = get(router.clone(), "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("fixture_events_total 1"), "{body}");
        let (status, _) = get(router, "/api/v1/clusters", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn with_a_token_only_its_bearer_reads_the_metrics() {
        let router = metrics_router(registry(), Some(MetricsToken::new("s3cret")));
        for refused in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let (status, body) = get(router.clone(), "/metrics", refused).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused:?}");
            assert!(!body.contains("fixture_events"), "{body}");
        }
        let (status, body) = get(router, "/metrics", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("fixture_events_total 1"), "{body}");
    }

    #[test]
    fn an_empty_token_file_is_refused_and_the_token_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            MetricsToken::from_file(&empty),
            Err(ListenerError::EmptyToken { .. })
        ));
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let token = MetricsToken::from_file(&file).unwrap();
        assert_eq!(format!("{token:?}"), "MetricsToken(***)");
    }
}
