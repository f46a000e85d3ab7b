//! How log-bench starts each agent: a peer with its committed configuration
//! (`bench/peers/`), cluster-agent with the log pipeline of [`cluster_agent_config`],
//! each with the run's paths and port filled in, in a fresh work directory, in the
//! foreground.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kaas_test_support::peers::binary;
use kaas_test_support::process::{ChildGuard, free_port};

/// syslog-ng's configuration (Debian 12's syslog-ng 3.38 with its HTTP module).
const SYSLOG_NG_CONF: &str = include_str!("../../peers/syslog-ng.conf");
/// rsyslog's configuration (Debian 12's rsyslog 8.2302 with omelasticsearch).
const RSYSLOG_CONF: &str = include_str!("../../peers/rsyslog.conf");

/// Where scripts/test.sh extracts rsyslog (its Debian package conflicts with
/// syslog-ng's, so it is unpacked with `dpkg -x` rather than installed); overridden
/// by `KAAS_RSYSLOG_ROOT`.
pub const DEFAULT_RSYSLOG_ROOT: &str = "/opt/kaas-peers/rsyslog";

/// Where rsyslog's modules are inside its extracted package.
const RSYSLOG_MODULES: &str = "usr/lib/x86_64-linux-gnu/rsyslog";

/// A log agent under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// cluster-agent in the node role, from the given binary.
    ClusterAgent(PathBuf),
    /// syslog-ng.
    SyslogNg,
    /// rsyslog.
    Rsyslog,
}

impl Peer {
    /// Its name in reports and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Peer::ClusterAgent(_) => "cluster-agent",
            Peer::SyslogNg => "syslog-ng",
            Peer::Rsyslog => "rsyslog",
        }
    }
}

/// cluster-agent's configuration: one log pipeline reading every container's log
/// from the beginning (`startAt: beginning`, as the peers read whole files) with the
/// default processing (JSON bodies parsed into attributes, the original line kept),
/// sending Elasticsearch bulk requests to the sink through the pipeline's disk buffer,
/// which every log pipeline has: a read position is committed only once its records
/// are written there.
pub fn cluster_agent_config(sink_port: u16) -> String {
    format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n\
         externalLabels: {{cluster: bench}}\nlogPipelines:\n\
         \x20 - metadata: {{name: bench}}\n\
         \x20   spec:\n\
         \x20     input: {{runtime: {{enabled: true, startAt: beginning}}}}\n\
         \x20     output: {{http: {{url: \"http://127.0.0.1:{sink_port}/_bulk\", format: elasticsearchBulk, index: bench}}}}\n"
    )
}

/// The extracted rsyslog's root directory.
pub fn rsyslog_root() -> PathBuf {
    std::env::var_os("KAAS_RSYSLOG_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RSYSLOG_ROOT))
}

fn render(template: &str, root: &Path, work: &Path, sink_port: u16, files: usize) -> String {
    template
        .replace("@ROOT@", &root.display().to_string())
        .replace("@WORK@", &work.display().to_string())
        .replace("@SINK_PORT@", &sink_port.to_string())
        .replace("@MAX_FILES@", &(files + 100).to_string())
        .replace("@LOG_IW_SIZE@", &((files + 100) * 100).to_string())
}

/// Starts `peer` reading the files under `root` and sending to the sink on
/// `sink_port`, with its state in `work`.
pub fn start(peer: &Peer, root: &Path, work: &Path, sink_port: u16, files: usize) -> ChildGuard {
    std::fs::create_dir_all(work.join("disk-buffer")).expect("peer work directory");
    match peer {
        Peer::ClusterAgent(binary) => {
            let config = work.join("cluster-agent.yaml");
            std::fs::write(&config, cluster_agent_config(sink_port))
                .expect("write cluster-agent.yaml");
            ChildGuard::spawn(
                "cluster-agent",
                Command::new(binary)
                    .arg("run")
                    .arg("--config")
                    .arg(&config)
                    .arg("--role")
                    .arg("node")
                    .arg("--pod-log-dir")
                    .arg(root)
                    .arg("--journal-dir")
                    .arg(work.join("no-journal"))
                    .arg("--kubernetes")
                    .arg("off")
                    .arg("--data-dir")
                    .arg(work.join("data"))
                    .arg("--listen-address")
                    .arg(format!("127.0.0.1:{}", free_port()))
                    .arg("--otlp-grpc-listen-address")
                    .arg("127.0.0.1:0")
                    .arg("--otlp-http-listen-address")
                    .arg("127.0.0.1:0")
                    .arg("--zipkin-listen-address")
                    .arg("127.0.0.1:0")
                    .env("NODE_NAME", "bench-node")
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(work.join("cluster-agent.log")).expect("agent log"),
                    ),
            )
        }
        Peer::SyslogNg => {
            let config = work.join("syslog-ng.conf");
            std::fs::write(
                &config,
                render(SYSLOG_NG_CONF, root, work, sink_port, files),
            )
            .expect("write syslog-ng.conf");
            ChildGuard::spawn(
                "syslog-ng",
                Command::new(binary("syslog-ng", "syslog-ng-core syslog-ng-mod-http"))
                    .arg("--foreground")
                    .arg("--no-caps")
                    .arg(format!("--cfgfile={}", config.display()))
                    .arg(format!(
                        "--persist-file={}",
                        work.join("syslog-ng.persist").display()
                    ))
                    .arg(format!(
                        "--pidfile={}",
                        work.join("syslog-ng.pid").display()
                    ))
                    .arg(format!(
                        "--control={}",
                        work.join("syslog-ng.ctl").display()
                    ))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        }
        Peer::Rsyslog => {
            let rsyslog = rsyslog_root();
            let rsyslogd = rsyslog.join("usr/sbin/rsyslogd");
            assert!(
                rsyslogd.is_file(),
                "{} is missing; scripts/test.sh extracts rsyslog there (or set KAAS_RSYSLOG_ROOT)",
                rsyslogd.display()
            );
            let config = work.join("rsyslog.conf");
            std::fs::write(&config, render(RSYSLOG_CONF, root, work, sink_port, files))
                .expect("write rsyslog.conf");
            ChildGuard::spawn(
                "rsyslog",
                Command::new(rsyslogd)
                    .arg("-n")
                    .arg("-f")
                    .arg(&config)
                    .arg("-i")
                    .arg(work.join("rsyslog.pid"))
                    .arg("-M")
                    .arg(rsyslog.join(RSYSLOG_MODULES))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        }
    }
}
