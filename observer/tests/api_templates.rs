//! `PipelineTemplate`s and `PipelineInstance`s through the REST API (issue 18),
//! `/api/v1/pipelinetemplates` and `/api/v1/pipelineinstances`, through `app(state)`
//! with `oneshot` on a real store (temporary SQLite): an instance renders into a
//! pipeline that joins the selected cluster's configuration; a template change
//! re-renders its followers (the cluster's configuration hash changes) or, if it would
//! break any, is refused naming every one; rollback; refusals naming the binding;
//! provider templates read-only; tenants kept apart; secrets never returned.

mod api_harness;

use axum::http::{Method, StatusCode};
use kaas_observer::rendering::TenantPipelines;
use kaas_observer::serve::templates::provider_templates;
use serde_json::{Value, json};

use api_harness::{ADMIN, Answer, Harness, tenant_policy};

/// A trace template: endpoint (url), token (secret), a tenant header value (string,
/// defaulting to `shop`) and a timeout (duration, defaulting to `timeout`), its spans
/// only from the clusters labelled `env: prod`. `extra` adds declarations.
fn template(name: &str, timeout: &str, extra: Value) -> Value {
    let mut placeholders = json!([
        { "name": "endpoint", "type": "url", "description": "The OTLP endpoint.", "required": true },
        { "name": "token", "type": "secret", "description": "The bearer token.", "required": true },
        { "name": "tenant", "type": "string", "description": "The tenant header.", "default": "shop" },
        { "name": "timeout", "type": "duration", "description": "The timeout.", "default": timeout },
    ]);
    let mut otlp = json!({
        "endpoint": "%{endpoint}",
        "timeout": "%{timeout}",
        "headers": [{ "name": "X-Tenant", "value": "%{tenant}" }],
        "authentication": { "bearerToken": { "value": "%{token}" } },
    });
    if let Some(extra) = extra.as_object() {
        placeholders
            .as_array_mut()
            .expect("a list")
            .push(extra.clone().into());
        otlp["headers"]
            .as_array_mut()
            .expect("a list")
            .push(json!({ "name": "X-Region", "value": "%{region}" }));
    }
    json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "PipelineTemplate",
        "metadata": { "name": name },
        "spec": {
            "pipelineKind": "TracePipeline",
            "description": "Spans to an OTLP backend with a bearer token.",
            "placeholders": placeholders,
            "template": { "spec": {
                "clusterSelector": { "matchLabels": { "env": "prod" } },
                "output": { "otlp": otlp },
            } },
        },
    })
}

/// An instance of `template` binding the endpoint, the token (a Secret key) and the
/// tenant header to `SECRET-header-<name>`.
fn instance(name: &str, template: &str) -> Value {
    json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "PipelineInstance",
        "metadata": { "name": name },
        "spec": {
            "template": { "name": template },
            "bindings": {
                "endpoint": { "value": format!("https://tempo.{name}.example:4317") },
                "token": { "secretKeyRef": { "name": "tempo", "namespace": "kaas-observer", "key": "token" } },
                "tenant": { "value": format!("SECRET-header-{name}") },
            },
        },
    })
}

/// The field paths of a 422 answer.
fn paths(answer: &Answer) -> Vec<String> {
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    answer.json()["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {}", answer.text))
        .iter()
        .map(|f| f["path"].as_str().expect("a path").to_owned())
        .collect()
}

async fn put(h: &Harness, token: &str, uri: &str, body: Value) -> Answer {
    h.call(Method::PUT, uri, Some(token), Some(body)).await
}

/// The configuration hash of the tenant's cluster `name`, and its body.
async fn config(h: &Harness, tenant: &str, name: &str) -> (String, String) {
    let cluster = h
        .store
        .get_cluster_named(tenant, name)
        .await
        .expect("read")
        .expect("the cluster");
    let rendered = TenantPipelines::new(None)
        .get(&h.store, tenant)
        .await
        .expect("read")
        .render(&cluster);
    (
        rendered.hash_hex(),
        String::from_utf8(rendered.body).expect("UTF-8"),
    )
}

async fn cluster(h: &Harness, token: &str, name: &str, env: &str) {
    let created = h
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(token),
            Some(json!({ "name": name, "labels": { "env": env } })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
}

/// Template → instance → the selected cluster's configuration; a template change
/// re-renders the instance (the hash changes, the status shows the generation); a
/// rollback; the render preview with secrets masked.
#[tokio::test]
async fn an_instance_runs_in_the_selected_clusters_and_follows_its_template() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    cluster(&h, &shop, "prod-1", "prod").await;
    cluster(&h, &shop, "dev-1", "dev").await;
    let yaml = serde_yaml::to_string(&template("tempo", "10s", Value::Null)).unwrap();
    let created = h
        .raw(
            Method::PUT,
            "/api/v1/pipelinetemplates/tempo",
            Some(&shop),
            Some(("application/yaml", yaml)),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["template"]["generation"], 1);
    let (before_prod, _) = config(&h, "shop", "prod-1").await;
    let (before_dev, _) = config(&h, "shop", "dev-1").await;

    let applied = h
        .call(
            Method::POST,
            "/api/v1/pipelineinstances",
            Some(&shop),
            Some(instance("traces", "tempo")),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    assert!(!applied.text.contains("SECRET"), "{}", applied.text);
    // The header value is sealed at rest, in the instance as in its pipeline.
    for file in ["observer.db", "observer.db-wal"] {
        let bytes = std::fs::read(h.dir.path().join(file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("SECRET-header"),
            "{file} holds a binding's secret value"
        );
    }
    let (hash, body) = config(&h, "shop", "prod-1").await;
    assert_ne!(hash, before_prod, "the instance joins the selected cluster");
    assert!(body.contains("https://tempo.traces.example:4317"), "{body}");
    assert_eq!(
        config(&h, "shop", "dev-1").await.0,
        before_dev,
        "not selected"
    );
    let read = h.get("/api/v1/pipelineinstances/traces", &shop).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(read.json()["resource"]["status"]["templateGeneration"], 1);
    let listed = h.get("/api/v1/tracepipelines", &shop).await;
    assert_eq!(
        listed.json()["items"][0]["name"],
        "traces",
        "{}",
        listed.text
    );

    let preview = h
        .get(
            "/api/v1/pipelineinstances/traces/render?cluster=prod-1",
            &shop,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert!(!preview.text.contains("SECRET"), "{}", preview.text);
    let preview = preview.json();
    assert_eq!(preview["selected"], true);
    let otlp = &preview["pipeline"]["spec"]["output"]["otlp"];
    assert_eq!(otlp["headers"][0]["value"], "***");
    assert_eq!(otlp["timeout"], "10s");
    let dev = h
        .get(
            "/api/v1/pipelineinstances/traces/render?cluster=dev-1",
            &shop,
        )
        .await;
    assert_eq!(dev.json()["selected"], false, "{}", dev.text);

    let changed = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "20s", Value::Null),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.json()["result"], "configured");
    assert_eq!(changed.json()["rerendered"], json!(["traces"]));
    let (after, body) = config(&h, "shop", "prod-1").await;
    assert_ne!(
        after, hash,
        "a template change reaches the cluster's configuration"
    );
    assert!(body.contains("20s"), "{body}");
    let read = h.get("/api/v1/pipelineinstances/traces", &shop).await;
    assert_eq!(read.json()["templateGeneration"], 2, "{}", read.text);

    let rolled = h
        .call(
            Method::POST,
            "/api/v1/pipelinetemplates/tempo/rollback",
            Some(&shop),
            Some(json!({ "generation": 1 })),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.text);
    assert_eq!(rolled.json()["template"]["generation"], 3);
    assert_ne!(
        config(&h, "shop", "prod-1").await.0,
        after,
        "the rollback reaches the cluster"
    );
    let preview = h
        .get(
            "/api/v1/pipelineinstances/traces/render?cluster=prod-1",
            &shop,
        )
        .await
        .json();
    assert_eq!(preview["templateGeneration"], 3);
    assert_eq!(
        preview["pipeline"]["spec"]["output"]["otlp"]["timeout"],
        "10s"
    );
    let generations = h
        .get("/api/v1/pipelinetemplates/tempo/generations", &shop)
        .await;
    let items = generations.json()["items"].as_array().unwrap().len();
    assert_eq!(items, 3, "{}", generations.text);
    let first = h
        .get("/api/v1/pipelinetemplates/tempo?generation=1", &shop)
        .await;
    assert_eq!(
        first.json()["resource"]["spec"]["placeholders"][3]["default"],
        "10s"
    );

    let dry = h
        .call(
            Method::PUT,
            "/api/v1/pipelineinstances/traces?dryRun=true",
            Some(&shop),
            Some({
                let mut moved = instance("traces", "tempo");
                moved["spec"]["bindings"]["endpoint"] =
                    json!({ "value": "https://tempo.other.example:4317" });
                moved
            }),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(dry.json()["result"], "configured");
    assert_eq!(
        dry.json()["pipeline"]["spec"]["output"]["otlp"]["endpoint"],
        "https://tempo.other.example:4317"
    );
    assert!(
        config(&h, "shop", "prod-1")
            .await
            .1
            .contains("tempo.traces.example"),
        "a dry run changes nothing"
    );

    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/pipelineinstances/traces",
            Some(&shop),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    assert_eq!(config(&h, "shop", "prod-1").await.0, before_prod);
}

/// An unbound required placeholder, a wrongly typed static value, an unknown template
/// or generation: 422, each naming its binding; nothing is stored.
#[tokio::test]
async fn instances_that_do_not_render_are_refused_naming_the_binding() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let created = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "10s", Value::Null),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let apply = |body: Value| {
        let (h, shop) = (&h, shop.clone());
        async move { put(h, &shop, "/api/v1/pipelineinstances/traces", body).await }
    };

    let mut unbound = instance("traces", "tempo");
    unbound["spec"]["bindings"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    let refused = apply(unbound).await;
    assert_eq!(paths(&refused), [r#"spec.bindings["endpoint"]"#]);
    assert!(refused.text.contains("required"), "{}", refused.text);

    let mut typed = instance("traces", "tempo");
    typed["spec"]["bindings"]["timeout"] = json!({ "value": "soon" });
    typed["spec"]["bindings"]["endpoint"] = json!({ "value": "tempo:4317" });
    let refused = apply(typed).await;
    assert_eq!(
        paths(&refused),
        [
            r#"spec.bindings["endpoint"].value"#,
            r#"spec.bindings["timeout"].value"#
        ]
    );

    let mut secret_as_value = instance("traces", "tempo");
    secret_as_value["spec"]["bindings"]["token"] = json!({ "value": "SECRET-token" });
    let refused = apply(secret_as_value).await;
    assert_eq!(paths(&refused), [r#"spec.bindings["token"].value"#]);
    assert!(!refused.text.contains("SECRET-token"), "{}", refused.text);

    let refused = apply(instance("traces", "nowhere")).await;
    assert_eq!(paths(&refused), ["spec.template.name"]);
    let mut pinned = instance("traces", "tempo");
    pinned["spec"]["template"]["generation"] = json!(7);
    assert_eq!(paths(&apply(pinned).await), ["spec.template.generation"]);

    let mut outside = instance("traces", "tempo");
    outside["spec"]["bindings"]["endpoint"] =
        json!({ "configMapKeyRef": { "name": "tempo", "namespace": "kube-system", "key": "url" } });
    assert_eq!(
        paths(&apply(outside).await),
        [r#"spec.bindings["endpoint"].configMapKeyRef.namespace"#],
        "only the namespaces the provider allows"
    );

    let listed = h.get("/api/v1/pipelineinstances", &shop).await;
    assert_eq!(listed.json()["items"], json!([]), "{}", listed.text);
    assert_eq!(
        h.get("/api/v1/tracepipelines", &shop).await.json()["items"],
        json!([])
    );
}

/// An instance whose non-secret placeholder is bound to a ConfigMap key is stored
/// (rendered with the type's sample, marked pending) and reaches the selected
/// cluster's agent as the instance itself, for the agent to render with the key's
/// value; an agent that does not announce `CAPABILITY_TEMPLATE_INSTANCES` gets neither
/// the instance nor its sample rendering.
#[tokio::test]
async fn an_instance_bound_to_a_config_map_key_is_sent_for_the_agent_to_render() {
    use kaas_observer::rendering::AgentFeatures;
    use kaas_pipeline::agent_config::AgentConfig;
    use kaas_pipeline::role::{AgentRole, PushPlacement};
    use kaas_pipeline::templates::PENDING_BINDINGS_ANNOTATION;

    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    cluster(&h, &shop, "prod-1", "prod").await;
    let created = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "10s", Value::Null),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let mut bound = instance("traces", "tempo");
    bound["spec"]["bindings"]["endpoint"] = json!({ "configMapKeyRef": { "name": "tempo", "namespace": "kaas-observer", "key": "url" } });
    let applied = put(&h, &shop, "/api/v1/pipelineinstances/traces", bound).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    let annotations = &applied.json()["pipeline"]["metadata"]["annotations"];
    assert_eq!(
        annotations[PENDING_BINDINGS_ANNOTATION], "endpoint",
        "{}",
        applied.text
    );

    let (_, body) = config(&h, "shop", "prod-1").await;
    let sent: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        sent.get("tracePipelines"),
        None,
        "never the sample rendering: {body}"
    );
    let instances = sent["pipelineInstances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{body}");
    assert_eq!(instances[0]["instance"]["metadata"]["name"], "traces");
    assert_eq!(
        instances[0]["instance"]["spec"]["bindings"]["endpoint"],
        json!({ "configMapKeyRef": { "name": "tempo", "namespace": "kaas-observer", "key": "url" } })
    );
    assert_eq!(instances[0]["templateGeneration"], 1);
    assert_eq!(instances[0]["template"]["metadata"]["name"], "tempo");
    // What the agent accepts, in its own context.
    let agent =
        kaas_pipeline::ValidationContext::observer(kaas_pipeline::ProviderPolicy::agent_default());
    let parsed = AgentConfig::parse(&body, &agent).expect("the agent accepts it");
    assert_eq!(parsed.pipeline_instances.len(), 1);
    assert_eq!(
        parsed.pipeline_instances[0].pending()[0].placeholder,
        "endpoint"
    );

    let cluster = h
        .store
        .get_cluster_named("shop", "prod-1")
        .await
        .expect("read")
        .expect("the cluster");
    let older = TenantPipelines::new(None)
        .get(&h.store, "shop")
        .await
        .expect("read")
        .render_for_agent(
            &cluster,
            (AgentRole::Cluster, PushPlacement::ClusterInstance),
            AgentFeatures {
                trace_pipelines: true,
                template_instances: false,
            },
        );
    let older = String::from_utf8(older.body).expect("UTF-8");
    assert!(!older.contains("pipelineInstances"), "{older}");
    assert!(!older.contains("tracePipelines"), "{older}");
}

/// A template change is refused, all or none and naming every instance, when its
/// re-rendered instances would together take a cluster over its buffer budget, though
/// each alone would fit beside the others' current buffers; nothing changes.
#[tokio::test]
async fn a_template_change_over_a_buffer_budget_is_refused_naming_the_instances() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    cluster(&h, &shop, "prod-1", "prod").await;
    let budget = h
        .call(
            Method::PUT,
            "/api/v1/clusters/prod-1/buffer-budget?tenant=shop",
            Some(ADMIN),
            Some(json!({ "maxBytes": "300Mi" })),
        )
        .await;
    assert_eq!(budget.status, StatusCode::OK, "{}", budget.text);
    let buffered = |max_bytes: &str| {
        let mut template = template("tempo", "10s", Value::Null);
        template["spec"]["template"]["spec"]["buffer"] = json!({ "maxBytes": max_bytes });
        template
    };
    let created = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        buffered("100Mi"),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    for name in ["a", "b"] {
        let uri = format!("/api/v1/pipelineinstances/{name}");
        let applied = put(&h, &shop, &uri, instance(name, "tempo")).await;
        assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    }
    let (before, _) = config(&h, "shop", "prod-1").await;

    // 2 x 200Mi: each alone beside the other's 100Mi would be 300Mi, within the budget.
    let refused = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        buffered("200Mi"),
    )
    .await;
    assert_eq!(
        paths(&refused),
        [
            r#"instances["shop/a"].spec.buffer.maxBytes"#,
            r#"instances["shop/b"].spec.buffer.maxBytes"#
        ]
    );
    assert!(
        refused.text.contains(r#"cluster \"prod-1\""#),
        "{}",
        refused.text
    );
    assert_eq!(
        config(&h, "shop", "prod-1").await.0,
        before,
        "nothing changed"
    );
    let read = h.get("/api/v1/pipelinetemplates/tempo", &shop).await;
    assert_eq!(read.json()["generation"], 1, "{}", read.text);
    let dry = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo?dryRun=true",
        buffered("200Mi"),
    )
    .await;
    assert_eq!(dry.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", dry.text);

    // Within the budget together: accepted, both re-rendered.
    let accepted = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        buffered("150Mi"),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    let (after, body) = config(&h, "shop", "prod-1").await;
    assert_ne!(after, before);
    assert_eq!(body.matches("150Mi").count(), 2, "{body}");
    assert!(!body.contains("100Mi"), "{body}");
}

/// A template change that would break following instances is refused, naming every
/// one, and changes nothing; pinned instances do not follow.
#[tokio::test]
async fn a_template_change_that_would_break_instances_is_refused_naming_each() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let created = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "10s", Value::Null),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    for name in ["a-traces", "b-traces"] {
        let applied = put(
            &h,
            &shop,
            &format!("/api/v1/pipelineinstances/{name}"),
            instance(name, "tempo"),
        )
        .await;
        assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);
    }
    let mut pinned = instance("c-traces", "tempo");
    pinned["spec"]["template"]["generation"] = json!(1);
    let applied = put(&h, &shop, "/api/v1/pipelineinstances/c-traces", pinned).await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.text);

    let region = json!({ "name": "region", "type": "string", "description": "The region.", "required": true });
    let breaking = template("tempo", "10s", region.clone());
    let dry = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo?dryRun=true",
        breaking.clone(),
    )
    .await;
    let expected = [
        r#"instances["a-traces"].spec.bindings["region"]"#,
        r#"instances["b-traces"].spec.bindings["region"]"#,
    ];
    assert_eq!(paths(&dry), expected);
    let refused = put(&h, &shop, "/api/v1/pipelinetemplates/tempo", breaking).await;
    assert_eq!(paths(&refused), expected);
    let latest = h.get("/api/v1/pipelinetemplates/tempo", &shop).await;
    assert_eq!(latest.json()["generation"], 1, "nothing changed");

    // A change every follower survives goes through and moves only the followers.
    let mut optional = region;
    optional["required"] = json!(false);
    optional["default"] = json!("eu");
    let accepted = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "10s", optional),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    assert_eq!(
        accepted.json()["rerendered"],
        json!(["a-traces", "b-traces"])
    );
    let listed = h.get("/api/v1/pipelineinstances", &shop).await.json();
    let generations: Vec<(String, i64)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["templateGeneration"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        generations,
        [
            ("a-traces".into(), 2),
            ("b-traces".into(), 2),
            ("c-traces".into(), 1)
        ]
    );
    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/pipelinetemplates/tempo",
            Some(&shop),
            None,
        )
        .await;
    assert_eq!(
        deleted.status,
        StatusCode::CONFLICT,
        "bound: {}",
        deleted.text
    );
}

/// A tenant reaches its own templates and the provider's, never another tenant's;
/// provider templates are read-only; an instance's pipeline is changed only through
/// the instance.
#[tokio::test]
async fn tenants_reach_their_own_templates_and_the_providers_only() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let bank = h.tenant_with_token("bank").await;
    let bundled = provider_templates(None, &tenant_policy()).expect("bundled templates");
    let context = kaas_pipeline::ValidationContext::observer(tenant_policy());
    for (name, result) in h.store.sync_provider_templates(bundled, &context).await {
        assert!(result.is_ok(), "{name}: {result:?}");
    }
    let created = put(
        &h,
        &shop,
        "/api/v1/pipelinetemplates/tempo",
        template("tempo", "10s", Value::Null),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let theirs = h.get("/api/v1/pipelinetemplates/tempo", &bank).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
    let bound = put(
        &h,
        &bank,
        "/api/v1/pipelineinstances/traces",
        instance("traces", "tempo"),
    )
    .await;
    assert_eq!(paths(&bound), ["spec.template.name"]);
    let other = h.get("/api/v1/pipelinetemplates?tenant=shop", &bank).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    let listed = h.get("/api/v1/pipelinetemplates", &bank).await.json();
    let names: Vec<(&str, bool)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["provider"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("elasticsearch-dedot", true),
            ("grafana-cloud-remote-write", true),
            ("otlp-oauth2", true)
        ]
    );
    let all = h.get("/api/v1/pipelinetemplates", ADMIN).await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 4);

    // The provider's templates: bound by any tenant, changed by none.
    let shared = h.get("/api/v1/pipelinetemplates/otlp-oauth2", &shop).await;
    assert_eq!(shared.json()["provider"], true, "{}", shared.text);
    let mut own = shared.json()["resource"].clone();
    own["spec"]["description"] = json!("mine now");
    let taken = put(&h, &shop, "/api/v1/pipelinetemplates/otlp-oauth2", own).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    let delete = h
        .call(
            Method::DELETE,
            "/api/v1/pipelinetemplates/otlp-oauth2",
            Some(&shop),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN, "{}", delete.text);
    let rollback = h
        .call(
            Method::POST,
            "/api/v1/pipelinetemplates/otlp-oauth2/rollback",
            Some(&shop),
            Some(json!({ "generation": 1 })),
        )
        .await;
    assert_eq!(rollback.status, StatusCode::FORBIDDEN, "{}", rollback.text);
    let example: Value = serde_yaml::from_str(&api_harness::repo_file(
        "examples/templates/instances/shop-traces.yaml",
    ))
    .unwrap();
    let bound = put(&h, &bank, "/api/v1/pipelineinstances/shop-traces", example).await;
    assert_eq!(bound.status, StatusCode::CREATED, "{}", bound.text);

    // The rendered pipeline is the instance's.
    let read = h.get("/api/v1/tracepipelines/shop-traces", &bank).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let overwritten = put(
        &h,
        &bank,
        "/api/v1/tracepipelines/shop-traces",
        read.json()["resource"].clone(),
    )
    .await;
    assert_eq!(
        overwritten.status,
        StatusCode::CONFLICT,
        "{}",
        overwritten.text
    );
    let deleted = h
        .call(
            Method::DELETE,
            "/api/v1/tracepipelines/shop-traces",
            Some(&bank),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::CONFLICT, "{}", deleted.text);
    let not_theirs = h.get("/api/v1/pipelineinstances/shop-traces", &shop).await;
    assert_eq!(
        not_theirs.status,
        StatusCode::NOT_FOUND,
        "{}",
        not_theirs.text
    );
}

/// A header value written literally in a template is a secret: every answer shows it
/// as `***` (a value holding a placeholder is shown as written), `***` sent back keeps
/// the stored value (the instance still renders with it), and `***` where nothing is
/// stored is refused at its path.
#[tokio::test]
async fn literal_header_values_are_masked_and_kept_through_a_round_trip() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    cluster(&h, &shop, "prod-1", "prod").await;
    let mut written = template("tempo", "10s", Value::Null);
    let headers = &mut written["spec"]["template"]["spec"]["output"]["otlp"]["headers"];
    (headers.as_array_mut().expect("a list"))
        .push(json!({ "name": "X-Api-Key", "value": "SECRET-literal-key" }));
    let uri = "/api/v1/pipelinetemplates/tempo";
    let created = put(&h, &shop, uri, written.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(!created.text.contains("SECRET"), "{}", created.text);
    let shown = h.get(uri, &shop).await;
    assert!(!shown.text.contains("SECRET"), "{}", shown.text);
    let shown = shown.json();
    let spec = &shown["resource"]["spec"]["template"]["spec"];
    assert_eq!(spec["output"]["otlp"]["headers"][0]["value"], "%{tenant}");
    assert_eq!(spec["output"]["otlp"]["headers"][1]["value"], "***");
    let listed = h.get("/api/v1/pipelinetemplates", &shop).await;
    assert!(!listed.text.contains("SECRET"), "{}", listed.text);

    // What was shown, sent back with a longer timeout: the key is kept.
    let mut edited = shown["resource"].clone();
    edited["spec"]["template"]["spec"]["output"]["otlp"]["timeout"] = json!("%{timeout}");
    edited["spec"]["placeholders"][3]["default"] = json!("20s");
    let changed = put(&h, &shop, uri, edited.clone()).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(changed.json()["template"]["generation"], 2);
    let made = put(
        &h,
        &shop,
        "/api/v1/pipelineinstances/traces",
        instance("traces", "tempo"),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let (_, body) = config(&h, "shop", "prod-1").await;
    assert!(
        body.contains("SECRET-literal-key"),
        "the stored key was lost: {body}"
    );
    assert!(!body.contains("\"***\""), "{body}");

    // A `***` where the template stores nothing: refused at its path.
    let headers = &mut edited["spec"]["template"]["spec"]["output"]["otlp"]["headers"];
    (headers.as_array_mut().expect("a list")).push(json!({ "name": "X-New", "value": "***" }));
    let refused = put(&h, &shop, uri, edited).await;
    assert_eq!(
        paths(&refused),
        ["spec.template.spec.output.otlp.headers[2].value"]
    );
    let fresh = put(&h, &shop, "/api/v1/pipelinetemplates/other", {
        let mut other = written;
        other["metadata"]["name"] = json!("other");
        let headers = &mut other["spec"]["template"]["spec"]["output"]["otlp"]["headers"];
        headers[1]["value"] = json!("***");
        other
    })
    .await;
    assert_eq!(
        paths(&fresh),
        ["spec.template.spec.output.otlp.headers[1].value"]
    );
}
