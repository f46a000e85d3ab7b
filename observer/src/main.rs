//! The `observer` binary: parses the command line, starts logging (and, with
//! `--otlp-endpoint`, self-telemetry), and hands over to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_observer::cli::{Cli, Command, PipelineCommand, run_api, validate};
use kaas_self_telemetry::SelfTelemetry;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Serve(args) => {
            let mut telemetry = SelfTelemetry::new(&args.otlp, kaas_observer::serve::SERVICE)?;
            telemetry.init_logging();
            // One crypto provider for every TLS user in the process (ring, as everywhere).
            kaas_tls::install_default_provider();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(kaas_observer::serve::run(*args, telemetry))?;
            0
        }
        Command::Pipeline(PipelineCommand::Validate(args)) => {
            let mut out = io::stdout().lock();
            let status = validate::run(&args, &mut io::stdin().lock(), &mut out)?;
            out.flush()?;
            status
        }
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = io::stdout().lock();
            let mut err = io::stderr().lock();
            let result = runtime
                .block_on(run_api(&cli.connection, command, &mut out, &mut err))
                .and_then(|status| out.flush().map(|()| status));
            match result {
                Ok(status) => status,
                // The reader went away (`observer cluster list | head`): nothing is
                // wrong and there is no one left to tell, as with any Unix tool.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => 0,
                Err(error) => return Err(error.into()),
            }
        }
    };
    Ok(ExitCode::from(status))
}
