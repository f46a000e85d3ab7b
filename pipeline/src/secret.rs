//! Values that may be secret: given inline (`value`) or by reference
//! (`valueFrom.secretKeyRef`), resolved inside the workload cluster by the agent.
//!
//! Inline values are held in [`SecretString`], whose `Debug` prints `***`, so a secret
//! cannot reach a log line through `{:?}` by accident. Validation messages quote
//! references (Secret name and key) but never values.
//!
//! Where a reference may point depends on the [`ValidationContext`]: `valueFrom.file`
//! only in a standalone agent's own file, and only to a path the
//! [`PathPolicy`](crate::paths::PathPolicy) allows; `secretKeyRef` only into a namespace
//! the provider allows.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};
use crate::names::{check_dns1123_label, check_dns1123_subdomain, check_secret_key};
use crate::policy::ValidationContext;

/// A string that must not be shown: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it (a request header, a TLS
    /// configuration). Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A value given inline or taken from a Kubernetes Secret; exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueSource {
    /// The value itself. Convenient for tests; prefer `valueFrom` for anything secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SecretString>,
    /// Where to read the value from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// A reference to the value's source; exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    /// A key in a Kubernetes Secret in the workload cluster, in a namespace the provider
    /// allows (by default only the agent's own). The agent re-reads it when the Secret
    /// changes, so credentials rotate without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// An absolute path on the agent's file system, re-read when the file changes. Only
    /// in a standalone agent's own configuration file: the observer, and an agent
    /// taking its configuration from the observer, refuse it, since a tenant must not
    /// read the agent's files. Never the agent's data directory, the pod's mounted
    /// credentials or the node's, checked again on every read with symlinks resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Names one key of one Kubernetes Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[serde(default)]
    pub name: String,
    /// The Secret's namespace; pipelines are cluster-scoped, so it is required. Only
    /// namespaces the provider allows (by default the agent's own, `kaas-observer`).
    #[serde(default)]
    pub namespace: String,
    /// The key within the Secret's data.
    #[serde(default)]
    pub key: String,
}

impl ValueSource {
    /// An inline value.
    pub fn inline(value: impl Into<String>) -> Self {
        Self {
            value: Some(SecretString::new(value)),
            value_from: None,
        }
    }

    /// The Secret key the value is read from, when it names one.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        self.value_from.as_ref()?.secret_key_ref.as_ref()
    }

    /// Whether the inline value is set and non-empty (used to judge PEM contents).
    pub(crate) fn inline_value(&self) -> Option<&str> {
        self.value.as_ref().map(SecretString::expose)
    }

    /// Checks that exactly one source is given and that a reference is well formed and
    /// allowed in `context`.
    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        match (&self.value, &self.value_from) {
            (Some(_), Some(_)) => errors.add(path, "set either value or valueFrom, not both"),
            (None, None) => errors.add(path, "set value or valueFrom"),
            (Some(value), None) => {
                if value.expose().is_empty() {
                    errors.add(field(path, "value"), "must not be empty");
                }
            }
            (None, Some(from)) => {
                let from_path = field(path, "valueFrom");
                match (&from.secret_key_ref, &from.file) {
                    (None, None) => errors.add(from_path, "set secretKeyRef or file"),
                    (Some(_), Some(_)) => {
                        errors.add(from_path, "set either secretKeyRef or file, not both")
                    }
                    (Some(reference), None) => {
                        reference.validate(&field(&from_path, "secretKeyRef"), context, errors)
                    }
                    (None, Some(file)) => {
                        let file_path = field(&from_path, "file");
                        if !context.origin.may_read_agent_files() {
                            errors.add(
                                file_path,
                                format!(
                                    "reading files on the agent is only allowed in a standalone \
                                     agent's own configuration, not in {}; put the value in a \
                                     Secret and use secretKeyRef",
                                    context.origin.describe()
                                ),
                            );
                        } else if let Err(reason) = context.policy.paths.check(file) {
                            errors.add(file_path, reason);
                        }
                    }
                }
            }
        }
    }
}

impl SecretKeyRef {
    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        if let Err(reason) = check_dns1123_subdomain(&self.name) {
            errors.add(field(path, "name"), reason);
        }
        let allowed = &context.policy.secret_namespaces;
        if let Err(reason) = check_dns1123_label(&self.namespace) {
            errors.add(field(path, "namespace"), reason);
        } else if !allowed.allows(&self.namespace) {
            let listed: Vec<&str> = allowed
                .listed()
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let choice = if listed.is_empty() {
                "none are allowed".to_owned()
            } else {
                format!("use one of: {}", listed.join(", "))
            };
            errors.add(
                field(path, "namespace"),
                format!(
                    "the agent may not read Secrets in namespace {:?}: the provider allows only \
                     the namespaces listed for the agent's Secret access; {choice}",
                    self.namespace
                ),
            );
        }
        if let Err(reason) = check_secret_key(&self.key) {
            errors.add(field(path, "key"), reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_an_inline_secret() {
        let source = ValueSource::inline("hunter2");
        let shown = format!("{source:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn serialization_keeps_the_value_for_the_agent() {
        let source = ValueSource::inline("hunter2");
        assert_eq!(
            serde_json::to_string(&source).unwrap(),
            r#"{"value":"hunter2"}"#
        );
    }
}
