//! The `observer` binary: parses the command line and hands over to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_observer::cli::{Cli, Command, PipelineCommand, validate};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Pipeline(PipelineCommand::Validate(args)) => {
            let mut out = io::stdout().lock();
            let status = validate::run(&args, &mut io::stdin().lock(), &mut out)?;
            out.flush()?;
            status
        }
    };
    Ok(ExitCode::from(status))
}
