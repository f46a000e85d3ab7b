//! `observer tenant create|list|delete` (admin tokens).

use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::model::{CreateTenantRequest, TenantList, TenantView};

/// `observer tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(NameArgs),
    /// List tenants.
    List(OutputArgs),
    /// Delete a tenant that has no clusters or pipelines left.
    Delete(NameArgs),
}

/// A command on one tenant.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The tenant's name (a DNS-1123 label).
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs a tenant command.
pub async fn run(
    client: &ApiClient,
    command: TenantCommand,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    match command {
        TenantCommand::Create(args) => {
            let request = CreateTenantRequest { name: args.name };
            let tenant: TenantView = client
                .call(Method::POST, &["api", "v1", "tenants"], &[], Some(&request))
                .await?;
            if !structured(out, args.output.output, &tenant)? {
                writeln!(out, "tenant {} created", tenant.name)?;
            }
        }
        TenantCommand::List(output) => {
            let list: TenantList = client
                .call(Method::GET, &["api", "v1", "tenants"], &[], None)
                .await?;
            if !structured(out, output.output, &list)? {
                let now = crate::api::now_ms();
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|t| vec![t.name.clone(), age(t.created_at_ms, now)])
                    .collect();
                table(out, &["NAME", "AGE"], &rows)?;
            }
        }
        TenantCommand::Delete(args) => {
            client
                .call_empty(Method::DELETE, &["api", "v1", "tenants", &args.name], &[])
                .await?;
            writeln!(out, "tenant {} deleted", args.name)?;
        }
    }
    Ok(EXIT_OK)
}
