//! The cluster-agent: one per cluster, Prometheus-agent style.
//!
//! It will discover targets, scrape them, relabel and filter per pipeline, buffer each
//! pipeline on disk and ship with remote-write and OTLP, configured from a file
//! (standalone) or by the observer over the control stream (see
//! `docs/architecture.md`). What exists so far is the command line and the offline
//! configuration check in [`cli`].

pub mod agent;
pub mod batch;
pub mod buffer;
pub mod cli;
pub mod control;
pub mod discovery;
pub mod exporters;
pub mod files;
pub mod labels;
pub mod outbound;
pub mod pipeline;
pub mod processing;
pub mod push;
pub mod scrape;
pub mod server;
pub mod telemetry;
