//! The `observer` command line: flag definitions and dispatch. Each subcommand lives in
//! its own module and writes to the `Write` it is given, so tests can run it without a
//! process.
//!
//! `pipeline validate` and `ca` work offline. Every other command talks to an observer's REST
//! API through [`client::ApiClient`]: `--server` (env `KAAS_OBSERVER_URL`), `--token`
//! (env `KAAS_OBSERVER_TOKEN`) and `--ca-file` apply to all of them, and each takes
//! `-o table|json|yaml` (tables for people by default).

pub mod audit;
pub mod ca;
pub mod client;
pub mod cluster;
pub mod cluster_api;
pub mod pipeline;
pub mod print;
pub mod secrets;
pub mod status;
pub mod templates;
pub mod tenant;
pub mod token;
pub mod validate;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use client::{ApiClient, ClientError, DEFAULT_SERVER};

/// Exit status of a command that did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit status of a command that failed: invalid input, refused request, unreachable
/// observer.
pub const EXIT_FAILED: u8 = 1;

/// kaas-observer: one place that watches many Kubernetes clusters and configures the
/// telemetry agents in them.
#[derive(Debug, Parser)]
#[command(name = "observer", version, about, long_about = None)]
pub struct Cli {
    /// How to reach the observer (for the commands that talk to it).
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the observer's REST API.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// The observer's REST API.
    #[arg(long, global = true, env = "KAAS_OBSERVER_URL", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// The bearer token.
    #[arg(
        long,
        global = true,
        env = "KAAS_OBSERVER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// CA certificates (PEM) to verify an https server with, instead of the system's.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ConnectionArgs {
    /// A client for the configured observer.
    pub fn client(&self) -> Result<ApiClient, ClientError> {
        ApiClient::new(&self.server, self.token.clone(), self.ca_file.as_deref())
    }
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the observer service (REST API, agent control service, lifecycle).
    Serve(Box<crate::serve::ServeArgs>),
    /// Run the receive gateway between the agents and Thanos receive (stateless).
    Gateway(Box<crate::gateway::GatewayArgs>),
    /// Work with pipelines of every kind, templates and their instances.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Onboard and inspect clusters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Create and list API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Show counts of tenants, clusters, pipelines and connected agents.
    Status(status::StatusArgs),
    /// Read the audit trail, newest first (admin).
    Audit(audit::AuditArgs),
    /// Map Cluster API namespaces to tenants (admin).
    #[command(subcommand, name = "cluster-api")]
    ClusterApi(cluster_api::ClusterApiCommand),
    /// Work with the secrets stored encrypted (admin).
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Rotate the cluster CA (offline, on the CA directory).
    #[command(subcommand)]
    Ca(ca::CaCommand),
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
    /// Create or update pipelines from files; reports each as created, configured or
    /// unchanged.
    ///
    /// Every pipeline is validated locally first; when any is invalid, nothing is sent
    /// and the command exits 1 listing every problem with its field path.
    Apply(pipeline::ApplyArgs),
    /// Show one pipeline; `-o yaml` prints a document that can be edited and applied
    /// again (inline secrets read `***`, which keeps the stored value).
    Get(pipeline::GetArgs),
    /// List pipelines.
    List(pipeline::ListArgs),
    /// Delete a pipeline.
    Delete(pipeline::GetArgs),
    /// Print the pipeline a PipelineInstance runs on a cluster, inline secrets masked.
    Render(templates::RenderArgs),
    /// Make an earlier generation of a PipelineTemplate its latest again; the
    /// instances following it are re-rendered, or, if any would break, nothing changes.
    Rollback(templates::RollbackArgs),
}

/// How results are printed by `pipeline validate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document for programs.
    Json,
}

/// How API results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and lines for people.
    #[default]
    Table,
    /// JSON, as the API answers.
    Json,
    /// YAML.
    Yaml,
}

/// `-o` of API commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// Runs an API command and returns its exit status; failures are explained on `err`.
pub async fn run_api(
    connection: &ConnectionArgs,
    command: Command,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let client = match connection.client() {
        Ok(client) => client,
        Err(error) => {
            writeln!(err, "error: {error}")?;
            return Ok(EXIT_FAILED);
        }
    };
    let outcome = match command {
        Command::Serve(_) => {
            writeln!(err, "error: `serve` runs the service; call serve::run")?;
            return Ok(EXIT_FAILED);
        }
        Command::Gateway(_) => {
            writeln!(
                err,
                "error: `gateway` runs the receive gateway; call gateway::run"
            )?;
            return Ok(EXIT_FAILED);
        }
        Command::Pipeline(PipelineCommand::Validate(_)) => {
            writeln!(
                err,
                "error: `pipeline validate` runs offline; call validate::run"
            )?;
            return Ok(EXIT_FAILED);
        }
        Command::Ca(_) => {
            writeln!(
                err,
                "error: `ca` works on the CA directory offline; call ca::run"
            )?;
            return Ok(EXIT_FAILED);
        }
        Command::Pipeline(PipelineCommand::Apply(args)) => {
            pipeline::apply(&client, &args, out, err).await
        }
        Command::Pipeline(PipelineCommand::Get(args)) => pipeline::get(&client, &args, out).await,
        Command::Pipeline(PipelineCommand::List(args)) => pipeline::list(&client, &args, out).await,
        Command::Pipeline(PipelineCommand::Delete(args)) => {
            pipeline::delete(&client, &args, out).await
        }
        Command::Pipeline(PipelineCommand::Render(args)) => {
            templates::render(&client, &args, out).await
        }
        Command::Pipeline(PipelineCommand::Rollback(args)) => {
            templates::rollback(&client, &args, out).await
        }
        Command::Cluster(command) => cluster::run(&client, command, out, err).await,
        Command::Tenant(command) => tenant::run(&client, command, out).await,
        Command::Token(command) => token::run(&client, command, out).await,
        Command::Status(args) => status::run(&client, &args, out).await,
        Command::Audit(args) => audit::run(&client, args, out).await,
        Command::ClusterApi(command) => cluster_api::run(&client, command, out).await,
        Command::Secrets(command) => secrets::run(&client, command, out).await,
    };
    match outcome {
        Ok(status) => Ok(status),
        Err(CommandError::Io(error)) => Err(error),
        Err(CommandError::Client(error)) => {
            print::client_error(&error, err)?;
            Ok(EXIT_FAILED)
        }
        Err(CommandError::Usage(message)) => {
            writeln!(err, "error: {message}")?;
            Ok(EXIT_FAILED)
        }
    }
}

/// Why an API command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Printing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The arguments cannot work, e.g. an unreadable file.
    #[error("{0}")]
    Usage(String),
}

impl From<serde_json::Error> for CommandError {
    /// A failed write stays the I/O error it was (serde_json gives it back), so the
    /// binary can tell a closed pipe from a real failure.
    fn from(error: serde_json::Error) -> Self {
        Self::Io(error.into())
    }
}

impl From<serde_yaml::Error> for CommandError {
    fn from(error: serde_yaml::Error) -> Self {
        Self::Io(std::io::Error::other(error))
    }
}
