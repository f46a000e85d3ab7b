//! Pushed OTLP logs enriched from the sending pod and judged by its namespace, against
//! kube's mock client (the trust rule of issue 16: a log pipeline's namespace selector
//! never believes the namespace a sender claims). Over HTTP and gRPC, with a push
//! token and without authentication.

use axum::extract::ConnectInfo;
use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, KeyValue, LogRecord, Resource, ResourceLogs, ScopeLogs,
    any_value,
};
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use tonic::codegen::Service;

use super::pods::{
    POD_ADDRESS, SYSTEM_POD_ADDRESS, UNKNOWN_ADDRESS, address, coredns_pod, mocked_starter,
    serve_pods, web_pod,
};
use super::*;
use crate::internal_events::EnrichedSignal;
use crate::push::otlp_grpc::OtlpLogsGrpc;

/// A log pipeline `name` whose `otlp` input has `namespaces` and `authentication`,
/// shipping JSON lines to `sink`.
fn log_pipeline(
    name: &str,
    namespaces: &str,
    authentication: &str,
    sink: &RecordingReceiver,
) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {{otlp: {{enabled: true, namespaces: {namespaces}, authentication: {authentication}}}}}\n      output: {{http: {{url: \"{}/ingest\", format: jsonLines}}}}\n",
        sink.base_url()
    )
}

/// One record with `body` whose resource claims `k8s.namespace.name: claims`.
fn claiming(body: &str, claims: &str) -> ExportLogsServiceRequest {
    let string = |text: &str| AnyValue {
        value: Some(any_value::Value::StringValue(text.into())),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "k8s.namespace.name".into(),
                    value: Some(string(claims)),
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(string(body)),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// Posts `request` to `/v1/logs` as if over a connection from `peer`, with `headers`.
async fn post_from(
    receiver: &PushReceiver,
    peer: &str,
    headers: &[(&str, &str)],
    request: &ExportLogsServiceRequest,
) -> StatusCode {
    let mut http = Request::post("/v1/logs").header(header::CONTENT_TYPE, "application/x-protobuf");
    for (name, value) in headers {
        http = http.header(*name, *value);
    }
    let mut http = http.body(Body::from(request.encode_to_vec())).unwrap();
    http.extensions_mut().insert(ConnectInfo(address(peer)));
    let response = tokio::time::timeout(PROMPTLY, receiver.otlp_http_routes().oneshot(http))
        .await
        .expect("an answer")
        .unwrap();
    response.status()
}

/// Sends `request` to `LogsService/Export` as if over a connection from `peer`: the
/// gRPC status.
async fn export_from(
    receiver: &PushReceiver,
    peer: &str,
    request: &ExportLogsServiceRequest,
) -> tonic::Code {
    let message = request.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut http = http::Request::post(kaas_proto::otlp::EXPORT_LOGS_PATH)
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(Body::from(frame)))
        .unwrap();
    (http.extensions_mut()).insert(tonic::transport::server::TcpConnectInfo {
        local_addr: None,
        remote_addr: Some(address(peer)),
    });
    let mut service = OtlpLogsGrpc::new(receiver.clone());
    let response = tokio::time::timeout(PROMPTLY, service.call(http))
        .await
        .expect("an answer")
        .unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            let collected = response.into_body().collect().await.unwrap();
            collected.trailers().expect("trailers")["grpc-status"].clone()
        }
    };
    tonic::Code::from(status.to_str().unwrap().parse::<i32>().unwrap())
}

/// The resource attributes `sink` received by record body, once it has `records`.
async fn delivered(
    sink: &RecordingReceiver,
    records: usize,
) -> BTreeMap<String, serde_json::Value> {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let by_body: BTreeMap<String, serde_json::Value> = (sink.received().iter())
            .flat_map(|request| {
                String::from_utf8_lossy(&request.body)
                    .into_owned()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|line| {
                let document: serde_json::Value = serde_json::from_str(&line).unwrap();
                (
                    document["body"].as_str().unwrap().to_owned(),
                    document["resource"].clone(),
                )
            })
            .collect();
        if by_body.len() >= records {
            return by_body;
        }
        assert!(
            std::time::Instant::now() < until,
            "records not delivered: {by_body:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Without a service-account token (a push token, or no authentication), a log
/// pipeline's namespace selector judges the namespace of the pod the records came
/// from, never the one they claim: a `kube-system` pod claiming `shop` reaches neither
/// the pipeline including `shop` nor the one with the default exclusion of system
/// namespaces (over HTTP and gRPC); a `shop` pod claiming `kube-system` reaches both,
/// its resource naming the pod. From an address no pod has, the claim is all there is.
/// The lookups are counted apart from spans', and `/metrics` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_logs_are_judged_by_the_sending_pods_namespace_never_the_claim() {
    let (starter, mut api) = mocked_starter();
    let shop_sink = RecordingReceiver::start(Reply::status(200)).await;
    let default_sink = RecordingReceiver::start(Reply::status(200)).await;
    let push_token = "{mode: bearerToken, bearerToken: {valueFrom: {secretKeyRef: {name: push, namespace: shop, key: token}}}}";
    let pipelines = [
        log_pipeline(
            "shop-by-push-token",
            "{include: [shop]}",
            push_token,
            &shop_sink,
        ),
        log_pipeline(
            "default-open",
            "{}",
            "{mode: unauthenticated}",
            &default_sink,
        ),
    ]
    .concat();
    let config = format!("logPipelines:\n{pipelines}");
    let (mut agent, receiver, _dir) =
        pushing_fixture(&config, no_kubernetes(), Some(starter)).await;
    let _watch = serve_pods(&agent, &mut api, vec![web_pod(), coredns_pod()]).await;
    let before = receiver.stats.enrichment(EnrichedSignal::LogRecords);

    let token = [("authorization", "Bearer the-push-token")];
    for (body, peer, claims) in [
        ("system pod claims shop", SYSTEM_POD_ADDRESS, "shop"),
        ("shop pod claims kube-system", POD_ADDRESS, "kube-system"),
        ("unknown sender claims shop", UNKNOWN_ADDRESS, "shop"),
    ] {
        let request = claiming(body, claims);
        assert_eq!(
            post_from(&receiver, peer, &token, &request).await,
            StatusCode::OK,
            "{body}"
        );
    }
    let over_grpc = claiming("system pod over gRPC claims shop", "shop");
    assert_eq!(
        export_from(&receiver, SYSTEM_POD_ADDRESS, &over_grpc).await,
        tonic::Code::Ok
    );
    let over_grpc = claiming("shop pod over gRPC claims kube-system", "kube-system");
    assert_eq!(
        export_from(&receiver, POD_ADDRESS, &over_grpc).await,
        tonic::Code::Ok
    );

    // The push-token pipeline: the shop pod's records (HTTP with the token; the gRPC
    // request carried none) and the unknown sender's claim.
    let shop = delivered(&shop_sink, 2).await;
    assert_eq!(
        shop.keys().collect::<Vec<_>>(),
        ["shop pod claims kube-system", "unknown sender claims shop"]
    );
    // The open pipeline with the default exclusion: the shop pod's records, both ways.
    let open = delivered(&default_sink, 3).await;
    assert_eq!(
        open.keys().collect::<Vec<_>>(),
        [
            "shop pod claims kube-system",
            "shop pod over gRPC claims kube-system",
            "unknown sender claims shop"
        ]
    );
    let web = serde_json::json!({
        "k8s.namespace.name": "shop", "k8s.pod.name": "web-7d4b9c8f5-x2x9q",
        "k8s.pod.uid": "uid-web", "k8s.deployment.name": "web", "k8s.node.name": "node-a",
    });
    assert_eq!(shop["shop pod claims kube-system"], web);
    assert_eq!(open["shop pod over gRPC claims kube-system"], web);
    assert_eq!(
        shop["unknown sender claims shop"],
        serde_json::json!({"k8s.namespace.name": "shop"}),
        "no pod at that address: the claim stays and is judged"
    );
    // Nothing of the system pod arrives later either: every answer came once durable.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !(shop_sink
            .received()
            .iter()
            .chain(default_sink.received().iter()))
        .any(|request| String::from_utf8_lossy(&request.body).contains("system pod")),
        "the system pod's claim was believed"
    );

    let counted: Vec<(&str, u64)> = (receiver
        .stats
        .enrichment(EnrichedSignal::LogRecords)
        .into_iter())
    .zip(before)
    .map(|((outcome, after), (_, before))| (outcome, after - before))
    .collect();
    assert_eq!(
        counted,
        [("enriched", 4), ("not_matched", 1), ("other_namespace", 0)]
    );
    assert_eq!(
        receiver.stats.enrichment(EnrichedSignal::Spans),
        [("enriched", 0), ("not_matched", 0), ("other_namespace", 0)]
    );
    agent.shutdown().await;
}
