//! The agent's HTTP endpoints: `/metrics` (its telemetry), `/healthz` (the process
//! serves), `/readyz` (a configuration has been applied), and the push receivers
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
                    async move {
                        if ready {
                            (StatusCode::OK, "ready")
                        } else {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "no configuration applied yet",
                            )
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
