//! The gateway's own metrics, served on its metrics address (`docs/metrics.yaml`):
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_gateway_requests_total` | path, code |
//! | `kaas_gateway_requests_refused_total` | tenant, limit |
//! | `kaas_gateway_series_dropped_total` | tenant, reason |
//! | `kaas_gateway_samples_forwarded_total` | tenant |
//! | `kaas_gateway_tracked_tenants` | |
//! | `kaas_gateway_tracked_series` | |
//! | `kaas_gateway_tls_handshakes_total` | result |
//! | `kaas_gateway_tls_handshakes_waiting` | |
//!
//! `tenant` values come from certificates the observer's CA signed, so they are the
//! provider's tenants and nothing a sender makes up; `path`, `code`, `limit` and
//! `reason` are closed sets.

use axum::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::limits::LimitKind;
use super::rewrite::Origin;

/// Labels of `kaas_gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `workload` or `agent`.
    pub path: &'static str,
    /// The HTTP status answered.
    pub code: u16,
}

/// Labels of `kaas_gateway_requests_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The tenant.
    pub tenant: String,
    /// `samples_per_second` or `tenants`.
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

    pub(super) fn request(&self, origin: Origin, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                path: origin.as_str(),
                code: status.as_u16(),
            })
            .inc();
    }

    pub(super) fn refused(&self, tenant: &str, limit: LimitKind) {
        self.refused
            .get_or_create(&RefusalLabels {
                tenant: tenant.to_owned(),
                limit: limit.as_str(),
            })
            .inc();
    }

    pub(super) fn dropped(&self, tenant: &str, reason: &'static str, count: usize) {
        if count == 0 {
            return;
        }
        self.dropped
            .get_or_create(&DropLabels {
                tenant: tenant.to_owned(),
                reason,
            })
            .inc_by(count as u64);
    }

    pub(super) fn forwarded(&self, tenant: &str, samples: usize) {
        self.forwarded
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .inc_by(samples as u64);
    }

    pub(super) fn set_tracked(&self, (tenants, series): (usize, usize)) {
        self.tenants.set(i64::try_from(tenants).unwrap_or(i64::MAX));
        self.series.set(i64::try_from(series).unwrap_or(i64::MAX));
    }
}
