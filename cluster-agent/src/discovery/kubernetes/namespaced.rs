//! Objects of one kind in some namespaces only, each namespace kept current by its own
//! kube-runtime watcher and reflector (re-listing with backoff after errors): what
//! [`super::secrets`] and [`super::config_maps`] read keys from. Watching namespace by
//! namespace keeps the agent's RBAC to exactly the namespaces the provider allows; a
//! namespace not watched reads as nothing. The watchers stop when the value is dropped.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// Objects of kind `K` in some namespaces.
pub struct NamespacedObjects<K: Resource<DynamicType = ()> + 'static> {
    stores: Vec<(String, Store<K>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl<K> NamespacedObjects<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Watches the objects of `namespaces`, and of no other namespace; a failing
    /// watch is logged as watching `plural` (e.g. "Secrets") failed, never with an
    /// object's content.
    pub fn watch(
        client: &Client,
        namespaces: impl IntoIterator<Item = String>,
        plural: &'static str,
    ) -> Self {
        let mut stores = Vec::new();
        let mut tasks = Vec::new();
        for namespace in namespaces {
            let (reader, writer) = reflector::store::<K>();
            let api: Api<K> = Api::namespaced(client.clone(), &namespace);
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff();
            let name = namespace.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    if let Err(error) = event {
                        tracing::warn!(namespace = %name, %error, "watching {plural} failed; retrying with backoff");
                    }
                }
            }));
            stores.push((namespace, reader));
        }
        Self { stores, tasks }
    }

    /// The object `namespace/name`, if it exists and its namespace is watched.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let (_, store) = self.stores.iter().find(|(n, _)| n == namespace)?;
        store.get(&ObjectRef::new(name).within(namespace))
    }
}

impl<K: Resource<DynamicType = ()> + 'static> fmt::Debug for NamespacedObjects<K> {
    /// The watched namespaces only: never an object's content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let namespaces: Vec<&str> = self.stores.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("NamespacedObjects")
            .field("kind", &K::kind(&()))
            .field("namespaces", &namespaces)
            .finish_non_exhaustive()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for NamespacedObjects<K> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
