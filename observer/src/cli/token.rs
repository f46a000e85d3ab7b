//! `observer token create|list|revoke`: API tokens. The plaintext of a new token is
//! printed once; the observer keeps only its hash.

use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::model::{CreateTokenRequest, CreatedToken, Revoked, TokenList};

/// `observer token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (shown only this once).
    Create(CreateArgs),
    /// List tokens (without their secrets).
    List(ListArgs),
    /// Revoke a token by id.
    Revoke(RevokeArgs),
}

/// `observer token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the token is for, e.g. `ci`.
    #[arg(long)]
    pub name: String,
    /// The tenant it acts for; without it an admin creates an admin token.
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer token list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's tokens (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer token revoke`: one token by id, or with `--tenant T --all` every token of
/// a tenant at once.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct RevokeArgs {
    /// The token's id (see `token list`).
    pub id: Option<String>,
    /// Revoke every token of `--tenant` (locking the tenant out of the API).
    #[arg(long, requires = "tenant")]
    pub all: bool,
    /// The tenant whose tokens `--all` revokes.
    #[arg(long, requires = "all")]
    pub tenant: Option<String>,
}

/// Runs a token command.
pub async fn run(
    client: &ApiClient,
    command: TokenCommand,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    match command {
        TokenCommand::Create(args) => {
            let request = CreateTokenRequest {
                name: args.name,
                tenant: args.tenant,
            };
            let created: CreatedToken = client
                .call(Method::POST, &["api", "v1", "tokens"], &[], Some(&request))
                .await?;
            if !structured(out, args.output.output, &created)? {
                let owner = created
                    .tenant
                    .as_deref()
                    .map_or("admin".to_owned(), |t| format!("tenant {t}"));
                writeln!(
                    out,
                    "token {:?} ({owner}, id {}); it is shown only now:",
                    created.name, created.id
                )?;
                writeln!(out, "{}", created.token)?;
            }
        }
        TokenCommand::List(args) => {
            let query: Vec<(&str, String)> =
                args.tenant.map(|t| ("tenant", t)).into_iter().collect();
            let list: TokenList = client
                .call(Method::GET, &["api", "v1", "tokens"], &query, None)
                .await?;
            if !structured(out, args.output.output, &list)? {
                let now = crate::store::now_ms();
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.tenant.clone().unwrap_or_else(|| "<admin>".to_owned()),
                            age(t.created_at_ms, now),
                        ]
                    })
                    .collect();
                table(out, &["ID", "NAME", "TENANT", "AGE"], &rows)?;
            }
        }
        TokenCommand::Revoke(RevokeArgs {
            id: Some(id),
            all: false,
            ..
        }) => {
            client
                .call_empty(Method::DELETE, &["api", "v1", "tokens", &id], &[])
                .await?;
            writeln!(out, "token {id} revoked")?;
        }
        TokenCommand::Revoke(args) => {
            let tenant = args.tenant.unwrap_or_default();
            let answer: Revoked = client
                .call(
                    Method::DELETE,
                    &["api", "v1", "tokens"],
                    &[("tenant", tenant.clone())],
                    None,
                )
                .await?;
            writeln!(out, "{} tokens of tenant {tenant} revoked", answer.revoked)?;
        }
    }
    Ok(EXIT_OK)
}
