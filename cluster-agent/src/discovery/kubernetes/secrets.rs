//! `secretKeyRef` values from the cluster's Secrets: a reflector over the Secrets of
//! the namespaces pipelines reference, read on every request. When a Secret changes,
//! the reflector holds the new value and the next request uses it: credentials rotate
//! without a restart. Values are held as [`SecretString`] and never logged.

use k8s_openapi::api::core::v1::Secret;
use kaas_pipeline::secret::SecretString;
use kube::Client;

use super::namespaced::NamespacedObjects;
use crate::outbound::auth::SecretStore;

/// Secrets of some namespaces, kept current by a watcher per namespace.
#[derive(Debug)]
pub struct KubernetesSecrets(NamespacedObjects<Secret>);

impl KubernetesSecrets {
    /// Watches the Secrets of `namespaces` (only those: an agent needs no access to
    /// other namespaces' Secrets).
    pub fn watch(client: &Client, namespaces: impl IntoIterator<Item = String>) -> Self {
        Self(NamespacedObjects::watch(client, namespaces, "Secrets"))
    }
}

impl SecretStore for KubernetesSecrets {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
        let secret = self.0.get(namespace, name)?;
        if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return String::from_utf8(value.0.clone())
                .ok()
                .map(SecretString::new);
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| SecretString::new(v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kaas_test_support::kube_api;
    use kube::client::Body;

    use super::*;

    fn secret(token: &str, version: &str) -> serde_json::Value {
        use base64::Engine;
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "backend", "namespace": "shop", "resourceVersion": version},
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)}
        })
    }

    async fn eventually(store: &KubernetesSecrets, expected: &str) {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if store
                .get("shop", "backend", "token")
                .map(|s| s.expose().to_owned())
                .as_deref()
                == Some(expected)
            {
                return;
            }
            assert!(std::time::Instant::now() < until, "never saw {expected:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The API server's side: list the namespace's Secrets, then a watch that
    /// rotates the token. The store follows without anyone restarting anything.
    #[tokio::test]
    async fn secret_values_follow_rotation() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let store = KubernetesSecrets::watch(&client, ["shop".to_owned()]);

        let (request, send) = handle.next_request().await.expect("a list request");
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/shop/secrets",
            "only the referenced namespace"
        );
        let list = kube_api::list("SecretList", "1", vec![secret("first-token", "1")]);
        send.send_response(Response::new(Body::from(list)));
        eventually(&store, "first-token").await;
        assert!(store.get("shop", "backend", "missing").is_none());
        assert!(
            store.get("other", "backend", "token").is_none(),
            "unwatched namespace"
        );

        let (request, send) = handle.next_request().await.expect("a watch request");
        assert!(kube_api::is_watch(request.uri().query()));
        let event = kube_api::watch_event("MODIFIED", secret("rotated-token", "2"));
        send.send_response(Response::new(Body::from(event)));
        eventually(&store, "rotated-token").await;
        assert!(
            !format!("{store:?}").contains("rotated-token"),
            "no values in debug output"
        );
    }
}
