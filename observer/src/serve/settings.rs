//! `observer serve`'s flags checked, all of them, before anything starts: the data
//! directory is not created, no database is opened, no CA is loaded and no task runs
//! until [`ServeSettings::check`] has found no wrong flag, and when it finds any it
//! names every one ([`ServeError::Flags`]), not only the first. Besides parsing values
//! it reads the files flags name (the API's certificate and key, the `/metrics` and
//! inventory tokens, CA files, the Cluster API kubeconfig); it writes nothing.

use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::ProviderPolicy;

use super::args::{IdentityFlags, ServeArgs};
use super::http::HttpSettings;
use super::{MAX_REPLICA_ID_LEN, REPLICA_ID_SUFFIX_BYTES, ServeError, io_error};
use crate::control::accept::HandshakeLimits;
use crate::control::service::ControlSettings;
use crate::integrations::IntegrationSettings;
use crate::onboarding::inventory::InventorySettings;

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
        let handshake_limits = problems.take(control_handshake_limits(args));
        let tenant_policy = problems.take(tenant_policy(args));
        let control = problems.take(control_settings(&args.identity));
        let probe_interval = problems.take(duration_flag("probe-interval", &args.probe_interval));
        let probe_timeout = problems.take(duration_flag("probe-timeout", &args.probe_timeout));
        let inventory = problems.take(inventory_settings(args));
        problems.take(cluster_api(args));
        let integrations = match args.integrations.check() {
            Ok(settings) => Some(settings),
            Err(errors) => {
                problems.0.extend(errors.into_iter().map(ServeError::from));
                None
            }
        };
        let http = problems.take(HttpSettings::from_args(args));
        let (
            Some(join_token_ttl),
            Some(replica_id),
            Some(silent_after),
            Some(handshake_limits),
            Some(tenant_policy),
            Some(control),
            Some(probe_interval),
            Some(probe_timeout),
            Some(inventory),
            Some(integrations),
            Some(http),
        ) = (
            join_token_ttl,
            replica_id,
            silent_after,
            handshake_limits,
            tenant_policy,
            control,
            probe_interval,
            probe_timeout,
            inventory,
            integrations,
            http,
        )
        else {
            return Err(ServeError::Flags(problems.0));
        };
        Ok(Self {
            join_token_ttl,
            replica_id,
            silent_after,
            handshake_limits,
            tenant_policy: Arc::new(tenant_policy),
            control,
            probe_interval,
            probe_timeout,
            inventory,
            integrations,
            http,
        })
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
    if !flags.join_rate_limit.is_finite() || flags.join_rate_limit < 0.0 {
        return Err(ServeError::Flag {
            flag: "join-rate-limit",
            reason: "a number of joins per second, 0 or more".to_owned(),
        });
    }
    let mut settings = ControlSettings {
        agent_certificate_validity: validity,
        ..ControlSettings::default()
    };
    settings.join_limits.rate_per_second = flags.join_rate_limit;
    settings.join_limits.burst = flags.join_burst;
    Ok(settings)
}

/// The inventory source's settings from its flags; `None` without `--inventory-url`.
fn inventory_settings(args: &ServeArgs) -> Result<Option<InventorySettings>, ServeError> {
    let Some(url) = &args.inventory_url else {
        return Ok(None);
    };
    let mut settings = InventorySettings::new(url.clone());
    settings.interval = duration_flag("inventory-interval", &args.inventory_interval)?;
    settings.delete_after_missing_polls = args.inventory_delete_after_polls;
    settings.allow_empty = args.inventory_allow_empty;
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
