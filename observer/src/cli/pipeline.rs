//! `observer pipeline apply|get|list|delete`: pipelines of every kind through the REST
//! API (`MetricPipeline`s at `/api/v1/pipelines`, `LogPipeline`s at
//! `/api/v1/logpipelines`, `TracePipeline`s at `/api/v1/tracepipelines`).
//!
//! `apply` validates every document locally first, each by its `kind`, with the same
//! code the observer runs, and sends nothing when any is invalid; a file may mix kinds,
//! and each result names its kind. A document holding `***` placeholders (as `get -o
//! yaml` prints inline secrets) is left to the observer to judge, since only it knows
//! the stored values they stand for. `get` and `delete` take `--kind` (metric pipelines
//! by default, as before there were other kinds); `list` shows every kind unless
//! `--kind` names one.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kaas_pipeline::status::{ConditionStatus, MetricPipelineStatus};
use kaas_pipeline::templates::{INSTANCE_KIND, TEMPLATE_KIND, parse_any_document_value};
use kaas_pipeline::{LOG_KIND, ProviderPolicy, TRACE_KIND, ValidationContext};
use reqwest::Method;
use serde_yaml::Value;

use super::client::{ApiClient, ClientError};
use super::print::{age, field_problems, structured, table};
use super::{CommandError, EXIT_FAILED, EXIT_OK, Format, OutputArgs};
use crate::api::model::FieldProblem;
use crate::api::redact::REDACTED;

/// `observer pipeline apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file of pipelines (YAML or JSON, several documents); `-` reads standard input.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The tenant (admin tokens; a tenant token applies to its own).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Ask the observer what would happen without storing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// First print what would change (the document, and what an instance renders to),
    /// as the observer answers a dry run; inline secrets read `***`.
    #[arg(long)]
    pub diff: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A pipeline kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// `MetricPipeline`.
    #[value(name = "MetricPipeline", alias = "metricpipeline", alias = "metric")]
    Metric,
    /// `LogPipeline`.
    #[value(name = "LogPipeline", alias = "logpipeline", alias = "log")]
    Log,
    /// `TracePipeline`.
    #[value(name = "TracePipeline", alias = "tracepipeline", alias = "trace")]
    Trace,
    /// `PipelineTemplate`.
    #[value(
        name = "PipelineTemplate",
        alias = "pipelinetemplate",
        alias = "template"
    )]
    Template,
    /// `PipelineInstance`.
    #[value(
        name = "PipelineInstance",
        alias = "pipelineinstance",
        alias = "instance"
    )]
    Instance,
}

impl KindArg {
    /// Every kind, in the order `list` shows them.
    const ALL: [KindArg; 5] = [
        KindArg::Metric,
        KindArg::Log,
        KindArg::Trace,
        KindArg::Template,
        KindArg::Instance,
    ];

    /// The kind of a document, by its `kind` (a document without one is read as a
    /// metric pipeline, as validation reads it).
    pub(super) fn of(value: &Value) -> Self {
        match value.get("kind").and_then(Value::as_str) {
            Some(LOG_KIND) => Self::Log,
            Some(TRACE_KIND) => Self::Trace,
            Some(TEMPLATE_KIND) => Self::Template,
            Some(INSTANCE_KIND) => Self::Instance,
            _ => Self::Metric,
        }
    }

    /// `kind` as written in documents.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Metric => kaas_pipeline::KIND,
            Self::Log => LOG_KIND,
            Self::Trace => TRACE_KIND,
            Self::Template => TEMPLATE_KIND,
            Self::Instance => INSTANCE_KIND,
        }
    }

    /// The API collection of the kind.
    pub(super) fn collection(self) -> &'static str {
        match self {
            Self::Metric => "pipelines",
            Self::Log => "logpipelines",
            Self::Trace => "tracepipelines",
            Self::Template => "pipelinetemplates",
            Self::Instance => "pipelineinstances",
        }
    }

    /// The kind of the pipeline a document of this kind is, or renders to.
    pub(super) fn of_pipeline(kind: &str) -> Self {
        match kind {
            LOG_KIND => Self::Log,
            TRACE_KIND => Self::Trace,
            _ => Self::Metric,
        }
    }
}

/// A command on one pipeline.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The pipeline's name.
    pub name: String,
    /// The pipeline's kind; names are unique per kind.
    #[arg(long, value_enum, default_value = "MetricPipeline")]
    pub kind: KindArg,
    /// The tenant (admin tokens; a tenant token uses its own).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `observer pipeline list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only pipelines of this kind (default: every kind).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only this tenant's pipelines (admin).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A pipeline of any kind, a template or an instance as the API answers it: the fields
/// every such answer has, the resource read as JSON, so one printer serves every kind.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyView {
    tenant: String,
    name: String,
    generation: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
    resource: serde_json::Value,
}

/// A list of [`AnyView`]s.
#[derive(Debug, serde::Deserialize)]
struct AnyList {
    items: Vec<AnyView>,
}

/// One resource found in the files.
struct Found {
    place: String,
    name: Option<String>,
    value: Value,
    problems: Vec<FieldProblem>,
}

/// `pipeline apply`.
pub async fn apply(
    client: &ApiClient,
    args: &ApplyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, CommandError> {
    let mut found = Vec::new();
    for path in &args.files {
        let shown = path.display().to_string();
        let text = if shown == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(path)
        };
        let text = text.map_err(|e| CommandError::Usage(format!("cannot read {shown}: {e}")))?;
        let before = found.len();
        read_documents(&shown, &text, &mut found);
        if found.len() == before {
            return Err(CommandError::Usage(format!("{shown}: no pipeline found")));
        }
    }
    let invalid: Vec<&Found> = found.iter().filter(|f| !f.problems.is_empty()).collect();
    if !invalid.is_empty() {
        for f in &invalid {
            print_problems(f, &f.problems, err)?;
        }
        writeln!(
            err,
            "{} of {} pipelines invalid; nothing was applied",
            invalid.len(),
            found.len()
        )?;
        return Ok(EXIT_FAILED);
    }
    let mut status = EXIT_OK;
    let mut results = Vec::new();
    for f in &found {
        let Some(name) = &f.name else {
            print_problems(f, &[problem("metadata.name", "required")], err)?;
            status = EXIT_FAILED;
            continue;
        };
        let mut query = Vec::new();
        if let Some(tenant) = &args.tenant {
            query.push(("tenant", tenant.clone()));
        }
        if args.dry_run {
            query.push(("dryRun", "true".to_owned()));
        }
        let body = serde_json::to_value(&f.value)?;
        let kind = KindArg::of(&f.value);
        if args.diff {
            super::templates::print_diff(client, kind, name, &args.tenant, &body, out).await?;
        }
        let answer: Result<serde_json::Value, _> = client
            .call(
                Method::PUT,
                &["api", "v1", kind.collection(), name],
                &query,
                Some(&body),
            )
            .await;
        match answer {
            Ok(applied) => {
                if args.output.output == Format::Table {
                    let dry = if applied["dryRun"] == true {
                        " (dry run)"
                    } else {
                        ""
                    };
                    let result = applied["result"].as_str().unwrap_or_default();
                    let rerendered = super::templates::rerendered(&applied);
                    writeln!(out, "{} {name} {result}{dry}{rerendered}", kind.name())?;
                }
                results.push(applied);
            }
            Err(ClientError::Api {
                status: 422,
                message,
                fields,
            }) => {
                writeln!(err, "{}: {}: {message}", f.place, name)?;
                field_problems(&fields, err)?;
                status = EXIT_FAILED;
            }
            Err(other) => return Err(other.into()),
        }
    }
    structured(out, args.output.output, &results)?;
    Ok(status)
}

fn problem(path: &str, message: &str) -> FieldProblem {
    FieldProblem {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn print_problems(
    f: &Found,
    problems: &[FieldProblem],
    err: &mut dyn Write,
) -> std::io::Result<()> {
    let kind = KindArg::of(&f.value).name();
    let name = f
        .name
        .as_deref()
        .map(|n| format!(" {kind} {n:?}"))
        .unwrap_or_default();
    let count = problems.len();
    let noun = if count == 1 { "error" } else { "errors" };
    writeln!(err, "{}{name}: {count} {noun}", f.place)?;
    field_problems(problems, err)
}

/// Splits `text` into resources the way `pipeline validate` does (documents, JSON
/// arrays, Kubernetes Lists) and validates each.
fn read_documents(file: &str, text: &str, found: &mut Vec<Found>) {
    for (i, deserializer) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = format!("{file}: document {}", i + 1);
        let value = match kaas_pipeline::yaml::bounded_value(
            deserializer,
            kaas_pipeline::yaml::MAX_EXPANDED_DOCUMENT_BYTES,
        ) {
            Ok(value) => value,
            Err(error) => {
                found.push(Found {
                    place: location,
                    name: None,
                    value: Value::Null,
                    problems: vec![problem("", &format!("not valid YAML or JSON: {error}"))],
                });
                return;
            }
        };
        let items = match value {
            Value::Null => continue,
            Value::Sequence(items) => items,
            Value::Mapping(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                map.get("items")
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default()
            }
            value => {
                found.push(check(location, value));
                continue;
            }
        };
        for (j, item) in items.into_iter().enumerate() {
            found.push(check(format!("{location}, item {}", j + 1), item));
        }
    }
}

fn check(place: String, value: Value) -> Found {
    // Checked as the observer distributes it; the provider's own lists (Secret
    // namespaces, its receiver) are the observer's to check.
    let context = ValidationContext::observer(ProviderPolicy::offline());
    let document = parse_any_document_value(place.clone(), value.clone(), &context);
    let (name, outcome) = (document.name, document.outcome);
    let problems = match outcome {
        Ok(_) => Vec::new(),
        // Placeholders stand for stored secrets: only the observer can judge.
        Err(_) if holds_placeholder(&value) => Vec::new(),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|e| FieldProblem {
                path: e.path,
                message: e.reason,
            })
            .collect(),
    };
    Found {
        place,
        name,
        value,
        problems,
    }
}

fn holds_placeholder(value: &Value) -> bool {
    match value {
        Value::String(text) => text == REDACTED,
        Value::Sequence(items) => items.iter().any(holds_placeholder),
        Value::Mapping(map) => map.values().any(holds_placeholder),
        Value::Tagged(tagged) => holds_placeholder(&tagged.value),
        _ => false,
    }
}

pub(super) fn query(tenant: &Option<String>) -> Vec<(&'static str, String)> {
    tenant.iter().map(|t| ("tenant", t.clone())).collect()
}

/// `pipeline get`.
pub async fn get(
    client: &ApiClient,
    args: &GetArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let view: AnyView = client
        .call(
            Method::GET,
            &["api", "v1", args.kind.collection(), &args.name],
            &query(&args.tenant),
            None,
        )
        .await?;
    if structured(out, args.output.output, &view.resource)? {
        return Ok(EXIT_OK);
    }
    let now = crate::store::now_ms();
    writeln!(out, "Name:        {}", view.name)?;
    writeln!(out, "Kind:        {}", args.kind.name())?;
    writeln!(out, "Tenant:      {}", view.tenant)?;
    writeln!(out, "Generation:  {}", view.generation)?;
    writeln!(out, "Output:      {}", output_of(&view.resource))?;
    writeln!(out, "Created:     {} ago", age(view.created_at_ms, now))?;
    writeln!(out, "Updated:     {} ago", age(view.updated_at_ms, now))?;
    let status = status_of(&view.resource);
    if status.unsupported_mode {
        writeln!(
            out,
            "UnsupportedMode: true (raw Prometheus scrape configs, not supported by the provider)"
        )?;
    }
    let conditions = status.conditions.as_slice();
    if conditions.is_empty() {
        writeln!(out, "Conditions:  <none>")?;
    } else {
        writeln!(out, "Conditions:")?;
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    status_word(c.status).to_owned(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        let mut text = Vec::new();
        table(&mut text, &["TYPE", "STATUS", "REASON", "MESSAGE"], &rows)?;
        for line in String::from_utf8_lossy(&text).lines() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(EXIT_OK)
}

/// `pipeline list`.
pub async fn list(
    client: &ApiClient,
    args: &ListArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let mut items: Vec<(KindArg, AnyView)> = Vec::new();
    for kind in args.kind.map_or(KindArg::ALL.to_vec(), |kind| vec![kind]) {
        let list: AnyList = client
            .call(
                Method::GET,
                &["api", "v1", kind.collection()],
                &query(&args.tenant),
                None,
            )
            .await?;
        items.extend(list.items.into_iter().map(|view| (kind, view)));
    }
    if args.output.output != Format::Table {
        // A Kubernetes List of the resources: `pipeline apply -f` takes it back as is.
        let resources = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": items.iter().map(|(_, v)| &v.resource).collect::<Vec<_>>(),
        });
        structured(out, args.output.output, &resources)?;
        return Ok(EXIT_OK);
    }
    let now = crate::store::now_ms();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(kind, v)| {
            vec![
                v.name.clone(),
                kind.name().to_owned(),
                v.tenant.clone(),
                v.generation.to_string(),
                condition(
                    &v.resource,
                    kaas_pipeline::status::CONDITION_CONFIGURATION_APPLIED,
                ),
                output_of(&v.resource),
                age(v.created_at_ms, now),
            ]
        })
        .collect();
    table(
        out,
        &[
            "NAME",
            "KIND",
            "TENANT",
            "GENERATION",
            "APPLIED",
            "OUTPUT",
            "AGE",
        ],
        &rows,
    )?;
    Ok(EXIT_OK)
}

/// `pipeline delete`.
pub async fn delete(
    client: &ApiClient,
    args: &GetArgs,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    client
        .call_empty(
            Method::DELETE,
            &["api", "v1", args.kind.collection(), &args.name],
            &query(&args.tenant),
        )
        .await?;
    writeln!(out, "{} {} deleted", args.kind.name(), args.name)?;
    Ok(EXIT_OK)
}

fn status_word(status: ConditionStatus) -> &'static str {
    match status {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

/// The status of a resource of any kind (every kind has the same conditions).
fn status_of(resource: &serde_json::Value) -> MetricPipelineStatus {
    resource
        .get("status")
        .cloned()
        .and_then(|status| serde_json::from_value(status).ok())
        .unwrap_or_default()
}

fn condition(resource: &serde_json::Value, kind: &str) -> String {
    status_of(resource)
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map_or("Unknown".to_owned(), |c| status_word(c.status).to_owned())
}

/// The output of a resource of any kind: its one output section and where it sends,
/// e.g. `remote-write https://…`, `otlp https://…`, `loki https://…`.
///
/// A template shows the output of the pipeline it produces; an instance the template
/// and the generation its pipeline runs, e.g. `template otlp-oauth2@3`.
fn output_of(resource: &serde_json::Value) -> String {
    if resource["kind"] == INSTANCE_KIND {
        return format!(
            "template {}@{}",
            resource["spec"]["template"]["name"]
                .as_str()
                .unwrap_or_default(),
            resource["status"]["templateGeneration"]
        );
    }
    let spec = match &resource["spec"]["template"]["spec"] {
        produced if resource["kind"] == TEMPLATE_KIND => produced,
        _ => &resource["spec"],
    };
    let sections = spec["output"].as_object();
    let Some((section, settings)) = sections.and_then(|s| s.iter().next()) else {
        return "<none>".to_owned();
    };
    let name = match section.as_str() {
        "prometheusRemoteWrite" => "remote-write",
        other => other,
    };
    let url = match &settings["url"] {
        serde_json::Value::Null => &settings["endpoint"],
        url => url,
    };
    // A URL read from a Secret is shown by its reference, never its value.
    let target = match (url.as_str(), url["valueFrom"]["secretKeyRef"].as_object()) {
        (Some(text), _) => text.to_owned(),
        (None, Some(reference)) => format!(
            "<Secret {}/{} key {}>",
            reference["namespace"].as_str().unwrap_or_default(),
            reference["name"].as_str().unwrap_or_default(),
            reference["key"].as_str().unwrap_or_default()
        ),
        (None, None) => String::new(),
    };
    format!("{name} {target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `observer pipeline list` and `get` show where an output sends: a URL written in
    /// place as it is, one read from a Secret by its reference, never anything else.
    #[test]
    fn the_output_column_names_a_bound_url_by_its_reference() {
        let written = serde_json::json!({
            "kind": "MetricPipeline",
            "spec": {"output": {"prometheusRemoteWrite": {"url": "https://mimir.example/push"}}}
        });
        assert_eq!(
            output_of(&written),
            "remote-write https://mimir.example/push"
        );
        let bound = serde_json::json!({
            "kind": "TracePipeline",
            "spec": {"output": {"otlp": {"endpoint": {"valueFrom": {"secretKeyRef":
                {"name": "tempo-binding", "namespace": "kaas-observer", "key": "endpoint"}}}}}}
        });
        assert_eq!(
            output_of(&bound),
            "otlp <Secret kaas-observer/tempo-binding key endpoint>"
        );
    }
}
