//! Where a log pipeline's records come from: container logs tailed on each node
//! (`runtime`), the node's own logs (`node`: journal units and plain files) and records
//! pushed over OTLP (`otlp`). Field names follow Kyma's `LogPipeline` where the concept
//! is the same (`runtime`, `namespaces`, `containers`, `keepOriginalBody`).
//!
//! What a pipeline may read on a node depends on who wrote it: journal units only from
//! the provider's allow-list, and the journal at all only in the provider's own
//! pipelines unless the provider allows tenants ([`NodeLogPolicy`]); files only by
//! patterns that stay under the provider's log roots and cannot reach the agent's data
//! directory or any credential ([`crate::paths`]).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index};
use crate::input::{NamespaceSelector, PushInput, check_names};
use crate::names::RESERVED_PIPELINE_PREFIX;
use crate::policy::{NodeLogPolicy, Origin, ValidationContext};
use crate::processors::regex_reason;
use crate::selector::PodSelector;
use crate::units::{format_duration, parse_duration};

/// How long a multiline record waits for its next line before it is sent as it is.
/// Fluent Bit's multiline filter flushes after 2 s: long enough for a stack trace
/// written in several pieces, short enough that a lone line is not noticeably late.
pub const DEFAULT_MULTILINE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest flush timeout accepted: a pending record is held in memory that long,
/// and a minute's delay on every lone line is worse than a split stack trace.
pub const MAX_MULTILINE_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest systemd unit name (`UNIT_NAME_MAX` is 256 with the terminating NUL).
pub const MAX_UNIT_NAME_LEN: usize = 255;
/// The unit types whose output lands in the journal under `_SYSTEMD_UNIT`.
const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".slice"];

/// The pipeline's inputs. At least one must be enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogInput {
    /// Container logs (stdout and stderr) tailed from the node's `/var/log/pods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeLogInput>,
    /// The node's own logs: journal units and plain log files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeLogInput>,
    /// Log records pushed by workloads over OTLP to the agent's push ports (gRPC 4317,
    /// HTTP 4318); authenticated and filtered by namespace like metric pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<PushInput>,
}

/// Container logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeLogInput {
    /// Whether this input is on.
    #[serde(default)]
    pub enabled: bool,
    /// Which namespaces' containers to read; system namespaces are left out unless
    /// `system: true` or listed in `include`.
    #[serde(default, skip_serializing_if = "crate::pipeline::is_default")]
    pub namespaces: NamespaceSelector,
    /// Which containers (by container name) to read.
    #[serde(default, skip_serializing_if = "crate::pipeline::is_default")]
    pub containers: ContainerSelector,
    /// Only pods whose labels match; every pod when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<PodSelector>,
    /// Keep the original line as `log.original` when its JSON body was parsed into
    /// attributes. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_body: Option<bool>,
    /// Recombine records that span several lines, such as stack traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<Multiline>,
    /// Where to start in files that existed before the agent first saw them: `end`
    /// (default) or `beginning`. New files are always read from their beginning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<StartAt>,
    /// Add the pod's labels as `k8s.pod.label.<key>` attributes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_labels: bool,
    /// Add the pod's annotations as `k8s.pod.annotation.<key>` attributes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_annotations: bool,
}

/// Container name filter: `include` or `exclude`, not both; every container with
/// neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSelector {
    /// Only containers with these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Every container but these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl ContainerSelector {
    /// Whether logs of a container named `name` pass this filter.
    pub fn admits(&self, name: &str) -> bool {
        if !self.include.is_empty() {
            return self.include.iter().any(|c| c == name);
        }
        !self.exclude.iter().any(|c| c == name)
    }
}

/// Multiline recombination: a line matching `firstLinePattern` starts a record; the
/// lines after it, up to the next such line, belong to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Multiline {
    /// A regular expression matching the first line of a record (searched, not
    /// anchored; use `^` to anchor), e.g. `^\d{4}-\d{2}-\d{2}`.
    #[serde(default)]
    pub first_line_pattern: String,
    /// How long a record waits for more lines before it is sent. Default `2s`, at
    /// most `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_timeout: Option<String>,
}

/// Where to start reading a file the agent has not read before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// At its end: only what is written from now on.
    #[default]
    End,
    /// At its beginning: everything it holds.
    Beginning,
}

/// The node's own logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeLogInput {
    /// Whether this input is on.
    #[serde(default)]
    pub enabled: bool,
    /// systemd journal units, such as `kubelet.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalInput>,
    /// Plain log files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileInput>,
    /// Where to start in files and a journal the agent has not read before: `end`
    /// (default) or `beginning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<StartAt>,
}

/// Journal units to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JournalInput {
    /// Unit names, each one the provider allows (by default `kubelet.service`,
    /// `containerd.service` and `crio.service`).
    #[serde(default)]
    pub units: Vec<String>,
}

/// Plain log files to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileInput {
    /// Absolute glob patterns (`*`, `?`, `[abc]`, `**` for any depth) under the roots
    /// the provider allows (by default `/var/log`); symlinks leading out of the root
    /// are not followed.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// The inputs that are on, as the agent runs them.
#[derive(Clone, Debug, Default)]
pub struct ValidatedLogInputs {
    /// Container logs.
    pub runtime: Option<ValidatedRuntimeLogInput>,
    /// Node logs.
    pub node: Option<ValidatedNodeLogInput>,
    /// Pushed OTLP logs.
    pub otlp: Option<PushInput>,
}

/// The runtime input with its defaults filled in and its pattern compiled.
#[derive(Clone, Debug)]
pub struct ValidatedRuntimeLogInput {
    /// Which namespaces.
    pub namespaces: NamespaceSelector,
    /// Which containers.
    pub containers: ContainerSelector,
    /// Which pods; empty selects all.
    pub pod_selector: PodSelector,
    /// Keep the original line when a JSON body was parsed.
    pub keep_original_body: bool,
    /// Multiline recombination, when asked for.
    pub multiline: Option<ValidatedMultiline>,
    /// Where to start in existing files.
    pub start_at: StartAt,
    /// Add pod labels.
    pub pod_labels: bool,
    /// Add pod annotations.
    pub pod_annotations: bool,
}

/// Compiled multiline settings.
#[derive(Clone, Debug)]
pub struct ValidatedMultiline {
    /// Matches a record's first line.
    pub first_line: Regex,
    /// How long a record waits for more lines.
    pub flush_timeout: Duration,
}

/// The node input as the agent runs it.
#[derive(Clone, Debug)]
pub struct ValidatedNodeLogInput {
    /// Journal units, each allowed.
    pub journal_units: Vec<String>,
    /// File patterns, each under an allowed root.
    pub files: Vec<FileGlob>,
    /// Where to start in existing files and the journal.
    pub start_at: StartAt,
}

/// A checked file pattern.
#[derive(Clone, Debug)]
pub struct FileGlob {
    /// The pattern as written.
    pub pattern: String,
    /// Its longest directory without wildcards: where discovery starts.
    pub base: PathBuf,
    /// Matches the whole path of a file the pattern names.
    pub matcher: Regex,
}

impl LogInput {
    /// Checks every input; `pipeline_name` decides whether the pipeline is the
    /// provider's own.
    pub(crate) fn validate(
        &self,
        path: &str,
        pipeline_name: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> ValidatedLogInputs {
        let enabled = self.runtime.as_ref().is_some_and(|i| i.enabled)
            || self.node.as_ref().is_some_and(|i| i.enabled)
            || self.otlp.as_ref().is_some_and(|i| i.enabled);
        if !enabled {
            errors.add(
                path,
                "no input is enabled: enable at least one of runtime, node or otlp",
            );
        }
        let runtime = self
            .runtime
            .as_ref()
            .map(|input| input.validate(&field(path, "runtime"), errors));
        let node = self
            .node
            .as_ref()
            .map(|input| input.validate(&field(path, "node"), pipeline_name, context, errors));
        if let Some(otlp) = &self.otlp {
            otlp.validate(&field(path, "otlp"), context, errors);
        }
        ValidatedLogInputs {
            runtime: runtime.filter(|_| self.runtime.as_ref().is_some_and(|i| i.enabled)),
            node: node.filter(|_| self.node.as_ref().is_some_and(|i| i.enabled)),
            otlp: self.otlp.clone().filter(|i| i.enabled),
        }
    }
}

impl RuntimeLogInput {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> ValidatedRuntimeLogInput {
        self.namespaces.validate(&field(path, "namespaces"), errors);
        let containers_path = field(path, "containers");
        let containers = &self.containers;
        if !containers.include.is_empty() && !containers.exclude.is_empty() {
            errors.add(
                &containers_path,
                "set include or exclude, not both: include already leaves out every container \
                 it does not list",
            );
        }
        for (name, list) in [
            ("include", &containers.include),
            ("exclude", &containers.exclude),
        ] {
            check_names(&field(&containers_path, name), list, "container", errors);
        }
        if let Some(selector) = &self.pod_selector {
            selector.validate(&field(path, "podSelector"), errors);
        }
        let multiline = self
            .multiline
            .as_ref()
            .and_then(|m| m.validate(&field(path, "multiline"), errors));
        ValidatedRuntimeLogInput {
            namespaces: self.namespaces.clone(),
            containers: self.containers.clone(),
            pod_selector: self.pod_selector.clone().unwrap_or_default(),
            keep_original_body: self.keep_original_body.unwrap_or(true),
            multiline,
            start_at: self.start_at.unwrap_or_default(),
            pod_labels: self.pod_labels,
            pod_annotations: self.pod_annotations,
        }
    }
}

impl Multiline {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<ValidatedMultiline> {
        let pattern_path = field(path, "firstLinePattern");
        let first_line = if self.first_line_pattern.is_empty() {
            errors.add(
                &pattern_path,
                "required: a regular expression matching the first line of a record",
            );
            None
        } else {
            Regex::new(&self.first_line_pattern)
                .map_err(|error| errors.add(&pattern_path, regex_reason(&error)))
                .ok()
        };
        let timeout_path = field(path, "flushTimeout");
        let flush_timeout = match self.flush_timeout.as_deref().map(parse_duration) {
            None => DEFAULT_MULTILINE_FLUSH_TIMEOUT,
            Some(Err(reason)) => {
                errors.add(timeout_path, reason);
                DEFAULT_MULTILINE_FLUSH_TIMEOUT
            }
            Some(Ok(timeout)) if timeout.is_zero() => {
                errors.add(timeout_path, "must be longer than 0s");
                DEFAULT_MULTILINE_FLUSH_TIMEOUT
            }
            Some(Ok(timeout)) if timeout > MAX_MULTILINE_FLUSH_TIMEOUT => {
                errors.add(
                    timeout_path,
                    format!(
                        "{} is longer than the maximum of {}: every lone line would wait that \
                         long before it is sent",
                        format_duration(timeout),
                        format_duration(MAX_MULTILINE_FLUSH_TIMEOUT)
                    ),
                );
                DEFAULT_MULTILINE_FLUSH_TIMEOUT
            }
            Some(Ok(timeout)) => timeout,
        };
        Some(ValidatedMultiline {
            first_line: first_line?,
            flush_timeout,
        })
    }
}

impl NodeLogInput {
    fn validate(
        &self,
        path: &str,
        pipeline_name: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> ValidatedNodeLogInput {
        let units = self.journal.as_ref().map(|j| j.units.as_slice());
        let patterns = self.files.as_ref().map(|f| f.paths.as_slice());
        if self.enabled && units.is_none_or(<[_]>::is_empty) && patterns.is_none_or(<[_]>::is_empty)
        {
            errors.add(
                path,
                "enabled but reads nothing: list journal units or file paths",
            );
        }
        let policy = &context.policy.node_logs;
        if let Some(units) = units {
            let journal_path = field(path, "journal");
            if !may_read_journal(pipeline_name, context) {
                errors.add(
                    &journal_path,
                    format!(
                        "only the provider's own pipelines may read the node's journal, which \
                         can hold node secrets; not {} (the provider has not allowed tenants to)",
                        context.origin.describe()
                    ),
                );
            }
            check_units(&field(&journal_path, "units"), units, policy, errors);
        }
        let files = patterns
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, pattern)| {
                let pattern_path = index(&field(&field(path, "files"), "paths"), i);
                FileGlob::parse(pattern, policy)
                    .map_err(|reason| errors.add(pattern_path, reason))
                    .ok()
            })
            .collect();
        ValidatedNodeLogInput {
            journal_units: units.map(<[_]>::to_vec).unwrap_or_default(),
            files,
            start_at: self.start_at.unwrap_or_default(),
        }
    }
}

/// Whether a pipeline of this name and origin may read the node's journal: a
/// standalone agent's own file and the provider's own pipelines may; tenants' only
/// where the provider allows it.
fn may_read_journal(pipeline_name: &str, context: &ValidationContext) -> bool {
    match context.origin {
        Origin::Standalone => true,
        Origin::Observer if pipeline_name.starts_with(RESERVED_PIPELINE_PREFIX) => true,
        Origin::Observer | Origin::InCluster => context.policy.node_logs.tenant_journal,
    }
}

fn check_units(path: &str, units: &[String], policy: &NodeLogPolicy, errors: &mut FieldErrors) {
    if units.is_empty() {
        errors.add(path, "list at least one unit, such as kubelet.service");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, unit) in units.iter().enumerate() {
        let unit_path = index(path, i);
        let well_formed = unit.len() <= MAX_UNIT_NAME_LEN
            && UNIT_SUFFIXES
                .iter()
                .any(|suffix| unit.len() > suffix.len() && unit.ends_with(suffix))
            && unit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
        if !well_formed {
            errors.add(
                unit_path,
                format!(
                    "{unit:?} is not a systemd unit name such as kubelet.service (letters, \
                     digits and :-_.\\@, ending in {})",
                    UNIT_SUFFIXES.join(", ")
                ),
            );
        } else if !policy.journal_units.contains(unit) {
            let allowed: Vec<&str> = policy.journal_units.iter().map(String::as_str).collect();
            errors.add(
                unit_path,
                format!(
                    "the provider does not allow pipelines to read unit {unit:?}; allowed: {}",
                    allowed.join(", ")
                ),
            );
        } else if !seen.insert(unit) {
            errors.add(unit_path, format!("unit {unit:?} is listed twice"));
        }
    }
}

impl FileGlob {
    /// Checks a pattern against `policy` and compiles it.
    fn parse(pattern: &str, policy: &NodeLogPolicy) -> Result<Self, String> {
        policy.files.check(pattern)?;
        let base = literal_base(pattern);
        if let Some((denied, why)) = policy.files.denied_below(&base) {
            return Err(format!(
                "{pattern:?} could match files under {}, which no pipeline may read ({why}); \
                 start the pattern below it",
                denied.display()
            ));
        }
        let matcher = glob_regex(pattern)?;
        Ok(Self {
            pattern: pattern.to_owned(),
            base,
            matcher,
        })
    }
}

/// The pattern's leading directories that hold no wildcard.
fn literal_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    let components: Vec<Component<'_>> = Path::new(pattern).components().collect();
    // The last component names files, so it is never part of the base.
    for component in &components[..components.len().saturating_sub(1)] {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[']) {
            break;
        }
        base.push(component);
    }
    base
}

/// Translates a glob into a regex over whole paths: `*` and `?` stay within one
/// directory, `[...]` is a class (`[!...]` negated), a whole `**` component is any
/// number of directories.
fn glob_regex(pattern: &str) -> Result<Regex, String> {
    let mut regex = String::from("^");
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "**" {
            regex.push_str("(?:[^/]+/)*");
            continue;
        }
        if part.contains("**") {
            return Err(format!(
                "{pattern:?}: '**' must be a whole path component, as in /var/log/**/*.log"
            ));
        }
        let mut chars = part.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => regex.push_str("[^/]*"),
                '?' => regex.push_str("[^/]"),
                '[' => {
                    let mut class = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        class.push(c);
                    }
                    let (negated, members) = match class.strip_prefix('!') {
                        Some(rest) => ("^", rest),
                        None => ("", class.as_str()),
                    };
                    if !closed || members.is_empty() {
                        return Err(format!(
                            "{pattern:?}: a '[' opens a character class that is empty or never \
                             closed with ']'"
                        ));
                    }
                    regex.push('[');
                    if !negated.is_empty() {
                        // A negated class still never crosses a directory.
                        regex.push_str("^/");
                    }
                    for member in members.chars() {
                        if !(member.is_alphanumeric() || member == '-') {
                            regex.push('\\');
                        }
                        regex.push(member);
                    }
                    regex.push(']');
                }
                other => regex.push_str(&regex::escape(&other.to_string())),
            }
        }
        if i + 1 < parts.len() {
            regex.push('/');
        }
    }
    regex.push('$');
    Regex::new(&regex).map_err(|error| format!("{pattern:?}: {}", regex_reason(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> Regex {
        glob_regex(pattern).unwrap()
    }

    #[test]
    fn globs_match_within_a_directory_unless_double_starred() {
        assert!(glob("/var/log/*.log").is_match("/var/log/syslog.log"));
        assert!(!glob("/var/log/*.log").is_match("/var/log/nginx/access.log"));
        assert!(glob("/var/log/**/*.log").is_match("/var/log/nginx/access.log"));
        assert!(glob("/var/log/**/*.log").is_match("/var/log/a.log"));
        assert!(glob("/var/log/app-?.[lt]og").is_match("/var/log/app-1.log"));
        assert!(!glob("/var/log/app-[!1].log").is_match("/var/log/app-1.log"));
        assert!(glob("/var/log/app+(x).log").is_match("/var/log/app+(x).log"));
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(glob_regex("/var/log/[abc.log").is_err());
        assert!(glob_regex("/var/log/a**.log").is_err());
    }

    #[test]
    fn the_base_is_the_wildcard_free_directory() {
        assert_eq!(literal_base("/var/log/*.log"), PathBuf::from("/var/log"));
        assert_eq!(
            literal_base("/var/log/pods/*/app/0.log"),
            PathBuf::from("/var/log/pods")
        );
        assert_eq!(literal_base("/var/log/syslog"), PathBuf::from("/var/log"));
    }

    #[test]
    fn containers_are_filtered_by_name() {
        let exclude = ContainerSelector {
            exclude: vec!["istio-proxy".into()],
            ..Default::default()
        };
        assert!(!exclude.admits("istio-proxy"));
        assert!(exclude.admits("app"));
        let include = ContainerSelector {
            include: vec!["app".into()],
            ..Default::default()
        };
        assert!(include.admits("app"));
        assert!(!include.admits("sidecar"));
    }
}
