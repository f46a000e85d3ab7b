//! The REST API through `app(state)` on a real store (temporary SQLite): authentication
//! and tenant isolation, tenants, tokens, clusters with their join tokens and manifests,
//! pipelines with validation, generations, dry runs and secret masking, error bodies,
//! and one round trip over a real socket.

mod api_harness;

mod api {
    use axum::http::{Method, StatusCode, header};
    use kaas_observer::store::certificates::JoinTokenCheck;
    use kaas_observer::store::{
        Actor, ClusterState, ConfigErrorRecord, ConfigReport, HeldDeletion, ReportWrite,
    };
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::api_harness::{
        ADMIN, CONTROL_ENDPOINT, Harness, pipeline, pipeline_with_secrets, repo_file,
    };

    const URL_A: &str = "https://a.example/write";
    const URL_B: &str = "https://b.example/write";

    #[tokio::test]
    async fn no_token_is_refused_with_401() {
        let h = Harness::new().await;
        let answer = h.call(Method::GET, "/api/v1/clusters", None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        assert!(answer.json()["error"].as_str().unwrap().contains("token"));
    }

    #[tokio::test]
    async fn clusters_are_listed_in_pages_with_their_reports() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        for (name, token) in [("a1", &shop), ("b1", &bank), ("a2", &shop), ("a3", &shop)] {
            let created = h
                .call(
                    Method::POST,
                    "/api/v1/clusters",
                    Some(token),
                    Some(json!({ "name": name })),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        }
        h.store
            .report(ReportWrite::Seen {
                cluster: String::from("shop.a2"),
                instance_id: String::from("agent-1"),
                version: String::from("test"),
                at_ms: 1,
                connection: Some(String::from("r/1")),
            })
            .await
            .unwrap();
        h.store
            .report(ReportWrite::Health {
                cluster: String::from("shop.a2"),
                health: json!({ "pipelines": [] }),
                at_ms: 1,
            })
            .await
            .unwrap();
        let names = |list: &Value| -> Vec<String> {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let get = |uri: String, token: String| {
            let h = &h;
            async move { h.get(&uri, &token).await }
        };

        // Without a limit: everything the caller may see, no `continue`.
        let all = get("/api/v1/clusters".into(), shop.clone()).await.json();
        assert_eq!(names(&all), ["a1", "a2", "a3"]);
        assert!(all.get("continue").is_none(), "{all}");
        assert_eq!(all["items"][1]["connected"], true);
        assert_eq!(all["items"][1]["health"], json!({ "pipelines": [] }));

        // Pages of two: `continue` leads to the rest, and the last page has none.
        let first = get("/api/v1/clusters?limit=2".into(), shop.clone())
            .await
            .json();
        assert_eq!(names(&first), ["a1", "a2"]);
        let token = first["continue"].as_str().unwrap().to_owned();
        let rest = get(
            format!("/api/v1/clusters?limit=2&continue={token}"),
            shop.clone(),
        )
        .await
        .json();
        assert_eq!(names(&rest), ["a3"]);
        assert!(rest.get("continue").is_none(), "{rest}");
        // A page that ends exactly at the last cluster says so.
        let exact = get("/api/v1/clusters?limit=3".into(), shop.clone())
            .await
            .json();
        assert_eq!(names(&exact), ["a1", "a2", "a3"]);
        assert!(exact.get("continue").is_none(), "{exact}");
        // The admin pages through every tenant, by global id (`<tenant>.<name>`).
        let admin = get("/api/v1/clusters?limit=3".into(), ADMIN.to_owned())
            .await
            .json();
        assert_eq!(names(&admin), ["b1", "a1", "a2"]);
        let token = admin["continue"].as_str().unwrap().to_owned();
        let admin = get(
            format!("/api/v1/clusters?limit=3&continue={token}"),
            ADMIN.to_owned(),
        )
        .await
        .json();
        assert_eq!(names(&admin), ["a3"]);

        for uri in [
            "/api/v1/clusters?limit=0",
            "/api/v1/clusters?limit=1001",
            "/api/v1/clusters?limit=many",
            "/api/v1/clusters?continue=%25%25",
        ] {
            let answer = get(uri.into(), shop.clone()).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{uri}: {}",
                answer.text
            );
            let message = answer.json()["error"].as_str().unwrap().to_owned();
            assert!(
                message.contains("limit") || message.contains("continue"),
                "{uri}: {message}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_token_is_refused_with_401() {
        let h = Harness::new().await;
        for uri in ["/api/v1/clusters", "/api/v1/pipelines", "/api/v1/status"] {
            let answer = h.get(uri, "not-a-token").await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{uri}");
        }
        let answer = h.raw(Method::GET, "/api/v1/tenants", None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn health_and_openapi_need_no_token() {
        let h = Harness::new().await;
        assert_eq!(
            h.call(Method::GET, "/healthz", None, None).await.status,
            StatusCode::OK
        );
        assert_eq!(
            h.call(Method::GET, "/readyz", None, None).await.status,
            StatusCode::OK
        );
        let document = h
            .call(Method::GET, "/openapi.json", None, None)
            .await
            .json();
        assert_eq!(document["openapi"], "3.0.3");
        assert!(document["components"]["schemas"]["MetricPipeline"].is_object());
    }

    /// The longest tenant and cluster names give a global id of 127 characters, over
    /// the 63 a Kubernetes label value may hold: the install manifest still labels
    /// every object with a valid value (the name the tenant knows), so it applies.
    #[tokio::test]
    async fn install_manifests_of_the_longest_names_carry_valid_label_values() {
        let h = Harness::new().await;
        let tenant = format!("t{}", "e".repeat(62));
        let name = format!("c{}", "l".repeat(62));
        let token = h.tenant_with_token(&tenant).await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&token),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let json = created.json();
        assert_eq!(json["cluster"]["id"], format!("{tenant}.{name}"));
        let manifest = json["manifest"].as_str().unwrap();
        let mut labelled = 0;
        for document in serde_yaml::Deserializer::from_str(manifest) {
            let document = serde_yaml::Value::deserialize(document).unwrap();
            for labels in [
                &document["metadata"]["labels"],
                &document["spec"]["template"]["metadata"]["labels"],
            ] {
                let Some(labels) = labels.as_mapping() else {
                    continue;
                };
                for value in labels.values() {
                    let value = value.as_str().unwrap();
                    assert!(value.len() <= 63, "label value {value:?} is too long");
                    labelled += 1;
                }
            }
        }
        assert!(labelled > 10, "{manifest}");
    }

    /// Issue 13, finding 8 (names): cluster names are unique per tenant, so a second
    /// tenant can create `prod` while another holds it (on 552c13e: 409 "already
    /// exists", which told the tenant that someone else has a `prod`); the two get
    /// different global ids, and neither can reach the other's.
    #[tokio::test]
    async fn two_tenants_each_have_their_own_prod_and_learn_nothing_of_the_other() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        let create = |token: String| {
            let h = &h;
            async move {
                h.call(
                    Method::POST,
                    "/api/v1/clusters",
                    Some(&token),
                    Some(json!({ "name": "prod" })),
                )
                .await
            }
        };
        let shops = create(shop.clone()).await;
        assert_eq!(shops.status, StatusCode::CREATED, "{}", shops.text);
        let banks = create(bank.clone()).await;
        assert_eq!(banks.status, StatusCode::CREATED, "{}", banks.text);
        let (shops, banks) = (shops.json(), banks.json());
        assert_eq!(shops["cluster"]["name"], "prod");
        assert_eq!(banks["cluster"]["name"], "prod");
        assert_eq!(shops["cluster"]["id"], "shop.prod");
        assert_eq!(banks["cluster"]["id"], "bank.prod");
        // The install manifests label their objects with the name the tenant knows
        // (the agent's certificate, issued at join, names the global id).
        assert!(
            banks["manifest"]
                .as_str()
                .unwrap()
                .contains("telemetry.kaas-observer.io/cluster: prod")
        );
        // Within one tenant the name stays unique: that answer is about its own.
        let again = create(bank.clone()).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

        // Each tenant reads, mints for and deletes its own `prod`.
        let read = h.get("/api/v1/clusters/prod", &bank).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.json()["id"], "bank.prod");
        let deleted = h
            .call(Method::DELETE, "/api/v1/clusters/prod", Some(&bank), None)
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let shops_prod = h.store.get_cluster("shop.prod").await.unwrap().unwrap();
        assert_eq!(shops_prod.state.to_string(), "provisioning");
        // A tenant cannot reach a cluster by another tenant's global id either: the
        // answer is the one for an id nobody has.
        let taken = h.get("/api/v1/clusters/shop.prod", &bank).await;
        let free = h.get("/api/v1/clusters/nobody.prod", &bank).await;
        assert_eq!(taken.status, StatusCode::NOT_FOUND, "{}", taken.text);
        assert_eq!(
            taken.text.replace("shop.prod", "X"),
            free.text.replace("nobody.prod", "X")
        );
        let named = h.get("/api/v1/clusters/prod?tenant=shop", &bank).await;
        assert_eq!(named.status, StatusCode::FORBIDDEN, "{}", named.text);
    }

    #[tokio::test]
    async fn tenant_tokens_cannot_see_or_change_other_tenants_objects() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&bank),
                Some(json!({ "name": "bank-prod" })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let put = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/payments",
                Some(&bank),
                Some(pipeline("payments", URL_A)),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);

        // Lists hold only the caller's own objects.
        let clusters = h.get("/api/v1/clusters", &shop).await.json();
        assert_eq!(clusters["items"], json!([]));
        let pipelines = h.get("/api/v1/pipelines", &shop).await.json();
        assert_eq!(pipelines["items"], json!([]));
        // Another tenant's objects answer 404, as if they did not exist.
        for (method, uri) in [
            (Method::GET, "/api/v1/clusters/bank-prod"),
            (Method::DELETE, "/api/v1/clusters/bank-prod"),
            (Method::POST, "/api/v1/clusters/bank-prod/join-token"),
            (Method::GET, "/api/v1/pipelines/payments"),
            (Method::GET, "/api/v1/pipelines/payments/status"),
            (Method::DELETE, "/api/v1/pipelines/payments"),
        ] {
            let answer = h.call(method.clone(), uri, Some(&shop), None).await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "{method} {uri}: {}",
                answer.text
            );
        }
        // Naming the other tenant explicitly is forbidden.
        for (method, uri) in [
            (Method::GET, "/api/v1/clusters?tenant=bank"),
            (Method::GET, "/api/v1/pipelines?tenant=bank"),
            (Method::GET, "/api/v1/pipelines/payments?tenant=bank"),
            (Method::DELETE, "/api/v1/pipelines/payments?tenant=bank"),
        ] {
            let answer = h.call(method.clone(), uri, Some(&shop), None).await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{method} {uri}: {}",
                answer.text
            );
        }
        let answer = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/payments?tenant=bank",
                Some(&shop),
                Some(pipeline("payments", URL_B)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        let answer = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(json!({ "name": "x", "tenant": "bank" })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        // Nothing of bank changed.
        let stored = h
            .store
            .get_pipeline("bank", "payments")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.generation, 1);
        let cluster = h
            .store
            .get_cluster("bank.bank-prod")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cluster.state.to_string(), "provisioning");
        // Admin-only routes are refused to tenants.
        let answer = h.get("/api/v1/tenants", &shop).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);

        // The admin sees everything.
        let clusters = h.get("/api/v1/clusters", ADMIN).await.json();
        assert_eq!(clusters["items"][0]["name"], "bank-prod");
        assert_eq!(clusters["items"][0]["id"], "bank.bank-prod");
        // An admin names a cluster by tenant and name, or by its global id.
        for uri in [
            "/api/v1/clusters/bank-prod?tenant=bank",
            "/api/v1/clusters/bank.bank-prod",
        ] {
            let one = h.get(uri, ADMIN).await;
            assert_eq!(one.status, StatusCode::OK, "{uri}: {}", one.text);
            assert_eq!(one.json()["id"], "bank.bank-prod");
        }
        let one = h.get("/api/v1/pipelines/payments?tenant=bank", ADMIN).await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        let all = h.get("/api/v1/pipelines", ADMIN).await.json();
        assert_eq!(all["items"].as_array().unwrap().len(), 1);
        let answer = h.get("/api/v1/pipelines/payments", ADMIN).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "an admin must name the tenant"
        );
    }

    #[tokio::test]
    async fn tenants_are_created_listed_read_and_deleted_by_admins() {
        let h = Harness::new().await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(json!({ "name": "shop" })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(created.json()["name"], "shop");
        let again = h
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(json!({ "name": "shop" })),
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        let bad = h
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(json!({ "name": "Not_A_Label" })),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.json()["fields"][0]["path"], "name");
        let unknown_field = h
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(json!({ "name": "x", "size": 3 })),
            )
            .await;
        assert_eq!(
            unknown_field.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            unknown_field.text
        );
        let malformed = h
            .raw(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(("application/json", "{".into())),
            )
            .await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

        let list = h.get("/api/v1/tenants", ADMIN).await.json();
        assert_eq!(list["items"][0]["name"], "shop");
        let one = h.get("/api/v1/tenants/shop", ADMIN).await;
        assert_eq!(one.status, StatusCode::OK);
        let missing = h.get("/api/v1/tenants/none", ADMIN).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);

        // A tenant with a cluster cannot be deleted.
        let cluster = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(ADMIN),
                Some(json!({ "name": "c1", "tenant": "shop" })),
            )
            .await;
        assert_eq!(cluster.status, StatusCode::CREATED, "{}", cluster.text);
        let refused = h
            .call(Method::DELETE, "/api/v1/tenants/shop", Some(ADMIN), None)
            .await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);

        h.call(
            Method::POST,
            "/api/v1/tenants",
            Some(ADMIN),
            Some(json!({ "name": "empty" })),
        )
        .await;
        let deleted = h
            .call(Method::DELETE, "/api/v1/tenants/empty", Some(ADMIN), None)
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = h.get("/api/v1/tenants/empty", ADMIN).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        let audit = h.store.audit_entries(100).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.action == "delete" && e.kind == "tenant" && e.actor == "admin")
        );
    }

    #[tokio::test]
    async fn tokens_are_shown_once_and_scoped_to_their_tenant() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        h.tenant_with_token("bank").await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&shop),
                Some(json!({ "name": "ci" })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let created = created.json();
        assert_eq!(created["tenant"], "shop");
        let plaintext = created["token"].as_str().unwrap();
        let status = h.get("/api/v1/status", plaintext).await;
        assert_eq!(status.status, StatusCode::OK);

        let other = h
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&shop),
                Some(json!({ "name": "x", "tenant": "bank" })),
            )
            .await;
        assert_eq!(other.status, StatusCode::FORBIDDEN);
        let list = h.get("/api/v1/tokens", &shop).await;
        assert!(
            !list.text.contains(plaintext),
            "plaintext listed: {}",
            list.text
        );
        let items = list.json()["items"].as_array().unwrap().clone();
        assert!(items.iter().all(|t| t["tenant"] == "shop"), "{items:?}");
        let all = h.get("/api/v1/tokens", ADMIN).await.json();
        let bank_token = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == "bank")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let refused = h
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{bank_token}"),
                Some(&shop),
                None,
            )
            .await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND);

        let id = created["id"].as_str().unwrap();
        let revoked = h
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{id}"),
                Some(&shop),
                None,
            )
            .await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT);
        let status = h.get("/api/v1/status", plaintext).await;
        assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn creating_a_cluster_answers_a_join_token_and_an_install_manifest() {
        let h = Harness::new().await;
        h.tenant_with_token("shop").await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(ADMIN),
                Some(json!({
                    "name": "prod-1", "tenant": "shop",
                    "labels": { "env": "prod" }, "apiEndpoint": "https://k8s.example:6443",
                })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let created = created.json();
        assert_eq!(created["cluster"]["name"], "prod-1");
        assert_eq!(created["cluster"]["state"], "provisioning");
        assert_eq!(created["cluster"]["labels"]["env"], "prod");
        let join_token = created["joinToken"].as_str().unwrap();
        assert!(!join_token.is_empty());
        assert!(created["joinTokenExpiresAtMs"].as_i64().unwrap() > kaas_observer::store::now_ms());
        let manifest = created["manifest"].as_str().unwrap();
        assert!(manifest.contains(CONTROL_ENDPOINT), "{manifest}");
        let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(manifest)
            .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
            .collect();
        assert!(documents.len() >= 4, "{manifest}");
        let secret = documents
            .iter()
            .find(|d| d["kind"] == "Secret")
            .expect("a Secret");
        assert_eq!(
            secret["stringData"]["join-token"].as_str(),
            Some(join_token)
        );
        assert!(documents.iter().any(|d| d["kind"] == "Deployment"));
        let redeemable = h
            .store
            .check_join_token(join_token, "csr", kaas_observer::store::now_ms())
            .await
            .unwrap();
        let JoinTokenCheck::Redeemable(cluster) = redeemable else {
            panic!("{redeemable:?}");
        };
        assert_eq!(cluster.name, "prod-1");

        // Invalid requests list every field.
        let bad = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(ADMIN),
                Some(json!({ "name": "Bad Name", "labels": { "bad key!": "v" }, "apiEndpoint": "nope" })),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        let paths: Vec<String> = bad.json()["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect();
        for path in ["name", "labels[\"bad key!\"]", "apiEndpoint", "tenant"] {
            assert!(
                paths.iter().any(|p| p == path),
                "{path} missing from {paths:?}"
            );
        }
        let duplicate = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(ADMIN),
                Some(json!({ "name": "prod-1", "tenant": "shop" })),
            )
            .await;
        assert_eq!(duplicate.status, StatusCode::CONFLICT);
        let no_tenant = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(ADMIN),
                Some(json!({ "name": "c2", "tenant": "ghost" })),
            )
            .await;
        assert_eq!(no_tenant.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn clusters_are_listed_read_given_new_join_tokens_and_deleted() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let created = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(json!({ "name": "c1" })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(created.json()["cluster"]["tenant"], "shop");
        let first_token = created.json()["joinToken"].as_str().unwrap().to_owned();
        h.store
            .report(ReportWrite::Config {
                cluster: String::from("shop.c1"),
                report: ConfigReport {
                    config_hash: "abc".into(),
                    state: kaas_pipeline::status::AgentConfigState::Failed,
                    errors: vec![ConfigErrorRecord {
                        pipeline: "p".into(),
                        field_path: "spec.output".into(),
                        message: "bad".into(),
                    }],
                    running_config_hash: "000".into(),
                    at_ms: 1,
                    without_trace_pipelines: false,
                    without_template_instances: false,
                },
            })
            .await
            .unwrap();
        h.store
            .report(ReportWrite::Health {
                cluster: String::from("shop.c1"),
                health: json!({ "pipelines": { "p": "ok" } }),
                at_ms: 2,
            })
            .await
            .unwrap();
        // The agent connected (which makes a cluster active), and the cluster was set
        // back to provisioning since, as an onboarding source does for one it restores.
        h.store
            .report(ReportWrite::Seen {
                cluster: String::from("shop.c1"),
                instance_id: String::from("agent-1"),
                version: String::from("test"),
                at_ms: 1,
                connection: Some(String::from("test-replica/1")),
            })
            .await
            .unwrap();
        h.store
            .set_cluster_state("shop.c1", ClusterState::Provisioning, 2, &Actor::admin())
            .await
            .unwrap();

        let list = h.get("/api/v1/clusters", &shop).await.json();
        let item = &list["items"][0];
        assert_eq!(item["state"], "provisioning");
        assert_eq!(item["connected"], true);
        assert_eq!(item["health"]["pipelines"]["p"], "ok");
        let one = h.get("/api/v1/clusters/c1", &shop).await.json();
        assert_eq!(one["config"]["state"], "FAILED");
        assert_eq!(one["config"]["errors"][0]["fieldPath"], "spec.output");

        let minted = h
            .call(
                Method::POST,
                "/api/v1/clusters/c1/join-token",
                Some(&shop),
                None,
            )
            .await;
        assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text);
        let minted = minted.json();
        assert_ne!(minted["joinToken"].as_str().unwrap(), first_token);
        assert!(
            minted["manifest"]
                .as_str()
                .unwrap()
                .contains(CONTROL_ENDPOINT)
        );

        let deleted = h
            .call(Method::DELETE, "/api/v1/clusters/c1", Some(&shop), None)
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let tombstone = h.get("/api/v1/clusters/c1", &shop).await.json();
        assert_eq!(tombstone["state"], "deleted");
        let again = h
            .call(
                Method::POST,
                "/api/v1/clusters/c1/join-token",
                Some(&shop),
                None,
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        let missing = h.get("/api/v1/clusters/nope", &shop).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pipelines_are_created_updated_read_listed_and_deleted_with_generations() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let uri = "/api/v1/pipelines/metrics";
        let created = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", URL_A)),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let created = created.json();
        assert_eq!(created["result"], "created");
        assert_eq!(created["dryRun"], false);
        assert_eq!(created["pipeline"]["generation"], 1);
        assert_eq!(created["pipeline"]["tenant"], "shop");
        assert_eq!(created["pipeline"]["resource"]["metadata"]["generation"], 1);

        let same = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", URL_A)),
            )
            .await;
        assert_eq!(same.status, StatusCode::OK);
        assert_eq!(same.json()["result"], "unchanged");
        assert_eq!(same.json()["pipeline"]["generation"], 1);

        let changed = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", URL_B)),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK);
        assert_eq!(changed.json()["result"], "configured");
        assert_eq!(changed.json()["pipeline"]["generation"], 2);

        // POST takes the name from the body; the name may also be left out of a PUT body.
        let mut body = pipeline("other", URL_A);
        let posted = h
            .call(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(body.clone()),
            )
            .await;
        assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.text);
        body["metadata"] = json!({});
        let unnamed = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/third",
                Some(&shop),
                Some(body.clone()),
            )
            .await;
        assert_eq!(unnamed.status, StatusCode::CREATED, "{}", unnamed.text);
        assert_eq!(unnamed.json()["pipeline"]["name"], "third");
        let mismatch = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("other", URL_A)),
            )
            .await;
        assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(mismatch.json()["fields"][0]["path"], "metadata.name");

        // YAML bodies.
        let yaml = "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
            metadata: {name: from-yaml}\nspec:\n  input: {prometheus: {enabled: true}}\n  \
            output: {otlp: {endpoint: \"https://otlp.example:4317\"}}\n";
        let from_yaml = h
            .raw(
                Method::PUT,
                "/api/v1/pipelines/from-yaml",
                Some(&shop),
                Some(("application/yaml", yaml.into())),
            )
            .await;
        assert_eq!(from_yaml.status, StatusCode::CREATED, "{}", from_yaml.text);
        let xml = h
            .raw(
                Method::PUT,
                "/api/v1/pipelines/x",
                Some(&shop),
                Some(("application/xml", "<x/>".into())),
            )
            .await;
        assert_eq!(xml.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let one = h.get(uri, &shop).await.json();
        assert_eq!(
            one["resource"]["spec"]["output"]["prometheusRemoteWrite"]["url"],
            URL_B
        );
        assert_eq!(one["generation"], 2);
        let list = h.get("/api/v1/pipelines", &shop).await.json();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["from-yaml", "metrics", "other", "third"]);
        let status = h.get("/api/v1/pipelines/metrics/status", &shop).await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.text);
        assert_eq!(status.json()["generation"], 2);

        let deleted = h.call(Method::DELETE, uri, Some(&shop), None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = h.get(uri, &shop).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        let audit = h.store.audit_entries(100).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.kind == "pipeline" && e.action == "delete" && e.actor == "tenant:shop")
        );
        // The admin applies into a named tenant.
        let by_admin = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/adm?tenant=shop",
                Some(ADMIN),
                Some(pipeline("adm", URL_A)),
            )
            .await;
        assert_eq!(by_admin.status, StatusCode::CREATED, "{}", by_admin.text);
        assert!(h.store.get_pipeline("shop", "adm").await.unwrap().is_some());
        let _ = Actor::admin();
    }

    #[tokio::test]
    async fn a_dry_run_answers_without_storing() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let uri = "/api/v1/pipelines/metrics?dryRun=true";
        let answer = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", URL_A)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.json()["result"], "created");
        assert_eq!(answer.json()["dryRun"], true);
        assert!(
            h.store
                .get_pipeline("shop", "metrics")
                .await
                .unwrap()
                .is_none()
        );
        let get = h.get("/api/v1/pipelines/metrics", &shop).await;
        assert_eq!(get.status, StatusCode::NOT_FOUND);

        h.call(
            Method::PUT,
            "/api/v1/pipelines/metrics",
            Some(&shop),
            Some(pipeline("metrics", URL_A)),
        )
        .await;
        let answer = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", URL_B)),
            )
            .await
            .json();
        assert_eq!(answer["result"], "configured");
        assert_eq!(answer["pipeline"]["generation"], 2);
        let stored = h
            .store
            .get_pipeline("shop", "metrics")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.generation, 1);
        let invalid = h
            .call(
                Method::PUT,
                uri,
                Some(&shop),
                Some(pipeline("metrics", "nope")),
            )
            .await;
        assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn an_invalid_pipeline_answers_422_listing_every_field_path() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let yaml = repo_file("pipeline/testdata/bad/many-errors-at-once.yaml");
        let answer = h
            .raw(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(("application/yaml", yaml)),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.text
        );
        let body = answer.json();
        assert_eq!(body["error"], "the pipeline is invalid");
        let paths: Vec<&str> = body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "metadata.name",
                "spec.input.scrapeInterval",
                "spec.processors.relabelConfigs[0].modulus",
                "spec.output.prometheusRemoteWrite.url",
                "spec.buffer.maxAge",
            ]
        );
        assert!(
            body["fields"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| !f["message"].as_str().unwrap().is_empty())
        );
        assert!(h.store.list_pipelines(None).await.unwrap().is_empty());

        // Shape errors carry their path too.
        let mut unknown = pipeline("x", URL_A);
        unknown["spec"]["output"]["prometheusRemoteWrite"]["colour"] = json!("red");
        let answer = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/x",
                Some(&shop),
                Some(unknown),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        let path = answer.json()["fields"][0]["path"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            path.starts_with("spec.output.prometheusRemoteWrite"),
            "{path}"
        );
    }

    #[tokio::test]
    async fn names_reserved_for_the_observers_own_pipelines_are_refused() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let answer = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/kaas-central",
                Some(&shop),
                Some(pipeline("kaas-central", URL_A)),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.text
        );
        let body = answer.json();
        assert_eq!(body["fields"][0]["path"], "metadata.name");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains("reserved"),
            "{body}"
        );
        assert!(h.store.list_pipelines(None).await.unwrap().is_empty());
    }

    /// Every answer that shows a pipeline, and the overview, are searched for the
    /// secret values written.
    #[tokio::test]
    async fn a_secret_written_through_the_api_never_appears_in_an_answer() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let mut bodies = Vec::new();
        let body = pipeline_with_secrets("secret");
        let dry = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret?dryRun=true",
                Some(&shop),
                Some(body.clone()),
            )
            .await;
        assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
        bodies.push(dry.text);
        let created = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret",
                Some(&shop),
                Some(body.clone()),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        bodies.push(created.text);
        let tls = repo_file("pipeline/testdata/good/tls-inline-pem.yaml");
        let created = h
            .raw(
                Method::POST,
                "/api/v1/pipelines",
                Some(&shop),
                Some(("application/yaml", tls)),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        bodies.push(created.text);
        for uri in [
            "/api/v1/pipelines/secret",
            "/api/v1/pipelines/inline-pem",
            "/api/v1/pipelines",
            "/api/v1/pipelines/secret/status",
            "/api/v1/status",
        ] {
            bodies.push(h.get(uri, &shop).await.text);
        }
        bodies.push(h.get("/api/v1/pipelines", ADMIN).await.text);
        let invalid = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret",
                Some(&shop),
                Some({
                    let mut b = body.clone();
                    b["spec"]["output"]["prometheusRemoteWrite"]["url"] = json!("not a url");
                    b
                }),
            )
            .await;
        assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
        bodies.push(invalid.text);
        for body in &bodies {
            assert!(!body.contains("SECRET-"), "a secret leaked: {body}");
            assert!(!body.contains("PRIVATE KEY"), "a key leaked: {body}");
            assert!(!body.contains("MIIBfzCC"), "a certificate leaked: {body}");
        }
        let shown = h.get("/api/v1/pipelines/secret", &shop).await.json();
        let rw = &shown["resource"]["spec"]["output"]["prometheusRemoteWrite"];
        assert_eq!(rw["headers"][0]["value"], "***");
        assert_eq!(rw["authentication"]["basic"]["password"]["value"], "***");
    }

    #[tokio::test]
    async fn masked_values_sent_back_keep_the_stored_secrets() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let created = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret",
                Some(&shop),
                Some(pipeline_with_secrets("secret")),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let shown = h.get("/api/v1/pipelines/secret", &shop).await.json();

        // Applying what GET showed changes nothing.
        let mut resource = shown["resource"].clone();
        let again = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret",
                Some(&shop),
                Some(resource.clone()),
            )
            .await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        assert_eq!(again.json()["result"], "unchanged");

        // Editing another field keeps the secrets (editing where they are sent does not:
        // see api_pipeline_trust.rs).
        resource["spec"]["output"]["prometheusRemoteWrite"]["timeout"] = json!("20s");
        let edited = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/secret",
                Some(&shop),
                Some(resource.clone()),
            )
            .await;
        assert_eq!(edited.json()["result"], "configured", "{}", edited.text);
        let stored = h
            .store
            .get_pipeline("shop", "secret")
            .await
            .unwrap()
            .unwrap();
        let stored = serde_json::to_value(stored.pipeline.resource()).unwrap();
        let rw = &stored["spec"]["output"]["prometheusRemoteWrite"];
        assert_eq!(rw["timeout"], "20s");
        assert_eq!(rw["headers"][0]["value"], "SECRET-header-1");
        assert_eq!(
            rw["authentication"]["basic"]["user"]["value"],
            "SECRET-user-2"
        );
        assert_eq!(
            rw["authentication"]["basic"]["password"]["value"],
            "SECRET-password-3"
        );

        // A new value replaces the stored one.
        resource["spec"]["output"]["prometheusRemoteWrite"]["authentication"]["basic"]["password"]
            ["value"] = json!("SECRET-new-4");
        h.call(
            Method::PUT,
            "/api/v1/pipelines/secret",
            Some(&shop),
            Some(resource),
        )
        .await;
        let stored = h
            .store
            .get_pipeline("shop", "secret")
            .await
            .unwrap()
            .unwrap();
        let stored = serde_json::to_value(stored.pipeline.resource()).unwrap();
        assert_eq!(
            stored["spec"]["output"]["prometheusRemoteWrite"]["authentication"]["basic"]["password"]
                ["value"],
            "SECRET-new-4"
        );

        // `***` with nothing stored behind it is refused at its path.
        let mut fresh = pipeline_with_secrets("fresh");
        fresh["spec"]["output"]["prometheusRemoteWrite"]["headers"][0]["value"] = json!("***");
        let refused = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/fresh",
                Some(&shop),
                Some(fresh),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.text
        );
        assert_eq!(
            refused.json()["fields"][0]["path"],
            "spec.output.prometheusRemoteWrite.headers[0].value"
        );
    }

    #[tokio::test]
    async fn status_counts_what_the_caller_may_see() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        for (token, name) in [(&shop, "s1"), (&shop, "s2"), (&bank, "b1")] {
            h.call(
                Method::POST,
                "/api/v1/clusters",
                Some(token),
                Some(json!({ "name": name })),
            )
            .await;
        }
        // The agent connected (which makes a cluster active), and the cluster was set
        // back to provisioning since, as an onboarding source does for one it restores.
        h.store
            .report(ReportWrite::Seen {
                cluster: String::from("shop.s1"),
                instance_id: String::from("agent-1"),
                version: String::from("test"),
                at_ms: 1,
                connection: Some(String::from("test-replica/1")),
            })
            .await
            .unwrap();
        h.store
            .set_cluster_state("shop.s1", ClusterState::Provisioning, 2, &Actor::admin())
            .await
            .unwrap();
        h.call(Method::DELETE, "/api/v1/clusters/s2", Some(&shop), None)
            .await;
        h.call(
            Method::PUT,
            "/api/v1/pipelines/p",
            Some(&shop),
            Some(pipeline("p", URL_A)),
        )
        .await;
        let mine = h.get("/api/v1/status", &shop).await.json();
        assert_eq!(
            mine,
            json!({
                "tenants": 1,
                "clusters": { "total": 2, "provisioning": 1, "active": 0, "silent": 0, "lost": 0, "deleting": 0, "deleted": 1 },
                "pipelines": 1,
                "connectedAgents": 1,
                "pendingDeletions": [],
            })
        );
        let all = h.get("/api/v1/status", ADMIN).await.json();
        assert_eq!(all["tenants"], 2);
        assert_eq!(all["clusters"]["total"], 3);
    }

    /// Issue 15, finding 4: the changes the mass-deletion guard holds are shown by the
    /// status (a tenant sees its own clusters' only) and released only by an
    /// administrator's confirmation, which is audited.
    #[tokio::test]
    async fn held_deletions_are_shown_and_confirmed_by_an_administrator() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        for (token, name) in [(&shop, "s1"), (&bank, "b1")] {
            h.call(
                Method::POST,
                "/api/v1/clusters",
                Some(token),
                Some(json!({ "name": name })),
            )
            .await;
        }
        let held = |cluster: &str, tenant: &str| HeldDeletion {
            cluster: cluster.to_owned(),
            tenant: tenant.to_owned(),
            to_state: ClusterState::Deleting,
            reason: "missing from the inventory".to_owned(),
        };
        h.store
            .hold_deletions(
                "inventory",
                &[held("shop.s1", "shop"), held("bank.b1", "bank")],
                &Actor("onboarding:inventory".to_owned()),
                1,
            )
            .await
            .unwrap();
        let mine = h.get("/api/v1/status", &shop).await.json();
        assert_eq!(
            mine["pendingDeletions"],
            json!([{"cluster": "shop.s1", "tenant": "shop", "source": "inventory",
                    "toState": "deleting", "reason": "missing from the inventory",
                    "heldAtMs": 1}])
        );
        let all = h.get("/api/v1/status", ADMIN).await.json();
        assert_eq!(all["pendingDeletions"].as_array().unwrap().len(), 2);

        let refused = h
            .call(Method::POST, "/api/v1/deletions/confirm", Some(&shop), None)
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
        let confirmed = h
            .call(Method::POST, "/api/v1/deletions/confirm", Some(ADMIN), None)
            .await;
        assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text);
        let confirmed = confirmed.json();
        assert_eq!(confirmed["confirmed"].as_array().unwrap().len(), 2);
        assert!(confirmed["confirmed"][0]["confirmedAtMs"].is_i64());
        let audit = h.store.audit_entries(100).await.unwrap();
        assert_eq!(
            audit
                .iter()
                .filter(|e| e.action == "confirm-deletion:deleting" && e.actor == "admin")
                .count(),
            2
        );
        let again = h
            .call(Method::POST, "/api/v1/deletions/confirm", Some(ADMIN), None)
            .await
            .json();
        assert_eq!(again, json!({"confirmed": []}), "nothing left to confirm");
    }

    #[tokio::test]
    async fn server_errors_say_only_internal_error() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        // Break the database under the store: drop the tables it reads.
        let db = sea_orm::Database::connect(format!(
            "sqlite://{}?mode=rw",
            h.dir.path().join("observer.db").display()
        ))
        .await
        .unwrap();
        use sea_orm::ConnectionTrait;
        db.execute_unprepared("DROP TABLE clusters").await.unwrap();
        let answer = h.get("/api/v1/clusters", &shop).await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            answer.text
        );
        assert_eq!(answer.json(), json!({ "error": "internal error" }));
        assert!(
            !answer.text.to_lowercase().contains("table"),
            "{}",
            answer.text
        );
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json_errors() {
        let h = Harness::new().await;
        let answer = h.get("/api/v1/nothing", ADMIN).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert!(answer.json()["error"].is_string());
        let answer = h
            .call(Method::PATCH, "/api/v1/clusters", Some(ADMIN), None)
            .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(answer.json()["error"].is_string());
    }

    /// Every operation in the OpenAPI document reaches a handler (no 405, no unknown
    /// route), so the document and the router agree.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let h = Harness::new().await;
        let document = h
            .call(Method::GET, "/openapi.json", None, None)
            .await
            .json();
        let paths = document["paths"].as_object().unwrap();
        let mut count = 0;
        for (path, operations) in paths {
            for method in operations.as_object().unwrap().keys() {
                let uri = path.replace("{name}", "x").replace("{id}", "x");
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let answer = h.call(method.clone(), &uri, Some(ADMIN), None).await;
                assert_ne!(
                    answer.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
                assert!(
                    !answer.text.contains("no such route"),
                    "{method} {uri}: {}",
                    answer.text
                );
                let documented = operations[method.as_str().to_lowercase()]["responses"]
                    .get(answer.status.as_str())
                    .is_some();
                assert!(
                    documented,
                    "{method} {uri} answered undocumented {}: {}",
                    answer.status, answer.text
                );
                count += 1;
            }
        }
        assert!(count >= 20, "{count} operations");
    }

    /// One request over a real socket, the way `observer serve` runs the app.
    #[tokio::test]
    async fn the_api_answers_over_tcp() {
        let h = Harness::new().await;
        let address = h.serve().await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let base = format!("http://{address}");
        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
        let created = client
            .post(format!("{base}/api/v1/tenants"))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": "shop" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let listed: Value = client
            .get(format!("{base}/api/v1/tenants"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["items"][0]["name"], "shop");
    }

    /// Issue 13, finding 8 (quotas): a tenant's probe endpoints, clusters and
    /// pipelines are bounded, with named defaults (200 probe endpoints); an admin (and
    /// only an admin) raises a quota through the API, and the 1,001st probe endpoint
    /// over a raised quota of 1,000 answers 409 naming the quota. On 552c13e there is
    /// no quota route (404), no cluster or pipeline bound, and the probe bound is a
    /// fixed 200 that cannot be raised.
    #[tokio::test]
    async fn quotas_bound_what_a_tenant_creates_and_only_admins_raise_them() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let bank = h.tenant_with_token("bank").await;
        let quotas = h.get("/api/v1/tenants/shop/quotas", &shop).await;
        assert_eq!(quotas.status, StatusCode::OK, "{}", quotas.text);
        assert_eq!(
            quotas.json()["quotas"],
            json!([
                {"name": "clusters", "limit": 1000, "used": 0, "default": 1000, "overridden": false},
                {"name": "pipelines/MetricPipeline", "limit": 50, "used": 0, "default": 50, "overridden": false},
                {"name": "pipelines/LogPipeline", "limit": 50, "used": 0, "default": 50, "overridden": false},
                {"name": "pipelines/TracePipeline", "limit": 50, "used": 0, "default": 50, "overridden": false},
                {"name": "probes", "limit": 200, "used": 0, "default": 200, "overridden": false},
            ])
        );
        let theirs = h.get("/api/v1/tenants/shop/quotas", &bank).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.text);
        let raise = json!({"limits": {"probes": 1000}});
        let by_tenant = h
            .call(
                Method::PUT,
                "/api/v1/tenants/shop/quotas",
                Some(&shop),
                Some(raise.clone()),
            )
            .await;
        assert_eq!(
            by_tenant.status,
            StatusCode::FORBIDDEN,
            "{}",
            by_tenant.text
        );

        let probe = |i: usize| json!({"name": format!("p{i}"), "module": {"tcp": {"address": format!("p{i}.shop.example:443")}}});
        let create = |i: usize| {
            let h = &h;
            let shop = shop.clone();
            async move {
                h.call(Method::POST, "/api/v1/probes", Some(&shop), Some(probe(i)))
                    .await
            }
        };
        for i in 0..200 {
            let created = create(i).await;
            assert_eq!(created.status, StatusCode::CREATED, "{i}: {}", created.text);
        }
        let over = create(200).await;
        assert_eq!(over.status, StatusCode::CONFLICT, "{}", over.text);
        assert_eq!(
            over.json()["error"],
            "tenant \"shop\" is at its quota \"probes\" of 200 probe endpoints: delete one \
             first, or ask the provider to raise the quota"
        );

        let raised = h
            .call(
                Method::PUT,
                "/api/v1/tenants/shop/quotas",
                Some(ADMIN),
                Some(raise),
            )
            .await;
        assert_eq!(raised.status, StatusCode::OK, "{}", raised.text);
        assert_eq!(
            raised.json()["quotas"][4],
            json!({"name": "probes", "limit": 1000, "used": 200, "default": 200, "overridden": true})
        );
        for i in 200..1000 {
            let created = create(i).await;
            assert_eq!(created.status, StatusCode::CREATED, "{i}: {}", created.text);
        }
        let over = create(1000).await;
        assert_eq!(
            over.status,
            StatusCode::CONFLICT,
            "the 1,001st: {}",
            over.text
        );
        assert!(
            over.json()["error"]
                .as_str()
                .unwrap()
                .contains("quota \"probes\" of 1000"),
            "{}",
            over.text
        );
        // Replacing an existing endpoint is not a creation.
        let replaced = h
            .call(
                Method::PUT,
                "/api/v1/probes/p0",
                Some(&shop),
                Some(probe(0)),
            )
            .await;
        assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);

        // Clusters and pipelines, lowered to show the bound.
        let lowered = h
            .call(
                Method::PUT,
                "/api/v1/tenants/shop/quotas",
                Some(ADMIN),
                Some(json!({"limits": {"clusters": 1, "pipelines/MetricPipeline": 1, "probes": 1000}})),
            )
            .await;
        assert_eq!(lowered.status, StatusCode::OK, "{}", lowered.text);
        let cluster = |name: &str| json!({"name": name});
        let first = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(cluster("c1")),
            )
            .await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        let second = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&shop),
                Some(cluster("c2")),
            )
            .await;
        assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
        assert!(
            second.json()["error"]
                .as_str()
                .unwrap()
                .contains("quota \"clusters\" of 1"),
            "{}",
            second.text
        );
        let bank_cluster = h
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(&bank),
                Some(cluster("c2")),
            )
            .await;
        assert_eq!(
            bank_cluster.status,
            StatusCode::CREATED,
            "another tenant's quota is its own"
        );
        let one = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/one",
                Some(&shop),
                Some(pipeline("one", URL_A)),
            )
            .await;
        assert_eq!(one.status, StatusCode::CREATED, "{}", one.text);
        let two = h
            .call(
                Method::PUT,
                "/api/v1/pipelines/two",
                Some(&shop),
                Some(pipeline("two", URL_A)),
            )
            .await;
        assert_eq!(two.status, StatusCode::CONFLICT, "{}", two.text);
        assert!(
            two.json()["error"]
                .as_str()
                .unwrap()
                .contains("quota \"pipelines/MetricPipeline\""),
            "{}",
            two.text
        );

        // Bad quota requests name the field.
        let bad = h
            .call(
                Method::PUT,
                "/api/v1/tenants/shop/quotas",
                Some(ADMIN),
                Some(json!({"limits": {"nope": 1, "clusters": 1_000_000_000u64}})),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
        let fields = bad.json()["fields"].clone();
        let paths: Vec<&str> = fields
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            ["limits[\"clusters\"]", "limits[\"nope\"]"],
            "{}",
            bad.text
        );
        let ghost = h.get("/api/v1/tenants/ghost/quotas", ADMIN).await;
        assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    }
}
