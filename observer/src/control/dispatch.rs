//! The dispatcher: routes the store's change feed to the agent streams a change
//! concerns ([`super::registry`]), to the tenant pipeline cache and to the status task
//! (see "How changes reach the streams" in [`crate::control`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc};

use super::registry::{SharedRegistry, lock};
use super::status_task::StatusWork;
use crate::rendering::TenantPipelines;
use crate::store::Change;

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

    use tokio::sync::Notify;

    use super::*;
    use crate::control::registry::tests::entry;

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
}
