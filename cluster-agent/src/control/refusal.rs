//! What a FAILED status reports about a refused configuration: every problem attributed
//! to its pipeline with the path inside it, bounded in number and length so that a
//! status never outgrows the observer's limit on an agent message (and breaks the
//! stream instead of reporting).

use kaas_pipeline::agent_config::AgentConfigError;
use kaas_proto::control::v1::ConfigError;

/// Errors listed in one FAILED status; the rest are counted in a last entry. The
/// observer shows ten per condition, and its limit on an agent message (1 MiB) must
/// never be reached by a status, or the stream would break instead of reporting.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// The longest error message reported, in bytes (longer ones are cut at a character
/// boundary): a validation message quotes the offending value, which may be long.
pub const MAX_REPORTED_ERROR_BYTES: usize = 1024;

/// At most [`MAX_REPORTED_ERRORS`] errors, each message at most
/// [`MAX_REPORTED_ERROR_BYTES`], and a last entry counting the ones left out.
pub(super) fn bounded_errors(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let left_out = errors.len().saturating_sub(MAX_REPORTED_ERRORS);
    errors.truncate(MAX_REPORTED_ERRORS);
    for error in &mut errors {
        for text in [
            &mut error.pipeline,
            &mut error.field_path,
            &mut error.message,
        ] {
            if text.len() > MAX_REPORTED_ERROR_BYTES {
                let mut end = MAX_REPORTED_ERROR_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
        }
    }
    if left_out > 0 {
        errors.push(whole_config_error(format!(
            "and {left_out} more errors, not listed"
        )));
    }
    errors
}

/// An error about the whole configuration, not one pipeline.
pub(super) fn whole_config_error(message: String) -> ConfigError {
    ConfigError {
        pipeline: String::new(),
        field_path: String::new(),
        message,
    }
}

/// Every problem in a refused configuration, each attributed to its pipeline (by the
/// `pipelines[i]` prefix of its path) with the path inside that pipeline.
pub fn config_errors(body: &[u8], error: &AgentConfigError) -> Vec<ConfigError> {
    let document: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let names: Vec<String> = document["pipelines"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let located: Vec<(String, String)> = match error {
        AgentConfigError::Parse(text) => {
            // serde_path_to_error's "path: message"; "." is its path for the root.
            match text.split_once(": ") {
                Some((path, message)) if !path.contains(' ') => {
                    // The inner error may repeat the path.
                    let message = message
                        .strip_prefix(path)
                        .and_then(|m| m.strip_prefix(": "))
                        .unwrap_or(message);
                    let path = if path == "." { "" } else { path };
                    vec![(path.to_owned(), message.to_owned())]
                }
                _ => vec![(String::new(), text.clone())],
            }
        }
        AgentConfigError::Invalid(errors) => errors
            .errors()
            .iter()
            .map(|e| (e.path.clone(), e.reason.clone()))
            .collect(),
    };
    located
        .into_iter()
        .map(|(path, message)| {
            let (pipeline, field_path) = split_pipeline_path(&path, &names);
            ConfigError {
                pipeline,
                field_path,
                message,
            }
        })
        .collect()
}

/// `pipelines[3].spec.x` -> (name of pipeline 3, `spec.x`); other paths stay whole.
fn split_pipeline_path(path: &str, names: &[String]) -> (String, String) {
    let Some(rest) = path.strip_prefix("pipelines[") else {
        return (String::new(), path.to_owned());
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return (String::new(), path.to_owned());
    };
    let Some(name) = index
        .parse::<usize>()
        .ok()
        .and_then(|i| names.get(i))
        .filter(|name| !name.is_empty())
    else {
        return (String::new(), path.to_owned());
    };
    (
        name.clone(),
        rest.strip_prefix('.').unwrap_or(rest).to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::agent_config::AgentConfig;

    use super::*;

    #[test]
    fn reported_errors_are_bounded_in_number_and_length() {
        let long = "é".repeat(MAX_REPORTED_ERROR_BYTES);
        let errors: Vec<ConfigError> = (0..MAX_REPORTED_ERRORS + 5)
            .map(|i| ConfigError {
                pipeline: format!("p{i}"),
                field_path: "spec.x".to_owned(),
                message: long.clone(),
            })
            .collect();
        let bounded = bounded_errors(errors);
        assert_eq!(bounded.len(), MAX_REPORTED_ERRORS + 1);
        assert!(
            bounded[..MAX_REPORTED_ERRORS]
                .iter()
                .all(|e| e.message.len() <= MAX_REPORTED_ERROR_BYTES + '…'.len_utf8())
        );
        assert_eq!(bounded[0].pipeline, "p0");
        assert_eq!(
            bounded[MAX_REPORTED_ERRORS].message,
            "and 5 more errors, not listed"
        );
        let few = vec![whole_config_error("short".to_owned())];
        assert_eq!(bounded_errors(few.clone()), few);
    }

    fn body(text: &str) -> Vec<u8> {
        let value: serde_json::Value = serde_yaml::from_str(text).unwrap();
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn validation_errors_carry_their_pipeline_and_path_inside_it() {
        let config = body(
            r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {name: good}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "https://a.example/write"}}
  - metadata: {name: broken}
    spec:
      input: {prometheus: {enabled: true}}
      output: {prometheusRemoteWrite: {url: "nope"}}
"#,
        );
        let error = AgentConfig::parse(
            std::str::from_utf8(&config).unwrap(),
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap_err();
        let errors = config_errors(&config, &error);
        assert_eq!(
            errors,
            [ConfigError {
                pipeline: "broken".to_owned(),
                field_path: "spec.output.prometheusRemoteWrite.url".to_owned(),
                message: r#"not an absolute http(s) URL: "nope""#.to_owned(),
            }]
        );
    }

    #[test]
    fn parse_errors_and_envelope_errors_concern_the_whole_configuration() {
        let config = body("apiVersion: v0\nkind: AgentConfig\n");
        let error = AgentConfig::parse(
            std::str::from_utf8(&config).unwrap(),
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap_err();
        let errors = config_errors(&config, &error);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pipeline, "");
        assert_eq!(errors[0].field_path, "apiVersion");

        let config = body(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {name: a}\n    spek: {}\n",
        );
        let error = AgentConfig::parse(
            std::str::from_utf8(&config).unwrap(),
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap_err();
        let errors = config_errors(&config, &error);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pipeline, "a", "{errors:?}");
        assert!(
            !errors[0].field_path.starts_with("pipelines["),
            "the path is relative to the pipeline: {errors:?}"
        );
        assert!(!errors[0].message.is_empty(), "{errors:?}");

        let errors = config_errors(
            b"\xff",
            &AgentConfigError::Parse("the body is not UTF-8".to_owned()),
        );
        assert_eq!(
            errors,
            [whole_config_error("the body is not UTF-8".to_owned())]
        );
    }
}
