//! The `istio` input as relabel rules over pod discovery: Istio's sidecar
//! (`istio-proxy`) exposes Envoy's and Istio's metrics on its port named
//! `http-envoy-prom` (15090) at `/stats/prometheus`. Every running pod with a sidecar
//! is scraped there, without any annotation; `namespace` and `pod` labels are added.

use std::sync::LazyLock;

use kaas_pipeline::processors::RelabelRule;

/// The rules, in Prometheus YAML.
pub const RULES: &str = r#"
- action: keep
  source_labels: [__meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name]
  regex: 'istio-proxy;.*-envoy-prom'
- action: drop
  source_labels: [__meta_kubernetes_pod_phase]
  regex: Pending|Succeeded|Failed|Completed
- target_label: __metrics_path__
  replacement: /stats/prometheus
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
- source_labels: [__meta_kubernetes_pod_name]
  target_label: pod
"#;

/// [`RULES`], compiled once.
static COMPILED: LazyLock<Vec<RelabelRule>> =
    LazyLock::new(|| super::compile_built_in("istio", RULES));

/// The compiled rules.
pub fn rules() -> &'static [RelabelRule] {
    &COMPILED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::processing::relabel::process;

    #[test]
    fn sidecar_ports_are_scraped_at_the_stats_path() {
        let rules = rules();
        assert_eq!(rules.len(), 5);
        let target = |container: &'static str, port: &'static str| {
            Labels::from_pairs([
                ("__address__", "10.0.0.1:15090"),
                ("__meta_kubernetes_namespace", "shop"),
                ("__meta_kubernetes_pod_name", "web-1"),
                ("__meta_kubernetes_pod_phase", "Running"),
                ("__meta_kubernetes_pod_container_name", container),
                ("__meta_kubernetes_pod_container_port_name", port),
            ])
        };
        let kept = process(&target("istio-proxy", "http-envoy-prom"), rules).unwrap();
        assert_eq!(kept.get("__metrics_path__"), "/stats/prometheus");
        assert_eq!(kept.get("namespace"), "shop");
        assert_eq!(kept.get("pod"), "web-1");
        assert!(process(&target("istio-proxy", "http-status"), rules).is_none());
        assert!(process(&target("app", "http-envoy-prom"), rules).is_none());
    }
}
