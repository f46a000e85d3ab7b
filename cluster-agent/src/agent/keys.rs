//! What an applied configuration reads from the cluster: the Secrets its pipelines'
//! `secretKeyRef`s name, and the Secret and ConfigMap keys its template instances are
//! bound to ([`crate::pipeline::instances`]). [`ConfiguredAgent::apply`] watches their
//! namespaces (those the provider allows only) before it renders the instances and
//! applies the pipelines; [`ConfiguredAgent::refresh_instances`] renders the instances
//! again with what the watches hold now.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kaas_pipeline::agent_config::ValidatedAgentConfig;
use kaas_pipeline::templates::KeySource;
use kaas_pipeline::{SecretNamespaces, ValidationContext};

use super::{ApplyReport, CLUSTER_RESOURCE_ATTRIBUTE, ConfiguredAgent, log_report};
use crate::discovery::kubernetes::config_maps::KubernetesConfigMaps;
use crate::discovery::kubernetes::secrets::KubernetesSecrets;
use crate::outbound::auth::{NoSecrets, SecretStore};
use crate::pipeline::instances::{
    ConfigMapStore, InstanceKeys, InstanceProblem, InstanceRenderer, NoConfigMaps,
};

/// The watched namespaces and the stores they fill, the instance renderer, and the
/// configuration last applied (its instances not rendered yet).
#[derive(Debug)]
pub(super) struct WatchedKeys {
    secret_namespaces: BTreeSet<String>,
    config_map_namespaces: BTreeSet<String>,
    secrets: Arc<dyn SecretStore>,
    config_maps: Arc<dyn ConfigMapStore>,
    renderer: InstanceRenderer,
    current: Option<ValidatedAgentConfig>,
}

impl Default for WatchedKeys {
    fn default() -> Self {
        Self {
            secret_namespaces: BTreeSet::new(),
            config_map_namespaces: BTreeSet::new(),
            secrets: Arc::new(NoSecrets),
            config_maps: Arc::new(NoConfigMaps),
            renderer: InstanceRenderer::default(),
            current: None,
        }
    }
}

/// The namespaces of `source` whose keys `config` reads (pipelines' `secretKeyRef`s for
/// Secrets, instances' bindings for both) and the agent may read: validation already
/// refused any other, and no watch ever watches one (whatever reaches this point).
pub(super) fn key_namespaces(
    config: &ValidatedAgentConfig,
    source: KeySource,
    allowed: &SecretNamespaces,
) -> BTreeSet<String> {
    let mut named: Vec<&str> = Vec::new();
    if source == KeySource::Secret {
        let metric_refs = config.pipelines.iter().flat_map(|p| p.secret_refs());
        let log_refs = config.log_pipelines.iter().flat_map(|p| p.secret_refs());
        let trace_refs = config.trace_pipelines.iter().flat_map(|p| p.secret_refs());
        named.extend(
            metric_refs
                .chain(log_refs)
                .chain(trace_refs)
                .map(|r| r.namespace.as_str()),
        );
    }
    let instance_keys = config.pipeline_instances.iter().flat_map(|i| i.key_refs());
    named.extend(
        instance_keys
            .filter(|key| key.source == source)
            .map(|key| key.namespace.as_str()),
    );
    let mut watched = BTreeSet::new();
    for namespace in named {
        if allowed.allows(namespace) {
            watched.insert(namespace.to_owned());
        } else {
            tracing::error!(
                %namespace,
                ?source,
                "a pipeline references a key in a namespace outside --secret-namespaces; it is not watched"
            );
        }
    }
    watched
}

/// The namespaces whose Secrets the configuration's pipelines and instances reference
/// and the agent may read.
pub(super) fn secret_namespaces(
    config: &ValidatedAgentConfig,
    allowed: &SecretNamespaces,
) -> BTreeSet<String> {
    key_namespaces(config, KeySource::Secret, allowed)
}

impl ConfiguredAgent {
    /// Makes the running pipelines match `config` through [`super::Agent::apply`]:
    /// watches the Secrets and ConfigMaps it reads first, renders its template
    /// instances with their keys, then applies; logs what changed and marks the agent
    /// ready. An instance whose bound value its pipeline's validator refuses fails the
    /// whole configuration (nothing of it is applied), each such instance in
    /// [`ApplyReport::failed`] with every error at its binding.
    pub async fn apply(&mut self, config: ValidatedAgentConfig) -> ApplyReport {
        if let Some(cluster) = config.external_labels.get("cluster") {
            self.telemetry_resource
                .set(CLUSTER_RESOURCE_ATTRIBUTE, cluster);
        }
        self.watch_keys(&config);
        self.keys.current = Some(config.clone());
        let mut config = config;
        let keys = self.instance_keys();
        let context = ValidationContext::observer(self.policy.clone());
        let rendered = self.keys.renderer.render(&mut config, &keys, &context);
        if !rendered.refused.is_empty() {
            let report = ApplyReport {
                failed: (rendered.refused.into_iter())
                    .map(|(pipeline, errors)| (pipeline, errors.join("; ")))
                    .collect(),
                ..ApplyReport::default()
            };
            log_report(&report);
            return report;
        }
        let report = self.agent.apply(config).await;
        log_report(&report);
        self.reloads.applied.store(true, Ordering::Relaxed);
        report
    }

    /// Renders the last applied configuration's template instances again with what the
    /// watches hold now, and applies it again when a rendering changed (a Secret or
    /// ConfigMap key changed, appeared or went): `None` when nothing changed. A value
    /// refused now keeps the instance's last good rendering, logged.
    pub async fn refresh_instances(&mut self) -> Option<ApplyReport> {
        let mut config = self
            .keys
            .current
            .clone()
            .filter(|c| !c.pipeline_instances.is_empty())?;
        let keys = self.instance_keys();
        let context = ValidationContext::observer(self.policy.clone());
        let rendered = self.keys.renderer.render(&mut config, &keys, &context);
        for (pipeline, errors) in &rendered.refused {
            tracing::error!(%pipeline, errors = %errors.join("; "), "a template instance's bound value is refused; its last good rendering keeps running");
        }
        if !rendered.changed {
            return None;
        }
        let report = self.agent.apply(config).await;
        log_report(&report);
        Some(report)
    }

    /// The template instances that do not run as bound now, for health reports.
    pub fn instance_problems(&self) -> Vec<InstanceProblem> {
        self.keys.renderer.problems().cloned().collect()
    }

    fn instance_keys(&self) -> InstanceKeys {
        InstanceKeys {
            secrets: self.keys.secrets.clone(),
            config_maps: self.keys.config_maps.clone(),
        }
    }

    /// Watches the namespaces whose keys `config` reads, when they changed.
    fn watch_keys(&mut self, config: &ValidatedAgentConfig) {
        let Some(client) = &self.kubernetes else {
            return;
        };
        let allowed = &self.policy.secret_namespaces;
        let secrets = secret_namespaces(config, allowed);
        if secrets != self.keys.secret_namespaces {
            let store = Arc::new(KubernetesSecrets::watch(client, secrets.clone()));
            self.keys.secrets = store.clone();
            self.agent.set_secret_store(store);
            self.keys.secret_namespaces = secrets;
        }
        let config_maps = key_namespaces(config, KeySource::ConfigMap, allowed);
        if config_maps != self.keys.config_map_namespaces {
            self.keys.config_maps =
                Arc::new(KubernetesConfigMaps::watch(client, config_maps.clone()));
            self.keys.config_map_namespaces = config_maps;
        }
    }
}
