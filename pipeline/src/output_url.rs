//! Output URLs (`url`, `endpoint`, `tokenUrl`): written in place, or bound from a Secret
//! key (a service-binding Secret) and read by the agent.
//!
//! One function judges both, [`UrlRule::check`]: the observer, and the agent on
//! receipt, run it on a URL written in place while validating the pipeline; the agent
//! runs it on a bound URL each time it reads a new value ([`Destination::check_resolved`]),
//! in the tenant's context (the provider's central receivers refused). So a Secret
//! reaches exactly what a URL written in place could reach: absolute `http(s)`, no
//! credentials in the URL, not the provider's receiver, the transport's path rules.
//!
//! A bound URL is handled as a secret (it may carry a token in its query): messages
//! about it never quote it, and [`Destination::describe`] shows its reference.

use url::Url;

use crate::errors::FieldErrors;
use crate::policy::ValidationContext;
use crate::secret::{StringSource, ValueFrom};

/// What kind of URL a field holds, and so how it is checked and completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlRule {
    /// Sent to as written (remote-write, HTTP JSON lines).
    AsWritten,
    /// OTLP over gRPC: `scheme://host:port`, no path.
    OtlpGrpc,
    /// OTLP over HTTP: the signal's path (`/v1/metrics`, …) appended unless the path
    /// already ends with it.
    OtlpHttp(&'static str),
    /// This path appended unless the path already ends with it (Loki's push path, the
    /// bulk API's `/_bulk`).
    WithSuffix(&'static str),
    /// An OAuth2 token endpoint: the client credentials go there, never data.
    TokenEndpoint,
}

impl UrlRule {
    /// Checks `text` as this kind of URL under `context`, adding every problem at
    /// `path`; the URL to send to when there is none. `secret`: the text came from a
    /// Secret, so no message quotes it.
    pub(crate) fn check(
        self,
        text: &str,
        secret: bool,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<Url> {
        let mut url = check_http_url(text, secret, path, errors)?;
        if self != Self::TokenEndpoint && context.policy.is_central_endpoint(&url) {
            errors.add(
                path,
                "this is the provider's central receiver, which only the provider's own \
                 pipeline writes to; send to your own backend",
            );
        }
        match self {
            Self::OtlpGrpc if !matches!(url.path(), "" | "/") => {
                let found = if secret {
                    "a path".to_owned()
                } else {
                    format!("{:?}", url.path())
                };
                errors.add(
                    path,
                    format!(
                        "an OTLP/gRPC endpoint has no path, found {found}; use \
                         scheme://host:port, or set protocol: http"
                    ),
                );
                return None;
            }
            Self::OtlpHttp(suffix) | Self::WithSuffix(suffix) => {
                if !url.path().ends_with(suffix) {
                    let base = url.path().trim_end_matches('/').to_owned();
                    url.set_path(&format!("{base}{suffix}"));
                }
            }
            Self::AsWritten | Self::OtlpGrpc | Self::TokenEndpoint => {}
        }
        Some(url)
    }
}

/// Parses an absolute `http` or `https` URL without credentials in it; `secret`: never
/// quote the text.
fn check_http_url(text: &str, secret: bool, path: &str, errors: &mut FieldErrors) -> Option<Url> {
    if text.is_empty() {
        errors.add(path, "required: an absolute http(s) URL");
        return None;
    }
    let url = match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        _ if secret => {
            errors.add(path, "the value is not an absolute http(s) URL");
            return None;
        }
        _ => {
            errors.add(path, format!("not an absolute http(s) URL: {text:?}"));
            return None;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo the URL: it holds a credential.
        errors.add(
            path,
            "credentials in the URL would be stored and shown in clear; use \
             authentication.basic with a Secret instead",
        );
        return None;
    }
    Some(url)
}

/// Where an output sends: a URL checked with the pipeline, or one the agent reads from
/// a Secret and checks each time it changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Written in place, checked and completed.
    Fixed(Url),
    /// Bound from a Secret key (or a standalone agent's file).
    Bound {
        /// Where the URL is read.
        source: ValueFrom,
        /// How it is checked and completed once read.
        rule: UrlRule,
        /// The field it was written in, e.g. `spec.output.otlp.endpoint`, for messages.
        path: String,
    },
}

impl Destination {
    /// The URL when it is written in place.
    pub fn fixed(&self) -> Option<&Url> {
        match self {
            Self::Fixed(url) => Some(url),
            Self::Bound { .. } => None,
        }
    }

    /// Whether the URL is read from a Secret, and so must be handled as a secret.
    pub fn is_bound(&self) -> bool {
        matches!(self, Self::Bound { .. })
    }

    /// How the destination may be shown: the URL written in place, or the reference of
    /// a bound one (never its value).
    pub fn describe(&self) -> String {
        match self {
            Self::Fixed(url) => url.to_string(),
            Self::Bound { source, .. } => source.describe(),
        }
    }

    /// Checks a value read for this destination with the same rules as a URL written
    /// in place ([`UrlRule::check`]) in `context` (the tenant's: the agent passes the
    /// provider's central receivers); `Err` says why, naming the field and the
    /// reference but never the value. A fixed destination is returned as it is.
    pub fn check_resolved(&self, text: &str, context: &ValidationContext) -> Result<Url, String> {
        let (source, rule, path) = match self {
            Self::Fixed(url) => return Ok(url.clone()),
            Self::Bound { source, rule, path } => (source, rule, path),
        };
        let mut errors = FieldErrors::default();
        match rule.check(text.trim(), true, path, context, &mut errors) {
            Some(url) if errors.len() == 0 => Ok(url),
            _ => {
                let reasons: Vec<String> = errors
                    .into_errors()
                    .errors()
                    .iter()
                    .map(|e| e.reason.clone())
                    .collect();
                Err(format!(
                    "the URL for {path} read from {} is refused: {}",
                    source.describe(),
                    reasons.join("; ")
                ))
            }
        }
    }
}

impl From<Url> for Destination {
    /// A URL written in place (already checked).
    fn from(url: Url) -> Self {
        Self::Fixed(url)
    }
}

impl std::fmt::Display for Destination {
    /// [`Destination::describe`]: never a bound URL's value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Checks a URL field: text written in place with `rule`, a reference as every
/// `valueFrom` is checked (the Secret namespace allow-list, files only where allowed).
pub(crate) fn check_destination(
    source: &StringSource,
    rule: UrlRule,
    path: &str,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) -> Option<Destination> {
    match source {
        StringSource::Plain(text) => rule
            .check(text, false, path, context, errors)
            .map(Destination::Fixed),
        StringSource::Referenced(from) => {
            source.validate_reference(path, context, errors);
            Some(Destination::Bound {
                source: from.clone(),
                rule,
                path: path.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ProviderPolicy;

    fn bound(rule: UrlRule) -> Destination {
        Destination::Bound {
            source: ValueFrom {
                secret_key_ref: Some(crate::secret::SecretKeyRef {
                    name: "binding".into(),
                    namespace: "kaas-observer".into(),
                    key: "url".into(),
                }),
                file: None,
            },
            rule,
            path: "spec.output.otlp.endpoint".into(),
        }
    }

    fn central() -> ValidationContext {
        let mut policy = ProviderPolicy::tenant_default();
        policy.central_endpoints =
            vec![Url::parse("https://receive.provider.example:19291").unwrap()];
        ValidationContext::observer(policy)
    }

    /// The same rules as a URL written in place, with the value never quoted.
    #[test]
    fn a_resolved_url_is_judged_as_one_written_in_place_and_never_quoted() {
        let context = central();
        let http = bound(UrlRule::OtlpHttp("/v1/metrics"));
        assert_eq!(
            http.check_resolved("https://otlp.example:4318\n", &context)
                .unwrap()
                .as_str(),
            "https://otlp.example:4318/v1/metrics"
        );
        let refusals = [
            (
                UrlRule::AsWritten,
                "https://receive.provider.example:19291/api/v1/receive",
                "central receiver",
            ),
            (
                UrlRule::AsWritten,
                "ftp://s3cret.example/",
                "not an absolute http(s) URL",
            ),
            (
                UrlRule::AsWritten,
                "https://u:s3cret@x.example/",
                "credentials in the URL",
            ),
            (
                UrlRule::OtlpGrpc,
                "https://x.example:4317/s3cret",
                "has no path",
            ),
            (UrlRule::AsWritten, "", "required"),
        ];
        for (rule, text, reason) in refusals {
            let error = bound(rule).check_resolved(text, &context).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
            assert!(!error.contains("s3cret"), "{error}");
            assert!(
                error.contains(r#"Secret kaas-observer/binding key "url""#),
                "{error}"
            );
            assert!(error.contains("spec.output.otlp.endpoint"), "{error}");
        }
        // A token endpoint receives no data: the receiver rule is the data's.
        assert!(
            bound(UrlRule::TokenEndpoint)
                .check_resolved("https://receive.provider.example:19291/token", &context)
                .is_ok()
        );
    }
}
