//! Kubernetes service discovery, kept thin: [`pods`] maps a Pod to label sets (pure,
//! unit-tested), [`annotations`] expresses the `prometheus.io/*` annotation conventions
//! as relabel rules, and [`watch`] keeps a reflector of the cluster's pods through
//! kube-runtime's watcher (tested against kube's mock client) and publishes the
//! current pods whenever they change ([`pods_by_ip`] indexes them by address for the
//! enrichment of pushed spans and logs); [`secrets`] resolves `secretKeyRef` values from
//! the referenced namespaces' Secrets and follows their rotation (it is the
//! [`SecretStore`](crate::outbound::auth::SecretStore) of the agent's outbound
//! requests); [`config_maps`] does the same for the `configMapKeyRef` bindings of
//! template instances ([`crate::pipeline::instances`]); both read through
//! [`namespaced`], one watcher per namespace the provider allows.
//!
//! The built-in relabel rules ([`annotations`], [`endpointslices`], [`istio`]) are
//! written in Prometheus YAML and compiled once, the first time they are used, by
//! [`compile_built_in`].

pub mod annotations;
pub mod config_maps;
pub mod endpointslices;
pub mod istio;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod namespaced;
pub mod nodes;
pub mod pods;
pub mod pods_by_ip;
pub mod secrets;
pub mod watch;

use kaas_pipeline::processors::{RelabelConfig, RelabelRule, compile_rule};

/// Prefix of every Kubernetes meta label, as Prometheus names them.
pub const META_PREFIX: &str = "__meta_kubernetes_";

/// Prometheus' `strutil.SanitizeLabelName`: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Compiles relabel rules the agent ships for `input`. They are constants that tests
/// compile; should they still not compile, the error is logged with the input's name
/// and the input finds no targets, rather than targets labelled by half its rules.
pub fn compile_built_in(input: &str, yaml: &str) -> Vec<RelabelRule> {
    match try_compile(yaml) {
        Ok(rules) => rules,
        Err(error) => {
            tracing::error!(input, %error, "the built-in relabel rules do not compile; the input finds no targets");
            Vec::new()
        }
    }
}

/// Relabel rules from Prometheus YAML; the first problem, naming its rule.
fn try_compile(yaml: &str) -> Result<Vec<RelabelRule>, String> {
    let configs: Vec<RelabelConfig> =
        serde_yaml::from_str(yaml).map_err(|e| format!("not a list of relabel rules: {e}"))?;
    configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            compile_rule(config).map_err(|e| format!("rule {index}: {}", e.lines().join("; ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_rules_compile_and_broken_ones_are_named() {
        for yaml in [annotations::RULES, endpointslices::RULES, istio::RULES] {
            let rules = try_compile(yaml).unwrap();
            assert!(!rules.is_empty());
        }
        let error = try_compile("- action: keep\n  regex: '('\n").unwrap_err();
        assert!(error.starts_with("rule 0:"), "{error}");
        let error = try_compile("action: keep").unwrap_err();
        assert!(error.contains("not a list of relabel rules"), "{error}");
        assert!(compile_built_in("test", "{").is_empty());
    }
}
