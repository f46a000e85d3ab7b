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
    spawn_node_agent_on(dir, pods, log_pipelines, free_port())
}

/// As [`spawn_node_agent`], serving `/metrics` on `port`.
fn spawn_node_agent_on(dir: &Path, pods: &Path, log_pipelines: &str, port: u16) -> ChildGuard {
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
            .arg(format!("127.0.0.1:{port}"))
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

/// `seq-NNNNNN` lines: the sequence numbers rotel logged, with how often each.
fn delivered(log: &str) -> std::collections::BTreeMap<u32, u32> {
    let mut seen = std::collections::BTreeMap::new();
    for (at, _) in log.match_indices("seq-") {
        let digits = &log[at + 4..(at + 10).min(log.len())];
        if digits.len() == 6
            && let Ok(n) = digits.parse::<u32>()
        {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

fn seq_lines(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("seq-{n:06}")).collect()
}

/// Waits until rotel logged every sequence number below `total`.
fn wait_for_all(
    rotel: &Rotel,
    total: u32,
    deadline: Duration,
) -> std::collections::BTreeMap<u32, u32> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let seen = delivered(&rotel.log());
        let missing = (0..total).filter(|n| !seen.contains_key(n)).count();
        if missing == 0 {
            return seen;
        }
        assert!(
            std::time::Instant::now() < until,
            "{missing} of {total} lines never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 16, fault test: the agent is killed with SIGKILL three times while container
/// lines are being written and shipped; a fourth incarnation on the same data
/// directory catches up. Every line arrives (by sequence number), and no line arrives
/// more often than there were incarnations that could have read it: repeats come only
/// from what an incarnation read, buffered or sent and had not yet committed.
#[test]
fn kill_9_under_load_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    let pods = dir.path().join("pods");
    let files: Vec<_> = (0..4)
        .map(|i| {
            pods.join(format!(
                "shop_web-{i}_0f3c9a52-1111-2222-3333-00000000000{i}/app/0.log"
            ))
        })
        .collect();
    let pipeline = format!(
        "  - metadata: {{name: to-rotel}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
        rotel.grpc_port
    );
    const KILLS: u32 = 3;
    const PER_INCARNATION: u32 = 2_000;
    const CHUNK: u32 = 50;
    let mut next = 0u32;
    for _ in 0..KILLS {
        let agent = spawn_node_agent(dir.path(), &pods, &pipeline);
        let first = next;
        // Write while the agent reads; make sure this incarnation shipped something
        // before killing it, so each kill interrupts real work.
        for chunk in 0..PER_INCARNATION / CHUNK {
            let lines = seq_lines(next..next + CHUNK);
            append_cri(&files[(chunk % 4) as usize], &lines);
            next += CHUNK;
            std::thread::sleep(Duration::from_millis(5));
        }
        rotel.wait_for_log(&[&format!("seq-{first:06}")], DEADLINE);
        append_cri(&files[0], &seq_lines(next..next + CHUNK));
        next += CHUNK;
        drop(agent); // SIGKILL
    }
    let _agent = spawn_node_agent(dir.path(), &pods, &pipeline);
    let seen = wait_for_all(&rotel, next, Duration::from_secs(60));
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let most = seen.values().copied().max().unwrap_or(0);
    assert!(
        most <= KILLS + 1,
        "a line arrived {most} times with {} incarnations",
        KILLS + 1
    );
    assert!(
        seen.keys().all(|n| *n < next),
        "only lines that were written"
    );
    eprintln!("{next} lines, {duplicates} repeated after {KILLS} kills");
}

/// Issue 16, isolation: one pipeline's backend accepts connections and never answers
/// (a 60 s timeout), another pipeline reads the same container files to rotel; every
/// line written reaches rotel within 10 s of being written.
#[test]
fn a_hung_backend_never_slows_another_pipeline_reading_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    // Accepts every connection and holds it without a byte in answer.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming().flatten() {
            held.push(stream);
        }
    });
    let pods = dir.path().join("pods");
    let file = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    let pipelines = format!(
        "  - metadata: {{name: hung}}\n    spec:\n      input: {{runtime: {{enabled: true}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{hung_port}\", timeout: 60s}}}}\n  - metadata: {{name: to-rotel}}\n    spec:\n      input: {{runtime: {{enabled: true}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\", timeout: 60s}}}}\n",
        rotel.grpc_port
    );
    append_cri(&file, &["warm-up".to_owned()]);
    let _agent = spawn_node_agent(dir.path(), &pods, &pipelines);
    // The agent starts at the end of files that existed: wait until it follows.
    let started = std::time::Instant::now();
    let mut n = 0u32;
    loop {
        append_cri(&file, &seq_lines(n..n + 1));
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
        if delivered(&rotel.log()).contains_key(&(n - 1)) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the agent never shipped a line"
        );
    }
    const LAG_BOUND: Duration = Duration::from_secs(10);
    for _ in 0..20 {
        let written = std::time::Instant::now();
        append_cri(&file, &seq_lines(n..n + 1));
        while !delivered(&rotel.log()).contains_key(&n) {
            assert!(
                written.elapsed() < LAG_BOUND,
                "line {n} took longer than {LAG_BOUND:?} while the other backend hangs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 16, hostile input: a 10 MiB line, a line of invalid UTF-8 and a JSON bomb in
/// a container's log. The long line is cut to the 1 MiB record cap, the invalid bytes
/// arrive replaced, the bomb stays a raw body and is counted (`json_too_deep`), and
/// the lines around them arrive untouched.
#[test]
fn hostile_lines_are_cut_and_counted_and_disturb_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let rotel_dir = dir.path().join("rotel");
    std::fs::create_dir_all(&rotel_dir).unwrap();
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    let pods = dir.path().join("pods");
    let file = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    let prefix = "2026-12-07T10:00:00.000000000Z stdout F ";
    let mut content = Vec::new();
    content.extend_from_slice(format!("{prefix}seq-000000\n").as_bytes());
    content.extend_from_slice(prefix.as_bytes());
    content.extend(std::iter::repeat_n(b'x', 10 << 20));
    content.push(b'\n');
    content.extend_from_slice(format!("{prefix}bad-utf8-").as_bytes());
    content.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    content.extend_from_slice(b"-end\n");
    content.extend_from_slice(prefix.as_bytes());
    content.extend_from_slice("{\"a\":".repeat(10_000).as_bytes());
    content.push(b'1');
    content.extend_from_slice("}".repeat(10_000).as_bytes());
    content.push(b'\n');
    content.extend_from_slice(format!("{prefix}seq-000001\n").as_bytes());
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, content).unwrap();
    let port = free_port();
    let pipeline = format!(
        "  - metadata: {{name: to-rotel}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
        rotel.grpc_port
    );
    let _agent = spawn_node_agent_on(dir.path(), &pods, &pipeline, port);
    let log = rotel.wait_for_log(&["seq-000000", "seq-000001", "bad-utf8-"], DEADLINE);
    assert!(log.contains("-end"), "the rest of the invalid line arrives");
    let longest_run = log
        .split(|c: char| c != 'x')
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_run > 1000 && longest_run <= 1 << 20,
        "the 10 MiB line is cut to the 1 MiB cap: {longest_run} bytes arrived"
    );
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let metrics = kaas_test_support::http::get(&metrics_url)
            .map(|(_, body)| body)
            .unwrap_or_default();
        if metrics.contains(
            "kaas_agent_log_processing_total{pipeline=\"to-rotel\",outcome=\"json_too_deep\"} 1",
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the JSON bomb is not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
