//! README command one, `scripts/demo.sh --once`, runs in the test suite: an observer
//! with SQLite, two agents onboarded with join tokens and a third cluster listed by the
//! mock KaaS inventory (the `mock-inventory` example), a pipeline applied with the CLI,
//! the receive gateway in front of the receiver for the central pipelines, a node agent
//! per cluster shipping the demo workload's container log files through a tenant log
//! pipeline, a tenant trace pipeline taking spans from a generator (the OpenTelemetry
//! Python SDK) at each cluster's agent, and a report showing metrics from each cluster
//! at a real receiver, the log lines each delivered to the demo's log receiver and the
//! spans each delivered to its trace receiver.
//!
//! Uses the binaries `cargo nextest run --workspace` built (target/<profile>/), so the
//! suite builds once; needs what scripts/test.sh installs.

use std::path::Path;
use std::process::Command;

#[test]
fn the_quick_start_demo_onboards_two_clusters_and_reports_their_data() {
    let exe = std::env::current_exe().expect("test binary path");
    let bin_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    assert!(
        bin_dir.join("cluster-agent").is_file() && bin_dir.join("observer").is_file(),
        "build the workspace first (scripts/test.sh does)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("bash")
        .arg(repo.join("scripts/demo.sh"))
        .arg("--once")
        .env("KAAS_DEMO_BIN_DIR", bin_dir)
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for expected in [
        "edge-1  shop    shop.edge-1  active  yes",
        "edge-2  shop    shop.edge-2  active  yes",
        "edge-3  shop    shop.edge-3  active  yes",
        "observer cluster join-token edge-3 --tenant shop | kubectl apply -f -",
        "ConfigurationApplied  True",
        // The `cluster` label is the cluster's global id.
        "cluster=shop.edge-1:",
        "cluster=shop.edge-2:",
        "cluster=shop.edge-3:",
        // The central pipeline's series, filed by the receive gateway.
        r#"up{job="kaas-agent", cluster="shop.edge-1", tenant="shop"}"#,
        r#"up{job="kaas-agent", cluster="shop.edge-2", tenant="shop"}"#,
        r#"up{job="kaas-agent", cluster="shop.edge-3", tenant="shop"}"#,
        // kube-state-metrics (a recorded exposition here), through the gateway.
        r#"kube_node_info{job="kube-state-metrics", cluster="shop.edge-1", tenant="shop", node="demo-worker"}"#,
        r#"kube_node_info{job="kube-state-metrics", cluster="shop.edge-2", tenant="shop", node="demo-worker"}"#,
        r#"kube_node_info{job="kube-state-metrics", cluster="shop.edge-3", tenant="shop", node="demo-worker"}"#,
        // The real node exporter (on loopback here), through the gateway.
        r#"node_load1{job="node-exporter", cluster="shop.edge-1", tenant="shop"}"#,
        r#"node_load1{job="node-exporter", cluster="shop.edge-2", tenant="shop"}"#,
        r#"node_load1{job="node-exporter", cluster="shop.edge-3", tenant="shop"}"#,
        // The tenant's log pipeline: every line the demo workload wrote on each
        // cluster's node, read by that node's agent, at the log receiver.
        "cluster=shop.edge-1: 100 lines delivered (100 written)",
        "cluster=shop.edge-2: 100 lines delivered (100 written)",
        "cluster=shop.edge-3: 100 lines delivered (100 written)",
        // The tenant's trace pipeline: every span the generator pushed to each
        // cluster's agent, at the trace receiver.
        "cluster=shop.edge-1: 20 spans delivered (20 sent)",
        "cluster=shop.edge-2: 20 spans delivered (20 sent)",
        "cluster=shop.edge-3: 20 spans delivered (20 sent)",
        "demo finished",
    ] {
        assert!(
            stdout.contains(expected),
            "the report shows {expected:?}:\n{stdout}\n{stderr}"
        );
    }
}
