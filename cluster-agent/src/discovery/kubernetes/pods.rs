//! Pods to discovered label sets, as Prometheus' `role: pod` discovery builds them
//! (`discovery/kubernetes/pod.go`): one target per container port (address
//! `podIP:port`), one per container without ports (address `podIP`), none for a pod
//! without an IP; pod-level meta labels on every target.

use k8s_openapi::api::core::v1::Pod;

use super::{META_PREFIX, sanitize_label_name};
use crate::labels::{ADDRESS, Labels};

/// Discovered label sets of one pod.
pub fn pod_targets(pod: &Pod) -> Vec<Labels> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    let meta = &pod.metadata;
    let label = |suffix: &str| format!("{META_PREFIX}{suffix}");
    let mut common: Vec<(String, String)> = vec![
        (
            label("namespace"),
            meta.namespace.clone().unwrap_or_default(),
        ),
        (label("pod_name"), meta.name.clone().unwrap_or_default()),
        (label("pod_ip"), ip.to_owned()),
        (label("pod_ready"), ready(pod)),
        (label("pod_phase"), status.phase.clone().unwrap_or_default()),
        (
            label("pod_node_name"),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
        ),
        (
            label("pod_host_ip"),
            status.host_ip.clone().unwrap_or_default(),
        ),
        (label("pod_uid"), meta.uid.clone().unwrap_or_default()),
    ];
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        common.push((label("pod_controller_kind"), owner.kind.clone()));
        common.push((label("pod_controller_name"), owner.name.clone()));
    }
    for (key, value) in meta.labels.iter().flatten() {
        let name = sanitize_label_name(key);
        common.push((label(&format!("pod_label_{name}")), value.clone()));
        common.push((label(&format!("pod_labelpresent_{name}")), "true".into()));
    }
    for (key, value) in meta.annotations.iter().flatten() {
        let name = sanitize_label_name(key);
        common.push((label(&format!("pod_annotation_{name}")), value.clone()));
        common.push((
            label(&format!("pod_annotationpresent_{name}")),
            "true".into(),
        ));
    }
    let mut targets = Vec::new();
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let mut container_labels = common.clone();
        container_labels.push((label("pod_container_name"), container.name.clone()));
        container_labels.push((
            label("pod_container_image"),
            container.image.clone().unwrap_or_default(),
        ));
        container_labels.push((label("pod_container_init"), "false".into()));
        let ports = container.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            container_labels.push((ADDRESS.to_owned(), ip.to_owned()));
            targets.push(Labels::from_pairs(container_labels));
            continue;
        }
        for port in ports {
            let mut labels = container_labels.clone();
            let number = port.container_port.to_string();
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_owned()
            };
            labels.push((ADDRESS.to_owned(), format!("{host}:{number}")));
            labels.push((label("pod_container_port_number"), number));
            labels.push((
                label("pod_container_port_name"),
                port.name.clone().unwrap_or_default(),
            ));
            labels.push((
                label("pod_container_port_protocol"),
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ));
            targets.push(Labels::from_pairs(labels));
        }
    }
    targets
}

/// `true`, `false` or `unknown`, from the pod's `Ready` condition.
fn ready(pod: &Pod) -> String {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .find(|c| c.type_ == "Ready")
        .map_or_else(|| "unknown".into(), |c| c.status.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn one_target_per_container_port_with_prometheus_meta_labels() {
        let pod = pod(serde_json::json!({
            "metadata": {
                "name": "web-7d9f", "namespace": "shop", "uid": "u-1",
                "labels": {"app.kubernetes.io/name": "web"},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "uid": "r", "controller": true}]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "web", "image": "nginx:1", "ports": [
                        {"containerPort": 80, "name": "http"},
                        {"containerPort": 9102, "name": "metrics", "protocol": "TCP"}
                    ]},
                    {"name": "sidecar", "image": "envoy:1"}
                ]
            },
            "status": {
                "podIP": "10.1.2.3", "hostIP": "192.168.0.5", "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }));
        let targets = pod_targets(&pod);
        assert_eq!(
            targets.len(),
            3,
            "two ports of web, one target for the portless sidecar"
        );
        let metrics = &targets[1];
        for (name, value) in [
            ("__address__", "10.1.2.3:9102"),
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_name", "web-7d9f"),
            ("__meta_kubernetes_pod_ip", "10.1.2.3"),
            ("__meta_kubernetes_pod_ready", "true"),
            ("__meta_kubernetes_pod_phase", "Running"),
            ("__meta_kubernetes_pod_node_name", "node-1"),
            ("__meta_kubernetes_pod_host_ip", "192.168.0.5"),
            ("__meta_kubernetes_pod_uid", "u-1"),
            ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
            ("__meta_kubernetes_pod_controller_name", "web-7d"),
            ("__meta_kubernetes_pod_label_app_kubernetes_io_name", "web"),
            (
                "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name",
                "true",
            ),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
                "true",
            ),
            (
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                "9102",
            ),
            (
                "__meta_kubernetes_pod_annotationpresent_prometheus_io_port",
                "true",
            ),
            ("__meta_kubernetes_pod_container_name", "web"),
            ("__meta_kubernetes_pod_container_image", "nginx:1"),
            ("__meta_kubernetes_pod_container_init", "false"),
            ("__meta_kubernetes_pod_container_port_number", "9102"),
            ("__meta_kubernetes_pod_container_port_name", "metrics"),
            ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
        ] {
            assert_eq!(metrics.get(name), value, "{name}");
        }
        assert_eq!(
            targets[0].get("__meta_kubernetes_pod_container_port_protocol"),
            "TCP",
            "defaults to TCP"
        );
        assert_eq!(targets[2].get("__address__"), "10.1.2.3");
        assert_eq!(
            targets[2].get("__meta_kubernetes_pod_container_port_number"),
            ""
        );
    }

    #[test]
    fn pods_without_an_ip_have_no_targets_and_ipv6_gets_brackets() {
        let pending = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Pending"}
        }));
        assert!(pod_targets(&pending).is_empty());
        let v6 = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"podIP": "fd00::1"}
        }));
        let targets = pod_targets(&v6);
        assert_eq!(targets[0].get("__address__"), "[fd00::1]:80");
        assert_eq!(targets[0].get("__meta_kubernetes_pod_ready"), "unknown");
    }
}
