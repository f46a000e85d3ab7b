//! `observer audit`: the audit trail, newest first, one page at a time (admin tokens).

use std::io::Write;

use clap::Args;
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::audit::AuditList;

/// `observer audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only entries by this actor: `admin`, `tenant:<name>`, `agent:<cluster>`,
    /// `system`, `onboarding:<source>`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries newer than this (Prometheus duration, e.g. `24h`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// At most this many entries (1 to 1000).
    #[arg(long, default_value_t = crate::api::audit::DEFAULT_AUDIT_PAGE)]
    pub limit: u64,
    /// Continue where a previous page ended (the token it printed).
    #[arg(long = "continue", value_name = "TOKEN")]
    pub continue_token: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `observer audit`.
pub async fn run(
    client: &ApiClient,
    args: AuditArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let now = crate::store::now_ms();
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    if let Some(tenant) = args.tenant {
        query.push(("tenant", tenant));
    }
    if let Some(actor) = args.actor {
        query.push(("actor", actor));
    }
    if let Some(since) = &args.since {
        let ago = kaas_pipeline::units::parse_duration(since)
            .map_err(|reason| CommandError::Usage(format!("--since: {reason}")))?;
        let ago_ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        query.push(("since", now.saturating_sub(ago_ms).to_string()));
    }
    if let Some(token) = args.continue_token {
        query.push(("continue", token));
    }
    let list: AuditList = client
        .call(Method::GET, &["api", "v1", "audit"], &query, None)
        .await?;
    if structured(out, args.output.output, &list)? {
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                age(e.at_ms, now),
                e.actor.clone(),
                e.action.clone(),
                e.kind.clone(),
                e.name.clone(),
                e.tenant.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "AGE", "ACTOR", "ACTION", "KIND", "NAME", "TENANT"],
        &rows,
    )?;
    if let Some(token) = list.continue_token {
        writeln!(out, "older entries follow: --continue {token}")?;
    }
    Ok(EXIT_OK)
}
