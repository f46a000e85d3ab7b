//! Secrets at rest: inline secret values are sealed with AES-256-GCM before they reach
//! the store, each bound to the object and field it belongs to.
//!
//! # Format
//! [`SecretBox::seal`] draws a fresh random 96-bit nonce for every value, so sealing the
//! same value twice gives different text, and writes
//!
//! ```text
//! enc:v2:<key id>:<standard base64 of nonce (12 bytes) || ciphertext || GCM tag (16 bytes)>
//! ```
//!
//! * The **key id** (16 hex digits of a SHA-256 of the key, [`SecretBox::key_id`]) says
//!   which key sealed the value, so a value is opened with the right key while keys are
//!   being switched, and one the observer has no key for is reported as such.
//! * The **owner** ([`SecretOwner`]: tenant, kind, name and field path) is the AEAD's
//!   associated data. It is not stored with the value but supplied by whoever opens it,
//!   so a sealed value copied to another row or field (another tenant's pipeline, the
//!   password field of a pipeline whose header the attacker controls) fails to open
//!   instead of handing its plaintext to the wrong object.
//!
//! Values sealed before key ids existed read `enc:v1:<base64>` (no key id, no associated
//! data); they still open, with whichever configured key fits, and
//! [`SecretBox::needs_reseal`] marks them for `observer secrets rekey`.
//!
//! # Keys
//! A [`SecretBox`] seals with one key, read from a file (`--secrets-key-file`, created
//! with mode 0600 if absent) or from base64 in the environment (`KAAS_SECRETS_KEY`), and
//! opens with that key and any previous ones it was given
//! ([`SecretBox::with_previous_keys`], `--previous-secrets-key-file`). Switching keys:
//! every replica starts with the new key and the old one as previous, the rekey
//! re-seals every stored value under the new key, then the old key is dropped. No key
//! appears in `Debug` output, and no error carries plaintext or key material.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Prefix of every sealed value, whatever its version.
const ANY_SEALED_PREFIX: &str = "enc:";

/// Prefix of values sealed now: AES-256-GCM, key id, owner as associated data.
pub const SEALED_PREFIX: &str = "enc:v2:";

/// Prefix of values sealed before key ids existed: AES-256-GCM without associated data.
pub const LEGACY_SEALED_PREFIX: &str = "enc:v1:";

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the GCM authentication tag appended to the ciphertext.
const TAG_LEN: usize = 16;

/// Bytes of the key's SHA-256 shown as its id: 64 bits tell a handful of keys apart and
/// say nothing about the key.
const KEY_ID_BYTES: usize = 8;

/// Domain separation of the key id's hash, so the id is no hash anything else uses.
const KEY_ID_CONTEXT: &[u8] = b"kaas-observer secrets key id\0";

/// Domain separation of the associated data, naming its layout.
const AAD_CONTEXT: &[u8] = b"kaas-observer sealed secret v2\0";

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
    #[error(
        "not a sealed value: expected {SEALED_PREFIX:?} or {LEGACY_SEALED_PREFIX:?} and base64 \
         content"
    )]
    Format,
    /// The value was sealed with a key this observer was not given.
    #[error(
        "sealed with key {key_id}, which this observer does not have: start it with that key \
         as --secrets-key-file or --previous-secrets-key-file"
    )]
    UnknownKey {
        /// The id in the sealed value.
        key_id: String,
    },
    /// The value was sealed with another key or for another object, or it was changed
    /// after sealing.
    #[error(
        "cannot open a sealed value: wrong secrets key, a value sealed for another object or \
         field, or a stored value that was tampered with"
    )]
    Decrypt,
}

/// The object and field a secret value belongs to: the associated data it is sealed
/// with, so it opens only there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretOwner<'a> {
    /// The owning tenant.
    pub tenant: &'a str,
    /// The kind of object, e.g. `pipeline`.
    pub kind: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The field path inside it, e.g. `spec.output.prometheusRemoteWrite.headers[0].value`.
    pub field: &'a str,
}

impl SecretOwner<'_> {
    /// The associated data: a context string, then each part length-prefixed, so no two
    /// owners give the same bytes.
    fn associated_data(&self) -> Vec<u8> {
        let parts = [self.tenant, self.kind, self.name, self.field];
        let mut aad = Vec::with_capacity(
            AAD_CONTEXT.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>(),
        );
        aad.extend_from_slice(AAD_CONTEXT);
        for part in parts {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// One AES-256-GCM key and its id.
struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() != KEY_LEN {
            return Err(SecretError::KeyLength { found: bytes.len() });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| SecretError::KeyLength { found: bytes.len() })?;
        let mut hash = Sha256::new();
        hash.update(KEY_ID_CONTEXT);
        hash.update(bytes);
        Ok(Self {
            id: hex::encode(&hash.finalize()[..KEY_ID_BYTES]),
            key: LessSafeKey::new(unbound),
        })
    }

    fn open(&self, nonce: [u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Option<String> {
        let mut bytes = sealed.to_vec();
        let plaintext = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut bytes,
            )
            .ok()?;
        String::from_utf8(plaintext.to_vec()).ok()
    }
}

/// Seals with one AES-256-GCM key, opens with it and any previous keys. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    current: Arc<Key>,
    previous: Vec<Arc<Key>>,
    random: SystemRandom,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox")
            .field("algorithm", &"AES-256-GCM")
            .field("key_id", &self.current.id)
            .field(
                "previous_key_ids",
                &self
                    .previous
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("key", &"***")
            .finish()
    }
}

/// A sealed value taken apart.
enum Sealed<'a> {
    /// `enc:v2:<id>:…`
    Current { key_id: &'a str, bytes: Vec<u8> },
    /// `enc:v1:…`
    Legacy { bytes: Vec<u8> },
}

impl<'a> Sealed<'a> {
    fn parse(text: &'a str) -> Result<Self, SecretError> {
        let decode = |encoded: &str| -> Result<Vec<u8>, SecretError> {
            let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Format)?;
            if bytes.len() < NONCE_LEN + TAG_LEN {
                return Err(SecretError::Format);
            }
            Ok(bytes)
        };
        if let Some(rest) = text.strip_prefix(SEALED_PREFIX) {
            let (key_id, encoded) = rest.split_once(':').ok_or(SecretError::Format)?;
            if key_id.is_empty() || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SecretError::Format);
            }
            return Ok(Self::Current {
                key_id,
                bytes: decode(encoded)?,
            });
        }
        if let Some(encoded) = text.strip_prefix(LEGACY_SEALED_PREFIX) {
            return Ok(Self::Legacy {
                bytes: decode(encoded)?,
            });
        }
        Err(SecretError::Format)
    }
}

/// The nonce and the rest of a sealed value's bytes.
fn split_nonce(bytes: &[u8]) -> ([u8; NONCE_LEN], &[u8]) {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    (nonce, &bytes[NONCE_LEN..])
}

impl SecretBox {
    /// A box using these 32 key bytes.
    pub fn from_key_bytes(key: &[u8]) -> Result<Self, SecretError> {
        Ok(Self {
            current: Arc::new(Key::from_bytes(key)?),
            previous: Vec::new(),
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

    /// This box, also opening values sealed with the current keys of `previous` (the
    /// keys being switched away from). It still seals with its own key only.
    pub fn with_previous_keys(mut self, previous: impl IntoIterator<Item = SecretBox>) -> Self {
        for other in previous {
            for key in std::iter::once(other.current).chain(other.previous) {
                let known =
                    key.id == self.current.id || self.previous.iter().any(|k| k.id == key.id);
                if !known {
                    self.previous.push(key);
                }
            }
        }
        self
    }

    /// The id of the key new values are sealed with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` for `owner` under a fresh random nonce; returns
    /// `enc:v2:<key id>:<base64>`.
    pub fn seal(&self, plaintext: &str, owner: &SecretOwner<'_>) -> Result<String, SecretError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce_bytes)
            .map_err(|_| SecretError::Random)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(owner.associated_data()),
                &mut in_out,
            )
            .map_err(|_| SecretError::Random)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + in_out.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&in_out);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            self.current.id,
            STANDARD.encode(sealed)
        ))
    }

    /// Decrypts a value sealed for `owner`: a current one with the key its id names, a
    /// legacy (`enc:v1:`) one with whichever configured key fits.
    pub fn open(&self, sealed: &str, owner: &SecretOwner<'_>) -> Result<String, SecretError> {
        match Sealed::parse(sealed)? {
            Sealed::Current { key_id, bytes } => {
                let key = self.key(key_id).ok_or_else(|| SecretError::UnknownKey {
                    key_id: key_id.to_owned(),
                })?;
                let (nonce, rest) = split_nonce(&bytes);
                key.open(nonce, &owner.associated_data(), rest)
                    .ok_or(SecretError::Decrypt)
            }
            Sealed::Legacy { bytes } => {
                let (nonce, rest) = split_nonce(&bytes);
                self.keys()
                    .find_map(|key| key.open(nonce, &[], rest))
                    .ok_or(SecretError::Decrypt)
            }
        }
    }

    /// Whether a stored value should be sealed again: it is a legacy value, or sealed
    /// with a key other than the current one. Text that is not a sealed value is left
    /// for [`SecretBox::open`] to refuse.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        match Sealed::parse(sealed) {
            Ok(Sealed::Current { key_id, .. }) => key_id != self.current.id,
            Ok(Sealed::Legacy { .. }) => true,
            Err(_) => false,
        }
    }

    /// Whether `text` looks like a sealed value of any version (it may still fail to
    /// open).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(ANY_SEALED_PREFIX)
    }

    fn keys(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(self.current.as_ref()).chain(self.previous.iter().map(Arc::as_ref))
    }

    fn key(&self, id: &str) -> Option<&Key> {
        self.keys().find(|key| key.id == id)
    }
}

fn decode_base64_key(text: &str) -> Result<Vec<u8>, SecretError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or(SecretError::KeyEncoding)
}

/// Seals `plaintext` exactly as the observer did before key ids and owners existed
/// (`enc:v1:`, no associated data): the fixture of the migration tests.
#[cfg(test)]
pub(crate) fn seal_legacy_v1(key: &[u8; KEY_LEN], plaintext: &str) -> String {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"));
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("random");
    let mut in_out = plaintext.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut in_out,
    )
    .expect("sealed");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&in_out);
    format!("{LEGACY_SEALED_PREFIX}{}", STANDARD.encode(sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: SecretOwner<'static> = SecretOwner {
        tenant: "shop",
        kind: "pipeline",
        name: "metrics",
        field: "spec.output.prometheusRemoteWrite.authentication.basic.password.value",
    };

    fn body(sealed: &str) -> Vec<u8> {
        let rest = sealed.strip_prefix(SEALED_PREFIX).unwrap();
        STANDARD.decode(rest.split_once(':').unwrap().1).unwrap()
    }

    #[test]
    fn secrets_round_trip_with_the_key_id() {
        let secrets = SecretBox::generate().unwrap();
        assert_eq!(secrets.key_id().len(), 2 * KEY_ID_BYTES);
        for plaintext in ["hunter2", "", "ünïcødé 🔑", &"x".repeat(10_000)] {
            let sealed = secrets.seal(plaintext, &OWNER).unwrap();
            assert!(
                sealed.starts_with(&format!("{SEALED_PREFIX}{}:", secrets.key_id())),
                "{sealed}"
            );
            assert!(plaintext.is_empty() || !sealed.contains(plaintext));
            assert_eq!(secrets.open(&sealed, &OWNER).unwrap(), plaintext);
            assert!(!secrets.needs_reseal(&sealed));
        }
    }

    #[test]
    fn secrets_key_ids_are_stable_and_differ_between_keys() {
        let a = SecretBox::from_key_bytes(&[1u8; KEY_LEN]).unwrap();
        let again = SecretBox::from_key_bytes(&[1u8; KEY_LEN]).unwrap();
        let b = SecretBox::from_key_bytes(&[2u8; KEY_LEN]).unwrap();
        assert_eq!(a.key_id(), again.key_id());
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn secrets_of_an_unknown_key_name_it() {
        let old = SecretBox::generate().unwrap();
        let sealed = old.seal("hunter2", &OWNER).unwrap();
        let other = SecretBox::generate().unwrap();
        let error = other.open(&sealed, &OWNER).unwrap_err();
        assert!(
            matches!(&error, SecretError::UnknownKey { key_id } if key_id == old.key_id()),
            "{error}"
        );
        assert!(error.to_string().contains("--previous-secrets-key-file"));
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn secrets_open_with_previous_keys_and_are_marked_for_resealing() {
        let old = SecretBox::generate().unwrap();
        let sealed = old.seal("hunter2", &OWNER).unwrap();
        let new = SecretBox::generate()
            .unwrap()
            .with_previous_keys([old.clone(), old.clone()]);
        assert_eq!(new.open(&sealed, &OWNER).unwrap(), "hunter2");
        assert!(new.needs_reseal(&sealed));
        let resealed = new.seal("hunter2", &OWNER).unwrap();
        assert!(!new.needs_reseal(&resealed));
        assert!(
            matches!(
                old.open(&resealed, &OWNER),
                Err(SecretError::UnknownKey { .. })
            ),
            "the old key cannot read what the new one sealed"
        );
        let shown = format!("{new:?}");
        assert_eq!(shown.matches(old.key_id()).count(), 1, "{shown}");
    }

    /// A sealed value moved to another object or field does not open there: the owner
    /// is the associated data.
    #[test]
    fn secrets_sealed_for_one_owner_do_not_open_for_another() {
        let secrets = SecretBox::generate().unwrap();
        let sealed = secrets.seal("hunter2", &OWNER).unwrap();
        let others = [
            SecretOwner {
                tenant: "bank",
                ..OWNER
            },
            SecretOwner {
                kind: "probe",
                ..OWNER
            },
            SecretOwner {
                name: "other",
                ..OWNER
            },
            SecretOwner {
                field: "spec.output.prometheusRemoteWrite.headers[0].value",
                ..OWNER
            },
            // Parts that only concatenate alike are told apart.
            SecretOwner {
                tenant: "sho",
                kind: "ppipeline",
                ..OWNER
            },
        ];
        for other in others {
            let error = secrets.open(&sealed, &other).unwrap_err();
            assert!(matches!(error, SecretError::Decrypt), "{other:?}: {error}");
        }
    }

    #[test]
    fn secrets_tampered_ciphertext_fails() {
        let secrets = SecretBox::generate().unwrap();
        let sealed = secrets.seal("hunter2", &OWNER).unwrap();
        let mut bytes = body(&sealed);
        let prefix = format!("{SEALED_PREFIX}{}:", secrets.key_id());
        for position in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[position] ^= 0x01;
            let tampered = format!("{prefix}{}", STANDARD.encode(&bytes));
            assert!(matches!(
                secrets.open(&tampered, &OWNER),
                Err(SecretError::Decrypt)
            ));
            bytes[position] ^= 0x01;
        }
        for garbage in [
            "hunter2",
            "enc:v1:!!!",
            "enc:v1:AAAA",
            "enc:v2:AAAA",
            "enc:v2:zz:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "enc:v2::AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "enc:v3:AAAA",
        ] {
            assert!(
                matches!(secrets.open(garbage, &OWNER), Err(SecretError::Format)),
                "{garbage}"
            );
            assert!(!secrets.needs_reseal(garbage), "{garbage}");
        }
    }

    /// Values sealed the old way (`enc:v1:`, no key id, no owner) still open, with the
    /// current key or a previous one, and are marked for resealing.
    #[test]
    fn secrets_sealed_the_old_way_still_open() {
        let key = [9u8; KEY_LEN];
        let legacy = seal_legacy_v1(&key, "hunter2");
        assert!(legacy.starts_with(LEGACY_SEALED_PREFIX), "{legacy}");
        assert!(SecretBox::is_sealed(&legacy));
        let same = SecretBox::from_key_bytes(&key).unwrap();
        assert_eq!(same.open(&legacy, &OWNER).unwrap(), "hunter2");
        assert!(same.needs_reseal(&legacy));
        let rotated = SecretBox::generate()
            .unwrap()
            .with_previous_keys([SecretBox::from_key_bytes(&key).unwrap()]);
        assert_eq!(rotated.open(&legacy, &OWNER).unwrap(), "hunter2");
        let stranger = SecretBox::generate().unwrap();
        assert!(matches!(
            stranger.open(&legacy, &OWNER),
            Err(SecretError::Decrypt)
        ));
    }

    #[test]
    fn secrets_nonce_differs_each_time() {
        let secrets = SecretBox::generate().unwrap();
        let a = secrets.seal("same", &OWNER).unwrap();
        let b = secrets.seal("same", &OWNER).unwrap();
        assert_ne!(a, b);
        assert_ne!(body(&a)[..NONCE_LEN], body(&b)[..NONCE_LEN]);
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
            .seal("hunter2", &OWNER)
            .unwrap();
        let from_env = SecretBox::from_env_base64(&format!(" {}\n", STANDARD.encode(key))).unwrap();
        assert_eq!(from_env.open(&sealed, &OWNER).unwrap(), "hunter2");

        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, key).unwrap();
        assert_eq!(
            SecretBox::from_key_file(&raw)
                .unwrap()
                .open(&sealed, &OWNER)
                .unwrap(),
            "hunter2"
        );
        let text = dir.path().join("text.key");
        std::fs::write(&text, format!("{}\n", STANDARD.encode(key))).unwrap();
        assert_eq!(
            SecretBox::from_key_file(&text)
                .unwrap()
                .open(&sealed, &OWNER)
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
        let sealed = first.seal("hunter2", &OWNER).unwrap();
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the key was replaced");
        assert_eq!(second.open(&sealed, &OWNER).unwrap(), "hunter2");
    }
}
