//! Inline secret values in API bodies: hidden as `***` in every answer, and `***` in a
//! request keeps the stored value.
//!
//! Inline values (`value` of a header or of a [`ValueSource`](kaas_pipeline::secret::ValueSource))
//! only occur in a pipeline's output; [`PipelineKind::inline_secrets_mut`] finds every
//! one, the same walk the store uses to seal them, for every kind of pipeline. [`for_each_inline_secret`] gives each two names:
//! the field path used in error messages (headers by index, as validation writes them)
//! and a matching key that names headers by header name, so reordering headers in an
//! edited document still finds each stored value.

use std::collections::BTreeMap;

use kaas_pipeline::output::{OAuth2, Tls};
use kaas_pipeline::secret::{SecretString, StringSource};

use super::model::FieldProblem;
use crate::store::PipelineKind;
use crate::store::pipeline_kind::OutputEndpoint;

/// What every inline secret reads in an answer, and what keeps the stored value in a
/// request.
pub use crate::store::MASKED_SECRET as REDACTED;

/// Calls `visit(path, key, value)` for every inline secret value of `pipeline`; `path`
/// starts with `spec.output.`.
pub fn for_each_inline_secret<P: PipelineKind>(
    pipeline: &mut P::Resource,
    visit: &mut dyn FnMut(&str, &str, &mut SecretString),
) {
    let endpoints = P::output_endpoints(pipeline);
    for (relative, value) in P::inline_secrets_mut(pipeline) {
        let path = format!("spec.output.{relative}");
        let key = endpoints
            .iter()
            .find_map(|e| header_key(&relative, e.base, &e.header_names))
            .unwrap_or_else(|| path.clone());
        visit(&path, &key, value);
    }
}

/// For `{base}.headers[i].value`, a key naming the header instead of its position.
fn header_key(relative: &str, base: &str, names: &[String]) -> Option<String> {
    let index = relative
        .strip_prefix(base)?
        .strip_prefix(".headers[")?
        .strip_suffix("].value")?;
    let name = names.get(index.parse::<usize>().ok()?)?;
    Some(format!("spec.output.{base}.headers[{name:?}].value"))
}

/// Replaces every inline secret value with `***` (the store's masking, so API answers
/// and the store agree on what is secret).
pub fn redact<P: PipelineKind>(pipeline: &mut P::Resource) {
    crate::store::mask_secrets::<P>(pipeline);
}

/// Replaces each `***` in `incoming` with the value stored at the same place in
/// `stored`. A `***` with nothing stored behind it is an error at its field path, and
/// so is a `***` kept while the place its secret goes to changed
/// ([`destination_change`]): whoever may edit a pipeline may not thereby send its
/// stored credential to a host of their choosing; the secret must be given again.
pub fn restore_redacted<P: PipelineKind>(
    incoming: &mut P::Resource,
    stored: Option<&P::Resource>,
) -> Vec<FieldProblem> {
    let mut known = BTreeMap::new();
    if let Some(stored) = stored {
        let mut stored = stored.clone();
        for_each_inline_secret::<P>(&mut stored, &mut |_, key, value| {
            known.insert(key.to_owned(), value.clone());
        });
    }
    let mut problems = Vec::new();
    let mut kept = Vec::new();
    for_each_inline_secret::<P>(incoming, &mut |path, key, value| {
        if value.expose() != REDACTED {
            return;
        }
        match known.get(key) {
            Some(stored) => {
                *value = stored.clone();
                kept.push(path.to_owned());
            }
            None => problems.push(FieldProblem {
                path: path.to_owned(),
                message: format!(
                    "{REDACTED:?} keeps a stored secret, but none is stored here; give the value"
                ),
            }),
        }
    });
    if let Some(stored) = stored {
        let (stored, incoming) = (P::output_endpoints(stored), P::output_endpoints(incoming));
        for path in kept {
            if let Some(changed) = destination_change(&stored, &incoming, &path) {
                problems.push(FieldProblem {
                    path,
                    message: format!(
                        "{REDACTED:?} keeps the stored secret, but {changed} changed, so it would \
                         be sent somewhere new; give the secret again"
                    ),
                });
            }
        }
    }
    problems
}

/// Where the secret at `path` (`spec.output.<kind>.…value`) is sent, compared between
/// the stored and the incoming output: `None` when unchanged, else the path of the
/// field that changed. OAuth2 client credentials go to the token URL; every other
/// secret (headers, basic, bearer, the client certificate and key) to the output's
/// URL, with the TLS settings deciding which server is trusted to receive it. The CA
/// is not a secret sent anywhere and may be kept.
pub fn destination_change(
    stored: &[OutputEndpoint],
    incoming: &[OutputEndpoint],
    path: &str,
) -> Option<String> {
    let (kind, relative) = path
        .strip_prefix("spec.output.")?
        .split_once('.')
        .unwrap_or(("", ""));
    let base = format!("spec.output.{kind}");
    let endpoint = |endpoints: &[OutputEndpoint]| -> Option<(String, Option<Tls>, Option<OAuth2>)> {
        let endpoint = endpoints.iter().find(|e| e.base == kind)?;
        Some((
            normalized_url(&endpoint.url),
            endpoint.tls.clone(),
            endpoint.oauth2.clone(),
        ))
    };
    let url_field = stored
        .iter()
        .find(|e| e.base == kind)
        .map_or("url", |e| e.url_field);
    let (old_url, old_tls, old_oauth2) = endpoint(stored)?;
    let (new_url, new_tls, new_oauth2) = endpoint(incoming)?;
    if relative.starts_with("tls.ca.") {
        return None;
    }
    if relative.starts_with("authentication.oauth2.") {
        let token_url = |o: Option<OAuth2>| o.map(|o| normalized_url(&o.token_url));
        return (token_url(old_oauth2) != token_url(new_oauth2))
            .then(|| format!("{base}.authentication.oauth2.tokenUrl"));
    }
    if old_url != new_url {
        return Some(format!("{base}.{url_field}"));
    }
    let (old_tls, new_tls) = (old_tls.unwrap_or_default(), new_tls.unwrap_or_default());
    if old_tls.server_name != new_tls.server_name {
        return Some(format!("{base}.tls.serverName"));
    }
    if new_tls.insecure_skip_verify && !old_tls.insecure_skip_verify {
        return Some(format!("{base}.tls.insecureSkipVerify"));
    }
    if old_tls.ca != new_tls.ca {
        return Some(format!("{base}.tls.ca"));
    }
    None
}

/// A URL as it will be used (host lower-cased, default port dropped), or the text as
/// given when it does not parse (validation refuses it then anyway); a URL read from a
/// Secret as its reference, so pointing at another Secret key is a change.
fn normalized_url(source: &StringSource) -> String {
    match source.plain() {
        Some(text) => url::Url::parse(text).map_or_else(|_| text.to_owned(), |url| url.to_string()),
        None => format!("valueFrom {}", source.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaas_pipeline::secret::SecretString;
    use kaas_pipeline::{MetricPipeline, ValidatedPipeline};

    fn redact(pipeline: &mut MetricPipeline) {
        super::redact::<ValidatedPipeline>(pipeline);
    }

    fn restore_redacted(
        incoming: &mut MetricPipeline,
        stored: Option<&MetricPipeline>,
    ) -> Vec<FieldProblem> {
        super::restore_redacted::<ValidatedPipeline>(incoming, stored)
    }

    const PIPELINE: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: p}
spec:
  input: {prometheus: {enabled: true}}
  output:
    prometheusRemoteWrite:
      url: https://r.example/write
      headers:
        - {name: X-Scope-OrgID, value: tenant-secret-1}
        - {name: X-Other, valueFrom: {secretKeyRef: {name: s, namespace: n, key: k}}}
      authentication:
        basic: {user: {value: user-secret-2}, password: {value: password-secret-3}}
      tls:
        ca: {value: ca-secret-4}
"#;

    fn pipeline() -> MetricPipeline {
        serde_yaml::from_str(PIPELINE).unwrap()
    }

    #[test]
    fn redact_hides_every_inline_value_and_keeps_references() {
        let mut p = pipeline();
        redact(&mut p);
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("-secret-"), "{text}");
        assert_eq!(text.matches("\"***\"").count(), 4, "{text}");
        assert!(text.contains("secretKeyRef"), "{text}");
    }

    #[test]
    fn redacted_values_are_restored_even_after_reordering_headers() {
        let stored = pipeline();
        let mut incoming = pipeline();
        redact(&mut incoming);
        let rw = incoming
            .spec
            .output
            .prometheus_remote_write
            .as_mut()
            .unwrap();
        rw.headers.reverse();
        let problems = restore_redacted(&mut incoming, Some(&stored));
        assert!(problems.is_empty(), "{problems:?}");
        let text = serde_json::to_string(&incoming).unwrap();
        for secret in [
            "tenant-secret-1",
            "user-secret-2",
            "password-secret-3",
            "ca-secret-4",
        ] {
            assert!(text.contains(secret), "{secret} in {text}");
        }
    }

    fn problems_after(edit: impl Fn(&mut MetricPipeline)) -> Vec<(String, String)> {
        let stored = pipeline();
        let mut incoming = pipeline();
        redact(&mut incoming);
        edit(&mut incoming);
        restore_redacted(&mut incoming, Some(&stored))
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    fn rw(pipeline: &mut MetricPipeline) -> &mut kaas_pipeline::output::RemoteWriteOutput {
        pipeline
            .spec
            .output
            .prometheus_remote_write
            .as_mut()
            .unwrap()
    }

    /// Issue 13, finding 9: `***` cannot carry a stored secret to a new destination.
    #[test]
    fn a_kept_secret_does_not_follow_a_changed_destination() {
        let changed_url = problems_after(|p| rw(p).url = "https://attacker.example/w".into());
        let paths: Vec<&str> = changed_url.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.output.prometheusRemoteWrite.headers[0].value",
                "spec.output.prometheusRemoteWrite.authentication.basic.user.value",
                "spec.output.prometheusRemoteWrite.authentication.basic.password.value",
            ],
            "the CA is not a secret sent anywhere"
        );
        assert_eq!(
            changed_url[0].1,
            "\"***\" keeps the stored secret, but spec.output.prometheusRemoteWrite.url changed, so it would be sent somewhere new; give the secret again"
        );
        let trust = problems_after(|p| rw(p).tls.as_mut().unwrap().insecure_skip_verify = true);
        assert_eq!(trust.len(), 3, "{trust:?}");
        assert!(trust[0].1.contains("tls.insecureSkipVerify changed"));
        let server_name =
            problems_after(|p| rw(p).tls.as_mut().unwrap().server_name = Some("x.example".into()));
        assert!(server_name[0].1.contains("tls.serverName changed"));
        // Same place, spelled differently: fine. A secret given again: fine.
        assert!(problems_after(|p| rw(p).url = "HTTPS://R.example:443/write".into()).is_empty());
        let given_again = problems_after(|p| {
            let rw = rw(p);
            rw.url = "https://new.example/w".into();
            rw.headers[0].value = Some(SecretString::new("new-tenant"));
            rw.authentication = None;
        });
        assert!(given_again.is_empty(), "{given_again:?}");
    }

    #[test]
    fn oauth2_credentials_follow_the_token_url() {
        let stored: MetricPipeline = serde_yaml::from_str(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: p}
spec:
  input: {prometheus: {enabled: true}}
  output:
    otlp:
      endpoint: https://o.example:4317
      authentication:
        oauth2: {tokenUrl: "https://auth.example/token", clientId: {value: id-1}, clientSecret: {value: secret-1}}
"#,
        )
        .unwrap();
        let mut incoming = stored.clone();
        redact(&mut incoming);
        let oauth2 = incoming
            .spec
            .output
            .otlp
            .as_mut()
            .unwrap()
            .authentication
            .as_mut()
            .unwrap()
            .oauth2
            .as_mut()
            .unwrap();
        oauth2.token_url = "https://attacker.example/token".into();
        let problems = restore_redacted(&mut incoming, Some(&stored));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| p
                .message
                .contains("spec.output.otlp.authentication.oauth2.tokenUrl changed")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_placeholder_without_a_stored_value_is_an_error() {
        let mut incoming = pipeline();
        redact(&mut incoming);
        let problems = restore_redacted(&mut incoming, None);
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.output.prometheusRemoteWrite.headers[0].value",
                "spec.output.prometheusRemoteWrite.authentication.basic.user.value",
                "spec.output.prometheusRemoteWrite.authentication.basic.password.value",
                "spec.output.prometheusRemoteWrite.tls.ca.value",
            ]
        );
    }
}
