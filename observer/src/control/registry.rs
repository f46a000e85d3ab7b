//! The registry of this replica's open agent streams, by cluster: each with the
//! `Notify` that wakes it, and the connection id its cluster's streams share. The
//! dispatcher ([`super::dispatch`]) wakes them through it (see "How changes reach the
//! streams" in [`crate::control`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The open streams of this replica, by cluster, each with the `Notify` that wakes it.
#[derive(Default)]
pub(super) struct StreamRegistry {
    by_cluster: HashMap<String, ClusterStreams>,
}

/// This replica's open streams of one cluster. They share one connection id, chosen
/// when the first of them opened and released in the store when the last
/// cluster-level stream ends, so that overlapping streams of one agent on this replica
/// (a reconnect before the old stream was noticed gone) count as one connection. The
/// cluster's connection is its cluster-level instance's: node instances' streams are
/// here to be woken, but neither hold nor release it.
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
    /// Whether this is the cluster-level instance's stream, the one whose connection
    /// is the cluster's.
    pub(super) cluster_level: bool,
}

impl StreamRegistry {
    fn entries(&self) -> impl Iterator<Item = &StreamEntry> {
        self.by_cluster.values().flat_map(|c| &c.streams)
    }

    pub(super) fn wake_cluster(&self, cluster: &str) {
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

    pub(super) fn wake_tenant(&self, tenant: &str) {
        for entry in self.entries() {
            if entry.tenant == tenant {
                entry.wake.notify_one();
            }
        }
    }

    pub(super) fn wake_all(&self) {
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

    /// Removes a stream; returns the connection id to release if it was the last
    /// cluster-level stream of its cluster on this replica.
    pub(super) fn remove(&mut self, cluster: &str, id: u64) -> Option<String> {
        let streams = self.by_cluster.get_mut(cluster)?;
        let position = streams.streams.iter().position(|entry| entry.id == id)?;
        let removed = streams.streams.swap_remove(position);
        let connection_id = streams.connection_id.clone();
        if streams.streams.is_empty() {
            self.by_cluster.remove(cluster);
        }
        let cluster_level_left = (self.by_cluster.get(cluster).into_iter())
            .flat_map(|c| &c.streams)
            .any(|entry| entry.cluster_level);
        (removed.cluster_level && !cluster_level_left).then_some(connection_id)
    }
}

pub(super) type SharedRegistry = Arc<Mutex<StreamRegistry>>;

pub(super) fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, StreamRegistry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A stream of tenant `shop` (also the dispatcher's tests' streams).
    pub(in crate::control) fn entry(id: u64) -> StreamEntry {
        StreamEntry {
            id,
            tenant: "shop".into(),
            wake: Arc::new(Notify::new()),
            cluster_changed: Arc::new(AtomicBool::new(false)),
            cluster_level: true,
        }
    }

    fn node_entry(id: u64) -> StreamEntry {
        StreamEntry {
            cluster_level: false,
            ..entry(id)
        }
    }

    /// Issue 16: node instances' streams neither hold nor release the cluster's
    /// connection, which is its cluster-level instance's.
    #[test]
    fn node_streams_neither_hold_nor_release_the_clusters_connection() {
        let mut registry = StreamRegistry::default();
        let connection = registry.add("c1", "r", entry(1));
        registry.add("c1", "r", node_entry(2));
        // A node leaving releases nothing.
        assert_eq!(registry.remove("c1", 2), None);
        registry.add("c1", "r", node_entry(3));
        // The cluster-level stream leaving releases the connection though a node's
        // stream stays open.
        assert_eq!(registry.remove("c1", 1), Some(connection.clone()));
        // A cluster-level stream coming back shares the id again; the node's stream
        // still releases nothing.
        assert_eq!(registry.add("c1", "r", entry(4)), connection);
        assert_eq!(registry.remove("c1", 3), None);
        assert_eq!(registry.remove("c1", 4), Some(connection));
        assert_eq!(registry.remove("c1", 4), None, "released once");
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
