//! `observer tenant create|list|delete|quota` (admin tokens; a tenant may read its own
//! quotas).

use std::collections::BTreeMap;
use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::model::{CreateTenantRequest, TenantList, TenantView};
use crate::api::quotas::{SetQuotasRequest, TenantQuotasView};

/// `observer tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(NameArgs),
    /// List tenants.
    List(OutputArgs),
    /// Delete a tenant that has no clusters or pipelines left.
    Delete(NameArgs),
    /// Show a tenant's quotas; with --set or --reset, change them first (admin).
    Quota(QuotaArgs),
}

/// `observer tenant quota`.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The tenant's name.
    pub name: String,
    /// Set a quota's limit for this tenant, `QUOTA=LIMIT` (quotas: `clusters`,
    /// `pipelines/MetricPipeline`, `probes`); repeatable.
    #[arg(long = "set", value_name = "QUOTA=LIMIT", value_parser = parse_limit)]
    pub set: Vec<(String, u64)>,
    /// Return a quota to its default; repeatable.
    #[arg(long = "reset", value_name = "QUOTA")]
    pub reset: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_limit(text: &str) -> Result<(String, u64), String> {
    match text.split_once('=') {
        Some((quota, limit)) if !quota.is_empty() => limit
            .parse()
            .map(|limit| (quota.to_owned(), limit))
            .map_err(|_| format!("{limit:?} is not a whole number")),
        _ => Err(format!("{text:?} is not QUOTA=LIMIT")),
    }
}

/// Shows (after changing, if asked) the quotas of a tenant.
async fn quota(
    client: &ApiClient,
    args: QuotaArgs,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let path = ["api", "v1", "tenants", args.name.as_str(), "quotas"];
    let mut view: TenantQuotasView = client.call(Method::GET, &path, &[], None).await?;
    if !args.set.is_empty() || !args.reset.is_empty() {
        // The overrides that stay, then the changes: PUT replaces them all.
        let mut limits: BTreeMap<String, u64> = view
            .quotas
            .iter()
            .filter(|q| q.overridden)
            .map(|q| (q.name.clone(), q.limit))
            .collect();
        for name in &args.reset {
            if !view.quotas.iter().any(|q| q.name == *name) {
                return Err(CommandError::Usage(format!("--reset: no quota {name:?}")));
            }
            limits.remove(name);
        }
        limits.extend(args.set);
        let request = SetQuotasRequest { limits };
        view = client.call(Method::PUT, &path, &[], Some(&request)).await?;
    }
    if !structured(out, args.output.output, &view)? {
        let rows: Vec<Vec<String>> = view
            .quotas
            .iter()
            .map(|q| {
                vec![
                    q.name.clone(),
                    q.used.to_string(),
                    q.limit.to_string(),
                    q.default.to_string(),
                    if q.overridden { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        table(
            out,
            &["QUOTA", "USED", "LIMIT", "DEFAULT", "OVERRIDDEN"],
            &rows,
        )?;
    }
    Ok(())
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
                let now = crate::store::now_ms();
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
        TenantCommand::Quota(args) => quota(client, args, out).await?,
    }
    Ok(EXIT_OK)
}
