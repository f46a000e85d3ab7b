//! Installing the agent into a workload cluster: read the cluster's
//! `<name>-kubeconfig` Secret in the management cluster (key `value`, as Cluster API
//! writes it), check the kubeconfig, build a client from it, and server-side-apply the
//! same manifests `observer cluster add` prints ([`crate::api::manifest`]), as field
//! manager [`FIELD_MANAGER`].
//!
//! Only self-contained kubeconfigs are used: a kubeconfig that runs a command (`exec`,
//! `auth-provider`) or reads files (`client-certificate`, `client-key`,
//! `certificate-authority`, `tokenFile`) is refused, because whoever can write a Secret
//! in a tenant namespace could otherwise run commands or read files on the observer.
//! Cluster API's generated kubeconfigs embed everything and pass.
//!
//! The kubeconfig's server is tenant input too (whoever writes the Secret picks it), so
//! the observer's egress policy ([`crate::egress`]) applies: the server's name is
//! resolved once, refused addresses are dropped, and the client is pointed at the
//! checked address itself, with the name kept for TLS (SNI and certificate
//! verification), so the client never resolves the name again. A kubeconfig with a
//! `proxy-url` is refused: the proxy would choose the destination.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, Config};
use serde_json::Value;

use crate::api::manifest::{self, ManifestInput};
use crate::egress::{EgressContext, EgressPolicy};

/// The field manager of everything the observer applies.
pub const FIELD_MANAGER: &str = "kaas-observer";
/// The key of the kubeconfig in Cluster API's `<cluster>-kubeconfig` Secret.
pub const KUBECONFIG_SECRET_KEY: &str = "value";
/// How long connecting to a workload cluster's API server may take: a new cluster's
/// load balancer answers within seconds or not at all; the install is retried.
pub const WORKLOAD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request to a workload cluster may take; an apply of a few small
/// objects is fast, and a hung request must not hold the reconcile for minutes.
pub const WORKLOAD_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The name of a cluster's kubeconfig Secret.
pub fn kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// Why the agent could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The Secret could not be read.
    #[error("kubeconfig Secret {namespace}/{name}: {source}")]
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error (404 while Cluster API has not written it yet).
        #[source]
        source: kube::Error,
    },
    /// The Secret holds no usable kubeconfig.
    #[error("kubeconfig Secret {namespace}/{name}: {reason}")]
    Kubeconfig {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong (never a credential).
        reason: String,
    },
    /// The manifests could not be rendered.
    #[error("rendering the agent manifests: {0}")]
    Render(String),
    /// Applying a manifest failed.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// How clients for workload clusters are made.
#[derive(Clone)]
pub enum WorkloadConnector {
    /// From each cluster's kubeconfig (the observer), to servers the policy allows.
    Kubeconfig(EgressPolicy),
    /// Every workload cluster is reached through this client (tests: a mock). The
    /// kubeconfig is still read and checked.
    Fixed(Client),
}

impl std::fmt::Debug for WorkloadConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kubeconfig(_) => "WorkloadConnector::Kubeconfig",
            Self::Fixed(_) => "WorkloadConnector::Fixed",
        })
    }
}

impl WorkloadConnector {
    /// A client for the cluster `kubeconfig` describes.
    pub async fn connect(&self, kubeconfig: Kubeconfig) -> Result<Client, String> {
        match self {
            Self::Fixed(client) => Ok(client.clone()),
            Self::Kubeconfig(egress) => {
                let mut config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                pin_server(&mut config, egress).await?;
                config.connect_timeout = Some(WORKLOAD_CONNECT_TIMEOUT);
                config.read_timeout = Some(WORKLOAD_READ_TIMEOUT);
                config.write_timeout = Some(WORKLOAD_READ_TIMEOUT);
                Client::try_from(config).map_err(|e| e.to_string())
            }
        }
    }
}

/// Points `config` at an address of its server that `egress` allows, keeping the
/// server's name for TLS; refuses a proxy. See the module note.
async fn pin_server(config: &mut Config, egress: &EgressPolicy) -> Result<(), String> {
    if config.proxy_url.is_some() {
        return Err(
            "the kubeconfig names a proxy-url; refused, the observer connects to \
                    workload clusters directly"
                .to_owned(),
        );
    }
    let url = config.cluster_url.clone();
    let host = url.host().ok_or("the kubeconfig's server has no host")?;
    let https = url.scheme_str() != Some("http");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addresses = egress
        .resolve(EgressContext::ClusterApi, host, port)
        .await
        .map_err(|e| format!("the kubeconfig's server: {e}"))?;
    let address = addresses
        .first()
        .ok_or("the kubeconfig's server has no address")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_err() && config.tls_server_name.is_none() {
        config.tls_server_name = Some(bare.to_owned());
    }
    let mut parts = url.into_parts();
    parts.authority = Some(
        address
            .to_string()
            .parse()
            .map_err(|e| format!("the kubeconfig's server: {e}"))?,
    );
    config.cluster_url =
        hyper::Uri::from_parts(parts).map_err(|e| format!("the kubeconfig's server: {e}"))?;
    Ok(())
}

/// Parses a kubeconfig and refuses one that is not self-contained (see the module
/// documentation). Pure.
pub fn parse_kubeconfig(text: &str) -> Result<Kubeconfig, String> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let mut refused = Vec::new();
    for named in &kubeconfig.clusters {
        if let Some(cluster) = &named.cluster
            && cluster.certificate_authority.is_some()
        {
            refused.push(format!(
                "cluster {:?}: certificate-authority (a file)",
                named.name
            ));
        }
    }
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let fields = [
            ("exec (runs a command)", user.exec.is_some()),
            ("auth-provider", user.auth_provider.is_some()),
            (
                "client-certificate (a file)",
                user.client_certificate.is_some(),
            ),
            ("client-key (a file)", user.client_key.is_some()),
            ("tokenFile (a file)", user.token_file.is_some()),
        ];
        for (field, present) in fields {
            if present {
                refused.push(format!("user {:?}: {field}", named.name));
            }
        }
    }
    if kubeconfig.clusters.is_empty() {
        refused.push("no cluster".to_owned());
    }
    if refused.is_empty() {
        Ok(kubeconfig)
    } else {
        Err(format!(
            "only self-contained kubeconfigs are used; refused: {}",
            refused.join(", ")
        ))
    }
}

/// Reads and checks the kubeconfig of `cluster` from its Secret in `namespace`.
pub async fn read_kubeconfig(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Kubeconfig, InstallError> {
    let name = kubeconfig_secret_name(cluster);
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&name)
        .await
        .map_err(|source| InstallError::Secret {
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        })?;
    let invalid = |reason: String| InstallError::Kubeconfig {
        namespace: namespace.to_owned(),
        name: name.clone(),
        reason,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_SECRET_KEY))
        .ok_or_else(|| invalid(format!("no key {KUBECONFIG_SECRET_KEY:?}")))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| invalid("not UTF-8".to_owned()))?;
    parse_kubeconfig(text).map_err(invalid)
}

/// The agent's manifests for `input`, one JSON value per object, in apply order
/// (namespace first). Rendered by the same function as `observer cluster add`.
pub fn agent_documents(input: &ManifestInput<'_>) -> Result<Vec<Value>, InstallError> {
    manifest::agent_documents(input).map_err(|e| InstallError::Render(e.to_string()))
}

/// The kinds the agent's manifests hold: apiVersion, kind, plural, namespaced. No
/// discovery round trip is needed for a fixed set; a test checks every manifest
/// document is covered.
const AGENT_KINDS: [(&str, &str, &str, bool); 13] = [
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    (
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("v1", "Service", "services", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    // The Secret grants, one per allowed namespace (`--agent-secret-namespaces`).
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    ("v1", "Secret", "secrets", true),
    // The observer's CA for the node instances (issue 16), public.
    ("v1", "ConfigMap", "configmaps", true),
    // Who may reach the push ports.
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    ("apps/v1", "Deployment", "deployments", true),
    // node-exporter on every node (issue 15, finding 3: the cluster health producers
    // are installed with the agent), and the agent's node role (issue 16).
    ("apps/v1", "DaemonSet", "daemonsets", true),
];

/// Where a manifest document is applied: its resource, namespace (for namespaced
/// kinds) and name.
pub fn apply_target(document: &Value) -> Result<(ApiResource, Option<String>, String), String> {
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    let kind = document["kind"].as_str().unwrap_or_default();
    let name = document["metadata"]["name"]
        .as_str()
        .ok_or_else(|| format!("{kind} without metadata.name"))?;
    let (_, _, plural, namespaced) = AGENT_KINDS
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)
        .ok_or_else(|| format!("no resource known for {api_version} {kind}"))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let namespace = if *namespaced {
        Some(
            document["metadata"]["namespace"]
                .as_str()
                .ok_or_else(|| format!("{kind} {name} without metadata.namespace"))?
                .to_owned(),
        )
    } else {
        None
    };
    Ok((resource, namespace, name.to_owned()))
}

/// Server-side-applies `documents` in order, forcing ownership of conflicting fields
/// (the observer owns the agent's objects).
pub async fn apply_documents(client: &Client, documents: &[Value]) -> Result<(), InstallError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for document in documents {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let (resource, namespace, name) = apply_target(document).map_err(InstallError::Render)?;
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(document))
            .await
            .map_err(|source| InstallError::Apply {
                kind,
                name: name.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF_CONTAINED: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: prod-1
  cluster:
    server: http://127.0.0.1:1
contexts:
- name: prod-1-admin@prod-1
  context: {cluster: prod-1, user: prod-1-admin}
current-context: prod-1-admin@prod-1
users:
- name: prod-1-admin
  user:
    token: not-a-real-token
"#;

    #[test]
    fn a_self_contained_kubeconfig_is_accepted() {
        parse_kubeconfig(SELF_CONTAINED).unwrap();
    }

    #[test]
    fn kubeconfigs_that_run_commands_or_read_files_are_refused() {
        let exec = SELF_CONTAINED.replace(
            "    token: not-a-real-token",
            "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, id]}",
        );
        let files = SELF_CONTAINED
            .replace(
                "    server: http://127.0.0.1:1",
                "    server: http://127.0.0.1:1\n    certificate-authority: /etc/ca.crt",
            )
            .replace(
                "    token: not-a-real-token",
                "    client-certificate: /etc/passwd\n    client-key: /etc/shadow\n    tokenFile: /etc/token",
            );
        let exec_error = parse_kubeconfig(&exec).unwrap_err();
        assert!(exec_error.contains("exec (runs a command)"), "{exec_error}");
        let files_error = parse_kubeconfig(&files).unwrap_err();
        for field in [
            "certificate-authority",
            "client-certificate",
            "client-key",
            "tokenFile",
        ] {
            assert!(files_error.contains(field), "{field}: {files_error}");
        }
        assert!(parse_kubeconfig("just text").is_err());
    }

    fn allowing_loopback() -> EgressPolicy {
        EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], Vec::new())
    }

    #[tokio::test]
    async fn a_client_is_built_from_a_kubeconfig_without_contacting_the_cluster() {
        let kubeconfig = parse_kubeconfig(SELF_CONTAINED).unwrap();
        WorkloadConnector::Kubeconfig(allowing_loopback())
            .connect(kubeconfig)
            .await
            .unwrap();
    }

    /// Issue 13, finding 5: the kubeconfig's server is tenant input; with the shipped
    /// policy a loopback server, literal or by name, is refused before any connection.
    #[tokio::test]
    async fn a_kubeconfig_server_the_egress_policy_refuses_gets_no_client() {
        let by_name = SELF_CONTAINED.replace("http://127.0.0.1:1", "https://localhost:6443");
        for text in [SELF_CONTAINED, by_name.as_str()] {
            let error = WorkloadConnector::Kubeconfig(EgressPolicy::default())
                .connect(parse_kubeconfig(text).unwrap())
                .await
                .err()
                .expect("refused");
            assert!(error.contains("(loopback)"), "{error}");
        }
        let proxied = SELF_CONTAINED.replace(
            "    server: http://127.0.0.1:1",
            "    server: http://127.0.0.1:1\n    proxy-url: http://127.0.0.1:3128",
        );
        let error = WorkloadConnector::Kubeconfig(allowing_loopback())
            .connect(parse_kubeconfig(&proxied).unwrap())
            .await
            .err()
            .expect("refused");
        assert!(error.contains("proxy-url"), "{error}");
    }

    #[tokio::test]
    async fn the_client_goes_to_the_checked_address_and_verifies_the_name() {
        let by_name = SELF_CONTAINED.replace("http://127.0.0.1:1", "https://localhost:6443");
        let kubeconfig = parse_kubeconfig(&by_name).unwrap();
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        pin_server(&mut config, &allowing_loopback()).await.unwrap();
        assert_eq!(
            config.cluster_url.host(),
            Some("127.0.0.1"),
            "{}",
            config.cluster_url
        );
        assert_eq!(config.cluster_url.port_u16(), Some(6443));
        assert_eq!(config.tls_server_name.as_deref(), Some("localhost"));
    }

    #[test]
    fn every_agent_manifest_document_has_an_apply_target() {
        let documents = agent_documents(&ManifestInput {
            cluster: "prod-1",
            control_endpoint: "https://observer.example:8443",
            ca_pem: "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            join_token: "kjt_test",
            secret_namespaces: &["kaas-observer".to_owned(), "monitoring".to_owned()],
            central_endpoints: &[],
        })
        .unwrap();
        let kinds: std::collections::BTreeSet<&str> = documents
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds.len(),
            AGENT_KINDS.len(),
            "every kind is used: {kinds:?}"
        );
        let targets: Vec<String> = documents
            .iter()
            .map(|document| {
                let (resource, namespace, name) = apply_target(document).unwrap();
                format!(
                    "{}/{} {}/{}",
                    resource.api_version,
                    resource.plural,
                    namespace.unwrap_or_default(),
                    name
                )
            })
            .collect();
        assert_eq!(
            targets,
            [
                "v1/namespaces /kaas-observer",
                "v1/serviceaccounts kaas-observer/cluster-agent",
                "rbac.authorization.k8s.io/v1/clusterroles /cluster-agent",
                "rbac.authorization.k8s.io/v1/clusterrolebindings /cluster-agent",
                "rbac.authorization.k8s.io/v1/roles kaas-observer/cluster-agent-secrets",
                "rbac.authorization.k8s.io/v1/roles monitoring/cluster-agent-secrets",
                "rbac.authorization.k8s.io/v1/rolebindings kaas-observer/cluster-agent-secrets",
                "rbac.authorization.k8s.io/v1/rolebindings monitoring/cluster-agent-secrets",
                "rbac.authorization.k8s.io/v1/clusterroles /cluster-agent-token-review",
                "rbac.authorization.k8s.io/v1/clusterrolebindings /cluster-agent-token-review",
                "v1/persistentvolumeclaims kaas-observer/cluster-agent-data",
                "v1/services kaas-observer/cluster-agent",
                "networking.k8s.io/v1/networkpolicies kaas-observer/cluster-agent",
                "v1/secrets kaas-observer/cluster-agent",
                "apps/v1/deployments kaas-observer/cluster-agent",
                "v1/serviceaccounts kaas-observer/kube-state-metrics",
                "rbac.authorization.k8s.io/v1/clusterroles /kube-state-metrics",
                "rbac.authorization.k8s.io/v1/clusterrolebindings /kube-state-metrics",
                "v1/services kaas-observer/kube-state-metrics",
                "networking.k8s.io/v1/networkpolicies kaas-observer/kube-state-metrics",
                "apps/v1/deployments kaas-observer/kube-state-metrics",
                "v1/namespaces /kaas-observer-node",
                "v1/serviceaccounts kaas-observer-node/node-exporter",
                "apps/v1/daemonsets kaas-observer-node/node-exporter",
                "v1/serviceaccounts kaas-observer-node/cluster-agent-node",
                "v1/configmaps kaas-observer-node/observer-ca",
                "apps/v1/daemonsets kaas-observer-node/cluster-agent-node",
                "rbac.authorization.k8s.io/v1/clusterroles /cluster-agent-node",
                "rbac.authorization.k8s.io/v1/clusterrolebindings /cluster-agent-node",
                "rbac.authorization.k8s.io/v1/rolebindings kaas-observer/cluster-agent-node-secrets",
                "rbac.authorization.k8s.io/v1/rolebindings monitoring/cluster-agent-node-secrets",
            ]
        );
    }
}
