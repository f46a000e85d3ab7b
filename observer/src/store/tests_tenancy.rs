//! Store tests of the tenancy boundary, on SQLite and PostgreSQL like the rest of the
//! suite: the Cluster API namespace mapping (`tenancy.rs`), audit pages, secrets bound
//! to their owner, the legacy format and re-keying, and unreadable pipeline rows
//! (`pipeline_rows.rs`).

use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};

use super::{TestDb, admin, pipeline_with_secrets, validated};
use crate::secrets::{KEY_LEN, SEALED_PREFIX, SecretBox, SecretError, seal_legacy_v1};
use crate::store::entities::pipelines;
use crate::store::pipeline_rows::PipelineRow;
use crate::store::tenancy::{AuditQuery, KIND_NAMESPACE};
use crate::store::{Actor, Store, StoreError};

store_tests!(
    namespace_mappings_are_admin_set_audited_and_go_with_their_tenant,
    audit_pages_filter_by_tenant_actor_and_time,
    secrets_moved_to_another_pipeline_or_field_do_not_open,
    rows_sealed_the_old_way_open_and_are_rekeyed,
    rekeying_switches_keys_while_the_old_one_stays_readable,
    one_unreadable_pipeline_row_is_reported_alone_and_can_be_repaired,
);

const PASSWORD: &str = "pw-3f9a-only-in-plaintext-here";
const HEADER: &str = "hdr-77c1-only-in-plaintext-here";
const PASSWORD_PATH: &str =
    "/spec/output/prometheusRemoteWrite/authentication/basic/password/value";
const HEADER_PATH: &str = "/spec/output/prometheusRemoteWrite/headers/0/value";

/// A stored metric pipeline's row as it is in the database.
async fn raw_row(store: &Store, tenant: &str, name: &str) -> pipelines::Model {
    let key = (
        tenant.to_owned(),
        "MetricPipeline".to_owned(),
        name.to_owned(),
    );
    pipelines::Entity::find_by_id(key)
        .one(store.db())
        .await
        .unwrap()
        .unwrap()
}

/// Rewrites a stored pipeline's document as someone with database access could.
async fn edit_raw_spec(
    store: &Store,
    tenant: &str,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let row = raw_row(store, tenant, name).await;
    let mut spec = row.spec.clone();
    edit(&mut spec);
    let mut active = row.into_active_model();
    active.spec = Set(spec);
    active.update(store.db()).await.unwrap();
}

async fn raw_value(store: &Store, tenant: &str, name: &str, pointer: &str) -> String {
    let row = raw_row(store, tenant, name).await;
    row.spec
        .pointer(pointer)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn password(row: &PipelineRow) -> String {
    match row {
        PipelineRow::Readable(stored) => super::password_of(stored),
        PipelineRow::Unreadable(unreadable) => panic!("unreadable: {}", unreadable.reason),
    }
}

async fn namespace_mappings_are_admin_set_audited_and_go_with_their_tenant(db: &TestDb) {
    let store = db.store().await;
    assert!(matches!(
        store
            .map_cluster_api_namespace("shop-ns", "shop", &admin())
            .await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    let (mapping, created) = store
        .map_cluster_api_namespace("shop-ns", "shop", &admin())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (mapping.namespace.as_str(), mapping.tenant.as_str()),
        ("shop-ns", "shop")
    );
    let (_, again) = store
        .map_cluster_api_namespace("shop-ns", "shop", &admin())
        .await
        .unwrap();
    assert!(!again, "mapping twice is a no-op");
    let moved = store
        .map_cluster_api_namespace("shop-ns", "bank", &admin())
        .await;
    assert!(
        matches!(&moved, Err(StoreError::Conflict(m)) if m.contains("unmap it first")),
        "a namespace is never silently handed to another tenant: {moved:?}"
    );
    store
        .map_cluster_api_namespace("bank-ns", "bank", &admin())
        .await
        .unwrap();
    let listed: Vec<(String, String)> = store
        .list_cluster_api_namespaces()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.namespace, m.tenant))
        .collect();
    assert_eq!(
        listed,
        [
            ("bank-ns".to_owned(), "bank".to_owned()),
            ("shop-ns".to_owned(), "shop".to_owned())
        ]
    );
    assert_eq!(
        store
            .cluster_api_namespace_tenant("shop-ns")
            .await
            .unwrap()
            .as_deref(),
        Some("shop")
    );
    assert_eq!(
        store.cluster_api_namespace_tenant("nowhere").await.unwrap(),
        None
    );

    store
        .unmap_cluster_api_namespace("shop-ns", &admin())
        .await
        .unwrap();
    assert_eq!(
        store.cluster_api_namespace_tenant("shop-ns").await.unwrap(),
        None
    );
    assert!(matches!(
        store.unmap_cluster_api_namespace("shop-ns", &admin()).await,
        Err(StoreError::NotFound { .. })
    ));
    let trail: Vec<(String, String, Option<String>)> = store
        .audit_entries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == KIND_NAMESPACE)
        .map(|e| (e.action, e.name, e.tenant))
        .collect();
    assert_eq!(
        trail,
        [
            (
                "unmap".to_owned(),
                "shop-ns".to_owned(),
                Some("shop".to_owned())
            ),
            (
                "map".to_owned(),
                "bank-ns".to_owned(),
                Some("bank".to_owned())
            ),
            (
                "map".to_owned(),
                "shop-ns".to_owned(),
                Some("shop".to_owned())
            ),
        ],
        "each change once, newest first"
    );

    store.delete_tenant("bank", &admin()).await.unwrap();
    assert_eq!(
        store.cluster_api_namespace_tenant("bank-ns").await.unwrap(),
        None,
        "a tenant's mappings go with it"
    );
}

async fn audit_pages_filter_by_tenant_actor_and_time(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    for n in 0..5 {
        store
            .create_api_token(Some("shop"), &format!("t{n}"), &Actor::tenant("shop"))
            .await
            .unwrap();
    }
    store
        .create_api_token(Some("bank"), "b", &admin())
        .await
        .unwrap();
    let everything = store
        .audit_page(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.len(), 8);
    assert!(
        everything.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );

    let shop_by_shop = AuditQuery {
        tenant: Some("shop".into()),
        actor: Some("tenant:shop".into()),
        limit: 2,
        ..AuditQuery::default()
    };
    let mut pages = Vec::new();
    let mut query = shop_by_shop.clone();
    loop {
        let page = store.audit_page(&query).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        query.before_id = page.last().map(|r| r.id);
        pages.push(page);
    }
    assert_eq!(pages.len(), 3, "five entries in pages of two");
    let names: Vec<String> = pages
        .iter()
        .flatten()
        .map(|r| r.entry.kind.clone())
        .collect();
    assert_eq!(names, ["api-token"; 5]);
    assert!(
        pages
            .iter()
            .flatten()
            .all(|r| r.entry.tenant.as_deref() == Some("shop") && r.entry.actor == "tenant:shop")
    );

    let newest = everything[0].entry.at_ms;
    let oldest = everything[everything.len() - 1].entry.at_ms;
    let future = store
        .audit_page(&AuditQuery {
            since_ms: Some(newest + 1),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(future.is_empty());
    let past = store
        .audit_page(&AuditQuery {
            until_ms: Some(oldest),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(past.is_empty());
    let window = store
        .audit_page(&AuditQuery {
            since_ms: Some(oldest),
            until_ms: Some(newest + 1),
            tenant: Some("bank".into()),
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let bank: Vec<(&str, &str)> = window
        .iter()
        .map(|r| (r.entry.action.as_str(), r.entry.kind.as_str()))
        .collect();
    assert_eq!(bank, [("create", "api-token"), ("create", "tenant")]);
}

/// A sealed value is bound to its tenant, pipeline and field: copied into another
/// tenant's pipeline, or into another field of the same pipeline (one whose
/// destination the attacker chose), it does not open.
async fn secrets_moved_to_another_pipeline_or_field_do_not_open(db: &TestDb) {
    let store = db.store().await;
    for tenant in ["shop", "bank"] {
        store.create_tenant(tenant, &admin()).await.unwrap();
    }
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, HEADER)),
            &admin(),
        )
        .await
        .unwrap();
    store
        .apply_pipeline(
            "bank",
            validated(&pipeline_with_secrets("p1", "bank-pw", "bank-hdr")),
            &admin(),
        )
        .await
        .unwrap();
    let sealed = raw_value(&store, "shop", "p1", PASSWORD_PATH).await;
    assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");

    // Into the same field of another tenant's pipeline of the same name.
    edit_raw_spec(&store, "bank", "p1", |spec| {
        *spec.pointer_mut(PASSWORD_PATH).unwrap() = sealed.clone().into();
    })
    .await;
    let error = store.get_pipeline("bank", "p1").await.unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::SecretUnreadable { pipeline, source: SecretError::Decrypt, .. } if pipeline == "bank/p1"
        ),
        "{error}"
    );
    assert!(!error.to_string().contains(PASSWORD));

    // Into another field of its own pipeline: the header the tenant sends anywhere.
    edit_raw_spec(&store, "shop", "p1", |spec| {
        *spec.pointer_mut(HEADER_PATH).unwrap() = sealed.clone().into();
    })
    .await;
    let error = store.get_pipeline("shop", "p1").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::SecretUnreadable { field, source: SecretError::Decrypt, .. }
            if field == "spec.output.prometheusRemoteWrite.headers[0].value"),
        "{error}"
    );
}

/// Rows written before key ids and owners (`enc:v1:`) still open, and the rekey turns
/// them into the current format.
async fn rows_sealed_the_old_way_open_and_are_rekeyed(db: &TestDb) {
    const KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];
    let secrets = SecretBox::from_key_bytes(&KEY).unwrap();
    let store = Store::connect(&db.url, secrets.clone()).await.unwrap();
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, HEADER)),
            &admin(),
        )
        .await
        .unwrap();
    // What the observer at 552c13e wrote: each value sealed without key id or owner.
    edit_raw_spec(&store, "shop", "p1", |spec| {
        *spec.pointer_mut(PASSWORD_PATH).unwrap() = seal_legacy_v1(&KEY, PASSWORD).into();
        *spec.pointer_mut(HEADER_PATH).unwrap() = seal_legacy_v1(&KEY, HEADER).into();
        *spec
            .pointer_mut("/spec/output/prometheusRemoteWrite/authentication/basic/user/value")
            .unwrap() = seal_legacy_v1(&KEY, "agent").into();
    })
    .await;
    assert!(
        raw_value(&store, "shop", "p1", PASSWORD_PATH)
            .await
            .starts_with("enc:v1:")
    );
    let row = store.get_pipeline_row("shop", "p1").await.unwrap().unwrap();
    assert_eq!(password(&row), PASSWORD);

    let report = store.rekey_secrets(&admin()).await.unwrap();
    assert_eq!(report.key_id, secrets.key_id());
    assert_eq!((report.pipelines_rekeyed, report.values_rekeyed), (1, 3));
    assert!(report.unreadable.is_empty(), "{report:?}");
    let current = format!("{SEALED_PREFIX}{}:", secrets.key_id());
    for pointer in [PASSWORD_PATH, HEADER_PATH] {
        assert!(
            raw_value(&store, "shop", "p1", pointer)
                .await
                .starts_with(&current)
        );
    }
    let stored = store.get_pipeline("shop", "p1").await.unwrap().unwrap();
    assert_eq!(super::password_of(&stored), PASSWORD);
    assert_eq!(stored.generation, 1, "a rekey is not a spec change");

    let again = store.rekey_secrets(&admin()).await.unwrap();
    assert_eq!((again.pipelines_rekeyed, again.pipelines_current), (0, 1));
    let rekeys = store
        .audit_entries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "rekey")
        .count();
    assert_eq!(rekeys, 1, "one audit entry per rewritten pipeline");
}

/// Switching keys: the new key with the old one as previous reads everything, the rekey
/// seals everything with the new key, then the old key can go. A pipeline sealed with a
/// key nobody gave is reported and left alone.
async fn rekeying_switches_keys_while_the_old_one_stays_readable(db: &TestDb) {
    let old = SecretBox::generate().unwrap();
    let new = SecretBox::generate().unwrap();
    let lost = SecretBox::generate().unwrap();
    let before = Store::connect(&db.url, old.clone()).await.unwrap();
    before.create_tenant("shop", &admin()).await.unwrap();
    before
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, HEADER)),
            &admin(),
        )
        .await
        .unwrap();
    let with_lost_key = Store::connect(&db.url, lost).await.unwrap();
    with_lost_key
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p2", "other", "x")),
            &admin(),
        )
        .await
        .unwrap();

    let switching = Store::connect(&db.url, new.clone().with_previous_keys([old.clone()]))
        .await
        .unwrap();
    let p1 = switching
        .get_pipeline_row("shop", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        password(&p1),
        PASSWORD,
        "the old key still opens during the switch"
    );
    let report = switching.rekey_secrets(&admin()).await.unwrap();
    assert_eq!(report.key_id, new.key_id());
    assert_eq!(report.pipelines_rekeyed, 1);
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert!(report.unreadable[0].starts_with("shop/p2: "), "{report:?}");
    assert!(report.unreadable[0].contains("does not have"), "{report:?}");

    let after = Store::connect(&db.url, new).await.unwrap();
    let p1 = after.get_pipeline_row("shop", "p1").await.unwrap().unwrap();
    assert_eq!(password(&p1), PASSWORD, "the new key alone reads it now");
    let error = before.get_pipeline("shop", "p1").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SecretUnreadable {
                source: SecretError::UnknownKey { .. },
                ..
            }
        ),
        "{error}"
    );
}

/// Issue 13, finding 10 (the store's part): one pipeline row the observer cannot open
/// made every read of the tenant's pipelines fail. Each row is read on its own now:
/// the other pipelines are there, the bad one says why, and applying it again with its
/// secret values repairs it (`***` cannot, nothing readable is stored).
async fn one_unreadable_pipeline_row_is_reported_alone_and_can_be_repaired(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("good", PASSWORD, HEADER)),
            &admin(),
        )
        .await
        .unwrap();
    let foreign = Store::connect(&db.url, SecretBox::generate().unwrap())
        .await
        .unwrap();
    foreign
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("bad", "lost-pw", "lost-hdr")),
            &admin(),
        )
        .await
        .unwrap();

    let rows = store.list_pipeline_rows(Some("shop")).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(password(&rows[1]), PASSWORD);
    let PipelineRow::Unreadable(bad) = &rows[0] else {
        panic!("the bad row reads: {:?}", rows[0].name());
    };
    assert_eq!((bad.tenant.as_str(), bad.name.as_str()), ("shop", "bad"));
    assert!(
        bad.reason.contains("spec.output.prometheusRemoteWrite"),
        "{}",
        bad.reason
    );
    assert!(!bad.reason.contains("lost-pw"));
    let masked = serde_json::to_string(bad.masked.as_ref().unwrap()).unwrap();
    assert!(
        masked.contains("***") && !masked.contains("enc:"),
        "{masked}"
    );
    assert_eq!(store.count_pipelines(Some("shop")).await.unwrap(), 2);
    assert_eq!(store.count_pipelines(None).await.unwrap(), 2);

    let kept = store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("bad", "***", "new-hdr")),
            &admin(),
        )
        .await;
    assert!(matches!(kept, Err(StoreError::Conflict(_))), "{kept:?}");
    let (repaired, created) = store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("bad", "new-pw", "new-hdr")),
            &admin(),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(repaired.generation, 2);
    let rows = store.list_pipeline_rows(Some("shop")).await.unwrap();
    assert_eq!(password(&rows[0]), "new-pw");
}
