//! Issue 16, node certificates end to end: the real observer control service (SQLite
//! store, cluster CA, TLS on loopback), the real agent binary as the cluster-level
//! instance (joined with a token, its Kubernetes API a fake on loopback that answers
//! TokenReviews), and the real agent binary as a node instance with no join token,
//! which gets its node's certificate from the cluster-level instance and connects with
//! it; a node agent asking for another node's name gets nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kaas_observer::control::{ControlService, ControlSettings, serve, server_tls_config};
use kaas_observer::identity::{AgentCertificateInfo, ClusterCa};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::certificates::CertificateStanding;
use kaas_observer::store::{Actor, NewCluster, Store};
use kaas_test_support::process::{ChildGuard, free_port};
use rustls::pki_types::pem::PemObject;
use tokio::runtime::Runtime;

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
/// Generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER_ID: &str = "shop.edge-1";
/// The audience the node agents' projected tokens are for.
const AUDIENCE: &str = "kaas-observer-node-certificate";
/// The node the fake API server says `NODE_TOKEN`'s pod runs on: a node name with dots.
const NODE: &str = "ip-10-0-1-7.eu-west-1.compute.internal";
const NODE_TOKEN: &str = "token-of-the-node-agent-on-node-1";
/// A node agent's token on another node, asking for `NODE`'s name.
const OTHER_NODE_TOKEN: &str = "token-of-the-node-agent-on-node-2";

/// The fake API server's answer to a TokenReview: the node agent's service account,
/// bound to a pod on the token's node, for the audience asked.
fn review(body: &[u8]) -> serde_json::Value {
    let asked: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let token = asked["spec"]["token"].as_str().unwrap_or_default();
    let node = match token {
        NODE_TOKEN => NODE,
        OTHER_NODE_TOKEN => "node-2",
        _ => "",
    };
    let status = if node.is_empty() || asked["spec"]["audiences"] != serde_json::json!([AUDIENCE]) {
        serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
    } else {
        serde_json::json!({
            "authenticated": true,
            "audiences": [AUDIENCE],
            "user": {
                "username": "system:serviceaccount:kaas-observer-node:cluster-agent-node",
                "extra": {
                    "authentication.kubernetes.io/pod-name": [format!("cluster-agent-node-{node}")],
                    "authentication.kubernetes.io/pod-uid": ["uid"],
                    "authentication.kubernetes.io/node-name": [node],
                },
            },
        })
    };
    serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": asked["spec"], "status": status,
    })
}

fn json(value: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

/// A Kubernetes API server that answers TokenReviews, lists everything as empty and
/// holds every watch open.
async fn fake_api_server() -> String {
    let app = axum::Router::new().fallback(|uri: Uri, body: Bytes| async move {
        if uri.path() == "/apis/authentication.k8s.io/v1/tokenreviews" {
            return json(&review(&body));
        }
        if uri.query().unwrap_or_default().contains("watch=true") {
            let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
            return Response::new(Body::from_stream(never));
        }
        let list = serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []});
        json(&list)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the test's setup");
    let address = listener.local_addr().expect("the test's setup");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// The observer and the fake API server on a runtime of their own; the cluster
/// registered, its join token returned.
fn start_observer(dir: &Path) -> (Runtime, Store, String, String, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the test's setup");
    let (store, url, api, token) = runtime.block_on(async {
        let store = Store::open_sqlite(
            &dir.join("observer.db"),
            SecretBox::generate().expect("the test's setup"),
        )
        .await
        .expect("the test's setup");
        let ca = Arc::new(ClusterCa::load_or_create(dir).expect("the test's setup"));
        let tls = server_tls_config(&ca, &["127.0.0.1".to_owned()]).expect("the test's setup");
        let service = ControlService::new(store.clone(), ca, ControlSettings::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the test's setup");
        let url = format!(
            "https://{}",
            listener.local_addr().expect("the test's setup")
        );
        tokio::spawn(async move { serve(listener, service, tls).await });
        store
            .create_tenant("shop", &Actor::admin())
            .await
            .expect("the test's setup");
        let new = NewCluster {
            name: "edge-1".to_owned(),
            tenant: "shop".to_owned(),
            labels: BTreeMap::new(),
            api_endpoint: None,
        };
        let (_, token) = store
            .create_cluster(new, Duration::from_secs(3600), &Actor::admin())
            .await
            .expect("the test's setup");
        (store, url, fake_api_server().await, token)
    });
    (runtime, store, url, api, token)
}

/// A kubeconfig for the fake API server.
fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
         users: [{{name: u, user: {{token: cluster-agent-token}}}}]\n\
         contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
    );
    std::fs::write(&path, text).expect("the test's setup");
    path
}

/// Starts the agent binary with `args` (plus its listeners on loopback, the HTTP one
/// on `port`), logging to `log`.
fn agent(args: &[&str], port: u16, env: &[(&str, &str)], log: &Path) -> ChildGuard {
    let mut command = Command::new(AGENT);
    command
        .arg("run")
        .args(args)
        .arg("--listen-address")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--otlp-grpc-listen-address", "127.0.0.1:0"])
        .args(["--otlp-http-listen-address", "127.0.0.1:0"])
        .args(["--zipkin-listen-address", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("KAAS_JOIN_TOKEN")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("the test's setup"));
    for (name, value) in env {
        command.env(name, value);
    }
    ChildGuard::spawn("cluster-agent", &mut command)
}

/// The instance named in the certificate saved under `data`, if any.
fn saved_instance(data: &Path) -> Option<AgentCertificateInfo> {
    let pem = std::fs::read(data.join("identity").join("tls.crt")).ok()?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).ok()?;
    AgentCertificateInfo::parse(&der)
}

fn wait_until(what: &str, logs: &[&Path], mut done: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !done() {
        if Instant::now() > until {
            let logs: Vec<String> = logs
                .iter()
                .map(|log| std::fs::read_to_string(log).unwrap_or_default())
                .collect();
            panic!("{what}; logs:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_agent_without_a_join_token_gets_its_own_nodes_certificate_and_connects() {
    let dir = tempfile::tempdir().expect("the test's setup");
    let observer_dir = dir.path().join("observer");
    std::fs::create_dir_all(&observer_dir).expect("the test's setup");
    let (runtime, store, url, api, token) = start_observer(&observer_dir);
    let ca = observer_dir.join("ca.crt");
    let ca = ca.to_str().expect("the test's setup");
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, &token).expect("the test's setup");
    let kubeconfig = kubeconfig(dir.path(), &api);

    let cluster_port = free_port();
    let cluster_log = dir.path().join("cluster-agent.log");
    let cluster_data = dir.path().join("cluster-data");
    let _cluster = agent(
        &[
            "--observer",
            &url,
            "--observer-ca-file",
            ca,
            "--join-token-file",
            token_file.to_str().expect("the test's setup"),
            "--data-dir",
            cluster_data.to_str().expect("the test's setup"),
            "--kubernetes",
            "auto",
        ],
        cluster_port,
        &[("KUBECONFIG", kubeconfig.to_str().expect("the test's setup"))],
        &cluster_log,
    );
    let issuer = format!("http://127.0.0.1:{cluster_port}");

    let node_agent = |name: &str, token: &str, instance: &str| {
        let node_dir = dir.path().join(name);
        std::fs::create_dir_all(node_dir.join("pods")).expect("the test's setup");
        let node_token = node_dir.join("token");
        std::fs::write(&node_token, format!("{token}\n")).expect("the test's setup");
        let log = dir.path().join(format!("{name}.log"));
        let data = node_dir.join("data");
        let guard = agent(
            &[
                "--role",
                "node",
                "--observer",
                &url,
                "--observer-ca-file",
                ca,
                "--instance-name",
                instance,
                "--node-certificate-issuer",
                &issuer,
                "--node-token-file",
                node_token.to_str().expect("the test's setup"),
                "--data-dir",
                data.to_str().expect("the test's setup"),
                "--pod-log-dir",
                node_dir.join("pods").to_str().expect("the test's setup"),
                "--journal-dir",
                node_dir.join("journal").to_str().expect("the test's setup"),
                "--kubernetes",
                "off",
            ],
            free_port(),
            &[("NODE_NAME", instance)],
            &log,
        );
        (guard, data, log)
    };
    let (_node, node_data, node_log) = node_agent("node-1", NODE_TOKEN, NODE);
    let (_impostor, impostor_data, impostor_log) = node_agent("node-2", OTHER_NODE_TOKEN, NODE);

    let logs = [
        cluster_log.as_path(),
        node_log.as_path(),
        impostor_log.as_path(),
    ];
    wait_until("the node agent saves its node's certificate", &logs, || {
        saved_instance(&node_data).is_some()
    });
    let info = saved_instance(&node_data).expect("the test's setup");
    assert_eq!(
        (info.cluster.as_str(), info.instance.as_str()),
        (CLUSTER_ID, NODE)
    );
    let standing = runtime
        .block_on(store.certificate_standing(CLUSTER_ID, &info.serial_hex))
        .expect("the test's setup");
    assert_eq!(
        standing,
        CertificateStanding::Valid {
            instance: NODE.to_owned()
        }
    );
    wait_until("the node agent connects with it", &logs, || {
        std::fs::read_to_string(&node_log)
            .unwrap_or_default()
            .contains("connected to the observer")
    });
    // The agent on node-2 asks for node-1's name: refused with the reason, nothing saved.
    wait_until("the impostor is refused", &logs, || {
        std::fs::read_to_string(&impostor_log)
            .unwrap_or_default()
            .contains("is not the requesting pod's node")
    });
    assert!(saved_instance(&impostor_data).is_none());
    assert!(
        !std::fs::read_to_string(&node_log)
            .unwrap_or_default()
            .contains("join token"),
        "the node agent never needs a join token"
    );
}
