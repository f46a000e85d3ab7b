//! The agent's identity on disk: its private key, the client certificate the observer
//! signed, the CA that signed it, and the cluster id, under `<data dir>/identity/`.
//!
//! | file | contents | mode |
//! |---|---|---|
//! | `tls.key` | PKCS#8 PEM private key (ECDSA P-256), generated here, never sent | 0600 |
//! | `tls.crt` | the client certificate from `JoinResponse` | 0644 |
//! | `ca.crt` | the CA bundle from `JoinResponse`, trusted for the observer | 0644 |
//! | `cluster` | the cluster id from `JoinResponse` | 0644 |
//!
//! Each file is written to a temporary name, synced and renamed. `cluster` is written
//! last and removed first: it marks a complete identity, so a crash while saving or
//! discarding leaves either the old complete identity or none, never a key that does
//! not match its certificate.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// Directory under the data directory that holds the identity.
pub const IDENTITY_DIR: &str = "identity";
const KEY_FILE: &str = "tls.key";
const CERT_FILE: &str = "tls.crt";
const CA_FILE: &str = "ca.crt";
const CLUSTER_FILE: &str = "cluster";
/// Common name in the agent's certificate request. The observer ignores it and writes
/// the cluster identity itself; it only makes the request readable in a debugger.
const CSR_COMMON_NAME: &str = "kaas-cluster-agent";

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
    /// The request sent in `JoinRequest.csr_pem`.
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
    /// The cluster this agent speaks for.
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

/// The identity directory of a data directory.
pub fn identity_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_DIR)
}

impl AgentIdentity {
    /// Loads the identity saved under `data_dir`, or `None` when there is none (never
    /// joined, or discarded).
    pub fn load(data_dir: &Path) -> Result<Option<Self>, IdentityError> {
        let dir = identity_dir(data_dir);
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

    /// Saves the identity under `data_dir`, replacing any previous one.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| IdentityError::Io {
            path: dir.clone(),
            source,
        })?;
        // Without the marker the old identity is gone for good; do that first so a
        // crash midway never pairs the new key with the old certificate.
        remove_if_present(&dir.join(CLUSTER_FILE))?;
        write_atomically(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomically(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(CLUSTER_FILE), self.cluster_id.as_bytes(), 0o644)
    }

    /// Removes the identity under `data_dir`; the agent must join again.
    pub fn discard(data_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(data_dir);
        for name in [CLUSTER_FILE, CERT_FILE, KEY_FILE, CA_FILE] {
            remove_if_present(&dir.join(name))?;
        }
        Ok(())
    }
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

/// Writes `contents` to `path` through a temporary file in the same directory (created
/// with `mode`), synced before the rename, so readers see the old or the new contents.
pub(crate) fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover from a crash would make `create_new` fail.
    remove_if_present(&temporary)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        // Make the rename itself durable; best effort, as not every filesystem allows it.
        let _ = dir.sync_all();
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
