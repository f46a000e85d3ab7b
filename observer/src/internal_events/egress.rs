//! Contacts the egress policy refused: tenant probes, cluster API endpoints, inventory
//! and API requests naming a refused address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    context: &'static str,
    range: &'static str,
}

/// The refusal counter, `kaas_observer_egress_refusals_total{context, range}`.
#[derive(Clone, Debug, Default)]
pub struct EgressRefusals(Family<RefusalLabels, Counter>);

impl EgressRefusals {
    /// Registers the counter in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_egress_refusals",
            "Contacts the egress policy refused (tenant probes, cluster API endpoints, API requests naming a refused address), by where and by range (or method).",
            self.0.clone(),
        );
    }
}

/// A contact the egress policy refused, counted by where (`context`) and why
/// (`range`: a range kind, or `method`), both from fixed sets. Which tenant and target
/// go to the caller's log line and the probe's own failure, never to a label.
#[derive(Clone, Copy, Debug)]
pub struct EgressRefused {
    /// Where: `api`, `probe`, `inventory` or `cluster_api`.
    pub context: &'static str,
    /// Why: the refused range's kind, or `method`.
    pub range: &'static str,
}

impl EgressRefused {
    /// Counts the refusal in `refusals` and logs it.
    pub fn emit(self, refusals: &EgressRefusals) {
        refusals
            .0
            .get_or_create(&RefusalLabels {
                context: self.context,
                range: self.range,
            })
            .inc();
        tracing::debug!(context = self.context, range = self.range, "egress refused");
    }
}
