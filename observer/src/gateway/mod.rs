//! The receive gateway (`observer gateway`): the only way from the workload clusters
//! to Thanos receive. It is stateless (no disk; it only reads the observer's database,
//! [`standing`]), so it runs as a Deployment of any number of replicas behind one
//! Service.
//!
//! # Trust boundary
//!
//! A tenant is cluster-admin in its workload cluster: it can read everything the agent
//! holds there and expose any series a scrape will pick up. So nothing the workload
//! cluster sends may choose where a series is filed. The gateway decides:
//!
//! - **who is sending** from the agent's client certificate alone ([`peer`]): the TLS
//!   layer requires a certificate of the observer's CA ([`server::tls_config`]), the CA
//!   wrote the cluster's global id `<tenant>.<name>` into it, and the tenant is the
//!   part before the dot. A cluster id without a tenant (registered before names were
//!   per tenant) is refused with 403. With `--database-url`, a certificate the store
//!   says is revoked, or of a deleted cluster, is refused with 403 ([`standing`],
//!   cached per certificate for `--certificate-recheck-seconds`).
//! - **what the series say** ([`rewrite`]): `cluster` and `tenant` set from the
//!   certificate, sent labels of those names with another value renamed to
//!   `exported_cluster`/`exported_tenant` (Prometheus' `honor_labels: false`); the
//!   observer's own families (`kaas_*`, `probe_*`) dropped unless they are the agent's
//!   own families on the agent's own path ([`server::AGENT_PATH`]), which only the
//!   agent's self-scrape pipeline uses (the observer renders it;
//!   [`crate::rendering::central`]).
//! - **where they go**: Thanos receive, with the tenant in the tenant header the
//!   gateway sets ([`forward`]). Headers the agent sent are not passed on.
//! - **logs**: the central log pipeline's Loki pushes take the same identity and
//!   revocation checks on Loki's push path and go to the central Loki
//!   (`--loki-upstream-url`) with `X-Scope-OrgID` and the `cluster`/`tenant` stream
//!   labels set from the certificate ([`loki`]).
//! - **how much**: per-tenant active series and samples per second ([`limits`]),
//!   refusals counted in `kaas_gateway_requests_refused_total` and
//!   `kaas_gateway_series_dropped_total` and alerted on
//!   (`alerts/kaas-receive-gateway.rules.yaml`).
//!
//! What a cluster-admin tenant can still do: forge series of its own cluster (it owns
//! the agent's pod, so it could even send on the agent's path), never of another
//! cluster or tenant, and never the observer's fleet or probe series, which reach
//! Thanos only from the observer. Revocation: without `--database-url` the gateway
//! checks only the CA signature and expiry, and a revoked certificate stays usable
//! until it expires (90 days by default, `--agent-certificate-validity`), its series
//! filed under that cluster and tenant only. The CA bundle is read again every
//! `--client-ca-reload-seconds` ([`watch_client_ca`]).
//!
//! # Bounded
//!
//! A request body is limited while it is read ([`kaas_series::PushLimits`]'
//! `max_body_bytes`, 413 past it), before anything is decompressed; the decoder checks
//! the size snappy declares before it allocates for it, and every series and label
//! limit before it builds a label set. The per-tenant tables are bounded in tenants
//! and in series ([`limits`]).
//!
//! # Flags
//!
//! Every flag is checked ([`GatewaySettings::check`]) before a file is read or a port
//! bound; a wrong one ends the process with status 2 and every problem named.

pub mod forward;
pub mod limits;
pub mod loki;
pub mod peer;
pub mod rewrite;
pub mod server;
pub mod standing;
pub mod thanos;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kaas_series::PushLimits;
use prometheus_client::registry::Registry;

use self::forward::Upstream;
use self::limits::{IngestLimiter, LogRateLimiter, TenantLimits};
use self::server::GatewayState;
use crate::control::accept::HandshakeLimits;
use crate::identity::{CA_CERT_FILE, PREVIOUS_CA_CERT_FILE};
use crate::internal_events::GatewayMetrics;
use crate::internal_events::HandshakeMetrics;
use crate::listeners::{TlsListener, metrics_router};
pub use crate::rendering::central::DEFAULT_TENANT_HEADER;

/// The gateway as its own telemetry names it (`service.name`).
pub const SERVICE: kaas_self_telemetry::Service = kaas_self_telemetry::Service {
    name: "kaas-receive-gateway",
    version: env!("CARGO_PKG_VERSION"),
};
/// The `User-Agent` of the gateway's requests to Thanos.
pub const USER_AGENT: &str = concat!("kaas-receive-gateway/", env!("CARGO_PKG_VERSION"));
/// Where agents connect: Thanos receive's remote-write port, so that a provider can
/// put the gateway where receive used to be.
pub const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0:19291";
/// `/metrics` of the gateway, for the provider's monitoring only.
pub const DEFAULT_METRICS_LISTEN_ADDRESS: &str = "0.0.0.0:9465";
/// Active series per tenant and replica: a few thousand pods' worth of workload
/// metrics; a provider sets the share its Thanos can hold.
pub const DEFAULT_MAX_ACTIVE_SERIES_PER_TENANT: usize = 500_000;
/// Samples per second per tenant and replica: 500,000 series scraped every 30 s are
/// about 17,000 samples/s; twice that leaves room for catching up after an outage.
pub const DEFAULT_MAX_SAMPLES_PER_SECOND_PER_TENANT: u64 = 35_000;
/// Log bytes per second per tenant and replica on the Loki route: Loki's own default
/// per-tenant `ingestion_rate_mb` (4 MiB/s), so the gateway answers a tenant over it
/// with 429 and `Retry-After` before Loki refuses it, and one tenant's node agents
/// catching up after an outage cannot take the whole gateway. The central log pipeline
/// (the control plane, the kubelet and containerd at info level) sends far less than
/// that per cluster.
pub const DEFAULT_MAX_LOG_BYTES_PER_SECOND_PER_TENANT: u64 = 4 << 20;
/// Tenants one replica tracks at once.
pub const DEFAULT_MAX_TENANTS: usize = 10_000;
/// Series one replica tracks, all tenants together: bounds the limiter's memory (about
/// 50 bytes a series) at a few hundred MiB whatever the per-tenant limits say.
pub const DEFAULT_MAX_TRACKED_SERIES: usize = 5_000_000;
/// How often the CA bundle in `--client-ca-dir` is read again: a rotated CA (a mounted
/// Secret or ConfigMap updates within about a minute) is taken within this long, at
/// the cost of reading two small files.
pub const DEFAULT_CLIENT_CA_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Arguments of `observer gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Where agents send (HTTPS with client certificates).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
    /// Where `/metrics` is served (plain HTTP; the provider's monitoring only).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_LISTEN_ADDRESS)]
    pub metrics_listen_address: SocketAddr,
    /// The gateway's server certificate chain (PEM), for the name agents connect to.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: PathBuf,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: PathBuf,
    /// A directory with the observer's CA certificate `ca.crt` and, during a CA
    /// rotation, `ca-previous.crt` (the observer's CA directory layout): only agent
    /// certificates they signed are accepted. Mount the certificates only, never the
    /// keys. Read again every --client-ca-reload-seconds: `observer ca rotate` and
    /// `retire` need no restart.
    #[arg(long, value_name = "DIR")]
    pub client_ca_dir: PathBuf,
    /// How often the CA bundle is read again, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CLIENT_CA_RELOAD_INTERVAL.as_secs())]
    pub client_ca_reload_seconds: u64,
    /// The observer's database, read only (`postgres://…` with a role that may only
    /// read `agent_certificates`, or `sqlite:///path/observer.db?mode=ro`): a revoked
    /// agent certificate, a deleted cluster's and an earlier incarnation's are refused
    /// within --certificate-recheck-seconds. Unset: they are accepted until they expire.
    #[arg(long, env = "KAAS_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// How long the store's word on a certificate is trusted, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = standing::DEFAULT_CERTIFICATE_RECHECK_INTERVAL.as_secs())]
    pub certificate_recheck_seconds: u64,
    /// Thanos receive's remote-write URL, e.g.
    /// `https://thanos-receive:19291/api/v1/receive`.
    #[arg(long, value_name = "URL")]
    pub upstream_url: String,
    /// CA certificates (PEM) to verify Thanos receive with, instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// The gateway's client certificate (PEM) for Thanos receive, when it requires one.
    #[arg(long, value_name = "FILE", requires = "upstream_key_file")]
    pub upstream_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "upstream_cert_file")]
    pub upstream_key_file: Option<PathBuf>,
    /// The central Loki's push URL, e.g. `https://loki:3100/loki/api/v1/push`, where
    /// the central log pipelines' pushes go (with `X-Scope-OrgID` set from each agent's
    /// certificate, over the same TLS settings as --upstream-url). Unset: the Loki
    /// route answers 404.
    #[arg(long, value_name = "URL")]
    pub loki_upstream_url: Option<String>,
    /// The header Thanos receive reads the tenant from (its `--receive.tenant-header`).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TENANT_HEADER)]
    pub tenant_header: String,
    /// Active series per tenant on this replica.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ACTIVE_SERIES_PER_TENANT)]
    pub max_active_series_per_tenant: usize,
    /// Samples per second per tenant on this replica.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SAMPLES_PER_SECOND_PER_TENANT)]
    pub max_samples_per_second_per_tenant: u64,
    /// Log bytes (lines and structured metadata) per second per tenant on this
    /// replica's Loki route.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LOG_BYTES_PER_SECOND_PER_TENANT)]
    pub max_log_bytes_per_second_per_tenant: u64,
    /// Tenants this replica tracks at once (each limiter).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TENANTS)]
    pub max_tenants: usize,
    /// Series this replica tracks, all tenants together.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TRACKED_SERIES)]
    pub max_tracked_series: usize,
    /// Largest request body on the wire, in bytes (before decompression).
    #[arg(long, value_name = "BYTES", default_value_t = kaas_series::limits::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// The gateway's own logs and spans over OTLP.
    #[command(flatten)]
    pub otlp: kaas_self_telemetry::OtlpFlags,
}

/// Why the gateway cannot run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Flags are wrong: every one, one per line (`main` exits with status 2).
    #[error("{}", .0.join("\n"))]
    Flags(Vec<String>),
    /// A file a flag names cannot be read.
    #[error("--{flag}: {path}: {source}")]
    Read {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] kaas_tls::TlsError),
    /// The upstream client cannot be built.
    #[error("--upstream-url: {0}")]
    Upstream(#[from] forward::ForwardError),
    /// The store cannot be reached.
    #[error("--database-url: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A port cannot be bound or served.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The gateway's flags, checked.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// The upstream URL.
    pub upstream_url: url::Url,
    /// The central Loki's push URL.
    pub loki_upstream_url: Option<url::Url>,
    /// The tenant header.
    pub tenant_header: String,
    /// Per-tenant limits.
    pub limits: TenantLimits,
    /// `--max-log-bytes-per-second-per-tenant`.
    pub max_log_bytes_per_second: u64,
    /// `--max-tenants`.
    pub max_tenants: usize,
    /// `--max-tracked-series`.
    pub max_tracked_series: usize,
    /// Request decoding limits.
    pub push_limits: PushLimits,
}

impl GatewaySettings {
    /// Checks every flag of `args` without reading a file; lists every problem.
    pub fn check(args: &GatewayArgs) -> Result<Self, GatewayError> {
        let mut problems = Vec::new();
        let upstream_url = http_url("upstream-url", &args.upstream_url, &mut problems);
        let loki_upstream_url = args
            .loki_upstream_url
            .as_ref()
            .and_then(|url| http_url("loki-upstream-url", url, &mut problems));
        if axum::http::HeaderName::from_bytes(args.tenant_header.as_bytes()).is_err() {
            problems.push(format!(
                "--tenant-header: {:?} is not an HTTP header name",
                args.tenant_header
            ));
        }
        for (flag, value) in [
            (
                "max-active-series-per-tenant",
                args.max_active_series_per_tenant,
            ),
            ("max-tenants", args.max_tenants),
            ("max-tracked-series", args.max_tracked_series),
            ("max-body-bytes", args.max_body_bytes),
            (
                "client-ca-reload-seconds",
                usize::try_from(args.client_ca_reload_seconds).unwrap_or(usize::MAX),
            ),
            (
                "certificate-recheck-seconds",
                usize::try_from(args.certificate_recheck_seconds).unwrap_or(usize::MAX),
            ),
            (
                "max-samples-per-second-per-tenant",
                usize::try_from(args.max_samples_per_second_per_tenant).unwrap_or(usize::MAX),
            ),
            (
                "max-log-bytes-per-second-per-tenant",
                usize::try_from(args.max_log_bytes_per_second_per_tenant).unwrap_or(usize::MAX),
            ),
        ] {
            if value == 0 {
                problems.push(format!("--{flag}: must be at least 1"));
            }
        }
        let push_limits = PushLimits {
            max_body_bytes: args.max_body_bytes,
            ..PushLimits::default()
        };
        match upstream_url {
            Some(upstream_url) if problems.is_empty() => Ok(Self {
                upstream_url,
                loki_upstream_url,
                tenant_header: args.tenant_header.clone(),
                limits: TenantLimits {
                    max_active_series: args.max_active_series_per_tenant,
                    max_samples_per_second: args.max_samples_per_second_per_tenant,
                },
                max_log_bytes_per_second: args.max_log_bytes_per_second_per_tenant,
                max_tenants: args.max_tenants,
                max_tracked_series: args.max_tracked_series,
                push_limits,
            }),
            _ => Err(GatewayError::Flags(problems)),
        }
    }
}

/// `text` as an http(s) URL, or a problem of `--flag` noted.
fn http_url(flag: &str, text: &str, problems: &mut Vec<String>) -> Option<url::Url> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            problems.push(format!("--{flag}: {text:?} is not an http(s) URL"));
            None
        }
        Err(error) => {
            problems.push(format!("--{flag}: {error}"));
            None
        }
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, GatewayError> {
    std::fs::read(path).map_err(|source| GatewayError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The CA certificates of `dir`: `ca.crt`, and `ca-previous.crt` when it exists.
pub fn client_ca_bundle(dir: &Path) -> Result<Vec<u8>, GatewayError> {
    let mut bundle = read("client-ca-dir", &dir.join(CA_CERT_FILE))?;
    let previous = dir.join(PREVIOUS_CA_CERT_FILE);
    if previous.exists() {
        bundle.push(b'\n');
        bundle.extend(read("client-ca-dir", &previous)?);
    }
    Ok(bundle)
}

/// Reads the CA bundle of `dir` every `interval` and gives a changed one to `verifier`
/// (`loaded` is the bundle it has). A bundle that cannot be read or used is logged and
/// the current one kept.
pub async fn watch_client_ca(
    dir: PathBuf,
    mut loaded: Vec<u8>,
    verifier: Arc<server::ReloadingClientVerifier>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let bundle = match client_ca_bundle(&dir) {
            Ok(bundle) if bundle != loaded => bundle,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot read the client CA bundle; keeping the current one");
                continue;
            }
        };
        match verifier.reload(&bundle) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "took the changed client CA bundle");
                loaded = bundle;
            }
            Err(error) => {
                tracing::warn!(%error, "the changed client CA bundle is unusable; keeping the current one");
            }
        }
    }
}

/// The TLS settings of the upstreams (Thanos receive, the central Loki) from the files
/// the flags name.
fn upstream_tls(args: &GatewayArgs) -> Result<kaas_tls::ClientTls, GatewayError> {
    let trust = match &args.upstream_ca_file {
        Some(path) => kaas_tls::Trust::Roots(Arc::new(kaas_tls::roots(
            &read("upstream-ca-file", path)?,
            "--upstream-ca-file",
        )?)),
        None => kaas_tls::Trust::System,
    };
    let identity = match (&args.upstream_cert_file, &args.upstream_key_file) {
        (Some(cert), Some(key)) => Some((
            kaas_tls::certificates(&read("upstream-cert-file", cert)?, "--upstream-cert-file")?,
            kaas_tls::private_key(&read("upstream-key-file", key)?, "--upstream-key-file")?,
        )),
        _ => None,
    };
    Ok(kaas_tls::ClientTls {
        trust,
        identity,
        ..kaas_tls::ClientTls::default()
    })
}

/// The gateway's shared state from checked settings and the files the flags name.
pub async fn state(
    settings: &GatewaySettings,
    args: &GatewayArgs,
) -> Result<Arc<GatewayState>, GatewayError> {
    let loki = match &settings.loki_upstream_url {
        Some(url) => Some(Upstream::new(
            url.clone(),
            upstream_tls(args)?,
            kaas_pipeline::logs::output::LOKI_TENANT_HEADER,
        )?),
        None => None,
    };
    let upstream = Upstream::new(
        settings.upstream_url.clone(),
        upstream_tls(args)?,
        &settings.tenant_header,
    )?;
    let standings = match &args.database_url {
        Some(url) => Some(
            standing::CertificateStandings::connect(
                url,
                Duration::from_secs(args.certificate_recheck_seconds),
            )
            .await?,
        ),
        None => {
            tracing::warn!(
                "no --database-url: revoked agent certificates are accepted until they expire"
            );
            None
        }
    };
    Ok(Arc::new(GatewayState {
        standings,
        push_limits: settings.push_limits,
        limiter: IngestLimiter::new(
            settings.limits,
            settings.max_tenants,
            settings.max_tracked_series,
        ),
        log_limiter: LogRateLimiter::new(settings.max_log_bytes_per_second, settings.max_tenants),
        upstream,
        loki,
        metrics: GatewayMetrics::default(),
    }))
}

/// Runs `observer gateway` until the process is stopped.
pub async fn run(args: GatewayArgs) -> Result<(), GatewayError> {
    let settings = GatewaySettings::check(&args)?;
    let client_ca = client_ca_bundle(&args.client_ca_dir)?;
    let verifier = Arc::new(server::ReloadingClientVerifier::new(&client_ca)?);
    let tls = server::tls_config_with(
        &read("tls-cert-file", &args.tls_cert_file)?,
        &read("tls-key-file", &args.tls_key_file)?,
        verifier.clone(),
    )?;
    let state = state(&settings, &args).await?;
    let _reloading = tokio::spawn(watch_client_ca(
        args.client_ca_dir.clone(),
        client_ca,
        verifier,
        Duration::from_secs(args.client_ca_reload_seconds),
    ));
    let mut registry = Registry::default();
    state.metrics.register(&mut registry);
    let handshakes = HandshakeMetrics::default();
    handshakes.register_named(
        &mut registry,
        "kaas_gateway",
        "the agents' remote-write port",
    );
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen_address).await?;
    let listener = tokio::net::TcpListener::bind(args.listen_address).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        upstream = %settings.upstream_url,
        "receive gateway serving"
    );
    let metrics_app = metrics_router(Arc::new(registry), None)
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let tls_listener = TlsListener::new(listener, tls, HandshakeLimits::default(), handshakes)?;
    tokio::select! {
        served = server::serve(tls_listener, server::app(state)) => served?,
        served = axum::serve(metrics_listener, metrics_app) => served?,
    }
    Ok(())
}
