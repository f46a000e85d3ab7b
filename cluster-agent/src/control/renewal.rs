//! Renewing the agent's certificate over its authenticated stream, and keeping the CA
//! bundle current during an observer CA rotation.
//!
//! # When
//!
//! At [`RENEW_AT_FRACTION`] of the certificate's validity (two thirds: 60 days into a
//! 90-day certificate), or at once when the observer sends `RENEW_CERTIFICATE` (its CA
//! is being rotated). Until the observer answers, the request is repeated every
//! [`RENEW_RETRY_INTERVAL`] (or a tenth of the remaining validity, if shorter), so a
//! lost answer or a busy observer never lets the certificate run out unnoticed.
//!
//! # How
//!
//! The agent generates a new key and sends a `CertificateRequest` with its CSR on the
//! open stream. The `CertificateIssued` answer (certificate and the current CA bundle)
//! is paired with that key and saved as the new identity atomically
//! ([`AgentIdentity::save`]); then the agent reconnects at once with the new
//! certificate, and the observer revokes the old one at that first connection. A crash
//! before the save keeps the old identity, still valid; after it, the new one.
//!
//! A `TrustBundle` (the CA bundle changed, a rotation is under way) is saved the same
//! way with the current key and certificate, and used from the next connection on.

use std::time::{Duration, SystemTime};

use kaas_proto::control::v1::{CertificateIssued, CertificateRequest};

use super::identity::{AgentIdentity, IdentityError, KeyAndRequest, generate_key_and_request};

/// The fraction of a certificate's validity after which the agent renews it: a third of
/// the lifetime is left to ride out an observer outage (30 days of a 90-day
/// certificate) before the agent would need a new join token.
pub const RENEW_AT_FRACTION: f64 = 2.0 / 3.0;
/// How long to wait for an answer to a renewal before asking again (on this or the next
/// stream): long enough for a busy observer, short against any certificate lifetime
/// worth renewing.
pub const RENEW_RETRY_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Why a renewal answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RenewalError {
    /// The observer refused the request.
    #[error("the observer refused the certificate request: {0}")]
    Refused(String),
    /// An answer arrived for no request (or one already answered).
    #[error("a certificate arrived that this agent did not ask for")]
    Unrequested,
    /// The identity could not be generated or saved.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The agent's renewal state: the key of a request in flight, and when to ask (again).
#[derive(Debug, Default)]
pub struct Renewal {
    pending: Option<KeyAndRequest>,
    /// Asking now overrides the schedule (the observer sent `RENEW_CERTIFICATE`).
    requested_now: bool,
    /// When the last request was sent.
    last_request: Option<SystemTime>,
}

impl Renewal {
    /// When the next request is due for `identity` at `now`: at once when asked for,
    /// otherwise at [`RENEW_AT_FRACTION`] of the validity, and while a request is
    /// unanswered, [`RENEW_RETRY_INTERVAL`] (or a tenth of the remaining validity)
    /// after it. `None` when the certificate cannot be read (nothing to schedule).
    pub fn due(&self, identity: &AgentIdentity, now: SystemTime) -> Option<SystemTime> {
        let validity = identity.validity()?;
        let scheduled = if self.requested_now {
            now
        } else {
            validity.renew_at(RENEW_AT_FRACTION)
        };
        Some(match self.last_request {
            Some(last) => {
                let remaining = validity.not_after.duration_since(last).unwrap_or_default();
                scheduled.max(last + RENEW_RETRY_INTERVAL.min(remaining / 10))
            }
            None => scheduled,
        })
    }

    /// The observer asked for a renewal now.
    pub fn request_now(&mut self) {
        self.requested_now = true;
        self.last_request = None;
    }

    /// A request with a new key (kept until the answer), sent at `now`.
    pub fn request(&mut self, now: SystemTime) -> Result<CertificateRequest, IdentityError> {
        let generated = generate_key_and_request()?;
        let request = CertificateRequest {
            csr_pem: generated.csr_pem.clone(),
            // A renewal keeps its certificate's role.
            ..CertificateRequest::default()
        };
        self.pending = Some(generated);
        self.last_request = Some(now);
        Ok(request)
    }

    /// Pairs the answer with the pending key: the new identity of `current`'s cluster,
    /// saved in `data_dir`.
    pub fn complete(
        &mut self,
        current: &AgentIdentity,
        issued: CertificateIssued,
        data_dir: &std::path::Path,
    ) -> Result<AgentIdentity, RenewalError> {
        if !issued.refused.is_empty() {
            return Err(RenewalError::Refused(issued.refused));
        }
        let pending = self.pending.take().ok_or(RenewalError::Unrequested)?;
        let renewed = AgentIdentity {
            cluster_id: current.cluster_id.clone(),
            key_pem: pending.key_pem,
            cert_pem: issued.certificate_pem,
            ca_pem: if issued.ca_bundle_pem.is_empty() {
                current.ca_pem.clone()
            } else {
                issued.ca_bundle_pem
            },
        };
        renewed.save(data_dir)?;
        *self = Self::default();
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity whose certificate is valid from `not_before` for `lifetime`.
    fn identity(not_before: SystemTime, lifetime: Duration) -> AgentIdentity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.not_before = not_before.into();
        params.not_after = (not_before + lifetime).into();
        let cert = params.self_signed(&key).unwrap();
        AgentIdentity {
            cluster_id: "shop.edge-1".into(),
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            ca_pem: "ca".into(),
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn renewal_is_due_at_two_thirds_then_retried_and_at_once_when_asked() {
        let day = 86_400;
        let start = 1_800_000_000;
        let identity = identity(at(start), Duration::from_secs(90 * day));
        let mut renewal = Renewal::default();
        assert_eq!(
            renewal.due(&identity, at(start)),
            Some(at(start + 60 * day))
        );
        // A request in flight: asked again after the retry interval.
        let sent = at(start + 60 * day);
        renewal.request(sent).unwrap();
        assert_eq!(
            renewal.due(&identity, sent),
            Some(sent + RENEW_RETRY_INTERVAL)
        );
        // Close to expiry the retries come faster: a tenth of what is left.
        let late = at(start + 90 * day - 600);
        renewal.request(late).unwrap();
        assert_eq!(
            renewal.due(&identity, late),
            Some(late + Duration::from_secs(60))
        );
        // The observer asks for it (a CA rotation): due now.
        let mut fresh = Renewal::default();
        let now = at(start + day);
        fresh.request_now();
        assert_eq!(fresh.due(&identity, now), Some(now));
    }

    #[test]
    fn an_answer_is_paired_with_the_pending_key_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let current = identity(SystemTime::now(), Duration::from_secs(3600));
        current.save(dir.path()).unwrap();
        let mut renewal = Renewal::default();
        let unasked = CertificateIssued {
            certificate_pem: "x".into(),
            ..CertificateIssued::default()
        };
        assert!(matches!(
            renewal.complete(&current, unasked, dir.path()),
            Err(RenewalError::Unrequested)
        ));
        let request = renewal.request(SystemTime::now()).unwrap();
        assert!(request.csr_pem.contains("CERTIFICATE REQUEST"));
        let refused = CertificateIssued {
            refused: "no".into(),
            ..CertificateIssued::default()
        };
        assert!(matches!(
            renewal.complete(&current, refused, dir.path()),
            Err(RenewalError::Refused(_))
        ));
        let issued = CertificateIssued {
            certificate_pem: "new certificate".into(),
            ca_bundle_pem: "new bundle".into(),
            ..CertificateIssued::default()
        };
        // A refusal keeps the pending key for the retry.
        let renewed = renewal.complete(&current, issued, dir.path()).unwrap();
        assert_eq!(renewed.cert_pem, "new certificate");
        assert_eq!(renewed.ca_pem, "new bundle");
        assert_ne!(renewed.key_pem, current.key_pem);
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), Some(renewed));
    }
}
