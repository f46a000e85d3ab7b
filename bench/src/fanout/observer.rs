//! The observer under test: an `observer serve` process on loopback ports with its own
//! SQLite data directory, restartable on the same ports and data, read through its REST
//! API, its `/metrics` (on the metrics listen address) and `/proc/<pid>/status`.
//!
//! Every simulated agent connects from 127.0.0.1, so the observer runs with
//! [`PENDING_PER_ADDRESS`] instead of its per-address default.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kaas_observer::api::model::{
    AppliedPipeline, ClusterList, CreateClusterRequest, CreateTenantRequest, CreatedCluster,
    PipelineStatusView, TenantView,
};
use kaas_observer::api::quotas::{SetQuotasRequest, TenantQuotasView};
use kaas_observer::cli::client::ApiClient;
use kaas_observer::serve::ADMIN_TOKEN_FILE;
use kaas_test_support::process::free_port;
use reqwest::Method;

use super::FanoutError;

/// How long `observer serve` may take to answer `/readyz`: opening SQLite, migrating
/// and creating the CA take well under a second; a loaded machine gets slack.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long one `/metrics` or `/readyz` request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--control-max-pending-per-address`: the bench's thousands of agents all come from
/// 127.0.0.1, which the observer's default (32) would treat as one client holding
/// idle connections. High enough that a 10,000-agent storm is never refused by it.
pub const PENDING_PER_ADDRESS: usize = 100_000;

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`: resident now, bytes.
    pub rss_bytes: u64,
    /// `VmHWM`: the high-water mark of the resident set, bytes.
    pub peak_bytes: u64,
}

impl Memory {
    /// Reads the memory of process `pid`; zeros if it cannot be read.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kb| kb * 1024)
        };
        Self {
            rss_bytes: field("VmRSS:"),
            peak_bytes: field("VmHWM:"),
        }
    }
}

pub use crate::cpu_seconds;

/// The figures read from the observer's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObserverMetrics {
    /// `kaas_observer_agent_streams`.
    pub agent_streams: u64,
    /// `kaas_observer_config_pushes_total{result="success"}`.
    pub pushes_answered: u64,
    /// `kaas_observer_tls_handshakes_total{result="success"}`.
    pub handshakes_succeeded: u64,
    /// `kaas_observer_tls_handshakes_total{result="failure"}`.
    pub handshakes_failed: u64,
    /// `kaas_observer_tls_handshakes_total{result="timeout"}`.
    pub handshakes_timed_out: u64,
    /// `kaas_observer_tls_handshakes_total{result="refused"}` and
    /// `{result="wait_timeout"}`: connections the front closed before their handshake
    /// (per-address cap, wait deadline); none for a bench that sets
    /// [`PENDING_PER_ADDRESS`].
    pub handshakes_refused: u64,
    /// `kaas_observer_tls_handshakes_waiting`.
    pub handshakes_waiting: u64,
}

impl ObserverMetrics {
    /// Parses the OpenMetrics text the observer serves.
    pub fn parse(text: &str) -> Self {
        let value = |prefix: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        Self {
            agent_streams: value("kaas_observer_agent_streams "),
            pushes_answered: value("kaas_observer_config_pushes_total{result=\"success\"} "),
            handshakes_succeeded: value("kaas_observer_tls_handshakes_total{result=\"success\"} "),
            handshakes_failed: value("kaas_observer_tls_handshakes_total{result=\"failure\"} "),
            handshakes_timed_out: value("kaas_observer_tls_handshakes_total{result=\"timeout\"} "),
            handshakes_refused: value("kaas_observer_tls_handshakes_total{result=\"refused\"} ")
                + value("kaas_observer_tls_handshakes_total{result=\"wait_timeout\"} "),
            handshakes_waiting: value("kaas_observer_tls_handshakes_waiting "),
        }
    }
}

/// The observer's REST API with the bootstrap admin token. Cheap to clone (one
/// connection pool).
#[derive(Clone, Debug)]
pub struct ObserverApi {
    client: ApiClient,
}

impl ObserverApi {
    /// `POST /api/v1/tenants`.
    pub async fn create_tenant(&self, name: &str) -> Result<(), FanoutError> {
        let body = CreateTenantRequest {
            name: name.to_owned(),
        };
        self.client
            .call::<TenantView>(Method::POST, &["api", "v1", "tenants"], &[], Some(&body))
            .await?;
        Ok(())
    }

    /// `PUT /api/v1/tenants/{tenant}/quotas` with the cluster quota at `clusters`, as an
    /// admin raises it for a large customer.
    pub async fn set_cluster_quota(
        &self,
        tenant: &str,
        clusters: usize,
    ) -> Result<(), FanoutError> {
        let body = SetQuotasRequest {
            limits: [("clusters".to_owned(), clusters as u64)].into(),
        };
        self.client
            .call::<TenantQuotasView>(
                Method::PUT,
                &["api", "v1", "tenants", tenant, "quotas"],
                &[],
                Some(&body),
            )
            .await?;
        Ok(())
    }

    /// `POST /api/v1/clusters`; returns the join token.
    pub async fn create_cluster(
        &self,
        tenant: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<String, FanoutError> {
        let body = CreateClusterRequest {
            name: name.to_owned(),
            tenant: Some(tenant.to_owned()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            api_endpoint: None,
        };
        let created: CreatedCluster = self
            .client
            .call(Method::POST, &["api", "v1", "clusters"], &[], Some(&body))
            .await?;
        Ok(created.join_token)
    }

    /// `PUT /api/v1/pipelines/{name}?tenant=…` with a JSON document.
    pub async fn apply_pipeline(
        &self,
        tenant: &str,
        name: &str,
        document: &serde_json::Value,
    ) -> Result<AppliedPipeline, FanoutError> {
        Ok(self
            .client
            .call(
                Method::PUT,
                &["api", "v1", "pipelines", name],
                &[("tenant", tenant.to_owned())],
                Some(document),
            )
            .await?)
    }

    /// `GET /api/v1/clusters?tenant=…`.
    pub async fn list_clusters(&self, tenant: &str) -> Result<ClusterList, FanoutError> {
        Ok(self
            .client
            .call(
                Method::GET,
                &["api", "v1", "clusters"],
                &[("tenant", tenant.to_owned())],
                None,
            )
            .await?)
    }

    /// `GET /api/v1/pipelines/{name}/status?tenant=…`.
    pub async fn pipeline_status(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<PipelineStatusView, FanoutError> {
        Ok(self
            .client
            .call(
                Method::GET,
                &["api", "v1", "pipelines", name, "status"],
                &[("tenant", tenant.to_owned())],
                None,
            )
            .await?)
    }
}

/// A running (or killed) `observer serve`.
pub struct ObserverProcess {
    binary: PathBuf,
    data_dir: PathBuf,
    api_port: u16,
    metrics_port: u16,
    grpc_port: u16,
    child: Option<Child>,
    http: reqwest::Client,
    api: ObserverApi,
}

impl ObserverProcess {
    /// Starts `binary serve` on two free loopback ports with `data_dir`, and waits until
    /// it is ready.
    pub async fn start(binary: &Path, data_dir: &Path) -> Result<Self, FanoutError> {
        if !binary.is_file() {
            return Err(FanoutError::Setup(format!(
                "{} not found; build it with cargo build --release -p kaas-observer",
                binary.display()
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .map_err(|e| FanoutError::Setup(format!("HTTP client: {e}")))?;
        let ports = Ports {
            api: free_port(),
            metrics: free_port(),
            grpc: free_port(),
        };
        let (api_port, metrics_port, grpc_port) = (ports.api, ports.metrics, ports.grpc);
        let api_url = format!("http://127.0.0.1:{api_port}");
        let child = spawn(binary, data_dir, ports)?;
        let mut child = Some(child);
        wait_ready(&http, &api_url, &mut child, data_dir).await?;
        let token = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
            .map_err(|e| FanoutError::Setup(format!("admin token: {e}")))?;
        let client = ApiClient::new(&api_url, Some(token.trim().to_owned()), None)
            .map_err(|e| FanoutError::Setup(e.to_string()))?;
        Ok(Self {
            binary: binary.to_owned(),
            data_dir: data_dir.to_owned(),
            api_port,
            metrics_port,
            grpc_port,
            child,
            http,
            api: ObserverApi { client },
        })
    }

    /// Starts the process again on the same ports and data and waits for `/readyz`.
    /// `listening` runs as soon as the control port accepts connections again.
    pub async fn restart(&mut self, listening: impl FnOnce()) -> Result<(), FanoutError> {
        self.kill();
        self.child = Some(spawn(
            &self.binary,
            &self.data_dir,
            Ports {
                api: self.api_port,
                metrics: self.metrics_port,
                grpc: self.grpc_port,
            },
        )?);
        let until = Instant::now() + READY_DEADLINE;
        let control = ("127.0.0.1", self.grpc_port);
        // A bare TCP connection, dropped at once: the server sees a failed handshake.
        while tokio::net::TcpStream::connect(control).await.is_err() {
            if Instant::now() > until {
                return Err(FanoutError::Observer(format!(
                    "the restarted observer did not listen within {READY_DEADLINE:?}; its log is {}",
                    log_path(&self.data_dir).display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        listening();
        wait_ready(&self.http, &self.api_url(), &mut self.child, &self.data_dir).await
    }

    /// Ends the process with SIGKILL, as a crash or an OOM kill would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The REST API.
    pub fn api(&self) -> &ObserverApi {
        &self.api
    }

    /// The process id, 0 when not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The control endpoint agents connect to.
    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// The observer's SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("observer.db")
    }

    /// The cluster CA certificate agents trust for joining.
    pub fn ca_pem(&self) -> Result<String, FanoutError> {
        std::fs::read_to_string(self.data_dir.join("ca.crt"))
            .map_err(|e| FanoutError::Setup(format!("observer CA: {e}")))
    }

    /// The process's memory now.
    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// The process's CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Reads `/metrics`; `None` while the observer does not answer.
    pub async fn metrics(&self) -> Option<ObserverMetrics> {
        let response = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(ObserverMetrics::parse(&response.text().await.ok()?))
    }
}

/// The observer's log file in `data_dir` (every run appends to it).
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("observer.log")
}

/// The observer's loopback ports.
#[derive(Clone, Copy)]
struct Ports {
    api: u16,
    metrics: u16,
    grpc: u16,
}

fn spawn(binary: &Path, data_dir: &Path, ports: Ports) -> Result<Child, FanoutError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(data_dir))
        .map_err(|e| FanoutError::Setup(format!("observer log: {e}")))?;
    Command::new(binary)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-address")
        .arg(format!("127.0.0.1:{}", ports.api))
        .arg("--metrics-listen-address")
        .arg(format!("127.0.0.1:{}", ports.metrics))
        .arg("--grpc-listen-address")
        .arg(format!("127.0.0.1:{}", ports.grpc))
        .arg("--control-max-pending-per-address")
        .arg(PENDING_PER_ADDRESS.to_string())
        // Every simulated agent joins from 127.0.0.1: the per-address limit of Join,
        // which protects a real control port, would measure itself here.
        .arg("--join-rate-limit")
        .arg("0")
        // The production default; its per-connection lines are part of the cost.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| FanoutError::Setup(format!("cannot start {}: {e}", binary.display())))
}

async fn wait_ready(
    http: &reqwest::Client,
    api_url: &str,
    child: &mut Option<Child>,
    data_dir: &Path,
) -> Result<(), FanoutError> {
    let until = Instant::now() + READY_DEADLINE;
    let url = format!("{api_url}/readyz");
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if let Some(process) = child
            && let Ok(Some(status)) = process.try_wait()
        {
            *child = None;
            return Err(FanoutError::Observer(format!(
                "observer exited with {status}; its log is {}",
                log_path(data_dir).display()
            )));
        }
        if Instant::now() > until {
            return Err(FanoutError::Observer(format!(
                "observer not ready within {READY_DEADLINE:?}; its log is {}",
                log_path(data_dir).display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for ObserverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_from_the_openmetrics_text() {
        let text = "# HELP kaas_observer_agent_streams Agent control streams open on this replica.\n\
                    # TYPE kaas_observer_agent_streams gauge\n\
                    kaas_observer_agent_streams 42\n\
                    # TYPE kaas_observer_config_pushes counter\n\
                    kaas_observer_config_pushes_total{result=\"failure\"} 3\n\
                    kaas_observer_config_pushes_total{result=\"success\"} 40\n\
                    kaas_observer_tls_handshakes_total{result=\"success\"} 41\n\
                    kaas_observer_tls_handshakes_total{result=\"timeout\"} 2\n\
                    kaas_observer_tls_handshakes_total{result=\"refused\"} 4\n\
                    kaas_observer_tls_handshakes_total{result=\"wait_timeout\"} 1\n\
                    kaas_observer_tls_handshakes_waiting 7\n\
                    # EOF\n";
        assert_eq!(
            ObserverMetrics::parse(text),
            ObserverMetrics {
                agent_streams: 42,
                pushes_answered: 40,
                handshakes_succeeded: 41,
                handshakes_failed: 0,
                handshakes_timed_out: 2,
                handshakes_refused: 5,
                handshakes_waiting: 7,
            }
        );
        assert_eq!(ObserverMetrics::parse(""), ObserverMetrics::default());
    }

    #[test]
    fn memory_of_this_process_is_read_from_proc() {
        let memory = Memory::of(std::process::id());
        assert!(memory.rss_bytes > 0);
        assert!(memory.peak_bytes >= memory.rss_bytes);
    }
}
