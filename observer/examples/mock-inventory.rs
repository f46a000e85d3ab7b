//! A small mock KaaS inventory: the HTTP endpoint `observer serve --inventory-url`
//! polls, serving the clusters listed in a JSON file. It stands in for a provider's own
//! inventory in the demo (`scripts/demo.sh`) and for trying inventory onboarding
//! locally; it is an example, not part of the observer.
//!
//! ```text
//! cargo run --example mock-inventory -- --listen 127.0.0.1:9100 --clusters clusters.json
//! observer serve --inventory-url http://127.0.0.1:9100/v1/clusters ...
//! ```
//!
//! The file holds what the inventory answers (see `onboarding/inventory` in the
//! observer): a JSON array of `{"name", "tenant", "labels", "apiEndpoint", "kubeconfig",
//! "deleted"}` entries. It is read again on every request, so editing it adds, changes
//! and removes clusters while the observer polls. With `--token-file` requests must carry
//! `Authorization: Bearer <token>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;

/// The largest cluster file served, like the observer's own limit on an answer.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Serves a JSON cluster list the way a KaaS inventory would.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The JSON file with the clusters; read on every request.
    #[arg(long)]
    clusters: PathBuf,
    /// A file holding the bearer token requests must carry.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

struct Inventory {
    clusters: PathBuf,
    token: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = match &args.token_file {
        Some(path) => Some(std::fs::read_to_string(path)?.trim().to_owned()),
        None => None,
    };
    let inventory = Arc::new(Inventory {
        clusters: args.clusters,
        token,
    });
    let app = Router::new()
        .route("/v1/clusters", get(clusters))
        .with_state(inventory);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "mock inventory on http://{}/v1/clusters",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn clusters(State(inventory): State<Arc<Inventory>>, headers: HeaderMap) -> Response {
    if let Some(token) = &inventory.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if sent != Some(token.as_str()) {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        }
    }
    let too_large = tokio::fs::metadata(&inventory.clusters)
        .await
        .is_ok_and(|m| m.len() > MAX_FILE_BYTES);
    if too_large {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the cluster file is too large\n",
        )
            .into_response();
    }
    match tokio::fs::read(&inventory.clusters).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the cluster file: {error}\n"),
        )
            .into_response(),
    }
}
