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

/// Reasons used in conditions; each names one cause a user can act on.
pub mod reasons {
    /// The configuration was applied everywhere.
    pub const APPLIED: &str = "Applied";
    /// An agent refused the configuration; the message says why.
    pub const CONFIG_REJECTED: &str = "ConfigRejected";
    /// The configuration rendered for a cluster is over the size limit, so the observer
    /// did not send it; the message names the cluster, the size and the limit.
    pub const CONFIG_TOO_LARGE: &str = "ConfigTooLarge";
    /// The backend could not be reached.
    pub const BACKEND_UNREACHABLE: &str = "BackendUnreachable";
    /// The buffer holds more than half of its limit.
    pub const BUFFER_FILLING_UP: &str = "BufferFillingUp";
    /// Samples were dropped.
    pub const DATA_DROPPED: &str = "DataDropped";
    /// A referenced Secret or key does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// The agent's disk buffer could not store data: its volume is full or failing.
    pub const BUFFER_WRITE_FAILED: &str = "BufferWriteFailed";
    /// The pipelines on a cluster ask for more buffer than its budget: this one runs
    /// with a smaller buffer than its `maxBytes`.
    pub const BUFFER_BUDGET_EXCEEDED: &str = "BufferBudgetExceeded";
    /// A kubelet's serving certificate is not signed by the cluster CA; the message
    /// names the fixes (kubelet serving certificates, or the provider's per-cluster
    /// setting to skip the verification).
    pub const KUBELET_CERTIFICATE_UNTRUSTED: &str = "KubeletCertificateUntrusted";
    /// A target carrying the agent's credentials was moved by relabeling and is not
    /// scraped.
    pub const TARGET_SEALED: &str = "TargetSealed";
    /// Everything is fine.
    pub const FLOW_HEALTHY: &str = "FlowHealthy";
    /// The observer cannot read the pipeline as stored (its secrets were sealed with a
    /// key it was not given, or for another object); it is left out of every cluster's
    /// configuration until it is applied again.
    pub const STORED_SPEC_UNREADABLE: &str = "StoredSpecUnreadable";
}

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
