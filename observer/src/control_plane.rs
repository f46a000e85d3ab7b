//! Which control-plane components the central pipeline scrapes on one cluster, and how:
//! a per-cluster setting from onboarding (`PUT /api/v1/clusters/{name}/control-plane`,
//! `observer cluster add --control-plane`, `observer cluster control-plane --set`),
//! parsed, validated with field paths, stored validated, and rendered into the central pipeline
//! ([`crate::rendering::central`]).
//!
//! Issue 15, finding 3: the central pipeline used to scrape no control-plane component
//! at all. How a component can be reached differs per cluster: kubeadm binds
//! kube-scheduler and kube-controller-manager to 127.0.0.1 on the control-plane nodes,
//! etcd's client port needs client certificates, and a hosted control plane (Gardener,
//! managed offerings) is not in the workload cluster at all. So each component is one
//! of:
//!
//! * `addresses`: fixed `host:port` targets (e.g. etcd's metrics listener
//!   `--listen-metrics-urls=http://0.0.0.0:2381`, or a component whose bind address the
//!   provider opened), with `scheme` and `metricsPath`;
//! * `service`: the endpoints of a Service carrying the `prometheus.io/scrape`
//!   annotation (CoreDNS' `kube-system/kube-dns`, as kubeadm creates it);
//! * `notScraped`: not scraped, with the reason, which the cluster's control-plane
//!   status shows ([`ValidatedControlPlane::not_scraped`]). A component that is not
//!   scraped has no series, so no alert fires for it.
//!
//! With `serviceAccountCredentials` (https only) the agent scrapes `addresses` with its
//! service-account token and verifies them against the cluster CA, as it scrapes
//! kubelets; the targets are sealed against relabeling and the token is bound to each
//! target's URL (`kaas_pipeline::sealed`). By default the API server is scraped that
//! way through `kubernetes.default.svc:443` ([`DEFAULT_APISERVER_ADDRESS`]) and CoreDNS
//! through its annotated Service; kube-scheduler, kube-controller-manager and etcd,
//! which kubeadm binds to 127.0.0.1 or protects with client certificates, are
//! `notScraped` with that reason ([`DEFAULT_NOT_SCRAPED`]).
//!
//! etcd's client port needs client certificates: with `clientCertificateSecret:
//! namespace/name` (etcd only, `scheme: https`) the agent scrapes etcd's `addresses`
//! presenting the certificate and key of that Secret in the workload cluster
//! (`tls.crt`, `tls.key`, verified against its `ca.crt`), and only for that scrape.
//! The Secret's namespace must be one the agents may read Secrets in
//! (`--agent-secret-namespaces`, [`ValidatedControlPlane::check_secret_namespaces`]);
//! the certificate never leaves the workload cluster. Without it, etcd is scraped on
//! its plain metrics listener or not at all.

use std::collections::BTreeSet;

use kaas_pipeline::input::{Scheme, StaticTargetGroup, check_host_port};
use kaas_pipeline::secret::{SecretKeyRef, ValueFrom, ValueSource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many addresses per component: a control plane has a handful of nodes;
/// the bound keeps a hostile setting from rendering thousands of targets.
pub const MAX_ADDRESSES: usize = 16;
/// The longest `notScraped` reason: a sentence for the status, not a document.
pub const MAX_REASON_CHARS: usize = 300;
/// The longest `metricsPath`.
pub const MAX_METRICS_PATH_CHARS: usize = 256;
/// The keys of the `clientCertificateSecret`: those of a `kubernetes.io/tls` Secret,
/// plus the CA that signed etcd's serving certificate, as kubeadm's
/// `/etc/kubernetes/pki/etcd/{healthcheck-client.crt,healthcheck-client.key,ca.crt}`
/// are usually copied into one.
pub const CLIENT_CERTIFICATE_KEYS: (&str, &str, &str) = ("tls.crt", "tls.key", "ca.crt");

/// A control-plane component, named by the `job` its series carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// kube-apiserver.
    Apiserver,
    /// kube-scheduler.
    KubeScheduler,
    /// kube-controller-manager.
    KubeControllerManager,
    /// etcd.
    Etcd,
    /// CoreDNS.
    Coredns,
}

/// Every component, in the order settings and statuses list them.
pub const COMPONENTS: [Component; 5] = [
    Component::Apiserver,
    Component::KubeScheduler,
    Component::KubeControllerManager,
    Component::Etcd,
    Component::Coredns,
];

impl Component {
    /// The `job` label of the component's series (the alerts and the kubernetes-mixin
    /// dashboards select on it).
    pub fn job(self) -> &'static str {
        match self {
            Self::Apiserver => "apiserver",
            Self::KubeScheduler => "kube-scheduler",
            Self::KubeControllerManager => "kube-controller-manager",
            Self::Etcd => "etcd",
            Self::Coredns => "coredns",
        }
    }

    /// The component's field in the setting.
    pub fn field(self) -> &'static str {
        match self {
            Self::Apiserver => "apiserver",
            Self::KubeScheduler => "kubeScheduler",
            Self::KubeControllerManager => "kubeControllerManager",
            Self::Etcd => "etcd",
            Self::Coredns => "coredns",
        }
    }
}

/// Why a component is not scraped when the cluster's setting does not say.
pub const DEFAULT_NOT_SCRAPED: [(Component, &str); 3] = [
    (
        Component::KubeScheduler,
        "kube-scheduler binds its metrics port to 127.0.0.1 on the control-plane nodes by \
         default; set addresses (with serviceAccountCredentials) once it listens on an \
         address the agent reaches",
    ),
    (
        Component::KubeControllerManager,
        "kube-controller-manager binds its metrics port to 127.0.0.1 on the control-plane \
         nodes by default; set addresses (with serviceAccountCredentials) once it listens on \
         an address the agent reaches",
    ),
    (
        Component::Etcd,
        "etcd's client port needs client certificates; set addresses of its metrics listener \
         (--listen-metrics-urls=http://<node address>:2381)",
    ),
];

/// The API server as every pod reaches it (the `default/kubernetes` Service), scraped
/// with the agent's token and verified against the cluster CA.
pub const DEFAULT_APISERVER_ADDRESS: &str = "kubernetes.default.svc:443";

/// CoreDNS' Service as kubeadm (and most distributions) create it, annotated with
/// `prometheus.io/scrape: "true"` and `prometheus.io/port: "9153"`.
pub const DEFAULT_COREDNS_SERVICE: &str = "kube-system/kube-dns";

/// How one component is scraped, as written: exactly one of `addresses`, `service`
/// and `notScraped`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentScrape {
    /// Fixed targets as `host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// `http` (default) or `https`, with `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// The path to scrape, with `addresses`. Default `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Scrape `addresses` with the agent's service-account token, verifying them
    /// against the cluster CA (`scheme: https` only), as the API server,
    /// kube-scheduler and kube-controller-manager want; the agent's ClusterRole grants
    /// `get` on the non-resource URL `/metrics` for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_account_credentials: bool,
    /// `namespace/name` of a Secret in the workload cluster holding etcd's client
    /// certificate (`tls.crt`), key (`tls.key`) and CA (`ca.crt`): etcd only, with
    /// `addresses` and `scheme: https`; the namespace must be one the agents may read
    /// Secrets in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<String>,
    /// `namespace/name` of an annotated Service whose endpoints are scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Not scraped, for this reason (shown in the cluster's control-plane status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_scraped: Option<String>,
}

/// The per-cluster setting as written; a component left out takes its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneScrape {
    /// kube-apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiserver: Option<ComponentScrape>,
    /// kube-scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_scheduler: Option<ComponentScrape>,
    /// kube-controller-manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_controller_manager: Option<ComponentScrape>,
    /// etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<ComponentScrape>,
    /// CoreDNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coredns: Option<ComponentScrape>,
}

/// How a component is scraped, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatedComponent {
    /// Fixed targets.
    Addresses {
        /// `host:port`, each checked, none twice.
        addresses: Vec<String>,
        /// The scheme.
        scheme: Scheme,
        /// The path.
        metrics_path: String,
        /// Scraped with the agent's token, verified against the cluster CA.
        service_account_credentials: bool,
        /// `(namespace, name)` of the Secret with the client certificate (etcd).
        client_certificate_secret: Option<(String, String)>,
    },
    /// An annotated Service's endpoints.
    Service {
        /// Its namespace (a DNS label).
        namespace: String,
        /// Its name (a DNS label).
        name: String,
    },
    /// Not scraped.
    NotScraped {
        /// Why.
        reason: String,
    },
}

/// The checked setting of one cluster, every component decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedControlPlane {
    components: Vec<(Component, ValidatedComponent)>,
    spec: ControlPlaneScrape,
}

/// A field of the setting that is wrong, with its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneFieldError {
    /// e.g. `controlPlane.etcd.addresses[1]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Why a setting was refused: every wrong field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid control-plane setting: {}", .errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ControlPlaneError {
    /// The wrong fields.
    pub errors: Vec<ControlPlaneFieldError>,
}

/// The path prefix of every field error.
const ROOT: &str = "controlPlane";

impl ControlPlaneScrape {
    fn component(&self, component: Component) -> Option<&ComponentScrape> {
        match component {
            Component::Apiserver => self.apiserver.as_ref(),
            Component::KubeScheduler => self.kube_scheduler.as_ref(),
            Component::KubeControllerManager => self.kube_controller_manager.as_ref(),
            Component::Etcd => self.etcd.as_ref(),
            Component::Coredns => self.coredns.as_ref(),
        }
    }

    /// Checks every component (pure); the errors name each wrong field.
    pub fn validate(&self) -> Result<ValidatedControlPlane, ControlPlaneError> {
        let mut errors = Vec::new();
        let mut components = Vec::new();
        // (address, path) of every component so far: one target scraped under two jobs
        // would also be refused by the pipeline's own validation, leaving the cluster
        // without its central pipeline.
        let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
        for component in COMPONENTS {
            let path = format!("{ROOT}.{}", component.field());
            let validated = match self.component(component) {
                None => default_component(component),
                Some(written) => match written.validate(component, &path, &mut errors) {
                    Some(validated) => validated,
                    None => continue,
                },
            };
            if let ValidatedComponent::Addresses {
                addresses,
                metrics_path,
                ..
            } = &validated
            {
                for (i, address) in addresses.iter().enumerate() {
                    if !targets.insert((address.clone(), metrics_path.clone())) {
                        errors.push(ControlPlaneFieldError {
                            field: format!("{path}.addresses[{i}]"),
                            message: format!(
                                "{address:?} with path {metrics_path} is another component's target"
                            ),
                        });
                    }
                }
            }
            components.push((component, validated));
        }
        if errors.is_empty() {
            Ok(ValidatedControlPlane {
                components,
                spec: self.clone(),
            })
        } else {
            Err(ControlPlaneError { errors })
        }
    }
}

fn default_component(component: Component) -> ValidatedComponent {
    if let Some((_, reason)) = DEFAULT_NOT_SCRAPED.iter().find(|(c, _)| *c == component) {
        return ValidatedComponent::NotScraped {
            reason: (*reason).to_owned(),
        };
    }
    if component == Component::Apiserver {
        return ValidatedComponent::Addresses {
            addresses: vec![DEFAULT_APISERVER_ADDRESS.to_owned()],
            scheme: Scheme::Https,
            metrics_path: kaas_pipeline::input::DEFAULT_METRICS_PATH.to_owned(),
            service_account_credentials: true,
            client_certificate_secret: None,
        };
    }
    let (namespace, name) = DEFAULT_COREDNS_SERVICE
        .split_once('/')
        .unwrap_or(("kube-system", "kube-dns"));
    ValidatedComponent::Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The TLS settings of a scrape presenting the client certificate of Secret
/// `namespace/name` ([`CLIENT_CERTIFICATE_KEYS`]).
fn client_certificate_tls(namespace: &str, name: &str) -> kaas_pipeline::output::Tls {
    let key = |key: &str| ValueSource {
        value: None,
        value_from: Some(ValueFrom {
            secret_key_ref: Some(SecretKeyRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            }),
            file: None,
        }),
    };
    let (cert, private_key, ca) = CLIENT_CERTIFICATE_KEYS;
    kaas_pipeline::output::Tls {
        cert: Some(key(cert)),
        key: Some(key(private_key)),
        ca: Some(key(ca)),
        ..kaas_pipeline::output::Tls::default()
    }
}

/// Whether `address` (a checked `host:port`) names the loopback interface.
fn is_loopback(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ComponentScrape {
    fn validate(
        &self,
        component: Component,
        path: &str,
        errors: &mut Vec<ControlPlaneFieldError>,
    ) -> Option<ValidatedComponent> {
        let before = errors.len();
        let mut add = |field: String, message: String| {
            errors.push(ControlPlaneFieldError { field, message });
        };
        let chosen = usize::from(!self.addresses.is_empty())
            + usize::from(self.service.is_some())
            + usize::from(self.not_scraped.is_some());
        if chosen != 1 {
            add(
                path.to_owned(),
                "set exactly one of addresses, service and notScraped".to_owned(),
            );
        }
        if self.addresses.is_empty()
            && (self.scheme.is_some()
                || self.metrics_path.is_some()
                || self.service_account_credentials)
        {
            add(
                path.to_owned(),
                "scheme, metricsPath and serviceAccountCredentials apply to addresses only"
                    .to_owned(),
            );
        }
        if let Some(problem) = self.client_certificate_problem(component) {
            add(format!("{path}.clientCertificateSecret"), problem);
        }
        if self.service_account_credentials && self.scheme != Some(Scheme::Https) {
            add(
                format!("{path}.serviceAccountCredentials"),
                "needs scheme: https; the agent's token is never sent in clear text".to_owned(),
            );
        }
        if self.addresses.len() > MAX_ADDRESSES {
            add(
                format!("{path}.addresses"),
                format!("at most {MAX_ADDRESSES} addresses"),
            );
        }
        for (i, reason) in self.address_problems() {
            add(format!("{path}.addresses[{i}]"), reason);
        }
        if let Some(metrics_path) = &self.metrics_path
            && (!metrics_path.starts_with('/')
                || metrics_path.chars().count() > MAX_METRICS_PATH_CHARS
                || metrics_path
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#'))
        {
            add(
                format!("{path}.metricsPath"),
                format!(
                    "must start with '/', hold no whitespace, '?' or '#', and have at most \
                     {MAX_METRICS_PATH_CHARS} characters"
                ),
            );
        }
        if let Some(service) = &self.service
            && split_name(service).is_none()
        {
            add(
                format!("{path}.service"),
                format!("{service:?} is not namespace/name of a Service"),
            );
        }
        if let Some(reason) = &self.not_scraped
            && (reason.trim().is_empty()
                || reason.chars().count() > MAX_REASON_CHARS
                || reason.chars().any(char::is_control))
        {
            add(
                format!("{path}.notScraped"),
                format!("give the reason in one line of at most {MAX_REASON_CHARS} characters"),
            );
        }
        if errors.len() > before {
            return None;
        }
        Some(self.decided())
    }

    /// What is wrong with the component's client certificate setting, if anything.
    fn client_certificate_problem(&self, component: Component) -> Option<String> {
        let secret = self.client_certificate_secret.as_ref()?;
        if component != Component::Etcd {
            Some("only etcd is scraped with a client certificate".to_owned())
        } else if self.addresses.is_empty() || self.scheme != Some(Scheme::Https) {
            Some(
                "needs addresses and scheme: https; the certificate is presented over TLS"
                    .to_owned(),
            )
        } else if self.service_account_credentials {
            Some("set either serviceAccountCredentials or clientCertificateSecret".to_owned())
        } else if split_name(secret).is_none() {
            Some(format!("{secret:?} is not namespace/name of a Secret"))
        } else {
            None
        }
    }

    /// The addresses that are not a usable `host:port` of a node or Service, by index,
    /// with the reason.
    fn address_problems(&self) -> Vec<(usize, String)> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, address) in self.addresses.iter().enumerate() {
            if let Err(reason) = check_host_port(address) {
                problems.push((i, reason));
            } else if is_loopback(address) {
                problems.push((
                    i,
                    format!(
                        "{address:?} is the agent pod's own loopback, never a control-plane \
                         component; give an address of the node or a Service"
                    ),
                ));
            } else if !seen.insert(address) {
                problems.push((i, format!("{address:?} is listed twice")));
            }
        }
        problems
    }

    /// The component as checked: what [`Self::validate`] returns once nothing is wrong.
    fn decided(&self) -> ValidatedComponent {
        if let Some(reason) = &self.not_scraped {
            ValidatedComponent::NotScraped {
                reason: reason.trim().to_owned(),
            }
        } else if let Some((namespace, name)) =
            self.service.as_deref().and_then(|s| s.split_once('/'))
        {
            ValidatedComponent::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }
        } else {
            ValidatedComponent::Addresses {
                addresses: self.addresses.clone(),
                scheme: self.scheme.unwrap_or(Scheme::Http),
                metrics_path: self
                    .metrics_path
                    .clone()
                    .unwrap_or_else(|| kaas_pipeline::input::DEFAULT_METRICS_PATH.to_owned()),
                service_account_credentials: self.service_account_credentials,
                client_certificate_secret: self
                    .client_certificate_secret
                    .as_deref()
                    .and_then(split_name),
            }
        }
    }
}

/// `namespace/name` split, both DNS-1123 labels (as Services and most Secrets are
/// named); `None` otherwise.
fn split_name(text: &str) -> Option<(String, String)> {
    let (namespace, name) = text.split_once('/')?;
    (kaas_pipeline::names::check_dns1123_label(namespace).is_ok()
        && kaas_pipeline::names::check_dns1123_label(name).is_ok())
    .then(|| (namespace.to_owned(), name.to_owned()))
}

impl Default for ValidatedControlPlane {
    /// What a cluster without a setting gets.
    fn default() -> Self {
        ControlPlaneScrape::default()
            .validate()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl ValidatedControlPlane {
    /// Every component with how it is scraped.
    pub fn components(&self) -> &[(Component, ValidatedComponent)] {
        &self.components
    }

    /// The setting as written (what is stored and returned).
    pub fn spec(&self) -> &ControlPlaneScrape {
        &self.spec
    }

    /// The components that are not scraped, with the reason: the cluster's status shows
    /// them, and no alert fires for them (they have no series).
    pub fn not_scraped(&self) -> Vec<(Component, &str)> {
        self.components
            .iter()
            .filter_map(|(component, how)| match how {
                ValidatedComponent::NotScraped { reason } => Some((*component, reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The static target groups of the components scraped at fixed addresses, each
    /// labelled with its `job`.
    pub fn static_groups(&self) -> Vec<StaticTargetGroup> {
        self.components
            .iter()
            .filter_map(|(component, how)| match how {
                ValidatedComponent::Addresses {
                    addresses,
                    scheme,
                    metrics_path,
                    service_account_credentials,
                    client_certificate_secret,
                } => Some(StaticTargetGroup {
                    addresses: addresses.clone(),
                    labels: [("job".to_owned(), component.job().to_owned())].into(),
                    scheme: Some(*scheme),
                    metrics_path: Some(metrics_path.clone()),
                    service_account_credentials: *service_account_credentials,
                    tls: client_certificate_secret
                        .as_ref()
                        .map(|(namespace, name)| client_certificate_tls(namespace, name)),
                    ..StaticTargetGroup::default()
                }),
                _ => None,
            })
            .collect()
    }

    /// Refuses a `clientCertificateSecret` in a namespace agents may not read Secrets
    /// in (`allowed`, `--agent-secret-namespaces`): the agent would refuse the whole
    /// configuration.
    pub fn check_secret_namespaces(
        &self,
        allowed: &kaas_pipeline::SecretNamespaces,
    ) -> Result<(), ControlPlaneError> {
        let errors: Vec<ControlPlaneFieldError> = self
            .components
            .iter()
            .filter_map(|(component, how)| match how {
                ValidatedComponent::Addresses {
                    client_certificate_secret: Some((namespace, _)),
                    ..
                } if !allowed.allows(namespace) => Some(ControlPlaneFieldError {
                    field: format!("{ROOT}.{}.clientCertificateSecret", component.field()),
                    message: format!(
                        "agents may not read Secrets in namespace {namespace:?}; use one of \
                         the namespaces of --agent-secret-namespaces"
                    ),
                }),
                _ => None,
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ControlPlaneError { errors })
        }
    }

    /// `(namespace, service, job)` of the components scraped through an annotated
    /// Service.
    pub fn services(&self) -> Vec<(&str, &str, &'static str)> {
        self.components
            .iter()
            .filter_map(|(component, how)| match how {
                ValidatedComponent::Service { namespace, name } => {
                    Some((namespace.as_str(), name.as_str(), component.job()))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_without_a_setting_scrapes_the_api_server_and_coredns_and_says_why_not_the_rest() {
        let defaults = ValidatedControlPlane::default();
        assert_eq!(
            defaults.services(),
            [("kube-system", "kube-dns", "coredns")]
        );
        let not: Vec<&str> = defaults
            .not_scraped()
            .iter()
            .map(|(c, _)| c.job())
            .collect();
        assert_eq!(not, ["kube-scheduler", "kube-controller-manager", "etcd"]);
        let groups = defaults.static_groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].labels["job"], "apiserver");
        assert_eq!(groups[0].addresses, [DEFAULT_APISERVER_ADDRESS]);
        assert_eq!(groups[0].scheme, Some(Scheme::Https));
        assert!(groups[0].service_account_credentials);
    }

    #[test]
    fn addresses_render_as_static_targets_with_the_components_job() {
        let setting: ControlPlaneScrape = serde_json::from_value(serde_json::json!({
            "etcd": {"addresses": ["10.0.0.10:2381", "10.0.0.11:2381"]},
            "kubeScheduler": {"addresses": ["10.0.0.10:10251"], "metricsPath": "/metrics"},
            "coredns": {"notScraped": "CoreDNS is the provider's"}
        }))
        .unwrap();
        let validated = setting.validate().unwrap();
        let groups = validated.static_groups();
        let jobs: Vec<&str> = groups.iter().map(|g| g.labels["job"].as_str()).collect();
        assert_eq!(jobs, ["apiserver", "kube-scheduler", "etcd"]);
        assert_eq!(groups[2].addresses.len(), 2);
        assert!(!groups[2].service_account_credentials);
        assert!(validated.services().is_empty());
        assert!(
            validated
                .not_scraped()
                .contains(&(Component::Coredns, "CoreDNS is the provider's"))
        );
        assert_eq!(validated.spec(), &setting);
    }

    /// One bad setting per rule, each refused at its field path.
    #[test]
    fn bad_settings_are_refused_with_their_field_paths() {
        let cases = [
            (
                serde_json::json!({"etcd": {}}),
                "controlPlane.etcd",
                "exactly one",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["a:1"], "notScraped": "x"}}),
                "controlPlane.etcd",
                "exactly one",
            ),
            (
                serde_json::json!({"apiserver": {"addresses": ["http://a:1"]}}),
                "controlPlane.apiserver.addresses[0]",
                "scheme",
            ),
            (
                serde_json::json!({"apiserver": {"addresses": ["a:1", "a:1"]}}),
                "controlPlane.apiserver.addresses[1]",
                "twice",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["127.0.0.1:2381"]}}),
                "controlPlane.etcd.addresses[0]",
                "loopback",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["[::1]:2381"]}}),
                "controlPlane.etcd.addresses[0]",
                "loopback",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["localhost:2381"]}}),
                "controlPlane.etcd.addresses[0]",
                "loopback",
            ),
            (
                serde_json::json!({
                    "kubeScheduler": {"addresses": ["10.0.0.1:10259"]},
                    "etcd": {"addresses": ["10.0.0.1:10259"]}
                }),
                "controlPlane.etcd.addresses[0]",
                "another component",
            ),
            (
                serde_json::json!({"kubeScheduler": {"addresses": ["a:1"], "metricsPath": "metrics"}}),
                "controlPlane.kubeScheduler.metricsPath",
                "start with",
            ),
            (
                serde_json::json!({"coredns": {"service": "kube-dns"}}),
                "controlPlane.coredns.service",
                "namespace/name",
            ),
            (
                serde_json::json!({"coredns": {"service": "kube-system/Kube_DNS"}}),
                "controlPlane.coredns.service",
                "namespace/name",
            ),
            (
                serde_json::json!({"etcd": {"notScraped": " "}}),
                "controlPlane.etcd.notScraped",
                "reason",
            ),
            (
                serde_json::json!({"etcd": {"notScraped": "a\nb"}}),
                "controlPlane.etcd.notScraped",
                "reason",
            ),
            (
                serde_json::json!({"etcd": {"notScraped": "x".repeat(MAX_REASON_CHARS + 1)}}),
                "controlPlane.etcd.notScraped",
                "reason",
            ),
            (
                serde_json::json!({"etcd": {"service": "a/b", "scheme": "https"}}),
                "controlPlane.etcd",
                "addresses only",
            ),
            (
                serde_json::json!({"kubeScheduler": {"addresses": ["10.0.0.1:10259"], "serviceAccountCredentials": true}}),
                "controlPlane.kubeScheduler.serviceAccountCredentials",
                "https",
            ),
            (
                serde_json::json!({"etcd": {"addresses": (0..=MAX_ADDRESSES).map(|i| format!("10.0.0.{i}:2381")).collect::<Vec<_>>()}}),
                "controlPlane.etcd.addresses",
                "at most",
            ),
        ];
        let cases = cases.into_iter().chain([
            (
                serde_json::json!({"apiserver": {"addresses": ["10.0.0.1:6443"], "scheme": "https", "clientCertificateSecret": "kube-system/etcd-client"}}),
                "controlPlane.apiserver.clientCertificateSecret",
                "only etcd",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["10.0.0.1:2379"], "clientCertificateSecret": "kube-system/etcd-client"}}),
                "controlPlane.etcd.clientCertificateSecret",
                "scheme: https",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["10.0.0.1:2379"], "scheme": "https", "serviceAccountCredentials": true, "clientCertificateSecret": "kube-system/etcd-client"}}),
                "controlPlane.etcd.clientCertificateSecret",
                "either",
            ),
            (
                serde_json::json!({"etcd": {"addresses": ["10.0.0.1:2379"], "scheme": "https", "clientCertificateSecret": "etcd-client"}}),
                "controlPlane.etcd.clientCertificateSecret",
                "namespace/name",
            ),
        ]);
        for (value, field, needle) in cases {
            let setting: ControlPlaneScrape = serde_json::from_value(value.clone()).unwrap();
            let error = setting.validate().unwrap_err();
            assert!(
                error
                    .errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(needle)),
                "{value}: {error}"
            );
        }
        // Unknown components and fields are refused by the parser.
        for value in [
            serde_json::json!({"kubeProxy": {"notScraped": "x"}}),
            serde_json::json!({"etcd": {"addresses": ["a:1"], "clientCert": "x"}}),
        ] {
            assert!(serde_json::from_value::<ControlPlaneScrape>(value).is_err());
        }
    }

    /// Issue 15: etcd's client certificate comes from a Secret in the workload cluster,
    /// rendered as secret references for etcd's scrape only, and its namespace must be
    /// one agents may read Secrets in.
    #[test]
    fn etcd_is_scraped_with_the_client_certificate_from_its_secret() {
        let setting: ControlPlaneScrape = serde_json::from_value(serde_json::json!({
            "etcd": {"addresses": ["10.0.0.10:2379"], "scheme": "https",
                     "clientCertificateSecret": "kube-system/etcd-client"}
        }))
        .unwrap();
        let validated = setting.validate().unwrap();
        let groups = validated.static_groups();
        let etcd = groups.iter().find(|g| g.labels["job"] == "etcd").unwrap();
        let tls = etcd.tls.as_ref().unwrap();
        for (source, key) in [
            (&tls.cert, "tls.crt"),
            (&tls.key, "tls.key"),
            (&tls.ca, "ca.crt"),
        ] {
            let reference = source
                .as_ref()
                .and_then(|s| s.value_from.as_ref())
                .and_then(|f| f.secret_key_ref.as_ref())
                .unwrap();
            assert_eq!(
                (
                    reference.namespace.as_str(),
                    reference.name.as_str(),
                    reference.key.as_str()
                ),
                ("kube-system", "etcd-client", key)
            );
        }
        assert!(!tls.agent_identity);
        assert!(
            groups
                .iter()
                .filter(|g| g.labels["job"] != "etcd")
                .all(|g| g.tls.is_none()),
            "only etcd's scrape presents it"
        );
        // Rendered into the central pipeline, it passes the provider's validation and
        // an agent allowed kube-system.
        let settings =
            crate::rendering::central::CentralPipelineSettings::new("https://gw.example:19291");
        let pipelines =
            crate::rendering::central::central_pipelines_with(&settings, &validated).unwrap();
        let mut policy = kaas_pipeline::ProviderPolicy::unrestricted();
        policy.secret_namespaces = kaas_pipeline::SecretNamespaces::only(["kube-system"]);
        let central = pipelines
            .iter()
            .find(|p| p.name() == crate::rendering::central::CENTRAL_PIPELINE_NAME)
            .unwrap();
        let refs: Vec<_> = central
            .secret_refs()
            .iter()
            .map(|r| r.key.clone())
            .collect();
        assert_eq!(refs, ["ca.crt", "tls.crt", "tls.key"]);
        kaas_pipeline::validate(
            central.resource(),
            &kaas_pipeline::ValidationContext::observer(policy),
        )
        .unwrap();

        assert!(
            validated
                .check_secret_namespaces(&kaas_pipeline::SecretNamespaces::only(["kube-system"]))
                .is_ok()
        );
        let error = validated
            .check_secret_namespaces(&kaas_pipeline::SecretNamespaces::only(["kaas-observer"]))
            .unwrap_err();
        assert_eq!(
            error.errors[0].field,
            "controlPlane.etcd.clientCertificateSecret"
        );
        assert!(error.errors[0].message.contains("kube-system"), "{error}");
    }
}
