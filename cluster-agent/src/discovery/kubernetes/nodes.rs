//! Nodes to discovered label sets, as Prometheus' `role: node` discovery builds them
//! (`discovery/kubernetes/node.go`): one target per node at its kubelet endpoint
//! (the first address in the order InternalIP, InternalDNS, ExternalIP, ExternalDNS,
//! Hostname, with the kubelet port, 10250 unless the node says otherwise).

use k8s_openapi::api::core::v1::Node;

use super::{META_PREFIX, sanitize_label_name};
use crate::labels::{ADDRESS, Labels};

/// The kubelet port when the node does not report one.
pub const DEFAULT_KUBELET_PORT: i32 = 10250;

/// Address types in the order Prometheus prefers them.
const ADDRESS_PREFERENCE: [&str; 5] = [
    "InternalIP",
    "InternalDNS",
    "ExternalIP",
    "ExternalDNS",
    "Hostname",
];

/// The discovered label set of one node, or `None` when it has no usable address.
pub fn node_target(node: &Node) -> Option<Labels> {
    let status = node.status.as_ref()?;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let address = ADDRESS_PREFERENCE
        .iter()
        .find_map(|kind| addresses.iter().find(|a| a.type_ == *kind))?;
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map_or(DEFAULT_KUBELET_PORT, |e| e.port);
    let host = if address.address.contains(':') {
        format!("[{}]", address.address)
    } else {
        address.address.clone()
    };
    let label = |suffix: &str| format!("{META_PREFIX}{suffix}");
    let meta = &node.metadata;
    let mut pairs = vec![
        (ADDRESS.to_owned(), format!("{host}:{port}")),
        (label("node_name"), meta.name.clone().unwrap_or_default()),
        (
            label("node_provider_id"),
            node.spec
                .as_ref()
                .and_then(|s| s.provider_id.clone())
                .unwrap_or_default(),
        ),
    ];
    for (key, value) in meta.labels.iter().flatten() {
        let name = sanitize_label_name(key);
        pairs.push((label(&format!("node_label_{name}")), value.clone()));
        pairs.push((label(&format!("node_labelpresent_{name}")), "true".into()));
    }
    for (key, value) in meta.annotations.iter().flatten() {
        let name = sanitize_label_name(key);
        pairs.push((label(&format!("node_annotation_{name}")), value.clone()));
        pairs.push((
            label(&format!("node_annotationpresent_{name}")),
            "true".into(),
        ));
    }
    for a in addresses {
        // The first address of each type, as Prometheus keeps it.
        let name = label(&format!("node_address_{}", a.type_));
        if !pairs.iter().any(|(n, _)| *n == name) {
            pairs.push((name, a.address.clone()));
        }
    }
    Some(Labels::from_pairs(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_one_target_at_its_kubelet() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "eu-1a"}},
            "spec": {"providerID": "openstack:///abc"},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "node-1"},
                    {"type": "InternalIP", "address": "10.0.0.7"}
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}
            }
        }))
        .unwrap();
        let target = node_target(&node).unwrap();
        for (name, value) in [
            ("__address__", "10.0.0.7:10255"),
            ("__meta_kubernetes_node_name", "node-1"),
            ("__meta_kubernetes_node_provider_id", "openstack:///abc"),
            (
                "__meta_kubernetes_node_label_topology_kubernetes_io_zone",
                "eu-1a",
            ),
            (
                "__meta_kubernetes_node_labelpresent_topology_kubernetes_io_zone",
                "true",
            ),
            ("__meta_kubernetes_node_address_InternalIP", "10.0.0.7"),
            ("__meta_kubernetes_node_address_Hostname", "node-1"),
        ] {
            assert_eq!(target.get(name), value, "{name}");
        }
        let bare: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "Hostname", "address": "n"}]}
        }))
        .unwrap();
        assert_eq!(node_target(&bare).unwrap().get("__address__"), "n:10250");
        let nowhere: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(node_target(&nowhere).is_none());
    }
}
