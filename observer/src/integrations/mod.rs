//! Integrations with the central stack: the settings of the default central pipeline
//! every cluster runs (rendered by [`crate::rendering::central`]), the files that configure Thanos receive (tenants and hashring)
//! and Alertmanager (routes) ([`files`]), Grafana's orgs, one per tenant and the
//! provider's, kept current through Grafana's HTTP API ([`grafana`]), the pipelines'
//! per-cluster configuration states ([`config_state`]), and
//! remote-writing the observer's own fleet and probe series to the central receiver
//! ([`remote_write`]); [`flags`] holds their `observer serve` flags and the one call
//! that starts them.
//!
//! How they fit together: an agent's default pipeline writes its cluster's metrics to
//! Thanos receive with the cluster's tenant in the tenant header; the hashring file
//! admits exactly the tenants that have clusters, plus the provider's tenant the
//! observer writes the `kaas_cluster_*` series as; Grafana reads both through Thanos
//! query, the provider's org through the global query and each tenant's org through
//! the query that enforces tenancy on the `tenant` label; the alert rules evaluated
//! over them carry `tenant` and `cluster`, which the Alertmanager routes use to reach
//! the provider's operators (the observer's and the control plane's alerts) and each
//! tenant (its own clusters' alerts).

pub mod config_state;
pub mod files;
pub mod flags;
pub mod grafana;
pub mod remote_write;

pub use config_state::ConfigStates;
pub use files::{FilesSettings, HashringSettings, IntegrationWriter};
pub use flags::{IntegrationFlags, IntegrationSettings, Integrations, IntegrationsError};
pub use grafana::{GrafanaSettings, GrafanaSync};
pub use remote_write::{
    DEFAULT_PROVIDER_TENANT, RemoteWriteSettings, RemoteWriter, SeriesSource, WriterSources,
    fleet_source, probe_source,
};
