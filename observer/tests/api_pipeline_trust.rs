//! What a tenant's pipeline may not do, through `app(state)` with `oneshot` on a real
//! store: read the agent's files, read Secrets outside the provider's allow-list, set
//! the provider's tenancy headers, write to the provider's receiver, steer the
//! credential-bearing runtime scrapes, or carry a stored secret to a new destination
//! with `***`. Each is refused with 422 and the field path, and nothing is stored.

mod api_harness;

mod pipeline_trust {
    use axum::http::{Method, StatusCode};
    use serde_json::{Value, json};

    use super::api_harness::{
        CENTRAL_RECEIVER, Harness, PROVIDER_TENANT_HEADER, pipeline, pipeline_with_secrets,
    };

    const URL: &str = "https://receiver.example/api/v1/write";

    /// Applies `body` as tenant `shop`; returns the status and every `(path, message)`.
    async fn apply(h: &Harness, token: &str, body: Value) -> (StatusCode, Vec<(String, String)>) {
        let name = body["metadata"]["name"]
            .as_str()
            .expect("a named pipeline")
            .to_owned();
        let answer = h
            .call(
                Method::PUT,
                &format!("/api/v1/pipelines/{name}"),
                Some(token),
                Some(body),
            )
            .await;
        let fields = if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
            answer.json()["fields"]
                .as_array()
                .expect("fields in a 422")
                .iter()
                .map(|f| {
                    (
                        f["path"].as_str().expect("a path").to_owned(),
                        f["message"].as_str().expect("a message").to_owned(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        (answer.status, fields)
    }

    async fn assert_refused(h: &Harness, token: &str, body: Value, path: &str, says: &str) {
        let name = body["metadata"]["name"]
            .as_str()
            .expect("a named pipeline")
            .to_owned();
        let (status, fields) = apply(h, token, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        assert!(
            fields.iter().any(|(p, m)| p == path && m.contains(says)),
            "{path}: {says:?} not in {fields:?}"
        );
        assert!(
            h.store
                .get_pipeline("shop", &name)
                .await
                .expect("read the store")
                .is_none(),
            "nothing was stored"
        );
    }

    fn remote_write(name: &str, output: Value) -> Value {
        let mut body = pipeline(name, URL);
        body["spec"]["output"]["prometheusRemoteWrite"] = output;
        body
    }

    /// Issue 13, finding 2: a tenant pipeline that reads a file on the agent (here its
    /// service-account token, sent as basic auth to a URL the tenant picks) is refused
    /// with 422 and the field path. On 552c13e it was stored (201) and distributed.
    #[tokio::test]
    async fn a_pipeline_reading_agent_files_is_refused() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        for file in [
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/lib/kaas-agent/identity/tls.key",
            "/etc/hostname",
        ] {
            let body = remote_write(
                "reads-files",
                json!({
                    "url": URL,
                    "authentication": {"basic": {
                        "user": {"value": "agent"},
                        "password": {"valueFrom": {"file": file}},
                    }},
                }),
            );
            assert_refused(
                &h,
                &shop,
                body,
                "spec.output.prometheusRemoteWrite.authentication.basic.password.valueFrom.file",
                "reading files on the agent is only allowed in a standalone agent's own configuration",
            )
            .await;
        }
        // TLS material and headers are file-free too.
        let body = remote_write(
            "reads-files",
            json!({
                "url": URL,
                "headers": [{"name": "X-Token", "valueFrom": {"file": "/etc/kaas-agent/join-token"}}],
            }),
        );
        assert_refused(
            &h,
            &shop,
            body,
            "spec.output.prometheusRemoteWrite.headers[0].valueFrom.file",
            "not in a pipeline the observer distributes",
        )
        .await;
    }

    /// Issue 13, finding 9: `secretKeyRef` may only name a namespace the provider
    /// allows (the harness allows the agent's own, `kaas-observer`). On 552c13e any
    /// namespace was stored (201).
    #[tokio::test]
    async fn secrets_outside_the_allow_list_are_refused() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let reference = |namespace: &str| {
            remote_write(
                "secret-ref",
                json!({
                    "url": URL,
                    "authentication": {"bearerToken": {"valueFrom": {"secretKeyRef": {
                        "name": "bootstrap-token-abcdef", "namespace": namespace, "key": "token-secret",
                    }}}},
                }),
            )
        };
        assert_refused(
            &h,
            &shop,
            reference("kube-system"),
            "spec.output.prometheusRemoteWrite.authentication.bearerToken.valueFrom.secretKeyRef.namespace",
            "the agent may not read Secrets in namespace \"kube-system\"",
        )
        .await;
        let (status, fields) = apply(&h, &shop, reference("kaas-observer")).await;
        assert_eq!(status, StatusCode::CREATED, "{fields:?}");
    }

    /// Issue 13, finding 9: the tenancy headers (Thanos' `THANOS-TENANT` in any case,
    /// and the provider's configured tenant header) and the provider's central
    /// receiver are refused in tenant pipelines. On 552c13e all three were stored.
    #[tokio::test]
    async fn tenancy_headers_and_the_central_receiver_are_refused() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        for header in ["THANOS-TENANT", "thanos-tenant", PROVIDER_TENANT_HEADER] {
            let body = remote_write(
                "tenancy",
                json!({"url": URL, "headers": [{"name": header, "value": "other-tenant"}]}),
            );
            assert_refused(
                &h,
                &shop,
                body,
                "spec.output.prometheusRemoteWrite.headers[0].name",
                "is reserved by the provider",
            )
            .await;
        }
        let central = url::Url::parse(CENTRAL_RECEIVER).unwrap();
        let elsewhere_on_it = format!(
            "http://{}:{}/api/v1/push",
            central.host_str().unwrap().to_uppercase(),
            central.port().unwrap()
        );
        for url in [CENTRAL_RECEIVER.to_owned(), elsewhere_on_it] {
            assert_refused(
                &h,
                &shop,
                pipeline("to-central", &url),
                "spec.output.prometheusRemoteWrite.url",
                "this is the provider's central receiver",
            )
            .await;
        }
        let mut otlp = pipeline("to-central", URL);
        otlp["spec"]["output"] = json!({"otlp": {
            "endpoint": format!("https://{}", central.host_str().unwrap()),
            "protocol": "http",
        }});
        // Another port of the same host is another service.
        let (status, fields) = apply(&h, &shop, otlp).await;
        assert_eq!(status, StatusCode::CREATED, "{fields:?}");
    }

    /// Issue 13, finding 3: with the runtime input (whose kubelet scrapes carry the
    /// agent's service-account token), a relabel rule that could move the targets'
    /// address, scheme or path is refused with its field path. On 552c13e it was
    /// stored and the token followed the rewritten address.
    #[tokio::test]
    async fn relabeling_cannot_steer_token_bearing_scrapes() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let mut body = pipeline("runtime", URL);
        body["spec"]["input"] = json!({"runtime": {"enabled": true}});
        body["spec"]["processors"] = json!({"relabelConfigs": [
            {"targetLabel": "__address__", "replacement": "127.0.0.1:9"},
            {"targetLabel": "__scheme__", "replacement": "http"},
        ]});
        let (status, fields) = apply(&h, &shop, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let paths: Vec<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.processors.relabelConfigs[0].targetLabel",
                "spec.processors.relabelConfigs[1].targetLabel",
            ]
        );
        assert!(fields[0].1.starts_with(
            "could set __address__: the runtime input's targets carry the agent's credentials"
        ));
        // The same rules without the runtime input steer only the tenant's own targets.
        body["spec"]["input"] = json!({"prometheus": {"enabled": true}});
        let (status, fields) = apply(&h, &shop, body).await;
        assert_eq!(status, StatusCode::CREATED, "{fields:?}");
    }

    /// Issue 13, finding 9: keeping a stored secret with `***` while changing where it
    /// is sent (the URL, the TLS trust, the OAuth2 token URL) is refused with 422 and
    /// "give the secret again", and the stored pipeline keeps its old URL. On 552c13e
    /// the stored credentials were restored and sent to the new host (200).
    #[tokio::test]
    async fn a_kept_secret_cannot_follow_a_new_url() {
        let h = Harness::new().await;
        let shop = h.tenant_with_token("shop").await;
        let (status, _) = apply(&h, &shop, pipeline_with_secrets("secrets")).await;
        assert_eq!(status, StatusCode::CREATED);
        let read = h.get("/api/v1/pipelines/secrets", &shop).await.json();
        let mut edited = read["resource"].clone();
        assert_eq!(
            edited["spec"]["output"]["prometheusRemoteWrite"]["authentication"]["basic"]["password"]
                ["value"],
            "***"
        );
        edited["spec"]["output"]["prometheusRemoteWrite"]["url"] =
            json!("https://collector.attacker.example/api/v1/write");
        let (status, fields) = apply(&h, &shop, edited.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        let paths: Vec<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.output.prometheusRemoteWrite.headers[0].value",
                "spec.output.prometheusRemoteWrite.authentication.basic.user.value",
                "spec.output.prometheusRemoteWrite.authentication.basic.password.value",
            ]
        );
        assert!(
            fields.iter().all(|(_, m)| m.contains(
                "spec.output.prometheusRemoteWrite.url changed, so it would be sent somewhere new; give the secret again"
            )),
            "{fields:?}"
        );
        let stored = h
            .store
            .get_pipeline("shop", "secrets")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored
                .pipeline
                .spec()
                .output
                .prometheus_remote_write
                .as_ref()
                .unwrap()
                .url,
            "https://receiver.example/api/v1/write"
        );
        // Giving the secrets again moves them.
        let output = &mut edited["spec"]["output"]["prometheusRemoteWrite"];
        output["headers"][0]["value"] = json!("new-tenant");
        output["authentication"]["basic"]["user"]["value"] = json!("new-user");
        output["authentication"]["basic"]["password"]["value"] = json!("new-password");
        let (status, fields) = apply(&h, &shop, edited).await;
        assert_eq!(status, StatusCode::OK, "{fields:?}");
        // Trusting any certificate for the same URL is a new destination too.
        let read = h.get("/api/v1/pipelines/secrets", &shop).await.json();
        let mut insecure = read["resource"].clone();
        insecure["spec"]["output"]["prometheusRemoteWrite"]["tls"] =
            json!({"insecureSkipVerify": true});
        let (status, fields) = apply(&h, &shop, insecure).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}");
        assert!(
            fields[0].1.contains("tls.insecureSkipVerify changed"),
            "{fields:?}"
        );
    }
}
