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

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::{TlsProbe, TlsSettings, parse_ca, parse_host_port};
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
        let mut config = client_config(settings)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
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

/// The process's crypto provider: ring.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust anchors, read once: reading and parsing the bundle costs far more
/// than a handshake.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            // Unreadable system certificates leave the store smaller; the handshake
            // error then names the untrusted server.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration refused: {e}"))?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        let roots = match &settings.ca {
            Some(pem) => Arc::new(parse_ca(pem)?),
            None => system_roots(),
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
    };
    Ok(builder.with_no_client_auth())
}

/// Accepts any server certificate (`insecureSkipVerify`), still checking that the
/// server holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
    pub(crate) async fn run(&self, outcome: &mut ProbeOutcome) -> Result<(), ProbeFailure> {
        let addresses = resolve(&self.host, self.port, &mut outcome.dns_lookup).await?;
        let stream = connect(&addresses).await?;
        let _stream = self.client.handshake(stream, outcome).await?;
        Ok(())
    }
}
