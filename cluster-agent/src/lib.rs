//! The cluster-agent: one per cluster, Prometheus-agent style.
//!
//! It discovers targets, scrapes them and receives pushes, relabels and filters per
//! pipeline, buffers each pipeline on disk and ships with remote-write and OTLP,
//! configured from a file (standalone) or by the observer over the control stream (see
//! `docs/architecture.md`). [`agent`] builds and runs the agent from checked settings;
//! [`cli`] parses and checks the command line.

pub mod agent;
pub mod cli;
pub mod control;
pub mod discovery;
pub mod exporters;
pub mod files;
pub mod internal_events;
pub mod labels;
pub mod outbound;
pub mod pipeline;
pub mod processing;
pub mod push;
pub mod record;
pub mod scrape;
pub mod server;
pub mod telemetry;
pub mod topology;
