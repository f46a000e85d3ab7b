//! How trace-bench starts each gateway: cluster-agent with one trace pipeline
//! ([`cluster_agent_config`]) and rotel (PyPI `rotel`, the OTLP gateway in Rust with
//! in-memory batching), both taking OTLP/HTTP on a port of the run and exporting
//! OTLP/HTTP protobuf to the sink, each in a fresh work directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kaas_test_support::peers::Rotel;
use kaas_test_support::process::{ChildGuard, free_port};

use super::workload::HEALTH_CHECK_NAME;

/// A gateway under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// cluster-agent in the cluster role (the one serving pushes), from this binary.
    ClusterAgent(PathBuf),
    /// rotel.
    Rotel,
}

impl Gateway {
    /// Its name in reports and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClusterAgent(_) => "cluster-agent",
            Self::Rotel => "rotel",
        }
    }

    /// Whether it runs `row`: rotel has no processors of its own configured here, so
    /// it runs the like-for-like row only.
    pub fn runs(&self, row: Row) -> bool {
        matches!(self, Self::ClusterAgent(_)) || row == Row::LikeForLike
    }
}

/// What the gateway does to spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// Sampling ratio 1.0, no filters, no attribute rules: every span passes, as
    /// through rotel.
    LikeForLike,
    /// Sampling at 0.5, health checks dropped by name, one attribute set and one
    /// deleted.
    Processors,
}

/// The rejection threshold of the processors row's sampling ratio 0.5, over 2^56.
pub const PROCESSORS_THRESHOLD: u64 = 1 << 55;

impl Row {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::LikeForLike => "ratio 1.0, no filters",
            Self::Processors => "ratio 0.5, drop, set, delete",
        }
    }

    /// Whether health checks are dropped, and the sampling threshold.
    pub fn expectation(self) -> (bool, u64) {
        match self {
            Self::LikeForLike => (false, 0),
            Self::Processors => (true, PROCESSORS_THRESHOLD),
        }
    }
}

/// cluster-agent's configuration: one trace pipeline taking unauthenticated OTLP and
/// exporting OTLP/HTTP to the sink through its disk buffer (every trace pipeline has
/// one: OK is answered once the spans are written there).
pub fn cluster_agent_config(row: Row, sink_url: &str) -> String {
    let processing = match row {
        Row::LikeForLike => String::new(),
        Row::Processors => format!(
            "\x20     sampling: {{ratio: 0.5}}\n\
             \x20     processors:\n\
             \x20       dropSpans: [{{exact: \"{HEALTH_CHECK_NAME}\"}}]\n\
             \x20       attributes: [{{action: set, key: deployment.environment, value: bench}}, {{action: delete, key: http.request.method}}]\n"
        ),
    };
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n\
         tracePipelines:\n\
         \x20 - metadata: {{name: bench}}\n\
         \x20   spec:\n\
         \x20     input: {{authentication: {{mode: unauthenticated}}}}\n\
         {processing}\
         \x20     output: {{otlp: {{endpoint: \"{sink_url}\", protocol: http}}}}\n"
    )
}

/// A running gateway: its OTLP/HTTP traces URL and its process id.
pub struct RunningGateway {
    /// `http://127.0.0.1:port/v1/traces`.
    pub traces_url: String,
    /// The process whose CPU and memory are measured.
    pub pid: u32,
    process: Process,
}

enum Process {
    Agent(ChildGuard),
    Rotel(Rotel),
}

impl RunningGateway {
    /// Stops the gateway (SIGTERM, then SIGKILL).
    pub fn stop(self) {
        match self.process {
            Process::Agent(mut guard) => guard.terminate(std::time::Duration::from_secs(10)),
            Process::Rotel(rotel) => drop(rotel),
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        match &mut self.process {
            Process::Agent(guard) => guard.try_wait().is_some(),
            Process::Rotel(_) => false,
        }
    }
}

/// Starts `gateway` for `row`, exporting to the sink at `sink_url`, in `work`.
pub fn start(gateway: &Gateway, row: Row, sink_url: &str, work: &Path) -> RunningGateway {
    std::fs::create_dir_all(work).expect("gateway work directory");
    let http_port = free_port();
    let traces_url = format!("http://127.0.0.1:{http_port}/v1/traces");
    match gateway {
        Gateway::ClusterAgent(binary) => {
            let config = work.join("cluster-agent.yaml");
            std::fs::write(&config, cluster_agent_config(row, sink_url))
                .expect("write cluster-agent.yaml");
            let guard = ChildGuard::spawn(
                "cluster-agent",
                Command::new(binary)
                    .arg("run")
                    .arg("--config")
                    .arg(&config)
                    .arg("--kubernetes")
                    .arg("off")
                    .arg("--data-dir")
                    .arg(work.join("data"))
                    .arg("--listen-address")
                    .arg(format!("127.0.0.1:{}", free_port()))
                    .arg("--otlp-grpc-listen-address")
                    .arg("127.0.0.1:0")
                    .arg("--otlp-http-listen-address")
                    .arg(format!("127.0.0.1:{http_port}"))
                    .arg("--zipkin-listen-address")
                    .arg("127.0.0.1:0")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(work.join("cluster-agent.log")).expect("agent log"),
                    ),
            );
            RunningGateway {
                traces_url,
                pid: guard.id(),
                process: Process::Agent(guard),
            }
        }
        Gateway::Rotel => {
            let rotel = Rotel::forwarding(work, free_port(), http_port, sink_url);
            RunningGateway {
                traces_url,
                pid: rotel.pid(),
                process: Process::Rotel(rotel),
            }
        }
    }
}
