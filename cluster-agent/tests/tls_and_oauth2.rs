//! Credentials against real servers: TLS and mutual TLS against nginx (which verifies
//! the agent's client certificate), server-name override and insecureSkipVerify; and
//! OAuth2 client credentials against a token endpoint, with the token cached, and a
//! token endpoint answering hostile lifetimes while samples still reach Prometheus.
//!
//! Needs `nginx` and `prometheus` (`scripts/test.sh` installs them). Certificates are
//! made per test run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_cluster_agent::exporters::remote_write::RemoteWriteExporter;
use kaas_cluster_agent::outbound::auth::ValueSources;
use kaas_cluster_agent::outbound::retry::SendError;
use kaas_cluster_agent::record::metrics::Batch;
use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries};
use kaas_test_support::peers::Prometheus;
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
    let url: url::Url = output.url.describe().parse().expect("URL");
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

/// Issue 13, finding 10 (OAuth2 lifetimes clamped): a token server on loopback answers
/// `expires_in` as `2^64-1`, `1e300`, 0, a negative number and text. Every exporter
/// still gets its token, sends its samples to a real Prometheus, and asks for a token
/// once for two requests (the lifetime is clamped to `MIN_TOKEN_LIFETIME`..
/// `MAX_TOKEN_LIFETIME`, the default when it is not a number). On 552c13e `2^64-1`
/// panicked computing the cache deadline (0 samples sent, every round), negative and
/// text answers failed every token request, and 0 asked for a token before every
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oauth2_lifetimes_are_clamped_and_samples_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || Prometheus::receiver(&dir)
    })
    .await
    .unwrap();
    let cases = [
        ("huge", "18446744073709551615"),
        ("exponent", "1e300"),
        ("zero", "0"),
        ("negative", "-3600"),
        ("text", r#""whenever""#),
    ];
    let requests: Arc<Mutex<std::collections::BTreeMap<String, usize>>> = Arc::default();
    let counted = requests.clone();
    let app = axum::Router::new().route(
        "/token/{case}",
        axum::routing::post(
            move |axum::extract::Path(case): axum::extract::Path<String>| {
                let counted = counted.clone();
                async move {
                    *counted.lock().unwrap().entry(case.clone()).or_default() += 1;
                    let expires_in = cases
                        .iter()
                        .find(|(name, _)| *name == case)
                        .map_or("60", |(_, value)| value);
                    (
                        [("content-type", "application/json")],
                        format!(
                            r#"{{"access_token": "token-{case}", "token_type": "Bearer", "expires_in": {expires_in}}}"#
                        ),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_server = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (case, _) in cases {
        let exporter = exporter(&format!(
            "url: {}\nauthentication:\n  oauth2:\n    tokenUrl: {token_server}/{case}\n    clientId: {{value: agent}}\n    clientSecret: {{value: s3cret}}\n",
            prometheus.write_url()
        ));
        for n in 0..2 {
            let mut batch = batch();
            batch.series[0].labels = vec![
                Label {
                    name: "__name__".into(),
                    value: "oauth2_lifetime_case".into(),
                },
                Label {
                    name: "case".into(),
                    value: case.into(),
                },
            ];
            batch.series[0].samples[0] = Sample {
                value: f64::from(n),
                timestamp: now_ms + i64::from(n),
            };
            exporter
                .send(&batch)
                .await
                .unwrap_or_else(|e| panic!("{case}: send {n} failed: {e:?}"));
        }
        assert_eq!(
            requests.lock().unwrap().get(case),
            Some(&1),
            "{case}: one token for both requests"
        );
    }
    let counts = tokio::task::spawn_blocking(move || {
        prometheus.wait_for(
            "count_over_time(oauth2_lifetime_case[1h]) == 2",
            Duration::from_secs(30),
        );
        prometheus.query("count_over_time(oauth2_lifetime_case[1h])")
    })
    .await
    .unwrap();
    let mut arrived: Vec<(String, String)> = counts
        .iter()
        .map(|r| {
            (
                r["metric"]["case"].as_str().unwrap_or_default().to_owned(),
                r["value"][1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    arrived.sort();
    let mut expected: Vec<(String, String)> = cases
        .iter()
        .map(|(case, _)| ((*case).to_owned(), "2".to_owned()))
        .collect();
    expected.sort();
    assert_eq!(arrived, expected, "both samples of every case arrived");
}
