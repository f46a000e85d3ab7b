//! How much a pipeline may hold on disk while its backend is slow or away, and what
//! happens when that is full.

use std::num::NonZeroU64;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};
use crate::units::{ByteSize, format_duration, parse_duration};

/// Disk a pipeline's buffer may use by default. 1 GiB holds roughly an hour of 100,000
/// active series scraped every 30 s (about 15 bytes per compressed sample), which covers
/// a typical backend maintenance window without letting one pipeline fill a node's disk.
pub const DEFAULT_BUFFER_MAX_BYTES: u64 = 1 << 30;
/// The smallest buffer accepted: below one 1 MiB segment the buffer could not hold a
/// single large batch.
pub const MIN_BUFFER_BYTES: u64 = 1 << 20;
/// Disk the buffers of all pipelines on one agent may use together, unless the
/// provider sets another budget (the agent's `--buffer-budget`, the observer's
/// per-cluster setting). The shipped agent volume (`deploy/agent/base/pvc.yaml`) is
/// 4 GiB; 3 GiB leaves a quarter of it for the agent's identity, its last-known-good
/// configuration, ack files and the file system's overhead, and holds the central
/// pipeline's default 1 GiB plus two tenant pipelines at the default `maxBytes`.
pub const DEFAULT_BUFFER_BUDGET: u64 = 3 << 30;
/// Disk the log buffers of one node's agent instance may use together, unless the
/// provider sets another (the node agent's `--buffer-budget`, the observer's
/// `--node-buffer-budget`). A node instance keeps its buffers on a host path of its own
/// node (`deploy/agent/base/node-agent.yaml`), so every node has this budget of its
/// own, apart from the cluster-level instance's volume and from the other nodes. 2 GiB
/// holds the central log pipeline's default 1 GiB plus one tenant log pipeline at the
/// default `maxBytes`, and stays small beside the kubelet's image and log garbage
/// collection thresholds on a typical node disk of 50 GiB or more.
pub const DEFAULT_NODE_BUFFER_BUDGET: u64 = 2 << 30;
/// How old buffered data may get by default. 6 h rides out a backend outage over a
/// night shift's response time; Kyma drops after 5 minutes, Prometheus' WAL keeps about
/// 2 hours, and most receivers refuse samples older than a few hours anyway.
pub const DEFAULT_BUFFER_MAX_AGE: Duration = Duration::from_secs(6 * 3600);
/// The shortest maximum age accepted: shorter would drop data during an ordinary
/// backend restart.
pub const MIN_BUFFER_MAX_AGE: Duration = Duration::from_secs(60);

/// Disk buffer limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Buffer {
    /// Most bytes on disk, e.g. `512Mi`. Default `1Gi`; at least `1Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// Oldest data kept, as a Prometheus duration. Default `6h`; at least `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// What to do when `maxBytes` is reached. Default `dropOldest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_full: Option<WhenFull>,
}

/// The policy when a buffer is full. Either way the dropped samples are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WhenFull {
    /// Drop the oldest segment to make room: recent data matters most for alerting.
    #[default]
    DropOldest,
    /// Refuse new samples until there is room: keeps the history intact.
    DropNewest,
}

/// Checked buffer limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedBuffer {
    /// Most bytes on disk.
    pub max_bytes: NonZeroU64,
    /// Oldest data kept.
    pub max_age: Duration,
    /// Policy when full.
    pub when_full: WhenFull,
}

impl Buffer {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) -> ValidatedBuffer {
        let bytes_path = field(path, "maxBytes");
        let max_bytes = match self.max_bytes.as_ref().map(ByteSize::bytes) {
            None => DEFAULT_BUFFER_MAX_BYTES,
            Some(Ok(bytes)) if bytes >= MIN_BUFFER_BYTES => bytes,
            Some(Ok(bytes)) => {
                errors.add(
                    bytes_path,
                    format!("{bytes} bytes is below the minimum of 1Mi ({MIN_BUFFER_BYTES} bytes)"),
                );
                DEFAULT_BUFFER_MAX_BYTES
            }
            Some(Err(reason)) => {
                errors.add(bytes_path, reason);
                DEFAULT_BUFFER_MAX_BYTES
            }
        };
        let age_path = field(path, "maxAge");
        let max_age = match self.max_age.as_deref().map(parse_duration) {
            None => DEFAULT_BUFFER_MAX_AGE,
            Some(Ok(age)) if age >= MIN_BUFFER_MAX_AGE => age,
            Some(Ok(age)) => {
                errors.add(
                    age_path,
                    format!(
                        "{} is below the minimum of {}; shorter would drop data during an \
                         ordinary backend restart",
                        format_duration(age),
                        format_duration(MIN_BUFFER_MAX_AGE)
                    ),
                );
                DEFAULT_BUFFER_MAX_AGE
            }
            Some(Err(reason)) => {
                errors.add(age_path, reason);
                DEFAULT_BUFFER_MAX_AGE
            }
        };
        ValidatedBuffer {
            max_bytes: NonZeroU64::new(max_bytes).unwrap_or(NonZeroU64::MIN),
            max_age,
            when_full: self.when_full.unwrap_or_default(),
        }
    }
}
