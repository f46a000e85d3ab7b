//! What the command line adds for templates and instances: `observer pipeline render
//! <instance> --cluster <name>` (the pipeline an instance runs, secrets masked),
//! `observer pipeline rollback <template> --generation <n>`, and the diff `pipeline apply
//! --diff` prints before applying.
//!
//! The diff compares what the observer holds now with what it answers for a dry run of
//! the same document, both as the API shows them (inline secrets `***`, so a changed
//! secret shows as no change), line by line in YAML: `-` what goes, `+` what comes. For
//! an instance it also compares the pipeline it renders to, which is what agents run.

use std::io::Write;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::client::{ApiClient, ClientError};
use super::pipeline::{KindArg, query};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::template_instances::RenderedInstance;

/// `observer pipeline render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The instance's name.
    pub name: String,
    /// The cluster (the tenant's name for it) to render for.
    #[arg(long)]
    pub cluster: String,
    /// The tenant (admin tokens; a tenant token uses its own).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer pipeline rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The template's name.
    pub name: String,
    /// The earlier generation to make the latest again (as a new generation).
    #[arg(long)]
    pub generation: i64,
    /// The tenant (admin tokens; a tenant token uses its own).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Ask the observer what would happen without storing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `pipeline render`: the instance's pipeline as YAML, secrets `***`, under a comment
/// saying the template generation and whether the cluster runs it.
pub async fn render(
    client: &ApiClient,
    args: &RenderArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let mut parameters = query(&args.tenant);
    parameters.push(("cluster", args.cluster.clone()));
    let rendered: RenderedInstance = client
        .call(
            Method::GET,
            &["api", "v1", "pipelineinstances", &args.name, "render"],
            &parameters,
            None,
        )
        .await?;
    if super::print::structured(out, args.output.output, &rendered)? {
        return Ok(EXIT_OK);
    }
    let runs = if rendered.selected {
        "runs there"
    } else {
        "does not run there: its cluster selector does not select the cluster"
    };
    writeln!(
        out,
        "# PipelineInstance {} for cluster {}, template generation {}; it {runs}.\n# Inline secrets read ***.",
        args.name, rendered.cluster, rendered.template_generation
    )?;
    write!(out, "{}", serde_yaml::to_string(&rendered.pipeline)?)?;
    Ok(EXIT_OK)
}

/// `pipeline rollback`.
pub async fn rollback(
    client: &ApiClient,
    args: &RollbackArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let mut parameters = query(&args.tenant);
    if args.dry_run {
        parameters.push(("dryRun", "true".to_owned()));
    }
    let body = serde_json::json!({ "generation": args.generation });
    let answer: Value = client
        .call(
            Method::POST,
            &["api", "v1", "pipelinetemplates", &args.name, "rollback"],
            &parameters,
            Some(&body),
        )
        .await?;
    let dry = if args.dry_run { " (dry run)" } else { "" };
    writeln!(
        out,
        "PipelineTemplate {} rolled back to generation {} as generation {}{dry}{}",
        args.name,
        args.generation,
        answer["template"]["generation"],
        rerendered(&answer)
    )?;
    Ok(EXIT_OK)
}

/// `, re-rendered: a, b` for a template answer that re-rendered instances.
pub fn rerendered(answer: &Value) -> String {
    let names: Vec<&str> = answer["rerendered"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        String::new()
    } else {
        format!(", re-rendered: {}", names.join(", "))
    }
}

/// Prints what applying `body` (a document of `kind` named `name`) would change.
pub async fn print_diff(
    client: &ApiClient,
    kind: KindArg,
    name: &str,
    tenant: &Option<String>,
    body: &Value,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let path = ["api", "v1", kind.collection(), name];
    let current: Option<Value> = match client.call(Method::GET, &path, &query(tenant), None).await {
        Ok(view) => Some(view),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(other) => return Err(other.into()),
    };
    let mut dry = query(tenant);
    dry.push(("dryRun", "true".to_owned()));
    let answer: Value = match client.call(Method::PUT, &path, &dry, Some(body)).await {
        Ok(answer) => answer,
        // The apply that follows reports the refusal.
        Err(ClientError::Api { status: 422, .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    let (before, after) = match kind {
        KindArg::Template => (
            current.map(|v| v["resource"].clone()),
            answer["template"]["resource"].clone(),
        ),
        KindArg::Instance => (
            current.map(|v| v["resource"].clone()),
            answer["instance"]["resource"].clone(),
        ),
        _ => (
            current.map(|v| v["resource"].clone()),
            answer["pipeline"]["resource"].clone(),
        ),
    };
    writeln!(
        out,
        "--- {} {name} (stored)\n+++ {} {name} (applied)",
        kind.name(),
        kind.name()
    )?;
    write_diff(&comparable(before), &comparable(Some(after)), out)?;
    if kind == KindArg::Instance {
        let pipeline_kind = KindArg::of_pipeline(
            answer["instance"]["pipelineKind"]
                .as_str()
                .unwrap_or_default(),
        );
        let running = ["api", "v1", pipeline_kind.collection(), name];
        let before = match client
            .call::<Value>(Method::GET, &running, &query(tenant), None)
            .await
        {
            Ok(view) => Some(view["resource"].clone()),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(other) => return Err(other.into()),
        };
        writeln!(
            out,
            "--- {} {name} (running)\n+++ {} {name} (rendered)",
            pipeline_kind.name(),
            pipeline_kind.name()
        )?;
        write_diff(
            &comparable(before),
            &comparable(Some(answer["pipeline"].clone())),
            out,
        )?;
    }
    Ok(())
}

/// A document as YAML without what the server sets (status, generation), for diffing.
fn comparable(document: Option<Value>) -> String {
    let Some(mut document) = document else {
        return String::new();
    };
    if let Some(map) = document.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = document["metadata"].as_object_mut() {
        metadata.remove("generation");
    }
    serde_yaml::to_string(&document).unwrap_or_default()
}

/// A line diff of `before` and `after` (longest common subsequence): unchanged lines
/// with two spaces, removed with `- `, added with `+ `; `(no changes)` when equal.
pub fn write_diff(before: &str, after: &str, out: &mut dyn Write) -> std::io::Result<()> {
    if before == after {
        return writeln!(out, "  (no changes)");
    }
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    // lengths[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lengths = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lengths[i][j] = if a[i] == b[j] {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            writeln!(out, "  {}", a[i])?;
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lengths[i + 1][j] >= lengths[i][j + 1]) {
            writeln!(out, "- {}", a[i])?;
            i += 1;
        } else {
            writeln!(out, "+ {}", b[j])?;
            j += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(before: &str, after: &str) -> String {
        let mut out = Vec::new();
        write_diff(before, after, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_diff_shows_removed_and_added_lines_in_place() {
        assert_eq!(
            diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            "  a\n- b\n+ B\n  c\n+ d\n"
        );
        assert_eq!(diff("", "x: 1\n"), "+ x: 1\n");
        assert_eq!(diff("same\n", "same\n"), "  (no changes)\n");
    }
}
