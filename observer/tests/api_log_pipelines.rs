//! `LogPipeline`s through the REST API (issue 16), `/api/v1/logpipelines`, with the
//! same handlers as metric pipelines: through `app(state)` with `oneshot` on a real
//! store (temporary SQLite), and one round trip over a socket. Names are unique per
//! tenant and kind, tenants reach only their own pipelines, invalid specs are refused
//! with 422 and their field paths, inline secrets are never returned, and buffers of
//! every kind share a cluster's budget.

mod api_harness;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use api_harness::{ADMIN, Harness, pipeline};

/// A log pipeline shipping to Loki with inline credentials.
fn log_pipeline(name: &str) -> Value {
    json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": { "name": name },
        "spec": {
            "input": { "runtime": { "enabled": true } },
            "output": { "loki": {
                "url": "https://loki.example",
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

/// Apply, read, list, validate (dry run), status and delete of a log pipeline beside a
/// metric pipeline of the same name: two pipelines, each with its own routes.
#[tokio::test]
async fn log_pipelines_live_beside_metric_pipelines_of_the_same_name() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let put = |uri: &'static str, body: Value| {
        let (h, shop) = (&h, shop.clone());
        async move { h.call(Method::PUT, uri, Some(&shop), Some(body)).await }
    };
    let created = put("/api/v1/logpipelines/shop", log_pipeline("shop")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(!created.text.contains("SECRET"), "{}", created.text);
    let answer = created.json();
    assert_eq!(answer["result"], "created");
    assert_eq!(answer["pipeline"]["resource"]["kind"], "LogPipeline");
    let loki = &answer["pipeline"]["resource"]["spec"]["output"]["loki"];
    assert_eq!(loki["authentication"]["basic"]["password"]["value"], "***");
    assert_eq!(loki["headers"][0]["value"], "***");
    // The same name as a metric pipeline: another pipeline, created.
    let metric = put(
        "/api/v1/pipelines/shop",
        pipeline("shop", "https://a.example/write"),
    )
    .await;
    assert_eq!(metric.status, StatusCode::CREATED, "{}", metric.text);
    // The same log pipeline again: unchanged.
    let again = put("/api/v1/logpipelines/shop", log_pipeline("shop")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json()["result"], "unchanged");

    let read = h.get("/api/v1/logpipelines/shop", &shop).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(!read.text.contains("SECRET"), "{}", read.text);
    // What was read can be applied again as it is: `***` keeps the stored secrets.
    let resource = read.json()["resource"].clone();
    let reapplied = put("/api/v1/logpipelines/shop", resource).await;
    assert_eq!(reapplied.status, StatusCode::OK, "{}", reapplied.text);
    assert_eq!(reapplied.json()["result"], "unchanged");

    let logs = h.get("/api/v1/logpipelines", &shop).await.json();
    let items = logs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resource"]["kind"], "LogPipeline");
    let metrics = h.get("/api/v1/pipelines", &shop).await.json();
    let items = metrics["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["resource"]["kind"], "MetricPipeline");

    let status = h.get("/api/v1/logpipelines/shop/status", &shop).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    assert_eq!(status.json()["kind"], "LogPipeline");
    assert_eq!(status.json()["generation"], 1);

    // Validate only: answered, nothing stored.
    let dry = h
        .call(
            Method::POST,
            "/api/v1/logpipelines?dryRun=true",
            Some(&shop),
            Some(log_pipeline("other")),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(dry.json()["dryRun"], true);
    assert!(!dry.text.contains("SECRET"), "{}", dry.text);
    let absent = h.get("/api/v1/logpipelines/other", &shop).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND, "{}", absent.text);

    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/logpipelines/shop",
            Some(&shop),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    let gone = h.get("/api/v1/logpipelines/shop", &shop).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let kept = h.get("/api/v1/pipelines/shop", &shop).await;
    assert_eq!(kept.status, StatusCode::OK, "the metric pipeline stays");
}

/// Invalid log pipelines are refused with 422 and every field path, by the same rules
/// as metric pipelines: the tenant policy (Secret namespaces), the reserved name
/// prefix, the kind of the route, and `***` that would carry a stored secret to a new
/// place.
#[tokio::test]
async fn invalid_log_pipelines_are_refused_with_their_field_paths() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let post = |body: Value| {
        let (h, shop) = (&h, shop.clone());
        async move {
            h.call(
                Method::POST,
                "/api/v1/logpipelines",
                Some(&shop),
                Some(body),
            )
            .await
        }
    };
    let mut two_outputs = log_pipeline("two");
    two_outputs["spec"]["output"]["http"] = json!({ "url": "https://es.example:9200" });
    two_outputs["spec"]["input"] = json!({});
    let refused = post(two_outputs).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let found = paths(&refused.json());
    assert!(found.iter().any(|p| p == "spec.output"), "{found:?}");
    assert!(
        found.iter().any(|p| p.starts_with("spec.input")),
        "{found:?}"
    );

    let mut foreign_secret = log_pipeline("foreign");
    foreign_secret["spec"]["output"]["loki"]["authentication"] = json!({ "basic": {
        "user": { "value": "u" },
        "password": { "valueFrom": { "secretKeyRef":
            { "name": "s", "namespace": "kube-system", "key": "k" } } },
    } });
    let refused = post(foreign_secret).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let found = paths(&refused.json());
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("spec.output.loki.authentication.basic.password")),
        "{found:?}"
    );

    let refused = post(log_pipeline("kaas-mine")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(paths(&refused.json()), ["metadata.name"]);

    // A metric pipeline sent to the log route, and the other way round.
    let refused = post(pipeline("m", "https://a.example/write")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert!(paths(&refused.json()).contains(&"kind".to_owned()));
    let refused = h
        .call(
            Method::POST,
            "/api/v1/pipelines",
            Some(&shop),
            Some(log_pipeline("l")),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert!(paths(&refused.json()).contains(&"kind".to_owned()));

    // `***` kept while the URL changes would send the stored secret elsewhere.
    let created = post(log_pipeline("moving")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let mut moved = h.get("/api/v1/logpipelines/moving", &shop).await.json()["resource"].clone();
    moved["spec"]["output"]["loki"]["url"] = json!("https://attacker.example");
    let refused = post(moved).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let found = paths(&refused.json());
    assert!(
        found.contains(&"spec.output.loki.authentication.basic.password.value".to_owned()),
        "{found:?}"
    );
    assert!(!refused.text.contains("SECRET"), "{}", refused.text);
}

/// A tenant reaches only its own log pipelines; an admin names the tenant.
#[tokio::test]
async fn another_tenants_log_pipelines_are_out_of_reach() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let bank = h.tenant_with_token("bank").await;
    let created = h
        .call(
            Method::PUT,
            "/api/v1/logpipelines/shop",
            Some(&shop),
            Some(log_pipeline("shop")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // bank's own namespace has no such pipeline.
    let theirs = h.get("/api/v1/logpipelines/shop", &bank).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    for (method, uri, body) in [
        (Method::GET, "/api/v1/logpipelines/shop?tenant=shop", None),
        (Method::GET, "/api/v1/logpipelines?tenant=shop", None),
        (
            Method::GET,
            "/api/v1/logpipelines/shop/status?tenant=shop",
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/logpipelines/shop?tenant=shop",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/logpipelines/shop?tenant=shop",
            Some(log_pipeline("shop")),
        ),
    ] {
        let answer = h.call(method.clone(), uri, Some(&bank), body).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            answer.text
        );
        assert!(!answer.text.contains("SECRET"), "{}", answer.text);
    }
    let listed = h.get("/api/v1/logpipelines", &bank).await.json();
    assert_eq!(listed["items"], json!([]));
    // Still there, and the admin sees it by naming the tenant.
    let admin = h.get("/api/v1/logpipelines/shop?tenant=shop", ADMIN).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.text);
    assert!(!admin.text.contains("SECRET"), "{}", admin.text);
}

/// A log pipeline counts where it buffers (issue 16): one reading node logs on every
/// node, against the node budget (each node's own disk), not the cluster's; one taking
/// pushes on the cluster-level instance, against the cluster's budget with the metric
/// pipelines. Either is refused naming the cluster when it would take that budget over.
#[tokio::test]
async fn log_pipeline_buffers_count_against_the_budget_where_they_buffer() {
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
    let apply = |pipeline: Value| {
        let (h, shop) = (&h, shop.clone());
        let uri = match pipeline["kind"].as_str() {
            Some("LogPipeline") => "/api/v1/logpipelines",
            _ => "/api/v1/pipelines",
        };
        async move { h.call(Method::POST, uri, Some(&shop), Some(pipeline)).await }
    };
    let sized = |mut pipeline: Value, max_bytes: &str| {
        pipeline["spec"]["buffer"] = json!({ "maxBytes": max_bytes });
        pipeline
    };
    let pushed = |name: &str| {
        let mut pipeline = log_pipeline(name);
        pipeline["spec"]["input"] = json!({ "otlp": { "enabled": true } });
        pipeline
    };
    // The default cluster budget is 3Gi; 2Gi of metric buffer leaves 1Gi.
    let metric = sized(pipeline("m", "https://a.example/write"), "2Gi");
    let applied = apply(metric).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    // Node logs buffer on each node: 1.5Gi fits the default node budget of 2Gi.
    let applied = apply(sized(log_pipeline("node-logs"), "1536Mi")).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    // Another 1Gi on each node does not.
    let refused = apply(sized(log_pipeline("more-node-logs"), "1Gi")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let body = refused.json();
    assert!(body["error"].as_str().unwrap().contains("prod-1"), "{body}");
    assert_eq!(paths(&body), ["spec.buffer.maxBytes"]);
    let reason = body["fields"][0]["message"].as_str().unwrap();
    assert!(
        reason.contains("on each node") && reason.contains("node buffer budget of 2147483648"),
        "{reason}"
    );
    // Pushed logs buffer on the cluster-level instance, with the metric pipelines.
    let refused = apply(sized(pushed("pushed"), "1536Mi")).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    let reason = refused.json()["fields"][0]["message"].to_string();
    assert!(reason.contains("cluster's buffer budget"), "{reason}");
    let applied = apply(sized(pushed("pushed"), "512Mi")).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let budget = h.get("/api/v1/clusters/prod-1/buffer-budget", &shop).await;
    let budget = budget.json();
    assert_eq!(
        budget["pipelineBytes"],
        (2u64 << 30) + (512 << 20),
        "{budget}"
    );
    assert_eq!(budget["nodePipelineBytes"], 1536u64 << 20, "{budget}");
    assert_eq!(budget["nodeMaxBytes"], 2u64 << 30, "{budget}");
    assert_eq!(budget["nodeReservedBytes"], 0, "{budget}");
}

/// One round trip over a real socket: a YAML LogPipeline applied and read back.
#[tokio::test]
async fn a_log_pipeline_round_trips_over_tcp() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let address = h.serve().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://{address}/api/v1/logpipelines");
    let yaml = serde_yaml::to_string(&log_pipeline("tcp")).unwrap();
    let created = client
        .put(format!("{base}/tcp"))
        .bearer_auth(&shop)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let read: Value = client
        .get(format!("{base}/tcp"))
        .bearer_auth(&shop)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["resource"]["kind"], "LogPipeline");
    assert_eq!(read["resource"]["metadata"]["name"], "tcp");
    assert!(!read.to_string().contains("SECRET"), "{read}");
}
