//! Store tests of health per agent instance ([`crate::store::instances`]), on SQLite
//! and PostgreSQL like the rest of the suite: worst-of with counts, the time-to-live
//! (with an injected clock), pruning that leaves the cluster's liveness alone, and the
//! bound on instances per cluster.

use std::time::Duration;

use kaas_pipeline::role::AgentRole;
use sea_orm::{EntityTrait, Set};

use super::{HOUR, TestDb, admin, new_cluster};
use crate::store::certificates::MAX_INSTANCES_PER_CLUSTER;
use crate::store::entities::instance_health;
use crate::store::instances::{
    HEALTHY_RANK, InstanceHealthReport, InstancePipelineHealth, InstanceProblem, PipelineInstances,
};
use crate::store::{Change, ReportWrite, Store};

store_tests!(
    a_pipeline_on_a_cluster_is_the_worst_of_its_instances,
    instances_past_the_ttl_are_left_out_and_pruned_without_touching_the_cluster,
    instances_per_cluster_are_bounded,
    a_cluster_has_its_gateway_in_use_while_a_gateway_instance_reports,
);

const T0: i64 = 1_800_000_000_000;

fn problem(rank: i32, reason: &str, message: &str) -> InstanceProblem {
    InstanceProblem {
        rank,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

fn entry(kind: &str, pipeline: &str, problems: Vec<InstanceProblem>) -> InstancePipelineHealth {
    InstancePipelineHealth {
        kind: kind.to_owned(),
        pipeline: pipeline.to_owned(),
        entry: serde_json::json!({"pipeline": pipeline}),
        problems,
    }
}

fn report(
    cluster: &str,
    instance: &str,
    received_at_ms: i64,
    pipelines: Vec<InstancePipelineHealth>,
) -> ReportWrite {
    ReportWrite::InstanceHealth(Box::new(InstanceHealthReport {
        cluster: cluster.to_owned(),
        instance: instance.to_owned(),
        agent_instance_id: format!("{instance}-process"),
        role: role_of(instance),
        reported_at_ms: received_at_ms,
        received_at_ms,
        pipelines,
    }))
}

/// The role the tests' instances play: `default` the cluster's, `gateway-*` gateway
/// replicas, the others nodes.
fn role_of(instance: &str) -> AgentRole {
    if instance == "default" {
        AgentRole::Cluster
    } else if instance.starts_with("gateway-") {
        AgentRole::Gateway
    } else {
        AgentRole::Node
    }
}

async fn cluster(store: &Store, name: &str) -> String {
    store.create_tenant("shop", &admin()).await.ok();
    let (cluster, _) = store
        .create_cluster(new_cluster(name, "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    cluster.id
}

/// The answer for `(kind, pipeline)` on `cluster` as of `now`.
async fn health_of(
    store: &Store,
    cluster: &str,
    kind: &str,
    pipeline: &str,
    now: i64,
) -> Option<PipelineInstances> {
    let mut answers = store
        .instance_health_at(&[cluster.to_owned()], now)
        .await
        .unwrap();
    answers
        .remove(cluster)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.kind == kind && p.pipeline == pipeline)
}

/// Issue 16: a cluster-level instance and two node instances report different health
/// for the same log pipeline: the cluster's answer is the worst instance with the
/// count of affected and reporting ones; a metric pipeline of the same name is apart;
/// an instance's next report replaces its rows whole.
async fn a_pipeline_on_a_cluster_is_the_worst_of_its_instances(db: &TestDb) {
    let store = db.store().await;
    let c1 = cluster(&store, "c1").await;
    let c2 = cluster(&store, "c2").await;
    let log = "LogPipeline";
    let metric = "MetricPipeline";
    // Submitted together (one batch, most likely), then one waited for: all committed.
    for write in [
        report(
            &c1,
            "default",
            T0,
            vec![entry(log, "app", vec![]), entry(metric, "app", vec![])],
        ),
        report(
            &c1,
            "node-a",
            T0,
            vec![entry(
                log,
                "app",
                vec![problem(3, "DataDropped", "5 samples dropped")],
            )],
        ),
        report(
            &c1,
            "node-b",
            T0,
            vec![entry(
                log,
                "app",
                vec![
                    problem(1, "BackendUnreachable", "connection refused"),
                    problem(3, "DataDropped", "7 samples dropped"),
                ],
            )],
        ),
    ] {
        store.submit_report(write).await.unwrap();
    }
    store
        .report(report(&c2, "default", T0, vec![entry(log, "app", vec![])]))
        .await
        .unwrap();

    let app = health_of(&store, &c1, log, "app", T0).await.unwrap();
    assert_eq!((app.reporting, app.affected), (3, 2));
    let worst = app.worst.unwrap();
    assert_eq!(worst.instance, "node-b", "the lowest rank is the worst");
    assert_eq!(worst.problems[0].reason, "BackendUnreachable");
    assert_eq!(worst.problems.len(), 2);
    let metric_app = health_of(&store, &c1, metric, "app", T0).await.unwrap();
    assert_eq!((metric_app.reporting, metric_app.affected), (1, 0));
    assert_eq!(metric_app.worst, None);
    let other = health_of(&store, &c2, log, "app", T0).await.unwrap();
    assert_eq!((other.reporting, other.affected), (1, 0), "clusters apart");

    // node-b recovers and stops running `app`: its rows are replaced whole.
    store
        .report(report(
            &c1,
            "node-b",
            T0 + 1,
            vec![entry(log, "other", vec![])],
        ))
        .await
        .unwrap();
    let app = health_of(&store, &c1, log, "app", T0 + 1).await.unwrap();
    assert_eq!((app.reporting, app.affected), (2, 1));
    assert_eq!(app.worst.unwrap().instance, "node-a");
    // Ties in rank go to the first instance by name.
    store
        .report(report(
            &c1,
            "node-0",
            T0 + 1,
            vec![entry(log, "app", vec![problem(3, "DataDropped", "1")])],
        ))
        .await
        .unwrap();
    let app = health_of(&store, &c1, log, "app", T0 + 1).await.unwrap();
    assert_eq!((app.reporting, app.affected), (3, 2));
    assert_eq!(app.worst.unwrap().instance, "node-0");
    // What the agent chose is bounded: a rank cannot claim "healthy" or below zero.
    store
        .report(report(
            &c1,
            "node-x",
            T0 + 1,
            vec![entry(
                log,
                "bounded",
                vec![problem(HEALTHY_RANK + 5, "X", "y")],
            )],
        ))
        .await
        .unwrap();
    let bounded = health_of(&store, &c1, log, "bounded", T0 + 1)
        .await
        .unwrap();
    assert_eq!(bounded.affected, 1, "a reported problem always affects");
}

/// Issue 16: an instance whose last report is older than the time-to-live is left out
/// of the answer at once and its rows are pruned (bounded, announced as a report of
/// its cluster), while the cluster's row (state, last seen, connection) is untouched:
/// node instances going away never make a cluster silent.
async fn instances_past_the_ttl_are_left_out_and_pruned_without_touching_the_cluster(db: &TestDb) {
    let store = db.store().await;
    store.set_instance_health_ttl(Duration::from_secs(60));
    let c1 = cluster(&store, "c1").await;
    store
        .report(ReportWrite::Seen {
            cluster: c1.clone(),
            instance_id: "default-process".to_owned(),
            version: "1.0.0".to_owned(),
            at_ms: T0,
            connection: Some("r/1".to_owned()),
        })
        .await
        .unwrap();
    let before = store.get_cluster(&c1).await.unwrap().unwrap();
    let log = "LogPipeline";
    let broken = || {
        vec![entry(
            log,
            "app",
            vec![problem(1, "BackendUnreachable", "x")],
        )]
    };
    store
        .report(report(&c1, "node-gone", T0, broken()))
        .await
        .unwrap();
    store
        .report(report(
            &c1,
            "default",
            T0 + 50_000,
            vec![entry(log, "app", vec![])],
        ))
        .await
        .unwrap();
    let app = health_of(&store, &c1, log, "app", T0 + 59_000)
        .await
        .unwrap();
    assert_eq!((app.reporting, app.affected), (2, 1), "within the TTL");
    // Past node-gone's TTL: left out before any prune.
    let now = T0 + 61_000;
    let app = health_of(&store, &c1, log, "app", now).await.unwrap();
    assert_eq!((app.reporting, app.affected), (1, 0));
    assert_eq!(app.worst, None);

    let mut changes = store.subscribe();
    assert_eq!(store.prune_instance_health(now).await.unwrap(), 1);
    assert_eq!(
        changes.recv().await.unwrap(),
        Change::ClusterReport(c1.clone()),
        "the status task hears of it"
    );
    assert_eq!(store.prune_instance_health(now).await.unwrap(), 0, "done");
    let rows = instance_health::Entity::find()
        .all(store.db())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].instance, "default");
    let after = store.get_cluster(&c1).await.unwrap().unwrap();
    assert_eq!(after.state, before.state);
    assert_eq!(after.last_seen_ms, before.last_seen_ms);
    assert!(after.connected);
    // The remaining instance past its TTL too: nothing answers, nothing else changes.
    let later = T0 + 200_000;
    assert_eq!(health_of(&store, &c1, log, "app", later).await, None);
    assert_eq!(store.prune_instance_health(later).await.unwrap(), 1);
    let after = store.get_cluster(&c1).await.unwrap().unwrap();
    assert_eq!(
        (after.state, after.last_seen_ms, after.connected),
        (before.state, before.last_seen_ms, true)
    );
}

/// At most [`MAX_INSTANCES_PER_CLUSTER`] instances per cluster are kept: a report of
/// one more is not stored, while known instances keep reporting.
async fn instances_per_cluster_are_bounded(db: &TestDb) {
    let store = db.store().await;
    let c1 = cluster(&store, "c1").await;
    let rows: Vec<instance_health::ActiveModel> = (0..MAX_INSTANCES_PER_CLUSTER)
        .map(|n| instance_health::ActiveModel {
            cluster: Set(c1.clone()),
            instance: Set(format!("node-{n:05}")),
            kind: Set("LogPipeline".to_owned()),
            pipeline: Set("app".to_owned()),
            agent_instance_id: Set("p".to_owned()),
            entry: Set(serde_json::json!({})),
            problems: Set(serde_json::json!([])),
            worst_rank: Set(HEALTHY_RANK),
            reported_at_ms: Set(T0),
            received_at_ms: Set(T0),
            role: Set("node".to_owned()),
        })
        .collect();
    for chunk in rows.chunks(1000) {
        instance_health::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(store.db())
            .await
            .unwrap();
    }
    let broken = || {
        vec![entry(
            "LogPipeline",
            "app",
            vec![problem(1, "BackendUnreachable", "x")],
        )]
    };
    store
        .report(report(&c1, "one-too-many", T0, broken()))
        .await
        .unwrap();
    let app = health_of(&store, &c1, "LogPipeline", "app", T0)
        .await
        .unwrap();
    assert_eq!(
        (app.reporting, app.affected),
        (u32::try_from(MAX_INSTANCES_PER_CLUSTER).unwrap(), 0),
        "the instance beyond the bound is not stored"
    );
    store
        .report(report(&c1, "node-00007", T0, broken()))
        .await
        .unwrap();
    let app = health_of(&store, &c1, "LogPipeline", "app", T0)
        .await
        .unwrap();
    assert_eq!(app.affected, 1, "a known instance still reports");
    assert_eq!(app.worst.unwrap().instance, "node-00007");
}

/// A cluster's gateway is in use from a gateway instance's first report until the
/// time-to-live after its last one; the cluster's own instance and node instances
/// never put a cluster's pushes on a gateway.
async fn a_cluster_has_its_gateway_in_use_while_a_gateway_instance_reports(db: &TestDb) {
    let store = db.store().await;
    let c1 = cluster(&store, "c1").await;
    let c2 = cluster(&store, "c2").await;
    let both = [c1.clone(), c2.clone()];
    let trace = "TracePipeline";
    for write in [
        report(&c1, "default", T0, vec![entry(trace, "spans", vec![])]),
        report(&c1, "node-a", T0, vec![entry("LogPipeline", "app", vec![])]),
        report(&c2, "default", T0, vec![entry(trace, "spans", vec![])]),
    ] {
        store.report(write).await.unwrap();
    }
    assert!(
        store
            .clusters_with_gateway_at(&both, T0)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .report(report(
            &c1,
            "gateway-0",
            T0,
            vec![entry(trace, "spans", vec![])],
        ))
        .await
        .unwrap();
    let found = store.clusters_with_gateway_at(&both, T0).await.unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![c1.clone()]);

    let ttl = i64::try_from(store.instance_health_ttl().as_millis()).unwrap();
    let within = store
        .clusters_with_gateway_at(&both, T0 + ttl)
        .await
        .unwrap();
    assert!(within.contains(&c1), "still in use at the time-to-live");
    let after = store
        .clusters_with_gateway_at(&both, T0 + ttl + 1)
        .await
        .unwrap();
    assert!(
        after.is_empty(),
        "no gateway report within the time-to-live"
    );
}
