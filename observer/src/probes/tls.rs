//! TLS for probes (rustls with ring), and the `tls` module: a handshake whose served
//! chain's earliest `notAfter` becomes `probe_ssl_earliest_cert_expiry`.
//!
//! Certificates are verified against the target's `ca` bundle, or the system roots
//! (loaded once per process); `serverName` replaces the host both as SNI and as the name
//! verified, as the blackbox exporter's `tls_config.server_name` does;
//! `insecureSkipVerify` accepts any certificate but still checks the handshake
//! signatures. Session resumption is off: every probe makes a full handshake, so it sees
//! the certificate the server serves now (a resumed session would not show a renewal)
//! and costs what a first connection costs.

use std::sync::Arc;

use kaas_tls::{ClientTls, Trust};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::{TlsProbe, TlsSettings, parse_ca, parse_host_port};
use crate::egress::EgressPolicy;

use super::{ProbeFailure, ProbeOutcome, connect, resolve};

/// A TLS client for one target: the configuration and the name to present.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// For `settings`, connecting to `host`; `alpn` lists the protocols to offer.
    pub(crate) fn new(settings: &TlsSettings, host: &str, alpn: &[&[u8]]) -> Result<Self, String> {
        let name = settings.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("{name:?} is not a DNS name or IP address"))?;
        let mut config = client_config(settings, alpn)?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the handshake over `stream` and records the chain's earliest expiry.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        outcome: &mut ProbeOutcome,
    ) -> Result<TlsStream<TcpStream>, ProbeFailure> {
        let stream = self
            .connector
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(ProbeFailure::Tls)?;
        outcome.earliest_cert_expiry = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(earliest_expiry);
        Ok(stream)
    }
}

/// The earliest `notAfter` of `chain`, Unix seconds; `None` if no certificate parses.
pub fn earliest_expiry(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

fn client_config(settings: &TlsSettings, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let trust = match (&settings.ca, settings.insecure_skip_verify) {
        (_, true) => Trust::AnyServer,
        (Some(pem), false) => Trust::Roots(Arc::new(parse_ca(pem)?)),
        (None, false) => Trust::System,
    };
    kaas_tls::client_config(ClientTls {
        trust,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        ..ClientTls::default()
    })
    .map_err(|e| e.to_string())
}

/// A `tls` probe ready to run.
#[derive(Debug)]
pub(crate) struct PreparedTls {
    host: String,
    port: u16,
    client: TlsClient,
}

impl PreparedTls {
    /// From a validated `module.tls`.
    pub(crate) fn new(tls: &TlsProbe) -> Result<Self, String> {
        let (host, port) = parse_host_port(&tls.address, None)?;
        let client = TlsClient::new(&tls.tls_settings(), &host, &[])?;
        Ok(Self { host, port, client })
    }

    /// Connects and completes a handshake.
    pub(crate) async fn run(
        &self,
        egress: &EgressPolicy,
        outcome: &mut ProbeOutcome,
    ) -> Result<(), ProbeFailure> {
        let addresses = resolve(egress, &self.host, self.port, &mut outcome.dns_lookup).await?;
        let stream = connect(&addresses).await?;
        let _stream = self.client.handshake(stream, outcome).await?;
        Ok(())
    }
}
