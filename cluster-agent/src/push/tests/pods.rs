//! Pods for the enrichment tests of pushed spans and logs, served by kube's mock
//! client: the pod cache's starter, the pods the API server lists, and a wait until
//! the agent has indexed them.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use kube::client::Body as KubeBody;

use super::PROMPTLY;
use crate::agent::Agent;
use crate::discovery::kubernetes::mock_api::{self, next_request, send_list};
use crate::discovery::kubernetes::pods_by_ip::PodsByIpStarter;

/// The address of the pod `web-7d4b9c8f5-x2x9q` of Deployment `web` in `shop`.
pub(super) const POD_ADDRESS: &str = "10.0.0.1:43210";
/// An address no pod has.
pub(super) const UNKNOWN_ADDRESS: &str = "10.9.9.9:43210";

/// A pod cache starter on a mock API server, and the server's side.
pub(super) fn mocked_starter() -> (PodsByIpStarter, mock_api::Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<KubeBody>, http::Response<KubeBody>>();
    let starter = PodsByIpStarter::new(kube::Client::new(service, "default"));
    (starter, handle)
}

/// The pod at [`POD_ADDRESS`], as the API server lists it.
pub(super) fn web_pod() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c8f5-x2x9q", "namespace": "shop", "uid": "uid-web",
            "resourceVersion": "101",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d4b9c8f5", "uid": "rs-1", "controller": true}]
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "web:1"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                   "startTime": "2026-12-07T10:00:00Z"}
    })
}

/// Answers the pod watch's list with [`web_pod`] and waits until the agent finds it
/// by its address; the watch request that follows is returned unanswered (held, it
/// keeps the watcher waiting rather than listing again).
pub(super) async fn serve_the_web_pod(
    agent: &Agent,
    api: &mut mock_api::Handle,
) -> mock_api::Answer {
    serve_pods(agent, api, vec![web_pod()]).await
}

/// Answers the pod watch's list with `pods` (the web pod among them) and waits until
/// the agent finds the web pod by its address; the watch request that follows is
/// returned unanswered.
pub(super) async fn serve_pods(
    agent: &Agent,
    api: &mut mock_api::Handle,
    pods: Vec<serde_json::Value>,
) -> mock_api::Answer {
    let (request, answer) = next_request(api).await;
    assert_eq!(request.uri().path(), "/api/v1/pods");
    send_list(answer, pods);
    let (_, watch) = next_request(api).await;
    let peer = Some(address(POD_ADDRESS).ip());
    let until = std::time::Instant::now() + PROMPTLY;
    while (agent.push_enrichment)
        .enrich(std::iter::empty(), peer, None)
        .pod_namespace
        .is_none()
    {
        assert!(
            std::time::Instant::now() < until,
            "the pod is never indexed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch
}

pub(super) fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The address of the pod `coredns-5d78c9869d-abcde` in `kube-system`.
pub(super) const SYSTEM_POD_ADDRESS: &str = "10.0.0.2:53000";

/// The pod at [`SYSTEM_POD_ADDRESS`], as the API server lists it.
pub(super) fn coredns_pod() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "coredns-5d78c9869d-abcde", "namespace": "kube-system",
            "uid": "uid-coredns", "resourceVersion": "102"
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "dns", "image": "coredns:1"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}],
                   "startTime": "2026-12-07T10:00:00Z"}
    })
}
