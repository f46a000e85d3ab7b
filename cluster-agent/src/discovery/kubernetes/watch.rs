//! Reflectors of the cluster's pods and nodes: kube-runtime's `watcher` (list, then
//! watch, with backoff and re-list after errors) feeding a `reflector` store, whose
//! contents are published as a snapshot at most once per [`PUBLISH_INTERVAL`] after a
//! change.
//!
//! Deletions come from the reflector's state, not from single watch events: after a
//! lost connection the watcher re-lists, and the store then holds exactly the pods that
//! exist, so a missed `DELETED` event cannot leave a scrape target behind.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

/// Changes are published at most this often: a busy cluster changes pods many times a
/// second, and recomputing targets for each event would waste CPU for no benefit.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The objects of one kind known at one moment.
pub type Snapshot<K> = Arc<Vec<Arc<K>>>;
/// The pods known at one moment.
pub type PodSnapshot = Snapshot<Pod>;
/// The nodes known at one moment.
pub type NodeSnapshot = Snapshot<Node>;

/// Watches every pod of the cluster; the receiver sees each published snapshot.
pub fn watch_pods(client: Client) -> (channel::Receiver<PodSnapshot>, JoinHandle<()>) {
    watch_all(Api::all(client))
}

/// Watches every Service of the cluster.
pub fn watch_services(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::core::v1::Service>>,
    JoinHandle<()>,
) {
    watch_all(Api::all(client))
}

/// Watches every EndpointSlice of the cluster.
pub fn watch_endpoint_slices(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::discovery::v1::EndpointSlice>>,
    JoinHandle<()>,
) {
    watch_all(Api::all(client))
}

/// Watches every node of the cluster; the receiver sees each published snapshot.
pub fn watch_nodes(client: Client) -> (channel::Receiver<NodeSnapshot>, JoinHandle<()>) {
    watch_all(Api::all(client))
}

fn watch_all<K>(api: Api<K>) -> (channel::Receiver<Snapshot<K>>, JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store::<K>();
    let (sender, receiver) = channel::channel(Arc::new(Vec::new()));
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(run(stream, reader, sender));
    (receiver, task)
}

async fn run<K>(
    stream: impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    reader: Store<K>,
    sender: channel::Sender<Snapshot<K>>,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut stream = std::pin::pin!(stream);
    let mut ticks = tokio::time::interval(PUBLISH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = false;
    // The store is complete once the first (re-)list is done.
    let mut listed = false;
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    changed = true;
                }
                Some(Ok(_)) => changed = true,
                Some(Err(error)) => tracing::warn!(%error, kind = %K::kind(&Default::default()), "watching failed; retrying with backoff"),
                None => break,
            },
            _ = ticks.tick() => {
                if changed && listed {
                    sender.send_replace(Arc::new(reader.state()));
                    changed = false;
                }
            }
        }
        if sender.is_closed() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;
    use crate::discovery::kubernetes::pods::pod_targets;

    fn pod(name: &str, ip: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "10",
                         "annotations": {"prometheus.io/scrape": "true"}},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running"}
        })
    }

    async fn next_request(
        handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) -> (
        Request<Body>,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("the watcher sends a request in time")
            .expect("a request")
    }

    async fn next_snapshot(receiver: &mut channel::Receiver<PodSnapshot>) -> PodSnapshot {
        tokio::time::timeout(Duration::from_secs(5), receiver.changed())
            .await
            .expect("a snapshot in time")
            .expect("the publisher runs");
        receiver.borrow_and_update().clone()
    }

    /// The API server's side of the conversation, request by request: a list of all
    /// pods, then a watch from the list's resource version that adds a pod.
    #[tokio::test]
    async fn lists_then_watches_all_pods_and_publishes_snapshots() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (mut snapshots, task) = watch_pods(client);

        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/pods");
        let query = request.uri().query().unwrap_or_default();
        assert!(!query.contains("watch=true"), "first a list: {query}");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "100"},
            "items": [pod("web-1", "10.0.0.1")]
        });
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&list).unwrap(),
        )));
        let first = next_snapshot(&mut snapshots).await;
        assert_eq!(first.len(), 1);
        assert_eq!(
            pod_targets(&first[0])[0].get("__address__"),
            "10.0.0.1:8080"
        );

        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.uri().path(), "/api/v1/pods");
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("watch=true"), "then a watch: {query}");
        assert!(
            query.contains("resourceVersion=100"),
            "from the list's version: {query}"
        );
        let event = serde_json::json!({"type": "ADDED", "object": pod("web-2", "10.0.0.2")});
        let mut body = serde_json::to_vec(&event).unwrap();
        body.push(b'\n');
        send.send_response(Response::new(Body::from(body)));
        let second = next_snapshot(&mut snapshots).await;
        let mut names: Vec<_> = second
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["web-1", "web-2"]);
        task.abort();
    }
}
