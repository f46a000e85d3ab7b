//! The provider's pipeline templates: read from `--provider-templates-dir` (every
//! `*.yaml` file in it), or the ones bundled from `examples/templates/` into the
//! binary, validated under the tenant policy before anything starts, and stored
//! ([`Store::sync_provider_templates`]) once the store is open, each a new generation
//! when it changed. One that would break the instances following it is kept at its
//! stored generation and logged, like a refused tenant change.

use std::path::Path;

use kaas_pipeline::templates::{ValidatedTemplate, parse_templates};
use kaas_pipeline::{ProviderPolicy, ValidationContext};

use super::ServeError;
use crate::store::Store;

/// The templates bundled in the binary, by file name: every file of
/// `examples/templates/` (a test compares the list with the directory).
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "elasticsearch-dedot.yaml",
        include_str!("../../../examples/templates/elasticsearch-dedot.yaml"),
    ),
    (
        "grafana-cloud-remote-write.yaml",
        include_str!("../../../examples/templates/grafana-cloud-remote-write.yaml"),
    ),
    (
        "otlp-oauth2.yaml",
        include_str!("../../../examples/templates/otlp-oauth2.yaml"),
    ),
];

const FLAG: &str = "provider-templates-dir";

/// The provider's templates from `dir` (the bundled ones without it), each validated
/// in `policy`; every invalid document is named.
pub fn provider_templates(
    dir: Option<&Path>,
    policy: &ProviderPolicy,
) -> Result<Vec<ValidatedTemplate>, ServeError> {
    let files: Vec<(String, String)> = match dir {
        None => BUNDLED
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect(),
        Some(dir) => read_dir(dir)?,
    };
    let context = ValidationContext::observer(policy.clone());
    let mut templates = Vec::new();
    let mut problems = Vec::new();
    for (file, text) in files {
        for document in parse_templates(&text, &context) {
            match document.outcome {
                Ok(template) => templates.push(template),
                Err(errors) => problems.push(ServeError::Flag {
                    flag: FLAG,
                    reason: format!("{file}, {}: {errors}", document.location),
                }),
            }
        }
    }
    if problems.is_empty() {
        Ok(templates)
    } else {
        Err(ServeError::Flags(problems))
    }
}

/// Every `*.yaml` file directly in `dir`, by name.
fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, ServeError> {
    let io = |source| ServeError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "yaml") && path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|source| ServeError::Io {
                path: path.clone(),
                source,
            })?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            files.push((name.unwrap_or_default(), text));
        }
    }
    files.sort();
    Ok(files)
}

/// Stores `templates` as the provider's; refusals are logged.
pub async fn sync(store: &Store, templates: Vec<ValidatedTemplate>, policy: &ProviderPolicy) {
    let context = ValidationContext::observer(policy.clone());
    for (name, result) in store.sync_provider_templates(templates, &context).await {
        match result {
            Ok(written) if written.changed => tracing::info!(
                template = %name,
                generation = written.stored.generation,
                rerendered = written.rerendered.len(),
                "provider template stored"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(
                template = %name,
                %error,
                "provider template not stored; its stored generation stays"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_examples_templates_is_bundled_and_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/templates");
        let on_disk: Vec<String> = read_dir(&dir)
            .expect("examples/templates")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let bundled: Vec<&str> = BUNDLED.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            on_disk, bundled,
            "bundle every template of examples/templates"
        );
        let templates = provider_templates(None, &ProviderPolicy::tenant_default())
            .expect("the bundled templates are valid");
        assert_eq!(templates.len(), BUNDLED.len());
    }

    #[test]
    fn an_invalid_template_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.yaml"),
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: PipelineTemplate\nmetadata: {name: broken}\nspec: {pipelineKind: TracePipeline}\n",
        )
        .unwrap();
        let error = provider_templates(Some(dir.path()), &ProviderPolicy::tenant_default())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--provider-templates-dir: broken.yaml, document 1: "),
            "{error}"
        );
    }
}
