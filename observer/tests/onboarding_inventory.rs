//! The KaaS inventory source over real HTTP against a fake inventory
//! (`kaas_test_support::fake_inventory`), with a real store on a temporary SQLite file.
//! Polls are driven one by one with `poll_once`, so no assertion depends on timing.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, Response};
use kaas_observer::api::manifest::ManifestInput;
use kaas_observer::api::model::ClusterView;
use kaas_observer::onboarding::capi::install::{WorkloadConnector, agent_documents};
use kaas_observer::onboarding::inventory::{
    AgentInstall, DEFAULT_DELETE_AFTER_MISSING_POLLS, InventorySettings, InventorySource, PollError,
};
use kaas_observer::onboarding::{
    ClusterAction, OnboardingMetrics, SOURCE_LABEL, Source, SyncFailure,
};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::certificates::JoinTokenCheck;
use kaas_observer::store::{Actor, Cluster, ClusterState, NewCluster, ReportWrite, Store, now_ms};
use kaas_pipeline::secret::SecretString;
use kaas_test_support::fake_inventory::{FakeInventory, InventoryAnswer, cluster};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use tower_test::mock::{self, Handle};

struct Setup {
    store: Store,
    inventory: FakeInventory,
    source: InventorySource,
    metrics: Arc<OnboardingMetrics>,
    _dir: tempfile::TempDir,
}

async fn setup(customize: impl FnOnce(&mut InventorySettings)) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().expect("secrets key"),
    )
    .await
    .expect("open the store");
    let inventory = FakeInventory::start().await;
    let mut settings = InventorySettings::new(inventory.url().parse().expect("the fake's URL"));
    // Polls are driven back to back: only the missing polls count unless a test sets
    // a grace period of its own.
    settings.delete_grace = Duration::ZERO;
    customize(&mut settings);
    let metrics = Arc::new(OnboardingMetrics::default());
    let source =
        InventorySource::new(store.clone(), settings, metrics.clone()).expect("the source");
    Setup {
        store,
        inventory,
        source,
        metrics,
        _dir: dir,
    }
}

/// The cluster named `name` (the fixtures' names differ across their tenants).
/// Whether a cluster of any tenant is named `name`.
async fn registered(store: &Store, name: &str) -> bool {
    store
        .list_clusters(None)
        .await
        .expect("the store answers")
        .iter()
        .any(|cluster| cluster.name == name)
}

async fn get(store: &Store, name: &str) -> Cluster {
    store
        .list_clusters(None)
        .await
        .expect("the store answers")
        .into_iter()
        .find(|cluster| cluster.name == name)
        .unwrap_or_else(|| panic!("cluster {name} is registered"))
}

fn prod_1() -> serde_json::Value {
    cluster(
        "prod-1",
        "shop",
        &[("env", "prod")],
        "https://prod-1.k8s.example:6443",
    )
}

fn dev_1() -> serde_json::Value {
    cluster(
        "dev-1",
        "bank",
        &[("env", "dev")],
        "https://dev-1.k8s.example:6443",
    )
}

#[tokio::test]
async fn listed_clusters_are_registered_with_tenant_labels_and_endpoint() {
    let mut s = setup(|_| {}).await;
    s.store
        .create_tenant("bank", &Actor::admin())
        .await
        .unwrap();
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);

    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.registered, ["bank.dev-1", "shop.prod-1"]);

    let prod = get(&s.store, "prod-1").await;
    assert_eq!(prod.tenant, "shop");
    assert_eq!(prod.state, ClusterState::Provisioning);
    assert_eq!(prod.labels["env"], "prod");
    assert_eq!(prod.labels[SOURCE_LABEL], "inventory");
    assert_eq!(
        prod.api_endpoint.as_deref(),
        Some("https://prod-1.k8s.example:6443")
    );
    assert!(
        s.store.get_tenant("shop").await.unwrap().is_some(),
        "a missing tenant is created"
    );
    // How the operator gets the agent installed: a fresh token (what
    // `observer cluster join-token prod-1` asks for) joins the cluster.
    let token = s
        .store
        .mint_join_token("shop.prod-1", Duration::from_secs(60), &Actor::admin())
        .await
        .unwrap();
    let check = s
        .store
        .check_join_token(&token, "csr", now_ms())
        .await
        .unwrap();
    assert!(
        matches!(&check, JoinTokenCheck::Redeemable(cluster) if cluster.name == "prod-1"),
        "{check:?}"
    );

    let again = s.source.poll_once().await.unwrap();
    assert_eq!(
        again,
        Default::default(),
        "an unchanged list changes nothing"
    );
    assert_eq!(
        s.metrics
            .cluster_changes(Source::Inventory, ClusterAction::Registered),
        2
    );
    assert_eq!(s.metrics.syncs(Source::Inventory, None), 2);
}

#[tokio::test]
async fn label_and_endpoint_changes_are_applied() {
    let mut s = setup(|_| {}).await;
    s.inventory.set_clusters(vec![prod_1()]);
    s.source.poll_once().await.unwrap();

    s.inventory.set_clusters(vec![cluster(
        "prod-1",
        "shop",
        &[("env", "prod"), ("region", "eu-1")],
        "https://prod-1-new.k8s.example:6443",
    )]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.updated, ["shop.prod-1"]);
    let prod = get(&s.store, "prod-1").await;
    assert_eq!(prod.labels["region"], "eu-1");
    assert_eq!(
        prod.labels[SOURCE_LABEL], "inventory",
        "the source label stays"
    );
    assert_eq!(
        prod.api_endpoint.as_deref(),
        Some("https://prod-1-new.k8s.example:6443")
    );
}

#[tokio::test]
async fn a_cluster_missing_from_the_inventory_is_deleting_then_deleted_after_the_grace_polls() {
    let mut s = setup(|_| {}).await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();

    s.inventory.set_clusters(vec![dev_1()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleting, ["shop.prod-1"]);
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleting);
    for _ in 2..DEFAULT_DELETE_AFTER_MISSING_POLLS.get() {
        let report = s.source.poll_once().await.unwrap();
        assert!(report.deleted.is_empty(), "still within the grace polls");
        assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleting);
    }
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleted, ["shop.prod-1"]);
    let prod = get(&s.store, "prod-1").await;
    assert_eq!(prod.state, ClusterState::Deleted);
    assert!(prod.deleted_at_ms.is_some());
    assert_eq!(
        get(&s.store, "dev-1").await.state,
        ClusterState::Provisioning
    );

    // Listed again, the name is registered again: a new incarnation of the same
    // global id, the tombstone kept in the history (issue 15, finding 4: the old code
    // skipped the name for good).
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.registered, ["shop.prod-1"]);
    let again = get(&s.store, "prod-1").await;
    assert_eq!(again.state, ClusterState::Provisioning);
    assert_ne!(again.incarnation, prod.incarnation);
    let history = s.store.cluster_tombstones("shop.prod-1").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].incarnation, prod.incarnation);
    assert_eq!(history[0].deleted_at_ms, prod.deleted_at_ms);
}

#[tokio::test]
async fn a_cluster_back_before_its_deletion_returns_to_its_previous_state() {
    let mut s = setup(|_| {}).await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();
    // prod-1's agent has joined; dev-1's never did.
    s.store
        .report(ReportWrite::Seen {
            cluster: String::from("shop.prod-1"),
            instance_id: String::from("agent-1"),
            version: String::from("0.1.0"),
            at_ms: now_ms(),
            connection: None,
        })
        .await
        .unwrap();
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Active);

    // Both gone for two polls (another cluster is listed: an empty list would be
    // refused).
    let other = || cluster("other", "shop", &[], "https://other.k8s.example:6443");
    s.inventory.set_clusters(vec![other()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleting, ["bank.dev-1", "shop.prod-1"]);
    s.source.poll_once().await.unwrap();

    s.inventory.set_clusters(vec![prod_1(), dev_1(), other()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.restored, ["bank.dev-1", "shop.prod-1"]);
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Active);
    assert_eq!(
        get(&s.store, "dev-1").await.state,
        ClusterState::Provisioning
    );

    // The missing count started over: two more absences (four in all) leave prod-1
    // `deleting`, not `deleted`.
    s.inventory.set_clusters(vec![dev_1(), other()]);
    s.source.poll_once().await.unwrap();
    s.source.poll_once().await.unwrap();
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleting);
    s.inventory.set_clusters(vec![prod_1(), dev_1(), other()]);
    s.source.poll_once().await.unwrap();
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Active);
    assert_eq!(
        s.metrics
            .cluster_changes(Source::Inventory, ClusterAction::Deleted),
        0
    );
}

#[tokio::test]
async fn broken_answers_change_nothing() {
    let mut s = setup(|settings| {
        settings.delete_after_missing_polls = NonZeroU32::new(2).unwrap();
    })
    .await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();
    s.inventory.set_clusters(vec![dev_1()]);
    s.source.poll_once().await.unwrap();
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleting);
    let before = s.store.list_clusters(None).await.unwrap();

    let broken: Vec<(InventoryAnswer, SyncFailure)> = vec![
        (InventoryAnswer::Status(500), SyncFailure::BadStatus),
        (InventoryAnswer::Status(404), SyncFailure::BadStatus),
        (
            InventoryAnswer::Garbage("<html>502</html>".into()),
            SyncFailure::InvalidResponse,
        ),
        (
            InventoryAnswer::Json(json!({"items": []})),
            SyncFailure::InvalidResponse,
        ),
        (InventoryAnswer::Json(json!([])), SyncFailure::EmptyRefused),
        (
            InventoryAnswer::Json(json!({"clusters": []})),
            SyncFailure::EmptyRefused,
        ),
    ];
    for (answer, failure) in broken {
        s.inventory.answer(answer.clone());
        let error = s.source.poll_once().await.unwrap_err();
        assert_eq!(error.failure(), failure, "{answer:?}: {error}");
        assert_eq!(
            s.store.list_clusters(None).await.unwrap(),
            before,
            "{answer:?} changed the store"
        );
        assert!(s.metrics.syncs(Source::Inventory, Some(failure)) > 0);
    }
    assert_eq!(
        s.metrics
            .syncs(Source::Inventory, Some(SyncFailure::BadStatus)),
        2
    );

    // An unreachable inventory (nothing listens on port 1).
    let mut unreachable = InventorySource::new(
        s.store.clone(),
        InventorySettings::new("http://127.0.0.1:1/clusters".parse().unwrap()),
        s.metrics.clone(),
    )
    .unwrap();
    let error = unreachable.poll_once().await.unwrap_err();
    assert!(matches!(error, PollError::Unreachable { .. }), "{error}");
    assert_eq!(s.store.list_clusters(None).await.unwrap(), before);

    // Failed polls did not count as missing polls: prod-1 is tombstoned only by the
    // next successful poll that still misses it (the second of two).
    s.inventory.set_clusters(vec![dev_1()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleted, ["shop.prod-1"]);
}

#[tokio::test]
async fn an_empty_list_is_accepted_when_allowed() {
    let mut s = setup(|settings| settings.allow_empty = true).await;
    s.inventory.set_clusters(vec![prod_1()]);
    s.source.poll_once().await.unwrap();
    s.inventory.set_clusters(vec![]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleting, ["shop.prod-1"]);
}

#[tokio::test]
async fn clusters_registered_through_the_api_are_never_touched() {
    let mut s = setup(|settings| {
        settings.delete_after_missing_polls = NonZeroU32::new(1).unwrap();
    })
    .await;
    s.store
        .create_tenant("shop", &Actor::admin())
        .await
        .unwrap();
    s.store
        .create_cluster(
            NewCluster {
                name: "manual".into(),
                tenant: "shop".into(),
                labels: [("env".to_owned(), "lab".to_owned())].into(),
                api_endpoint: None,
            },
            Duration::from_secs(60),
            &Actor::admin(),
        )
        .await
        .unwrap();
    s.inventory.set_clusters(vec![prod_1()]);
    s.source.poll_once().await.unwrap();
    let manual = get(&s.store, "manual").await;
    assert_eq!(
        manual.state,
        ClusterState::Provisioning,
        "not listed, not deleted"
    );

    s.inventory.set_clusters(vec![
        prod_1(),
        cluster("manual", "shop", &[("env", "prod")], "https://m:6443"),
    ]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(get(&s.store, "manual").await, manual, "listed, not changed");
}

#[tokio::test]
async fn invalid_entries_are_reported_and_never_delete_their_cluster() {
    let mut s = setup(|settings| {
        settings.delete_after_missing_polls = NonZeroU32::new(1).unwrap();
    })
    .await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();
    s.inventory.set_clusters(vec![
        cluster(
            "prod-1",
            "shop",
            &[("env", "not a label value!")],
            "https://p:6443",
        ),
        json!({"name": "Bad_Name", "tenant": "shop"}),
        dev_1(),
    ]);
    let report = s.source.poll_once().await.unwrap();
    assert!(
        report.deleting.is_empty() && report.deleted.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.skipped.len(), 2, "{report:?}");
    let prod = get(&s.store, "prod-1").await;
    assert_eq!(prod.state, ClusterState::Provisioning);
    assert_eq!(
        prod.labels["env"], "prod",
        "the invalid labels are not applied"
    );
    assert!(!registered(&s.store, "Bad_Name").await);
}

/// Issue 15: an entry's `controlPlane` is the cluster's control-plane setting,
/// checked as the API checks it; a wrong one makes the entry invalid with the field's
/// path and leaves the stored setting alone; an entry without it keeps the setting.
#[tokio::test]
async fn an_entrys_control_plane_setting_is_stored_and_a_wrong_one_refused_with_its_path() {
    let mut s = setup(|_| {}).await;
    let with_setting = |setting: serde_json::Value| {
        let mut entry = prod_1();
        entry["controlPlane"] = setting;
        entry
    };
    s.inventory.set_clusters(vec![with_setting(json!({
        "etcd": {"addresses": ["10.0.0.10:2381"]},
        "coredns": {"notScraped": "hosted DNS"}
    }))]);
    s.source.poll_once().await.unwrap();
    let id = get(&s.store, "prod-1").await.id;
    let stored = || async {
        s.store
            .cluster_control_planes(None)
            .await
            .unwrap()
            .remove(&id)
            .map(|setting| serde_json::to_value(setting.spec()).unwrap())
    };
    assert_eq!(
        stored().await,
        Some(json!({
            "etcd": {"addresses": ["10.0.0.10:2381"]},
            "coredns": {"notScraped": "hosted DNS"}
        }))
    );
    // Changed: stored again.
    s.inventory.set_clusters(vec![with_setting(
        json!({"etcd": {"addresses": ["10.0.0.11:2381"]}}),
    )]);
    s.source.poll_once().await.unwrap();
    assert_eq!(
        stored().await,
        Some(json!({"etcd": {"addresses": ["10.0.0.11:2381"]}}))
    );
    // Wrong: the entry is skipped with the field's path; the setting stays.
    for (setting, expected) in [
        (
            json!({"etcd": {"addresses": ["127.0.0.1:2381"]}}),
            "controlPlane.etcd.addresses[0]",
        ),
        (
            json!({"kubeProxy": {"notScraped": "x"}}),
            "controlPlane: unknown field",
        ),
        (json!("etcd"), "controlPlane: invalid type"),
    ] {
        s.inventory.set_clusters(vec![with_setting(setting)]);
        let report = s.source.poll_once().await.unwrap();
        assert!(
            report
                .skipped
                .iter()
                .any(|(name, reason)| name == "prod-1" && reason.contains(expected)),
            "{expected}: {report:?}"
        );
        assert_eq!(
            stored().await,
            Some(json!({"etcd": {"addresses": ["10.0.0.11:2381"]}}))
        );
        assert_eq!(
            get(&s.store, "prod-1").await.state,
            ClusterState::Provisioning
        );
    }
    // Without the field: the setting is left as it is.
    s.inventory.set_clusters(vec![prod_1()]);
    s.source.poll_once().await.unwrap();
    assert_eq!(
        stored().await,
        Some(json!({"etcd": {"addresses": ["10.0.0.11:2381"]}}))
    );
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_the_source_polls_on_its_own() {
    let s = setup(|settings| {
        settings.bearer_token = Some(SecretString::new("inventory-secret"));
        settings.interval = Duration::from_millis(50);
    })
    .await;
    s.inventory.set_clusters(vec![prod_1()]);
    let task = s.source.start();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while s.inventory.requests() < 2 || s.store.get_cluster("shop.prod-1").await.unwrap().is_none()
    {
        assert!(
            std::time::Instant::now() < until,
            "the source never polled twice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(
        s.inventory
            .authorizations()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer inventory-secret"))
    );
}

/// Issue 13, finding 5: an inventory entry whose API endpoint is an address the
/// observer's egress policy refuses is skipped with the range named (registered on
/// 552c13e, and then probed); the provider's allow list opens its cluster network.
#[tokio::test]
async fn endpoints_the_egress_policy_refuses_are_not_registered() {
    let mut s = setup(|_| {}).await;
    s.inventory.set_clusters(vec![
        cluster("metadata", "shop", &[], "https://169.254.169.254:6443"),
        cluster("local", "shop", &[], "https://127.0.0.1:6443"),
        prod_1(),
    ]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.registered, ["shop.prod-1"]);
    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|(name, reason)| (name.as_str(), reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    for (name, range) in [
        (
            "metadata",
            "169.254.169.254/32 (cloud instance metadata service)",
        ),
        ("local", "127.0.0.0/8 (loopback)"),
    ] {
        assert!(
            skipped.iter().any(|(n, reason)| *n == name
                && reason.contains("apiEndpoint: ")
                && reason.contains(range)),
            "{name}: {skipped:?}"
        );
        assert!(!registered(&s.store, name).await, "{name}");
    }

    let mut allowed = setup(|settings| {
        settings.egress = kaas_observer::egress::EgressPolicy::new(
            vec!["127.0.0.0/8".parse().unwrap()],
            Vec::new(),
        );
    })
    .await;
    allowed.inventory.set_clusters(vec![cluster(
        "local",
        "shop",
        &[],
        "https://127.0.0.1:6443",
    )]);
    let report = allowed.source.poll_once().await.unwrap();
    assert_eq!(report.registered, ["shop.local"]);
}

/// Issue 15, finding 4: the old source tombstoned a cluster after its missing polls
/// however quickly they came. Now it also waits out `delete_grace`: with a grace of an
/// hour, any number of back-to-back polls leaves the cluster `deleting`, never
/// `deleted`.
#[tokio::test]
async fn a_missing_cluster_is_not_tombstoned_within_the_grace_period() {
    let mut s = setup(|settings| {
        settings.delete_after_missing_polls = NonZeroU32::new(2).unwrap();
        settings.delete_grace = Duration::from_secs(3600);
    })
    .await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();
    s.inventory.set_clusters(vec![dev_1()]);
    for _ in 0..5 {
        let report = s.source.poll_once().await.unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
    }
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleting);
}

/// Positive evidence: an entry marked `"deleted": true` tombstones its cluster at once.
#[tokio::test]
async fn an_entry_marked_deleted_is_tombstoned_at_once() {
    let mut s = setup(|settings| settings.delete_grace = Duration::from_secs(3600)).await;
    s.inventory.set_clusters(vec![prod_1(), dev_1()]);
    s.source.poll_once().await.unwrap();
    let mut gone = prod_1();
    gone["deleted"] = json!(true);
    s.inventory.set_clusters(vec![gone, dev_1()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleted, ["shop.prod-1"]);
    assert_eq!(get(&s.store, "prod-1").await.state, ClusterState::Deleted);
    assert_eq!(
        get(&s.store, "dev-1").await.state,
        ClusterState::Provisioning
    );
}

/// Issue 15, finding 4: an inventory answering one page of five (a partial list)
/// would have started deleting four clusters at once. Now the mass-deletion guard holds
/// those changes (nothing else in the poll is held: a new cluster is registered), shows
/// them as pending and counts them; once an administrator confirms, the next poll
/// applies them.
#[tokio::test]
async fn an_inventory_that_loses_most_of_the_fleet_waits_for_a_confirmation() {
    let mut s = setup(|settings| {
        settings.delete_after_missing_polls = NonZeroU32::new(5).unwrap();
    })
    .await;
    let fleet: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            cluster(
                &format!("c{i}"),
                "shop",
                &[],
                &format!("https://c{i}.k8s.example:6443"),
            )
        })
        .collect();
    s.inventory.set_clusters(fleet.clone());
    s.source.poll_once().await.unwrap();

    let newcomer = cluster("new", "shop", &[], "https://new.k8s.example:6443");
    s.inventory
        .set_clusters(vec![fleet[0].clone(), newcomer.clone()]);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.held, ["shop.c1", "shop.c2", "shop.c3", "shop.c4"]);
    assert!(report.deleting.is_empty(), "{report:?}");
    assert_eq!(report.registered, ["shop.new"]);
    for name in ["c1", "c2", "c3", "c4"] {
        assert_eq!(get(&s.store, name).await.state, ClusterState::Provisioning);
    }
    assert_eq!(s.metrics.pending(Source::Inventory), 4);
    let pending = s.store.pending_deletions(None).await.unwrap();
    assert_eq!(pending.len(), 4);
    assert!(
        pending.iter().all(|p| p.to_state == ClusterState::Deleting
            && p.source == "inventory"
            && p.reason == "missing from 1 successful inventory poll(s) in a row"),
        "{pending:?}"
    );
    // Held again, not applied, while nobody confirms.
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.held.len(), 4);
    assert!(report.deleting.is_empty());

    let confirmed = s
        .store
        .confirm_deletions(&Actor::admin(), now_ms())
        .await
        .unwrap();
    assert_eq!(confirmed.len(), 4);
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(
        report.deleting,
        ["shop.c1", "shop.c2", "shop.c3", "shop.c4"]
    );
    assert!(report.held.is_empty());
    assert!(s.store.pending_deletions(None).await.unwrap().is_empty());
    assert_eq!(s.metrics.pending(Source::Inventory), 0);
    // Their tombstones follow after the missing polls (five): already `deleting`, they
    // are not weighed again.
    let report = s.source.poll_once().await.unwrap();
    assert!(report.deleted.is_empty() && report.held.is_empty());
    let report = s.source.poll_once().await.unwrap();
    assert_eq!(report.deleted, ["shop.c1", "shop.c2", "shop.c3", "shop.c4"]);
    assert!(report.held.is_empty());
}

/// A self-contained kubeconfig, as a provider's inventory would hand it out.
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: prod-1
  cluster:
    server: https://127.0.0.1:6443
users:
- name: admin
  user:
    token: workload-admin-token
contexts:
- name: prod-1
  context: {cluster: prod-1, user: admin}
current-context: prod-1
";

/// The workload cluster's API server, mocked: answers every server-side apply with the
/// object it was sent and records what it saw.
fn workload_cluster() -> (Client, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Answers `count` applies; returns each object's kind and the join token the agent's
/// Secret carries.
async fn answer_applies(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    count: usize,
) -> (Vec<String>, String) {
    let mut kinds = Vec::new();
    let mut token = String::new();
    for _ in 0..count {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .expect("the apply arrives in time")
            .expect("a request");
        assert_eq!(request.method(), Method::PATCH, "{}", request.uri());
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("fieldManager=kaas-observer"), "{query}");
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let object: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON apply body");
        assert_eq!(
            object["metadata"]["labels"]["telemetry.kaas-observer.io/cluster"], "prod-1",
            "every object names its cluster"
        );
        if object["kind"] == "Secret" {
            token = object["stringData"]["join-token"]
                .as_str()
                .expect("the Secret holds the join token")
                .to_owned();
        }
        kinds.push(object["kind"].as_str().unwrap_or_default().to_owned());
        send.send_response(Response::new(Body::from(bytes.to_vec())));
    }
    (kinds, token)
}

/// Issue 15, "Inventory onboarding is complete": an entry that names a kubeconfig gets
/// its agent installed as Cluster API clusters do (server-side apply of the install
/// manifests with a fresh join token), once; an entry without one shows the exact
/// command that installs it. On fe225cb the inventory installed nothing: it dropped the
/// registration's token and only logged a hint.
#[tokio::test]
async fn a_listed_kubeconfig_gets_the_agent_installed_and_the_others_show_the_command() {
    let (workload, mut api_server) = workload_cluster();
    let mut s = setup(|settings| {
        settings.install = Some(AgentInstall {
            control_endpoint: "https://observer.example:8443".to_owned(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_owned(),
            secret_namespaces: vec!["kaas-observer".to_owned()],
            central_endpoints: Vec::new(),
            workload: WorkloadConnector::Fixed(workload),
        });
    })
    .await;
    let mut prod = prod_1();
    prod["kubeconfig"] = json!(KUBECONFIG);
    s.inventory.set_clusters(vec![prod, dev_1()]);
    let objects = agent_documents(&ManifestInput {
        cluster: "prod-1",
        control_endpoint: "https://observer.example:8443",
        ca_pem: "",
        join_token: "any",
        secret_namespaces: &["kaas-observer".to_owned()],
        central_endpoints: &[],
    })
    .expect("the manifests render")
    .len();

    let (report, (kinds, token)) = tokio::join!(
        s.source.poll_once(),
        answer_applies(&mut api_server, objects)
    );
    let report = report.expect("the poll succeeds");
    assert_eq!(report.installed, ["shop.prod-1"]);
    assert!(kinds.contains(&"Deployment".to_owned()), "{kinds:?}");
    let check = s
        .store
        .check_join_token(&token, "csr", now_ms())
        .await
        .expect("the store answers");
    assert!(
        matches!(&check, JoinTokenCheck::Redeemable(cluster) if cluster.name == "prod-1"),
        "the applied token joins prod-1: {check:?}"
    );

    let installed = ClusterView::from_cluster(get(&s.store, "prod-1").await);
    assert_eq!(installed.install_command, None, "the observer installs it");
    let manual = ClusterView::from_cluster(get(&s.store, "dev-1").await);
    assert_eq!(
        manual.install_command.as_deref(),
        Some("observer cluster join-token dev-1 --tenant bank | kubectl apply -f -")
    );

    // Within the retry interval the next poll applies nothing again.
    let again = s.source.poll_once().await.expect("the poll succeeds");
    assert!(again.installed.is_empty(), "{again:?}");
    assert!(
        tokio::time::timeout(Duration::ZERO, api_server.next_request())
            .await
            .is_err(),
        "no second install"
    );
}

/// Issue 15: a kubeconfig that would run a command on the observer is refused with its
/// entry, before anything is registered or contacted.
#[tokio::test]
async fn a_kubeconfig_that_runs_a_command_is_refused_with_its_entry() {
    let (workload, mut api_server) = workload_cluster();
    let mut s = setup(|settings| {
        settings.install = Some(AgentInstall {
            control_endpoint: "https://observer.example:8443".to_owned(),
            ca_pem: String::new(),
            secret_namespaces: Vec::new(),
            central_endpoints: Vec::new(),
            workload: WorkloadConnector::Fixed(workload),
        });
    })
    .await;
    let mut prod = prod_1();
    prod["kubeconfig"] = json!(KUBECONFIG.replace(
        "    token: workload-admin-token",
        "    exec: {command: /bin/sh, args: [-c, 'id > /tmp/owned'], apiVersion: client.authentication.k8s.io/v1}"
    ));
    s.inventory.set_clusters(vec![prod]);
    let report = s.source.poll_once().await.expect("the poll succeeds");
    assert!(report.registered.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].1.contains("kubeconfig") && report.skipped[0].1.contains("exec"),
        "{report:?}"
    );
    assert!(!registered(&s.store, "prod-1").await);
    assert!(
        tokio::time::timeout(Duration::ZERO, api_server.next_request())
            .await
            .is_err(),
        "nothing was applied"
    );
}
