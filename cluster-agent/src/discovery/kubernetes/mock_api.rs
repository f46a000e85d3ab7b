//! The API server's side of a watch, for tests against kube's mock client
//! (`tower_test::mock::pair`): wait for the watcher's next request, answer a list, and
//! stream watch events; shared by the watch tests here.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use tokio::sync::watch as channel;

/// The mock's handle, as the tests hold it.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
/// Where one answer goes.
pub type Answer = tower_test::mock::SendResponse<Response<Body>>;

/// The watcher's next request; fails the test after five seconds without one.
pub async fn next_request(handle: &mut Handle) -> (Request<Body>, Answer) {
    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the watcher sends a request in time")
        .expect("a request")
}

/// Whether `request` is a watch (`watch=true`) rather than a list.
pub fn is_watch(request: &Request<Body>) -> bool {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .contains("watch=true")
}

/// Answers a list request with `items` at resource version `version`.
pub fn send_list_at(answer: Answer, version: &str, items: Vec<serde_json::Value>) {
    let list = serde_json::json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": version},
        "items": items
    });
    answer.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).expect("json"),
    )));
}

/// Answers a list request with `items` at resource version 100.
pub fn send_list(answer: Answer, items: Vec<serde_json::Value>) {
    send_list_at(answer, "100", items);
}

/// Answers a watch request with `events`, each `(type, object)` (`ADDED`, `MODIFIED`,
/// `DELETED`, `ERROR`), then ends the response.
pub fn send_events(answer: Answer, events: &[(&str, serde_json::Value)]) {
    let mut body = Vec::new();
    for (kind, object) in events {
        let event = serde_json::json!({"type": kind, "object": object});
        body.extend(serde_json::to_vec(&event).expect("json"));
        body.push(b'\n');
    }
    answer.send_response(Response::new(Body::from(body)));
}

/// Answers a watch request with one `ADDED` event for `object`.
pub fn send_added(answer: Answer, object: serde_json::Value) {
    send_events(answer, &[("ADDED", object)]);
}

/// The next value a watch channel publishes; fails the test after five seconds.
pub async fn next_published<T: Clone>(receiver: &mut channel::Receiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), receiver.changed())
        .await
        .expect("published in time")
        .expect("the publisher runs");
    receiver.borrow_and_update().clone()
}
