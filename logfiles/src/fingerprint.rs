//! A file's fingerprint: a hash of its first bytes, so that a file which reuses the inode
//! of a deleted one (common on ext4 and overlayfs) is not mistaken for it, and a file
//! rewritten after truncation is noticed even when it grew past the old position.

use std::fs::File;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// Bytes the fingerprint covers: the OpenTelemetry filelog receiver's default. A CRI or
/// Docker line starts with a nanosecond timestamp, so two files' first kilobytes differ
/// unless they are the same file; more would delay the fingerprint of small files.
pub const FINGERPRINT_BYTES: usize = 1024;

/// A hash of a file's first `len` bytes (`len` below [`FINGERPRINT_BYTES`] while the file
/// is shorter). Two fingerprints match when the shorter is a prefix of the longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u16,
    /// The first 16 bytes of their SHA-256.
    pub hash: [u8; 16],
}

impl Fingerprint {
    /// The fingerprint of `bytes` (at most [`FINGERPRINT_BYTES`] of them are used).
    pub fn of(bytes: &[u8]) -> Self {
        let bytes = &bytes[..bytes.len().min(FINGERPRINT_BYTES)];
        let digest = Sha256::digest(bytes);
        let mut hash = [0; 16];
        hash.copy_from_slice(&digest[..16]);
        Self {
            len: bytes.len() as u16,
            hash,
        }
    }

    /// Reads an open file's fingerprint.
    pub fn read(file: &File) -> std::io::Result<Self> {
        Ok(Self::of(&read_head(file, FINGERPRINT_BYTES)?))
    }

    /// Whether `file` still starts with the bytes this fingerprint covers. Returns the
    /// file's own (possibly longer) fingerprint when it does.
    pub fn matches(&self, file: &File) -> std::io::Result<Option<Self>> {
        let head = read_head(file, FINGERPRINT_BYTES)?;
        if head.len() < usize::from(self.len) || Self::of(&head[..usize::from(self.len)]) != *self {
            return Ok(None);
        }
        Ok(Some(Self::of(&head)))
    }
}

fn read_head(file: &File, max: usize) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0; max];
    let mut filled = 0;
    while filled < max {
        match file.read_at(&mut head[filled..], filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_grown_file_still_matches_and_a_rewritten_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first line\n").unwrap();
        let early = Fingerprint::read(&File::open(&path).unwrap()).unwrap();
        assert_eq!(early.len, 11);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&[b'x'; 2000]).unwrap();
        let grown = early.matches(&File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(usize::from(grown.len), FINGERPRINT_BYTES);
        std::fs::write(&path, b"other line\n").unwrap();
        assert_eq!(early.matches(&File::open(&path).unwrap()).unwrap(), None);
        std::fs::write(&path, b"first").unwrap();
        assert_eq!(
            early.matches(&File::open(&path).unwrap()).unwrap(),
            None,
            "shorter than the fingerprint"
        );
    }
}
