//! What a Kubernetes API server sends, as response bodies, for tests that drive kube's
//! mock client (`tower_test::mock::pair`): a list, and watch events. Kept here so
//! every test speaks the same wire form.

use serde_json::{Value, json};

/// A list response (`kind` e.g. `SecretList`) at `resource_version` holding `items`.
pub fn list(kind: &str, resource_version: &str, items: Vec<Value>) -> Vec<u8> {
    let list = json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {"resourceVersion": resource_version},
        "items": items
    });
    serde_json::to_vec(&list).expect("a list is JSON")
}

/// One watch event line: `event_type` (`ADDED`, `MODIFIED`, `DELETED`) of `object`.
pub fn watch_event(event_type: &str, object: Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("an event is JSON");
    line.push(b'\n');
    line
}

/// Whether a request's query (`request.uri().query()`) asks for a watch.
pub fn is_watch(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == "watch=true")
}
