//! `observer cluster add|list|get|delete|join-token|revoke-certificates|confirm-deletions|control-plane`.
//!
//! `add` prints the join token and writes the agent's install manifests to standard
//! output (or `--manifest-file`). When the manifests go to standard output, the other
//! lines go to standard error, so `observer cluster add c1 > agent.yaml` works.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, labels, structured, table};
use super::{CommandError, EXIT_OK, Format, OutputArgs};
use crate::api::control_plane::{ComponentView, ControlPlaneView};
use crate::api::model::{
    ClusterList, ClusterView, ConfirmedDeletions, CreateClusterRequest, CreatedCluster, JoinToken,
    Revoked,
};
use crate::control_plane::ControlPlaneScrape;

/// `observer cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Onboard a cluster: prints its join token and the agent's install manifests.
    Add(AddArgs),
    /// List clusters with their state.
    List(ListArgs),
    /// Show one cluster with its agent's last reports.
    Get(NameArgs),
    /// Delete a cluster; its agent's certificate stops being accepted.
    Delete(NameArgs),
    /// Mint a new join token (and manifests) for a cluster whose token expired.
    JoinToken(JoinTokenArgs),
    /// Revoke every agent certificate of a cluster: its agents are cut off at once,
    /// the cluster and its pipelines stay; a new join token brings an agent back.
    RevokeCertificates(NameArgs),
    /// Confirm the cluster changes the mass-deletion guard holds (admin; shown by
    /// `observer status`): each source applies them at its next pass if its evidence
    /// still holds.
    ConfirmDeletions(ConfirmArgs),
    /// Show which control-plane components the provider's central pipeline scrapes on
    /// a cluster, how, and why not; `--set FILE` or `--reset` change it (admin).
    ControlPlane(ControlPlaneArgs),
}

/// `observer cluster control-plane`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// The cluster's name; with an admin token and no --tenant, its global id.
    pub name: String,
    /// The tenant whose cluster NAME is (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Set the cluster's control-plane setting from this YAML or JSON file (admin;
    /// docs/operator-guide.md, "Cluster health data").
    #[arg(long, value_name = "FILE", conflicts_with = "reset")]
    pub set: Option<PathBuf>,
    /// Return the cluster to the default setting (admin).
    #[arg(long)]
    pub reset: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer cluster confirm-deletions`.
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer cluster add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The cluster's name (a DNS-1123 label, unique within its tenant).
    pub name: String,
    /// The owning tenant; required with an admin token.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A label pipelines can select on, `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The cluster's Kubernetes API endpoint, for information.
    #[arg(long, value_name = "URL")]
    pub api_endpoint: Option<String>,
    /// Write the install manifests here instead of to standard output.
    #[arg(long, value_name = "FILE")]
    pub manifest_file: Option<PathBuf>,
    /// Which control-plane components the central pipeline scrapes, and how (a YAML or
    /// JSON file; admin). Checked before the cluster is registered, set right after.
    #[arg(long, value_name = "FILE")]
    pub control_plane: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer cluster list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant's clusters (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A command on one cluster.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The cluster's name; with an admin token and no --tenant, its global id.
    pub name: String,
    /// The tenant whose cluster NAME is (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer cluster join-token`.
#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// The cluster's name; with an admin token and no --tenant, its global id.
    pub name: String,
    /// The tenant whose cluster NAME is (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Write the install manifests here instead of to standard output.
    #[arg(long, value_name = "FILE")]
    pub manifest_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `?tenant=` when a tenant was named.
fn tenant_query(tenant: Option<String>) -> Vec<(&'static str, String)> {
    tenant.map(|t| ("tenant", t)).into_iter().collect()
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Runs a cluster command.
pub async fn run(
    client: &ApiClient,
    command: ClusterCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CommandError> {
    match command {
        ClusterCommand::Add(args) => add(client, args, out, err).await,
        ClusterCommand::ConfirmDeletions(args) => confirm_deletions(client, &args, out).await,
        ClusterCommand::List(args) => {
            let query: Vec<(&str, String)> =
                args.tenant.map(|t| ("tenant", t)).into_iter().collect();
            let list: ClusterList = client
                .call(Method::GET, &["api", "v1", "clusters"], &query, None)
                .await?;
            if !structured(out, args.output.output, &list)? {
                let now = crate::store::now_ms();
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.tenant.clone(),
                            c.id.clone(),
                            state(c),
                            yes_no(c.connected),
                            c.last_seen_ms.map_or("never".to_owned(), |ms| age(ms, now)),
                            age(c.created_at_ms, now),
                            labels(&c.labels),
                        ]
                    })
                    .collect();
                table(
                    out,
                    &[
                        "NAME",
                        "TENANT",
                        "ID",
                        "STATE",
                        "CONNECTED",
                        "LAST SEEN",
                        "AGE",
                        "LABELS",
                    ],
                    &rows,
                )?;
            }
            Ok(EXIT_OK)
        }
        ClusterCommand::Get(args) => {
            let cluster: ClusterView = client
                .call(
                    Method::GET,
                    &["api", "v1", "clusters", &args.name],
                    &tenant_query(args.tenant),
                    None,
                )
                .await?;
            if !structured(out, args.output.output, &cluster)? {
                print_cluster(&cluster, out)?;
            }
            Ok(EXIT_OK)
        }
        ClusterCommand::Delete(args) => {
            client
                .call_empty(
                    Method::DELETE,
                    &["api", "v1", "clusters", &args.name],
                    &tenant_query(args.tenant),
                )
                .await?;
            writeln!(out, "cluster {} deleted", args.name)?;
            Ok(EXIT_OK)
        }
        ClusterCommand::RevokeCertificates(args) => {
            let answer: Revoked = client
                .call(
                    Method::DELETE,
                    &["api", "v1", "clusters", &args.name, "certificates"],
                    &tenant_query(args.tenant),
                    None,
                )
                .await?;
            if !structured(out, args.output.output, &answer)? {
                writeln!(
                    out,
                    "cluster {}: {} agent certificates revoked; its agents are cut off until \
                     one joins again with a new join token (observer cluster join-token)",
                    args.name, answer.revoked
                )?;
            }
            Ok(EXIT_OK)
        }
        ClusterCommand::ControlPlane(args) => control_plane(client, args, out).await,
        ClusterCommand::JoinToken(args) => {
            let answer: JoinToken = client
                .call(
                    Method::POST,
                    &["api", "v1", "clusters", &args.name, "join-token"],
                    &tenant_query(args.tenant),
                    None,
                )
                .await?;
            deliver(
                args.output.output,
                &answer,
                &answer.cluster,
                &answer.join_token,
                answer.join_token_expires_at_ms,
                &answer.manifest,
                args.manifest_file.as_ref(),
                out,
                err,
            )
        }
    }
}

/// `observer cluster confirm-deletions`.
async fn confirm_deletions(
    client: &ApiClient,
    args: &ConfirmArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let answer: ConfirmedDeletions = client
        .call(
            Method::POST,
            &["api", "v1", "deletions", "confirm"],
            &[],
            None,
        )
        .await?;
    if !structured(out, args.output.output, &answer)? {
        writeln!(
            out,
            "{} held cluster change(s) confirmed; their sources apply them at their next pass",
            answer.confirmed.len()
        )?;
        super::status::print_pending(out, &answer.confirmed)?;
    }
    Ok(EXIT_OK)
}

async fn add(
    client: &ApiClient,
    args: AddArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CommandError> {
    // Read and checked first, so a bad file registers nothing.
    let control_plane = args
        .control_plane
        .as_ref()
        .map(read_control_plane)
        .transpose()?;
    let tenant = args.tenant.clone();
    let request = CreateClusterRequest {
        name: args.name,
        tenant: args.tenant,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        api_endpoint: args.api_endpoint,
    };
    let created: CreatedCluster = client
        .call(
            Method::POST,
            &["api", "v1", "clusters"],
            &[],
            Some(&request),
        )
        .await?;
    if let Some(setting) = &control_plane {
        let _: ControlPlaneView = client
            .call(
                Method::PUT,
                &[
                    "api",
                    "v1",
                    "clusters",
                    &created.cluster.name,
                    "control-plane",
                ],
                &tenant_query(tenant),
                Some(setting),
            )
            .await?;
    }
    deliver(
        args.output.output,
        &created,
        &created.cluster.name,
        &created.join_token,
        created.join_token_expires_at_ms,
        &created.manifest,
        args.manifest_file.as_ref(),
        out,
        err,
    )
}

/// Reads a control-plane setting file (YAML, of which JSON is a subset) and checks it
/// as the API will.
fn read_control_plane(path: &PathBuf) -> Result<ControlPlaneScrape, CommandError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let setting: ControlPlaneScrape = serde_yaml::from_str(&text)
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    setting
        .validate()
        .map_err(|e| CommandError::Usage(format!("{}: {e}", path.display())))?;
    Ok(setting)
}

/// `observer cluster control-plane`: shows, sets or resets the setting.
async fn control_plane(
    client: &ApiClient,
    args: ControlPlaneArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let path = ["api", "v1", "clusters", &args.name, "control-plane"];
    let query = tenant_query(args.tenant);
    let view: ControlPlaneView = if let Some(file) = &args.set {
        let setting = read_control_plane(file)?;
        client
            .call(Method::PUT, &path, &query, Some(&setting))
            .await?
    } else if args.reset {
        client.call(Method::DELETE, &path, &query, None).await?
    } else {
        client.call(Method::GET, &path, &query, None).await?
    };
    if !structured(out, args.output.output, &view)? {
        let rows: Vec<Vec<String>> = view
            .components
            .iter()
            .map(|c| {
                vec![
                    c.job.clone(),
                    yes_no(c.scraped),
                    c.how.clone(),
                    component_reason(c),
                ]
            })
            .collect();
        table(out, &["COMPONENT", "SCRAPED", "HOW", "REASON"], &rows)?;
    }
    Ok(EXIT_OK)
}

/// Why a component is not scraped, or why its scrape fails.
fn component_reason(component: &ComponentView) -> String {
    match (&component.reason, &component.unreachable) {
        (Some(reason), _) => reason.clone(),
        (None, Some(failing)) => format!("unreachable: {failing}"),
        (None, None) => String::new(),
    }
}

/// Prints a join token and writes the manifests where they were asked for.
#[allow(clippy::too_many_arguments)]
fn deliver<T: serde::Serialize>(
    format: Format,
    answer: &T,
    cluster: &str,
    join_token: &str,
    expires_at_ms: i64,
    manifest: &str,
    manifest_file: Option<&PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CommandError> {
    if let Some(path) = manifest_file {
        std::fs::write(path, manifest)
            .map_err(|e| CommandError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if structured(out, format, answer)? {
        return Ok(EXIT_OK);
    }
    let expires_in = (expires_at_ms - crate::store::now_ms()).max(0) / 1000;
    let token_lines = |w: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            w,
            "cluster {cluster}: join token (single use, valid for {}):",
            human_seconds(expires_in)
        )?;
        writeln!(w, "{join_token}")
    };
    match manifest_file {
        Some(path) => {
            token_lines(out)?;
            writeln!(
                out,
                "agent manifests written to {0}; install them with kubectl apply -f {0}",
                path.display()
            )?;
        }
        None => {
            token_lines(err)?;
            writeln!(
                err,
                "agent manifests follow on standard output; install them with kubectl apply -f -"
            )?;
            out.write_all(manifest.as_bytes())?;
        }
    }
    Ok(EXIT_OK)
}

/// `23h59m`, `1h`, `5m`, `40s`; rounded to the nearest minute above a minute, since
/// the expiry was computed a moment before the token was minted.
fn human_seconds(seconds: i64) -> String {
    if seconds < 60 {
        return format!("{seconds}s");
    }
    let minutes = (seconds + 30) / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

fn state(cluster: &ClusterView) -> String {
    serde_json::to_value(cluster.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn print_cluster(cluster: &ClusterView, out: &mut dyn Write) -> std::io::Result<()> {
    let now = crate::store::now_ms();
    writeln!(out, "Name:          {}", cluster.name)?;
    writeln!(out, "Tenant:        {}", cluster.tenant)?;
    writeln!(out, "Global id:     {}", cluster.id)?;
    writeln!(out, "Incarnation:   {}", cluster.incarnation)?;
    writeln!(out, "State:         {}", state(cluster))?;
    writeln!(out, "Connected:     {}", yes_no(cluster.connected))?;
    writeln!(out, "Labels:        {}", labels(&cluster.labels))?;
    if let Some(endpoint) = &cluster.api_endpoint {
        writeln!(out, "API endpoint:  {endpoint}")?;
    }
    writeln!(
        out,
        "Created:       {} ago",
        age(cluster.created_at_ms, now)
    )?;
    if let Some(ms) = cluster.last_seen_ms {
        writeln!(out, "Last seen:     {} ago", age(ms, now))?;
    }
    if let Some(version) = &cluster.agent_version {
        writeln!(out, "Agent version: {version}")?;
    }
    if let Some(hash) = &cluster.applied_config_hash {
        writeln!(out, "Applied config: {hash}")?;
    }
    if let Some(report) = &cluster.config {
        writeln!(
            out,
            "Config report: {} {} ({} ago)",
            report.state.as_str(),
            report.config_hash,
            age(report.at_ms, now)
        )?;
        for error in &report.errors {
            writeln!(
                out,
                "  {}: {}: {}",
                error.pipeline, error.field_path, error.message
            )?;
        }
    }
    if let Some(components) = &cluster.control_plane {
        writeln!(out, "Control plane:")?;
        for component in components {
            let job = &component.job;
            match (&component.reason, &component.unreachable) {
                (Some(reason), _) => writeln!(out, "  {job}: not scraped: {reason}")?,
                (None, Some(failing)) => writeln!(out, "  {job}: unreachable: {failing}")?,
                (None, None) => writeln!(out, "  {job}: scraped")?,
            }
        }
    }
    if let Some(pipelines) = cluster.pipeline_health.as_ref().filter(|p| !p.is_empty()) {
        writeln!(out, "Pipeline health (worst of the agent instances):")?;
        let rows: Vec<Vec<String>> = pipelines
            .iter()
            .map(|p| {
                vec![
                    p.kind.clone(),
                    p.pipeline.clone(),
                    p.status.clone(),
                    p.reason.clone(),
                    format!("{}/{}", p.instances.affected, p.instances.reporting),
                    p.worst_instance.clone().unwrap_or_default(),
                    p.message.clone(),
                ]
            })
            .collect();
        let mut text = Vec::new();
        let header = [
            "KIND", "PIPELINE", "STATUS", "REASON", "AFFECTED", "WORST", "MESSAGE",
        ];
        table(&mut text, &header, &rows)?;
        for line in String::from_utf8_lossy(&text).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(health) = &cluster.health {
        writeln!(out, "Health:        {health}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lifetimes_read_naturally() {
        assert_eq!(human_seconds(3599), "1h");
        assert_eq!(human_seconds(86_399), "24h");
        assert_eq!(human_seconds(5400), "1h30m");
        assert_eq!(human_seconds(299), "5m");
        assert_eq!(human_seconds(40), "40s");
    }

    /// Issue 15: `cluster get` shows each control-plane component with why it is not
    /// scraped or why its scrape fails.
    #[test]
    fn cluster_get_shows_unreachable_components_with_the_reason() {
        let cluster: ClusterView = serde_json::from_value(serde_json::json!({
            "name": "prod-1", "id": "shop.prod-1", "tenant": "shop", "state": "active",
            "connected": true, "createdAtMs": 0,
            "controlPlane": [
                {"job": "apiserver", "scraped": true, "how": "addresses x"},
                {"job": "etcd", "scraped": true, "how": "addresses y",
                 "unreachable": "1 target(s) failing: HTTP status 400"},
                {"job": "kube-scheduler", "scraped": false, "how": "notScraped",
                 "reason": "hosted"}
            ]
        }))
        .unwrap();
        let mut out = Vec::new();
        print_cluster(&cluster, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "Control plane:\n",
            "  apiserver: scraped\n",
            "  etcd: unreachable: 1 target(s) failing: HTTP status 400\n",
            "  kube-scheduler: not scraped: hosted\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
    }

    /// Issue 16: `cluster get` shows each pipeline's health as the worst of the
    /// cluster's agent instances, with how many of the reporting ones are affected.
    #[test]
    fn cluster_get_shows_pipeline_health_over_instances() {
        let cluster: ClusterView = serde_json::from_value(serde_json::json!({
            "name": "prod-1", "id": "shop.prod-1", "tenant": "shop", "state": "active",
            "connected": true, "createdAtMs": 0,
            "pipelineHealth": [
                {"kind": "LogPipeline", "pipeline": "app", "status": "False",
                 "reason": "BackendUnreachable", "message": "BackendUnreachable: refused",
                 "instances": {"reporting": 3, "affected": 1}, "worstInstance": "node-b"},
                {"kind": "MetricPipeline", "pipeline": "shop", "status": "True",
                 "reason": "FlowHealthy", "instances": {"reporting": 1, "affected": 0}}
            ]
        }))
        .unwrap();
        let mut out = Vec::new();
        print_cluster(&cluster, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Pipeline health (worst of the agent instances):\n"),
            "{text}"
        );
        let app = text.lines().find(|l| l.contains(" app ")).unwrap();
        for word in [
            "LogPipeline",
            "False",
            "BackendUnreachable",
            "1/3",
            "node-b",
        ] {
            assert!(app.contains(word), "{word:?} in {app:?}");
        }
        let shop = text.lines().find(|l| l.contains(" shop ")).unwrap();
        assert!(
            shop.contains("0/1") && shop.contains("FlowHealthy"),
            "{shop:?}"
        );
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
