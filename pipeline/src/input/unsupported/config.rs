//! The shape of a raw Prometheus `scrape_config`, pinned to Prometheus 2.42
//! (`config.ScrapeConfig` with the `HTTPClientConfig` of prometheus/common it embeds,
//! `discovery/file`, `discovery/kubernetes`, `model/relabel`): every field that version
//! reads, spelled as Prometheus spells it (snake_case), and nothing else
//! (`deny_unknown_fields`), so a configuration written for Prometheus 2.42 parses here
//! as it is and a typo is refused instead of ignored.
//!
//! Parsing accepts more than the agent runs: service-discovery mechanisms it does not
//! have (`consul_sd_configs`, …) and settings it refuses (`proxy_url`, inline
//! credentials) are read so that validation ([`super::checks`]) can refuse each by
//! name, with its field path. What is read only to be refused as a whole (the
//! mechanisms the agent does not have, the API-server client settings of Kubernetes
//! discovery) is left out of the CRD's schema: its values are never kept.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// One Prometheus 2.42 `scrape_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScrapeConfig {
    /// The job's name: the default `job` label of its series; unique in the pipeline.
    #[serde(default)]
    pub job_name: String,
    /// Keep the labels the target exposes when they clash with the target's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_labels: Option<bool>,
    /// Keep the timestamps the target exposes. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_timestamps: Option<bool>,
    /// URL query parameters of every scrape; one value per parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, Vec<String>>>,
    /// How often to scrape; the pipeline's `spec.input.scrapeInterval` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// How long one scrape may take; the pipeline's `spec.input.scrapeTimeout` (at
    /// most the interval) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    /// The HTTP path. Default `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    /// `http` (default) or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Largest body read, as Prometheus writes byte sizes (`10MB`, `512KiB`); at most
    /// the agent's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<String>,
    /// Most samples per scrape; unset or 0 takes the pipeline's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u32>,
    /// Most targets after relabeling; more fail every scrape of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_limit: Option<u32>,
    /// Most labels per series; unset or 0 takes the pipeline's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u32>,
    /// Longest label name; unset or 0 takes the pipeline's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u32>,
    /// Longest label value; unset or 0 takes the pipeline's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u32>,

    /// `Authorization` header of every scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<RawAuthorization>,
    /// HTTP basic authentication: refused, the agent's scraper does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<RawBasicAuth>,
    /// OAuth 2.0 client credentials: refused, the agent's scraper does not fetch tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<RawOAuth2>,
    /// An inline bearer token: refused, it would be stored and shown with the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretString>,
    /// A file holding the bearer token (standalone agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// TLS settings of the scrapes (the provider's own pipelines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<RawTlsConfig>,
    /// A proxy for the scrapes: refused, pipelines do not choose the agent's egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Follow redirects. Only the default, true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Allow HTTP/2. Only the default, true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_http2: Option<bool>,

    /// Fixed targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_configs: Option<Vec<RawStaticConfig>>,
    /// Targets listed in files (standalone agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sd_configs: Option<Vec<RawFileSdConfig>>,
    /// Targets found in the cluster through the agent's own Kubernetes API access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_sd_configs: Option<Vec<RawKubernetesSdConfig>>,
    // The discovery mechanisms of Prometheus 2.42 the agent does not have: read only
    // to be refused by name ([`RawScrapeConfig::other_discovery`]), never kept.
    /// Refused: the agent has no `azure_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub azure_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `consul_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub consul_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `digitalocean_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub digitalocean_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `docker_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub docker_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `dockerswarm_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub dockerswarm_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `dns_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub dns_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `ec2_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ec2_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `eureka_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub eureka_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `gce_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub gce_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `hetzner_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub hetzner_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `http_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub http_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `ionos_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ionos_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `kuma_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub kuma_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `lightsail_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub lightsail_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `linode_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub linode_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `marathon_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub marathon_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `nerve_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub nerve_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `nomad_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub nomad_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `openstack_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub openstack_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `ovhcloud_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ovhcloud_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `puppetdb_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub puppetdb_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `scaleway_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub scaleway_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `serverset_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub serverset_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `triton_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub triton_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `uyuni_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub uyuni_sd_configs: Option<serde_json::Value>,
    /// Refused: the agent has no `vultr_sd_configs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub vultr_sd_configs: Option<serde_json::Value>,

    /// Target relabeling, before each scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relabel_configs: Option<Vec<RawRelabelConfig>>,
    /// Metric relabeling, on every scraped sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_relabel_configs: Option<Vec<RawRelabelConfig>>,
}

impl RawScrapeConfig {
    /// The discovery mechanisms the configuration names that the agent does not have.
    pub fn other_discovery(&self) -> Vec<&'static str> {
        [
            ("azure_sd_configs", self.azure_sd_configs.is_some()),
            ("consul_sd_configs", self.consul_sd_configs.is_some()),
            (
                "digitalocean_sd_configs",
                self.digitalocean_sd_configs.is_some(),
            ),
            ("docker_sd_configs", self.docker_sd_configs.is_some()),
            (
                "dockerswarm_sd_configs",
                self.dockerswarm_sd_configs.is_some(),
            ),
            ("dns_sd_configs", self.dns_sd_configs.is_some()),
            ("ec2_sd_configs", self.ec2_sd_configs.is_some()),
            ("eureka_sd_configs", self.eureka_sd_configs.is_some()),
            ("gce_sd_configs", self.gce_sd_configs.is_some()),
            ("hetzner_sd_configs", self.hetzner_sd_configs.is_some()),
            ("http_sd_configs", self.http_sd_configs.is_some()),
            ("ionos_sd_configs", self.ionos_sd_configs.is_some()),
            ("kuma_sd_configs", self.kuma_sd_configs.is_some()),
            ("lightsail_sd_configs", self.lightsail_sd_configs.is_some()),
            ("linode_sd_configs", self.linode_sd_configs.is_some()),
            ("marathon_sd_configs", self.marathon_sd_configs.is_some()),
            ("nerve_sd_configs", self.nerve_sd_configs.is_some()),
            ("nomad_sd_configs", self.nomad_sd_configs.is_some()),
            ("openstack_sd_configs", self.openstack_sd_configs.is_some()),
            ("ovhcloud_sd_configs", self.ovhcloud_sd_configs.is_some()),
            ("puppetdb_sd_configs", self.puppetdb_sd_configs.is_some()),
            ("scaleway_sd_configs", self.scaleway_sd_configs.is_some()),
            ("serverset_sd_configs", self.serverset_sd_configs.is_some()),
            ("triton_sd_configs", self.triton_sd_configs.is_some()),
            ("uyuni_sd_configs", self.uyuni_sd_configs.is_some()),
            ("vultr_sd_configs", self.vultr_sd_configs.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Prometheus' `authorization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    /// The scheme; only `Bearer` (the default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Inline credentials: refused, they would be stored and shown with the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretString>,
    /// A file holding the credentials (standalone agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

/// Prometheus' `basic_auth`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// The user.
    #[serde(default)]
    pub username: String,
    /// Inline password: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

/// Prometheus' `oauth2`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The client id.
    #[serde(default)]
    pub client_id: String,
    /// Inline client secret: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretString>,
    /// A file holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// Scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The token endpoint.
    #[serde(default)]
    pub token_url: String,
    /// Extra parameters of the token request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_params: BTreeMap<String, String>,
    /// TLS settings of the token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<RawTlsConfig>,
    /// A proxy for the token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

/// Prometheus' `tls_config` (prometheus/common 0.39).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTlsConfig {
    /// CA certificates (PEM file) to verify the target with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client key (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The name to verify the target's certificate against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Skip verifying the target's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// The lowest TLS version; only `TLS12`, which the agent never goes below anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// Prometheus' `static_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStaticConfig {
    /// `host:port` addresses.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels of every target of the group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Prometheus' `file_sd_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFileSdConfig {
    /// Files (JSON or YAML lists of target groups); absolute paths, no patterns.
    #[serde(default)]
    pub files: Vec<String>,
    /// How often the files are read again. Default `5m`, as in Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
}

/// Prometheus' `kubernetes_sd_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesSdConfig {
    /// `pod` or `endpointslice` (the roles the agent discovers).
    #[serde(default)]
    pub role: String,
    /// Another API server: refused, the agent uses its own cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// A kubeconfig file: refused, the agent uses its own credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_file: Option<String>,
    /// The namespaces to discover in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RawNamespaces>,
    /// Label and field selectors: refused, use `relabel_configs` with `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub selectors: Option<Vec<serde_json::Value>>,
    /// Node metadata of pods: refused, the agent does not attach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub attach_metadata: Option<serde_json::Value>,
    /// HTTP client settings for the API server: refused, the agent reaches its API
    /// server with its own settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub authorization: Option<serde_json::Value>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub basic_auth: Option<serde_json::Value>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub oauth2: Option<serde_json::Value>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretString>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub tls_config: Option<serde_json::Value>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// As `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_http2: Option<bool>,
}

/// Prometheus' `kubernetes_sd_config.namespaces`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNamespaces {
    /// The agent's own namespace: refused, it holds the agent's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_namespace: Option<bool>,
    /// The namespaces; every namespace but Kubernetes' and the agent's own when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// Prometheus' `relabel_config`, in Prometheus' spelling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRelabelConfig {
    /// Labels whose values are joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    /// Between joined values. Default `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// Anchored regular expression. Default `(.*)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Modulus of `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    /// The label written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    /// The value written. Default `$1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The action. Default `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl From<&RawRelabelConfig> for crate::processors::RelabelConfig {
    fn from(raw: &RawRelabelConfig) -> Self {
        Self {
            source_labels: raw.source_labels.clone(),
            separator: raw.separator.clone(),
            regex: raw.regex.clone(),
            modulus: raw.modulus,
            target_label: raw.target_label.clone(),
            replacement: raw.replacement.clone(),
            action: raw.action.clone(),
        }
    }
}
