//! The agent's identity on disk: its private key, the client certificate the observer
//! signed, the CA bundle it trusts for the observer, and the cluster id, under
//! `<data dir>/identity/`.
//!
//! | file | contents | mode |
//! |---|---|---|
//! | `tls.key` | PKCS#8 PEM private key (ECDSA P-256), generated here, never sent | 0600 |
//! | `tls.crt` | the client certificate from `JoinResponse` or a renewal | 0644 |
//! | `ca.crt` | the CA bundle from `JoinResponse`, a renewal or a `TrustBundle` | 0644 |
//! | `cluster` | the cluster id from `JoinResponse` | 0644 |
//!
//! # Replacing it atomically
//!
//! An identity is replaced as a whole (a join, a renewal with a new key, a new CA
//! bundle), so that a crash never pairs a key with another key's certificate: every
//! file is first written as `<name>.next` (synced), then a `commit` marker is written
//! (synced), then each `.next` file is renamed over its file, then the marker is
//! removed. [`AgentIdentity::load`] finishes what a crash interrupted: with the marker,
//! the remaining `.next` files are renamed into place (the new identity); without it,
//! they are deleted (the old identity). Either way it is complete. `cluster` marks a
//! complete identity at all: it is the last file written by the first save, and
//! [`AgentIdentity::discard`] removes it first.
//!
//! # Writable before joining
//!
//! [`check_writable`] writes and removes a file in the identity directory before a
//! join token is spent, so an agent whose data directory is read-only or full says so
//! instead of using the token up and losing the identity it paid for.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

pub use crate::files::IDENTITY_DIR;
use crate::files::{IDENTITY_CERT_FILE as CERT_FILE, IDENTITY_KEY_FILE as KEY_FILE};
const CA_FILE: &str = "ca.crt";
const CLUSTER_FILE: &str = "cluster";
/// Marks a replacement whose `.next` files are all written (see the module note).
const COMMIT_MARKER: &str = "commit";
/// Suffix of the files of a replacement in progress.
const NEXT_SUFFIX: &str = ".next";
/// The file [`check_writable`] writes and removes.
const WRITE_PROBE_FILE: &str = ".write-probe";
/// Common name in the agent's certificate request. The observer ignores it and writes
/// the cluster identity itself; it only makes the request readable in a debugger.
const CSR_COMMON_NAME: &str = "kaas-cluster-agent";
/// The files of an identity, in the order a replacement renames them; `cluster` last,
/// so a first save that crashed midway leaves no complete-looking identity.
const FILES: [&str; 4] = [KEY_FILE, CERT_FILE, CA_FILE, CLUSTER_FILE];

/// Why the identity could not be created, read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key or request could not be generated.
    #[error("cannot generate the key and certificate request: {0}")]
    Generate(#[source] rcgen::Error),
}

/// A private key and the certificate signing request for it, both PEM.
#[derive(Clone)]
pub struct KeyAndRequest {
    /// The private key; stays on this machine.
    pub key_pem: String,
    /// The request sent in `JoinRequest.csr_pem` or `CertificateRequest.csr_pem`.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndRequest")
            .field("csr_pem", &self.csr_pem)
            .finish_non_exhaustive()
    }
}

/// Generates an ECDSA P-256 key and a PKCS#10 request for it.
pub fn generate_key_and_request() -> Result<KeyAndRequest, IdentityError> {
    let key = KeyPair::generate().map_err(IdentityError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CSR_COMMON_NAME);
    let csr = params
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .map_err(IdentityError::Generate)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr,
    })
}

/// Everything the agent needs to open the control stream.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The cluster this agent speaks for (its global id).
    pub cluster_id: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// The client certificate, PEM.
    pub cert_pem: String,
    /// The CA bundle to trust for the observer, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("AgentIdentity")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// When a certificate starts and stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not before.
    pub not_before: SystemTime,
    /// Not after.
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: after `fraction` of the validity has passed.
    pub fn renew_at(&self, fraction: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The identity directory of a data directory.
pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_DIR)
}

impl AgentIdentity {
    /// Loads the identity saved under `data_dir`, or `None` when there is none (never
    /// joined, or discarded). Finishes or undoes a replacement a crash interrupted.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let dir = identity_dir(data_dir);
        if dir.exists() {
            recover(&dir)?;
        }
        let marker = dir.join(CLUSTER_FILE);
        if !marker.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| IdentityError::Io { path, source })
        };
        Ok(Some(Self {
            cluster_id: read(CLUSTER_FILE)?.trim().to_owned(),
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
        }))
    }

    /// Saves the identity under `data_dir`, replacing any previous one atomically (see
    /// the module note).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(data_dir);
        create_dir(&dir)?;
        recover(&dir)?;
        let contents: [(&str, &[u8], u32); 4] = [
            (KEY_FILE, self.key_pem.as_bytes(), 0o600),
            (CERT_FILE, self.cert_pem.as_bytes(), 0o644),
            (CA_FILE, self.ca_pem.as_bytes(), 0o644),
            (CLUSTER_FILE, self.cluster_id.as_bytes(), 0o644),
        ];
        for (name, bytes, mode) in contents {
            write_synced(&next(&dir, name), bytes, mode)?;
        }
        write_synced(&dir.join(COMMIT_MARKER), b"", 0o644)?;
        sync_dir(&dir);
        recover(&dir)
    }

    /// Removes the identity under `data_dir`; the agent must join again.
    pub fn discard(data_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(data_dir);
        remove_if_present(&dir.join(CLUSTER_FILE))?;
        for name in FILES {
            remove_if_present(&dir.join(name))?;
            remove_if_present(&next(&dir, name))?;
        }
        remove_if_present(&dir.join(COMMIT_MARKER))
    }

    /// The certificate's validity, or `None` when it cannot be read.
    pub fn validity(&self) -> Option<Validity> {
        let certificates = kaas_tls::certificates(self.cert_pem.as_bytes(), "certificate").ok()?;
        let der = certificates.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let at = |seconds: i64| {
            u64::try_from(seconds)
                .ok()
                .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
        };
        Some(Validity {
            not_before: at(cert.validity().not_before.timestamp())?,
            not_after: at(cert.validity().not_after.timestamp())?,
        })
    }
}

/// Checks that the identity directory under `data_dir` can be written: creates it,
/// writes, syncs and removes a file.
pub fn check_writable(data_dir: &Path) -> Result<(), IdentityError> {
    let dir = identity_dir(data_dir);
    create_dir(&dir)?;
    let probe = dir.join(WRITE_PROBE_FILE);
    remove_if_present(&probe)?;
    write_synced(&probe, b"probe", 0o600)?;
    remove_if_present(&probe)
}

/// Completes or undoes a replacement in `dir` (see the module note).
fn recover(dir: &Path) -> Result<(), IdentityError> {
    let committed = dir.join(COMMIT_MARKER).exists();
    for name in FILES {
        let pending = next(dir, name);
        if !pending.exists() {
            continue;
        }
        if committed {
            std::fs::rename(&pending, dir.join(name)).map_err(|source| IdentityError::Io {
                path: pending.clone(),
                source,
            })?;
        } else {
            remove_if_present(&pending)?;
        }
    }
    if committed {
        sync_dir(dir);
        remove_if_present(&dir.join(COMMIT_MARKER))?;
    }
    Ok(())
}

fn next(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{NEXT_SUFFIX}"))
}

fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn remove_if_present(path: &Path) -> Result<(), IdentityError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `contents` to a new file at `path` (created with `mode`) and syncs it.
fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    // A leftover from a crash would make `create_new` fail.
    remove_if_present(path)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Makes renames in `dir` durable; best effort, as not every filesystem allows it.
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Writes `contents` to `path` through a temporary file in the same directory (created
/// with `mode`), synced before the rename, so readers see the old or the new contents.
pub(crate) fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), IdentityError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    write_synced(&temporary, contents, mode)?;
    std::fs::rename(&temporary, path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn identity() -> AgentIdentity {
        let generated = generate_key_and_request().unwrap();
        AgentIdentity {
            cluster_id: "edge-1".to_owned(),
            key_pem: generated.key_pem,
            cert_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".to_owned(),
            ca_pem: "ca".to_owned(),
        }
    }

    #[test]
    fn the_request_is_pem_and_the_key_stays_out_of_debug_output() {
        let generated = generate_key_and_request().unwrap();
        assert!(
            generated
                .csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert!(generated.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{generated:?}").contains("PRIVATE KEY"));
        assert!(!format!("{:?}", identity()).contains("PRIVATE KEY"));
    }

    #[test]
    fn an_identity_round_trips_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), None);
        let saved = identity();
        saved.save(dir.path()).unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), Some(saved));
        let mode = std::fs::metadata(identity_dir(dir.path()).join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_replacement_interrupted_before_its_commit_keeps_the_old_identity() {
        let dir = tempfile::tempdir().unwrap();
        let old = identity();
        old.save(dir.path()).unwrap();
        // A crash while the new files were being written: no commit marker.
        let identity_dir = identity_dir(dir.path());
        std::fs::write(next(&identity_dir, KEY_FILE), "new key").unwrap();
        std::fs::write(next(&identity_dir, CERT_FILE), "new certificate").unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), Some(old));
        assert!(
            !next(&identity_dir, KEY_FILE).exists(),
            "the leftovers are gone"
        );
    }

    #[test]
    fn a_replacement_interrupted_after_its_commit_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        identity().save(dir.path()).unwrap();
        let new = AgentIdentity {
            cert_pem: "renewed".into(),
            ca_pem: "new bundle".into(),
            ..identity()
        };
        // A crash after the marker, with the key already renamed into place.
        let identity_dir = identity_dir(dir.path());
        std::fs::write(identity_dir.join(KEY_FILE), &new.key_pem).unwrap();
        std::fs::write(next(&identity_dir, CERT_FILE), &new.cert_pem).unwrap();
        std::fs::write(next(&identity_dir, CA_FILE), &new.ca_pem).unwrap();
        std::fs::write(next(&identity_dir, CLUSTER_FILE), &new.cluster_id).unwrap();
        std::fs::write(identity_dir.join(COMMIT_MARKER), "").unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), Some(new));
        assert!(!identity_dir.join(COMMIT_MARKER).exists());
    }

    #[test]
    fn writability_is_checked_without_leaving_anything_behind() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(identity_dir(dir.path()))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A file where the identity directory must go cannot be written into.
        let blocked = tempfile::tempdir().unwrap();
        std::fs::write(identity_dir(blocked.path()), "in the way").unwrap();
        assert!(matches!(
            check_writable(blocked.path()),
            Err(IdentityError::Io { .. })
        ));
    }

    #[test]
    fn the_validity_is_read_from_the_certificate() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        params.not_before = start.into();
        params.not_after = (start + Duration::from_secs(900)).into();
        let cert = params.self_signed(&key).unwrap();
        let with_cert = AgentIdentity {
            cert_pem: cert.pem(),
            ..identity()
        };
        let validity = with_cert.validity().unwrap();
        assert_eq!(validity.not_before, start);
        assert_eq!(
            validity.renew_at(2.0 / 3.0),
            start + Duration::from_secs(600)
        );
        assert_eq!(
            identity().validity(),
            None,
            "a certificate that cannot be read"
        );
    }

    #[test]
    fn a_discarded_or_half_written_identity_is_none() {
        let dir = tempfile::tempdir().unwrap();
        identity().save(dir.path()).unwrap();
        AgentIdentity::discard(dir.path()).unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), None);
        // Key and certificate without the marker: a save that crashed midway.
        identity().save(dir.path()).unwrap();
        std::fs::remove_file(identity_dir(dir.path()).join(CLUSTER_FILE)).unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), None);
        AgentIdentity::discard(dir.path()).unwrap();
    }
}
