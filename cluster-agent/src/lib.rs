//! The cluster-agent: one per cluster, Prometheus-agent style. It discovers targets,
//! scrapes them and receives pushes, relabels and filters per pipeline, buffers each
//! pipeline on disk and ships with remote-write and OTLP, configured from a file
//! (standalone) or by the observer over the control stream (`docs/architecture.md`).
//!
//! The data path, in the order a record travels it (folder names in `src/`):
//!
//! <!-- flow -->
//! 1. `discovery` finds targets (static, or `discovery::kubernetes`: pods, endpoint
//!    slices, nodes, with the Secrets that `secretKeyRef` names);
//! 2. `pipeline::targets` runs one scrape loop per target as discovery changes;
//! 3. `scrape` reads each target (`scrape::client` fetches, `scrape::scraper` parses
//!    with the series cache of `scrape::cache` and hands frames to `scrape::sink`),
//!    and `push` receives what workloads push (remote-write, OTLP), authenticated
//!    per pipeline; `log_inputs` reads container logs, the node's journal and plain
//!    files into OTLP log records and offers each batch to every pipeline that takes
//!    it, committing read positions only behind their acknowledgements;
//! 4. `processing` relabels and filters each sample for its pipeline (log records:
//!    `processing::logs`);
//! 5. `topology::inlet` writes each record (in the format of `record`, which every
//!    signal shares) into the pipeline's own disk buffer (the kaas-buffer crate) and
//!    acknowledges it once it is durable;
//! 6. `topology::sender` drains the buffer in rounds, sharded by the signal's key, with
//!    retries, counting each pipeline's health through `internal_events`;
//! 7. `exporters` encode for the backend (`exporters::remote_write`,
//!    `exporters::otlp`) and send through `outbound` (TLS, authentication, HTTP client,
//!    backoff).
//! <!-- /flow -->
//!
//! Around it: `pipeline::runtime` starts and stops each pipeline from its
//! validated spec; [`agent`] is the composition root, built from plain settings;
//! [`control`] is the observer's control stream (join, identity, last-known-good
//! configuration, health reports); [`node_certificates`] is the cluster-level
//! instance's endpoint handing node instances their certificates over that stream; [`cli`] parses and checks the command line and
//! hands settings to [`agent`]; [`telemetry`] and [`server`] are the agent's own
//! metrics and endpoints; [`internal_events`] (the notable events and the counters they
//! own), [`labels`] and [`files`] are leaves every module may use.

pub mod agent;
pub mod cli;
pub mod control;
pub mod discovery;
pub mod exporters;
pub mod files;
pub mod internal_events;
pub mod labels;
pub mod log_inputs;
pub mod node_certificates;
pub mod outbound;
pub mod pipeline;
pub mod processing;
pub mod push;
pub mod record;
pub mod scrape;
pub mod server;
pub mod telemetry;
pub mod topology;
