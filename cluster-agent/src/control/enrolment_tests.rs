//! A node agent asking the cluster-level instance over a real loopback connection:
//! the real issuer (kube's mock client as the API server, a test CA as the observer)
//! and stub issuers for answers a hostile one could give.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use http::{Request, Response};
use kube::client::Body;
use tower_test::mock::pair;

use super::*;
use crate::control::identity::generate_key_and_request;
use crate::node_certificates::{
    DEFAULT_NODE_SERVICE_ACCOUNT, IssuanceQueue, NODE_CERTIFICATE_AUDIENCE, NodeIssuer,
    ServiceAccountName, issuance_channel,
};
use crate::push::auth::tests::answer;

const NODE: &str = "node-1.example";
const OBSERVER_CA: &str = "the observer CA from --observer-ca-file";

/// Serves `app` on a loopback port.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// The node agent's settings against `address`, with its token in `dir`.
fn enrolment(dir: &Path, address: SocketAddr) -> NodeEnrolment {
    let token_file = dir.join("token");
    std::fs::write(&token_file, "node-token\n").unwrap();
    NodeEnrolment {
        issuer_url: check_issuer_url(&format!("http://{address}")).unwrap(),
        token_file,
    }
}

/// Signs `csr_pem` with a throwaway CA, as the observer would.
fn sign(csr_pem: &str) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    rcgen::CertificateParams::default()
        .signed_by(&csr.public_key, &issuer)
        .unwrap()
        .pem()
}

/// The observer's side of the cluster agent's stream: signs each node's CSR.
async fn observer(mut queue: IssuanceQueue) {
    loop {
        let issuance = queue.next().await;
        let request = queue.send(issuance);
        let issued = kaas_proto::control::v1::CertificateIssued {
            certificate_pem: sign(&request.csr_pem),
            ca_bundle_pem: "a bundle from the issuer".into(),
            not_after_unix_seconds: 1_900_000_000,
            instance_name: request.instance_name,
            refused: String::new(),
        };
        queue.answer(issued, "shop.edge-1");
    }
}

/// Issue 16: a node agent without a join token gets its own node's certificate from
/// the cluster-level instance over HTTP: the token from its file reviewed for the
/// node audience, the certificate for its own key, and the observer CA of its own
/// flag rather than the bundle the answer carries.
#[tokio::test]
async fn a_node_agent_gets_its_certificate_from_the_cluster_agent() {
    let (service, mut server) = pair::<Request<Body>, Response<Body>>();
    let (stream, queue) = issuance_channel();
    let issuer = Arc::new(NodeIssuer::new(
        Some(kube::Client::new(service, "default")),
        ServiceAccountName::parse(DEFAULT_NODE_SERVICE_ACCOUNT).unwrap(),
        stream,
        Arc::default(),
    ));
    tokio::spawn(observer(queue));
    let address = serve(issuer.routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let generated = generate_key_and_request().unwrap();
    let review = serde_json::json!({
        "authenticated": true,
        "audiences": [NODE_CERTIFICATE_AUDIENCE],
        "user": {
            "username": "system:serviceaccount:kaas-observer-node:cluster-agent-node",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["cluster-agent-node-abcde"],
                "authentication.kubernetes.io/pod-uid": ["uid-1"],
                "authentication.kubernetes.io/node-name": [NODE],
            },
        },
    });
    let node_agent = enrolment(dir.path(), address);
    let (identity, ()) = tokio::join!(
        node_agent.request(NODE, &generated, OBSERVER_CA.into()),
        answer(
            &mut server,
            "node-token",
            Some(&[NODE_CERTIFICATE_AUDIENCE][..]),
            review
        ),
    );
    let identity = identity.unwrap();
    assert_eq!(identity.cluster_id, "shop.edge-1");
    assert_eq!(identity.key_pem, generated.key_pem);
    assert_eq!(identity.ca_pem, OBSERVER_CA, "never the answer's bundle");
    assert!(identity.validity().is_some(), "a certificate it can read");
}

/// A stub issuer answering `status` with `body`.
async fn stub(status: StatusCode, body: Vec<u8>) -> SocketAddr {
    let app = axum::Router::new().route(
        NODE_CERTIFICATE_PATH,
        axum::routing::post(move || {
            let body = body.clone();
            async move { (status, body).into_response() }
        }),
    );
    serve(app).await
}

/// Issue 16: what the node agent refuses from an issuer: a certificate for another
/// key, an answer over its size limit; and a refusal is reported with its reason.
#[tokio::test]
async fn hostile_or_refusing_issuers_leave_no_identity() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate_key_and_request().unwrap();
    let other = generate_key_and_request().unwrap();
    let foreign = serde_json::to_vec(&NodeCertificate {
        cluster_id: "shop.edge-1".into(),
        certificate_pem: sign(&other.csr_pem),
        ca_bundle_pem: String::new(),
        not_after_unix_seconds: 0,
    })
    .unwrap();
    let cases = [
        (
            StatusCode::OK,
            foreign,
            "the answer's certificate is not for this agent's key",
        ),
        (
            StatusCode::OK,
            vec![b' '; MAX_ANSWER_BYTES + 1],
            "the answer is over",
        ),
        (
            StatusCode::FORBIDDEN,
            br#"{"error":"instanceName \"node-2\" is not the requesting pod's node \"node-1\""}"#
                .to_vec(),
            "(403): instanceName \"node-2\" is not the requesting pod's node",
        ),
    ];
    for (status, body, expected) in cases {
        let address = stub(status, body).await;
        let node_agent = enrolment(dir.path(), address);
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            node_agent.request(NODE, &generated, OBSERVER_CA.into()),
        )
        .await
        .expect("answered")
        .expect_err(expected)
        .to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn the_issuer_is_an_address_only() {
    assert!(check_issuer_url("http://cluster-agent.kaas-observer.svc:8429").is_ok());
    assert!(check_issuer_url("https://10.0.0.1:8429/").is_ok());
    for bad in [
        "cluster-agent:8429",
        "ftp://cluster-agent",
        "http://cluster-agent:8429/v1/node-certificate",
        "http://user@cluster-agent:8429",
        "http://cluster-agent:8429/?x=1",
    ] {
        assert!(check_issuer_url(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_empty_or_missing_token_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    assert!(matches!(read_token(&file), Err(ControlError::Read { .. })));
    std::fs::write(&file, "\n").unwrap();
    assert!(
        read_token(&file)
            .unwrap_err()
            .to_string()
            .contains("is empty")
    );
}
