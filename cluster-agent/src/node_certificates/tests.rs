//! The node certificate endpoint against kube's mock client (the API server's side of
//! each TokenReview and pod read is scripted and checked) and a fake control stream.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use tower::ServiceExt as _;
use tower_test::mock::pair;

use super::*;
use crate::push::auth::tests::{ApiServer, answer};

const TOKEN: &str = "projected-token-of-node-1";
const NODE: &str = "ip-10-0-1-7.eu-west-1.compute.internal";
const CLUSTER_ID: &str = "shop.edge-1";
const AUDIENCES: &[&str] = &[NODE_CERTIFICATE_AUDIENCE];

/// An issuer with a mock API server; the stream side is returned for the test to play.
fn issuer() -> (Arc<NodeIssuer>, ApiServer, IssuanceQueue) {
    let (service, server) = pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (stream, queue) = issuance_channel();
    let account = ServiceAccountName::parse(DEFAULT_NODE_SERVICE_ACCOUNT).unwrap();
    (
        Arc::new(NodeIssuer::new(
            Some(client),
            account,
            stream,
            Arc::default(),
        )),
        server,
        queue,
    )
}

fn body(instance: &str, csr_pem: &str) -> Vec<u8> {
    serde_json::to_vec(&NodeCertificateRequest {
        instance_name: instance.to_owned(),
        csr_pem: csr_pem.to_owned(),
    })
    .unwrap()
}

/// `issue` with a body it owns, for `tokio::join!`.
async fn ask(
    issuer: &NodeIssuer,
    token: &str,
    body: Vec<u8>,
) -> Result<NodeCertificate, NodeRefusal> {
    issuer.issue(Some(token), &body).await
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// A review of the node agent's token as the API server answers it (1.30 and later:
/// with the node's name).
fn node_agent_review(node: Option<&str>) -> serde_json::Value {
    let mut extra = serde_json::json!({
        "authentication.kubernetes.io/pod-name": ["cluster-agent-node-x7k2p"],
        "authentication.kubernetes.io/pod-uid": ["uid-1"],
    });
    if let Some(node) = node {
        extra["authentication.kubernetes.io/node-name"] = serde_json::json!([node]);
    }
    serde_json::json!({
        "authenticated": true,
        "audiences": [NODE_CERTIFICATE_AUDIENCE],
        "user": {
            "username": "system:serviceaccount:kaas-observer-node:cluster-agent-node",
            "extra": extra,
        },
    })
}

/// The control stream's side: takes one issuance and answers it as the observer does.
async fn observer_answers(queue: &mut IssuanceQueue, refused: &str) -> CertificateRequest {
    let issuance = tokio::time::timeout(Duration::from_secs(1), queue.next())
        .await
        .expect("an issuance within a second");
    let request = queue.send(issuance);
    let issued = CertificateIssued {
        certificate_pem: if refused.is_empty() {
            "node certificate".into()
        } else {
            String::new()
        },
        ca_bundle_pem: "bundle".into(),
        not_after_unix_seconds: 1_900_000_000,
        instance_name: request.instance_name.clone(),
        refused: refused.to_owned(),
    };
    assert!(
        queue.answer(issued, CLUSTER_ID).is_none(),
        "routed to the node"
    );
    request
}

/// Issue 16: the node agent's projected token, bound to a pod on the node it names,
/// gets that node's certificate through the stream, with the cluster id; the stream
/// is asked for exactly that instance with the node's CSR.
#[tokio::test]
async fn the_node_agent_gets_its_own_nodes_certificate() {
    let (issuer, mut server, mut queue) = issuer();
    let csr = csr();
    let request = body(NODE, &csr);
    let (issued, _, sent) = tokio::join!(
        issuer.issue(Some(TOKEN), &request),
        answer(
            &mut server,
            TOKEN,
            Some(AUDIENCES),
            node_agent_review(Some(NODE))
        ),
        observer_answers(&mut queue, ""),
    );
    assert_eq!(sent.instance_name, NODE);
    assert_eq!(sent.csr_pem, csr);
    assert_eq!(
        sent.role,
        AgentRole::Node as i32,
        "the certificate allows the node role"
    );
    assert_eq!(
        issued,
        Ok(NodeCertificate {
            cluster_id: CLUSTER_ID.into(),
            certificate_pem: "node certificate".into(),
            ca_bundle_pem: "bundle".into(),
            not_after_unix_seconds: 1_900_000_000,
        })
    );
    // At once again: too soon for this node, refused before any TokenReview (the
    // review is cached; no API server answers here).
    let again = issuer.issue(Some(TOKEN), &request).await;
    assert_eq!(again, Err(NodeRefusal::TooSoon));
    assert_eq!(issuer.stats.node_certificates_issued(), 1);
    assert_eq!(issuer.stats.node_certificates_refused(), [("too_soon", 1)]);
}

/// Issue 16: a token of another service account (here the cluster-level agent's own,
/// and a workload's) is refused, whatever node it names.
#[tokio::test]
async fn another_service_accounts_token_is_refused() {
    let (issuer, mut server, _queue) = issuer();
    let mut review = node_agent_review(Some(NODE));
    review["user"]["username"] = "system:serviceaccount:shop:cart".into();
    let (refused, ()) = tokio::join!(
        ask(&issuer, "cart-token", body(NODE, &csr())),
        answer(&mut server, "cart-token", Some(AUDIENCES), review),
    );
    let Err(NodeRefusal::Forbidden(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("shop/cart") && reason.contains(DEFAULT_NODE_SERVICE_ACCOUNT),
        "{reason}"
    );
}

/// Issue 16: the node agent's token may name only its own pod's node.
#[tokio::test]
async fn a_node_name_that_is_not_the_pods_is_refused() {
    let (issuer, mut server, _queue) = issuer();
    let (refused, ()) = tokio::join!(
        ask(&issuer, TOKEN, body("node-2", &csr())),
        answer(
            &mut server,
            TOKEN,
            Some(AUDIENCES),
            node_agent_review(Some(NODE))
        ),
    );
    let Err(NodeRefusal::Forbidden(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("\"node-2\" is not the requesting pod's node"),
        "{reason}"
    );
}

/// Issue 16: a token for another audience is refused: the API server says so, or, an
/// API server that ignores audiences, by the missing audience in its answer.
#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (issuer, mut server, _queue) = issuer();
    let wrong = serde_json::json!({
        "authenticated": false,
        "error": "[invalid bearer token, token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences [\"kaas-observer-node-certificate\"]]",
    });
    let (refused, ()) = tokio::join!(
        ask(&issuer, "api-token", body(NODE, &csr())),
        answer(&mut server, "api-token", Some(AUDIENCES), wrong),
    );
    let Err(NodeRefusal::Unauthenticated(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("invalid for the target audiences"),
        "{reason}"
    );

    let mut unaware = node_agent_review(Some(NODE));
    unaware["audiences"] = serde_json::json!(["https://kubernetes.default.svc"]);
    let (refused, ()) = tokio::join!(
        ask(&issuer, "other-token", body(NODE, &csr())),
        answer(&mut server, "other-token", Some(AUDIENCES), unaware),
    );
    let Err(NodeRefusal::Unauthenticated(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(reason.contains(NODE_CERTIFICATE_AUDIENCE), "{reason}");
}

/// Issue 16: malformed, oversized and misnamed requests are refused before the API
/// server is asked anything (the mock would fail a request nobody answers).
#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_without_a_review() {
    let (issuer, _server, _queue) = issuer();
    let cases: [(Vec<u8>, &str); 7] = [
        (b"{not json".to_vec(), "not a node certificate request"),
        (
            br#"{"instanceName":"n","csrPem":"x","extra":1}"#.to_vec(),
            "unknown field",
        ),
        (
            body(
                NODE,
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            ),
            "csrPem: not a valid certificate request",
        ),
        (
            body("Node_1", &csr()),
            "instanceName: \"Node_1\" is not a valid DNS-1123 subdomain",
        ),
        (
            body(&"a".repeat(300), &csr()),
            "instanceName: longer than 253 characters",
        ),
        (body("default", &csr()), "the cluster-level instance"),
        (vec![b' '; MAX_NODE_REQUEST_BYTES + 1], "over 16384 bytes"),
    ];
    for (request, expected) in cases {
        let refused =
            tokio::time::timeout(Duration::from_secs(1), issuer.issue(Some(TOKEN), &request))
                .await
                .expect("refused without asking the API server")
                .expect_err(expected);
        assert!(refused.reason().contains(expected), "{refused:?}");
    }
    let none = issuer.issue(None, &body(NODE, &csr())).await;
    assert!(
        matches!(none, Err(NodeRefusal::Unauthenticated(_))),
        "{none:?}"
    );
}

/// The API server's side of reading the token's pod: answers it with `uid`.
async fn serve_pod(server: &mut ApiServer, uid: &str) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(1), server.next_request())
        .await
        .expect("a pod read within a second")
        .expect("a request");
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(
        request.uri().path(),
        "/api/v1/namespaces/kaas-observer-node/pods/cluster-agent-node-x7k2p"
    );
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cluster-agent-node-x7k2p", "namespace": "kaas-observer-node", "uid": uid},
        "spec": {"nodeName": NODE, "containers": []},
    });
    send.send_response(Response::new(Body::from(serde_json::to_vec(&pod).unwrap())));
}

/// Before Kubernetes 1.30 the review names the pod but not its node: the pod is read
/// and must still be the token's (same uid); a replaced pod is refused.
#[tokio::test]
async fn without_the_node_extra_the_bound_pod_is_looked_up() {
    let (issuer, mut server, mut queue) = issuer();
    let issued = tokio::join!(
        ask(&issuer, TOKEN, body(NODE, &csr())),
        async {
            answer(&mut server, TOKEN, Some(AUDIENCES), node_agent_review(None)).await;
            serve_pod(&mut server, "uid-1").await;
        },
        observer_answers(&mut queue, "")
    )
    .0;
    assert_eq!(
        issued.map(|c| c.certificate_pem),
        Ok("node certificate".into())
    );

    let (refused, ()) = tokio::join!(
        ask(&issuer, "replaced-pod-token", body(NODE, &csr())),
        async {
            answer(
                &mut server,
                "replaced-pod-token",
                Some(AUDIENCES),
                node_agent_review(None),
            )
            .await;
            serve_pod(&mut server, "uid-2").await;
        },
    );
    assert!(
        matches!(&refused, Err(NodeRefusal::Forbidden(r)) if r.contains("is gone")),
        "{refused:?}"
    );
}

/// The observer's refusal reaches the node agent with its reason; a renewal answer
/// (the stream's own instance) is not taken for a node's.
#[tokio::test]
async fn the_observers_refusal_is_passed_on_and_renewals_pass_through() {
    let (issuer, mut server, mut queue) = issuer();
    let (refused, (), _) = tokio::join!(
        ask(&issuer, TOKEN, body(NODE, &csr())),
        answer(
            &mut server,
            TOKEN,
            Some(AUDIENCES),
            node_agent_review(Some(NODE))
        ),
        observer_answers(
            &mut queue,
            "cluster \"shop.edge-1\" already has 10000 agent instances"
        ),
    );
    assert!(
        matches!(&refused, Err(NodeRefusal::Forbidden(r)) if r.contains("the observer refused: cluster")),
        "{refused:?}"
    );
    let renewal = CertificateIssued {
        instance_name: "default".into(),
        certificate_pem: "renewed".into(),
        ..CertificateIssued::default()
    };
    assert_eq!(queue.answer(renewal.clone(), CLUSTER_ID), Some(renewal));
}

/// Without a stream (nothing takes the issuance), the node agent is told to retry
/// once the queue is full, and refusals carry their status, JSON reason and, when
/// retrying helps, `Retry-After`.
#[tokio::test]
async fn refusals_are_json_with_their_status() {
    let (issuer, _server, _queue) = issuer();
    let response = issuer
        .clone()
        .routes()
        .oneshot(
            http::Request::post(NODE_CERTIFICATE_PATH)
                .body(axum::body::Body::from(vec![b'x'; 20_000]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let refusal: NodeCertificateRefusal = serde_json::from_slice(&text).unwrap();
    assert!(
        refusal.error.contains("over 16384 bytes"),
        "{}",
        refusal.error
    );

    let busy = NodeRefusal::Unavailable("busy".into()).into_response();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()[header::RETRY_AFTER], "10");
    assert!(
        NodeRefusal::Forbidden("no".into())
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none()
    );
}

/// Each node's requests are limited, and the map of nodes is bounded.
#[test]
fn the_rate_limit_is_per_node_and_bounded() {
    let (stream, _queue) = issuance_channel();
    let account = ServiceAccountName::parse(DEFAULT_NODE_SERVICE_ACCOUNT).unwrap();
    let issuer = NodeIssuer::new(None, account, stream, Arc::default());
    assert_eq!(issuer.admit("node-1"), Ok(()));
    assert_eq!(issuer.admit("node-1"), Err(NodeRefusal::TooSoon));
    assert_eq!(
        issuer.admit("node-2"),
        Ok(()),
        "another node is not held up"
    );
    for i in 0..MAX_TRACKED_NODES {
        let _ = issuer.admit(&format!("n-{i}"));
    }
    assert!(matches!(
        issuer.admit("one-more"),
        Err(NodeRefusal::Unavailable(_))
    ));
    assert!(
        issuer.last_request.lock().unwrap().len() <= MAX_TRACKED_NODES,
        "bounded"
    );
}

#[test]
fn the_service_account_is_namespace_slash_name() {
    assert_eq!(
        ServiceAccountName::parse("kaas-observer-node/cluster-agent-node")
            .unwrap()
            .to_string(),
        "kaas-observer-node/cluster-agent-node"
    );
    for bad in ["cluster-agent-node", "Kaas/x", "a/", "/b"] {
        assert!(ServiceAccountName::parse(bad).is_err(), "{bad:?}");
    }
}

/// A review of a gateway replica's token: the gateway's service account, bound to
/// the StatefulSet's pod `pod`.
fn gateway_review(pod: &str) -> serde_json::Value {
    serde_json::json!({
        "authenticated": true,
        "audiences": [NODE_CERTIFICATE_AUDIENCE],
        "user": {
            "username": "system:serviceaccount:kaas-observer:cluster-agent-gateway",
            "extra": {
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": ["uid-g0"],
                "authentication.kubernetes.io/node-name": [NODE],
            },
        },
    })
}

/// Issue 17: a gateway replica gets the certificate of its own pod's name (its
/// instance), and no other instance's, not even its node's; without
/// `--gateway-service-account` the gateway's token is refused like any other.
#[tokio::test]
async fn a_gateway_replica_gets_its_own_pods_certificate_and_nothing_else() {
    const POD: &str = "cluster-agent-gateway-0";
    const GATEWAY_TOKEN: &str = "projected-token-of-gateway-0";
    let (plain, mut server, mut queue) = issuer();
    let account = ServiceAccountName::parse(DEFAULT_GATEWAY_SERVICE_ACCOUNT).unwrap();
    let gateways = Arc::into_inner(plain)
        .unwrap()
        .with_gateway_service_account(Some(account));
    let (refused, ()) = tokio::join!(
        ask(&gateways, GATEWAY_TOKEN, body(NODE, &csr())),
        answer(
            &mut server,
            GATEWAY_TOKEN,
            Some(AUDIENCES),
            gateway_review(POD)
        ),
    );
    let Err(NodeRefusal::Forbidden(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("is not the requesting pod's node"),
        "{reason}"
    );

    // Another replica (the first one's asking counts against its own pod's name).
    const OTHER: &str = "cluster-agent-gateway-1";
    let other_token = "projected-token-of-gateway-1";
    let (issued, (), sent) = tokio::join!(
        ask(&gateways, other_token, body(OTHER, &csr())),
        answer(
            &mut server,
            other_token,
            Some(AUDIENCES),
            gateway_review(OTHER)
        ),
        observer_answers(&mut queue, ""),
    );
    assert_eq!(sent.instance_name, OTHER);
    assert_eq!(
        sent.role,
        AgentRole::Gateway as i32,
        "the certificate allows the gateway role"
    );
    assert_eq!(issued.unwrap().certificate_pem, "node certificate");

    let (plain, mut server, _queue) = issuer();
    let (refused, ()) = tokio::join!(
        ask(&plain, GATEWAY_TOKEN, body(POD, &csr())),
        answer(
            &mut server,
            GATEWAY_TOKEN,
            Some(AUDIENCES),
            gateway_review(POD)
        ),
    );
    let Err(NodeRefusal::Forbidden(reason)) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        reason.contains("kaas-observer/cluster-agent-gateway's"),
        "{reason}"
    );
}
