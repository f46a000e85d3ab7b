//! The identity model in the store: cluster names per tenant beside global ids, agent
//! certificates per instance, idempotent redemption, and the migration of a database
//! written before any of it. Each scenario runs on SQLite and on PostgreSQL.

use sea_orm::{ConnectionTrait, Database};
use sea_orm_migration::MigratorTrait;

use super::super::certificates::{
    CertificateStanding, JOIN_RETRY_WINDOW, JoinTokenCheck, NewAgentCertificate, csr_sha256,
};
use super::super::migrations::Migrator;
use super::super::*;
use super::{HOUR, TestDb, admin, new_cluster};
use crate::identity::DEFAULT_INSTANCE;

store_tests!(
    a_database_written_before_per_tenant_names_keeps_its_clusters_and_certificates,
    a_retried_redemption_with_the_same_csr_is_answered_again_within_the_window,
    a_rejoin_revokes_only_its_own_instance_and_a_renewal_revokes_at_the_switch,
    instances_of_a_cluster_are_bounded,
);

/// How many migrations 552c13e had: the schema a database of that version has.
const MIGRATIONS_BEFORE_IDENTITY: u32 = 4;

fn certificate<'a>(serial: &'a str, instance: &'a str, now: i64) -> NewAgentCertificate<'a> {
    NewAgentCertificate {
        serial_hex: serial,
        pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        instance,
        not_after_ms: now + 3_600_000,
    }
}

/// Issue 13, findings 7 and 8, the migration of their fix (a guard; on 552c13e the
/// last step fails: another tenant cannot take the name): a database created and
/// filled the way 552c13e does (its four migrations, a cluster with a recorded certificate serial, a
/// tombstone) is migrated without losing anything: the clusters keep their names as
/// global ids, the recorded certificate stays accepted (the tombstone's stays refused),
/// names become unique per tenant, so another tenant can now take the name.
async fn a_database_written_before_per_tenant_names_keeps_its_clusters_and_certificates(
    db: &TestDb,
) {
    let url = match db.backend {
        sea_orm::DbBackend::Sqlite => format!("{}?mode=rwc", db.url),
        _ => db.url.clone(),
    };
    let raw = Database::connect(url.as_str()).await.unwrap();
    Migrator::up(&raw, Some(MIGRATIONS_BEFORE_IDENTITY))
        .await
        .unwrap();
    for sql in [
        "INSERT INTO tenants (name, created_at_ms) VALUES ('shop', 1)",
        "INSERT INTO clusters (name, tenant, labels, state, connected, certificate_serial, \
         certificate_not_after_ms, created_at_ms, state_changed_at_ms) VALUES \
         ('edge-1', 'shop', '{\"env\":\"prod\"}', 'active', false, '0a1b', 9000000000000, 5, 5)",
        "INSERT INTO clusters (name, tenant, labels, state, connected, certificate_serial, \
         certificate_not_after_ms, created_at_ms, state_changed_at_ms, deleted_at_ms) VALUES \
         ('old-1', 'shop', '{}', 'deleted', false, '0c0d', 9000000000000, 5, 6, 6)",
    ] {
        raw.execute_unprepared(sql).await.unwrap();
    }
    drop(raw);

    let store = db.store().await;
    let cluster = store.get_cluster("edge-1").await.unwrap().unwrap();
    assert_eq!(
        (cluster.id.as_str(), cluster.name.as_str()),
        ("edge-1", "edge-1")
    );
    assert_eq!(cluster.labels["env"], "prod");
    assert_eq!(
        store.get_cluster_named("shop", "edge-1").await.unwrap(),
        Some(cluster)
    );
    assert_eq!(
        store.certificate_standing("edge-1", "0a1b").await.unwrap(),
        CertificateStanding::Valid {
            instance: DEFAULT_INSTANCE.to_owned()
        }
    );
    assert_eq!(
        store.certificate_standing("old-1", "0c0d").await.unwrap(),
        CertificateStanding::Unknown
    );
    // Names are per tenant now: shop's is still taken, another tenant may have it.
    assert!(matches!(
        store
            .create_cluster(new_cluster("edge-1", "shop", &[]), HOUR, &admin())
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    store.create_tenant("bank", &admin()).await.unwrap();
    let (banks, _) = store
        .create_cluster(new_cluster("edge-1", "bank", &[]), HOUR, &admin())
        .await
        .unwrap();
    assert_eq!(banks.id, "bank.edge-1");
}

/// Issue 13, finding 7 (lost answer): the same token with the same CSR shortly after a
/// successful redemption is answered with the same certificate; another CSR, or the
/// same one after the window, is refused as a used token.
async fn a_retried_redemption_with_the_same_csr_is_answered_again_within_the_window(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (cluster, token) = store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let now = now_ms();
    let csr = csr_sha256("the agent's CSR");
    assert_eq!(
        store.check_join_token(&token, &csr, now).await.unwrap(),
        JoinTokenCheck::Redeemable(cluster.clone())
    );
    let issued = NewAgentCertificate {
        pem: "the certificate",
        ..certificate("01", DEFAULT_INSTANCE, now)
    };
    store
        .redeem_join_token(&token, &csr, issued, now)
        .await
        .unwrap()
        .unwrap();
    let again = store
        .check_join_token(&token, &csr, now + 1_000)
        .await
        .unwrap();
    let JoinTokenCheck::Answered {
        cluster: answered,
        certificate_pem,
        instance,
        not_after_ms,
    } = again
    else {
        panic!("{again:?}");
    };
    assert_eq!(answered.id, cluster.id);
    assert_eq!(certificate_pem, "the certificate");
    assert_eq!(instance, DEFAULT_INSTANCE);
    assert_eq!(not_after_ms, now + 3_600_000);
    let window = i64::try_from(JOIN_RETRY_WINDOW.as_millis()).unwrap();
    for (csr, at) in [
        (csr_sha256("another CSR"), now + 1_000),
        (csr.clone(), now + window + 1),
    ] {
        assert_eq!(
            store.check_join_token(&token, &csr, at).await.unwrap(),
            JoinTokenCheck::Refused(RedeemError::AlreadyUsed)
        );
    }
    // A redemption of the used token stays refused.
    assert_eq!(
        store
            .redeem_join_token(&token, &csr, certificate("02", DEFAULT_INSTANCE, now), now)
            .await
            .unwrap(),
        Err(RedeemError::AlreadyUsed)
    );
}

/// Issue 13, finding 7 (per instance): re-joining one instance revokes that instance's
/// certificates only; a renewal keeps the old certificate until the new one is used,
/// then revokes it; a second renewal before the switch supersedes the first.
async fn a_rejoin_revokes_only_its_own_instance_and_a_renewal_revokes_at_the_switch(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (cluster, token) = store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let id = cluster.id.as_str();
    let now = now_ms();
    store
        .redeem_join_token(&token, "x", certificate("a1", DEFAULT_INSTANCE, now), now)
        .await
        .unwrap()
        .unwrap();
    // The default instance has a node instance's certificate issued over its stream.
    store
        .record_agent_certificate(id, certificate("b1", "node-1", now), None, now)
        .await
        .unwrap();
    let standing = |serial: &'static str| {
        let store = store.clone();
        async move { store.certificate_standing(id, serial).await.unwrap() }
    };
    let valid = |instance: &str| CertificateStanding::Valid {
        instance: instance.to_owned(),
    };
    assert_eq!(standing("a1").await, valid(DEFAULT_INSTANCE));
    assert_eq!(standing("b1").await, valid("node-1"));
    assert_eq!(standing("zz").await, CertificateStanding::Unknown);
    assert_eq!(
        store.certificate_standing("other", "a1").await.unwrap(),
        CertificateStanding::Unknown,
        "a serial is accepted only for its own cluster"
    );

    // The node renews: both valid until it connects with the new one...
    let later = now + 10;
    store
        .record_agent_certificate(id, certificate("b2", "node-1", later), Some("b1"), later)
        .await
        .unwrap();
    assert_eq!(standing("b1").await, valid("node-1"));
    assert_eq!(standing("b2").await, valid("node-1"));
    // ...and asking again before the switch supersedes the unused renewal.
    let later = later + 10;
    store
        .record_agent_certificate(id, certificate("b3", "node-1", later), Some("b1"), later)
        .await
        .unwrap();
    assert_eq!(standing("b2").await, CertificateStanding::Revoked);
    let mut changes = store.subscribe();
    assert_eq!(
        store.activate_certificate(id, "b3", later).await.unwrap(),
        1
    );
    assert_eq!(standing("b1").await, CertificateStanding::Revoked);
    assert_eq!(standing("b3").await, valid("node-1"));
    assert_eq!(
        changes.try_recv().unwrap(),
        Change::Cluster {
            tenant: "shop".into(),
            id: id.to_owned()
        },
        "the revocation reaches the cluster's streams"
    );
    // Reconnecting with the current certificate changes nothing.
    assert_eq!(
        store.activate_certificate(id, "b3", later).await.unwrap(),
        0
    );
    assert!(changes.try_recv().is_err());

    // The default instance joins again: its old certificate goes, the node's stays.
    let token = store.mint_join_token(id, HOUR, &admin()).await.unwrap();
    store
        .redeem_join_token(
            &token,
            "y",
            certificate("a2", DEFAULT_INSTANCE, later),
            later,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(standing("a1").await, CertificateStanding::Revoked);
    assert_eq!(standing("a2").await, valid(DEFAULT_INSTANCE));
    assert_eq!(standing("b3").await, valid("node-1"));
    let shown = store.get_cluster(id).await.unwrap().unwrap();
    assert_eq!(shown.certificate_serial.as_deref(), Some("a2"));
}

/// New instances beyond [`super::super::certificates::MAX_INSTANCES_PER_CLUSTER`] are
/// refused; renewing an existing instance is not.
async fn instances_of_a_cluster_are_bounded(db: &TestDb) {
    use super::super::certificates::MAX_INSTANCES_PER_CLUSTER;
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (cluster, _) = store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let now = now_ms();
    // Filled directly: issuing ten thousand certificates one by one is not the point.
    let rows: Vec<String> = (0..MAX_INSTANCES_PER_CLUSTER)
        .map(|i| {
            format!(
                "('s{i}', '{}', 'node-{i}', NULL, {now}, {}, NULL)",
                cluster.id,
                now + 3_600_000
            )
        })
        .collect();
    for chunk in rows.chunks(500) {
        store
            .db()
            .execute_unprepared(&format!(
                "INSERT INTO agent_certificates (serial, cluster, instance, certificate_pem, \
                 issued_at_ms, not_after_ms, revoked_at_ms) VALUES {}",
                chunk.join(", ")
            ))
            .await
            .unwrap();
    }
    let refused = store
        .record_agent_certificate(&cluster.id, certificate("new", "node-x", now), None, now)
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(reason)) if reason.contains("instances")),
        "{refused:?}"
    );
    store
        .record_agent_certificate(
            &cluster.id,
            certificate("s0b", "node-0", now),
            Some("s0"),
            now,
        )
        .await
        .unwrap();
}
