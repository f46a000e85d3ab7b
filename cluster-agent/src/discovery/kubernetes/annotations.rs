//! The `prometheus.io/*` annotation conventions as relabel rules, applied before a
//! pipeline's own target relabeling for the `prometheus` input:
//!
//! - `prometheus.io/scrape: "true"` opts a pod in; pods that are not running are left out;
//! - `prometheus.io/port` picks the container port to scrape (or, for containers that
//!   declare no ports, supplies it); without it every declared port is scraped;
//! - `prometheus.io/path` sets the path (default `/metrics`), `prometheus.io/scheme`
//!   the scheme (`http` or `https`);
//! - `namespace`, `pod`, `container` and `node` labels are added, as the Kyma telemetry
//!   module and the common Helm charts add them.
//!
//! Written as ordinary rules (see [`RULES`]) so they behave exactly like a user's
//! Prometheus configuration would, and so they are tested like one.

use std::sync::LazyLock;

use kaas_pipeline::processors::RelabelRule;

/// The rules, in Prometheus YAML.
pub const RULES: &str = r#"
- action: keep
  source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
  regex: "true"
- action: drop
  source_labels: [__meta_kubernetes_pod_phase]
  regex: Pending|Succeeded|Failed|Completed
- source_labels: [__meta_kubernetes_pod_container_port_number]
  target_label: __tmp_port
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_port]
  regex: '(\d+)'
  target_label: __tmp_port
- source_labels: [__meta_kubernetes_pod_container_port_number, __tmp_port]
  regex: ';(.+)'
  target_label: __tmp_container_port
- source_labels: [__meta_kubernetes_pod_container_port_number]
  regex: '(.+)'
  target_label: __tmp_container_port
- action: keepequal
  source_labels: [__tmp_container_port]
  target_label: __tmp_port
- source_labels: [__address__, __tmp_port]
  regex: '(.+?)(?::\d+)?;(\d+)'
  target_label: __address__
  replacement: '$1:$2'
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
  regex: '(.+)'
  target_label: __metrics_path__
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
  regex: '(https?)'
  target_label: __scheme__
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
- source_labels: [__meta_kubernetes_pod_name]
  target_label: pod
- source_labels: [__meta_kubernetes_pod_container_name]
  target_label: container
- source_labels: [__meta_kubernetes_pod_node_name]
  target_label: node
"#;

/// [`RULES`], compiled once.
static COMPILED: LazyLock<Vec<RelabelRule>> =
    LazyLock::new(|| super::compile_built_in("prometheus (pod annotations)", RULES));

/// The compiled rules.
pub fn rules() -> &'static [RelabelRule] {
    &COMPILED
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::processors::RelabelConfig;

    use super::*;
    use crate::labels::Labels;
    use crate::processing::relabel::process;

    fn target(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn every_rule_compiles() {
        let configs: Vec<RelabelConfig> = serde_yaml::from_str(RULES).unwrap();
        assert_eq!(rules().len(), configs.len());
    }

    #[test]
    fn annotations_select_and_shape_targets() {
        let rules = rules();
        let base = [
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_name", "web-1"),
            ("__meta_kubernetes_pod_node_name", "node-1"),
            ("__meta_kubernetes_pod_container_name", "web"),
            ("__meta_kubernetes_pod_phase", "Running"),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
                "true",
            ),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            process(&target(&pairs), rules)
        };
        // The annotated port is kept, other ports of the pod are not.
        let port = |n| {
            [
                ("__address__", n),
                (
                    "__meta_kubernetes_pod_annotation_prometheus_io_port",
                    "9102",
                ),
            ]
        };
        let kept = with(&[
            port("10.0.0.1:9102")[0],
            port("10.0.0.1:9102")[1],
            ("__meta_kubernetes_pod_container_port_number", "9102"),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_path",
                "/stats",
            ),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_scheme",
                "https",
            ),
        ])
        .unwrap();
        assert_eq!(kept.get("__address__"), "10.0.0.1:9102");
        assert_eq!(kept.get("__metrics_path__"), "/stats");
        assert_eq!(kept.get("__scheme__"), "https");
        for (name, value) in [
            ("namespace", "shop"),
            ("pod", "web-1"),
            ("container", "web"),
            ("node", "node-1"),
        ] {
            assert_eq!(kept.get(name), value);
        }
        assert!(
            with(&[
                port("10.0.0.1:80")[0],
                port("10.0.0.1:80")[1],
                ("__meta_kubernetes_pod_container_port_number", "80"),
            ])
            .is_none()
        );
        // A container without declared ports gets the annotated port.
        let portless = with(&port("10.0.0.1")).unwrap();
        assert_eq!(portless.get("__address__"), "10.0.0.1:9102");
        // Without a port annotation every declared port is scraped.
        let any = with(&[
            ("__address__", "10.0.0.1:8080"),
            ("__meta_kubernetes_pod_container_port_number", "8080"),
        ]);
        assert_eq!(any.unwrap().get("__address__"), "10.0.0.1:8080");
    }

    #[test]
    fn pods_not_opted_in_or_not_running_are_left_out() {
        let rules = rules();
        let pod = |scrape: &'static str, phase: &'static str| {
            target(&[
                ("__address__", "10.0.0.1:80"),
                ("__meta_kubernetes_pod_container_port_number", "80"),
                (
                    "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
                    scrape,
                ),
                ("__meta_kubernetes_pod_phase", phase),
            ])
        };
        assert!(process(&pod("true", "Running"), rules).is_some());
        assert!(process(&pod("false", "Running"), rules).is_none());
        assert!(process(&pod("", "Running"), rules).is_none());
        assert!(process(&pod("true", "Succeeded"), rules).is_none());
    }
}
