//! The tenancy boundary through the REST API (`app(state)` on a real store, temporary
//! SQLite, requests through `oneshot`) and the command line: reserved label prefixes,
//! the admin-only Cluster API namespace mapping, the admin-only audit trail, refusals
//! counted by reason and known tenant, re-keying secrets, and one unreadable pipeline
//! degrading only itself.

mod api_harness;

mod tenancy {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use kaas_observer::api::metrics::ApiMetrics;
    use kaas_observer::control::status_task::{StatusTask, StatusWork};
    use kaas_observer::rendering::TenantPipelines;
    use kaas_observer::secrets::SecretBox;
    use kaas_observer::store::Store;
    use kaas_test_support::process::{CommandOutput, run};
    use prometheus_client::registry::Registry;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::api_harness::{ADMIN, Answer, Harness, pipeline, pipeline_with_secrets};

    const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

    fn field_paths(answer: &Answer) -> Vec<String> {
        answer.json()["fields"]
            .as_array()
            .expect("as the test set it up")
            .iter()
            .map(|f| {
                f["path"]
                    .as_str()
                    .expect("as the test set it up")
                    .to_owned()
            })
            .collect()
    }

    fn field_message(answer: &Answer, path: &str) -> String {
        answer.json()["fields"]
            .as_array()
            .expect("as the test set it up")
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no field {path}: {}", answer.text))["message"]
            .as_str()
            .expect("as the test set it up")
            .to_owned()
    }

    /// Issue 13, finding 1: `POST /api/v1/clusters` accepted the observer's own labels
    /// (`kaas-observer.io/source=cluster-api`, `kaas-observer.io/cluster-api-namespace=
    /// <another tenant's namespace>`) with 201, which is how a tenant planted a record
    /// the Cluster API source then adopted. Every key under `kaas-observer.io` is
    /// refused now: 422 naming the key's field path and the reserved prefix, and
    /// nothing is stored. Admin tokens are refused the same way.
    #[tokio::test]
    async fn the_observers_own_labels_are_refused_on_cluster_create() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let body = json!({
            "name": "prod-1",
            "labels": {
                "kaas-observer.io/source": "cluster-api",
                "kaas-observer.io/cluster-api-namespace": "bank",
                "telemetry.kaas-observer.io/cluster": "prod-1",
                "env": "prod",
            },
        });
        for (token, body) in [
            (shop.as_str(), body.clone()),
            (ADMIN, {
                let mut body = body.clone();
                body["tenant"] = json!("shop");
                body
            }),
        ] {
            let answer = h
                .call(Method::POST, "/api/v1/clusters", Some(token), Some(body))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                answer.text
            );
            assert_eq!(
                field_paths(&answer),
                [
                    r#"labels["kaas-observer.io/cluster-api-namespace"]"#,
                    r#"labels["kaas-observer.io/source"]"#,
                    r#"labels["telemetry.kaas-observer.io/cluster"]"#,
                ]
            );
            assert!(
                field_message(&answer, r#"labels["kaas-observer.io/source"]"#)
                    .contains(r#"the prefix "kaas-observer.io/" is reserved"#),
                "{}",
                answer.text
            );
            assert!(
                field_message(&answer, r#"labels["telemetry.kaas-observer.io/cluster"]"#)
                    .contains(r#"the prefix "telemetry.kaas-observer.io/" is reserved"#),
                "{}",
                answer.text
            );
        }
        assert!(h.store.list_clusters(None).await.unwrap().is_empty());
        let fine = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(json!({"name": "prod-1", "labels": {"example.com/team": "a"}})),
            )
            .await;
        assert_eq!(fine.status, StatusCode::CREATED, "{}", fine.text);
    }

    /// Only an administrator maps Cluster API namespaces to tenants (issue 13, finding
    /// 1: the tenant of a `Cluster` is no longer read from a label anyone could set);
    /// every change is audited.
    #[tokio::test]
    async fn namespace_mappings_are_admin_only_and_audited() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        h.tenant_with_token("bank").await;
        let path = "/api/v1/cluster-api/namespaces/shop-clusters";
        for (method, uri, body) in [
            (Method::GET, "/api/v1/cluster-api/namespaces", None),
            (Method::PUT, path, Some(json!({"tenant": "shop"}))),
            (Method::DELETE, path, None),
        ] {
            let answer = h.call(method.clone(), uri, Some(&shop), body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri}");
        }
        let map = |tenant: &str| {
            let h = &h;
            let body = json!({ "tenant": tenant });
            async move { h.call(Method::PUT, path, Some(ADMIN), Some(body)).await }
        };
        assert_eq!(map("shop").await.status, StatusCode::CREATED);
        assert_eq!(map("shop").await.status, StatusCode::OK);
        let moved = map("bank").await;
        assert_eq!(moved.status, StatusCode::CONFLICT, "{}", moved.text);
        assert_eq!(map("nobody").await.status, StatusCode::NOT_FOUND);
        let invalid = h
            .call(
                Method::PUT,
                "/api/v1/cluster-api/namespaces/Not_A_Namespace",
                Some(ADMIN),
                Some(json!({"tenant": "Bad Tenant"})),
            )
            .await;
        assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_paths(&invalid), ["namespace", "tenant"]);
        let list = h.get("/api/v1/cluster-api/namespaces", ADMIN).await.json();
        assert_eq!(list["items"][0]["namespace"], "shop-clusters");
        assert_eq!(list["items"][0]["tenant"], "shop");
        let deleted = h.call(Method::DELETE, path, Some(ADMIN), None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = h.call(Method::DELETE, path, Some(ADMIN), None).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);

        let trail = h
            .get("/api/v1/audit?actor=admin&tenant=shop", ADMIN)
            .await
            .json();
        let actions: Vec<(&str, &str)> = trail["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "cluster-api-namespace")
            .map(|e| (e["action"].as_str().unwrap(), e["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            [("unmap", "shop-clusters"), ("map", "shop-clusters")]
        );
    }

    /// The audit trail is read by administrators only, in bounded pages, filtered.
    #[tokio::test]
    async fn the_audit_trail_is_for_admins_in_bounded_filtered_pages() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        h.tenant_with_token("bank").await;
        for name in ["a", "b", "c"] {
            let created = h
                .call(
                    Method::POST,
                    "/api/v1/clusters",
                    Some(&shop),
                    Some(json!({ "name": name })),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED);
        }
        let refused = h.get("/api/v1/audit", &shop).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
        let refused = h.get("/api/v1/audit?tenant=shop", &shop).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "not even its own");

        let mut names = Vec::new();
        let mut uri = "/api/v1/audit?actor=tenant:shop&limit=2".to_owned();
        let mut pages = 0;
        loop {
            let page = h.get(&uri, ADMIN).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            let page = page.json();
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            for item in items {
                assert_eq!(item["actor"], "tenant:shop");
                names.push(format!(
                    "{}/{}",
                    item["kind"].as_str().unwrap(),
                    item["name"].as_str().unwrap()
                ));
            }
            pages += 1;
            match page["continue"].as_str() {
                Some(token) => {
                    uri = format!("/api/v1/audit?actor=tenant:shop&limit=2&continue={token}")
                }
                None => break,
            }
        }
        let whole = h
            .get("/api/v1/audit?actor=tenant:shop&limit=1000", ADMIN)
            .await
            .json();
        let whole: Vec<String> = whole["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                format!(
                    "{}/{}",
                    item["kind"].as_str().unwrap(),
                    item["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(names, whole, "the pages, end to end, are the whole trail");
        assert_eq!(pages, whole.len().div_ceil(2));
        let clusters: Vec<&String> = names.iter().filter(|n| n.starts_with("cluster/")).collect();
        assert_eq!(
            clusters,
            ["cluster/shop.c", "cluster/shop.b", "cluster/shop.a"]
        );

        let bank = h.get("/api/v1/audit?tenant=bank", ADMIN).await.json();
        assert!(
            bank["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["tenant"] == "bank"),
            "{bank}"
        );
        let future = h
            .get("/api/v1/audit?since=9999999999999", ADMIN)
            .await
            .json();
        assert_eq!(future["items"], json!([]));
        for bad in [
            "/api/v1/audit?limit=0",
            "/api/v1/audit?limit=1001",
            "/api/v1/audit?continue=bm90IGFuIGlk",
            "/api/v1/audit?since=yesterday",
        ] {
            assert_eq!(
                h.get(bad, ADMIN).await.status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    async fn send(
        app: &Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> StatusCode {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("as the test set it up");
        app.clone()
            .oneshot(request)
            .await
            .expect("as the test set it up")
            .status()
    }

    /// Refusals are counted by reason and by the tenant of the token that was refused
    /// (never by anything the request names), for the abuse alert.
    #[tokio::test]
    async fn refusals_are_counted_by_reason_and_known_tenant() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let metrics = ApiMetrics::default();
        let app = metrics.layer(h.app.clone());
        let evil = "kot_guessed-token-with-a-label-injection\"}";
        assert_eq!(
            send(&app, Method::GET, "/api/v1/clusters", None, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::GET, "/api/v1/clusters", Some(evil), None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(
                &app,
                Method::GET,
                "/api/v1/clusters?tenant=attacker-chosen-name",
                Some(&shop),
                None
            )
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(&app, Method::GET, "/api/v1/audit", Some(&shop), None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(
                &app,
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(json!({"name": "x", "labels": {"kaas-observer.io/source": "cluster-api"}}))
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            send(&app, Method::GET, "/api/v1/clusters", Some(&shop), None).await,
            StatusCode::OK
        );

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for expected in [
            r#"kaas_observer_api_refusals_total{reason="unauthorized",tenant=""} 2"#,
            r#"kaas_observer_api_refusals_total{reason="forbidden",tenant="shop"} 2"#,
            r#"kaas_observer_api_refusals_total{reason="invalid",tenant="shop"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected}\n{text}");
        }
        let refusals = text
            .lines()
            .filter(|l| l.starts_with("kaas_observer_api_refusals_total{"))
            .count();
        assert_eq!(refusals, 3, "{text}");
        assert!(!text.contains("attacker-chosen-name") && !text.contains("guessed-token"));
    }

    /// Issue 13, finding 10: one pipeline row the observer cannot decrypt broke every
    /// render of its tenant's clusters and the admin status (500). Now the render
    /// carries the tenant's other pipelines, the status and the lists work, and the
    /// pipeline's condition says why (`StoredSpecUnreadable`).
    #[tokio::test]
    async fn one_undecryptable_pipeline_degrades_only_itself() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let good = h
            .call(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(pipeline_with_secrets("good")),
            )
            .await;
        assert_eq!(good.status, StatusCode::CREATED, "{}", good.text);
        // Written by an observer with another secrets key: this one cannot open it.
        let foreign = Store::open_sqlite(
            &h.dir.path().join("observer.db"),
            SecretBox::generate().unwrap(),
        )
        .await
        .unwrap();
        let bad: kaas_pipeline::MetricPipeline =
            serde_json::from_value(pipeline_with_secrets("bad")).unwrap();
        foreign
            .apply_pipeline(
                "shop",
                kaas_pipeline::validate(&bad, &kaas_pipeline::ValidationContext::tenant_default())
                    .unwrap(),
                &kaas_observer::store::Actor::admin(),
            )
            .await
            .unwrap();
        let created = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(json!({"name": "c1"})),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);

        let status = h.get("/api/v1/status", ADMIN).await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.text);
        assert_eq!(status.json()["pipelines"], 2);
        let list = h.get("/api/v1/pipelines", &shop).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        let names: Vec<String> = list.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["bad", "good"]);
        assert!(
            !list.text.contains("SECRET-") && !list.text.contains("enc:"),
            "{}",
            list.text
        );

        let cache = Arc::new(TenantPipelines::default());
        let configs = cache.get(&h.store, "shop").await.unwrap();
        let cluster = h.store.get_cluster("shop.c1").await.unwrap().unwrap();
        let rendered = String::from_utf8(configs.render(&cluster).body).unwrap();
        assert!(rendered.contains("\"good\""), "{rendered}");
        assert!(!rendered.contains("\"bad\""), "{rendered}");

        StatusTask::new(h.store.clone(), cache)
            .update(BTreeSet::from([StatusWork::Tenant("shop".into())]))
            .await
            .unwrap();
        let bad_status = h.get("/api/v1/pipelines/bad/status", &shop).await;
        assert_eq!(bad_status.status, StatusCode::OK, "{}", bad_status.text);
        let condition = &bad_status.json()["status"]["conditions"][0];
        assert_eq!(condition["type"], "ConfigurationApplied");
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "StoredSpecUnreadable");
        let message = condition["message"].as_str().unwrap();
        assert!(
            message.contains("spec.output.prometheusRemoteWrite"),
            "{message}"
        );
        assert!(!message.contains("SECRET-"), "{message}");
        let good_status = h.get("/api/v1/pipelines/good/status", &shop).await.json();
        assert_ne!(
            good_status["status"]["conditions"][0]["reason"],
            "StoredSpecUnreadable"
        );

        // The tenant repairs it by applying it again with its secret values.
        let repaired = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/bad",
                Some(&shop),
                Some(pipeline_with_secrets("bad")),
            )
            .await;
        assert_eq!(repaired.status, StatusCode::OK, "{}", repaired.text);
        cache_free_render_has(&h, "bad").await;
    }

    async fn cache_free_render_has(h: &Harness, name: &str) {
        let configs = TenantPipelines::default()
            .get(&h.store, "shop")
            .await
            .expect("as the test set it up");
        let names: Vec<&str> = configs.pipelines().iter().map(|p| p.name()).collect();
        assert!(names.contains(&name), "{names:?}");
    }

    /// Re-keying is for administrators; it seals every stored value with the current key.
    #[tokio::test]
    async fn rekeying_is_admin_only() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(pipeline_with_secrets("p1")),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let refused = h
            .call(Method::POST, "/api/v1/secrets/rekey", Some(&shop), None)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let done = h
            .call(Method::POST, "/api/v1/secrets/rekey", Some(ADMIN), None)
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text);
        let report = done.json();
        assert_eq!(report["pipelinesCurrent"], 1, "{report}");
        assert_eq!(report["pipelinesRekeyed"], 0, "{report}");
        assert_eq!(report["unreadable"], json!([]));
    }

    async fn observer(h: &Harness, token: &str, args: &[&str]) -> CommandOutput {
        let address = h.serve().await;
        let mut all: Vec<String> = vec![
            "--server".into(),
            format!("http://{address}"),
            "--token".into(),
            token.into(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            run(OBSERVER, &args, "")
        })
        .await
        .expect("as the test set it up")
    }

    /// The command line of the tenancy administration: mapping, audit, rekey.
    #[tokio::test]
    async fn the_cli_maps_namespaces_reads_the_audit_trail_and_rekeys() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let mapped = observer(
            &h,
            ADMIN,
            &["cluster-api", "map", "shop-ns", "--tenant", "shop"],
        )
        .await;
        assert_eq!(mapped.code(), 0, "{}", mapped.stderr);
        assert!(
            mapped
                .stdout
                .contains("namespace shop-ns mapped to tenant shop"),
            "{}",
            mapped.stdout
        );
        let listed = observer(&h, ADMIN, &["cluster-api", "list"]).await;
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.starts_with("shop-ns") && l.contains("shop")),
            "{}",
            listed.stdout
        );
        let refused = observer(&h, &shop, &["cluster-api", "map", "x", "--tenant", "shop"]).await;
        assert_eq!(refused.code(), 1);
        assert!(refused.stderr.contains("403"), "{}", refused.stderr);

        let audit = observer(
            &h,
            ADMIN,
            &["audit", "--tenant", "shop", "--since", "1h", "-o", "json"],
        )
        .await;
        assert_eq!(audit.code(), 0, "{}", audit.stderr);
        let page: Value = serde_json::from_str(&audit.stdout).unwrap();
        assert!(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "map" && e["name"] == "shop-ns"),
            "{page}"
        );
        let table = observer(&h, ADMIN, &["audit", "--limit", "1"]).await;
        assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
        assert!(
            table.stdout.contains("older entries follow: --continue "),
            "{}",
            table.stdout
        );

        let created = h
            .call(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(pipeline("p1", "https://a.example/w")),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let rekeyed = observer(&h, ADMIN, &["secrets", "rekey"]).await;
        assert_eq!(rekeyed.code(), 0, "{}", rekeyed.stderr);
        assert!(
            rekeyed.stdout.contains("sealed again with key"),
            "{}",
            rekeyed.stdout
        );
    }
}
