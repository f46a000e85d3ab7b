//! Client TLS for every outbound connection the project makes (the agent's exporters,
//! the observer's probes, self-telemetry over OTLP): one place that decides what is
//! trusted and how a server is verified, so the three cannot differ.
//!
//! - **One crypto provider**, ring ([`provider`]), built once per process.
//! - **Trust** ([`Trust`]): a PEM bundle of CA certificates, the system's roots (read
//!   once per process: reading and parsing the bundle costs more than a handshake), or,
//!   for `insecureSkipVerify`, any server, still checking that the server holds the
//!   key of the certificate it shows (handshake signatures are verified).
//! - **Verify name** ([`ClientTls::verify_name`]): the certificate is checked against
//!   this name instead of the host connected to (`serverName` of Prometheus'
//!   `tls_config`); what is sent as SNI is the caller's choice.
//! - **Client certificate** for mutual TLS ([`ClientTls::identity`]).
//! - **HTTP clients** (feature `reqwest`, [`http`]): reqwest on such a configuration,
//!   the one way the project builds one.
//!
//! PEM parsing errors never quote the input: it may be a private key.

#[cfg(feature = "reqwest")]
pub mod http;

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a client TLS configuration cannot be built. Never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input holds no certificate or key of the expected kind.
    #[error("{what} is not valid PEM")]
    Pem {
        /// Which input, in the caller's words (`tls.ca`, `--otlp-client-key`).
        what: &'static str,
    },
    /// rustls refused a certificate or the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server certificate verifier could not be built (e.g. no usable root).
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The process's crypto provider: ring, the only one in the project's build.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes ring the process-wide default provider, for libraries that build their own
/// TLS configuration (the Kubernetes client, tonic's server). Called once by each
/// `main`; repeated calls are harmless.
pub fn install_default_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The system's trust anchors, read once per process. Unreadable system certificates
/// leave the store smaller, not the process broken: the handshake error then names
/// the untrusted server.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// The certificates of a PEM bundle; at least one, or [`TlsError::Pem`] naming `what`.
pub fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(TlsError::Pem { what }),
    }
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM text.
pub fn private_key(pem: &[u8], what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::Pem { what })
}

/// A root store holding every certificate of a PEM bundle.
pub fn roots(pem: &[u8], what: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The system's roots ([`system_roots`]) and every certificate of a PEM bundle: a
/// private CA trusted beside the public ones (the observer's `--*-ca-file` flags).
pub fn system_roots_and(pem: &[u8], what: &'static str) -> Result<Trust, TlsError> {
    let mut roots = RootCertStore::clone(&system_roots());
    for cert in certificates(pem, what)? {
        roots.add(cert)?;
    }
    Ok(Trust::Roots(Arc::new(roots)))
}

/// Whom a client trusts.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The system's roots ([`system_roots`]).
    #[default]
    System,
    /// These roots only (a CA bundle from configuration).
    Roots(Arc<RootCertStore>),
    /// Any server certificate (`insecureSkipVerify`); handshake signatures are still
    /// checked.
    AnyServer,
}

/// What a client TLS configuration is built from ([`client_config`]).
#[derive(Debug, Default)]
pub struct ClientTls {
    /// Whom to trust.
    pub trust: Trust,
    /// Verify the server certificate against this name instead of the host connected
    /// to. Ignored with [`Trust::AnyServer`].
    pub verify_name: Option<ServerName<'static>>,
    /// A client certificate chain and its key, for mutual TLS.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// ALPN protocols to offer, most preferred first (none: no ALPN).
    pub alpn: Vec<Vec<u8>>,
}

/// The ALPN list of an HTTP client that speaks HTTP/2 and HTTP/1.1.
pub fn http_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// Builds a rustls client configuration (safe default protocol versions, ring).
pub fn client_config(tls: ClientTls) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let roots = match tls.trust {
        Trust::System => Some(system_roots()),
        Trust::Roots(roots) => Some(roots),
        Trust::AnyServer => None,
    };
    let builder = match (roots, tls.verify_name) {
        (None, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider))),
        (Some(roots), Some(name)) => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
        }
        (Some(roots), None) => builder.with_root_certificates(roots),
    };
    let mut config = match tls.identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = tls.alpn;
    Ok(config)
}

/// Verifies against a configured name instead of the host connected to.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn pem_errors_name_the_input_and_never_quote_it() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let error = certificates(secret.as_bytes(), "tls.ca")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "tls.ca is not valid PEM");
        let error = private_key(b"not pem", "tls.key").unwrap_err().to_string();
        assert_eq!(error, "tls.key is not valid PEM");
        assert!(roots(b"", "tls.ca").is_err());
    }

    #[test]
    fn a_bundle_becomes_roots_and_every_trust_builds_a_client() {
        let bundle = format!("{}{}", ca_pem(), ca_pem());
        let store = roots(bundle.as_bytes(), "tls.ca").unwrap();
        assert_eq!(store.len(), 2);
        let store = Arc::new(store);
        for (trust, name) in [
            (Trust::System, None),
            (Trust::Roots(store.clone()), None),
            (
                Trust::Roots(store),
                ServerName::try_from("internal.example").ok(),
            ),
            (Trust::AnyServer, None),
        ] {
            let config = client_config(ClientTls {
                trust,
                verify_name: name,
                alpn: http_alpn(),
                ..ClientTls::default()
            })
            .unwrap();
            assert_eq!(config.alpn_protocols, http_alpn());
            assert!(!config.client_auth_cert_resolver.has_certs());
        }
    }

    #[test]
    fn a_client_identity_is_presented() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["agent".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = certificates(cert.pem().as_bytes(), "tls.cert").unwrap();
        let key = private_key(key.serialize_pem().as_bytes(), "tls.key").unwrap();
        let config = client_config(ClientTls {
            identity: Some((chain, key)),
            ..ClientTls::default()
        })
        .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
    }
}
