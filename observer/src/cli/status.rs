//! `observer status`: counts of tenants, clusters by state, pipelines and connected
//! agents, as far as the token may see.

use std::io::Write;

use clap::Args;
use reqwest::Method;

use super::client::ApiClient;
use super::print::{structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::model::StatusView;

/// `observer status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `observer status`.
pub async fn run(
    client: &ApiClient,
    args: &StatusArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let status: StatusView = client
        .call(Method::GET, &["api", "v1", "status"], &[], None)
        .await?;
    if !structured(out, args.output.output, &status)? {
        writeln!(out, "observer {}", client.server())?;
        let c = &status.clusters;
        let rows = [
            ("tenants", status.tenants),
            ("clusters", c.total),
            ("  provisioning", c.provisioning),
            ("  active", c.active),
            ("  silent", c.silent),
            ("  deleting", c.deleting),
            ("  deleted", c.deleted),
            ("pipelines", status.pipelines),
            ("connected agents", status.connected_agents),
        ]
        .iter()
        .map(|(what, n)| vec![(*what).to_owned(), n.to_string()])
        .collect::<Vec<_>>();
        table(out, &["WHAT", "COUNT"], &rows)?;
    }
    Ok(EXIT_OK)
}
