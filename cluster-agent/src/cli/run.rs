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
//! Both modes share the setup ([`ConfiguredAgent::start`]: Kubernetes watches, the HTTP
//! and OTLP/gRPC servers, metrics) and the apply path ([`ConfiguredAgent::apply`], which
//! goes through [`Agent::apply`]).
//!
//! Both validate what they are given under the agent's own policy ([`agent_policy`]:
//! Secrets only from `--secret-namespaces`, files never from the data directory or the
//! credential mounts): a file as a standalone agent's own configuration, what the
//! observer sends as a pipeline the observer distributes (so no `valueFrom.file`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use kaas_pipeline::agent_config::{AgentConfig, AgentConfigError, ValidatedAgentConfig};
use kaas_pipeline::paths::PathPolicy;
use kaas_pipeline::{Origin, ProviderPolicy, SecretNamespaces, ValidationContext};
use kaas_self_telemetry::SelfTelemetry;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::agent::{Agent, ApplyReport};
use crate::control::{DEFAULT_HEALTH_REPORT_INTERVAL, DEFAULT_HEALTH_WINDOW};
use crate::files::FileAccess;
use crate::labels::Labels;
use crate::outbound::auth::NoSecrets;
use crate::pipeline::runtime::{AgentContext, ClusterView};
use crate::push::PushStats;
use crate::telemetry::{ReloadState, registry};

/// Where the agent serves its own endpoints by default; vmagent's port, which
/// operators of agents already open.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:8429";
/// Where OTLP/gRPC pushes are accepted by default: OTLP's conventional gRPC port.
pub const DEFAULT_OTLP_GRPC_ADDRESS: &str = "0.0.0.0:4317";
/// How often the configuration file is checked for changes.
pub const DEFAULT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Arguments of `cluster-agent run`.
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
    #[arg(long, value_enum, value_name = "ORDER", default_value_t = crate::control::EndpointOrder::Random)]
    pub observer_order: crate::control::EndpointOrder,
    /// CA certificate (PEM) to trust for the observer when joining; afterwards the CA
    /// bundle the observer returned is kept with the agent's identity.
    #[arg(long, value_name = "FILE", requires = "observer")]
    pub observer_ca_file: Option<PathBuf>,
    /// File holding the single-use join token printed by `observer cluster add`. The
    /// environment variable KAAS_JOIN_TOKEN is used when this is not given. Only needed
    /// until the agent has joined: its identity is kept in the data directory.
    #[arg(long, value_name = "FILE", requires = "observer")]
    pub join_token_file: Option<PathBuf>,
    /// This agent instance's name within its cluster (a DNS-1123 label), written into
    /// its certificate: each instance has its own, so one instance's renewal or
    /// re-join never cuts another's stream. Default: the cluster-level instance.
    #[arg(long, value_name = "NAME", requires = "observer")]
    pub instance_name: Option<String>,
    /// Where buffers and state are kept.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Bytes the buffers of all pipelines may use together on the data directory's
    /// volume, e.g. `3Gi` (Kubernetes quantity). Set it below the volume's size; the
    /// observer's own pipelines are served first, the others share the rest. Default:
    /// 3Gi, for the 4Gi volume of the install manifests.
    #[arg(long, value_name = "BYTES", default_value = "3Gi", value_parser = parse_buffer_budget)]
    pub buffer_budget: u64,
    /// Address for /metrics, /healthz, /readyz and the push receivers.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
    /// Address for OTLP/gRPC pushes (OTLP's conventional port).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_OTLP_GRPC_ADDRESS)]
    pub otlp_grpc_listen_address: SocketAddr,
    /// Require service-account tokens pushed to the agent to be issued for this
    /// audience (TokenReview `audiences`; repeat for several), e.g. a projected token
    /// the pushing pods mount for the agent alone. By default any token the API server
    /// accepts.
    #[arg(long, value_name = "AUDIENCE")]
    pub push_token_audience: Vec<String>,
    /// Kubernetes discovery: `auto` uses the in-cluster service account or $KUBECONFIG
    /// when present, `off` never contacts an API server.
    #[arg(long, value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,
    /// The namespaces whose Secrets pipelines may reference with secretKeyRef
    /// (comma-separated; empty for none). A configuration naming another namespace is
    /// refused with the field path, and only these namespaces' Secrets are watched.
    /// Default: the agent's own namespace (read from its service-account mount). The
    /// observer's install manifests set it from `observer serve
    /// --agent-secret-namespaces`, with a Role per namespace.
    #[arg(long, value_name = "NAMESPACE,...", value_delimiter = ',')]
    pub secret_namespaces: Option<Vec<String>>,
    /// Accept any kubelet serving certificate instead of verifying it against the
    /// cluster CA: the provider's setting for one cluster whose kubelets serve
    /// self-signed certificates (better: turn on kubelet serving certificates,
    /// serverTLSBootstrap). Pipelines cannot change it.
    #[arg(long)]
    pub kubelet_insecure_skip_tls_verify: bool,
    /// How often to check the configuration file for changes, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RELOAD_CHECK_INTERVAL.as_millis() as u64)]
    pub reload_check_ms: u64,
    /// How long a configuration from the observer must run before it is reported
    /// APPLIED and kept as last-known-good, in milliseconds (shortened by tests).
    #[arg(long, value_name = "MS", hide = true, default_value_t = DEFAULT_HEALTH_WINDOW.as_millis() as u64)]
    pub config_health_window_ms: u64,
    /// How often health is reported to the observer, in milliseconds (shortened by
    /// tests).
    #[arg(long, value_name = "MS", hide = true, default_value_t = DEFAULT_HEALTH_REPORT_INTERVAL.as_millis() as u64)]
    pub health_report_interval_ms: u64,
    /// The agent's own metrics and spans over OTLP.
    #[command(flatten)]
    pub otlp: kaas_self_telemetry::OtlpFlags,
}

/// Reads `--buffer-budget`: a Kubernetes quantity of at least one minimal buffer.
fn parse_buffer_budget(text: &str) -> Result<u64, String> {
    let bytes = kaas_pipeline::units::parse_byte_quantity(text)?;
    let min = crate::buffer::budget::MIN_BUFFER_BYTES;
    if bytes < min {
        return Err(format!(
            "{bytes} bytes is below the minimum of 1Mi ({min} bytes)"
        ));
    }
    Ok(bytes)
}

/// The agent as its own telemetry names it (`service.name`).
pub const SERVICE: kaas_self_telemetry::Service = kaas_self_telemetry::Service {
    name: "kaas-cluster-agent",
    version: env!("CARGO_PKG_VERSION"),
};
/// The resource attribute naming the agent's cluster in its own telemetry, taken from
/// the `cluster` external label (OpenTelemetry's semantic convention).
pub const CLUSTER_RESOURCE_ATTRIBUTE: &str = "k8s.cluster.name";

/// The environment variable holding the join token when --join-token-file is not given.
/// An environment variable rather than a flag, so the token never shows in `ps`.
pub const JOIN_TOKEN_ENV: &str = "KAAS_JOIN_TOKEN";

/// Whether the agent talks to a Kubernetes API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubernetesMode {
    /// When running in a cluster or given a kubeconfig.
    Auto,
    /// Never.
    Off,
}

/// A client for the cluster's API, when the agent runs in a cluster (or has a
/// kubeconfig).
async fn kubernetes_client(mode: KubernetesMode) -> Option<kube::Client> {
    let configured = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    if mode == KubernetesMode::Off || !configured {
        tracing::info!(
            "Kubernetes discovery is off: no in-cluster service account and no KUBECONFIG"
        );
        return None;
    }
    match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("using the Kubernetes API for pod discovery and secretKeyRef values");
            Some(client)
        }
        Err(error) => {
            tracing::error!(%error, "cannot reach the Kubernetes API; the prometheus input finds no pods");
            None
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
    /// The listen address is taken.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Observer-connected mode cannot start.
    #[error(transparent)]
    Observer(#[from] crate::control::ControlError),
    /// The OTLP exporter of the agent's own telemetry cannot be built.
    #[error("{0}")]
    SelfTelemetry(#[from] kaas_self_telemetry::BuildError),
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

/// The namespaces whose Secrets the configuration's pipelines reference and the agent
/// may read: validation already refused any other, and the watcher never watches one
/// (whatever reaches this point).
fn secret_namespaces(
    config: &ValidatedAgentConfig,
    allowed: &SecretNamespaces,
) -> std::collections::BTreeSet<String> {
    let mut watched = std::collections::BTreeSet::new();
    for reference in config.pipelines.iter().flat_map(|p| {
        let input = &p.spec().input;
        let push = [&input.otlp, &input.remote_write]
            .into_iter()
            .flatten()
            .filter_map(|i| i.secret_ref());
        p.spec().output.secret_refs().into_iter().chain(push)
    }) {
        if allowed.allows(&reference.namespace) {
            watched.insert(reference.namespace.clone());
        } else {
            tracing::error!(
                namespace = %reference.namespace,
                "a pipeline references a Secret in a namespace outside --secret-namespaces; it is not watched"
            );
        }
    }
    watched
}

fn log_report(report: &ApplyReport) {
    tracing::info!(
        started = ?report.started,
        restarted = ?report.restarted,
        unchanged = ?report.unchanged,
        stopped = ?report.stopped,
        "configuration applied"
    );
    for (pipeline, reason) in &report.failed {
        tracing::error!(%pipeline, %reason, "pipeline could not start");
    }
}

/// The running agent with everything both modes share: the Kubernetes watches, the
/// HTTP and OTLP/gRPC servers and the agent's metrics. Configurations reach its
/// pipelines only through [`ConfiguredAgent::apply`].
pub struct ConfiguredAgent {
    agent: Agent,
    kubernetes: Option<kube::Client>,
    policy: ProviderPolicy,
    watched_secret_namespaces: std::collections::BTreeSet<String>,
    /// Reload outcomes, shown in `/metrics` and `/readyz`.
    pub reloads: Arc<ReloadState>,
    /// The resource of the agent's own telemetry (gains the cluster's name).
    telemetry_resource: kaas_self_telemetry::Resource,
}

impl ConfiguredAgent {
    /// Connects to Kubernetes (when available), binds the listeners and starts the
    /// servers and the self-telemetry exporter; no pipeline runs yet.
    pub async fn start(args: &RunArgs, telemetry: &mut SelfTelemetry) -> Result<Self, RunError> {
        let kubernetes = kubernetes_client(args.kubernetes).await;
        let pods = kubernetes
            .clone()
            .map(crate::discovery::kubernetes::watch::watch_pods);
        let nodes = kubernetes
            .clone()
            .map(crate::discovery::kubernetes::watch::watch_nodes);
        let services = kubernetes
            .clone()
            .map(crate::discovery::kubernetes::watch::watch_services);
        let endpoint_slices = kubernetes
            .clone()
            .map(crate::discovery::kubernetes::watch::watch_endpoint_slices);
        let policy = agent_policy(args);
        let context = AgentContext {
            data_dir: args.data_dir.clone(),
            external_labels: Arc::new(Labels::default()),
            secrets: Arc::new(NoSecrets),
            files: Arc::new(FileAccess::new(policy.paths.clone())),
            cluster: ClusterView {
                pods: pods.as_ref().map(|(r, _)| r.clone()),
                nodes: nodes.as_ref().map(|(r, _)| r.clone()),
                services: services.as_ref().map(|(r, _)| r.clone()),
                endpoint_slices: endpoint_slices.as_ref().map(|(r, _)| r.clone()),
            },
            service_account_dir: crate::pipeline::kubelet::SERVICE_ACCOUNT_DIR.into(),
            kubelet_insecure_skip_verify: args.kubelet_insecure_skip_tls_verify,
        };
        let mut agent = Agent::new(context);
        agent.set_buffer_budget(args.buffer_budget);
        let reloads = Arc::new(ReloadState::default());
        let push_stats = Arc::new(PushStats::default());
        let mut registry = registry(
            agent.pipelines.clone(),
            reloads.clone(),
            push_stats.clone(),
            args.buffer_budget,
        );
        telemetry.register(&mut registry);
        let registry = Arc::new(registry);
        telemetry.start(registry.clone())?;
        let listener = tokio::net::TcpListener::bind(args.listen_address)
            .await
            .map_err(|source| RunError::Listen {
                address: args.listen_address,
                source,
            })?;
        let grpc_listener = tokio::net::TcpListener::bind(args.otlp_grpc_listen_address)
            .await
            .map_err(|source| RunError::Listen {
                address: args.otlp_grpc_listen_address,
                source,
            })?;
        let reviewer = crate::push::auth::TokenReviewer::new(
            kubernetes.clone(),
            args.push_token_audience.clone(),
        );
        let receiver = crate::push::PushReceiver::new(
            agent.pipelines.clone(),
            push_stats,
            kaas_series::PushLimits::default(),
            reviewer,
        );
        let grpc = crate::push::otlp_grpc::OtlpGrpc::new(receiver.clone());
        tokio::spawn(async move {
            if let Err(error) = crate::push::otlp_grpc::serve(grpc_listener, grpc).await {
                tracing::error!(%error, "the OTLP/gRPC receiver stopped");
            }
        });
        let push = receiver.routes();
        let app = crate::server::app(registry, reloads.clone(), push);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the HTTP server stopped");
            }
        });
        tracing::info!(
            address = %args.listen_address,
            "serving /metrics, /healthz, /readyz and the push receivers /api/v1/write and /v1/metrics"
        );
        Ok(Self {
            agent,
            kubernetes,
            policy,
            watched_secret_namespaces: std::collections::BTreeSet::new(),
            reloads,
            telemetry_resource: telemetry.resource(),
        })
    }

    /// Whether the agent can reach the Kubernetes API (for discovery and Secrets).
    pub fn has_kubernetes(&self) -> bool {
        self.kubernetes.is_some()
    }

    /// The running pipelines, for health reports.
    pub fn pipelines(&self) -> Arc<tokio::sync::RwLock<crate::pipeline::runtime::Pipelines>> {
        self.agent.pipelines.clone()
    }

    /// Makes the running pipelines match `config` through [`Agent::apply`], watching
    /// the Secrets its pipelines reference first; logs what changed and marks the agent
    /// ready.
    pub async fn apply(&mut self, config: ValidatedAgentConfig) -> ApplyReport {
        if let Some(cluster) = config.external_labels.get("cluster") {
            self.telemetry_resource
                .set(CLUSTER_RESOURCE_ATTRIBUTE, cluster);
        }
        let namespaces = secret_namespaces(&config, &self.policy.secret_namespaces);
        if let Some(client) = &self.kubernetes
            && namespaces != self.watched_secret_namespaces
        {
            self.agent.set_secret_store(Arc::new(
                crate::discovery::kubernetes::secrets::KubernetesSecrets::watch(
                    client,
                    namespaces.clone(),
                ),
            ));
            self.watched_secret_namespaces = namespaces;
        }
        let report = self.agent.apply(config).await;
        log_report(&report);
        self.reloads.applied.store(true, Ordering::Relaxed);
        report
    }

    /// Stops every pipeline.
    pub async fn shutdown(&mut self) {
        self.agent.shutdown().await;
    }
}

/// Runs until SIGTERM or SIGINT. `telemetry` is what `main` set logging up with; its
/// exporter starts once the agent's registry exists.
pub async fn run(args: RunArgs, mut telemetry: SelfTelemetry) -> Result<(), RunError> {
    match &args.config {
        Some(path) => {
            // Read the file before binding anything, so a broken file fails fast.
            let policy = agent_policy(&args);
            let initial = load(path, &policy)?;
            let path = path.clone();
            let mut agent = ConfiguredAgent::start(&args, &mut telemetry).await?;
            let result =
                run_standalone(&mut agent, &path, initial, &policy, args.reload_check_ms).await;
            tracing::info!("shutting down");
            agent.shutdown().await;
            result
        }
        None => {
            // Clap requires --observer when --config is absent; an empty list would be
            // refused with a clear message anyway.
            let settings = crate::control::ObserverSettings {
                urls: args.observer.clone(),
                endpoint_order: args.observer_order,
                ca_file: args.observer_ca_file.clone(),
                join_token_file: args.join_token_file.clone(),
                join_token_env: std::env::var(JOIN_TOKEN_ENV).ok(),
                instance_name: args.instance_name.clone().unwrap_or_default(),
                data_dir: args.data_dir.clone(),
                health_window: Duration::from_millis(args.config_health_window_ms),
                health_interval: Duration::from_millis(args.health_report_interval_ms.max(100)),
                validation: ValidationContext::observer(agent_policy(&args)),
                ..crate::control::ObserverSettings::default()
            };
            // Checks the flags and the identity on disk before anything is started.
            let mut connection = crate::control::ObserverConnection::new(settings)?;
            let mut agent = ConfiguredAgent::start(&args, &mut telemetry).await?;
            let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
            let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
            tokio::select! {
                () = connection.run(&mut agent) => {}
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutting down");
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
    reload_check_ms: u64,
) -> Result<(), RunError> {
    let (config, mut hash) = initial;
    agent.apply(config).await;
    let reloads = agent.reloads.clone();
    reloads.last_successful.store(true, Ordering::Relaxed);

    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut check = tokio::time::interval(Duration::from_millis(reload_check_ms.max(100)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            _ = hangup.recv() => true,
            _ = check.tick() => false,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        if !forced && file_hash(path).is_none_or(|h| h == hash) {
            continue;
        }
        match load(path, policy) {
            Ok((config, new_hash)) => {
                hash = new_hash;
                agent.apply(config).await;
                reloads.successes.fetch_add(1, Ordering::Relaxed);
                reloads.last_successful.store(true, Ordering::Relaxed);
            }
            Err(error) => {
                // Remember the broken file so it is reported once, not every check.
                if let Some(new_hash) = file_hash(path) {
                    hash = new_hash;
                }
                tracing::error!(%error, "configuration refused; keeping the running configuration");
                reloads.failures.fetch_add(1, Ordering::Relaxed);
                reloads.last_successful.store(false, Ordering::Relaxed);
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
    use crate::control::EndpointOrder;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|command| command.run)
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
            assert_eq!(args.observer_order, EndpointOrder::Random);
        }
        let listed =
            parse(&["--observer", "https://a:8443", "--observer-order", "listed"]).unwrap();
        assert_eq!(listed.observer_order, EndpointOrder::Listed);
    }

    /// Issue 13, Disk budget: the budget is a flag with a named default, given as a
    /// quantity and refused below one minimal buffer.
    #[test]
    fn the_buffer_budget_is_a_quantity_with_a_default() {
        let default = parse(&["--config", "agent.yaml"]).unwrap();
        assert_eq!(
            default.buffer_budget,
            crate::buffer::budget::DEFAULT_BUFFER_BUDGET
        );
        let set = parse(&["--config", "a.yaml", "--buffer-budget", "512Mi"]).unwrap();
        assert_eq!(set.buffer_budget, 512 << 20);
        let error = parse(&["--config", "a.yaml", "--buffer-budget", "1Ki"]).unwrap_err();
        assert!(error.to_string().contains("below the minimum"), "{error}");
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

    /// Issue 13, finding 9: the Secret watcher never watches a namespace outside
    /// --secret-namespaces, even for a configuration that never passed the allow-list
    /// (here validated without it). On 552c13e it watched every namespace pipelines
    /// named.
    #[test]
    fn secrets_are_watched_only_in_allowed_namespaces() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {name: p}
    spec:
      input: {prometheus: {enabled: true}}
      output:
        prometheusRemoteWrite:
          url: https://r.example/write
          headers:
            - {name: X-A, valueFrom: {secretKeyRef: {name: a, namespace: kaas-observer, key: k}}}
            - {name: X-B, valueFrom: {secretKeyRef: {name: b, namespace: kube-system, key: k}}}
"#;
        let unchecked = ValidationContext::observer(ProviderPolicy::unrestricted());
        let config = AgentConfig::parse(text, &unchecked).unwrap();
        let watched = secret_namespaces(&config, &SecretNamespaces::only(["kaas-observer"]));
        assert_eq!(watched, ["kaas-observer".to_owned()].into());
        // Validated as the agent validates, the configuration is refused outright.
        let checked = ValidationContext::observer(ProviderPolicy::agent_default());
        let Err(AgentConfigError::Invalid(errors)) = AgentConfig::parse(text, &checked) else {
            panic!("accepted");
        };
        assert_eq!(
            errors.errors()[0].path,
            "pipelines[0].spec.output.prometheusRemoteWrite.headers[1].valueFrom.secretKeyRef.namespace"
        );
    }
}
