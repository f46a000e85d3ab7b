//! Secrets at rest: inline secret values are sealed with AES-256-GCM before they reach the store.
//!
//! [`SecretBox`] holds one 256-bit key, read from a file (`--secrets-key-file`, created
//! with mode 0600 if absent) or from base64 in the environment (`KAAS_SECRETS_KEY`).
//! Every [`SecretBox::seal`] draws a fresh random 96-bit nonce, so sealing the same value
//! twice gives different text. The sealed form is
//!
//! ```text
//! enc:v1:<standard base64 of nonce (12 bytes) || ciphertext || GCM tag (16 bytes)>
//! ```
//!
//! The `v1` names the algorithm and layout, so a later key rotation or algorithm can be
//! told apart. The key never appears in `Debug` output, and no error carries plaintext
//! or key material.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of a sealed value; the version names AES-256-GCM with a 96-bit random nonce.
pub const SEALED_PREFIX: &str = "enc:v1:";

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the GCM authentication tag appended to the ciphertext.
const TAG_LEN: usize = 16;

/// Why a key could not be loaded or a value not sealed or opened. No variant holds a
/// secret value or key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or created.
    #[error("cannot access the secrets key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key is neither 32 raw bytes nor base64 of 32 bytes.
    #[error("the secrets key must be 32 bytes (raw, or base64 encoded); found {found} bytes")]
    KeyLength {
        /// How many bytes were found after decoding.
        found: usize,
    },
    /// The key text is not valid base64.
    #[error("the secrets key is not valid base64")]
    KeyEncoding,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The stored text is not a sealed value of a known version.
    #[error("not a sealed value: expected the prefix {SEALED_PREFIX:?} and base64 content")]
    Format,
    /// The value was sealed with another key, or it was changed after sealing.
    #[error("cannot open a sealed value: wrong secrets key, or the stored value was tampered with")]
    Decrypt,
}

/// Seals and opens secret strings with one AES-256-GCM key. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    key: Arc<LessSafeKey>,
    random: SystemRandom,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("algorithm", &"AES-256-GCM")
            .field("key", &"***")
            .finish()
    }
}

impl SecretBox {
    /// A box using these 32 key bytes.
    pub fn from_key_bytes(key: &[u8]) -> Result<Self, SecretError> {
        if key.len() != KEY_LEN {
            return Err(SecretError::KeyLength { found: key.len() });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| SecretError::KeyLength { found: key.len() })?;
        Ok(Self {
            key: Arc::new(LessSafeKey::new(unbound)),
            random: SystemRandom::new(),
        })
    }

    /// A box whose key is base64 (standard or URL-safe, padding optional) of 32 bytes,
    /// as given in `KAAS_SECRETS_KEY`.
    pub fn from_env_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = decode_base64_key(text.trim())?;
        Self::from_key_bytes(&bytes)
    }

    /// A box whose key is read from a file holding either the 32 raw bytes or their
    /// base64 text (`openssl rand -base64 32 > key`).
    pub fn from_key_file(path: &Path) -> Result<Self, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() == KEY_LEN {
            return Self::from_key_bytes(&bytes);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::KeyEncoding)?;
        Self::from_env_base64(text)
    }

    /// Reads the key file, or creates it with 32 random bytes and mode 0600 if it does
    /// not exist yet (the embedded default: `observer serve` with no flags just works).
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io_error = |source| SecretError::KeyFile {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            return Self::from_key_file(path);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SecretError::Random)?;
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: if another process created the file meanwhile, read theirs
        // instead of overwriting a key that may already have sealed values.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(&key).map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
                Self::from_key_bytes(&key)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_key_file(path)
            }
            Err(error) => Err(io_error(error)),
        }
    }

    /// A box with a fresh random key, for tests and throw-away stores.
    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SecretError::Random)?;
        Self::from_key_bytes(&key)
    }

    /// Encrypts `plaintext` under a fresh random nonce; returns `enc:v1:<base64>`.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce_bytes)
            .map_err(|_| SecretError::Random)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut in_out,
            )
            .map_err(|_| SecretError::Random)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Decrypts a value made by [`SecretBox::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::Format)?;
        let mut bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Format)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Format);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| SecretError::Decrypt)
    }

    /// Whether `text` looks like a sealed value (it may still fail to open).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }
}

fn decode_base64_key(text: &str) -> Result<Vec<u8>, SecretError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or(SecretError::KeyEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip() {
        let secrets = SecretBox::generate().unwrap();
        for plaintext in ["hunter2", "", "ünïcødé 🔑", &"x".repeat(10_000)] {
            let sealed = secrets.seal(plaintext).unwrap();
            assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
            assert!(plaintext.is_empty() || !sealed.contains(plaintext));
            assert_eq!(secrets.open(&sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn secrets_wrong_key_fails() {
        let sealed = SecretBox::generate().unwrap().seal("hunter2").unwrap();
        let other = SecretBox::generate().unwrap();
        let error = other.open(&sealed).unwrap_err();
        assert!(matches!(error, SecretError::Decrypt), "{error}");
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn secrets_tampered_ciphertext_fails() {
        let secrets = SecretBox::generate().unwrap();
        let sealed = secrets.seal("hunter2").unwrap();
        let mut bytes = STANDARD
            .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
            .unwrap();
        for position in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[position] ^= 0x01;
            let tampered = format!("{SEALED_PREFIX}{}", STANDARD.encode(&bytes));
            assert!(matches!(secrets.open(&tampered), Err(SecretError::Decrypt)));
            bytes[position] ^= 0x01;
        }
        for garbage in ["hunter2", "enc:v1:!!!", "enc:v1:AAAA", "enc:v2:AAAA"] {
            assert!(matches!(secrets.open(garbage), Err(SecretError::Format)));
        }
    }

    #[test]
    fn secrets_nonce_differs_each_time() {
        let secrets = SecretBox::generate().unwrap();
        let a = secrets.seal("same").unwrap();
        let b = secrets.seal("same").unwrap();
        assert_ne!(a, b);
        let nonce = |s: &str| {
            STANDARD
                .decode(s.strip_prefix(SEALED_PREFIX).unwrap())
                .unwrap()[..NONCE_LEN]
                .to_vec()
        };
        assert_ne!(nonce(&a), nonce(&b));
    }

    #[test]
    fn secrets_debug_hides_the_key() {
        let key = [7u8; KEY_LEN];
        let shown = format!("{:?}", SecretBox::from_key_bytes(&key).unwrap());
        assert!(shown.contains("***"), "{shown}");
        assert!(!shown.contains("7, 7"), "{shown}");
        assert!(!shown.contains(&STANDARD.encode(key)), "{shown}");
    }

    #[test]
    fn secrets_key_from_env_and_file() {
        let key = [42u8; KEY_LEN];
        let sealed = SecretBox::from_key_bytes(&key)
            .unwrap()
            .seal("hunter2")
            .unwrap();
        let from_env = SecretBox::from_env_base64(&format!(" {}\n", STANDARD.encode(key))).unwrap();
        assert_eq!(from_env.open(&sealed).unwrap(), "hunter2");

        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, key).unwrap();
        assert_eq!(
            SecretBox::from_key_file(&raw)
                .unwrap()
                .open(&sealed)
                .unwrap(),
            "hunter2"
        );
        let text = dir.path().join("text.key");
        std::fs::write(&text, format!("{}\n", STANDARD.encode(key))).unwrap();
        assert_eq!(
            SecretBox::from_key_file(&text)
                .unwrap()
                .open(&sealed)
                .unwrap(),
            "hunter2"
        );

        assert!(matches!(
            SecretBox::from_env_base64(&STANDARD.encode([1u8; 16])),
            Err(SecretError::KeyLength { found: 16 })
        ));
        assert!(matches!(
            SecretBox::from_env_base64("not base64 at all!"),
            Err(SecretError::KeyEncoding)
        ));
        assert!(matches!(
            SecretBox::from_key_file(&dir.path().join("missing")),
            Err(SecretError::KeyFile { .. })
        ));
    }

    #[test]
    fn secrets_load_or_create_makes_a_private_key_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("secrets.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let sealed = first.seal("hunter2").unwrap();
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the key was replaced");
        assert_eq!(second.open(&sealed).unwrap(), "hunter2");
    }
}
