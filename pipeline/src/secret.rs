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

/// A setting that is plain text where it is written, or read from a Secret key: an
/// output's URL (`url`, `endpoint`, `tokenUrl`), so a service-binding Secret can carry
/// it. Written as a string (as before, meaning what it always meant) or as
/// `{valueFrom: {secretKeyRef: {name, namespace, key}}}`.
///
/// Plain text is not secret (the API shows it); a referenced value is treated as one:
/// its resolved text is never logged, reported or returned, only its reference
/// ([`StringSource::describe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringSource {
    /// The value as written.
    Plain(String),
    /// Where the agent reads the value: a Secret key (or, in a standalone agent's own
    /// file only, a file), read again when it changes.
    Referenced(ValueFrom),
}

/// The object form of a [`StringSource`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReferencedString {
    value_from: ValueFrom,
}

impl Default for StringSource {
    fn default() -> Self {
        Self::Plain(String::new())
    }
}

impl From<&str> for StringSource {
    fn from(text: &str) -> Self {
        Self::Plain(text.to_owned())
    }
}

impl From<String> for StringSource {
    fn from(text: String) -> Self {
        Self::Plain(text)
    }
}

impl PartialEq<str> for StringSource {
    fn eq(&self, other: &str) -> bool {
        self.plain() == Some(other)
    }
}

impl PartialEq<&str> for StringSource {
    fn eq(&self, other: &&str) -> bool {
        self.plain() == Some(*other)
    }
}

impl StringSource {
    /// The text when written in place.
    pub fn plain(&self) -> Option<&str> {
        match self {
            Self::Plain(text) => Some(text),
            Self::Referenced(_) => None,
        }
    }

    /// Where the value is read from, when it is not written in place.
    pub fn reference(&self) -> Option<&ValueFrom> {
        match self {
            Self::Plain(_) => None,
            Self::Referenced(from) => Some(from),
        }
    }

    /// The Secret key the value is read from, when it names one.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        self.reference()?.secret_key_ref.as_ref()
    }

    /// The value source the agent resolves, for a referenced value.
    pub fn as_value_source(&self) -> Option<ValueSource> {
        self.reference().map(|from| ValueSource {
            value: None,
            value_from: Some(from.clone()),
        })
    }

    /// How the setting may be shown in logs, messages and diffs: plain text as it is,
    /// a reference by what it names (`Secret ns/name key "url"`), never its value.
    pub fn describe(&self) -> String {
        match self {
            Self::Plain(text) => text.clone(),
            Self::Referenced(from) => from.describe(),
        }
    }
}

impl ValueFrom {
    /// What the reference names, for messages: `Secret ns/name key "k"` or
    /// `file /path`.
    pub fn describe(&self) -> String {
        match (&self.secret_key_ref, &self.file) {
            (Some(r), _) => format!("Secret {}/{} key {:?}", r.namespace, r.name, r.key),
            (None, Some(path)) => format!("file {path}"),
            (None, None) => "an empty valueFrom".to_owned(),
        }
    }
}

impl Serialize for StringSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Plain(text) => serializer.serialize_str(text),
            Self::Referenced(from) => ReferencedString {
                value_from: from.clone(),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for StringSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StringSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or {valueFrom: {secretKeyRef: {name, namespace, key}}}")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StringSource, E> {
                Ok(StringSource::Plain(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<StringSource, E> {
                Ok(StringSource::Plain(text))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<StringSource, A::Error> {
                let reference = ReferencedString::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(StringSource::Referenced(reference.value_from))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for StringSource {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringSource".into()
    }

    /// Either a string or an object, which a structural schema can only say by
    /// leaving the type open; the observer and the agent check the shape.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string, or {valueFrom: {secretKeyRef: {name, namespace, key}}} to read it from a Secret key.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

impl StringSource {
    /// Checks a referenced value's reference as any `valueFrom` is checked (the Secret
    /// namespace allow-list, file reading only where allowed); plain text is the
    /// caller's to check.
    pub(crate) fn validate_reference(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        if let Some(source) = self.as_value_source() {
            source.validate(path, context, errors);
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
    fn a_string_source_reads_plain_text_as_before_and_a_reference_as_an_object() {
        let plain: StringSource = serde_yaml::from_str("https://x.example/w").unwrap();
        assert_eq!(plain, "https://x.example/w");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#""https://x.example/w""#
        );
        let referenced: StringSource = serde_yaml::from_str(
            "{valueFrom: {secretKeyRef: {name: binding, namespace: kaas-observer, key: url}}}",
        )
        .unwrap();
        let reference = referenced.secret_ref().unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("binding", "url")
        );
        assert_eq!(
            serde_json::to_string(&referenced).unwrap(),
            r#"{"valueFrom":{"secretKeyRef":{"name":"binding","namespace":"kaas-observer","key":"url"}}}"#
        );
        assert_eq!(
            referenced.describe(),
            r#"Secret kaas-observer/binding key "url""#
        );
        for bad in [
            "{value: https://x.example}",
            "{valueFrom: {}, extra: 1}",
            "[a]",
            "12",
        ] {
            assert!(
                serde_yaml::from_str::<StringSource>(bad).is_err(),
                "{bad} must not parse"
            );
        }
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
