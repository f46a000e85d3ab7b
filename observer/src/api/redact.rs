//! Inline secret values in API bodies: hidden as `***` in every answer, and `***` in a
//! request keeps the stored value.
//!
//! Inline values (`value` of a header or of a [`ValueSource`](kaas_pipeline::secret::ValueSource))
//! only occur in a pipeline's output; [`Output::inline_secrets_mut`] finds every one, the
//! same walk the store uses to seal them. [`for_each_inline_secret`] gives each two names:
//! the field path used in error messages (headers by index, as validation writes them)
//! and a matching key that names headers by header name, so reordering headers in an
//! edited document still finds each stored value.

use std::collections::BTreeMap;

use kaas_pipeline::MetricPipeline;
use kaas_pipeline::output::Output;
use kaas_pipeline::secret::SecretString;

use super::model::FieldProblem;

/// What every inline secret reads in an answer, and what keeps the stored value in a
/// request.
pub use crate::store::MASKED_SECRET as REDACTED;

/// Calls `visit(path, key, value)` for every inline secret value of `pipeline`; `path`
/// starts with `spec.output.`.
pub fn for_each_inline_secret(
    pipeline: &mut MetricPipeline,
    visit: &mut dyn FnMut(&str, &str, &mut SecretString),
) {
    let output: &mut Output = &mut pipeline.spec.output;
    let header_names = |headers: &[kaas_pipeline::output::Header]| -> Vec<String> {
        headers
            .iter()
            .map(|h| h.name.to_ascii_lowercase())
            .collect()
    };
    let rw_headers = output
        .prometheus_remote_write
        .as_ref()
        .map(|rw| header_names(&rw.headers))
        .unwrap_or_default();
    let otlp_headers = output
        .otlp
        .as_ref()
        .map(|otlp| header_names(&otlp.headers))
        .unwrap_or_default();
    for (relative, value) in output.inline_secrets_mut() {
        let path = format!("spec.output.{relative}");
        let key = header_key(&relative, "prometheusRemoteWrite", &rw_headers)
            .or_else(|| header_key(&relative, "otlp", &otlp_headers))
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
pub fn redact(pipeline: &mut MetricPipeline) {
    crate::store::mask_secrets(pipeline);
}

/// Replaces each `***` in `incoming` with the value stored at the same place in
/// `stored`. A `***` with nothing stored behind it is an error at its field path.
pub fn restore_redacted(
    incoming: &mut MetricPipeline,
    stored: Option<&MetricPipeline>,
) -> Vec<FieldProblem> {
    let mut known = BTreeMap::new();
    if let Some(stored) = stored {
        let mut stored = stored.clone();
        for_each_inline_secret(&mut stored, &mut |_, key, value| {
            known.insert(key.to_owned(), value.clone());
        });
    }
    let mut problems = Vec::new();
    for_each_inline_secret(incoming, &mut |path, key, value| {
        if value.expose() != REDACTED {
            return;
        }
        match known.get(key) {
            Some(stored) => *value = stored.clone(),
            None => problems.push(FieldProblem {
                path: path.to_owned(),
                message: format!(
                    "{REDACTED:?} keeps a stored secret, but none is stored here; give the value"
                ),
            }),
        }
    });
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

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
