//! `TracePipeline`s through the REST API (issue 17), `/api/v1/tracepipelines`, with the
//! same handlers as the other kinds: through `app(state)` with `oneshot` on a real store
//! (temporary SQLite). Names are unique per tenant and kind, tenants reach only their
//! own pipelines, invalid specs are refused with 422 and their field paths, inline
//! secrets are never returned, buffers share a cluster's budget, and a selected
//! cluster's configuration carries the pipeline.

mod api_harness;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use api_harness::{ADMIN, Harness, pipeline};

/// A trace pipeline shipping to Tempo with inline credentials.
fn trace_pipeline(name: &str) -> Value {
    json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "TracePipeline",
        "metadata": { "name": name },
        "spec": {
            "input": { "zipkin": { "enabled": true } },
            "sampling": { "ratio": 0.25 },
            "processors": {
                "dropSpans": [{ "attribute": "url.path", "regex": "^/healthz$" }],
                "rateLimit": { "spansPerSecond": 1000 },
            },
            "output": { "otlp": {
                "endpoint": "https://tempo.example:4317",
                "headers": [{ "name": "X-Extra", "value": "SECRET-header-1" }],
                "authentication": { "basic": {
                    "user": { "value": "SECRET-user-2" },
                    "password": { "value": "SECRET-password-3" },
                } },
            } },
        },
    })
}

/// The field paths of a 422 answer.
fn paths(body: &Value) -> Vec<String> {
    body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {body}"))
        .iter()
        .map(|f| f["path"].as_str().expect("a path").to_owned())
        .collect()
}

/// Apply, read, list, validate (dry run), status and delete of a trace pipeline beside
/// a metric pipeline of the same name: two pipelines, each with its own routes.
#[tokio::test]
async fn trace_pipelines_live_beside_metric_pipelines_of_the_same_name() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let put = |uri: &'static str, body: Value| {
        let (h, shop) = (&h, shop.clone());
        async move { h.call(Method::PUT, uri, Some(&shop), Some(body)).await }
    };
    let created = put("/api/v1/tracepipelines/shop", trace_pipeline("shop")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(!created.text.contains("SECRET"), "{}", created.text);
    let answer = created.json();
    assert_eq!(answer["pipeline"]["resource"]["kind"], "TracePipeline");
    let spec = &answer["pipeline"]["resource"]["spec"];
    assert_eq!(spec["sampling"]["ratio"], 0.25);
    let otlp = &spec["output"]["otlp"];
    assert_eq!(otlp["authentication"]["basic"]["password"]["value"], "***");
    assert_eq!(otlp["headers"][0]["value"], "***");
    let metric = put(
        "/api/v1/pipelines/shop",
        pipeline("shop", "https://a.example/write"),
    )
    .await;
    assert_eq!(metric.status, StatusCode::CREATED, "{}", metric.text);

    // What was read can be applied again as it is: `***` keeps the stored secrets.
    let read = h.get("/api/v1/tracepipelines/shop", &shop).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(!read.text.contains("SECRET"), "{}", read.text);
    let reapplied = put(
        "/api/v1/tracepipelines/shop",
        read.json()["resource"].clone(),
    )
    .await;
    assert_eq!(reapplied.status, StatusCode::OK, "{}", reapplied.text);
    assert_eq!(reapplied.json()["result"], "unchanged");

    let traces = h.get("/api/v1/tracepipelines", &shop).await.json();
    let items = traces["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resource"]["kind"], "TracePipeline");
    let metrics = h.get("/api/v1/pipelines", &shop).await.json();
    assert_eq!(metrics["items"].as_array().unwrap().len(), 1);

    let status = h.get("/api/v1/tracepipelines/shop/status", &shop).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    assert_eq!(status.json()["kind"], "TracePipeline");
    assert_eq!(status.json()["generation"], 1);

    let dry = h
        .call(
            Method::POST,
            "/api/v1/tracepipelines?dryRun=true",
            Some(&shop),
            Some(trace_pipeline("other")),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(dry.json()["dryRun"], true);
    let absent = h.get("/api/v1/tracepipelines/other", &shop).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND, "{}", absent.text);

    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/tracepipelines/shop",
            Some(&shop),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    let gone = h.get("/api/v1/tracepipelines/shop", &shop).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let kept = h.get("/api/v1/pipelines/shop", &shop).await;
    assert_eq!(kept.status, StatusCode::OK, "the metric pipeline stays");
}

/// Invalid trace pipelines are refused with 422 and every field path, under the tenant
/// policy; the kind of the route is checked; `***` may not follow a changed endpoint.
#[tokio::test]
async fn invalid_trace_pipelines_are_refused_with_their_field_paths() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let post = |body: Value| {
        let (h, shop) = (&h, shop.clone());
        async move {
            h.call(
                Method::POST,
                "/api/v1/tracepipelines",
                Some(&shop),
                Some(body),
            )
            .await
        }
    };
    let mut bad = trace_pipeline("bad");
    bad["spec"]["sampling"]["ratio"] = json!(1.5);
    bad["spec"]["processors"]["attributes"] = json!([{ "action": "hash", "key": "enduser.id" }]);
    bad["spec"]["processors"]["hashKey"] = json!({ "valueFrom": { "secretKeyRef":
        { "name": "salt", "namespace": "kube-system", "key": "k" } } });
    bad["spec"]["output"]["otlp"]["headers"][0]["name"] = json!("THANOS-TENANT");
    let refused = post(bad).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(
        paths(&refused.json()),
        [
            "spec.sampling.ratio",
            "spec.processors.hashKey.valueFrom.secretKeyRef.namespace",
            "spec.output.otlp.headers[0].name",
        ]
    );
    assert!(!refused.text.contains("SECRET"), "{}", refused.text);

    let refused = post(trace_pipeline("kaas-mine")).await;
    assert_eq!(paths(&refused.json()), ["metadata.name"]);

    // A metric pipeline sent to the trace route, and a trace pipeline to the metric one.
    let refused = post(pipeline("m", "https://a.example/write")).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(paths(&refused.json()).contains(&"kind".to_owned()));
    let refused = h
        .call(
            Method::POST,
            "/api/v1/pipelines",
            Some(&shop),
            Some(trace_pipeline("t")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(paths(&refused.json()).contains(&"kind".to_owned()));

    // `***` kept while the endpoint changes would send the stored secret elsewhere.
    let created = post(trace_pipeline("moving")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let mut moved = h.get("/api/v1/tracepipelines/moving", &shop).await.json()["resource"].clone();
    moved["spec"]["output"]["otlp"]["endpoint"] = json!("https://attacker.example:4317");
    let refused = post(moved).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let found = paths(&refused.json());
    assert!(
        found.contains(&"spec.output.otlp.authentication.basic.password.value".to_owned()),
        "{found:?}"
    );
    assert!(!refused.text.contains("SECRET"), "{}", refused.text);
}

/// A tenant reaches only its own trace pipelines.
#[tokio::test]
async fn another_tenants_trace_pipelines_are_out_of_reach() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let bank = h.tenant_with_token("bank").await;
    let created = h
        .call(
            Method::PUT,
            "/api/v1/tracepipelines/shop",
            Some(&shop),
            Some(trace_pipeline("shop")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let theirs = h.get("/api/v1/tracepipelines/shop", &bank).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    for (method, uri) in [
        (Method::GET, "/api/v1/tracepipelines/shop?tenant=shop"),
        (
            Method::GET,
            "/api/v1/tracepipelines/shop/status?tenant=shop",
        ),
        (Method::DELETE, "/api/v1/tracepipelines/shop?tenant=shop"),
    ] {
        let answer = h.call(method.clone(), uri, Some(&bank), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    let admin = h
        .get("/api/v1/tracepipelines/shop?tenant=shop", ADMIN)
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.text);
    assert!(!admin.text.contains("SECRET"), "{}", admin.text);
}

/// Trace buffers share the cluster's budget with the other kinds' buffers.
#[tokio::test]
async fn trace_pipeline_buffers_count_against_the_cluster_budget() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let cluster = h
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(&shop),
            Some(json!({ "name": "prod-1", "labels": { "env": "prod" } })),
        )
        .await;
    assert_eq!(cluster.status, StatusCode::CREATED, "{}", cluster.text);
    // The default budget is 3Gi; 2Gi of metric buffer leaves 1Gi.
    let mut metric = pipeline("m", "https://a.example/write");
    metric["spec"]["buffer"] = json!({ "maxBytes": "2Gi" });
    let applied = h
        .call(Method::POST, "/api/v1/pipelines", Some(&shop), Some(metric))
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let mut big = trace_pipeline("t");
    big["spec"]["buffer"] = json!({ "maxBytes": "1536Mi" });
    let refused = h
        .call(
            Method::POST,
            "/api/v1/tracepipelines",
            Some(&shop),
            Some(big),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(paths(&refused.json()), ["spec.buffer.maxBytes"]);
    let mut fits = trace_pipeline("t");
    fits["spec"]["buffer"] = json!({ "maxBytes": "512Mi" });
    let applied = h
        .call(
            Method::POST,
            "/api/v1/tracepipelines",
            Some(&shop),
            Some(fits),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let budget = h.get("/api/v1/clusters/prod-1/buffer-budget", &shop).await;
    assert_eq!(budget.json()["pipelineBytes"], (2u64 << 30) + (512 << 20));
}
