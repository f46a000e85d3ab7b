//! The alerting rules, the dashboards and the metrics contract, checked as artefacts.
//!
//! - `promtool check rules` accepts `alerts/*.yaml` and `promtool test rules` passes
//!   `alerts/tests/*.yaml`; every alert has a firing and a non-firing case, and the
//!   lifecycle scenarios cover every cluster-scoped alert.
//! - Every alert has a severity, a summary, a description and a runbook section in
//!   `docs/alerts.md`; every cluster-scoped alert excludes deleted clusters and groups
//!   and matches by `cluster`.
//! - Every dashboard is well-formed (title, unique uid, `${datasource}` and no
//!   hard-coded data-source uid, `gridPos`, an `expr` on every target, a template
//!   variable for every `$variable`), and every PromQL expression in it parses
//!   (`promtool check rules` on a generated file of recording rules).
//! - Every metric name an alert or a dashboard uses is in `docs/metrics.yaml`, which
//!   agrees with `docs/metrics.md` and with the agent's `cluster-agent/src/telemetry.rs`.
//!
//! promtool comes from Debian's `prometheus` package (`scripts/test.sh` installs it);
//! `PROMTOOL` overrides its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

mod promql_scan;
use promql_scan::{skip_balanced, skip_string};

/// Alerts that are not about one cluster, so they carry no lifecycle guard and need
/// not group by `cluster`: the observer's self-monitoring, the per-tenant pipeline
/// condition, the mass-deletion guard (per source), the abuse alerts on the API and on
/// joins, and the receive gateway's per-tenant limits. Every other alert must exclude
/// deleted clusters.
const NOT_CLUSTER_SCOPED: &[&str] = &[
    "KaasPipelineConfigRejected",
    "KaasClusterDeletionsPaused",
    "KaasObserverDown",
    "KaasObserverReplicaDown",
    "KaasObserverNotIngesting",
    "KaasObserverConfigPushesFailing",
    "KaasObserverApiErrors",
    "KaasObserverApiRefusalSpike",
    "KaasObserverJoinsRefused",
    "KaasPeerObserverSilent",
    "KaasGrafanaSyncFailing",
    "KaasGatewayIngestRefused",
    "KaasGatewaySeriesLimitReached",
];

/// The guard every cluster-scoped alert ends with (whitespace-normalised prefix; the
/// regex may also list `provisioning`).
const DELETED_GUARD: &str = r#"unless on (cluster) (kaas_cluster_info{state=~"deleted|deleting"#;

const SEVERITIES: &[&str] = &["critical", "warning", "info"];

/// Grafana's built-in variables and the sample values they get for parsing.
const BUILTIN_VARIABLES: &[(&str, &str)] = &[
    ("__rate_interval", "5m"),
    ("__interval_ms", "60000"),
    ("__interval", "1m"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
    ("__range", "1h"),
];

/// The sample value of every dashboard variable when parsing.
const SAMPLE_VARIABLE_VALUE: &str = "example";

/// PromQL aggregation operators.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// PromQL functions (Prometheus 2.x and 3.x), plus `start` and `end` of the `@` modifier.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "info",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals that are never metric names.
const KEYWORDS: &[&str] = &[
    "bool", "offset", "and", "or", "unless", "atan2", "inf", "nan",
];

// ---------------------------------------------------------------------------------
// Repository and promtool
// ---------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Files in `dir` (relative to the repository) ending in `suffix`, sorted.
fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = repo().join(dir);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {suffix} files in {}", dir.display());
    found
}

fn promtool() -> PathBuf {
    let candidate = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    if candidate.is_file() {
        return candidate;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let found = dir.join("promtool");
            if found.is_file() {
                return found;
            }
        }
    }
    panic!(
        "promtool not found at {} nor on PATH: install Debian's `prometheus` package \
         (apt-get install prometheus; scripts/test.sh does) or set PROMTOOL to its path",
        candidate.display()
    );
}

fn run_promtool(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(promtool())
        .args(args)
        .args(files)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("running promtool {args:?}: {e}"))
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------
// The metrics contract
// ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    metrics: Vec<MetricEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricEntry {
    name: String,
    #[serde(rename = "type")]
    kind: MetricKind,
    labels: Vec<String>,
    source: Source,
    emitted_by: String,
    help: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    Observer,
    Agent,
    Probe,
    Standard,
}

impl MetricEntry {
    /// The series names this entry stands for in PromQL.
    fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

fn catalogue() -> Catalogue {
    let path = repo().join("docs/metrics.yaml");
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every series name PromQL may select.
fn known_series(catalogue: &Catalogue) -> BTreeSet<String> {
    catalogue
        .metrics
        .iter()
        .flat_map(MetricEntry::series_names)
        .collect()
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    !name.contains(':') && is_metric_name(name)
}

#[test]
fn the_metrics_catalogue_is_consistent() {
    let catalogue = catalogue();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for m in &catalogue.metrics {
        let name = &m.name;
        if !seen.insert(name.clone()) {
            problems.push(format!("{name}: listed twice"));
        }
        if !is_metric_name(name) {
            problems.push(format!("{name}: not a metric name"));
        }
        if m.help.trim().is_empty() || m.emitted_by.trim().is_empty() {
            problems.push(format!("{name}: help and emitted_by must say something"));
        }
        match m.kind {
            MetricKind::Counter if !name.ends_with("_total") => {
                problems.push(format!(
                    "{name}: a counter's exposition name ends in _total"
                ));
            }
            MetricKind::Gauge | MetricKind::Histogram if name.ends_with("_total") => {
                problems.push(format!("{name}: only counters end in _total"));
            }
            MetricKind::Histogram
                if ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.ends_with(s)) =>
            {
                problems.push(format!("{name}: list a histogram by its base name"));
            }
            _ => {}
        }
        let mut labels = BTreeSet::new();
        for label in &m.labels {
            if !is_label_name(label) || label.starts_with("__") || label == "le" {
                problems.push(format!("{name}: label {label:?} is not allowed here"));
            }
            if !labels.insert(label) {
                problems.push(format!("{name}: label {label} listed twice"));
            }
        }
        let prefix_ok = match m.source {
            Source::Observer => name.starts_with("kaas_") && !name.starts_with("kaas_agent_"),
            Source::Agent => name.starts_with("kaas_agent_"),
            Source::Probe => name.starts_with("probe_"),
            Source::Standard => !name.starts_with("kaas_") && !name.starts_with("probe_"),
        };
        if !prefix_ok {
            problems.push(format!("{name}: name does not fit source {:?}", m.source));
        }
    }
    // Fleet and probe series are per cluster; the contract in the issue fixes these.
    for name in [
        "kaas_cluster_info",
        "kaas_cluster_created_timestamp_seconds",
    ] {
        let entry = catalogue.metrics.iter().find(|m| m.name == name);
        if !entry.is_some_and(|m| m.labels.iter().any(|l| l == "cluster")) {
            problems.push(format!("{name}: must exist with a cluster label"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.yaml:\n{}",
        problems.join("\n")
    );
}

#[test]
fn metrics_md_and_metrics_yaml_list_the_same_metrics() {
    let catalogue = catalogue();
    let markdown = read(&repo().join("docs/metrics.md"));
    let mut problems = Vec::new();
    for m in &catalogue.metrics {
        let shown = match m.kind {
            MetricKind::Histogram => format!("`{}_bucket`", m.name),
            _ => format!("`{}`", m.name),
        };
        if !markdown
            .lines()
            .any(|l| l.starts_with('|') && l.contains(&shown))
        {
            problems.push(format!(
                "{shown} is in metrics.yaml but not in a metrics.md table"
            ));
        }
    }
    // Every metric a table row of metrics.md starts with must be in the YAML.
    let known = known_series(&catalogue);
    for line in markdown.lines().filter(|l| l.starts_with("| `")) {
        let first = line.trim_start_matches("| `");
        let name = first.split('`').next().unwrap_or_default();
        if !known.contains(name) {
            problems.push(format!("metrics.md lists {name}, metrics.yaml does not"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The agent's metric names, as string literals in its telemetry module.
fn agent_metric_literals() -> BTreeSet<String> {
    let source = read(&repo().join("cluster-agent/src/telemetry.rs"));
    let mut names = BTreeSet::new();
    for (i, _) in source.match_indices("\"kaas_agent_") {
        let rest = &source[i + 1..];
        if let Some(end) = rest.find('"') {
            names.insert(rest[..end].to_owned());
        }
    }
    names
}

#[test]
fn the_agent_metrics_match_its_telemetry_module() {
    let catalogue = catalogue();
    let literals = agent_metric_literals();
    assert!(
        !literals.is_empty(),
        "no metric names found in telemetry.rs"
    );
    let mut listed = BTreeSet::new();
    let mut problems = Vec::new();
    for m in catalogue
        .metrics
        .iter()
        .filter(|m| m.source == Source::Agent)
    {
        // prometheus-client appends `_total` to counters in the exposition.
        let registered = match m.kind {
            MetricKind::Counter => m.name.trim_end_matches("_total").to_owned(),
            _ => m.name.clone(),
        };
        if !literals.contains(&registered) {
            problems.push(format!(
                "{} is not registered in telemetry.rs (as {registered:?})",
                m.name
            ));
        }
        listed.insert(registered);
    }
    for name in literals.difference(&listed) {
        problems.push(format!(
            "telemetry.rs registers {name}, docs/metrics.yaml does not list it"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------
// PromQL: a tokenizer that finds metric names
// ---------------------------------------------------------------------------------

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The label names of the list starting at `open` (a `(`).
fn label_list(expr: &str, open: usize) -> (Vec<String>, usize) {
    let end = skip_balanced(expr.as_bytes(), open);
    let inner = &expr[open + 1..end.saturating_sub(1).max(open + 1)];
    let labels = inner
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    (labels, end)
}

/// One word of a PromQL expression outside strings, selectors and ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A metric name (a selector without braces, or before `{`).
    Metric(String),
    /// A function or aggregation name, with whether `(` follows.
    Call(String),
    /// `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` and their labels.
    LabelList(String, Vec<String>),
}

/// Splits an expression into the tokens that matter for metric names and grouping:
/// string literals, label matchers in `{}`, ranges and subqueries in `[]`, numbers,
/// durations, operators and keywords are skipped; the label lists after `by`,
/// `without`, `on`, `ignoring`, `group_left` and `group_right` are collected; a name
/// followed by `(` must be a known function.
fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let bytes = expr.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(bytes, i);
        } else if c == b'{' || c == b'[' {
            i = skip_balanced(bytes, i);
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // Numbers (1, 0.5, 1e3, 0x1f) and durations (5m, 1h30m).
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
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
            let lower = word.to_ascii_lowercase();
            let next = skip_spaces(bytes, i);
            let paren_follows = bytes.get(next) == Some(&b'(');
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if paren_follows {
                    let (labels, end) = label_list(expr, next);
                    tokens.push(Token::LabelList(lower, labels));
                    i = end;
                } else {
                    // `group_left` without a list.
                    tokens.push(Token::LabelList(lower, Vec::new()));
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
                // and, or, unless, bool, offset, atan2, Inf, NaN
            } else if AGGREGATIONS.contains(&word) || (paren_follows && FUNCTIONS.contains(&word)) {
                tokens.push(Token::Call(word.to_owned()));
            } else if paren_follows {
                return Err(format!("unknown function {word:?} in {expr:?}"));
            } else {
                tokens.push(Token::Metric(word.to_owned()));
            }
        } else {
            i += 1;
        }
    }
    Ok(tokens)
}

/// The metric names an expression selects.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    Ok(tokenize(expr)?
        .into_iter()
        .filter_map(|t| match t {
            Token::Metric(name) => Some(name),
            _ => None,
        })
        .collect())
}

/// Metric names used at each location that the catalogue does not list.
fn unknown_metrics(exprs: &[(String, String)], known: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (location, expr) in exprs {
        match metric_names(expr) {
            Ok(names) => {
                for name in names.into_iter().filter(|n| !known.contains(n)) {
                    problems.push(format!("{location}: {name} is not in docs/metrics.yaml"));
                }
            }
            Err(e) => problems.push(format!("{location}: {e}")),
        }
    }
    problems
}

/// Where a cluster-scoped expression aggregates or matches without `cluster`.
fn grouping_problems(expr: &str) -> Result<Vec<String>, String> {
    let tokens = tokenize(expr)?;
    let mut problems = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        match token {
            Token::Call(name) if AGGREGATIONS.contains(&name.as_str()) => {
                // The house style puts the grouping first: `sum by (cluster, ...) (x)`.
                // The trailing form `sum (x) by (...)` counts as not grouped.
                match tokens.get(n + 1) {
                    Some(Token::LabelList(kw, labels)) if kw == "by" => {
                        if !labels.iter().any(|l| l == "cluster") {
                            problems
                                .push(format!("{name} by ({}) without cluster", labels.join(", ")));
                        }
                    }
                    Some(Token::LabelList(kw, labels)) if kw == "without" => {
                        if labels.iter().any(|l| l == "cluster") {
                            problems.push(format!("{name} without (...cluster...)"));
                        }
                    }
                    _ => problems.push(format!("{name} does not group by (cluster, ...)")),
                }
            }
            Token::LabelList(kw, labels)
                if kw == "on" && !labels.iter().any(|l| l == "cluster") =>
            {
                problems.push(format!("on ({}) without cluster", labels.join(", ")));
            }
            Token::LabelList(kw, labels)
                if kw == "ignoring" && labels.iter().any(|l| l == "cluster") =>
            {
                problems.push("ignoring (cluster)".to_owned());
            }
            _ => {}
        }
    }
    Ok(problems)
}

#[test]
fn tokenizer_finds_metric_names_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"sum by (cluster, pipeline) (rate(kaas_agent_pipeline_samples_sent_total{cluster="c", pipeline=~"a|b"}[5m]))"#,
            &["kaas_agent_pipeline_samples_sent_total"],
        ),
        (
            "x * on (cluster) group_left (tenant, state) y unless ignoring (job) z",
            &["x", "y", "z"],
        ),
        (r#"label_replace(up, "dst", "$1", "src", "(.*)")"#, &["up"]),
        (
            "foo offset 5m and bar @ start() or baz @ 1609746000",
            &["foo", "bar", "baz"],
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m:1m])))",
            &["a_bucket"],
        ),
        (r#"x{a="}", b='{'} > bool 1e3"#, &["x"]),
        ("1e3 + Inf - NaN * 0x1f / .5", &[]),
        (
            r#"topk by (cluster) (1, max by (cluster, owner_kind) (kube_pod_owner{owner_kind!="Job"}))"#,
            &["kube_pod_owner"],
        ),
        (
            r#"count_values("version", kaas_observer_build_info) # comment naming no_metric"#,
            &["kaas_observer_build_info"],
        ),
        ("sum(rate(a_total[5m])) without (instance)", &["a_total"]),
        (
            "max_over_time(recorded:rule:name[1h])",
            &["recorded:rule:name"],
        ),
        (r#"{__name__="only_by_matcher"}"#, &[]),
        (
            "ALERTS{alertstate=\"firing\"} and on () vector(1)",
            &["ALERTS"],
        ),
    ];
    for (expr, expected) in cases {
        let got = metric_names(expr).unwrap_or_else(|e| panic!("{e}"));
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, expected, "{expr}");
    }
    // A name followed by `(` must be a function.
    let err = metric_names("rat(x[5m])").expect_err("typo in a function name");
    assert!(err.contains("\"rat\""), "{err}");
}

#[test]
fn grouping_check_wants_cluster_everywhere() {
    assert_eq!(
        grouping_problems(r#"sum by (cluster, pipeline) (rate(a[5m])) > on (cluster, pipeline) b"#),
        Ok(vec![])
    );
    assert_eq!(grouping_problems("sum without (instance) (a)"), Ok(vec![]));
    let problems = grouping_problems(
        "sum(a) / on (namespace) count by (namespace) (b) unless ignoring (cluster) c",
    )
    .expect("parses");
    assert_eq!(
        problems,
        vec![
            "sum does not group by (cluster, ...)",
            "on (namespace) without cluster",
            "count by (namespace) without cluster",
            "ignoring (cluster)",
        ]
    );
}

// ---------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------

#[derive(Debug)]
struct Alert {
    file: String,
    name: String,
    expr: String,
    severity: Option<String>,
    annotations: BTreeMap<String, String>,
}

fn yaml_str(value: &Yaml, key: &str) -> Option<String> {
    value.get(key).and_then(Yaml::as_str).map(str::to_owned)
}

fn rule_files() -> Vec<PathBuf> {
    files("alerts", ".yaml")
}

fn alerts() -> Vec<Alert> {
    let mut alerts = Vec::new();
    for path in rule_files() {
        let doc: Yaml = serde_yaml::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let groups = doc
            .get("groups")
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default();
        for group in groups {
            let rules = group
                .get("rules")
                .and_then(Yaml::as_sequence)
                .cloned()
                .unwrap_or_default();
            for rule in rules {
                let Some(name) = yaml_str(&rule, "alert") else {
                    continue;
                };
                let annotations = rule
                    .get("annotations")
                    .and_then(Yaml::as_mapping)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| {
                                Some((k.as_str()?.to_owned(), v.as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                alerts.push(Alert {
                    file: file.clone(),
                    name,
                    expr: yaml_str(&rule, "expr").unwrap_or_default(),
                    severity: rule.get("labels").and_then(|l| yaml_str(l, "severity")),
                    annotations,
                });
            }
        }
    }
    assert!(!alerts.is_empty(), "no alerts found in alerts/*.yaml");
    alerts
}

fn normalise_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn promtool_accepts_the_rule_files() {
    let output = run_promtool(&["check", "rules"], &rule_files());
    assert_success("promtool check rules alerts/*.yaml", &output);
}

#[test]
fn promtool_unit_tests_pass() {
    // One promtool per file, concurrently: the lifecycle scenarios take a few seconds.
    let children: Vec<_> = files("alerts/tests", ".yaml")
        .into_iter()
        .map(|file| {
            let child = Command::new(promtool())
                .args(["test", "rules"])
                .arg(&file)
                .current_dir(repo())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("running promtool test rules: {e}"));
            (file, child)
        })
        .collect();
    for (file, child) in children {
        let output = child.wait_with_output().expect("promtool finished");
        assert_success(&format!("promtool test rules {}", file.display()), &output);
    }
}

#[test]
fn every_alert_has_severity_annotations_and_a_runbook() {
    let runbooks = read(&repo().join("docs/alerts.md"));
    let headings: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let mut problems = Vec::new();
    for alert in alerts() {
        let who = format!("{} ({})", alert.name, alert.file);
        if !alert
            .severity
            .as_deref()
            .is_some_and(|s| SEVERITIES.contains(&s))
        {
            problems.push(format!(
                "{who}: severity {:?} is not one of {SEVERITIES:?}",
                alert.severity
            ));
        }
        for key in ["summary", "description"] {
            if alert
                .annotations
                .get(key)
                .is_none_or(|v| v.trim().is_empty())
            {
                problems.push(format!("{who}: no {key} annotation"));
            }
        }
        let expected = format!("docs/alerts.md#{}", anchor(&alert.name));
        match alert.annotations.get("runbook_url") {
            Some(url) if *url == expected => {}
            other => problems.push(format!(
                "{who}: runbook_url {other:?}, expected {expected:?}"
            )),
        }
        if !headings.contains(&anchor(&alert.name)) {
            problems.push(format!(
                "{who}: docs/alerts.md has no \"## {}\" section",
                alert.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_uses_only_catalogued_metrics() {
    let known = known_series(&catalogue());
    let exprs: Vec<(String, String)> = alerts()
        .into_iter()
        .map(|a| (format!("{} ({})", a.name, a.file), a.expr))
        .collect();
    let problems = unknown_metrics(&exprs, &known);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn cluster_scoped_alerts_exclude_deleted_clusters_and_group_by_cluster() {
    let mut problems = Vec::new();
    for alert in alerts() {
        if NOT_CLUSTER_SCOPED.contains(&alert.name.as_str()) {
            continue;
        }
        let expr = normalise_spaces(&alert.expr);
        if !expr.contains(DELETED_GUARD) {
            problems.push(format!(
                "{}: does not end with the deleted-cluster guard {DELETED_GUARD:?}",
                alert.name
            ));
        }
        match grouping_problems(&alert.expr) {
            Ok(found) => problems.extend(found.into_iter().map(|p| format!("{}: {p}", alert.name))),
            Err(e) => problems.push(format!("{}: {e}", alert.name)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One `alert_rule_test` entry: the alert, its test group, and the severities expected.
struct AlertCase {
    group: String,
    alertname: String,
    expected_severities: Vec<String>,
}

fn alert_cases() -> Vec<AlertCase> {
    let mut cases = Vec::new();
    for path in files("alerts/tests", ".yaml") {
        let doc: Yaml = serde_yaml::from_str(&read(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for group in doc
            .get("tests")
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default()
        {
            let group_name = yaml_str(&group, "name").unwrap_or_default();
            let tests = group
                .get("alert_rule_test")
                .and_then(Yaml::as_sequence)
                .cloned()
                .unwrap_or_default();
            for test in tests {
                let expected = test
                    .get("exp_alerts")
                    .and_then(Yaml::as_sequence)
                    .cloned()
                    .unwrap_or_default();
                cases.push(AlertCase {
                    group: group_name.clone(),
                    alertname: yaml_str(&test, "alertname").unwrap_or_default(),
                    expected_severities: expected
                        .iter()
                        .map(|a| {
                            a.get("exp_labels")
                                .and_then(|l| yaml_str(l, "severity"))
                                .unwrap_or_default()
                        })
                        .collect(),
                });
            }
        }
    }
    cases
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let cases = alert_cases();
    let mut problems = Vec::new();
    for alert in alerts() {
        let severity = alert.severity.clone().unwrap_or_default();
        let fires = cases
            .iter()
            .any(|c| c.alertname == alert.name && c.expected_severities.contains(&severity));
        let quiet = cases
            .iter()
            .any(|c| c.alertname == alert.name && c.expected_severities.is_empty());
        if !fires {
            problems.push(format!(
                "{} ({severity}): no test where it fires",
                alert.name
            ));
        }
        if !quiet {
            problems.push(format!("{}: no test where it stays quiet", alert.name));
        }
    }
    let names: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    for case in &cases {
        if !names.contains(&case.alertname) {
            problems.push(format!(
                "test group {:?} tests unknown alert {:?}",
                case.group, case.alertname
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn lifecycle_scenarios_cover_every_cluster_scoped_alert() {
    let cases = alert_cases();
    let scenarios = [
        "deleted cluster never alerts",
        "silent cluster alerts, and stops when deleted while silent",
        "cluster being created does not flap",
    ];
    let mut problems = Vec::new();
    for alert in alerts()
        .iter()
        .filter(|a| !NOT_CLUSTER_SCOPED.contains(&a.name.as_str()))
    {
        for scenario in scenarios {
            let quiet = cases.iter().any(|c| {
                c.group == scenario && c.alertname == alert.name && c.expected_severities.is_empty()
            });
            if !quiet {
                problems.push(format!(
                    "{}: scenario {scenario:?} never checks that it stays quiet",
                    alert.name
                ));
            }
        }
    }
    let silent_fires = cases.iter().any(|c| {
        c.group == scenarios[1]
            && c.alertname == "KaasClusterSilent"
            && !c.expected_severities.is_empty()
    });
    if !silent_fires {
        problems.push("the silent-cluster scenario never sees KaasClusterSilent fire".to_owned());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------------

fn dashboards() -> Vec<(String, Json)> {
    files("dashboards", ".json")
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, json)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

fn variables(dashboard: &Json) -> Vec<&Json> {
    dashboard
        .pointer("/templating/list")
        .and_then(Json::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// The query of a `query` variable (a string, or an object with `query`).
fn variable_query(variable: &Json) -> Option<String> {
    match variable.get("query") {
        Some(Json::String(q)) => Some(q.clone()),
        Some(other) => other.get("query").and_then(Json::as_str).map(str::to_owned),
        None => None,
    }
}

/// The PromQL inside a variable query: the selector of `label_values(selector, label)`,
/// the argument of `query_result(...)`, nothing for `label_values(label)` or
/// `label_names()`.
fn promql_of_variable_query(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        let (selector, _label) = inner.rsplit_once(',')?;
        return Some(selector.trim().to_owned());
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return Some(inner.to_owned());
    }
    None
}

/// Names of the variables an expression uses (`$x`, `${x}`, `${x:csv}`, `[[x]]`).
fn variables_used(expr: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (start, close) = if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            (i + 2, Some(b'}'))
        } else if bytes[i] == b'$' {
            (i + 1, None)
        } else if bytes[i] == b'[' && bytes.get(i + 1) == Some(&b'[') {
            (i + 2, Some(b']'))
        } else {
            i += 1;
            continue;
        };
        if bytes.get(start).is_none_or(u8::is_ascii_digit) {
            // `$1` is a regex back-reference (label_replace), not a variable.
            i = start;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if end > start
            && (close.is_none()
                || bytes.get(end).copied() == close
                || bytes.get(end) == Some(&b':'))
        {
            used.insert(expr[start..end].to_owned());
        }
        i = end.max(i + 1);
    }
    used
}

/// The expression with sample values for every variable, ready for promtool.
fn substitute_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (name, value) in BUILTIN_VARIABLES {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    let mut names: Vec<String> = variables_used(&out).into_iter().collect();
    // Longest first, so `$cluster` does not eat the start of `$cluster_name`.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let mut replaced = String::new();
        let mut rest = out.as_str();
        while let Some(pos) = rest.find(&format!("${{{name}")) {
            replaced.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            let end = tail.find('}').map_or(tail.len(), |e| e + 1);
            replaced.push_str(SAMPLE_VARIABLE_VALUE);
            rest = &tail[end..];
        }
        replaced.push_str(rest);
        out = replaced
            .replace(&format!("[[{name}]]"), SAMPLE_VARIABLE_VALUE)
            .replace(&format!("${name}"), SAMPLE_VARIABLE_VALUE);
    }
    out
}

/// Every PromQL expression of a dashboard with where it is: panel targets and the
/// selectors of query variables.
fn dashboard_exprs(file: &str, dashboard: &Json) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for panel in panels(dashboard) {
        let title = panel.get("title").and_then(Json::as_str).unwrap_or("?");
        for target in panel
            .get("targets")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(expr) = target.get("expr").and_then(Json::as_str) {
                let ref_id = target.get("refId").and_then(Json::as_str).unwrap_or("?");
                exprs.push((
                    format!("{file}: panel {title:?} target {ref_id}"),
                    expr.to_owned(),
                ));
            }
        }
    }
    for variable in variables(dashboard) {
        if variable.get("type").and_then(Json::as_str) == Some("query") {
            let name = variable.get("name").and_then(Json::as_str).unwrap_or("?");
            if let Some(expr) = variable_query(variable)
                .as_deref()
                .and_then(promql_of_variable_query)
            {
                exprs.push((format!("{file}: variable {name}"), expr));
            }
        }
    }
    exprs
}

/// A data-source reference other than the `${datasource}` variable (or Grafana's own
/// built-in annotation source).
fn hard_coded_datasources(value: &Json, path: &str, out: &mut Vec<String>) {
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}/{key}");
                if key == "datasource" {
                    let ok = match child {
                        Json::String(s) => s == "${datasource}" || s == "$datasource",
                        Json::Object(ds) => {
                            let uid = ds.get("uid").and_then(Json::as_str);
                            let kind = ds.get("type").and_then(Json::as_str);
                            (uid == Some("${datasource}") && kind == Some("prometheus"))
                                || (kind == Some("grafana") && uid == Some("-- Grafana --"))
                        }
                        Json::Null => true,
                        _ => false,
                    };
                    if !ok {
                        out.push(format!(
                            "{here}: data source {child} is not ${{datasource}}"
                        ));
                    }
                }
                hard_coded_datasources(child, &here, out);
            }
        }
        Json::Array(items) => {
            for (n, child) in items.iter().enumerate() {
                hard_coded_datasources(child, &format!("{path}/{n}"), out);
            }
        }
        _ => {}
    }
}

/// Everything structurally wrong with one dashboard.
fn dashboard_problems(file: &str, dashboard: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if dashboard
            .get(key)
            .and_then(Json::as_str)
            .is_none_or(|v| v.trim().is_empty())
        {
            problems.push(format!("{file}: no {key}"));
        }
    }
    if dashboard.get("schemaVersion").and_then(Json::as_u64) != Some(39) {
        problems.push(format!("{file}: schemaVersion is not 39"));
    }
    let vars = variables(dashboard);
    let ds_var = vars.iter().any(|v| {
        v.get("name").and_then(Json::as_str) == Some("datasource")
            && v.get("type").and_then(Json::as_str) == Some("datasource")
            && v.get("query").and_then(Json::as_str) == Some("prometheus")
    });
    if !ds_var {
        problems.push(format!(
            "{file}: no `datasource` variable of type datasource (query prometheus)"
        ));
    }
    hard_coded_datasources(dashboard, file, &mut problems);
    let defined: BTreeSet<String> = vars
        .iter()
        .filter_map(|v| v.get("name").and_then(Json::as_str).map(str::to_owned))
        .collect();
    let all_panels = panels(dashboard);
    if all_panels.is_empty() {
        problems.push(format!("{file}: no panels"));
    }
    let mut ids = BTreeSet::new();
    for panel in all_panels {
        let title = panel
            .get("title")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let kind = panel.get("type").and_then(Json::as_str).unwrap_or_default();
        let who = format!("{file}: panel {title:?}");
        if title.is_empty() || kind.is_empty() {
            problems.push(format!("{who}: needs a title and a type"));
        }
        if let Some(id) = panel.get("id").and_then(Json::as_u64)
            && !ids.insert(id)
        {
            problems.push(format!("{who}: id {id} used twice"));
        }
        let grid = panel.get("gridPos");
        let dim = |k: &str| grid.and_then(|g| g.get(k)).and_then(Json::as_u64);
        match (dim("h"), dim("w"), dim("x"), dim("y")) {
            (Some(h), Some(w), Some(x), Some(_)) if h > 0 && w > 0 && x + w <= 24 => {}
            _ => problems.push(format!(
                "{who}: gridPos needs h, w, x, y within the 24 columns"
            )),
        }
        if kind == "row" || kind == "text" {
            continue;
        }
        let targets = panel
            .get("targets")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{who}: no targets"));
        }
        for target in targets {
            let expr = target
                .get("expr")
                .and_then(Json::as_str)
                .unwrap_or_default();
            if expr.trim().is_empty() {
                problems.push(format!("{who}: a target without expr"));
            }
            for name in variables_used(expr) {
                if !name.starts_with("__") && !defined.contains(&name) {
                    problems.push(format!(
                        "{who}: uses ${name} but the dashboard defines no such variable"
                    ));
                }
            }
        }
    }
    for variable in vars {
        if let Some(query) = variable_query(variable) {
            for name in variables_used(&query) {
                if !name.starts_with("__") && !defined.contains(&name) {
                    problems.push(format!(
                        "{file}: variable query {query:?} uses undefined ${name}"
                    ));
                }
            }
        }
    }
    problems
}

/// Parses expressions with promtool, as recording rules named after their location.
fn promql_parse_problems(exprs: &[(String, String)]) -> Result<(), String> {
    let mut rules = Vec::new();
    let mut legend = Vec::new();
    for (n, (location, expr)) in exprs.iter().enumerate() {
        let record = format!("dashboard_expression_{n}");
        legend.push(format!("{record}: {location}"));
        let mut rule = serde_json::Map::new();
        rule.insert("record".into(), Json::String(record));
        rule.insert("expr".into(), Json::String(substitute_variables(expr)));
        rules.push(Json::Object(rule));
    }
    let file = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("dashboards.rules.yaml");
    let text = serde_yaml::to_string(&file).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let output = run_promtool(&["check", "rules"], &[path]);
    if output.status.success() {
        return Ok(());
    }
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool names every rule that does not parse; say where each one came from.
    let culprits: Vec<&String> = legend
        .iter()
        .filter(|line| {
            let record = line.split(':').next().unwrap_or_default();
            report.contains(&format!("\"{record}\""))
        })
        .collect();
    Err(format!(
        "{report}\nwhere:\n{}",
        culprits
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

#[test]
fn dashboards_are_well_formed_with_unique_uids() {
    let mut problems = Vec::new();
    let mut uids = BTreeMap::new();
    let all = dashboards();
    for expected in [
        "fleet-overview.json",
        "cluster-detail.json",
        "pipelines.json",
        "probes.json",
        "self-health.json",
    ] {
        if !all.iter().any(|(file, _)| file == expected) {
            problems.push(format!("dashboards/{expected} is missing"));
        }
    }
    for (file, dashboard) in &all {
        problems.extend(dashboard_problems(file, dashboard));
        if let Some(uid) = dashboard.get("uid").and_then(Json::as_str)
            && let Some(other) = uids.insert(uid.to_owned(), file.clone())
        {
            problems.push(format!("{file}: uid {uid} is also used by {other}"));
        }
    }
    let detail = all.iter().find(|(file, _)| file == "cluster-detail.json");
    let cluster_query = detail
        .and_then(|(_, d)| {
            variables(d)
                .into_iter()
                .find(|v| v.get("name").and_then(Json::as_str) == Some("cluster"))
        })
        .and_then(variable_query);
    if cluster_query.as_deref() != Some("label_values(kaas_cluster_info, cluster)") {
        problems.push(format!("cluster-detail.json: $cluster must come from label_values(kaas_cluster_info, cluster), not {cluster_query:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_queries_parse() {
    let exprs: Vec<(String, String)> = dashboards()
        .iter()
        .flat_map(|(file, dashboard)| dashboard_exprs(file, dashboard))
        .collect();
    assert!(
        exprs.len() > 20,
        "suspiciously few expressions: {}",
        exprs.len()
    );
    if let Err(e) = promql_parse_problems(&exprs) {
        panic!("a dashboard expression does not parse:\n{e}");
    }
}

#[test]
fn dashboard_queries_use_only_catalogued_metrics() {
    let known = known_series(&catalogue());
    let exprs: Vec<(String, String)> = dashboards()
        .iter()
        .flat_map(|(file, dashboard)| dashboard_exprs(file, dashboard))
        .collect();
    let problems = unknown_metrics(&exprs, &known);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks themselves catch a broken dashboard.
#[test]
fn a_broken_dashboard_is_caught() {
    let known = known_series(&catalogue());
    let broken = serde_json::json!({
        "title": "Broken",
        "uid": "broken",
        "schemaVersion": 39,
        "templating": { "list": [
            { "name": "datasource", "type": "datasource", "query": "prometheus" },
            { "name": "cluster", "type": "query", "datasource": { "type": "prometheus", "uid": "${datasource}" },
              "query": { "query": "label_values(kaas_no_such_info{tenant=\"$tenant\"}, cluster)" } }
        ]},
        "panels": [
            { "id": 1, "type": "timeseries", "title": "Unknown metric",
              "datasource": { "type": "prometheus", "uid": "${datasource}" },
              "gridPos": { "h": 8, "w": 12, "x": 0, "y": 0 },
              "targets": [{ "refId": "A", "expr": "sum by (cluster) (rate(kaas_agent_no_such_metric_total{cluster=\"$cluster\"}[$__rate_interval]))" }] },
            { "id": 2, "type": "stat", "title": "Hard-coded",
              "datasource": { "type": "prometheus", "uid": "P1809F7CD0C75ACF3" },
              "targets": [{ "refId": "A", "expr": "up{namespace=\"$namespace\"}" }, { "refId": "B" }] },
            { "id": 2, "type": "stat", "title": "Does not parse",
              "datasource": { "type": "prometheus", "uid": "${datasource}" },
              "gridPos": { "h": 4, "w": 20, "x": 12, "y": 0 },
              "targets": [{ "refId": "A", "expr": "sum(rate(up[5m])" }] }
        ]
    });
    let structure = dashboard_problems("broken.json", &broken).join("\n");
    for expected in [
        "P1809F7CD0C75ACF3",
        "panel \"Hard-coded\": gridPos",
        "uses $namespace but the dashboard defines no such variable",
        "panel \"Hard-coded\": a target without expr",
        "id 2 used twice",
        "panel \"Does not parse\": gridPos",
        "uses undefined $tenant",
    ] {
        assert!(
            structure.contains(expected),
            "missing {expected:?} in:\n{structure}"
        );
    }
    let exprs = dashboard_exprs("broken.json", &broken);
    let unknown = unknown_metrics(&exprs, &known).join("\n");
    assert!(
        unknown.contains("panel \"Unknown metric\" target A: kaas_agent_no_such_metric_total is not in docs/metrics.yaml"),
        "{unknown}"
    );
    assert!(
        unknown.contains("variable cluster: kaas_no_such_info"),
        "{unknown}"
    );
    assert!(!unknown.contains(": up "), "up is catalogued: {unknown}");
    let parse = promql_parse_problems(&exprs).expect_err("unbalanced parenthesis");
    assert!(
        parse.contains("panel \"Does not parse\" target A"),
        "{parse}"
    );
    assert!(
        !parse.contains("Unknown metric"),
        "only the broken expression is blamed: {parse}"
    );
}

#[test]
fn variables_are_substituted_with_sample_values() {
    assert_eq!(
        substitute_variables(
            r#"rate(x{cluster=~"$cluster", p="${pipeline:regex}", q="[[old]]"}[$__rate_interval]) offset $__interval"#
        ),
        r#"rate(x{cluster=~"example", p="example", q="example"}[5m]) offset 1m"#
    );
    assert_eq!(
        substitute_variables("avg_over_time(x[$__range])"),
        "avg_over_time(x[1h])"
    );
    assert_eq!(
        variables_used("a{b=\"$x\", c=\"${y}\", d=\"[[z]]\"}[$__rate_interval] $1"),
        ["__rate_interval", "x", "y", "z"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}
