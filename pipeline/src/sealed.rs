//! Targets that carry the agent's credentials are sealed: relabeling may not change
//! where their scrapes go.
//!
//! The `runtime` input scrapes every node's kubelet (`/metrics`, `/metrics/cadvisor`,
//! `/metrics/resource`) with the agent's service-account token, which the kubelet
//! authorizes. A target relabel rule that rewrote `__address__`, `__scheme__` or
//! `__metrics_path__` would send that token to an address of the pipeline writer's
//! choosing. So a pipeline with such an input may not have a target relabel rule that
//! could write or remove one of [`SEALED_TARGET_LABELS`]; the agent additionally drops
//! any credential-bearing target whose address, scheme or path changed after discovery
//! and never attaches the token to another address (defence in depth, for a rule this
//! analysis lets through or a configuration that skipped validation).
//!
//! "Could write" is decided without knowing the labels: a literal target label is
//! compared; a templated target (`replace` with `$1` in `targetLabel`) or a `labelmap`
//! replacement is expanded symbolically, each `$n` standing for any string its capture
//! group can match. So `labelmap` with `__meta_kubernetes_node_label_(.+)` and the
//! default replacement `$1` is refused (the group could match `__address__`), while
//! `__meta_kubernetes_node_label_([a-zA-Z0-9].*)`, which keeps the same node labels
//! (their sanitised names start with a letter or digit), passes.

use std::collections::HashMap;

use regex::Regex;
use regex_syntax::hir::{Hir, HirKind};

use crate::errors::{FieldErrors, field, index};
use crate::processors::{
    DEFAULT_REGEX, DEFAULT_REPLACEMENT, RelabelAction, RelabelConfig, anchored_regex,
};

/// The labels that decide where a scrape goes.
pub const SEALED_TARGET_LABELS: &[&str] = &["__address__", "__scheme__", "__metrics_path__"];

/// The longest sealed label; positions in it fit a `u32` bit set.
const MAX_SEALED_LEN: usize = 16;
/// Distinct `$` references analysed per template; any further one is taken to match
/// anything (so the rule is refused). Real templates name one or two groups; the bound
/// keeps a hostile template with thousands of groups from costing thousands of regex
/// compilations.
const MAX_ANALYSED_REFERENCES: usize = 16;

/// Checks the target relabel rules of a pipeline whose `input` input carries the agent's
/// credentials; every rule that could write or remove a sealed label is an error at the
/// field that does it.
pub(crate) fn check_relabel_rules(
    configs: &[RelabelConfig],
    path: &str,
    input: &str,
    errors: &mut FieldErrors,
) {
    for (i, config) in configs.iter().enumerate() {
        let rule_path = index(path, i);
        let Some(action) = config
            .action
            .as_deref()
            .map_or(Some(RelabelAction::Replace), RelabelAction::parse)
        else {
            continue; // reported by the rule's own validation
        };
        let Ok(regex) = anchored_regex(config.regex.as_deref().unwrap_or(DEFAULT_REGEX)) else {
            continue;
        };
        let target = config.target_label.as_deref().unwrap_or("");
        let replacement = config.replacement.as_deref().unwrap_or(DEFAULT_REPLACEMENT);
        // Reading the capture groups costs a parse: only templates need it.
        let groups = || CaptureGroups::of(&regex);
        let (field_name, verb, touched): (&str, &str, Vec<&str>) = match action {
            RelabelAction::Replace if !target.contains('$') => {
                ("targetLabel", "set", sealed_where(|s| target == s))
            }
            RelabelAction::Replace => {
                let groups = groups();
                (
                    "targetLabel",
                    "set",
                    sealed_where(|s| could_expand_to(target, &groups, s)),
                )
            }
            RelabelAction::HashMod | RelabelAction::Lowercase | RelabelAction::Uppercase => {
                ("targetLabel", "set", sealed_where(|s| target == s))
            }
            RelabelAction::LabelMap => {
                let groups = groups();
                (
                    "replacement",
                    "set",
                    sealed_where(|s| could_expand_to(replacement, &groups, s)),
                )
            }
            RelabelAction::LabelDrop => ("regex", "remove", sealed_where(|s| regex.is_match(s))),
            RelabelAction::LabelKeep => ("regex", "remove", sealed_where(|s| !regex.is_match(s))),
            _ => continue,
        };
        if touched.is_empty() {
            continue;
        }
        let mut reason = format!(
            "could {verb} {}: the {input} input's targets carry the agent's credentials, which \
             go only to the address, scheme and path discovery found; relabel in a pipeline \
             without the {input} input",
            touched.join(" or ")
        );
        if field_name == "replacement" || target.contains('$') {
            reason.push_str(
                " (a captured part that cannot start with '_', such as ([a-zA-Z0-9].*), cannot \
                 form it)",
            );
        }
        errors.add(field(&rule_path, field_name), reason);
    }
}

/// The sealed labels for which `touches` holds.
fn sealed_where(touches: impl Fn(&str) -> bool) -> Vec<&'static str> {
    SEALED_TARGET_LABELS
        .iter()
        .copied()
        .filter(|sealed| touches(sealed))
        .collect()
}

/// What each capture group of a regex can match, as a regex of its own.
struct CaptureGroups {
    /// By group index and by name; `None` when the regex could not be read, in which
    /// case every reference is assumed to match anything.
    groups: Option<(HashMap<usize, Hir>, HashMap<String, usize>)>,
}

/// What a `$` reference expands to.
enum Expansion {
    /// A group that does not exist: nothing.
    Empty,
    /// Unknown: anything.
    Any,
    /// What this anchored regex matches.
    Pattern(Regex),
}

impl CaptureGroups {
    fn of(regex: &Regex) -> Self {
        let Ok(hir) = regex_syntax::parse(regex.as_str()) else {
            return Self { groups: None };
        };
        let mut by_index = HashMap::new();
        let mut by_name = HashMap::new();
        let mut stack = vec![&hir];
        while let Some(node) = stack.pop() {
            if let HirKind::Capture(capture) = node.kind() {
                let group = capture.index as usize;
                by_index.insert(group, (*capture.sub).clone());
                if let Some(name) = &capture.name {
                    by_name.insert(name.to_string(), group);
                }
            }
            stack.extend(node.kind().subs());
        }
        Self {
            groups: Some((by_index, by_name)),
        }
    }

    fn expansion(&self, reference: &str) -> Expansion {
        let Some((by_index, by_name)) = &self.groups else {
            return Expansion::Any;
        };
        let group = match reference.parse::<usize>() {
            Ok(number) => Some(number),
            Err(_) => by_name.get(reference).copied(),
        };
        match group.and_then(|g| by_index.get(&g)) {
            None => Expansion::Empty,
            Some(sub) => match anchored_regex(&sub.to_string()) {
                Ok(regex) => Expansion::Pattern(regex),
                Err(_) => Expansion::Any,
            },
        }
    }
}

/// A piece of a template: literal text or a `$` reference to a group.
enum Piece<'a> {
    Literal(&'a str),
    Reference(&'a str),
}

/// Splits a template as the regex crate's `Captures::expand` (and so Prometheus, whose
/// Go expansion agrees) reads it: `$$` is a `$`, `${name}` and the longest
/// `[A-Za-z0-9_]` run after `$` name a group, a `$` naming nothing is literal.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push(Piece::Literal(&rest[..at]));
        rest = &rest[at..];
        let after = &rest[1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Piece::Literal("$"));
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
        {
            out.push(Piece::Reference(&braced[..end]));
            rest = &braced[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if end == 0 {
                out.push(Piece::Literal("$"));
            } else {
                out.push(Piece::Reference(&after[..end]));
            }
            rest = &after[end..];
        }
    }
    out.push(Piece::Literal(rest));
    out
}

/// Whether `template`, with each reference standing for anything its group can match,
/// can expand to exactly `target`. Linear in the template: the positions of `target`
/// reachable after each piece are a bit set, and each group's matches over `target`'s
/// substrings are computed once.
fn could_expand_to(template: &str, groups: &CaptureGroups, target: &str) -> bool {
    let target = target.as_bytes();
    let n = target.len();
    debug_assert!(n <= MAX_SEALED_LEN);
    let mut tables: HashMap<&str, [u32; MAX_SEALED_LEN + 1]> = HashMap::new();
    let mut reach: u32 = 1; // position 0
    for piece in pieces(template) {
        let mut next = 0u32;
        match piece {
            Piece::Literal(text) => {
                for start in positions(reach, n) {
                    if target[start..].starts_with(text.as_bytes()) {
                        next |= 1 << (start + text.len());
                    }
                }
            }
            Piece::Reference(name) => {
                let analysed = tables.len() < MAX_ANALYSED_REFERENCES;
                let table = tables.entry(name).or_insert_with(|| {
                    let expansion = if analysed {
                        groups.expansion(name)
                    } else {
                        Expansion::Any
                    };
                    match_table(&expansion, target)
                });
                for start in positions(reach, n) {
                    next |= table[start];
                }
            }
        }
        reach = next;
        if reach == 0 {
            return false;
        }
    }
    reach & (1 << n) != 0
}

/// The positions set in `reach`.
fn positions(reach: u32, n: usize) -> impl Iterator<Item = usize> {
    (0..=n).filter(move |i| reach & (1 << i) != 0)
}

/// For each start position, the end positions at which `expansion` matches
/// `target[start..end]` exactly.
fn match_table(expansion: &Expansion, target: &[u8]) -> [u32; MAX_SEALED_LEN + 1] {
    let n = target.len();
    let mut table = [0u32; MAX_SEALED_LEN + 1];
    for (start, ends) in table.iter_mut().enumerate().take(n + 1) {
        for end in start..=n {
            let matches = match expansion {
                Expansion::Empty => start == end,
                Expansion::Any => true,
                Expansion::Pattern(regex) => {
                    std::str::from_utf8(&target[start..end]).is_ok_and(|text| regex.is_match(text))
                }
            };
            if matches {
                *ends |= 1 << end;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expands(template: &str, regex: &str, target: &str) -> bool {
        let regex = anchored_regex(regex).unwrap();
        could_expand_to(template, &CaptureGroups::of(&regex), target)
    }

    #[test]
    fn literal_and_templated_targets() {
        assert!(expands("__address__", "(.*)", "__address__"));
        assert!(!expands("address", "(.*)", "__address__"));
        assert!(expands("$1", "(.*)", "__address__"));
        assert!(expands("${1}", "(.*)", "__address__"));
        assert!(expands("__${1}__", "(.*)", "__address__"));
        assert!(expands("__${x}__", "(?P<x>a.*s)", "__address__"));
        assert!(!expands("__${x}__", "(?P<x>b.*)", "__address__"));
        assert!(!expands("pod_$1", "(.*)", "__address__"));
        assert!(!expands("$1", "([a-zA-Z0-9].*)", "__address__"));
        assert!(!expands(
            "$1",
            "__meta_kubernetes_node_label_([a-zA-Z0-9].*)",
            "__scheme__"
        ));
        assert!(expands(
            "$1",
            "__meta_kubernetes_node_label_(.+)",
            "__scheme__"
        ));
        // Two references split the name between them.
        assert!(expands("$1$2", "(_+)(a.*)", "__address__"));
        assert!(!expands("$1$2", "(_+)(b.*)", "__address__"));
        // A missing group expands to nothing; `$$` is a dollar; `$1x` names group "1x".
        assert!(expands("__address__$2", "(.*)", "__address__"));
        assert!(!expands("$$1", "(.*)", "__address__"));
        assert!(!expands("$1x", "(.*)", "__address__x"));
    }

    #[test]
    fn case_insensitive_groups_are_read_with_their_flags() {
        assert!(expands("$1", "(?i)(__ADDRESS__)", "__address__"));
        assert!(!expands("$1", "(__ADDRESS__)", "__address__"));
    }

    #[test]
    fn long_templates_stay_linear() {
        // 200,000 references: each group's table is built once, each piece is a few
        // bit operations (a walk over every split would never finish).
        let template = "$1".repeat(200_000);
        assert!(expands(&template, "(.*)", "__metrics_path__"));
        assert!(!expands(
            &format!("{template}-"),
            "(.*)",
            "__metrics_path__"
        ));
        // Thousands of distinct groups, each matching only "x" or nothing: the first 16
        // are read, the rest count as anything, which can only refuse more.
        let groups = "(x?)".repeat(2_000);
        let reference = |i: usize| format!("${{{i}}}");
        let all: String = (1..=2_000).map(reference).collect();
        let first: String = (1..=MAX_ANALYSED_REFERENCES).map(reference).collect();
        assert!(!expands(&first, &groups, "__address__"));
        assert!(expands(&all, &groups, "__address__"));
    }
}
