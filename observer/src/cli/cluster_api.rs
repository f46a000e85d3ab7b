//! `observer cluster-api map|unmap|list`: which tenant the `Cluster`s of each Cluster
//! API namespace belong to (admin tokens). The Cluster API source registers nothing
//! from a namespace that is not mapped.

use std::io::Write;

use clap::{Args, Subcommand};
use reqwest::Method;

use super::client::ApiClient;
use super::print::{age, structured, table};
use super::{CommandError, EXIT_OK, OutputArgs};
use crate::api::cluster_api::{MapNamespaceRequest, NamespaceMappingList, NamespaceMappingView};

/// `observer cluster-api …`.
#[derive(Debug, Subcommand)]
pub enum ClusterApiCommand {
    /// Map a namespace of the management cluster to a tenant: its `Cluster`s are
    /// registered for that tenant.
    Map(MapArgs),
    /// Remove a namespace's mapping: nothing more is registered from it; clusters
    /// registered from it stay.
    Unmap(UnmapArgs),
    /// List the mapped namespaces.
    List(OutputArgs),
}

/// `observer cluster-api map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// The namespace.
    pub namespace: String,
    /// The tenant (it must exist).
    #[arg(long)]
    pub tenant: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer cluster-api unmap`.
#[derive(Debug, Args)]
pub struct UnmapArgs {
    /// The namespace.
    pub namespace: String,
}

/// Runs a cluster-api command.
pub async fn run(
    client: &ApiClient,
    command: ClusterApiCommand,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let path = ["api", "v1", "cluster-api", "namespaces"];
    match command {
        ClusterApiCommand::Map(args) => {
            let request = MapNamespaceRequest {
                tenant: args.tenant,
            };
            let mapping: NamespaceMappingView = client
                .call(
                    Method::PUT,
                    &[
                        "api",
                        "v1",
                        "cluster-api",
                        "namespaces",
                        args.namespace.as_str(),
                    ],
                    &[],
                    Some(&request),
                )
                .await?;
            if !structured(out, args.output.output, &mapping)? {
                writeln!(
                    out,
                    "namespace {} mapped to tenant {}",
                    mapping.namespace, mapping.tenant
                )?;
            }
        }
        ClusterApiCommand::Unmap(args) => {
            client
                .call_empty(
                    Method::DELETE,
                    &[
                        "api",
                        "v1",
                        "cluster-api",
                        "namespaces",
                        args.namespace.as_str(),
                    ],
                    &[],
                )
                .await?;
            writeln!(out, "namespace {} unmapped", args.namespace)?;
        }
        ClusterApiCommand::List(output) => {
            let list: NamespaceMappingList = client.call(Method::GET, &path, &[], None).await?;
            if !structured(out, output.output, &list)? {
                let now = crate::store::now_ms();
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|m| {
                        vec![
                            m.namespace.clone(),
                            m.tenant.clone(),
                            age(m.created_at_ms, now),
                        ]
                    })
                    .collect();
                table(out, &["NAMESPACE", "TENANT", "AGE"], &rows)?;
            }
        }
    }
    Ok(EXIT_OK)
}
