//! The last-known-good configuration on disk: the body of the last configuration the
//! observer sent that the agent applied and kept healthy through the health window.
//!
//! At startup it is loaded and applied before the observer is contacted, so the agent
//! ships data through observer outages and its own restarts; its hash goes into every
//! `AgentHello`, so an agent that is already current costs the observer nothing.
//!
//! # Format
//!
//! One file, `<data dir>/last-known-good.config`, mode 0600 (the body can hold inline
//! secret values):
//!
//! ```text
//! kaas-last-known-good v1 sha256=<64 hex digits>\n
//! <the ConfigUpdate body, byte for byte>
//! ```
//!
//! It is replaced atomically (temporary file, fsync, rename, fsync of the directory),
//! so a crash leaves the old or the new file. The header's hash is checked on load: a
//! file whose body does not match is reported as corrupt and ignored, never applied.

use std::path::{Path, PathBuf};

use kaas_pipeline::agent_config::config_hash;

use super::identity::{IdentityError, write_atomically};

/// File name under the data directory.
pub const LAST_KNOWN_GOOD_FILE: &str = "last-known-good.config";
const HEADER_PREFIX: &str = "kaas-last-known-good v1 sha256=";

/// A configuration body with its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastKnownGood {
    /// The body as the observer sent it.
    pub body: Vec<u8>,
    /// SHA-256 of `body`.
    pub hash: [u8; 32],
}

/// Why the last-known-good configuration could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LastKnownGoodError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] IdentityError),
    /// The header is missing or the body does not match its hash.
    #[error("{path} is corrupt ({reason}); ignoring it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where the file lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(LAST_KNOWN_GOOD_FILE)
}

impl LastKnownGood {
    /// The configuration `body`, with its hash computed.
    pub fn new(body: Vec<u8>) -> Self {
        let hash = config_hash(&body);
        Self { body, hash }
    }

    /// Loads the file, or `None` when there is none yet.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, LastKnownGoodError> {
        let path = path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LastKnownGoodError::Read { path, source }),
        };
        let corrupt = |reason: &str| LastKnownGoodError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no header line"))?;
        let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| corrupt("bad header"))?;
        let recorded = header
            .strip_prefix(HEADER_PREFIX)
            .ok_or_else(|| corrupt("bad header"))?;
        let body = bytes[newline + 1..].to_vec();
        let loaded = Self::new(body);
        if hex::encode(loaded.hash) != recorded {
            return Err(corrupt("the body does not match its hash"));
        }
        Ok(Some(loaded))
    }

    /// Replaces the file with this configuration.
    pub fn save(&self, data_dir: &Path) -> Result<(), LastKnownGoodError> {
        let mut contents = format!("{HEADER_PREFIX}{}\n", hex::encode(self.hash)).into_bytes();
        contents.extend_from_slice(&self.body);
        write_atomically(&path(data_dir), &contents, 0o600)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn absent_is_none_and_saved_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LastKnownGood::load(dir.path()).unwrap(), None);
        let first = LastKnownGood::new(br#"{"kind":"AgentConfig"}"#.to_vec());
        first.save(dir.path()).unwrap();
        assert_eq!(LastKnownGood::load(dir.path()).unwrap(), Some(first));
        let second = LastKnownGood::new(b"{}\n with a newline".to_vec());
        second.save(dir.path()).unwrap();
        assert_eq!(LastKnownGood::load(dir.path()).unwrap(), Some(second));
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_body_that_does_not_match_its_hash_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        LastKnownGood::new(b"{\"a\":1}".to_vec())
            .save(dir.path())
            .unwrap();
        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        let last = bytes.len() - 2;
        bytes[last] = b'2';
        std::fs::write(path(dir.path()), &bytes).unwrap();
        let error = LastKnownGood::load(dir.path()).unwrap_err();
        assert!(
            matches!(error, LastKnownGoodError::Corrupt { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        for contents in [
            &b""[..],
            b"kaas-last-known-good v1 sha256=ab",
            b"garbage\n{}",
        ] {
            std::fs::write(path(dir.path()), contents).unwrap();
            let error = LastKnownGood::load(dir.path()).unwrap_err();
            assert!(
                matches!(error, LastKnownGoodError::Corrupt { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn a_leftover_temporary_file_does_not_block_saving() {
        let dir = tempfile::tempdir().unwrap();
        let mut temporary = path(dir.path()).into_os_string();
        temporary.push(".tmp");
        std::fs::write(&temporary, b"half").unwrap();
        let saved = LastKnownGood::new(b"{}".to_vec());
        saved.save(dir.path()).unwrap();
        assert_eq!(LastKnownGood::load(dir.path()).unwrap(), Some(saved));
    }
}
