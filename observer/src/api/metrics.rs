//! The REST API's own metrics: a request counter by method, route template and status
//! code, and a latency histogram by method and route. `route` is the route template
//! (`/api/v1/clusters/{name}`), never the raw path, and methods outside the API's own
//! are counted as `other`, so the label values stay bounded whatever clients send.
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_observer_api_requests_total` | method, route, code |
//! | `kaas_observer_api_request_duration_seconds` (histogram) | method, route |
//! | `kaas_observer_api_refusals_total` | reason, tenant |
//!
//! **Refusals** are the 4xx answers, counted by why ([`Refusal`]: `unauthorized`,
//! `forbidden`, `invalid`, ...) and by the calling tenant, so a tenant probing the
//! API's boundaries (or an attacker guessing tokens) shows up and can be alerted on
//! (`alerts/kaas-observer-abuse.rules.yaml`). The `tenant` label is never text from the
//! request: it is the tenant of the token that authenticated (a tenant the store
//! knows), empty for admin tokens and unauthenticated requests, and once
//! [`MAX_REFUSAL_TENANTS`] tenants have their own series, further tenants are counted
//! as [`OTHER_TENANTS`].
//!
//! And [`register_build_info`]: `kaas_observer_build_info{version}`, always 1, which
//! the API serves alongside (dashboards count replicas by version with it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::auth::CallerSlot;
use super::error::Refusal;
use crate::store::Principal;

/// The `route` of a request no route matched (a 404 or 405 from the fallbacks).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Most tenants that get refusal series of their own: far above the tenants an
/// installation serves (each is one series per reason), and a bound on what a stream of
/// refusals can add to `/metrics` whatever happens.
pub const MAX_REFUSAL_TENANTS: usize = 1000;

/// The `tenant` of refusals of tenants beyond [`MAX_REFUSAL_TENANTS`]; not a DNS-1123
/// label, so no tenant has this name.
pub const OTHER_TENANTS: &str = "_other";

/// Latency buckets, seconds: from a cached read (about a millisecond) to a slow write
/// behind a busy database; Prometheus' default buckets, which dashboards expect.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
    tenant: String,
}

/// The API's request metrics; clones share the same series.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    refusals: Family<RefusalLabels, Counter>,
    /// Tenants with refusal series of their own (at most [`MAX_REFUSAL_TENANTS`]).
    refusal_tenants: Arc<Mutex<HashSet<String>>>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            refusals: Family::default(),
            refusal_tenants: Arc::default(),
        }
    }
}

impl ApiMetrics {
    /// Adds the metrics to `registry` (`/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_api_requests",
            "REST API requests by method, route template and status code",
            self.requests.clone(),
        );
        registry.register(
            "kaas_observer_api_request_duration_seconds",
            "REST API request latency by method and route template",
            self.duration.clone(),
        );
        registry.register(
            "kaas_observer_api_refusals",
            "REST API requests refused (4xx) by reason and calling tenant",
            self.refusals.clone(),
        );
    }

    /// Counts a refused request of `caller`.
    fn refused(&self, refusal: Refusal, caller: Option<Principal>) {
        let tenant = match caller {
            Some(Principal::Tenant(tenant)) => self.refusal_tenant(tenant),
            Some(Principal::Admin) | None => String::new(),
        };
        self.refusals
            .get_or_create(&RefusalLabels {
                reason: refusal.0,
                tenant,
            })
            .inc();
    }

    /// `tenant` while fewer than [`MAX_REFUSAL_TENANTS`] have series, else
    /// [`OTHER_TENANTS`].
    fn refusal_tenant(&self, tenant: String) -> String {
        let mut tracked = self
            .refusal_tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if tracked.contains(&tenant) {
            return tenant;
        }
        if tracked.len() >= MAX_REFUSAL_TENANTS {
            return OTHER_TENANTS.to_owned();
        }
        tracked.insert(tenant.clone());
        tenant
    }

    /// `router` with every request counted and timed.
    pub fn layer<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router.layer(middleware::from_fn_with_state(self.clone(), track))
    }

    fn observe(&self, method: &Method, route: String, code: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }
}

/// Adds `kaas_observer_build_info{version}` = 1 to `registry`.
pub fn register_build_info(registry: &mut Registry) {
    let info: Family<[(&'static str, &'static str); 1], Gauge> = Family::default();
    info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register(
        "kaas_observer_build_info",
        "Always 1; the observer's version",
        info,
    );
}

/// The method as a bounded label value.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn track(
    State(metrics): State<ApiMetrics>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = matched.map_or_else(|| UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned());
    let caller = CallerSlot::default();
    request.extensions_mut().insert(caller.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(refusal) = response.extensions().get::<Refusal>() {
        metrics.refused(*refusal, caller.get());
    }
    metrics.observe(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn send(router: &Router, method: Method, uri: &str) -> StatusCode {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_never_by_path() {
        let metrics = ApiMetrics::default();
        let router =
            metrics.layer(Router::new().route("/api/v1/clusters/{name}", get(|| async { "one" })));
        for name in ["a", "b", "c"] {
            assert_eq!(
                send(&router, Method::GET, &format!("/api/v1/clusters/{name}")).await,
                StatusCode::OK
            );
        }
        assert_eq!(
            send(&router, Method::GET, "/nowhere/at/all").await,
            StatusCode::NOT_FOUND
        );
        let odd = Method::from_bytes(b"BREW").unwrap();
        send(&router, odd, "/api/v1/clusters/a").await;

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"kaas_observer_api_requests_total{method="GET",route="/api/v1/clusters/{name}",code="200"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kaas_observer_api_requests_total{method="GET",route="unmatched",code="404"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="other""#), "{text}");
        assert!(
            text.contains(
                r#"kaas_observer_api_request_duration_seconds_count{method="GET",route="/api/v1/clusters/{name}"} 3"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("/api/v1/clusters/a"),
            "raw paths never become labels"
        );
    }

    /// The refusal counter's `tenant` label stays bounded: past
    /// [`MAX_REFUSAL_TENANTS`] tenants, refusals are counted as [`OTHER_TENANTS`].
    #[test]
    fn refusal_tenants_are_bounded() {
        let metrics = ApiMetrics::default();
        for n in 0..MAX_REFUSAL_TENANTS + 3 {
            metrics.refused(
                Refusal("forbidden"),
                Some(Principal::Tenant(format!("t{n}"))),
            );
        }
        metrics.refused(Refusal("forbidden"), Some(Principal::Tenant("t0".into())));
        metrics.refused(Refusal("unauthorized"), None);
        metrics.refused(Refusal("invalid"), Some(Principal::Admin));
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("kaas_observer_api_refusals_total{"))
            .count();
        assert_eq!(series, MAX_REFUSAL_TENANTS + 3, "{series}");
        assert!(
            text.contains(
                r#"kaas_observer_api_refusals_total{reason="forbidden",tenant="_other"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kaas_observer_api_refusals_total{reason="forbidden",tenant="t0"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kaas_observer_api_refusals_total{reason="unauthorized",tenant=""} 1"#),
            "{text}"
        );
    }
}
