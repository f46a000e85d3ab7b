//! The events of what the agent's ports take from the cluster's pods, and the counters
//! they own: [`PushRefused`] (a push refused before it reached a pipeline),
//! [`PushRouted`] (what a push brought and what no pipeline took), and the node
//! certificate endpoint's [`NodeCertificateIssued`] and [`NodeCertificateRefused`],
//! and [`SpansEnriched`] (what the pod lookup found for pushed spans).
//! `/metrics` (`telemetry`) reads [`PushStats`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of pushed samples and refused requests.
#[derive(Debug, Default)]
pub struct PushStats {
    received: AtomicU64,
    unrouted: AtomicU64,
    malformed_requests: AtomicU64,
    /// Refused requests by protocol and reason, both from fixed sets (the receivers'
    /// protocol names and refusal reasons), so the map stays small.
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    node_certificates_issued: AtomicU64,
    /// Refused node certificate requests by reason, from a fixed set.
    node_certificates_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Pushed spans and log records by what the pod lookup found, indexed by
    /// [`EnrichedSignal`] and [`EnrichmentOutcome`].
    enrichment: [[AtomicU64; EnrichmentOutcome::ALL.len()]; 2],
}

impl PushStats {
    /// Samples received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Samples no pipeline took so far (none enabled the input, or all filtered them
    /// out).
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Requests refused as malformed so far.
    pub fn malformed_requests(&self) -> u64 {
        self.malformed_requests.load(Ordering::Relaxed)
    }

    /// Refused requests so far, by protocol and reason.
    pub fn refused(&self) -> Vec<((&'static str, &'static str), u64)> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Node certificates issued so far.
    pub fn node_certificates_issued(&self) -> u64 {
        self.node_certificates_issued.load(Ordering::Relaxed)
    }

    /// Pushed spans or log records (`signal`) so far by what the pod lookup found for
    /// them (every outcome, zero or not).
    pub fn enrichment(&self, signal: EnrichedSignal) -> Vec<(&'static str, u64)> {
        EnrichmentOutcome::ALL
            .iter()
            .map(|outcome| {
                let count = &self.enrichment[signal as usize][*outcome as usize];
                (outcome.as_str(), count.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Refused node certificate requests so far, by reason.
    pub fn node_certificates_refused(&self) -> Vec<(&'static str, u64)> {
        let refused = self
            .node_certificates_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refused.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// A node's certificate handed out by the cluster-level instance: counted in
/// `kaas_agent_node_certificates_issued_total` (the endpoint logs the node).
#[derive(Clone, Copy, Debug)]
pub struct NodeCertificateIssued;

impl NodeCertificateIssued {
    /// Counts the issuance in `stats`.
    pub fn emit(self, stats: &PushStats) {
        stats
            .node_certificates_issued
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// A node certificate request refused: counted in
/// `kaas_agent_node_certificate_requests_refused_total{reason}`; the requester is told
/// why, and the endpoint logs the refusals of authenticated node agents only.
#[derive(Clone, Copy, Debug)]
pub struct NodeCertificateRefused {
    /// The refusal's short fixed name (malformed, unauthenticated, forbidden,
    /// too_large, too_soon, unavailable).
    pub reason: &'static str,
}

impl NodeCertificateRefused {
    /// Counts the refusal in `stats`.
    pub fn emit(self, stats: &PushStats) {
        let mut refused = stats
            .node_certificates_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = refused.entry(self.reason).or_default();
        *count = count.saturating_add(1);
    }
}

/// A push request refused before it reached a pipeline: counted in
/// `kaas_agent_push_requests_refused_total{protocol, reason}` and, when the request
/// itself was malformed, in `kaas_agent_push_malformed_requests_total`. Not logged: the
/// pusher is told why in the answer, and a hostile pusher must not be able to flood the
/// agent's log.
#[derive(Clone, Copy, Debug)]
pub struct PushRefused {
    /// `remote_write` or `otlp`.
    pub protocol: &'static str,
    /// The refusal's short fixed name.
    pub reason: &'static str,
    /// Whether the request was malformed (an unsupported media type, a body that does
    /// not decode).
    pub malformed: bool,
}

impl PushRefused {
    /// Counts the refusal in `stats`.
    pub fn emit(self, stats: &PushStats) {
        if self.malformed {
            stats.malformed_requests.fetch_add(1, Ordering::Relaxed);
        }
        let mut refused = stats.refused.lock().unwrap_or_else(|e| e.into_inner());
        let count = refused.entry((self.protocol, self.reason)).or_default();
        *count = count.saturating_add(1);
    }
}

/// A push request routed to the pipelines: its samples counted in
/// `kaas_agent_push_samples_received_total`, those no pipeline took in
/// `kaas_agent_push_samples_unrouted_total`.
#[derive(Clone, Copy, Debug)]
pub struct PushRouted {
    /// Samples the request held.
    pub received: u64,
    /// Of those, samples no pipeline took.
    pub unrouted: u64,
}

impl PushRouted {
    /// Counts the request's samples in `stats`.
    pub fn emit(self, stats: &PushStats) {
        stats.received.fetch_add(self.received, Ordering::Relaxed);
        stats.unrouted.fetch_add(self.unrouted, Ordering::Relaxed);
    }
}

/// What the pod lookup found for a request (the `outcome` label of
/// `kaas_agent_push_spans_enrichment_total` and
/// `kaas_agent_push_log_records_enrichment_total`, a fixed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrichmentOutcome {
    /// The sending pod was found by the connection's address and its identity written.
    Enriched = 0,
    /// No pod has the connection's address (a host-network pod, a node, a pod the
    /// cache has not seen yet or left out, a sender outside the cluster).
    NotMatched = 1,
    /// A pod was found, of another namespace than the service-account token's: it is
    /// not the sender, nothing of it is written.
    OtherNamespace = 2,
}

impl EnrichmentOutcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 3] = [Self::Enriched, Self::NotMatched, Self::OtherNamespace];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enriched => "enriched",
            Self::NotMatched => "not_matched",
            Self::OtherNamespace => "other_namespace",
        }
    }
}

/// Which pushed signal a lookup was for; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrichedSignal {
    /// `kaas_agent_push_spans_enrichment_total`.
    Spans = 0,
    /// `kaas_agent_push_log_records_enrichment_total`.
    LogRecords = 1,
}

/// Pushed spans or log records looked up in the pod cache: counted in
/// `kaas_agent_push_spans_enrichment_total{outcome}` or
/// `kaas_agent_push_log_records_enrichment_total{outcome}`. Not logged per request
/// (pushers would decide how much the agent logs); what is pushed while no pod cache
/// runs (standalone, no pipeline taking such pushes) is not counted.
#[derive(Clone, Copy, Debug)]
pub struct PushEnriched {
    /// Spans or log records.
    pub signal: EnrichedSignal,
    /// What the lookup found.
    pub outcome: EnrichmentOutcome,
    /// The request's spans or log records.
    pub items: u64,
}

impl PushEnriched {
    /// Counts the items in `stats`.
    pub fn emit(self, stats: &PushStats) {
        let count = &stats.enrichment[self.signal as usize][self.outcome as usize];
        count.fetch_add(self.items, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_protocol_and_reason_and_malformed_ones_also_apart() {
        let stats = PushStats::default();
        let refuse = |reason, malformed| PushRefused {
            protocol: "otlp",
            reason,
            malformed,
        };
        refuse("unauthenticated", false).emit(&stats);
        refuse("malformed", true).emit(&stats);
        refuse("malformed", true).emit(&stats);
        assert_eq!(
            stats.refused(),
            vec![(("otlp", "malformed"), 2), (("otlp", "unauthenticated"), 1)]
        );
        assert_eq!(stats.malformed_requests(), 2);
    }

    #[test]
    fn routed_requests_count_received_and_unrouted_samples() {
        let stats = PushStats::default();
        PushRouted {
            received: 10,
            unrouted: 4,
        }
        .emit(&stats);
        PushRouted {
            received: 5,
            unrouted: 0,
        }
        .emit(&stats);
        assert_eq!((stats.received(), stats.unrouted()), (15, 4));
    }
}
