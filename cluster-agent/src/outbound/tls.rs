//! TLS for exporters: rustls with the ring provider (the only crypto provider in the
//! project), trusting either the pipeline's CA bundle or the system roots, optionally
//! presenting a client certificate (mutual TLS).
//!
//! `serverName` changes the name the server certificate is verified against (the SNI
//! sent stays the URL's host); `insecureSkipVerify` accepts any server certificate
//! but still checks handshake signatures.

use std::sync::Arc;

use kaas_pipeline::secret::SecretString;
use kaas_tls::http::{HttpClientError, HttpClientSettings};
use kaas_tls::{ClientTls, Trust};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

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
    /// The TLS material is unusable (bad PEM, refused certificate).
    #[error(transparent)]
    Tls(#[from] kaas_tls::TlsError),
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
    let settings = HttpClientSettings::new(client_tls(material)?, super::USER_AGENT);
    kaas_tls::http::http_client(settings).map_err(|error| match error {
        HttpClientError::Tls(error) => TlsError::Tls(error),
        HttpClientError::Build(error) => TlsError::Client(error.to_string()),
    })
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
        self.get_for("", material, build)
    }

    /// The client for `material` and `address` (a gRPC channel is bound to its URL,
    /// which a Secret may change), built with `build` if either changed.
    pub fn get_for(
        &self,
        address: &str,
        material: &TlsMaterial,
        build: impl FnOnce(&TlsMaterial) -> Result<T, TlsError>,
    ) -> Result<T, TlsError> {
        let fingerprint: [u8; 32] = {
            use sha2::{Digest, Sha256};
            let mut hash = Sha256::new();
            hash.update(material.fingerprint());
            hash.update(address.as_bytes());
            hash.finalize().into()
        };
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
    kaas_tls::install_default_provider();
}

/// The TLS settings `material` asks for, as the workspace's TLS crate takes them.
fn client_tls(material: &TlsMaterial) -> Result<ClientTls, TlsError> {
    let trust = match (&material.ca_pem, material.insecure_skip_verify) {
        (_, true) => Trust::AnyServer,
        (Some(ca), false) => {
            Trust::Roots(Arc::new(kaas_tls::roots(ca.expose().as_bytes(), "tls.ca")?))
        }
        (None, false) => Trust::System,
    };
    let verify_name = match &material.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?,
        ),
        None => None,
    };
    let identity = match (&material.cert_pem, &material.key_pem) {
        (Some(cert), Some(key)) => Some((
            kaas_tls::certificates(cert.expose().as_bytes(), "tls.cert")?,
            kaas_tls::private_key(key.expose().as_bytes(), "tls.key")?,
        )),
        _ => None,
    };
    Ok(ClientTls {
        trust,
        verify_name,
        identity,
        alpn: kaas_tls::http_alpn(),
    })
}

/// Builds a client configuration with ALPN for HTTP/2 and HTTP/1.1.
pub fn client_config(material: &TlsMaterial) -> Result<ClientConfig, TlsError> {
    Ok(kaas_tls::client_config(client_tls(material)?)?)
}
