//! EndpointSlices (joined with their Service) to discovered label sets, as Prometheus'
//! `role: endpointslice` discovery builds them (`discovery/kubernetes/endpointslice.go`):
//! one target per endpoint address and port, with the slice's, the endpoint's and the
//! owning Service's meta labels; and the `prometheus.io/*` conventions on Services as
//! relabel rules ([`RULES`]).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::sync::LazyLock;

use kaas_pipeline::processors::RelabelRule;

use super::{META_PREFIX, sanitize_label_name};
use crate::labels::{ADDRESS, Labels};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service of `slice` among `services`: the one its [`SERVICE_NAME_LABEL`] names in
/// its namespace.
pub fn service_of<'a>(
    slice: &EndpointSlice,
    services: &'a [std::sync::Arc<Service>],
) -> Option<&'a Service> {
    let namespace = slice.metadata.namespace.as_deref();
    let name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL));
    services
        .iter()
        .find(|s| s.metadata.namespace.as_deref() == namespace && s.metadata.name.as_ref() == name)
        .map(AsRef::as_ref)
}

/// Discovered label sets of one slice; `service` is the slice's Service, if known.
pub fn endpointslice_targets(slice: &EndpointSlice, service: Option<&Service>) -> Vec<Labels> {
    let label = |suffix: &str| format!("{META_PREFIX}{suffix}");
    let meta = &slice.metadata;
    let mut common: Vec<(String, String)> = vec![
        (
            label("namespace"),
            meta.namespace.clone().unwrap_or_default(),
        ),
        (
            label("endpointslice_name"),
            meta.name.clone().unwrap_or_default(),
        ),
        (
            label("endpointslice_address_type"),
            slice.address_type.clone(),
        ),
    ];
    for (key, value) in meta.labels.iter().flatten() {
        let name = sanitize_label_name(key);
        common.push((label(&format!("endpointslice_label_{name}")), value.clone()));
        common.push((
            label(&format!("endpointslice_labelpresent_{name}")),
            "true".into(),
        ));
    }
    if let Some(service) = service {
        let service_meta = &service.metadata;
        common.push((
            label("service_name"),
            service_meta.name.clone().unwrap_or_default(),
        ));
        for (key, value) in service_meta.labels.iter().flatten() {
            let name = sanitize_label_name(key);
            common.push((label(&format!("service_label_{name}")), value.clone()));
            common.push((
                label(&format!("service_labelpresent_{name}")),
                "true".into(),
            ));
        }
        for (key, value) in service_meta.annotations.iter().flatten() {
            let name = sanitize_label_name(key);
            common.push((label(&format!("service_annotation_{name}")), value.clone()));
            common.push((
                label(&format!("service_annotationpresent_{name}")),
                "true".into(),
            ));
        }
    }
    let mut targets = Vec::new();
    for endpoint in &slice.endpoints {
        let mut endpoint_labels = common.clone();
        let conditions = endpoint.conditions.as_ref();
        for (name, value) in [
            ("ready", conditions.and_then(|c| c.ready)),
            ("serving", conditions.and_then(|c| c.serving)),
            ("terminating", conditions.and_then(|c| c.terminating)),
        ] {
            if let Some(value) = value {
                endpoint_labels.push((
                    label(&format!("endpointslice_endpoint_conditions_{name}")),
                    value.to_string(),
                ));
            }
        }
        for (name, value) in [
            ("endpointslice_endpoint_hostname", endpoint.hostname.clone()),
            (
                "endpointslice_endpoint_node_name",
                endpoint.node_name.clone(),
            ),
            ("endpointslice_endpoint_zone", endpoint.zone.clone()),
            (
                "endpointslice_address_target_kind",
                endpoint.target_ref.as_ref().and_then(|t| t.kind.clone()),
            ),
            (
                "endpointslice_address_target_name",
                endpoint.target_ref.as_ref().and_then(|t| t.name.clone()),
            ),
        ] {
            if let Some(value) = value {
                endpoint_labels.push((label(name), value));
            }
        }
        for address in &endpoint.addresses {
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            for port in slice.ports.iter().flatten() {
                let Some(number) = port.port else { continue };
                let mut labels = endpoint_labels.clone();
                labels.push((ADDRESS.to_owned(), format!("{host}:{number}")));
                labels.push((label("endpointslice_port"), number.to_string()));
                labels.push((
                    label("endpointslice_port_name"),
                    port.name.clone().unwrap_or_default(),
                ));
                labels.push((
                    label("endpointslice_port_protocol"),
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ));
                targets.push(Labels::from_pairs(labels));
            }
        }
    }
    targets
}

/// The `prometheus.io/*` annotation conventions on Services, applied to their endpoints:
/// `scrape: "true"` opts the Service in; `port` picks the endpoint port (otherwise every
/// port is scraped); `path` and `scheme` as for pods. Endpoints that are not ready are
/// left out; `namespace`, `service`, `pod` and `node` labels are added.
pub const RULES: &str = r#"
- action: keep
  source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape]
  regex: "true"
- action: drop
  source_labels: [__meta_kubernetes_endpointslice_endpoint_conditions_ready]
  regex: "false"
- source_labels: [__meta_kubernetes_endpointslice_port]
  target_label: __tmp_port
- source_labels: [__meta_kubernetes_service_annotation_prometheus_io_port]
  regex: '(\d+)'
  target_label: __tmp_port
- action: keepequal
  source_labels: [__meta_kubernetes_endpointslice_port]
  target_label: __tmp_port
- source_labels: [__meta_kubernetes_service_annotation_prometheus_io_path]
  regex: '(.+)'
  target_label: __metrics_path__
- source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scheme]
  regex: '(https?)'
  target_label: __scheme__
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
- source_labels: [__meta_kubernetes_service_name]
  target_label: service
- source_labels: [__meta_kubernetes_endpointslice_address_target_kind, __meta_kubernetes_endpointslice_address_target_name]
  regex: 'Pod;(.+)'
  target_label: pod
- source_labels: [__meta_kubernetes_endpointslice_endpoint_node_name]
  target_label: node
"#;

/// [`RULES`], compiled once.
static COMPILED: LazyLock<Vec<RelabelRule>> =
    LazyLock::new(|| super::compile_built_in("prometheus (Service endpoints)", RULES));

/// The compiled rules.
pub fn rules() -> &'static [RelabelRule] {
    &COMPILED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::relabel::process;

    fn fixtures(scrape_port: &str) -> (EndpointSlice, Service) {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "node-1",
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}
            ],
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9102, "protocol": "TCP"}]
        }))
        .unwrap();
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": scrape_port}}
        }))
        .unwrap();
        (slice, service)
    }

    #[test]
    fn one_target_per_endpoint_address_and_port() {
        let (slice, service) = fixtures("9102");
        let targets = endpointslice_targets(&slice, Some(&service));
        assert_eq!(targets.len(), 4);
        let metrics = &targets[1];
        for (name, value) in [
            ("__address__", "10.0.0.1:9102"),
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_endpointslice_name", "web-abc"),
            ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
            (
                "__meta_kubernetes_endpointslice_label_kubernetes_io_service_name",
                "web",
            ),
            (
                "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
                "true",
            ),
            (
                "__meta_kubernetes_endpointslice_endpoint_node_name",
                "node-1",
            ),
            ("__meta_kubernetes_endpointslice_address_target_kind", "Pod"),
            (
                "__meta_kubernetes_endpointslice_address_target_name",
                "web-1",
            ),
            ("__meta_kubernetes_endpointslice_port", "9102"),
            ("__meta_kubernetes_endpointslice_port_name", "metrics"),
            ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
            ("__meta_kubernetes_service_name", "web"),
            ("__meta_kubernetes_service_label_app", "web"),
            (
                "__meta_kubernetes_service_annotation_prometheus_io_scrape",
                "true",
            ),
        ] {
            assert_eq!(metrics.get(name), value, "{name}");
        }
    }

    #[test]
    fn service_annotations_pick_ready_endpoints_on_the_annotated_port() {
        let (slice, service) = fixtures("9102");
        let rules = rules();
        let kept: Vec<Labels> = endpointslice_targets(&slice, Some(&service))
            .iter()
            .filter_map(|t| process(t, rules))
            .collect();
        assert_eq!(kept.len(), 1, "ready endpoint, annotated port only");
        for (name, value) in [
            ("__address__", "10.0.0.1:9102"),
            ("namespace", "shop"),
            ("service", "web"),
            ("pod", "web-1"),
            ("node", "node-1"),
        ] {
            assert_eq!(kept[0].get(name), value, "{name}");
        }
        // Without the Service (not yet seen) nothing is opted in.
        assert!(
            endpointslice_targets(&slice, None)
                .iter()
                .all(|t| process(t, rules).is_none())
        );
    }
}
