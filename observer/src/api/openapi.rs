//! `GET /openapi.json`: an OpenAPI 3.0 description of every route, parameter, request
//! body and answer.
//!
//! The paths are written out here by hand; the schemas come from the wire types in
//! [`model`](super::model) and from every pipeline kind
//! ([`MetricPipeline`](kaas_pipeline::MetricPipeline),
//! [`LogPipeline`](kaas_pipeline::LogPipeline),
//! [`TracePipeline`](kaas_pipeline::TracePipeline)) through `schemars` with its
//! OpenAPI 3.0 settings, so they are exactly what the handlers read and write.
//! `tests/schemathesis.rs` fuzzes the running API against this document.

use kaas_pipeline::templates::{INSTANCE_KIND, PipelineInstance, PipelineTemplate, TEMPLATE_KIND};
use kaas_pipeline::{
    API_GROUP_VERSION, ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline,
};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::audit::{AuditList, MAX_AUDIT_PAGE};
use super::budgets::{BufferBudgetView, SetBufferBudget};
use super::cluster_api::{MapNamespaceRequest, NamespaceMappingList, NamespaceMappingView};
use super::clusters::MAX_CLUSTER_PAGE;
use super::control_plane::ControlPlaneView;
use super::model::{
    AppliedPipeline, ClusterList, ClusterView, ConfirmedDeletions, CreateClusterRequest,
    CreateTenantRequest, CreateTokenRequest, CreatedCluster, CreatedToken, ErrorBody, JoinToken,
    PipelineList, PipelineStatusView, PipelineView, Revoked, StatusView, TenantList, TenantView,
    TokenList,
};
use super::probes::{ProbeEndpointList, ProbeEndpointRequest, ProbeEndpointView};
use super::quotas::{SetQuotasRequest, TenantQuotasView};
use super::secrets::RekeyResult;
use super::template_instances::{AppliedInstance, InstanceList, InstanceView, RenderedInstance};
use super::templates::{AppliedTemplate, RollbackRequest, TemplateList, TemplateView};
use crate::control_plane::ControlPlaneScrape;
use crate::store::PipelineKind;

/// The document's `info.version`: the observer's version.
const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Media types a pipeline may be sent in.
const YAML: &str = "application/yaml";
const JSON: &str = "application/json";

/// Schemas of the wire types, collected while the paths are written.
struct Schemas(SchemaGenerator);

impl Schemas {
    fn of<T: JsonSchema>(&mut self) -> Value {
        self.0.subschema_for::<T>().to_value()
    }
}

/// Error answers an operation can give, besides the ones every authenticated operation
/// can give (400, 401, 403, 500).
#[derive(Clone, Copy)]
struct Errors {
    not_found: bool,
    conflict: bool,
    body: bool,
}

const READ: Errors = Errors {
    not_found: false,
    conflict: false,
    body: false,
};
const READ_ONE: Errors = Errors {
    not_found: true,
    conflict: false,
    body: false,
};
const DELETE: Errors = Errors {
    not_found: true,
    conflict: true,
    body: false,
};
const WRITE: Errors = Errors {
    not_found: true,
    conflict: true,
    body: true,
};

/// The whole document.
pub fn document() -> Value {
    let mut s = Schemas(SchemaSettings::openapi3().into_generator());
    let answers = Answers {
        error: s.of::<ErrorBody>(),
    };
    let shared = Shared::new();
    let mut paths = health_paths(&answers);
    paths.extend(tenant_and_token_paths(&mut s, &answers, &shared));
    paths.extend(cluster_paths(&mut s, &answers, &shared));
    paths.extend(pipeline_paths::<ValidatedPipeline>(
        &mut s, &answers, &shared,
    ));
    paths.extend(pipeline_paths::<ValidatedLogPipeline>(
        &mut s, &answers, &shared,
    ));
    paths.extend(pipeline_paths::<ValidatedTracePipeline>(
        &mut s, &answers, &shared,
    ));
    paths.extend(template_paths(&mut s, &answers, &shared));
    paths.extend(admin_paths(&mut s, &answers));
    paths.extend(probe_paths(&mut s, &answers, &shared));
    let mut schemas = s.0.take_definitions(true);
    for kind in [
        <ValidatedPipeline as PipelineKind>::KIND,
        <ValidatedLogPipeline as PipelineKind>::KIND,
        <ValidatedTracePipeline as PipelineKind>::KIND,
        TEMPLATE_KIND,
        INSTANCE_KIND,
    ] {
        if let Some(pipeline) = schemas.get_mut(kind) {
            add_envelope(pipeline, kind);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "kaas-observer",
            "version": API_VERSION,
            "description": "The observer's REST API: tenants, API tokens, clusters, MetricPipelines, LogPipelines, TracePipelines, PipelineTemplates and PipelineInstances. \
                Every operation except the health endpoints needs `Authorization: Bearer <token>`. \
                Timestamps are Unix milliseconds.",
        },
        "security": [{ "bearerAuth": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearerAuth": { "type": "http", "scheme": "bearer" } },
        },
    })
}

/// The answers every operation shares, around the error body's schema.
struct Answers {
    error: Value,
}

impl Answers {
    fn error_response(&self, description: &str) -> Value {
        json!({ "description": description, "content": { JSON: { "schema": self.error.clone() } } })
    }

    /// One operation: its `responses` plus the error answers it can give.
    #[allow(clippy::too_many_arguments)]
    fn operation(
        &self,
        id: &str,
        tag: &str,
        summary: &str,
        parameters: Vec<Value>,
        body: Option<Value>,
        mut responses: Map<String, Value>,
        errors: Errors,
    ) -> Value {
        responses.insert(
            "400".into(),
            self.error_response(
                "The request cannot be read: malformed JSON, a bad query parameter.",
            ),
        );
        responses.insert(
            "401".into(),
            self.error_response("No bearer token, or one the observer does not know."),
        );
        responses.insert(
            "403".into(),
            self.error_response(
                "The token may not do this, e.g. a tenant token naming another tenant.",
            ),
        );
        responses.insert(
            "500".into(),
            self.error_response("Internal error; the cause is in the observer's log."),
        );
        if errors.not_found {
            responses.insert(
                "404".into(),
                self.error_response("No such object, or it belongs to another tenant."),
            );
        }
        if errors.conflict {
            responses.insert(
                "409".into(),
                self.error_response("The object exists already, its state forbids the change, or creating it would take the tenant over a quota (the message names it)."),
            );
        }
        if errors.body {
            responses.insert("413".into(), self.error_response("The body is too large."));
            responses.insert(
                "415".into(),
                self.error_response("The body is in a format this operation does not read."),
            );
            responses.insert(
                "422".into(),
                self.error_response(
                    "The body is invalid; `fields` lists every problem with its field path.",
                ),
            );
        }
        let mut op = json!({
            "operationId": id,
            "tags": [tag],
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = body {
            op["requestBody"] = body;
        }
        op
    }
}

/// Parameters several routes take.
struct Shared {
    name: Value,
    tenant_filter: Value,
    tenant_target: Value,
    cluster_tenant: Value,
    dry_run: Value,
}

impl Shared {
    fn new() -> Self {
        let name = path_param("name", "The object's name.");
        let tenant_filter = query_param(
            "tenant",
            "Only this tenant's objects (admin tokens; a tenant token may name only its own tenant).",
            json!({ "type": "string" }),
        );
        let tenant_target = query_param(
            "tenant",
            "The tenant; required with an admin token, a tenant token acts in its own tenant.",
            json!({ "type": "string" }),
        );
        let cluster_tenant = query_param(
            "tenant",
            "With an admin token: the tenant whose cluster `name` is; without it an admin's `name` is the cluster's global id (`<tenant>.<name>`). A tenant token names its own tenant's clusters.",
            json!({ "type": "string" }),
        );
        let dry_run = query_param(
            "dryRun",
            "Validate and answer what would happen, without storing.",
            json!({ "type": "boolean", "default": false }),
        );
        Self {
            name,
            tenant_filter,
            tenant_target,
            cluster_tenant,
            dry_run,
        }
    }
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { JSON: { "schema": schema } } })
}

fn json_body(schema: Value) -> Value {
    json!({ "required": true, "content": { JSON: { "schema": schema } } })
}

fn responses(entries: Vec<(&str, Value)>) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(code, v)| (code.to_owned(), v))
        .collect()
}

fn no_content() -> Value {
    json!({ "description": "Done; no body." })
}

fn text(description: &str) -> Value {
    json!({ "description": description, "content": { "text/plain": { "schema": { "type": "string" } } } })
}

/// The object a `json!` literal of paths made.
fn into_map(paths: Value) -> Map<String, Value> {
    match paths {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The health endpoints and this document, which need no token.
fn health_paths(answers: &Answers) -> Map<String, Value> {
    let paths = json!({
        "/healthz": { "get": {
            "operationId": "healthz", "tags": ["health"], "summary": "Liveness: the process answers.",
            "security": [], "responses": { "200": text("Alive.") },
        }},
        "/readyz": { "get": {
            "operationId": "readyz", "tags": ["health"], "summary": "Readiness: the database answers.",
            "security": [], "responses": { "200": text("Ready."), "503": answers.error_response("The database does not answer.") },
        }},
        "/openapi.json": { "get": {
            "operationId": "openapi", "tags": ["health"], "summary": "This document.",
            "security": [], "responses": { "200": ok("The OpenAPI document.", json!({ "type": "object" })) },
        }},
    });
    into_map(paths)
}

/// The status overview, tenants and API tokens.
fn tenant_and_token_paths(
    s: &mut Schemas,
    answers: &Answers,
    shared: &Shared,
) -> Map<String, Value> {
    let token_id = path_param("id", "The token's id.");
    let paths = json!({
        "/api/v1/status": { "get": answers.operation("getStatus", "status", "Counts of tenants, clusters by state, pipelines and connected agents the caller may see.",
            vec![], None, responses(vec![("200", ok("The overview.", s.of::<StatusView>()))]), READ) },
        "/api/v1/tenants": {
            "post": answers.operation("createTenant", "tenants", "Create a tenant (admin).", vec![],
                Some(json_body(s.of::<CreateTenantRequest>())),
                responses(vec![("201", ok("Created.", s.of::<TenantView>()))]), WRITE),
            "get": answers.operation("listTenants", "tenants", "List tenants (admin).", vec![], None,
                responses(vec![("200", ok("Every tenant.", s.of::<TenantList>()))]), READ),
        },
        "/api/v1/tenants/{name}": {
            "get": answers.operation("getTenant", "tenants", "Read a tenant (admin).", vec![shared.name.clone()], None,
                responses(vec![("200", ok("The tenant.", s.of::<TenantView>()))]), READ_ONE),
            "delete": answers.operation("deleteTenant", "tenants", "Delete a tenant that has no clusters or pipelines left (admin).",
                vec![shared.name.clone()], None, responses(vec![("204", no_content())]), DELETE),
        },
        "/api/v1/tenants/{name}/quotas": {
            "get": answers.operation("getTenantQuotas", "tenants", "Read a tenant's quotas: limit, use and default of each (admin, or the tenant itself).",
                vec![shared.name.clone()], None,
                responses(vec![("200", ok("The quotas.", s.of::<TenantQuotasView>()))]), READ_ONE),
            "put": answers.operation("setTenantQuotas", "tenants", "Replace a tenant's quota overrides; a quota left out returns to its default (admin).",
                vec![shared.name.clone()], Some(json_body(s.of::<SetQuotasRequest>())),
                responses(vec![("200", ok("The quotas now.", s.of::<TenantQuotasView>()))]), WRITE),
        },
        "/api/v1/tokens": {
            "post": answers.operation("createToken", "tokens", "Create an API token; the answer shows it once.", vec![],
                Some(json_body(s.of::<CreateTokenRequest>())),
                responses(vec![("201", ok("Created; `token` is shown only here.", s.of::<CreatedToken>()))]), WRITE),
            "get": answers.operation("listTokens", "tokens", "List API tokens (without their secrets).", vec![shared.tenant_filter.clone()], None,
                responses(vec![("200", ok("The tokens.", s.of::<TokenList>()))]), READ),
            "delete": answers.operation("revokeTenantTokens", "tokens", "Revoke every API token of a tenant at once; an admin names the tenant, a tenant token may name only its own.",
                vec![shared.tenant_target.clone()], None,
                responses(vec![("200", ok("How many tokens were revoked.", s.of::<Revoked>()))]), DELETE),
        },
        "/api/v1/tokens/{id}": {
            "delete": answers.operation("revokeToken", "tokens", "Revoke an API token.", vec![token_id], None,
                responses(vec![("204", no_content())]), DELETE),
        },
    });
    into_map(paths)
}

/// Clusters: onboarding, join tokens, certificates, buffer budgets.
fn cluster_paths(s: &mut Schemas, answers: &Answers, shared: &Shared) -> Map<String, Value> {
    let page_limit = query_param(
        "limit",
        "At most this many clusters in the answer; all of them without it.",
        json!({ "type": "integer", "minimum": 1, "maximum": MAX_CLUSTER_PAGE }),
    );
    let page_continue = query_param(
        "continue",
        "The `continue` of the previous page: the answer starts after it.",
        json!({ "type": "string" }),
    );
    let paths = json!({
        "/api/v1/clusters": {
            "post": answers.operation("createCluster", "clusters", "Onboard a cluster: answers with its join token and the agent's install manifests.", vec![],
                Some(json_body(s.of::<CreateClusterRequest>())),
                responses(vec![("201", ok("Created.", s.of::<CreatedCluster>()))]), WRITE),
            "get": answers.operation("listClusters", "clusters", "List clusters with state, connection and health, by name. With `limit`, one page at a time: an answer with more to come carries `continue`; pass it back as `continue` for the next page.",
                vec![shared.tenant_filter.clone(), page_limit, page_continue], None,
                responses(vec![("200", ok("The clusters.", s.of::<ClusterList>()))]), READ),
        },
        "/api/v1/clusters/{name}": {
            "get": answers.operation("getCluster", "clusters", "Read a cluster with its latest configuration report and health, and each pipeline's health over its agent instances (`pipelineHealth`: the worst instance, how many report, how many are affected).", vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("The cluster.", s.of::<ClusterView>()))]), READ_ONE),
            "delete": answers.operation("deleteCluster", "clusters", "Delete a cluster (tombstone); its agent's certificate stops being accepted.",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None, responses(vec![("204", no_content())]), DELETE),
        },
        "/api/v1/clusters/{name}/join-token": {
            "post": answers.operation("mintJoinToken", "clusters", "Mint a new single-use join token for a cluster.", vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("201", ok("The join token and install manifests.", s.of::<JoinToken>()))]), DELETE),
        },
        "/api/v1/clusters/{name}/certificates": {
            "delete": answers.operation("revokeClusterCertificates", "clusters", "Revoke every agent certificate of a cluster: its streams end at once; the cluster and its pipelines stay, and a new join token brings an agent back.",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("How many certificates were revoked.", s.of::<Revoked>()))]), DELETE),
        },
        "/api/v1/clusters/{name}/buffer-budget": {
            "get": answers.operation("getClusterBufferBudget", "clusters", "Read a cluster's buffer budget: bytes the buffers of all pipelines on its agent may use together, and what is asked of it.",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("The budget.", s.of::<BufferBudgetView>()))]), READ_ONE),
            "put": answers.operation("setClusterBufferBudget", "clusters", "Set a cluster's buffer budget (admin).",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], Some(json_body(s.of::<SetBufferBudget>())),
                responses(vec![("200", ok("The budget.", s.of::<BufferBudgetView>()))]), WRITE),
            "delete": answers.operation("resetClusterBufferBudget", "clusters", "Return a cluster's buffer budget to the observer's default (admin).",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("The budget.", s.of::<BufferBudgetView>()))]), READ_ONE),
        },
        "/api/v1/clusters/{name}/control-plane": {
            "get": answers.operation("getClusterControlPlane", "clusters", "Read which control-plane components the provider's central pipeline scrapes on a cluster, how, and why not.",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("The setting.", s.of::<ControlPlaneView>()))]), READ_ONE),
            "put": answers.operation("setClusterControlPlane", "clusters", "Set which control-plane components the central pipeline scrapes on a cluster, and how (admin).",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], Some(json_body(s.of::<ControlPlaneScrape>())),
                responses(vec![("200", ok("The setting.", s.of::<ControlPlaneView>()))]), WRITE),
            "delete": answers.operation("resetClusterControlPlane", "clusters", "Return a cluster's control-plane setting to the defaults (admin).",
                vec![shared.name.clone(), shared.cluster_tenant.clone()], None,
                responses(vec![("200", ok("The setting.", s.of::<ControlPlaneView>()))]), READ_ONE),
        },
    });
    into_map(paths)
}

/// Pipelines of kind `P` and their status, under `/api/v1/pipelines` (metric),
/// `/api/v1/logpipelines` or `/api/v1/tracepipelines`; operation ids name the kind
/// (`applyPipeline`, `applyLogPipeline`, `applyTracePipeline`).
fn pipeline_paths<P: PipelineKind>(
    s: &mut Schemas,
    answers: &Answers,
    shared: &Shared,
) -> Map<String, Value> {
    let kind = P::KIND;
    let base = format!("/api/v1/{}", super::pipelines::route_of::<P>());
    // `MetricPipeline` keeps its operation ids from before there were other kinds.
    let noun = kind.strip_prefix("Metric").unwrap_or(kind);
    let tag = super::pipelines::route_of::<P>();
    let pipeline = s.of::<P::Resource>();
    let pipeline_body = json!({
        "required": true,
        "description": format!("A {kind} document; `***` as an inline secret value keeps the stored value."),
        "content": { JSON: { "schema": pipeline }, YAML: { "schema": pipeline } },
    });
    let applied = s.of::<AppliedPipeline<P::Resource>>();
    let apply_responses = || {
        responses(vec![
            (
                "200",
                ok(
                    "Updated, unchanged, or (with dryRun) what would happen.",
                    applied.clone(),
                ),
            ),
            ("201", ok("Created.", applied.clone())),
        ])
    };

    let op = |verb: &str, plural: bool| format!("{verb}{noun}{}", if plural { "s" } else { "" });
    let mut paths = Map::new();
    paths.insert(base.clone(), json!({
        "post": answers.operation(&op("apply", false), tag, &format!("Create or update the {kind} named in the body; with dryRun, only validate it."),
            vec![shared.tenant_target.clone(), shared.dry_run.clone()], Some(pipeline_body.clone()), apply_responses(), WRITE),
        "get": answers.operation(&op("list", true), tag, &format!("List {kind}s; inline secrets read `***`."), vec![shared.tenant_filter.clone()], None,
            responses(vec![("200", ok("The pipelines.", s.of::<PipelineList<P::Resource>>()))]), READ),
    }));
    paths.insert(format!("{base}/{{name}}"), json!({
        "put": answers.operation(&op("put", false), tag, &format!("Create or update a {kind}; with dryRun, only validate it."),
            vec![shared.name.clone(), shared.tenant_target.clone(), shared.dry_run.clone()], Some(pipeline_body), apply_responses(), WRITE),
        "get": answers.operation(&op("get", false), tag, &format!("Read a {kind}; inline secrets read `***`."),
            vec![shared.name.clone(), shared.tenant_target.clone()], None,
            responses(vec![("200", ok("The pipeline.", s.of::<PipelineView<P::Resource>>()))]), READ_ONE),
        "delete": answers.operation(&op("delete", false), tag, &format!("Delete a {kind}; agents stop running it."),
            vec![shared.name.clone(), shared.tenant_target.clone()], None, responses(vec![("204", no_content())]), DELETE),
    }));
    paths.insert(format!("{base}/{{name}}/status"), json!({
        "get": answers.operation(&op("get", false).replace(noun, &format!("{noun}Status")), tag, &format!("Read a {kind}'s conditions and, per cluster, its live agent instances: how many report, how many are affected, and the worst."),
            vec![shared.name.clone(), shared.tenant_target.clone()], None,
            responses(vec![("200", ok("The status.", s.of::<PipelineStatusView>()))]), READ_ONE),
    }));
    paths
}

/// Pipeline templates (a tenant's and the provider's) and their instances.
fn template_paths(s: &mut Schemas, answers: &Answers, shared: &Shared) -> Map<String, Value> {
    let document_body = |schema: Value, kind: &str| {
        json!({
            "required": true,
            "description": format!("A {kind} document."),
            "content": { JSON: { "schema": schema }, YAML: { "schema": schema } },
        })
    };
    let template_body = document_body(s.of::<PipelineTemplate>(), TEMPLATE_KIND);
    let instance_body = document_body(s.of::<PipelineInstance>(), INSTANCE_KIND);
    let applied_template = s.of::<AppliedTemplate>();
    let applied_instance = s.of::<AppliedInstance>();
    let apply = |schema: &Value| {
        responses(vec![
            (
                "200",
                ok(
                    "Updated, unchanged, or (with dryRun) what would happen.",
                    schema.clone(),
                ),
            ),
            ("201", ok("Created.", schema.clone())),
        ])
    };
    let generation = query_param(
        "generation",
        "One generation instead of the latest.",
        json!({ "type": "integer", "format": "int64", "minimum": 1 }),
    );
    let cluster = query_param(
        "cluster",
        "The cluster (the tenant's name for it).",
        json!({ "type": "string" }),
    );
    let (name, target, filter, dry_run) = (
        &shared.name,
        &shared.tenant_target,
        &shared.tenant_filter,
        &shared.dry_run,
    );
    let paths = json!({
        "/api/v1/pipelinetemplates": {
            "post": answers.operation("applyPipelineTemplate", "pipelinetemplates", "Create a template or add a generation to it; every instance following it is re-rendered, or, if any would break, nothing changes (422 naming each). With dryRun, only answer.",
                vec![target.clone(), dry_run.clone()], Some(template_body.clone()), apply(&applied_template), WRITE),
            "get": answers.operation("listPipelineTemplates", "pipelinetemplates", "List the latest generation of the caller's templates and of the provider's.", vec![filter.clone()], None,
                responses(vec![("200", ok("The templates.", s.of::<TemplateList>()))]), READ),
        },
        "/api/v1/pipelinetemplates/{name}": {
            "put": answers.operation("putPipelineTemplate", "pipelinetemplates", "Create a template or add a generation to it, as POST does.",
                vec![name.clone(), target.clone(), dry_run.clone()], Some(template_body), apply(&applied_template), WRITE),
            "get": answers.operation("getPipelineTemplate", "pipelinetemplates", "Read a template (the caller's or the provider's), the latest generation or the one asked for.",
                vec![name.clone(), target.clone(), generation], None,
                responses(vec![("200", ok("The template.", s.of::<TemplateView>()))]), READ_ONE),
            "delete": answers.operation("deletePipelineTemplate", "pipelinetemplates", "Delete a template with all its generations; 409 while instances bind it, 403 for a provider template.",
                vec![name.clone(), target.clone()], None, responses(vec![("204", no_content())]), DELETE),
        },
        "/api/v1/pipelinetemplates/{name}/generations": {
            "get": answers.operation("listPipelineTemplateGenerations", "pipelinetemplates", "Every generation of a template, oldest first.",
                vec![name.clone(), target.clone()], None,
                responses(vec![("200", ok("The generations.", s.of::<TemplateList>()))]), READ_ONE),
        },
        "/api/v1/pipelinetemplates/{name}/rollback": {
            "post": answers.operation("rollbackPipelineTemplate", "pipelinetemplates", "Make an earlier generation the latest again, as a new generation, re-rendering the instances following the template (all or none). 403 for a provider template.",
                vec![name.clone(), target.clone(), dry_run.clone()], Some(json_body(s.of::<RollbackRequest>())), apply(&applied_template), WRITE),
        },
        "/api/v1/pipelineinstances": {
            "post": answers.operation("applyPipelineInstance", "pipelineinstances", "Create or update the instance named in the body; its rendered pipeline runs like any pipeline of its kind. With dryRun, only answer (the rendered pipeline included).",
                vec![target.clone(), dry_run.clone()], Some(instance_body.clone()), apply(&applied_instance), WRITE),
            "get": answers.operation("listPipelineInstances", "pipelineinstances", "List instances with the template generation each runs.", vec![filter.clone()], None,
                responses(vec![("200", ok("The instances.", s.of::<InstanceList>()))]), READ),
        },
        "/api/v1/pipelineinstances/{name}": {
            "put": answers.operation("putPipelineInstance", "pipelineinstances", "Create or update an instance, as POST does.",
                vec![name.clone(), target.clone(), dry_run.clone()], Some(instance_body), apply(&applied_instance), WRITE),
            "get": answers.operation("getPipelineInstance", "pipelineinstances", "Read an instance with its status and the template generation it runs.",
                vec![name.clone(), target.clone()], None,
                responses(vec![("200", ok("The instance.", s.of::<InstanceView>()))]), READ_ONE),
            "delete": answers.operation("deletePipelineInstance", "pipelineinstances", "Delete an instance and its pipeline; agents stop running it.",
                vec![name.clone(), target.clone()], None, responses(vec![("204", no_content())]), DELETE),
        },
        "/api/v1/pipelineinstances/{name}/render": {
            "get": answers.operation("renderPipelineInstance", "pipelineinstances", "The instance's pipeline as it runs, inline secrets `***`, and whether the cluster's labels select it.",
                vec![name.clone(), target.clone(), cluster], None,
                responses(vec![("200", ok("The rendered pipeline.", s.of::<RenderedInstance>()))]), READ_ONE),
        },
    });
    into_map(paths)
}

/// The audit trail, Cluster API namespace mappings and secrets (admin).
fn admin_paths(s: &mut Schemas, answers: &Answers) -> Map<String, Value> {
    let namespace = path_param("namespace", "The namespace in the management cluster.");
    let audit_params = vec![
        query_param(
            "tenant",
            "Only entries about this tenant.",
            json!({ "type": "string" }),
        ),
        query_param(
            "actor",
            "Only entries by this actor: `admin`, `tenant:<name>`, `agent:<cluster>`, `system`, `onboarding:<source>`.",
            json!({ "type": "string" }),
        ),
        query_param(
            "since",
            "Only entries at or after this time (Unix milliseconds).",
            json!({ "type": "integer", "format": "int64" }),
        ),
        query_param(
            "until",
            "Only entries before this time (Unix milliseconds).",
            json!({ "type": "integer", "format": "int64" }),
        ),
        query_param(
            "limit",
            "At most this many entries (default 100).",
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE }),
        ),
        query_param(
            "continue",
            "The `continue` of the previous page: the answer holds older entries.",
            json!({ "type": "string" }),
        ),
    ];
    let paths = json!({
        "/api/v1/audit": {
            "get": answers.operation("listAudit", "audit", "Read the audit trail, newest first, one page at a time (admin). An answer with older entries to come carries `continue`.",
                audit_params, None, responses(vec![("200", ok("The page.", s.of::<AuditList>()))]), READ),
        },
        "/api/v1/cluster-api/namespaces": {
            "get": answers.operation("listClusterApiNamespaces", "cluster-api", "List the Cluster API namespaces mapped to tenants (admin).", vec![], None,
                responses(vec![("200", ok("Every mapping.", s.of::<NamespaceMappingList>()))]), READ),
        },
        "/api/v1/cluster-api/namespaces/{namespace}": {
            "put": answers.operation("mapClusterApiNamespace", "cluster-api", "Map a namespace to a tenant: the Cluster API source registers its `Cluster`s for that tenant (admin). 409 if it is mapped to another tenant.",
                vec![namespace.clone()], Some(json_body(s.of::<MapNamespaceRequest>())),
                responses(vec![("200", ok("Mapped to that tenant already.", s.of::<NamespaceMappingView>())), ("201", ok("Mapped.", s.of::<NamespaceMappingView>()))]), WRITE),
            "delete": answers.operation("unmapClusterApiNamespace", "cluster-api", "Remove a namespace's mapping; clusters registered from it stay (admin).",
                vec![namespace], None, responses(vec![("204", no_content())]), DELETE),
        },
        "/api/v1/deletions/confirm": {
            "post": answers.operation("confirmDeletions", "clusters", "Confirm every cluster change the mass-deletion guard holds; each source applies them at its next pass if its evidence still holds (admin).", vec![], None,
                responses(vec![("200", ok("What was confirmed.", s.of::<ConfirmedDeletions>()))]), READ),
        },
        "/api/v1/secrets/rekey": {
            "post": answers.operation("rekeySecrets", "secrets", "Seal every stored secret again with the observer's current key (admin).", vec![], None,
                responses(vec![("200", ok("What was re-sealed, and what could not be opened.", s.of::<RekeyResult>()))]), READ),
        },
    });
    into_map(paths)
}

/// Probe endpoints.
fn probe_paths(s: &mut Schemas, answers: &Answers, shared: &Shared) -> Map<String, Value> {
    let paths = json!({
        "/api/v1/probes": {
            "post": answers.operation("applyProbeEndpoint", "probes", "Create or replace the probe endpoint named in the body.",
                vec![shared.tenant_target.clone()], Some(json_body(s.of::<ProbeEndpointRequest>())),
                responses(vec![("200", ok("Replaced or unchanged.", s.of::<ProbeEndpointView>())), ("201", ok("Created.", s.of::<ProbeEndpointView>()))]), WRITE),
            "get": answers.operation("listProbeEndpoints", "probes", "List probe endpoints.", vec![shared.tenant_filter.clone()], None,
                responses(vec![("200", ok("The probe endpoints.", s.of::<ProbeEndpointList>()))]), READ),
        },
        "/api/v1/probes/{name}": {
            "put": answers.operation("putProbeEndpoint", "probes", "Create or replace a probe endpoint.",
                vec![shared.name.clone(), shared.tenant_target.clone()], Some(json_body(s.of::<ProbeEndpointRequest>())),
                responses(vec![("200", ok("Replaced or unchanged.", s.of::<ProbeEndpointView>())), ("201", ok("Created.", s.of::<ProbeEndpointView>()))]), WRITE),
            "get": answers.operation("getProbeEndpoint", "probes", "Read a probe endpoint.",
                vec![shared.name.clone(), shared.tenant_target.clone()], None,
                responses(vec![("200", ok("The probe endpoint.", s.of::<ProbeEndpointView>()))]), READ_ONE),
            "delete": answers.operation("deleteProbeEndpoint", "probes", "Delete a probe endpoint; its probes stop.",
                vec![shared.name.clone(), shared.tenant_target.clone()], None, responses(vec![("204", no_content())]), DELETE),
        },
    });
    into_map(paths)
}

/// The derived schema of a pipeline kind describes `spec` and `status` only (the CRD
/// supplies the rest); the API reads and writes the whole document, so add the
/// Kubernetes envelope as the handlers check it.
fn add_envelope(schema: &mut Value, kind: &str) {
    let label_map = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    if let Some(properties) = schema["properties"].as_object_mut() {
        properties.insert(
            "apiVersion".into(),
            json!({ "type": "string", "enum": [API_GROUP_VERSION] }),
        );
        properties.insert("kind".into(), json!({ "type": "string", "enum": [kind] }));
        properties.insert(
            "metadata".into(),
            json!({
                "type": "object",
                "description": "Kubernetes object metadata. The observer keeps name, labels and \
                    annotations; other fields are accepted and dropped. In a PUT, name may be \
                    left out (the URL names the pipeline).",
                "properties": {
                    "name": { "type": "string", "description": "A DNS-1123 label." },
                    "labels": label_map,
                    "annotations": label_map,
                    "generation": {
                        "type": "integer", "format": "int64",
                        "description": "Set in answers; ignored in requests.",
                    },
                },
            }),
        );
    }
    schema["required"] = json!(["apiVersion", "kind", "spec"]);
    schema["additionalProperties"] = json!(false);
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": { "type": "string", "minLength": 1 },
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` points at a schema that exists.
    #[test]
    fn every_reference_resolves() {
        let document = document();
        let mut refs = Vec::new();
        collect_refs(&document, &mut refs);
        assert!(refs.len() > 10);
        for reference in refs {
            let pointer = reference.trim_start_matches('#');
            assert!(document.pointer(pointer).is_some(), "dangling {reference}");
        }
    }

    fn collect_refs(value: &Value, refs: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(r)) => refs.push(r.clone()),
                        _ => collect_refs(value, refs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn every_pipeline_kind_schema_is_there() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        for kind in ["MetricPipeline", "LogPipeline", "TracePipeline"] {
            assert!(schemas[kind].is_object(), "{kind}: {schemas:#}");
            let envelope = &schemas[kind]["properties"];
            assert_eq!(envelope["kind"]["enum"][0], kind);
            assert!(envelope["metadata"]["properties"]["name"].is_object());
            assert!(envelope["spec"]["$ref"].is_string());
        }
        assert!(schemas["ErrorBody"].is_object());
        assert!(!document.to_string().contains("$defs"));
    }

    /// Every kind has the same operations, under its own collection.
    #[test]
    fn every_pipeline_kind_has_its_routes() {
        let document = document();
        let paths = &document["paths"];
        for (base, noun) in [
            ("pipelines", "Pipeline"),
            ("logpipelines", "LogPipeline"),
            ("tracepipelines", "TracePipeline"),
        ] {
            let collection = &paths[format!("/api/v1/{base}")];
            assert_eq!(collection["post"]["operationId"], format!("apply{noun}"));
            assert_eq!(collection["get"]["operationId"], format!("list{noun}s"));
            let one = &paths[format!("/api/v1/{base}/{{name}}")];
            for (verb, method) in [("put", "put"), ("get", "get"), ("delete", "delete")] {
                assert_eq!(one[method]["operationId"], format!("{verb}{noun}"));
            }
            let status = &paths[format!("/api/v1/{base}/{{name}}/status")];
            assert_eq!(status["get"]["operationId"], format!("get{noun}Status"));
        }
    }
}
