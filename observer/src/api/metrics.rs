//! The REST API's own metrics: a request counter by method, route template and status
//! code, and a latency histogram by method and route. `route` is the route template
//! (`/api/v1/clusters/{name}`), never the raw path, and methods outside the API's own
//! are counted as `other`, so the label values stay bounded whatever clients send.
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_observer_api_requests_total` | method, route, code |
//! | `kaas_observer_api_request_duration_seconds` (histogram) | method, route |
//!
//! And [`register_build_info`]: `kaas_observer_build_info{version}`, always 1, which
//! the API serves alongside (dashboards count replicas by version with it).

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

/// The `route` of a request no route matched (a 404 or 405 from the fallbacks).
pub const UNMATCHED_ROUTE: &str = "unmatched";

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

/// The API's request metrics; clones share the same series.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
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
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = matched.map_or_else(|| UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
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
}
