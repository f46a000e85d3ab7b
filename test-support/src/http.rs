//! A tiny HTTP/1.0 client for tests that read a real peer's API (Prometheus' targets,
//! VictoriaMetrics' export), and [`serve_loopback`], which the fake HTTP peers run
//! on. No TLS, no redirects: loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one request may take.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// `GET http://host:port/path`; returns the status code and body, or an error text.
pub fn get(url: &str) -> Result<(u16, String), String> {
    request("GET", url, &[("Accept", "*/*")], &[])
}

/// `GET http://host:port/path` with `headers` (e.g. `Authorization`); returns the
/// status code and body, or an error text.
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let mut all = vec![("Accept", "*/*")];
    all.extend_from_slice(headers);
    request("GET", url, &all, &[])
}

/// `POST http://host:port/path` with `headers` and a binary body; returns the status
/// code and body, or an error text.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String), String> {
    let length = body.len().to_string();
    let mut all = vec![("Content-Length", length.as_str())];
    all.extend_from_slice(headers);
    request("POST", url, &all, body)
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    stream
        .set_read_timeout(Some(REQUEST_DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response: {text}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// Serves `app` on `127.0.0.1:port` (0: any free port) until the returned sender is
/// dropped; the address it listens on.
pub async fn serve_loopback(
    port: u16,
    app: axum::Router,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = shutdown_rx.await;
            })
            .await;
    });
    (addr, shutdown)
}
