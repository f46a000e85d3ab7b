//! Why the check could not run: the tree it reads is not what it expects.

use std::path::PathBuf;

use crate::lexer::LexError;

/// Why a check could not run.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A source file has an unterminated comment or literal.
    Lex {
        /// The file.
        path: PathBuf,
        /// Where and what.
        error: LexError,
    },
    /// `mod name;` names a module whose file is neither `name.rs` nor `name/mod.rs`.
    MissingModule {
        /// The file with the declaration.
        declared_in: PathBuf,
        /// The declaration's line.
        line: u32,
        /// The module's name.
        name: String,
    },
    /// A `Cargo.toml` lacks what the check reads from it.
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A baseline line is not one the check writes.
    Baseline {
        /// The line number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::Lex { path, error } => {
                write!(
                    f,
                    "{}:{}: unterminated {}",
                    path.display(),
                    error.line,
                    error.what
                )
            }
            Error::MissingModule {
                declared_in,
                line,
                name,
            } => write!(
                f,
                "{}:{line}: `mod {name};` has no file {name}.rs or {name}/mod.rs where rustc looks for it",
                declared_in.display()
            ),
            Error::Manifest { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::Baseline { line, text } => write!(
                f,
                "baseline line {line} is not `cycle <crate root> <module>…`, `long-file <path>` or `long-fn <path> <name>`: {text:?}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
