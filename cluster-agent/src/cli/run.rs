//! `cluster-agent run`: standalone mode. Reads an agent configuration file, runs its
//! pipelines, and reloads on SIGHUP or when the file changes: the new file is validated
//! first, and if it is invalid the agent keeps running the old configuration and logs
//! every problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use kaas_pipeline::agent_config::{AgentConfig, AgentConfigError, ValidatedAgentConfig};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::agent::{Agent, ApplyReport};
use crate::exporters::auth::NoSecrets;
use crate::labels::Labels;
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
pub struct RunArgs {
    /// The agent configuration file (YAML or JSON).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where buffers and state are kept.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Address for /metrics, /healthz, /readyz and the push receivers.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
    /// Address for OTLP/gRPC pushes (OTLP's conventional port).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_OTLP_GRPC_ADDRESS)]
    pub otlp_grpc_listen_address: SocketAddr,
    /// Kubernetes discovery: `auto` uses the in-cluster service account or $KUBECONFIG
    /// when present, `off` never contacts an API server.
    #[arg(long, value_enum, default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,
    /// How often to check the configuration file for changes, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_RELOAD_CHECK_INTERVAL.as_millis() as u64)]
    pub reload_check_ms: u64,
}

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
}

fn load(path: &Path) -> Result<(ValidatedAgentConfig, [u8; 32]), RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Read {
        path: path.to_owned(),
        source,
    })?;
    let hash = Sha256::digest(text.as_bytes()).into();
    let config = AgentConfig::parse(&text).map_err(|error| RunError::Invalid {
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

/// The namespaces whose Secrets the configuration's pipelines reference.
fn secret_namespaces(config: &ValidatedAgentConfig) -> std::collections::BTreeSet<String> {
    config
        .pipelines
        .iter()
        .flat_map(|p| p.spec().output.secret_refs())
        .map(|r| r.namespace.clone())
        .collect()
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

/// Runs until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let (config, mut hash) = load(&args.config)?;
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
    let context = AgentContext {
        data_dir: args.data_dir.clone(),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(NoSecrets),
        cluster: ClusterView {
            pods: pods.as_ref().map(|(r, _)| r.clone()),
            nodes: nodes.as_ref().map(|(r, _)| r.clone()),
            services: services.as_ref().map(|(r, _)| r.clone()),
            endpoint_slices: endpoint_slices.as_ref().map(|(r, _)| r.clone()),
        },
        service_account_dir: crate::pipeline::runtime::SERVICE_ACCOUNT_DIR.into(),
    };
    let mut agent = Agent::new(context);
    let mut watched_secret_namespaces = std::collections::BTreeSet::new();
    let mut use_secrets_of = |agent: &mut Agent, config: &ValidatedAgentConfig| {
        let namespaces = secret_namespaces(config);
        if let Some(client) = &kubernetes
            && namespaces != watched_secret_namespaces
        {
            agent.set_secret_store(Arc::new(
                crate::discovery::kubernetes::secrets::KubernetesSecrets::watch(
                    client,
                    namespaces.clone(),
                ),
            ));
            watched_secret_namespaces = namespaces;
        }
    };
    let reloads = Arc::new(ReloadState::default());
    let push_stats = Arc::new(PushStats::default());
    let registry = Arc::new(registry(
        agent.pipelines.clone(),
        reloads.clone(),
        push_stats.clone(),
    ));
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
    let grpc = crate::push::otlp_grpc::OtlpGrpc::new(agent.pipelines.clone(), push_stats.clone());
    tokio::spawn(async move {
        if let Err(error) = crate::push::otlp_grpc::serve(grpc_listener, grpc).await {
            tracing::error!(%error, "the OTLP/gRPC receiver stopped");
        }
    });
    let push = crate::push::routes(agent.pipelines.clone(), push_stats);
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

    use_secrets_of(&mut agent, &config);
    log_report(&agent.apply(config).await);
    reloads.applied.store(true, Ordering::Relaxed);
    reloads.last_successful.store(true, Ordering::Relaxed);

    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut check = tokio::time::interval(Duration::from_millis(args.reload_check_ms.max(100)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let forced = tokio::select! {
            _ = hangup.recv() => true,
            _ = check.tick() => false,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        if !forced && file_hash(&args.config).is_none_or(|h| h == hash) {
            continue;
        }
        match load(&args.config) {
            Ok((config, new_hash)) => {
                hash = new_hash;
                use_secrets_of(&mut agent, &config);
                log_report(&agent.apply(config).await);
                reloads.successes.fetch_add(1, Ordering::Relaxed);
                reloads.last_successful.store(true, Ordering::Relaxed);
            }
            Err(error) => {
                // Remember the broken file so it is reported once, not every check.
                if let Some(new_hash) = file_hash(&args.config) {
                    hash = new_hash;
                }
                tracing::error!(%error, "configuration refused; keeping the running configuration");
                reloads.failures.fetch_add(1, Ordering::Relaxed);
                reloads.last_successful.store(false, Ordering::Relaxed);
            }
        }
    }
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}

fn file_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}
