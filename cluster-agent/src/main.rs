//! The `cluster-agent` binary: parses the command line, starts logging (and, with
//! `--otlp-endpoint`, self-telemetry), and hands over to the library once every flag
//! is checked.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_cluster_agent::cli::{Cli, Command, check_config, run};
use kaas_self_telemetry::SelfTelemetry;

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
            // Every flag is checked before anything is read, bound or written.
            let settings = match args.check() {
                Ok(settings) => settings,
                Err(problems) => {
                    eprintln!("cluster-agent: invalid flags:\n{problems}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut telemetry = match SelfTelemetry::new(&args.otlp, run::SERVICE) {
                Ok(telemetry) => telemetry,
                Err(error) => {
                    eprintln!("cluster-agent: {error}");
                    return Ok(ExitCode::from(2));
                }
            };
            telemetry.init_logging();
            kaas_cluster_agent::outbound::tls::install_default_provider();
            let runtime = tokio::runtime::Runtime::new()?;
            match runtime.block_on(run::run(settings, telemetry)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(error) => {
                    eprintln!("cluster-agent: {error}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
