//! Every notable onboarding event, logged and counted in one place: a sync (an
//! inventory poll, a Cluster API relist or reconcile) that succeeded or failed, and
//! each change a source makes to a cluster. Labels are bounded: `source` is one of two
//! values, `result` and `action` are fixed sets; cluster names go to the log only.

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::{Actor, now_ms};

/// Where a cluster came from. Its name is the value of [`super::SOURCE_LABEL`] on the
/// clusters the source registered, and the `source` label of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A KaaS inventory polled over HTTP ([`super::inventory`]).
    Inventory,
    /// Cluster API `Cluster` objects in the management cluster ([`super::capi`]).
    ClusterApi,
}

impl Source {
    /// `inventory` or `cluster-api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::ClusterApi => "cluster-api",
        }
    }

    /// Who the audit trail names for this source's changes: `onboarding:inventory`,
    /// `onboarding:cluster-api`.
    pub fn actor(self) -> Actor {
        Actor(format!("onboarding:{}", self.as_str()))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a sync changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncFailure {
    /// The inventory or the API server could not be reached (connection, timeout).
    Unreachable,
    /// The inventory answered with a status other than 200.
    BadStatus,
    /// The answer was not a readable cluster list (not JSON, wrong shape, too large).
    InvalidResponse,
    /// The inventory or the Cluster API list held no clusters while this source
    /// manages some; refused (the inventory's unless empty lists are allowed, see
    /// [`super::inventory`]).
    EmptyRefused,
    /// The store failed.
    Store,
    /// A Kubernetes request failed (Cluster API list, patch, Secret, agent install).
    Kubernetes,
}

impl SyncFailure {
    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::BadStatus => "bad_status",
            Self::InvalidResponse => "invalid_response",
            Self::EmptyRefused => "empty_refused",
            Self::Store => "store_error",
            Self::Kubernetes => "kubernetes_error",
        }
    }
}

/// What a source did to one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterAction {
    /// Registered (in state `provisioning`, with a join token).
    Registered,
    /// Labels or API endpoint replaced.
    Updated,
    /// Moved to `deleting`: the source no longer lists it, or its deletion started.
    Deleting,
    /// Tombstoned (`deleted`).
    Deleted,
    /// Back from `deleting` or `lost` to the state it had before: it reappeared.
    Restored,
    /// Moved to `lost`: a `Cluster` carrying the observer's finalizer disappeared
    /// without a deletion the observer saw.
    Lost,
    /// A change that takes it out of the live fleet was held by the mass-deletion
    /// guard ([`crate::lifecycle::guard`]).
    Held,
    /// Not touched: the name belongs to another source, to the API, to a tombstone,
    /// or the source's entry is invalid.
    Skipped,
    /// The agent's manifests were applied to the workload cluster.
    AgentInstalled,
    /// Applying the agent's manifests failed; retried.
    AgentInstallFailed,
}

impl ClusterAction {
    /// The `action` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Updated => "updated",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
            Self::Restored => "restored",
            Self::Lost => "lost",
            Self::Held => "held",
            Self::Skipped => "skipped",
            Self::AgentInstalled => "agent_installed",
            Self::AgentInstallFailed => "agent_install_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    source: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// The onboarding sources' metrics. One instance is shared by every source of an
/// observer and registered once.
#[derive(Debug, Default)]
pub struct OnboardingMetrics {
    syncs: Family<SyncLabels, Counter>,
    clusters: Family<ClusterLabels, Counter>,
    last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    pending_deletions: Family<SourceLabels, Gauge>,
}

impl OnboardingMetrics {
    /// Registers the metrics in `registry` (counters get their `_total` suffix there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_onboarding_syncs",
            "Onboarding syncs (inventory polls, Cluster API relists and reconciles); result is success or why the sync changed nothing.",
            self.syncs.clone(),
        );
        registry.register(
            "kaas_observer_onboarding_cluster_changes",
            "Changes onboarding sources made to clusters, by action.",
            self.clusters.clone(),
        );
        registry.register(
            "kaas_observer_onboarding_last_success_timestamp_seconds",
            "When the source last synced successfully, Unix seconds.",
            self.last_success.clone(),
        );
        registry.register(
            "kaas_observer_deletions_pending",
            "Cluster changes (to deleting, deleted or lost) the mass-deletion guard holds for an administrator's confirmation, by source; set by the replica running the source.",
            self.pending_deletions.clone(),
        );
    }

    /// After a pass of `source`: how many of its changes the mass-deletion guard holds.
    pub fn deletions_pending(&self, source: Source, held: usize) {
        if held > 0 {
            tracing::error!(
                %source,
                held,
                "the mass-deletion guard holds cluster changes; review them (`observer status`) \
                 and run `observer cluster confirm-deletions` if they are real"
            );
        }
        self.pending_deletions
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// How many changes of `source` the guard held at its last pass.
    pub fn pending(&self, source: Source) -> i64 {
        self.pending_deletions
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .get()
    }

    /// A sync went through.
    pub fn sync_succeeded(&self, source: Source) {
        self.syncs
            .get_or_create(&SyncLabels {
                source: source.as_str(),
                result: "success",
            })
            .inc();
        // Milliseconds fit an f64 exactly for the next few hundred thousand years.
        self.last_success
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .set(now_ms() as f64 / 1000.0);
    }

    /// A sync changed nothing because of `failure`; `error` says what happened.
    pub fn sync_failed(&self, source: Source, failure: SyncFailure, error: &dyn fmt::Display) {
        tracing::warn!(
            %source,
            result = failure.as_str(),
            %error,
            "onboarding sync failed; nothing was changed"
        );
        self.syncs
            .get_or_create(&SyncLabels {
                source: source.as_str(),
                result: failure.as_str(),
            })
            .inc();
    }

    /// The source did `action` to `cluster`; `detail` explains it in the log.
    pub fn cluster_changed(
        &self,
        source: Source,
        action: ClusterAction,
        cluster: &str,
        tenant: &str,
        detail: &str,
    ) {
        let action_name = action.as_str();
        match action {
            ClusterAction::Registered
            | ClusterAction::Updated
            | ClusterAction::Restored
            | ClusterAction::AgentInstalled => {
                tracing::info!(%source, %cluster, %tenant, action = action_name, "{detail}");
            }
            ClusterAction::Deleting
            | ClusterAction::Deleted
            | ClusterAction::Lost
            | ClusterAction::Held
            | ClusterAction::Skipped
            | ClusterAction::AgentInstallFailed => {
                tracing::warn!(%source, %cluster, %tenant, action = action_name, "{detail}");
            }
        }
        self.clusters
            .get_or_create(&ClusterLabels {
                source: source.as_str(),
                action: action_name,
            })
            .inc();
    }

    /// How many syncs of `source` succeeded (`None`) or failed with `failure`.
    pub fn syncs(&self, source: Source, failure: Option<SyncFailure>) -> u64 {
        self.syncs
            .get_or_create(&SyncLabels {
                source: source.as_str(),
                result: failure.map_or("success", SyncFailure::as_str),
            })
            .get()
    }

    /// How many times `source` did `action`.
    pub fn cluster_changes(&self, source: Source, action: ClusterAction) -> u64 {
        self.clusters
            .get_or_create(&ClusterLabels {
                source: source.as_str(),
                action: action.as_str(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_are_exposed_under_their_documented_names() {
        let metrics = OnboardingMetrics::default();
        metrics.sync_succeeded(Source::Inventory);
        metrics.sync_failed(Source::ClusterApi, SyncFailure::Kubernetes, &"refused");
        metrics.cluster_changed(
            Source::Inventory,
            ClusterAction::Registered,
            "prod-1",
            "shop",
            "registered",
        );
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"kaas_observer_onboarding_syncs_total{source="inventory",result="success"} 1"#,
            r#"kaas_observer_onboarding_syncs_total{source="cluster-api",result="kubernetes_error"} 1"#,
            r#"kaas_observer_onboarding_cluster_changes_total{source="inventory",action="registered"} 1"#,
            r#"kaas_observer_onboarding_last_success_timestamp_seconds{source="inventory"} "#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("prod-1"),
            "cluster names stay out of the labels"
        );
        assert_eq!(metrics.syncs(Source::Inventory, None), 1);
        assert_eq!(
            metrics.cluster_changes(Source::Inventory, ClusterAction::Registered),
            1
        );
    }
}
