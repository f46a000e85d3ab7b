//! Issue 15, finding 3: every alert's inputs are produced.
//!
//! Before, the alerts in `alerts/` selected kube-state-metrics, node-exporter and
//! control-plane series that no cluster produced (nothing installed them, and the
//! central pipeline did not scrape them), and every test still passed: the promtool
//! tests feed the rules hand-written series, and the metrics catalogue only lists
//! names. This test checks each selector of each rule against what the product really
//! renders and installs:
//!
//! - a selector's `job` matcher must match a job the product scrapes: the central
//!   pipeline the observer renders for every cluster (with the default control-plane
//!   setting, and with one that scrapes every component), the management cluster's
//!   scrape of the annotated pods in its namespace (`kaas-observer`,
//!   `kaas-receive-gateway`), or the job the peer-watch agent gives the other site's
//!   observer replicas (`kaas-observer-peer`, its scrape's report series only);
//! - its `metrics_path` matcher must match a path of that job (the kubelet's three);
//! - its metric name must be a family that job's producer exports: the committed,
//!   pinned family lists of kube-state-metrics and node-exporter
//!   (`alerts/inputs/*.families`), `docs/metrics.yaml` for the kubelet and for our own
//!   series (agent, observer, probes), and the scrape's own `up`/`scrape_*`;
//! - a selector without a `job` matcher must still name a family some producer
//!   exports;
//! - no rule looks at whether a control-plane component is scraped (`up` and the other
//!   scrape series of those jobs): one a cluster cannot reach is shown in its
//!   control-plane status with the reason, never alerted on;
//! - every producer is an object in `deploy/agent/base`, in the API's install manifest
//!   and so in what the Cluster API installer applies (the same documents);
//! - the node-exporter families the rules use appear in the output of the real Debian
//!   `prometheus-node-exporter`, run here on loopback.
//!
//! A fixture rule file whose inputs nothing produces
//! (`tests/fixtures/alert_inputs/unproduced.rules.yaml`) must fail each check.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kaas_observer::control_plane::{COMPONENTS, ControlPlaneScrape, ValidatedControlPlane};
use kaas_observer::rendering::central::{
    AGENT_JOB, KUBE_STATE_METRICS_JOB, KUBELET_JOB, NODE_EXPORTER_JOB,
};
use kaas_observer::rendering::{CentralPipelineSettings, central_pipelines_with};
use serde_yaml::Value as Yaml;

mod promql_scan;
use promql_scan::{skip_balanced, skip_string};

/// The management cluster's scrape of the observer replicas
/// (`deploy/integrations/self-monitoring/files/agent.yaml`: the pod's
/// `app.kubernetes.io/name`, which is `kaas-observer`, becomes the job).
const OBSERVER_JOB: &str = "kaas-observer";
/// The same scrape of the receive gateway's replicas (`observer gateway`).
const GATEWAY_JOB: &str = "kaas-receive-gateway";
/// The namespace whose annotated pods the management cluster's scrape collects.
const MANAGEMENT_NAMESPACE: &str = "kaas-observer-system";
/// The peer-watch agent's configuration: the job it gives the other site's observer
/// replicas, of which it forwards only the scrape's report series.
const PEER_WATCH_CONFIG: &str = "deploy/integrations/peer-watch/files/peer-watch.yaml";

/// Series every scrape adds to each target's own.
const SCRAPE_SERIES: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------

/// One vector selector: a metric name and its label matchers `(label, op, value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Words that are not metric names and take no parenthesised argument of labels.
const OPERATOR_WORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Words followed by a parenthesised list of label names.
const LABEL_LIST_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The matchers between `{` and `}` (exclusive).
fn matchers(inner: &str) -> Vec<(String, String, String)> {
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let name = inner[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < bytes.len() && matches!(bytes[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = inner[op_start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if name.is_empty() || i >= bytes.len() {
            break;
        }
        let end = skip_string(bytes, i);
        let value = inner[i + 1..end - 1].to_owned();
        out.push((name, op, value));
        i = end;
    }
    out
}

/// Every vector selector of a PromQL expression.
fn selectors(expr: &str) -> Vec<Selector> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(bytes, i);
        } else if c == b'[' {
            i = skip_balanced(bytes, i);
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < bytes.len() && bytes[next].is_ascii_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            // `sum by (cluster) (x)`: an aggregation with its grouping first.
            let grouping_follows = ["by", "without"].iter().any(|w| {
                expr[next..]
                    .get(..w.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w))
                    && !expr[next + w.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            if LABEL_LIST_WORDS.contains(&lower.as_str()) {
                if bytes.get(next) == Some(&b'(') {
                    i = skip_balanced(bytes, next);
                }
            } else if OPERATOR_WORDS.contains(&lower.as_str())
                || bytes.get(next) == Some(&b'(')
                || grouping_follows
            {
                // An operator, or a function or aggregation call.
            } else if bytes.get(next) == Some(&b'{') {
                let end = skip_balanced(bytes, next);
                out.push(Selector {
                    metric: word.to_owned(),
                    matchers: matchers(&expr[next + 1..end - 1]),
                });
                i = end;
            } else {
                out.push(Selector {
                    metric: word.to_owned(),
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Whether a label value `actual` passes the matcher `op value`.
fn passes(op: &str, value: &str, actual: &str) -> bool {
    // Anchored as PromQL anchors matcher regexes.
    let regex = || kaas_pipeline::processors::anchored_regex(value).expect("a valid matcher regex");
    match op {
        "=" => actual == value,
        "!=" => actual != value,
        "=~" => regex().is_match(actual),
        "!~" => !regex().is_match(actual),
        other => panic!("unknown matcher operator {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------

/// A scrape job the product renders and the families its targets export.
#[derive(Debug)]
struct Job {
    name: String,
    /// The `metrics_path` label values its targets carry (empty: no such label).
    metrics_paths: BTreeMap<String, BTreeSet<String>>,
    /// Families exported when no path label is set.
    families: BTreeSet<String>,
}

impl Job {
    fn exports(&self, metric: &str, path_ok: &dyn Fn(&str) -> bool) -> bool {
        if SCRAPE_SERIES.contains(&metric) {
            return self.metrics_paths.is_empty() || self.metrics_paths.keys().any(|p| path_ok(p));
        }
        if self.metrics_paths.is_empty() {
            return self.families.contains(metric);
        }
        self.metrics_paths
            .iter()
            .any(|(path, families)| path_ok(path) && families.contains(metric))
    }
}

/// A committed family list: the first word of every line that is not a comment.
fn family_list(file: &str, skip_opt_in: bool) -> BTreeSet<String> {
    read(&repo().join("alerts/inputs").join(file))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !(skip_opt_in && l.split_whitespace().any(|w| w == "opt-in")))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// `docs/metrics.yaml`'s series names, by entry, filtered.
fn catalogue(filter: impl Fn(&Yaml) -> bool) -> BTreeSet<String> {
    let doc: Yaml = serde_yaml::from_str(&read(&repo().join("docs/metrics.yaml")))
        .expect("the repository's files are as committed");
    let mut names = BTreeSet::new();
    for entry in doc["metrics"]
        .as_sequence()
        .expect("the repository's files are as committed")
    {
        if !filter(entry) {
            continue;
        }
        let name = entry["name"]
            .as_str()
            .expect("the repository's files are as committed");
        if entry["type"] == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

fn emitted_by(prefix: &'static str) -> impl Fn(&Yaml) -> bool {
    move |entry| {
        entry["emitted_by"]
            .as_str()
            .is_some_and(|e| e.starts_with(prefix))
    }
}

fn source(name: &'static str) -> impl Fn(&Yaml) -> bool {
    move |entry| entry["source"] == name
}

/// The jobs of the central pipelines the observer renders: their static targets' `job`
/// labels, the jobs its target relabel rules set, and the runtime input's kubelet
/// targets with their `metrics_path`; once with the default control-plane setting and
/// once with one that scrapes every component at an address.
fn rendered_jobs() -> BTreeMap<String, BTreeSet<String>> {
    let settings = CentralPipelineSettings::new("https://receive-gateway.example:19291");
    let all: ControlPlaneScrape = serde_json::from_value(serde_json::json!({
        "apiserver": {"addresses": ["10.0.0.1:6443"]},
        "kubeScheduler": {"addresses": ["10.0.0.1:10251"]},
        "kubeControllerManager": {"addresses": ["10.0.0.1:10252"]},
        "etcd": {"addresses": ["10.0.0.1:2381"]},
        "coredns": {"addresses": ["10.0.0.2:9153"]},
    }))
    .expect("the repository's files are as committed");
    let mut jobs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for control_plane in [
        ValidatedControlPlane::default(),
        all.validate()
            .expect("the repository's files are as committed"),
    ] {
        let pipelines = central_pipelines_with(&settings, &control_plane)
            .expect("the repository's files are as committed");
        for pipeline in &pipelines {
            let spec = pipeline.spec();
            for group in spec.input.static_targets.iter().flat_map(|s| &s.targets) {
                jobs.entry(group.labels["job"].clone()).or_default();
            }
            for rule in &spec.processors.relabel_configs {
                if rule.target_label.as_deref() == Some("job")
                    && let Some(job) = &rule.replacement
                {
                    jobs.entry(job.clone()).or_default();
                }
            }
            if let Some(runtime) = pipeline.inputs.runtime.as_ref() {
                let paths = jobs.entry(KUBELET_JOB.to_owned()).or_default();
                for (on, path) in [
                    (runtime.kubelet, "/metrics"),
                    (runtime.cadvisor, "/metrics/cadvisor"),
                    (runtime.node, "/metrics/resource"),
                ] {
                    if on {
                        paths.insert(path.to_owned());
                    }
                }
            }
        }
    }
    jobs
}

/// The jobs of the management cluster's scrape: the `app.kubernetes.io/name` of each
/// workload in `deploy/` whose pods run in [`MANAGEMENT_NAMESPACE`] annotated
/// `prometheus.io/scrape: "true"` (the scrape's relabel rule makes that name the job).
fn management_jobs() -> BTreeSet<String> {
    let mut jobs = BTreeSet::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the repository's files are as committed") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            for document in serde_yaml::Deserializer::from_str(&read(&path)) {
                let Ok(value) = <Yaml as serde::Deserialize>::deserialize(document) else {
                    continue;
                };
                let template = &value["spec"]["template"]["metadata"];
                if value["metadata"]["namespace"] == MANAGEMENT_NAMESPACE
                    && template["annotations"]["prometheus.io/scrape"] == "true"
                    && let Some(name) = template["labels"]["app.kubernetes.io/name"].as_str()
                {
                    jobs.insert(name.to_owned());
                }
            }
        }
    }
    jobs
}

/// The jobs the peer-watch agent's relabel rules set ([`PEER_WATCH_CONFIG`]). It
/// relabels the observer's replicas rather than scraping a job of its own, and keeps
/// only `up` (the scrape's report series are always kept): the job exports no family
/// of its own.
fn peer_watch_jobs() -> BTreeSet<String> {
    let config: Yaml = serde_yaml::from_str(&read(&repo().join(PEER_WATCH_CONFIG)))
        .expect("the repository's files are as committed");
    let mut jobs = BTreeSet::new();
    for pipeline in config["pipelines"].as_sequence().into_iter().flatten() {
        let processors = &pipeline["spec"]["processors"];
        let kept: Vec<&str> = processors["metrics"]["keep"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            kept.iter().all(|family| SCRAPE_SERIES.contains(family)),
            "the peer-watch agent forwards only the scrape's report series: {kept:?}"
        );
        for rule in processors["relabelConfigs"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if rule["targetLabel"] == "job"
                && let Some(job) = rule["replacement"].as_str()
            {
                jobs.insert(job.to_owned());
            }
        }
    }
    jobs
}

/// Every job a rule may select, with what it exports. A job the product does not
/// render is absent, whatever families exist.
fn jobs() -> Vec<Job> {
    let rendered = rendered_jobs();
    let family_of = |job: &str| -> Option<BTreeSet<String>> {
        Some(match job {
            KUBE_STATE_METRICS_JOB => family_list("kube-state-metrics-v2.20.0.families", true),
            NODE_EXPORTER_JOB => family_list("node-exporter-v1.12.1.families", false),
            AGENT_JOB => catalogue(source("agent")),
            // Control-plane components: their own families are not catalogued, so an
            // alert on them must be added with its family list first.
            _ => return None,
        })
    };
    let mut jobs = Vec::new();
    for (name, paths) in rendered {
        if name == KUBELET_JOB {
            let mut metrics_paths = BTreeMap::new();
            for path in paths {
                let families = match path.as_str() {
                    "/metrics" => catalogue(emitted_by("kubelet (/metrics)")),
                    "/metrics/cadvisor" => catalogue(emitted_by("kubelet cAdvisor")),
                    _ => BTreeSet::new(),
                };
                metrics_paths.insert(path, families);
            }
            jobs.push(Job {
                name,
                metrics_paths,
                families: BTreeSet::new(),
            });
            continue;
        }
        jobs.push(Job {
            families: family_of(&name).unwrap_or_default(),
            name,
            metrics_paths: BTreeMap::new(),
        });
    }
    let management = management_jobs();
    for (name, families) in [
        (
            OBSERVER_JOB,
            catalogue(|e| source("observer")(e) && emitted_by("observer (/metrics)")(e)),
        ),
        (
            GATEWAY_JOB,
            catalogue(|e| source("observer")(e) && emitted_by("observer gateway")(e)),
        ),
    ] {
        assert!(
            management.contains(name),
            "{name} is scraped on the management cluster: {management:?}"
        );
        jobs.push(Job {
            name: name.to_owned(),
            metrics_paths: BTreeMap::new(),
            families,
        });
    }
    for name in peer_watch_jobs() {
        jobs.push(Job {
            name,
            metrics_paths: BTreeMap::new(),
            families: BTreeSet::new(),
        });
    }
    jobs
}

/// Series that reach the receiver without a scrape job: the observer's fleet series and
/// probe results (remote-written by the observer), its OTLP export, and the rule
/// evaluator's `ALERTS`. The receive gateway's families are scraped ([`GATEWAY_JOB`]).
fn unscraped_families() -> BTreeSet<String> {
    let mut families = catalogue(|e| {
        (source("observer")(e)
            && !emitted_by("observer (/metrics)")(e)
            && !emitted_by("observer gateway")(e))
            || source("probe")(e)
    });
    families.insert("ALERTS".to_owned());
    families
}

// ---------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------

/// `(alert, expr)` of every rule in a rule file.
fn rules_of(path: &Path) -> Vec<(String, String)> {
    let doc: Yaml =
        serde_yaml::from_str(&read(path)).expect("the repository's files are as committed");
    let mut rules = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?");
            rules.push((
                name.to_owned(),
                rule["expr"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    rules
}

/// What is wrong with the inputs of `expr`: one line per selector nothing produces.
fn input_problems(
    rule: &str,
    expr: &str,
    jobs: &[Job],
    unscraped: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for selector in selectors(expr) {
        let of = |label: &str| -> Vec<(&str, &str)> {
            selector
                .matchers
                .iter()
                .filter(|(l, _, _)| l == label)
                .map(|(_, op, v)| (op.as_str(), v.as_str()))
                .collect()
        };
        let job_matchers = of("job");
        let path_matchers = of("metrics_path");
        let path_ok = |path: &str| path_matchers.iter().all(|(op, v)| passes(op, v, path));
        let selected: Vec<&Job> = jobs
            .iter()
            .filter(|job| job_matchers.iter().all(|(op, v)| passes(op, v, &job.name)))
            .collect();
        let text = format!("{}{:?}", selector.metric, selector.matchers);
        // A control-plane component a cluster cannot reach is shown in its control-plane
        // status with the reason, never alerted on: no rule may look at whether one is
        // scraped.
        if SCRAPE_SERIES.contains(&selector.metric.as_str()) {
            let watched: Vec<&str> = COMPONENTS
                .iter()
                .map(|c| c.job())
                .filter(|job| job_matchers.iter().all(|(op, v)| passes(op, v, job)))
                .collect();
            if !watched.is_empty() {
                problems.push(format!(
                    "{rule}: {text}: alerts on whether control-plane components {watched:?} \
                     are reachable"
                ));
                continue;
            }
        }
        if !job_matchers.is_empty() && selected.is_empty() {
            problems.push(format!(
                "{rule}: {text}: no rendered scrape job matches its job"
            ));
            continue;
        }
        if !path_matchers.is_empty()
            && !selected
                .iter()
                .any(|job| job.metrics_paths.keys().any(|p| path_ok(p)))
        {
            problems.push(format!(
                "{rule}: {text}: no job it selects has a matching metrics_path"
            ));
            continue;
        }
        let produced = selected
            .iter()
            .any(|job| job.exports(&selector.metric, &path_ok))
            || (job_matchers.is_empty()
                && path_matchers.is_empty()
                && unscraped.contains(&selector.metric));
        if !produced {
            problems.push(format!(
                "{rule}: {text}: no producer it selects exports {}",
                selector.metric
            ));
        }
    }
    problems
}

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("alerts"))
        .expect("the repository's files are as committed")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn every_alert_selects_only_series_the_product_produces() {
    let jobs = jobs();
    let unscraped = unscraped_families();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in rule_files() {
        for (rule, expr) in rules_of(&file) {
            checked += selectors(&expr).len();
            problems.extend(input_problems(&rule, &expr, &jobs, &unscraped));
        }
    }
    assert!(checked > 50, "the selectors were found ({checked})");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The fixture rules' inputs are produced by nothing, each for another reason, and
/// each is reported.
#[test]
fn a_rule_whose_input_nothing_produces_fails() {
    let jobs = jobs();
    let unscraped = unscraped_families();
    let path = repo().join("observer/tests/fixtures/alert_inputs/unproduced.rules.yaml");
    let expected = [
        (
            "MisspelledFamily",
            "no producer it selects exports kube_pod_status_phaze",
        ),
        ("UnrenderedJob", "no rendered scrape job matches its job"),
        ("WrongPath", "no job it selects has a matching metrics_path"),
        (
            "FamilyOfAnotherProducer",
            "no producer it selects exports node_memory_MemTotal_bytes",
        ),
        (
            "UnproducedWithoutJob",
            "no producer it selects exports kube_pod_container_status_waiting_reasons",
        ),
        (
            "ControlPlaneWithoutFamilyList",
            "no producer it selects exports etcd_server_has_leader",
        ),
        (
            "UnreachableControlPlane",
            "alerts on whether control-plane components [\"etcd\"] are reachable",
        ),
        (
            "AnyTargetDown",
            "alerts on whether control-plane components",
        ),
    ];
    let rules = rules_of(&path);
    assert_eq!(rules.len(), expected.len());
    for ((rule, expr), (name, needle)) in rules.iter().zip(expected) {
        assert_eq!(rule, name);
        let problems = input_problems(rule, expr, &jobs, &unscraped);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{rule}: expected {needle:?}, got {problems:?}"
        );
    }
}

#[test]
fn selectors_are_found_with_their_matchers() {
    let found = selectors(
        r#"sum by (cluster, job) (rate(up{job="kubelet", metrics_path=~"/metrics(/cadvisor)?"}[5m]))
           unless on (cluster) (kaas_cluster_info{state="deleted"} == 1) and time() - foo > 3"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["up", "kaas_cluster_info", "foo"]);
    assert_eq!(
        found[0].matchers,
        [
            ("job".to_owned(), "=".to_owned(), "kubelet".to_owned()),
            (
                "metrics_path".to_owned(),
                "=~".to_owned(),
                "/metrics(/cadvisor)?".to_owned()
            ),
        ]
    );
    assert!(passes("=~", "/metrics(/cadvisor)?", "/metrics/cadvisor"));
    assert!(!passes("=~", "/metrics(/cadvisor)?", "/metrics/resource"));
}

/// The jobs the issue names are rendered, each control-plane component only when its
/// setting scrapes it.
#[test]
fn the_product_renders_the_named_jobs() {
    let rendered = rendered_jobs();
    for job in [
        KUBELET_JOB,
        KUBE_STATE_METRICS_JOB,
        NODE_EXPORTER_JOB,
        AGENT_JOB,
    ] {
        assert!(rendered.contains_key(job), "{job}: {rendered:?}");
    }
    for component in COMPONENTS {
        assert!(rendered.contains_key(component.job()), "{component:?}");
    }
    assert_eq!(
        rendered[KUBELET_JOB],
        BTreeSet::from(["/metrics", "/metrics/cadvisor", "/metrics/resource"].map(str::to_owned))
    );
}

/// Each producer a rule needs is an object of the agent's install: in
/// `deploy/agent/base` and in the manifests the API renders (which the Cluster API
/// installer applies unchanged).
#[test]
fn every_producer_is_installed_with_the_agent() {
    let producers = [
        ("Deployment", "cluster-agent"),
        ("Deployment", "kube-state-metrics"),
        ("DaemonSet", "node-exporter"),
        ("Service", "kube-state-metrics"),
    ];
    let mut base = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("deploy/agent/base")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        for document in serde_yaml::Deserializer::from_str(&read(&path)) {
            let value: Yaml = serde::Deserialize::deserialize(document).unwrap();
            if let (Some(kind), Some(name)) =
                (value["kind"].as_str(), value["metadata"]["name"].as_str())
            {
                base.insert((kind.to_owned(), name.to_owned()));
            }
        }
    }
    let kustomization = read(&repo().join("deploy/agent/base/kustomization.yaml"));
    for file in ["kube-state-metrics.yaml", "node-exporter.yaml"] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "{file} is in the kustomization"
        );
    }
    let rendered = kaas_observer::onboarding::capi::install::agent_documents(
        &kaas_observer::api::manifest::ManifestInput {
            cluster: "edge-1",
            control_endpoint: "https://observer.example:8443",
            ca_pem: "CA",
            join_token: "kjt",
            secret_namespaces: &["kaas-observer".to_owned()],
            central_endpoints: &[],
        },
    )
    .unwrap();
    let api: BTreeSet<(String, String)> = rendered
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, name) in producers {
        let key = (kind.to_owned(), name.to_owned());
        assert!(base.contains(&key), "deploy/agent/base has {kind}/{name}");
        assert!(api.contains(&key), "the install manifest has {kind}/{name}");
    }
    // The Cluster API installer knows how to apply every rendered kind.
    for document in &rendered {
        kaas_observer::onboarding::capi::install::apply_target(document)
            .unwrap_or_else(|e| panic!("the installer cannot apply {document}: {e}"));
    }
}

/// The node-exporter families the rules use, in the output of the real
/// `prometheus-node-exporter` (Debian's), run on loopback with its defaults.
#[test]
fn the_real_node_exporter_exports_the_families_the_rules_use() {
    let binary = [
        "/usr/bin/prometheus-node-exporter",
        "/usr/sbin/prometheus-node-exporter",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("prometheus-node-exporter is installed (scripts/test.sh installs Debian's)");
    let port = kaas_test_support::process::free_port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut exporter = kaas_test_support::process::ChildGuard::spawn(
        "prometheus-node-exporter",
        std::process::Command::new(&binary)
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--collector.textfile.directory={}",
                dir.path().display()
            )),
    );
    kaas_test_support::process::wait_for_tcp(address, std::time::Duration::from_secs(20));
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    exporter.assert_running();
    let exported: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let pinned = family_list("node-exporter-v1.12.1.families", false);
    let mut used = BTreeSet::new();
    for file in rule_files() {
        for (_, expr) in rules_of(&file) {
            used.extend(
                selectors(&expr)
                    .into_iter()
                    .filter(|s| s.metric.starts_with("node_"))
                    .map(|s| s.metric),
            );
        }
    }
    assert!(!used.is_empty(), "the rules use node-exporter families");
    for family in &used {
        assert!(
            exported.contains(family.as_str()),
            "the real node exporter exports {family}"
        );
        assert!(pinned.contains(family), "the pinned list has {family}");
    }
}

/// The demo's stand-in for a live kube-state-metrics
/// (`examples/cluster-health/kube-state-metrics-v2.20.0.prom`) holds only families the
/// pinned version exports, each with its type.
#[test]
fn the_recorded_kube_state_metrics_exposition_matches_the_pinned_families() {
    let pinned: BTreeMap<String, String> =
        read(&repo().join("alerts/inputs/kube-state-metrics-v2.20.0.families"))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.to_owned(), words.next()?.to_owned()))
            })
            .collect();
    let exposition = read(&repo().join("examples/cluster-health/kube-state-metrics-v2.20.0.prom"));
    let mut families = 0;
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(pinned.get(name).map(String::as_str), Some(kind), "{name}");
            families += 1;
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(pinned.contains_key(name), "{name} is a pinned family");
        }
    }
    assert!(families >= 5, "a few families ({families})");
}
