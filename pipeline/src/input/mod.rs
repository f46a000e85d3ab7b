//! Where a pipeline's samples come from: annotated workloads (`prometheus`), the
//! Kubernetes runtime (`runtime`), Istio proxies (`istio`), pushed data (`otlp`,
//! `remoteWrite`), fixed targets (`static`) and raw Prometheus scrape configurations
//! (`unsupported`, checked in [`unsupported`]); plus how often to scrape.

pub mod unsupported;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index, key};
use crate::names::{check_dns1123_label, check_prometheus_label_name};
use crate::policy::ValidationContext;
use crate::secret::{SecretKeyRef, ValueSource};
use crate::units::{format_duration, parse_duration};

/// How often targets are scraped when the pipeline does not say. Prometheus defaults to
/// 1m; 30s is what the Kyma telemetry module and most managed agents use, and gives
/// alerts a useful resolution at a modest cost.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(30);
/// The longest a scrape may take by default, as in Prometheus; capped at the interval.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Namespaces excluded from workload inputs unless `system: true` or listed in
/// `include`: Kubernetes' own, the agent's (`kaas-observer`, with kube-state-metrics),
/// the node-level producers' (`kaas-observer-node`, node-exporter) and the observer's
/// (`kaas-observer-system`, in a management cluster). The provider's central pipeline
/// collects them (issue 15, finding 3: before, the agent's own namespace was missing
/// here, so tenant pipelines would have scraped the producers installed with it).
pub const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "kaas-observer",
    "kaas-observer-node",
    "kaas-observer-system",
];

/// The pipeline's inputs. At least one must be enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    /// How often to scrape pull targets, as a Prometheus duration. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// How long one scrape may take. Default `10s`, never more than the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    /// Pods and Services annotated with `prometheus.io/scrape: "true"` (and optionally
    /// `prometheus.io/port`, `/path`, `/scheme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<WorkloadInput>,
    /// Kubernetes runtime metrics: kubelet, cAdvisor (containers) and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeInput>,
    /// Metrics of Istio sidecar proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<WorkloadInput>,
    /// OTLP metrics pushed by workloads to the agent's well-known in-cluster address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<PushInput>,
    /// Prometheus remote-write requests pushed by workloads to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<PushInput>,
    /// Fixed scrape targets, as Prometheus `static_configs`.
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_targets: Option<StaticInput>,
    /// Raw Prometheus 2.42 `scrape_configs` for what the model does not offer. A
    /// pipeline with them is in unsupported mode (`status.unsupportedMode`): not
    /// supported by the provider, checked like every input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<unsupported::UnsupportedInput>,
}

/// An input that is switched on and filtered by namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadInput {
    /// Whether this input is on.
    #[serde(default)]
    pub enabled: bool,
    /// Which namespaces to accept data from.
    #[serde(default)]
    pub namespaces: NamespaceSelector,
}

/// Data pushed to the agent (OTLP or remote-write): switched on, filtered by namespace,
/// and authenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushInput {
    /// Whether this input is on.
    #[serde(default)]
    pub enabled: bool,
    /// Which namespaces to accept data from. With service-account authentication (the
    /// default) a request's namespace is the one its token belongs to.
    #[serde(default)]
    pub namespaces: NamespaceSelector,
    /// How pushers prove who they are; service-account tokens when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PushAuthentication>,
}

/// How a pusher authenticates to the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushAuthentication {
    /// `serviceAccount` (default), `bearerToken` or `unauthenticated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PushAuthenticationMode>,
    /// The token pushers send as `Authorization: Bearer <token>` in `bearerToken` mode.
    /// It must come from `valueFrom` (a Secret the pushing workloads mount as well): an
    /// inline value would be stored and shown with the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<ValueSource>,
}

/// How pushes to one pipeline are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PushAuthenticationMode {
    /// A Kubernetes service-account token as the bearer token, checked with the
    /// TokenReview API; the token's namespace replaces any namespace the data claims.
    #[default]
    ServiceAccount,
    /// The pipeline's own bearer token (`bearerToken`); the data's namespace is taken as
    /// claimed.
    BearerToken,
    /// No authentication: anyone who reaches the agent's push ports may push to this
    /// pipeline, under any namespace. Only for clusters whose network policy already
    /// limits who reaches them.
    Unauthenticated,
}

impl PushInput {
    /// How pushes are authenticated.
    pub fn mode(&self) -> PushAuthenticationMode {
        self.authentication
            .as_ref()
            .and_then(|a| a.mode)
            .unwrap_or_default()
    }

    /// The Secret the pipeline's push bearer token comes from, if it names one.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        self.authentication
            .as_ref()
            .and_then(|a| a.bearer_token.as_ref())
            .and_then(ValueSource::secret_ref)
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        self.namespaces.validate(&field(path, "namespaces"), errors);
        let Some(authentication) = &self.authentication else {
            return;
        };
        let path = field(path, "authentication");
        let token_path = field(&path, "bearerToken");
        match (self.mode(), &authentication.bearer_token) {
            (PushAuthenticationMode::BearerToken, None) => errors.add(
                &token_path,
                "required in bearerToken mode: reference the Secret holding the token pushers send",
            ),
            (PushAuthenticationMode::BearerToken, Some(token)) => {
                if token.value.is_some() {
                    errors.add(
                        field(&token_path, "value"),
                        "an inline push token would be stored and shown with the pipeline; put \
                         it in a Secret that the pushing workloads mount too and reference it \
                         with valueFrom.secretKeyRef",
                    );
                } else {
                    token.validate(&token_path, context, errors);
                }
            }
            (mode, Some(_)) => errors.add(
                &token_path,
                format!("only used in bearerToken mode, and mode is {}", mode.name()),
            ),
            (_, None) => {}
        }
    }
}

impl PushAuthenticationMode {
    /// The name used in pipelines.
    pub fn name(self) -> &'static str {
        match self {
            Self::ServiceAccount => "serviceAccount",
            Self::BearerToken => "bearerToken",
            Self::Unauthenticated => "unauthenticated",
        }
    }
}

/// Kubernetes runtime metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeInput {
    /// Whether this input is on.
    #[serde(default)]
    pub enabled: bool,
    /// Which namespaces' containers to report (node metrics are not namespaced).
    #[serde(default)]
    pub namespaces: NamespaceSelector,
    /// Which runtime sources to scrape; all of them by default.
    #[serde(default)]
    pub resources: RuntimeResources,
}

/// The runtime sources; each is on unless set to `false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeResources {
    /// The kubelet's own metrics (`/metrics` on each node's kubelet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<bool>,
    /// Container metrics from the kubelet's cAdvisor endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadvisor: Option<bool>,
    /// Node metrics (CPU, memory, filesystem, network) from the kubelet's resource endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<bool>,
}

/// Namespace filter: `include` or `exclude`, not both. With neither, every namespace but
/// the system namespaces is taken; `system: true` takes those too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Only these namespaces (system namespaces included if listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Every namespace but these (and but the system namespaces, unless `system`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Also take the system namespaces (kube-system, kube-public, kube-node-lease and the
    /// agent's own). Meaningless together with `include`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

/// Fixed targets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticInput {
    /// Groups of targets sharing labels and scrape settings.
    #[serde(default)]
    pub targets: Vec<StaticTargetGroup>,
}

/// One group of fixed targets, like a Prometheus `static_configs` entry plus the scrape
/// settings of its job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticTargetGroup {
    /// Target addresses as `host:port`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Labels added to every series of these targets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `http` (default) or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// The HTTP path to scrape. Default `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// Keep the target's own labels when they clash with the agent's, as Prometheus'
    /// `honor_labels`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honor_labels: bool,
    /// Use the timestamps the target exposes (default `true`), as Prometheus'
    /// `honor_timestamps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_timestamps: Option<bool>,
    /// Scrape with the agent's service-account token, verifying the target against the
    /// cluster CA, as kubelets are scraped: for control-plane components (the API
    /// server, kube-scheduler, kube-controller-manager) whose metrics need a token.
    /// `https` only, and only in the provider's own pipelines (a pipeline the observer
    /// distributes under its reserved name prefix, or a standalone agent's own file);
    /// the targets are sealed like the kubelet's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_account_credentials: bool,
    /// TLS for scraping these targets (`scheme: https`): the CA to verify them
    /// against, and a client certificate and key, e.g. etcd's client certificates from
    /// a Secret (`secretKeyRef` within the agent's Secret namespaces). Only in the
    /// provider's own pipelines, like `serviceAccountCredentials`; never the agent's
    /// cluster certificate (`agentIdentity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::output::Tls>,
}

/// A scrape scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// The default path scraped on a target, as in Prometheus.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

/// The inputs a pipeline runs, as the agent consumes them: each present only when it
/// is switched on, every default filled in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatedInputs {
    /// Annotated workloads.
    pub prometheus: Option<WorkloadInput>,
    /// Istio proxies.
    pub istio: Option<WorkloadInput>,
    /// Kubernetes runtime metrics.
    pub runtime: Option<ValidatedRuntimeInput>,
    /// Pushed OTLP.
    pub otlp: Option<PushInput>,
    /// Pushed remote-write.
    pub remote_write: Option<PushInput>,
    /// Fixed targets, group by group.
    pub static_targets: Vec<ValidatedTargetGroup>,
}

/// The runtime input with its sources decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatedRuntimeInput {
    /// Which namespaces' containers to report.
    pub namespaces: NamespaceSelector,
    /// The kubelet's own metrics.
    pub kubelet: bool,
    /// Container metrics from cAdvisor.
    pub cadvisor: bool,
    /// Node resource metrics.
    pub node: bool,
}

/// A group of fixed targets with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedTargetGroup {
    /// Target addresses as `host:port`.
    pub addresses: Vec<String>,
    /// Labels added to every series of these targets.
    pub labels: BTreeMap<String, String>,
    /// The scheme.
    pub scheme: Scheme,
    /// The HTTP path to scrape.
    pub metrics_path: String,
    /// Prometheus' `honor_labels`.
    pub honor_labels: bool,
    /// Prometheus' `honor_timestamps`.
    pub honor_timestamps: bool,
    /// Scraped with the agent's token, verified against the cluster CA.
    pub service_account_credentials: bool,
    /// TLS settings of their own (CA, client certificate and key).
    pub tls: Option<crate::output::Tls>,
}

impl Input {
    /// The inputs that are switched on, with their defaults filled in.
    pub(crate) fn validated(&self) -> ValidatedInputs {
        fn on<T: Clone>(input: Option<&T>, enabled: impl Fn(&T) -> bool) -> Option<T> {
            input.filter(|i| enabled(i)).cloned()
        }
        ValidatedInputs {
            prometheus: on(self.prometheus.as_ref(), |i| i.enabled),
            istio: on(self.istio.as_ref(), |i| i.enabled),
            runtime: self
                .runtime
                .as_ref()
                .filter(|i| i.enabled)
                .map(|i| ValidatedRuntimeInput {
                    namespaces: i.namespaces.clone(),
                    kubelet: i.resources.kubelet.unwrap_or(true),
                    cadvisor: i.resources.cadvisor.unwrap_or(true),
                    node: i.resources.node.unwrap_or(true),
                }),
            otlp: on(self.otlp.as_ref(), |i| i.enabled),
            remote_write: on(self.remote_write.as_ref(), |i| i.enabled),
            static_targets: self
                .static_targets
                .iter()
                .flat_map(|input| &input.targets)
                .map(|group| ValidatedTargetGroup {
                    addresses: group.addresses.clone(),
                    labels: group.labels.clone(),
                    scheme: group.scheme.unwrap_or(Scheme::Http),
                    metrics_path: group
                        .metrics_path
                        .clone()
                        .unwrap_or_else(|| DEFAULT_METRICS_PATH.to_owned()),
                    honor_labels: group.honor_labels,
                    honor_timestamps: group.honor_timestamps.unwrap_or(true),
                    service_account_credentials: group.service_account_credentials,
                    tls: group.tls.clone(),
                })
                .collect(),
        }
    }
}

/// The checked scrape settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedScrape {
    /// How often to scrape.
    pub interval: Duration,
    /// How long one scrape may take.
    pub timeout: Duration,
}

impl Input {
    /// Whether any input is switched on.
    pub fn any_enabled(&self) -> bool {
        self.prometheus.as_ref().is_some_and(|i| i.enabled)
            || self.runtime.as_ref().is_some_and(|i| i.enabled)
            || self.istio.as_ref().is_some_and(|i| i.enabled)
            || self.otlp.as_ref().is_some_and(|i| i.enabled)
            || self.remote_write.as_ref().is_some_and(|i| i.enabled)
            || self
                .static_targets
                .as_ref()
                .is_some_and(|i| !i.targets.is_empty())
            || self.unsupported.as_ref().is_some_and(|i| i.any())
    }

    /// The enabled input whose scrapes carry the agent's own credentials, if any:
    /// `runtime`, whose kubelet scrapes send the agent's service-account token, or
    /// `static` with a group that asks for it. Its targets are [sealed](crate::sealed)
    /// against relabeling.
    pub fn credential_bearing_input(&self) -> Option<&'static str> {
        if self.runtime.as_ref().is_some_and(|i| i.enabled) {
            return Some("runtime");
        }
        self.static_targets
            .as_ref()
            .is_some_and(|i| i.targets.iter().any(|g| g.service_account_credentials))
            .then_some("static")
    }

    /// Refuses static groups with the agent's credentials where the pipeline is not the
    /// provider's own: in-cluster resources, and observer pipelines outside the reserved
    /// name prefix (tenants' pipelines cannot have such names).
    pub(crate) fn check_credentials(
        &self,
        path: &str,
        pipeline_name: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        if is_providers_own(pipeline_name, context) {
            return;
        }
        let targets = field(&field(path, "static"), "targets");
        for (i, group) in self
            .static_targets
            .iter()
            .flat_map(|s| s.targets.iter())
            .enumerate()
        {
            if group.tls.is_some() {
                errors.add(
                    field(&index(&targets, i), "tls"),
                    format!(
                        "only the provider's own pipelines may scrape with TLS settings of \
                         their own; not {}",
                        context.origin.describe()
                    ),
                );
            }
            if group.service_account_credentials {
                errors.add(
                    field(&index(&targets, i), "serviceAccountCredentials"),
                    format!(
                        "only the provider's own pipelines may scrape with the agent's token; \
                         not {}",
                        context.origin.describe()
                    ),
                );
            }
        }
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> ValidatedScrape {
        if !self.any_enabled() {
            errors.add(
                path,
                "no input is enabled: enable at least one of prometheus, runtime, istio, otlp, \
                 remoteWrite, or list static targets",
            );
        }
        let interval = positive_duration(
            self.scrape_interval.as_deref(),
            DEFAULT_SCRAPE_INTERVAL,
            &field(path, "scrapeInterval"),
            errors,
        );
        let timeout = positive_duration(
            self.scrape_timeout.as_deref(),
            DEFAULT_SCRAPE_TIMEOUT.min(interval),
            &field(path, "scrapeTimeout"),
            errors,
        );
        if timeout > interval && self.scrape_timeout.is_some() {
            errors.add(
                field(path, "scrapeTimeout"),
                format!(
                    "{} is longer than the scrape interval {}; a scrape must end before the next \
                     one starts",
                    format_duration(timeout),
                    format_duration(interval)
                ),
            );
        }
        if let Some(input) = &self.runtime {
            input
                .namespaces
                .validate(&field(&field(path, "runtime"), "namespaces"), errors);
            let resources = &input.resources;
            if input.enabled
                && [resources.kubelet, resources.cadvisor, resources.node]
                    .iter()
                    .all(|on| *on == Some(false))
            {
                errors.add(
                    field(&field(path, "runtime"), "resources"),
                    "every runtime resource is switched off; enable one or disable the runtime \
                     input",
                );
            }
        }
        for (name, input) in [("prometheus", &self.prometheus), ("istio", &self.istio)] {
            if let Some(input) = input {
                input
                    .namespaces
                    .validate(&field(&field(path, name), "namespaces"), errors);
            }
        }
        for (name, input) in [("otlp", &self.otlp), ("remoteWrite", &self.remote_write)] {
            if let Some(input) = input {
                input.validate(&field(path, name), context, errors);
            }
        }
        if let Some(input) = &self.static_targets {
            input.validate(&field(path, "static"), context, errors);
        }
        ValidatedScrape { interval, timeout }
    }
}

/// Whether the pipeline `pipeline_name` is the provider's own: a standalone agent's
/// file, or an observer pipeline under the reserved name prefix (tenants' pipelines
/// cannot have such names); never an in-cluster resource.
pub(crate) fn is_providers_own(pipeline_name: &str, context: &ValidationContext) -> bool {
    match context.origin {
        crate::policy::Origin::Standalone => true,
        crate::policy::Origin::Observer => {
            pipeline_name.starts_with(crate::names::RESERVED_PIPELINE_PREFIX)
        }
        crate::policy::Origin::InCluster => false,
    }
}

pub(crate) fn positive_duration(
    text: Option<&str>,
    default: Duration,
    path: &str,
    errors: &mut FieldErrors,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            errors.add(path, "must be longer than 0s");
            default
        }
        Ok(duration) => duration,
        Err(reason) => {
            errors.add(path, reason);
            default
        }
    }
}

impl NamespaceSelector {
    /// Whether data from `namespace` passes this filter.
    pub fn admits(&self, namespace: &str) -> bool {
        if !self.include.is_empty() {
            return self.include.iter().any(|n| n == namespace);
        }
        if self.exclude.iter().any(|n| n == namespace) {
            return false;
        }
        self.system || !SYSTEM_NAMESPACES.contains(&namespace)
    }

    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        if !self.include.is_empty() && !self.exclude.is_empty() {
            errors.add(
                path,
                "set include or exclude, not both: include already leaves out every namespace it \
                 does not list",
            );
        }
        if !self.include.is_empty() && self.system {
            errors.add(
                field(path, "system"),
                "has no effect together with include; list the system namespaces you want in \
                 include",
            );
        }
        for (list_name, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            check_names(&field(path, list_name), list, "namespace", errors);
        }
    }
}

/// Checks a list of Kubernetes names (namespaces, containers): each a DNS-1123 label,
/// none listed twice. `noun` names what they are in messages.
pub(crate) fn check_names(list_path: &str, list: &[String], noun: &str, errors: &mut FieldErrors) {
    let mut seen = BTreeSet::new();
    for (i, name) in list.iter().enumerate() {
        if let Err(reason) = check_dns1123_label(name) {
            errors.add(index(list_path, i), format!("not a {noun} name: {reason}"));
        } else if !seen.insert(name) {
            errors.add(
                index(list_path, i),
                format!("{noun} {name:?} is listed twice"),
            );
        }
    }
}

impl StaticInput {
    /// Every Kubernetes Secret key the groups' TLS settings refer to.
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.targets
            .iter()
            .filter_map(|g| g.tls.as_ref())
            .flat_map(|tls| [&tls.ca, &tls.cert, &tls.key])
            .filter_map(|source| {
                source
                    .as_ref()?
                    .value_from
                    .as_ref()?
                    .secret_key_ref
                    .as_ref()
            })
            .collect()
    }

    fn validate(&self, path: &str, context: &ValidationContext, errors: &mut FieldErrors) {
        let targets_path = field(path, "targets");
        let mut seen = BTreeSet::new();
        for (i, group) in self.targets.iter().enumerate() {
            let group_path = index(&targets_path, i);
            if group.addresses.is_empty() {
                errors.add(
                    field(&group_path, "addresses"),
                    "list at least one host:port",
                );
            }
            for (j, address) in group.addresses.iter().enumerate() {
                let address_path = index(&field(&group_path, "addresses"), j);
                if let Err(reason) = check_host_port(address) {
                    errors.add(address_path, reason);
                } else if !seen.insert((address, group.metrics_path.as_deref())) {
                    errors.add(
                        address_path,
                        format!("target {address:?} is listed twice; it would be scraped twice"),
                    );
                }
            }
            for name in group.labels.keys() {
                if let Err(reason) = check_prometheus_label_name(name) {
                    errors.add(key(&field(&group_path, "labels"), name), reason);
                }
            }
            if group.service_account_credentials && group.scheme != Some(Scheme::Https) {
                errors.add(
                    field(&group_path, "serviceAccountCredentials"),
                    "needs scheme: https; the agent's token is never sent in clear text",
                );
            }
            if let Some(tls) = &group.tls {
                let tls_path = field(&group_path, "tls");
                if group.scheme != Some(Scheme::Https) {
                    errors.add(&tls_path, "needs scheme: https");
                }
                if group.service_account_credentials {
                    errors.add(
                        &tls_path,
                        "serviceAccountCredentials brings the cluster CA's settings; set either",
                    );
                }
                if tls.agent_identity {
                    errors.add(
                        field(&tls_path, "agentIdentity"),
                        "a scrape never presents the agent's cluster certificate",
                    );
                }
                tls.validate(&tls_path, context, errors);
            }
            if let Some(metrics_path) = &group.metrics_path
                && !metrics_path.starts_with('/')
            {
                errors.add(
                    field(&group_path, "metricsPath"),
                    format!("{metrics_path:?} must start with '/'"),
                );
            }
        }
    }
}

/// `host:port` as Prometheus' `__address__`: no scheme, no path, a port from 1 to 65535;
/// IPv6 hosts in brackets.
pub fn check_host_port(address: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{address:?} is not a host:port address: {why}"));
    if address.contains("://") {
        return bad("leave out the scheme; set scheme on the target group instead");
    }
    if address.contains('/') {
        return bad("leave out the path; set metricsPath on the target group instead");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("the port is missing");
    };
    if host.is_empty() {
        return bad("the host is missing");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("write IPv6 hosts in brackets, e.g. [::1]:9100");
    }
    if host.chars().any(char::is_whitespace) {
        return bad("the host contains whitespace");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => bad("the port must be a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_namespaces_are_left_out_unless_asked_for() {
        let default = NamespaceSelector::default();
        assert!(default.admits("shop"));
        assert!(!default.admits("kube-system"));
        let system = NamespaceSelector {
            system: true,
            ..Default::default()
        };
        assert!(system.admits("kube-system"));
        let include = NamespaceSelector {
            include: vec!["kube-system".into()],
            ..Default::default()
        };
        assert!(include.admits("kube-system"));
        assert!(!include.admits("shop"));
        let exclude = NamespaceSelector {
            exclude: vec!["shop".into()],
            ..Default::default()
        };
        assert!(!exclude.admits("shop"));
        assert!(exclude.admits("billing"));
        assert!(!exclude.admits("kube-public"));
    }

    #[test]
    fn host_port_addresses() {
        for good in [
            "localhost:9100",
            "10.0.0.1:80",
            "[::1]:9090",
            "node-1.example:443",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "localhost",
            ":80",
            "http://a:80",
            "a:80/metrics",
            "a:0",
            "a:70000",
            "::1:80",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }
}
