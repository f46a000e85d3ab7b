//! `observer serve`'s flags checked, all of them, before anything starts: the data
//! directory is not created, no database is opened, no CA is loaded and no task runs
//! until [`ServeSettings::check`] has found no wrong flag, and when it finds any it
//! names every one ([`ServeError::Flags`]), not only the first. Besides parsing values
//! it reads the files flags name (the API's certificate and key, the `/metrics` and
//! inventory tokens, CA files, the Cluster API kubeconfig); it writes nothing.

use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::ProviderPolicy;

use super::args::{IdentityFlags, ServeArgs};
use super::http::HttpSettings;
use super::{MAX_REPLICA_ID_LEN, REPLICA_ID_SUFFIX_BYTES, ServeError, io_error};
use crate::control::accept::HandshakeLimits;
use crate::control::service::ControlSettings;
use crate::egress::Cidr;
use crate::integrations::IntegrationSettings;
use crate::lifecycle::guard::MassDeletionGuard;
use crate::onboarding::inventory::InventorySettings;
use crate::probes::HttpMethod;

/// The shortest `--agent-certificate-validity`: an agent must be able to connect and
/// renew within it (tests use a few seconds; production days).
const MIN_AGENT_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(2);

/// Everything `observer serve` runs with that its flags decide, checked.
pub(super) struct ServeSettings {
    /// `--join-token-ttl`.
    pub(super) join_token_ttl: Duration,
    /// `--replica-id`, or the default.
    pub(super) replica_id: String,
    /// `--silent-after`.
    pub(super) silent_after: Duration,
    /// `--instance-health-ttl`.
    pub(super) instance_health_ttl: Duration,
    /// The control port's TLS handshake limits.
    pub(super) handshake_limits: HandshakeLimits,
    /// What tenant pipelines may do.
    pub(super) tenant_policy: Arc<ProviderPolicy>,
    /// The control service's settings (the central pipeline is added once the
    /// integrations run).
    pub(super) control: ControlSettings,
    /// `--probe-interval`.
    pub(super) probe_interval: Duration,
    /// `--probe-timeout`.
    pub(super) probe_timeout: Duration,
    /// The inventory source's settings with `--inventory-url` (its egress policy and
    /// silence threshold are set when it starts).
    pub(super) inventory: Option<InventorySettings>,
    /// The central stack's settings.
    pub(super) integrations: IntegrationSettings,
    /// How the API and `/metrics` are served.
    pub(super) http: HttpSettings,
    /// Where the API, `/metrics` and the control service listen.
    pub(super) addresses: Addresses,
    /// How many probes run at once.
    pub(super) probe_capacity: ProbeCapacity,
    /// `--cluster-buffer-budget`, bytes.
    pub(super) cluster_buffer_budget: u64,
    /// `--node-buffer-budget`, bytes.
    pub(super) node_buffer_budget: u64,
    /// What the egress policy lets tenants reach besides the public internet.
    pub(super) egress_allowed: EgressAllowed,
    /// `--mass-deletion-percent`, for both onboarding sources.
    pub(super) mass_deletion_guard: MassDeletionGuard,
}

/// `--listen-address`, `--metrics-listen-address`, `--grpc-listen-address`.
pub(super) struct Addresses {
    /// The REST API.
    pub(super) api: SocketAddr,
    /// `/metrics`.
    pub(super) metrics: SocketAddr,
    /// The agents' control service.
    pub(super) grpc: SocketAddr,
}

/// `--probe-max-concurrency`, `--probe-max-concurrency-per-tenant`,
/// `--probe-provider-slots`.
pub(super) struct ProbeCapacity {
    /// Tenant probes at once.
    pub(super) max_concurrency: usize,
    /// Of those, one tenant's.
    pub(super) max_concurrency_per_tenant: usize,
    /// Slots kept for the probes of clusters' API servers.
    pub(super) provider_slots: usize,
}

/// `--egress-allow-cidr`, `--probe-allow-method`.
pub(super) struct EgressAllowed {
    /// Special-purpose ranges tenants may reach.
    pub(super) cidrs: Vec<Cidr>,
    /// Methods besides GET and HEAD tenants' probes may send.
    pub(super) methods: Vec<HttpMethod>,
}

/// Wrong flags found so far.
#[derive(Default)]
struct Problems(Vec<ServeError>);

impl Problems {
    /// The value, or `None` with its error kept.
    fn take<T>(&mut self, result: Result<T, ServeError>) -> Option<T> {
        result.map_err(|error| self.0.push(error)).ok()
    }
}

impl ServeSettings {
    /// Every flag of `args` checked; [`ServeError::Flags`] lists every wrong one.
    pub(super) fn check(args: &ServeArgs) -> Result<Self, ServeError> {
        let mut problems = Problems::default();
        let join_token_ttl = problems.take(duration_flag("join-token-ttl", &args.join_token_ttl));
        let replica_id = problems.take(replica_id(args));
        let silent_after = problems.take(duration_flag("silent-after", &args.silent_after));
        let instance_health_ttl = problems.take(duration_flag(
            "instance-health-ttl",
            &args.instance_health_ttl,
        ));
        let handshake_limits = problems.take(control_handshake_limits(args));
        let tenant_policy = problems.take(tenant_policy(args));
        let control = problems.take(control_settings(&args.identity));
        let probe_interval = problems.take(duration_flag("probe-interval", &args.probe_interval));
        let probe_timeout = problems.take(duration_flag("probe-timeout", &args.probe_timeout));
        let guard = problems.take(mass_deletion_guard(args));
        let inventory = problems.take(inventory_settings(args, guard.unwrap_or_default()));
        problems.take(cluster_api(args));
        let integrations = match args.integrations.check() {
            Ok(settings) => Some(settings),
            Err(errors) => {
                problems.0.extend(errors.into_iter().map(ServeError::from));
                None
            }
        };
        let http = problems.take(HttpSettings::from_args(args));
        let addresses = problems.take(addresses(args));
        let probe_capacity = problems.take(probe_capacity(args));
        let cluster_buffer_budget = problems.take(
            crate::api::budgets::parse_budget(&args.cluster_buffer_budget).map_err(|reason| {
                ServeError::Flag {
                    flag: "cluster-buffer-budget",
                    reason,
                }
            }),
        );
        let node_buffer_budget = problems.take(
            crate::api::budgets::parse_budget(&args.node_buffer_budget).map_err(|reason| {
                ServeError::Flag {
                    flag: "node-buffer-budget",
                    reason,
                }
            }),
        );
        let egress_allowed = problems.take(egress_allowed(args));
        let (
            Some(join_token_ttl),
            Some(replica_id),
            Some(silent_after),
            Some(instance_health_ttl),
            Some(handshake_limits),
            Some(tenant_policy),
            Some(control),
            Some(probe_interval),
            Some(probe_timeout),
            Some(inventory),
            Some(integrations),
            Some(http),
            Some(addresses),
            Some(probe_capacity),
            Some(cluster_buffer_budget),
            Some(node_buffer_budget),
            Some(egress_allowed),
            Some(mass_deletion_guard),
        ) = (
            join_token_ttl,
            replica_id,
            silent_after,
            instance_health_ttl,
            handshake_limits,
            tenant_policy,
            control,
            probe_interval,
            probe_timeout,
            inventory,
            integrations,
            http,
            addresses,
            probe_capacity,
            cluster_buffer_budget,
            node_buffer_budget,
            egress_allowed,
            guard,
        )
        else {
            return Err(ServeError::Flags(problems.0));
        };
        Ok(Self {
            join_token_ttl,
            replica_id,
            silent_after,
            instance_health_ttl,
            handshake_limits,
            tenant_policy: Arc::new(tenant_policy),
            control,
            probe_interval,
            probe_timeout,
            inventory,
            integrations,
            http,
            addresses,
            probe_capacity,
            cluster_buffer_budget,
            node_buffer_budget,
            egress_allowed,
            mass_deletion_guard,
        })
    }
}

impl ServeSettings {
    /// The namespaces whose Secrets agents may read (`--agent-secret-namespaces`), as
    /// the install manifests grant them.
    pub(super) fn agent_secret_namespaces(&self) -> Vec<String> {
        self.tenant_policy.secret_namespaces.granted()
    }
}

/// A flag's `text` parsed as `T`, the error naming the flag and the text.
fn parsed<T>(flag: &'static str, text: &str) -> Result<T, ServeError>
where
    T: FromStr,
    T::Err: Display,
{
    text.trim().parse().map_err(|error| ServeError::Flag {
        flag,
        reason: format!("{text:?}: {error}"),
    })
}

/// Each of a repeatable flag's values parsed; every wrong one named.
fn each_parsed<T>(flag: &'static str, values: &[String]) -> Result<Vec<T>, ServeError>
where
    T: FromStr,
    T::Err: Display,
{
    let (good, bad): (Vec<_>, Vec<_>) = values
        .iter()
        .map(|value| parsed(flag, value))
        .partition(Result::is_ok);
    if bad.is_empty() {
        Ok(good.into_iter().flatten().collect())
    } else {
        Err(ServeError::Flags(
            bad.into_iter().filter_map(Result::err).collect(),
        ))
    }
}

fn addresses(args: &ServeArgs) -> Result<Addresses, ServeError> {
    let mut problems = Problems::default();
    let api = problems.take(parsed("listen-address", &args.listen_address));
    let metrics = problems.take(parsed(
        "metrics-listen-address",
        &args.metrics_listen_address,
    ));
    let grpc = problems.take(parsed("grpc-listen-address", &args.grpc_listen_address));
    match (api, metrics, grpc) {
        (Some(api), Some(metrics), Some(grpc)) => Ok(Addresses { api, metrics, grpc }),
        _ => Err(ServeError::Flags(problems.0)),
    }
}

fn probe_capacity(args: &ServeArgs) -> Result<ProbeCapacity, ServeError> {
    let mut problems = Problems::default();
    let max_concurrency =
        problems.take(parsed("probe-max-concurrency", &args.probe_max_concurrency));
    let max_concurrency_per_tenant = problems.take(parsed(
        "probe-max-concurrency-per-tenant",
        &args.probe_max_concurrency_per_tenant,
    ));
    let provider_slots = problems.take(parsed("probe-provider-slots", &args.probe_provider_slots));
    match (max_concurrency, max_concurrency_per_tenant, provider_slots) {
        (Some(max_concurrency), Some(max_concurrency_per_tenant), Some(provider_slots)) => {
            Ok(ProbeCapacity {
                max_concurrency,
                max_concurrency_per_tenant,
                provider_slots,
            })
        }
        _ => Err(ServeError::Flags(problems.0)),
    }
}

fn egress_allowed(args: &ServeArgs) -> Result<EgressAllowed, ServeError> {
    let mut problems = Problems::default();
    let cidrs = problems.take(each_parsed("egress-allow-cidr", &args.egress_allow_cidrs));
    let methods = problems.take(each_parsed("probe-allow-method", &args.probe_allow_methods));
    match (cidrs, methods) {
        (Some(cidrs), Some(methods)) => Ok(EgressAllowed { cidrs, methods }),
        _ => Err(ServeError::Flags(problems.0)),
    }
}

fn duration_flag(flag: &'static str, text: &str) -> Result<Duration, ServeError> {
    kaas_pipeline::units::parse_duration(text).map_err(|reason| ServeError::Flag { flag, reason })
}

/// The control settings of the identity flags.
fn control_settings(flags: &IdentityFlags) -> Result<ControlSettings, ServeError> {
    let validity = duration_flag(
        "agent-certificate-validity",
        &flags.agent_certificate_validity,
    )?;
    if validity < MIN_AGENT_CERTIFICATE_VALIDITY {
        return Err(ServeError::Flag {
            flag: "agent-certificate-validity",
            reason: format!("at least {MIN_AGENT_CERTIFICATE_VALIDITY:?}"),
        });
    }
    let join_rate_limit: f64 = parsed("join-rate-limit", &flags.join_rate_limit)?;
    if !join_rate_limit.is_finite() || join_rate_limit < 0.0 {
        return Err(ServeError::Flag {
            flag: "join-rate-limit",
            reason: "a number of joins per second, 0 or more".to_owned(),
        });
    }
    let join_burst = parsed("join-burst", &flags.join_burst)?;
    let mut settings = ControlSettings {
        agent_certificate_validity: validity,
        ..ControlSettings::default()
    };
    settings.join_limits.rate_per_second = join_rate_limit;
    settings.join_limits.burst = join_burst;
    Ok(settings)
}

/// The inventory source's settings from its flags; `None` without `--inventory-url`.
fn inventory_settings(
    args: &ServeArgs,
    guard: MassDeletionGuard,
) -> Result<Option<InventorySettings>, ServeError> {
    let Some(url) = &args.inventory_url else {
        return Ok(None);
    };
    let mut settings = InventorySettings::new(parsed("inventory-url", url)?);
    settings.interval = duration_flag("inventory-interval", &args.inventory_interval)?;
    settings.delete_after_missing_polls = parsed(
        "inventory-delete-after-polls",
        &args.inventory_delete_after_polls,
    )?;
    settings.delete_grace = duration_flag("inventory-delete-grace", &args.inventory_delete_grace)?;
    settings.allow_empty = args.inventory_allow_empty;
    settings.guard = guard;
    if let Some(path) = &args.inventory_token_file {
        let token = std::fs::read_to_string(path).map_err(io_error(path))?;
        settings.bearer_token = Some(kaas_pipeline::secret::SecretString::new(token.trim()));
    }
    if let Some(path) = &args.inventory_ca_file {
        settings.ca_pem = Some(std::fs::read_to_string(path).map_err(io_error(path))?);
    }
    settings.check().map_err(|error| ServeError::Flag {
        flag: "inventory-url",
        reason: error.to_string(),
    })?;
    Ok(Some(settings))
}

/// `--cluster-api`'s kubeconfig, read (nothing is contacted).
fn cluster_api(args: &ServeArgs) -> Result<(), ServeError> {
    match &args.cluster_api {
        Some(management) => management.check().map_err(|reason| ServeError::Flag {
            flag: "cluster-api",
            reason,
        }),
        None => Ok(()),
    }
}

/// `--mass-deletion-percent` as the guard both onboarding sources use.
fn mass_deletion_guard(args: &ServeArgs) -> Result<MassDeletionGuard, ServeError> {
    let percent = parsed("mass-deletion-percent", &args.mass_deletion_percent)?;
    MassDeletionGuard::new(percent).map_err(|reason| ServeError::Flag {
        flag: "mass-deletion-percent",
        reason,
    })
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
        &integrations.receive_gateway_url,
    ];
    // A URL that does not parse is refused with its flag when the integrations start.
    policy.central_endpoints = receivers
        .into_iter()
        .flatten()
        .filter_map(|url| url::Url::parse(url).ok())
        .collect();
    Ok(policy)
}

/// `--control-handshake-wait` and `--control-max-pending-per-address`, checked.
pub(super) fn control_handshake_limits(args: &ServeArgs) -> Result<HandshakeLimits, ServeError> {
    let pending_per_source = parsed(
        "control-max-pending-per-address",
        &args.control_max_pending_per_address,
    )?;
    if pending_per_source == 0 {
        return Err(ServeError::Flag {
            flag: "control-max-pending-per-address",
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(HandshakeLimits {
        wait: duration_flag("control-handshake-wait", &args.control_handshake_wait)?,
        pending_per_source,
        ..HandshakeLimits::default()
    })
}
