//! The crate's typed errors: configuration refused by validation, checkpoint files that
//! cannot be read or written, and I/O failures of the tailer.

use std::path::PathBuf;

/// A configuration value refused by [`crate::TailConfig::validate`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A glob pattern that this crate does not accept.
    #[error("glob `{}`: {reason}", pattern.display())]
    BadGlob {
        /// The pattern as configured.
        pattern: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A plain-file glob whose directory is not below any allowed root.
    #[error("glob `{}` is outside the allowed roots", pattern.display())]
    OutsideAllowedRoots {
        /// The pattern as configured.
        pattern: PathBuf,
    },
    /// A path field that must be absolute and free of `.`/`..`.
    #[error("{field}: `{}` must be an absolute path without `.` or `..`", path.display())]
    NotAbsolute {
        /// The field's path in the configuration.
        field: &'static str,
        /// The value.
        path: PathBuf,
    },
    /// A bound that must be at least one.
    #[error("{field} must be at least 1")]
    Zero {
        /// The field's path in the configuration.
        field: &'static str,
    },
    /// A multiline first-line pattern that is not a valid regular expression.
    #[error("multiline.firstLine: {reason}")]
    BadFirstLinePattern {
        /// The regex compiler's message.
        reason: String,
    },
}

/// A checkpoint file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing, syncing or renaming failed.
    #[error("checkpoint `{}`: {source}", path.display())]
    Io {
        /// The checkpoint (or its temporary) file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a complete checkpoint of this version: torn, garbage,
    /// or from a newer release. Positions in it cannot be trusted.
    #[error("checkpoint `{}` is corrupt: {reason}", path.display())]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong, with the line number where it applies.
        reason: String,
    },
}

/// A failure that stops the tailer from starting or persisting (per-file read errors
/// are counted in [`crate::TailCounters::read_errors`] and retried instead).
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The checkpoint could not be loaded, moved aside or stored.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}
