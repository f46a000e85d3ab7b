//! The agent's HTTP endpoints: `/metrics` (its telemetry), `/healthz` (the process
//! serves), `/readyz` (a configuration has been applied and the agent is not draining
//! before it stops), and the push receivers
//! (`/api/v1/write`, `/v1/metrics`; see [`crate::push`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::internal_events::ReloadState;

/// The router, for tests (`oneshot`) and for [`serve`]; `push` holds the push
/// receivers' routes.
pub fn app(registry: Arc<Registry>, reloads: Arc<ReloadState>, push: Router) -> Router {
    push.merge(
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut body = String::new();
                        match prometheus_client::encoding::text::encode(&mut body, &registry) {
                            Ok(()) => (
                                StatusCode::OK,
                                [(
                                    header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                body,
                            )
                                .into_response(),
                            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                        }
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = reloads.applied.load(Ordering::Relaxed);
                    let draining = reloads.draining.load(Ordering::Relaxed);
                    async move {
                        match (draining, ready) {
                            (true, _) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "draining: the agent is stopping",
                            ),
                            (false, true) => (StatusCode::OK, "ready"),
                            (false, false) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "no configuration applied yet",
                            ),
                        }
                    }
                }),
            ),
    )
}

/// Serves `app` on `address` until the process ends.
pub async fn serve(address: SocketAddr, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn readyz(reloads: &Arc<ReloadState>) -> StatusCode {
        let app = app(Arc::default(), reloads.clone(), Router::new());
        let request = Request::get("/readyz").body(Body::empty()).unwrap();
        app.oneshot(request).await.unwrap().status()
    }

    /// Ready once a configuration is applied, and not ready again from the moment the
    /// agent drains (issue 17): the push Service stops sending to a stopping replica.
    #[tokio::test]
    async fn ready_after_a_configuration_and_not_while_draining() {
        let reloads = Arc::new(ReloadState::default());
        assert_eq!(readyz(&reloads).await, StatusCode::SERVICE_UNAVAILABLE);
        reloads.applied.store(true, Ordering::Relaxed);
        assert_eq!(readyz(&reloads).await, StatusCode::OK);
        reloads.draining.store(true, Ordering::Relaxed);
        assert_eq!(readyz(&reloads).await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
