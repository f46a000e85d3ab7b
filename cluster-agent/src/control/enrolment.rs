//! A node instance's first certificate, from its cluster-level instance instead of a
//! join token (issue 16; the other side is [`crate::node_certificates`]).
//!
//! A node agent without an identity (`--node-certificate-issuer URL`) checks that its
//! data directory is writable, generates its key and CSR (kept in memory until the
//! identity is saved, like a join's), reads its projected service-account token from
//! `--node-token-file` (read at every attempt: the kubelet rotates it) and posts
//! `{"instanceName", "csrPem"}` to the issuer. The answer's certificate must hold the
//! public key of the key generated here, or nothing is saved.
//!
//! # Whom it trusts
//!
//! The issuer is reached inside the cluster, possibly over plain HTTP. So the node
//! agent takes from it only what it can check or what is public: the certificate
//! (checked against its own key) and the cluster id (which the observer checks against
//! the certificate at every connection). The CA bundle it trusts for the observer is
//! its own `--observer-ca-file`, as for a join, never the bundle in the answer: whoever
//! sits between the pods could otherwise make it trust an impostor observer. Later CA
//! bundles come over the authenticated stream (`TrustBundle`), as for every agent.
//! The certificate is renewed over the node's own stream, as every agent's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ControlError;
use super::identity::{AgentIdentity, KeyAndRequest};
use crate::node_certificates::{
    ISSUANCE_TIMEOUT, NODE_CERTIFICATE_PATH, NodeCertificate, NodeCertificateRefusal,
    NodeCertificateRequest,
};

/// Where the node agent's projected service-account token for the issuer is mounted
/// (deploy/agent/base/node-agent.yaml).
pub const DEFAULT_NODE_TOKEN_FILE: &str = "/var/run/secrets/kaas-observer/node-certificate/token";
/// How long one request may take: the issuer waits up to its own
/// [`ISSUANCE_TIMEOUT`] for the observer, plus time for the token review.
pub const ENROLMENT_TIMEOUT: Duration = Duration::from_secs(ISSUANCE_TIMEOUT.as_secs() + 15);
/// The largest answer read: a certificate and a CA bundle of a few certificates.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The largest token read from the token file (a projected token is about 1 KiB).
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// Where a node agent gets its first certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEnrolment {
    /// The cluster-level instance's base URL, e.g.
    /// `http://cluster-agent.kaas-observer.svc:8429`.
    pub issuer_url: url::Url,
    /// The projected service-account token's file.
    pub token_file: PathBuf,
}

/// Checks `--node-certificate-issuer`: an http or https URL with a host and nothing
/// after it.
pub fn check_issuer_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(
            "must name the cluster agent's address only, without path, query or user".into(),
        );
    }
    Ok(url)
}

impl NodeEnrolment {
    /// Asks the issuer for `instance`'s certificate for `generated`'s key; the identity
    /// trusts `observer_ca_pem` for the observer (see the module note).
    pub async fn request(
        &self,
        instance: &str,
        generated: &KeyAndRequest,
        observer_ca_pem: String,
    ) -> Result<AgentIdentity, ControlError> {
        let token = read_token(&self.token_file)?;
        let client = kaas_tls::http::http_client(kaas_tls::http::HttpClientSettings {
            timeout: Some(ENROLMENT_TIMEOUT),
            connect_timeout: Some(super::CONNECT_TIMEOUT),
            ..kaas_tls::http::HttpClientSettings::new(
                kaas_tls::ClientTls::default(),
                concat!("kaas-cluster-agent/", env!("CARGO_PKG_VERSION")),
            )
        })
        .map_err(|e| enrolment_error(format!("cannot build the HTTP client: {e}")))?;
        let url = self
            .issuer_url
            .join(NODE_CERTIFICATE_PATH)
            .map_err(|e| enrolment_error(e.to_string()))?;
        let body = serde_json::to_vec(&NodeCertificateRequest {
            instance_name: instance.to_owned(),
            csr_pem: generated.csr_pem.clone(),
        })
        .map_err(|e| enrolment_error(e.to_string()))?;
        let mut response = client
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| enrolment_error(format!("cannot reach the cluster agent: {e}")))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| enrolment_error(format!("the answer broke off: {e}")))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(enrolment_error(format!(
                    "the answer is over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let reason = serde_json::from_slice::<NodeCertificateRefusal>(&answer)
                .map(|refusal| refusal.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&answer).chars().take(200).collect());
            return Err(ControlError::NodeCertificateRefused {
                status: status.as_u16(),
                reason,
            });
        }
        let issued: NodeCertificate = serde_json::from_slice(&answer)
            .map_err(|e| enrolment_error(format!("not a node certificate: {e}")))?;
        check_key_matches(&issued.certificate_pem, &generated.key_pem)?;
        Ok(AgentIdentity {
            cluster_id: issued.cluster_id,
            key_pem: generated.key_pem.clone(),
            cert_pem: issued.certificate_pem,
            ca_pem: observer_ca_pem,
        })
    }
}

fn enrolment_error(reason: String) -> ControlError {
    ControlError::NodeCertificate(reason)
}

/// The token in `path`, at most [`MAX_TOKEN_BYTES`], trimmed.
fn read_token(path: &Path) -> Result<String, ControlError> {
    use std::io::Read as _;
    let read = |path: &Path| -> std::io::Result<String> {
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_TOKEN_BYTES)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let token = read(path).map_err(|source| ControlError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(enrolment_error(format!("{} is empty", path.display())));
    }
    Ok(token.to_owned())
}

/// Whether the certificate in `cert_pem` is for the key in `key_pem`.
fn check_key_matches(cert_pem: &str, key_pem: &str) -> Result<(), ControlError> {
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| enrolment_error(format!("cannot read the generated key: {e}")))?;
    let certificates = kaas_tls::certificates(cert_pem.as_bytes(), "certificate")
        .map_err(|e| enrolment_error(format!("the answer's certificate: {e}")))?;
    let der = certificates
        .first()
        .ok_or_else(|| enrolment_error("the answer holds no certificate".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| enrolment_error(format!("the answer's certificate: {e}")))?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(enrolment_error(
            "the answer's certificate is not for this agent's key".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "enrolment_tests.rs"]
mod tests;
