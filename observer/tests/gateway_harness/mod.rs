//! Shared by the receive gateway's tests: the gateway's app served over mutual TLS on a
//! loopback port, clients that trust it (presenting an agent certificate or none), its
//! metrics in the text format, and the agent binary for tests that run a real agent.

#![allow(dead_code)]

use std::sync::Arc;

use kaas_observer::gateway::server::{self, GatewayState};
use kaas_observer::listeners::TlsListener;
use prometheus_client::registry::Registry;

/// Serves `state` with `tls` on a free loopback port: the port, and the serving task.
pub async fn serve(
    state: Arc<GatewayState>,
    tls: Arc<rustls::ServerConfig>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test fixture");
    let port = listener.local_addr().expect("test fixture").port();
    let listener = TlsListener::new(listener, tls, Default::default(), Default::default())
        .expect("test fixture");
    let app = server::app(state);
    let task = tokio::spawn(async move {
        server::serve(listener, app).await.expect("test fixture");
    });
    (port, task)
}

/// A client trusting `ca_pem`, presenting `identity` (certificate and key PEM) if any.
pub fn client(ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let roots = kaas_tls::roots(ca_pem.as_bytes(), "ca").expect("test fixture");
    let identity = identity.map(|(cert, key)| {
        (
            kaas_tls::certificates(cert.as_bytes(), "cert").expect("test fixture"),
            kaas_tls::private_key(key.as_bytes(), "key").expect("test fixture"),
        )
    });
    let tls = kaas_tls::ClientTls {
        trust: kaas_tls::Trust::Roots(Arc::new(roots)),
        identity,
        ..kaas_tls::ClientTls::default()
    };
    kaas_tls::http::http_client(kaas_tls::http::HttpClientSettings::new(tls, "test"))
        .expect("test fixture")
}

/// The gateway's metrics as `name{labels} value` lines.
pub fn metrics(state: &GatewayState) -> String {
    let mut registry = Registry::default();
    state.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("test fixture");
    text
}

/// The `cluster-agent` binary the workspace build put beside this test binary.
pub fn cluster_agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps")
        .join("cluster-agent");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p kaas-cluster-agent` (scripts/test.sh builds the workspace)",
        binary.display()
    );
    binary
}
