//! The observer's certificate authority: agent identities are client certificates it signs.
//!
//! # Design
//!
//! One self-signed CA (ECDSA P-256, valid for [`CA_VALIDITY`]) lives in the observer's
//! CA directory as `ca.crt` and `ca.key` (PKCS#8 PEM, mode 0600). It is created on the
//! first start and loaded afterwards; every HA replica must share the same files (mount
//! the same Secret), because an agent trusts exactly these CAs for the server
//! certificate and the server trusts exactly these CAs for client certificates.
//!
//! It signs two kinds of certificates:
//!
//! - the gRPC **server certificate** ([`ClusterCa::server_certificate`]), issued fresh
//!   with a new key at every start for the configured host names and IP addresses, so
//!   nothing but the CA needs to be persisted;
//! - one **client certificate per agent instance** ([`ClusterCa::sign_agent_csr`]),
//!   issued when an agent redeems its join token or renews over its stream. The agent
//!   generates the key and sends only a PKCS#10 request. The request's subject and
//!   extensions are ignored: the observer writes `CN=<cluster id>`, the SAN URIs
//!   `kaas-observer://cluster/<cluster id>` ([`CLUSTER_URI_PREFIX`]) and
//!   `kaas-observer://instance/<instance>` ([`INSTANCE_URI_PREFIX`]), for every
//!   instance but [`DEFAULT_INSTANCE`] `kaas-observer://role/<node|gateway>`
//!   ([`ROLE_URI_PREFIX`]), and the client-auth extended key usage itself, so an agent
//!   cannot ask for another cluster's identity, another role or a server certificate.
//!
//! # Roles
//!
//! The role an instance may take in its hello is bound to its certificate
//! ([`AgentCertificateInfo::allowed_role`]): [`DEFAULT_INSTANCE`] is the cluster-level
//! instance and nothing else; any other instance is a node or a gateway replica, as the
//! role URI written at issuance says (the cluster-level instance names the role from
//! the service account that authenticated the requester; a renewal keeps it). A
//! certificate of another instance without a role URI (issued before gateways existed)
//! is a node's. Nothing but [`DEFAULT_INSTANCE`] may be `cluster`.
//!
//! # Identity and revocation
//!
//! The SAN URIs are the identity: [`AgentCertificateInfo::parse`] reads them from the
//! peer certificate the TLS layer has already verified against the CA bundle. A
//! certificate without an instance URI (issued before instances existed) names
//! [`DEFAULT_INSTANCE`]. Every certificate gets a random 127-bit serial
//! ([`SignedAgentCertificate::serial_hex`]); the store records each issued serial with
//! its cluster and instance, and the control service accepts only recorded serials that
//! were not revoked (see [`crate::store::certificates`]). Re-joining an instance revokes
//! that instance's earlier certificates; renewing revokes the old one once the new one
//! is used; deleting a cluster refuses all of them; all without a CRL.
//!
//! # Rotation
//!
//! [`rotation`] replaces the CA without a re-join: `observer ca rotate` keeps the old CA
//! as `ca-previous.crt`/`ca-previous.key` and creates a new `ca.crt`/`ca.key`. While
//! both exist the bundle holds both (agents learn it over their stream), client
//! certificates of either are accepted, new agent certificates are signed by the new
//! CA, and the server certificate is still signed by the old one, which every agent
//! trusts, including those that have not learned the new bundle yet. Agents with a
//! certificate of the old CA are told to renew. `observer ca retire` removes the old
//! CA: from then on its certificates are refused and the server certificate is signed
//! by the new CA.

pub mod rotation;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaas_pipeline::role::AgentRole;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

/// File name of the CA certificate in the CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the certificate of the CA being rotated out (between `observer ca
/// rotate` and `observer ca retire`).
pub const PREVIOUS_CA_CERT_FILE: &str = "ca-previous.crt";
/// File name of the key of the CA being rotated out; it signs the server certificate
/// until it is retired.
pub const PREVIOUS_CA_KEY_FILE: &str = "ca-previous.key";
/// Prefix of the SAN URI that names the cluster (its global id) in an agent certificate.
pub const CLUSTER_URI_PREFIX: &str = "kaas-observer://cluster/";
/// Prefix of the SAN URI that names the agent instance in an agent certificate.
pub const INSTANCE_URI_PREFIX: &str = "kaas-observer://instance/";
/// Prefix of the SAN URI that names the role of an instance other than
/// [`DEFAULT_INSTANCE`] (`node` or `gateway`) in an agent certificate.
pub const ROLE_URI_PREFIX: &str = "kaas-observer://role/";
/// The instance of an agent that names none: the cluster-level agent every cluster
/// has, and every certificate issued before a cluster could have several instances.
pub const DEFAULT_INSTANCE: &str = "default";

/// How long the CA is valid: ten years, far beyond any agent certificate, so rotating
/// the CA is a rare planned operation rather than a recurring outage.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long an agent certificate is valid by default: 90 days. Agents renew over their
/// stream at two thirds of the lifetime (the agent's `RENEW_AT_FRACTION`), so a fleet
/// needs no token after the first join, and a leaked key stays useful for weeks at
/// most (revocation by serial stops it sooner). `observer serve
/// --agent-certificate-validity` changes it (tests use seconds).
pub const DEFAULT_AGENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the gRPC server certificate is valid; it is reissued at every start, so a
/// year only matters for an observer that never restarts.
pub const SERVER_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start being valid this long before they are issued, so an agent or
/// replica whose clock is a little behind still accepts them.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
/// Length of random certificate serials in bytes (the top bit is cleared so the DER
/// integer stays positive and its encoding equals these bytes).
const SERIAL_LEN: usize = 16;
/// Common name of the CA certificate; a CA created by `observer ca rotate` adds its
/// creation time, so the old and the new CA are told apart in every tool.
const CA_COMMON_NAME: &str = "kaas-observer cluster CA";

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A CA file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Only one of a CA's certificate and key exists.
    #[error(
        "{present} exists but {missing} does not; restore the missing file or remove both to create a new CA (every agent must then join again)"
    )]
    HalfACa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The stored CA could not be parsed.
    #[error("the CA in {dir} is unusable: {reason}")]
    BadCa {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A rotation step cannot be taken in the CA directory's current state.
    #[error("{0}")]
    Rotation(String),
    /// The certificate signing request is not a valid, correctly signed PKCS#10 request.
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(String),
    /// A cluster name or host name cannot be put into a certificate.
    #[error("{0:?} cannot be used in a certificate")]
    BadName(String),
    /// The role does not fit the instance: only the default instance is the
    /// cluster-level one.
    #[error(
        "instance {instance:?} cannot be {role}: only \"default\" is the cluster-level instance"
    )]
    RoleNotForInstance {
        /// The instance the certificate was asked for.
        instance: String,
        /// The role asked for.
        role: &'static str,
    },
    /// Generating or signing failed.
    #[error("cannot issue the certificate: {0}")]
    Signing(#[source] rcgen::Error),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The issued certificate and key, or the CA, were refused as TLS settings.
    #[error("cannot build the TLS settings: {0}")]
    Tls(#[from] kaas_tls::TlsError),
}

/// A certificate issued to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAgentCertificate {
    /// The certificate, PEM encoded.
    pub pem: String,
    /// Its serial number as lower-case hex, as the store records it.
    pub serial_hex: String,
    /// When it expires, in Unix milliseconds (whole seconds, as X.509 encodes them).
    pub not_after_ms: i64,
}

/// One CA: its certificate and the key that signs with it.
struct Authority {
    cert_pem: String,
    /// The DER of the certificate, to tell which CA signed a peer certificate.
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// The CAs that sign the server certificate and every agent's client certificate: the
/// active one and, during a rotation, the one being rotated out.
pub struct ClusterCa {
    active: Authority,
    previous: Option<Authority>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.debug_struct("ClusterCa")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Loads `ca.crt` and `ca.key` (and a CA being rotated out) from `dir`, or creates
    /// them (and `dir`) when neither exists.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        rotation::refuse_unfinished_rotation(dir)?;
        let active = match load_authority(dir, CA_CERT_FILE, CA_KEY_FILE)? {
            Some(active) => active,
            None => {
                let created = create_authority(dir, CA_CERT_FILE, CA_KEY_FILE, CA_COMMON_NAME)?;
                tracing::info!(dir = %dir.display(), "created a new cluster CA");
                created
            }
        };
        let previous = load_authority(dir, PREVIOUS_CA_CERT_FILE, PREVIOUS_CA_KEY_FILE)?;
        Ok(Self { active, previous })
    }

    /// The CA bundle, PEM: the active CA and, during a rotation, the CA being rotated
    /// out. Agents trust it for the server certificate; the server trusts it for
    /// client certificates.
    pub fn bundle_pem(&self) -> String {
        match &self.previous {
            Some(previous) => format!("{}{}", self.active.cert_pem, previous.cert_pem),
            None => self.active.cert_pem.clone(),
        }
    }

    /// Whether a CA is being rotated out.
    pub fn is_rotating(&self) -> bool {
        self.previous.is_some()
    }

    /// Whether the active CA signed `cert_der`; `false` for one of the CA being
    /// rotated out (its agent should renew) or one that cannot be read.
    pub fn signed_by_active(&self, cert_der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
            return false;
        };
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(&self.active.cert_der) else {
            return false;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    /// A fresh server certificate and key (both PEM) for `hostnames`; each entry that
    /// parses as an IP address becomes an IP SAN, every other a DNS SAN. Signed by the
    /// CA being rotated out while there is one (every agent trusts it), else by the
    /// active CA.
    pub fn server_certificate(
        &self,
        hostnames: &[String],
    ) -> Result<(String, String), IdentityError> {
        let key = KeyPair::generate().map_err(IdentityError::Signing)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            hostnames.first().map_or("kaas-observer", String::as_str),
        );
        for name in hostnames {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|_| IdentityError::BadName(name.clone()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial()?.0);
        set_validity(&mut params, SERVER_CERTIFICATE_VALIDITY);
        params.use_authority_key_identifier_extension = true;
        let signer = self.previous.as_ref().unwrap_or(&self.active);
        let cert = params
            .signed_by(&key, &signer.issuer)
            .map_err(IdentityError::Signing)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs an agent's CSR as the identity of `instance` of the cluster `cluster_id`,
    /// valid for `validity`, with the active CA; an instance other than
    /// [`DEFAULT_INSTANCE`] is a node's (see [`ClusterCa::sign_instance_csr`]).
    pub fn sign_agent_csr(
        &self,
        cluster_id: &str,
        instance: &str,
        csr_pem: &str,
        validity_period: Duration,
    ) -> Result<SignedAgentCertificate, IdentityError> {
        let role = AgentCertificateInfo::role_for(instance, AgentRole::Node);
        self.sign_instance_csr(cluster_id, (instance, role), csr_pem, validity_period)
    }

    /// Signs an agent's CSR as the identity of `instance` of the cluster `cluster_id`
    /// in `role`, valid for `validity`, with the active CA. The request's subject and
    /// extensions are ignored; only its public key is used, after its signature proves
    /// the agent holds the private key. The role must be the one
    /// [`AgentCertificateInfo::role_for`] gives the instance: [`DEFAULT_INSTANCE`] is
    /// `cluster`, any other `node` or `gateway`.
    pub fn sign_instance_csr(
        &self,
        cluster_id: &str,
        (instance, role): (&str, AgentRole),
        csr_pem: &str,
        validity_period: Duration,
    ) -> Result<SignedAgentCertificate, IdentityError> {
        if (instance == DEFAULT_INSTANCE) != (role == AgentRole::Cluster) {
            return Err(IdentityError::RoleNotForInstance {
                instance: instance.to_owned(),
                role: role.as_str(),
            });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IdentityError::BadCsr(e.to_string()))?;
        let uri = |prefix: &str, value: &str| {
            format!("{prefix}{value}")
                .try_into()
                .map(SanType::URI)
                .map_err(|_| IdentityError::BadName(value.to_owned()))
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, cluster_id);
        params.subject_alt_names = vec![
            uri(CLUSTER_URI_PREFIX, cluster_id)?,
            uri(INSTANCE_URI_PREFIX, instance)?,
        ];
        if role != AgentRole::Cluster {
            params
                .subject_alt_names
                .push(uri(ROLE_URI_PREFIX, role.as_str())?);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (serial, serial_hex) = random_serial()?;
        params.serial_number = Some(serial);
        let not_after_ms = set_validity(&mut params, validity_period);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.active.issuer)
            .map_err(IdentityError::Signing)?;
        Ok(SignedAgentCertificate {
            pem: cert.pem(),
            serial_hex,
            not_after_ms,
        })
    }
}

/// Loads one CA's certificate and key, `None` when neither file exists.
fn load_authority(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<Option<Authority>, IdentityError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {}
        (false, false) => return Ok(None),
        (true, false) => {
            return Err(IdentityError::HalfACa {
                present: cert_path,
                missing: key_path,
            });
        }
        (false, true) => {
            return Err(IdentityError::HalfACa {
                present: key_path,
                missing: cert_path,
            });
        }
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let bad = |reason: String| IdentityError::BadCa {
        dir: dir.to_owned(),
        reason,
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("{key_file}: {e}")))?;
    let cert_der =
        first_certificate(&cert_pem).ok_or_else(|| bad(format!("{cert_file}: not PEM")))?;
    let issuer =
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad(format!("{cert_file}: {e}")))?;
    Ok(Some(Authority {
        cert_pem,
        cert_der,
        issuer,
    }))
}

/// Creates a CA named `common_name` as `cert_file`/`key_file` in `dir` (created if
/// missing). The key is written first, with its mode set before any byte is written,
/// so a crash between the two writes leaves a key without a certificate (refused
/// loudly at the next start) rather than a readable key.
fn create_authority(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    common_name: &str,
) -> Result<Authority, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| IdentityError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate().map_err(IdentityError::Signing)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?.0);
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(IdentityError::Signing)?;
    let cert_pem = cert.pem();
    let key_path = dir.join(key_file);
    let cert_path = dir.join(cert_file);
    write_private(&key_path, &key.serialize_pem()).map_err(io(&key_path))?;
    write_synced(&cert_path, &cert_pem).map_err(io(&cert_path))?;
    Ok(Authority {
        cert_der: cert.der().to_vec(),
        cert_pem,
        issuer: Issuer::new(params, key),
    })
}

/// Checks that `csr_pem` is a PKCS#10 request this CA can sign (parsable, signature
/// valid), without signing it: `Join` calls this before it uses the token up.
pub fn check_csr(csr_pem: &str) -> Result<(), IdentityError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map(drop)
        .map_err(|e| IdentityError::BadCsr(e.to_string()))
}

/// What an agent certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCertificateInfo {
    /// The cluster's global id, from the `kaas-observer://cluster/` SAN URI.
    pub cluster: String,
    /// The agent instance, from the `kaas-observer://instance/` SAN URI;
    /// [`DEFAULT_INSTANCE`] when there is none.
    pub instance: String,
    /// The only role the instance may take (see [`AgentCertificateInfo::role_for`]).
    pub allowed_role: AgentRole,
    /// The serial as lower-case hex (the form the store records).
    pub serial_hex: String,
    /// When the certificate expires, Unix seconds.
    pub not_after_unix_seconds: i64,
}

impl AgentCertificateInfo {
    /// Reads an agent certificate, or `None` when it cannot be parsed or names no
    /// cluster. The caller must only pass certificates the TLS layer verified against
    /// the CA bundle.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = uris(&cert);
        let cluster = names
            .iter()
            .find_map(|uri| uri.strip_prefix(CLUSTER_URI_PREFIX))
            .filter(|cluster| !cluster.is_empty() && !cluster.contains('/'))?
            .to_owned();
        let instance = names
            .iter()
            .find_map(|uri| uri.strip_prefix(INSTANCE_URI_PREFIX))
            .filter(|instance| !instance.is_empty() && !instance.contains('/'))
            .unwrap_or(DEFAULT_INSTANCE)
            .to_owned();
        let written = match names
            .iter()
            .find_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX))
        {
            Some("gateway") => AgentRole::Gateway,
            _ => AgentRole::Node,
        };
        Some(Self {
            allowed_role: Self::role_for(&instance, written),
            cluster,
            instance,
            serial_hex: hex::encode(cert.raw_serial()),
            not_after_unix_seconds: cert.validity().not_after.timestamp(),
        })
    }

    /// The role `instance` may take when its certificate names `role`:
    /// [`DEFAULT_INSTANCE`] is the cluster-level instance whatever it names; any other
    /// instance is a gateway replica when its certificate says so, else a node.
    pub fn role_for(instance: &str, role: AgentRole) -> AgentRole {
        match role {
            _ if instance == DEFAULT_INSTANCE => AgentRole::Cluster,
            AgentRole::Gateway => AgentRole::Gateway,
            AgentRole::Cluster | AgentRole::Node => AgentRole::Node,
        }
    }
}

/// The SAN URIs of a certificate.
fn uris<'a>(cert: &x509_parser::certificate::X509Certificate<'a>) -> Vec<&'a str> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

/// The cluster named by an agent certificate's `kaas-observer://cluster/<id>` SAN URI,
/// or `None` when the certificate cannot be parsed or carries no such URI. The caller
/// must only pass certificates the TLS layer verified against the CA.
pub fn cluster_from_certificate(der: &[u8]) -> Option<String> {
    AgentCertificateInfo::parse(der).map(|info| info.cluster)
}

/// A certificate's serial number as lower-case hex (the form the store records), or
/// `None` when it cannot be parsed.
pub fn serial_hex_from_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}

/// The DER of the first certificate in `pem`.
pub(crate) fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    let certificates = kaas_tls::certificates(pem.as_bytes(), "certificate").ok()?;
    certificates.into_iter().next().map(|der| der.to_vec())
}

/// A random positive serial and its hex form.
fn random_serial() -> Result<(SerialNumber, String), IdentityError> {
    let mut bytes = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IdentityError::Random)?;
    // Positive, and never a leading zero byte that DER would strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

/// Sets a certificate's validity to start now (less [`CLOCK_SKEW_ALLOWANCE`], or a
/// quarter of `period` when that is shorter, so an agent renewing at two thirds of
/// the validity it sees renews at two thirds of `period`, give or take) and last
/// `period`; returns the end in Unix milliseconds.
fn set_validity(params: &mut CertificateParams, period: Duration) -> i64 {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let backdated = CLOCK_SKEW_ALLOWANCE.min(period / 4);
    params.not_before = epoch + Duration::from_secs(now_s.saturating_sub(backdated.as_secs()));
    let not_after_s = now_s.saturating_add(period.as_secs());
    params.not_after = epoch + Duration::from_secs(not_after_s);
    i64::try_from(not_after_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Writes `contents` to a new file readable only by its owner.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Writes `contents` to `path` and syncs it.
fn write_synced(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use x509_parser::extensions::GeneralName;

    use super::*;

    /// A key and CSR made the way the agent makes them.
    fn agent_csr(common_name: &str, sans: Vec<String>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    fn verifies_against(cert_pem: &str, ca: &ClusterCa) -> bool {
        let cert_der = der(cert_pem);
        let ca_der = der(&ca.bundle_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).is_ok()
    }

    #[test]
    fn the_ca_is_created_once_with_a_private_key_file_and_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let created = ClusterCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(created.bundle_pem(), loaded.bundle_pem());
        // What the loaded CA signs verifies against the certificate the first one made.
        let signed = loaded
            .sign_agent_csr(
                "c1",
                DEFAULT_INSTANCE,
                &agent_csr("agent", vec![]),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(verifies_against(&signed.pem, &created));
        let ca_der = der(&created.bundle_pem());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.is_ca());
        let lifetime = ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
        assert!(lifetime >= CA_VALIDITY.as_secs() as i64, "{lifetime}");
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let error = ClusterCa::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, IdentityError::HalfACa { .. }), "{error}");
    }

    #[test]
    fn a_signed_csr_names_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let validity = Duration::from_secs(3600);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let signed = ca
            .sign_agent_csr(
                "edge-1",
                DEFAULT_INSTANCE,
                &agent_csr("cluster-agent", vec![]),
                validity,
            )
            .unwrap();
        let cert_der = der(&signed.pem);
        assert_eq!(
            cluster_from_certificate(&cert_der).as_deref(),
            Some("edge-1")
        );
        assert_eq!(
            serial_hex_from_certificate(&cert_der).as_deref(),
            Some(signed.serial_hex.as_str())
        );
        assert_eq!(signed.serial_hex.len(), SERIAL_LEN * 2);
        let expected_ms = (before + validity).as_millis() as i64;
        assert!((signed.not_after_ms - expected_ms).abs() <= 2000);
        assert!(verifies_against(&signed.pem, &ca));

        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(cn, ["edge-1"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(
            cert.validity().not_after.timestamp() * 1000,
            signed.not_after_ms
        );
    }

    #[test]
    fn every_certificate_gets_its_own_serial() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let csr = agent_csr("a", vec![]);
        let first = ca
            .sign_agent_csr("c1", DEFAULT_INSTANCE, &csr, Duration::from_secs(60))
            .unwrap();
        let second = ca
            .sign_agent_csr("c1", DEFAULT_INSTANCE, &csr, Duration::from_secs(60))
            .unwrap();
        assert_ne!(first.serial_hex, second.serial_hex);
    }

    #[test]
    fn a_csr_asking_for_another_identity_still_gets_its_cluster_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let csr = agent_csr(
            "other-cluster",
            vec!["kaas-observer.example".to_owned(), "127.0.0.1".to_owned()],
        );
        let signed = ca
            .sign_agent_csr("edge-1", DEFAULT_INSTANCE, &csr, Duration::from_secs(60))
            .unwrap();
        let cert_der = der(&signed.pem);
        assert_eq!(
            cluster_from_certificate(&cert_der).as_deref(),
            Some("edge-1")
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let names = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            names,
            &[
                GeneralName::URI("kaas-observer://cluster/edge-1"),
                GeneralName::URI("kaas-observer://instance/default"),
            ],
            "only the observer's names, none of the request's"
        );
        assert!(cert.subject().to_string().contains("edge-1"));
        assert!(!cert.subject().to_string().contains("other-cluster"));
    }

    #[test]
    fn garbage_and_tampered_csrs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        for garbage in [
            "",
            "not a csr",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            let error = ca
                .sign_agent_csr("c1", DEFAULT_INSTANCE, garbage, Duration::from_secs(60))
                .unwrap_err();
            assert!(
                matches!(error, IdentityError::BadCsr(_)),
                "{garbage:?}: {error}"
            );
        }
        // A CA certificate is PEM but not a CSR.
        let error = ca
            .sign_agent_csr(
                "c1",
                DEFAULT_INSTANCE,
                &ca.bundle_pem(),
                Duration::from_secs(60),
            )
            .unwrap_err();
        assert!(matches!(error, IdentityError::BadCsr(_)), "{error}");
        // A valid CSR whose last signature byte is flipped proves nothing.
        let mut csr_der = der(&agent_csr("a", vec![]));
        if let Some(last) = csr_der.last_mut() {
            *last ^= 0xff;
        }
        let tampered = pem("CERTIFICATE REQUEST", &csr_der);
        let error = ca
            .sign_agent_csr("c1", DEFAULT_INSTANCE, &tampered, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(error, IdentityError::BadCsr(_)), "{error}");
    }

    #[test]
    fn server_certificates_carry_dns_and_ip_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let (cert_pem, key_pem) = ca
            .server_certificate(&["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        assert!(verifies_against(&cert_pem, &ca));
        let cert_der = der(&cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let names = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(
            names.contains(&GeneralName::DNSName("localhost")),
            "{names:?}"
        );
        assert!(
            names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
            "{names:?}"
        );
        assert_eq!(cluster_from_certificate(&cert_der), None);
    }

    #[test]
    fn certificates_without_the_cluster_uri_name_no_cluster() {
        assert_eq!(cluster_from_certificate(b"garbage"), None);
        assert_eq!(serial_hex_from_certificate(b"garbage"), None);
        assert_eq!(AgentCertificateInfo::parse(b"garbage"), None);
    }

    #[test]
    fn certificates_name_their_instance_and_older_ones_the_default_instance() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let validity = Duration::from_secs(12);
        let signed = ca
            .sign_agent_csr("shop.edge-1", "node-1", &agent_csr("a", vec![]), validity)
            .unwrap();
        let info = AgentCertificateInfo::parse(&der(&signed.pem)).unwrap();
        assert_eq!(
            info,
            AgentCertificateInfo {
                cluster: "shop.edge-1".into(),
                instance: "node-1".into(),
                allowed_role: AgentRole::Node,
                serial_hex: signed.serial_hex.clone(),
                not_after_unix_seconds: signed.not_after_ms / 1000,
            }
        );
        // A short validity is backdated by a quarter of it, not by the full skew
        // allowance, so two thirds of what the agent sees is two thirds of it.
        let signed_der = der(&signed.pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&signed_der).unwrap();
        let seen = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(seen, 15, "12 s plus 3 s backdated");

        // A certificate as issued before instances existed: the cluster URI only.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            format!("{CLUSTER_URI_PREFIX}edge-1").try_into().unwrap(),
        )];
        let legacy = params.signed_by(&key, &ca.active.issuer).unwrap();
        let info = AgentCertificateInfo::parse(legacy.der()).unwrap();
        assert_eq!(
            (info.cluster.as_str(), info.instance.as_str()),
            ("edge-1", DEFAULT_INSTANCE)
        );
        assert!(ca.signed_by_active(legacy.der()));
    }
}
