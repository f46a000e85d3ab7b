//! The command line of `observer serve` as clap parses it: every flag with its
//! default. Values are kept as text (clap would stop at the first value it cannot
//! parse); [`super::settings`] parses and checks them, all of them, before anything
//! starts, and names every wrong one.

use std::path::PathBuf;

use clap::Args;

use super::{
    DEFAULT_AGENT_CERTIFICATE_VALIDITY, DEFAULT_CONTROL_HANDSHAKE_WAIT,
    DEFAULT_GRPC_LISTEN_ADDRESS, DEFAULT_INSTANCE_HEALTH_TTL, DEFAULT_JOIN_TOKEN_TTL,
    DEFAULT_LISTEN_ADDRESS, DEFAULT_METRICS_LISTEN_ADDRESS, DEFAULT_SILENT_AFTER,
};

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
    pub listen_address: String,
    /// Address of `/metrics`. The observer's metrics name every tenant, cluster and
    /// pipeline: let only the provider's monitoring reach this address.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_LISTEN_ADDRESS)]
    pub metrics_listen_address: String,
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
    pub grpc_listen_address: String,
    /// How long a connection to the control service may wait for a TLS handshake slot
    /// before it is closed.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_CONTROL_HANDSHAKE_WAIT)]
    pub control_handshake_wait: String,
    /// Connections one source (an IPv4 address, an IPv6 /64) may have waiting for or
    /// in a TLS handshake on the control service at once; more are closed at once.
    /// Raise it when many agents share one NAT address.
    #[arg(long, value_name = "N", default_value_t = crate::control::accept::DEFAULT_MAX_PENDING_PER_SOURCE.to_string())]
    pub control_max_pending_per_address: String,
    /// Names (DNS or IP) agents use to reach the control service; they go into its
    /// server certificate. Repeatable.
    #[arg(long = "grpc-hostname", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub grpc_hostnames: Vec<String>,
    /// The control service's URL as agents reach it, written into install manifests.
    /// Default: https://<first --grpc-hostname>:<grpc port>.
    #[arg(long, value_name = "URL")]
    pub control_endpoint: Option<String>,
    /// A directory of provider `PipelineTemplate`s (`*.yaml`), which every tenant sees
    /// and may bind. Default: the templates bundled from `examples/templates/`.
    #[arg(long, value_name = "DIR")]
    pub provider_templates_dir: Option<PathBuf>,
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
    /// How long an agent instance's last health report counts: an instance (a node's)
    /// unheard longer is left out of its pipelines' health and its rows are pruned; the
    /// cluster's liveness does not depend on it.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_INSTANCE_HEALTH_TTL)]
    pub instance_health_ttl: String,
    /// The agents' identity: certificate validity and the limits of `Join`.
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Onboard clusters from a KaaS inventory: a URL answering a JSON list of clusters
    /// (name, tenant, labels, apiEndpoint), polled; clusters that disappear from it are
    /// deleted, not silent.
    #[arg(long, value_name = "URL")]
    pub inventory_url: Option<String>,
    /// Time between inventory polls.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub inventory_interval: String,
    /// Successful polls a cluster must be missing from before it is tombstoned.
    #[arg(long, value_name = "POLLS", default_value_t = crate::onboarding::inventory::DEFAULT_DELETE_AFTER_MISSING_POLLS.to_string())]
    pub inventory_delete_after_polls: String,
    /// Accept an empty inventory as "no clusters" (refused by default: an empty answer
    /// from a broken inventory must not delete every cluster).
    #[arg(long)]
    pub inventory_allow_empty: bool,
    /// How long a cluster must have been missing from the inventory (besides
    /// `--inventory-delete-after-polls` successful polls) before it is tombstoned.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub inventory_delete_grace: String,
    /// The share of an onboarding source's clusters, in percent, that one inventory
    /// poll or Cluster API relist may take out of the fleet (deleting, deleted or lost)
    /// before the mass-deletion guard holds the changes for `observer cluster
    /// confirm-deletions`.
    #[arg(long, value_name = "PERCENT", default_value_t = crate::lifecycle::guard::DEFAULT_MASS_DELETION_PERCENT.to_string())]
    pub mass_deletion_percent: String,
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
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_MAX_CONCURRENCY.to_string())]
    pub probe_max_concurrency: String,
    /// The default buffer budget of a cluster: bytes the buffers of all pipelines on its
    /// agent may use together (the central pipeline's share included), as a Kubernetes
    /// quantity. Applying a pipeline that would ask for more on a cluster it selects is
    /// refused. An admin sets other budgets per cluster
    /// (`PUT /api/v1/clusters/{name}/buffer-budget`); give each agent the same value
    /// with its `--buffer-budget`. The default suits the agent's default (4Gi volume).
    #[arg(long, value_name = "BYTES", default_value = "3Gi")]
    pub cluster_buffer_budget: String,
    /// The buffer budget of each node: bytes the buffers of the log pipelines that
    /// read node logs may use together on one node's disk, where the node agent keeps
    /// them (the central log pipeline's share included), as a Kubernetes quantity.
    /// Every node has it in full, apart from the cluster's budget. Applying a log
    /// pipeline that would ask for more on a cluster it selects is refused; give the
    /// node agents the same value with their `--buffer-budget`.
    #[arg(long, value_name = "BYTES", default_value = "2Gi")]
    pub node_buffer_budget: String,
    /// How many of those one tenant's probes may hold; when slots are short they go to
    /// the tenants in turn.
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_MAX_CONCURRENCY_PER_TENANT.to_string())]
    pub probe_max_concurrency_per_tenant: String,
    /// Probe slots reserved for the probes of clusters' API servers (no tenant probe
    /// takes them).
    #[arg(long, value_name = "N", default_value_t = crate::probes::DEFAULT_PROVIDER_SLOTS.to_string())]
    pub probe_provider_slots: String,
    /// An address range (CIDR, or one address) the observer may contact for tenants
    /// although it is loopback, private, link-local or otherwise special: tenants'
    /// probes, clusters' API endpoints and their probes, the workload API servers the
    /// Cluster API source installs agents through. Clusters' API endpoints are usually
    /// private, so list the cluster networks here. Repeatable.
    #[arg(long = "egress-allow-cidr", value_name = "CIDR")]
    pub egress_allow_cidrs: Vec<String>,
    /// An HTTP method tenants' probes may send besides GET and HEAD (POST, OPTIONS).
    /// Repeatable.
    #[arg(long = "probe-allow-method", value_name = "METHOD")]
    pub probe_allow_methods: Vec<String>,
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
    /// The observer's own metrics, spans and logs over OTLP.
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
    #[arg(long, value_name = "PER_SECOND", default_value_t = crate::control::join::DEFAULT_JOIN_RATE_PER_SECOND.to_string())]
    pub join_rate_limit: String,
    /// `Join` calls one source address may make at once before the rate applies.
    #[arg(long, value_name = "N", default_value_t = crate::control::join::DEFAULT_JOIN_BURST.to_string())]
    pub join_burst: String,
}
