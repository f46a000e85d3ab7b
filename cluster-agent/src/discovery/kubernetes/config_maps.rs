//! `configMapKeyRef` values of template instances ([`crate::pipeline::instances`])
//! from the cluster's ConfigMaps: a reflector over the ConfigMaps of the namespaces
//! instances reference (only those the provider allows: validation refused any other),
//! read whenever an instance is rendered (it is the
//! [`ConfigMapStore`](crate::pipeline::instances::ConfigMapStore) of the instances). When a ConfigMap changes the reflector holds
//! the new value, and the next rendering uses it.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;

use super::namespaced::NamespacedObjects;

/// ConfigMaps of some namespaces, kept current by a watcher per namespace.
#[derive(Debug)]
pub struct KubernetesConfigMaps(NamespacedObjects<ConfigMap>);

impl KubernetesConfigMaps {
    /// Watches the ConfigMaps of `namespaces`, and of no other namespace.
    pub fn watch(client: &Client, namespaces: impl IntoIterator<Item = String>) -> Self {
        Self(NamespacedObjects::watch(client, namespaces, "ConfigMaps"))
    }

    /// The value of `key` in ConfigMap `namespace/name` (a `binaryData` value only if
    /// it is UTF-8), if it exists and its namespace is watched.
    pub fn get(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let config_map = self.0.get(namespace, name)?;
        if let Some(value) = config_map.data.as_ref().and_then(|d| d.get(key)) {
            return Some(value.clone());
        }
        let binary = config_map.binary_data.as_ref()?.get(key)?;
        String::from_utf8(binary.0.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    fn config_map(url: &str, version: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "backend", "namespace": "shop", "resourceVersion": version},
            "data": {"url": url}
        })
    }

    async fn eventually(store: &KubernetesConfigMaps, expected: &str) {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while store.get("shop", "backend", "url").as_deref() != Some(expected) {
            assert!(std::time::Instant::now() < until, "never saw {expected:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The API server's side: list the namespace's ConfigMaps, then a watch that
    /// changes the value; the store follows.
    #[tokio::test]
    async fn config_map_values_follow_changes_in_watched_namespaces_only() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let store = KubernetesConfigMaps::watch(&client, ["shop".to_owned()]);

        let (request, send) = handle.next_request().await.expect("a list request");
        assert_eq!(request.uri().path(), "/api/v1/namespaces/shop/configmaps");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "1"},
            "items": [config_map("https://a.example", "1")]
        });
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&list).unwrap(),
        )));
        eventually(&store, "https://a.example").await;
        assert!(store.get("shop", "backend", "missing").is_none());
        assert!(
            store.get("other", "backend", "url").is_none(),
            "unwatched namespace"
        );

        let (request, send) = handle.next_request().await.expect("a watch request");
        assert!(
            request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("watch=true")
        );
        let event =
            serde_json::json!({"type": "MODIFIED", "object": config_map("https://b.example", "2")});
        let mut body = serde_json::to_vec(&event).unwrap();
        body.push(b'\n');
        send.send_response(Response::new(Body::from(body)));
        eventually(&store, "https://b.example").await;
    }
}
