//! Node certificates handed out by the cluster-level instance (issue 16): a node's
//! agent instance has no join token; it asks the cluster-level instance, which asks
//! the observer over its own authenticated stream. This module is the cluster-level
//! side (the endpoint and the queue to the stream); the node's side is
//! `control::enrolment`, and the stream that carries the requests `control::stream`.
//!
//! # The exchange
//!
//! 1. The node agent generates its key and a CSR and sends
//!    `POST` [`NODE_CERTIFICATE_PATH`] to the cluster-level instance's Service (the
//!    agent's HTTP port), with `{"instanceName": <its node>, "csrPem": ...}` and, as
//!    bearer token, its projected service-account token for
//!    [`NODE_CERTIFICATE_AUDIENCE`].
//! 2. The cluster-level instance ([`NodeIssuer`]) checks, cheapest first: the body's
//!    size ([`MAX_NODE_REQUEST_BYTES`]) and shape, the instance name (a DNS-1123
//!    subdomain, never the cluster-level instance's `default`), the CSR (a PKCS#10
//!    request whose signature holds); then the token with a TokenReview for that
//!    audience (the answer must name the audience), which must belong to the node
//!    agent's service account (`--node-service-account`) and be bound to a pod, whose
//!    node is the review's `authentication.kubernetes.io/node-name` (Kubernetes 1.30
//!    and later) or else read from the pod (matched by uid). From here the requester
//!    is that node's agent: one request per node per [`NODE_REQUEST_INTERVAL`]
//!    (whatever it asks for), the instance name must be that node's, and at most
//!    [`MAX_CONCURRENT_ISSUANCES`] are under way at once.
//! 3. The request goes to the control stream ([`IssuanceQueue`]) as a
//!    `CertificateRequest` naming the instance and its role (node, or gateway for a
//!    gateway replica's token); the observer signs it for the cluster, that instance
//!    and that role (only the `default` instance may ask for another instance, and
//!    never for the cluster role: the role binds what the instance may claim) and
//!    the answer goes back to the node agent with the cluster id, or the observer's
//!    refusal. Without a stream, or without an answer within [`ISSUANCE_TIMEOUT`], the
//!    node agent is told to retry (503).
//!
//! Every refusal is a JSON `{"error": reason}` with its status: 400 malformed, 401 the
//! token is not valid for the audience, 403 the token is another service account's or
//! another node's, 413 too large, 429 too soon for this node (with `Retry-After`),
//! 503 the API server, the stream or the issuance slots are busy.
//!
//! # Gateway replicas
//!
//! A gateway replica (`--role gateway`, issue 17) gets its first certificate the same
//! way, with a token of the gateway's own service account (`--gateway-service-account`)
//! for the same audience: its instance name must be its own pod's name (the token's
//! bound pod, which the review names), so each replica of the StatefulSet
//! (`cluster-agent-gateway-0`, `-1`, ...) has a certificate of its own, kept on its own
//! volume across restarts and rescheduling. Its requests count against its pod's name
//! at the same rate as a node's.
//!
//! # What a compromised node agent gets
//!
//! Its token is bound to its pod and so to its node: it can obtain a certificate for
//! its own node's instance name and nothing else, at the rate above. The key never
//! leaves the node; the cluster-level instance sees only the CSR. A compromised gateway
//! replica likewise gets only its own pod's instance name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kaas_proto::control::v1::{AgentRole, CertificateIssued, CertificateRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::internal_events::{NodeCertificateIssued, NodeCertificateRefused, PushStats};
use crate::push::auth::{BoundPod, Review, TokenReviewer, bearer_token};

/// Where the cluster-level instance takes node certificate requests, on its HTTP port.
pub const NODE_CERTIFICATE_PATH: &str = "/v1/node-certificate";
/// The audience node agents' projected tokens are issued for: a token for this
/// purpose alone, useless against the API server or any other service.
pub const NODE_CERTIFICATE_AUDIENCE: &str = "kaas-observer-node-certificate";
/// The node agent's service account, `namespace/name` (deploy/agent/base/node-agent.yaml).
pub const DEFAULT_NODE_SERVICE_ACCOUNT: &str = "kaas-observer-node/cluster-agent-node";
/// The gateway replicas' service account, `namespace/name`
/// (deploy/agent/components/gateway/gateway.yaml).
pub const DEFAULT_GATEWAY_SERVICE_ACCOUNT: &str = "kaas-observer/cluster-agent-gateway";
/// The largest request body: a P-256 CSR is about 500 bytes of PEM and a node name at
/// most 253; 16 KiB leaves room for RSA keys and nothing for abuse.
pub const MAX_NODE_REQUEST_BYTES: usize = 16 * 1024;
/// Issuances waiting for the observer at once; more are told to retry (503). A node
/// asks once at its first start, so even a cluster whose nodes all start together
/// drains quickly at the observer's pace.
pub const MAX_CONCURRENT_ISSUANCES: usize = 8;
/// One request per node per interval: a node agent retrying in a loop costs one
/// TokenReview-backed issuance every ten seconds, not one per request.
pub const NODE_REQUEST_INTERVAL: Duration = Duration::from_secs(10);
/// Nodes whose last request time is remembered; past that, old entries are dropped
/// first and, if all are recent, the request is told to retry.
pub const MAX_TRACKED_NODES: usize = 10_000;
/// How long an issuance may wait for the stream and the observer's answer.
pub const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Node certificates asked for on one control stream before the instance opens a
/// fresh one: defined with the contract, below the observer's bound of certificate
/// requests per stream by what the instance keeps for its own renewal (the reason is
/// there).
pub use kaas_proto::control::NODE_CERTIFICATES_PER_STREAM as ISSUANCES_PER_STREAM;
/// How long reading the requesting pod may take (clusters before Kubernetes 1.30).
const POD_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The instance name of the cluster-level instance, which a node may never take.
const CLUSTER_INSTANCE: &str = "default";

/// What a node agent sends.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCertificateRequest {
    /// The instance the certificate is for: the node's name.
    pub instance_name: String,
    /// The PKCS#10 request, PEM.
    pub csr_pem: String,
}

/// What a node agent gets: its certificate, and what it needs to use it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificate {
    /// The cluster's global id.
    pub cluster_id: String,
    /// The client certificate, PEM.
    pub certificate_pem: String,
    /// The observer's current CA bundle, PEM.
    pub ca_bundle_pem: String,
    /// When the certificate expires, Unix seconds.
    pub not_after_unix_seconds: i64,
}

/// A refusal's body.
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeCertificateRefusal {
    /// Why.
    pub error: String,
}

/// Why a node certificate request is refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRefusal {
    /// The body is not a request (400).
    Malformed(String),
    /// No valid token for the audience (401).
    Unauthenticated(String),
    /// A valid token that may not have this certificate (403).
    Forbidden(String),
    /// The body is over [`MAX_NODE_REQUEST_BYTES`] (413).
    TooLarge,
    /// This node asked within [`NODE_REQUEST_INTERVAL`] (429).
    TooSoon,
    /// Retry later: the API server, the stream or the slots are busy (503).
    Unavailable(String),
}

impl NodeRefusal {
    /// The short fixed name counted in
    /// `kaas_agent_node_certificate_requests_refused_total{reason}`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::TooLarge => "too_large",
            Self::TooSoon => "too_soon",
            Self::Unavailable(_) => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSoon => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The reason, as the node agent is told.
    pub fn reason(&self) -> String {
        match self {
            Self::Malformed(reason)
            | Self::Unauthenticated(reason)
            | Self::Forbidden(reason)
            | Self::Unavailable(reason) => reason.clone(),
            Self::TooLarge => format!("the request is over {MAX_NODE_REQUEST_BYTES} bytes"),
            Self::TooSoon => format!(
                "this node asked less than {}s ago; retry later",
                NODE_REQUEST_INTERVAL.as_secs()
            ),
        }
    }
}

impl IntoResponse for NodeRefusal {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&NodeCertificateRefusal {
            error: self.reason(),
        })
        .unwrap_or_default();
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if matches!(self, Self::TooSoon | Self::Unavailable(_)) {
            let seconds = NODE_REQUEST_INTERVAL.as_secs().to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// One issuance handed to the control stream; `reply` gets the certificate or the
/// observer's refusal.
#[derive(Debug)]
pub struct Issuance {
    /// The instance (the node's name, or a gateway replica's pod).
    pub instance_name: String,
    /// The role the certificate allows: a node's or a gateway replica's, as the
    /// requester's service account says (the observer writes it into the certificate).
    pub role: AgentRole,
    /// The node agent's CSR.
    pub csr_pem: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<NodeCertificate, String>>,
}

/// The control stream's side: issuances to send, and those sent and not answered yet,
/// by instance name.
#[derive(Debug)]
pub struct IssuanceQueue {
    requests: mpsc::Receiver<Issuance>,
    pending: HashMap<String, oneshot::Sender<Result<NodeCertificate, String>>>,
    /// Requests sent on the current stream.
    sent_on_stream: u32,
}

/// A channel from the [`NodeIssuer`] to the control stream.
pub fn issuance_channel() -> (mpsc::Sender<Issuance>, IssuanceQueue) {
    let (tx, requests) = mpsc::channel(MAX_CONCURRENT_ISSUANCES);
    (
        tx,
        IssuanceQueue {
            requests,
            pending: HashMap::new(),
            sent_on_stream: 0,
        },
    )
}

impl IssuanceQueue {
    /// The next issuance whose requester still waits; never returns when the issuer
    /// is gone, or when this stream has had its [`ISSUANCES_PER_STREAM`] (the rest
    /// wait for the next stream).
    pub async fn next(&mut self) -> Issuance {
        if self.sent_on_stream >= ISSUANCES_PER_STREAM {
            return std::future::pending().await;
        }
        loop {
            match self.requests.recv().await {
                Some(issuance) if !issuance.reply.is_closed() => return issuance,
                Some(_) => continue,
                None => std::future::pending().await,
            }
        }
    }

    /// Remembers `issuance` until its answer and returns the request for the stream. A
    /// second request for the same instance replaces the first, whose requester is told.
    pub fn send(&mut self, issuance: Issuance) -> CertificateRequest {
        if let Some(replaced) = self
            .pending
            .insert(issuance.instance_name.clone(), issuance.reply)
        {
            let _ = replaced.send(Err("superseded by a newer request for this node".into()));
        }
        self.sent_on_stream = self.sent_on_stream.saturating_add(1);
        CertificateRequest {
            csr_pem: issuance.csr_pem,
            instance_name: issuance.instance_name,
            role: issuance.role as i32,
        }
    }

    /// Forgets the issuances sent on a stream that ended: their requesters are told
    /// to retry.
    pub fn stream_ended(&mut self) {
        self.pending.clear();
        self.sent_on_stream = 0;
    }

    /// Whether this stream has had its [`ISSUANCES_PER_STREAM`] and every answer: time
    /// for a fresh stream, if more nodes are waiting.
    pub fn stream_spent(&self) -> bool {
        self.sent_on_stream >= ISSUANCES_PER_STREAM && self.pending.is_empty()
    }

    /// Hands `issued` to the node that asked for it, with `cluster_id`; gives it back
    /// when it answers no pending issuance (a renewal of the stream's own certificate).
    pub fn answer(
        &mut self,
        issued: CertificateIssued,
        cluster_id: &str,
    ) -> Option<CertificateIssued> {
        let Some(reply) = self.pending.remove(&issued.instance_name) else {
            return Some(issued);
        };
        let outcome = if issued.refused.is_empty() {
            Ok(NodeCertificate {
                cluster_id: cluster_id.to_owned(),
                certificate_pem: issued.certificate_pem,
                ca_bundle_pem: issued.ca_bundle_pem,
                not_after_unix_seconds: issued.not_after_unix_seconds,
            })
        } else {
            Err(format!("the observer refused: {}", issued.refused))
        };
        let _ = reply.send(outcome);
        None
    }
}

/// `namespace/name` of the one service account whose tokens may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccountName {
    /// Reads `namespace/name`, both DNS-1123 (a label and a subdomain).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = text
            .split_once('/')
            .ok_or_else(|| "not NAMESPACE/NAME".to_owned())?;
        kaas_pipeline::names::check_dns1123_label(namespace)?;
        kaas_pipeline::names::check_dns1123_subdomain(name)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for ServiceAccountName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The cluster-level instance's node certificate endpoint (see the module note).
pub struct NodeIssuer {
    reviewer: TokenReviewer,
    client: Option<kube::Client>,
    service_account: ServiceAccountName,
    /// The gateway replicas' service account, whose pods may ask for their own pod's
    /// certificate; `None`: gateway replicas get none here.
    gateway_service_account: Option<ServiceAccountName>,
    last_request: Mutex<HashMap<String, Instant>>,
    permits: Semaphore,
    stream: mpsc::Sender<Issuance>,
    stats: Arc<PushStats>,
}

impl NodeIssuer {
    /// An issuer reviewing tokens with `client` (none: every request is told the API
    /// is unavailable) for the node agents of `service_account`, handing issuances to
    /// `stream`, counting into `stats`.
    pub fn new(
        client: Option<kube::Client>,
        service_account: ServiceAccountName,
        stream: mpsc::Sender<Issuance>,
        stats: Arc<PushStats>,
    ) -> Self {
        Self {
            reviewer: TokenReviewer::new(
                client.clone(),
                vec![NODE_CERTIFICATE_AUDIENCE.to_owned()],
            ),
            client,
            service_account,
            gateway_service_account: None,
            last_request: Mutex::new(HashMap::new()),
            permits: Semaphore::new(MAX_CONCURRENT_ISSUANCES),
            stream,
            stats,
        }
    }

    /// Also hands gateway replicas of `account` their own pod's certificate.
    pub fn with_gateway_service_account(mut self, account: Option<ServiceAccountName>) -> Self {
        self.gateway_service_account = account;
        self
    }

    /// The route, for the agent's HTTP port.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route(NODE_CERTIFICATE_PATH, post(handle))
            .with_state(self)
    }

    /// Checks a request and has its certificate issued (see the module note); counts
    /// the outcome.
    pub async fn issue(
        &self,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<NodeCertificate, NodeRefusal> {
        let outcome = self.check_and_issue(token, body).await;
        match &outcome {
            Ok(_) => NodeCertificateIssued.emit(&self.stats),
            Err(refusal) => NodeCertificateRefused {
                reason: refusal.metric_reason(),
            }
            .emit(&self.stats),
        }
        outcome
    }

    async fn check_and_issue(
        &self,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<NodeCertificate, NodeRefusal> {
        if body.len() > MAX_NODE_REQUEST_BYTES {
            return Err(NodeRefusal::TooLarge);
        }
        let request: NodeCertificateRequest = serde_json::from_slice(body)
            .map_err(|e| NodeRefusal::Malformed(format!("not a node certificate request: {e}")))?;
        check_request(&request)?;
        let token = token.ok_or_else(|| {
            NodeRefusal::Unauthenticated(format!(
                "no bearer token: send the node agent's service-account token for the audience {NODE_CERTIFICATE_AUDIENCE}"
            ))
        })?;
        let (node, role) = self.authenticate(token).await?;
        // From here on the requester is the node agent of `node`: its requests count
        // against its node's rate before anything else, so even a compromised node
        // agent asking for other names is bounded, and each refusal is worth a line
        // in the log.
        self.admit(&node)?;
        let outcome = self.issue_for((&node, role), request).await;
        match &outcome {
            Ok(_) => tracing::info!(%node, "node certificate issued"),
            Err(refusal) => {
                tracing::warn!(%node, reason = %refusal.reason(), "node certificate refused")
            }
        }
        outcome
    }

    /// Issues the certificate of the authenticated `node` in its `role`, if that is
    /// what it asks for.
    async fn issue_for(
        &self,
        (node, role): (&str, AgentRole),
        request: NodeCertificateRequest,
    ) -> Result<NodeCertificate, NodeRefusal> {
        if node != request.instance_name {
            return Err(NodeRefusal::Forbidden(format!(
                "instanceName {:?} is not the requesting pod's node {node:?} (nor, for a gateway replica, its pod)",
                request.instance_name
            )));
        }
        let _permit = self.permits.try_acquire().map_err(|_| {
            NodeRefusal::Unavailable(format!(
                "{MAX_CONCURRENT_ISSUANCES} node certificates are being issued; retry later"
            ))
        })?;
        self.through_stream(request, role).await
    }

    /// The instance name the token's holder may ask for and its role, once the token
    /// is proven to be a node agent's (its pod's node) or a gateway replica's (its
    /// pod's name).
    async fn authenticate(&self, token: &str) -> Result<(String, AgentRole), NodeRefusal> {
        let review = self.reviewer.review(token).await.map_err(|e| {
            NodeRefusal::Unavailable(format!("the token cannot be checked now: {e}"))
        })?;
        let (namespace, name, pod) = match review {
            Review::Refused(reason) => return Err(NodeRefusal::Unauthenticated(reason)),
            Review::ServiceAccount {
                namespace,
                name,
                pod,
            } => (namespace, name, pod),
        };
        let is =
            |account: &ServiceAccountName| account.namespace == namespace && account.name == name;
        let gateway = self.gateway_service_account.as_ref().is_some_and(is);
        if !is(&self.service_account) && !gateway {
            let gateways = self
                .gateway_service_account
                .as_ref()
                .map(|account| format!(" (and {account} for gateway replicas)"))
                .unwrap_or_default();
            return Err(NodeRefusal::Forbidden(format!(
                "the token is the service account {namespace}/{name}'s; only {}{gateways} may ask for certificates",
                self.service_account
            )));
        }
        let pod = pod.ok_or_else(|| {
            NodeRefusal::Forbidden(
                "the token is bound to no pod: send the projected service-account token of the agent's pod".into(),
            )
        })?;
        if gateway {
            // A gateway replica's instance is its pod: the StatefulSet's stable name.
            return Ok((pod.name, AgentRole::Gateway));
        }
        let node = match pod.node_name.clone() {
            Some(node) => node,
            None => self.node_of(&namespace, &pod).await?,
        };
        Ok((node, AgentRole::Node))
    }

    /// The node of `pod`, read from the API (clusters before Kubernetes 1.30, whose
    /// reviews do not name it); the pod must still be the one the token was bound to.
    async fn node_of(&self, namespace: &str, pod: &BoundPod) -> Result<String, NodeRefusal> {
        let Some(client) = &self.client else {
            return Err(NodeRefusal::Unavailable(
                "the agent runs without the Kubernetes API".into(),
            ));
        };
        let api = kube::Api::<Pod>::namespaced(client.clone(), namespace);
        let found = tokio::time::timeout(POD_LOOKUP_TIMEOUT, api.get_opt(&pod.name))
            .await
            .map_err(|_| NodeRefusal::Unavailable("the pod lookup timed out".into()))?
            .map_err(|e| NodeRefusal::Unavailable(format!("the pod lookup failed: {e}")))?;
        let found = found
            .filter(|found| found.metadata.uid.as_deref() == Some(pod.uid.as_str()))
            .ok_or_else(|| {
                NodeRefusal::Forbidden(format!("the token's pod {namespace}/{} is gone", pod.name))
            })?;
        found
            .spec
            .and_then(|spec| spec.node_name)
            .filter(|node| !node.is_empty())
            .ok_or_else(|| {
                NodeRefusal::Forbidden(format!(
                    "the token's pod {namespace}/{} is not scheduled on a node",
                    pod.name
                ))
            })
    }

    /// One request per node per [`NODE_REQUEST_INTERVAL`], over at most
    /// [`MAX_TRACKED_NODES`] nodes.
    fn admit(&self, node: &str) -> Result<(), NodeRefusal> {
        let now = Instant::now();
        let mut last = self.last_request.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = last.get(node)
            && now.duration_since(*at) < NODE_REQUEST_INTERVAL
        {
            return Err(NodeRefusal::TooSoon);
        }
        if last.len() >= MAX_TRACKED_NODES && !last.contains_key(node) {
            last.retain(|_, at| now.duration_since(*at) < NODE_REQUEST_INTERVAL);
            if last.len() >= MAX_TRACKED_NODES {
                return Err(NodeRefusal::Unavailable(
                    "too many nodes are asking at once; retry later".into(),
                ));
            }
        }
        last.insert(node.to_owned(), now);
        Ok(())
    }

    async fn through_stream(
        &self,
        request: NodeCertificateRequest,
        role: AgentRole,
    ) -> Result<NodeCertificate, NodeRefusal> {
        let (reply, answer) = oneshot::channel();
        let issuance = Issuance {
            instance_name: request.instance_name,
            role,
            csr_pem: request.csr_pem,
            reply,
        };
        self.stream.try_send(issuance).map_err(|_| {
            NodeRefusal::Unavailable(
                "the control stream is not taking requests; retry later".into(),
            )
        })?;
        match tokio::time::timeout(ISSUANCE_TIMEOUT, answer).await {
            Ok(Ok(Ok(certificate))) => Ok(certificate),
            Ok(Ok(Err(refused))) => Err(NodeRefusal::Forbidden(refused)),
            Ok(Err(_)) => Err(NodeRefusal::Unavailable(
                "the cluster agent's stream to the observer ended; retry".into(),
            )),
            Err(_) => Err(NodeRefusal::Unavailable(format!(
                "no certificate from the observer within {}s (is the cluster agent connected?); retry",
                ISSUANCE_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// The request's own checks, before anything is asked of the API server.
fn check_request(request: &NodeCertificateRequest) -> Result<(), NodeRefusal> {
    let max = kaas_pipeline::names::DNS1123_SUBDOMAIN_MAX_LEN;
    if request.instance_name.len() > max {
        // Not quoted: the name is the sender's, up to the body's size.
        return Err(NodeRefusal::Malformed(format!(
            "instanceName: longer than {max} characters"
        )));
    }
    kaas_pipeline::names::check_instance_name(&request.instance_name)
        .map_err(|reason| NodeRefusal::Malformed(format!("instanceName: {reason}")))?;
    if request.instance_name == CLUSTER_INSTANCE {
        return Err(NodeRefusal::Forbidden(format!(
            "instanceName: {CLUSTER_INSTANCE:?} is the cluster-level instance"
        )));
    }
    rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem)
        .map(drop)
        .map_err(|e| {
            NodeRefusal::Malformed(format!("csrPem: not a valid certificate request: {e}"))
        })
}

async fn handle(
    State(issuer): State<Arc<NodeIssuer>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Read one byte past the limit, so a body over it is refused as too large.
    let Ok(body) = axum::body::to_bytes(body, MAX_NODE_REQUEST_BYTES + 1).await else {
        // Counted as `issue` counts its refusals.
        NodeCertificateRefused {
            reason: NodeRefusal::TooLarge.metric_reason(),
        }
        .emit(&issuer.stats);
        return NodeRefusal::TooLarge.into_response();
    };
    match issuer.issue(bearer_token(&headers), &body).await {
        Ok(certificate) => match serde_json::to_vec(&certificate) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(refusal) => {
            // Refusals before the requester is known are not logged above debug: the
            // sender is told why, and an unauthenticated sender must not be able to
            // flood the log (those after are, in `issue`, bounded by the node rate).
            tracing::debug!(reason = %refusal.reason(), "node certificate request refused");
            refusal.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
