//! Instances the agent renders: a [`PipelineInstance`] with a non-secret placeholder
//! bound to a Secret or ConfigMap key of the workload cluster, which only the agent
//! reads. The observer sends such an instance as a [`PendingInstance`] (in
//! `AgentConfig.pipelineInstances`) instead of its pipeline: the template generation it
//! runs and the instance itself. The agent checks it as the observer did
//! ([`validate_pending`]: the template and the instance validate, and the instance
//! renders with every key-bound value's sample), reads the keys
//! ([`ValidatedPendingInstance::key_refs`]) and renders it with what it read
//! ([`ValidatedPendingInstance::render`]), through [`render`] with
//! [`KeyValues::Resolved`], in its own validation context. Only then is it a pipeline
//! like any other.
//!
//! A key that does not exist fails the rendering at the binding
//! (`spec.bindings["name"].configMapKeyRef`), as does a value the pipeline's validator
//! refuses where it stands; no error quotes a value read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::document::ValidatedResource;
use crate::errors::ValidationErrors;
use crate::policy::ValidationContext;

use super::instance::{
    KeyRef, KeyValues, PendingBinding, PipelineInstance, ValidatedInstance, render,
    validate_instance,
};
use super::{PipelineTemplate, ValidatedTemplate, validate_template};

/// An instance sent for the agent to render: the template as it was at the generation
/// the instance runs, and the instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingInstance {
    /// The template, as it was at `templateGeneration`.
    pub template: PipelineTemplate,
    /// The template generation the instance runs.
    pub template_generation: i64,
    /// The instance.
    pub instance: PipelineInstance,
}

/// A [`PendingInstance`] that passed [`validate_pending`].
#[derive(Clone, Debug)]
pub struct ValidatedPendingInstance {
    template: ValidatedTemplate,
    generation: i64,
    instance: ValidatedInstance,
    pending: Vec<PendingBinding>,
    preview: ValidatedResource,
}

impl ValidatedPendingInstance {
    /// The instance's name, which its pipeline gets.
    pub fn name(&self) -> &str {
        self.instance.name()
    }

    /// The kind of its pipeline as written in documents.
    pub fn kind(&self) -> &'static str {
        self.preview.kind()
    }

    /// The template generation it runs.
    pub fn template_generation(&self) -> i64 {
        self.generation
    }

    /// The bindings the agent reads before rendering, each with its placeholder.
    pub fn pending(&self) -> &[PendingBinding] {
        &self.pending
    }

    /// Every key the agent reads for it.
    pub fn key_refs(&self) -> impl Iterator<Item = &KeyRef> {
        self.pending.iter().map(|binding| &binding.key)
    }

    /// The pipeline rendered with each pending binding's sample: for deciding where
    /// it runs (its kind, its cluster selector, the roles its inputs need), never for
    /// running.
    pub fn preview(&self) -> &ValidatedResource {
        &self.preview
    }

    /// Renders the instance with the values read (`values`, by key: a key missing
    /// there does not exist) and validates the pipeline in `context`.
    pub fn render(
        &self,
        values: &BTreeMap<KeyRef, String>,
        context: &ValidationContext,
    ) -> Result<ValidatedResource, ValidationErrors> {
        let rendered = render(
            &self.template,
            self.generation,
            &self.instance,
            KeyValues::Resolved(values),
            context,
        )?;
        // Resolved values leave nothing pending.
        rendered.into_pipeline().map_err(|pending| {
            ValidationErrors(
                pending
                    .into_iter()
                    .map(|binding| crate::errors::FieldError {
                        path: crate::errors::key("spec.bindings", &binding.placeholder),
                        reason: format!("{} was not read", binding.key),
                    })
                    .collect(),
            )
        })
    }

    /// The document the observer sends.
    pub fn document(&self) -> PendingInstance {
        PendingInstance {
            template: self.template.resource().clone(),
            template_generation: self.generation,
            instance: self.instance.resource().clone(),
        }
    }
}

/// Builds what the observer sends for `instance`, rendered from generation
/// `generation` of `template`, after checking it as the agent will
/// ([`validate_pending`]'s rendering with samples).
pub fn pending_instance(
    template: &ValidatedTemplate,
    generation: i64,
    instance: &ValidatedInstance,
    context: &ValidationContext,
) -> Result<ValidatedPendingInstance, ValidationErrors> {
    let rendered = render(template, generation, instance, KeyValues::Deferred, context)?;
    Ok(ValidatedPendingInstance {
        template: template.clone(),
        generation,
        instance: instance.clone(),
        pending: rendered.pending().to_vec(),
        preview: rendered.preview().clone(),
    })
}

/// Checks a [`PendingInstance`] in `context`: its template and its instance validate,
/// the instance renders with every key-bound value's sample, and its generation counts
/// from 1. Errors are at their paths inside the template (`template.…`) or the instance
/// (`instance.…`).
pub fn validate_pending(
    pending: &PendingInstance,
    context: &ValidationContext,
) -> Result<ValidatedPendingInstance, ValidationErrors> {
    let prefixed = |prefix: &str, errors: ValidationErrors| {
        ValidationErrors(
            errors
                .0
                .into_iter()
                .map(|mut e| {
                    e.path = crate::errors::field(prefix, &e.path);
                    e
                })
                .collect(),
        )
    };
    if pending.template_generation < 1 {
        return Err(ValidationErrors::single(
            "templateGeneration",
            "a generation counts from 1",
        ));
    }
    let template =
        validate_template(&pending.template, context).map_err(|e| prefixed("template", e))?;
    let instance =
        validate_instance(&pending.instance, context).map_err(|e| prefixed("instance", e))?;
    pending_instance(&template, pending.template_generation, &instance, context)
        .map_err(|e| prefixed("instance", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::KeySource;

    const TEMPLATE: &str = r#"
metadata: {name: remote-write}
spec:
  pipelineKind: MetricPipeline
  placeholders:
    - {name: url, type: url, description: Where to write., required: true}
    - {name: tenant, type: string, description: The tenant header., default: shop}
  template:
    spec:
      input: {prometheus: {enabled: true}}
      output:
        prometheusRemoteWrite:
          url: "%{url}"
          headers: [{name: X-Tenant, value: "%{tenant}"}]
"#;

    const INSTANCE: &str = r#"
metadata: {name: shop-metrics}
spec:
  template: {name: remote-write}
  bindings:
    url: {configMapKeyRef: {name: backend, namespace: kaas-observer, key: url}}
    tenant: {secretKeyRef: {name: backend, namespace: kaas-observer, key: tenant}}
"#;

    fn context() -> ValidationContext {
        ValidationContext::tenant_default()
    }

    fn document() -> PendingInstance {
        PendingInstance {
            template: serde_yaml::from_str(TEMPLATE).unwrap(),
            template_generation: 2,
            instance: serde_yaml::from_str(INSTANCE).unwrap(),
        }
    }

    fn key(source: KeySource, key: &str) -> KeyRef {
        KeyRef {
            source,
            namespace: "kaas-observer".into(),
            name: "backend".into(),
            key: key.into(),
        }
    }

    fn url_of(pipeline: &ValidatedResource) -> String {
        match pipeline {
            ValidatedResource::Metric(p) => {
                let output = p.spec().output.prometheus_remote_write.as_ref().unwrap();
                output.url.plain().expect("a written URL").to_owned()
            }
            other => panic!("a MetricPipeline, got {}", other.kind()),
        }
    }

    #[test]
    fn a_pending_instance_renders_with_the_values_read() {
        let pending = validate_pending(&document(), &context()).expect("valid");
        assert_eq!(
            (pending.name(), pending.kind()),
            ("shop-metrics", "MetricPipeline")
        );
        assert_eq!(pending.template_generation(), 2);
        let keys: Vec<&KeyRef> = pending.key_refs().collect();
        assert_eq!(
            keys,
            [
                &key(KeySource::ConfigMap, "url"),
                &key(KeySource::Secret, "tenant")
            ]
        );
        let values = BTreeMap::from([
            (
                key(KeySource::ConfigMap, "url"),
                "https://mimir.shop.example/api/v1/push".to_owned(),
            ),
            (key(KeySource::Secret, "tenant"), "shop-7".to_owned()),
        ]);
        let pipeline = pending.render(&values, &context()).expect("renders");
        assert_eq!(url_of(&pipeline), "https://mimir.shop.example/api/v1/push");
        let ValidatedResource::Metric(metric) = &pipeline else {
            unreachable!()
        };
        let header = &metric
            .spec()
            .output
            .prometheus_remote_write
            .as_ref()
            .unwrap()
            .headers[0];
        assert_eq!(header.value.as_ref().unwrap().expose(), "shop-7");
        // What the observer sends reads back as the same instance.
        let again = validate_pending(&pending.document(), &context()).expect("valid again");
        assert_eq!(
            url_of(&again.render(&values, &context()).unwrap()),
            url_of(&pipeline)
        );
    }

    #[test]
    fn a_missing_key_and_a_refused_value_name_the_binding_never_the_value() {
        let pending = validate_pending(&document(), &context()).unwrap();
        let only_tenant = BTreeMap::from([(key(KeySource::Secret, "tenant"), "shop".to_owned())]);
        assert_eq!(
            pending
                .render(&only_tenant, &context())
                .unwrap_err()
                .lines(),
            [
                r#"spec.bindings["url"].configMapKeyRef: ConfigMap kaas-observer/backend key "url" does not exist"#
            ]
        );
        let mut bad = only_tenant.clone();
        bad.insert(
            key(KeySource::ConfigMap, "url"),
            "ftp://user:hunter2@x".to_owned(),
        );
        let errors = pending.render(&bad, &context()).unwrap_err().lines();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(r#"spec.bindings["url"].configMapKeyRef: "#),
            "{errors:?}"
        );
        assert!(!errors[0].contains("hunter2"), "{errors:?}");
        // A header value the validator refuses where it stands is blamed on its binding.
        let mut header = BTreeMap::from([(
            key(KeySource::ConfigMap, "url"),
            "https://mimir.shop.example/api/v1/push".to_owned(),
        )]);
        header.insert(key(KeySource::Secret, "tenant"), "a\nX-Evil: 1".to_owned());
        let errors = pending.render(&header, &context()).unwrap_err().lines();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(r#"spec.bindings["tenant"]"#),
            "{errors:?}"
        );
    }

    #[test]
    fn a_pending_instance_is_checked_at_its_paths() {
        let mut document = document();
        document.template_generation = 0;
        assert_eq!(
            validate_pending(&document, &context()).unwrap_err().lines(),
            ["templateGeneration: a generation counts from 1"]
        );
        let mut document = self::document();
        document
            .instance
            .spec
            .bindings
            .get_mut("url")
            .unwrap()
            .config_map_key_ref
            .as_mut()
            .unwrap()
            .namespace = "kube-system".into();
        let errors = validate_pending(&document, &context()).unwrap_err().lines();
        assert!(
            errors[0].starts_with(r#"instance.spec.bindings["url"].configMapKeyRef.namespace"#),
            "{errors:?}"
        );
        let mut document = self::document();
        document.template.spec.placeholders.clear();
        let errors = validate_pending(&document, &context()).unwrap_err().lines();
        assert!(
            errors[0].starts_with("template.spec.template.spec"),
            "{errors:?}"
        );
    }
}
