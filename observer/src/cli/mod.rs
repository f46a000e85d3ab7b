//! The `observer` command line: flag definitions and dispatch. Each subcommand lives in
//! its own module and writes to the `Write` it is given, so tests can run it without a
//! process.

pub mod validate;

use clap::{Parser, Subcommand, ValueEnum};

/// kaas-observer: one place that watches many Kubernetes clusters and configures the
/// telemetry agents in them.
#[derive(Debug, Parser)]
#[command(name = "observer", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with metric pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
}

/// `observer pipeline …`.
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Check pipeline files offline and list every problem with its field path.
    ///
    /// Reads YAML or JSON, several documents per file (---), JSON arrays and Kubernetes
    /// Lists. Exits 0 when every pipeline is valid, 1 when any is invalid, 2 when a file
    /// cannot be read.
    Validate(validate::ValidateArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document for programs.
    Json,
}
