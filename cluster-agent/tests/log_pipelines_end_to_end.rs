//! Log pipelines running in a standalone agent (issue 16): the node role reads
//! container log files laid out as the kubelet writes them below `/var/log/pods`
//! (here a temporary directory, `--pod-log-dir`) and ships them through a log
//! pipeline to a real OTLP receiver (rotel, from PyPI), with the container's
//! Kubernetes resource taken from the file's path.
//!
//! Needs `rotel` (`scripts/test.sh` installs it).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port};

const AGENT: &str = env!("CARGO_BIN_EXE_cluster-agent");
const DEADLINE: Duration = Duration::from_secs(30);

/// Appends CRI-format lines (full, stdout) to a container's log file.
fn append_cri(file: &Path, lines: &[String]) {
    std::fs::create_dir_all(file.parent().expect("a container directory")).expect("test harness");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("test harness");
    for line in lines {
        writeln!(out, "2026-12-07T10:00:00.000000000Z stdout F {line}").expect("test harness");
    }
}

/// A standalone node-role agent running `log_pipelines` (YAML list items).
fn spawn_node_agent(dir: &Path, pods: &Path, log_pipelines: &str) -> ChildGuard {
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\nexternalLabels: {{cluster: test-cluster}}\nlogPipelines:\n{log_pipelines}"
    );
    let config_path = dir.join("agent.yaml");
    std::fs::write(&config_path, config).expect("test harness");
    ChildGuard::spawn(
        "cluster-agent",
        Command::new(AGENT)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--role")
            .arg("node")
            .arg("--pod-log-dir")
            .arg(pods)
            .arg("--journal-dir")
            .arg(dir.join("no-journal"))
            .arg("--kubernetes")
            .arg("off")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("NODE_NAME", "node-a")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).expect("test harness")),
    )
}

/// Container log lines written before and after the agent starts reach rotel over
/// OTLP/gRPC with the container's resource from the path (namespace, pod, uid,
/// container, restart count), the node and the cluster; a system namespace's
/// container is left out by default.
#[test]
fn container_logs_reach_rotel_with_their_kubernetes_resource() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    let pods = dir.path().join("pods");
    let app = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/2.log");
    let system = pods.join("kube-system_etcd-a_0f3c9a52-aaaa-bbbb-cccc-ddddeeeeffff/etcd/0.log");
    append_cri(&app, &["before-start-0001".to_owned()]);
    append_cri(&system, &["system-line-0001".to_owned()]);
    let pipeline = format!(
        "  - metadata: {{name: to-rotel}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
        rotel.grpc_port
    );
    let _agent = spawn_node_agent(dir.path(), &pods, &pipeline);
    rotel.wait_for_log(&["before-start-0001"], DEADLINE);
    append_cri(&app, &["after-start-0002".to_owned()]);
    let log = rotel.wait_for_log(
        &[
            "after-start-0002",
            "k8s.namespace.name: Str(shop)",
            "k8s.pod.name: Str(web-1)",
            "k8s.pod.uid: Str(0f3c9a52-1111-2222-3333-444455556666)",
            "k8s.container.name: Str(app)",
            "k8s.container.restart_count: Int(2)",
            "k8s.node.name: Str(node-a)",
            "k8s.cluster.name: Str(test-cluster)",
            "log.iostream: Str(stdout)",
        ],
        DEADLINE,
    );
    assert!(
        !log.contains("system-line-0001"),
        "kube-system is left out by default"
    );
}
