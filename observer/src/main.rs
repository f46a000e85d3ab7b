//! The `observer` binary: parses the command line, starts logging (and, with
//! `--otlp-endpoint`, self-telemetry), and hands over to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_observer::cli::{Cli, Command, PipelineCommand, ca, run_api, validate};
use kaas_observer::serve::ServeError;
use kaas_self_telemetry::SelfTelemetry;

/// jemalloc instead of glibc's malloc. The observer holds one long-lived mTLS
/// connection per agent, and each was set up by a handshake whose short-lived buffers
/// sat between the connection's lasting ones; glibc cannot give those holes back, and
/// its arenas grow per thread. With 10,000 agents (fanout-bench, docs/benchmarks.md)
/// jemalloc measured 42.4 KiB of RSS per agent against glibc's 49.8, and a third less
/// CPU for one configuration change reaching all of them (1.2 s against 1.9 s).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The exit status of a command line that cannot be used, as clap's own.
const USAGE_ERROR: u8 = 2;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Serve(args) => {
            let mut telemetry = SelfTelemetry::new(&args.otlp, kaas_observer::serve::SERVICE)?;
            telemetry.init_logging();
            // One crypto provider for every TLS user in the process (ring, as everywhere).
            kaas_tls::install_default_provider();
            let served = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(kaas_observer::serve::run(*args, telemetry));
            match served {
                Ok(()) => 0,
                // Wrong flags: every one named, and the status clap gives a usage error.
                Err(error @ ServeError::Flags(_)) => {
                    writeln!(io::stderr().lock(), "error: {error}")?;
                    USAGE_ERROR
                }
                Err(error) => return Err(error.into()),
            }
        }
        Command::Ca(command) => {
            let mut out = io::stdout().lock();
            let status = ca::run(&command, &mut out, &mut io::stderr().lock())?;
            out.flush()?;
            status
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
