//! `cluster-agent run`: starts the agent's servers and pipelines in one of two modes.
//!
//! - **Standalone** (`--config FILE`): reads an agent configuration file, runs its
//!   pipelines, and reloads on SIGHUP or when the file changes: the new file is validated
//!   first, and if it is invalid the agent keeps running the old configuration and logs
//!   every problem.
//! - **Observer-connected** (`--observer URL`, repeatable for several replicas): joins
//!   the observer with a token, then takes its configuration from the control stream
//!   (see [`crate::control`]).
//!
//! Every flag is parsed and checked first, all of them, before anything is read or
//! started ([`RunArgs::check`]): a bad command line names every problem at once and
//! leaves the data directory untouched. What the checked flags make is plain settings:
//! the agent's ([`AgentSettings`], from which [`crate::agent`] composes the running
//! agent) and the configuration source's ([`ConfigSource`]).
//!
//! Both validate what they are given under the agent's own policy ([`agent_policy`]:
//! Secrets only from `--secret-namespaces`, files never from the data directory or the
//! credential mounts): a file as a standalone agent's own configuration, what the
//! observer sends as a pipeline the observer distributes (so no `valueFrom.file`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use kaas_pipeline::agent_config::{AgentConfig, AgentConfigError, ValidatedAgentConfig};
use kaas_pipeline::names::{check_dns1123_label, check_instance_name};
use kaas_pipeline::paths::PathPolicy;
use kaas_pipeline::{Origin, ProviderPolicy, SecretNamespaces, ValidationContext};
use kaas_self_telemetry::SelfTelemetry;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::agent::{AgentRole, AgentSettings, ConfiguredAgent, StartError};
use crate::control::enrolment::{DEFAULT_NODE_TOKEN_FILE, NodeEnrolment, check_issuer_url};
use crate::control::{
    DEFAULT_HEALTH_REPORT_INTERVAL, DEFAULT_HEALTH_WINDOW, EndpointOrder, ObserverConnection,
    ObserverSettings, check_observer_url,
};
use crate::internal_events::{
    ConfigLoaded, ConfigRefused, ConfigReloaded, ConfigSource as EventSource,
};
use crate::node_certificates::{
    DEFAULT_GATEWAY_SERVICE_ACCOUNT, DEFAULT_NODE_SERVICE_ACCOUNT, ServiceAccountName,
};
use crate::outbound::destination::BoundUrlRules;
use crate::pipeline::budget::{DEFAULT_BUFFER_BUDGET, DEFAULT_NODE_BUFFER_BUDGET};
use crate::pipeline::node_logs::{DEFAULT_JOURNAL_DIR, DEFAULT_POD_LOG_DIR};

/// Where the agent serves its own endpoints by default; vmagent's port, which
/// operators of agents already open.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:8429";
/// Where OTLP/gRPC pushes are accepted by default: OTLP's conventional gRPC port.
pub const DEFAULT_OTLP_GRPC_ADDRESS: &str = "0.0.0.0:4317";
/// Where OTLP/HTTP pushes are accepted by default: OTLP's conventional HTTP port, the
/// one every OpenTelemetry SDK sends to without configuration.
pub const DEFAULT_OTLP_HTTP_ADDRESS: &str = "0.0.0.0:4318";
/// Where Zipkin v2 JSON spans are accepted by default: Zipkin's conventional port, the
/// one its reporters and Istio's Zipkin provider send to.
pub const DEFAULT_ZIPKIN_ADDRESS: &str = "0.0.0.0:9411";
/// How often the configuration file is checked for changes.
pub const DEFAULT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest interval of the file check and of health reports: shorter ones are
/// raised to this, so a typo cannot make the agent spin.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Arguments of `cluster-agent run`, as given: every value that can be wrong is kept as
/// text here and checked by [`RunArgs::check`], which reports every problem at once
/// (clap would stop at the first).
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("configuration source")
        .required(true)
        .args(["config", "observer"])
))]
pub struct RunArgs {
    /// The agent configuration file (YAML or JSON): standalone mode. Exactly one of
    /// --config and --observer is required.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The observer's control endpoint, e.g. https://observer.example:8443: take the
    /// configuration from the observer instead of a file. Repeat it (or separate URLs
    /// with commas) to name several observer replicas: each reconnect tries them in
    /// turn, see --observer-order.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub observer: Vec<String>,
    /// In which order the --observer endpoints are tried on each reconnect: `random`
    /// spreads the fleet over the replicas; `listed` prefers the first one given (e.g.
    /// the replica in the agent's own region). Either way the endpoint that failed last
    /// is tried last.
    #[arg(long, value_name = "random|listed", default_value = "random")]
    pub observer_order: String,
    /// CA certificate (PEM) to trust for the observer when joining; afterwards the CA
    /// bundle the observer returned is kept with the agent's identity.
    #[arg(long, value_name = "FILE", requires = "observer")]
    pub observer_ca_file: Option<PathBuf>,
    /// File holding the single-use join token printed by `observer cluster add`. The
    /// environment variable KAAS_JOIN_TOKEN is used when this is not given. Only needed
    /// until the agent has joined: its identity is kept in the data directory.
    #[arg(long, value_name = "FILE", requires = "observer")]
    pub join_token_file: Option<PathBuf>,
    /// This agent instance's name within its cluster (a DNS-1123 subdomain, e.g. its
    /// node's name), written into its certificate: each instance has its own, so one
    /// instance's renewal or re-join never cuts another's stream. Default: the
    /// cluster-level instance.
    #[arg(long, value_name = "NAME", requires = "observer")]
    pub instance_name: Option<String>,
    /// Node and gateway roles: get this instance's first certificate from the
    /// cluster-level instance at this address (e.g.
    /// http://cluster-agent.kaas-observer.svc:8429) instead of joining with a token; it
    /// checks --node-token-file's service-account token (a node's instance name must
    /// be its node's, a gateway replica's its pod's).
    #[arg(long, value_name = "URL", requires = "observer")]
    pub node_certificate_issuer: Option<String>,
    /// Node and gateway roles: the projected service-account token sent to
    /// --node-certificate-issuer (audience kaas-observer-node-certificate).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_NODE_TOKEN_FILE)]
    pub node_token_file: PathBuf,
    /// Cluster role: the service account (NAMESPACE/NAME) whose node agents may ask
    /// this instance for their node's certificate; empty: hand out none.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = DEFAULT_NODE_SERVICE_ACCOUNT)]
    pub node_service_account: String,
    /// Cluster role: the service account (NAMESPACE/NAME) whose gateway replicas may
    /// ask this instance for their own pod's certificate; empty: hand out none.
    #[arg(long, value_name = "NAMESPACE/NAME", default_value = DEFAULT_GATEWAY_SERVICE_ACCOUNT)]
    pub gateway_service_account: String,
    /// On SIGTERM, how long to keep shipping buffered data before stopping, e.g.
    /// `90s`: `/readyz` answers 503 at once (the push Service stops sending here) and
    /// the pipelines go on sending until their buffers are empty or this has passed;
    /// what remains stays on the data volume for the next start. Keep it below the
    /// pod's terminationGracePeriodSeconds. Default: 0s (stop at once), as before.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub drain_timeout: String,
    /// Where buffers and state are kept.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Bytes the buffers of all pipelines may use together on the data directory's
    /// volume, e.g. `3Gi` (Kubernetes quantity). Set it below the volume's size; the
    /// observer's own pipelines are served first, the others share the rest. Default:
    /// 3Gi, for the 4Gi volume of the install manifests; for `--role node`, 2Gi of the
    /// node's own disk (each node has its own budget; the observer's
    /// `--node-buffer-budget`).
    #[arg(long, value_name = "BYTES")]
    pub buffer_budget: Option<String>,
    /// Address for /metrics, /healthz, /readyz and the push receivers.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: String,
    /// Address for OTLP/gRPC pushes (OTLP's conventional port).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_OTLP_GRPC_ADDRESS)]
    pub otlp_grpc_listen_address: String,
    /// Address for OTLP/HTTP pushes (`/v1/metrics`; OTLP's conventional port). The
    /// `--listen-address` port still takes `/v1/metrics` as a deprecated alias.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_OTLP_HTTP_ADDRESS)]
    pub otlp_http_listen_address: String,
    /// Address for Zipkin pushes (`POST /api/v2/spans`, Zipkin v2 JSON; Zipkin's
    /// conventional port), for trace pipelines with a `zipkin` input.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ZIPKIN_ADDRESS)]
    pub zipkin_listen_address: String,
    /// Require service-account tokens pushed to the agent to be issued for this
    /// audience (TokenReview `audiences`; repeat for several), e.g. a projected token
    /// the pushing pods mount for the agent alone. By default any token the API server
    /// accepts.
    #[arg(long, value_name = "AUDIENCE")]
    pub push_token_audience: Vec<String>,
    /// Kubernetes discovery: `auto` uses the in-cluster service account or $KUBECONFIG
    /// when present, `off` never contacts an API server.
    #[arg(long, value_name = "auto|off", default_value = "auto")]
    pub kubernetes: String,
    /// The namespaces whose Secrets pipelines may reference with secretKeyRef
    /// (comma-separated; empty for none). A configuration naming another namespace is
    /// refused with the field path, and only these namespaces' Secrets are watched.
    /// Default: the agent's own namespace (read from its service-account mount). The
    /// observer's install manifests set it from `observer serve
    /// --agent-secret-namespaces`, with a Role per namespace.
    #[arg(long, value_name = "NAMESPACE,...", value_delimiter = ',')]
    pub secret_namespaces: Option<Vec<String>>,
    /// The provider's central receivers (comma-separated URLs): an output URL a
    /// pipeline reads from a Secret is refused when it names one of them (by host and
    /// port), as the observer refuses the same URL written in a tenant pipeline. The
    /// provider's own pipeline, whose URL is written in place, is not affected.
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    pub central_endpoints: Vec<String>,
    /// Accept any kubelet serving certificate instead of verifying it against the
    /// cluster CA: the provider's setting for one cluster whose kubelets serve
    /// self-signed certificates (better: turn on kubelet serving certificates,
    /// serverTLSBootstrap). Pipelines cannot change it.
    #[arg(long)]
    pub kubelet_insecure_skip_tls_verify: bool,
    /// What this instance runs: `cluster` (the cluster-level Deployment: scrapes, the
    /// central pipelines, and the push receivers while the cluster has no gateway in
    /// use), `node` (one per node, a DaemonSet: only the log pipelines' `runtime` and
    /// `node` inputs, which read the node's container logs, files and journal) or
    /// `gateway` (replicas of a StatefulSet: only pushed inputs of every signal, never
    /// a scrape).
    #[arg(long, value_name = "cluster|node|gateway", default_value = "cluster")]
    pub role: String,
    /// Where the kubelet writes container logs (node role; tests and demos point it
    /// elsewhere).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_POD_LOG_DIR)]
    pub pod_log_dir: PathBuf,
    /// The systemd journal directory (node role).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_JOURNAL_DIR)]
    pub journal_dir: PathBuf,
    /// How often to check the configuration file for changes, in milliseconds (at
    /// least 100). Default: 2000.
    #[arg(long, value_name = "MS")]
    pub reload_check_ms: Option<String>,
    /// How long a configuration from the observer must run before it is reported
    /// APPLIED and kept as last-known-good, in milliseconds (shortened by tests).
    #[arg(long, value_name = "MS", hide = true)]
    pub config_health_window_ms: Option<String>,
    /// How often health is reported to the observer, in milliseconds (shortened by
    /// tests; at least 100).
    #[arg(long, value_name = "MS", hide = true)]
    pub health_report_interval_ms: Option<String>,
    /// The agent's own metrics, spans and logs over OTLP.
    #[command(flatten)]
    pub otlp: kaas_self_telemetry::OtlpFlags,
}

/// Reads `--buffer-budget`: a Kubernetes quantity of at least one minimal buffer.
fn parse_buffer_budget(text: &str) -> Result<u64, String> {
    let bytes = kaas_pipeline::units::parse_byte_quantity(text)?;
    let min = crate::pipeline::budget::MIN_BUFFER_BYTES;
    if bytes < min {
        return Err(format!(
            "{bytes} bytes is below the minimum of 1Mi ({min} bytes)"
        ));
    }
    Ok(bytes)
}

/// Every problem with the flags of `cluster-agent run`, one per line, each naming its
/// flag (`--flag: what is wrong`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagErrors(pub Vec<String>);

impl fmt::Display for FlagErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for FlagErrors {}

/// Where the agent's configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// Standalone: a file, checked for changes every `reload_check`.
    File {
        /// The configuration file.
        path: PathBuf,
        /// How often it is checked for changes.
        reload_check: Duration,
    },
    /// The observer's control stream.
    Observer(Box<ObserverSettings>),
}

/// What checked flags make: everything `run` needs, as plain values.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The agent's settings.
    pub agent: AgentSettings,
    /// Where its configuration comes from.
    pub source: ConfigSource,
}

impl RunArgs {
    /// The `--buffer-budget`, or the role's default: each node instance has a budget of
    /// its own, as its buffers are on its node's disk.
    fn buffer_budget(&self, role: Option<RoleFlag>, problems: &mut Problems) -> Option<u64> {
        match (&self.buffer_budget, role) {
            (Some(text), _) => problems.check("buffer-budget", text, parse_buffer_budget),
            (None, Some(RoleFlag::Node)) => Some(DEFAULT_NODE_BUFFER_BUDGET),
            (None, _) => Some(DEFAULT_BUFFER_BUDGET),
        }
    }

    /// Parses and checks every flag, without touching the data directory or the
    /// network (it reads only the agent's namespace from its service-account mount, see
    /// [`agent_policy`]); every problem is reported, not just the first.
    pub fn check(&self) -> Result<RunSettings, FlagErrors> {
        let mut problems = Problems::default();
        let [
            listen_address,
            otlp_grpc_listen_address,
            otlp_http_listen_address,
            zipkin_listen_address,
        ] = self.check_addresses(&mut problems);
        let role = problems.check("role", &self.role, choice::<RoleFlag>);
        let buffer_budget = self.buffer_budget(role, &mut problems);
        let kubernetes = problems.check("kubernetes", &self.kubernetes, choice::<KubernetesMode>);
        let endpoint_order = problems.check(
            "observer-order",
            &self.observer_order,
            choice::<EndpointOrder>,
        );
        let (node_issuer, (node_service_account, gateway_service_account)) =
            self.check_names(&mut problems, role);
        let bound_urls = self.bound_url_rules(&mut problems);
        let drain_timeout = problems.check(
            "drain-timeout",
            &self.drain_timeout,
            kaas_pipeline::units::parse_duration,
        );
        let reload_check = problems.millis(
            "reload-check-ms",
            &self.reload_check_ms,
            DEFAULT_RELOAD_CHECK_INTERVAL,
        );
        let health_window = problems.millis(
            "config-health-window-ms",
            &self.config_health_window_ms,
            DEFAULT_HEALTH_WINDOW,
        );
        let health_interval = problems.millis(
            "health-report-interval-ms",
            &self.health_report_interval_ms,
            DEFAULT_HEALTH_REPORT_INTERVAL,
        );
        if let Err(error) = self.otlp.validate() {
            problems.0.extend(error.problems);
        }
        let (
            Some(listen_address),
            Some(otlp_grpc_listen_address),
            Some(otlp_http_listen_address),
            Some(zipkin_listen_address),
            Some(buffer_budget),
            Some(kubernetes),
            Some(endpoint_order),
            Some(role),
            Some(drain_timeout),
            true,
        ) = (
            listen_address,
            otlp_grpc_listen_address,
            otlp_http_listen_address,
            zipkin_listen_address,
            buffer_budget,
            kubernetes,
            endpoint_order,
            role,
            drain_timeout,
            problems.0.is_empty(),
        )
        else {
            return Err(FlagErrors(problems.0));
        };
        let policy = agent_policy(self);
        let source = match &self.config {
            Some(path) => ConfigSource::File {
                path: path.clone(),
                reload_check: reload_check.max(MIN_CHECK_INTERVAL),
            },
            // Clap requires --observer when --config is absent; an empty list is
            // refused with a clear message by the observer connection.
            None => ConfigSource::Observer(Box::new(ObserverSettings {
                urls: self.observer.clone(),
                endpoint_order,
                ca_file: self.observer_ca_file.clone(),
                join_token_file: self.join_token_file.clone(),
                join_token_env: std::env::var(JOIN_TOKEN_ENV).ok(),
                node_enrolment: node_issuer.map(|issuer_url| NodeEnrolment {
                    issuer_url,
                    token_file: self.node_token_file.clone(),
                }),
                instance_name: self.instance_name.clone().unwrap_or_default(),
                role: role.into(),
                data_dir: self.data_dir.clone(),
                health_window,
                health_interval: health_interval.max(MIN_CHECK_INTERVAL),
                validation: ValidationContext::observer(policy.clone()),
                ..ObserverSettings::default()
            })),
        };
        let agent = AgentSettings {
            data_dir: self.data_dir.clone(),
            buffer_budget,
            listen_address,
            otlp_grpc_listen_address,
            otlp_http_listen_address,
            zipkin_listen_address,
            push_token_audiences: self.push_token_audience.clone(),
            kubernetes: kubernetes == KubernetesMode::Auto,
            kubelet_insecure_skip_tls_verify: self.kubelet_insecure_skip_tls_verify,
            policy,
            bound_urls,
            role: role.into(),
            pod_log_dir: self.pod_log_dir.clone(),
            journal_dir: self.journal_dir.clone(),
            // Node and gateway certificates are asked for over the control stream.
            node_service_account: node_service_account
                .filter(|_| self.config.is_none() && role == RoleFlag::Cluster),
            gateway_service_account: gateway_service_account
                .filter(|_| self.config.is_none() && role == RoleFlag::Cluster),
            drain_timeout,
        };
        Ok(RunSettings { agent, source })
    }
}

impl RunArgs {
    /// The rules URLs read from Secrets are checked under: `--central-endpoints`
    /// refused.
    fn bound_url_rules(&self, problems: &mut Problems) -> BoundUrlRules {
        let central_endpoints = self
            .central_endpoints
            .iter()
            .filter(|text| !text.is_empty())
            .filter_map(|text| problems.check("central-endpoints", text, check_central_endpoint))
            .collect();
        BoundUrlRules::refusing(central_endpoints)
    }

    /// The listen addresses: the HTTP port's, OTLP/gRPC's, OTLP/HTTP's and Zipkin's.
    fn check_addresses(&self, problems: &mut Problems) -> [Option<SocketAddr>; 4] {
        [
            ("listen-address", &self.listen_address),
            ("otlp-grpc-listen-address", &self.otlp_grpc_listen_address),
            ("otlp-http-listen-address", &self.otlp_http_listen_address),
            ("zipkin-listen-address", &self.zipkin_listen_address),
        ]
        .map(|(flag, text)| problems.check(flag, text, address))
    }

    /// Checks the flags that name things: the observer endpoints, the instance, the
    /// Secret namespaces, and who asks for and hands out node certificates (issue 16).
    /// Returns the node certificate issuer's URL and the service accounts of the node
    /// agents and of the gateway replicas.
    fn check_names(
        &self,
        problems: &mut Problems,
        role: Option<RoleFlag>,
    ) -> (
        Option<url::Url>,
        (Option<ServiceAccountName>, Option<ServiceAccountName>),
    ) {
        for url in &self.observer {
            if let Err(error) = check_observer_url(url) {
                // The error names the flag and the value itself.
                problems.0.push(error.to_string());
            }
        }
        let node_issuer = self
            .node_certificate_issuer
            .as_deref()
            .and_then(|url| problems.check("node-certificate-issuer", url, check_issuer_url));
        if node_issuer.is_some() && role == Some(RoleFlag::Cluster) {
            problems.0.push(
                "--node-certificate-issuer: only a --role node or gateway instance asks for its certificate"
                    .into(),
            );
        }
        let mut account = |flag: &str, text: &str| match text {
            "" => None,
            text => problems.check(flag, text, ServiceAccountName::parse),
        };
        let accounts = (
            account("node-service-account", &self.node_service_account),
            account("gateway-service-account", &self.gateway_service_account),
        );
        if let Some(name) = self.instance_name.as_deref().filter(|n| !n.is_empty()) {
            problems.check("instance-name", name, check_instance_name);
        }
        for namespace in self.secret_namespaces.iter().flatten() {
            if !namespace.is_empty() {
                problems.check("secret-namespaces", namespace, check_dns1123_label);
            }
        }
        (node_issuer, accounts)
    }
}

/// A `--central-endpoints` entry: an absolute URL with a host.
fn check_central_endpoint(text: &str) -> Result<url::Url, String> {
    match url::Url::parse(text) {
        Ok(url) if url.has_host() => Ok(url),
        _ => Err(format!("{text:?} is not an absolute URL with a host")),
    }
}

/// The problems found so far while checking the flags.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// `text` given to `--flag`, parsed; `None` (and a problem noted) when it is wrong.
    fn check<T>(
        &mut self,
        flag: &str,
        text: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        parse(text)
            .map_err(|reason| self.0.push(format!("--{flag} {text:?}: {reason}")))
            .ok()
    }

    /// A duration in milliseconds given to `--flag`, or `default` when it is not given
    /// (or wrong, which is noted).
    fn millis(&mut self, flag: &str, text: &Option<String>, default: Duration) -> Duration {
        let parsed = text.as_deref().and_then(|text| {
            self.check(flag, text, |text| {
                text.parse::<u64>()
                    .map_err(|e| format!("not a whole number of milliseconds: {e}"))
            })
        });
        parsed.map_or(default, Duration::from_millis)
    }
}

/// Reads a listen address: an IP address and a port.
fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("not an IP:PORT address: {e}"))
}

/// Reads one of a flag's named values.
fn choice<T: ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(text, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!("not one of {}", names.join(", "))
    })
}

/// The agent as its own telemetry names it (`service.name`).
pub const SERVICE: kaas_self_telemetry::Service = kaas_self_telemetry::Service {
    name: "kaas-cluster-agent",
    version: env!("CARGO_PKG_VERSION"),
};
/// The environment variable holding the join token when --join-token-file is not given.
/// An environment variable rather than a flag, so the token never shows in `ps`.
pub const JOIN_TOKEN_ENV: &str = "KAAS_JOIN_TOKEN";

/// Whether the agent talks to a Kubernetes API server (`--kubernetes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    /// When running in a cluster or given a kubeconfig.
    Auto,
    /// Never.
    Off,
}

/// The instance's role in its cluster (`--role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RoleFlag {
    /// The cluster-level instance.
    Cluster,
    /// A node's instance.
    Node,
    /// A gateway replica.
    Gateway,
}

impl From<RoleFlag> for AgentRole {
    fn from(flag: RoleFlag) -> Self {
        match flag {
            RoleFlag::Cluster => AgentRole::Cluster,
            RoleFlag::Node => AgentRole::Node,
            RoleFlag::Gateway => AgentRole::Gateway,
        }
    }
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("{path} is invalid:\n{errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem.
        errors: String,
    },
    /// The agent's servers cannot start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Observer-connected mode cannot start.
    #[error(transparent)]
    Observer(#[from] crate::control::ControlError),
}

/// The rules this agent validates every configuration under: Secrets only from
/// `--secret-namespaces` (default: its own namespace, none outside Kubernetes); no file
/// from its data directory, its join token, the credential mounts or the kernel's
/// views. No reserved headers: the agent also runs the provider's own pipeline, which
/// sets the tenant header (the observer refuses it in tenant pipelines).
pub fn agent_policy(args: &RunArgs) -> ProviderPolicy {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut paths = PathPolicy::for_agent(&absolute(&args.data_dir));
    if let Some(token) = &args.join_token_file {
        paths.deny(&absolute(token), "the agent's join token");
    }
    if args.node_certificate_issuer.is_some() {
        paths.deny(
            &absolute(&args.node_token_file),
            "the node agent's service-account token",
        );
    }
    let namespaces = match &args.secret_namespaces {
        Some(listed) => listed.iter().filter(|n| !n.is_empty()).cloned().collect(),
        None => own_namespace().into_iter().collect(),
    };
    ProviderPolicy {
        secret_namespaces: SecretNamespaces::Only(namespaces),
        paths,
        ..ProviderPolicy::unrestricted()
    }
}

/// The agent's namespace, from its service-account mount; `None` outside a pod.
fn own_namespace() -> Option<String> {
    let path = Path::new(crate::pipeline::kubelet::SERVICE_ACCOUNT_DIR).join("namespace");
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|namespace| !namespace.is_empty())
}

fn load(
    path: &Path,
    policy: &ProviderPolicy,
) -> Result<(ValidatedAgentConfig, [u8; 32]), RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    let hash = Sha256::digest(text.as_bytes()).into();
    let context = ValidationContext {
        origin: Origin::Standalone,
        policy: policy.clone(),
    };
    let config = AgentConfig::parse(&text, &context).map_err(|error| RunError::Invalid {
        path: path.to_owned(),
        errors: match error {
            AgentConfigError::Parse(reason) => format!("  {reason}"),
            AgentConfigError::Invalid(errors) => errors
                .lines()
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        },
    })?;
    Ok((config, hash))
}

/// Runs until SIGTERM or SIGINT, then drains for `--drain-timeout`
/// ([`ConfiguredAgent::drain`]) and stops. `telemetry` is what `main` set logging up
/// with; its exporter starts once the agent's registry exists.
pub async fn run(settings: RunSettings, mut telemetry: SelfTelemetry) -> Result<(), RunError> {
    match settings.source {
        ConfigSource::File { path, reload_check } => {
            // Read the file before binding anything, so a broken file fails fast.
            let policy = &settings.agent.policy;
            let initial = load(&path, policy)?;
            let mut agent = ConfiguredAgent::start(&settings.agent, &mut telemetry).await?;
            let result = run_standalone(&mut agent, &path, initial, policy, reload_check).await;
            tracing::info!("shutting down");
            agent.drain(settings.agent.drain_timeout).await;
            agent.shutdown().await;
            result
        }
        ConfigSource::Observer(observer) => {
            // Checks the identity on disk before anything is started.
            let mut connection = ObserverConnection::new(*observer)?;
            let mut agent = ConfiguredAgent::start(&settings.agent, &mut telemetry).await?;
            let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
            let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
            tokio::select! {
                () = connection.run(&mut agent) => {}
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutting down");
            agent.drain(settings.agent.drain_timeout).await;
            agent.shutdown().await;
            Ok(())
        }
    }
}

/// Standalone mode: applies the file and follows its changes until SIGTERM or SIGINT.
async fn run_standalone(
    agent: &mut ConfiguredAgent,
    path: &Path,
    initial: (ValidatedAgentConfig, [u8; 32]),
    policy: &ProviderPolicy,
    reload_check: Duration,
) -> Result<(), RunError> {
    let (config, mut hash) = initial;
    agent.apply(config).await;
    let reloads = agent.reloads.clone();
    ConfigLoaded(EventSource::File).emit(&reloads);

    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut check = tokio::time::interval(reload_check);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            _ = hangup.recv() => true,
            _ = check.tick() => false,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        if !forced && file_hash(path).is_none_or(|h| h == hash) {
            // A changed Secret or ConfigMap key re-renders the instances bound to it.
            agent.refresh_instances().await;
            continue;
        }
        match load(path, policy) {
            Ok((config, new_hash)) => {
                hash = new_hash;
                agent.apply(config).await;
                ConfigReloaded(EventSource::File).emit(&reloads);
            }
            Err(error) => {
                // Remember the broken file so it is reported once, not every check.
                if let Some(new_hash) = file_hash(path) {
                    hash = new_hash;
                }
                tracing::error!(%error, "configuration refused; keeping the running configuration");
                ConfigRefused(EventSource::File).emit(&reloads);
            }
        }
    }
    Ok(())
}

fn file_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|command| command.run)
    }

    /// The flags parsed and checked, as `run` sees them.
    fn checked(args: &[&str]) -> Result<RunSettings, String> {
        let args = parse(args).map_err(|e| e.to_string())?;
        args.check().map_err(|e| e.to_string())
    }

    fn observer_settings(args: &RunArgs) -> ObserverSettings {
        match args.check().unwrap().source {
            ConfigSource::Observer(settings) => *settings,
            ConfigSource::File { .. } => panic!("standalone"),
        }
    }

    #[test]
    fn observer_endpoints_are_repeated_or_comma_separated() {
        let repeated = parse(&[
            "--observer",
            "https://a:8443",
            "--observer",
            "https://b:8443",
        ])
        .unwrap();
        let separated = parse(&["--observer", "https://a:8443,https://b:8443"]).unwrap();
        for args in [&repeated, &separated] {
            assert_eq!(args.observer, ["https://a:8443", "https://b:8443"]);
            assert_eq!(
                observer_settings(args).endpoint_order,
                EndpointOrder::Random
            );
        }
        let listed =
            parse(&["--observer", "https://a:8443", "--observer-order", "listed"]).unwrap();
        assert_eq!(
            observer_settings(&listed).endpoint_order,
            EndpointOrder::Listed
        );
    }

    /// Issue 13, Disk budget: the budget is a flag with a named default, given as a
    /// quantity and refused below one minimal buffer.
    #[test]
    fn the_buffer_budget_is_a_quantity_with_a_default() {
        let default = checked(&["--config", "agent.yaml"]).unwrap().agent;
        assert_eq!(
            default.buffer_budget,
            crate::pipeline::budget::DEFAULT_BUFFER_BUDGET
        );
        let set = checked(&["--config", "a.yaml", "--buffer-budget", "512Mi"]).unwrap();
        assert_eq!(set.agent.buffer_budget, 512 << 20);
        // Issue 16: a node instance's buffers are on its node's disk, with a budget of
        // their own.
        let node = checked(&["--config", "a.yaml", "--role", "node"]).unwrap();
        assert_eq!(
            node.agent.buffer_budget,
            crate::pipeline::budget::DEFAULT_NODE_BUFFER_BUDGET
        );
        let node = checked(&[
            "--config",
            "a.yaml",
            "--role",
            "node",
            "--buffer-budget",
            "3Gi",
        ]);
        assert_eq!(node.unwrap().agent.buffer_budget, 3 << 30);
        let error = checked(&["--config", "a.yaml", "--buffer-budget", "1Ki"]).unwrap_err();
        assert!(error.to_string().contains("below the minimum"), "{error}");
    }

    /// Issue 16: `--role` says which part of the cluster's configuration the instance
    /// runs; without it the instance is the cluster-level one, as before roles existed.
    /// Issue 17: `gateway` is the third.
    #[test]
    fn the_role_is_cluster_by_default_and_one_of_three() {
        let role = |args: &[&str]| match checked(args).map(|set| set.source) {
            Ok(ConfigSource::Observer(settings)) => Ok(settings.role),
            Ok(ConfigSource::File { .. }) => panic!("not observer mode"),
            Err(error) => Err(error),
        };
        let observer = ["--observer", "https://observer:8443"];
        assert_eq!(role(&observer), Ok(AgentRole::Cluster));
        let node = [&observer[..], &["--role", "node"]].concat();
        assert_eq!(role(&node), Ok(AgentRole::Node));
        let gateway = [&observer[..], &["--role", "gateway"]].concat();
        assert_eq!(role(&gateway), Ok(AgentRole::Gateway));
        let bad = [&observer[..], &["--role", "everything"]].concat();
        let error = role(&bad).unwrap_err();
        assert!(
            error.contains("--role") && error.contains("cluster, node, gateway"),
            "{error}"
        );
    }

    /// Issue 17: a gateway replica asks the cluster-level instance for its first
    /// certificate like a node (and hands out none); the cluster-level instance hands
    /// gateway replicas theirs unless told not to; `--drain-timeout` is a duration.
    #[test]
    fn a_gateway_enrols_like_a_node_and_drains_for_its_timeout() {
        let gateway = checked(&[
            "--observer",
            "https://observer:8443",
            "--role",
            "gateway",
            "--instance-name",
            "cluster-agent-gateway-0",
            "--node-certificate-issuer",
            "http://cluster-agent.kaas-observer.svc:8429",
            "--drain-timeout",
            "90s",
        ])
        .unwrap();
        let ConfigSource::Observer(settings) = &gateway.source else {
            panic!("standalone");
        };
        assert!(settings.node_enrolment.is_some());
        assert_eq!(settings.instance_name, "cluster-agent-gateway-0");
        assert_eq!(gateway.agent.gateway_service_account, None);
        assert_eq!(gateway.agent.drain_timeout, Duration::from_secs(90));
        let cluster = checked(&["--observer", "https://observer:8443"]).unwrap();
        assert_eq!(
            cluster.agent.gateway_service_account.map(|a| a.to_string()),
            Some(DEFAULT_GATEWAY_SERVICE_ACCOUNT.to_owned())
        );
        assert_eq!(cluster.agent.drain_timeout, Duration::ZERO);
        let error = checked(&["--config", "a.yaml", "--drain-timeout", "soon"]).unwrap_err();
        assert!(error.to_string().contains("--drain-timeout"), "{error}");
    }

    /// Issue 14: every bad flag is named at once, each with its flag, before anything
    /// is read or started.
    #[test]
    fn every_bad_flag_is_named_at_once() {
        let args = parse(&[
            "--observer",
            "http://observer:8443",
            "--listen-address",
            "everywhere",
            "--buffer-budget",
            "lots",
            "--reload-check-ms",
            "soon",
            "--kubernetes",
            "maybe",
            "--instance-name",
            "Not_A_Label",
        ])
        .unwrap();
        let problems = args.check().unwrap_err().0;
        let flags: Vec<&str> = problems
            .iter()
            .map(|p| p.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(
            flags,
            [
                "--listen-address",
                "--buffer-budget",
                "--kubernetes",
                "--observer",
                "--instance-name",
                "--reload-check-ms",
            ],
            "{problems:#?}"
        );
        assert!(problems[3].contains("https"), "{}", problems[3]);
    }

    /// Issue 16: a node instance names its issuer instead of a join token; the
    /// cluster-level instance in observer mode hands out node certificates to the node
    /// agents' service account (none in standalone mode, none when emptied).
    #[test]
    fn node_certificates_are_asked_for_by_nodes_and_handed_out_by_the_cluster_instance() {
        let node = checked(&[
            "--observer",
            "https://observer:8443",
            "--role",
            "node",
            "--instance-name",
            "ip-10-0-1-7.eu-west-1.compute.internal",
            "--node-certificate-issuer",
            "http://cluster-agent.kaas-observer.svc:8429",
        ])
        .unwrap();
        let ConfigSource::Observer(settings) = &node.source else {
            panic!("standalone");
        };
        let enrolment = settings.node_enrolment.as_ref().expect("an issuer");
        assert_eq!(
            enrolment.token_file,
            Path::new(DEFAULT_NODE_TOKEN_FILE),
            "the projected token by default"
        );
        assert_eq!(
            node.agent.node_service_account, None,
            "nodes hand out nothing"
        );
        let cluster = checked(&["--observer", "https://observer:8443"]).unwrap();
        assert_eq!(
            cluster.agent.node_service_account.map(|a| a.to_string()),
            Some(DEFAULT_NODE_SERVICE_ACCOUNT.to_owned())
        );
        let off = checked(&["--observer", "https://o:8443", "--node-service-account="]).unwrap();
        assert_eq!(off.agent.node_service_account, None);
        let standalone = checked(&["--config", "agent.yaml"]).unwrap();
        assert_eq!(standalone.agent.node_service_account, None);
        let error = checked(&[
            "--observer",
            "https://o:8443",
            "--node-certificate-issuer",
            "http://a:8429/path",
            "--node-service-account",
            "nobody",
        ])
        .unwrap_err();
        assert!(
            error.contains("--node-certificate-issuer \"http://a:8429/path\""),
            "{error}"
        );
        assert!(
            error.contains("--node-service-account \"nobody\""),
            "{error}"
        );
        let error = checked(&[
            "--observer",
            "https://o:8443",
            "--node-certificate-issuer",
            "http://a:8429",
        ])
        .unwrap_err();
        assert!(
            error.contains("only a --role node or gateway instance"),
            "{error}"
        );
    }

    #[test]
    fn checked_flags_become_the_agent_settings() {
        let settings = checked(&[
            "--config",
            "agent.yaml",
            "--listen-address",
            "127.0.0.1:9000",
            "--kubernetes",
            "off",
            "--reload-check-ms",
            "10",
        ])
        .unwrap();
        assert_eq!(settings.agent.listen_address.to_string(), "127.0.0.1:9000");
        assert!(!settings.agent.kubernetes);
        let ConfigSource::File { reload_check, .. } = settings.source else {
            panic!("observer mode");
        };
        assert_eq!(reload_check, MIN_CHECK_INTERVAL, "raised to the minimum");
    }

    #[test]
    fn standalone_mode_needs_no_observer_flags() {
        let args = parse(&["--config", "agent.yaml"]).unwrap();
        assert!(args.observer.is_empty());
        assert!(
            parse(&[]).is_err(),
            "one of --config and --observer is required"
        );
    }

    #[test]
    fn the_agent_policy_comes_from_its_flags() {
        let args = parse(&[
            "--config",
            "agent.yaml",
            "--data-dir",
            "state",
            "--secret-namespaces",
            "kaas-observer,monitoring",
        ])
        .unwrap();
        let policy = agent_policy(&args);
        assert_eq!(
            policy.secret_namespaces,
            SecretNamespaces::only(["kaas-observer", "monitoring"])
        );
        let data = std::path::absolute("state").unwrap();
        let key = data.join("identity/tls.key");
        assert!(
            policy
                .paths
                .check(&key.display().to_string())
                .unwrap_err()
                .contains("the agent's data directory"),
            "a relative --data-dir is denied as the absolute path it is"
        );
        assert!(
            policy.reserved_headers.is_empty(),
            "the provider's own pipeline sets them"
        );
        let none = parse(&["--config", "a.yaml", "--secret-namespaces="]).unwrap();
        assert_eq!(
            agent_policy(&none).secret_namespaces,
            SecretNamespaces::only(Vec::<String>::new())
        );
        assert!(!args.kubelet_insecure_skip_tls_verify);
        let skip = parse(&["--config", "a.yaml", "--kubelet-insecure-skip-tls-verify"]).unwrap();
        assert!(skip.kubelet_insecure_skip_tls_verify);
    }

    /// `--central-endpoints` become the receivers a URL read from a Secret may not name,
    /// and only those: the agent's own validation policy keeps none (its central
    /// pipeline writes there).
    #[test]
    fn central_endpoints_are_refused_for_urls_read_from_secrets_only() {
        let args = parse(&[
            "--config",
            "a.yaml",
            "--central-endpoints",
            "https://receive.provider.example:19291/api/v1/receive,https://gw.provider.example",
        ])
        .unwrap();
        let settings = args.check().expect("valid flags");
        let context = settings.agent.bound_urls.context();
        for refused in [
            "https://RECEIVE.provider.example:19291/other",
            "http://gw.provider.example:443/x",
        ] {
            assert!(
                context
                    .policy
                    .is_central_endpoint(&url::Url::parse(refused).unwrap()),
                "{refused}"
            );
        }
        assert!(
            settings.agent.policy.central_endpoints.is_empty(),
            "the configuration's own validation is unchanged"
        );
        let bad = parse(&["--config", "a.yaml", "--central-endpoints", "not a url"]).unwrap();
        let errors = bad.check().unwrap_err().to_string();
        assert!(errors.contains("--central-endpoints"), "{errors}");
    }
}
