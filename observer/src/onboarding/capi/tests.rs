//! The Cluster API source against kube's mock client, scenario by scenario: a verifier
//! plays the management cluster's (and the workload cluster's) API server, asserting
//! each request (method, path, query, body fields) in order and answering it; every
//! wait for a request gives up after a second. The store is a real one on a temporary
//! SQLite file.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use base64::Engine;
use futures_util::FutureExt;
use kube::Client;
use kube::client::Body;
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use super::decide::{AGENT_INSTALLED_ANNOTATION, CapiCluster, FINALIZER, NAMESPACE_LABEL};
use super::install::WorkloadConnector;
use super::*;
use crate::onboarding::SOURCE_LABEL;
use crate::secrets::SecretBox;
use crate::store::certificates::JoinTokenCheck;
use crate::store::{Actor, ClusterState, NewCluster};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const CONTROL_ENDPOINT: &str = "https://observer.example:8443";
const CLUSTER_PATH: &str = "/apis/cluster.x-k8s.io/v1beta1/namespaces/shop/clusters/prod-1";
/// How long a scenario may wait for the code under test; a hang guard, never a
/// measurement.
const DEADLINE: Duration = Duration::from_secs(1);

const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: prod-1
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: bm90IGEgcmVhbCBDQQ==
contexts:
- name: prod-1-admin@prod-1
  context: {cluster: prod-1, user: prod-1-admin}
current-context: prod-1-admin@prod-1
users:
- name: prod-1-admin
  user:
    client-certificate-data: bm90IGEgcmVhbCBjZXJ0
    client-key-data: bm90IGEgcmVhbCBrZXk=
"#;

struct Harness {
    store: Store,
    context: Arc<Context>,
    management: ApiHandle,
    workload: ApiHandle,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().unwrap(),
    )
    .await
    .unwrap();
    // The administrator's mapping: `Cluster`s in namespace `shop` belong to tenant `shop`.
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    store
        .map_cluster_api_namespace("shop", "shop", &Actor::admin())
        .await
        .unwrap();
    let (management_service, management) = mock::pair::<Request<Body>, Response<Body>>();
    let (workload_service, workload) = mock::pair::<Request<Body>, Response<Body>>();
    let mut settings = CapiSettings::new(
        CONTROL_ENDPOINT.to_owned(),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_owned(),
        Duration::from_secs(3600),
    );
    // The normal setup: the provider allows its cluster network.
    settings.egress = EgressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()], Vec::new());
    let context = Arc::new(Context::new(
        Client::new(management_service, "default"),
        store.clone(),
        settings,
        WorkloadConnector::Fixed(Client::new(workload_service, "default")),
        Arc::new(OnboardingMetrics::default()),
    ));
    Harness {
        store,
        context,
        management,
        workload,
        _dir: dir,
    }
}

/// A `Cluster` object `prod-1` in namespace `shop`.
fn cluster_object(phase: &str, finalizers: &[&str], deleting: bool, installed: bool) -> Value {
    let mut object = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {
            "name": "prod-1", "namespace": "shop", "resourceVersion": "7", "uid": "u-1",
            "labels": {"env": "prod", "cluster.x-k8s.io/cluster-name": "prod-1"},
            "finalizers": finalizers,
        },
        "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}},
        "status": {"phase": phase}
    });
    if deleting {
        object["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
    if installed {
        object["metadata"]["annotations"] = json!({AGENT_INSTALLED_ANNOTATION: CONTROL_ENDPOINT});
    }
    object
}

fn dynamic(value: &Value) -> Arc<DynamicObject> {
    Arc::new(serde_json::from_value(value.clone()).unwrap())
}

/// Registers `prod-1` as the Cluster API source would have.
async fn register(store: &Store, object: &Value, state: ClusterState) {
    let cluster = CapiCluster::from_object(&dynamic(object), Some("shop".into())).unwrap();
    store
        .create_cluster(
            NewCluster {
                name: cluster.name.clone(),
                tenant: cluster.tenant.clone().unwrap(),
                labels: cluster.stored_labels(),
                api_endpoint: cluster.api_endpoint.clone(),
            },
            Duration::from_secs(3600),
            &Source::ClusterApi.actor(),
        )
        .await
        .unwrap();
    if state != ClusterState::Provisioning {
        store
            .set_cluster_state("shop.prod-1", state, now_ms(), &Actor::system())
            .await
            .unwrap();
    }
}

/// The next request, within [`DEADLINE`].
async fn next(handle: &mut ApiHandle) -> (Request<Body>, SendResponse<Response<Body>>) {
    tokio::time::timeout(DEADLINE, handle.next_request())
        .await
        .expect("the request arrives in time")
        .expect("a request")
}

/// The next request, checked for method and path; returns its query, content type,
/// body (JSON, `Null` if empty) and the responder.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (String, String, Value, SendResponse<Response<Body>>) {
    let (request, send) = next(handle).await;
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (query, content_type, body, send)
}

fn respond(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap()));
    *response.status_mut() = status;
    send.send_response(response);
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404})
}

fn kubeconfig_secret(kubeconfig: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "prod-1-kubeconfig", "namespace": "shop"},
        "data": {"value": base64::engine::general_purpose::STANDARD.encode(kubeconfig)}
    })
}

/// Whether a request is waiting on `handle` right now (no waiting involved).
fn pending_request(handle: &mut ApiHandle) -> bool {
    handle.next_request().now_or_never().flatten().is_some()
}

async fn run_reconcile(h: &Harness, object: &Value) -> Result<Action, CapiError> {
    tokio::time::timeout(DEADLINE * 5, reconcile(dynamic(object), h.context.clone()))
        .await
        .expect("reconcile finishes (an unanswered request would hang it)")
}

/// The management cluster's side of onboarding `prod-1`: finalizer, kubeconfig Secret,
/// then (after the workload side) the annotation.
async fn verify_onboarding(
    mut management: ApiHandle,
    mut workload: ApiHandle,
    with_finalizer: bool,
) -> String {
    if with_finalizer {
        let (_, content_type, body, send) =
            expect(&mut management, Method::PATCH, CLUSTER_PATH).await;
        assert_eq!(content_type, "application/merge-patch+json");
        assert_eq!(body["metadata"]["finalizers"], json!([FINALIZER]));
        assert_eq!(
            body["metadata"]["resourceVersion"], "7",
            "only the version read is changed"
        );
        let mut updated = cluster_object("Provisioned", &[FINALIZER], false, false);
        updated["metadata"]["resourceVersion"] = json!("8");
        respond(send, StatusCode::OK, &updated);
    }
    let (_, _, _, send) = expect(
        &mut management,
        Method::GET,
        "/api/v1/namespaces/shop/secrets/prod-1-kubeconfig",
    )
    .await;
    respond(send, StatusCode::OK, &kubeconfig_secret(KUBECONFIG));

    let expected = [
        "/api/v1/namespaces/kaas-observer",
        "/api/v1/namespaces/kaas-observer/serviceaccounts/cluster-agent",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-agent",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-agent",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kaas-observer/roles/cluster-agent-secrets",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kaas-observer/rolebindings/cluster-agent-secrets",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-agent-token-review",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-agent-token-review",
        "/api/v1/namespaces/kaas-observer/persistentvolumeclaims/cluster-agent-data",
        "/api/v1/namespaces/kaas-observer/services/cluster-agent",
        "/apis/networking.k8s.io/v1/namespaces/kaas-observer/networkpolicies/cluster-agent",
        "/api/v1/namespaces/kaas-observer/secrets/cluster-agent",
        "/apis/apps/v1/namespaces/kaas-observer/deployments/cluster-agent",
        // Issue 15, finding 3: the cluster health producers come with the agent.
        "/api/v1/namespaces/kaas-observer/serviceaccounts/kube-state-metrics",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/kube-state-metrics",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kube-state-metrics",
        "/api/v1/namespaces/kaas-observer/services/kube-state-metrics",
        "/apis/networking.k8s.io/v1/namespaces/kaas-observer/networkpolicies/kube-state-metrics",
        "/apis/apps/v1/namespaces/kaas-observer/deployments/kube-state-metrics",
        "/api/v1/namespaces/kaas-observer-node",
        "/api/v1/namespaces/kaas-observer-node/serviceaccounts/node-exporter",
        "/apis/apps/v1/namespaces/kaas-observer-node/daemonsets/node-exporter",
        // Issue 16: the agent's node role, which needs no join token.
        "/api/v1/namespaces/kaas-observer-node/serviceaccounts/cluster-agent-node",
        "/api/v1/namespaces/kaas-observer-node/configmaps/observer-ca",
        "/apis/apps/v1/namespaces/kaas-observer-node/daemonsets/cluster-agent-node",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/cluster-agent-node",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-agent-node",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kaas-observer/rolebindings/cluster-agent-node-secrets",
    ];
    let mut token = String::new();
    for path in expected {
        let (query, content_type, body, send) = expect(&mut workload, Method::PATCH, path).await;
        assert_eq!(content_type, "application/apply-patch+yaml", "{path}");
        assert!(
            query.contains("fieldManager=kaas-observer"),
            "{path}: {query}"
        );
        assert!(query.contains("force=true"), "{path}: {query}");
        assert_eq!(
            body["metadata"]["labels"]["telemetry.kaas-observer.io/cluster"], "prod-1",
            "{path}"
        );
        if body["kind"] == "Secret" {
            token = body["stringData"]["join-token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        if body["kind"] == "Deployment" && body["metadata"]["name"] == "cluster-agent" {
            let args = &body["spec"]["template"]["spec"]["containers"][0]["args"];
            assert_eq!(args[1], format!("--observer={CONTROL_ENDPOINT}"));
        }
        if body["kind"] == "DaemonSet" && body["metadata"]["name"] == "cluster-agent-node" {
            let args = body["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
            assert!(
                args.contains(&format!("\"--observer={CONTROL_ENDPOINT}\"")),
                "{args}"
            );
        }
        respond(send, StatusCode::OK, &body);
    }

    let (_, content_type, body, send) = expect(&mut management, Method::PATCH, CLUSTER_PATH).await;
    assert_eq!(content_type, "application/merge-patch+json");
    assert_eq!(
        body["metadata"]["annotations"][AGENT_INSTALLED_ANNOTATION],
        CONTROL_ENDPOINT
    );
    respond(
        send,
        StatusCode::OK,
        &cluster_object("Provisioned", &[FINALIZER], false, true),
    );
    token
}

#[tokio::test]
async fn a_provisioned_cluster_gets_a_finalizer_a_registration_and_its_agent() {
    let mut h = harness().await;
    let object = cluster_object("Provisioned", &[], false, false);
    let management = std::mem::replace(&mut h.management, mock::pair().1);
    let workload = std::mem::replace(&mut h.workload, mock::pair().1);
    let verifier: JoinHandle<String> = tokio::spawn(verify_onboarding(management, workload, true));

    let action = run_reconcile(&h, &object).await.unwrap();
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
    let token = tokio::time::timeout(DEADLINE, verifier)
        .await
        .expect("the verifier finishes")
        .unwrap();

    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(
        cluster.tenant, "shop",
        "the tenant the namespace is mapped to"
    );
    assert_eq!(cluster.state, ClusterState::Provisioning);
    assert_eq!(
        cluster.api_endpoint.as_deref(),
        Some("https://10.0.0.1:6443")
    );
    assert_eq!(cluster.labels["env"], "prod");
    assert_eq!(cluster.labels[SOURCE_LABEL], "cluster-api");
    assert_eq!(cluster.labels[NAMESPACE_LABEL], "shop");
    let JoinTokenCheck::Redeemable(joined) = h
        .store
        .check_join_token(&token, "csr", now_ms())
        .await
        .unwrap()
    else {
        panic!("the installed join token is valid");
    };
    assert_eq!(
        (joined.id.as_str(), joined.name.as_str()),
        ("shop.prod-1", "prod-1")
    );
    let metrics = &h.context.metrics;
    assert_eq!(
        metrics.cluster_changes(Source::ClusterApi, ClusterAction::Registered),
        1
    );
    assert_eq!(
        metrics.cluster_changes(Source::ClusterApi, ClusterAction::AgentInstalled),
        1
    );
    let audit = h.store.audit_entries(10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "create"
        && e.kind == "cluster"
        && e.actor == "onboarding:cluster-api"));
}

#[tokio::test]
async fn a_cluster_that_is_not_provisioned_yet_is_not_registered() {
    let mut h = harness().await;
    for phase in ["Pending", "Provisioning"] {
        run_reconcile(&h, &cluster_object(phase, &[], false, false))
            .await
            .unwrap();
    }
    assert!(!pending_request(&mut h.management), "no request at all");
    assert!(h.store.list_clusters(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_deleted_cluster_goes_to_deleting_then_deleted_and_the_finalizer_is_removed() {
    let mut h = harness().await;
    let object = cluster_object("Deleting", &[FINALIZER], true, true);
    register(&h.store, &object, ClusterState::Active).await;
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (_, content_type, body, send) =
            expect(&mut management, Method::PATCH, CLUSTER_PATH).await;
        assert_eq!(content_type, "application/merge-patch+json");
        assert_eq!(body["metadata"]["finalizers"], json!([]));
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        respond(
            send,
            StatusCode::OK,
            &cluster_object("Deleting", &[], true, true),
        );
    });

    run_reconcile(&h, &object).await.unwrap();
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();

    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Deleted);
    assert!(cluster.deleted_at_ms.is_some());
    let actions: Vec<String> = h
        .store
        .audit_entries(10)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .filter(|e| e.actor == "onboarding:cluster-api" && e.kind == "cluster")
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions[1..],
        ["set-state:deleting", "delete"],
        "deleting first, then the tombstone: {actions:?}"
    );
}

#[tokio::test]
async fn a_deletion_waits_for_cluster_api_before_the_tombstone() {
    let mut h = harness().await;
    let object = cluster_object(
        "Deleting",
        &["cluster.cluster.x-k8s.io", FINALIZER],
        true,
        true,
    );
    register(&h.store, &object, ClusterState::Active).await;

    run_reconcile(&h, &object).await.unwrap();

    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Deleting);
    assert!(
        !pending_request(&mut h.management),
        "the finalizer stays while Cluster API still deletes"
    );
}

/// Issue 15, finding 4: the old relist tombstoned a registered cluster on the first
/// list that lacked its object, although the object carried the observer's finalizer
/// and so cannot have been deleted unseen. Now such a cluster is `lost` (it alerts),
/// never `deleted`.
#[tokio::test]
async fn the_relist_marks_a_finalized_cluster_whose_object_vanished_lost() {
    let mut h = harness().await;
    let gone = cluster_object("Provisioned", &[FINALIZER], false, true);
    register(&h.store, &gone, ClusterState::Active).await;
    let mut kept = cluster_object("Provisioned", &[FINALIZER], false, true);
    kept["metadata"]["name"] = json!("prod-2");
    let kept_cluster = CapiCluster::from_object(&dynamic(&kept), Some("shop".into())).unwrap();
    for (name, labels) in [
        ("prod-2", kept_cluster.stored_labels()),
        ("manual", Default::default()),
    ] {
        h.store
            .create_cluster(
                NewCluster {
                    name: name.into(),
                    tenant: "shop".into(),
                    labels,
                    api_endpoint: None,
                },
                Duration::from_secs(60),
                &Actor::admin(),
            )
            .await
            .unwrap();
    }
    // Registered strictly before the list is taken (millisecond clock).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (query, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/apis/cluster.x-k8s.io/v1beta1/clusters",
        )
        .await;
        assert!(!query.contains("watch"), "a complete list: {query}");
        let list = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterList",
            "metadata": {"resourceVersion": "100"}, "items": [kept]
        });
        respond(send, StatusCode::OK, &list);
    });

    let tombstoned = tokio::time::timeout(DEADLINE * 5, relist(&h.context))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(tombstoned.lost, ["shop.prod-1"]);
    assert!(tombstoned.deleted.is_empty() && tombstoned.held.is_empty());
    let state = |name: &'static str| {
        let store = h.store.clone();
        async move { store.get_cluster(name).await.unwrap().unwrap().state }
    };
    assert_eq!(state("shop.prod-1").await, ClusterState::Lost);
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::Lost),
        1
    );
    assert_eq!(state("shop.prod-2").await, ClusterState::Provisioning);
    assert_eq!(
        state("shop.manual").await,
        ClusterState::Provisioning,
        "clusters not registered from Cluster API are never touched"
    );
}

/// Issue 15, finding 4 (a failed list): nothing changes, no tombstone.
#[tokio::test]
async fn a_failed_relist_changes_nothing() {
    let mut h = harness().await;
    let object = cluster_object("Provisioned", &[FINALIZER], false, true);
    register(&h.store, &object, ClusterState::Active).await;
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (_, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/apis/cluster.x-k8s.io/v1beta1/clusters",
        )
        .await;
        respond(
            send,
            StatusCode::FORBIDDEN,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": "forbidden"}),
        );
    });
    let result = tokio::time::timeout(DEADLINE * 5, relist(&h.context))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(CapiError::Kube(_))), "{result:?}");
    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Active);
}

#[tokio::test]
async fn a_kubeconfig_that_runs_a_command_is_refused_and_nothing_is_applied() {
    let mut h = harness().await;
    let object = cluster_object("Provisioned", &[FINALIZER], false, false);
    register(&h.store, &object, ClusterState::Provisioning).await;
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (_, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/api/v1/namespaces/shop/secrets/prod-1-kubeconfig",
        )
        .await;
        let exec = KUBECONFIG.replace(
            "    client-key-data: bm90IGEgcmVhbCBrZXk=",
            "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, id]}",
        );
        respond(send, StatusCode::OK, &kubeconfig_secret(&exec));
    });

    let error = run_reconcile(&h, &object).await.unwrap_err();
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();

    assert!(
        matches!(
            &error,
            CapiError::Install {
                source: InstallError::Kubeconfig { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("exec"), "{error}");
    assert!(!pending_request(&mut h.workload), "nothing applied");
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::AgentInstallFailed),
        1
    );
}

#[tokio::test]
async fn a_missing_kubeconfig_secret_is_retried_with_a_fresh_token() {
    let mut h = harness().await;
    let object = cluster_object("Provisioned", &[FINALIZER], false, false);
    register(&h.store, &object, ClusterState::Provisioning).await;
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (_, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/api/v1/namespaces/shop/secrets/prod-1-kubeconfig",
        )
        .await;
        respond(
            send,
            StatusCode::NOT_FOUND,
            &not_found("secrets", "prod-1-kubeconfig"),
        );
        management
    });
    let error = run_reconcile(&h, &object).await.unwrap_err();
    let management = tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();
    let action = error_policy(dynamic(&object), &error, h.context.clone());
    assert_eq!(action, Action::requeue(ERROR_REQUEUE));
    assert_eq!(
        h.context
            .metrics
            .syncs(Source::ClusterApi, Some(SyncFailure::Kubernetes)),
        1
    );

    // The retry: the Secret exists now; the agent is installed with a newly minted token.
    let workload = std::mem::replace(&mut h.workload, mock::pair().1);
    let verifier = tokio::spawn(verify_onboarding(management, workload, false));
    run_reconcile(&h, &object).await.unwrap();
    let token = tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        h.store
            .check_join_token(&token, "csr", now_ms())
            .await
            .unwrap(),
        JoinTokenCheck::Redeemable(_)
    ));
}

#[tokio::test]
async fn a_name_registered_through_the_api_is_left_alone_and_reported_once() {
    let mut h = harness().await;
    h.store
        .create_cluster(
            NewCluster {
                name: "prod-1".into(),
                tenant: "shop".into(),
                labels: Default::default(),
                api_endpoint: None,
            },
            Duration::from_secs(60),
            &Actor::admin(),
        )
        .await
        .unwrap();
    let object = cluster_object("Provisioned", &[], false, false);
    run_reconcile(&h, &object).await.unwrap();
    run_reconcile(&h, &object).await.unwrap();
    assert!(
        !pending_request(&mut h.management),
        "no finalizer, no Secret read"
    );
    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert!(cluster.labels.is_empty(), "untouched");
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::Skipped),
        1
    );
}

/// The controller wiring: the source lists `Cluster`s in all namespaces, watches from
/// the list's version, reconciles what it lists (here: applies a label change), and
/// relists on its own.
#[tokio::test]
async fn the_running_source_lists_watches_reconciles_and_relists() {
    let mut h = harness().await;
    let mut object = cluster_object("Provisioned", &[FINALIZER], false, true);
    register(&h.store, &object, ClusterState::Active).await;
    object["metadata"]["labels"]["env"] = json!("staging");
    let source = ClusterApiSource::start_with(h.context.clone());

    let mut lists = 0;
    let mut watches = 0;
    let mut held = Vec::new();
    while lists < 2 || watches < 1 {
        let (request, send) = tokio::time::timeout(DEADLINE * 5, h.management.next_request())
            .await
            .expect("the source keeps asking")
            .expect("a request");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/apis/cluster.x-k8s.io/v1beta1/clusters"
        );
        let query = request.uri().query().unwrap_or_default();
        if query.contains("watch=true") {
            assert!(query.contains("resourceVersion=100"), "{query}");
            watches += 1;
            held.push(send);
        } else {
            lists += 1;
            let list = json!({
                "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterList",
                "metadata": {"resourceVersion": "100"}, "items": [object]
            });
            respond(send, StatusCode::OK, &list);
        }
    }
    let until = std::time::Instant::now() + DEADLINE * 5;
    loop {
        let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
        if cluster.labels["env"] == "staging" {
            assert_eq!(cluster.state, ClusterState::Active, "the relist kept it");
            break;
        }
        assert!(std::time::Instant::now() < until, "never reconciled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.stop();
}

/// Issue 13, finding 1: tenant `attacker` registered `prod-1` with the Cluster API
/// labels of namespace `shop` (mapped to tenant `shop`), and tenant `shop`'s `Cluster`
/// `prod-1` carries a `kaas-observer.io/tenant: attacker` label. At 552c13e the source
/// took the tenant from that label, found the planted record "its own", and installed
/// the agent with a join token of the attacker's cluster. Now the record is not adopted:
/// no finalizer, no kubeconfig read, nothing applied, no join token minted, and the
/// record is left as the attacker made it.
#[tokio::test]
async fn a_planted_record_and_a_tenant_label_do_not_hijack_another_tenants_cluster() {
    let mut h = harness().await;
    h.store
        .create_tenant("attacker", &Actor::admin())
        .await
        .unwrap();
    let planted = NewCluster {
        name: "prod-1".into(),
        tenant: "attacker".into(),
        labels: [
            (SOURCE_LABEL.to_owned(), "cluster-api".to_owned()),
            (NAMESPACE_LABEL.to_owned(), "shop".to_owned()),
        ]
        .into(),
        api_endpoint: None,
    };
    h.store
        .create_cluster(
            planted,
            Duration::from_secs(3600),
            &Actor::tenant("attacker"),
        )
        .await
        .unwrap();
    let mut object = cluster_object("Provisioned", &[], false, false);
    object["metadata"]["labels"]["kaas-observer.io/tenant"] = json!("attacker");

    let action = run_reconcile(&h, &object).await.unwrap();
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
    assert!(
        !pending_request(&mut h.management),
        "no finalizer, no kubeconfig Secret read"
    );
    assert!(!pending_request(&mut h.workload), "nothing installed");
    // Names are per tenant: the planted record is `attacker.prod-1`, and the lookup of
    // the object's name in tenant `shop` never even finds it.
    let cluster = h
        .store
        .get_cluster("attacker.prod-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.tenant, "attacker");
    assert_eq!(
        cluster.api_endpoint, None,
        "the registration was not updated"
    );
    assert!(!cluster.labels.contains_key("env"));
    let by_the_source: Vec<(String, String)> = h
        .store
        .audit_entries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == Source::ClusterApi.actor().0)
        .map(|e| (e.action, e.kind))
        .collect();
    assert!(
        by_the_source.is_empty(),
        "the source changed nothing and minted no join token for the attacker's cluster: \
         {by_the_source:?}"
    );
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::Skipped),
        1
    );
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::AgentInstalled),
        0
    );

    // The relist does not touch the planted record either, though no `Cluster` of
    // that name is listed for the attacker.
    let mut management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = tokio::spawn(async move {
        let (_, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/apis/cluster.x-k8s.io/v1beta1/clusters",
        )
        .await;
        let list = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterList",
            "metadata": {"resourceVersion": "100"}, "items": []
        });
        respond(send, StatusCode::OK, &list);
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let tombstoned = tokio::time::timeout(DEADLINE * 5, relist(&h.context))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tombstoned, RelistReport::default());
}

/// A `Cluster` in a namespace no administrator mapped is not registered, whatever its
/// labels say, and is looked at again soon (a mapping may come).
#[tokio::test]
async fn a_cluster_in_an_unmapped_namespace_waits_for_its_mapping() {
    let mut h = harness().await;
    let mut object = cluster_object("Provisioned", &[], false, false);
    object["metadata"]["namespace"] = json!("elsewhere");
    object["metadata"]["labels"]["kaas-observer.io/tenant"] = json!("shop");
    let action = run_reconcile(&h, &object).await.unwrap();
    assert_eq!(action, Action::requeue(UNMAPPED_REQUEUE));
    assert!(!pending_request(&mut h.management));
    assert!(h.store.list_clusters(None).await.unwrap().is_empty());
}

/// A `Cluster` carrying a key under `kaas-observer.io` is not registered (the
/// finding-1 refusal of reserved labels, on the Cluster API source).
#[tokio::test]
async fn a_cluster_with_a_reserved_label_is_not_registered() {
    let mut h = harness().await;
    let mut object = cluster_object("Provisioned", &[], false, false);
    object["metadata"]["labels"]["kaas-observer.io/cluster-api-namespace"] = json!("bank");
    run_reconcile(&h, &object).await.unwrap();
    assert!(!pending_request(&mut h.management), "not even a finalizer");
    assert!(h.store.list_clusters(None).await.unwrap().is_empty());
    assert_eq!(
        h.context
            .metrics
            .cluster_changes(Source::ClusterApi, ClusterAction::Skipped),
        1
    );
}

/// Answers the next list of `Cluster`s with `items`.
fn answer_list(mut management: ApiHandle, items: Vec<Value>) -> JoinHandle<ApiHandle> {
    tokio::spawn(async move {
        let (_, _, _, send) = expect(
            &mut management,
            Method::GET,
            "/apis/cluster.x-k8s.io/v1beta1/clusters",
        )
        .await;
        let list = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterList",
            "metadata": {"resourceVersion": "100"}, "items": items
        });
        respond(send, StatusCode::OK, &list);
        management
    })
}

/// One relist whose list of `Cluster`s is answered with `items`.
async fn relist_listing(h: &mut Harness, items: Vec<Value>) -> Result<RelistReport, CapiError> {
    let management = std::mem::replace(&mut h.management, mock::pair().1);
    let verifier = answer_list(management, items);
    let result = tokio::time::timeout(DEADLINE * 5, relist(&h.context))
        .await
        .expect("the relist finishes");
    h.management = tokio::time::timeout(DEADLINE, verifier)
        .await
        .expect("the verifier finishes")
        .unwrap();
    result
}

/// Registers `count` clusters `c0`, `c1`, … as the Cluster API source would have, and
/// returns their objects.
async fn register_fleet(store: &Store, count: usize) -> Vec<Value> {
    let mut objects = Vec::new();
    for i in 0..count {
        let mut object = cluster_object("Provisioned", &[FINALIZER], false, true);
        object["metadata"]["name"] = json!(format!("c{i}"));
        object["metadata"]["uid"] = json!(format!("uid-{i}"));
        let cluster = CapiCluster::from_object(&dynamic(&object), Some("shop".into())).unwrap();
        store
            .create_cluster(
                NewCluster {
                    name: cluster.name.clone(),
                    tenant: "shop".into(),
                    labels: cluster.stored_labels(),
                    api_endpoint: None,
                },
                Duration::from_secs(3600),
                &Source::ClusterApi.actor(),
            )
            .await
            .unwrap();
        objects.push(object);
    }
    // Registered strictly before the lists are taken (millisecond clock).
    tokio::time::sleep(Duration::from_millis(5)).await;
    objects
}

async fn states(store: &Store) -> Vec<ClusterState> {
    store
        .list_clusters(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.state)
        .collect()
}

/// Issue 15, finding 4: an RBAC or cache glitch answers an empty list; the old relist
/// tombstoned the whole fleet on it. Now an empty list while the source manages live
/// clusters is refused and changes nothing.
#[tokio::test]
async fn an_empty_list_of_the_whole_fleet_changes_nothing() {
    let mut h = harness().await;
    register_fleet(&h.store, 5).await;
    let result = relist_listing(&mut h, Vec::new()).await;
    assert!(
        matches!(result, Err(CapiError::EmptyList { managed: 5 })),
        "{result:?}"
    );
    assert_eq!(
        result.unwrap_err().failure(),
        SyncFailure::EmptyRefused,
        "counted as a refused list"
    );
    assert_eq!(states(&h.store).await, [ClusterState::Provisioning; 5]);
    assert!(h.store.pending_deletions(None).await.unwrap().is_empty());
}

/// Issue 15, finding 4: a partial list (here one object of five: a namespace lost to
/// RBAC) would have tombstoned four clusters at once. Now the mass-deletion guard holds
/// the changes, counts them and shows them as pending; an administrator's confirmation
/// lets the next relist apply them (as `lost`: nothing said they were deleted), and a
/// cluster listed again meanwhile drops out of the pending set.
#[tokio::test]
async fn the_mass_deletion_guard_pauses_a_partial_list_until_confirmed() {
    let mut h = harness().await;
    let objects = register_fleet(&h.store, 5).await;
    let report = relist_listing(&mut h, vec![objects[0].clone()])
        .await
        .unwrap();
    assert_eq!(report.held, ["shop.c1", "shop.c2", "shop.c3", "shop.c4"]);
    assert!(report.lost.is_empty() && report.deleted.is_empty());
    assert_eq!(states(&h.store).await, [ClusterState::Provisioning; 5]);
    assert_eq!(h.context.metrics.pending(Source::ClusterApi), 4);
    let pending = h.store.pending_deletions(None).await.unwrap();
    assert_eq!(pending.len(), 4);
    assert!(pending.iter().all(|p| p.to_state == ClusterState::Lost
        && p.source == "cluster-api"
        && p.confirmed_at_ms.is_none()));

    // The administrator confirms; meanwhile `c4` is listed again.
    let confirmed = h
        .store
        .confirm_deletions(&Actor::admin(), now_ms())
        .await
        .unwrap();
    assert_eq!(confirmed.len(), 4);
    let audit = h.store.audit_entries(100).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "confirm-deletion:lost" && e.actor == "admin")
            .count(),
        4
    );
    let report = relist_listing(&mut h, vec![objects[0].clone(), objects[4].clone()])
        .await
        .unwrap();
    assert_eq!(report.lost, ["shop.c1", "shop.c2", "shop.c3"]);
    assert!(report.held.is_empty());
    assert_eq!(
        states(&h.store).await,
        [
            ClusterState::Provisioning,
            ClusterState::Lost,
            ClusterState::Lost,
            ClusterState::Lost,
            ClusterState::Provisioning,
        ]
    );
    assert!(h.store.pending_deletions(None).await.unwrap().is_empty());
    assert_eq!(h.context.metrics.pending(Source::ClusterApi), 0);
}

/// Issue 15, finding 4: with the old code the relist was the only way a cluster whose
/// object vanished could end, as a tombstone. Now a lost cluster whose object is
/// listed again returns to its state, and one whose deletion was seen before its
/// object vanished (`deleting`) is tombstoned.
#[tokio::test]
async fn a_lost_cluster_comes_back_and_a_seen_deletion_is_tombstoned() {
    let mut h = harness().await;
    let object = cluster_object("Provisioned", &[FINALIZER], false, true);
    register(&h.store, &object, ClusterState::Lost).await;
    run_reconcile(&h, &object).await.unwrap();
    assert!(!pending_request(&mut h.management));
    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(
        cluster.state,
        ClusterState::Provisioning,
        "its agent never joined"
    );

    h.store
        .set_cluster_state(
            "shop.prod-1",
            ClusterState::Deleting,
            now_ms(),
            &Actor::system(),
        )
        .await
        .unwrap();
    let mut other = object.clone();
    other["metadata"]["name"] = json!("prod-2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = relist_listing(&mut h, vec![other]).await.unwrap();
    assert_eq!(report.deleted, ["shop.prod-1"]);
    let cluster = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Deleted);
}

/// Issue 15, finding 4: a tombstone's name could never be registered again (the
/// source skipped every `Cluster` of that name for good). Now a new `Cluster` object
/// of the name (another uid) registers a new incarnation of the same global id: a new
/// incarnation id, the tombstone kept in the history, the old incarnation's
/// certificate still refused, the change audited.
#[tokio::test]
async fn a_cluster_created_again_after_its_deletion_is_a_new_incarnation() {
    let mut h = harness().await;
    let old = cluster_object("Provisioned", &[FINALIZER], false, true);
    register(&h.store, &old, ClusterState::Active).await;
    let first = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    h.store
        .record_agent_certificate(
            "shop.prod-1",
            crate::store::certificates::NewAgentCertificate {
                serial_hex: "0a0b",
                instance: crate::identity::DEFAULT_INSTANCE,
                pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                not_after_ms: now_ms() + 3_600_000,
            },
            None,
            now_ms(),
        )
        .await
        .unwrap();
    h.store
        .delete_cluster("shop.prod-1", &Source::ClusterApi.actor())
        .await
        .unwrap();

    let mut new = cluster_object("Provisioned", &[], false, false);
    new["metadata"]["uid"] = json!("u-2");
    let management = std::mem::replace(&mut h.management, mock::pair().1);
    let workload = std::mem::replace(&mut h.workload, mock::pair().1);
    let verifier = tokio::spawn(verify_onboarding(management, workload, true));
    run_reconcile(&h, &new).await.unwrap();
    let token = tokio::time::timeout(DEADLINE, verifier)
        .await
        .expect("the verifier finishes")
        .unwrap();

    let second = h.store.get_cluster("shop.prod-1").await.unwrap().unwrap();
    assert_eq!(second.state, ClusterState::Provisioning);
    assert_ne!(second.incarnation, first.incarnation, "a new incarnation");
    assert_eq!(second.labels[decide::UID_LABEL], "u-2");
    let history = h.store.cluster_tombstones("shop.prod-1").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].incarnation, first.incarnation);
    assert!(history[0].deleted_at_ms.is_some());
    assert!(matches!(
        h.store
            .certificate_standing("shop.prod-1", "0a0b")
            .await
            .unwrap(),
        crate::store::certificates::CertificateStanding::Revoked
    ));
    assert!(matches!(
        h.store
            .check_join_token(&token, "csr", now_ms())
            .await
            .unwrap(),
        JoinTokenCheck::Redeemable(_)
    ));
    let audit = h.store.audit_entries(100).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "re-register"
        && e.name == "shop.prod-1"
        && e.actor == "onboarding:cluster-api"));
}
