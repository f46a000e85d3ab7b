//! The agent's install manifests for one cluster: a Namespace, a ServiceAccount with
//! read-only RBAC, a Secret holding the join token and the observer's CA, and a
//! Deployment running `cluster-agent run` in observer mode.
//!
//! Each document is built as a value and serialized by `serde_yaml`, so a CA bundle or a
//! token can never break the YAML quoting.

use serde_json::{Value, json};

/// Namespace the agent runs in.
pub const AGENT_NAMESPACE: &str = "kaas-observer";
/// Name of the agent's Deployment, ServiceAccount, Secret and RBAC objects.
pub const AGENT_NAME: &str = "cluster-agent";
/// The agent image; the observer and the agent are released together, so the tag is
/// the observer's own version.
pub const AGENT_IMAGE: &str = concat!("kaas-observer/cluster-agent:", env!("CARGO_PKG_VERSION"));
/// The agent's user and group id: the conventional unprivileged "nonroot" id of
/// distroless images, set explicitly so `runAsNonRoot` holds whatever the image says.
const AGENT_UID: u32 = 65532;
/// Where the Secret is mounted in the agent container.
const SECRET_MOUNT: &str = "/etc/kaas-agent";
/// The agent's data directory (disk buffers, last-known-good configuration).
const DATA_DIR: &str = "/var/lib/kaas-agent";

/// What goes into the manifests.
#[derive(Debug, Clone, Copy)]
pub struct ManifestInput<'a> {
    /// The cluster's name.
    pub cluster: &'a str,
    /// The observer's gRPC endpoint, e.g. `https://observer.example:8443`.
    pub control_endpoint: &'a str,
    /// The observer's CA certificate (PEM), which the agent trusts for the endpoint.
    pub ca_pem: &'a str,
    /// The single-use join token.
    pub join_token: &'a str,
}

/// The manifests as one multi-document YAML text.
pub fn agent_manifest(input: &ManifestInput<'_>) -> Result<String, serde_yaml::Error> {
    let labels = json!({
        "app.kubernetes.io/name": AGENT_NAME,
        "app.kubernetes.io/part-of": "kaas-observer",
        "telemetry.kaas-observer.io/cluster": input.cluster,
    });
    let metadata = |name: &str, namespaced: bool| {
        let mut meta = json!({ "name": name, "labels": labels });
        if namespaced {
            meta["namespace"] = json!(AGENT_NAMESPACE);
        }
        meta
    };
    let documents: Vec<Value> = vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata(AGENT_NAMESPACE, false) }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(AGENT_NAME, true) }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": metadata(AGENT_NAME, false),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "services", "endpoints", "nodes", "nodes/metrics",
                                  "nodes/proxy", "namespaces", "secrets"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
                { "nonResourceURLs": ["/metrics", "/metrics/cadvisor"], "verbs": ["get"] },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": metadata(AGENT_NAME, false),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT_NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": AGENT_NAME, "namespace": AGENT_NAMESPACE }],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(AGENT_NAME, true),
            "type": "Opaque",
            "stringData": { "join-token": input.join_token, "ca.crt": input.ca_pem },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(AGENT_NAME, true),
            "spec": {
                "replicas": 1,
                "strategy": { "type": "Recreate" },
                "selector": { "matchLabels": { "app.kubernetes.io/name": AGENT_NAME } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": AGENT_NAME,
                        "containers": [{
                            "name": AGENT_NAME,
                            "image": AGENT_IMAGE,
                            "args": [
                                "run",
                                "--observer", input.control_endpoint,
                                "--observer-ca-file", format!("{SECRET_MOUNT}/ca.crt"),
                                "--join-token-file", format!("{SECRET_MOUNT}/join-token"),
                                "--data-dir", DATA_DIR,
                            ],
                            "volumeMounts": [
                                { "name": "join", "mountPath": SECRET_MOUNT, "readOnly": true },
                                { "name": "data", "mountPath": DATA_DIR },
                            ],
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": AGENT_UID,
                                "runAsGroup": AGENT_UID,
                                "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                            },
                        }],
                        "volumes": [
                            { "name": "join", "secret": { "secretName": AGENT_NAME } },
                            { "name": "data", "emptyDir": {} },
                        ],
                    },
                },
            },
        }),
    ];
    let mut text = String::new();
    for document in &documents {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(document)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn the_manifest_parses_and_wires_the_agent_to_the_observer() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB: \"quoted\" # not a comment\n-----END CERTIFICATE-----\n";
        let text = agent_manifest(&ManifestInput {
            cluster: "prod-1",
            control_endpoint: "https://observer.example:8443",
            ca_pem: ca,
            join_token: "jt-123",
        })
        .unwrap();
        let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = documents
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        let secret = &documents[4];
        assert_eq!(secret["stringData"]["join-token"].as_str(), Some("jt-123"));
        assert_eq!(secret["stringData"]["ca.crt"].as_str(), Some(ca));
        let args: Vec<&str> = documents[5]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            &args[..3],
            ["run", "--observer", "https://observer.example:8443"]
        );
        assert!(args.contains(&"--join-token-file"));
        assert!(args.contains(&"--observer-ca-file"));
    }
}
