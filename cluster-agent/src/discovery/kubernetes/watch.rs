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
    watch_with(Api::all(client), watcher::Config::default())
}

/// Watches the pods scheduled to `node` (field selector `spec.nodeName`), for the
/// node's log inputs: the API server filters, so the store holds this node's pods
/// only, not every pod of the cluster.
pub fn watch_node_pods(
    client: Client,
    node: &str,
) -> (channel::Receiver<PodSnapshot>, JoinHandle<()>) {
    watch_with(
        Api::all(client),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    )
}

/// Watches every Service of the cluster.
pub fn watch_services(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::core::v1::Service>>,
    JoinHandle<()>,
) {
    watch_with(Api::all(client), watcher::Config::default())
}

/// Watches every EndpointSlice of the cluster.
pub fn watch_endpoint_slices(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::discovery::v1::EndpointSlice>>,
    JoinHandle<()>,
) {
    watch_with(Api::all(client), watcher::Config::default())
}

/// Watches every node of the cluster; the receiver sees each published snapshot.
pub fn watch_nodes(client: Client) -> (channel::Receiver<NodeSnapshot>, JoinHandle<()>) {
    watch_with(Api::all(client), watcher::Config::default())
}

fn watch_with<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (channel::Receiver<Snapshot<K>>, JoinHandle<()>)
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
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
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

    /// Answers a list request with `items` at resource version 100.
    fn send_list(
        send: tower_test::mock::SendResponse<Response<Body>>,
        items: Vec<serde_json::Value>,
    ) {
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "100"},
            "items": items
        });
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&list).expect("json"),
        )));
    }

    /// Answers a watch request with one `ADDED` event for `object`.
    fn send_added(send: tower_test::mock::SendResponse<Response<Body>>, object: serde_json::Value) {
        let event = serde_json::json!({"type": "ADDED", "object": object});
        let mut body = serde_json::to_vec(&event).expect("json");
        body.push(b'\n');
        send.send_response(Response::new(Body::from(body)));
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
        send_list(send, vec![pod("web-1", "10.0.0.1")]);
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
        send_added(send, pod("web-2", "10.0.0.2"));
        let second = next_snapshot(&mut snapshots).await;
        let mut names: Vec<_> = second
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["web-1", "web-2"]);
        task.abort();
    }

    /// The node's log inputs watch only their node's pods: the API server is asked
    /// with the field selector `spec.nodeName=<node>` for the list and for the watch
    /// after it, and the pod metadata cache the runtime input reads follows what the
    /// watch publishes.
    #[tokio::test]
    async fn node_pods_are_listed_and_watched_by_field_selector() {
        use crate::log_inputs::PodMetadataCache;

        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (mut snapshots, task) = watch_node_pods(client, "node-a");
        let mut cache = PodMetadataCache::new(snapshots.clone());
        let labelled = |name: &str, uid: &str| {
            let mut pod = pod(name, "10.0.0.1");
            pod["metadata"]["uid"] = uid.into();
            pod["metadata"]["labels"] = serde_json::json!({"app": name});
            pod["spec"]["nodeName"] = "node-a".into();
            pod
        };

        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.uri().path(), "/api/v1/pods");
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(!query.contains("watch=true"), "first a list: {query}");
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dnode-a"),
            "only this node's pods: {query}"
        );
        send_list(send, vec![labelled("web-1", "uid-1")]);
        next_snapshot(&mut snapshots).await;
        cache.refresh();
        assert_eq!(
            cache.get("uid-1").map(|pod| pod.labels.clone()),
            Some(vec![("app".to_owned(), "web-1".to_owned())])
        );

        let (request, send) = next_request(&mut handle).await;
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("watch=true"), "then a watch: {query}");
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dnode-a"),
            "the watch keeps the selector: {query}"
        );
        send_added(send, labelled("web-2", "uid-2"));
        next_snapshot(&mut snapshots).await;
        cache.refresh();
        assert!(
            cache.get("uid-2").is_some(),
            "a pod added by the watch is found"
        );
        task.abort();
    }
}
