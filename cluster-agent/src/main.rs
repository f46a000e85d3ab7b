//! The `cluster-agent` binary: parses the command line, starts logging, and hands over
//! to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_cluster_agent::cli::{Cli, Command, check_config, run};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => {
            let mut out = io::stdout().lock();
            let status = check_config::run(&args, &mut out)?;
            out.flush()?;
            Ok(ExitCode::from(status))
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(io::stderr)
                .init();
            kaas_cluster_agent::exporters::tls::install_default_provider();
            let runtime = tokio::runtime::Runtime::new()?;
            match runtime.block_on(run::run(args)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(error) => {
                    eprintln!("cluster-agent: {error}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
