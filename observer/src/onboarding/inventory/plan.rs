//! The pure half of the inventory source: [`plan`] compares one successful answer with
//! the stored clusters and lists the [`Step`]s that bring the store in line (the
//! policy of [the module note](super)); [`super::InventorySource`] carries them out.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use super::super::{Source, managed_by, state_before_deletion};
use super::{Inventory, InventoryCluster, PollError};
use crate::store::{Cluster, ClusterState};

/// One thing a poll does to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Register a new cluster.
    Register(InventoryCluster),
    /// Replace labels (source label included) and API endpoint.
    Update {
        /// The cluster's global id.
        id: String,
        /// Its tenant.
        tenant: String,
        /// The labels to store.
        labels: BTreeMap<String, String>,
        /// The endpoint to store.
        api_endpoint: Option<String>,
    },
    /// Move a `deleting` cluster back: it is listed again.
    Restore {
        /// The cluster's global id.
        id: String,
        /// Its tenant.
        tenant: String,
        /// The state it returns to.
        to: ClusterState,
    },
    /// Move a cluster to `deleting`: missing from this many polls in a row, not yet
    /// for long enough to be tombstoned.
    MarkDeleting {
        /// The cluster's global id.
        id: String,
        /// Its tenant.
        tenant: String,
        /// Polls it has been missing from.
        missing_polls: u32,
    },
    /// Tombstone a cluster (through `deleting` if it is not there yet): the inventory
    /// marks it deleted, or it has been missing from enough polls for long enough.
    Tombstone {
        /// The cluster's global id.
        id: String,
        /// Its tenant.
        tenant: String,
        /// Polls it has been missing from (0 when it is listed as deleted).
        missing_polls: u32,
        /// Whether the inventory lists it marked deleted.
        marked_deleted: bool,
        /// Whether it still has to pass through `deleting`.
        via_deleting: bool,
    },
    /// Leave a listed name alone, for `reason`.
    Skip {
        /// The listed name (or the entry's position if it has no readable name).
        name: String,
        /// Why.
        reason: String,
    },
}

impl Step {
    /// The cluster and the state the step takes it to, if it takes a cluster out of
    /// the live fleet from a state that is not leaving yet: what the mass-deletion
    /// guard weighs (a tombstone of a cluster already `deleting` was weighed when it
    /// went there).
    pub fn leaving(&self) -> Option<(&str, &str, ClusterState)> {
        match self {
            Self::MarkDeleting { id, tenant, .. } => {
                Some((id.as_str(), tenant.as_str(), ClusterState::Deleting))
            }
            Self::Tombstone {
                id,
                tenant,
                via_deleting: true,
                ..
            } => Some((id.as_str(), tenant.as_str(), ClusterState::Deleted)),
            _ => None,
        }
    }
}

impl Step {
    /// The inventory's evidence for a step that takes a cluster out of the fleet, as
    /// the mass-deletion guard shows it.
    pub fn evidence(&self) -> String {
        match self {
            Self::MarkDeleting { missing_polls, .. }
            | Self::Tombstone {
                missing_polls,
                marked_deleted: false,
                ..
            } => format!("missing from {missing_polls} successful inventory poll(s) in a row"),
            Self::Tombstone {
                marked_deleted: true,
                ..
            } => "the inventory lists it as deleted".to_owned(),
            _ => String::new(),
        }
    }
}

/// How long a managed cluster has been missing from the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing {
    /// Consecutive successful polls it has been missing from.
    pub polls: u32,
    /// When the first of them was taken, Unix milliseconds.
    pub since_ms: i64,
}

/// What a poll will do, and the missing counts after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollPlan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How long each managed live cluster (by global id) has been missing.
    pub missing: BTreeMap<String, Missing>,
}

/// The rules [`plan`] follows.
#[derive(Clone, Copy, Debug)]
pub struct PlanRules {
    /// See [`super::InventorySettings::delete_after_missing_polls`].
    pub delete_after_missing_polls: NonZeroU32,
    /// See [`super::InventorySettings::delete_grace`].
    pub delete_grace: Duration,
    /// See [`super::InventorySettings::allow_empty`].
    pub allow_empty: bool,
    /// See [`super::InventorySettings::silent_after`].
    pub silent_after: Duration,
}

/// The stored clusters as [`plan`] looks them up. Names are unique per tenant: a listed
/// cluster is the stored one of its tenant and name. The inventory lists each name
/// once, so a cluster it manages under the same name in another tenant means it moved,
/// which [`plan`] refuses.
struct StoredClusters<'a> {
    by_tenant_and_name: BTreeMap<(&'a str, &'a str), &'a Cluster>,
    managed_by_name: BTreeMap<&'a str, &'a Cluster>,
}

impl<'a> StoredClusters<'a> {
    fn new(stored: &'a [Cluster]) -> Self {
        Self {
            by_tenant_and_name: stored
                .iter()
                .map(|c| ((c.tenant.as_str(), c.name.as_str()), c))
                .collect(),
            managed_by_name: stored
                .iter()
                .filter(|c| managed_by(c, Source::Inventory))
                .map(|c| (c.name.as_str(), c))
                .collect(),
        }
    }

    /// The stored cluster `tenant` named `name`, else the inventory's cluster of that
    /// name in another tenant.
    fn find(&self, tenant: &str, name: &str) -> Option<&'a Cluster> {
        self.by_tenant_and_name
            .get(&(tenant, name))
            .or_else(|| self.managed_by_name.get(name))
            .copied()
    }
}

/// Compares a successful answer with the stored clusters. Pure: the whole policy of the
/// module note. `missing_before` are the counts after the previous successful poll.
pub fn plan(
    inventory: &Inventory,
    stored: &[Cluster],
    missing_before: &BTreeMap<String, Missing>,
    rules: PlanRules,
    now_ms: i64,
) -> Result<PollPlan, PollError> {
    let known = StoredClusters::new(stored);
    let managed_live: Vec<&Cluster> = stored
        .iter()
        .filter(|c| managed_by(c, Source::Inventory) && !c.state.is_tombstone())
        .collect();
    if inventory.is_empty() && !rules.allow_empty && !managed_live.is_empty() {
        return Err(PollError::EmptyRefused {
            managed: managed_live.len(),
        });
    }
    let mut result = PollPlan::default();
    for listed in inventory.clusters.values() {
        let stored = known.find(&listed.tenant, &listed.name);
        if listed.deleted {
            // Positive evidence: the inventory says the cluster is deleted.
            if let Some(stored) = stored.filter(|s| {
                managed_by(s, Source::Inventory)
                    && !s.state.is_tombstone()
                    && s.tenant == listed.tenant
            }) {
                result.steps.push(Step::Tombstone {
                    id: stored.id.clone(),
                    tenant: stored.tenant.clone(),
                    missing_polls: 0,
                    marked_deleted: true,
                    via_deleting: !stored.state.is_leaving(),
                });
            }
            continue;
        }
        let Some(stored) = stored else {
            result.steps.push(Step::Register(listed.clone()));
            continue;
        };
        if !managed_by(stored, Source::Inventory) {
            result.steps.push(Step::Skip {
                name: listed.name.clone(),
                reason: "a cluster of that name was registered by the API or another source; \
                         the inventory does not manage it"
                    .to_owned(),
            });
            continue;
        }
        if stored.state.is_tombstone() {
            // The inventory lists a deleted cluster's name again, not marked deleted:
            // the cluster was created again; a new incarnation of the name.
            result.steps.push(Step::Register(listed.clone()));
            continue;
        }
        if stored.tenant != listed.tenant {
            result.steps.push(Step::Skip {
                name: listed.name.clone(),
                reason: format!(
                    "the inventory lists it for tenant {:?}, but it belongs to tenant {:?}; \
                     a cluster cannot change tenants",
                    listed.tenant, stored.tenant
                ),
            });
            continue;
        }
        if stored.state.restored_when_listed() {
            result.steps.push(Step::Restore {
                id: stored.id.clone(),
                tenant: stored.tenant.clone(),
                to: state_before_deletion(stored, now_ms, rules.silent_after),
            });
        }
        let labels = listed.stored_labels();
        if labels != stored.labels || listed.api_endpoint != stored.api_endpoint {
            result.steps.push(Step::Update {
                id: stored.id.clone(),
                tenant: stored.tenant.clone(),
                labels,
                api_endpoint: listed.api_endpoint.clone(),
            });
        }
    }
    for invalid in &inventory.invalid {
        let name = invalid.name.clone();
        if let Some(stored) = name.as_deref().and_then(|n| known.managed_by_name.get(n))
            && managed_by(stored, Source::Inventory)
            && stored.state.restored_when_listed()
        {
            result.steps.push(Step::Restore {
                id: stored.id.clone(),
                tenant: stored.tenant.clone(),
                to: state_before_deletion(stored, now_ms, rules.silent_after),
            });
        }
        result.steps.push(Step::Skip {
            name: name.unwrap_or_default(),
            reason: format!("invalid inventory entry: {}", invalid.problem),
        });
    }
    missing_steps(
        inventory,
        managed_live,
        missing_before,
        rules,
        now_ms,
        &mut result,
    );
    Ok(result)
}

/// The steps for the managed live clusters `inventory` does not list: each one's
/// missing count and time grow; it is `deleting` at once, and tombstoned once it has
/// been missing from enough successful polls *and* for the grace period.
fn missing_steps(
    inventory: &Inventory,
    managed_live: Vec<&Cluster>,
    missing_before: &BTreeMap<String, Missing>,
    rules: PlanRules,
    now_ms: i64,
    result: &mut PollPlan,
) {
    let listed = inventory.listed_names();
    let grace_ms = i64::try_from(rules.delete_grace.as_millis()).unwrap_or(i64::MAX);
    for stored in managed_live {
        if listed.contains(stored.name.as_str()) {
            continue;
        }
        let before = missing_before.get(&stored.id);
        let missing = Missing {
            polls: before.map_or(0, |m| m.polls).saturating_add(1),
            since_ms: before.map_or(now_ms, |m| m.since_ms),
        };
        result.missing.insert(stored.id.clone(), missing);
        let grace_over = now_ms.saturating_sub(missing.since_ms) >= grace_ms;
        if missing.polls >= rules.delete_after_missing_polls.get() && grace_over {
            result.steps.push(Step::Tombstone {
                id: stored.id.clone(),
                tenant: stored.tenant.clone(),
                missing_polls: missing.polls,
                marked_deleted: false,
                via_deleting: !stored.state.is_leaving(),
            });
        } else if !stored.state.is_leaving() {
            result.steps.push(Step::MarkDeleting {
                id: stored.id.clone(),
                tenant: stored.tenant.clone(),
                missing_polls: missing.polls,
            });
        }
    }
}
