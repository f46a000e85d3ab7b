//! Which of this replica's agent streams a store change concerns: the registry of open
//! streams by cluster (each with the `Notify` that wakes it, and the connection id its
//! cluster's streams share), and the dispatcher that routes the change feed to them, to
//! the pipeline cache and to the status task (see "How changes reach the streams" in
//! [`crate::control`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, mpsc};

use super::pipelines::TenantPipelines;
use super::status_task::StatusWork;
use crate::store::Change;

/// The open streams of this replica, by cluster, each with the `Notify` that wakes it.
#[derive(Default)]
pub(super) struct StreamRegistry {
    by_cluster: HashMap<String, ClusterStreams>,
}

/// This replica's open streams of one cluster. They share one connection id, chosen
/// when the first of them opened and released in the store when the last one ends, so
/// that overlapping streams of one agent on this replica (a reconnect before the old
/// stream was noticed gone) count as one connection.
pub(super) struct ClusterStreams {
    connection_id: String,
    streams: Vec<StreamEntry>,
}

pub(super) struct StreamEntry {
    pub(super) id: u64,
    pub(super) tenant: String,
    pub(super) wake: Arc<Notify>,
    /// Set with a wake when the cluster's registration changed, so the stream reads
    /// it again; a pipeline change wakes it without (the cluster is unchanged).
    pub(super) cluster_changed: Arc<AtomicBool>,
}

impl StreamRegistry {
    fn entries(&self) -> impl Iterator<Item = &StreamEntry> {
        self.by_cluster.values().flat_map(|c| &c.streams)
    }

    fn wake_cluster(&self, cluster: &str) {
        for entry in self
            .by_cluster
            .get(cluster)
            .into_iter()
            .flat_map(|c| &c.streams)
        {
            entry.cluster_changed.store(true, Ordering::Release);
            entry.wake.notify_one();
        }
    }

    fn wake_tenant(&self, tenant: &str) {
        for entry in self.entries() {
            if entry.tenant == tenant {
                entry.wake.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        for entry in self.entries() {
            entry.cluster_changed.store(true, Ordering::Release);
            entry.wake.notify_one();
        }
    }

    /// Adds a stream; returns the connection id of the cluster's streams on this
    /// replica (`<replica>/<id>` when it is the first).
    pub(super) fn add(&mut self, cluster: &str, replica: &str, entry: StreamEntry) -> String {
        let streams = self
            .by_cluster
            .entry(cluster.to_owned())
            .or_insert_with(|| ClusterStreams {
                connection_id: format!("{replica}/{}", entry.id),
                streams: Vec::new(),
            });
        streams.streams.push(entry);
        streams.connection_id.clone()
    }

    /// Removes a stream; returns the connection id to release if it was the last of
    /// its cluster on this replica.
    pub(super) fn remove(&mut self, cluster: &str, id: u64) -> Option<String> {
        let streams = self.by_cluster.get_mut(cluster)?;
        streams.streams.retain(|entry| entry.id != id);
        if streams.streams.is_empty() {
            self.by_cluster
                .remove(cluster)
                .map(|streams| streams.connection_id)
        } else {
            None
        }
    }
}

pub(super) type SharedRegistry = Arc<Mutex<StreamRegistry>>;

pub(super) fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, StreamRegistry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the dispatcher routes changes.
pub(super) struct Routes {
    pub(super) streams: SharedRegistry,
    pub(super) pipelines: Arc<TenantPipelines>,
    pub(super) clusters_routed: Arc<AtomicU64>,
}

/// Routes store changes to the streams they concern, the pipeline cache and the status
/// task. Observations (reports, pipeline statuses) wake no stream.
pub(super) async fn dispatch_changes(
    mut changes: broadcast::Receiver<Change>,
    routes: Routes,
    status: mpsc::UnboundedSender<StatusWork>,
) {
    let Routes {
        streams,
        pipelines,
        clusters_routed,
    } = routes;
    loop {
        let work = match changes.recv().await {
            Ok(Change::Tenant(tenant)) | Ok(Change::Pipeline { tenant, .. }) => {
                // Invalidated before the streams wake, so they read the change.
                pipelines.invalidate(&tenant);
                lock(&streams).wake_tenant(&tenant);
                StatusWork::Tenant(tenant)
            }
            Ok(Change::Cluster { id, .. }) => {
                // Counted before the wake: a stream registering concurrently either is
                // woken or sees the count move (the registry lock orders the two).
                clusters_routed.fetch_add(1, Ordering::AcqRel);
                lock(&streams).wake_cluster(&id);
                StatusWork::Cluster(id)
            }
            Ok(Change::ClusterReport(cluster)) => StatusWork::Report(cluster),
            // Probe endpoints concern neither agents nor pipeline statuses.
            Ok(Change::ProbeEndpoint { .. }) => continue,
            // Written by the status task itself (or another replica's): nothing to do.
            Ok(Change::PipelineStatus { .. }) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the change feed overflowed; re-checking every stream and status"
                );
                pipelines.clear();
                clusters_routed.fetch_add(1, Ordering::AcqRel);
                lock(&streams).wake_all();
                StatusWork::All
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if status.send(work).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(id: u64) -> StreamEntry {
        StreamEntry {
            id,
            tenant: "shop".into(),
            wake: Arc::new(Notify::new()),
            cluster_changed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether `wake` was notified (a stored permit counts).
    async fn woken(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn observations_wake_no_stream_and_status_writes_cause_no_work() {
        let streams = SharedRegistry::default();
        let mine = entry(1);
        let (wake, cluster_changed) = (mine.wake.clone(), mine.cluster_changed.clone());
        lock(&streams).add("c1", "r", mine);
        let pipelines = Arc::new(TenantPipelines::default());
        let (feed, changes) = broadcast::channel(16);
        let (status, mut work) = mpsc::unbounded_channel();
        let dispatcher = tokio::spawn(dispatch_changes(
            changes,
            Routes {
                streams: streams.clone(),
                pipelines,
                clusters_routed: Arc::new(AtomicU64::new(0)),
            },
            status,
        ));
        // The dispatcher handles changes in order: once the work of a change arrives,
        // every earlier change has been routed too.
        async fn next_work(work: &mut mpsc::UnboundedReceiver<StatusWork>) -> StatusWork {
            tokio::time::timeout(Duration::from_secs(5), work.recv())
                .await
                .unwrap()
                .unwrap()
        }

        // The stream's own APPLIED (and any report): status work, no wake.
        feed.send(Change::ClusterReport("c1".into())).unwrap();
        assert_eq!(next_work(&mut work).await, StatusWork::Report("c1".into()));
        assert!(!woken(&wake).await, "a report woke the stream");
        // A status write: neither a wake nor another recomputation (the next work is
        // the next change's).
        feed.send(Change::PipelineStatus {
            tenant: "shop".into(),
            name: "p1".into(),
        })
        .unwrap();
        // Another tenant's pipeline: not this stream.
        feed.send(Change::Pipeline {
            tenant: "bank".into(),
            name: "p1".into(),
        })
        .unwrap();
        assert_eq!(
            next_work(&mut work).await,
            StatusWork::Tenant("bank".into())
        );
        assert!(
            !woken(&wake).await,
            "a status write or another tenant woke the stream"
        );

        // A pipeline change wakes the tenant's streams without re-reading clusters.
        feed.send(Change::Pipeline {
            tenant: "shop".into(),
            name: "p1".into(),
        })
        .unwrap();
        assert_eq!(
            next_work(&mut work).await,
            StatusWork::Tenant("shop".into())
        );
        assert!(woken(&wake).await);
        assert!(!cluster_changed.load(Ordering::Acquire));
        // A change of the cluster itself: woken, and told to read the cluster again.
        feed.send(Change::Cluster {
            tenant: "shop".into(),
            id: "c1".into(),
        })
        .unwrap();
        assert_eq!(next_work(&mut work).await, StatusWork::Cluster("c1".into()));
        assert!(woken(&wake).await);
        assert!(cluster_changed.load(Ordering::Acquire));
        dispatcher.abort();
    }

    #[test]
    fn overlapping_streams_of_a_cluster_share_one_connection_released_by_the_last() {
        let mut registry = StreamRegistry::default();
        // The agent reconnects before its old stream is noticed gone: both streams
        // carry the connection id of the first.
        let old = registry.add("c1", "r", entry(1));
        let new = registry.add("c1", "r", entry(2));
        assert_eq!(old, "r/1");
        assert_eq!(new, old);
        assert_eq!(registry.add("c2", "r", entry(3)), "r/3");
        // The old stream ends: the connection stays, the new stream holds it.
        assert_eq!(registry.remove("c1", 1), None);
        // The last stream ends: its connection is released.
        assert_eq!(registry.remove("c1", 2), Some("r/1".to_owned()));
        assert_eq!(registry.remove("c1", 2), None, "released once");
        // A later stream starts a new connection, which an old release cannot clear.
        assert_eq!(registry.add("c1", "r", entry(4)), "r/4");
        assert_eq!(registry.remove("c2", 3), Some("r/3".to_owned()));
    }
}
