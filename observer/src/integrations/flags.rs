//! The `observer serve` flags of the integrations and the one call that starts them:
//! flatten [`IntegrationFlags`] into the serve arguments, call [`Integrations::start`]
//! once the store and the lifecycle run, register its metrics, and hand
//! [`Integrations::central_pipeline`] to the control service.
//!
//! Each part is on only when its flags say where to go: the central pipeline with
//! `--thanos-receive-url`, the fleet remote-write with `--central-remote-write-url`
//! (default: the receive URL), the generated files with `--integrations-dir` (the
//! hashring also needs `--thanos-receive-endpoint`, Grafana `--thanos-query-url`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kaas_pipeline::buffer::Buffer;
use kaas_pipeline::units::{ByteSize, parse_duration};
use prometheus_client::registry::Registry;
use url::Url;

use super::config_state::ConfigStates;
use super::files::{
    DEFAULT_HASHRING, FilesError, FilesSettings, GrafanaSettings, HashringSettings,
    IntegrationWriter,
};
use super::remote_write::{
    DEFAULT_PROVIDER_TENANT, RemoteWriteError, RemoteWriteSettings, RemoteWriter, SeriesSource,
    WriterSources, fleet_source,
};
use crate::fleet::ClusterLifecycle;
use crate::rendering::central::{CentralPipelineSettings, CentralScrape, DEFAULT_TENANT_HEADER};
use crate::store::Store;

/// What the central pipeline collects besides the agent's own metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CentralInput {
    /// Pods and Services annotated `prometheus.io/scrape`.
    Prometheus,
    /// kubelet, cAdvisor and node metrics.
    Runtime,
}

/// The integrations' flags of `observer serve`. `Default` (not clap's defaults) turns
/// everything off, for code that builds serve arguments by hand.
#[derive(Clone, Debug, Default, Args)]
pub struct IntegrationFlags {
    /// Thanos receive's remote-write URL: every cluster gets the default central
    /// pipeline to it (`kaas-central`). Unset: no central pipeline.
    #[arg(long, value_name = "URL")]
    pub thanos_receive_url: Option<String>,
    /// The header carrying the tenant, for the central pipeline and the fleet series.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TENANT_HEADER)]
    pub thanos_tenant_header: String,
    /// What the central pipeline collects besides the agent's own metrics and the
    /// cluster health data it always collects (kube-state-metrics, node-exporter, the
    /// control plane as each cluster's setting says) (comma-separated; empty for
    /// nothing else).
    #[arg(
        long,
        value_name = "INPUT,...",
        value_delimiter = ',',
        default_value = "prometheus,runtime"
    )]
    pub central_inputs: Vec<CentralInput>,
    /// The central pipeline's scrape interval (default: the pipeline default, 30s).
    #[arg(long, value_name = "DURATION")]
    pub central_scrape_interval: Option<String>,
    /// The central pipeline's disk buffer per cluster (default 1Gi).
    #[arg(long, value_name = "QUANTITY")]
    pub central_buffer_max_bytes: Option<String>,
    /// The oldest data the central pipeline's buffer keeps (default 6h).
    #[arg(long, value_name = "DURATION")]
    pub central_buffer_max_age: Option<String>,
    /// Where the observer remote-writes the fleet series (`kaas_cluster_*`,
    /// `kaas_pipeline_*`). Default: `--thanos-receive-url`. Unset both: not written.
    #[arg(long, value_name = "URL")]
    pub central_remote_write_url: Option<String>,
    /// The tenant the fleet series are written as; the hashring always admits it.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROVIDER_TENANT)]
    pub provider_tenant: String,
    /// How often the fleet series are written.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub central_remote_write_interval: String,
    /// A PEM file of CA certificates to trust for an https remote-write URL.
    #[arg(long, value_name = "FILE")]
    pub central_remote_write_ca_file: Option<PathBuf>,
    /// Directory for the generated Thanos, Grafana and Alertmanager files. Unset: none.
    #[arg(long, value_name = "DIR")]
    pub integrations_dir: Option<PathBuf>,
    /// A Thanos receive node (`host:port` of its gRPC) for `thanos/hashring.json`.
    /// Repeatable; without any, no hashring file is written.
    #[arg(long = "thanos-receive-endpoint", value_name = "HOST:PORT")]
    pub thanos_receive_endpoints: Vec<String>,
    /// The hashring's name.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_HASHRING)]
    pub thanos_hashring: String,
    /// Thanos query's URL as Grafana reaches it; without it, no Grafana files.
    #[arg(long, value_name = "URL")]
    pub thanos_query_url: Option<String>,
    /// Where Grafana mounts the integrations directory (default: the same path).
    #[arg(long, value_name = "PATH")]
    pub grafana_integrations_path: Option<PathBuf>,
}

/// Why the integrations cannot start; each names its flag.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationsError {
    /// A flag's value is wrong.
    #[error("--{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The fleet remote-write cannot start.
    #[error("--central-remote-write-url: {0}")]
    RemoteWrite(#[from] RemoteWriteError),
    /// The integrations directory cannot be used.
    #[error("--integrations-dir: {0}")]
    Files(#[from] FilesError),
}

fn flag_error(flag: &'static str) -> impl Fn(String) -> IntegrationsError {
    move |reason| IntegrationsError::Flag { flag, reason }
}

fn url_flag(flag: &'static str, text: &str) -> Result<Url, IntegrationsError> {
    let url = Url::parse(text).map_err(|e| flag_error(flag)(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(flag_error(flag)(format!("{text:?} is not an http(s) URL")));
    }
    Ok(url)
}

impl IntegrationFlags {
    /// The central pipeline settings, checked; `None` without `--thanos-receive-url`.
    pub fn central_pipeline(&self) -> Result<Option<CentralPipelineSettings>, IntegrationsError> {
        let Some(url) = &self.thanos_receive_url else {
            return Ok(None);
        };
        let mut settings = CentralPipelineSettings::new(url.clone());
        settings.tenant_header = self.thanos_tenant_header.clone();
        settings.scrape = CentralScrape {
            prometheus_annotations: self.central_inputs.contains(&CentralInput::Prometheus),
            runtime: self.central_inputs.contains(&CentralInput::Runtime),
            interval: self.central_scrape_interval.clone(),
        };
        settings.buffer = Buffer {
            max_bytes: self
                .central_buffer_max_bytes
                .clone()
                .map(ByteSize::Quantity),
            max_age: self.central_buffer_max_age.clone(),
            when_full: None,
        };
        settings.check().map_err(|errors| {
            flag_error("thanos-receive-url")(format!(
                "the central pipeline these flags make is invalid: {errors}"
            ))
        })?;
        Ok(Some(settings))
    }

    /// The fleet remote-write settings; `None` without a URL.
    pub fn remote_write(&self) -> Result<Option<RemoteWriteSettings>, IntegrationsError> {
        let (flag, text) = match (&self.central_remote_write_url, &self.thanos_receive_url) {
            (Some(url), _) => ("central-remote-write-url", url),
            (None, Some(url)) => ("thanos-receive-url", url),
            (None, None) => return Ok(None),
        };
        let mut settings = RemoteWriteSettings::new(url_flag(flag, text)?);
        settings.tenant_header = self.thanos_tenant_header.clone();
        settings.tenant = self.provider_tenant.clone();
        settings.interval = parse_duration(&self.central_remote_write_interval)
            .map_err(flag_error("central-remote-write-interval"))?;
        if settings.interval < Duration::from_secs(1) {
            return Err(flag_error("central-remote-write-interval")(
                "must be at least 1s".into(),
            ));
        }
        settings.check()?;
        if let Some(path) = &self.central_remote_write_ca_file {
            settings.ca_pem = Some(std::fs::read(path).map_err(|e| {
                flag_error("central-remote-write-ca-file")(format!("{}: {e}", path.display()))
            })?);
        }
        Ok(Some(settings))
    }

    /// The integration files' settings; `None` without `--integrations-dir`.
    pub fn files(&self) -> Result<Option<FilesSettings>, IntegrationsError> {
        let Some(dir) = &self.integrations_dir else {
            return Ok(None);
        };
        let mut settings = FilesSettings::new(dir.clone());
        if !self.thanos_receive_endpoints.is_empty() {
            settings.hashring = Some(HashringSettings {
                name: self.thanos_hashring.clone(),
                endpoints: self.thanos_receive_endpoints.clone(),
                provider_tenant: self.provider_tenant.clone(),
            });
        }
        if let Some(url) = &self.thanos_query_url {
            settings.grafana = Some(GrafanaSettings {
                query_url: url_flag("thanos-query-url", url)?,
                mount_path: self
                    .grafana_integrations_path
                    .clone()
                    .unwrap_or_else(|| dir.clone()),
            });
        }
        Ok(Some(settings))
    }
}

/// The integrations' settings, every flag checked ([`IntegrationFlags::check`]);
/// `Default` runs none of them.
#[derive(Debug, Default)]
pub struct IntegrationSettings {
    central: Option<CentralPipelineSettings>,
    remote_write: Option<RemoteWriteSettings>,
    files: Option<FilesSettings>,
}

impl IntegrationFlags {
    /// Every integration flag checked: the settings, or every wrong flag's error.
    pub fn check(&self) -> Result<IntegrationSettings, Vec<IntegrationsError>> {
        let mut errors = Vec::new();
        let central = self.central_pipeline().map_err(|e| errors.push(e)).ok();
        let remote_write = self.remote_write().map_err(|e| errors.push(e)).ok();
        let files = self.files().map_err(|e| errors.push(e)).ok();
        match (central, remote_write, files) {
            (Some(central), Some(remote_write), Some(files)) if errors.is_empty() => {
                Ok(IntegrationSettings {
                    central,
                    remote_write,
                    files,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The running integrations.
pub struct Integrations {
    central: Option<CentralPipelineSettings>,
    config_states: ConfigStates,
    remote_writer: Option<RemoteWriter>,
    files: Option<IntegrationWriter>,
}

impl Integrations {
    /// Starts what the checked flags ask for: the fleet remote-write
    /// (reading `lifecycle`'s snapshot and the pipelines' per-cluster configuration
    /// states, written by the lease holder, plus `per_replica`, this replica's own
    /// series such as its probe series, written by every replica) and the file writer
    /// (following `store`). The configuration states always run (they are served on
    /// `/metrics`). Must be called inside a Tokio runtime.
    pub fn start(
        settings: IntegrationSettings,
        store: &Store,
        lifecycle: &ClusterLifecycle,
        per_replica: Vec<SeriesSource>,
    ) -> Result<Self, IntegrationsError> {
        let IntegrationSettings {
            central,
            remote_write,
            files,
        } = settings;
        let config_states = ConfigStates::start(store.clone(), central.clone(), Default::default());
        let remote_writer = remote_write
            .map(|settings| {
                RemoteWriter::start(
                    store.clone(),
                    settings,
                    WriterSources {
                        shared: vec![
                            fleet_source(lifecycle.snapshot_reader()),
                            config_states.source(),
                        ],
                        per_replica,
                    },
                )
            })
            .transpose()?;
        let files = files
            .map(|settings| IntegrationWriter::start(store.clone(), settings))
            .transpose()?;
        tracing::info!(
            central_pipeline = central.is_some(),
            fleet_remote_write = remote_writer.is_some(),
            integration_files = files.is_some(),
            "integrations started"
        );
        Ok(Self {
            central,
            config_states,
            remote_writer,
            files,
        })
    }

    /// The central pipeline's settings, for the control service; `None` when off.
    pub fn central_pipeline(&self) -> Option<&CentralPipelineSettings> {
        self.central.as_ref()
    }

    /// Registers the configuration states and the remote-write metrics (when it runs).
    pub fn register(&self, registry: &mut Registry) {
        self.config_states.register(registry);
        if let Some(writer) = &self.remote_writer {
            writer.register(registry);
        }
    }

    /// Stops the configuration states, the remote-write (releasing its lease) and the
    /// file writer.
    pub fn stop(&self) {
        self.config_states.stop();
        if let Some(writer) = &self.remote_writer {
            writer.stop();
        }
        if let Some(files) = &self.files {
            files.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        flags: IntegrationFlags,
    }

    fn parse(args: &[&str]) -> IntegrationFlags {
        Command::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
            .flags
    }

    #[test]
    fn without_flags_nothing_runs() {
        let flags = parse(&[]);
        assert!(flags.central_pipeline().unwrap().is_none());
        assert!(flags.remote_write().unwrap().is_none());
        assert!(flags.files().unwrap().is_none());
    }

    #[test]
    fn the_receive_url_turns_on_the_pipeline_and_the_fleet_remote_write() {
        let flags = parse(&[
            "--thanos-receive-url",
            "https://receive.example:19291/api/v1/receive",
            "--thanos-tenant-header",
            "X-Scope-OrgID",
            "--central-inputs",
            "runtime",
            "--central-buffer-max-bytes",
            "2Gi",
        ]);
        let central = flags.central_pipeline().unwrap().unwrap();
        assert_eq!(central.tenant_header, "X-Scope-OrgID");
        assert!(!central.scrape.prometheus_annotations && central.scrape.runtime);
        let remote = flags.remote_write().unwrap().unwrap();
        assert_eq!(
            remote.url.as_str(),
            "https://receive.example:19291/api/v1/receive"
        );
        assert_eq!(remote.tenant_header, "X-Scope-OrgID");
        assert_eq!(remote.tenant, "kaas-provider");
        assert_eq!(remote.interval, Duration::from_secs(15));
    }

    #[test]
    fn bad_values_name_their_flag() {
        let flags = parse(&["--thanos-receive-url", "not a url"]);
        assert!(
            flags
                .central_pipeline()
                .unwrap_err()
                .to_string()
                .starts_with("--thanos-receive-url: ")
        );
        let flags = parse(&[
            "--central-remote-write-url",
            "http://x/api/v1/write",
            "--central-remote-write-interval",
            "soon",
        ]);
        assert!(
            flags
                .remote_write()
                .unwrap_err()
                .to_string()
                .starts_with("--central-remote-write-interval: ")
        );
        let flags = parse(&["--integrations-dir", "/x", "--thanos-query-url", "ftp://q"]);
        assert!(
            flags
                .files()
                .unwrap_err()
                .to_string()
                .starts_with("--thanos-query-url: ")
        );
    }

    #[test]
    fn the_files_follow_their_flags() {
        let flags = parse(&["--integrations-dir", "/run/kaas"]);
        let files = flags.files().unwrap().unwrap();
        assert!(files.hashring.is_none() && files.grafana.is_none() && files.alertmanager);
        let flags = parse(&[
            "--integrations-dir",
            "/run/kaas",
            "--thanos-receive-endpoint",
            "receive-0:10901",
            "--thanos-receive-endpoint",
            "receive-1:10901",
            "--thanos-query-url",
            "http://query:9090",
            "--grafana-integrations-path",
            "/etc/grafana/kaas",
        ]);
        let files = flags.files().unwrap().unwrap();
        let hashring = files.hashring.unwrap();
        assert_eq!(hashring.endpoints.len(), 2);
        assert_eq!(hashring.provider_tenant, "kaas-provider");
        assert_eq!(
            files.grafana.unwrap().mount_path,
            PathBuf::from("/etc/grafana/kaas")
        );
    }
}
