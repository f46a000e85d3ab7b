//! The deployment artefacts, checked offline: `deploy/`, `kind-tests/`, the agent
//! install manifests the API renders, the Dockerfiles.
//!
//! - Every kustomization builds with `kubectl kustomize` (kustomize v4 or later).
//! - Every Kubernetes object of a built-in kind, in the plain manifests and in the
//!   output of every kustomization, passes `kubernetes-validate --strict` against
//!   [`KUBERNETES_VERSION`]'s schemas (unknown fields are errors, and so is a kind it
//!   has no schema for).
//! - Every `MetricPipeline` (deploy/, kind-tests/, examples/pipelines/) passes the
//!   CRD's `openAPIV3Schema` (checked here as the API server would with strict field
//!   validation: types, nullability, enums, required fields, unknown fields) and the
//!   pipeline validation the observer runs; every `AgentConfig` file parses and
//!   validates as the agent would.
//! - The workloads follow the house rules: non-root, read-only root filesystem, no
//!   privilege escalation, no capabilities, no host namespaces or hostPath volumes
//!   except the node-level pods listed in [`NODE_LEVEL_EXCEPTIONS`] (each present with
//!   the agent, in a namespace of its own at the `privileged` Pod Security level, and
//!   nothing else there); the project's own images run as uid 65532
//!   at the workspace version; their arguments are real flags of the binaries (except
//!   the ones listed in [`PENDING_OBSERVER_FLAGS`]), none repeated.
//! - RBAC is least privilege: no wildcards; the agent's rules are exactly what it reads
//!   (and TokenReview `create` for its push receivers); the agent's push ports have a
//!   NetworkPolicy admitting only the cluster's pods; the agent has no `nodes/proxy` and
//!   no cluster-wide Secret access (Roles in the allowed namespaces only, matching its
//!   `--secret-namespaces`); the observer reads
//!   Secrets only with `get`.
//! - Alertmanager's assembler (`deploy/integrations/alertmanager/files/assemble.sh`)
//!   turns the observer's generated routes into a configuration `amtool` accepts.
//! - `kind-tests/run.sh` either says in one line that it skips (no Docker engine or no
//!   kind, as on the CI machine) or passes.
//!
//! `kubernetes-validate` (PyPI), `kubectl` and `amtool` (Debian's
//! `prometheus-alertmanager`) are installed by `scripts/test.sh`; when one is missing
//! the test fails and says so, unless `KAAS_SKIP_MANIFEST_VALIDATION=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value as Json;

/// The Kubernetes version whose schemas the manifests must pass: the oldest one the
/// manifests promise to work on (kind's and the managed offerings' current range).
const KUBERNETES_VERSION: &str = "1.31";

/// Set to `1` to skip the checks that need external tools.
const SKIP_ENV: &str = "KAAS_SKIP_MANIFEST_VALIDATION";

/// `observer serve` flags the manifests use before the binary has them: the onboarding
/// and integrations work that adds them is landing. Remove a flag from this list once
/// `observer serve --help` shows it (the test then checks it like any other).
const PENDING_OBSERVER_FLAGS: &[&str] = &[];

/// `observer serve` flags that may be given more than once.
const REPEATABLE_FLAGS: &[&str] = &["--grpc-hostname", "--thanos-receive-endpoint"];

/// `cluster-agent run` flags (`cluster-agent run --help`), used when the agent binary
/// is not built beside this test (its own help is used when it is).
const AGENT_RUN_FLAGS: &[&str] = &[
    "--config",
    "--observer",
    "--observer-order",
    "--observer-ca-file",
    "--join-token-file",
    "--data-dir",
    "--buffer-budget",
    "--listen-address",
    "--otlp-grpc-listen-address",
    "--otlp-http-listen-address",
    "--zipkin-listen-address",
    "--push-token-audience",
    "--kubernetes",
    "--secret-namespaces",
    "--kubelet-insecure-skip-tls-verify",
    "--reload-check-ms",
    "--role",
    "--instance-name",
    "--pod-log-dir",
    "--journal-dir",
    "--node-certificate-issuer",
    "--node-token-file",
    "--node-service-account",
    "--gateway-service-account",
    "--drain-timeout",
];

/// Rules the agent install manifests rendered by the API (`observer/src/api/manifest.rs`)
/// do not meet yet; each must still be broken there (fixing it fails this test until
/// the entry is removed, so the list cannot go stale).
const API_MANIFEST_GAPS: &[&str] = &[];

/// Where the API's rendered manifest comes from, in failure messages.
const API_MANIFEST_SOURCE: &str = "the API's agent install manifest";

/// The node-level workloads, the one exception to the workload rules: `(namespace,
/// kind/name, what it uses of the host)`. Issue 15, finding 3: node-exporter reads the
/// host's /proc, /sys and root filesystem on the host network (it ships with the agent
/// since then); it still runs as non-root, read-only, without capabilities. Each must be
/// rendered with the agent (deploy/agent/base and the API's manifest, which the Cluster
/// API installer applies), use exactly what is listed (no stale entry), and run in a
/// namespace of its own labelled for the `privileged` Pod Security level.
///
/// Issue 16: the agent's node role (`DaemonSet/cluster-agent-node`) reads the node's
/// container logs and journal through read-only hostPath mounts and keeps its buffers
/// on a per-node host path; it shares node-exporter's namespace.
const NODE_LEVEL_EXCEPTIONS: &[(&str, &str, &[&str])] = &[
    (
        "kaas-observer-node",
        "DaemonSet/node-exporter",
        &[
            "hostNetwork",
            "hostPID",
            "hostPath /proc",
            "hostPath /sys",
            "hostPath /",
        ],
    ),
    (
        "kaas-observer-node",
        "DaemonSet/cluster-agent-node",
        &[
            "hostPath /var/lib/kaas-observer/node-agent",
            "hostPath /var/log/pods",
            "hostPath /var/log/journal",
            "hostPath /run/log/journal",
        ],
    ),
];

/// Node-level workloads that run as root, the exception to `runAsNonRoot`: the
/// kubelet's container log files and the journal are root-owned, and as their owner
/// the agent reads them without any capability (all are still dropped). Each of them
/// mounts every host path read-only but its own buffer directory.
const ROOT_EXCEPTIONS: &[(&str, &str)] = &[(
    "DaemonSet/cluster-agent-node",
    "/var/lib/kaas-observer/node-agent",
)];

/// The uid of the project's images (distroless "nonroot").
const IMAGE_UID: i64 = 65532;

/// What the node agent may read, as `(apiGroup, resource)` with get/list/watch: its
/// node's pods (issue 16), for the log records' pod metadata; no discovery.
const NODE_AGENT_RESOURCES: &[(&str, &str)] = &[("", "pods")];

/// The audience of the node agent's projected token, which the cluster-level instance
/// checks before asking the observer for the node's certificate.
const NODE_CERTIFICATE_AUDIENCE: &str = "kaas-observer-node-certificate";

/// What the cluster-agent may read, as `(apiGroup, resource)` with get/list/watch.
const AGENT_DISCOVERY_RESOURCES: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "services"),
    ("", "nodes"),
    ("", "nodes/metrics"),
    ("discovery.k8s.io", "endpointslices"),
];

/// The line `kind-tests/run.sh` prints when it cannot run here.
const KIND_SKIP_PREFIX: &str = "kind-tests skipped: ";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn skip_requested(test: &str) -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: skipped because {SKIP_ENV}=1");
    }
    skip
}

/// The tool's path, or a failure that says how to get it.
fn require_tool(name: &str, how: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: {how} (scripts/test.sh installs it), or set {SKIP_ENV}=1 \
             to skip the manifest checks"
        )
    })
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- finding the artefacts ----

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn files_under(dirs: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        walk(&repo().join(dir), &mut files);
    }
    files
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn in_dir_named(path: &Path, names: &[&str]) -> bool {
    path.components()
        .any(|c| names.iter().any(|name| c.as_os_str() == *name))
}

/// Plain manifests: YAML files that are not kustomizations, not patches (partial
/// objects, checked through the builds that apply them) and not `files/` (inputs of
/// generators and other programs' formats, checked on their own).
fn plain_manifests() -> Vec<PathBuf> {
    files_under(&["deploy", "kind-tests"])
        .into_iter()
        .filter(|path| is_yaml(path))
        .filter(|path| path.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .filter(|path| !in_dir_named(path, &["patches", "files"]))
        .collect()
}

/// Directories holding a `kustomization.yaml`, and whether it is a Component (which
/// cannot be built on its own).
fn kustomizations() -> Vec<(PathBuf, bool)> {
    files_under(&["deploy", "kind-tests"])
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read kustomization");
            let document: serde_yaml::Value =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
            let component = document["kind"].as_str() == Some("Component");
            (
                path.parent().expect("kustomization's directory").to_owned(),
                component,
            )
        })
        .collect()
}

fn documents(text: &str, source: &str) -> Vec<Json> {
    serde_yaml::Deserializer::from_str(text)
        .filter_map(|document| {
            let value = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{source}: not YAML: {e}"));
            (!value.is_null()).then(|| {
                serde_json::to_value(value)
                    .unwrap_or_else(|e| panic!("{source}: not a JSON-like document: {e}"))
            })
        })
        .collect()
}

fn kubectl_kustomize(kubectl: &Path, dir: &Path) -> String {
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        relative(dir),
        output_text(&output)
    );
    String::from_utf8(output.stdout).expect("kustomize output is UTF-8")
}

/// kubectl's embedded kustomize must understand components and `patches:` (v4+).
fn check_kustomize_version(kubectl: &Path) {
    let output = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .expect("run kubectl version");
    let version: Json = serde_json::from_slice(&output.stdout).unwrap_or(Json::Null);
    let kustomize = version["kustomizeVersion"].as_str().unwrap_or("unknown");
    let major = kustomize
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        major >= 4,
        "kubectl's kustomize is {kustomize}; deploy/ needs kustomize v4 or later (kubectl 1.21+, \
         components and `patches:`). Debian bookworm's kubernetes-client (1.20) is too old: \
         install a newer kubectl"
    );
}

/// Every object the deployment consists of, each with where it came from.
struct Objects {
    /// (source, object)
    all: Vec<(String, Json)>,
    /// Each source's text as read or built.
    texts: BTreeMap<String, String>,
}

impl Objects {
    fn collect(kubectl: &Path) -> Self {
        let mut all = Vec::new();
        let mut texts = BTreeMap::new();
        for path in plain_manifests() {
            let text = std::fs::read_to_string(&path).expect("read manifest");
            let source = relative(&path);
            all.extend(
                documents(&text, &source)
                    .into_iter()
                    .map(|d| (source.clone(), d)),
            );
            texts.insert(source, text);
        }
        for (dir, component) in kustomizations() {
            if component {
                continue;
            }
            let source = format!("kubectl kustomize {}", relative(&dir));
            let text = kubectl_kustomize(kubectl, &dir);
            all.extend(
                documents(&text, &source)
                    .into_iter()
                    .map(|d| (source.clone(), d)),
            );
            texts.insert(source, text);
        }
        let rendered = kaas_observer::api::manifest::agent_manifest(
            &kaas_observer::api::manifest::ManifestInput {
                cluster: "edge-1",
                control_endpoint: "https://observer.example:8443",
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                join_token: "kjt_example",
                secret_namespaces: &["kaas-observer".to_owned()],
                central_endpoints: &[],
            },
        )
        .expect("render the agent manifest");
        let source = API_MANIFEST_SOURCE.to_owned();
        all.extend(
            documents(&rendered, &source)
                .into_iter()
                .map(|d| (source.clone(), d)),
        );
        texts.insert(source, rendered);
        Self { all, texts }
    }

    fn built_in(&self) -> impl Iterator<Item = &(String, Json)> {
        self.all.iter().filter(|(_, o)| !is_custom_resource(o))
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a (String, Json)> + 'a {
        self.all.iter().filter(move |(_, o)| o["kind"] == kind)
    }
}

fn is_custom_resource(object: &Json) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with(&format!("{}/", kaas_pipeline::API_GROUP)))
}

fn object_name(object: &Json) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// ---- built-in kinds: kubernetes-validate ----

#[test]
fn every_kustomization_builds_and_every_object_passes_kubernetes_validate() {
    if skip_requested("kubernetes-validate") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    let validator = require_tool("kubernetes-validate", "pip install kubernetes-validate");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let built: BTreeSet<&str> = objects
        .all
        .iter()
        .filter_map(|(s, _)| s.strip_prefix("kubectl kustomize "))
        .collect();
    for expected in [
        "deploy/observer/base",
        "deploy/agent/base",
        "deploy/agent/secret-namespaces",
        "deploy/overlays/dev",
        "deploy/overlays/ha",
        "deploy/integrations",
    ] {
        assert!(built.contains(expected), "{expected} was built: {built:?}");
    }

    // The original text of each source (not re-serialized: YAML 1.1 readers such as
    // the API server's take `0440` as octal), one file per source so a failure names
    // it. Custom resources are checked against their CRD instead, so a source must not
    // mix them with built-in kinds.
    let work = tempfile::tempdir().expect("temporary directory");
    let mut files = Vec::new();
    let mut sources: Vec<&str> = objects.all.iter().map(|(s, _)| s.as_str()).collect();
    sources.dedup();
    for (i, source) in sources.iter().enumerate() {
        let kinds: Vec<bool> = objects
            .all
            .iter()
            .filter(|(s, _)| s == source)
            .map(|(_, o)| is_custom_resource(o))
            .collect();
        if kinds.iter().all(|custom| *custom) {
            continue;
        }
        assert!(
            kinds.iter().all(|custom| !custom),
            "{source} mixes custom resources with built-in kinds; keep them in separate files"
        );
        let name: String = source
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = work.path().join(format!("{i:02}-{name}.yaml"));
        std::fs::write(&path, &objects.texts[*source]).expect("write");
        files.push(path);
    }
    let output = Command::new(&validator)
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let text = output_text(&output);
    let problems: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("INFO"))
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "kubernetes-validate {KUBERNETES_VERSION} --strict found problems (files are named after \
         their source):\n{}",
        problems.join("\n")
    );
    let passed = text.lines().filter(|l| l.starts_with("INFO")).count();
    assert_eq!(
        passed,
        objects.built_in().count(),
        "every object was validated:\n{text}"
    );
}

// ---- custom resources: the CRD's schema and the pipeline validation ----

/// Checks `value` against a structural schema the way the API server does with strict
/// field validation: the keywords the generated CRD uses (type, nullable, properties,
/// additionalProperties, required, items, enum, minimum, format int32/int64,
/// x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields).
fn check_schema(schema: &Json, value: &Json, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{at}: must be an integer or a string"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(map) = value.as_object() else {
                errors.push(format!("{at}: must be an object"));
                return;
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap_or_default();
                if !map.contains_key(required) {
                    errors.push(format!("{at}: {required} is required"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Some(property) = properties.and_then(|p| p.get(key)) {
                    check_schema(property, child, &child_path, errors);
                } else if schema["additionalProperties"].is_object() {
                    check_schema(&schema["additionalProperties"], child, &child_path, errors);
                } else if schema["additionalProperties"] != true
                    && schema["x-kubernetes-preserve-unknown-fields"] != true
                {
                    errors.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_schema(&schema["items"], item, &format!("{path}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{at}: must be an array")),
        },
        Some("string") if !value.is_string() => errors.push(format!("{at}: must be a string")),
        Some("boolean") if !value.is_boolean() => errors.push(format!("{at}: must be a boolean")),
        Some("integer") => {
            if !(value.is_i64() || value.is_u64()) {
                errors.push(format!("{at}: must be an integer"));
            } else if let Some(n) = value.as_i64() {
                if schema["minimum"].as_i64().is_some_and(|min| n < min) {
                    errors.push(format!(
                        "{at}: {n} is below the minimum {}",
                        schema["minimum"]
                    ));
                }
                if schema["format"] == "int32" && i32::try_from(n).is_err() {
                    errors.push(format!("{at}: {n} does not fit int32"));
                }
            }
        }
        Some("number") if !value.is_number() => errors.push(format!("{at}: must be a number")),
        _ => {}
    }
}

/// The CRD, its group/version/kind and the version's schema.
struct Crd {
    api_version: String,
    kind: String,
    namespaced: bool,
    schema: Json,
}

fn metric_pipeline_crd() -> Crd {
    pipeline_crd(kaas_pipeline::crd::CRD_FILE_NAME)
}

/// A pipeline CRD committed under `deploy/crds/`.
fn pipeline_crd(file_name: &str) -> Crd {
    let path = repo().join("deploy/crds").join(file_name);
    let text = std::fs::read_to_string(&path).expect("read the CRD");
    let crd: Json = serde_yaml::from_str(&text).expect("the CRD is YAML");
    let version = crd["spec"]["versions"]
        .as_array()
        .and_then(|versions| {
            versions
                .iter()
                .find(|v| v["served"] == true && v["storage"] == true)
        })
        .expect("the CRD has a served storage version");
    Crd {
        api_version: format!(
            "{}/{}",
            crd["spec"]["group"].as_str().unwrap_or_default(),
            version["name"].as_str().unwrap_or_default()
        ),
        kind: crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        namespaced: crd["spec"]["scope"] == "Namespaced",
        schema: version["schema"]["openAPIV3Schema"].clone(),
    }
}

/// Errors of one custom resource against the CRD: the envelope the API server checks
/// itself (apiVersion, kind, metadata.name, scope), then the schema for the rest.
fn check_custom_resource(crd: &Crd, object: &Json) -> Vec<String> {
    let mut errors = Vec::new();
    if object["apiVersion"] != crd.api_version.as_str() {
        errors.push(format!(
            "apiVersion: {} is not served (the CRD serves {})",
            object["apiVersion"], crd.api_version
        ));
    }
    if object["kind"] != crd.kind.as_str() {
        errors.push(format!("kind: {} is not {}", object["kind"], crd.kind));
    }
    let metadata = &object["metadata"];
    if !metadata["name"].is_string() {
        errors.push("metadata.name: required".to_owned());
    }
    if !crd.namespaced && !metadata["namespace"].is_null() {
        errors.push("metadata.namespace: the resource is cluster-scoped".to_owned());
    }
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        for envelope in ["apiVersion", "kind", "metadata"] {
            map.remove(envelope);
        }
    }
    check_schema(&crd.schema, &body, "", &mut errors);
    errors
}

/// Every MetricPipeline document in the repository's deployment and example files.
fn metric_pipeline_documents() -> Vec<(String, Json)> {
    pipeline_documents("MetricPipeline")
}

/// Every pipeline document of `kind` in the repository's deployment and example files.
fn pipeline_documents(kind: &str) -> Vec<(String, Json)> {
    let mut found = Vec::new();
    let mut files = files_under(&["deploy", "kind-tests", "examples/pipelines"]);
    files.retain(|path| is_yaml(path) && !path.starts_with(repo().join("deploy/crds")));
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let source = relative(&path);
        for document in documents(&text, &source) {
            if document["kind"] == kind {
                found.push((source.clone(), document));
            }
        }
    }
    found
}

#[test]
fn schema_check_refuses_what_the_api_server_would() {
    let crd = metric_pipeline_crd();
    let good: Json = serde_json::json!({
        "apiVersion": crd.api_version,
        "kind": "MetricPipeline",
        "metadata": {"name": "p"},
        "spec": {
            "input": {"prometheus": {"enabled": true}},
            "output": {"prometheusRemoteWrite": {"url": "http://r:9090/api/v1/write"}},
            "buffer": {"maxBytes": "1Gi"},
        },
    });
    assert_eq!(check_custom_resource(&crd, &good), Vec::<String>::new());

    let mut bad = good.clone();
    bad["metadata"]["namespace"] = "shop".into();
    bad["spec"]["output"]["prometheusRemoteWrite"]["urll"] = "x".into();
    bad["spec"]["input"]["prometheus"]["enabled"] = "yes".into();
    bad["spec"]["buffer"]["whenFull"] = "dropAll".into();
    bad["spec"]["buffer"]["maxBytes"] = serde_json::json!([1]);
    let errors = check_custom_resource(&crd, &bad);
    for expected in [
        "metadata.namespace: the resource is cluster-scoped",
        "spec.output.prometheusRemoteWrite.urll: unknown field",
        "spec.input.prometheus.enabled: must be a boolean",
        "spec.buffer.whenFull: \"dropAll\" is not one of",
        "spec.buffer.maxBytes: must be an integer or a string",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected:?} in {errors:#?}"
        );
    }
}

#[test]
fn metric_pipelines_pass_the_crd_schema_and_the_pipeline_validation() {
    let crd = metric_pipeline_crd();
    let pipelines = metric_pipeline_documents();
    let sources: BTreeSet<&str> = pipelines.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        sources.iter().any(|s| s.starts_with("kind-tests/"))
            && sources.iter().any(|s| s.starts_with("examples/pipelines/")),
        "pipelines were found in kind-tests/ and examples/pipelines/: {sources:?}"
    );
    let failures = schema_and_validation_failures(&crd, &pipelines);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every problem of `pipelines` against `crd`'s schema and the pipeline validation the
/// observer runs (as tenant pipelines it distributes, under its default policy), each
/// document by its kind.
fn schema_and_validation_failures(crd: &Crd, pipelines: &[(String, Json)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (source, object) in pipelines {
        let name = object_name(object);
        for error in check_custom_resource(crd, object) {
            failures.push(format!("{source}: {name}: CRD schema: {error}"));
        }
        let value: serde_yaml::Value = serde_json::from_value(object.clone()).expect("YAML value");
        let document = kaas_pipeline::document::parse_any_value(
            source.clone(),
            value,
            &kaas_pipeline::ValidationContext::tenant_default(),
        );
        if let Err(errors) = document.outcome {
            failures.push(format!("{source}: {name}: pipeline validation: {errors}"));
        }
    }
    failures
}

/// Issue 17: the TracePipeline examples pass the TracePipeline CRD's schema as the API
/// server would check them, and the validation the observer runs.
#[test]
fn trace_pipelines_pass_the_crd_schema_and_the_pipeline_validation() {
    let crd = pipeline_crd(kaas_pipeline::crd::TRACE_CRD_FILE_NAME);
    assert_eq!(crd.kind, "TracePipeline");
    let pipelines = pipeline_documents("TracePipeline");
    let examples = pipelines
        .iter()
        .filter(|(s, _)| s.starts_with("examples/pipelines/trace-"))
        .count();
    assert!(
        examples >= 2,
        "a TracePipeline example per OTLP transport: {pipelines:?}"
    );
    let failures = schema_and_validation_failures(&crd, &pipelines);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 16: the LogPipeline examples pass the LogPipeline CRD's schema as the API
/// server would check them, and the validation the observer runs.
#[test]
fn log_pipelines_pass_the_crd_schema_and_the_pipeline_validation() {
    let crd = pipeline_crd(kaas_pipeline::crd::LOG_CRD_FILE_NAME);
    assert_eq!(crd.kind, "LogPipeline");
    let pipelines = pipeline_documents("LogPipeline");
    let examples = pipelines
        .iter()
        .filter(|(s, _)| s.starts_with("examples/pipelines/"))
        .count();
    assert!(
        examples >= 3,
        "a LogPipeline example per output: {pipelines:?}"
    );
    let failures = schema_and_validation_failures(&crd, &pipelines);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn agent_configuration_files_validate_as_the_agent_would() {
    let mut checked = 0;
    for path in files_under(&["deploy", "kind-tests"]) {
        if !is_yaml(&path) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let is_agent_config = documents(&text, &relative(&path))
            .first()
            .is_some_and(|d| d["kind"] == "AgentConfig");
        if !is_agent_config {
            continue;
        }
        // These are standalone agents' own files (the management agent).
        if let Err(error) = kaas_pipeline::agent_config::AgentConfig::parse(
            &text,
            &kaas_pipeline::ValidationContext::standalone(),
        ) {
            panic!("{}: {error}", relative(&path));
        }
        checked += 1;
    }
    assert!(
        checked >= 1,
        "the management agent's configuration was checked"
    );
}

// ---- house rules for workloads ----

/// `(source, object, pod spec)` for every workload.
fn pod_specs(objects: &Objects) -> Vec<(String, String, Json)> {
    objects
        .built_in()
        .filter_map(|(source, object)| {
            let spec = match object["kind"].as_str()? {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                    object["spec"]["template"]["spec"].clone()
                }
                "Pod" => object["spec"].clone(),
                _ => return None,
            };
            Some((source.clone(), object_name(object), spec))
        })
        .collect()
}

fn containers(pod: &Json) -> Vec<&Json> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| pod[*key].as_array().into_iter().flatten())
        .collect()
}

/// `--flag` names in a container's args (the part before `=`).
fn flags(container: &Json) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .filter(|arg| arg.starts_with("--"))
        .map(|arg| arg.split('=').next().unwrap_or(arg).to_owned())
        .collect()
}

/// The flags a `--help` output documents: the `--name` that opens an option line.
fn help_flags(program: &Path, args: &[&str]) -> BTreeSet<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", program.display()));
    assert!(output.status.success(), "{}", output_text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            // `-c, --config <FILE>` or `--data-dir <DIR>`
            let line = line
                .strip_prefix('-')
                .filter(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
                .and_then(|rest| rest.split_once(", "))
                .map_or(line, |(_, long)| long);
            let name: String = line
                .strip_prefix("--")?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

fn observer_serve_flags() -> BTreeSet<String> {
    help_flags(
        Path::new(env!("CARGO_BIN_EXE_observer")),
        &["serve", "--help"],
    )
}

fn observer_gateway_flags() -> BTreeSet<String> {
    help_flags(
        Path::new(env!("CARGO_BIN_EXE_observer")),
        &["gateway", "--help"],
    )
}

/// The agent's flags: from its binary when it is built beside this test (the workspace
/// build, as in CI), else from [`AGENT_RUN_FLAGS`].
fn agent_run_flags() -> BTreeSet<String> {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("cluster-agent")))
        .filter(|path| path.is_file());
    match binary {
        Some(binary) => help_flags(&binary, &["run", "--help"]),
        None => AGENT_RUN_FLAGS.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[test]
fn workloads_run_unprivileged_and_our_images_get_real_flags() {
    if skip_requested("workload rules") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let observer_flags = observer_serve_flags();
    let gateway_flags = observer_gateway_flags();
    let agent_flags = agent_run_flags();
    let version = env!("CARGO_PKG_VERSION");
    let mut failures = Vec::new();
    let mut ours = 0;
    for (source, name, pod) in pod_specs(&objects) {
        let pod_security = &pod["securityContext"];
        let host = host_access(&pod);
        if !host.is_empty() {
            let allowed = NODE_LEVEL_EXCEPTIONS
                .iter()
                .find(|(_, workload, _)| *workload == name)
                .map(|(_, _, uses)| *uses);
            if allowed.is_none_or(|uses| host != uses) {
                failures.push(format!(
                    "{source}: {name}: uses the host ({}) and is not a node-level exception \
                     with exactly that (NODE_LEVEL_EXCEPTIONS)",
                    host.join(", ")
                ));
            }
        }
        let root = ROOT_EXCEPTIONS
            .iter()
            .find(|(workload, _)| *workload == name)
            .map(|(_, writable)| *writable);
        if let Some(writable) = root {
            failures.extend(
                writable_host_paths(&pod, writable).into_iter().map(|path| {
                    format!("{source}: {name}: runs as root and mounts {path} writable")
                }),
            );
        }
        for container in containers(&pod) {
            let cname = container["name"].as_str().unwrap_or("?");
            let at = format!("{source}: {name}: container {cname}");
            let security = &container["securityContext"];
            let run_as_non_root = security["runAsNonRoot"]
                .as_bool()
                .or(pod_security["runAsNonRoot"].as_bool());
            if run_as_non_root != Some(true) && root.is_none() {
                failures.push(format!("{at}: runAsNonRoot is not true"));
            }
            if security["allowPrivilegeEscalation"] != false {
                failures.push(format!("{at}: allowPrivilegeEscalation is not false"));
            }
            if security["readOnlyRootFilesystem"] != true {
                failures.push(format!("{at}: readOnlyRootFilesystem is not true"));
            }
            if security["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
                failures.push(format!("{at}: capabilities are not dropped (drop: [ALL])"));
            }
            let seccomp = security["seccompProfile"]["type"]
                .as_str()
                .or(pod_security["seccompProfile"]["type"].as_str());
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                failures.push(format!("{at}: no seccompProfile RuntimeDefault"));
            }
            let image = container["image"].as_str().unwrap_or_default();
            let Some((repository, tag)) = image
                .strip_prefix("kaas-observer/")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            ours += 1;
            if tag != version {
                failures.push(format!("{at}: image {image} is not at version {version}"));
            }
            let uid = security["runAsUser"]
                .as_i64()
                .or(pod_security["runAsUser"].as_i64());
            let expected_uid = if root.is_some() { 0 } else { IMAGE_UID };
            if uid != Some(expected_uid) {
                failures.push(format!(
                    "{at}: runAsUser is {uid:?}, expected {expected_uid}"
                ));
            }
            let used = flags(container);
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .collect();
            let (known, subcommand, pending): (&BTreeSet<String>, &str, &[&str]) = match repository
            {
                // The receive gateway is a mode of the observer binary.
                "observer" if args.first() == Some(&"gateway") => (&gateway_flags, "gateway", &[]),
                "observer" => (&observer_flags, "serve", PENDING_OBSERVER_FLAGS),
                "cluster-agent" => (&agent_flags, "run", &[]),
                other => {
                    failures.push(format!("{at}: unknown image kaas-observer/{other}"));
                    continue;
                }
            };
            if args.first() != Some(&subcommand) {
                failures.push(format!(
                    "{at}: args start with {:?}, not {subcommand}",
                    args.first()
                ));
            }
            let mut seen = BTreeSet::new();
            for flag in &used {
                if !known.contains(flag) && !pending.contains(&flag.as_str()) {
                    failures.push(format!(
                        "{at}: {flag} is not a flag of `{repository} {subcommand}`"
                    ));
                }
                if !seen.insert(flag) && !REPEATABLE_FLAGS.contains(&flag.as_str()) {
                    failures.push(format!(
                        "{at}: {flag} is given twice (the binary refuses that)"
                    ));
                }
            }
        }
    }
    assert!(
        ours >= 4,
        "the observer and agent workloads were found ({ours})"
    );
    for gap in API_MANIFEST_GAPS {
        let before = failures.len();
        failures.retain(|f| !(f.starts_with(API_MANIFEST_SOURCE) && f.ends_with(gap)));
        assert!(
            failures.len() < before,
            "{API_MANIFEST_SOURCE} meets {gap:?} now: remove it from API_MANIFEST_GAPS"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The host paths a pod mounts writable, but `allowed`.
fn writable_host_paths(pod: &Json, allowed: &str) -> Vec<String> {
    let host: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    let mut writable = Vec::new();
    for container in containers(pod) {
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let path = mount["name"].as_str().and_then(|n| host.get(n));
            if let Some(path) = path.filter(|p| **p != allowed)
                && mount["readOnly"] != true
            {
                writable.push((*path).to_owned());
            }
        }
    }
    writable
}

/// What a pod spec uses of its node: host namespaces, privileged containers and
/// hostPath volumes, in a fixed order.
fn host_access(pod: &Json) -> Vec<String> {
    let mut uses = Vec::new();
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[key] == true {
            uses.push(key.to_owned());
        }
    }
    for container in containers(pod) {
        if container["securityContext"]["privileged"] == true {
            uses.push(format!(
                "privileged container {}",
                container["name"].as_str().unwrap_or("?")
            ));
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        if let Some(path) = volume["hostPath"]["path"].as_str() {
            uses.push(format!("hostPath {path}"));
        }
    }
    uses
}

/// Issue 15, finding 3: node-exporter ships with the agent in every variant, as the one
/// listed node-level exception, alone in a namespace at the `privileged` Pod Security
/// level; every other namespace of the agent stays `restricted`.
#[test]
fn node_level_pods_are_listed_exceptions_in_a_privileged_namespace_of_their_own() {
    if skip_requested("node-level exceptions") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let mut failures = Vec::new();
    let level = |namespace: &Json| {
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for source in ["kubectl kustomize deploy/agent/base", API_MANIFEST_SOURCE] {
        let in_source: Vec<&Json> = objects
            .all
            .iter()
            .filter(|(s, _)| s == source)
            .map(|(_, o)| o)
            .collect();
        for (namespace, workload, uses) in NODE_LEVEL_EXCEPTIONS {
            let Some(object) = in_source.iter().find(|o| object_name(o) == *workload) else {
                failures.push(format!("{source}: {workload} is missing"));
                continue;
            };
            if object["metadata"]["namespace"] != *namespace {
                failures.push(format!("{source}: {workload} is not in {namespace}"));
            }
            let pod = &object["spec"]["template"]["spec"];
            if host_access(pod) != *uses {
                failures.push(format!(
                    "{source}: {workload} uses {:?}, listed {uses:?}",
                    host_access(pod)
                ));
            }
            let namespaced_here: Vec<String> = in_source
                .iter()
                .filter(|o| o["metadata"]["namespace"] == *namespace)
                .filter(|o| {
                    matches!(
                        o["kind"].as_str(),
                        Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "Pod")
                    )
                })
                .map(|o| object_name(o))
                .collect();
            let listed: Vec<&str> = NODE_LEVEL_EXCEPTIONS
                .iter()
                .filter(|(n, _, _)| n == namespace)
                .map(|(_, w, _)| *w)
                .collect();
            if let Some(stranger) = namespaced_here
                .iter()
                .find(|w| !listed.contains(&w.as_str()))
            {
                failures.push(format!(
                    "{source}: {namespace} holds {stranger}; only {listed:?} may run there"
                ));
            }
        }
        for namespace in in_source.iter().filter(|o| o["kind"] == "Namespace") {
            let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
            let node_level = NODE_LEVEL_EXCEPTIONS.iter().any(|(n, _, _)| *n == name);
            let expected = if node_level {
                "privileged"
            } else {
                "restricted"
            };
            if level(namespace) != expected {
                failures.push(format!(
                    "{source}: namespace {name} enforces {:?}, not {expected}",
                    level(namespace)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pending_observer_flags_are_not_real_flags_yet() {
    // Once `observer serve` has a pending flag, it belongs with the checked ones.
    let real = observer_serve_flags();
    let landed: Vec<&&str> = PENDING_OBSERVER_FLAGS
        .iter()
        .filter(|flag| real.contains(**flag))
        .collect();
    assert!(
        landed.is_empty(),
        "`observer serve` now has {landed:?}: remove them from PENDING_OBSERVER_FLAGS in this file \
         so the manifests' use of them is checked"
    );
}

// ---- RBAC ----

/// `(apiGroup, resource) -> verbs` granted by a role's rules.
fn grants(role: &Json) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .map(str::to_owned)
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                grants
                    .entry((group.clone(), resource))
                    .or_default()
                    .extend(strings("verbs"));
            }
        }
    }
    grants
}

fn read_only() -> BTreeSet<String> {
    ["get", "list", "watch"].map(str::to_owned).into()
}

#[test]
fn rbac_grants_only_what_each_program_reads() {
    if skip_requested("RBAC") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let mut failures = Vec::new();
    for kind in ["ClusterRole", "Role"] {
        for (source, role) in objects.of_kind(kind) {
            for rule in role["rules"].as_array().into_iter().flatten() {
                let text = rule.to_string();
                if text.contains("\"*\"") {
                    failures.push(format!(
                        "{source}: {}: a wildcard in {text}",
                        object_name(role)
                    ));
                }
            }
        }
    }
    let role = |source_prefix: &str, name: &str| -> Option<Json> {
        objects
            .of_kind("ClusterRole")
            .find(|(s, r)| s.starts_with(source_prefix) && r["metadata"]["name"] == name)
            .map(|(_, r)| r.clone())
    };

    // The agent: discovery, read-only, exactly.
    let expected: BTreeMap<(String, String), BTreeSet<String>> = AGENT_DISCOVERY_RESOURCES
        .iter()
        .map(|(g, r)| (((*g).to_owned(), (*r).to_owned()), read_only()))
        .collect();
    let agent = role("kubectl kustomize deploy/agent/base", "cluster-agent")
        .expect("deploy/agent/base has the ClusterRole cluster-agent");
    assert_eq!(grants(&agent), expected, "the agent's discovery rules");
    // Issue 15, finding 3: the API server's /metrics (and the control-plane components
    // that authorize through it) with the agent's token; no other non-resource URL.
    let non_resource: Vec<(Json, Json)> = agent["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| rule.get("nonResourceURLs").is_some())
        .map(|rule| (rule["nonResourceURLs"].clone(), rule["verbs"].clone()))
        .collect();
    assert_eq!(
        non_resource,
        [(serde_json::json!(["/metrics"]), serde_json::json!(["get"]))],
        "the agent's non-resource URLs"
    );
    // The push receivers check service-account tokens, and may do nothing else; in
    // deploy/ and in what the API renders.
    for source in ["kubectl kustomize deploy/agent/base", API_MANIFEST_SOURCE] {
        let token_review = role(source, "cluster-agent-token-review")
            .unwrap_or_else(|| panic!("{source} has the ClusterRole cluster-agent-token-review"));
        assert_eq!(
            grants(&token_review),
            BTreeMap::from([(
                (
                    "authentication.k8s.io".to_owned(),
                    "tokenreviews".to_owned()
                ),
                ["create".to_owned()].into()
            )]),
            "{source}: the push receivers' TokenReview rule"
        );
    }
    // Issue 13, finding 9: Secrets only through Roles in the namespaces the agent's
    // --secret-namespaces lists, never cluster-wide; in deploy/ and in what the API
    // renders.
    for source in [
        "kubectl kustomize deploy/agent/base",
        "kubectl kustomize deploy/agent/secret-namespaces",
        API_MANIFEST_SOURCE,
    ] {
        for (_, cluster_role) in objects.of_kind("ClusterRole").filter(|(s, _)| s == source) {
            if grants(cluster_role).keys().any(|(_, r)| r == "secrets") {
                failures.push(format!(
                    "{source}: {} grants Secrets cluster-wide",
                    object_name(cluster_role)
                ));
            }
            if grants(cluster_role).keys().any(|(_, r)| r == "configmaps") {
                failures.push(format!(
                    "{source}: {} grants ConfigMaps cluster-wide",
                    object_name(cluster_role)
                ));
            }
        }
        let mut role_namespaces = BTreeSet::new();
        for (_, role) in objects.of_kind("Role").filter(|(s, _)| s == source) {
            assert_eq!(
                grants(role),
                secrets_and_config_maps(),
                "{source}: {}",
                object_name(role)
            );
            role_namespaces.insert(role["metadata"]["namespace"].as_str().unwrap_or_default());
        }
        let bound: BTreeSet<&str> = objects
            .of_kind("RoleBinding")
            .filter(|(s, _)| s == source)
            .filter_map(|(_, b)| b["metadata"]["namespace"].as_str())
            .collect();
        let deployment = objects
            .all
            .iter()
            .find(|(s, o)| {
                s == source && o["kind"] == "Deployment" && o["metadata"]["name"] == "cluster-agent"
            })
            .map(|(_, o)| o)
            .unwrap_or_else(|| panic!("{source} has the agent's Deployment"));
        let flag = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .find_map(|a| a.strip_prefix("--secret-namespaces="))
            .unwrap_or_else(|| panic!("{source}: the agent has --secret-namespaces"));
        let listed: BTreeSet<&str> = flag.split(',').filter(|n| !n.is_empty()).collect();
        assert_eq!(
            role_namespaces, listed,
            "{source}: Roles and the agent's flag"
        );
        assert_eq!(bound, listed, "{source}: RoleBindings and the agent's flag");
    }

    // Issue 16: the node agent reads its node's pods and nothing else cluster-wide
    // (never the cluster-level instance's discovery role, never TokenReviews: it
    // checks no tokens), its Secrets through the allowed namespaces' Roles; in deploy/
    // and in what the API renders.
    let node_expected: BTreeMap<(String, String), BTreeSet<String>> = NODE_AGENT_RESOURCES
        .iter()
        .map(|(g, r)| (((*g).to_owned(), (*r).to_owned()), read_only()))
        .collect();
    for source in ["kubectl kustomize deploy/agent/base", API_MANIFEST_SOURCE] {
        failures.extend(node_agent_rbac_failures(&objects, source, &node_expected));
    }

    // The observer: Cluster API clusters, and Secrets by name only.
    for overlay in ["deploy/overlays/dev", "deploy/overlays/ha"] {
        let observer = role(
            &format!("kubectl kustomize {overlay}"),
            "kaas-observer-cluster-api",
        )
        .unwrap_or_else(|| panic!("{overlay} has the ClusterRole kaas-observer-cluster-api"));
        assert_eq!(
            grants(&observer),
            BTreeMap::from([
                (
                    ("cluster.x-k8s.io".to_owned(), "clusters".to_owned()),
                    ["get", "list", "watch", "patch"].map(str::to_owned).into()
                ),
                (
                    ("".to_owned(), "secrets".to_owned()),
                    ["get".to_owned()].into()
                ),
            ]),
            "{overlay}: the observer's Cluster API rules"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What an agent's Role grants in each namespace it may read keys in: Secrets
/// (`secretKeyRef`) and ConfigMaps (template instances' `configMapKeyRef`), read only.
fn secrets_and_config_maps() -> BTreeMap<(String, String), BTreeSet<String>> {
    BTreeMap::from([
        (("".to_owned(), "secrets".to_owned()), read_only()),
        (("".to_owned(), "configmaps".to_owned()), read_only()),
    ])
}

/// What is wrong with the node agent's RBAC in `source` (see the caller).
fn node_agent_rbac_failures(
    objects: &Objects,
    source: &str,
    expected: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let in_source = |kind: &'static str| {
        objects
            .of_kind(kind)
            .filter(move |(s, _)| s == source)
            .map(|(_, o)| o)
    };
    let is_node_agent = |subject: &Json| {
        subject["kind"] == "ServiceAccount"
            && subject["name"] == "cluster-agent-node"
            && subject["namespace"] == "kaas-observer-node"
    };
    let subjects = |binding: &Json| -> Vec<Json> {
        binding["subjects"].as_array().cloned().unwrap_or_default()
    };
    let cluster_roles: Vec<String> = in_source("ClusterRoleBinding")
        .filter(|b| subjects(b).iter().any(is_node_agent))
        .map(|b| b["roleRef"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    if cluster_roles != ["cluster-agent-node"] {
        failures.push(format!(
            "{source}: the node agent is bound to the ClusterRoles {cluster_roles:?}, not exactly cluster-agent-node"
        ));
    }
    match in_source("ClusterRole").find(|r| r["metadata"]["name"] == "cluster-agent-node") {
        Some(role) if grants(role) == *expected && role.get("aggregationRule").is_none() => {}
        Some(role) => failures.push(format!(
            "{source}: ClusterRole cluster-agent-node grants {:?}, not {expected:?}",
            grants(role)
        )),
        None => failures.push(format!("{source}: no ClusterRole cluster-agent-node")),
    }
    let secret_namespaces: BTreeSet<String> = in_source("RoleBinding")
        .filter(|b| subjects(b).iter().any(is_node_agent))
        .filter(|b| b["roleRef"]["name"] == "cluster-agent-secrets")
        .filter_map(|b| b["metadata"]["namespace"].as_str().map(str::to_owned))
        .collect();
    let Some(daemon_set) =
        in_source("DaemonSet").find(|d| d["metadata"]["name"] == "cluster-agent-node")
    else {
        failures.push(format!("{source}: no DaemonSet cluster-agent-node"));
        return failures;
    };
    let pod = &daemon_set["spec"]["template"]["spec"];
    let args = flags_with_values(&pod["containers"][0]);
    let listed: BTreeSet<String> = args
        .iter()
        .find_map(|a| a.strip_prefix("--secret-namespaces="))
        .map(|list| {
            list.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if secret_namespaces != listed {
        failures.push(format!(
            "{source}: the node agent's Secret RoleBindings {secret_namespaces:?} are not its --secret-namespaces {listed:?}"
        ));
    }
    // No join token: the first certificate comes from the cluster-level instance, with
    // a projected token for the one audience it checks.
    if args.iter().any(|a| a.starts_with("--join-token-file")) {
        failures.push(format!("{source}: the node agent still takes a join token"));
    }
    if pod["volumes"].to_string().contains("secretName") {
        failures.push(format!("{source}: the node agent mounts a Secret"));
    }
    let audiences: Vec<&str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["projected"]["sources"].as_array().into_iter().flatten())
        .filter_map(|s| s["serviceAccountToken"]["audience"].as_str())
        .collect();
    if audiences != [NODE_CERTIFICATE_AUDIENCE] {
        failures.push(format!(
            "{source}: the node agent's projected token audiences are {audiences:?}, not [{NODE_CERTIFICATE_AUDIENCE}]"
        ));
    }
    failures
}

/// A container's arguments as written (`--flag=value`).
fn flags_with_values(container: &Json) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_agent_base_matches_the_manifests_the_api_renders() {
    if skip_requested("agent manifests") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let from = |source: &str, kind: &str| -> Json {
        objects
            .all
            .iter()
            .find(|(s, o)| {
                s == source
                    && o["kind"] == kind
                    && o["metadata"]["name"]
                        == if kind == "Namespace" {
                            "kaas-observer"
                        } else {
                            "cluster-agent"
                        }
            })
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("{source} has a {kind}"))
    };
    let api = API_MANIFEST_SOURCE;
    let base = "kubectl kustomize deploy/agent/base";
    for kind in ["Namespace", "ServiceAccount", "Deployment"] {
        let (a, b) = (from(api, kind), from(base, kind));
        assert_eq!(
            (&a["metadata"]["name"], &a["metadata"]["namespace"]),
            (&b["metadata"]["name"], &b["metadata"]["namespace"]),
            "{kind}: deploy/agent/base and the API's manifest name the same object"
        );
    }
    let container =
        |deployment: &Json| deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let (api_container, base_container) = (
        container(&from(api, "Deployment")),
        container(&from(base, "Deployment")),
    );
    assert_eq!(api_container["image"], base_container["image"]);
    let api_flags: BTreeSet<String> = flags(&api_container).into_iter().collect();
    let base_flags: BTreeSet<String> = flags(&base_container).into_iter().collect();
    assert!(
        api_flags.is_subset(&base_flags),
        "deploy/agent/base passes every flag the API's manifest does: {api_flags:?} vs {base_flags:?}"
    );
    let secret_name = |deployment: &Json| {
        deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
    };
    assert_eq!(
        secret_name(&from(api, "Deployment")),
        secret_name(&from(base, "Deployment")),
        "the join Secret has the same name"
    );
}

/// Issue 13, finding 4: both agent variants carry a NetworkPolicy that admits only
/// the cluster's own pods, and only on the agent's ports (the push receivers, its
/// endpoints and OTLP/gRPC), so nothing outside the cluster reaches the push ports.
#[test]
fn the_agent_push_ports_have_a_network_policy() {
    if skip_requested("NetworkPolicy") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let gateway = "kubectl kustomize deploy/agent/gateway";
    for (source, kind, name) in [
        (
            "kubectl kustomize deploy/agent/base",
            "Deployment",
            "cluster-agent",
        ),
        (
            "kubectl kustomize deploy/agent/secret-namespaces",
            "Deployment",
            "cluster-agent",
        ),
        (API_MANIFEST_SOURCE, "Deployment", "cluster-agent"),
        (gateway, "Deployment", "cluster-agent"),
        // Issue 17: the gateway replicas take the same pushes.
        (gateway, "StatefulSet", "cluster-agent-gateway"),
    ] {
        let variant = &format!("{source} {kind}/{name}");
        let deployment = objects
            .of_kind(kind)
            .find(|(s, o)| *s == source && o["metadata"]["name"] == name)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("{variant}: no such workload"));
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let container_ports: BTreeSet<i64> = containers(&deployment["spec"]["template"]["spec"])
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["containerPort"].as_i64())
            .collect();
        // kube-state-metrics has its own policy (only the agent scrapes it).
        let policies: Vec<&Json> = objects
            .of_kind("NetworkPolicy")
            .filter(|(s, o)| *s == source && o["metadata"]["name"] == name)
            .map(|(_, o)| o)
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "{variant}: one NetworkPolicy for the agent"
        );
        let policy = &policies[0]["spec"];
        assert_eq!(
            policies[0]["metadata"]["namespace"],
            deployment["metadata"]["namespace"]
        );
        for (key, value) in policy["podSelector"]["matchLabels"]
            .as_object()
            .expect("the policy selects pods by label")
        {
            assert_eq!(
                &pod_labels[key], value,
                "{variant}: the policy selects the agent's pods"
            );
        }
        assert_eq!(policy["policyTypes"], serde_json::json!(["Ingress"]));
        let mut ports = BTreeSet::new();
        for rule in policy["ingress"].as_array().expect("ingress rules") {
            for peer in rule["from"].as_array().expect("every rule names its peers") {
                assert!(
                    peer.get("ipBlock").is_none(),
                    "{variant}: no address outside the cluster is admitted: {peer}"
                );
                assert!(
                    peer.get("namespaceSelector").is_some() || peer.get("podSelector").is_some()
                );
            }
            for port in rule["ports"]
                .as_array()
                .expect("every rule names its ports")
            {
                assert_eq!(port["protocol"], "TCP");
                ports.insert(port["port"].as_i64().expect("a numeric port"));
            }
        }
        assert_eq!(
            ports, container_ports,
            "{variant}: exactly the agent's ports"
        );
    }
}

/// Issue 15, finding 2: Thanos receive accepts writes only from the receive gateway,
/// the observer and the management agent (on 552c13e the agents wrote to it directly,
/// with a tenant header of their own choosing), and the gateway runs scaled out, holding
/// the observer's CA certificates but never its key.
#[test]
fn thanos_receive_accepts_writes_only_from_the_gateway_and_the_providers_writers() {
    if skip_requested("receive gateway") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let source = "kubectl kustomize deploy/integrations";
    let find = |kind: &str, name: &str| {
        objects
            .of_kind(kind)
            .find(|(s, o)| *s == source && o["metadata"]["name"] == name)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| panic!("{source} has the {kind} {name}"))
    };
    let policy = find("NetworkPolicy", "thanos-receive");
    let writers = BTreeSet::from([
        "kaas-receive-gateway",
        "kaas-observer",
        "kaas-management-agent",
    ]);
    let mut admitted = BTreeSet::new();
    for rule in policy["spec"]["ingress"].as_array().expect("ingress rules") {
        let ports: Vec<&Json> = rule["ports"].as_array().expect("ports").iter().collect();
        if !ports
            .iter()
            .any(|p| p["port"] == "remote-write" || p["port"] == 19291)
        {
            continue;
        }
        for peer in rule["from"]
            .as_array()
            .expect("a write rule names its peers")
        {
            assert!(
                peer.get("ipBlock").is_none() && peer.get("namespaceSelector").is_none(),
                "only pods of the namespace may write: {peer}"
            );
            let name = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap_or_else(|| panic!("a writer is selected by name: {peer}"));
            admitted.insert(name.to_owned());
        }
    }
    assert_eq!(admitted, writers.iter().map(|w| (*w).to_owned()).collect());

    let gateway = find("Deployment", "kaas-receive-gateway");
    assert!(
        gateway["spec"]["replicas"].as_i64() >= Some(2),
        "scaled out"
    );
    let pod = &gateway["spec"]["template"]["spec"];
    for volume in pod["volumes"].as_array().expect("volumes") {
        if volume["secret"]["secretName"] == "kaas-observer-ca" {
            let keys: BTreeSet<&str> = volume["secret"]["items"]
                .as_array()
                .expect("the CA Secret's items are listed")
                .iter()
                .filter_map(|item| item["key"].as_str())
                .collect();
            assert_eq!(keys, BTreeSet::from(["ca.crt", "ca-previous.crt"]));
        }
    }
    let args = flags(containers(pod)[0]);
    assert!(args.contains(&"--client-ca-dir".to_owned()), "{args:?}");
}

// ---- Alertmanager's assembler ----

#[test]
fn alertmanager_assembler_merges_the_generated_routes_into_a_valid_configuration() {
    if skip_requested("alertmanager assembler") {
        return;
    }
    require_tool("amtool", "apt-get install prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("temporary directory");
    let routes = dir.path().join("routes.yaml");
    let config = dir.path().join("alertmanager.yml");
    let files = repo().join("deploy/integrations/alertmanager/files");
    let assemble = |routes_text: Option<&str>| -> Output {
        match routes_text {
            Some(text) => std::fs::write(&routes, text).expect("write routes"),
            None => {
                let _ = std::fs::remove_file(&routes);
            }
        }
        Command::new("sh")
            .arg(files.join("assemble.sh"))
            .arg("once")
            .env("ALERTMANAGER_BASE_FILE", files.join("base.yml"))
            .env("ALERTMANAGER_ROUTES_FILE", &routes)
            .env("ALERTMANAGER_CONFIG_FILE", &config)
            .output()
            .expect("run assemble.sh")
    };

    // Before the observer wrote its routes: everything goes to the operators.
    let output = assemble(None);
    assert!(output.status.success(), "{}", output_text(&output));
    let text = std::fs::read_to_string(&config).expect("assembled");
    assert!(text.contains("receiver: kaas-operators"), "{text}");

    // The routes the observer generates, with tenants base.yml does not know.
    let generated =
        kaas_observer::integrations::files::render_alertmanager_routes(&["bank", "shop"])
            .expect("render routes");
    let output = assemble(Some(&generated));
    assert!(output.status.success(), "{}", output_text(&output));
    let text = std::fs::read_to_string(&config).expect("assembled");
    for receiver in [
        "- name: tenant-bank",
        "- name: tenant-shop",
        "- name: kaas-operators",
    ] {
        assert!(text.contains(receiver), "{receiver} in:\n{text}");
    }
    let check = Command::new("amtool")
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run amtool");
    assert!(check.status.success(), "{}", output_text(&check));

    // A broken input keeps the last good configuration.
    let output = assemble(Some("route:\n  receiver: nobody-defined-this\n"));
    assert!(!output.status.success(), "an invalid result is refused");
    assert_eq!(std::fs::read_to_string(&config).expect("kept"), text);
}

// ---- images ----

#[test]
fn each_binary_has_a_multi_stage_non_root_dockerfile() {
    for (dockerfile, package, binary) in [
        ("observer/Dockerfile", "kaas-observer", "observer"),
        (
            "cluster-agent/Dockerfile",
            "kaas-cluster-agent",
            "cluster-agent",
        ),
    ] {
        let text = std::fs::read_to_string(repo().join(dockerfile)).expect("read Dockerfile");
        let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(
            stages >= 2,
            "{dockerfile} builds in one stage and ships another"
        );
        assert!(
            text.contains(&format!(
                "cargo build --release --locked -p {package} --bin {binary}"
            )),
            "{dockerfile} builds {binary} from {package}"
        );
        let last_user = text.lines().rev().find(|l| l.starts_with("USER "));
        assert_eq!(
            last_user,
            Some(format!("USER {IMAGE_UID}:{IMAGE_UID}").as_str()),
            "{dockerfile} runs as the manifests' uid"
        );
        assert!(
            text.contains(&format!("kaas-observer/{binary}:")),
            "{dockerfile} says which tag the manifests expect"
        );
    }
    let dockerignore =
        std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(
        dockerignore.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the build context"
    );
}

// ---- the kind suite ----

#[test]
fn kind_suite_skips_in_one_line_or_passes() {
    let output = Command::new("bash")
        .arg(repo().join("kind-tests/run.sh"))
        .output()
        .expect("run kind-tests/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.len() == 1 && lines[0].starts_with(KIND_SKIP_PREFIX) {
        assert!(
            output.status.success(),
            "a skip exits 0: {}",
            output_text(&output)
        );
        eprintln!("{}", lines[0]);
        return;
    }
    assert!(
        output.status.success(),
        "kind-tests/run.sh failed:\n{}",
        output_text(&output)
    );
    assert!(
        stdout.contains("kind-tests passed"),
        "the suite reports its result:\n{stdout}"
    );
}

// ---- issue 17: the agent's gateway role ----

/// The gateway overlay's build, where the component is used.
const GATEWAY_SOURCE: &str = "kubectl kustomize deploy/agent/gateway";

/// The object of `kind` named `name` in `source`.
fn object<'a>(objects: &'a Objects, source: &str, kind: &str, name: &str) -> &'a Json {
    objects
        .all
        .iter()
        .find(|(s, o)| s == source && o["kind"] == kind && o["metadata"]["name"] == name)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("{source} has no {kind}/{name}"))
}

/// Whether `selector` (a `matchLabels`-like map) selects pods labelled `labels`.
fn selects(selector: &Json, labels: &Json) -> bool {
    let selector = selector.as_object().expect("a selector map");
    !selector.is_empty() && selector.iter().all(|(key, value)| &labels[key] == value)
}

/// The value of `--flag=` in a container's args.
fn flag_value<'a>(container: &'a Json, flag: &str) -> Option<&'a str> {
    container["args"]
        .as_array()?
        .iter()
        .filter_map(Json::as_str)
        .find_map(|arg| arg.strip_prefix(flag)?.strip_prefix('='))
}

/// Seconds of a `90s`-style duration.
fn seconds(text: &str) -> i64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not a number of seconds"))
}

/// Issue 17, "Where it runs": the gateway replicas are a StatefulSet with a volume
/// each that scale-in keeps; the push Service (the same `cluster-agent` address the
/// tenant guide names) reaches them on every push port, the node agents reach the
/// cluster-level instance for their certificates through a Service of its own; a
/// HorizontalPodAutoscaler scales the StatefulSet on CPU (which the container
/// requests), a PodDisruptionBudget keeps replicas up, and a replica drains within its
/// grace period after a preStop pause.
#[test]
fn the_gateway_scales_on_cpu_keeps_its_volumes_and_drains_within_its_grace_period() {
    if skip_requested("gateway") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let set = object(
        &objects,
        GATEWAY_SOURCE,
        "StatefulSet",
        "cluster-agent-gateway",
    );
    let spec = &set["spec"];
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Retain",
        "scale-in keeps the replica's volume and its buffers"
    );
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    let container = &pod["containers"][0];
    assert_eq!(flag_value(container, "--role"), Some("gateway"));
    assert_eq!(
        flag_value(container, "--instance-name"),
        Some("$(POD_NAME)")
    );
    assert_eq!(
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "POD_NAME")
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone()),
        Some("metadata.name".into()),
        "each replica is the instance of its own pod"
    );
    // Its data directory is its own claim.
    let data_dir = flag_value(container, "--data-dir").expect("--data-dir");
    let mount = (container["volumeMounts"].as_array().into_iter().flatten())
        .find(|m| m["mountPath"] == data_dir)
        .expect("the data directory is mounted");
    let claims: Vec<&Json> = (spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten())
    .map(|c| &c["metadata"]["name"])
    .collect();
    assert_eq!(
        claims,
        [&mount["name"]],
        "the data directory is the replica's claim"
    );
    // Drains within the grace period, after the preStop pause.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("a preStop pause");
    let drain = seconds(flag_value(container, "--drain-timeout").expect("--drain-timeout"));
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(pause > 0 && drain > 0, "pause {pause}s, drain {drain}s");
    assert!(
        pause + drain < grace,
        "preStop {pause}s + drain {drain}s must end before the grace period {grace}s"
    );
    // The push Service reaches the replicas on every push port, by name.
    let ports: BTreeMap<&str, i64> = (container["ports"].as_array().into_iter().flatten())
        .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_i64()?)))
        .collect();
    let push = object(&objects, GATEWAY_SOURCE, "Service", "cluster-agent");
    assert!(selects(&push["spec"]["selector"], labels), "{push:#}");
    let served: BTreeSet<i64> = (push["spec"]["ports"].as_array().into_iter().flatten())
        .map(|p| {
            let target = p["targetPort"].as_str().expect("a named target port");
            assert_eq!(ports.get(target), p["port"].as_i64().as_ref(), "{p}");
            p["port"].as_i64().expect("a port")
        })
        .collect();
    assert_eq!(served, BTreeSet::from([4317, 4318, 8429, 9411]));
    // The cluster-level instance keeps a Service for the certificates it hands out,
    // which the node agents and the replicas ask.
    let deployment = object(&objects, GATEWAY_SOURCE, "Deployment", "cluster-agent");
    let control = object(&objects, GATEWAY_SOURCE, "Service", "cluster-agent-control");
    assert!(selects(
        &control["spec"]["selector"],
        &deployment["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(!selects(&control["spec"]["selector"], labels));
    let issuer = "http://cluster-agent-control.kaas-observer.svc:8429";
    let node = object(&objects, GATEWAY_SOURCE, "DaemonSet", "cluster-agent-node");
    for (who, container) in [
        ("the gateway", container),
        (
            "the node agent",
            &node["spec"]["template"]["spec"]["containers"][0],
        ),
    ] {
        assert_eq!(
            flag_value(container, "--node-certificate-issuer"),
            Some(issuer),
            "{who}"
        );
    }
    // Scaled on CPU, relative to what the container requests.
    let hpa = object(
        &objects,
        GATEWAY_SOURCE,
        "HorizontalPodAutoscaler",
        "cluster-agent-gateway",
    );
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (&target["kind"], &target["name"]),
        (&"StatefulSet".into(), &set["metadata"]["name"])
    );
    let metrics = hpa["spec"]["metrics"].as_array().expect("metrics");
    assert!(
        metrics
            .iter()
            .any(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu"),
        "{hpa:#}"
    );
    assert!(hpa["spec"]["minReplicas"].as_i64() >= Some(2), "{hpa:#}");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    let budget = object(
        &objects,
        GATEWAY_SOURCE,
        "PodDisruptionBudget",
        "cluster-agent-gateway",
    );
    assert!(selects(&budget["spec"]["selector"]["matchLabels"], labels));
}

/// Issue 17: a gateway replica reads pods (span enrichment) and reviews tokens (push
/// authentication), nothing cluster-wide besides, and Secrets only through the
/// agent's Roles in the namespaces its --secret-namespaces lists.
#[test]
fn the_gateway_reads_only_pods_tokens_and_its_allowed_secrets() {
    if skip_requested("gateway RBAC") {
        return;
    }
    let kubectl = require_tool("kubectl", "install kubectl (Debian: kubernetes-client)");
    check_kustomize_version(&kubectl);
    let objects = Objects::collect(&kubectl);
    let account = "cluster-agent-gateway";
    let bound_to_gateway = |binding: &Json| {
        (binding["subjects"].as_array().into_iter().flatten())
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
    };
    let mut cluster_wide: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (_, binding) in objects
        .of_kind("ClusterRoleBinding")
        .filter(|(s, b)| s == GATEWAY_SOURCE && bound_to_gateway(b))
    {
        let name = binding["roleRef"]["name"].as_str().expect("a role");
        let role = object(&objects, GATEWAY_SOURCE, "ClusterRole", name);
        for (key, verbs) in grants(role) {
            cluster_wide.entry(key).or_default().extend(verbs);
        }
    }
    assert_eq!(
        cluster_wide,
        BTreeMap::from([
            (("".to_owned(), "pods".to_owned()), read_only()),
            (
                (
                    "authentication.k8s.io".to_owned(),
                    "tokenreviews".to_owned()
                ),
                ["create".to_owned()].into()
            ),
        ]),
        "the gateway's cluster-wide rules"
    );
    let set = object(
        &objects,
        GATEWAY_SOURCE,
        "StatefulSet",
        "cluster-agent-gateway",
    );
    assert_eq!(
        set["spec"]["template"]["spec"]["serviceAccountName"],
        account
    );
    let listed: BTreeSet<&str> = flag_value(
        &set["spec"]["template"]["spec"]["containers"][0],
        "--secret-namespaces",
    )
    .expect("--secret-namespaces")
    .split(',')
    .collect();
    let mut secret_namespaces = BTreeSet::new();
    for (_, binding) in objects
        .of_kind("RoleBinding")
        .filter(|(s, b)| s == GATEWAY_SOURCE && bound_to_gateway(b))
    {
        let namespace = binding["metadata"]["namespace"]
            .as_str()
            .expect("a namespace");
        let role = (objects.of_kind("Role"))
            .find(|(s, r)| {
                s == GATEWAY_SOURCE
                    && r["metadata"]["name"] == binding["roleRef"]["name"]
                    && r["metadata"]["namespace"] == namespace
            })
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("{binding:#} names no Role of its namespace"));
        assert_eq!(grants(role), secrets_and_config_maps());
        secret_namespaces.insert(namespace);
    }
    assert_eq!(
        secret_namespaces, listed,
        "RoleBindings and the gateway's flag"
    );
}
