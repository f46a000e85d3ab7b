//! The `cluster-agent` command line: flag definitions and dispatch.

pub mod check_config;
pub mod run;

use clap::{Parser, Subcommand};

/// The kaas-observer cluster agent: collects a cluster's metrics and ships each
/// pipeline to its backend.
#[derive(Debug, Parser)]
#[command(name = "cluster-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an agent configuration file offline, as `promtool check config` does.
    ///
    /// Exits 0 when it is valid, 1 when it is invalid, 2 when it cannot be read.
    CheckConfig(check_config::CheckConfigArgs),
    /// Run from a configuration file (standalone mode, reloading it on SIGHUP and when
    /// it changes) or from the observer (`--observer`, after joining with a token).
    Run(Box<run::RunArgs>),
}
