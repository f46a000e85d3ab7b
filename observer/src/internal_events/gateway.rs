//! The receive gateway's events and the counters they own ([`GatewayAnswered`],
//! [`GatewayRefused`], [`GatewaySeriesDropped`], [`GatewayForwarded`],
//! [`GatewayLogsForwarded`]), served on its
//! metrics address (`docs/metrics.yaml`):
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_gateway_requests_total` | path, code |
//! | `kaas_gateway_requests_refused_total` | tenant, limit |
//! | `kaas_gateway_series_dropped_total` | tenant, reason |
//! | `kaas_gateway_samples_forwarded_total` | tenant |
//! | `kaas_gateway_log_entries_forwarded_total` | tenant |
//! | `kaas_gateway_tracked_tenants` | |
//! | `kaas_gateway_tracked_series` | |
//! | `kaas_gateway_tls_handshakes_total` | result |
//! | `kaas_gateway_tls_handshakes_waiting` | |
//!
//! `tenant` values come from certificates the observer's CA signed, so they are the
//! provider's tenants and nothing a sender makes up; `path`, `code`, `limit` and
//! `reason` are closed sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `kaas_gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `workload`, `agent` or `logs`.
    pub path: &'static str,
    /// The HTTP status answered.
    pub code: u16,
}

/// Labels of `kaas_gateway_requests_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The tenant.
    pub tenant: String,
    /// A [`LimitKind`](crate::gateway::limits::LimitKind) label value.
    pub limit: &'static str,
}

/// Labels of `kaas_gateway_series_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The tenant.
    pub tenant: String,
    /// `reserved_family`, `active_series` or `tracked_series`.
    pub reason: &'static str,
}

/// Labels of `kaas_gateway_samples_forwarded_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// The tenant.
    pub tenant: String,
}

/// The gateway's metrics; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    forwarded: Family<TenantLabel, Counter>,
    log_entries: Family<TenantLabel, Counter>,
    tenants: Gauge,
    series: Gauge,
}

impl GatewayMetrics {
    /// Registers every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_gateway_requests",
            "Remote-write requests from agents, by path and the HTTP status answered.",
            self.requests.clone(),
        );
        registry.register(
            "kaas_gateway_requests_refused",
            "Requests refused whole because their tenant was over an ingest limit (429, retried by the agent).",
            self.refused.clone(),
        );
        registry.register(
            "kaas_gateway_series_dropped",
            "Series dropped: a reserved family on a path that may not carry it, or a new series past an active-series limit.",
            self.dropped.clone(),
        );
        registry.register(
            "kaas_gateway_samples_forwarded",
            "Samples Thanos receive accepted, by tenant.",
            self.forwarded.clone(),
        );
        registry.register(
            "kaas_gateway_log_entries_forwarded",
            "Log entries the central Loki accepted, by tenant.",
            self.log_entries.clone(),
        );
        registry.register(
            "kaas_gateway_tracked_tenants",
            "Tenants this replica tracks limits for.",
            self.tenants.clone(),
        );
        registry.register(
            "kaas_gateway_tracked_series",
            "Active series this replica tracks, all tenants together.",
            self.series.clone(),
        );
    }

    /// Sets how many tenants and active series this replica tracks.
    pub fn set_tracked(&self, (tenants, series): (usize, usize)) {
        self.tenants.set(i64::try_from(tenants).unwrap_or(i64::MAX));
        self.series.set(i64::try_from(series).unwrap_or(i64::MAX));
    }
}

/// A request was answered: counted by path and status. Its log line, naming the
/// cluster, is the server's.
#[derive(Clone, Copy, Debug)]
pub struct GatewayAnswered {
    /// `workload` or `agent`.
    pub path: &'static str,
    /// The HTTP status answered.
    pub code: u16,
}

impl GatewayAnswered {
    /// Counts the answer in `metrics`.
    pub fn emit(self, metrics: &GatewayMetrics) {
        metrics
            .requests
            .get_or_create(&RequestLabels {
                path: self.path,
                code: self.code,
            })
            .inc();
    }
}

/// A request refused whole because its tenant was over an ingest limit: counted by
/// tenant and limit, and logged at debug level (the agent is told with 429 and retries;
/// `KaasGatewayIngestRefused` alerts on the count).
#[derive(Clone, Copy, Debug)]
pub struct GatewayRefused<'a> {
    /// The tenant, from the agent's certificate.
    pub tenant: &'a str,
    /// A [`LimitKind`](crate::gateway::limits::LimitKind) label value.
    pub limit: &'static str,
}

impl GatewayRefused<'_> {
    /// Counts and logs the refusal.
    pub fn emit(self, metrics: &GatewayMetrics) {
        metrics
            .refused
            .get_or_create(&RefusalLabels {
                tenant: self.tenant.to_owned(),
                limit: self.limit,
            })
            .inc();
        tracing::debug!(
            tenant = self.tenant,
            limit = self.limit,
            "ingest limit reached; refused"
        );
    }
}

/// Series of a request the gateway dropped (a reserved family on a path that may not
/// carry it, a new series past a limit): counted by tenant and reason; nothing counted
/// when none was dropped.
#[derive(Clone, Copy, Debug)]
pub struct GatewaySeriesDropped<'a> {
    /// The tenant, from the agent's certificate.
    pub tenant: &'a str,
    /// `reserved_family`, `active_series` or `tracked_series`.
    pub reason: &'static str,
    /// How many series.
    pub series: usize,
}

impl GatewaySeriesDropped<'_> {
    /// Counts the drop.
    pub fn emit(self, metrics: &GatewayMetrics) {
        if self.series == 0 {
            return;
        }
        metrics
            .dropped
            .get_or_create(&DropLabels {
                tenant: self.tenant.to_owned(),
                reason: self.reason,
            })
            .inc_by(self.series as u64);
    }
}

/// Samples Thanos receive accepted for a tenant.
#[derive(Clone, Copy, Debug)]
pub struct GatewayForwarded<'a> {
    /// The tenant, from the agent's certificate.
    pub tenant: &'a str,
    /// How many samples.
    pub samples: usize,
}

impl GatewayForwarded<'_> {
    /// Counts the samples.
    pub fn emit(self, metrics: &GatewayMetrics) {
        metrics
            .forwarded
            .get_or_create(&TenantLabel {
                tenant: self.tenant.to_owned(),
            })
            .inc_by(self.samples as u64);
    }
}

/// Log entries the central Loki accepted for a tenant.
#[derive(Clone, Copy, Debug)]
pub struct GatewayLogsForwarded<'a> {
    /// The tenant, from the agent's certificate.
    pub tenant: &'a str,
    /// How many entries.
    pub entries: usize,
}

impl GatewayLogsForwarded<'_> {
    /// Counts the entries.
    pub fn emit(self, metrics: &GatewayMetrics) {
        metrics
            .log_entries
            .get_or_create(&TenantLabel {
                tenant: self.tenant.to_owned(),
            })
            .inc_by(self.entries as u64);
    }
}
