//! The `cluster-agent` binary: parses the command line and hands over to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_cluster_agent::cli::{Cli, Command, check_config};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::CheckConfig(args) => {
            let mut out = io::stdout().lock();
            let status = check_config::run(&args, &mut out)?;
            out.flush()?;
            status
        }
    };
    Ok(ExitCode::from(status))
}
