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

/// Now as the container runtime writes it (RFC 3339, nanoseconds): a record's age
/// counts against its pipeline's buffer `maxAge`, so a fixed date would make these
/// tests expire their own lines once the date is hours old.
fn cri_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("test harness");
    kaas_cluster_agent::exporters::http::encode::UtcTime::from_unix_nanos(
        u64::try_from(now.as_nanos()).expect("test harness"),
    )
    .rfc3339()
}

/// Appends CRI-format lines (full, stdout, written now) to a container's log file.
fn append_cri(file: &Path, lines: &[String]) {
    std::fs::create_dir_all(file.parent().expect("a container directory")).expect("test harness");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("test harness");
    let now = cri_now();
    for line in lines {
        writeln!(out, "{now} stdout F {line}").expect("test harness");
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

/// How long after a record's delivery its acknowledgement may still be only in memory:
/// the sender persists its read position in the buffer every
/// [`ACK_PERSIST_INTERVAL`](kaas_cluster_agent::topology::sender::ACK_PERSIST_INTERVAL),
/// plus slack for a busy machine (a send in progress delays the persist; rotel logs a
/// little after it answered). The input side adds less: its read position is committed
/// behind the buffer's durable writes and persisted every round.
const UNPERSISTED_WINDOW: Duration =
    Duration::from_secs(kaas_cluster_agent::topology::sender::ACK_PERSIST_INTERVAL.as_secs() + 5);

/// Issue 16, fault test: the agent is killed with SIGKILL three times while container
/// lines are being written and shipped; a fourth incarnation on the same data
/// directory catches up. Every line arrives (by sequence number), and the duplicates
/// are bounded by the commit interval: a line delivered more than
/// [`UNPERSISTED_WINDOW`] before a kill is never delivered again, so only what was
/// delivered in that last window (or read and not yet committed) repeats.
#[test]
fn kill_9_under_load_loses_no_line_and_repeats_only_the_last_commit_interval() {
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
    const CHUNK: u32 = 20;
    let mut next = 0u32;
    // Writes chunks of lines for `how_long`.
    let write_for = |next: &mut u32, how_long: Duration| {
        let until = std::time::Instant::now() + how_long;
        let mut chunk = 0;
        while std::time::Instant::now() < until {
            append_cri(&files[chunk % 4], &seq_lines(*next..*next + CHUNK));
            *next += CHUNK;
            chunk += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Per kill: what had been delivered (and how often) one window before it.
    let mut settled_before_kill = Vec::new();
    for _ in 0..KILLS {
        let agent = spawn_node_agent(dir.path(), &pods, &pipeline);
        let first = next;
        write_for(&mut next, Duration::from_secs(2));
        rotel.wait_for_log(&[&format!("seq-{first:06}")], DEADLINE);
        settled_before_kill.push(delivered(&rotel.log()));
        // Keep writing (and the agent shipping) for a whole window, then kill: the
        // lines delivered before the snapshot must have their acknowledgements
        // persisted by then.
        write_for(&mut next, UNPERSISTED_WINDOW);
        drop(agent); // SIGKILL
    }
    let _agent = spawn_node_agent(dir.path(), &pods, &pipeline);
    let seen = wait_for_all(&rotel, next, Duration::from_secs(90));
    assert!(
        seen.keys().all(|n| *n < next),
        "only lines that were written"
    );
    for (kill, settled) in settled_before_kill.iter().enumerate() {
        assert!(!settled.is_empty(), "incarnation {kill} delivered nothing");
        let repeated: Vec<(u32, u32, u32)> = settled
            .iter()
            .filter(|(n, before)| seen[*n] != **before)
            .map(|(n, before)| (*n, *before, seen[n]))
            .take(5)
            .collect();
        assert!(
            repeated.is_empty(),
            "lines delivered over {UNPERSISTED_WINDOW:?} before kill {kill} were delivered again \
             (line, times before, times in the end): {repeated:?}"
        );
    }
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
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
    let prefix = format!("{} stdout F ", cri_now());
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

/// `/metrics` of the agent on `port`, once it holds every one of `lines`.
fn wait_for_metrics(port: u16, lines: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let until = std::time::Instant::now() + DEADLINE;
    loop {
        let metrics = kaas_test_support::http::get(&url)
            .map(|(_, body)| body)
            .unwrap_or_default();
        let missing: Vec<&&str> = lines.iter().filter(|l| !metrics.contains(**l)).collect();
        if missing.is_empty() {
            return metrics;
        }
        assert!(
            std::time::Instant::now() < until,
            "{missing:?} never on /metrics:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 16: the file tailer's counters (files open, bytes and lines read, a line cut
/// at the record cap, a rotation) and the fan-out's state (two
/// pipelines reading the same files, neither behind) are on `/metrics`. The backends
/// are down: what the inputs read does not depend on delivery.
#[test]
fn the_node_inputs_counters_and_fan_out_state_are_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let file = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    append_cri(&file, &seq_lines(0..3));
    append_cri(&file, &["x".repeat(2 << 20)]);
    append_cri(&file, &seq_lines(3..4));
    let port = free_port();
    let pipeline = |name: &str| {
        format!(
            "  - metadata: {{name: {name}}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning}}}}\n      output: {{http: {{url: \"http://127.0.0.1:9/down\", format: jsonLines}}}}\n"
        )
    };
    let _agent = spawn_node_agent_on(
        dir.path(),
        &pods,
        &format!("{}{}", pipeline("first"), pipeline("second")),
        port,
    );
    wait_for_metrics(
        port,
        &[
            "kaas_agent_log_input_records_total{input=\"files\"} 5",
            "kaas_agent_log_input_files_open{input=\"files\"} 1.0",
        ],
    );
    // Rotation by rename, as the kubelet rotates: the old file is read to its end and
    // forgotten, the new one followed.
    let first_size = std::fs::metadata(&file).unwrap().len();
    std::fs::rename(&file, file.with_file_name("0.log.20261207-100000")).unwrap();
    append_cri(&file, &seq_lines(4..6));
    let total = first_size + std::fs::metadata(&file).unwrap().len();
    let metrics = wait_for_metrics(
        port,
        &[
            "kaas_agent_log_input_records_total{input=\"files\"} 7",
            "kaas_agent_log_input_events_total{input=\"files\",event=\"rotation\"} 1",
        ],
    );
    for line in [
        format!("kaas_agent_log_input_bytes_read_total{{input=\"files\"}} {total}"),
        "kaas_agent_log_input_events_total{input=\"files\",event=\"oversize_record\"} 1".into(),
        "kaas_agent_log_input_events_total{input=\"files\",event=\"truncation\"} 0".into(),
        "kaas_agent_log_input_consumers{input=\"files\"} 2.0".into(),
        "kaas_agent_log_input_consumer_detached{input=\"files\",pipeline=\"first\"} 0.0".into(),
        "kaas_agent_log_input_consumer_detached{input=\"files\",pipeline=\"second\"} 0.0".into(),
        "kaas_agent_log_input_consumer_lag_batches{input=\"files\",pipeline=\"second\"} 0.0".into(),
        "kaas_agent_log_input_consumer_detachments_total{input=\"files\",pipeline=\"first\"} 0"
            .into(),
    ] {
        assert!(
            metrics.contains(&line),
            "{line} is not on /metrics:\n{metrics}"
        );
    }
}

/// A Java-style stack trace numbered `n`: a first line with a date, two frames.
fn stack_trace(n: u32) -> Vec<String> {
    vec![
        format!("2026-12-07 ERROR trace-{n:04} failed"),
        format!("\tat com.example.Foo.frame{n:04}a(Foo.java:1)"),
        format!("\tat com.example.Main.frame{n:04}b(Main.java:2)"),
    ]
}

/// Issue 16: multiline recombination and `startAt` are per pipeline. Two pipelines
/// read the same container file: `joined` (first line `^\d{4}-`, `startAt:
/// beginning`) receives each stack trace as one record and the line written before
/// the agent started; `split` (no multiline, `startAt: end`) receives every line of
/// the traces as its own record and not the earlier line. Neither loses a trace
/// written while the agent was killed (SIGKILL) and restarted.
#[test]
fn multiline_and_start_at_are_per_pipeline_and_lose_nothing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (joined_dir, split_dir) = (dir.path().join("joined"), dir.path().join("split"));
    std::fs::create_dir_all(&joined_dir).unwrap();
    std::fs::create_dir_all(&split_dir).unwrap();
    let joined = Rotel::start_logging(&joined_dir, &["logs"]);
    let split = Rotel::start_logging(&split_dir, &["logs"]);
    let pods = dir.path().join("pods");
    let app = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    append_cri(&app, &["2026-12-07 INFO pre-existing-0000".to_owned()]);
    let pipelines = format!(
        "  - metadata: {{name: joined}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning, multiline: {{firstLinePattern: '^\\d{{4}}-', flushTimeout: 1s}}}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n  - metadata: {{name: split}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: end}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
        joined.grpc_port, split.grpc_port
    );
    let agent = spawn_node_agent(dir.path(), &pods, &pipelines);
    joined.wait_for_log(&["pre-existing-0000"], DEADLINE);
    // `split` started at the file's end: wait until it reads before writing.
    let mut n = 1;
    loop {
        append_cri(&app, &[format!("2026-12-07 INFO probe-{n:04}")]);
        std::thread::sleep(Duration::from_millis(500));
        if split.log().contains("probe-") {
            break;
        }
        n += 1;
        assert!(n < 60, "split never read a line");
    }
    append_cri(&app, &stack_trace(1));
    joined.wait_for_log(&["frame0001b"], DEADLINE);
    split.wait_for_log(&["frame0001b"], DEADLINE);
    drop(agent); // SIGKILL
    append_cri(&app, &stack_trace(2));
    let _agent = spawn_node_agent(dir.path(), &pods, &pipelines);
    let joined_log = joined.wait_for_log(&["frame0002b"], DEADLINE);
    let split_log = split.wait_for_log(&["frame0002b"], DEADLINE);
    for trace in [1, 2] {
        let lines = stack_trace(trace);
        let whole = lines.join("\n");
        assert!(
            joined_log.contains(&whole),
            "joined has trace {trace} as one record:\n{joined_log}"
        );
        assert!(
            !split_log.contains(&whole),
            "split has no joined trace:\n{split_log}"
        );
        for line in &lines {
            assert!(
                split_log.contains(&format!("Str({line})")),
                "split has `{line}` as its own record:\n{split_log}"
            );
        }
    }
    assert!(
        !split_log.contains("pre-existing-0000"),
        "split starts at the end of files that existed"
    );
}

/// Issue 16: a node reads container logs with at most four distinct multiline/startAt
/// settings. With two plain pipelines (`end` and `beginning`) and four multiline
/// patterns, the plain ones and the first two multiline pipelines by name are read;
/// the last two report `InputNotRead` in their errors (and so their health).
#[test]
fn pipelines_beyond_the_node_s_tailer_settings_report_their_input_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let file = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    append_cri(&file, &seq_lines(0..1));
    let port = free_port();
    let pipeline = |name: &str, runtime: &str| {
        format!(
            "  - metadata: {{name: {name}}}\n    spec:\n      input: {{runtime: {{enabled: true{runtime}}}}}\n      output: {{http: {{url: \"http://127.0.0.1:9/down\", format: jsonLines}}}}\n"
        )
    };
    let mut pipelines =
        pipeline("plain-end", "") + &pipeline("plain-beginning", ", startAt: beginning");
    for i in 0..4 {
        pipelines += &pipeline(
            &format!("multi-{i}"),
            &format!(", multiline: {{firstLinePattern: '^p{i}'}}"),
        );
    }
    let _agent = spawn_node_agent_on(dir.path(), &pods, &pipelines, port);
    // Counted again at each retry of the node's unread inputs: any count.
    let error = |name: &str| {
        format!(
            "kaas_agent_log_pipeline_errors_total{{pipeline=\"{name}\",reason=\"InputNotRead\"}} "
        )
    };
    let metrics = wait_for_metrics(port, &[&error("multi-2"), &error("multi-3")]);
    for name in ["plain-end", "plain-beginning", "multi-0", "multi-1"] {
        assert!(
            !metrics.contains(&format!("pipeline=\"{name}\",reason=\"InputNotRead\"")),
            "{name} is read:\n{metrics}"
        );
    }
}

/// A node without a journal (the directory is missing) stops only the pipeline that
/// reads the journal, which reports `InputNotRead`; container logs on the same node
/// still reach their backend.
#[test]
fn a_missing_journal_stops_only_the_pipeline_that_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (rotel, pods, app) = rotel_and_container_log(dir.path());
    append_cri(&app, &["despite-no-journal-0001".to_owned()]);
    let port = free_port();
    let pipelines = format!(
        "  - metadata: {{name: containers}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: beginning}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n  - metadata: {{name: kubelet}}\n    spec:\n      input: {{node: {{enabled: true, journal: {{units: [kubelet.service]}}}}}}\n      output: {{http: {{url: \"http://127.0.0.1:9/down\", format: jsonLines}}}}\n",
        rotel.grpc_port
    );
    // spawn_node_agent_on points --journal-dir at a directory that does not exist.
    let _agent = spawn_node_agent_on(dir.path(), &pods, &pipelines, port);
    rotel.wait_for_log(&["despite-no-journal-0001"], DEADLINE);
    let metrics = wait_for_metrics(
        port,
        // Counted again at each retry: any count.
        &["kaas_agent_log_pipeline_errors_total{pipeline=\"kubelet\",reason=\"InputNotRead\"} "],
    );
    assert!(
        !metrics.contains("pipeline=\"containers\",reason=\"InputNotRead\""),
        "the container pipeline is read:\n{metrics}"
    );
}

/// Issue 16: an agent upgraded from one tailer for every setting (before `startAt` was
/// per pipeline, all positions in `tail.checkpoint`) does not read the files of a
/// `startAt: beginning` pipeline from their beginning once more: its tailer starts
/// where the single tailer was. Emulated by a first run whose pipeline reads with the
/// single tailer's position file (`startAt: end`), and a data directory without the
/// layout marker the older agents did not write; a line that was in the file before
/// the first start was never read, and must not be read after the upgrade either.
#[test]
fn an_upgrade_from_one_tailer_does_not_read_start_at_beginning_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let (rotel, pods, app) = rotel_and_container_log(dir.path());
    append_cri(&app, &["before-the-first-start-0000".to_owned()]);
    let pipeline = |start_at: &str| {
        format!(
            "  - metadata: {{name: logs}}\n    spec:\n      input: {{runtime: {{enabled: true, startAt: {start_at}}}}}\n      output: {{otlp: {{endpoint: \"http://127.0.0.1:{}\"}}}}\n",
            rotel.grpc_port
        )
    };
    let agent = spawn_node_agent(dir.path(), &pods, &pipeline("end"));
    wait_until_read(&rotel, &app);
    drop(agent); // SIGKILL
    let marker = dir
        .path()
        .join("data/log-inputs")
        .join(kaas_cluster_agent::pipeline::node_logs::PER_SETTING_LAYOUT_MARKER);
    std::fs::remove_file(&marker).expect("the first run wrote the layout marker");
    let _agent = spawn_node_agent(dir.path(), &pods, &pipeline("beginning"));
    append_cri(&app, &["after-the-upgrade-0001".to_owned()]);
    let log = rotel.wait_for_log(&["after-the-upgrade-0001"], DEADLINE);
    assert!(
        !log.contains("before-the-first-start-0000"),
        "the upgraded agent read the file from its beginning again:\n{log}"
    );
    assert!(marker.exists(), "the upgrade is recorded");
}

/// A rotel logging below `dir`, the pod log directory, and the container log of
/// `shop/web-1`'s `app` in it (not written yet).
fn rotel_and_container_log(dir: &Path) -> (Rotel, std::path::PathBuf, std::path::PathBuf) {
    let rotel_dir = dir.join("rotel");
    std::fs::create_dir_all(&rotel_dir).expect("test harness");
    let rotel = Rotel::start_logging(&rotel_dir, &["logs"]);
    let pods = dir.join("pods");
    let app = pods.join("shop_web-1_0f3c9a52-1111-2222-3333-444455556666/app/0.log");
    (rotel, pods, app)
}

/// Appends probe lines to `file` until `rotel` has one: a pipeline that starts at the
/// end of existing files reads from here on.
fn wait_until_read(rotel: &Rotel, file: &Path) {
    for n in 1..60 {
        append_cri(file, &[format!("probe-{n:04}")]);
        std::thread::sleep(Duration::from_millis(500));
        if rotel.log().contains("probe-") {
            return;
        }
    }
    panic!("the agent never read a line");
}
