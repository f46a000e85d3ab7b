//! Credentials against real servers: TLS and mutual TLS against nginx (which verifies
//! the agent's client certificate), server-name override and insecureSkipVerify; and
//! OAuth2 client credentials against a token endpoint, with the token cached.
//!
//! Needs `nginx` (`scripts/test.sh` installs it). Certificates are made per test run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_cluster_agent::batch::Batch;
use kaas_cluster_agent::exporters::auth::ValueSources;
use kaas_cluster_agent::exporters::remote_write::RemoteWriteExporter;
use kaas_cluster_agent::exporters::retry::SendError;
use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::{MtlsNginx, TestPki};

/// nginx terminating mutual TLS with the test CA, answering 204 to every request and
/// logging whether the client certificate verified.
fn tls_server(dir: &std::path::Path, pki: &TestPki) -> MtlsNginx {
    MtlsNginx::start(
        dir,
        pki,
        "$request $status $ssl_client_verify $ssl_client_s_dn",
        "return 204;",
    )
}

fn batch() -> Batch {
    Batch {
        series: vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "up".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1,
            }],
        }],
        metadata: vec![],
    }
}

fn exporter(yaml: &str) -> RemoteWriteExporter {
    let output: RemoteWriteOutput = serde_yaml::from_str(yaml).expect("output YAML");
    let url = output.url.parse().expect("URL");
    RemoteWriteExporter::new(
        &output,
        url,
        RemoteWriteVersion::V1,
        Duration::from_secs(5),
        ValueSources::without_secrets(),
    )
    .expect("exporter")
}

/// YAML for an inline PEM value.
fn pem(text: &str) -> String {
    serde_json::to_string(text).expect("JSON string")
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca_and_a_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["receiver.internal"]);
    let server = tls_server(dir.path(), &pki);
    let url = format!("https://127.0.0.1:{}/api/v1/write", server.port);

    // The certificate names receiver.internal, not 127.0.0.1: serverName makes it match.
    let ok = exporter(&format!(
        "url: {url}\ntls:\n  serverName: receiver.internal\n  ca: {{value: {}}}\n  cert: {{value: {}}}\n  key: {{value: {}}}\n",
        pem(&pki.ca),
        pem(&pki.client_cert),
        pem(&pki.client_key)
    ));
    ok.send(&batch()).await.expect("mTLS request succeeds");
    // nginx may write its access log just after the client has the answer.
    let expected = "POST /api/v1/write HTTP/1.1 204 SUCCESS CN=cluster-agent";
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&server.access_log).unwrap_or_default();
        if log.contains(expected) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "nginx never logged {expected:?}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without serverName the name does not match: a retryable TLS failure, no request.
    let wrong_name = exporter(&format!(
        "url: {url}\ntls:\n  ca: {{value: {}}}\n  cert: {{value: {}}}\n  key: {{value: {}}}\n",
        pem(&pki.ca),
        pem(&pki.client_cert),
        pem(&pki.client_key)
    ));
    let error = wrong_name.send(&batch()).await.unwrap_err();
    assert!(matches!(error, SendError::Retryable { .. }), "{error:?}");

    // The system roots do not trust the private CA.
    let untrusted = exporter(&format!(
        "url: {url}\ntls:\n  serverName: receiver.internal\n  cert: {{value: {}}}\n  key: {{value: {}}}\n",
        pem(&pki.client_cert),
        pem(&pki.client_key)
    ));
    assert!(untrusted.send(&batch()).await.is_err());

    // Without a client certificate nginx refuses the request (400): dropped, not retried.
    let no_client_cert = exporter(&format!(
        "url: {url}\ntls:\n  serverName: receiver.internal\n  ca: {{value: {}}}\n",
        pem(&pki.ca)
    ));
    let error = no_client_cert.send(&batch()).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Permanent { reason } if reason.contains("HTTP 400")),
        "{error:?}"
    );

    // insecureSkipVerify accepts the server without the CA (the client cert still works).
    let insecure = exporter(&format!(
        "url: {url}\ntls:\n  insecureSkipVerify: true\n  cert: {{value: {}}}\n  key: {{value: {}}}\n",
        pem(&pki.client_cert),
        pem(&pki.client_key)
    ));
    insecure
        .send(&batch())
        .await
        .expect("insecureSkipVerify request succeeds");
}

#[tokio::test]
async fn oauth2_client_credentials_fetch_and_cache_a_token() {
    let receiver = RemoteWriteReceiver::start().await;
    let token_requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let (count, record) = (token_requests.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/oauth/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (count, record) = (count.clone(), record.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().unwrap().push((authorization, body));
                (
                    [("content-type", "application/json")],
                    r#"{"access_token": "token-1", "token_type": "Bearer", "expires_in": 3600}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let exporter = exporter(&format!(
        "url: {}\nauthentication:\n  oauth2:\n    tokenUrl: {token_url}\n    clientId: {{value: agent}}\n    clientSecret: {{value: s3cret}}\n    scopes: [metrics.write]\n    endpointParams: {{audience: ingest}}\n",
        receiver.url()
    ));
    exporter.send(&batch()).await.expect("first send");
    exporter.send(&batch()).await.expect("second send");

    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );
    let (authorization, form) = seen.lock().unwrap()[0].clone();
    // "agent:s3cret" in base64, as RFC 6749 section 2.3.1 asks.
    assert_eq!(authorization, "Basic YWdlbnQ6czNjcmV0");
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("scope=metrics.write"), "{form}");
    assert!(form.contains("audience=ingest"), "{form}");
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some("Bearer token-1")
        );
    }
}
