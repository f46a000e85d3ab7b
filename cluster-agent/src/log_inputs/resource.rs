//! What every input puts on its records' resource: the node and the cluster they were
//! read on, and the typed attribute values the inputs build records from.

use kaas_proto::otlp::{AnyValue, KeyValue, any_value::Value};

/// `k8s.node.name`.
pub const NODE_NAME: &str = "k8s.node.name";
/// `k8s.cluster.name`.
pub const CLUSTER_NAME: &str = "k8s.cluster.name";

/// The node the agent runs on and the cluster it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `k8s.node.name` (the agent's `NODE_NAME`, from the downward API).
    pub node_name: String,
    /// `k8s.cluster.name` (the cluster's name as the observer knows it).
    pub cluster_name: String,
}

impl NodeIdentity {
    /// The node and cluster attributes.
    pub(super) fn attributes(&self) -> Vec<KeyValue> {
        vec![
            text(NODE_NAME, &self.node_name),
            text(CLUSTER_NAME, &self.cluster_name),
        ]
    }
}

/// A string attribute.
pub(super) fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
    }
}

/// An integer attribute.
pub(super) fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
    }
}

/// A string body.
pub(super) fn body(text: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(text)),
    })
}

/// Now, in nanoseconds since the epoch: a record's observed time.
pub(crate) fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
