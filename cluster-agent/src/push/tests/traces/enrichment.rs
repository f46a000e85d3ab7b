//! Pushed spans enriched from the sending pod (issue 17), against kube's mock client:
//! the pod found by the connection's address names itself, its Deployment, its node
//! and the cluster in the spans' resource, over what the sender claimed, over HTTP and
//! gRPC; a service-account token's namespace wins over the pod's; without one, the
//! namespace selector judges the pod's namespace, never the claim; and no pod watch runs
//! while no pipeline taking enriched pushes does.

use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use kaas_proto::otlp::Resource;
use kaas_test_support::recording_receiver::{RecordingReceiver, Reply};
use kube::client::Body as KubeBody;

use super::super::pods::{
    POD_ADDRESS, SYSTEM_POD_ADDRESS, UNKNOWN_ADDRESS, address, coredns_pod, mocked_starter,
    serve_pods, serve_the_web_pod, web_pod,
};
use super::*;
use crate::discovery::kubernetes::mock_api::{self, next_request};
use crate::internal_events::EnrichedSignal;

/// A trace pipeline `name` with `input` shipping over OTLP/HTTP to `sink`.
fn shipping_to(name: &str, input: &str, sink: &RecordingReceiver) -> String {
    format!(
        "  - metadata: {{name: {name}}}\n    spec:\n      input: {input}\n      output: {{otlp: {{endpoint: \"{}\", protocol: http}}}}\n",
        sink.base_url()
    )
}

/// A request of one span `name` whose resource claims `claims`.
fn claiming(name: &str, claims: &[(&str, &str)]) -> ExportTraceServiceRequest {
    let mut request = spans(name, 1, None);
    request.resource_spans[0].resource = Some(Resource {
        attributes: claims
            .iter()
            .map(|(key, value)| KeyValue {
                key: (*key).into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue((*value).into())),
                }),
            })
            .collect(),
        ..Resource::default()
    });
    request
}

/// Posts `request` to `/v1/traces` as if over a connection from `peer`, with
/// `headers`: the status.
async fn post_from(
    receiver: &PushReceiver,
    peer: &str,
    headers: &[(&str, &str)],
    request: &ExportTraceServiceRequest,
) -> StatusCode {
    let mut http =
        Request::post("/v1/traces").header(header::CONTENT_TYPE, "application/x-protobuf");
    for (name, value) in headers {
        http = http.header(*name, *value);
    }
    let mut http = http.body(Body::from(request.encode_to_vec())).unwrap();
    http.extensions_mut().insert(ConnectInfo(address(peer)));
    let routes = receiver.otlp_http_routes();
    let response = tokio::time::timeout(PROMPTLY, routes.oneshot(http))
        .await
        .expect("an answer")
        .unwrap();
    response.status()
}

/// The resource attributes of each span `sink` received, by span name, once it has
/// `spans` of them.
async fn delivered(
    sink: &RecordingReceiver,
    spans: usize,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut by_span = BTreeMap::new();
        for request in sink.received() {
            let decoded = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
            for resource_spans in decoded.resource_spans {
                let attributes: BTreeMap<String, String> = (resource_spans.resource)
                    .unwrap_or_default()
                    .attributes
                    .into_iter()
                    .map(|attribute| {
                        let value = match attribute.value.and_then(|v| v.value) {
                            Some(any_value::Value::StringValue(text)) => text,
                            other => format!("{other:?}"),
                        };
                        (attribute.key, value)
                    })
                    .collect();
                for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                    by_span.insert(span.name.clone(), attributes.clone());
                }
            }
        }
        if by_span.len() >= spans {
            return by_span;
        }
        assert!(
            std::time::Instant::now() < until,
            "spans not delivered: {by_span:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// What the agent writes for the web pod, whatever the sender claimed.
const WEB_POD: [(&str, &str); 6] = [
    ("k8s.cluster.name", CLUSTER),
    ("k8s.namespace.name", "shop"),
    ("k8s.pod.name", "web-7d4b9c8f5-x2x9q"),
    ("k8s.pod.uid", "uid-web"),
    ("k8s.deployment.name", "web"),
    ("k8s.node.name", "node-a"),
];

/// Spans pushed from the web pod's address, over OTLP/HTTP (claiming another
/// namespace and pod) and gRPC (claiming nothing), carry the pod, its Deployment, its
/// node and the cluster, the forged claims replaced and a claim of the sender's own
/// kept; spans from an address no pod has keep what they claim, with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_a_known_pod_carry_its_identity_over_the_senders_claims() {
    let sink = RecordingReceiver::start(Reply::status(200)).await;
    let (starter, mut api) = mocked_starter();
    let (mut agent, receiver, _dir) = enriching_fixture(
        &shipping_to("enriched", UNAUTHENTICATED, &sink),
        no_kubernetes(),
        Some(starter),
    )
    .await;
    let _watch = serve_the_web_pod(&agent, &mut api).await;

    let forged = claiming(
        "forged",
        &[
            ("k8s.namespace.name", "kube-system"),
            ("k8s.pod.name", "coredns-1"),
            ("service.name", "web"),
        ],
    );
    assert_eq!(
        post_from(&receiver, POD_ADDRESS, &[], &forged).await,
        StatusCode::OK
    );
    let honest = spans("over-grpc", 1, None).encode_to_vec();
    let (code, _) = grpc_traces_from(
        &receiver,
        Some(address(POD_ADDRESS)),
        &[],
        grpc_frame(false, &honest),
    )
    .await;
    assert_eq!(code, tonic::Code::Ok);
    let elsewhere = claiming("unknown-sender", &[("k8s.namespace.name", "kube-system")]);
    assert_eq!(
        post_from(&receiver, UNKNOWN_ADDRESS, &[], &elsewhere).await,
        StatusCode::OK
    );

    let delivered = delivered(&sink, 3).await;
    let mut forged_expected = expected(&WEB_POD);
    forged_expected.insert("service.name".into(), "web".into());
    assert_eq!(delivered["forged"], forged_expected);
    assert_eq!(delivered["over-grpc"], expected(&WEB_POD));
    assert_eq!(
        delivered["unknown-sender"],
        expected(&[
            ("k8s.namespace.name", "kube-system"),
            ("k8s.cluster.name", CLUSTER)
        ]),
        "no pod at that address: the claim stays, the cluster is the agent's"
    );
    agent.shutdown().await;
}

/// Answers the next TokenReview as a token of `namespace`'s service account `cart`.
async fn review_as(api: &mut mock_api::Handle, namespace: &str) {
    let (_, send) = api.next_request().await.expect("a TokenReview");
    let answer = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
        "status": {"authenticated": true,
                   "user": {"username": format!("system:serviceaccount:{namespace}:cart")}},
    });
    send.send_response(http::Response::new(KubeBody::from(
        serde_json::to_vec(&answer).unwrap(),
    )));
}

/// A service-account token proves its namespace, which wins over the pod's and the
/// claim: from the web pod's address, a token of `payments` gives `payments` and
/// nothing of the pod (which is not its sender's); a token of `shop` gives the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_tokens_namespace_wins_over_the_pod_and_the_claim() {
    let sink = RecordingReceiver::start(Reply::status(200)).await;
    let (starter, mut pods_api) = mocked_starter();
    let (service, mut review_api) =
        tower_test::mock::pair::<Request<KubeBody>, http::Response<KubeBody>>();
    let reviewer = TokenReviewer::new(Some(kube::Client::new(service, "default")), vec![]);
    let (mut agent, receiver, _dir) = enriching_fixture(
        &shipping_to("by-token", "{}", &sink),
        reviewer,
        Some(starter),
    )
    .await;
    let _watch = serve_the_web_pod(&agent, &mut pods_api).await;

    let claims = [("k8s.namespace.name", "kube-system")];
    for (span, token, namespace) in [
        ("payments-token", "Bearer token-of-payments", "payments"),
        ("shop-token", "Bearer token-of-shop", "shop"),
    ] {
        let request = claiming(span, &claims);
        let authorization = [("authorization", token)];
        let (status, ()) = tokio::join!(
            post_from(&receiver, POD_ADDRESS, &authorization, &request),
            review_as(&mut review_api, namespace)
        );
        assert_eq!(status, StatusCode::OK, "{span}");
    }

    let delivered = delivered(&sink, 2).await;
    assert_eq!(
        delivered["payments-token"],
        expected(&[
            ("k8s.cluster.name", CLUSTER),
            ("k8s.namespace.name", "payments")
        ])
    );
    assert_eq!(delivered["shop-token"], expected(&WEB_POD));
    agent.shutdown().await;
}

/// Gives the tasks a started watch would run (the watcher, the client's buffer) their
/// turns on this current-thread runtime.
async fn let_spawned_tasks_run() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// No pod watch is started while no pipeline taking enriched pushes runs (an agent
/// with a metric pipeline only, or none); the first such pipeline (a trace pipeline, a
/// log pipeline with an `otlp` input) starts it, and it is let go with the last.
#[tokio::test]
async fn no_pod_watch_runs_while_no_pipeline_takes_enriched_pushes() {
    let (starter, mut api) = mocked_starter();
    let (mut agent, _receiver, _dir) = enriching_fixture("", no_kubernetes(), Some(starter)).await;
    let parse = |text: &str| {
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\nexternalLabels: {{cluster: {CLUSTER}}}\n{text}"
        );
        AgentConfig::parse(&text, &kaas_pipeline::ValidationContext::standalone()).unwrap()
    };
    let metric_pipeline = "pipelines:\n  - metadata: {name: metrics}\n    spec:\n      input: {otlp: {enabled: true, authentication: {mode: unauthenticated}}}\n      output: {prometheusRemoteWrite: {url: 'http://127.0.0.1:9/api/v1/write'}}\n";
    let report = agent.apply(parse(metric_pipeline)).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let_spawned_tasks_run().await;
    assert!(!agent.push_enrichment.watches_pods());
    assert!(
        api.next_request().now_or_never().is_none(),
        "a pod watch started for a metric pipeline"
    );

    let log_pipeline = "logPipelines:\n  - metadata: {name: logs}\n    spec:\n      input: {otlp: {enabled: true, authentication: {mode: unauthenticated}}}\n      output: {http: {url: 'http://127.0.0.1:9/ingest', format: jsonLines}}\n";
    let traces = format!(
        "tracePipelines:\n{}",
        pipeline("traces", UNAUTHENTICATED, "{}")
    );
    for (case, config) in [
        ("log pipeline", log_pipeline.to_owned()),
        ("trace pipeline", traces),
    ] {
        let report = agent.apply(parse(&config)).await;
        assert!(report.failed.is_empty(), "{case}: {report:?}");
        assert!(agent.push_enrichment.watches_pods(), "{case}");
        let (request, _) = next_request(&mut api).await;
        assert_eq!(request.uri().path(), "/api/v1/pods", "{case}");

        agent.apply(parse(metric_pipeline)).await;
        assert!(
            !agent.push_enrichment.watches_pods(),
            "{case}: the cache outlived the last pipeline taking enriched pushes"
        );
    }
    agent.shutdown().await;
}

/// A push-token input (the fixture's Secret `shop/push`) with `namespaces`.
fn push_token_input(namespaces: &str) -> String {
    format!(
        "{{namespaces: {namespaces}, authentication: {{mode: bearerToken, bearerToken: {{valueFrom: {{secretKeyRef: {{name: push, namespace: shop, key: token}}}}}}}}}}"
    )
}

/// Without a service-account token (a push token, or no authentication), the namespace
/// selector judges the namespace of the pod the request came from, as the API server
/// lists it, never the one the spans claim: a `kube-system` pod claiming `shop` is left
/// out by the default exclusion and by an include of `shop`, a `shop` pod claiming
/// `kube-system` is taken. From an address no pod has, or with no address, nothing is
/// known and the request is taken whole (as before enrichment). The lookups are
/// counted, and `/metrics` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_proven_namespace_the_pods_namespace_is_judged_never_the_claim() {
    let (starter, mut api) = mocked_starter();
    let pipelines = [
        pipeline("by-push-token", &push_token_input("{}"), "{}"),
        pipeline(
            "shop-by-push-token",
            &push_token_input("{include: [shop]}"),
            "{}",
        ),
        pipeline("open", UNAUTHENTICATED, "{}"),
    ]
    .concat();
    let (mut agent, receiver, _dir) =
        enriching_fixture(&pipelines, no_kubernetes(), Some(starter)).await;
    let _watch = serve_pods(&agent, &mut api, vec![web_pod(), coredns_pod()]).await;
    let stats_before = receiver.stats.enrichment(EnrichedSignal::Spans);

    let push_token = [("authorization", "Bearer the-push-token")];
    let claims_shop = claiming("claims-shop", &[("k8s.namespace.name", "shop")]);
    let claims_system = claiming("claims-system", &[("k8s.namespace.name", "kube-system")]);
    for (case, peer, headers, request) in [
        (
            "system pod, push token",
            SYSTEM_POD_ADDRESS,
            &push_token[..],
            &claims_shop,
        ),
        (
            "system pod, no token",
            SYSTEM_POD_ADDRESS,
            &[][..],
            &claims_shop,
        ),
        (
            "shop pod, push token",
            POD_ADDRESS,
            &push_token[..],
            &claims_system,
        ),
        (
            "no pod, push token",
            UNKNOWN_ADDRESS,
            &push_token[..],
            &claims_system,
        ),
    ] {
        let status = post_from(&receiver, peer, headers, request).await;
        assert_eq!(status, StatusCode::OK, "{case}");
    }
    // No connection address at all (as behind a proxy the agent cannot see through).
    let (status, _, _) = post_traces(
        &receiver,
        &push_token,
        Body::from(claims_system.encode_to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "no peer address");

    for (name, records) in [("by-push-token", 3), ("shop-by-push-token", 3), ("open", 3)] {
        assert_eq!(
            buffered(&agent, name).await,
            records,
            "{name}: the system pod's requests must be left out, the others taken"
        );
    }
    let counted: Vec<(&str, u64)> = (receiver.stats.enrichment(EnrichedSignal::Spans).into_iter())
        .zip(stats_before)
        .map(|((outcome, after), (_, before))| (outcome, after - before))
        .collect();
    assert_eq!(
        counted,
        [("enriched", 3), ("not_matched", 2), ("other_namespace", 0)]
    );
    let exposed = exposition(&agent, &receiver);
    for outcome in ["enriched", "not_matched", "other_namespace"] {
        let series = format!("kaas_agent_push_spans_enrichment_total{{outcome=\"{outcome}\"}}");
        assert!(exposed.contains(&series), "{series} missing:\n{exposed}");
    }
    agent.shutdown().await;
}

/// The agent's `/metrics` text with `receiver`'s push counters.
fn exposition(agent: &Agent, receiver: &PushReceiver) -> String {
    let registry = crate::telemetry::registry(
        agent.pipelines.clone(),
        agent.log_pipelines.clone(),
        agent.trace_pipelines.clone(),
        Arc::default(),
        Arc::default(),
        receiver.stats.clone(),
        0,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// A service-account token's namespace is what the selector judges, whatever pod the
/// request came from: a `shop` token from the `kube-system` pod is taken (the pod is
/// not its sender, counted as other_namespace), a `kube-system` token from the `shop`
/// pod is left out by the default exclusion, whatever the spans claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_tokens_namespace_is_judged_over_the_pods() {
    let (starter, mut pods_api) = mocked_starter();
    let (service, mut review_api) =
        tower_test::mock::pair::<Request<KubeBody>, http::Response<KubeBody>>();
    let reviewer = TokenReviewer::new(Some(kube::Client::new(service, "default")), vec![]);
    let (mut agent, receiver, _dir) = enriching_fixture(
        &pipeline("by-service-account", "{}", "{}"),
        reviewer,
        Some(starter),
    )
    .await;
    let _watch = serve_pods(&agent, &mut pods_api, vec![web_pod(), coredns_pod()]).await;
    let stats_before = receiver.stats.enrichment(EnrichedSignal::Spans);

    let claims_shop = claiming("claims-shop", &[("k8s.namespace.name", "shop")]);
    // Two tokens: the reviewer remembers a token's review.
    for (case, peer, token, namespace) in [
        (
            "shop token from the system pod",
            SYSTEM_POD_ADDRESS,
            "Bearer token-of-shop",
            "shop",
        ),
        (
            "system token from the shop pod",
            POD_ADDRESS,
            "Bearer token-of-kube-system",
            "kube-system",
        ),
    ] {
        let authorization = [("authorization", token)];
        let (status, ()) = tokio::join!(
            post_from(&receiver, peer, &authorization, &claims_shop),
            review_as(&mut review_api, namespace)
        );
        assert_eq!(status, StatusCode::OK, "{case}");
    }
    assert_eq!(buffered(&agent, "by-service-account").await, 1);
    let counted: Vec<(&str, u64)> = (receiver.stats.enrichment(EnrichedSignal::Spans).into_iter())
        .zip(stats_before)
        .map(|((outcome, after), (_, before))| (outcome, after - before))
        .collect();
    assert_eq!(
        counted,
        [("enriched", 0), ("not_matched", 0), ("other_namespace", 2)]
    );
    agent.shutdown().await;
}
