//! `observer status`: counts of tenants, clusters by state, pipelines and connected
//! agents, as far as the token may see, and the cluster changes the mass-deletion guard
//! holds.

use std::io::Write;

use clap::Args;
use reqwest::Method;

use super::client::ApiClient;
use super::print::{structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::model::{PendingDeletionView, StatusView};

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
            ("  lost", c.lost),
            ("  deleting", c.deleting),
            ("  deleted", c.deleted),
            ("pipelines", status.pipelines),
            ("connected agents", status.connected_agents),
        ]
        .iter()
        .map(|(what, n)| vec![(*what).to_owned(), n.to_string()])
        .collect::<Vec<_>>();
        table(out, &["WHAT", "COUNT"], &rows)?;
        if !status.pending_deletions.is_empty() {
            writeln!(
                out,
                "\n{} cluster change(s) held by the mass-deletion guard; review them, then \
                 run `observer cluster confirm-deletions`:",
                status.pending_deletions.len()
            )?;
            print_pending(out, &status.pending_deletions)?;
        }
    }
    Ok(EXIT_OK)
}

/// The held changes as a table.
pub(super) fn print_pending(
    out: &mut dyn Write,
    pending: &[PendingDeletionView],
) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            vec![
                p.cluster.clone(),
                p.source.clone(),
                serde_json::to_value(p.to_state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                if p.confirmed_at_ms.is_some() {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                p.reason.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["CLUSTER", "SOURCE", "TO", "CONFIRMED", "REASON"],
        &rows,
    )
}
