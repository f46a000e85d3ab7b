//! `observer serve`: the central service. Wires the store, the REST API, the agent
//! control service with its certificate authority, the cluster lifecycle and the
//! observer's own metrics, and runs until SIGTERM or SIGINT.
//!
//! With no flags it just works: everything lives under `--data-dir` (the SQLite
//! database, the CA, the secrets key, and a bootstrap admin token written to
//! `admin.token` when none is given). For HA, point several replicas at one PostgreSQL
//! with `--database-url` and give them the same CA (`--ca-dir`) and secrets key.

mod args;
mod bootstrap;
mod http;
mod settings;
pub mod templates;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use kaas_self_telemetry::SelfTelemetry;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use args::{IdentityFlags, ServeArgs};

use self::settings::{EgressAllowed, ServeSettings};
use crate::api::metrics::ApiMetrics;
use crate::api::{ApiState, app};
use crate::control::service::ControlService;
use crate::control::{serve_with_shutdown, server_tls_config};
use crate::egress::EgressPolicy;
use crate::fleet::{ClusterLifecycle, LifecycleSettings};
use crate::identity::ClusterCa;
use crate::integrations::{Integrations, probe_source};
use crate::onboarding::OnboardingMetrics;
use crate::onboarding::capi::install::WorkloadConnector;
use crate::onboarding::capi::{CapiSettings, ClusterApiSource};
use crate::onboarding::inventory::{AgentInstall, InventorySource};
use crate::probes::{
    FollowSettings, MembershipSettings, Prober, ProberSettings, ReplicaMembership, TargetFollower,
    follow_store,
};
use crate::store::Store;

/// Where the REST API and health endpoints listen by default.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:8080";
/// Where `/metrics` listens by default: a port of its own, beside the API's, so that
/// it can be kept away from tenants (see [`crate::listeners`]).
pub const DEFAULT_METRICS_LISTEN_ADDRESS: &str = "0.0.0.0:8081";
/// `--control-handshake-wait` by default:
/// [`DEFAULT_HANDSHAKE_WAIT`](crate::control::accept::DEFAULT_HANDSHAKE_WAIT).
pub const DEFAULT_CONTROL_HANDSHAKE_WAIT: &str = "30s";
/// Where agents' control streams are served by default (TLS).
pub const DEFAULT_GRPC_LISTEN_ADDRESS: &str = "0.0.0.0:8443";
/// How long a join token stays valid: long enough for a cluster to come up and install
/// its agent, short enough that a leaked token soon stops working.
pub const DEFAULT_JOIN_TOKEN_TTL: &str = "24h";
/// How long an agent may be unheard before its cluster counts as silent: several
/// missed heartbeats, so a reconnect or an observer restart does not flap the state.
pub const DEFAULT_SILENT_AFTER: &str = "5m";
/// `--instance-health-ttl` by default: [`crate::store::instances::DEFAULT_INSTANCE_HEALTH_TTL`].
pub const DEFAULT_INSTANCE_HEALTH_TTL: &str = "5m";
/// `--agent-certificate-validity` by default: [`crate::identity::DEFAULT_AGENT_CERTIFICATE_VALIDITY`].
pub const DEFAULT_AGENT_CERTIFICATE_VALIDITY: &str = "90d";
/// The observer as its own telemetry names it (`service.name`).
pub const SERVICE: kaas_self_telemetry::Service = kaas_self_telemetry::Service {
    name: "kaas-observer",
    version: env!("CARGO_PKG_VERSION"),
};
/// The name of the bootstrap admin token file written into the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The longest `--replica-id`: a Kubernetes pod name (253) fits, and ids stay short
/// enough for log lines and the `replicas` table.
pub const MAX_REPLICA_ID_LEN: usize = 253;
/// Random hex digits appended to the host name in the default replica id, so two
/// observers on one host (tests, a restart overlapping its predecessor) differ.
const REPLICA_ID_SUFFIX_BYTES: usize = 3;

/// Why the observer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Flags are wrong: every one found, one per line, before anything started
    /// (`main` exits with status 2).
    #[error("{}", lines(.0))]
    Flags(Vec<ServeError>),
    /// A flag's value is wrong.
    #[error("--{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file or directory cannot be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The secrets key cannot be used.
    #[error("secrets key: {0}")]
    Secrets(#[from] crate::secrets::SecretError),
    /// The configured bootstrap admin token was revoked: the observer does not start
    /// with it (issue 13, finding 10).
    #[error("{reason}. {hint}")]
    BootstrapTokenRevoked {
        /// What the store said.
        reason: String,
        /// What the operator does about it.
        hint: String,
    },
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The CA cannot be loaded or created.
    #[error("certificate authority: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// A listener cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An integration flag is wrong.
    #[error("{0}")]
    Integrations(#[from] crate::integrations::IntegrationsError),
    /// A listener's token, certificate or key cannot be used.
    #[error("{0}")]
    Listener(#[from] crate::listeners::ListenerError),
    /// The OTLP exporter of the observer's own telemetry cannot be built.
    #[error("{0}")]
    SelfTelemetry(#[from] kaas_self_telemetry::BuildError),
    /// A server stopped with an error.
    #[error("{0}")]
    Server(String),
}

/// `errors`, one per line.
fn lines(errors: &[ServeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The egress policy of `--egress-allow-cidr` and `--probe-allow-method`; logged, since
/// every allowed range is a decision to let tenants reach it.
fn egress_policy(allowed: &EgressAllowed) -> EgressPolicy {
    let policy = EgressPolicy::new(
        allowed.cidrs.clone(),
        allowed
            .methods
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect(),
    );
    let allowed: Vec<String> = policy.allowed().iter().map(ToString::to_string).collect();
    if allowed.is_empty() {
        tracing::info!(
            "egress policy: special-purpose address ranges are refused for tenants (allow ranges with --egress-allow-cidr)"
        );
    } else {
        tracing::info!(allowed = %allowed.join(","), "egress policy: these ranges are allowed for tenants");
    }
    policy
}

async fn shutdown_signal() {
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still ends on SIGKILL; run on.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// Runs the observer until SIGTERM or SIGINT. `telemetry` is what `main` set logging
/// up with; its exporter starts here, once the registry is complete.
///
/// Every flag is checked first ([`ServeSettings::check`]): with a wrong one nothing is
/// created, opened or started.
pub async fn run(args: ServeArgs, mut telemetry: SelfTelemetry) -> Result<(), ServeError> {
    let mut settings = ServeSettings::check(&args)?;
    let provider_templates = templates::provider_templates(
        args.provider_templates_dir.as_deref(),
        &settings.tenant_policy,
    )?;
    let (store, ca) = bootstrap::open_data(&args).await?;
    templates::sync(&store, provider_templates, &settings.tenant_policy).await;
    store.set_instance_health_ttl(settings.instance_health_ttl);
    let egress = egress_policy(&settings.egress_allowed);
    let mut background = Background::start(&mut settings, &store, &ca, &egress).await?;
    let api_metrics = ApiMetrics::default();
    let mut registry = Registry::default();
    api_metrics.register(&mut registry);
    background.register(&mut registry);
    telemetry.register(&mut registry);
    settings.http.register(&mut registry);
    let registry = Arc::new(registry);
    telemetry.start(registry.clone())?;
    let grpc_listener = bind(settings.addresses.grpc).await?;
    let grpc_port = grpc_listener
        .local_addr()
        .map_or(settings.addresses.grpc.port(), |a| a.port());
    let control_endpoint = args.control_endpoint.clone().unwrap_or_else(|| {
        let host = args
            .grpc_hostnames
            .first()
            .map_or("localhost", String::as_str);
        format!("https://{host}:{grpc_port}")
    });
    background.start_inventory(&settings, &store, &ca, &control_endpoint)?;
    background.cluster_api = start_cluster_api(
        &args,
        &settings,
        &store,
        &ca,
        &background,
        &control_endpoint,
    )
    .await?;
    let tls = server_tls_config(&ca, &args.grpc_hostnames)?;
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let grpc = tokio::spawn(serve_with_shutdown(
        grpc_listener,
        background.control.clone(),
        tls,
        settings.handshake_limits,
        async move {
            let _ = grpc_stopped.await;
        },
    ));

    let api = app(ApiState {
        store: store.clone(),
        join_token_ttl: settings.join_token_ttl,
        control_endpoint: control_endpoint.clone(),
        ca_pem: ca.bundle_pem(),
        buffer_budgets: crate::api::budgets::BufferBudgets {
            default_bytes: settings.cluster_buffer_budget,
            central_bytes: background.integrations.central_pipeline().map_or(
                0,
                crate::rendering::CentralPipelineSettings::buffer_max_bytes,
            ),
            node_bytes: settings.node_buffer_budget,
            central_node_bytes: background.integrations.central_pipeline().map_or(
                0,
                crate::rendering::CentralPipelineSettings::node_buffer_max_bytes,
            ),
        },
        egress: egress.clone(),
        tenant_policy: settings.tenant_policy.clone(),
    });
    let router: Router = api_metrics.layer(api);
    let listener = bind(settings.addresses.api).await?;
    let metrics_listener = bind(settings.addresses.metrics).await?;
    tracing::info!(
        api = %settings.addresses.api,
        api_tls = settings.http.api_tls.is_some(),
        metrics = %settings.addresses.metrics,
        control = %settings.addresses.grpc,
        %control_endpoint,
        replica = %settings.replica_id,
        database = if args.database_url.is_some() { "external" } else { "sqlite" },
        "observer serving"
    );
    let metrics_router =
        crate::listeners::metrics_router(registry, settings.http.metrics_token.clone());
    let served = settings
        .http
        .serve(listener, router, metrics_listener, metrics_router)
        .await;
    tracing::info!("shutting down");
    let _ = stop_grpc.send(());
    background.stop().await;
    if let Ok(Err(error)) = grpc.await {
        tracing::error!(%error, "the control service stopped with an error");
    }
    served.map_err(|e| ServeError::Server(e.to_string()))
}

/// What runs beside the servers: the lifecycle, the prober and its membership, the
/// integrations, the control service, and the sources of clusters.
struct Background {
    lifecycle: ClusterLifecycle,
    egress: EgressPolicy,
    prober: Prober,
    membership: ReplicaMembership,
    integrations: Integrations,
    control: ControlService,
    probe_feed: TargetFollower,
    onboarding: Arc<OnboardingMetrics>,
    inventory: Option<JoinHandle<()>>,
    cluster_api: Option<ClusterApiSource>,
}

impl Background {
    /// Starts the lifecycle, the prober (after its membership), the integrations and
    /// the control service with the integrations' central pipeline.
    async fn start(
        settings: &mut ServeSettings,
        store: &Store,
        ca: &Arc<ClusterCa>,
        egress: &EgressPolicy,
    ) -> Result<Self, ServeError> {
        let lifecycle = ClusterLifecycle::start(
            store.clone(),
            LifecycleSettings {
                silent_after: settings.silent_after,
                ..LifecycleSettings::default()
            },
        );
        let prober = Prober::start(ProberSettings {
            interval: settings.probe_interval,
            timeout: settings.probe_timeout,
            max_concurrency: settings.probe_capacity.max_concurrency,
            max_concurrency_per_tenant: settings.probe_capacity.max_concurrency_per_tenant,
            provider_slots: settings.probe_capacity.provider_slots,
            replica_id: settings.replica_id.clone(),
            egress: egress.clone(),
        });
        // Membership first: the prober learns the other replicas before it gets targets.
        let membership = ReplicaMembership::start(
            store.clone(),
            prober.clone(),
            MembershipSettings::new(settings.replica_id.clone()),
        )
        .await;
        let integrations = Integrations::start(
            std::mem::take(&mut settings.integrations),
            store,
            &lifecycle,
            vec![probe_source(prober.clone())],
        )?;
        let mut control_settings = settings.control.clone();
        control_settings.central_pipeline = integrations.central_pipeline().cloned().map(Arc::new);
        let control = ControlService::new(store.clone(), ca.clone(), control_settings);
        let probe_feed = follow_store(store.clone(), prober.clone(), FollowSettings::default());
        Ok(Self {
            lifecycle,
            egress: egress.clone(),
            prober,
            membership,
            integrations,
            control,
            probe_feed,
            onboarding: Arc::new(OnboardingMetrics::default()),
            inventory: None,
            cluster_api: None,
        })
    }

    /// Registers every background part's metrics.
    fn register(&self, registry: &mut Registry) {
        crate::api::metrics::register_build_info(registry);
        self.control.metrics().register(registry);
        self.lifecycle.register(registry);
        self.integrations.register(registry);
        self.prober.register(registry);
        self.egress.register(registry);
        self.onboarding.register(registry);
    }

    /// Starts polling the KaaS inventory with `--inventory-url`.
    /// Starts the inventory source with `--inventory-url`, installing agents (for
    /// entries that name a kubeconfig) that reach the control service at
    /// `control_endpoint`.
    fn start_inventory(
        &mut self,
        settings: &ServeSettings,
        store: &Store,
        ca: &ClusterCa,
        control_endpoint: &str,
    ) -> Result<(), ServeError> {
        let Some(inventory) = &settings.inventory else {
            return Ok(());
        };
        let mut inventory = inventory.clone();
        inventory.egress = self.egress.clone();
        inventory.silent_after = settings.silent_after;
        inventory.secret_namespaces = settings.agent_secret_namespaces();
        inventory.install = Some(AgentInstall {
            control_endpoint: control_endpoint.to_owned(),
            ca_pem: ca.bundle_pem(),
            secret_namespaces: settings.agent_secret_namespaces(),
            central_endpoints: crate::api::central_endpoint_args(&settings.tenant_policy),
            workload: WorkloadConnector::Kubeconfig(self.egress.clone()),
        });
        let source = InventorySource::new(store.clone(), inventory, self.onboarding.clone())
            .map_err(|e| ServeError::Flag {
                flag: "inventory-url",
                reason: e.to_string(),
            })?;
        self.inventory = Some(source.start());
        Ok(())
    }

    /// Stops everything; the other replicas take over this one's probe targets at
    /// their next heartbeat.
    async fn stop(self) {
        self.lifecycle.stop();
        self.integrations.stop();
        self.probe_feed.abort();
        self.prober.stop();
        self.membership.leave().await;
        if let Some(inventory) = self.inventory {
            inventory.abort();
        }
        if let Some(cluster_api) = &self.cluster_api {
            cluster_api.stop();
        }
    }
}

/// Starts the Cluster API source with `--cluster-api`, installing agents that reach
/// the control service at `control_endpoint`.
async fn start_cluster_api(
    args: &ServeArgs,
    settings: &ServeSettings,
    store: &Store,
    ca: &ClusterCa,
    background: &Background,
    control_endpoint: &str,
) -> Result<Option<ClusterApiSource>, ServeError> {
    let Some(management) = &args.cluster_api else {
        return Ok(None);
    };
    let client = management.client().await.map_err(|e| ServeError::Flag {
        flag: "cluster-api",
        reason: e.to_string(),
    })?;
    let mut capi = CapiSettings::new(
        control_endpoint.to_owned(),
        ca.bundle_pem(),
        settings.join_token_ttl,
    );
    capi.silent_after = settings.silent_after;
    capi.egress = background.egress.clone();
    capi.guard = settings.mass_deletion_guard;
    capi.secret_namespaces = settings.agent_secret_namespaces();
    capi.central_endpoints = crate::api::central_endpoint_args(&settings.tenant_policy);
    Ok(Some(ClusterApiSource::start(
        client,
        store.clone(),
        capi,
        background.onboarding.clone(),
    )))
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use std::time::Duration;

    use super::bootstrap::{admin_token, secret_box};
    use super::settings::control_handshake_limits;
    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(data_dir: &Path) -> ServeArgs {
        let cli = Cli::try_parse_from([
            "observer",
            "serve",
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen-address",
            "127.0.0.1:0",
            "--grpc-listen-address",
            "127.0.0.1:0",
            "--replica-id",
            "test",
        ])
        .unwrap();
        match cli.command {
            Command::Serve(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    /// Issue 13, finding 10: a revoked bootstrap admin token worked again after a
    /// restart. `observer serve` now refuses to start while the token it is configured
    /// with is revoked, and says what to do; with a new token it starts.
    #[tokio::test]
    async fn serve_refuses_to_start_with_a_revoked_bootstrap_token() {
        let dir = tempfile::tempdir().unwrap();
        let args = serve_args(dir.path());
        let token = admin_token(&args).unwrap();
        let store = Store::open_sqlite(&dir.path().join("observer.db"), secret_box(&args).unwrap())
            .await
            .unwrap();
        store.ensure_admin_token(&token).await.unwrap();
        store
            .revoke_api_token(
                crate::store::BOOTSTRAP_ADMIN_TOKEN_ID,
                &crate::store::Actor::admin(),
            )
            .await
            .unwrap();
        drop(store);

        let telemetry = SelfTelemetry::disabled(SERVICE);
        // A deadline only against a hang: the observer that starts serves until a signal.
        let outcome = tokio::time::timeout(Duration::from_secs(60), run(args, telemetry))
            .await
            .expect("serve returns at once instead of serving");
        let error = outcome.unwrap_err();
        assert!(
            matches!(error, ServeError::BootstrapTokenRevoked { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("revoked"), "{message}");
        assert!(message.contains("admin.token"), "{message}");
        assert!(
            !message.contains(&token),
            "the token is never shown: {message}"
        );

        // The hint works: a new token in place of the file, and the store takes it.
        std::fs::remove_file(dir.path().join(ADMIN_TOKEN_FILE)).unwrap();
        let args = serve_args(dir.path());
        let new_token = admin_token(&args).unwrap();
        assert_ne!(new_token, token);
        let store = Store::open_sqlite(&dir.path().join("observer.db"), secret_box(&args).unwrap())
            .await
            .unwrap();
        store.ensure_admin_token(&new_token).await.unwrap();
        assert_eq!(
            store.authenticate(&new_token).await.unwrap(),
            Some(crate::store::Principal::Admin)
        );
        assert_eq!(store.authenticate(&token).await.unwrap(), None);
    }

    #[derive(clap::Parser)]
    struct ServeOnly {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        ServeOnly::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|command| command.serve)
    }

    #[test]
    fn the_control_port_defaults_are_the_named_constants() {
        let args = parse(&[]).unwrap();
        let limits = control_handshake_limits(&args).unwrap();
        assert_eq!(limits.wait, crate::control::accept::DEFAULT_HANDSHAKE_WAIT);
        assert_eq!(
            limits.pending_per_source,
            crate::control::accept::DEFAULT_MAX_PENDING_PER_SOURCE
        );
        let zero = parse(&["--control-max-pending-per-address", "0"]).unwrap();
        assert!(control_handshake_limits(&zero).is_err());
    }

    #[test]
    fn the_api_certificate_needs_its_key() {
        assert!(parse(&["--api-tls-cert-file", "c.pem"]).is_err());
        assert!(parse(&["--api-tls-key-file", "k.pem"]).is_err());
        assert!(
            parse(&[
                "--api-tls-cert-file",
                "c.pem",
                "--api-tls-key-file",
                "k.pem"
            ])
            .is_ok()
        );
    }
}
