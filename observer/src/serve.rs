//! `observer serve`: the central service. Wires the store, the REST API, the agent
//! control service with its certificate authority, the cluster lifecycle and the
//! observer's own metrics, and runs until SIGTERM or SIGINT.
//!
//! With no flags it just works: everything lives under `--data-dir` (the SQLite
//! database, the CA, the secrets key, and a bootstrap admin token written to
//! `admin.token` when none is given). For HA, point several replicas at one PostgreSQL
//! with `--database-url` and give them the same CA (`--ca-dir`) and secrets key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Args;
use kaas_self_telemetry::SelfTelemetry;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::metrics::ApiMetrics;
use crate::api::{ApiState, app};
use crate::control::service::{ControlService, ControlSettings};
use crate::control::{serve_with_shutdown, server_tls_config};
use crate::identity::ClusterCa;
use crate::integrations::Integrations;
use crate::integrations::probe_source;
use crate::lifecycle::{ClusterLifecycle, LifecycleSettings};
use crate::onboarding::OnboardingMetrics;
use crate::onboarding::capi::{CapiSettings, ClusterApiSource};
use crate::onboarding::inventory::{InventorySettings, InventorySource};
use crate::probes::{
    FollowSettings, MembershipSettings, Prober, ProberSettings, ReplicaMembership, follow_store,
};
use crate::secrets::SecretBox;
use crate::store::Store;

/// Where the REST API, `/metrics` and health endpoints listen by default.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:8080";
/// Where agents' control streams are served by default (TLS).
pub const DEFAULT_GRPC_LISTEN_ADDRESS: &str = "0.0.0.0:8443";
/// How long a join token stays valid: long enough for a cluster to come up and install
/// its agent, short enough that a leaked token soon stops working.
pub const DEFAULT_JOIN_TOKEN_TTL: &str = "24h";
/// How long an agent may be unheard before its cluster counts as silent: several
/// missed heartbeats, so a reconnect or an observer restart does not flap the state.
pub const DEFAULT_SILENT_AFTER: &str = "5m";
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

/// Arguments of `observer serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the SQLite database, the CA, the secrets key and the bootstrap admin token
    /// are kept.
    #[arg(long, value_name = "DIR", default_value = "observer-data")]
    pub data_dir: PathBuf,
    /// The database: `sqlite:///path/observer.db?mode=rwc` or `postgres://…`. Default:
    /// SQLite in the data directory.
    #[arg(long, env = "KAAS_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Address of the REST API, `/metrics`, `/healthz`, `/readyz`, `/openapi.json`.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
    /// Address of the agents' control service (gRPC over TLS).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_GRPC_LISTEN_ADDRESS)]
    pub grpc_listen_address: SocketAddr,
    /// Names (DNS or IP) agents use to reach the control service; they go into its
    /// server certificate. Repeatable.
    #[arg(long = "grpc-hostname", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub grpc_hostnames: Vec<String>,
    /// The control service's URL as agents reach it, written into install manifests.
    /// Default: https://<first --grpc-hostname>:<grpc port>.
    #[arg(long, value_name = "URL")]
    pub control_endpoint: Option<String>,
    /// Where the CA certificate and key are (created if absent). Replicas must share
    /// them. Default: the data directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// The key that encrypts secrets at rest (32 bytes, raw or base64). Default:
    /// `secrets.key` in the data directory, created if absent.
    #[arg(long, value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The same key as base64, instead of a file.
    #[arg(
        long,
        env = "KAAS_SECRETS_KEY",
        hide_env_values = true,
        value_name = "BASE64"
    )]
    pub secrets_key: Option<String>,
    /// A file holding the bootstrap admin bearer token. Default: `admin.token` in the
    /// data directory, created with a random token if absent.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The bootstrap admin token itself, instead of a file.
    #[arg(
        long,
        env = "KAAS_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// How long join tokens stay valid (Prometheus duration).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_JOIN_TOKEN_TTL)]
    pub join_token_ttl: String,
    /// How long an agent may be unheard before its cluster is silent.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_SILENT_AFTER)]
    pub silent_after: String,
    /// The agents' identity: certificate validity and the limits of `Join`.
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Onboard clusters from a KaaS inventory: a URL answering a JSON list of clusters
    /// (name, tenant, labels, apiEndpoint), polled; clusters that disappear from it are
    /// deleted, not silent.
    #[arg(long, value_name = "URL")]
    pub inventory_url: Option<url::Url>,
    /// Time between inventory polls.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub inventory_interval: String,
    /// Successful polls a cluster must be missing from before it is tombstoned.
    #[arg(long, value_name = "POLLS", default_value_t = crate::onboarding::inventory::DEFAULT_DELETE_AFTER_MISSING_POLLS)]
    pub inventory_delete_after_polls: std::num::NonZeroU32,
    /// Accept an empty inventory as "no clusters" (refused by default: an empty answer
    /// from a broken inventory must not delete every cluster).
    #[arg(long)]
    pub inventory_allow_empty: bool,
    /// A file holding the bearer token for the inventory.
    #[arg(long, value_name = "FILE")]
    pub inventory_token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for an https inventory.
    #[arg(long, value_name = "FILE")]
    pub inventory_ca_file: Option<PathBuf>,
    /// Onboard Cluster API clusters of the management cluster: bare `--cluster-api`
    /// uses the kubeconfig or in-cluster account; `--cluster-api=PATH` a kubeconfig.
    #[arg(long, value_name = "KUBECONFIG", num_args = 0..=1, require_equals = true, default_missing_value = "auto")]
    pub cluster_api: Option<crate::onboarding::capi::ManagementCluster>,
    /// How often each black-box probe target (cluster API endpoints, configured
    /// endpoints) is probed.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub probe_interval: String,
    /// How long one probe may take.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub probe_timeout: String,
    /// How many probes may run at once.
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_MAX_CONCURRENCY)]
    pub probe_max_concurrency: usize,
    /// This replica's id among the observer replicas sharing a database (they split the
    /// probe targets between them). Default: the pod name from `POD_NAME` when set
    /// (the deploy/ manifests set it), else the host name plus a random suffix.
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub replica_id: Option<String>,
    /// The central stack: Thanos receive, Grafana, Alertmanager.
    #[command(flatten)]
    pub integrations: crate::integrations::IntegrationFlags,
    /// The observer's own metrics and spans over OTLP.
    #[command(flatten)]
    pub otlp: kaas_self_telemetry::OtlpFlags,
}

/// Flags of the agents' identity (see `docs/operator-guide.md`, "Agent identity").
#[derive(Debug, Args)]
pub struct IdentityFlags {
    /// How long agent certificates are valid (Prometheus duration). Agents renew at two
    /// thirds of it over their stream.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_AGENT_CERTIFICATE_VALIDITY)]
    pub agent_certificate_validity: String,
    /// Average `Join` calls per second one source address (an IPv4 address or an IPv6
    /// /64) may make; 0 turns the limit off.
    #[arg(long, value_name = "PER_SECOND", default_value_t = crate::control::join::DEFAULT_JOIN_RATE_PER_SECOND)]
    pub join_rate_limit: f64,
    /// `Join` calls one source address may make at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = crate::control::join::DEFAULT_JOIN_BURST)]
    pub join_burst: u32,
}

impl IdentityFlags {
    /// The control settings these flags change.
    fn apply(&self, settings: &mut ControlSettings) -> Result<(), ServeError> {
        let validity = duration_flag(
            "agent-certificate-validity",
            &self.agent_certificate_validity,
        )?;
        if validity < MIN_AGENT_CERTIFICATE_VALIDITY {
            return Err(ServeError::Flag {
                flag: "agent-certificate-validity",
                reason: format!("at least {MIN_AGENT_CERTIFICATE_VALIDITY:?}"),
            });
        }
        if !self.join_rate_limit.is_finite() || self.join_rate_limit < 0.0 {
            return Err(ServeError::Flag {
                flag: "join-rate-limit",
                reason: "a number of joins per second, 0 or more".to_owned(),
            });
        }
        settings.agent_certificate_validity = validity;
        settings.join_limits.rate_per_second = self.join_rate_limit;
        settings.join_limits.burst = self.join_burst;
        Ok(())
    }
}

/// The shortest `--agent-certificate-validity`: an agent must be able to connect and
/// renew within it (tests use a few seconds; production days).
const MIN_AGENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(2);

/// Why the observer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    /// The OTLP exporter of the observer's own telemetry cannot be built.
    #[error("{0}")]
    SelfTelemetry(#[from] kaas_self_telemetry::BuildError),
    /// A server stopped with an error.
    #[error("{0}")]
    Server(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.to_owned(),
        source,
    }
}

fn duration_flag(flag: &'static str, text: &str) -> Result<Duration, ServeError> {
    kaas_pipeline::units::parse_duration(text).map_err(|reason| ServeError::Flag { flag, reason })
}

/// `--replica-id` checked, or the default: `<host name>-<random hex>`.
fn replica_id(args: &ServeArgs) -> Result<String, ServeError> {
    let Some(id) = &args.replica_id else {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| crate::probes::DEFAULT_REPLICA_ID.to_owned());
        let suffix: String = (0..REPLICA_ID_SUFFIX_BYTES)
            .map(|_| format!("{:02x}", fastrand::u8(..)))
            .collect();
        return Ok(format!("{host}-{suffix}"));
    };
    let reason = if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.len() > MAX_REPLICA_ID_LEN {
        Some(format!("at most {MAX_REPLICA_ID_LEN} characters"))
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(format!("{id:?} contains whitespace or control characters"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ServeError::Flag {
            flag: "replica-id",
            reason,
        }),
        None => Ok(id.clone()),
    }
}

fn secret_box(args: &ServeArgs) -> Result<SecretBox, ServeError> {
    Ok(match (&args.secrets_key, &args.secrets_key_file) {
        (Some(key), _) => SecretBox::from_env_base64(key)?,
        (None, Some(file)) => SecretBox::from_key_file(file)?,
        (None, None) => SecretBox::load_or_create(&args.data_dir.join("secrets.key"))?,
    })
}

/// The bootstrap admin token: given, read from a file, or created in the data
/// directory (mode 0600) so a fresh install can be used at once. Never logged.
fn admin_token(args: &ServeArgs) -> Result<String, ServeError> {
    if let Some(token) = &args.admin_token {
        return Ok(token.trim().to_owned());
    }
    let path = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(ADMIN_TOKEN_FILE));
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) | Err(_) if args.admin_token_file.is_some() => Err(ServeError::Flag {
            flag: "admin-token-file",
            reason: format!("{} is missing or empty", path.display()),
        }),
        _ => {
            let token = random_token()?;
            write_private(&path, &token)?;
            tracing::info!(file = %path.display(), "created the bootstrap admin token");
            Ok(token)
        }
    }
}

fn random_token() -> Result<String, ServeError> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ServeError::Server("no random numbers from the system".into()))?;
    Ok(format!(
        "kot_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServeError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).map_err(io_error(path))
}

/// Starts polling the KaaS inventory at `url`.
fn start_inventory(
    args: &ServeArgs,
    url: &url::Url,
    store: &Store,
    silent_after: Duration,
    metrics: &Arc<OnboardingMetrics>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let mut settings = InventorySettings::new(url.clone());
    settings.interval = duration_flag("inventory-interval", &args.inventory_interval)?;
    settings.delete_after_missing_polls = args.inventory_delete_after_polls;
    settings.allow_empty = args.inventory_allow_empty;
    settings.silent_after = silent_after;
    if let Some(path) = &args.inventory_token_file {
        let token = std::fs::read_to_string(path).map_err(io_error(path))?;
        settings.bearer_token = Some(kaas_pipeline::secret::SecretString::new(token.trim()));
    }
    if let Some(path) = &args.inventory_ca_file {
        settings.ca_pem = Some(std::fs::read_to_string(path).map_err(io_error(path))?);
    }
    let source = InventorySource::new(store.clone(), settings, metrics.clone()).map_err(|e| {
        ServeError::Flag {
            flag: "inventory-url",
            reason: e.to_string(),
        }
    })?;
    Ok(source.start())
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
pub async fn run(args: ServeArgs, mut telemetry: SelfTelemetry) -> Result<(), ServeError> {
    std::fs::create_dir_all(&args.data_dir).map_err(io_error(&args.data_dir))?;
    let join_token_ttl = duration_flag("join-token-ttl", &args.join_token_ttl)?;
    let replica_id = replica_id(&args)?;
    let silent_after = duration_flag("silent-after", &args.silent_after)?;
    let mut control_settings = ControlSettings::default();
    args.identity.apply(&mut control_settings)?;
    let secrets = secret_box(&args)?;
    let store = match &args.database_url {
        Some(url) => Store::connect(url, secrets).await?,
        None => Store::open_sqlite(&args.data_dir.join("observer.db"), secrets).await?,
    };
    store.ensure_admin_token(&admin_token(&args)?).await?;
    let ca_dir = args.ca_dir.clone().unwrap_or_else(|| args.data_dir.clone());
    let ca = Arc::new(ClusterCa::load_or_create(&ca_dir)?);

    let lifecycle = ClusterLifecycle::start(
        store.clone(),
        LifecycleSettings {
            silent_after,
            ..LifecycleSettings::default()
        },
    );
    let prober = Prober::start(ProberSettings {
        interval: duration_flag("probe-interval", &args.probe_interval)?,
        timeout: duration_flag("probe-timeout", &args.probe_timeout)?,
        max_concurrency: args.probe_max_concurrency,
        replica_id: replica_id.clone(),
    });
    // Membership first: the prober learns the other replicas before it gets targets.
    let membership = ReplicaMembership::start(
        store.clone(),
        prober.clone(),
        MembershipSettings::new(replica_id.clone()),
    )
    .await;
    let integrations = Integrations::start(
        &args.integrations,
        &store,
        &lifecycle,
        vec![probe_source(prober.clone())],
    )?;
    control_settings.central_pipeline = integrations.central_pipeline().cloned().map(Arc::new);
    let control = ControlService::new(store.clone(), ca.clone(), control_settings);
    let mut registry = Registry::default();
    let api_metrics = ApiMetrics::default();
    api_metrics.register(&mut registry);
    crate::api::metrics::register_build_info(&mut registry);
    control.metrics().register(&mut registry);
    lifecycle.register(&mut registry);
    integrations.register(&mut registry);
    prober.register(&mut registry);
    let probe_feed = follow_store(store.clone(), prober.clone(), FollowSettings::default());
    let onboarding = Arc::new(OnboardingMetrics::default());
    onboarding.register(&mut registry);
    telemetry.register(&mut registry);
    let registry = Arc::new(registry);
    telemetry.start(registry.clone())?;
    let inventory = match &args.inventory_url {
        Some(url) => Some(start_inventory(
            &args,
            url,
            &store,
            silent_after,
            &onboarding,
        )?),
        None => None,
    };

    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_listen_address)
        .await
        .map_err(|source| ServeError::Listen {
            address: args.grpc_listen_address,
            source,
        })?;
    let grpc_port = grpc_listener
        .local_addr()
        .map_or(args.grpc_listen_address.port(), |a| a.port());
    let control_endpoint = args.control_endpoint.clone().unwrap_or_else(|| {
        let host = args
            .grpc_hostnames
            .first()
            .map_or("localhost", String::as_str);
        format!("https://{host}:{grpc_port}")
    });
    let cluster_api = match &args.cluster_api {
        Some(management) => {
            let client = management.client().await.map_err(|e| ServeError::Flag {
                flag: "cluster-api",
                reason: e.to_string(),
            })?;
            let mut settings =
                CapiSettings::new(control_endpoint.clone(), ca.bundle_pem(), join_token_ttl);
            settings.silent_after = silent_after;
            Some(ClusterApiSource::start(
                client,
                store.clone(),
                settings,
                onboarding.clone(),
            ))
        }
        None => None,
    };
    let tls = server_tls_config(&ca, &args.grpc_hostnames)?;
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc = tokio::spawn(serve_with_shutdown(
        grpc_listener,
        control.clone(),
        tls,
        async move {
            let _ = grpc_stopped.await;
        },
    ));

    let api = app(ApiState {
        store: store.clone(),
        join_token_ttl,
        control_endpoint: control_endpoint.clone(),
        ca_pem: ca.bundle_pem(),
    });
    let router: Router = api_metrics.layer(api).route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { metrics(&registry) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(args.listen_address)
        .await
        .map_err(|source| ServeError::Listen {
            address: args.listen_address,
            source,
        })?;
    tracing::info!(
        api = %args.listen_address,
        control = %args.grpc_listen_address,
        %control_endpoint,
        replica = %replica_id,
        database = if args.database_url.is_some() { "external" } else { "sqlite" },
        "observer serving"
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    tracing::info!("shutting down");
    let _ = stop_grpc.send(());
    lifecycle.stop();
    integrations.stop();
    probe_feed.abort();
    prober.stop();
    // The other replicas take over this one's probe targets at their next heartbeat.
    membership.leave().await;
    if let Some(inventory) = inventory {
        inventory.abort();
    }
    if let Some(cluster_api) = &cluster_api {
        cluster_api.stop();
    }
    if let Ok(Err(error)) = grpc.await {
        tracing::error!(%error, "the control service stopped with an error");
    }
    served.map_err(|e| ServeError::Server(e.to_string()))
}

fn metrics(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
