//! Template instances the agent renders itself: those whose non-secret placeholders
//! are bound to a key of a Secret or ConfigMap of this cluster, which the observer never
//! reads ([`kaas_pipeline::templates::pending`]). Before a configuration is applied,
//! [`InstanceRenderer::render`] reads each instance's keys (Secrets and ConfigMaps of
//! the namespaces the provider allows only; validation refused any other, and no other
//! is watched), renders it with what it read through the model's own `render` in the
//! agent's validation context, and puts the pipeline in the configuration's list of its
//! kind, where it runs like any pipeline.
//!
//! # When rendering fails
//! * A key that does not exist: the instance's last good rendering keeps running (none
//!   when it never rendered), and the instance is reported with `SecretMissing` and the
//!   binding ([`InstanceProblem`], added to every health report) until the key exists.
//! * A value the pipeline's validator refuses where it stands: the configuration is
//!   refused (FAILED, the agent stays on its last-known-good), the error naming the
//!   binding, never the value.
//!
//! # Rotation
//! The keys are read from watched stores ([`crate::discovery::kubernetes::secrets`],
//! [`crate::discovery::kubernetes::config_maps`]), so a changed Secret or ConfigMap
//! is what the next rendering reads. The control stream renders again at every health
//! interval ([`crate::agent::ConfiguredAgent::refresh_instances`]) and applies the
//! configuration again when a rendering changed: the next refresh after a watch event
//! runs the new value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use kaas_pipeline::ValidationContext;
use kaas_pipeline::agent_config::ValidatedAgentConfig;
use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::templates::{KeyRef, KeySource, ValidatedPendingInstance};

use super::{PipelineId, PipelineKind};
use crate::discovery::kubernetes::config_maps::KubernetesConfigMaps;
use crate::internal_events::ErrorReason;
use crate::outbound::auth::SecretStore;

/// Where `configMapKeyRef` values come from: the cluster's ConfigMaps, or nothing.
pub trait ConfigMapStore: Send + Sync + fmt::Debug {
    /// The value of `key` in ConfigMap `namespace/name`, if it exists.
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<String>;
}

impl ConfigMapStore for KubernetesConfigMaps {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        KubernetesConfigMaps::get(self, namespace, name, key)
    }
}

/// A store without ConfigMaps: agents outside Kubernetes, tests.
#[derive(Debug, Default)]
pub struct NoConfigMaps;

impl ConfigMapStore for NoConfigMaps {
    fn get(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// The stores an instance's keys are read from.
#[derive(Clone, Debug)]
pub struct InstanceKeys {
    /// Secrets.
    pub secrets: Arc<dyn SecretStore>,
    /// ConfigMaps.
    pub config_maps: Arc<dyn ConfigMapStore>,
}

impl InstanceKeys {
    /// The values of `keys` that exist, by key.
    fn read<'a>(&self, keys: impl Iterator<Item = &'a KeyRef>) -> BTreeMap<KeyRef, String> {
        keys.filter_map(|key| {
            let value = match key.source {
                KeySource::Secret => self
                    .secrets
                    .get(&key.namespace, &key.name, &key.key)
                    .map(|secret| secret.expose().to_owned()),
                KeySource::ConfigMap => self.config_maps.get(&key.namespace, &key.name, &key.key),
            }?;
            Some((key.clone(), value))
        })
        .collect()
    }
}

/// An instance that does not run as bound, for health reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceProblem {
    /// Its pipeline.
    pub pipeline: PipelineId,
    /// Why: `SecretMissing`.
    pub reason: ErrorReason,
    /// What is wrong, naming the binding (`spec.bindings["name"]…`) and the key, never
    /// a value.
    pub message: String,
    /// Whether its last good rendering runs meanwhile.
    pub last_good_runs: bool,
}

/// What rendering a configuration's instances found.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Instances whose bound value the pipeline's validator refused: the configuration
    /// must be refused, each with every error (`path: reason`).
    pub refused: Vec<(PipelineId, Vec<String>)>,
    /// Whether any instance's rendering differs from the one before.
    pub changed: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct InstanceRenderer {
    /// The last rendering of each instance that passed validation.
    last_good: BTreeMap<PipelineId, ValidatedResource>,
    /// The instances that do not run as bound now.
    problems: BTreeMap<PipelineId, InstanceProblem>,
}

fn kind_of(instance: &ValidatedPendingInstance) -> PipelineKind {
    match instance.kind() {
        kaas_pipeline::logs::LOG_KIND => PipelineKind::Log,
        kaas_pipeline::traces::TRACE_KIND => PipelineKind::Trace,
        _ => PipelineKind::Metric,
    }
}

impl InstanceRenderer {
    /// Renders `config`'s instances into its pipeline lists (see the module
    /// documentation), reading their keys from `keys`, validating in `context`.
    pub fn render(
        &mut self,
        config: &mut ValidatedAgentConfig,
        keys: &InstanceKeys,
        context: &ValidationContext,
    ) -> Rendered {
        let mut rendered = Rendered::default();
        let mut problems = BTreeMap::new();
        let mut good = BTreeMap::new();
        for instance in std::mem::take(&mut config.pipeline_instances) {
            let id = PipelineId {
                kind: kind_of(&instance),
                name: instance.name().to_owned(),
            };
            let values = keys.read(instance.key_refs());
            let missing: Vec<String> = (instance.pending().iter())
                .filter(|binding| !values.contains_key(&binding.key))
                .map(|binding| {
                    let field = match binding.key.source {
                        KeySource::Secret => "secretKeyRef",
                        KeySource::ConfigMap => "configMapKeyRef",
                    };
                    format!(
                        "spec.bindings[{:?}].{field}: {} does not exist",
                        binding.placeholder, binding.key
                    )
                })
                .collect();
            let pipeline = if missing.is_empty() {
                match instance.render(&values, context) {
                    Ok(pipeline) => Some(pipeline),
                    Err(errors) => {
                        rendered.refused.push((id.clone(), errors.lines()));
                        None
                    }
                }
            } else {
                let last_good_runs = self.last_good.contains_key(&id);
                problems.insert(
                    id.clone(),
                    InstanceProblem {
                        pipeline: id.clone(),
                        reason: ErrorReason::SecretMissing,
                        message: format!(
                            "the instance cannot be rendered: {}; {}",
                            missing.join("; "),
                            if last_good_runs {
                                "its last good rendering keeps running"
                            } else {
                                "it does not run until the key exists"
                            }
                        ),
                        last_good_runs,
                    },
                );
                None
            };
            let pipeline = match pipeline {
                Some(pipeline) => {
                    let before = self.last_good.get(&id).map(resource_json);
                    rendered.changed |= before != Some(resource_json(&pipeline));
                    pipeline
                }
                None => match self.last_good.get(&id) {
                    Some(last) => last.clone(),
                    None => continue,
                },
            };
            good.insert(id, pipeline.clone());
            match pipeline {
                ValidatedResource::Metric(p) => config.pipelines.push(*p),
                ValidatedResource::Log(p) => config.log_pipelines.push(*p),
                ValidatedResource::Trace(p) => config.trace_pipelines.push(*p),
            }
        }
        // Instances no longer configured are forgotten.
        self.last_good = good;
        self.problems = problems;
        rendered
    }

    /// The instances that do not run as bound now.
    pub fn problems(&self) -> impl Iterator<Item = &InstanceProblem> {
        self.problems.values()
    }
}

/// A rendering as JSON, to tell whether it changed.
fn resource_json(pipeline: &ValidatedResource) -> Option<serde_json::Value> {
    match pipeline {
        ValidatedResource::Metric(p) => serde_json::to_value(p.resource()).ok(),
        ValidatedResource::Log(p) => serde_json::to_value(p.resource()).ok(),
        ValidatedResource::Trace(p) => serde_json::to_value(p.resource()).ok(),
    }
}

#[cfg(test)]
mod tests;
