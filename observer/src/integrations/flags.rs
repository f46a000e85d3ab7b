//! The `observer serve` flags of the integrations and the one call that starts them:
//! flatten [`IntegrationFlags`] into the serve arguments, call [`Integrations::start`]
//! once the store and the lifecycle run, register its metrics, and hand
//! [`Integrations::central_pipeline`] to the control service.
//!
//! Each part is on only when its flags say where to go: the central pipelines with
//! `--receive-gateway-url`, the fleet remote-write with `--central-remote-write-url`
//! (default: the receive URL), the generated files with `--integrations-dir` (the
//! hashring also needs `--thanos-receive-endpoint`), Grafana's orgs with
//! `--grafana-url` (which also needs `--grafana-admin-password-file`,
//! `--thanos-query-url` and `--thanos-query-tenancy-url`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kaas_pipeline::buffer::Buffer;
use kaas_pipeline::units::{ByteSize, parse_duration};
use prometheus_client::registry::Registry;
use url::Url;

use super::config_state::ConfigStates;
use super::files::{
    DEFAULT_HASHRING, FilesError, FilesSettings, HashringSettings, IntegrationWriter,
};
use super::grafana::{self, GrafanaApiSettings, GrafanaError, GrafanaSettings, GrafanaSync};
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
    /// Thanos receive's remote-write URL, where the observer writes the fleet series
    /// (unless --central-remote-write-url says otherwise). Agents never write here:
    /// they write to the receive gateway (--receive-gateway-url).
    #[arg(long, value_name = "URL")]
    pub thanos_receive_url: Option<String>,
    /// The header carrying the tenant of the fleet series (the gateway's own
    /// --tenant-header sets it for the agents' series).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TENANT_HEADER)]
    pub thanos_tenant_header: String,
    /// The receive gateway's base URL as agents reach it (`observer gateway`): every
    /// cluster gets the default central pipelines to it (`kaas-central`,
    /// `kaas-central-agent`). Unset: no central pipelines.
    #[arg(long, value_name = "URL")]
    pub receive_gateway_url: Option<String>,
    /// CA certificates (PEM) that verify the gateway's server certificate, sent to
    /// the agents with the central pipelines. Default: the system roots.
    #[arg(long, value_name = "FILE")]
    pub receive_gateway_ca_file: Option<PathBuf>,
    /// What the central pipeline (`kaas-central`) collects besides the cluster health
    /// data it always collects (kube-state-metrics, node-exporter, the control plane as
    /// each cluster's setting says); the agent's own metrics go in `kaas-central-agent`
    /// (comma-separated; the flag without a value for nothing else).
    #[arg(
        long,
        value_name = "INPUT,...",
        value_delimiter = ',',
        num_args = 0..=1,
        default_value = "prometheus,runtime"
    )]
    pub central_inputs: Vec<CentralInput>,
    /// Where agents reach kube-state-metrics, `host:port` (default: the Service installed
    /// with the agent, `kube-state-metrics.kaas-observer.svc:8080`).
    #[arg(long, value_name = "HOST:PORT")]
    pub central_kube_state_metrics_address: Option<String>,
    /// A node exporter every agent scrapes at this `host:port` as job `node-exporter`,
    /// besides the DaemonSet's pods it finds (default: those pods only). For a node
    /// exporter that is not the DaemonSet installed with the agent, and for the demo.
    #[arg(long, value_name = "HOST:PORT")]
    pub central_node_exporter_address: Option<String>,
    /// Every node also runs the central log pipeline (`kaas-central-logs`): the
    /// control plane's container logs (`kube-system` static pods) and the kubelet's
    /// and containerd's journal, to the receive gateway's Loki route, which needs
    /// `observer gateway --loki-upstream-url`.
    #[arg(long, requires = "receive_gateway_url")]
    pub central_logs: bool,
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
    /// Grafana's URL: the observer keeps one org per tenant and the provider's org
    /// current through its HTTP API. Unset: Grafana is left alone.
    #[arg(long, value_name = "URL")]
    pub grafana_url: Option<String>,
    /// The Grafana server admin the observer acts as.
    #[arg(long, value_name = "LOGIN", default_value = "admin")]
    pub grafana_admin_user: String,
    /// A file holding that admin's password (read once at start, never logged).
    #[arg(long, value_name = "FILE")]
    pub grafana_admin_password_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for an https Grafana URL.
    #[arg(long, value_name = "FILE")]
    pub grafana_ca_file: Option<PathBuf>,
    /// The global Thanos query as Grafana reaches it: the provider org's data source.
    #[arg(long, value_name = "URL")]
    pub thanos_query_url: Option<String>,
    /// The Thanos query that enforces tenancy (`--query.enforce-tenancy`), as Grafana
    /// reaches it: every tenant org's data source. Must not be the global query.
    #[arg(long, value_name = "URL")]
    pub thanos_query_tenancy_url: Option<String>,
    /// The header the tenancy-enforcing query reads the tenant from (its
    /// `--query.tenant-header`).
    #[arg(long, value_name = "NAME", default_value = grafana::DEFAULT_TENANT_HEADER)]
    pub thanos_query_tenant_header: String,
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
    /// The Grafana client cannot be built.
    #[error("--grafana-url: {0}")]
    Grafana(#[from] GrafanaError),
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
    /// The central pipeline settings, checked; `None` without `--receive-gateway-url`.
    pub fn central_pipeline(&self) -> Result<Option<CentralPipelineSettings>, IntegrationsError> {
        let Some(url) = &self.receive_gateway_url else {
            return Ok(None);
        };
        url_flag("receive-gateway-url", url)?;
        let mut settings = CentralPipelineSettings::new(url.clone());
        if let Some(path) = &self.receive_gateway_ca_file {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                flag_error("receive-gateway-ca-file")(format!("{}: {e}", path.display()))
            })?;
            settings.gateway_ca_pem = Some(pem);
        }
        if let Some(address) = &self.central_kube_state_metrics_address {
            settings.kube_state_metrics_address = address.clone();
        }
        settings.node_exporter_address = self.central_node_exporter_address.clone();
        settings.logs = self.central_logs;
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
            flag_error("receive-gateway-url")(format!(
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
        Ok(Some(settings))
    }

    /// The Grafana orgs' settings; `None` without `--grafana-url`.
    pub fn grafana(&self) -> Result<Option<GrafanaSettings>, IntegrationsError> {
        let Some(url) = &self.grafana_url else {
            return Ok(None);
        };
        let url = url_flag("grafana-url", url)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(flag_error("grafana-url")(
                "must not carry credentials; use --grafana-admin-user and --grafana-admin-password-file".into(),
            ));
        }
        let required = |flag: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .ok_or_else(|| flag_error(flag)("required with --grafana-url".into()))
                .and_then(|text| url_flag(flag, text))
        };
        let provider_query_url = required("thanos-query-url", &self.thanos_query_url)?;
        let tenant_query_url =
            required("thanos-query-tenancy-url", &self.thanos_query_tenancy_url)?;
        if tenant_query_url == provider_query_url {
            return Err(flag_error("thanos-query-tenancy-url")(
                "is the global query (--thanos-query-url): every tenant would read every tenant's series".into(),
            ));
        }
        let password_path = self.grafana_admin_password_file.as_ref().ok_or_else(|| {
            flag_error("grafana-admin-password-file")("required with --grafana-url".into())
        })?;
        let password = std::fs::read_to_string(password_path).map_err(|e| {
            flag_error("grafana-admin-password-file")(format!("{}: {e}", password_path.display()))
        })?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err(flag_error("grafana-admin-password-file")(format!(
                "{} is empty",
                password_path.display()
            )));
        }
        let ca_pem = self
            .grafana_ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| flag_error("grafana-ca-file")(format!("{}: {e}", path.display())))
            })
            .transpose()?;
        let header = self.thanos_query_tenant_header.trim();
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(flag_error("thanos-query-tenant-header")(format!(
                "{header:?} is not an HTTP header name"
            )));
        }
        Ok(Some(GrafanaSettings {
            api: GrafanaApiSettings {
                url,
                admin_user: self.grafana_admin_user.clone(),
                admin_password: kaas_pipeline::secret::SecretString::new(password),
                ca_pem,
                timeout: grafana::DEFAULT_REQUEST_TIMEOUT,
            },
            provider_query_url,
            tenant_query_url,
            tenant_header: header.to_owned(),
            resync: grafana::DEFAULT_RESYNC,
            debounce: grafana::DEFAULT_DEBOUNCE,
            retry: grafana::DEFAULT_RETRY,
        }))
    }
}

/// The integrations' settings, every flag checked ([`IntegrationFlags::check`]);
/// `Default` runs none of them.
#[derive(Debug, Default)]
pub struct IntegrationSettings {
    central: Option<CentralPipelineSettings>,
    remote_write: Option<RemoteWriteSettings>,
    files: Option<FilesSettings>,
    grafana: Option<GrafanaSettings>,
}

impl IntegrationFlags {
    /// Every integration flag checked: the settings, or every wrong flag's error.
    pub fn check(&self) -> Result<IntegrationSettings, Vec<IntegrationsError>> {
        let mut errors = Vec::new();
        let central = self.central_pipeline().map_err(|e| errors.push(e)).ok();
        let remote_write = self.remote_write().map_err(|e| errors.push(e)).ok();
        let files = self.files().map_err(|e| errors.push(e)).ok();
        let grafana = self.grafana().map_err(|e| errors.push(e)).ok();
        match (central, remote_write, files, grafana) {
            (Some(central), Some(remote_write), Some(files), Some(grafana))
                if errors.is_empty() =>
            {
                Ok(IntegrationSettings {
                    central,
                    remote_write,
                    files,
                    grafana,
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
    grafana: Option<GrafanaSync>,
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
            grafana,
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
        let grafana = grafana
            .map(|settings| GrafanaSync::start(store.clone(), settings))
            .transpose()?;
        tracing::info!(
            central_pipeline = central.is_some(),
            fleet_remote_write = remote_writer.is_some(),
            integration_files = files.is_some(),
            grafana_orgs = grafana.is_some(),
            "integrations started"
        );
        Ok(Self {
            central,
            config_states,
            remote_writer,
            files,
            grafana,
        })
    }

    /// The central pipeline's settings, for the control service; `None` when off.
    pub fn central_pipeline(&self) -> Option<&CentralPipelineSettings> {
        self.central.as_ref()
    }

    /// Registers the configuration states, the remote-write metrics and the Grafana
    /// sync's (each when it runs).
    pub fn register(&self, registry: &mut Registry) {
        self.config_states.register(registry);
        if let Some(writer) = &self.remote_writer {
            writer.register(registry);
        }
        if let Some(grafana) = &self.grafana {
            grafana.register(registry);
        }
    }

    /// Stops the configuration states, the remote-write (releasing its lease), the
    /// file writer and the Grafana sync.
    pub fn stop(&self) {
        self.config_states.stop();
        if let Some(writer) = &self.remote_writer {
            writer.stop();
        }
        if let Some(files) = &self.files {
            files.stop();
        }
        if let Some(grafana) = &self.grafana {
            grafana.stop();
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
    fn the_receive_url_turns_on_the_fleet_remote_write_and_the_gateway_url_the_pipelines() {
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
        assert!(flags.central_pipeline().unwrap().is_none());
        let flags = parse(&[
            "--thanos-receive-url",
            "https://receive.example:19291/api/v1/receive",
            "--thanos-tenant-header",
            "X-Scope-OrgID",
            "--receive-gateway-url",
            "https://gateway.example:19291",
            "--central-inputs",
            "runtime",
            "--central-buffer-max-bytes",
            "2Gi",
        ]);
        let central = flags.central_pipeline().unwrap().unwrap();
        assert_eq!(central.gateway_url, "https://gateway.example:19291");
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
    fn the_central_inputs_can_be_none_but_the_agents_own() {
        let flags = parse(&[
            "--receive-gateway-url",
            "https://gw:19291",
            "--central-inputs",
        ]);
        assert!(flags.central_inputs.is_empty());
        let central = flags.central_pipeline().unwrap().unwrap();
        assert!(!central.scrape.prometheus_annotations && !central.scrape.runtime);
        let flags = parse(&[
            "--central-inputs",
            "runtime",
            "--receive-gateway-url",
            "https://gw",
        ]);
        assert_eq!(flags.central_inputs, [CentralInput::Runtime]);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let flags = parse(&["--receive-gateway-url", "not a url"]);
        assert!(
            flags
                .central_pipeline()
                .unwrap_err()
                .to_string()
                .starts_with("--receive-gateway-url: ")
        );
        let flags = parse(&["--thanos-receive-url", "not a url"]);
        assert!(
            flags
                .remote_write()
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
        let flags = parse(&[
            "--grafana-url",
            "http://grafana:3000",
            "--thanos-query-url",
            "ftp://q",
        ]);
        assert!(
            flags
                .grafana()
                .unwrap_err()
                .to_string()
                .starts_with("--thanos-query-url: ")
        );
    }

    /// Grafana flags with `password_file`, the Grafana URL `grafana` and the tenancy
    /// query `tenancy`.
    fn grafana_flags<'a>(
        password_file: &'a str,
        grafana: &'a str,
        tenancy: &'a str,
    ) -> Vec<&'a str> {
        vec![
            "--grafana-url",
            grafana,
            "--grafana-admin-password-file",
            password_file,
            "--thanos-query-url",
            "http://thanos-query:10902",
            "--thanos-query-tenancy-url",
            tenancy,
        ]
    }

    const GRAFANA: &str = "https://grafana.example";
    const TENANCY: &str = "http://thanos-query-tenancy:10902";

    #[test]
    fn grafana_reads_its_password_from_a_file_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret-admin-pass\n").unwrap();
        let path = file.to_str().unwrap();
        let settings = parse(&grafana_flags(path, GRAFANA, TENANCY))
            .grafana()
            .unwrap()
            .unwrap();
        assert_eq!(settings.api.admin_password.expose(), "s3cret-admin-pass");
        assert_eq!(settings.api.admin_user, "admin");
        assert_eq!(settings.tenant_header, "THANOS-TENANT");
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert!(parse(&[]).grafana().unwrap().is_none());
    }

    #[test]
    fn grafana_refuses_what_would_break_tenancy_or_leak_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "pass").unwrap();
        let path = file.to_str().unwrap();
        let error = |args: Vec<&str>| parse(&args).grafana().unwrap_err().to_string();
        // The tenants' data source on the global query would show every tenant all.
        assert!(
            error(grafana_flags(path, GRAFANA, "http://thanos-query:10902"))
                .starts_with("--thanos-query-tenancy-url: ")
        );
        assert!(
            error(vec![
                "--grafana-url",
                "http://grafana:3000",
                "--thanos-query-url",
                "http://q:1",
                "--thanos-query-tenancy-url",
                "http://t:1"
            ])
            .starts_with("--grafana-admin-password-file: ")
        );
        assert!(
            error(grafana_flags(path, "http://admin:pw@grafana:3000", TENANCY))
                .starts_with("--grafana-url: ")
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            error(grafana_flags(empty.to_str().unwrap(), GRAFANA, TENANCY))
                .starts_with("--grafana-admin-password-file: ")
        );
    }

    #[test]
    fn the_files_follow_their_flags() {
        let flags = parse(&["--integrations-dir", "/run/kaas"]);
        let files = flags.files().unwrap().unwrap();
        assert!(files.hashring.is_none() && files.alertmanager);
        let flags = parse(&[
            "--integrations-dir",
            "/run/kaas",
            "--thanos-receive-endpoint",
            "receive-0:10901",
            "--thanos-receive-endpoint",
            "receive-1:10901",
        ]);
        let files = flags.files().unwrap().unwrap();
        let hashring = files.hashring.unwrap();
        assert_eq!(hashring.endpoints.len(), 2);
        assert_eq!(hashring.provider_tenant, "kaas-provider");
    }
}
