//! The pipeline kinds a template can produce, and what is done to a filled-in spec of
//! each: read it with the kind's own type, narrow its inputs for an instance, and
//! validate it with the kind's own validator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::document::ValidatedResource;
use crate::errors::{FieldError, ValidationErrors};
use crate::input::NamespaceSelector;
use crate::logs::{LOG_KIND, LogPipeline, LogPipelineSpec, validate_log_pipeline};
use crate::pipeline::{KIND, MetricPipeline, MetricPipelineSpec, validate};
use crate::policy::ValidationContext;
use crate::selector::{ClusterSelector, PodSelector};
use crate::traces::{TRACE_KIND, TracePipeline, TracePipelineSpec, validate_trace_pipeline};

/// The kind of pipeline a template produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PipelineKind {
    /// A `MetricPipeline`.
    #[default]
    MetricPipeline,
    /// A `LogPipeline`.
    LogPipeline,
    /// A `TracePipeline`.
    TracePipeline,
}

impl PipelineKind {
    /// `kind` as written in documents.
    pub fn name(self) -> &'static str {
        match self {
            Self::MetricPipeline => KIND,
            Self::LogPipeline => LOG_KIND,
            Self::TracePipeline => TRACE_KIND,
        }
    }
}

/// A filled-in spec read as its kind's type.
#[derive(Clone, Debug)]
pub(crate) enum KindSpec {
    Metric(Box<MetricPipelineSpec>),
    Log(Box<LogPipelineSpec>),
    Trace(Box<TracePipelineSpec>),
}

/// Reads `spec` as `kind`'s spec; a shape error's path starts with `spec`.
pub(crate) fn read_spec(
    kind: PipelineKind,
    spec: serde_json::Value,
) -> Result<KindSpec, FieldError> {
    fn read<T: serde::de::DeserializeOwned>(spec: serde_json::Value) -> Result<T, FieldError> {
        serde_path_to_error::deserialize(spec).map_err(|error| {
            let path = error.path().to_string();
            FieldError {
                path: if path == "." {
                    "spec".to_owned()
                } else {
                    format!("spec.{path}")
                },
                reason: error.inner().to_string(),
            }
        })
    }
    Ok(match kind {
        PipelineKind::MetricPipeline => KindSpec::Metric(Box::new(read(spec)?)),
        PipelineKind::LogPipeline => KindSpec::Log(Box::new(read(spec)?)),
        PipelineKind::TracePipeline => KindSpec::Trace(Box::new(read(spec)?)),
    })
}

/// Validates `spec` as a pipeline with `metadata` in `context`, with the kind's own
/// validator.
pub(crate) fn validate_spec(
    spec: KindSpec,
    metadata: ObjectMeta,
    context: &ValidationContext,
) -> Result<ValidatedResource, ValidationErrors> {
    match spec {
        KindSpec::Metric(spec) => {
            let pipeline = MetricPipeline {
                metadata,
                spec: *spec,
                status: None,
            };
            validate(&pipeline, context).map(|p| ValidatedResource::Metric(Box::new(p)))
        }
        KindSpec::Log(spec) => {
            let pipeline = LogPipeline {
                metadata,
                spec: *spec,
                status: None,
            };
            validate_log_pipeline(&pipeline, context).map(|p| ValidatedResource::Log(Box::new(p)))
        }
        KindSpec::Trace(spec) => {
            let pipeline = TracePipeline {
                metadata,
                spec: *spec,
                status: None,
            };
            validate_trace_pipeline(&pipeline, context)
                .map(|p| ValidatedResource::Trace(Box::new(p)))
        }
    }
}

/// How an instance narrows a template's inputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Narrowing<'a> {
    /// Only these namespaces (of those the template's inputs take), when not empty.
    pub namespaces: &'a [String],
    /// Only pods these labels select, besides the template's own selector.
    pub pod_selector: Option<&'a PodSelector>,
    /// Only clusters this selects, besides the template's own selector.
    pub cluster_selector: &'a ClusterSelector,
}

/// A narrowing that cannot apply, with the instance field (below `spec`) it is about.
pub(crate) type NarrowingError = (&'static str, String);

impl KindSpec {
    /// Narrows the spec's inputs and clusters; never widens them. Every input the
    /// narrowing cannot apply to is an error.
    pub(crate) fn narrow(&mut self, narrowing: Narrowing<'_>) -> Vec<NarrowingError> {
        let mut errors = Vec::new();
        let namespaces = narrowing.namespaces;
        let mut selectors: Vec<(&str, &mut NamespaceSelector)> = Vec::new();
        let clusters = match self {
            Self::Metric(spec) => {
                let input = &mut spec.input;
                if !namespaces.is_empty()
                    && input
                        .static_targets
                        .as_ref()
                        .is_some_and(|s| !s.targets.is_empty())
                {
                    errors.push((
                        "inputs.namespaces",
                        "the template's static input scrapes fixed targets, which are in no \
                         namespace; it cannot be narrowed to namespaces"
                            .to_owned(),
                    ));
                }
                if narrowing.pod_selector.is_some() {
                    errors.push((
                        "inputs.podSelector",
                        "a MetricPipeline's inputs select workloads by namespace only; narrow \
                         with namespaces"
                            .to_owned(),
                    ));
                }
                if !namespaces.is_empty()
                    && (input.unsupported.as_ref()).is_some_and(|u| !u.scrape_configs.is_empty())
                {
                    errors.push((
                        "inputs.namespaces",
                        "the template's raw scrape configs (unsupported mode) are scraped as \
                         written, never narrowed; it cannot be narrowed to namespaces"
                            .to_owned(),
                    ));
                }
                for (name, workload) in [
                    ("prometheus", &mut input.prometheus),
                    ("istio", &mut input.istio),
                ] {
                    if let Some(workload) = workload {
                        selectors.push((name, &mut workload.namespaces));
                    }
                }
                if let Some(runtime) = &mut input.runtime {
                    selectors.push(("runtime", &mut runtime.namespaces));
                }
                for (name, push) in [
                    ("otlp", &mut input.otlp),
                    ("remoteWrite", &mut input.remote_write),
                ] {
                    if let Some(push) = push {
                        selectors.push((name, &mut push.namespaces));
                    }
                }
                &mut spec.cluster_selector
            }
            Self::Log(spec) => {
                let input = &mut spec.input;
                if !namespaces.is_empty() && input.node.as_ref().is_some_and(|n| n.enabled) {
                    errors.push((
                        "inputs.namespaces",
                        "the template's node input reads the node's journal and files, which are \
                         in no namespace; it cannot be narrowed to namespaces"
                            .to_owned(),
                    ));
                }
                if let Some(wanted) = narrowing.pod_selector {
                    if input.otlp.as_ref().is_some_and(|o| o.enabled) {
                        errors.push((
                            "inputs.podSelector",
                            "the template's otlp input takes pushed records, whose pods' labels \
                             it cannot check; narrow with namespaces"
                                .to_owned(),
                        ));
                    }
                    if let Some(runtime) = &mut input.runtime {
                        let selector = runtime.pod_selector.get_or_insert_with(Default::default);
                        if let Err(reason) = intersect(selector, wanted) {
                            errors.push(("inputs.podSelector", reason));
                        }
                    }
                }
                if let Some(runtime) = &mut input.runtime {
                    selectors.push(("runtime", &mut runtime.namespaces));
                }
                if let Some(push) = &mut input.otlp {
                    selectors.push(("otlp", &mut push.namespaces));
                }
                &mut spec.cluster_selector
            }
            Self::Trace(spec) => {
                if narrowing.pod_selector.is_some() {
                    errors.push((
                        "inputs.podSelector",
                        "a TracePipeline takes pushed spans, whose pods' labels it cannot check; \
                         narrow with namespaces"
                            .to_owned(),
                    ));
                }
                selectors.push(("otlp and zipkin", &mut spec.input.namespaces));
                &mut spec.cluster_selector
            }
        };
        if !namespaces.is_empty() {
            for (input, selector) in selectors {
                if let Err(reason) = narrow_namespaces(selector, namespaces, input) {
                    errors.push(("inputs.namespaces", reason));
                }
            }
        }
        if let Err(reason) = intersect(clusters, narrowing.cluster_selector) {
            errors.push(("clusterSelector", reason));
        }
        errors
    }
}

/// Keeps only those of `wanted` that `selector` admits, as its `include` list.
fn narrow_namespaces(
    selector: &mut NamespaceSelector,
    wanted: &[String],
    input: &str,
) -> Result<(), String> {
    let kept: Vec<String> = wanted
        .iter()
        .filter(|namespace| selector.admits(namespace))
        .cloned()
        .collect();
    if kept.is_empty() {
        return Err(format!(
            "the template's {input} input takes none of {}; narrowing would leave it nothing",
            wanted.join(", ")
        ));
    }
    *selector = NamespaceSelector {
        include: kept,
        exclude: Vec::new(),
        system: false,
    };
    Ok(())
}

/// Adds `more`'s requirements to `selector`, so it selects what both select.
fn intersect(selector: &mut ClusterSelector, more: &ClusterSelector) -> Result<(), String> {
    for (label, value) in &more.match_labels {
        match selector.match_labels.get(label) {
            Some(own) if own != value => {
                return Err(format!(
                    "the template selects {label}={own} and this {label}={value}; together they \
                     select nothing"
                ));
            }
            _ => {
                selector.match_labels.insert(label.clone(), value.clone());
            }
        }
    }
    selector
        .match_expressions
        .extend(more.match_expressions.iter().cloned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_only_namespaces_the_template_takes() {
        let mut selector = NamespaceSelector {
            exclude: vec!["legacy".to_owned()],
            ..Default::default()
        };
        let wanted = ["shop", "legacy", "kube-system"].map(str::to_owned);
        narrow_namespaces(&mut selector, &wanted, "runtime").unwrap();
        assert_eq!(selector.include, ["shop"]);
        assert!(!selector.admits("legacy") && !selector.admits("kube-system"));
        let mut only_legacy = NamespaceSelector {
            include: vec!["legacy".to_owned()],
            ..Default::default()
        };
        let refused = narrow_namespaces(&mut only_legacy, &wanted[..1], "otlp").unwrap_err();
        assert!(refused.contains("takes none of shop"), "{refused}");
    }

    /// Raw scrape configs are run as written: an instance narrowed to namespaces would
    /// scrape beyond them, so the narrowing is refused instead.
    #[test]
    fn raw_scrape_configs_refuse_a_namespace_narrowing() {
        let spec = serde_json::json!({
            "input": {"unsupported": {"scrapeConfigs": [{
                "job_name": "pods",
                "kubernetes_sd_configs": [{"role": "pod"}],
            }]}},
            "output": {"prometheusRemoteWrite": {"url": "https://backend.example/write"}},
        });
        let mut read = read_spec(PipelineKind::MetricPipeline, spec).expect("a metric spec");
        let namespaces = ["shop".to_owned()];
        let narrowing = Narrowing {
            namespaces: &namespaces,
            pod_selector: None,
            cluster_selector: &ClusterSelector::default(),
        };
        let errors = read.narrow(narrowing);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "inputs.namespaces");
        assert!(errors[0].1.contains("raw scrape configs"), "{errors:?}");
    }

    #[test]
    fn selectors_intersect_and_conflicts_are_refused() {
        let mut own = ClusterSelector::default();
        own.match_labels.insert("env".into(), "prod".into());
        let mut more = ClusterSelector::default();
        more.match_labels.insert("team".into(), "shop".into());
        intersect(&mut own, &more).unwrap();
        assert_eq!(own.match_labels.len(), 2);
        more.match_labels.insert("env".into(), "dev".into());
        assert!(
            intersect(&mut own, &more)
                .unwrap_err()
                .contains("select nothing")
        );
    }
}
