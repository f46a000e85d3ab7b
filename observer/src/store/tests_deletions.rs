//! Deletion on positive evidence in the store (issue 15, finding 4): a tombstone's
//! name registered again as a new incarnation, and the changes the mass-deletion guard
//! holds. Each scenario runs on SQLite and on PostgreSQL.

use super::super::certificates::{CertificateStanding, NewAgentCertificate};
use super::super::*;
use super::{HOUR, TestDb, admin, new_cluster, redeem};
use crate::identity::DEFAULT_INSTANCE;

store_tests!(
    a_tombstones_name_is_registered_again_as_a_new_incarnation,
    held_deletions_are_replaced_each_pass_and_confirmed_with_an_audit,
);

/// Issue 15, finding 4: a tombstone kept its name forever (registering it again was
/// `AlreadyExists`). Now the name is registered again as a new incarnation of the same
/// global id: a new incarnation id, the tombstone kept in the history, the old
/// incarnation's certificates and join tokens refused for good, audited as
/// `re-register`. A live name is still taken.
async fn a_tombstones_name_is_registered_again_as_a_new_incarnation(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (first, first_token) = store
        .create_cluster(new_cluster("c1", "shop", &[("env", "old")]), HOUR, &admin())
        .await
        .unwrap();
    assert_eq!(first.incarnation.len(), 16, "{}", first.incarnation);
    let unused_token = store
        .mint_join_token("shop.c1", HOUR, &admin())
        .await
        .unwrap();
    redeem(&store, &first_token, now_ms()).await.unwrap();
    let certificate = NewAgentCertificate {
        serial_hex: "0abc",
        pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        instance: DEFAULT_INSTANCE,
        not_after_ms: now_ms() + 3_600_000,
    };
    store
        .record_agent_certificate("shop.c1", certificate, None, now_ms())
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    store.delete_cluster("shop.c1", &admin()).await.unwrap();
    let tombstone = store.get_cluster("shop.c1").await.unwrap().unwrap();

    let (second, token) = store
        .create_cluster(new_cluster("c1", "shop", &[("env", "new")]), HOUR, &admin())
        .await
        .unwrap();
    assert_eq!(second.id, "shop.c1", "the same global id");
    assert_ne!(second.incarnation, first.incarnation);
    let stored = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert_eq!(stored, second);
    assert_eq!(stored.state, ClusterState::Provisioning);
    assert_eq!(stored.deleted_at_ms, None);
    assert_eq!(stored.certificate_serial, None);
    assert_eq!(stored.labels["env"], "new");

    let history = store.cluster_tombstones("shop.c1").await.unwrap();
    assert_eq!(
        history,
        [ClusterTombstone {
            cluster: "shop.c1".into(),
            incarnation: first.incarnation.clone(),
            tenant: "shop".into(),
            name: "c1".into(),
            created_at_ms: first.created_at_ms,
            deleted_at_ms: tombstone.deleted_at_ms,
            superseded_at_ms: history[0].superseded_at_ms,
        }]
    );
    // Nothing of the old incarnation speaks for the new one.
    assert_eq!(
        store.certificate_standing("shop.c1", "0abc").await.unwrap(),
        CertificateStanding::Revoked
    );
    assert_eq!(
        redeem(&store, &unused_token, now_ms()).await,
        Err(RedeemError::Unknown)
    );
    assert!(redeem(&store, &token, now_ms()).await.is_ok());
    let actions: Vec<String> = store
        .audit_entries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.name == "shop.c1")
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"re-register".to_owned()), "{actions:?}");
    assert!(actions.contains(&"delete".to_owned()), "{actions:?}");

    // Deleted and registered once more: the history grows.
    store.delete_cluster("shop.c1", &admin()).await.unwrap();
    let (third, _) = store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let history = store.cluster_tombstones("shop.c1").await.unwrap();
    let incarnations: std::collections::BTreeSet<&str> =
        history.iter().map(|t| t.incarnation.as_str()).collect();
    assert_eq!(
        incarnations,
        [first.incarnation.as_str(), second.incarnation.as_str()].into()
    );
    assert_ne!(third.incarnation, second.incarnation);
    assert_eq!(store.list_clusters(None).await.unwrap().len(), 1);
    assert_eq!(
        store.list_cluster_tombstones().await.unwrap().len(),
        2,
        "the fleet's history series"
    );
}

fn held(cluster: &str, to_state: ClusterState) -> HeldDeletion {
    HeldDeletion {
        cluster: cluster.to_owned(),
        tenant: "shop".to_owned(),
        to_state,
        reason: "missing from the inventory".to_owned(),
    }
}

/// A source's held set is replaced each pass (what it no longer wants goes, a kept
/// change keeps its confirmation, a changed one loses it), a tenant sees only its own,
/// and a confirmation confirms what is pending, audited per cluster.
async fn held_deletions_are_replaced_each_pass_and_confirmed_with_an_audit(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    for name in ["a", "b", "c"] {
        store
            .create_cluster(new_cluster(name, "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    store
        .create_cluster(new_cluster("d", "bank", &[]), HOUR, &admin())
        .await
        .unwrap();
    let source = Actor("onboarding:inventory".into());
    let mut bank = held("bank.d", ClusterState::Lost);
    bank.tenant = "bank".into();
    store
        .hold_deletions("cluster-api", &[bank], &source, 1)
        .await
        .unwrap();
    store
        .hold_deletions(
            "inventory",
            &[
                held("shop.a", ClusterState::Deleting),
                held("shop.b", ClusterState::Deleting),
            ],
            &source,
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending_deletions(Some("shop")).await.unwrap().len(),
        2
    );
    assert_eq!(store.pending_deletions(None).await.unwrap().len(), 3);

    let confirmed = store.confirm_deletions(&admin(), 5).await.unwrap();
    assert_eq!(confirmed.len(), 3);
    assert!(confirmed.iter().all(|p| p.confirmed_at_ms == Some(5)));
    assert!(
        store
            .confirm_deletions(&admin(), 6)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to confirm"
    );
    let audited = store
        .audit_entries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("confirm-deletion:") && e.actor == "admin")
        .count();
    assert_eq!(audited, 3);

    // The next inventory pass: `a` is listed again (gone from the set), `b` now goes
    // straight to a tombstone (a changed change, confirmation dropped), `c` is new.
    store
        .hold_deletions(
            "inventory",
            &[
                held("shop.b", ClusterState::Deleted),
                held("shop.c", ClusterState::Deleting),
            ],
            &source,
            7,
        )
        .await
        .unwrap();
    let pending = store.pending_deletions(Some("shop")).await.unwrap();
    let summary: Vec<(&str, ClusterState, Option<i64>)> = pending
        .iter()
        .map(|p| (p.cluster.as_str(), p.to_state, p.confirmed_at_ms))
        .collect();
    assert_eq!(
        summary,
        [
            ("shop.b", ClusterState::Deleted, None),
            ("shop.c", ClusterState::Deleting, None)
        ]
    );
    assert_eq!(
        store.confirmed_deletions("cluster-api").await.unwrap(),
        ["bank.d".to_owned()].into()
    );
    assert!(
        store
            .confirmed_deletions("inventory")
            .await
            .unwrap()
            .is_empty()
    );
    // A pass that holds nothing clears the source's set, and only its own.
    store
        .hold_deletions("inventory", &[], &source, 8)
        .await
        .unwrap();
    assert_eq!(store.pending_deletions(None).await.unwrap().len(), 1);
}
