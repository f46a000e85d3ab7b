//! The identity side of an agent stream: who the peer certificate names, when it
//! expires, the CA bundle and renewal requests during a CA rotation, and certificates
//! issued over the stream (renewals, and other instances of the cluster). See
//! [`crate::identity`] and [`crate::store::certificates`] for the lifecycle.

use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::role::AgentRole;
use kaas_proto::control::v1::{
    AgentHello, AgentRole as ProtoRole, CertificateIssued, CertificateRequest, CommandType,
    TrustBundle, observer_message,
};
use sha2::Digest as _;
use tonic::{Request, Status};

use super::join::loggable;
use super::service::Inner;
use super::stream::{AgentStream, StreamEnd};
use crate::identity::{AgentCertificateInfo, ClusterCa, DEFAULT_INSTANCE};
use crate::store::certificates::{CertificateStanding, NewAgentCertificate};
use crate::store::{StoreError, now_ms};

/// Certificate requests one stream may make: a renewal, a retry of it, and the
/// certificates a default instance asks for its cluster's other instances as they come
/// up. An agent asking for more is refused on this stream (it may reconnect), so it
/// cannot make the observer sign and record certificates at network speed. Defined
/// with the contract, beside the share the agent uses for node certificates.
pub use kaas_proto::control::MAX_CERTIFICATE_REQUESTS_PER_STREAM;

/// The identity a verified client certificate carries.
pub(super) struct PeerIdentity {
    pub(super) info: AgentCertificateInfo,
    /// Whether the active CA signed it (`false`: the CA being rotated out).
    pub(super) signed_by_active: bool,
}

pub(super) fn peer_identity<T>(
    request: &Request<T>,
    ca: &ClusterCa,
) -> Result<PeerIdentity, Status> {
    let certificates = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("Connect needs the client certificate issued by Join")
    })?;
    let leaf = certificates.first().ok_or_else(|| {
        Status::unauthenticated("Connect needs the client certificate issued by Join")
    })?;
    let info = AgentCertificateInfo::parse(leaf)
        .ok_or_else(|| Status::unauthenticated("the client certificate does not name a cluster"))?;
    Ok(PeerIdentity {
        info,
        signed_by_active: ca.signed_by_active(leaf),
    })
}

/// Why a certificate is refused, as the agent is told.
pub(super) fn revoked_status(standing: &CertificateStanding) -> Status {
    Status::permission_denied(match standing {
        CertificateStanding::Revoked => {
            "this certificate was revoked: its agent instance joined again or switched to a renewed certificate"
        }
        _ => "this certificate is not known for its cluster",
    })
}

/// What a stream knows about the certificate it runs on, and what it needs to issue
/// new ones.
pub(super) struct StreamCertificate {
    pub(super) info: AgentCertificateInfo,
    pub(super) signed_by_active: bool,
    /// When the certificate expires: the stream ends then.
    pub(super) expires: tokio::time::Instant,
    /// The CA bundle hash the agent reported.
    agent_bundle_sha256: Vec<u8>,
    ca: Arc<ClusterCa>,
    validity: Duration,
    /// Certificate requests served on this stream.
    requests: u32,
}

impl StreamCertificate {
    pub(super) fn new(peer: PeerIdentity, hello: &AgentHello, inner: &Inner) -> Self {
        let now_s = now_ms() / 1000;
        let left =
            u64::try_from(peer.info.not_after_unix_seconds.saturating_sub(now_s)).unwrap_or(0);
        Self {
            expires: tokio::time::Instant::now() + Duration::from_secs(left),
            info: peer.info,
            signed_by_active: peer.signed_by_active,
            agent_bundle_sha256: hello.trust_bundle_sha256.clone(),
            ca: inner.ca.clone(),
            validity: inner.settings.agent_certificate_validity,
            requests: 0,
        }
    }
}

impl AgentStream {
    /// Sends the CA bundle when the agent trusts another one (a rotation is under way),
    /// and asks an agent whose certificate the CA being rotated out signed to renew.
    pub(super) async fn offer_trust(&mut self) -> Result<(), StreamEnd> {
        let bundle = self.certificate.ca.bundle_pem();
        let bundle_sha256 = sha2::Sha256::digest(bundle.as_bytes());
        let reported = self.certificate.agent_bundle_sha256.as_slice();
        // An agent that reports no bundle (older than this message) learns the bundle
        // only when it matters: while a rotation is under way.
        let outdated = if reported.is_empty() {
            self.certificate.ca.is_rotating()
        } else {
            reported != bundle_sha256.as_slice()
        };
        if outdated {
            tracing::info!(cluster = %self.cluster, instance = %self.certificate.info.instance, "sending the current CA bundle");
            self.send(observer_message::Body::TrustBundle(TrustBundle {
                ca_bundle_pem: bundle,
            }))
            .await?;
            self.certificate.agent_bundle_sha256 = bundle_sha256.to_vec();
        }
        if !self.certificate.signed_by_active {
            self.command(
                CommandType::RenewCertificate,
                "the certificate was signed by the CA being rotated out".to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    /// Serves a `CertificateRequest`: a renewal of the stream's own instance, or, from
    /// the default instance, a certificate for another instance of the cluster. Refusals
    /// are answered on the stream, which goes on.
    pub(super) async fn issue_certificate(
        &mut self,
        request: CertificateRequest,
    ) -> Result<(), StreamEnd> {
        let own = self.certificate.info.instance.clone();
        let instance = if request.instance_name.is_empty() {
            own.clone()
        } else {
            request.instance_name.clone()
        };
        // A renewal keeps the certificate's role; another instance's certificate gets
        // the role the cluster-level instance authenticated (never `cluster`).
        let role = if instance == own {
            self.certificate.info.allowed_role
        } else {
            match ProtoRole::try_from(request.role) {
                Ok(ProtoRole::Gateway) => AgentRole::Gateway,
                Ok(ProtoRole::Cluster) => AgentRole::Cluster,
                _ => AgentRole::Node,
            }
        };
        let refusal = if self.certificate.requests >= MAX_CERTIFICATE_REQUESTS_PER_STREAM {
            Some(format!(
                "at most {MAX_CERTIFICATE_REQUESTS_PER_STREAM} certificate requests per stream; reconnect"
            ))
        } else if instance != own && own != DEFAULT_INSTANCE {
            Some(format!(
                "only the {DEFAULT_INSTANCE:?} instance may ask for another instance's certificate"
            ))
        } else if instance != own && role == AgentRole::Cluster {
            Some(format!(
                "role: only the {DEFAULT_INSTANCE:?} instance may be the cluster-level instance"
            ))
        } else if request.csr_pem.len() > super::join::MAX_CSR_PEM_LEN {
            Some(format!(
                "csr_pem: at most {} bytes",
                super::join::MAX_CSR_PEM_LEN
            ))
        } else {
            kaas_pipeline::names::check_instance_name(&instance)
                .err()
                .map(|reason| format!("instance_name: {reason}"))
        };
        self.certificate.requests = self.certificate.requests.saturating_add(1);
        let outcome = match refusal {
            Some(refusal) => Err(refusal),
            None => {
                self.sign_and_record((&instance, role), &own, &request.csr_pem)
                    .await
            }
        };
        let answer = match outcome {
            Ok((pem, not_after_ms)) => {
                tracing::info!(cluster = %self.cluster, requested_by = %own, %instance, "certificate issued over the stream");
                CertificateIssued {
                    certificate_pem: pem,
                    ca_bundle_pem: self.certificate.ca.bundle_pem(),
                    not_after_unix_seconds: not_after_ms / 1000,
                    instance_name: instance,
                    refused: String::new(),
                }
            }
            Err(refused) => {
                tracing::warn!(cluster = %self.cluster, requested_by = %own, instance = %loggable(&instance), reason = %refused, "certificate request refused");
                CertificateIssued {
                    instance_name: instance,
                    refused,
                    ..CertificateIssued::default()
                }
            }
        };
        self.send(observer_message::Body::CertificateIssued(answer))
            .await
    }

    /// Signs `csr_pem` for `instance` in `role` with the active CA and records it: a
    /// renewal (`instance` is the stream's own) keeps the stream's certificate valid
    /// until the switch. Returns the certificate and its expiry, or why not.
    async fn sign_and_record(
        &self,
        (instance, role): (&str, AgentRole),
        own: &str,
        csr_pem: &str,
    ) -> Result<(String, i64), String> {
        let signed = self
            .certificate
            .ca
            .sign_instance_csr(
                &self.cluster,
                (instance, role),
                csr_pem,
                self.certificate.validity,
            )
            .map_err(|error| error.to_string())?;
        let keep = (instance == own).then_some(self.certificate.info.serial_hex.as_str());
        let recorded = NewAgentCertificate {
            serial_hex: &signed.serial_hex,
            pem: &signed.pem,
            instance,
            not_after_ms: signed.not_after_ms,
        };
        match self
            .store
            .record_agent_certificate(&self.cluster, recorded, keep, now_ms())
            .await
        {
            Ok(()) => Ok((signed.pem, signed.not_after_ms)),
            Err(StoreError::Conflict(reason)) => Err(reason),
            Err(error) => {
                tracing::error!(%error, "cannot record an agent certificate");
                Err("the observer cannot reach its database; retry later".to_owned())
            }
        }
    }
}
