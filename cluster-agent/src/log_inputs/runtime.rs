//! The `runtime` input: container log lines the tailer read below `/var/log/pods`,
//! as OTLP records with the container's resource.
//!
//! Resource attributes: from the log file's path (`k8s.namespace.name`,
//! `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`, and
//! `k8s.container.restart_count` from the file name), the node and cluster, and on
//! request the pod's labels (`k8s.pod.label.<key>`) and annotations
//! (`k8s.pod.annotation.<key>`) from the [`PodMetadataCache`]. Record attributes:
//! `log.iostream` (`stdout` or `stderr`) and `log.file.path`. The record's time is
//! the runtime's timestamp (CRI or Docker); its observed time is when it was read.

use kaas_logfiles::{PodLogPath, Stream};
use kaas_proto::otlp::{LogRecord, Resource};

use super::pod_metadata::PodMetadataCache;
use super::resource::{NodeIdentity, body, int, text};

/// Prefix of a pod label attribute.
pub const POD_LABEL_PREFIX: &str = "k8s.pod.label.";
/// Prefix of a pod annotation attribute.
pub const POD_ANNOTATION_PREFIX: &str = "k8s.pod.annotation.";

/// What the runtime input adds from the pod watch.
#[derive(Debug, Clone, Default)]
pub struct PodEnrichment {
    /// The node's pods; `None` without a pod watch (standalone on a plain host).
    pub pods: Option<PodMetadataCache>,
    /// Add `k8s.pod.label.<key>` (some pipeline asked for `podLabels`).
    pub labels: bool,
    /// Add `k8s.pod.annotation.<key>` (some pipeline asked for `podAnnotations`).
    pub annotations: bool,
}

impl PodEnrichment {
    /// Takes the pod watch's latest snapshot, once per read.
    pub(super) fn refresh(&mut self) {
        if let Some(pods) = self.pods.as_mut() {
            pods.refresh();
        }
    }
}

/// The resource of one container's records.
pub(super) fn container_resource(
    path: &PodLogPath,
    node: &NodeIdentity,
    enrichment: &PodEnrichment,
) -> Resource {
    let mut attributes = vec![
        text("k8s.namespace.name", &path.namespace),
        text("k8s.pod.name", &path.pod),
        text("k8s.pod.uid", &path.uid),
        text("k8s.container.name", &path.container),
        int("k8s.container.restart_count", i64::from(path.restart_count)),
    ];
    attributes.extend(node.attributes());
    if let Some(pod) = enrichment.pods.as_ref().and_then(|p| p.get(&path.uid)) {
        let labels = pod.labels.iter().filter(|_| enrichment.labels);
        for (key, value) in labels {
            attributes.push(text(&format!("{POD_LABEL_PREFIX}{key}"), value));
        }
        let annotations = pod.annotations.iter().filter(|_| enrichment.annotations);
        for (key, value) in annotations {
            attributes.push(text(&format!("{POD_ANNOTATION_PREFIX}{key}"), value));
        }
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// One container log line as a record.
pub(super) fn container_record(record: kaas_logfiles::LogRecord, observed: u64) -> LogRecord {
    let mut attributes = Vec::with_capacity(2);
    if record.stream != Stream::Plain {
        attributes.push(text("log.iostream", record.stream.name()));
    }
    attributes.push(text("log.file.path", &record.file.path.to_string_lossy()));
    LogRecord {
        time_unix_nano: record.time_unix_nano.unwrap_or(0),
        observed_time_unix_nano: observed,
        body: body(record.body),
        attributes,
        ..LogRecord::default()
    }
}
