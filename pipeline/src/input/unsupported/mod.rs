//! Unsupported mode: raw Prometheus `scrape_configs` in a `MetricPipeline`
//! (`spec.input.unsupported.scrapeConfigs`), for what the model does not offer.
//!
//! A pipeline that carries them is in *unsupported mode*: its status and `observer
//! pipeline get` say `unsupportedMode: true`, and the provider does not support what it
//! scrapes. It is still an ordinary pipeline in everything else: its own output, buffer
//! and targets, the same quotas and disk budget, and the same trust checks, applied
//! here to Prometheus' field names:
//!
//! - **shape**: the fields of Prometheus 2.42's `scrape_config` and nothing else
//!   ([`config`], `deny_unknown_fields`), paths in Prometheus' spelling, e.g.
//!   `spec.input.unsupported.scrapeConfigs[0].relabel_configs[1].regex`;
//! - **discovery**: the mechanisms the agent has (`static_configs`, `file_sd_configs`,
//!   `kubernetes_sd_configs` with the `pod` and `endpointslice` roles, through the
//!   agent's own API access); every other `*_sd_configs` is refused by name;
//! - **files** (`bearer_token_file`, `credentials_file`, `password_file`,
//!   `client_secret_file`, `tls_config.*_file`, `file_sd_configs.files`): only a
//!   standalone agent's own file may name them, and only under the [`PathPolicy`]
//!   (`crate::paths`), as `valueFrom.file`; `kubeconfig_file` and `api_server` never;
//! - **credentials**: inline ones (`bearer_token`, `credentials`, `password`,
//!   `client_secret`, `user:pass@` in a target) are refused, as an inline push token is:
//!   they would be stored and shown with the pipeline; TLS settings of its own only in
//!   the provider's own pipelines, as for `static` targets; no `proxy_url` (pipelines
//!   do not choose the agent's egress) and never the provider's central receiver as a
//!   target;
//! - **cost**: at most [`MAX_SCRAPE_CONFIGS`] jobs and [`MAX_TARGETS_PER_JOB`] targets
//!   per job; `body_size_limit` at most the agent's [`MAX_BODY_SIZE_LIMIT`]; unset limits
//!   take the pipeline's `processors.limits` and then the agent's defaults.
//!
//! Validation ([`checks`], [`discovery`]) yields [`ValidatedScrapeJob`]s, which the
//! agent runs with its own scrape loops and relabeling: no second scraper.
//!
//! [`PathPolicy`]: crate::paths::PathPolicy

pub mod checks;
pub mod config;
pub mod discovery;

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::input::{NamespaceSelector, Scheme};
use crate::output::Tls;
use crate::processors::RelabelRule;
use crate::processors::ValidatedLimits;

pub use config::RawScrapeConfig;

/// Most scrape configurations in one pipeline: each is a job with its own targets and
/// loops; a handful is what the configurations migrated from a Prometheus server need,
/// and more would let one pipeline's validation and rendering grow without bound.
pub const MAX_SCRAPE_CONFIGS: usize = 64;
/// Most targets of one job, listed or discovered (after relabeling), and the largest
/// `target_limit`: a scrape loop per target costs a task and a series cache, and a
/// thousand is more than any static list or namespace holds in practice.
pub const MAX_TARGETS_PER_JOB: u32 = 1_000;
/// The largest `body_size_limit`: the agent's own body limit (16 MiB, vmagent's
/// default), which it applies to every scrape whatever the pipeline says.
pub const MAX_BODY_SIZE_LIMIT: u64 = 16 << 20;
/// How often `file_sd_configs` files are read again when the configuration does not
/// say: Prometheus' default.
pub const DEFAULT_FILE_SD_REFRESH: Duration = Duration::from_secs(300);

/// Raw Prometheus scrape configurations: the pipeline's unsupported mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnsupportedInput {
    /// Prometheus 2.42 `scrape_configs`, as Prometheus reads them (snake_case field
    /// names). Unsupported by the provider; checked like every pipeline.
    #[serde(default)]
    pub scrape_configs: Vec<RawScrapeConfig>,
}

/// A raw scrape configuration that passed validation, as the agent runs it.
#[derive(Clone, Debug)]
pub struct ValidatedScrapeJob {
    /// `job_name`: the default `job` label.
    pub job_name: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// The HTTP path.
    pub metrics_path: String,
    /// The scheme.
    pub scheme: Scheme,
    /// Prometheus' `honor_labels`.
    pub honor_labels: bool,
    /// Prometheus' `honor_timestamps`.
    pub honor_timestamps: bool,
    /// Query parameters, one value each.
    pub params: BTreeMap<String, String>,
    /// The job's limits; unset ones are the pipeline's.
    pub limits: ValidatedLimits,
    /// Largest body read; the agent's own limit when unset.
    pub body_size_limit: Option<NonZeroU64>,
    /// Most targets after relabeling; [`MAX_TARGETS_PER_JOB`] when unset.
    pub target_limit: NonZeroU32,
    /// A file holding the bearer token sent to the job's targets (standalone agents).
    pub bearer_token_file: Option<String>,
    /// TLS settings of its own (the provider's own pipelines).
    pub tls: Option<Tls>,
    /// Fixed target groups.
    pub static_configs: Vec<config::RawStaticConfig>,
    /// Files listing target groups.
    pub file_sd_configs: Vec<ValidatedFileSd>,
    /// Kubernetes discovery.
    pub kubernetes_sd_configs: Vec<ValidatedKubernetesSd>,
    /// Target relabeling.
    pub relabel: Vec<RelabelRule>,
    /// Metric relabeling.
    pub metric_relabel: Vec<RelabelRule>,
}

/// A checked `file_sd_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedFileSd {
    /// Absolute plain paths the path policy allows.
    pub files: Vec<String>,
    /// How often they are read again.
    pub refresh_interval: Duration,
}

/// The Kubernetes roles the agent discovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubernetesRole {
    /// Every declared container port of every pod (a target per pod without one).
    Pod,
    /// Every endpoint of every EndpointSlice, with its Service's metadata.
    EndpointSlice,
}

/// A checked `kubernetes_sd_config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedKubernetesSd {
    /// The role.
    pub role: KubernetesRole,
    /// Which namespaces: the listed ones, or every one but the system namespaces.
    pub namespaces: NamespaceSelector,
}

impl UnsupportedInput {
    /// Whether it lists any scrape configuration.
    pub fn any(&self) -> bool {
        !self.scrape_configs.is_empty()
    }
}
