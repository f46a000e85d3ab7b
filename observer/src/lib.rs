//! The observer: the central control plane of kaas-observer. It onboards clusters,
//! stores tenants, clusters and pipelines, pushes each cluster's rendered pipelines to
//! its agents over the control stream with per-cluster mTLS identities, tracks their
//! health and lifecycle, probes their API servers and writes what Thanos, Grafana and
//! Alertmanager read (`docs/architecture.md`).
//!
//! The path of desired state out to the agents and of observed state back, in order
//! (folder names in `src/`):
//!
//! <!-- flow -->
//! 1. `onboarding` (Cluster API, inventory) and `api` (REST, tenants' tokens in
//!    `api::auth`) register clusters and accept pipelines, validated before anything is
//!    stored;
//! 2. `store` keeps them by aggregate (`store::tenants`, `store::clusters`,
//!    `store::pipelines`, `store::tokens`), every change through one mutation with its
//!    `store::audit` row, published on `store::feed`;
//! 3. `lifecycle` says what a cluster's state means (`lifecycle::state`);
//! 4. `rendering` turns a cluster's selected pipelines into its agent configuration
//!    (`rendering::cluster`, `rendering::tenant_cache`, `rendering::central`);
//! 5. `control` carries it: `control::dispatch` routes feed changes to the streams of
//!    `control::registry`, each `control::stream` sends its agent the configuration
//!    and receives its status and health, which `control::status_task` turns into
//!    pipeline conditions in `store::reports`;
//! 6. `fleet` ticks the lifecycle policy over every cluster and serves the fleet's
//!    metrics; `integrations` writes the Thanos hashring and Alertmanager files, keeps
//!    Grafana's orgs current, and renders the central pipeline; `probes` probes the live clusters' API servers
//!    and tenants' endpoints.
//! <!-- /flow -->
//!
//! Around it: [`serve`] checks every flag and wires the parts; [`identity`] is the
//! cluster CA and its certificates; [`egress`] decides what the observer may contact;
//! [`secrets`] seals stored secrets; [`listeners`] serve the API and `/metrics` apart;
//! [`telemetry`] and [`internal_events`] are the observer's own metrics and events;
//! [`cli`] is the `observer` command's client side; [`gateway`] is `observer gateway`,
//! the stateless receive gateway between every cluster's agent and Thanos receive;
//! [`control_plane`] is each cluster's setting of which control-plane components the
//! central pipeline scrapes.

pub mod api;
pub mod cli;
pub mod cluster_id;
pub mod control;
pub mod control_plane;
pub mod egress;
pub mod fleet;
pub mod gateway;
pub mod identity;
pub mod integrations;
pub mod internal_events;
pub mod labels;
pub mod lifecycle;
pub mod listeners;
pub mod onboarding;
pub mod probe_target;
pub mod probes;
pub mod rendering;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod telemetry;
