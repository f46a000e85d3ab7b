//! Store tests of tenant quotas ([`crate::store::quotas`]), on SQLite and PostgreSQL
//! like the rest of the suite.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{HOUR, TestDb, admin, new_cluster, pipeline_selecting};
use crate::probes::{ProbeModule, ProbeOrigin, ProbeTarget, TcpProbe};
use crate::store::StoreError;
use crate::store::quotas::{DEFAULT_MAX_CLUSTERS, DEFAULT_MAX_PROBE_ENDPOINTS};

store_tests!(
    quotas_bound_creations_and_admins_override_them,
    concurrent_creations_never_overshoot_a_quota,
);

fn probe(name: &str) -> crate::probes::ValidatedProbeTarget {
    ProbeTarget {
        name: name.to_owned(),
        tenant: "shop".to_owned(),
        cluster: None,
        origin: ProbeOrigin::Tenant,
        module: ProbeModule::Tcp(TcpProbe {
            address: format!("{name}.shop.example:443"),
        }),
    }
    .validate()
    .unwrap()
}

fn quota_of(error: StoreError) -> String {
    match error {
        StoreError::QuotaExceeded { quota, .. } => quota,
        other => panic!("not a quota refusal: {other}"),
    }
}

/// Issue 13, finding 8 (quotas): every kind of object is bounded per tenant, an
/// admin's override raises or lowers the bound, only creations count, tombstones do
/// not, and overrides go with their tenant.
async fn quotas_bound_creations_and_admins_override_them(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let quotas = store.tenant_quotas("shop").await.unwrap();
    let summary: Vec<(&str, u64, u64, bool)> = quotas
        .iter()
        .map(|q| (q.name.as_str(), q.limit, q.used, q.overridden))
        .collect();
    assert_eq!(
        summary,
        [
            ("clusters", DEFAULT_MAX_CLUSTERS, 0, false),
            ("pipelines/MetricPipeline", 50, 0, false),
            ("pipelines/LogPipeline", 50, 0, false),
            ("pipelines/TracePipeline", 50, 0, false),
            ("probes", DEFAULT_MAX_PROBE_ENDPOINTS, 0, false),
        ]
    );
    let limits = BTreeMap::from([
        ("clusters".to_owned(), 2),
        ("pipelines/MetricPipeline".to_owned(), 1),
        ("probes".to_owned(), 1),
    ]);
    store
        .set_tenant_quotas("shop", &limits, &admin())
        .await
        .unwrap();

    for name in ["a", "b"] {
        store
            .create_cluster(new_cluster(name, "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    let over = store
        .create_cluster(new_cluster("c", "shop", &[]), HOUR, &admin())
        .await
        .unwrap_err();
    assert!(
        over.to_string()
            .contains("is at its quota \"clusters\" of 2 clusters"),
        "{over}"
    );
    assert_eq!(quota_of(over), "clusters");
    // A tombstone does not count.
    store.delete_cluster("shop.a", &admin()).await.unwrap();
    store
        .create_cluster(new_cluster("c", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();

    store
        .apply_pipeline("shop", pipeline_selecting("one", None), &admin())
        .await
        .unwrap();
    // Updating an existing pipeline is not a creation.
    store
        .apply_pipeline("shop", pipeline_selecting("one", Some("prod")), &admin())
        .await
        .unwrap();
    let over = store
        .apply_pipeline("shop", pipeline_selecting("two", None), &admin())
        .await
        .unwrap_err();
    assert_eq!(quota_of(over), "pipelines/MetricPipeline");

    store
        .apply_probe_endpoint(probe("web"), &admin())
        .await
        .unwrap();
    let over = store
        .apply_probe_endpoint(probe("db"), &admin())
        .await
        .unwrap_err();
    assert_eq!(quota_of(over), "probes");

    // Back to the defaults: every creation above passes.
    let now = store
        .set_tenant_quotas("shop", &BTreeMap::new(), &admin())
        .await
        .unwrap();
    assert!(now.iter().all(|q| !q.overridden), "{now:?}");
    assert_eq!(now[0].used, 2, "two live clusters");
    store
        .apply_probe_endpoint(probe("db"), &admin())
        .await
        .unwrap();
    let unknown = BTreeMap::from([("nope".to_owned(), 1)]);
    assert!(matches!(
        store.set_tenant_quotas("shop", &unknown, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.tenant_quotas("ghost").await,
        Err(StoreError::NotFound { .. })
    ));
    let audit = store.audit_entries(100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "tenant-quota" && e.action == "update" && e.name == "shop"),
        "{audit:?}"
    );
}

/// Issue 13, finding 8 (quotas): creations racing in one tenant (on PostgreSQL, on
/// separate connections) end at exactly the quota, never above it.
async fn concurrent_creations_never_overshoot_a_quota(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let limits = BTreeMap::from([("probes".to_owned(), 5)]);
    store
        .set_tenant_quotas("shop", &limits, &admin())
        .await
        .unwrap();
    let attempts: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply_probe_endpoint(probe(&format!("p{i}")), &admin())
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        match tokio::time::timeout(Duration::from_secs(30), attempt)
            .await
            .expect("no deadlock")
            .unwrap()
        {
            Ok(_) => created += 1,
            Err(error) => assert_eq!(quota_of(error), "probes"),
        }
    }
    assert_eq!(created, 5);
    let quotas = store.tenant_quotas("shop").await.unwrap();
    let probes = quotas.iter().find(|q| q.name == "probes").unwrap();
    assert_eq!(probes.used, 5);
}
