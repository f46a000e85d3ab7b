//! What the tailer reads and its bounds: [`TailConfig`] as the caller fills it, checked
//! by a pure [`TailConfig::validate`] (no I/O) into a [`ValidatedTailConfig`].

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use regex::bytes::Regex;

use crate::error::ConfigError;
use crate::glob::Glob;

/// Where to start in files that existed before the tailer's first start (files created
/// later are always read from the beginning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Read what is already there.
    Beginning,
    /// Skip what is already there, as Fluent Bit and the filelog receiver do by default.
    #[default]
    End,
}

/// What to do when the checkpoint file is corrupt (torn or garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptCheckpointPolicy {
    /// Move the file aside (`<name>.corrupt`) and read every file from the beginning:
    /// nothing is lost, lines since the last good commit and before are delivered again.
    #[default]
    RereadFromBeginning,
    /// Refuse to start ([`crate::TailError::Checkpoint`]), for an operator to decide.
    Refuse,
}

/// Records of one stream recombined across lines: a line matching `first_line` starts a
/// record, others continue it (stack traces).
#[derive(Debug, Clone)]
pub struct MultilineConfig {
    /// The pattern of a record's first line.
    pub first_line: String,
    /// A record waiting this long for its next line is flushed.
    pub flush_after: Duration,
    /// Lines one record may combine; a longer one is flushed and the next line starts anew.
    pub max_lines: usize,
}

/// A multiline setting after validation.
#[derive(Debug, Clone)]
pub struct ValidatedMultiline {
    /// The compiled first-line pattern.
    pub first_line: Regex,
    /// See [`MultilineConfig::flush_after`].
    pub flush_after: Duration,
    /// See [`MultilineConfig::max_lines`].
    pub max_lines: usize,
}

/// Longest record kept: the product's record cap. Longer lines keep their first 1 MiB and
/// the rest is skipped and counted.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// How often files are looked at: Fluent Bit's `Refresh_Interval` is 60 s for discovery
/// and its inotify reacts at once; a quarter second keeps latency low for polling while
/// a `stat` per file per poll stays cheap for thousands of files.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often callers that poll without discovery between ([`crate::Tailer::poll_known_at`])
/// walk the directories for new, renamed and deleted files: a new container's first
/// lines wait at most this long. The walk of 1,000 pod directories was a quarter of
/// the agent's CPU in log-bench when it ran every poll; Fluent Bit's
/// `Refresh_Interval` is 60 s. Rotation needs no walk to be safe: a renamed or deleted
/// file is read through its descriptor, or found by inode in its directory.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a rotated or deleted file is still watched for late writes after it was read
/// to its end: Fluent Bit's `Rotate_Wait` default.
pub const DEFAULT_ROTATE_WAIT: Duration = Duration::from_secs(5);

/// Open descriptors at once: well under the agent's file-descriptor limit (1024 soft by
/// default) with room for its sockets and buffer segments.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;

/// Files watched at once: enough for a node at the kubelet's 110-pod limit with several
/// containers and restarts each.
pub const DEFAULT_MAX_FILES: usize = 4096;

/// Bytes one poll reads across all files: a batch the caller can buffer in one write.
/// Every stage holds a batch several times over at its peak (its records, their
/// encoded request, the compressed buffer record, the sender's decoded copy): at
/// 4 MiB those copies were 30 of log-bench's 42 MiB of peak heap; 1 MiB keeps a
/// write per batch large enough that the per-batch costs stay small.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Batches handed out and not yet committed; polling stops reading beyond it, so a slow
/// consumer bounds the tailer's memory (each batch holds one mark per file it touched).
pub const DEFAULT_MAX_UNACKED_BATCHES: usize = 64;

/// The tailer's bounds and timings; every count must be at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailLimits {
    /// See [`DEFAULT_MAX_FILES`].
    pub max_files: usize,
    /// See [`DEFAULT_MAX_OPEN_FILES`].
    pub max_open_files: usize,
    /// See [`DEFAULT_MAX_RECORD_BYTES`].
    pub max_record_bytes: usize,
    /// See [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
    /// See [`DEFAULT_ROTATE_WAIT`].
    pub rotate_wait: Duration,
    /// See [`DEFAULT_MAX_BATCH_BYTES`].
    pub max_batch_bytes: usize,
    /// See [`DEFAULT_MAX_UNACKED_BATCHES`].
    pub max_unacked_batches: usize,
}

impl Default for TailLimits {
    fn default() -> Self {
        Self {
            max_files: DEFAULT_MAX_FILES,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            rotate_wait: DEFAULT_ROTATE_WAIT,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_unacked_batches: DEFAULT_MAX_UNACKED_BATCHES,
        }
    }
}

/// The tailer's configuration, as the caller fills it.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// The kubelet's pod log directory (`/var/log/pods`), if container logs are read.
    pub pod_log_root: Option<PathBuf>,
    /// Absolute glob patterns of plain files; each must lie below an allowed root.
    pub globs: Vec<PathBuf>,
    /// Roots plain-file globs may read below (the provider's `/var/log/...`).
    pub allowed_roots: Vec<PathBuf>,
    /// Paths never read, even below a root: the agent's data directory, the
    /// service-account token directory, the identity key.
    pub denied: Vec<PathBuf>,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// See [`StartAt`].
    pub start_at: StartAt,
    /// See [`CorruptCheckpointPolicy`].
    pub on_corrupt_checkpoint: CorruptCheckpointPolicy,
    /// Bounds and timings.
    pub limits: TailLimits,
    /// Multiline recombination, applied per stream of every file.
    pub multiline: Option<MultilineConfig>,
}

impl TailConfig {
    /// A configuration with the defaults and no inputs.
    pub fn new(checkpoint: PathBuf) -> Self {
        Self {
            pod_log_root: None,
            globs: Vec::new(),
            allowed_roots: Vec::new(),
            denied: Vec::new(),
            checkpoint,
            start_at: StartAt::default(),
            on_corrupt_checkpoint: CorruptCheckpointPolicy::default(),
            limits: TailLimits::default(),
            multiline: None,
        }
    }

    /// Checks every field and returns all errors at once.
    pub fn validate(&self) -> Result<ValidatedTailConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut absolute = |field: &'static str, path: &Path| {
            let clean = path.is_absolute()
                && path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !clean {
                errors.push(ConfigError::NotAbsolute {
                    field,
                    path: path.to_path_buf(),
                });
            }
        };
        absolute("checkpoint", &self.checkpoint);
        if let Some(root) = &self.pod_log_root {
            absolute("podLogRoot", root);
        }
        self.allowed_roots
            .iter()
            .for_each(|root| absolute("allowedRoots", root));
        self.denied.iter().for_each(|path| absolute("denied", path));
        let mut globs = Vec::new();
        for pattern in &self.globs {
            match Glob::parse(pattern) {
                Ok(glob) => match self
                    .allowed_roots
                    .iter()
                    .find(|root| glob.base.starts_with(root))
                {
                    Some(root) => globs.push((glob, root.clone())),
                    None => errors.push(ConfigError::OutsideAllowedRoots {
                        pattern: pattern.clone(),
                    }),
                },
                Err(error) => errors.push(error),
            }
        }
        for (field, value) in [
            ("limits.maxFiles", self.limits.max_files),
            ("limits.maxOpenFiles", self.limits.max_open_files),
            ("limits.maxRecordBytes", self.limits.max_record_bytes),
            ("limits.maxBatchBytes", self.limits.max_batch_bytes),
            ("limits.maxUnackedBatches", self.limits.max_unacked_batches),
        ] {
            if value == 0 {
                errors.push(ConfigError::Zero { field });
            }
        }
        let multiline = self
            .multiline
            .as_ref()
            .and_then(|m| match Regex::new(&m.first_line) {
                Ok(first_line) if m.max_lines > 0 => Some(ValidatedMultiline {
                    first_line,
                    flush_after: m.flush_after,
                    max_lines: m.max_lines,
                }),
                Ok(_) => {
                    errors.push(ConfigError::Zero {
                        field: "multiline.maxLines",
                    });
                    None
                }
                Err(error) => {
                    errors.push(ConfigError::BadFirstLinePattern {
                        reason: error.to_string(),
                    });
                    None
                }
            });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidatedTailConfig {
            pod_log_root: self.pod_log_root.clone(),
            globs,
            denied: self.denied.clone(),
            checkpoint: self.checkpoint.clone(),
            start_at: self.start_at,
            on_corrupt_checkpoint: self.on_corrupt_checkpoint,
            limits: self.limits.clone(),
            multiline,
        })
    }
}

/// A checked [`TailConfig`]: only this opens a [`crate::Tailer`].
#[derive(Debug, Clone)]
pub struct ValidatedTailConfig {
    /// See [`TailConfig::pod_log_root`].
    pub pod_log_root: Option<PathBuf>,
    /// Each glob with the allowed root it lies below.
    pub globs: Vec<(Glob, PathBuf)>,
    /// See [`TailConfig::denied`].
    pub denied: Vec<PathBuf>,
    /// See [`TailConfig::checkpoint`].
    pub checkpoint: PathBuf,
    /// See [`TailConfig::start_at`].
    pub start_at: StartAt,
    /// See [`TailConfig::on_corrupt_checkpoint`].
    pub on_corrupt_checkpoint: CorruptCheckpointPolicy,
    /// See [`TailConfig::limits`].
    pub limits: TailLimits,
    /// See [`TailConfig::multiline`].
    pub multiline: Option<ValidatedMultiline>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_with_its_field() {
        let mut config = TailConfig::new(PathBuf::from("relative/checkpoint"));
        config.allowed_roots = vec![PathBuf::from("/var/log")];
        config.globs = vec![
            PathBuf::from("/etc/*.conf"),
            PathBuf::from("/var/log/[a].log"),
        ];
        config.limits.max_open_files = 0;
        config.multiline = Some(MultilineConfig {
            first_line: "(".into(),
            flush_after: Duration::from_secs(1),
            max_lines: 10,
        });
        let errors: Vec<String> = config
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let expected = [
            "checkpoint: `relative/checkpoint` must be an absolute path",
            "glob `/etc/*.conf` is outside the allowed roots",
            "glob `/var/log/[a].log`: character classes",
            "limits.maxOpenFiles must be at least 1",
            "multiline.firstLine: ",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(expected),
                "{error} should start with {expected}"
            );
        }
    }

    #[test]
    fn a_glob_keeps_the_root_it_lies_below() {
        let mut config = TailConfig::new(PathBuf::from("/data/checkpoint"));
        config.allowed_roots = vec![PathBuf::from("/var/log")];
        config.globs = vec![PathBuf::from("/var/log/app/*.log")];
        let validated = config.validate().unwrap();
        assert_eq!(validated.globs[0].1, PathBuf::from("/var/log"));
    }
}
