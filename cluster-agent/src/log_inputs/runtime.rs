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
//!
//! The tailer reads every container once; which of them a pipeline takes is its
//! [`RuntimeSelection`] (namespaces, containers, pods by label), applied by the
//! pipeline's consumer to the shared batch.

use kaas_logfiles::{PodLogPath, Stream};
use kaas_pipeline::input::NamespaceSelector;
use kaas_pipeline::logs::input::{ContainerSelector, ValidatedRuntimeLogInput};
use kaas_pipeline::selector::PodSelector;
use kaas_proto::otlp::{KeyValue, LogRecord, Resource, ResourceLogs, any_value::Value};

use super::consumer::LogBatch;
use super::pod_metadata::PodMetadataCache;
use super::resource::{NodeIdentity, body, int, text};
use crate::processing::logs::attributes::find;

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

/// Which container logs one pipeline takes: its `input.runtime` namespaces,
/// containers and pod selector.
#[derive(Debug, Clone)]
pub struct RuntimeSelection {
    namespaces: NamespaceSelector,
    containers: ContainerSelector,
    pods: PodSelector,
}

impl RuntimeSelection {
    /// The selection of a pipeline's validated runtime input.
    pub fn new(input: &ValidatedRuntimeLogInput) -> Self {
        Self {
            namespaces: input.namespaces.clone(),
            containers: input.containers.clone(),
            pods: input.pod_selector.clone(),
        }
    }

    /// The containers of `batch` this pipeline takes, cloned for its processing;
    /// empty when it takes none (complete the batch as `Outcome::NotTaken`). Records
    /// of other inputs (no namespace on their resource) are not taken. The pod
    /// selector needs the pod's labels from `pods`: a pod the watch has not
    /// published yet is taken (its namespace and container still decide), so that
    /// a new pod's first lines are not lost to the watch's delay.
    pub fn select(&self, batch: &LogBatch, pods: Option<&PodMetadataCache>) -> Vec<ResourceLogs> {
        batch
            .resource_logs
            .iter()
            .filter(|resource_logs| self.admits(resource_logs, pods))
            .cloned()
            .collect()
    }

    /// Whether this pipeline takes the container records of `resource_logs` (see
    /// [`Self::select`]).
    pub fn admits(&self, resource_logs: &ResourceLogs, pods: Option<&PodMetadataCache>) -> bool {
        let attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        let (Some(namespace), Some(container)) =
            (string(attributes, NAMESPACE), string(attributes, CONTAINER))
        else {
            return false;
        };
        let pod = string(attributes, POD_UID).and_then(|uid| pods.and_then(|pods| pods.get(uid)));
        self.namespaces.admits(namespace)
            && self.containers.admits(container)
            && pod.is_none_or(|pod| pod.selected_by(&self.pods))
    }
}

/// `k8s.namespace.name`.
const NAMESPACE: &str = "k8s.namespace.name";
/// `k8s.container.name`.
const CONTAINER: &str = "k8s.container.name";
/// `k8s.pod.uid`.
const POD_UID: &str = "k8s.pod.uid";

/// The string value of the first attribute `key`.
fn string<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key)?.value.as_ref()? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

/// The resource of one container's records.
pub(super) fn container_resource(
    path: &PodLogPath,
    node: &NodeIdentity,
    enrichment: &PodEnrichment,
) -> Resource {
    let mut attributes = vec![
        text(NAMESPACE, &path.namespace),
        text("k8s.pod.name", &path.pod),
        text(POD_UID, &path.uid),
        text(CONTAINER, &path.container),
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

/// One container log line as a record; `path` is its `log.file.path` attribute, made
/// once per file ([`file_path_attribute`]).
pub(super) fn container_record(
    record: kaas_logfiles::LogRecord,
    observed: u64,
    path: &KeyValue,
) -> LogRecord {
    let mut attributes = Vec::with_capacity(2);
    if record.stream != Stream::Plain {
        attributes.push(text("log.iostream", record.stream.name()));
    }
    attributes.push(path.clone());
    LogRecord {
        time_unix_nano: record.time_unix_nano.unwrap_or(0),
        observed_time_unix_nano: observed,
        body: body(record.body),
        attributes,
        ..LogRecord::default()
    }
}

/// The `log.file.path` attribute of the records read from `file`.
pub(super) fn file_path_attribute(file: &kaas_logfiles::FileSource) -> KeyValue {
    text("log.file.path", &file.path.to_string_lossy())
}
