//! Black-box probes: the observer probes every live cluster's API endpoint and the
//! endpoints tenants configure through the API, and exports blackbox-exporter-compatible
//! series (`probe_success`, `probe_duration_seconds`, `probe_http_status_code`,
//! `probe_ssl_earliest_cert_expiry`, `probe_dns_lookup_time_seconds`) so existing
//! blackbox rules and dashboards work once they select on `cluster`.
//!
//! # Design
//! * **What**: a [`ProbeTarget`] names one endpoint and one module (see [`config`]).
//!   [`targets_from_clusters`] turns each provisioning, active or silent cluster with an
//!   API endpoint into two targets (`GET <endpoint>/livez` and a TLS handshake);
//!   [`desired_targets`] adds the tenants' stored endpoints; [`follow_store`] keeps the
//!   prober's list current from the store's change feed (debounced) and a periodic
//!   re-read. A target is identified by its series labels
//!   ([`SeriesKey`]); of two targets with one key only the first is probed.
//! * **Modules and what each measures**: `http` ([`http`]): one request on a fresh
//!   connection; success if the status is expected (any 2xx by default); status code,
//!   name lookup, TLS chain expiry for https. `tcp` ([`tcp`]): the connection is
//!   accepted. `tls` ([`tls`]): the handshake completes (verified unless told not to);
//!   earliest `notAfter` of the served chain. `dns` ([`dns`]): an A/AAAA query over UDP
//!   answered with NOERROR; the round trip. All: `probe_duration_seconds` from start to
//!   end, including name resolution (the system resolver; each address a name has is
//!   tried in turn); a probe that exceeds the timeout fails with what it measured so
//!   far.
//! * **Where to**: only where the observer's egress policy ([`crate::egress`]) lets it.
//!   Every name is resolved through [`EgressPolicy::resolve`], refused addresses are
//!   dropped, and the probe connects to exactly the addresses that passed; a target
//!   whose every address is refused fails with reason `refused` (counted in
//!   `kaas_observer_egress_refusals_total`). A tenant's HTTP probe sends GET or HEAD
//!   unless the provider allows more; a stored probe with another method fails the
//!   same way instead of being sent.
//! * **When**: each target is probed once per interval at a stable offset within it,
//!   `hash(key) mod interval` on the Unix clock ([`schedule`]), so probes are spread
//!   evenly over the interval, do not bunch up after a restart, and keep their phase
//!   when a target moves between replicas. A late probe (queued, slow) skips the slots it
//!   missed instead of catching up in a burst.
//! * **How many at once, and fairly**: a probe waits for a slot before it opens a
//!   socket, so a wave of hanging endpoints delays probes but cannot exhaust file
//!   descriptors or memory. Tenants' probes share [`ProberSettings::max_concurrency`]
//!   slots, at most [`ProberSettings::max_concurrency_per_tenant`] per tenant, handed
//!   out in turn between tenants when short ([`fairness`]): one tenant's thousand
//!   endpoints that never answer delay another tenant's probe by at most one interval.
//!   The provider's probes of clusters' API servers ([`ProbeOrigin::Provider`]) have
//!   [`ProberSettings::provider_slots`] of their own, shared fairly the same way, so no
//!   tenant probe can delay them at all.
//! * **Who**: with several replicas, each target is probed by exactly one, chosen by
//!   rendezvous hashing of the target over the live replicas ([`schedule::owner`]). A
//!   replica probes only what it owns and exports only those series, so the fleet's
//!   series are the union of the replicas' with no duplicates. The list of live replicas
//!   is given with [`Prober::set_replicas`]; a prober that was given none counts only
//!   itself and probes everything. `observer serve` feeds it from [`membership`]: each
//!   replica heartbeats a row (`replicas(id, seen_at_ms)`) every few seconds and passes
//!   the ids seen within the last three heartbeats; a replica that stops deletes its
//!   row, one that dies ages out, and the survivors take its targets. Replicas that
//!   briefly disagree about the list probe a moved target twice or skip it for one
//!   interval, both harmless. [`Prober::set_enabled`] switches a replica's probing off
//!   and on as a whole.
//! * **Export**: [`Prober::register`] adds the series to a registry (`/metrics`);
//!   [`Prober::series`] gives the same series as values for the remote writer
//!   (`integrations::remote_write`), which every replica runs for its own probe series
//!   without a lease: the replicas' sets are disjoint, so their writes never collide.
//! * **Concurrency model**: one Tokio task per owned target loops sleep → permit →
//!   probe → record. [`Prober::set_targets`] and [`Prober::set_replicas`] diff the
//!   owned set against the running tasks: unchanged targets keep running undisturbed,
//!   removed or moved ones are aborted and their series dropped, new ones start at their
//!   next slot.
//! * **Events**: each result is counted ([`ProberStats`]) and recorded for the metrics
//!   in one place ([`Prober`]'s probe loop); a target going down is logged at warn,
//!   coming back at info, each once per transition, not once per probe.

pub use crate::probe_target as config;
pub mod dns;
mod fairness;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod schedule;
pub mod targets;
pub mod tcp;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kaas_pipeline::ValidationErrors;
use prometheus_client::registry::Registry;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{
    DnsProbe, DnsQueryType, HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget,
    SeriesKey, TcpProbe, TlsProbe, TlsSettings, ValidatedProbeTarget,
};
pub use membership::{MembershipSettings, ReplicaMembership};
pub use metrics::{ProbeSample, ProbeSeries};
pub use targets::{
    FollowSettings, TargetFollower, desired_targets, follow_store, moves_targets,
    targets_from_clusters,
};

use crate::egress::{EgressContext, EgressError, EgressPolicy};
use fairness::{FairLimiter, FairPermit};
use metrics::{ProbeMetrics, ProbeResults};

/// How often each target is probed: as often as the agents scrape by default (30 s),
/// fine enough for a 5-minute `for:` in alerts, and 1,000 targets then cost about 33
/// probes a second.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long one probe may take before it fails: the scrape timeout's default, well
/// inside the interval, long enough for a slow TLS handshake across continents.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many tenant probes may run at once: at 30 s and 1,000 targets about 33 start a
/// second and a healthy one lasts milliseconds, so 100 leaves room for a third of the
/// fleet hanging until its timeout before probes start to queue, while bounding sockets.
pub const DEFAULT_MAX_CONCURRENCY: usize = 100;
/// How many of those one tenant's probes may hold: a quarter, so a tenant whose every
/// endpoint hangs leaves three quarters to the others, whose probes then start at once;
/// a healthy tenant's probes last milliseconds and never come near it.
pub const DEFAULT_MAX_CONCURRENCY_PER_TENANT: usize = 25;
/// Slots reserved for the provider's probes of clusters' API servers (two per
/// cluster): healthy ones last milliseconds, so 50 leave room for 75 clusters' API
/// servers hanging until their timeout at the defaults before these probes queue, and
/// tenant probes never take them.
pub const DEFAULT_PROVIDER_SLOTS: usize = 50;
/// The replica id used when none is configured (a single observer).
pub const DEFAULT_REPLICA_ID: &str = "observer";
/// The shortest gap between two probes of one target: half an interval, so a timer
/// that fires a little early cannot probe twice within one slot.
const MIN_GAP_DIVISOR: u32 = 2;

/// Tunables of the prober.
#[derive(Clone, Debug)]
pub struct ProberSettings {
    /// How often each target is probed.
    pub interval: Duration,
    /// How long one probe may take (capped at the interval).
    pub timeout: Duration,
    /// How many tenant probes may run at once (at least 1).
    pub max_concurrency: usize,
    /// How many of those one tenant may hold (at least 1).
    pub max_concurrency_per_tenant: usize,
    /// Slots of the provider's cluster API probes (at least 1), shared with the same
    /// per-tenant cap.
    pub provider_slots: usize,
    /// This replica's id among the live replicas ([`Prober::set_replicas`]).
    pub replica_id: String,
    /// Where probes may go and what tenants' probes may send.
    pub egress: EgressPolicy,
}

impl Default for ProberSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_concurrency_per_tenant: DEFAULT_MAX_CONCURRENCY_PER_TENANT,
            provider_slots: DEFAULT_PROVIDER_SLOTS,
            replica_id: DEFAULT_REPLICA_ID.to_owned(),
            egress: EgressPolicy::default(),
        }
    }
}

/// Why a probe failed. Messages name addresses and causes, never secrets (probes
/// carry none).
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The TCP connection was refused or failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where to.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (including an untrusted or mismatched certificate).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The request could not be built.
    #[error("cannot build the request: {0}")]
    Request(String),
    /// The HTTP exchange failed (connection closed early, malformed answer).
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The server answered with a status that was not expected.
    #[error("unexpected HTTP status {0}")]
    UnexpectedStatus(u16),
    /// The DNS query could not be sent or its answer read.
    #[error("DNS query failed: {0}")]
    Dns(String),
    /// The DNS server answered with an error code.
    #[error("DNS server answered with response code {0}")]
    DnsRcode(u8),
    /// The probe took longer than its timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The egress policy refuses the target's address or the probe's HTTP method.
    #[error("refused: {0}")]
    Refused(String),
}

impl ProbeFailure {
    /// A short fixed name of the failure kind, for logs and counting.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Resolve { .. } => "resolve",
            Self::Connect { .. } => "connect",
            Self::Tls(_) => "tls",
            Self::Request(_) => "request",
            Self::Http(_) => "http",
            Self::UnexpectedStatus(_) => "status",
            Self::Dns(_) => "dns",
            Self::DnsRcode(_) => "dns_rcode",
            Self::Timeout(_) => "timeout",
            Self::Refused(_) => "refused",
        }
    }
}

/// What one probe found.
#[derive(Debug)]
pub struct ProbeOutcome {
    /// How long it took, name resolution included.
    pub duration: Duration,
    /// The HTTP status (http module; 0 when no answer arrived).
    pub http_status_code: Option<u16>,
    /// The earliest `notAfter` of the served chain, Unix seconds (TLS handshakes).
    pub earliest_cert_expiry: Option<i64>,
    /// How long resolving the name took (the query's round trip for dns).
    pub dns_lookup: Option<Duration>,
    /// Why it failed; `None` for success.
    pub failure: Option<ProbeFailure>,
}

impl ProbeOutcome {
    fn new() -> Self {
        Self {
            duration: Duration::ZERO,
            http_status_code: None,
            earliest_cert_expiry: None,
            dns_lookup: None,
            failure: None,
        }
    }

    /// Whether the probe succeeded.
    pub fn success(&self) -> bool {
        self.failure.is_none()
    }
}

/// Why a target cannot be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeBuildError {
    /// The target is invalid.
    #[error("invalid probe target: {0}")]
    Invalid(#[from] ValidationErrors),
    /// A setting passed validation but cannot be used (e.g. a TLS setting rustls
    /// refuses).
    #[error("cannot prepare the probe: {0}")]
    Prepare(String),
}

/// A module with everything parsed and built once, reused by every probe.
#[derive(Debug)]
enum PreparedModule {
    Http(http::PreparedHttp),
    Tcp(tcp::PreparedTcp),
    Tls(tls::PreparedTls),
    Dns(dns::PreparedDns),
    /// A tenant's HTTP probe with a method the policy does not allow: fails every
    /// time with this reason, so the tenant sees why instead of a vanished series.
    Refused(String),
}

/// A target ready to probe.
#[derive(Debug)]
struct PreparedProbe {
    target: ProbeTarget,
    key: SeriesKey,
    tenant: Arc<str>,
    module: PreparedModule,
    egress: EgressPolicy,
}

impl PreparedProbe {
    fn build(target: ProbeTarget, egress: &EgressPolicy) -> Result<Self, ProbeBuildError> {
        let target = target.validate()?.into_target();
        let module = match &target.module {
            ProbeModule::Http(http)
                if target.origin == ProbeOrigin::Tenant
                    && !egress.allows_probe_method(http.method.as_str()) =>
            {
                Ok(PreparedModule::Refused(method_refusal(http.method)))
            }
            ProbeModule::Http(http) => http::PreparedHttp::new(http).map(PreparedModule::Http),
            ProbeModule::Tcp(tcp) => tcp::PreparedTcp::new(tcp).map(PreparedModule::Tcp),
            ProbeModule::Tls(tls) => tls::PreparedTls::new(tls).map(PreparedModule::Tls),
            ProbeModule::Dns(dns) => dns::PreparedDns::new(dns).map(PreparedModule::Dns),
        }
        .map_err(ProbeBuildError::Prepare)?;
        Ok(Self {
            key: target.series_key(),
            tenant: Arc::from(target.tenant.as_str()),
            target,
            module,
            egress: egress.clone(),
        })
    }

    #[tracing::instrument(name = "probe", level = "debug", skip_all, fields(otel.kind = "client", probe.module = self.key.module, probe.target = %self.key.target, cluster = %self.key.cluster))]
    async fn run(&self, timeout: Duration) -> ProbeOutcome {
        let started = Instant::now();
        let mut outcome = ProbeOutcome::new();
        let probe = async {
            let egress = &self.egress;
            match &self.module {
                PreparedModule::Http(http) => http.run(egress, &mut outcome).await,
                PreparedModule::Tcp(tcp) => tcp.run(egress, &mut outcome).await,
                PreparedModule::Tls(tls) => tls.run(egress, &mut outcome).await,
                PreparedModule::Dns(dns) => dns.run(egress, &mut outcome).await,
                PreparedModule::Refused(reason) => {
                    egress.count_method_refusal(EgressContext::Probe);
                    Err(ProbeFailure::Refused(reason.clone()))
                }
            }
        };
        let result = tokio::time::timeout(timeout, probe).await;
        outcome.failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(failure)) => Some(failure),
            Err(_) => Some(ProbeFailure::Timeout(timeout)),
        };
        outcome.duration = started.elapsed();
        if let Some(failure) = &outcome.failure {
            tracing::debug!(error = %failure, "probe failed");
        }
        outcome
    }
}

fn method_refusal(method: HttpMethod) -> String {
    format!(
        "a tenant's HTTP probe may send GET or HEAD; {} is not allowed by the provider",
        method.as_str()
    )
}

/// Probes `target` once, now, within `egress`: what the prober does every interval.
/// For tests and one-off checks.
pub async fn probe_once(
    target: ProbeTarget,
    egress: &EgressPolicy,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeBuildError> {
    Ok(PreparedProbe::build(target, egress)?.run(timeout).await)
}

/// Resolves `host` (a name or an IP literal) within `egress` and records how long it
/// took in `lookup`. Returns the addresses the policy allows, in the resolver's order:
/// connect to these and only these.
pub(crate) async fn resolve(
    egress: &EgressPolicy,
    host: &str,
    port: u16,
    lookup: &mut Option<Duration>,
) -> Result<Vec<SocketAddr>, ProbeFailure> {
    let started = Instant::now();
    let result = egress
        .resolve(EgressContext::Probe, host, port)
        .await
        .map_err(|error| match error {
            EgressError::Resolve { host, reason } => ProbeFailure::Resolve { host, reason },
            refused @ EgressError::Refused { .. } => ProbeFailure::Refused(refused.to_string()),
        });
    *lookup = Some(started.elapsed());
    result
}

/// Opens a TCP connection to the first of `addresses` that accepts (a name may resolve
/// to an IPv6 and an IPv4 address of which only one listens), Nagle off (a probe writes
/// one small request). Fails with the last address's error.
pub(crate) async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, ProbeFailure> {
    let mut failure = None;
    for &address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // Without it a request may wait for a delayed ACK; failing to set it
                // only costs time.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => failure = Some(ProbeFailure::Connect { address, source }),
        }
    }
    Err(failure.unwrap_or_else(|| ProbeFailure::Resolve {
        host: String::new(),
        reason: "no addresses".to_owned(),
    }))
}

/// Counts of probe results since the prober started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProberStats {
    /// Probes run.
    pub probes: u64,
    /// Of which succeeded.
    pub successes: u64,
    /// Targets this replica probes now.
    pub owned_targets: usize,
}

/// What the probe loops share.
#[derive(Debug)]
struct Shared {
    results: Arc<ProbeResults>,
    /// Slots of tenants' probes.
    tenant_slots: Arc<FairLimiter>,
    /// Slots reserved for the provider's probes.
    provider_slots: Arc<FairLimiter>,
    probes: AtomicU64,
    successes: AtomicU64,
}

impl Shared {
    /// Waits for a slot for `probe`, from the pool of its origin.
    async fn slot(&self, probe: &PreparedProbe) -> FairPermit {
        let pool = match probe.target.origin {
            ProbeOrigin::Tenant => &self.tenant_slots,
            ProbeOrigin::Provider => &self.provider_slots,
        };
        pool.acquire(&probe.tenant).await
    }

    /// The one place a result is counted, logged and exported.
    fn record(&self, probe: &PreparedProbe, outcome: &ProbeOutcome, was_up: &mut Option<bool>) {
        self.probes.fetch_add(1, Ordering::Relaxed);
        let up = outcome.success();
        if up {
            self.successes.fetch_add(1, Ordering::Relaxed);
        }
        let target = &probe.target;
        match (&outcome.failure, *was_up) {
            (Some(failure), None | Some(true)) => tracing::warn!(
                tenant = %target.tenant,
                cluster = target.cluster.as_deref().unwrap_or(""),
                probe = %target.name,
                target = %probe.key.target,
                module = probe.key.module,
                reason = failure.reason(),
                error = %failure,
                "probe failing"
            ),
            (None, Some(false)) => tracing::info!(
                tenant = %target.tenant,
                cluster = target.cluster.as_deref().unwrap_or(""),
                probe = %target.name,
                target = %probe.key.target,
                module = probe.key.module,
                "probe succeeds again"
            ),
            _ => {}
        }
        *was_up = Some(up);
        self.results.record(&probe.key, ProbeSample::from(outcome));
    }
}

/// The running prober. Cheap to clone; the probes stop when [`Prober::stop`] is called
/// or the last clone is dropped.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProberSettings,
    shared: Arc<Shared>,
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
}

struct State {
    targets: Vec<ProbeTarget>,
    replicas: Vec<String>,
    running: HashMap<SeriesKey, RunningProbe>,
    /// Whether this replica probes at all ([`Prober::set_enabled`]).
    enabled: bool,
    stopped: bool,
}

struct RunningProbe {
    target: ProbeTarget,
    task: JoinHandle<()>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, running) in state.running.drain() {
            running.task.abort();
        }
    }
}

impl Prober {
    /// A prober with no targets yet. Must be called inside a Tokio runtime; probes run
    /// on it.
    pub fn start(settings: ProberSettings) -> Self {
        let mut settings = settings;
        settings.interval = settings.interval.max(Duration::from_millis(1));
        settings.timeout = settings.timeout.min(settings.interval);
        settings.max_concurrency = settings.max_concurrency.max(1);
        settings.max_concurrency_per_tenant = settings.max_concurrency_per_tenant.max(1);
        settings.provider_slots = settings.provider_slots.max(1);
        let shared = Arc::new(Shared {
            results: Arc::new(ProbeResults::default()),
            tenant_slots: FairLimiter::new(
                settings.max_concurrency,
                settings.max_concurrency_per_tenant,
            ),
            provider_slots: FairLimiter::new(
                settings.provider_slots,
                settings.max_concurrency_per_tenant,
            ),
            probes: AtomicU64::new(0),
            successes: AtomicU64::new(0),
        });
        Self {
            inner: Arc::new(Inner {
                settings,
                shared,
                state: Mutex::new(State {
                    targets: Vec::new(),
                    replicas: Vec::new(),
                    running: HashMap::new(),
                    enabled: true,
                    stopped: false,
                }),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Registers the probe series ([`metrics`]) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ProbeMetrics {
            results: self.inner.shared.results.clone(),
        }));
    }

    /// Replaces the targets. Targets this replica owns start probing at their next slot;
    /// unchanged ones keep running; removed ones stop and their series go. Invalid
    /// targets are logged and skipped; of targets with equal series labels only the
    /// first is kept.
    pub fn set_targets(&self, targets: Vec<ProbeTarget>) {
        let mut state = self.lock();
        state.targets = targets;
        self.reconcile(&mut state);
    }

    /// Replaces the list of live replicas (ids, this one's included or not).
    pub fn set_replicas(&self, replicas: Vec<String>) {
        let mut state = self.lock();
        state.replicas = replicas;
        self.reconcile(&mut state);
    }

    /// Whether this replica probes its targets (the default) or none: e.g. only while
    /// it holds a lease. Disabling stops the probes and drops their series; enabling
    /// starts them again at their next slots.
    pub fn set_enabled(&self, enabled: bool) {
        let mut state = self.lock();
        state.enabled = enabled;
        self.reconcile(&mut state);
    }

    /// Stops every probe and drops every series; later calls of `set_targets` do
    /// nothing.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        for (_, running) in state.running.drain() {
            running.task.abort();
        }
        self.inner.shared.results.clear();
    }

    /// Counts so far.
    pub fn stats(&self) -> ProberStats {
        let shared = &self.inner.shared;
        ProberStats {
            probes: shared.probes.load(Ordering::Relaxed),
            successes: shared.successes.load(Ordering::Relaxed),
            owned_targets: self.lock().running.len(),
        }
    }

    /// The last result of every target this replica probes.
    pub fn results(&self) -> Vec<(SeriesKey, ProbeSample)> {
        self.inner.shared.results.snapshot().into_iter().collect()
    }

    /// Every series [`Prober::register`] exports, as values: for a remote writer.
    pub fn series(&self) -> Vec<ProbeSeries> {
        metrics::series(&self.inner.shared.results.snapshot())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the running probes match the owned targets.
    fn reconcile(&self, state: &mut State) {
        if state.stopped {
            return;
        }
        let settings = &self.inner.settings;
        let mut seen = HashSet::new();
        let mut owned: HashMap<SeriesKey, &ProbeTarget> = HashMap::new();
        for target in &state.targets {
            let key = target.series_key();
            if !seen.insert(key.clone()) {
                tracing::warn!(
                    tenant = %target.tenant,
                    probe = %target.name,
                    target = %key.target,
                    module = key.module,
                    "another probe has the same target and module; this one is skipped"
                );
                continue;
            }
            if state.enabled && schedule::is_assigned(&key, &settings.replica_id, &state.replicas) {
                owned.insert(key, target);
            }
        }
        let results = &self.inner.shared.results;
        state.running.retain(|key, running| {
            let keep = owned.get(key).is_some_and(|t| **t == running.target);
            if !keep {
                running.task.abort();
                results.remove(key);
            }
            keep
        });
        for (key, target) in owned {
            if state.running.contains_key(&key) {
                continue;
            }
            let probe = match PreparedProbe::build(target.clone(), &settings.egress) {
                Ok(probe) => Arc::new(probe),
                Err(error) => {
                    tracing::warn!(
                        tenant = %target.tenant,
                        probe = %target.name,
                        %error,
                        "probe target skipped"
                    );
                    continue;
                }
            };
            let task = self.inner.runtime.spawn(probe_loop(
                probe,
                self.inner.shared.clone(),
                settings.interval,
                settings.timeout,
            ));
            state.running.insert(
                key,
                RunningProbe {
                    target: target.clone(),
                    task,
                },
            );
        }
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Probes one target every interval at its offset, for as long as the task lives.
async fn probe_loop(
    probe: Arc<PreparedProbe>,
    shared: Arc<Shared>,
    interval: Duration,
    timeout: Duration,
) {
    let offset = schedule::offset_ms(&probe.key, interval);
    let min_gap = interval / MIN_GAP_DIVISOR;
    let mut last_start: Option<Instant> = None;
    let mut was_up = None;
    loop {
        let mut delay = schedule::delay_until_slot(unix_now_ms(), interval, offset);
        if let Some(last) = last_start
            && last.elapsed() + delay < min_gap
        {
            delay += interval;
        }
        tokio::time::sleep(delay).await;
        let permit = shared.slot(&probe).await;
        last_start = Some(Instant::now());
        let outcome = probe.run(timeout).await;
        drop(permit);
        shared.record(&probe, &outcome, &mut was_up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_target(name: &str, address: &str) -> ProbeTarget {
        ProbeTarget {
            name: name.into(),
            tenant: "shop".into(),
            cluster: None,
            origin: ProbeOrigin::Tenant,
            module: ProbeModule::Tcp(TcpProbe {
                address: address.into(),
            }),
        }
    }

    #[tokio::test]
    async fn targets_are_diffed_deduplicated_and_split_between_replicas() {
        let prober = Prober::start(ProberSettings {
            interval: Duration::from_secs(3600),
            replica_id: "a".into(),
            ..ProberSettings::default()
        });
        let targets: Vec<ProbeTarget> = (0..200)
            .map(|i| tcp_target(&format!("t{i}"), &format!("192.0.2.1:{}", 1000 + i)))
            .collect();
        let mut with_duplicate = targets.clone();
        with_duplicate.push(tcp_target("copy", "192.0.2.1:1000"));
        with_duplicate.push(tcp_target("Invalid!", "192.0.2.1:9"));
        prober.set_targets(with_duplicate);
        assert_eq!(prober.stats().owned_targets, 200);

        prober.set_replicas(vec!["a".into(), "b".into()]);
        let mine = prober.stats().owned_targets;
        assert!((60..140).contains(&mine), "{mine}");
        let expected = targets
            .iter()
            .filter(|t| schedule::is_assigned(&t.series_key(), "a", &["a".into(), "b".into()]))
            .count();
        assert_eq!(mine, expected);

        prober.set_enabled(false);
        assert_eq!(prober.stats().owned_targets, 0);
        prober.set_enabled(true);
        assert_eq!(prober.stats().owned_targets, mine);

        prober.set_targets(targets[..10].to_vec());
        assert!(prober.stats().owned_targets <= 10);
        prober.stop();
        assert_eq!(prober.stats().owned_targets, 0);
        prober.set_targets(targets);
        assert_eq!(prober.stats().owned_targets, 0, "stopped for good");
    }
}
