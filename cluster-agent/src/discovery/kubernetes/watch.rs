//! Reflectors of the cluster's pods and nodes: kube-runtime's `watcher` (list, then
//! watch, with backoff and re-list after errors) feeding a `reflector` store, whose
//! contents are published as a snapshot at most once per [`PUBLISH_INTERVAL`] after a
//! change.
//!
//! Deletions come from the reflector's state, not from single watch events: after a
//! lost connection the watcher re-lists, and the store then holds exactly the pods that
//! exist, so a missed `DELETED` event cannot leave a scrape target behind.
//!
//! A watch can also be shaped ([`watch_shaped`]): each object cut to the fields its
//! reader needs as it arrives, and the store bounded to a number of objects, for a
//! cache that must stay small whatever the cluster holds (the trace pipelines' pods by
//! address, [`super::pods_by_ip`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store};
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
    watch_shaped(
        Api::all(client),
        watcher::Config::default(),
        Shaping::whole(),
    )
    .into()
}

/// Watches the pods scheduled to `node` (field selector `spec.nodeName`), for the
/// node's log inputs: the API server filters, so the store holds this node's pods
/// only, not every pod of the cluster.
pub fn watch_node_pods(
    client: Client,
    node: &str,
) -> (channel::Receiver<PodSnapshot>, JoinHandle<()>) {
    watch_shaped(
        Api::all(client),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        Shaping::whole(),
    )
    .into()
}

/// Watches every Service of the cluster.
pub fn watch_services(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::core::v1::Service>>,
    JoinHandle<()>,
) {
    watch_shaped(
        Api::all(client),
        watcher::Config::default(),
        Shaping::whole(),
    )
    .into()
}

/// Watches every EndpointSlice of the cluster.
pub fn watch_endpoint_slices(
    client: Client,
) -> (
    channel::Receiver<Snapshot<k8s_openapi::api::discovery::v1::EndpointSlice>>,
    JoinHandle<()>,
) {
    watch_shaped(
        Api::all(client),
        watcher::Config::default(),
        Shaping::whole(),
    )
    .into()
}

/// Watches every node of the cluster; the receiver sees each published snapshot.
pub fn watch_nodes(client: Client) -> (channel::Receiver<NodeSnapshot>, JoinHandle<()>) {
    watch_shaped(
        Api::all(client),
        watcher::Config::default(),
        Shaping::whole(),
    )
    .into()
}

/// What a watch keeps ([`watch_shaped`]): each object cut by `strip`, and at most
/// `max_objects` of them.
pub struct Shaping<K> {
    /// Cuts an object to the fields its readers need.
    pub strip: fn(&mut K),
    /// Most objects in the store.
    pub max_objects: usize,
}

impl<K> Shaping<K> {
    /// Every object, whole.
    pub fn whole() -> Self {
        Self {
            strip: |_| {},
            max_objects: usize::MAX,
        }
    }
}

impl<K> From<ShapedWatch<K>> for (channel::Receiver<Snapshot<K>>, JoinHandle<()>) {
    fn from(watch: ShapedWatch<K>) -> Self {
        (watch.snapshots, watch.task)
    }
}

/// A shaped watch ([`watch_shaped`]): its snapshots, its task, and how many objects
/// the bound has left out so far.
pub struct ShapedWatch<K> {
    /// Sees each published snapshot.
    pub snapshots: channel::Receiver<Snapshot<K>>,
    /// The watch; it ends when every receiver of the snapshots is gone.
    pub task: JoinHandle<()>,
    /// Objects the bound kept out of the store since the watch started.
    pub left_out: Arc<AtomicU64>,
}

/// Watches `api` as [`watch_pods`] does, shaped: each object cut by `shaping.strip`
/// before the store keeps it, and at most `shaping.max_objects` objects in the store:
/// while it is full, an
/// object it does not hold yet is left out (and counted) until a later event or
/// re-list finds room, so the store's memory is bounded whatever the cluster holds.
pub fn watch_shaped<K>(api: Api<K>, config: watcher::Config, shaping: Shaping<K>) -> ShapedWatch<K>
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
    let left_out = Arc::new(AtomicU64::new(0));
    let mut bound = StoreBound {
        store: reader.clone(),
        max_objects: shaping.max_objects,
        listed: 0,
        left_out: left_out.clone(),
    };
    let events = watcher(api, config)
        .modify(shaping.strip)
        .filter(move |event| {
            std::future::ready(event.as_ref().map_or(true, |event| bound.admits(event)))
        });
    let stream = reflector::reflector(writer, events).default_backoff();
    let task = tokio::spawn(run(stream, reader, sender));
    ShapedWatch {
        snapshots: receiver,
        task,
        left_out,
    }
}

/// Keeps a reflector's store within `max_objects`: decides, before the store sees an
/// event, whether it may.
struct StoreBound<K: kube::Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    max_objects: usize,
    /// Objects of the (re-)list under way: the store replaces its contents with them
    /// at its end, so they are bounded here, not by the store's current size.
    listed: usize,
    left_out: Arc<AtomicU64>,
}

impl<K> StoreBound<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    fn admits(&mut self, event: &watcher::Event<K>) -> bool {
        let admitted = match event {
            watcher::Event::Init => {
                self.listed = 0;
                true
            }
            watcher::Event::InitApply(_) => {
                self.listed += 1;
                self.listed <= self.max_objects
            }
            watcher::Event::Apply(object) => {
                self.store.len() < self.max_objects
                    || self.store.get(&ObjectRef::from_obj(object)).is_some()
            }
            watcher::Event::Delete(_) | watcher::Event::InitDone => true,
        };
        if !admitted {
            self.left_out.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }
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
    use crate::discovery::kubernetes::mock_api::{
        next_published, next_request, send_added, send_list,
    };
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

    async fn next_snapshot(receiver: &mut channel::Receiver<PodSnapshot>) -> PodSnapshot {
        next_published(receiver).await
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
