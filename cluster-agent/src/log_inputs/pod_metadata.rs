//! Pod labels and annotations by pod uid, for the runtime input's
//! `k8s.pod.label.<key>` and `k8s.pod.annotation.<key>` resource attributes, from the
//! node's pod watch (`discovery::kubernetes::watch::watch_node_pods`, scoped to the
//! node by `spec.nodeName`).
//!
//! Pod metadata is written by tenants, so everything kept is bounded: pods, entries
//! per pod and bytes per pod. A pod the watch has not published yet (its first lines
//! can come before the next snapshot) gets no labels; the path's attributes are always
//! there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kaas_pipeline::selector::PodSelector;
use tokio::sync::watch;

use crate::discovery::kubernetes::watch::PodSnapshot;

/// Pods kept: the kubelet's default limit is 110 pods per node and large nodes run
/// 250; this bound only matters if a snapshot were not scoped to the node.
pub const MAX_CACHED_PODS: usize = 1024;

/// Labels, and separately annotations, kept per pod: far more than workloads set, few
/// enough that a hostile pod cannot make every record of its logs huge.
pub const MAX_POD_METADATA_ENTRIES: usize = 64;

/// Bytes of keys and values kept per pod, for labels and for annotations each:
/// labels are at most 63-byte values under 316-byte keys; annotations can hold
/// 256 KiB, which does not belong on every log record.
pub const MAX_POD_METADATA_BYTES: usize = 16 * 1024;

/// What the runtime input adds to a pod's records, and the pod it came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PodMetadata {
    /// Labels, sorted by key, within the bounds.
    pub labels: Vec<(String, String)>,
    /// Annotations, sorted by key, within the bounds.
    pub annotations: Vec<(String, String)>,
    /// The pod as the watch published it (shared with the watch's snapshot, not
    /// copied): pod selectors see all of its labels, not only the bounded ones.
    pod: Arc<Pod>,
}

/// The labels of a pod without any.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl PodMetadata {
    /// Whether `selector` selects the pod, by all of its labels.
    pub fn selected_by(&self, selector: &PodSelector) -> bool {
        selector.matches(self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS))
    }
}

/// The pods of this node by uid; refreshed from the watch's latest snapshot.
#[derive(Debug, Clone)]
pub struct PodMetadataCache {
    source: watch::Receiver<PodSnapshot>,
    pods: Arc<HashMap<String, Arc<PodMetadata>>>,
    /// Pods, entries and bytes left out of the last snapshot for the bounds.
    left_out: u64,
}

impl PodMetadataCache {
    /// A cache fed by `source` (the receiver of the node's pod watch).
    pub fn new(source: watch::Receiver<PodSnapshot>) -> Self {
        let mut cache = Self {
            source,
            pods: Arc::default(),
            left_out: 0,
        };
        cache.rebuild();
        cache
    }

    /// Takes the watch's latest snapshot if it changed. Cheap when it did not.
    pub fn refresh(&mut self) {
        if self.source.has_changed().unwrap_or(false) {
            self.rebuild();
        }
    }

    /// The metadata of the pod with `uid`.
    pub fn get(&self, uid: &str) -> Option<&PodMetadata> {
        self.pods.get(uid).map(Arc::as_ref)
    }

    /// Pods, labels and annotations the bounds left out of the current snapshot.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    fn rebuild(&mut self) {
        let snapshot = self.source.borrow_and_update().clone();
        let mut left_out = 0u64;
        let mut pods = HashMap::new();
        for pod in snapshot.iter() {
            let Some(uid) = pod.metadata.uid.as_ref() else {
                continue;
            };
            if pods.len() == MAX_CACHED_PODS {
                left_out += 1;
                continue;
            }
            pods.insert(uid.clone(), Arc::new(metadata_of(pod, &mut left_out)));
        }
        if left_out > 0 && left_out != self.left_out {
            tracing::warn!(
                left_out,
                "pod metadata beyond the per-node bounds is not added to log records"
            );
        }
        self.left_out = left_out;
        self.pods = Arc::new(pods);
    }
}

fn metadata_of(pod: &Arc<Pod>, left_out: &mut u64) -> PodMetadata {
    PodMetadata {
        labels: bounded(pod.metadata.labels.as_ref(), left_out),
        annotations: bounded(pod.metadata.annotations.as_ref(), left_out),
        pod: Arc::clone(pod),
    }
}

/// The first entries of `map` within the entry and byte bounds.
fn bounded(map: Option<&BTreeMap<String, String>>, left_out: &mut u64) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for (key, value) in map.into_iter().flatten() {
        let size = key.len() + value.len();
        if kept.len() == MAX_POD_METADATA_ENTRIES || bytes + size > MAX_POD_METADATA_BYTES {
            *left_out += 1;
            continue;
        }
        bytes += size;
        kept.push((key.clone(), value.clone()));
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, labels: &[(&str, String)]) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.to_owned());
        pod.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        );
        Arc::new(pod)
    }

    #[test]
    fn follows_the_latest_snapshot() {
        let (sender, receiver) = watch::channel(Arc::new(Vec::new()));
        let mut cache = PodMetadataCache::new(receiver);
        assert!(cache.get("u1").is_none());
        sender.send_replace(Arc::new(vec![pod("u1", &[("app", "web".into())])]));
        cache.refresh();
        assert_eq!(
            cache.get("u1").unwrap().labels,
            [("app".to_owned(), "web".to_owned())]
        );
        sender.send_replace(Arc::new(Vec::new()));
        cache.refresh();
        assert!(cache.get("u1").is_none(), "a deleted pod is forgotten");
    }

    #[test]
    fn a_hostile_pod_is_cut_to_the_bounds() {
        let many: Vec<(&str, String)> = Vec::new();
        let mut hostile = pod("u1", &many);
        let labels = (0..1000)
            .map(|i| (format!("k{i:04}"), "v".repeat(60)))
            .collect();
        Arc::make_mut(&mut hostile).metadata.labels = Some(labels);
        let mut huge = Pod::default();
        huge.metadata.uid = Some("u2".into());
        huge.metadata.annotations = Some(BTreeMap::from([
            ("big".to_owned(), "x".repeat(200_000)),
            ("small".to_owned(), "ok".to_owned()),
        ]));
        let (_sender, receiver) = watch::channel(Arc::new(vec![hostile, Arc::new(huge)]));
        let cache = PodMetadataCache::new(receiver);
        let labels = &cache.get("u1").unwrap().labels;
        assert_eq!(labels.len(), MAX_POD_METADATA_ENTRIES);
        assert_eq!(labels[0].0, "k0000", "kept in key order");
        assert_eq!(
            cache.get("u2").unwrap().annotations,
            [("small".to_owned(), "ok".to_owned())],
            "an annotation over the byte bound is left out, the rest kept"
        );
        assert_eq!(cache.left_out(), 1000 - 64 + 1);
    }

    #[test]
    fn pods_beyond_the_bound_are_left_out() {
        let pods = (0..MAX_CACHED_PODS + 5)
            .map(|i| pod(&format!("u{i}"), &[]))
            .collect();
        let (_sender, receiver) = watch::channel(Arc::new(pods));
        let cache = PodMetadataCache::new(receiver);
        assert_eq!(cache.left_out(), 5);
    }
}
