//! TLS for exporters: rustls with the ring provider (the only crypto provider in the
//! project), trusting either the pipeline's CA bundle or the system roots, optionally
//! presenting a client certificate (mutual TLS).
//!
//! `serverName` changes the name the server certificate is verified against (the SNI
//! sent stays the URL's host); `insecureSkipVerify` accepts any server certificate
//! but still checks handshake signatures.

use std::sync::Arc;

use kaas_pipeline::secret::SecretString;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Resolved TLS settings: PEM contents, not references.
#[derive(Clone, Debug, Default)]
pub struct TlsMaterial {
    /// CA certificates to trust instead of the system roots.
    pub ca_pem: Option<SecretString>,
    /// Client certificate chain.
    pub cert_pem: Option<SecretString>,
    /// Client private key.
    pub key_pem: Option<SecretString>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Verify the server certificate against this name.
    pub server_name: Option<String>,
}

/// Why a TLS configuration cannot be built. Never quotes key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block could not be read.
    #[error("{what} is not valid PEM")]
    Pem {
        /// Which setting.
        what: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The server verifier could not be built.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// `serverName` is not a name.
    #[error("invalid serverName {0:?}")]
    ServerName(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// An HTTP client using this TLS material. Every client in the agent is built here:
/// reqwest has no default crypto provider in this build, so a client built any other
/// way would fail at run time.
pub fn http_client(material: &TlsMaterial) -> Result<reqwest::Client, TlsError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(material)?)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| TlsError::Client(e.to_string()))
}

/// A client built from TLS material, rebuilt only when the material changes (rotated
/// certificates are picked up without a handshake per request).
#[derive(Debug)]
pub struct ClientCache<T> {
    cached: std::sync::Mutex<Option<([u8; 32], T)>>,
}

impl<T> Default for ClientCache<T> {
    fn default() -> Self {
        Self {
            cached: std::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> ClientCache<T> {
    /// The client for `material`, built with `build` if the material changed.
    pub fn get(
        &self,
        material: &TlsMaterial,
        build: impl FnOnce(&TlsMaterial) -> Result<T, TlsError>,
    ) -> Result<T, TlsError> {
        let fingerprint = material.fingerprint();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((current, client)) = cached.as_ref()
            && *current == fingerprint
        {
            return Ok(client.clone());
        }
        let client = build(material)?;
        *cached = Some((fingerprint, client.clone()));
        Ok(client)
    }
}

impl TlsMaterial {
    /// A hash of everything that shapes a TLS configuration.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [&self.ca_pem, &self.cert_pem, &self.key_pem] {
            let bytes = part.as_ref().map_or(&b""[..], |s| s.expose().as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        hash.update([u8::from(self.insecure_skip_verify)]);
        hash.update(self.server_name.as_deref().unwrap_or("").as_bytes());
        hash.finalize().into()
    }
}

/// Makes ring the process-wide rustls provider, for libraries that build their own TLS
/// configuration (the Kubernetes client). Called once by `main`; repeated calls are
/// harmless.
pub fn install_default_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process-wide crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client configuration with ALPN for HTTP/2 and HTTP/1.1.
pub fn client_config(material: &TlsMaterial) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(material.ca_pem.as_ref())?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if material.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else if let Some(name) = &material.server_name {
        let name =
            ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match (&material.cert_pem, &material.key_pem) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "tls.cert")?;
            let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                .map_err(|_| TlsError::Pem { what: "tls.key" })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(
    pem: &SecretString,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> =
        CertificateDer::pem_slice_iter(pem.expose().as_bytes()).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(TlsError::Pem { what }),
    }
}

fn root_store(ca: Option<&SecretString>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in certificates(pem, "tls.ca")? {
                roots.add(cert)?;
            }
        }
        None => {
            // Unreadable system certificates leave the store smaller, not the agent
            // broken; the handshake error then names the untrusted server.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}

/// Verifies against a configured name instead of the URL's host.
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
