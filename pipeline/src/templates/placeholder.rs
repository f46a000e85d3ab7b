//! A template's placeholders: their declarations (name, type, description, default,
//! example, whether an instance must bind them), the checks a value of each type
//! passes, and the sample each type is checked with.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};
use crate::units::{parse_byte_quantity, parse_duration};

use super::syntax::{MAX_PLACEHOLDER_NAME_LEN, is_placeholder_name};

/// Most placeholders one template declares: a template is a form a tenant fills in,
/// and no backend needs more than a handful of settings.
pub const MAX_PLACEHOLDERS: usize = 32;
/// Longest placeholder description: a few sentences.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Longest value a placeholder may take (a static value, a default, a value read from
/// a key): room for a CA bundle, small enough that [`super::MAX_PLACEHOLDER_USES`]
/// uses of it keep a rendered pipeline far below the agent's configuration limit.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// What a placeholder stands for, which decides the values it takes and how it is
/// bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlaceholderType {
    /// Any text up to [`MAX_VALUE_BYTES`].
    #[default]
    String,
    /// An absolute `http` or `https` URL without credentials in it.
    Url,
    /// A Prometheus duration such as `30s` or `1h30m`.
    Duration,
    /// A Kubernetes byte quantity such as `512Mi`.
    Quantity,
    /// A credential: always bound to a key of a Secret in the workload cluster, which
    /// the agent reads; it stands only where a `valueFrom.secretKeyRef` is accepted and
    /// its value never reaches the observer.
    Secret,
}

impl PlaceholderType {
    /// The name used in templates.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Url => "url",
            Self::Duration => "duration",
            Self::Quantity => "quantity",
            Self::Secret => "secret",
        }
    }

    /// The value a template is checked with when its placeholder gives no example and
    /// no default; each is valid wherever a value of the type usually goes.
    pub fn sample(self) -> &'static str {
        match self {
            Self::String => "sample",
            Self::Url => "https://sample.example",
            Self::Duration => "30s",
            // Fits a buffer (at least 1Mi) and a log record limit (at most 4Mi).
            Self::Quantity => "1Mi",
            // Never used as text: a secret becomes a reference to a sample key.
            Self::Secret => "",
        }
    }

    /// Checks a value of this type. The reason quotes the value unless `quote` is
    /// false (a value read from a Secret or ConfigMap).
    pub fn check(self, value: &str, quote: bool) -> Result<(), String> {
        let shown = if quote {
            format!("{value:?}")
        } else {
            "the value".to_owned()
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "{} is longer than {MAX_VALUE_BYTES} bytes",
                if quote { "the value" } else { "the value read" }
            ));
        }
        let problem = match self {
            Self::String | Self::Secret => None,
            Self::Url => (!is_plain_http_url(value)).then(|| {
                // A URL with '@' may carry a credential: do not echo it.
                let shown = if value.contains('@') {
                    "the value"
                } else {
                    &shown
                };
                format!("{shown} is not a url: an absolute http(s) URL without credentials in it")
            }),
            Self::Duration => parse_duration(value).is_err().then(|| {
                format!("{shown} is not a duration: a number and a unit (ms, s, m, h, d, w, y)")
            }),
            Self::Quantity => parse_byte_quantity(value)
                .is_err()
                .then(|| format!("{shown} is not a quantity: e.g. 512Mi, 1Gi or 1048576")),
        };
        problem.map_or(Ok(()), Err)
    }
}

/// An absolute `http(s)` URL with a host and no user or password.
fn is_plain_http_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.has_host()
            && url.username().is_empty()
            && url.password().is_none()
    })
}

/// One placeholder a template declares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placeholder {
    /// Written `%{name}` in the template: a letter, then letters, digits or `_`.
    #[serde(default)]
    pub name: String,
    /// `string`, `url`, `duration`, `quantity` or `secret`.
    #[serde(rename = "type", default)]
    pub type_: PlaceholderType,
    /// What the tenant binds, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// The value an instance gets when it binds nothing (or binds `default: true`).
    /// Never for a `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// A value the template is checked with (and shown to tenants); the default, else
    /// a sample of the type, when not set. Never for a `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
    /// Whether every instance must bind it. An optional placeholder needs a default;
    /// a `secret` is always required.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

impl Placeholder {
    /// The value a template is checked with: the example, else the default, else the
    /// type's sample.
    pub fn sample(&self) -> &str {
        self.example
            .as_deref()
            .or(self.default.as_deref())
            .unwrap_or(self.type_.sample())
    }

    /// Checks the declaration at `path` (`spec.placeholders[i]`).
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if !is_placeholder_name(&self.name) {
            errors.add(
                field(path, "name"),
                format!(
                    "{:?} is not a placeholder name: a letter followed by letters, digits or \
                     '_', at most {MAX_PLACEHOLDER_NAME_LEN} long",
                    self.name
                ),
            );
        }
        let description_path = field(path, "description");
        if self.description.trim().is_empty() {
            errors.add(
                &description_path,
                "required: say what the tenant binds, e.g. \"the backend's OTLP endpoint\"",
            );
        } else if self.description.len() > MAX_DESCRIPTION_LEN {
            errors.add(
                &description_path,
                format!("longer than {MAX_DESCRIPTION_LEN} bytes; keep it to a few sentences"),
            );
        }
        if self.type_ == PlaceholderType::Secret {
            for (name, value) in [("default", &self.default), ("example", &self.example)] {
                if value.is_some() {
                    errors.add(
                        field(path, name),
                        "a secret placeholder has no value in the template: each instance \
                         binds it to a Secret key, which only the agent reads",
                    );
                }
            }
            if !self.required {
                errors.add(
                    field(path, "required"),
                    "a secret placeholder is always required: set required: true",
                );
            }
            return;
        }
        if !self.required && self.default.is_none() {
            errors.add(
                path,
                "an optional placeholder needs a default, which instances that do not bind \
                 it get; set a default or required: true",
            );
        }
        for (name, value) in [("default", &self.default), ("example", &self.example)] {
            if let Some(value) = value
                && let Err(reason) = self.type_.check(value, true)
            {
                errors.add(field(path, name), reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_type() {
        use PlaceholderType::*;
        assert!(Url.check("https://otel.example:4317", true).is_ok());
        assert!(Url.check("http://10.0.0.1/api/v1/push", true).is_ok());
        for bad in ["ftp://x.example", "/relative", "otel.example:4317", ""] {
            assert!(Url.check(bad, true).is_err(), "{bad:?}");
        }
        let credential = Url
            .check("https://user:hunter2@x.example", true)
            .unwrap_err();
        assert!(!credential.contains("hunter2"), "{credential}");
        assert!(Duration.check("1m30s", true).is_ok());
        assert!(Duration.check("5 minutes", true).is_err());
        assert!(Quantity.check("512Mi", true).is_ok());
        assert!(Quantity.check("lots", true).is_err());
        assert!(String.check("anything %{at} all", true).is_ok());
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(String.check(&long, true).is_err());
        let hidden = Duration.check("s3cret", false).unwrap_err();
        assert!(!hidden.contains("s3cret"), "{hidden}");
    }

    #[test]
    fn every_sample_passes_its_own_type() {
        for type_ in [
            PlaceholderType::String,
            PlaceholderType::Url,
            PlaceholderType::Duration,
            PlaceholderType::Quantity,
        ] {
            assert_eq!(type_.check(type_.sample(), true), Ok(()), "{type_:?}");
        }
    }
}
