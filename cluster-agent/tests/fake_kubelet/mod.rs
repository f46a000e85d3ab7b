//! nginx standing in for a kubelet, shared by the tests of the `runtime` input: HTTPS
//! with a serving certificate signed by a CA of its own (the "cluster CA"), answering
//! `/metrics`, `/metrics/cadvisor` and `/metrics/resource` only to requests that carry
//! the agent's service-account token; and a loopback sink that records every request
//! it gets, to show where a token did (not) go.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_test_support::process::ChildGuard;
use kaas_test_support::tls::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

/// A running fake kubelet.
pub struct FakeKubelet {
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed its serving certificate.
    pub ca_pem: String,
    _nginx: ChildGuard,
}

impl FakeKubelet {
    /// Serves in `dir` with a certificate for `names`, accepting `Bearer <token>`.
    pub fn start(dir: &std::path::Path, token: &str, names: &[&str]) -> Self {
        let pki = TestPki::generate(names);
        std::fs::write(dir.join("kubelet.pem"), &pki.server_cert).expect("write kubelet file");
        std::fs::write(dir.join("kubelet.key"), &pki.server_key).expect("write kubelet file");
        std::fs::write(
            dir.join("kubelet.txt"),
            "# TYPE kubelet_running_pods gauge\nkubelet_running_pods 12\n",
        )
        .expect("write kubelet file");
        std::fs::write(
            dir.join("cadvisor.txt"),
            "container_cpu_usage_seconds_total{namespace=\"shop\",pod=\"web-1\",container=\"app\"} 3.5\n\
             container_cpu_usage_seconds_total{namespace=\"kube-system\",pod=\"coredns\",container=\"dns\"} 9\n\
             machine_cpu_cores 4\n",
        )
        .expect("write kubelet file");
        std::fs::write(dir.join("resource.txt"), "node_cpu_usage_seconds_total 1\n")
            .expect("write kubelet file");
        let port = kaas_test_support::process::free_port();
        let d = dir.display();
        let location = |path: &str, file: &str| {
            format!(
                "location = {path} {{ if ($http_authorization != \"Bearer {token}\") {{ return 401; }} default_type \"text/plain; version=0.0.4\"; alias {d}/{file}; }}\n"
            )
        };
        let config = format!(
            "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/kubelet.pem;\n    ssl_certificate_key {d}/kubelet.key;\n{}{}{}  }}\n}}\n",
            location("/metrics", "kubelet.txt"),
            location("/metrics/cadvisor", "cadvisor.txt"),
            location("/metrics/resource", "resource.txt")
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("write kubelet file");
        let nginx = ChildGuard::spawn(
            "nginx",
            std::process::Command::new(kaas_test_support::peers::binary("nginx", "nginx-light"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-p")
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        kaas_test_support::process::wait_for_tcp(([127, 0, 0, 1], port).into(), DEADLINE);
        Self {
            port,
            ca_pem: pki.ca,
            _nginx: nginx,
        }
    }

    /// A node whose kubelet is this one.
    pub fn node(&self, name: &str) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}}
            }
        }))
        .expect("node JSON")
    }
}

/// A plain-HTTP listener on 127.0.0.1 that records the head of every request and
/// answers each with a one-line exposition.
pub struct RequestSink {
    /// Its port.
    pub port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RequestSink {
    /// Starts listening. Must be called inside a Tokio runtime.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    recorded
                        .lock()
                        .expect("the sink's record")
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let body = "sink_up 1\n";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self { port, requests }
    }

    /// The heads of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("the sink's record").clone()
    }
}
