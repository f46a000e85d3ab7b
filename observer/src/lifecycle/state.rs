//! [`ClusterState`]: a cluster's place in its lifecycle, and every question the rest of
//! the observer asks about it, each answered once here.
//!
//! # States × predicates
//! Every caller asks a predicate, never compares states itself; the table is the whole
//! policy, and each cell has its own unit test below.
//!
//! | state          | [`receives_config`] | [`is_probed`] | [`in_hashring`] | [`is_exported`] | [`alerts_suppressed`] | [`is_leaving`] | [`is_tombstone`] | [`restored_when_listed`] |
//! |----------------|:---:|:---:|:---:|:---:|:---:|:---:|:---:|:---:|
//! | `provisioning` | yes | yes | yes | yes | yes | no  | no  | no  |
//! | `active`       | yes | yes | yes | yes | no  | no  | no  | no  |
//! | `silent`       | yes | yes | yes | yes | no  | no  | no  | no  |
//! | `lost`         | yes | yes | yes | yes | no  | no  | no  | yes |
//! | `deleting`     | yes | no  | yes | yes | yes | yes | no  | yes |
//! | `deleted`      | no  | no  | no  | yes | yes | yes | yes | no  |
//!
//! Why a deleting cluster still receives its configuration and keeps its tenant in
//! the hashring: deletion is being carried out (an onboarding source waits out its
//! grace polls, the agent may still run), and whatever it still sends must be accepted
//! until the tombstone is written. It is no longer probed and takes nothing new
//! (probe endpoints, buffer budgets, join tokens), because it is going.
//!
//! Why a lost cluster is treated like a live one in every column: `lost` says only
//! that its onboarding source no longer knows it (a Cluster API `Cluster` carrying the
//! observer's finalizer disappeared without a deletion the observer saw). Nothing says
//! the cluster itself is gone, so its agent keeps its configuration and its data, its
//! endpoint is still probed, and its alerts fire (one of them, `KaasClusterLost`,
//! says it is lost) until an operator deletes it or the object comes back.
//!
//! [`receives_config`]: ClusterState::receives_config
//! [`is_probed`]: ClusterState::is_probed
//! [`in_hashring`]: ClusterState::in_hashring
//! [`is_exported`]: ClusterState::is_exported
//! [`alerts_suppressed`]: ClusterState::alerts_suppressed
//! [`is_leaving`]: ClusterState::is_leaving
//! [`is_tombstone`]: ClusterState::is_tombstone
//! [`restored_when_listed`]: ClusterState::restored_when_listed

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A cluster's lifecycle state, stored by its lower-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Registered; its agent has not connected yet.
    Provisioning,
    /// The agent reports in.
    Active,
    /// The agent has not been heard from for longer than `--silent-after`.
    Silent,
    /// Its onboarding source lost it without a deletion the observer saw (a Cluster
    /// API `Cluster` carrying the observer's finalizer disappeared): it alerts, and
    /// only its source listing it again or an operator's deletion moves it.
    Lost,
    /// Being removed.
    Deleting,
    /// Tombstone: the name stays taken and its certificates are refused.
    Deleted,
}

impl ClusterState {
    /// Every state, in lifecycle order.
    pub const ALL: [ClusterState; 6] = [
        Self::Provisioning,
        Self::Active,
        Self::Silent,
        Self::Lost,
        Self::Deleting,
        Self::Deleted,
    ];

    /// The lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Silent => "silent",
            Self::Lost => "lost",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    /// The state a cluster moves to when its agent is heard from (join, stream hello,
    /// heartbeat, report): provisioning and silent become active; the others stay, since
    /// an agent cannot undo its cluster's deletion, nor bring back the source object
    /// whose loss made it `lost`.
    pub fn when_heard_from(self) -> ClusterState {
        match self {
            Self::Provisioning | Self::Silent => Self::Active,
            Self::Active | Self::Lost | Self::Deleting | Self::Deleted => self,
        }
    }

    /// Its agent may open a control stream and is sent its rendered configuration,
    /// and the cluster counts in its pipelines' status. Everything but a tombstone.
    pub fn receives_config(self) -> bool {
        !self.is_tombstone()
    }

    /// The observer probes its API endpoint and the probe endpoints bound to it.
    /// Only while it is meant to exist: not once its deletion has begun.
    pub fn is_probed(self) -> bool {
        !self.is_leaving()
    }

    /// Its tenant is admitted by the Thanos receive hashring (`thanos/hashring.json`),
    /// so what its agent still sends is accepted. Everything but a tombstone.
    pub fn in_hashring(self) -> bool {
        !self.is_tombstone()
    }

    /// The fleet series (`kaas_cluster_info{state}` and the rest) are served and
    /// written for it. Every state, tombstones included: the rules must see `deleted`
    /// to stay quiet about a cluster that is gone.
    pub fn is_exported(self) -> bool {
        true
    }

    /// The cluster's alerts are suppressed by the rules' guard
    /// `unless on (cluster) (kaas_cluster_info{state=~"deleted|deleting|provisioning"} == 1)`
    /// (`alerts/kubernetes.rules.yaml`): nothing to alert on before its agent first
    /// reports, nor once it is being deleted. A silent cluster alerts, and so does a
    /// lost one.
    pub fn alerts_suppressed(self) -> bool {
        matches!(self, Self::Provisioning | Self::Deleting | Self::Deleted)
    }

    /// Its deletion has begun (deleting or deleted): it takes nothing new (probe
    /// endpoints, buffer budgets, join tokens) and counts in no pipeline's selection
    /// for new work.
    pub fn is_leaving(self) -> bool {
        matches!(self, Self::Deleting | Self::Deleted)
    }

    /// The tombstone of a deleted cluster: its name stays taken within the tenant,
    /// its join tokens and certificates are refused, and nothing about it changes
    /// any more. It no longer counts against the tenant's quota.
    pub fn is_tombstone(self) -> bool {
        matches!(self, Self::Deleted)
    }

    /// Its onboarding source listing it again (a live `Cluster` object, an inventory
    /// entry) returns it to the state it would have without the interruption: a
    /// `deleting` cluster whose deletion was taken back, a `lost` one whose object is
    /// back. A tombstone never comes back this way: its name is registered again as a
    /// new incarnation instead.
    pub fn restored_when_listed(self) -> bool {
        matches!(self, Self::Lost | Self::Deleting)
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClusterState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown cluster state {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::ClusterState::{self, Active, Deleted, Deleting, Lost, Provisioning, Silent};

    /// One test per cell of the table in the module documentation.
    macro_rules! cells {
        ($($test:ident: $state:ident.$predicate:ident() == $expected:literal;)*) => {
            $(
                #[test]
                fn $test() {
                    assert_eq!($state.$predicate(), $expected);
                }
            )*
        };
    }

    cells! {
        provisioning_receives_config: Provisioning.receives_config() == true;
        provisioning_is_probed: Provisioning.is_probed() == true;
        provisioning_in_hashring: Provisioning.in_hashring() == true;
        provisioning_is_exported: Provisioning.is_exported() == true;
        provisioning_alerts_suppressed: Provisioning.alerts_suppressed() == true;
        provisioning_is_leaving: Provisioning.is_leaving() == false;
        provisioning_is_tombstone: Provisioning.is_tombstone() == false;
        provisioning_restored_when_listed: Provisioning.restored_when_listed() == false;
        active_receives_config: Active.receives_config() == true;
        active_is_probed: Active.is_probed() == true;
        active_in_hashring: Active.in_hashring() == true;
        active_is_exported: Active.is_exported() == true;
        active_alerts_suppressed: Active.alerts_suppressed() == false;
        active_is_leaving: Active.is_leaving() == false;
        active_is_tombstone: Active.is_tombstone() == false;
        active_restored_when_listed: Active.restored_when_listed() == false;
        silent_receives_config: Silent.receives_config() == true;
        silent_is_probed: Silent.is_probed() == true;
        silent_in_hashring: Silent.in_hashring() == true;
        silent_is_exported: Silent.is_exported() == true;
        silent_alerts_suppressed: Silent.alerts_suppressed() == false;
        silent_is_leaving: Silent.is_leaving() == false;
        silent_is_tombstone: Silent.is_tombstone() == false;
        silent_restored_when_listed: Silent.restored_when_listed() == false;
        lost_receives_config: Lost.receives_config() == true;
        lost_is_probed: Lost.is_probed() == true;
        lost_in_hashring: Lost.in_hashring() == true;
        lost_is_exported: Lost.is_exported() == true;
        lost_alerts_suppressed: Lost.alerts_suppressed() == false;
        lost_is_leaving: Lost.is_leaving() == false;
        lost_is_tombstone: Lost.is_tombstone() == false;
        lost_restored_when_listed: Lost.restored_when_listed() == true;
        deleting_receives_config: Deleting.receives_config() == true;
        deleting_is_probed: Deleting.is_probed() == false;
        deleting_in_hashring: Deleting.in_hashring() == true;
        deleting_is_exported: Deleting.is_exported() == true;
        deleting_alerts_suppressed: Deleting.alerts_suppressed() == true;
        deleting_is_leaving: Deleting.is_leaving() == true;
        deleting_is_tombstone: Deleting.is_tombstone() == false;
        deleting_restored_when_listed: Deleting.restored_when_listed() == true;
        deleted_receives_config: Deleted.receives_config() == false;
        deleted_is_probed: Deleted.is_probed() == false;
        deleted_in_hashring: Deleted.in_hashring() == false;
        deleted_is_exported: Deleted.is_exported() == true;
        deleted_alerts_suppressed: Deleted.alerts_suppressed() == true;
        deleted_is_leaving: Deleted.is_leaving() == true;
        deleted_is_tombstone: Deleted.is_tombstone() == true;
        deleted_restored_when_listed: Deleted.restored_when_listed() == false;
    }

    fn predicate(name: &str) -> fn(ClusterState) -> bool {
        match name {
            "receives_config" => ClusterState::receives_config,
            "is_probed" => ClusterState::is_probed,
            "in_hashring" => ClusterState::in_hashring,
            "is_exported" => ClusterState::is_exported,
            "alerts_suppressed" => ClusterState::alerts_suppressed,
            "is_leaving" => ClusterState::is_leaving,
            "is_tombstone" => ClusterState::is_tombstone,
            "restored_when_listed" => ClusterState::restored_when_listed,
            other => panic!("the table names no predicate {other:?}"),
        }
    }

    /// The table a reader sees is the one the code decides, cell for cell.
    #[test]
    fn the_documented_table_is_what_the_predicates_answer() {
        let source = include_str!("state.rs");
        let rows: Vec<Vec<&str>> = source
            .lines()
            .filter_map(|line| line.strip_prefix("//! |"))
            .map(|row| {
                row.split('|')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        let header: Vec<&str> = rows[0][1..]
            .iter()
            .map(|cell| cell.trim_matches(|c| c == '[' || c == ']' || c == '`'))
            .collect();
        let mut states = Vec::new();
        for row in rows.iter().skip(2) {
            let state: ClusterState = row[0].trim_matches('`').parse().unwrap();
            states.push(state);
            for (name, cell) in header.iter().zip(&row[1..]) {
                let documented = match *cell {
                    "yes" => true,
                    "no" => false,
                    other => panic!("cell {other:?} of {state} {name} is neither yes nor no"),
                };
                assert_eq!(predicate(name)(state), documented, "{state} {name}");
            }
        }
        assert_eq!(
            states,
            ClusterState::ALL,
            "the table has a row per state, in order"
        );
    }

    /// Every alert rule's guard suppresses exactly the states whose alerts are
    /// suppressed.
    #[test]
    fn the_alert_rules_suppress_exactly_the_suppressed_states() {
        let rules = include_str!("../../../alerts/kubernetes.rules.yaml");
        let expected: BTreeSet<&str> = ClusterState::ALL
            .into_iter()
            .filter(|s| s.alerts_suppressed())
            .map(ClusterState::as_str)
            .collect();
        let guard = "unless on (cluster) (kaas_cluster_info{state=~\"";
        let mut guards = 0;
        for (_, rest) in rules
            .match_indices(guard)
            .map(|(at, _)| rules.split_at(at + guard.len()))
        {
            let (states, _) = rest.split_once('"').unwrap();
            assert_eq!(states.split('|').collect::<BTreeSet<_>>(), expected);
            guards += 1;
        }
        assert!(guards > 0, "no guard found in the rules");
    }

    #[test]
    fn hearing_from_the_agent_revives_only_a_cluster_that_is_not_being_deleted() {
        let heard: Vec<ClusterState> = ClusterState::ALL
            .into_iter()
            .map(ClusterState::when_heard_from)
            .collect();
        assert_eq!(heard, [Active, Active, Active, Lost, Deleting, Deleted]);
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for state in ClusterState::ALL {
            assert_eq!(state.as_str().parse::<ClusterState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert!("gone".parse::<ClusterState>().is_err());
    }
}
