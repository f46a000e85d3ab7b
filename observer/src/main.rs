//! The `observer` binary: parses the command line, starts logging (and, with
//! `--otlp-endpoint`, self-telemetry), and hands over to the library.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kaas_observer::cli::{Cli, Command, PipelineCommand, ca, run_api, validate};
use kaas_observer::gateway::GatewayError;
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
            run_service(kaas_observer::serve::run(*args, telemetry), |error| {
                matches!(error, ServeError::Flags(_))
            })?
        }
        Command::Gateway(args) => {
            let mut telemetry = SelfTelemetry::new(&args.otlp, kaas_observer::gateway::SERVICE)?;
            telemetry.init_logging();
            run_service(kaas_observer::gateway::run(*args), |error| {
                matches!(error, GatewayError::Flags(_))
            })?
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

/// Runs a long-lived service (`serve`, `gateway`) on a multi-threaded runtime, with
/// ring as the one crypto provider of every TLS user in the process. Wrong flags
/// (`is_flags`) are printed, every one named, and give the status clap gives a usage
/// error.
fn run_service<E>(
    service: impl std::future::Future<Output = Result<(), E>>,
    is_flags: impl Fn(&E) -> bool,
) -> anyhow::Result<u8>
where
    E: std::error::Error + Send + Sync + 'static,
{
    kaas_tls::install_default_provider();
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(service);
    match served {
        Ok(()) => Ok(0),
        Err(error) if is_flags(&error) => {
            writeln!(io::stderr().lock(), "error: {error}")?;
            Ok(USAGE_ERROR)
        }
        Err(error) => Err(error.into()),
    }
}
