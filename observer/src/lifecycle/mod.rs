//! Cluster lifecycle: the states a cluster goes through ([`ClusterState`], with the
//! table of what each state means for configuration, probes, the hashring, export and
//! alerts in [`state`]), the policy that tells a cluster whose monitoring broke
//! (silent) from one a customer deleted on purpose (deleted), so that rules in Thanos
//! can alert on the first and stay quiet for the second, and the mass-deletion guard
//! ([`guard`]) that keeps a faulty list from deleting the fleet. The tick that applies
//! the policy to every cluster and serves the states as metrics is [`crate::fleet`].
//! This replaces the seed's "kaas-metric-importer" shell loop.
//!
//! # Design note: deletion on positive evidence
//!
//! ## States and how each is entered
//! - `provisioning`: the cluster is registered (API, CLI or an onboarding source); no
//!   agent has connected yet.
//! - `active`: entered when the cluster's agent is heard from (join, stream hello,
//!   heartbeat, report): the store's report writer (`store::reports`) moves
//!   provisioning and silent clusters here ([`ClusterState::when_heard_from`]).
//! - `silent`: entered by the fleet tick ([`crate::fleet`]) by [`next_state`] when an
//!   active cluster's agent has not been heard from for longer than `--silent-after`,
//!   while the cluster still exists.
//! - `lost`: entered by the Cluster API source's relist when a `Cluster` that carried
//!   the observer's finalizer is gone although the observer never saw its deletion.
//!   Absence is not evidence of deletion, so a lost cluster alerts (`KaasClusterLost`)
//!   and keeps everything a live cluster has; it leaves `lost` when its object is
//!   listed again (back to the state it would have, [`ClusterState::restored_when_listed`])
//!   or when an operator deletes it.
//! - `deleting` / `deleted`: entered only on positive evidence: an explicit deletion
//!   (API, CLI), a Cluster API `Cluster` carrying the finalizer observed with a
//!   `deletionTimestamp`, an inventory entry marked deleted, or an inventory cluster
//!   absent from N consecutive successful lists over a grace period (`deleting` at the
//!   first absence, reversible; `deleted` after both). `deleted` is a tombstone: the
//!   name stays with the tenant and its certificates are refused.
//!
//! ## Invariants
//! - **A failed or empty list deletes nothing.** A source changes state only on a
//!   successful, non-empty answer (an empty one is refused while it manages clusters:
//!   an RBAC change or a broken cache answers exactly that). Missing counts are kept
//!   only across successful answers.
//! - **No pass deletes a large share of the fleet unconfirmed** ([`guard`]): a pass
//!   whose changes out of the live fleet (to `deleting`, `deleted` or `lost`) exceed
//!   `--mass-deletion-percent` of the source's clusters applies none of them; they are
//!   stored as pending (`store::deletions`, so every replica and a restart see them),
//!   counted (`kaas_observer_deletions_pending`), alerted on
//!   (`KaasClusterDeletionsPaused`), shown by `GET /api/v1/status`, and wait for an
//!   administrator's `observer cluster confirm-deletions` (audited). The next pass
//!   applies the confirmed changes whose evidence still holds and forgets those whose
//!   evidence went away.
//! - **Incarnations.** A tombstone's name can be registered again: the same global id
//!   gets a new incarnation (a new random id), and the tombstone moves into the
//!   history (`cluster_tombstones`, audited as `re-register`) with its certificates
//!   revoked and its join tokens deleted, so they stay refused. Everything keyed by the
//!   global id (the `cluster` label, `kaas_cluster_info` and the other fleet series,
//!   the alert guards) then describes the current incarnation only: a re-registered
//!   name alerts like any new cluster while its tombstone exists (served apart, as
//!   `kaas_cluster_tombstone_info`).
//!
//! ## Why no lost event can mark a cluster deleted or alive
//! Silence is level-triggered: every tick re-reads every cluster's `last_seen` from the
//! database and compares it with the clock, so a missed heartbeat, a dropped stream or
//! an observer restart can delay a transition by one tick but never skip or invent
//! one. Liveness comes only from the agent itself (authenticated by its client
//! certificate), never from the absence of a deletion. Deletion comes only from the
//! positive evidence above, never from silence and never from a single absence: a
//! silent cluster stays silent, and alerts, until someone deletes it. With several
//! replicas each runs the same idempotent tick against the shared database; each
//! onboarding source runs on one replica (a store lease), and its pending deletions
//! live in the database, so a failover keeps them.
//!
//! ## On crash
//! Every transition is one store mutation with its audit row. A crash between a pass's
//! changes leaves some applied and the rest for the next pass, which recomputes them
//! from the source; the held set is replaced whole at the end of each pass, so at worst
//! it is one pass old.

pub mod guard;
pub mod state;

use std::time::Duration;

pub use state::ClusterState;

/// The default silence threshold (see `observer serve --silent-after`).
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(300);

/// What the lifecycle policy reads of a cluster (the store's `Cluster` is one).
pub trait HeardFrom {
    /// The cluster's current state.
    fn state(&self) -> ClusterState;
    /// When its agent was last heard from, Unix milliseconds; `None` if never.
    fn last_seen_ms(&self) -> Option<i64>;
    /// When the cluster was registered, Unix milliseconds.
    fn created_at_ms(&self) -> i64;
}

/// The state `cluster` should move to at `now_ms`, if any. Pure: the whole policy.
pub fn next_state(
    cluster: &impl HeardFrom,
    now_ms: i64,
    silent_after: Duration,
) -> Option<ClusterState> {
    let silent_after_ms = i64::try_from(silent_after.as_millis()).unwrap_or(i64::MAX);
    match cluster.state() {
        ClusterState::Active => {
            let last_seen = cluster.last_seen_ms().unwrap_or(cluster.created_at_ms());
            (now_ms.saturating_sub(last_seen) > silent_after_ms).then_some(ClusterState::Silent)
        }
        // Provisioning waits for its first agent; silent waits for the agent to return
        // (the store moves it back on contact) or for a deletion; deleting and deleted
        // are decided by whoever deletes.
        ClusterState::Provisioning
        | ClusterState::Silent
        | ClusterState::Lost
        | ClusterState::Deleting
        | ClusterState::Deleted => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Heard {
        state: ClusterState,
        last_seen_ms: Option<i64>,
    }

    impl HeardFrom for Heard {
        fn state(&self) -> ClusterState {
            self.state
        }
        fn last_seen_ms(&self) -> Option<i64> {
            self.last_seen_ms
        }
        fn created_at_ms(&self) -> i64 {
            1_000
        }
    }

    fn cluster(state: ClusterState, last_seen_ms: Option<i64>) -> Heard {
        Heard {
            state,
            last_seen_ms,
        }
    }

    const MINUTE: i64 = 60_000;

    #[test]
    fn an_active_cluster_goes_silent_only_after_the_threshold() {
        let five_minutes = Duration::from_secs(300);
        let seen = 10 * MINUTE;
        let active = cluster(ClusterState::Active, Some(seen));
        assert_eq!(next_state(&active, seen + 5 * MINUTE, five_minutes), None);
        assert_eq!(
            next_state(&active, seen + 5 * MINUTE + 1, five_minutes),
            Some(ClusterState::Silent)
        );
    }

    #[test]
    fn only_an_agent_or_a_deletion_moves_the_other_states() {
        let long_ago = Some(0);
        let much_later = 1_000 * MINUTE;
        for state in [
            ClusterState::Provisioning,
            ClusterState::Silent,
            ClusterState::Lost,
            ClusterState::Deleting,
            ClusterState::Deleted,
        ] {
            assert_eq!(
                next_state(
                    &cluster(state, long_ago),
                    much_later,
                    Duration::from_secs(1)
                ),
                None,
                "{state}"
            );
        }
    }

    #[test]
    fn an_active_cluster_never_heard_from_counts_from_its_creation() {
        let active = cluster(ClusterState::Active, None);
        assert_eq!(
            next_state(&active, 1_000 + 2 * MINUTE, Duration::from_secs(60)),
            Some(ClusterState::Silent)
        );
    }
}
