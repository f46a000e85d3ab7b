//! Reading the files pipelines name (`valueFrom.file` today; log file inputs and raw
//! scrape configurations later), under the [`PathPolicy`] validation already checked
//! the path against.
//!
//! Validation sees the path as written; the file system may resolve it elsewhere,
//! through a symlink that was there all along or one created later. So every read
//! opens the file, asks the kernel which file it actually opened (the
//! `/proc/self/fd/N` link, so a symlink swapped in between a check and the open cannot
//! fool it), and checks that resolved path against the policy again, together with
//! the resolved forms of the denied paths (a data directory reached through a symlink
//! is still the data directory). Only regular files are read, and at most
//! [`MAX_FILE_BYTES`] of them.

use std::io::Read;
use std::path::{Path, PathBuf};

use kaas_pipeline::paths::PathPolicy;

/// Directory under the data directory that holds the agent's identity (written by
/// `control::identity`, read by exporters whose pipeline sets `tls.agentIdentity`).
pub const IDENTITY_DIR: &str = "identity";
/// The agent's private key in [`IDENTITY_DIR`].
pub const IDENTITY_KEY_FILE: &str = "tls.key";
/// The agent's client certificate (from the observer's CA) in [`IDENTITY_DIR`].
pub const IDENTITY_CERT_FILE: &str = "tls.crt";

/// The largest file a pipeline may make the agent read: a bundle of every public CA is
/// about 250 KiB, a token or key a few KiB. Bounds the memory a wrong path (a log
/// file, a disk image) can take.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a file was not read; never holds the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path, as written or as resolved, is not allowed.
    #[error("refused: {0}")]
    Refused(String),
    /// The file cannot be opened or read.
    #[error("{0}")]
    Io(std::io::ErrorKind),
    /// Not a regular file (a directory, device, FIFO or socket).
    #[error("not a regular file")]
    NotAFile,
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
}

/// Reads files under a path policy.
#[derive(Clone, Debug)]
pub struct FileAccess {
    policy: PathPolicy,
}

impl Default for FileAccess {
    /// The policy validation assumes outside the agent: the default data directory.
    fn default() -> Self {
        Self::new(PathPolicy::agent_default())
    }
}

impl FileAccess {
    /// Reads under `policy`.
    pub fn new(policy: PathPolicy) -> Self {
        Self { policy }
    }

    /// Reads `path` as text after checking it as written and as the kernel resolved it.
    pub fn read_to_string(&self, path: &str) -> Result<String, FileError> {
        self.policy.check(path).map_err(FileError::Refused)?;
        // Opening a FIFO would block until someone writes to it: look first.
        if !std::fs::metadata(path)
            .map_err(|e| FileError::Io(e.kind()))?
            .is_file()
        {
            return Err(FileError::NotAFile);
        }
        let file = std::fs::File::open(path).map_err(|e| FileError::Io(e.kind()))?;
        let resolved = opened_path(&file, Path::new(path))?;
        self.check_resolved(&resolved)?;
        let metadata = file.metadata().map_err(|e| FileError::Io(e.kind()))?;
        if !metadata.is_file() {
            return Err(FileError::NotAFile);
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FileError::Io(e.kind()))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(FileError::TooLarge);
        }
        String::from_utf8(bytes).map_err(|_| FileError::NotText)
    }

    /// Checks a resolved path against the policy, and against the denied paths and
    /// allowed roots as the file system resolves them.
    fn check_resolved(&self, resolved: &Path) -> Result<(), FileError> {
        self.policy
            .check_resolved(resolved)
            .map_err(FileError::Refused)?;
        let canonical = |path: &Path| std::fs::canonicalize(path).ok();
        for denied in self.policy.denied() {
            if let Some(real) = canonical(denied)
                && resolved.starts_with(&real)
            {
                return Err(FileError::Refused(format!(
                    "it resolves to \"{}\", under {} ({}), which no pipeline may read",
                    resolved.display(),
                    real.display(),
                    denied.display()
                )));
            }
        }
        let roots = self.policy.allowed_roots();
        if !roots
            .iter()
            .filter_map(|root| canonical(root))
            .any(|root| resolved.starts_with(root))
        {
            return Err(FileError::Refused(format!(
                "\"{}\" resolves outside the directories files may be read from",
                resolved.display()
            )));
        }
        Ok(())
    }
}

/// The path of the file `file` (opened from `path`) as the kernel resolved it.
#[cfg(target_os = "linux")]
fn opened_path(file: &std::fs::File, _path: &Path) -> Result<PathBuf, FileError> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| FileError::Io(e.kind()))
}

/// The path of the file opened from `path`, resolved again (elsewhere than Linux there
/// is no race-free way to ask).
#[cfg(not(target_os = "linux"))]
fn opened_path(_file: &std::fs::File, path: &Path) -> Result<PathBuf, FileError> {
    std::fs::canonicalize(path).map_err(|e| FileError::Io(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose data directory and allowed root live in a temporary directory.
    fn setup() -> (tempfile::TempDir, FileAccess, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let allowed = root.join("allowed");
        let data = root.join("data");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(data.join("identity")).unwrap();
        std::fs::write(data.join("identity/tls.key"), "IDENTITY KEY").unwrap();
        std::fs::write(allowed.join("token"), "edge-token\n").unwrap();
        let mut policy = PathPolicy::new([allowed.clone()]);
        policy.deny(&data, "the agent's data directory");
        (dir, FileAccess::new(policy), allowed, data)
    }

    fn text(path: &Path) -> String {
        path.display().to_string()
    }

    #[test]
    fn files_under_the_root_are_read() {
        let (_dir, files, allowed, _) = setup();
        assert_eq!(
            files.read_to_string(&text(&allowed.join("token"))).unwrap(),
            "edge-token\n"
        );
    }

    /// Issue 13, finding 2: a symlink (here created after validation could have passed
    /// the path) that leads into the data directory, to the identity key, is refused at
    /// read time; so is one leading out of the allowed root.
    #[test]
    fn a_symlink_cannot_lead_out_of_the_rules() {
        let (_dir, files, allowed, data) = setup();
        let link = allowed.join("sub/innocent");
        assert!(files.policy.check(&text(&link)).is_ok(), "lexically fine");
        std::os::unix::fs::symlink(data.join("identity/tls.key"), &link).unwrap();
        let error = files.read_to_string(&text(&link)).unwrap_err();
        assert!(
            matches!(&error, FileError::Refused(reason) if reason.contains("which no pipeline may read")),
            "{error}"
        );
        let outside = allowed.join("outside");
        std::os::unix::fs::symlink("/etc/hostname", &outside).unwrap();
        let error = files.read_to_string(&text(&outside)).unwrap_err();
        assert!(
            matches!(&error, FileError::Refused(reason) if reason.contains("outside the directories")),
            "{error}"
        );
        // A directory symlinked to the data directory.
        let dir_link = allowed.join("state");
        std::os::unix::fs::symlink(&data, &dir_link).unwrap();
        assert!(matches!(
            files.read_to_string(&text(&dir_link.join("identity/tls.key"))),
            Err(FileError::Refused(_))
        ));
    }

    /// Issue 13, finding 2: the service-account token and the identity key are refused
    /// before anything is opened.
    #[test]
    fn credential_paths_are_refused_as_written() {
        let files = FileAccess::default();
        for path in [
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/lib/kaas-agent/identity/tls.key",
            "/proc/self/environ",
        ] {
            assert!(
                matches!(files.read_to_string(path), Err(FileError::Refused(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let (_dir, files, allowed, _) = setup();
        assert!(matches!(
            files.read_to_string(&text(&allowed.join("sub"))),
            Err(FileError::NotAFile)
        ));
        let big = allowed.join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            files.read_to_string(&text(&big)),
            Err(FileError::TooLarge)
        ));
    }
}
