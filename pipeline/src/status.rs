//! Kubernetes-style status of a pipeline: conditions with type, status, reason,
//! message and observedGeneration, as the Kyma telemetry module and Kubernetes itself
//! report them. The observer writes it from agent reports; users only read it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the pipeline's configuration reached its clusters' agents and they
/// applied it.
pub const CONDITION_CONFIGURATION_APPLIED: &str = "ConfigurationApplied";
/// Condition type: the agents of the selected clusters are connected.
pub const CONDITION_AGENT_CONNECTED: &str = "AgentConnected";
/// Condition type: data flows to the backend without loss.
pub const CONDITION_FLOW_HEALTHY: &str = "FlowHealthy";

/// A condition's reason: each names one cause a user can act on. The set is closed, so
/// a condition's reason is always one of these (an agent's own error reason that is
/// none of them becomes [`Reason::FlowInterrupted`], its text kept in the message).
/// On the wire and in the store a reason is its [`as_str`](Reason::as_str) text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The configuration was applied everywhere.
    Applied,
    /// An agent refused the configuration; the message says why.
    ConfigRejected,
    /// The configuration rendered for a cluster is over the size limit, so the observer
    /// did not send it; the message names the cluster, the size and the limit.
    ConfigTooLarge,
    /// Some agents have not reported the current configuration yet.
    Pending,
    /// A selected cluster's agent predates this kind of pipeline (it does not announce
    /// running it), so it is sent its configuration without the pipeline; the message
    /// names the clusters. Upgrading the agent applies it.
    AgentUnsupported,
    /// The observer cannot read the pipeline as stored (its secrets were sealed with a
    /// key it was not given, or for another object); it is left out of every cluster's
    /// configuration until it is applied again.
    StoredSpecUnreadable,
    /// No cluster matches the pipeline's `clusterSelector`.
    NoClusters,
    /// No selected cluster has a connected agent.
    NoAgentConnected,
    /// Every selected cluster's agent is connected.
    Connected,
    /// Some selected cluster's agent is not connected.
    AgentDisconnected,
    /// No connected agent has reported health for the pipeline yet.
    NoHealthReports,
    /// Everything is fine.
    FlowHealthy,
    /// The backend could not be reached.
    BackendUnreachable,
    /// The buffer holds more than half of its limit.
    BufferFillingUp,
    /// Samples were dropped.
    DataDropped,
    /// A referenced Secret or key does not exist.
    SecretMissing,
    /// A referenced Secret key holds a value the agent refuses (a bound URL that a
    /// pipeline may not send to); the message names the field and the reference, never
    /// the value. A value that was good before keeps being used.
    SecretInvalid,
    /// The agent's disk buffer could not store data: its volume is full or failing.
    BufferWriteFailed,
    /// The pipelines on a cluster ask for more buffer than its budget: this one runs
    /// with a smaller buffer than its `maxBytes`.
    BufferBudgetExceeded,
    /// A kubelet's serving certificate is not signed by the cluster CA; the message
    /// names the fixes (kubelet serving certificates, or the provider's per-cluster
    /// setting to skip the verification).
    KubeletCertificateUntrusted,
    /// A target carrying the agent's credentials was moved by relabeling and is not
    /// scraped.
    TargetSealed,
    /// The agent reported an error not covered by a more specific reason.
    FlowInterrupted,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 22] = [
        Reason::Applied,
        Reason::ConfigRejected,
        Reason::ConfigTooLarge,
        Reason::Pending,
        Reason::AgentUnsupported,
        Reason::StoredSpecUnreadable,
        Reason::NoClusters,
        Reason::NoAgentConnected,
        Reason::Connected,
        Reason::AgentDisconnected,
        Reason::NoHealthReports,
        Reason::FlowHealthy,
        Reason::BackendUnreachable,
        Reason::BufferFillingUp,
        Reason::DataDropped,
        Reason::SecretMissing,
        Reason::SecretInvalid,
        Reason::BufferWriteFailed,
        Reason::BufferBudgetExceeded,
        Reason::KubeletCertificateUntrusted,
        Reason::TargetSealed,
        Reason::FlowInterrupted,
    ];

    /// The CamelCase text of the reason, as conditions carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "Applied",
            Reason::ConfigRejected => "ConfigRejected",
            Reason::ConfigTooLarge => "ConfigTooLarge",
            Reason::Pending => "Pending",
            Reason::AgentUnsupported => "AgentUnsupported",
            Reason::StoredSpecUnreadable => "StoredSpecUnreadable",
            Reason::NoClusters => "NoClusters",
            Reason::NoAgentConnected => "NoAgentConnected",
            Reason::Connected => "Connected",
            Reason::AgentDisconnected => "AgentDisconnected",
            Reason::NoHealthReports => "NoHealthReports",
            Reason::FlowHealthy => "FlowHealthy",
            Reason::BackendUnreachable => "BackendUnreachable",
            Reason::BufferFillingUp => "BufferFillingUp",
            Reason::DataDropped => "DataDropped",
            Reason::SecretMissing => "SecretMissing",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::BufferWriteFailed => "BufferWriteFailed",
            Reason::BufferBudgetExceeded => "BufferBudgetExceeded",
            Reason::KubeletCertificateUntrusted => "KubeletCertificateUntrusted",
            Reason::TargetSealed => "TargetSealed",
            Reason::FlowInterrupted => "FlowInterrupted",
        }
    }

    /// The reason whose text is `text`, if any.
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    /// Whether an agent reports this reason as a pipeline's error (in a health
    /// report); the observer keeps it as the `FlowHealthy` reason.
    pub const fn is_agent_error(self) -> bool {
        matches!(
            self,
            Reason::SecretMissing
                | Reason::SecretInvalid
                | Reason::BackendUnreachable
                | Reason::DataDropped
                | Reason::BufferFillingUp
                | Reason::BufferWriteFailed
                | Reason::BufferBudgetExceeded
                | Reason::KubeletCertificateUntrusted
                | Reason::TargetSealed
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The texts of the reasons agents report, for the agent's code that names them as
/// strings (see [`Reason`] for each one's meaning).
pub mod reasons {
    use super::Reason;

    /// [`Reason::Applied`].
    pub const APPLIED: &str = Reason::Applied.as_str();
    /// [`Reason::ConfigRejected`].
    pub const CONFIG_REJECTED: &str = Reason::ConfigRejected.as_str();
    /// [`Reason::ConfigTooLarge`].
    pub const CONFIG_TOO_LARGE: &str = Reason::ConfigTooLarge.as_str();
    /// [`Reason::BackendUnreachable`].
    pub const BACKEND_UNREACHABLE: &str = Reason::BackendUnreachable.as_str();
    /// [`Reason::BufferFillingUp`].
    pub const BUFFER_FILLING_UP: &str = Reason::BufferFillingUp.as_str();
    /// [`Reason::DataDropped`].
    pub const DATA_DROPPED: &str = Reason::DataDropped.as_str();
    /// [`Reason::SecretMissing`].
    pub const SECRET_MISSING: &str = Reason::SecretMissing.as_str();
    /// [`Reason::SecretInvalid`].
    pub const SECRET_INVALID: &str = Reason::SecretInvalid.as_str();
    /// [`Reason::BufferWriteFailed`].
    pub const BUFFER_WRITE_FAILED: &str = Reason::BufferWriteFailed.as_str();
    /// [`Reason::BufferBudgetExceeded`].
    pub const BUFFER_BUDGET_EXCEEDED: &str = Reason::BufferBudgetExceeded.as_str();
    /// [`Reason::KubeletCertificateUntrusted`].
    pub const KUBELET_CERTIFICATE_UNTRUSTED: &str = Reason::KubeletCertificateUntrusted.as_str();
    /// [`Reason::TargetSealed`].
    pub const TARGET_SEALED: &str = Reason::TargetSealed.as_str();
    /// [`Reason::FlowHealthy`].
    pub const FLOW_HEALTHY: &str = Reason::FlowHealthy.as_str();
    /// [`Reason::StoredSpecUnreadable`].
    pub const STORED_SPEC_UNREADABLE: &str = Reason::StoredSpecUnreadable.as_str();
}

/// Whether the agent applied, is applying or refused a configuration (the
/// `ConfigStatus` states of the control protocol); the store keeps the
/// [`as_str`](AgentConfigState::as_str) text, and serializes it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AgentConfigState {
    /// The agent is applying it.
    Applying,
    /// The agent runs it.
    Applied,
    /// The agent refused it and runs its last good configuration.
    Failed,
}

impl AgentConfigState {
    /// The stored text: `APPLYING`, `APPLIED` or `FAILED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentConfigState::Applying => "APPLYING",
            AgentConfigState::Applied => "APPLIED",
            AgentConfigState::Failed => "FAILED",
        }
    }

    /// The state whose stored text is `text`, if any.
    pub fn parse(text: &str) -> Option<AgentConfigState> {
        [
            AgentConfigState::Applying,
            AgentConfigState::Applied,
            AgentConfigState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// The status of a `LogPipeline`: the same conditions, types and reasons as a metric
/// pipeline's, so tools read both kinds alike.
pub type LogPipelineStatus = MetricPipelineStatus;

/// The status of a `TracePipeline`: the same conditions, types and reasons as a metric
/// pipeline's, so tools read every kind alike.
pub type TracePipelineStatus = MetricPipelineStatus;

/// What the observer knows about a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricPipelineStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions, one per type.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The pipeline carries raw Prometheus scrape configs
    /// (`spec.input.unsupported.scrapeConfigs`): what it scrapes is not supported by
    /// the provider. Left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsupported_mode: bool,
}

/// One aspect of the pipeline's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect, e.g. `ConfigurationApplied`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase cause, e.g. `BackendUnreachable`.
    pub reason: String,
    /// Details for a human. Never contains a secret.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed, RFC 3339.
    pub last_transition_time: String,
    /// The generation of the spec this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition's truth value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_text_and_the_texts_differ() {
        let mut texts = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert!(texts.insert(reason.as_str()), "{reason} twice");
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
        assert_eq!(reasons::APPLIED, "Applied");
    }

    #[test]
    fn config_states_read_back_from_their_stored_text() {
        for state in [
            AgentConfigState::Applying,
            AgentConfigState::Applied,
            AgentConfigState::Failed,
        ] {
            assert_eq!(AgentConfigState::parse(state.as_str()), Some(state));
        }
        assert_eq!(AgentConfigState::parse("applied"), None);
    }
}
