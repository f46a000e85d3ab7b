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
use clap::Args;
use kaas_self_telemetry::SelfTelemetry;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::metrics::ApiMetrics;
use crate::api::{ApiState, app};
use crate::control::accept::{HandshakeLimits, HandshakeMetrics};
use crate::control::service::{ControlService, ControlSettings};
use crate::control::{serve_with_shutdown, server_tls_config};
use crate::egress::EgressPolicy;
use crate::identity::ClusterCa;
use crate::integrations::Integrations;
use crate::integrations::probe_source;
use crate::lifecycle::{ClusterLifecycle, LifecycleSettings};
use crate::listeners::{MetricsToken, TlsListener};
use crate::onboarding::OnboardingMetrics;
use crate::onboarding::capi::{CapiSettings, ClusterApiSource};
use crate::onboarding::inventory::{InventorySettings, InventorySource};
use crate::probes::{
    FollowSettings, MembershipSettings, Prober, ProberSettings, ReplicaMembership, follow_store,
};
use crate::secrets::SecretBox;
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
    /// Address of the REST API, `/healthz`, `/readyz`, `/openapi.json`.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
    /// Address of `/metrics`. The observer's metrics name every tenant, cluster and
    /// pipeline: let only the provider's monitoring reach this address.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_LISTEN_ADDRESS)]
    pub metrics_listen_address: SocketAddr,
    /// A file holding a bearer token that `/metrics` then requires
    /// (`Authorization: Bearer <token>`). Default: none.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// The REST API's TLS certificate chain (PEM). With --api-tls-key-file, the API
    /// speaks HTTPS only.
    #[arg(long, value_name = "FILE", requires = "api_tls_key_file")]
    pub api_tls_cert_file: Option<PathBuf>,
    /// The REST API's TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "api_tls_cert_file")]
    pub api_tls_key_file: Option<PathBuf>,
    /// Address of the agents' control service (gRPC over TLS).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_GRPC_LISTEN_ADDRESS)]
    pub grpc_listen_address: SocketAddr,
    /// How long a connection to the control service may wait for a TLS handshake slot
    /// before it is closed.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CONTROL_HANDSHAKE_WAIT)]
    pub control_handshake_wait: String,
    /// Connections one source (an IPv4 address, an IPv6 /64) may have waiting for or
    /// in a TLS handshake on the control service at once; more are closed at once.
    /// Raise it when many agents share one NAT address.
    #[arg(long, value_name = "N", default_value_t = crate::control::accept::DEFAULT_MAX_PENDING_PER_SOURCE)]
    pub control_max_pending_per_address: usize,
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
    /// A key secrets were sealed with before the current one, kept to open them while
    /// keys are switched (then `observer secrets rekey` seals everything with the
    /// current key, and this flag can go). Repeatable.
    #[arg(long = "previous-secrets-key-file", value_name = "FILE")]
    pub previous_secrets_key_files: Vec<PathBuf>,
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
    /// How many tenant probes may run at once.
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_MAX_CONCURRENCY)]
    pub probe_max_concurrency: usize,
    /// The default buffer budget of a cluster: bytes the buffers of all pipelines on its
    /// agent may use together (the central pipeline's share included), as a Kubernetes
    /// quantity. Applying a pipeline that would ask for more on a cluster it selects is
    /// refused. An admin sets other budgets per cluster
    /// (`PUT /api/v1/clusters/{name}/buffer-budget`); give each agent the same value
    /// with its `--buffer-budget`. The default suits the agent's default (4Gi volume).
    #[arg(long, value_name = "BYTES", default_value = "3Gi", value_parser = crate::api::budgets::parse_budget)]
    pub cluster_buffer_budget: u64,
    /// How many of those one tenant's probes may hold; when slots are short they go to
    /// the tenants in turn.
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_MAX_CONCURRENCY_PER_TENANT)]
    pub probe_max_concurrency_per_tenant: usize,
    /// Probe slots reserved for the probes of clusters' API servers (no tenant probe
    /// takes them).
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_PROVIDER_SLOTS)]
    pub probe_provider_slots: usize,
    /// An address range (CIDR, or one address) the observer may contact for tenants
    /// although it is loopback, private, link-local or otherwise special: tenants'
    /// probes, clusters' API endpoints and their probes, the workload API servers the
    /// Cluster API source installs agents through. Clusters' API endpoints are usually
    /// private, so list the cluster networks here. Repeatable.
    #[arg(long = "egress-allow-cidr", value_name = "CIDR")]
    pub egress_allow_cidrs: Vec<crate::egress::Cidr>,
    /// An HTTP method tenants' probes may send besides GET and HEAD (POST, OPTIONS).
    /// Repeatable.
    #[arg(long = "probe-allow-method", value_name = "METHOD")]
    pub probe_allow_methods: Vec<crate::probes::HttpMethod>,
    /// The namespaces of workload clusters whose Secrets pipelines may reference with
    /// `secretKeyRef` (comma-separated). The API refuses any other namespace (422 with
    /// the field path); the agent install manifests grant exactly these as Roles and
    /// pass them to the agent's `--secret-namespaces`, which checks again. The one
    /// allow-list every feature that reads Secrets uses.
    #[arg(
        long,
        value_name = "NAMESPACE,...",
        value_delimiter = ',',
        default_value = kaas_pipeline::policy::DEFAULT_AGENT_NAMESPACE
    )]
    pub agent_secret_namespaces: Vec<String>,
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

/// What tenant pipelines may do: Secrets only from `--agent-secret-namespaces`, the
/// tenancy headers (Thanos' default and `--thanos-tenant-header`) reserved, and the
/// provider's receivers (`--thanos-receive-url`, `--central-remote-write-url`) not a
/// destination.
fn tenant_policy(args: &ServeArgs) -> Result<kaas_pipeline::ProviderPolicy, ServeError> {
    let mut policy = kaas_pipeline::ProviderPolicy::tenant_default();
    for namespace in &args.agent_secret_namespaces {
        kaas_pipeline::names::check_dns1123_label(namespace).map_err(|reason| {
            ServeError::Flag {
                flag: "agent-secret-namespaces",
                reason,
            }
        })?;
    }
    policy.secret_namespaces =
        kaas_pipeline::SecretNamespaces::only(args.agent_secret_namespaces.iter().cloned());
    let integrations = &args.integrations;
    policy.reserve_header(&integrations.thanos_tenant_header);
    let receivers = [
        &integrations.thanos_receive_url,
        &integrations.central_remote_write_url,
    ];
    // A URL that does not parse is refused with its flag when the integrations start.
    policy.central_endpoints = receivers
        .into_iter()
        .flatten()
        .filter_map(|url| url::Url::parse(url).ok())
        .collect();
    Ok(policy)
}

fn secret_box(args: &ServeArgs) -> Result<SecretBox, ServeError> {
    let current = match (&args.secrets_key, &args.secrets_key_file) {
        (Some(key), _) => SecretBox::from_env_base64(key)?,
        (None, Some(file)) => SecretBox::from_key_file(file)?,
        (None, None) => SecretBox::load_or_create(&args.data_dir.join("secrets.key"))?,
    };
    let previous = args
        .previous_secrets_key_files
        .iter()
        .map(|file| SecretBox::from_key_file(file))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(current.with_previous_keys(previous))
}

/// What the operator does when the configured bootstrap admin token was revoked.
fn new_bootstrap_token_hint(args: &ServeArgs) -> String {
    if args.admin_token.is_some() {
        "Pass a new token with --admin-token or KAAS_ADMIN_TOKEN (e.g. from \
         `openssl rand -base64 32`), or use an admin token made with `observer token create`"
            .to_owned()
    } else if let Some(file) = &args.admin_token_file {
        format!(
            "Write a new token into {} (e.g. `openssl rand -base64 32`) and start again",
            file.display()
        )
    } else {
        format!(
            "Delete {} and start again: a new bootstrap token is created in its place",
            args.data_dir.join(ADMIN_TOKEN_FILE).display()
        )
    }
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

/// The egress policy of `--egress-allow-cidr` and `--probe-allow-method`; logged, since
/// every allowed range is a decision to let tenants reach it.
fn egress_policy(args: &ServeArgs) -> EgressPolicy {
    let policy = EgressPolicy::new(
        args.egress_allow_cidrs.clone(),
        args.probe_allow_methods
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

/// Starts polling the KaaS inventory at `url`.
fn start_inventory(
    args: &ServeArgs,
    url: &url::Url,
    store: &Store,
    silent_after: Duration,
    metrics: &Arc<OnboardingMetrics>,
    egress: &EgressPolicy,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let mut settings = InventorySettings::new(url.clone());
    settings.egress = egress.clone();
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
    let handshake_limits = control_handshake_limits(&args)?;
    let http = HttpSettings::from_args(&args)?;
    let tenant_policy = Arc::new(tenant_policy(&args)?);
    let mut control_settings = ControlSettings::default();
    args.identity.apply(&mut control_settings)?;
    let secrets = secret_box(&args)?;
    let store = match &args.database_url {
        Some(url) => Store::connect(url, secrets).await?,
        None => Store::open_sqlite(&args.data_dir.join("observer.db"), secrets).await?,
    };
    store
        .ensure_admin_token(&admin_token(&args)?)
        .await
        .map_err(|error| match error {
            crate::store::StoreError::BootstrapTokenRevoked { .. } => {
                ServeError::BootstrapTokenRevoked {
                    reason: error.to_string(),
                    hint: new_bootstrap_token_hint(&args),
                }
            }
            other => other.into(),
        })?;
    let ca_dir = args.ca_dir.clone().unwrap_or_else(|| args.data_dir.clone());
    let ca = Arc::new(ClusterCa::load_or_create(&ca_dir)?);

    let lifecycle = ClusterLifecycle::start(
        store.clone(),
        LifecycleSettings {
            silent_after,
            ..LifecycleSettings::default()
        },
    );
    let egress = egress_policy(&args);
    let prober = Prober::start(ProberSettings {
        interval: duration_flag("probe-interval", &args.probe_interval)?,
        timeout: duration_flag("probe-timeout", &args.probe_timeout)?,
        max_concurrency: args.probe_max_concurrency,
        max_concurrency_per_tenant: args.probe_max_concurrency_per_tenant,
        provider_slots: args.probe_provider_slots,
        replica_id: replica_id.clone(),
        egress: egress.clone(),
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
    egress.register(&mut registry);
    let probe_feed = follow_store(store.clone(), prober.clone(), FollowSettings::default());
    let onboarding = Arc::new(OnboardingMetrics::default());
    onboarding.register(&mut registry);
    telemetry.register(&mut registry);
    http.register(&mut registry);
    let registry = Arc::new(registry);
    telemetry.start(registry.clone())?;
    let inventory = match &args.inventory_url {
        Some(url) => Some(start_inventory(
            &args,
            url,
            &store,
            silent_after,
            &onboarding,
            &egress,
        )?),
        None => None,
    };

    let grpc_listener = bind(args.grpc_listen_address).await?;
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
            settings.egress = egress.clone();
            settings.secret_namespaces = tenant_policy
                .secret_namespaces
                .listed()
                .into_iter()
                .flatten()
                .cloned()
                .collect();
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
        handshake_limits,
        async move {
            let _ = grpc_stopped.await;
        },
    ));

    let api = app(ApiState {
        store: store.clone(),
        join_token_ttl,
        control_endpoint: control_endpoint.clone(),
        ca_pem: ca.bundle_pem(),
        buffer_budgets: crate::api::budgets::BufferBudgets {
            default_bytes: args.cluster_buffer_budget,
            central_bytes: integrations.central_pipeline().map_or(
                0,
                crate::rendering::CentralPipelineSettings::buffer_max_bytes,
            ),
        },
        egress: egress.clone(),
        tenant_policy: tenant_policy.clone(),
    });
    let router: Router = api_metrics.layer(api);
    let listener = bind(args.listen_address).await?;
    let metrics_listener = bind(args.metrics_listen_address).await?;
    tracing::info!(
        api = %args.listen_address,
        api_tls = http.api_tls.is_some(),
        metrics = %args.metrics_listen_address,
        control = %args.grpc_listen_address,
        %control_endpoint,
        replica = %replica_id,
        database = if args.database_url.is_some() { "external" } else { "sqlite" },
        "observer serving"
    );
    let metrics_router = crate::listeners::metrics_router(registry, http.metrics_token.clone());
    let served = http
        .serve(listener, router, metrics_listener, metrics_router)
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

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })
}

/// `--control-handshake-wait` and `--control-max-pending-per-address`, checked.
fn control_handshake_limits(args: &ServeArgs) -> Result<HandshakeLimits, ServeError> {
    if args.control_max_pending_per_address == 0 {
        return Err(ServeError::Flag {
            flag: "control-max-pending-per-address",
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(HandshakeLimits {
        wait: duration_flag("control-handshake-wait", &args.control_handshake_wait)?,
        pending_per_source: args.control_max_pending_per_address,
        ..HandshakeLimits::default()
    })
}

/// How the REST API and `/metrics` are served (see [`crate::listeners`]).
struct HttpSettings {
    /// The API's TLS settings, with the API port's handshake metrics.
    api_tls: Option<(Arc<rustls::ServerConfig>, HandshakeMetrics)>,
    metrics_token: Option<MetricsToken>,
}

impl HttpSettings {
    fn from_args(args: &ServeArgs) -> Result<Self, ServeError> {
        let api_tls = match (&args.api_tls_cert_file, &args.api_tls_key_file) {
            (Some(cert), Some(key)) => Some((
                crate::listeners::api_tls_config(cert, key)?,
                HandshakeMetrics::default(),
            )),
            _ => None,
        };
        let metrics_token = args
            .metrics_token_file
            .as_deref()
            .map(MetricsToken::from_file)
            .transpose()?;
        Ok(Self {
            api_tls,
            metrics_token,
        })
    }

    /// The API port's handshake metrics, when it speaks TLS.
    fn register(&self, registry: &mut Registry) {
        if let Some((_, handshakes)) = &self.api_tls {
            handshakes.register_named(registry, "kaas_observer_api", "the REST API port");
        }
    }

    /// Serves `api` on `listener` until SIGTERM or SIGINT, and `metrics` on
    /// `metrics_listener` meanwhile.
    async fn serve(
        self,
        listener: tokio::net::TcpListener,
        api: Router,
        metrics_listener: tokio::net::TcpListener,
        metrics: Router,
    ) -> std::io::Result<()> {
        let metrics_server = tokio::spawn(async move {
            if let Err(error) = axum::serve(metrics_listener, metrics).await {
                tracing::error!(%error, "the /metrics listener stopped");
            }
        });
        let served = match self.api_tls {
            Some((config, handshakes)) => {
                let listener =
                    TlsListener::new(listener, config, HandshakeLimits::default(), handshakes)?;
                axum::serve(listener, api)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
            None => {
                axum::serve(listener, api)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            }
        };
        metrics_server.abort();
        served
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

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
