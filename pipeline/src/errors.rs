//! Validation errors: every problem found in a document, each with the field path it
//! is about and a reason a user can act on.
//!
//! Validation never stops at the first problem. Each check appends to a
//! [`FieldErrors`] collector, and only an empty collector lets a checked type be built.

use std::fmt;

/// One problem, at one place in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path to the field, for example `spec.output.prometheusRemoteWrite.url`;
    /// list items are written `relabelConfigs[2]`, map keys `matchLabels["env"]`. Empty
    /// when the problem is the document as a whole (for example, a YAML syntax error).
    pub path: String,
    /// What is wrong and, where it helps, what would be right. Never holds a secret.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in one document; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_lines(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn display_lines(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ValidationErrors {
    /// A single error.
    pub fn single(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![FieldError {
            path: path.into(),
            reason: reason.into(),
        }])
    }

    /// The errors, in the order the fields appear in the document.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Each error as `path: reason`.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// Collects errors while a document is checked.
#[derive(Debug, Default)]
pub(crate) struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(crate) fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Every error found; for a collector known to hold at least one.
    pub(crate) fn into_errors(self) -> ValidationErrors {
        ValidationErrors(self.0)
    }

    pub(crate) fn extend(&mut self, other: ValidationErrors) {
        self.0.extend(other.0);
    }

    /// `Ok` when nothing was found, otherwise every error found.
    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

/// `base.name`.
pub(crate) fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[index]`.
pub(crate) fn index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// `base["key"]`.
pub(crate) fn key(base: &str, key: &str) -> String {
    format!("{base}[{key:?}]")
}

impl FieldErrors {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(crate) fn into_lines(self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}
