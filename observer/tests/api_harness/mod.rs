//! Shared by the API tests: a real [`Store`] on a temporary SQLite file, the app built
//! on it, requests through `oneshot`, and the app served on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use kaas_observer::api::{ApiState, app};
use kaas_observer::egress::EgressPolicy;
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::Store;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

/// The bootstrap admin token of every harness.
pub const ADMIN: &str = "admin-token-for-tests";
/// The control endpoint written into manifests.
pub const CONTROL_ENDPOINT: &str = "https://observer.test:8443";
/// The CA written into manifests.
pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n";

/// The provider's central receiver in the harness's policy: tenant pipelines may not
/// write to it.
pub const CENTRAL_RECEIVER: &str = "https://receive.provider.test:19291/api/v1/receive";
/// The tenant header the harness's provider reserves besides `THANOS-TENANT`.
pub const PROVIDER_TENANT_HEADER: &str = "X-Provider-Tenant";

/// What tenant pipelines may do in the harness: the observer's defaults (Secrets only
/// in `kaas-observer`) plus a central receiver and its tenant header, as `observer
/// serve` builds it from `--thanos-receive-url` and `--thanos-tenant-header`.
pub fn tenant_policy() -> kaas_pipeline::ProviderPolicy {
    let mut policy = kaas_pipeline::ProviderPolicy::tenant_default();
    policy.reserve_header(PROVIDER_TENANT_HEADER);
    policy.central_endpoints = vec![url::Url::parse(CENTRAL_RECEIVER).expect("a URL")];
    policy
}

/// A store and the app on it.
pub struct Harness {
    pub store: Store,
    pub app: Router,
    pub dir: TempDir,
}

/// The egress policy of every harness unless a test asks for another: the shipped
/// default plus loopback, where every test server listens.
pub fn loopback_allowed() -> EgressPolicy {
    EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("CIDR")], Vec::new())
}

impl Harness {
    /// A harness whose egress policy allows 127.0.0.0/8.
    pub async fn new() -> Self {
        Self::with_egress(loopback_allowed()).await
    }

    /// A harness with `egress` as the observer's policy (`EgressPolicy::default()` for
    /// the shipped one).
    pub async fn with_egress(egress: EgressPolicy) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(
            &dir.path().join("observer.db"),
            SecretBox::generate().expect("key"),
        )
        .await
        .expect("store");
        store.ensure_admin_token(ADMIN).await.expect("admin token");
        let app = app(ApiState {
            store: store.clone(),
            join_token_ttl: Duration::from_secs(3600),
            control_endpoint: CONTROL_ENDPOINT.to_owned(),
            ca_pem: CA_PEM.to_owned(),
            buffer_budgets: Default::default(),
            egress,
            tenant_policy: std::sync::Arc::new(tenant_policy()),
        });
        Self { store, app, dir }
    }

    /// Sends a request; `body` is sent as JSON.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.raw(method, uri, token, body).await
    }

    /// `GET uri` with a bearer token.
    pub async fn get(&self, uri: &str, token: &str) -> Answer {
        self.call(Method::GET, uri, Some(token), None).await
    }

    /// Sends a request with a body of the given content type.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, text)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(text)),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).expect("UTF-8 body"),
        }
    }

    /// Creates a tenant and a token for it; returns the token.
    pub async fn tenant_with_token(&self, tenant: &str) -> String {
        let answer = self
            .call(
                Method::POST,
                "/api/v1/tenants",
                Some(ADMIN),
                Some(serde_json::json!({ "name": tenant })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let answer = self
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(ADMIN),
                Some(serde_json::json!({ "name": "test", "tenant": tenant })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.json()["token"]
            .as_str()
            .expect("token in answer")
            .to_owned()
    }

    /// Serves the app on 127.0.0.1:0 until the test ends.
    pub async fn serve(&self) -> SocketAddr {
        serve(self.app.clone()).await
    }
}

/// Serves `app` on 127.0.0.1:0 in the background.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    address
}

/// A response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// A valid pipeline with inline secrets everywhere they can be, as JSON.
pub fn pipeline_with_secrets(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "MetricPipeline",
        "metadata": { "name": name, "labels": { "team": "shop" } },
        "spec": {
            "input": { "prometheus": { "enabled": true } },
            "output": { "prometheusRemoteWrite": {
                "url": "https://receiver.example/api/v1/write",
                "headers": [{ "name": "X-Scope-OrgID", "value": "SECRET-header-1" }],
                "authentication": { "basic": {
                    "user": { "value": "SECRET-user-2" },
                    "password": { "value": "SECRET-password-3" },
                } },
            } },
        },
    })
}

/// A valid pipeline without secrets.
pub fn pipeline(name: &str, url: &str) -> Value {
    serde_json::json!({
        "apiVersion": "telemetry.kaas-observer.io/v1alpha1",
        "kind": "MetricPipeline",
        "metadata": { "name": name },
        "spec": {
            "input": { "prometheus": { "enabled": true } },
            "output": { "prometheusRemoteWrite": { "url": url } },
        },
    })
}

/// A file of the repository.
pub fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}
