//! OTLP traces into trace pipelines (issue 17), over HTTP through the router
//! (`oneshot`) and over gRPC through the service itself: the checks in the logs'
//! order (no pipeline, credentials, size, shape), the answer only once durable, a full
//! buffer, and the pusher's proven namespace.

use kaas_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, KeyValue, ResourceSpans, ScopeSpans, Span, any_value,
};
use tonic::codegen::Service;

use super::*;
use crate::push::otlp_grpc::OtlpTracesGrpc;

/// An agent running the trace pipelines of `trace_pipelines` (the YAML list under
/// `tracePipelines:`, none when empty), and receivers feeding them.
async fn trace_fixture(
    trace_pipelines: &str,
    reviewer: TokenReviewer,
) -> (Agent, PushReceiver, tempfile::TempDir) {
    enriching_fixture(trace_pipelines, reviewer, None).await
}

/// [`trace_fixture`] with pushed spans enriched from pods, when `pods` starts a pod
/// cache, in the cluster [`CLUSTER`].
async fn enriching_fixture(
    trace_pipelines: &str,
    reviewer: TokenReviewer,
    pods: Option<crate::discovery::kubernetes::pods_by_ip::PodsByIpStarter>,
) -> (Agent, PushReceiver, tempfile::TempDir) {
    let enriched = pods.is_some();
    let dir = tempfile::tempdir().unwrap();
    let secrets = MapSecrets(BTreeMap::from([(
        ("shop".into(), "push".into(), "token".into()),
        "the-push-token".into(),
    )]));
    let mut agent = Agent::new(AgentContext {
        data_dir: dir.path().to_owned(),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(secrets),
        files: Arc::default(),
        cluster: ClusterView::default(),
        service_account_dir: dir.path().join("no-service-account"),
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    });
    if let Some(starter) = pods {
        agent.enrich_spans_from_pods(starter);
    }
    if !trace_pipelines.is_empty() {
        let labels = if enriched {
            format!("externalLabels: {{cluster: {CLUSTER}}}\n")
        } else {
            String::new()
        };
        let config = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n{labels}tracePipelines:\n{trace_pipelines}"
        );
        let config =
            AgentConfig::parse(&config, &kaas_pipeline::ValidationContext::standalone()).unwrap();
        let report = agent.apply(config).await;
        assert!(report.failed.is_empty(), "{report:?}");
    }
    let receiver = PushReceiver::new(
        agent.pipelines.clone(),
        agent.log_pipelines.clone(),
        Arc::new(PushStats::default()),
        PushLimits::default(),
        reviewer,
    )
    .with_trace_pipelines(agent.trace_pipelines.clone(), agent.span_enrichment.clone());
    (agent, receiver, dir)
}

/// The cluster of [`enriching_fixture`]'s agent.
const CLUSTER: &str = "prod-eu";

/// A trace pipeline `name` with `input` and `buffer` (YAML flow mappings) sending to
/// nowhere (nothing listens on port 9): what it takes stays in its buffer.
fn pipeline(name: &str, input: &str, buffer: &str) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {input}\n      buffer: {buffer}\n      output: {{otlp: {{endpoint: 'http://127.0.0.1:9'}}}}\n"
    )
}

const UNAUTHENTICATED: &str = "{authentication: {mode: unauthenticated}}";

/// A request of `spans` spans named `name`, from a resource claiming `namespace`.
fn spans(name: &str, spans: usize, namespace: Option<&str>) -> ExportTraceServiceRequest {
    let resource = namespace.map(|namespace| kaas_proto::otlp::Resource {
        attributes: vec![KeyValue {
            key: "k8s.namespace.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(namespace.into())),
            }),
        }],
        ..Default::default()
    });
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: vec![i as u8; 8],
                        name: name.to_owned(),
                        ..Span::default()
                    })
                    .collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Posts `body` to `/v1/traces` with `headers` (as protobuf unless they name a content
/// type): the status, `Retry-After` and body.
async fn post_traces(
    receiver: &PushReceiver,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, Option<String>, Bytes) {
    let routes = receiver.otlp_http_routes();
    post_to(
        routes,
        "/v1/traces",
        "application/x-protobuf",
        headers,
        body,
    )
    .await
}

/// Posts `body` to `path` of `routes` with `headers` (as `content_type` unless they
/// name one): the status, `Retry-After` and body.
async fn post_to(
    routes: axum::Router,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, Option<String>, Bytes) {
    let mut request = Request::post(path);
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(PROMPTLY, routes.oneshot(request.body(body).unwrap()))
        .await
        .expect("an answer")
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry_after, body)
}

/// One gRPC message frame around `message`, compressed or not.
fn grpc_frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// Calls `TraceService/Export` with `body` (framed) and `headers`: the gRPC status code
/// and the answer's message, if any.
async fn grpc_traces(
    receiver: &PushReceiver,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (
    tonic::Code,
    Option<kaas_proto::otlp::ExportTraceServiceResponse>,
) {
    grpc_traces_from(receiver, None, headers, body).await
}

/// [`grpc_traces`] over a connection from `peer`, as tonic's server marks a request
/// (`TcpConnectInfo`), when it is given.
async fn grpc_traces_from(
    receiver: &PushReceiver,
    peer: Option<std::net::SocketAddr>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (
    tonic::Code,
    Option<kaas_proto::otlp::ExportTraceServiceResponse>,
) {
    let mut request = http::Request::post(kaas_proto::otlp::EXPORT_TRACES_PATH)
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request
        .body(tonic::body::Body::new(Body::from(body)))
        .unwrap();
    if let Some(peer) = peer {
        (request.extensions_mut()).insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
    }
    let mut service = OtlpTracesGrpc::new(receiver.clone());
    let response = tokio::time::timeout(PROMPTLY, service.call(request))
        .await
        .expect("an answer")
        .unwrap();
    if let Some(code) = response.headers().get("grpc-status") {
        let code = code.to_str().unwrap().parse::<i32>().unwrap();
        return (tonic::Code::from(code), None);
    }
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let code = trailers["grpc-status"]
        .to_str()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    let bytes = collected.to_bytes();
    let message = kaas_proto::otlp::ExportTraceServiceResponse::decode(&bytes[5..]).unwrap();
    (tonic::Code::from(code), Some(message))
}

/// Records (one per push it took) buffered by trace pipeline `name`.
async fn buffered(agent: &Agent, name: &str) -> u64 {
    let pipelines = agent.trace_pipelines.read().await;
    let buffer = pipelines[name].data_path.buffer.lock().unwrap();
    buffer.pending_records()
}

/// While no trace pipeline takes spans, the trace receivers answer 404 and
/// `UNIMPLEMENTED` before reading the body, and nothing is allocated for traces.
#[tokio::test]
async fn without_a_trace_pipeline_traces_are_404_and_unimplemented() {
    let (agent, receiver, dir) = trace_fixture("", no_kubernetes()).await;
    // A body that never ends: only an answer before reading it meets the deadline.
    let endless =
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
    let (status, _, body) = post_traces(&receiver, &[], endless).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "no pipeline takes OTLP traces pushes on this agent");
    let (code, _) = grpc_traces(&receiver, &[], grpc_frame(false, &[])).await;
    assert_eq!(code, tonic::Code::Unimplemented);
    assert_eq!(refused(&receiver, "no_pipeline"), 2);
    assert!(agent.trace_pipelines.read().await.is_empty());
    assert!(!dir.path().join("trace-buffers").exists());
}

/// Taken spans are answered once durable, over both transports, with an empty
/// answer (nothing rejected), each push a record in every pipeline.
#[tokio::test]
async fn spans_are_answered_once_durable_in_every_pipeline_that_takes_them() {
    let (mut agent, receiver, _dir) = trace_fixture(
        &[
            pipeline("first", UNAUTHENTICATED, "{}"),
            pipeline("second", UNAUTHENTICATED, "{}"),
        ]
        .concat(),
        no_kubernetes(),
    )
    .await;
    let body = spans("checkout", 3, None).encode_to_vec();
    let (status, _, answer) = post_traces(&receiver, &[], Body::from(body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let answer = kaas_proto::otlp::ExportTraceServiceResponse::decode(answer).unwrap();
    assert_eq!(answer.partial_success, None);
    let (code, answer) = grpc_traces(&receiver, &[], grpc_frame(false, &body)).await;
    assert_eq!(code, tonic::Code::Ok);
    assert_eq!(answer.unwrap().partial_success, None);
    for name in ["first", "second"] {
        assert_eq!(buffered(&agent, name).await, 2, "{name}");
    }
    agent.shutdown().await;
}

/// Credentials are checked before the body is read: none for a service-account
/// pipeline without a Kubernetes API, or a wrong push token, is 401 /
/// `UNAUTHENTICATED`; the right push token is taken.
#[tokio::test]
async fn pushers_without_credentials_are_refused_before_the_body_is_read() {
    let (mut agent, receiver, _dir) = trace_fixture(
        &[
            pipeline("by-account", "{}", "{}"),
            pipeline(
                "by-token",
                "{authentication: {mode: bearerToken, bearerToken: {valueFrom: {secretKeyRef: {name: push, namespace: shop, key: token}}}}}",
                "{}",
            ),
        ]
        .concat(),
        no_kubernetes(),
    )
    .await;
    for token in [None, Some("Bearer wrong")] {
        let headers: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
        let endless =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let (status, _, _) = post_traces(&receiver, &headers, endless).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        let (code, _) = grpc_traces(&receiver, &headers, grpc_frame(false, &[])).await;
        assert_eq!(code, tonic::Code::Unauthenticated, "{token:?}");
    }
    let body = spans("checkout", 1, None).encode_to_vec();
    let (status, _, _) = post_traces(
        &receiver,
        &[("authorization", "Bearer the-push-token")],
        Body::from(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(buffered(&agent, "by-token").await, 1);
    assert_eq!(buffered(&agent, "by-account").await, 0);
    agent.shutdown().await;
}

/// Too large by declaration or after decompression is 413 / `RESOURCE_EXHAUSTED`,
/// malformed 400 / `INVALID_ARGUMENT`, each with its reason; nothing is buffered.
#[tokio::test]
async fn oversized_and_malformed_traces_are_refused() {
    use std::io::Write;
    let (mut agent, receiver, _dir) =
        trace_fixture(&pipeline("traces", UNAUTHENTICATED, "{}"), no_kubernetes()).await;
    let limit = PushLimits::default().max_body_bytes;
    // Declared too large: refused before a byte is read.
    let endless =
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
    let declared = (limit + 1).to_string();
    let (status, _, _) =
        post_traces(&receiver, &[("content-length", declared.as_str())], endless).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A gzip bomb: refused at the decompressed limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 40 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    let (status, _, _) = post_traces(
        &receiver,
        &[("content-encoding", "gzip")],
        Body::from(bomb.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, _) = grpc_traces(
        &receiver,
        &[("grpc-encoding", "gzip")],
        grpc_frame(true, &bomb),
    )
    .await;
    assert_eq!(code, tonic::Code::ResourceExhausted);
    // Too many spans, each two bytes on the wire.
    let many = spans("", 300_000, None).encode_to_vec();
    let (status, _, answer) = post_traces(&receiver, &[], Body::from(many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    // Not protobuf.
    let (status, _, answer) = post_traces(&receiver, &[], Body::from("not protobuf")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!answer.is_empty(), "a reason");
    let (code, _) = grpc_traces(&receiver, &[], grpc_frame(false, b"not protobuf")).await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    let (status, _, answer) = post_traces(
        &receiver,
        &[("content-type", "text/plain")],
        Body::from("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        answer,
        "send OTLP traces as application/x-protobuf or application/json"
    );
    assert_eq!(refused(&receiver, "malformed"), 2);
    assert_eq!(buffered(&agent, "traces").await, 0);
    agent.shutdown().await;
}

/// A buffer that is full with `dropNewest` is 429 with `Retry-After` /
/// `RESOURCE_EXHAUSTED`, so the pusher backs off instead of believing its spans were
/// kept.
#[tokio::test]
async fn a_full_buffer_is_429_and_resource_exhausted() {
    let (mut agent, receiver, _dir) = trace_fixture(
        &pipeline(
            "small",
            UNAUTHENTICATED,
            "{maxBytes: 1Mi, whenFull: dropNewest}",
        ),
        no_kubernetes(),
    )
    .await;
    // Incompressible span names of 200 KB fill the 1 MiB buffer within a few pushes.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = || {
        (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect::<String>()
    };
    let mut refused_http = None;
    for _ in 0..12 {
        let body = spans(&noise(), 1, None).encode_to_vec();
        let (status, retry_after, _) = post_traces(&receiver, &[], Body::from(body)).await;
        if status != StatusCode::OK {
            refused_http = Some((status, retry_after));
            break;
        }
    }
    let (status, retry_after) = refused_http.expect("the buffer fills");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("30"));
    let body = spans(&noise(), 1, None).encode_to_vec();
    let (code, _) = grpc_traces(&receiver, &[], grpc_frame(false, &body)).await;
    assert_eq!(code, tonic::Code::ResourceExhausted);
    agent.shutdown().await;
}

/// The namespace selector is applied to the namespace the pusher's service-account
/// token proves, never to the one its resource claims: a workload in `shop` claiming
/// `kube-system` reaches the pipeline taking `shop` and not the one taking
/// `kube-system`.
#[tokio::test]
async fn the_namespace_filter_uses_the_proven_namespace() {
    use kube::client::Body as KubeBody;
    let (service, mut api) =
        tower_test::mock::pair::<Request<KubeBody>, http::Response<KubeBody>>();
    let client = kube::Client::new(service, "default");
    let (mut agent, receiver, _dir) = trace_fixture(
        &[
            pipeline("shop-traces", "{namespaces: {include: [shop]}}", "{}"),
            pipeline(
                "system-traces",
                "{namespaces: {include: [kube-system]}}",
                "{}",
            ),
        ]
        .concat(),
        TokenReviewer::new(Some(client), vec![]),
    )
    .await;
    let api_server = async {
        let (_, send) = api.next_request().await.expect("a TokenReview");
        let answer = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
            "status": {"authenticated": true, "user": {"username": "system:serviceaccount:shop:cart"}},
        });
        send.send_response(http::Response::new(KubeBody::from(
            serde_json::to_vec(&answer).unwrap(),
        )));
    };
    let body = spans("claims kube-system", 2, Some("kube-system")).encode_to_vec();
    let ((status, _, _), ()) = tokio::join!(
        post_traces(
            &receiver,
            &[("authorization", "Bearer token-of-shop-cart")],
            Body::from(body),
        ),
        api_server
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(buffered(&agent, "shop-traces").await, 1);
    assert_eq!(
        buffered(&agent, "system-traces").await,
        0,
        "the claim was believed"
    );
    agent.shutdown().await;
}

/// OTLP/JSON on `/v1/traces`, plain and gzip, with a `charset` parameter, is answered
/// `{}` as JSON once durable, each push a record in the pipeline; broken JSON is 400
/// with its reason, too many spans 413, and nothing of them is buffered.
#[tokio::test]
async fn otlp_json_traces_are_accepted_and_hostile_json_refused() {
    let (mut agent, receiver, _dir) =
        trace_fixture(&pipeline("traces", UNAUTHENTICATED, "{}"), no_kubernetes()).await;
    let span = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-sender"}}]},"scopeSpans":[{"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":"checkout","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}"#;
    let json = ("content-type", "application/json; charset=utf-8");
    let request = |headers: &[(&str, &str)], body: Vec<u8>| {
        let mut request = Request::post("/v1/traces");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::from(body)).unwrap()
    };
    for (headers, body) in [
        (vec![json], span.as_bytes().to_vec()),
        (
            vec![json, ("content-encoding", "gzip")],
            super::gzipped(span.as_bytes()),
        ),
    ] {
        let response = receiver
            .otlp_http_routes()
            .oneshot(request(&headers, body))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, "{}");
    }
    assert_eq!(buffered(&agent, "traces").await, 2);
    let many = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        vec!["{}"; 300_000].join(",")
    );
    for (body, expected, reason) in [
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"AAEC"}]}]}]}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "traceId",
        ),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST, ""),
        (many, StatusCode::PAYLOAD_TOO_LARGE, "more than 250000"),
    ] {
        let (status, _, answer) = post_traces(&receiver, &[json], Body::from(body)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, expected, "{answer}");
        assert!(answer.contains(reason), "{answer}");
    }
    assert_eq!(refused(&receiver, "malformed"), 2);
    assert_eq!(buffered(&agent, "traces").await, 2);
    agent.shutdown().await;
}

/// Posts `body` to Zipkin's `/api/v2/spans` with `headers` (as JSON unless they name
/// a content type): the status and body.
async fn post_zipkin(
    receiver: &PushReceiver,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, Bytes) {
    let routes = receiver.zipkin_routes();
    let (status, _, body) =
        post_to(routes, "/api/v2/spans", "application/json", headers, body).await;
    (status, body)
}

const ZIPKIN_SPANS: &str = r#"[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7","name":"get /cart","kind":"SERVER","timestamp":1700000000000000,"duration":1000,"localEndpoint":{"serviceName":"cart"},"tags":{"http.method":"GET"}}]"#;

/// Zipkin v2 JSON on `/api/v2/spans` reaches only the trace pipelines with a `zipkin`
/// input: 404 before the body is read while none has one; with one, plain and gzip
/// JSON are answered 202 with an empty body once durable (the OTLP-only pipeline takes
/// nothing), credentials are checked by the zipkin input's rules, other media types
/// are 415 and broken JSON 400.
#[tokio::test]
async fn zipkin_spans_reach_the_pipelines_with_a_zipkin_input() {
    let (mut agent, receiver, _dir) = trace_fixture(
        &pipeline("otlp-only", UNAUTHENTICATED, "{}"),
        no_kubernetes(),
    )
    .await;
    let endless =
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
    let (status, answer) = post_zipkin(&receiver, &[], endless).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer, "no pipeline takes Zipkin pushes on this agent");
    agent.shutdown().await;

    let (mut agent, receiver, _dir) = trace_fixture(
        &[
            pipeline("otlp-only", UNAUTHENTICATED, "{}"),
            pipeline(
                "zipkin",
                "{zipkin: {enabled: true}, authentication: {mode: bearerToken, bearerToken: {valueFrom: {secretKeyRef: {name: push, namespace: shop, key: token}}}}}",
                "{}",
            ),
        ]
        .concat(),
        no_kubernetes(),
    )
    .await;
    let endless =
        Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
    let (status, _) = post_zipkin(&receiver, &[], endless).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token");
    let token = ("authorization", "Bearer the-push-token");
    let (status, answer) = post_zipkin(&receiver, &[token], Body::from(ZIPKIN_SPANS)).await;
    assert_eq!((status, answer.as_ref()), (StatusCode::ACCEPTED, &b""[..]));
    let gzip = [token, ("content-encoding", "gzip")];
    let body = super::gzipped(ZIPKIN_SPANS.as_bytes());
    let (status, _) = post_zipkin(&receiver, &gzip, Body::from(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(buffered(&agent, "zipkin").await, 2);
    assert_eq!(buffered(&agent, "otlp-only").await, 0);

    let thrift = [token, ("content-type", "application/x-thrift")];
    let (status, answer) = post_zipkin(&receiver, &thrift, Body::from(ZIPKIN_SPANS)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        answer,
        "send Zipkin spans as application/json (Zipkin v2 JSON)"
    );
    let (status, answer) = post_zipkin(&receiver, &[token], Body::from("[{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert!(!answer.is_empty(), "a reason");
    assert_eq!(buffered(&agent, "zipkin").await, 2);
    agent.shutdown().await;
}

mod enrichment;
