//! The agent's install manifests for one cluster: exactly the objects of
//! `deploy/agent/base` (Namespace, ServiceAccount, read-only RBAC, the data volume's
//! PersistentVolumeClaim, the push Service and the Deployment, then the cluster health
//! producers kube-state-metrics and node-exporter, and the agent's node role, the
//! DaemonSet `cluster-agent-node`), compiled into the binary, plus the Secret holding
//! the join token and the observer's CA for the cluster-level instance and a ConfigMap
//! with the CA alone for the node instances (they get their certificates from the
//! cluster-level instance, without a token). The agents' `--observer` arguments are
//! set to the observer's control endpoint and every object is labelled with the
//! cluster's name.
//!
//! The provider's Secret allow-list (`observer serve --agent-secret-namespaces`, the
//! same list the API checks `secretKeyRef.namespace` against) is rendered twice: one
//! copy of the base's `cluster-agent-secrets` Role and RoleBinding per namespace, and
//! the agent's `--secret-namespaces` argument, with which the agent checks again and
//! limits its Secret watches.
//!
//! One source for `observer cluster add`, the Cluster API installer and `kubectl apply
//! -k deploy/agent/base`, so the three cannot drift: whatever deploy/ fixes (security
//! context, persistent identity, least-privilege RBAC, probes) the API's manifests have
//! too. Each document is handled as a value and serialized by `serde_yaml`, so a CA
//! bundle or a token can never break the YAML quoting.

use serde::Deserialize;
use serde_json::{Value, json};

/// Namespace the agent runs in.
pub const AGENT_NAMESPACE: &str = kaas_pipeline::policy::DEFAULT_AGENT_NAMESPACE;
/// Name of the agent's Deployment, ServiceAccount, Secret and RBAC objects.
pub const AGENT_NAME: &str = "cluster-agent";
/// The agent image; the observer and the agent are released together, so the tag is
/// the observer's own version.
pub const AGENT_IMAGE: &str = concat!("kaas-observer/cluster-agent:", env!("CARGO_PKG_VERSION"));
/// The label that names the cluster on every object, so an operator can list what
/// the observer installed with one selector.
pub const CLUSTER_LABEL: &str = "telemetry.kaas-observer.io/cluster";
/// The `--observer` argument's prefix in deploy/'s Deployment, which is replaced with
/// the observer's real endpoint.
const OBSERVER_ARG: &str = "--observer=";
/// The agent's Secret allow-list argument in deploy/'s Deployment, replaced with the
/// provider's list.
const SECRET_NAMESPACES_ARG: &str = "--secret-namespaces=";
/// The agent's argument naming the provider's central receivers, added when there are
/// any: tenants may not send there through a URL read from a Secret either.
const CENTRAL_ENDPOINTS_ARG: &str = "--central-endpoints=";
/// The name of the Role and RoleBinding granting the agent a namespace's Secrets.
const SECRETS_ROLE: &str = "cluster-agent-secrets";
/// The RoleBinding granting the node instances the same Role in a namespace.
const NODE_SECRETS_BINDING: &str = "cluster-agent-node-secrets";
/// The node instances' DaemonSet and namespace (deploy/agent/base/node-agent.yaml).
pub const NODE_AGENT_NAME: &str = "cluster-agent-node";
/// The node instances' namespace, node-exporter's (privileged Pod Security level).
pub const NODE_NAMESPACE: &str = "kaas-observer-node";
/// The ConfigMap holding the observer's CA for the node instances.
const NODE_CA_CONFIG_MAP: &str = "observer-ca";

/// `deploy/agent/base`'s files in the order they are applied (namespace first, the
/// agent's Deployment after everything it mounts, so it exists when its pod starts);
/// the Secret is inserted before the agent's Deployment. The cluster health producers
/// come last, each file with its own objects (node-exporter's namespace first).
///
/// Issue 15, finding 3: the manifests used to end with the agent's Deployment, so no
/// cluster the API or the Cluster API installer onboarded ran kube-state-metrics or a
/// node exporter, and the Kubernetes alerts had no input.
const BASE_FILES: [(&str, &str); 11] = [
    (
        "namespace.yaml",
        include_str!("../../../deploy/agent/base/namespace.yaml"),
    ),
    (
        "serviceaccount.yaml",
        include_str!("../../../deploy/agent/base/serviceaccount.yaml"),
    ),
    (
        "rbac.yaml",
        include_str!("../../../deploy/agent/base/rbac.yaml"),
    ),
    (
        "token-review-rbac.yaml",
        include_str!("../../../deploy/agent/base/token-review-rbac.yaml"),
    ),
    (
        "pvc.yaml",
        include_str!("../../../deploy/agent/base/pvc.yaml"),
    ),
    (
        "service.yaml",
        include_str!("../../../deploy/agent/base/service.yaml"),
    ),
    (
        "networkpolicy.yaml",
        include_str!("../../../deploy/agent/base/networkpolicy.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../../../deploy/agent/base/deployment.yaml"),
    ),
    (
        "kube-state-metrics.yaml",
        include_str!("../../../deploy/agent/base/kube-state-metrics.yaml"),
    ),
    (
        "node-exporter.yaml",
        include_str!("../../../deploy/agent/base/node-exporter.yaml"),
    ),
    // Issue 16: the node role, after node-exporter.yaml, which creates its namespace.
    (
        "node-agent.yaml",
        include_str!("../../../deploy/agent/base/node-agent.yaml"),
    ),
];

/// Why the manifests could not be rendered: only a deploy/ file that does not have the
/// shape this module relies on (a test renders them, so it fails in CI, not in use).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A deploy/ file is not YAML, or a document could not be serialized.
    #[error("deploy/agent/base/{file}: {source}")]
    Yaml {
        /// The file.
        file: &'static str,
        /// What the parser or serializer said.
        #[source]
        source: serde_yaml::Error,
    },
    /// An agent workload (deployment.yaml, node-agent.yaml) does not have the expected
    /// container or arguments.
    #[error("deploy/agent/base: an agent workload has {0}")]
    Shape(&'static str),
}

/// What goes into the manifests.
#[derive(Debug, Clone, Copy)]
pub struct ManifestInput<'a> {
    /// The cluster's name as its tenant knows it, for the cluster label on every object.
    /// Not the global id: in its own cluster the tenant is implicit, and a label value
    /// holds at most 63 characters, which the name (a DNS label) always fits and
    /// `<tenant>.<name>` may not.
    pub cluster: &'a str,
    /// The observer's gRPC endpoint, e.g. `https://observer.example:8443`.
    pub control_endpoint: &'a str,
    /// The observer's CA certificate (PEM), which the agent trusts for the endpoint.
    pub ca_pem: &'a str,
    /// The single-use join token.
    pub join_token: &'a str,
    /// The namespaces whose Secrets the agent may read (the provider's allow-list).
    pub secret_namespaces: &'a [String],
    /// The provider's central receivers, which an output URL read from a Secret may not
    /// name (the agent's `--central-endpoints`; none: the flag is left out).
    pub central_endpoints: &'a [String],
}

/// The manifests as values, in apply order.
pub fn agent_documents(input: &ManifestInput<'_>) -> Result<Vec<Value>, ManifestError> {
    let mut documents = Vec::new();
    for (file, text) in BASE_FILES {
        for document in serde_yaml::Deserializer::from_str(text) {
            let mut value = Value::deserialize(document)
                .map_err(|source| ManifestError::Yaml { file, source })?;
            if value.is_null() {
                continue;
            }
            label_with_cluster(&mut value, input.cluster);
            if is_agent_deployment(&value) {
                documents.push(join_secret(input));
                point_at_observer(&mut value, input)?;
            }
            if is_node_agent(&value) {
                documents.push(node_ca(input));
                point_at_observer(&mut value, input)?;
            }
            if is_secrets_grant(&value) {
                for namespace in input.secret_namespaces {
                    let mut copy = value.clone();
                    copy["metadata"]["namespace"] = json!(namespace);
                    documents.push(copy);
                }
                continue;
            }
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The manifests as one multi-document YAML text.
pub fn agent_manifest(input: &ManifestInput<'_>) -> Result<String, ManifestError> {
    let mut text = String::new();
    for document in agent_documents(input)? {
        text.push_str("---\n");
        text.push_str(
            &serde_yaml::to_string(&document).map_err(|source| ManifestError::Yaml {
                file: "(rendered)",
                source,
            })?,
        );
    }
    Ok(text)
}

/// Whether `object` is the agent's own Deployment (not kube-state-metrics').
fn is_agent_deployment(object: &Value) -> bool {
    object["kind"] == "Deployment" && object["metadata"]["name"] == AGENT_NAME
}

/// Whether `object` is the node instances' DaemonSet.
fn is_node_agent(object: &Value) -> bool {
    object["kind"] == "DaemonSet" && object["metadata"]["name"] == NODE_AGENT_NAME
}

/// Whether `object` is the base's Role or RoleBinding granting one namespace's Secrets
/// (to the cluster-level instance, or the RoleBinding to the node instances).
fn is_secrets_grant(object: &Value) -> bool {
    matches!(object["kind"].as_str(), Some("Role" | "RoleBinding"))
        && (object["metadata"]["name"] == SECRETS_ROLE
            || object["metadata"]["name"] == NODE_SECRETS_BINDING)
}

/// The ConfigMap the node instances trust the observer by: its CA, public.
fn node_ca(input: &ManifestInput<'_>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NODE_CA_CONFIG_MAP,
            "namespace": NODE_NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": NODE_AGENT_NAME,
                "app.kubernetes.io/part-of": "kaas-observer",
                CLUSTER_LABEL: input.cluster,
            },
        },
        "data": { "ca.crt": input.ca_pem },
    })
}

/// Adds the cluster label to an object and, for a workload, to its pods.
fn label_with_cluster(object: &mut Value, cluster: &str) {
    object["metadata"]["labels"][CLUSTER_LABEL] = json!(cluster);
    if matches!(object["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
        object["spec"]["template"]["metadata"]["labels"][CLUSTER_LABEL] = json!(cluster);
    }
}

/// The Secret the Deployment mounts: the join token and the CA the agent trusts.
fn join_secret(input: &ManifestInput<'_>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": AGENT_NAME,
            "namespace": AGENT_NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": AGENT_NAME,
                "app.kubernetes.io/part-of": "kaas-observer",
                CLUSTER_LABEL: input.cluster,
            },
        },
        "type": "Opaque",
        "stringData": { "join-token": input.join_token, "ca.crt": input.ca_pem },
    })
}

/// Sets the agent container's image (of the Deployment or the node DaemonSet) to this
/// release's, its `--observer` argument to the observer's control endpoint, its
/// `--secret-namespaces` to the provider's allow-list, and adds `--central-endpoints`
/// when the provider has central receivers.
fn point_at_observer(
    deployment: &mut Value,
    input: &ManifestInput<'_>,
) -> Result<(), ManifestError> {
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .and_then(|containers| {
            containers
                .iter_mut()
                .find(|container| container["name"] == AGENT_NAME)
        })
        .ok_or(ManifestError::Shape("no container named cluster-agent"))?;
    container["image"] = json!(AGENT_IMAGE);
    let argument = container["args"]
        .as_array_mut()
        .and_then(|args| {
            args.iter_mut()
                .find(|arg| arg.as_str().is_some_and(|a| a.starts_with(OBSERVER_ARG)))
        })
        .ok_or(ManifestError::Shape("no --observer= argument"))?;
    *argument = json!(format!("{OBSERVER_ARG}{}", input.control_endpoint));
    let argument = container["args"]
        .as_array_mut()
        .and_then(|args| {
            args.iter_mut().find(|arg| {
                arg.as_str()
                    .is_some_and(|a| a.starts_with(SECRET_NAMESPACES_ARG))
            })
        })
        .ok_or(ManifestError::Shape("no --secret-namespaces= argument"))?;
    *argument = json!(format!(
        "{SECRET_NAMESPACES_ARG}{}",
        input.secret_namespaces.join(",")
    ));
    if !input.central_endpoints.is_empty()
        && let Some(args) = container["args"].as_array_mut()
    {
        let central = format!(
            "{CENTRAL_ENDPOINTS_ARG}{}",
            input.central_endpoints.join(",")
        );
        args.push(json!(central));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(ca: &'a str) -> ManifestInput<'a> {
        ManifestInput {
            cluster: "prod-1",
            control_endpoint: "https://observer.example:8443",
            ca_pem: ca,
            join_token: "jt-123",
            secret_namespaces: &DEFAULT_SECRET_NAMESPACES,
            central_endpoints: &[],
        }
    }

    /// Issue 18: the agents learn the provider's central receivers, so a tenant cannot
    /// send there through a URL read from a Secret; without receivers the base's
    /// arguments are left as they are.
    #[test]
    fn central_receivers_become_the_agents_central_endpoints() {
        let central = namespaces(&["https://receive.provider.example:19291/api/v1/receive"]);
        let documents = agent_documents(&ManifestInput {
            central_endpoints: &central,
            ..input("CA")
        })
        .unwrap();
        let agents: Vec<&Value> = documents
            .iter()
            .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "DaemonSet")))
            .filter_map(|d| {
                d["spec"]["template"]["spec"]["containers"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"] == AGENT_NAME)
            })
            .collect();
        assert_eq!(agents.len(), 2, "the cluster-level and the node instances");
        for agent in agents {
            let args = agent["args"].as_array().unwrap();
            assert!(
                args.contains(&json!(
                    "--central-endpoints=https://receive.provider.example:19291/api/v1/receive"
                )),
                "{args:?}"
            );
        }
        let plain = agent_documents(&input("CA")).unwrap();
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains(CENTRAL_ENDPOINTS_ARG));
    }

    static DEFAULT_SECRET_NAMESPACES: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![AGENT_NAMESPACE.to_owned()]);

    fn namespaces(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    /// Issue 13, finding 9: the agent's Secret access is exactly the provider's
    /// allow-list, as Roles (never a ClusterRole) and as the agent's own flag; and the
    /// agent's cluster role no longer holds `nodes/proxy`.
    #[test]
    fn secret_access_is_the_allow_list_in_roles_and_the_agent_flag() {
        let allowed = namespaces(&["kaas-observer", "monitoring"]);
        let documents = agent_documents(&ManifestInput {
            secret_namespaces: &allowed,
            ..input("CA")
        })
        .unwrap();
        let grants: Vec<(String, String)> = documents
            .iter()
            .filter(|d| d["metadata"]["name"] == SECRETS_ROLE)
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_owned(),
                    d["metadata"]["namespace"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            grants,
            [
                ("Role".to_owned(), "kaas-observer".to_owned()),
                ("Role".to_owned(), "monitoring".to_owned()),
                ("RoleBinding".to_owned(), "kaas-observer".to_owned()),
                ("RoleBinding".to_owned(), "monitoring".to_owned()),
            ]
        );
        for document in &documents {
            let rules = document["rules"].to_string();
            if document["kind"] == "ClusterRole" {
                assert!(!rules.contains("secrets"), "{rules}");
                assert!(!rules.contains("nodes/proxy"), "{rules}");
            }
        }
        let deployment = documents.iter().find(|d| is_agent_deployment(d)).unwrap();
        let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains("\"--secret-namespaces=kaas-observer,monitoring\""),
            "{args}"
        );
    }

    #[test]
    fn the_manifest_is_deploys_base_wired_to_the_observer() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB: \"quoted\" # not a comment\n-----END CERTIFICATE-----\n";
        let text = agent_manifest(&input(ca)).unwrap();
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
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "PersistentVolumeClaim",
                "Service",
                "NetworkPolicy",
                "Secret",
                "Deployment",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Service",
                "NetworkPolicy",
                "Deployment",
                "Namespace",
                "ServiceAccount",
                "DaemonSet",
                "ServiceAccount",
                "ConfigMap",
                "DaemonSet",
                "ClusterRole",
                "ClusterRoleBinding",
                "RoleBinding",
            ]
        );
        for document in &documents {
            assert_eq!(
                document["metadata"]["labels"][CLUSTER_LABEL].as_str(),
                Some("prod-1"),
                "{:?} is labelled with its cluster",
                document["kind"]
            );
        }
        let secret = &documents[11];
        assert_eq!(secret["stringData"]["join-token"].as_str(), Some("jt-123"));
        assert_eq!(secret["stringData"]["ca.crt"].as_str(), Some(ca));
        let pod = &documents[12]["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"].as_str(), Some(AGENT_IMAGE));
        let args: Vec<&str> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with(OBSERVER_ARG))
                .collect::<Vec<_>>(),
            [&"--observer=https://observer.example:8443"]
        );
        assert!(args.contains(&"--join-token-file=/etc/kaas-agent/join-token"));
        // The identity and the buffers survive a reschedule: the data volume is the claim.
        let data = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some("data"))
            .unwrap();
        assert_eq!(
            data["persistentVolumeClaim"]["claimName"].as_str(),
            documents[8]["metadata"]["name"].as_str()
        );
    }

    /// Issue 15, finding 3: every onboarded cluster gets kube-state-metrics and
    /// node-exporter beside the agent, from pinned upstream images, the node-level pods
    /// in their own namespace at the `privileged` Pod Security level; the agent's
    /// Deployment alone is wired to the observer.
    #[test]
    fn the_cluster_health_producers_come_with_the_agent() {
        let documents = agent_documents(&input("CA")).unwrap();
        let find = |kind: &str, name: &str| {
            documents
                .iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{kind}/{name} is rendered"))
        };
        let image = |workload: &Value| {
            workload["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let ksm = find("Deployment", "kube-state-metrics");
        assert_eq!(ksm["metadata"]["namespace"], AGENT_NAMESPACE);
        assert_eq!(
            image(ksm),
            "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.20.0"
        );
        let node = find("DaemonSet", "node-exporter");
        assert_eq!(image(node), "quay.io/prometheus/node-exporter:v1.12.1");
        let namespace = find("Namespace", "kaas-observer-node");
        assert_eq!(node["metadata"]["namespace"], "kaas-observer-node");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
        assert_eq!(
            find("Namespace", AGENT_NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let namespace_at = documents.iter().position(|d| d == namespace).unwrap();
        let node_at = documents.iter().position(|d| d == node).unwrap();
        assert!(namespace_at < node_at, "the namespace is applied first");
        assert_eq!(
            node["spec"]["template"]["metadata"]["labels"][CLUSTER_LABEL],
            "prod-1"
        );
        // Only the agent gets the join Secret's mount and the observer's endpoint.
        assert_eq!(
            documents.iter().filter(|d| d["kind"] == "Secret").count(),
            1
        );
        assert!(!ksm.to_string().contains("--observer"));
    }

    /// Issue 16: the node role comes with the agent: its DaemonSet wired to the
    /// observer like the Deployment, trusting the observer's CA from a ConfigMap, asking
    /// the cluster-level instance for its certificate with a projected token of the
    /// node-certificate audience and no join token; its Secret grant follows the
    /// allow-list like the cluster-level instance's.
    #[test]
    fn the_node_agent_comes_with_the_agent_without_a_join_token() {
        let allowed = namespaces(&["kaas-observer", "monitoring"]);
        let documents = agent_documents(&ManifestInput {
            secret_namespaces: &allowed,
            ..input("THE CA")
        })
        .unwrap();
        let node = documents.iter().find(|d| is_node_agent(d)).unwrap();
        assert_eq!(node["metadata"]["namespace"], NODE_NAMESPACE);
        let pod = &node["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"], AGENT_IMAGE);
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for expected in [
            "--role=node",
            "--observer=https://observer.example:8443",
            "--secret-namespaces=kaas-observer,monitoring",
            "--node-certificate-issuer=http://cluster-agent.kaas-observer.svc:8429",
        ] {
            assert!(args.contains(&expected), "{expected} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.contains("join-token")), "{args:?}");
        let text = node.to_string();
        assert!(!text.contains("secretName"), "no Secret mounted: {text}");
        assert!(
            text.contains("\"audience\":\"kaas-observer-node-certificate\""),
            "{text}"
        );
        let ca = documents
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == NODE_CA_CONFIG_MAP)
            .unwrap();
        assert_eq!(ca["metadata"]["namespace"], NODE_NAMESPACE);
        assert_eq!(ca["data"]["ca.crt"], "THE CA");
        let at = |d: &Value| documents.iter().position(|x| x == d).unwrap();
        assert!(at(ca) < at(node), "the CA exists when the pods start");
        let node_grants: Vec<&str> = documents
            .iter()
            .filter(|d| d["metadata"]["name"] == NODE_SECRETS_BINDING)
            .map(|d| d["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(node_grants, ["kaas-observer", "monitoring"]);
    }

    #[test]
    fn the_values_survive_characters_that_mean_something_in_yaml() {
        let hostile = ManifestInput {
            cluster: "a: b # c",
            control_endpoint: "https://o.example:8443/'x'",
            ca_pem: "---\n- [ ]\n",
            join_token: "\"{}\"",
            secret_namespaces: &DEFAULT_SECRET_NAMESPACES,
            central_endpoints: &[],
        };
        let text = agent_manifest(&hostile).unwrap();
        let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(documents.len(), 28);
        assert_eq!(
            documents[11]["stringData"]["ca.crt"].as_str(),
            Some(hostile.ca_pem)
        );
        assert_eq!(
            documents[11]["stringData"]["join-token"].as_str(),
            Some(hostile.join_token)
        );
        assert_eq!(
            documents[0]["metadata"]["labels"][CLUSTER_LABEL].as_str(),
            Some(hostile.cluster)
        );
    }
}
