//! Each tenant's pipelines as last read from the store, shared by every agent stream of
//! the tenant and by the status task.
//!
//! A pipeline change wakes every stream of its tenant at once; without this cache each
//! of them would read and decrypt the tenant's pipelines, N reads of the same rows for
//! N clusters. With it the first stream to ask reads them and the others wait for that
//! one read ([`OnceCell`]).
//!
//! # Staying current
//! The dispatcher calls [`TenantPipelines::invalidate`] for every `Change::Pipeline` or
//! `Change::Tenant` of the tenant (on PostgreSQL also those of other replicas) *before*
//! it wakes the tenant's streams, and [`TenantPipelines::clear`] when the change feed
//! lagged. Invalidating replaces the tenant's cell, so:
//! * a read that starts after the invalidation sees the change (it was committed before
//!   it was published);
//! * a read that started before may fill the old cell with the old pipelines, but only
//!   callers that took that cell before the invalidation see them, and each of those is
//!   a stream that is woken again by the invalidating change, or the status task, which
//!   is sent the change as work too.
//!
//! The cache holds the pipelines with their inline secrets in plaintext, as a render
//! needs them; they never leave the process except in an agent's configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::store::{Store, StoreError, StoredPipeline};

/// One tenant's pipelines, by name.
pub type Pipelines = Arc<[StoredPipeline]>;

type Cell = Arc<OnceCell<Pipelines>>;

/// See the module documentation.
#[derive(Default)]
pub struct TenantPipelines {
    tenants: Mutex<HashMap<String, Cell>>,
}

impl TenantPipelines {
    /// The tenant's pipelines: from the cache, or read once for every concurrent caller.
    pub async fn get(&self, store: &Store, tenant: &str) -> Result<Pipelines, StoreError> {
        let cell = self.lock().entry(tenant.to_owned()).or_default().clone();
        cell.get_or_try_init(|| async {
            Ok::<_, StoreError>(Pipelines::from(store.list_pipelines(Some(tenant)).await?))
        })
        .await
        .cloned()
    }

    /// Forgets the tenant's pipelines: they changed.
    pub fn invalidate(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    /// Forgets every tenant's pipelines (the change feed lagged: anything may have
    /// changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cell>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secrets::SecretBox;
    use crate::store::Actor;

    fn pipeline(name: &str) -> kaas_pipeline::ValidatedPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
             metadata:\n  name: {name}\nspec:\n  input:\n    runtime:\n      enabled: true\n  \
             output:\n    otlp:\n      endpoint: http://collector.example:4317\n"
        );
        let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate(&resource).unwrap()
    }

    fn names(pipelines: &Pipelines) -> Vec<&str> {
        pipelines.iter().map(StoredPipeline::name).collect()
    }

    #[tokio::test]
    async fn serves_the_cached_read_until_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("o.db"), SecretBox::generate().unwrap())
            .await
            .unwrap();
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        store
            .apply_pipeline("shop", pipeline("p1"), &Actor::admin())
            .await
            .unwrap();
        let cache = TenantPipelines::default();
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p1"]);

        store
            .apply_pipeline("shop", pipeline("p2"), &Actor::admin())
            .await
            .unwrap();
        // Not invalidated: the cached read stands (the dispatcher invalidates on the
        // change it publishes).
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p1"]);
        cache.invalidate("shop");
        assert_eq!(
            names(&cache.get(&store, "shop").await.unwrap()),
            ["p1", "p2"]
        );

        store
            .delete_pipeline("shop", "p1", &Actor::admin())
            .await
            .unwrap();
        cache.clear();
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p2"]);
        assert!(cache.get(&store, "nobody").await.unwrap().is_empty());
        // Concurrent callers share one read and get the same pipelines.
        cache.invalidate("shop");
        let (a, b) = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join(cache.get(&store, "shop"), cache.get(&store, "shop")),
        )
        .await
        .unwrap();
        assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
    }
}
