//! What the gateway does to each series an agent sends, as a pure function of the
//! series, the sender's certificate identity and the path it came on
//! ([`rewrite`]):
//!
//! 1. **Reserved families are dropped by origin.** The observer's own families
//!    (`kaas_*`, `probe_*`, [`RESERVED_FAMILY_PREFIXES`]) reach Thanos only from the
//!    observer. On the workload path ([`Origin::Workload`]) every series so named is
//!    dropped, whatever its labels say. On the agent's own path ([`Origin::AgentSelf`],
//!    which only the agent's self-scrape pipeline uses) the agent's families
//!    ([`AGENT_FAMILY_PREFIXES`]) pass, the observer's are dropped all the same. Which
//!    path a series took is decided by the agent's configuration, pushed by the
//!    observer, never by a label a workload could set.
//! 2. **`cluster` and `tenant` are set from the certificate**, as Prometheus sets
//!    target labels with `honor_labels: false`: a sent label of the same name with
//!    another value is kept as `exported_cluster`/`exported_tenant` (`exported_` again
//!    while that name is taken, as Prometheus does). A sent label equal to the value
//!    the gateway sets (the agent's own `cluster` external label) is simply kept: the
//!    renamed copy would say nothing the label does not.

use kaas_series::PushedSeries;
use kaas_series::labels::{Labels, LabelsBuilder, METRIC_NAME};

/// The label naming a series' cluster (its global id), as on the fleet series.
pub const CLUSTER_LABEL: &str = "cluster";
/// The label naming a series' tenant, as on the fleet series.
pub const TENANT_LABEL: &str = "tenant";
/// What a conflicting sent label is renamed with (Prometheus' `honor_labels: false`).
pub const EXPORTED_PREFIX: &str = "exported_";
/// Metric name prefixes of the observer's own families (`docs/metrics.yaml`): only the
/// observer writes them, straight to Thanos.
pub const RESERVED_FAMILY_PREFIXES: [&str; 2] = ["kaas_", "probe_"];
/// The reserved families the agent itself exports on its `/metrics`; they pass on the
/// agent's own path only.
pub const AGENT_FAMILY_PREFIXES: [&str; 2] = ["kaas_agent_", "kaas_self_telemetry_"];

/// Which request path a batch came on; the agent's configuration decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The central pipeline's workload and runtime series.
    Workload,
    /// The agent's self-scrape (its own `/metrics`), on a path of its own.
    AgentSelf,
}

impl Origin {
    /// The value of the `path` label on the gateway's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::AgentSelf => "agent",
        }
    }
}

/// Who sent a batch: what the verified client certificate names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterIdentity {
    /// The cluster's global id (`<tenant>.<name>`), the `cluster` label.
    pub cluster: String,
    /// The cluster's tenant, the `tenant` label and the tenant header.
    pub tenant: String,
}

/// Whether a series named `name` may come on `origin`.
pub fn admits(origin: Origin, name: &str) -> bool {
    let reserved = RESERVED_FAMILY_PREFIXES.iter().any(|p| name.starts_with(p));
    if !reserved {
        return true;
    }
    origin == Origin::AgentSelf && AGENT_FAMILY_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `labels` with `cluster` and `tenant` set from `identity`, conflicting sent values
/// kept under `exported_…`.
pub fn stamp(labels: &Labels, identity: &ClusterIdentity) -> Labels {
    let mut builder = LabelsBuilder::new(labels);
    for (name, value) in [
        (CLUSTER_LABEL, identity.cluster.as_str()),
        (TENANT_LABEL, identity.tenant.as_str()),
    ] {
        let sent = builder.get(name).to_owned();
        if !sent.is_empty() && sent != value {
            let mut exported = format!("{EXPORTED_PREFIX}{name}");
            while !builder.get(&exported).is_empty() {
                exported.insert_str(0, EXPORTED_PREFIX);
            }
            builder.set(&exported, &sent);
        }
        builder.set(name, value);
    }
    builder.labels()
}

/// A batch after [`rewrite`].
#[derive(Debug, Default, PartialEq)]
pub struct Rewritten {
    /// The series to forward, stamped.
    pub series: Vec<PushedSeries>,
    /// Series dropped for a reserved family name.
    pub dropped_reserved: usize,
}

/// Drops the series `origin` may not carry and stamps the rest with `identity`.
pub fn rewrite(series: Vec<PushedSeries>, identity: &ClusterIdentity, origin: Origin) -> Rewritten {
    let mut out = Rewritten::default();
    for one in series {
        if !admits(origin, one.labels.get(METRIC_NAME)) {
            out.dropped_reserved += 1;
            continue;
        }
        out.series.push(PushedSeries {
            labels: stamp(&one.labels, identity),
            samples: one.samples,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> ClusterIdentity {
        ClusterIdentity {
            cluster: "shop.edge".into(),
            tenant: "shop".into(),
        }
    }

    fn series(pairs: &[(&str, &str)]) -> PushedSeries {
        PushedSeries {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: vec![(1, 1.0)],
        }
    }

    fn pairs(labels: &Labels) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    #[test]
    fn cluster_and_tenant_come_from_the_certificate_and_forged_ones_are_exported() {
        let forged = series(&[
            ("__name__", "up"),
            ("cluster", "bank.prod"),
            ("tenant", "bank"),
        ]);
        let stamped = stamp(&forged.labels, &shop());
        assert_eq!(stamped.get("cluster"), "shop.edge");
        assert_eq!(stamped.get("tenant"), "shop");
        assert_eq!(stamped.get("exported_cluster"), "bank.prod");
        assert_eq!(stamped.get("exported_tenant"), "bank");
    }

    #[test]
    fn a_label_equal_to_the_stamp_is_kept_without_an_exported_copy() {
        let own = series(&[("__name__", "x"), ("cluster", "shop.edge")]);
        let stamped = stamp(&own.labels, &shop());
        assert_eq!(
            pairs(&stamped),
            [
                ("__name__".to_owned(), "x".to_owned()),
                ("cluster".to_owned(), "shop.edge".to_owned()),
                ("tenant".to_owned(), "shop".to_owned()),
            ]
        );
    }

    #[test]
    fn an_existing_exported_label_is_not_overwritten() {
        let sent = series(&[
            ("__name__", "x"),
            ("cluster", "bank.prod"),
            ("exported_cluster", "older"),
        ]);
        let stamped = stamp(&sent.labels, &shop());
        assert_eq!(stamped.get("exported_cluster"), "older");
        assert_eq!(stamped.get("exported_exported_cluster"), "bank.prod");
        assert_eq!(stamped.get("cluster"), "shop.edge");
    }

    #[test]
    fn reserved_families_pass_only_the_agents_own_and_only_on_its_path() {
        for name in [
            "kaas_cluster_info",
            "probe_success",
            "kaas_agent_pipeline_errors_total",
        ] {
            assert!(!admits(Origin::Workload, name), "{name}");
        }
        assert!(admits(Origin::Workload, "up"));
        assert!(admits(Origin::Workload, "kaasx"));
        assert!(admits(
            Origin::AgentSelf,
            "kaas_agent_pipeline_errors_total"
        ));
        assert!(admits(
            Origin::AgentSelf,
            "kaas_self_telemetry_spans_dropped_total"
        ));
        assert!(admits(Origin::AgentSelf, "up"));
        assert!(!admits(Origin::AgentSelf, "kaas_cluster_info"));
        assert!(!admits(Origin::AgentSelf, "probe_success"));
    }

    #[test]
    fn rewrite_counts_what_it_drops() {
        let batch = vec![
            series(&[("__name__", "kaas_cluster_info"), ("state", "deleted")]),
            series(&[("__name__", "http_requests_total")]),
            series(&[("__name__", "probe_success")]),
        ];
        let out = rewrite(batch, &shop(), Origin::Workload);
        assert_eq!(out.dropped_reserved, 2);
        assert_eq!(out.series.len(), 1);
        assert_eq!(out.series[0].labels.get("cluster"), "shop.edge");
        assert_eq!(out.series[0].samples, vec![(1, 1.0)]);
    }
}
