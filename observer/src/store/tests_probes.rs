//! Store tests of the probes' parts, on SQLite and PostgreSQL like the rest of the
//! suite: replica heartbeats (`replicas.rs`) and the change feed of probe endpoints
//! (`probe_endpoints.rs`).

use std::time::Duration;

use super::{CROSS_REPLICA_DEADLINE, TestDb, admin, new_cluster, next_change, wait_for};
use crate::probes::{HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget};
use crate::store::Change;

store_tests!(
    replicas_heartbeat_age_out_leave_and_are_pruned,
    probe_endpoint_writes_publish_a_change,
);

/// Two replicas on PostgreSQL: each sees the other's heartbeat and endpoint changes.
mod postgres_replicas {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_see_each_others_heartbeats_and_probe_endpoint_changes() {
        let Some(db) = super::TestDb::postgres().await else {
            return;
        };
        super::replicas_see_each_others_heartbeats_and_probe_endpoint_changes(&db).await;
    }
}

async fn replicas_heartbeat_age_out_leave_and_are_pruned(db: &TestDb) {
    let store = db.store().await;
    let now = store.database_time_ms().await.unwrap();
    let local = crate::store::now_ms();
    assert!(
        (now - local).abs() < 60_000,
        "the database's clock ({now}) is the local one ({local}) give or take a minute"
    );
    assert!(store.live_replicas(0).await.unwrap().is_empty());

    store.heartbeat_replica("observer-b", now).await.unwrap();
    store
        .heartbeat_replica("observer-a", now - 10_000)
        .await
        .unwrap();
    store
        .heartbeat_replica("observer-c", now - 20_000)
        .await
        .unwrap();
    assert_eq!(
        store.live_replicas(now - 15_000).await.unwrap(),
        ["observer-a", "observer-b"],
        "sorted, and c is too old"
    );
    // A heartbeat moves the row forward (an upsert, not a second row).
    store.heartbeat_replica("observer-c", now).await.unwrap();
    assert_eq!(
        store.live_replicas(now - 15_000).await.unwrap(),
        ["observer-a", "observer-b", "observer-c"]
    );
    assert_eq!(
        store.live_replicas(now - 5_000).await.unwrap(),
        ["observer-b", "observer-c"]
    );

    // Leaving deletes the row; leaving twice is fine.
    store.remove_replica("observer-b").await.unwrap();
    store.remove_replica("observer-b").await.unwrap();
    assert_eq!(
        store.live_replicas(0).await.unwrap(),
        ["observer-a", "observer-c"]
    );

    // Pruning removes only rows older than the cut.
    assert_eq!(store.prune_replicas(now - 5_000).await.unwrap(), 1);
    assert_eq!(store.live_replicas(0).await.unwrap(), ["observer-c"]);
    assert_eq!(store.prune_replicas(now - 5_000).await.unwrap(), 0);
}

fn endpoint(name: &str, url: &str) -> ProbeTarget {
    ProbeTarget {
        name: name.into(),
        tenant: "shop".into(),
        cluster: None,
        origin: ProbeOrigin::Tenant,
        module: ProbeModule::Http(HttpProbe {
            url: url.into(),
            method: HttpMethod::Get,
            expected_status: Vec::new(),
            tls: None,
        }),
    }
}

fn change(name: &str) -> Change {
    Change::ProbeEndpoint {
        tenant: "shop".into(),
        name: name.into(),
    }
}

async fn probe_endpoint_writes_publish_a_change(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let mut feed = store.subscribe();
    let web = endpoint("web", "https://shop.example/");
    store
        .apply_probe_endpoint(web.clone().validate().unwrap(), &admin())
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, change("web"));

    // An identical apply writes and publishes nothing; the next change is the edit.
    store
        .apply_probe_endpoint(web.clone().validate().unwrap(), &admin())
        .await
        .unwrap();
    let edited = endpoint("web", "https://shop.example/healthz");
    store
        .apply_probe_endpoint(edited.validate().unwrap(), &admin())
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, change("web"));

    store
        .delete_probe_endpoint("shop", "web", &admin())
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, change("web"));
    // A refused write publishes nothing: the next change is the tenant's.
    let mut bound = endpoint("bound", "https://shop.example/");
    bound.cluster = Some("missing".into());
    assert!(
        store
            .apply_probe_endpoint(bound.validate().unwrap(), &admin())
            .await
            .is_err()
    );
    store
        .create_cluster(
            new_cluster("c1", "shop", &[]),
            Duration::from_secs(60),
            &admin(),
        )
        .await
        .unwrap();
    assert!(matches!(
        next_change(&mut feed).await,
        Change::Cluster { .. }
    ));
}

async fn replicas_see_each_others_heartbeats_and_probe_endpoint_changes(db: &TestDb) {
    let one = db.store().await;
    let two = db.store().await;
    let now = one.database_time_ms().await.unwrap();
    one.heartbeat_replica("one", now).await.unwrap();
    two.heartbeat_replica("two", two.database_time_ms().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        two.live_replicas(now - 15_000).await.unwrap(),
        ["one", "two"]
    );
    assert_eq!(
        one.live_replicas(now - 15_000).await.unwrap(),
        ["one", "two"]
    );
    one.remove_replica("one").await.unwrap();
    assert_eq!(two.live_replicas(now - 15_000).await.unwrap(), ["two"]);

    one.create_tenant("shop", &admin()).await.unwrap();
    let mut feed = two.subscribe();
    one.apply_probe_endpoint(
        endpoint("web", "https://shop.example/").validate().unwrap(),
        &admin(),
    )
    .await
    .unwrap();
    wait_for(&mut feed, &change("web"), CROSS_REPLICA_DEADLINE).await;
}
