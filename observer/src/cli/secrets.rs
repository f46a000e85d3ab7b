//! `observer secrets rekey`: has the observer seal every stored secret again with its
//! current key (admin tokens). Exits 1 when some pipeline could not be opened; those
//! are listed and left as they were.

use std::io::Write;

use clap::Subcommand;
use reqwest::Method;

use super::client::ApiClient;
use super::print::structured;
use super::{CommandError, EXIT_FAILED, EXIT_OK, OutputArgs};
use crate::api::secrets::RekeyResult;

/// `observer secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal every stored secret with the observer's current key. Run it once every
    /// replica runs with the new key (`--secrets-key-file`) and the old one
    /// (`--previous-secrets-key-file`); then the old key can go.
    Rekey(OutputArgs),
}

/// Runs a secrets command.
pub async fn run(
    client: &ApiClient,
    command: SecretsCommand,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let SecretsCommand::Rekey(output) = command;
    let result: RekeyResult = client
        .call(Method::POST, &["api", "v1", "secrets", "rekey"], &[], None)
        .await?;
    if !structured(out, output.output, &result)? {
        writeln!(
            out,
            "{} secret value(s) of {} pipeline(s) sealed again with key {}; {} pipeline(s) \
             were current already",
            result.values_rekeyed,
            result.pipelines_rekeyed,
            result.key_id,
            result.pipelines_current
        )?;
        for unreadable in &result.unreadable {
            writeln!(out, "not re-keyed: {unreadable}")?;
        }
    }
    Ok(if result.unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}
