//! The checkpoint file: the committed read position of every tracked file, written
//! atomically (temporary file, fsync, rename, fsync of the directory), so a crash leaves
//! either the previous or the new checkpoint, never a mix.
//!
//! ## Format (version 1, text)
//! ```text
//! kaas-logfiles checkpoint v1
//! <dev> <ino> <fp-len> <fp-hash hex> <offset> <stdout> <stderr> <plain> <path>
//! ...
//! end <entries> <crc32 hex>
//! ```
//! `offset` is where reading resumes; `stdout`/`stderr`/`plain` are per-stream resume
//! offsets at or beyond it: a line of that stream that starts before its resume offset
//! was already delivered and is skipped when re-read (so a stream whose multiline record
//! is still open does not duplicate the other stream's lines). `path` is percent-encoded
//! (bytes outside `!`..`~` and `%`) and tells where to look for a file that was renamed
//! while the agent was down. The CRC-32 covers every byte before the `end` line.
//! Anything else (a torn file, garbage, another version) is [`CheckpointError::Corrupt`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::discover::FileId;
use crate::error::CheckpointError;
use crate::fingerprint::Fingerprint;

const HEADER: &str = "kaas-logfiles checkpoint v1\n";

/// One file's committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheckpoint {
    /// Device and inode when it was committed.
    pub id: FileId,
    /// Its fingerprint when it was committed.
    pub fingerprint: Fingerprint,
    /// Where reading resumes.
    pub offset: u64,
    /// Per-stream resume offsets, indexed by [`crate::Stream::index`].
    pub resume: [u64; 3],
    /// The path it was discovered at (`log.file.path`): after a restart it says what
    /// kind of file it is, and a file renamed meanwhile is looked for in its directory.
    pub path: PathBuf,
}

/// Every tracked file's committed position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The files, in no particular order.
    pub files: Vec<FileCheckpoint>,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; `Ok(None)` when there is none (first start).
    pub fn load(path: &Path) -> Result<Option<Self>, CheckpointError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::decode(&bytes)
            .map(Some)
            .map_err(|reason| CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason,
            })
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn store(&self, path: &Path) -> Result<(), CheckpointError> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(self.encode().as_bytes())
            .map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io(path))?;
        let directory = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(io(directory))
    }

    /// The file's bytes.
    pub fn encode(&self) -> String {
        let mut text = String::from(HEADER);
        for file in &self.files {
            let hash: String = file
                .fingerprint
                .hash
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let [stdout, stderr, plain] = file.resume;
            let _ = writeln!(
                text,
                "{} {} {} {hash} {} {stdout} {stderr} {plain} {}",
                file.id.dev,
                file.id.ino,
                file.fingerprint.len,
                file.offset,
                encode_path(&file.path)
            );
        }
        let crc = crc32fast::hash(text.as_bytes());
        let _ = writeln!(text, "end {} {crc:08x}", self.files.len());
        text
    }

    /// Parses the file's bytes; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        if !text.starts_with(HEADER) {
            return Err("missing the `kaas-logfiles checkpoint v1` header".into());
        }
        let body_end = text
            .rfind("end ")
            .ok_or("no `end` line: the file is torn")?;
        let (body, trailer) = text.split_at(body_end);
        let trailer = trailer.strip_suffix('\n').ok_or("the `end` line is torn")?;
        // The trailer must be exactly what `encode` writes (no `+`, no upper-case hex), so
        // that every changed byte is noticed.
        let mut words = trailer.split(' ').skip(1);
        let count: usize = words
            .next()
            .and_then(|w| w.parse().ok().filter(|n: &usize| n.to_string() == w))
            .ok_or("bad entry count in the `end` line")?;
        let crc = words.next().ok_or("no checksum in the `end` line")?;
        if words.next().is_some() || crc != format!("{:08x}", crc32fast::hash(body.as_bytes())) {
            return Err("checksum mismatch".into());
        }
        let files = body[HEADER.len()..]
            .lines()
            .enumerate()
            .map(|(index, line)| {
                decode_entry(line).ok_or_else(|| format!("line {}: malformed entry", index + 2))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if files.len() != count {
            return Err(format!(
                "{} entries where the `end` line says {count}",
                files.len()
            ));
        }
        Ok(Self { files })
    }
}

fn decode_entry(line: &str) -> Option<FileCheckpoint> {
    let words: Vec<&str> = line.split(' ').collect();
    let [dev, ino, fp_len, hash, offset, stdout, stderr, plain, path] = words.as_slice() else {
        return None;
    };
    let number = |word: &str| word.parse::<u64>().ok();
    let mut fingerprint = Fingerprint {
        len: fp_len.parse().ok()?,
        hash: [0; 16],
    };
    if hash.len() != 32 {
        return None;
    }
    for (i, byte) in fingerprint.hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hash.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(FileCheckpoint {
        id: FileId {
            dev: number(dev)?,
            ino: number(ino)?,
        },
        fingerprint,
        offset: number(offset)?,
        resume: [number(stdout)?, number(stderr)?, number(plain)?],
        path: decode_path(path)?,
    })
}

fn encode_path(path: &Path) -> String {
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn decode_path(text: &str) -> Option<PathBuf> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        if byte == b'%' {
            let hex = [input.next()?, input.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

/// Wraps an I/O error with the path it concerns.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            files: vec![
                FileCheckpoint {
                    id: FileId { dev: 2049, ino: 77 },
                    fingerprint: Fingerprint::of(b"2024-01-01T00:00:00Z stdout F a\n"),
                    offset: 1234,
                    resume: [1300, 1234, 1234],
                    path: PathBuf::from("/var/log/pods/ns_p_u/c/0.log"),
                },
                FileCheckpoint {
                    id: FileId { dev: 1, ino: 2 },
                    fingerprint: Fingerprint::of(b""),
                    offset: 0,
                    resume: [0; 3],
                    path: PathBuf::from("/var/log/with space/%odd\n.log"),
                },
            ],
        }
    }

    #[test]
    fn a_checkpoint_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        sample().store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(sample()));
        assert!(!dir.path().join("checkpoint.tmp").exists());
    }

    fn arbitrary_entry() -> impl Strategy<Value = FileCheckpoint> {
        let path = proptest::collection::vec(1u8..=255, 1..64)
            .prop_map(|bytes| PathBuf::from(OsString::from_vec(bytes)));
        (
            any::<(u64, u64, u64)>(),
            0u16..=1024,
            any::<[u8; 16]>(),
            any::<[u64; 3]>(),
            path,
        )
            .prop_map(
                |((dev, ino, offset), len, hash, resume, path)| FileCheckpoint {
                    id: FileId { dev, ino },
                    fingerprint: Fingerprint { len, hash },
                    offset,
                    resume,
                    path,
                },
            )
    }

    proptest! {
        #[test]
        fn any_checkpoint_round_trips(files in proptest::collection::vec(arbitrary_entry(), 0..8)) {
            let checkpoint = Checkpoint { files };
            prop_assert_eq!(Checkpoint::decode(checkpoint.encode().as_bytes()), Ok(checkpoint));
        }

        #[test]
        fn any_changed_byte_makes_it_corrupt(
            files in proptest::collection::vec(arbitrary_entry(), 1..4),
            position in any::<proptest::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            let mut bytes = Checkpoint { files }.encode().into_bytes();
            let position = position.index(bytes.len());
            prop_assume!(bytes[position] != replacement);
            bytes[position] = replacement;
            prop_assert!(Checkpoint::decode(&bytes).is_err());
        }
    }

    #[test]
    fn torn_and_garbage_files_are_corrupt_with_a_reason() {
        let good = sample().encode();
        let flipped = good.replacen("1234", "1235", 1);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good.as_bytes()[..good.len() / 2].to_vec(), "no `end` line"),
            (
                good.as_bytes()[..good.len() - 1].to_vec(),
                "`end` line is torn",
            ),
            (flipped.into_bytes(), "checksum mismatch"),
            (b"\x00\xff garbage".to_vec(), "not UTF-8"),
            (b"something else\nend 0 00000000\n".to_vec(), "header"),
            (Vec::new(), "header"),
        ];
        for (bytes, reason) in cases {
            let error = Checkpoint::decode(&bytes).unwrap_err();
            assert!(error.contains(reason), "{error} should mention {reason}");
        }
    }
}
