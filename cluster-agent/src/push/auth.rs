//! Who may push to which pipeline. Each pipeline's push input says how its pushers
//! authenticate (`input.<otlp|remoteWrite>.authentication.mode`):
//!
//! - `serviceAccount` (the default): the request's bearer token must be a Kubernetes
//!   service-account token, checked with the TokenReview API. The namespace the token
//!   belongs to replaces whatever namespace the pushed series claim, so a workload can
//!   push only as itself.
//! - `bearerToken`: the pipeline's own token (from a Secret), compared in constant
//!   time; the series' namespaces are taken as claimed.
//! - `unauthenticated`: anyone who reaches the push ports; an explicit opt-out.
//!
//! A request goes to the pipelines it authenticates for; none means 401. TokenReview
//! answers are cached briefly by the token's SHA-256 ([`REVIEW_CACHE_TTL`], at most
//! [`REVIEW_CACHE_ENTRIES`] tokens), and at most [`MAX_CONCURRENT_REVIEWS`] reviews run
//! at once, so a pusher sending random tokens costs the API server a bounded rate and
//! the agent a bounded map. A review that fails (API unreachable, timeout) answers 503,
//! which pushers retry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// How long a TokenReview answer is reused. Short, so a deleted service account stops
/// pushing within seconds; long enough that a pusher sending every second costs the API
/// server one review per interval rather than one per request.
pub const REVIEW_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most tokens whose review is remembered; past that the oldest is forgotten, so
/// random tokens cannot grow the cache.
pub const REVIEW_CACHE_ENTRIES: usize = 1024;
/// How long one TokenReview may take before the push is answered 503.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Most TokenReviews in flight at once; further requests wait for a slot (and their
/// answer may come from the cache by then).
pub const MAX_CONCURRENT_REVIEWS: usize = 4;

/// The user name prefix of service-account tokens.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The user-info extras the API server sets for a token bound to a pod (projected
/// service-account tokens): the pod's name and uid, and from Kubernetes 1.30 on the
/// node's name.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The pod a bound service-account token was issued to, as the API server says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundPod {
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// The pod's node, when the API server says (Kubernetes 1.30 and later).
    pub node_name: Option<String>,
}

/// What a token review found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Review {
    /// A service account's token.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The pod a bound token was issued to; `None` for tokens bound to no pod.
        pod: Option<BoundPod>,
    },
    /// Not a valid service-account token, and why.
    Refused(String),
}

/// Why a token could not be reviewed (as opposed to being refused).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The agent runs without the Kubernetes API.
    #[error("service-account tokens cannot be checked: the agent runs without the Kubernetes API")]
    NoApi,
    /// The API server did not answer the review.
    #[error("the TokenReview failed: {0}")]
    Api(String),
}

/// Checks service-account tokens with the TokenReview API.
pub struct TokenReviewer {
    client: Option<kube::Client>,
    audiences: Vec<String>,
    cache: Mutex<ReviewCache>,
    permits: Semaphore,
}

/// Reviews by token hash, oldest first in `order`.
#[derive(Debug, Default)]
struct ReviewCache {
    entries: HashMap<[u8; 32], (Review, Instant)>,
    order: VecDeque<[u8; 32]>,
}

impl ReviewCache {
    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Review> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(review, _)| review.clone())
    }

    fn insert(&mut self, key: [u8; 32], review: Review, now: Instant) {
        if self
            .entries
            .insert(key, (review, now + REVIEW_CACHE_TTL))
            .is_none()
        {
            self.order.push_back(key);
        }
        while self.entries.len() > REVIEW_CACHE_ENTRIES {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("kubernetes", &self.client.is_some())
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer using `client` (none: every review fails with [`ReviewError::NoApi`]);
    /// with `audiences`, a token must be valid for one of them.
    pub fn new(client: Option<kube::Client>, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            cache: Mutex::new(ReviewCache::default()),
            permits: Semaphore::new(MAX_CONCURRENT_REVIEWS),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Review> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key, Instant::now())
    }

    /// Reviews `token`, from the cache when it was reviewed in the last
    /// [`REVIEW_CACHE_TTL`].
    pub async fn review(&self, token: &str) -> Result<Review, ReviewError> {
        let Some(client) = &self.client else {
            return Err(ReviewError::NoApi);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(review) = self.cached(&key) {
            return Ok(review);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ReviewError::Api("the reviewer is shutting down".into()))?;
        // Another request may have reviewed the same token while this one waited.
        if let Some(review) = self.cached(&key) {
            return Ok(review);
        }
        let review = self.ask(client, token).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(key, review.clone(), Instant::now());
        Ok(review)
    }

    async fn ask(&self, client: &kube::Client, token: &str) -> Result<Review, ReviewError> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api = kube::Api::<TokenReview>::all(client.clone());
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            api.create(&kube::api::PostParams::default(), &request),
        )
        .await
        .map_err(|_| ReviewError::Api(format!("no answer within {REVIEW_TIMEOUT:?}")))?
        .map_err(|e| ReviewError::Api(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token is not valid".into());
            return Ok(Review::Refused(format!(
                "the API server did not authenticate the token: {}",
                excerpt(&why)
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((namespace, name)) = username
            .strip_prefix(SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
        else {
            return Ok(Review::Refused(
                "the token is not a service account's".into(),
            ));
        };
        // A reviewer that asked for audiences must see one of them in the answer: an
        // API server that is not audience-aware would otherwise accept any token.
        if !self.audiences.is_empty() {
            let granted = status.audiences.unwrap_or_default();
            if !granted.iter().any(|a| self.audiences.contains(a)) {
                return Ok(Review::Refused(format!(
                    "the token is not issued for the audience {}",
                    self.audiences.join(", ")
                )));
            }
        }
        let extra = user.extra.unwrap_or_default();
        let single = |key: &str| {
            extra
                .get(key)
                .and_then(|values| values.first())
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let pod = single(POD_NAME_EXTRA).map(|name| BoundPod {
            name,
            uid: single(POD_UID_EXTRA).unwrap_or_default(),
            node_name: single(NODE_NAME_EXTRA),
        });
        Ok(Review::ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            pod,
        })
    }
}

/// Most bytes of the API server's reason quoted in a refusal.
const MAX_REASON_BYTES: usize = 200;

/// The start of `text`, cut at a character boundary.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `given` is `expected`, in time that does not depend on where they differ
/// (both are hashed first, so their lengths do not show either).
pub fn token_matches(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// The bearer token of a request, if it carries one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock::{Handle, pair};

    use super::*;

    pub(crate) type ApiServer = Handle<Request<Body>, Response<Body>>;

    fn reviewer(audiences: &[&str]) -> (TokenReviewer, ApiServer) {
        let (service, handle) = pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        (TokenReviewer::new(Some(client), audiences), handle)
    }

    /// The API server's side of one review: checks the request and answers `status`.
    pub(crate) async fn answer(
        server: &mut ApiServer,
        token: &str,
        audiences: Option<&[&str]>,
        status: serde_json::Value,
    ) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(1), server.next_request())
            .await
            .expect("a TokenReview within a second")
            .expect("a request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
        );
        let body = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["spec"]["token"], token);
        match audiences {
            Some(audiences) => {
                assert_eq!(review["spec"]["audiences"], serde_json::json!(audiences))
            }
            None => assert!(review["spec"].get("audiences").is_none(), "{review}"),
        }
        let response = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": review["spec"], "status": status,
        });
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&response).unwrap(),
        )));
    }

    fn authenticated(username: &str) -> serde_json::Value {
        serde_json::json!({"authenticated": true, "user": {"username": username}})
    }

    /// Issue 13, finding 4: a service-account token is checked with TokenReview; its
    /// namespace is what the push is credited to; a second push with the same token is
    /// answered from the cache without asking the API server again.
    #[tokio::test]
    async fn service_account_tokens_are_reviewed_once_and_cached() {
        let (reviewer, mut server) = reviewer(&[]);
        let review = tokio::join!(
            reviewer.review("token-of-shop"),
            answer(
                &mut server,
                "token-of-shop",
                None,
                authenticated("system:serviceaccount:shop:cart")
            ),
        )
        .0;
        let expected = Review::ServiceAccount {
            namespace: "shop".into(),
            name: "cart".into(),
            pod: None,
        };
        assert_eq!(review, Ok(expected.clone()));
        // No API server answers now: a second review must come from the cache.
        let again =
            tokio::time::timeout(Duration::from_secs(1), reviewer.review("token-of-shop")).await;
        assert_eq!(again.expect("answered from the cache"), Ok(expected));
    }

    /// Issue 13, finding 4: tokens the API server does not authenticate, and tokens of
    /// users rather than service accounts, are refused; an audience is passed on.
    #[tokio::test]
    async fn invalid_and_user_tokens_are_refused() {
        let (reviewer, mut server) = reviewer(&["kaas-cluster-agent"]);
        let audience = Some(&["kaas-cluster-agent"][..]);
        let refused = tokio::join!(
            reviewer.review("forged"),
            answer(
                &mut server,
                "forged",
                audience,
                serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
            ),
        )
        .0;
        assert_eq!(
            refused,
            Ok(Review::Refused(
                "the API server did not authenticate the token: invalid bearer token".into()
            ))
        );
        let user = tokio::join!(
            reviewer.review("admin-token"),
            answer(
                &mut server,
                "admin-token",
                audience,
                authenticated("kubernetes-admin")
            ),
        )
        .0;
        assert_eq!(
            user,
            Ok(Review::Refused(
                "the token is not a service account's".into()
            ))
        );
    }

    /// A review the API server does not answer is an error (the push gets 503), not a
    /// refusal, and it is not cached.
    #[tokio::test]
    async fn an_api_error_is_not_a_refusal() {
        let (reviewer, mut server) = reviewer(&[]);
        let failed = tokio::join!(reviewer.review("t"), async {
            let (_, send) = server.next_request().await.expect("a request");
            send.send_response(
                Response::builder()
                    .status(500)
                    .body(Body::from(b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"etcd down\",\"code\":500}".to_vec()))
                    .unwrap(),
            );
        })
        .0;
        assert!(matches!(failed, Err(ReviewError::Api(_))), "{failed:?}");
        assert_eq!(
            TokenReviewer::new(None, vec![]).review("t").await,
            Err(ReviewError::NoApi)
        );
    }

    /// The cache never holds more than [`REVIEW_CACHE_ENTRIES`] tokens.
    #[test]
    fn the_cache_is_bounded() {
        let mut cache = ReviewCache::default();
        let now = Instant::now();
        for i in 0..(REVIEW_CACHE_ENTRIES + 100) {
            let key: [u8; 32] = Sha256::digest(i.to_string().as_bytes()).into();
            cache.insert(key, Review::Refused(String::new()), now);
        }
        assert_eq!(cache.entries.len(), REVIEW_CACHE_ENTRIES);
        assert_eq!(cache.order.len(), REVIEW_CACHE_ENTRIES);
        let first: [u8; 32] = Sha256::digest(b"0").into();
        assert!(cache.get(&first, now).is_none(), "the oldest went first");
        let last: [u8; 32] =
            Sha256::digest((REVIEW_CACHE_ENTRIES + 99).to_string().as_bytes()).into();
        assert!(cache.get(&last, now).is_some());
        assert!(
            cache.get(&last, now + REVIEW_CACHE_TTL).is_none(),
            "expired"
        );
    }

    #[test]
    fn bearer_tokens_are_read_and_compared() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "abcd"));
    }
}
