//! How `observer serve` serves the REST API (HTTPS with `--api-tls-cert-file`) and
//! `/metrics` (behind `--metrics-token-file`) on their own ports, until SIGTERM or
//! SIGINT (see [`crate::listeners`]).

use std::sync::Arc;

use axum::Router;
use prometheus_client::registry::Registry;

use super::ServeError;
use super::args::ServeArgs;
use super::shutdown_signal;
use crate::control::accept::HandshakeLimits;
use crate::internal_events::HandshakeMetrics;
use crate::listeners::{MetricsToken, TlsListener};

/// How the REST API and `/metrics` are served (see [`crate::listeners`]).
pub(super) struct HttpSettings {
    /// The API's TLS settings, with the API port's handshake metrics.
    pub(super) api_tls: Option<(Arc<rustls::ServerConfig>, HandshakeMetrics)>,
    pub(super) metrics_token: Option<MetricsToken>,
}

impl HttpSettings {
    pub(super) fn from_args(args: &ServeArgs) -> Result<Self, ServeError> {
        let api_tls = match (&args.api_tls_cert_file, &args.api_tls_key_file) {
            (Some(cert), Some(key)) => Some((
                crate::listeners::api_tls_config(cert, key)?,
                HandshakeMetrics::default(),
            )),
            _ => None,
        };
        let metrics_token = args
            .metrics_token_file
            .as_deref()
            .map(MetricsToken::from_file)
            .transpose()?;
        Ok(Self {
            api_tls,
            metrics_token,
        })
    }

    /// The API port's handshake metrics, when it speaks TLS.
    pub(super) fn register(&self, registry: &mut Registry) {
        if let Some((_, handshakes)) = &self.api_tls {
            handshakes.register_named(registry, "kaas_observer_api", "the REST API port");
        }
    }

    /// Serves `api` on `listener` until SIGTERM or SIGINT, and `metrics` on
    /// `metrics_listener` meanwhile.
    pub(super) async fn serve(
        self,
        listener: tokio::net::TcpListener,
        api: Router,
        metrics_listener: tokio::net::TcpListener,
        metrics: Router,
    ) -> std::io::Result<()> {
        let metrics_server = tokio::spawn(async move {
            if let Err(error) = axum::serve(metrics_listener, metrics).await {
                tracing::error!(%error, "the /metrics listener stopped");
            }
        });
        let served = match self.api_tls {
            Some((config, handshakes)) => {
                let listener =
                    TlsListener::new(listener, config, HandshakeLimits::default(), handshakes)?;
                axum::serve(listener, api)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
            None => {
                axum::serve(listener, api)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        };
        metrics_server.abort();
        served
    }
}
