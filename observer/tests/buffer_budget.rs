//! Cluster buffer budgets through `app(state)` on a real store (temporary SQLite): the
//! default and per-cluster budgets, set only by admins, and pipelines (and clusters)
//! refused with 422 naming the cluster when a cluster's pipelines would ask for more
//! buffer than its budget.

mod api_harness;

use axum::http::{Method, StatusCode};
use kaas_observer::api::budgets::BufferBudgets;
use kaas_observer::api::{ApiState, app};
use serde_json::{Value, json};

use api_harness::{ADMIN, Harness, pipeline};

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

/// A pipeline selecting clusters labelled `env: <env>`, asking `max_bytes` of buffer.
fn buffered(name: &str, env: &str, max_bytes: &str) -> Value {
    let mut pipeline = pipeline(name, "https://a.example/write");
    pipeline["spec"]["clusterSelector"] = json!({ "matchLabels": { "env": env } });
    pipeline["spec"]["buffer"] = json!({ "maxBytes": max_bytes });
    pipeline
}

/// A harness whose API checks against `budgets`.
async fn with_budgets(budgets: BufferBudgets) -> Harness {
    let h = Harness::new().await;
    let app = app(ApiState {
        store: h.store.clone(),
        join_token_ttl: std::time::Duration::from_secs(3600),
        control_endpoint: api_harness::CONTROL_ENDPOINT.to_owned(),
        ca_pem: api_harness::CA_PEM.to_owned(),
        buffer_budgets: budgets,
        egress: api_harness::loopback_allowed(),
        tenant_policy: std::sync::Arc::new(api_harness::tenant_policy()),
    });
    Harness { app, ..h }
}

async fn create_cluster(h: &Harness, token: &str, name: &str, env: &str) -> (StatusCode, Value) {
    let answer = h
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(token),
            Some(json!({ "name": name, "labels": { "env": env } })),
        )
        .await;
    let body = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
    (answer.status, body)
}

async fn apply(h: &Harness, token: &str, pipeline: Value) -> (StatusCode, Value) {
    let answer = h
        .call(
            Method::POST,
            "/api/v1/pipelines",
            Some(token),
            Some(pipeline),
        )
        .await;
    let body = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
    (answer.status, body)
}

/// Issue 13, Disk budget: a pipeline that would take a selected cluster's buffers over
/// the cluster's budget is refused with 422 naming the cluster and the budget, and
/// nothing is stored; pipelines within it, on other clusters, or shrinking are
/// accepted. On 552c13e the over-budget apply answered 201.
#[tokio::test]
async fn a_pipeline_over_a_selected_clusters_budget_is_refused_naming_the_cluster() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    assert_eq!(
        create_cluster(&h, &shop, "prod-1", "prod").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        create_cluster(&h, &shop, "dev-1", "dev").await.0,
        StatusCode::CREATED
    );
    // The default budget is 3Gi: two pipelines of 1Gi and one of 1Gi fit prod-1.
    for name in ["a", "b", "c"] {
        let (status, body) = apply(&h, &shop, buffered(name, "prod", "1Gi")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = apply(&h, &shop, buffered("d", "prod", "64Mi")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("\"prod-1\""), "{message}");
    let field = &body["fields"][0];
    assert_eq!(field["path"], "spec.buffer.maxBytes");
    let reason = field["message"].as_str().unwrap();
    assert!(
        reason.contains("prod-1") && reason.contains(&format!("budget of {}", 3 * GI)),
        "{reason}"
    );
    assert!(!reason.contains("dev-1"), "{reason}");
    let stored = h.get("/api/v1/pipelines/d", &shop).await;
    assert_eq!(stored.status, StatusCode::NOT_FOUND, "nothing was stored");
    // A dry run answers the same.
    let dry = h
        .call(
            Method::POST,
            "/api/v1/pipelines?dryRun=true",
            Some(&shop),
            Some(buffered("d", "prod", "64Mi")),
        )
        .await;
    assert_eq!(dry.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", dry.text);
    // The same pipeline on the other cluster fits; growing an existing one does not,
    // shrinking it does.
    assert_eq!(
        apply(&h, &shop, buffered("d", "dev", "2Gi")).await.0,
        StatusCode::CREATED
    );
    let (status, body) = apply(&h, &shop, buffered("a", "prod", "1100Mi")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        apply(&h, &shop, buffered("a", "prod", "512Mi")).await.0,
        StatusCode::OK
    );
    // Moving a pipeline onto a full cluster is refused too.
    let (status, body) = apply(&h, &shop, buffered("d", "prod", "2Gi")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Issue 13, Disk budget: the budget is the provider's. An admin sets it per cluster
/// (a tenant may read it, not change it), the check uses it, and a cluster whose labels
/// would select pipelines over its budget is refused at onboarding. The admin names the
/// cluster as on every cluster route: by its global id, or `?tenant=` and its name.
#[tokio::test]
async fn admins_set_a_clusters_budget_and_tenants_only_read_it() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let bank = h.tenant_with_token("bank").await;
    assert_eq!(
        create_cluster(&h, &shop, "edge-1", "edge").await.0,
        StatusCode::CREATED
    );
    let uri = "/api/v1/clusters/edge-1/buffer-budget";
    let by_id = "/api/v1/clusters/shop.edge-1/buffer-budget";
    let read = h.get(uri, &shop).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(
        read.json(),
        json!({
            "cluster": "edge-1", "clusterId": "shop.edge-1", "tenant": "shop",
            "maxBytes": 3 * GI, "default": true, "reservedBytes": 0, "pipelineBytes": 0,
            "nodeMaxBytes": 2 * GI, "nodeReservedBytes": 0, "nodePipelineBytes": 0,
        })
    );
    assert_eq!(h.get(uri, &bank).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get(by_id, &bank).await.status, StatusCode::NOT_FOUND);
    let by_tenant = h
        .call(
            Method::PUT,
            uri,
            Some(&shop),
            Some(json!({ "maxBytes": "100Gi" })),
        )
        .await;
    assert_eq!(
        by_tenant.status,
        StatusCode::FORBIDDEN,
        "{}",
        by_tenant.text
    );
    let too_small = h
        .call(
            Method::PUT,
            by_id,
            Some(ADMIN),
            Some(json!({ "maxBytes": "1Ki" })),
        )
        .await;
    assert_eq!(
        too_small.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        too_small.text
    );
    assert_eq!(too_small.json()["fields"][0]["path"], "maxBytes");
    let set = h
        .call(
            Method::PUT,
            by_id,
            Some(ADMIN),
            Some(json!({ "maxBytes": "512Mi" })),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.json()["maxBytes"], 512 * MI);
    assert_eq!(set.json()["default"], false);

    let (status, body) = apply(&h, &shop, buffered("small", "edge", "256Mi")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = apply(&h, &shop, buffered("big", "edge", "300Mi")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("budget of {}", 512 * MI))
    );
    assert_eq!(h.get(uri, &shop).await.json()["pipelineBytes"], 256 * MI);

    // Back to the default: the larger pipeline fits.
    let reset = h
        .call(
            Method::DELETE,
            &format!("{uri}?tenant=shop"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text);
    assert_eq!(reset.json()["default"], true);
    assert_eq!(
        apply(&h, &shop, buffered("big", "edge", "300Mi")).await.0,
        StatusCode::CREATED
    );

    let audit = h.store.audit_entries(100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "cluster-buffer-budget" && e.action == "create"),
        "{audit:?}"
    );
}

/// Issue 13, Disk budget: the provider's central pipeline is counted first, and a new
/// cluster whose labels select more than its budget is refused naming it.
#[tokio::test]
async fn the_central_share_counts_and_new_clusters_are_checked() {
    let h = with_budgets(BufferBudgets {
        default_bytes: 2 * GI,
        central_bytes: GI,
        ..BufferBudgets::default()
    })
    .await;
    let shop = h.tenant_with_token("shop").await;
    assert_eq!(
        apply(&h, &shop, buffered("a", "prod", "600Mi")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        apply(&h, &shop, buffered("b", "prod", "600Mi")).await.0,
        StatusCode::CREATED
    );
    // 1200Mi of tenant pipelines plus 1Gi central is over 2Gi: the cluster is refused.
    let (status, body) = create_cluster(&h, &shop, "prod-1", "prod").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"prod-1\""),
        "{body}"
    );
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{GI} reserved")),
        "{body}"
    );
    assert_eq!(
        h.get("/api/v1/clusters/prod-1", &shop).await.status,
        StatusCode::NOT_FOUND
    );
    let (status, body) = create_cluster(&h, &shop, "dev-1", "dev").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let read = h.get("/api/v1/clusters/dev-1/buffer-budget", &shop).await;
    assert_eq!(read.json()["reservedBytes"], GI);
    assert_eq!(read.json()["maxBytes"], 2 * GI);
}

/// Issue 13, finding 8 with the disk budget: budgets belong to a cluster's global id.
/// Two tenants' clusters of the same name keep their own budgets, and a cluster
/// registered again under a name after its tenant was deleted and created again starts
/// at the default, not with the budget of the cluster that had the name before. On
/// 552c13e a name was global, so the second tenant could not have `edge-1` at all.
#[tokio::test]
async fn budgets_belong_to_the_global_id_and_are_not_inherited_by_a_new_cluster() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let bank = h.tenant_with_token("bank").await;
    for token in [&shop, &bank] {
        let (status, body) = create_cluster(&h, token, "edge-1", "edge").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let set = h
        .call(
            Method::PUT,
            "/api/v1/clusters/edge-1/buffer-budget?tenant=shop",
            Some(ADMIN),
            Some(json!({ "maxBytes": "512Mi" })),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let uri = "/api/v1/clusters/edge-1/buffer-budget";
    assert_eq!(h.get(uri, &shop).await.json()["maxBytes"], 512 * MI);
    let theirs = h.get(uri, &bank).await.json();
    assert_eq!(
        (theirs["clusterId"].as_str(), theirs["default"].as_bool()),
        (Some("bank.edge-1"), Some(true)),
        "{theirs}"
    );
    // Bank's pipelines are checked against bank's budget only.
    assert_eq!(
        apply(&h, &bank, buffered("big", "edge", "2Gi")).await.0,
        StatusCode::CREATED
    );

    // Shop goes away entirely and comes back with a cluster of the same name.
    let deleted = h
        .call(Method::DELETE, "/api/v1/clusters/edge-1", Some(&shop), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    let gone = h
        .call(Method::DELETE, "/api/v1/tenants/shop", Some(ADMIN), None)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text);
    let shop = h.tenant_with_token("shop").await;
    let (status, body) = create_cluster(&h, &shop, "edge-1", "edge").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fresh = h.get(uri, &shop).await.json();
    assert_eq!(
        (fresh["maxBytes"].as_u64(), fresh["default"].as_bool()),
        (Some(3 * GI), Some(true)),
        "{fresh}"
    );
}

/// Issue 16: the provider's central log pipeline is reserved in every node's budget
/// first, so tenant log pipelines reading node logs cannot starve it; what is left is
/// theirs, and the budget view shows both.
#[tokio::test]
async fn the_central_log_pipeline_is_reserved_in_each_nodes_budget() {
    let h = with_budgets(BufferBudgets {
        node_bytes: 2 * GI,
        central_node_bytes: GI,
        ..BufferBudgets::default()
    })
    .await;
    let shop = h.tenant_with_token("shop").await;
    assert_eq!(
        create_cluster(&h, &shop, "prod-1", "prod").await.0,
        StatusCode::CREATED
    );
    let node_logs = |name: &str, max_bytes: &str| {
        json!({
            "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
            "kind": "LogPipeline",
            "metadata": { "name": name },
            "spec": {
                "input": { "runtime": { "enabled": true } },
                "output": { "loki": { "url": "https://loki.example" } },
                "buffer": { "maxBytes": max_bytes },
            },
        })
    };
    let apply_logs = |pipeline: Value| {
        let (h, shop) = (&h, shop.clone());
        async move {
            let answer = h
                .call(
                    Method::POST,
                    "/api/v1/logpipelines",
                    Some(&shop),
                    Some(pipeline),
                )
                .await;
            let body = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
            (answer.status, body)
        }
    };
    // 1.5Gi and the central 1Gi are over the node's 2Gi.
    let (status, body) = apply_logs(node_logs("big", "1536Mi")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let reason = body["fields"][0]["message"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "plus {GI} reserved for the provider's central log pipeline"
        )),
        "{reason}"
    );
    let (status, body) = apply_logs(node_logs("fits", "1Gi")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let read = h.get("/api/v1/clusters/prod-1/buffer-budget", &shop).await;
    let read = read.json();
    assert_eq!(read["nodeMaxBytes"], 2 * GI, "{read}");
    assert_eq!(read["nodeReservedBytes"], GI, "{read}");
    assert_eq!(read["nodePipelineBytes"], GI, "{read}");
    // The cluster's budget is untouched by node buffers.
    assert_eq!(read["pipelineBytes"], 0, "{read}");
}
