//! `cluster-agent check-config`: validates an agent configuration (agent-wide external
//! labels and pipelines) with the same function the agent runs before applying one, as
//! a standalone agent's own file. The Secret namespace allow-list is the running agent's
//! (`--secret-namespaces`) and is not checked here.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use kaas_pipeline::agent_config::{AgentConfig, AgentConfigError};

/// Exit status for a valid configuration.
pub const EXIT_VALID: u8 = 0;
/// Exit status for an invalid configuration.
pub const EXIT_INVALID: u8 = 1;
/// Exit status for a file that cannot be read.
pub const EXIT_UNREADABLE: u8 = 2;

/// Arguments of `cluster-agent check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The agent configuration file (YAML or JSON).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Checks the file and prints the outcome; returns the exit status.
pub fn run(args: &CheckConfigArgs, out: &mut dyn Write) -> io::Result<u8> {
    let shown = args.config.display();
    let text = match std::fs::read_to_string(&args.config) {
        Ok(text) => text,
        Err(error) => {
            writeln!(out, "{shown}: cannot read: {error}")?;
            return Ok(EXIT_UNREADABLE);
        }
    };
    match AgentConfig::parse(&text, &kaas_pipeline::ValidationContext::standalone()) {
        Ok(config) => {
            let names: Vec<&str> = config.pipelines.iter().map(|p| p.name()).collect();
            writeln!(
                out,
                "{shown}: valid, {} pipeline(s): {}",
                names.len(),
                names.join(", ")
            )?;
            Ok(EXIT_VALID)
        }
        Err(AgentConfigError::Parse(reason)) => {
            writeln!(out, "{shown}: invalid\n  {reason}")?;
            Ok(EXIT_INVALID)
        }
        Err(AgentConfigError::Invalid(errors)) => {
            writeln!(out, "{shown}: invalid, {} error(s)", errors.errors().len())?;
            for line in errors.lines() {
                writeln!(out, "  {line}")?;
            }
            Ok(EXIT_INVALID)
        }
    }
}
