//! The mass-deletion guard: a pass of an onboarding source (an inventory poll, a
//! Cluster API relist) that would take more than a set share of that source's clusters
//! out of the live fleet at once (to `deleting`, `deleted` or `lost`) applies none of
//! those changes. They are held in the store (`pending_deletions`), counted by
//! `kaas_observer_deletions_pending`, alerted on (`KaasClusterDeletionsPaused`), shown
//! in `GET /api/v1/status`, and wait for an administrator's
//! `observer cluster confirm-deletions` (`POST /api/v1/deletions/confirm`, audited).
//!
//! # Why
//! The evidence a list-and-diff source has for one cluster is good; the same evidence
//! for most of the fleet at once is far more likely a fault of the list than a wave of
//! real deletions: an RBAC change or a cache that answers a partial or empty list, one
//! page of a paginated inventory, a filter gone wrong. Deleting on such a list silences
//! every alert of the clusters concerned and tombstones them for good; holding a real
//! mass deletion for an operator's confirmation costs only the time until they confirm
//! (the clusters are gone, nobody is paged for them meanwhile, since the pause itself
//! alerts).
//!
//! # Rules
//! - The guard is pure: [`MassDeletionGuard::split`] takes a pass's changes, the size
//!   of the source's live fleet and the cluster ids an administrator confirmed, and
//!   says which changes proceed and which are held. The sources store the held ones
//!   and drop pending entries whose evidence went away (listed again), every pass.
//! - A pass below the threshold proceeds whole. A pass above it proceeds only with the
//!   changes an administrator confirmed; everything else is held, including changes a
//!   later pass adds.
//! - A confirmation releases what is pending at that moment, nothing that comes later,
//!   and the source applies it only if its evidence still holds at its next pass.

use std::collections::BTreeSet;

/// Default share of a source's live clusters, in percent, that one pass may take out
/// of the fleet without a confirmation (`observer serve --mass-deletion-percent`).
/// Real decommissioning waves are planned and rare, and the operator who plans one
/// can confirm it; the faults the guard is for (partial lists, a namespace lost to
/// RBAC, one page of many) drop a large share at once. A fifth keeps ordinary churn
/// in a fleet of ten or more clusters free of confirmations.
pub const DEFAULT_MASS_DELETION_PERCENT: u8 = 20;
/// A pass that takes at most this many clusters out of the fleet is never held,
/// whatever the share: in a fleet of three, deleting one cluster is a third of it and
/// still everyday business. An empty list, which would take out a small fleet whole,
/// is refused by the sources before the guard is asked.
pub const MASS_DELETION_FLOOR: usize = 2;

/// The threshold of the mass-deletion guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MassDeletionGuard {
    percent: u8,
    floor: usize,
}

impl Default for MassDeletionGuard {
    fn default() -> Self {
        Self {
            percent: DEFAULT_MASS_DELETION_PERCENT,
            floor: MASS_DELETION_FLOOR,
        }
    }
}

/// What [`MassDeletionGuard::split`] decided about one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardVerdict<T> {
    /// Changes applied now.
    pub proceed: Vec<T>,
    /// Changes held for an administrator's confirmation.
    pub held: Vec<T>,
}

impl MassDeletionGuard {
    /// A guard holding passes that take out more than `percent` (1 to 100) of a
    /// source's live clusters, and more than [`MASS_DELETION_FLOOR`] clusters.
    pub fn new(percent: u8) -> Result<Self, String> {
        if !(1..=100).contains(&percent) {
            return Err(format!("a percentage from 1 to 100, not {percent}"));
        }
        Ok(Self {
            percent,
            floor: MASS_DELETION_FLOOR,
        })
    }

    /// The share, in percent.
    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// Whether taking `leaving` clusters out of a live fleet of `fleet` in one pass is
    /// a mass deletion.
    pub fn is_mass(&self, leaving: usize, fleet: usize) -> bool {
        leaving > self.floor
            && leaving.saturating_mul(100) > usize::from(self.percent).saturating_mul(fleet)
    }

    /// Splits one pass's `changes` (each naming its cluster's global id through `id`)
    /// for a source with `fleet` live clusters: all proceed below the threshold; above
    /// it only those whose cluster is in `confirmed`.
    pub fn split<T>(
        &self,
        changes: Vec<T>,
        fleet: usize,
        confirmed: &BTreeSet<String>,
        id: impl Fn(&T) -> &str,
    ) -> GuardVerdict<T> {
        if !self.is_mass(changes.len(), fleet) {
            return GuardVerdict {
                proceed: changes,
                held: Vec::new(),
            };
        }
        let (proceed, held) = changes
            .into_iter()
            .partition(|change| confirmed.contains(id(change)));
        GuardVerdict { proceed, held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shop.c{i}")).collect()
    }

    #[test]
    fn a_small_share_proceeds_whole() {
        let guard = MassDeletionGuard::default();
        let verdict = guard.split(ids(2), 100, &BTreeSet::new(), String::as_str);
        assert_eq!(verdict.proceed.len(), 2);
        assert!(verdict.held.is_empty());
        let verdict = guard.split(ids(20), 100, &BTreeSet::new(), String::as_str);
        assert_eq!(verdict.proceed.len(), 20, "exactly the share is not more");
    }

    #[test]
    fn more_than_the_share_is_held_unless_confirmed() {
        let guard = MassDeletionGuard::default();
        let changes = ids(21);
        let verdict = guard.split(changes.clone(), 100, &BTreeSet::new(), String::as_str);
        assert!(verdict.proceed.is_empty());
        assert_eq!(verdict.held, changes);
        let confirmed = BTreeSet::from(["shop.c0".to_owned(), "shop.c5".to_owned()]);
        let verdict = guard.split(changes, 100, &confirmed, String::as_str);
        assert_eq!(verdict.proceed, ["shop.c0", "shop.c5"]);
        assert_eq!(verdict.held.len(), 19);
    }

    #[test]
    fn the_floor_lets_small_fleets_delete_a_cluster_or_two() {
        let guard = MassDeletionGuard::default();
        assert!(!guard.is_mass(1, 1));
        assert!(!guard.is_mass(2, 3));
        assert!(guard.is_mass(3, 3));
        assert!(guard.is_mass(3, 10));
        assert!(!guard.is_mass(3, 15), "a fifth of 15 is 3");
    }

    #[test]
    fn the_share_is_a_percentage() {
        assert!(MassDeletionGuard::new(0).is_err());
        assert!(MassDeletionGuard::new(101).is_err());
        let all = MassDeletionGuard::new(100).unwrap();
        assert!(!all.is_mass(1_000, 1_000), "100 % never holds anything");
        assert_eq!(all.percent(), 100);
    }
}
