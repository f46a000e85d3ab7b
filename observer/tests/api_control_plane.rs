//! Issue 15, finding 3: a cluster's control-plane setting through `app(state)` on a
//! real store (temporary SQLite): set only by admins, validated with field paths,
//! stored, shown with the reason of every component that is not scraped, and rendered
//! into the cluster's central pipeline (and only that cluster's).

mod api_harness;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use kaas_observer::rendering::{CENTRAL_PIPELINE_NAME, CentralPipelineSettings, TenantPipelines};
use kaas_observer::store::ReportWrite;
use serde_json::{Value, json};

use api_harness::{ADMIN, Harness};

async fn create_cluster(h: &Harness, token: &str, name: &str) {
    let answer = h
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(token),
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
}

fn component<'a>(view: &'a Value, job: &str) -> &'a Value {
    view["components"]
        .as_array()
        .expect("the store and the rendered configuration answer")
        .iter()
        .find(|c| c["job"] == job)
        .unwrap_or_else(|| panic!("{job} in {view}"))
}

/// The jobs of the static targets of `cluster`'s central pipeline, as rendered.
async fn central_static_jobs(h: &Harness, cluster: &str) -> Vec<String> {
    let cache = TenantPipelines::new(Some(Arc::new(CentralPipelineSettings::new(
        "https://receive.example:19291/api/v1/receive",
    ))));
    let configs = cache
        .get(&h.store, "shop")
        .await
        .expect("the store and the rendered configuration answer");
    let cluster = h
        .store
        .list_clusters(Some("shop"))
        .await
        .expect("the store and the rendered configuration answer")
        .into_iter()
        .find(|c| c.name == cluster)
        .expect("the store and the rendered configuration answer");
    let rendered = configs.render(&cluster);
    let config: Value = serde_yaml::from_slice(&rendered.body)
        .expect("the store and the rendered configuration answer");
    let central = config["pipelines"]
        .as_array()
        .expect("the store and the rendered configuration answer")
        .iter()
        .find(|p| p["metadata"]["name"] == CENTRAL_PIPELINE_NAME)
        .expect("the store and the rendered configuration answer");
    central["spec"]["input"]["static"]["targets"]
        .as_array()
        .expect("the store and the rendered configuration answer")
        .iter()
        .map(|t| {
            t["labels"]["job"]
                .as_str()
                .expect("the store and the rendered configuration answer")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_control_plane_setting_is_the_providers_validated_and_rendered_per_cluster() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    create_cluster(&h, &shop, "prod-1").await;
    create_cluster(&h, &shop, "prod-2").await;
    let path = "/api/v1/clusters/prod-1/control-plane?tenant=shop";

    // The defaults: CoreDNS through its Service, the rest not scraped, with reasons.
    let answer = h.get("/api/v1/clusters/prod-1/control-plane", &shop).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let view = answer.json();
    assert_eq!(view["default"], true);
    assert_eq!(component(&view, "coredns")["scraped"], true);
    let etcd = component(&view, "etcd");
    assert_eq!(etcd["scraped"], false);
    assert!(
        etcd["reason"]
            .as_str()
            .unwrap()
            .contains("client certificates")
    );

    let setting = json!({
        "etcd": {"addresses": ["10.0.0.10:2381"]},
        "apiserver": {"notScraped": "hosted control plane"}
    });
    // A tenant may not set it.
    let answer = h
        .call(
            Method::PUT,
            "/api/v1/clusters/prod-1/control-plane",
            Some(&shop),
            Some(setting.clone()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    // A wrong field is refused with its path, and so is an unknown one.
    let answer = h
        .call(
            Method::PUT,
            path,
            Some(ADMIN),
            Some(json!({"etcd": {"addresses": ["10.0.0.10:2381", "http://x:1"]}})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("controlPlane.etcd.addresses[1]"),
        "{}",
        answer.text
    );
    let answer = h
        .call(
            Method::PUT,
            path,
            Some(ADMIN),
            Some(json!({"kubeProxy": {"notScraped": "x"}})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert!(answer.text.contains("kubeProxy"), "{}", answer.text);
    assert!(
        !central_static_jobs(&h, "prod-1")
            .await
            .contains(&"etcd".to_owned())
    );

    let answer = h
        .call(Method::PUT, path, Some(ADMIN), Some(setting.clone()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let view = answer.json();
    assert_eq!(view["default"], false);
    assert_eq!(view["setting"], setting);
    assert_eq!(component(&view, "etcd")["scraped"], true);
    assert_eq!(
        component(&view, "apiserver")["reason"],
        "hosted control plane"
    );
    // The tenant reads it.
    let answer = h.get("/api/v1/clusters/prod-1/control-plane", &shop).await;
    assert_eq!(answer.json()["setting"], setting);

    // Rendered into prod-1's central pipeline, not prod-2's.
    assert!(
        central_static_jobs(&h, "prod-1")
            .await
            .contains(&"etcd".to_owned())
    );
    assert!(
        !central_static_jobs(&h, "prod-2")
            .await
            .contains(&"etcd".to_owned())
    );

    // Back to the defaults.
    let answer = h.call(Method::DELETE, path, Some(ADMIN), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json()["default"], true);
    assert!(
        !central_static_jobs(&h, "prod-1")
            .await
            .contains(&"etcd".to_owned())
    );
}

/// Issue 15: a scraped component the agent cannot reach shows in the cluster's status
/// (`GET /api/v1/clusters/{name}` and its control-plane view) with the scrape's
/// failure reason from the agent's last health report; components that are not
/// scraped keep their reason and are never "unreachable".
#[tokio::test]
async fn an_unreachable_component_is_in_the_clusters_status_with_the_reason() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    create_cluster(&h, &shop, "prod-1").await;
    let answer = h
        .call(
            Method::PUT,
            "/api/v1/clusters/prod-1/control-plane?tenant=shop",
            Some(ADMIN),
            Some(json!({"etcd": {"addresses": ["10.0.0.10:2379"], "scheme": "https"}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // Before any report nothing is unreachable.
    let view = h.get("/api/v1/clusters/prod-1", &shop).await.json();
    assert!(
        view["controlPlane"]
            .as_array()
            .expect("the view lists the components")
            .iter()
            .all(|c| c.get("unreachable").is_none()),
        "{view}"
    );
    h.store
        .report(ReportWrite::Health {
            cluster: "shop.prod-1".to_owned(),
            health: json!({
                "agentInstanceId": "agent-1", "timestampMs": 1,
                "pipelines": [{
                    "pipeline": CENTRAL_PIPELINE_NAME, "samplesSent": 10, "samplesFailed": 0,
                    "bufferBytes": 0, "bufferOldestAgeSeconds": 0.0,
                    "targetsUp": 2, "targetsDown": 1,
                    "targetsDownByJob": [{"job": "etcd", "targetsDown": 1,
                                          "reason": "HTTP status 400 Bad Request"}]
                }]
            }),
            at_ms: 1,
        })
        .await
        .expect("the store takes the report");
    let view = h.get("/api/v1/clusters/prod-1", &shop).await.json();
    let components = json!({"components": view["controlPlane"].clone()});
    assert_eq!(
        component(&components, "etcd")["unreachable"],
        "1 target(s) failing: HTTP status 400 Bad Request"
    );
    assert_eq!(component(&components, "etcd")["scraped"], true);
    let scheduler = component(&components, "kube-scheduler");
    assert!(scheduler.get("unreachable").is_none() && scheduler["reason"].is_string());
    let view = h
        .get("/api/v1/clusters/prod-1/control-plane", &shop)
        .await
        .json();
    assert_eq!(
        component(&view, "etcd")["unreachable"],
        "1 target(s) failing: HTTP status 400 Bad Request"
    );
}

/// Issue 15: etcd's client certificate Secret must lie in a namespace agents may read
/// Secrets in (`--agent-secret-namespaces`, here the default `kaas-observer`): another
/// is refused with its field path, before the agent would refuse the configuration.
#[tokio::test]
async fn etcds_client_certificate_secret_must_be_in_an_allowed_namespace() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    create_cluster(&h, &shop, "prod-1").await;
    let put = |secret: &'static str| {
        h.call(
            Method::PUT,
            "/api/v1/clusters/prod-1/control-plane?tenant=shop",
            Some(ADMIN),
            Some(
                json!({"etcd": {"addresses": ["10.0.0.10:2379"], "scheme": "https",
                                 "clientCertificateSecret": secret}}),
            ),
        )
    };
    let answer = put("kube-system/etcd-client").await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("controlPlane.etcd.clientCertificateSecret"),
        "{}",
        answer.text
    );
    let answer = put("kaas-observer/etcd-client").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        component(&answer.json(), "etcd")["how"]
            .as_str()
            .is_some_and(
                |how| how.contains("client certificate from Secret kaas-observer/etcd-client")
            ),
        "{}",
        answer.text
    );
}
