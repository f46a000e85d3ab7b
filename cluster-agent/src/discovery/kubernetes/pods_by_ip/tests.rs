//! The index's rules on pods built in place, the enrichment's rules on resources, and
//! the watch behind them against kube's mock client: pods added, modified, deleted,
//! gone after a re-list, beyond the bound, on the host network, and an address reused.

use std::net::{IpAddr, Ipv4Addr};

use http::{Request, Response};
use kaas_proto::otlp::any_value::Value;
use kube::client::Body;

use super::*;
use crate::discovery::kubernetes::mock_api::{
    Handle, is_watch, next_published, next_request, send_events, send_list, send_list_at,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// A pod of a Deployment `web`, as the API server sends it (with fields the cache
/// does not keep).
fn pod_json(name: &str, address: &str, started: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "resourceVersion": "101",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f5"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d4b9c8f5", "uid": "rs-1", "controller": true}]
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}],
                   "startTime": started, "hostIP": "192.168.0.10"}
    })
}

fn pod(name: &str, address: &str, started: &str) -> Arc<Pod> {
    let mut pod: Pod = serde_json::from_value(pod_json(name, address, started)).expect("a pod");
    strip(&mut pod);
    Arc::new(pod)
}

/// `pod` changed by `edit`.
fn edited(mut pod: Arc<Pod>, edit: impl FnOnce(&mut Pod)) -> Arc<Pod> {
    edit(Arc::make_mut(&mut pod));
    pod
}

const EARLY: &str = "2026-12-07T10:00:00Z";
const LATE: &str = "2026-12-07T11:00:00Z";

#[test]
fn a_pod_is_found_by_each_of_its_addresses() {
    let dual = edited(pod("web-1", "10.0.0.1", EARLY), |pod| {
        let status = pod.status.as_mut().expect("a status");
        status.pod_ips = Some(
            ["10.0.0.1", "fd00::1"]
                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.into() })
                .into(),
        );
    });
    let index = PodIndex::of(&[dual]);
    let found = index.get(ip("10.0.0.1")).expect("by IPv4");
    assert_eq!(
        **found,
        PodIdentity {
            start_time: found.start_time.clone(),
            ..web_1()
        }
    );
    assert!(found.start_time.is_some());
    assert!(index.get(ip("fd00::1")).is_some(), "by IPv6");
    assert!(
        index.get(ip("::ffff:10.0.0.1")).is_some(),
        "an IPv4-mapped peer is the IPv4 address"
    );
    assert!(index.get(ip("10.0.0.2")).is_none());
}

#[test]
fn host_network_and_finished_pods_are_never_matched() {
    let host = edited(pod("node-exporter", "192.168.0.10", EARLY), |pod| {
        pod.spec.as_mut().expect("a spec").host_network = Some(true);
    });
    let done = edited(pod("job-1", "10.0.0.5", EARLY), |pod| {
        pod.status.as_mut().expect("a status").phase = Some("Succeeded".into());
    });
    let index = PodIndex::of(&[host, done]);
    assert!(index.is_empty());
}

#[test]
fn a_reused_address_is_the_pod_started_last() {
    let old = pod("web-old", "10.0.0.7", EARLY);
    let new = pod("web-new", "10.0.0.7", LATE);
    for pods in [vec![old.clone(), new.clone()], vec![new, old]] {
        let index = PodIndex::of(&pods);
        assert_eq!(index.get(ip("10.0.0.7")).expect("a pod").name, "web-new");
    }
}

#[test]
fn the_deployment_is_the_replica_set_name_without_its_hash() {
    assert_eq!(
        deployment_of_replica_set("web-7d4b9c8f5").as_deref(),
        Some("web")
    );
    assert_eq!(
        deployment_of_replica_set("cart-api-5f6c8d9b7").as_deref(),
        Some("cart-api")
    );
    assert_eq!(deployment_of_replica_set("standalone"), None);
    assert_eq!(deployment_of_replica_set("trailing-"), None);
    let job_pod = edited(pod("job-2", "10.0.0.9", EARLY), |pod| {
        let owners = pod.metadata.owner_references.as_mut().expect("owners");
        owners[0].kind = "Job".into();
    });
    let index = PodIndex::of(&[job_pod]);
    assert_eq!(
        index.get(ip("10.0.0.9")).expect("a pod").deployment_name,
        None
    );
}

#[test]
fn strip_keeps_only_what_the_lookup_reads() {
    let pod = pod("web-1", "10.0.0.1", EARLY);
    assert_eq!(pod.metadata.labels, None);
    assert_eq!(pod.metadata.annotations, None);
    let spec = pod.spec.as_ref().expect("a spec");
    assert!(spec.containers.is_empty());
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    let status = pod.status.as_ref().expect("a status");
    assert_eq!(status.host_ip, None);
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(
        pod.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
}

fn attributes(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(key, value)| string_attribute(key, value))
        .collect()
}

fn as_pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|attribute| {
            let value = match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(value)) => value.clone(),
                other => format!("{other:?}"),
            };
            (attribute.key.clone(), value)
        })
        .collect()
}

fn web_1() -> PodIdentity {
    PodIdentity {
        namespace: "shop".into(),
        name: "web-1".into(),
        uid: "uid-web-1".into(),
        node_name: Some("node-a".into()),
        deployment_name: Some("web".into()),
        start_time: None,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn enrichment_fills_what_is_missing() {
    let mut resource = attributes(&[("service.name", "web")]);
    enrich_with(&mut resource, &web_1());
    assert_eq!(
        as_pairs(&resource),
        pairs(&[
            ("service.name", "web"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-1"),
            ("k8s.pod.uid", "uid-web-1"),
            ("k8s.deployment.name", "web"),
            ("k8s.node.name", "node-a"),
        ])
    );
}

#[test]
fn claims_in_the_senders_namespace_are_kept() {
    let mut resource = attributes(&[
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "cart-9"),
        ("k8s.deployment.name", "cart"),
    ]);
    enrich_with(&mut resource, &web_1());
    assert_eq!(
        as_pairs(&resource),
        pairs(&[
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "cart-9"),
            ("k8s.deployment.name", "cart"),
            ("k8s.pod.uid", "uid-web-1"),
            ("k8s.node.name", "node-a"),
        ])
    );
}

#[test]
fn claims_of_another_namespace_are_replaced() {
    let mut resource = attributes(&[
        ("k8s.namespace.name", "bank"),
        ("k8s.pod.name", "vault-0"),
        ("k8s.deployment.name", "vault"),
        ("host.name", "h"),
    ]);
    let mut standalone = web_1();
    standalone.deployment_name = None;
    enrich_with(&mut resource, &standalone);
    assert_eq!(
        as_pairs(&resource),
        pairs(&[
            ("host.name", "h"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-1"),
            ("k8s.pod.uid", "uid-web-1"),
            ("k8s.node.name", "node-a"),
        ]),
        "the claimed deployment of another namespace is removed, not kept"
    );
}

/// The cache on a mock API server, with its index receiver to wait on.
fn started(max_pods: usize) -> (PodsByIp, channel::Receiver<Arc<PodIndex>>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pods = PodsByIp::start_bounded(Client::new(service, "default"), max_pods);
    let index = pods.index.clone();
    (pods, index, handle)
}

fn name_at(pods: &PodsByIp, address: &str) -> Option<String> {
    pods.lookup(ip(address)).map(|pod| pod.name.clone())
}

fn with_version(mut pod: serde_json::Value, version: &str) -> serde_json::Value {
    pod["metadata"]["resourceVersion"] = version.into();
    pod
}

/// Lists all pods of the cluster (no selector), then follows added, modified and
/// deleted events.
#[tokio::test]
async fn events_add_move_and_remove_pods() {
    let (pods, mut index, mut handle) = started(MAX_PODS);
    let (request, answer) = next_request(&mut handle).await;
    assert_eq!(request.uri().path(), "/api/v1/pods", "cluster-wide");
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(
        !query.contains("fieldSelector"),
        "every node's pods: {query}"
    );
    send_list(answer, vec![pod_json("web-1", "10.0.0.1", EARLY)]);
    next_published(&mut index).await;
    assert_eq!(name_at(&pods, "10.0.0.1").as_deref(), Some("web-1"));

    let (request, answer) = next_request(&mut handle).await;
    assert!(is_watch(&request));
    let moved = with_version(pod_json("web-1", "10.0.0.11", EARLY), "102");
    send_events(
        answer,
        &[
            (
                "ADDED",
                with_version(pod_json("web-2", "10.0.0.2", EARLY), "101"),
            ),
            ("MODIFIED", moved.clone()),
        ],
    );
    while name_at(&pods, "10.0.0.2").is_none() || name_at(&pods, "10.0.0.1").is_some() {
        next_published(&mut index).await;
    }
    assert_eq!(name_at(&pods, "10.0.0.11").as_deref(), Some("web-1"));

    let (_, answer) = next_request(&mut handle).await;
    send_events(answer, &[("DELETED", with_version(moved, "103"))]);
    while name_at(&pods, "10.0.0.11").is_some() {
        next_published(&mut index).await;
    }
    assert_eq!(name_at(&pods, "10.0.0.2").as_deref(), Some("web-2"));
}

/// A watch that expired (410 Gone) makes the watcher list again: a pod deleted while
/// no event reached the agent is gone from the new list, and so from the cache.
#[tokio::test]
async fn a_relist_forgets_pods_that_are_gone() {
    let (pods, mut index, mut handle) = started(MAX_PODS);
    let (_, answer) = next_request(&mut handle).await;
    send_list(
        answer,
        vec![
            pod_json("web-1", "10.0.0.1", EARLY),
            pod_json("web-2", "10.0.0.2", EARLY),
        ],
    );
    next_published(&mut index).await;
    assert_eq!(name_at(&pods, "10.0.0.1").as_deref(), Some("web-1"));

    let (_, answer) = next_request(&mut handle).await;
    let gone = serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410
    });
    send_events(answer, &[("ERROR", gone)]);
    let (request, answer) = next_request(&mut handle).await;
    assert!(!is_watch(&request), "a new list");
    send_list_at(answer, "200", vec![pod_json("web-2", "10.0.0.2", EARLY)]);
    while name_at(&pods, "10.0.0.1").is_some() {
        next_published(&mut index).await;
    }
    assert_eq!(name_at(&pods, "10.0.0.2").as_deref(), Some("web-2"));
}

/// At the bound, further pods are left out and counted, host-network pods are never
/// found, and an address taken over by a newer pod finds the newer one.
#[tokio::test]
async fn the_bound_host_network_pods_and_reused_addresses() {
    let (pods, mut index, mut handle) = started(3);
    let mut host = pod_json("node-exporter", "192.168.0.10", EARLY);
    host["spec"]["hostNetwork"] = true.into();
    let (_, answer) = next_request(&mut handle).await;
    send_list(
        answer,
        vec![
            host,
            pod_json("web-old", "10.0.0.7", EARLY),
            pod_json("web-1", "10.0.0.1", EARLY),
            pod_json("web-2", "10.0.0.2", EARLY),
        ],
    );
    next_published(&mut index).await;
    assert_eq!(name_at(&pods, "192.168.0.10"), None, "host network");
    assert_eq!(name_at(&pods, "10.0.0.7").as_deref(), Some("web-old"));
    assert_eq!(name_at(&pods, "10.0.0.1").as_deref(), Some("web-1"));
    assert_eq!(name_at(&pods, "10.0.0.2"), None, "beyond the bound");
    assert_eq!(pods.left_out(), 1);

    let (_, answer) = next_request(&mut handle).await;
    send_events(
        answer,
        &[
            (
                "DELETED",
                with_version(pod_json("web-1", "10.0.0.1", EARLY), "102"),
            ),
            (
                "ADDED",
                with_version(pod_json("web-new", "10.0.0.7", LATE), "103"),
            ),
            (
                "ADDED",
                with_version(pod_json("web-3", "10.0.0.3", EARLY), "104"),
            ),
        ],
    );
    while name_at(&pods, "10.0.0.7").as_deref() != Some("web-new") {
        next_published(&mut index).await;
    }
    assert_eq!(name_at(&pods, "10.0.0.1"), None);
    assert_eq!(name_at(&pods, "10.0.0.3"), None, "the store is full again");
    assert_eq!(pods.left_out(), 2);
}

#[tokio::test]
async fn enrich_sets_the_cluster_and_the_pod() {
    let (pods, mut index, mut handle) = started(MAX_PODS);
    let (_, answer) = next_request(&mut handle).await;
    send_list(answer, vec![pod_json("web-1", "10.0.0.1", EARLY)]);
    next_published(&mut index).await;
    let mut resource = Resource::default();
    assert!(pods.enrich(&mut resource, ip("10.0.0.1"), "prod-eu"));
    let keys: Vec<_> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            CLUSTER_NAME,
            NAMESPACE,
            POD_NAME,
            POD_UID,
            DEPLOYMENT_NAME,
            NODE_NAME
        ]
    );
    let mut unknown = Resource::default();
    assert!(!pods.enrich(
        &mut unknown,
        IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)),
        "prod-eu"
    ));
    assert_eq!(
        as_pairs(&unknown.attributes),
        pairs(&[(CLUSTER_NAME, "prod-eu")])
    );
}

/// The starter hands out the running cache while a handle lives and starts a new one
/// after the last is dropped (nothing runs while no trace pipeline holds one).
#[tokio::test]
async fn the_starter_shares_the_running_cache_and_restarts_it_when_dropped() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let starter = PodsByIpStarter::new(Client::new(service, "default"));
    let first = starter.get_or_start();
    let second = starter.get_or_start();
    assert!(Arc::ptr_eq(&first.running, &second.running));
    let _ = next_request(&mut handle).await;
    drop((first, second));
    let third = starter.get_or_start();
    let (request, _) = next_request(&mut handle).await;
    assert!(!is_watch(&request), "a new watch starts with a list");
    drop(third);
}
