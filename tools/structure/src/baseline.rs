//! The ratchet: violations known when the check was introduced, which may remain
//! until they are fixed, and no others.
//!
//! The baseline is a text file with one violation per line, in the form of
//! [`Violation::key`](crate::Violation::key) (`cycle <crate root> <module>…`,
//! `long-file <path>`, `long-fn <path> <name>`), plus `#` comments and blank lines.
//! A check passes when the violations found are exactly those listed: a new one fails
//! it, and so does a listed one that no longer occurs, so that the list only shrinks
//! and a fixed violation cannot quietly come back.

use std::collections::BTreeSet;

use crate::Error;
use crate::report::{Report, Violation};

/// Where the workspace's baseline lives, relative to the workspace root.
pub const BASELINE_PATH: &str = "tools/structure/baseline.txt";

/// The command that rewrites the baseline from the current tree.
pub const WRITE_BASELINE_COMMAND: &str = "cargo run -p kaas-structure -- --write-baseline";

const KINDS: &[&str] = &["cycle", "long-file", "long-fn"];

/// The listed violations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baseline {
    /// Their keys.
    pub entries: BTreeSet<String>,
}

/// Reads a baseline; every line that is not blank or a comment must be an entry.
pub fn parse(text: &str) -> Result<Baseline, Error> {
    let mut entries = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let kind = line.split_whitespace().next().unwrap_or_default();
        let words = line.split_whitespace().count();
        let enough = match kind {
            "cycle" => words >= 4,
            _ => words >= 2,
        };
        if !KINDS.contains(&kind) || !enough {
            return Err(Error::Baseline {
                line: index + 1,
                text: line.to_owned(),
            });
        }
        entries.insert(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(Baseline { entries })
}

/// The baseline text listing every violation of `report`.
pub fn render(report: &Report) -> String {
    let keys: BTreeSet<String> = report.violations().iter().map(Violation::key).collect();
    let mut text = String::from(
        "# Structure violations that predate the structure check (tools/structure). The check\n\
         # fails on any violation not listed here and on any line here that no longer occurs:\n\
         # fix a violation, then delete its line. Do not add lines for new violations.\n\
         # Regenerate with: ",
    );
    text.push_str(WRITE_BASELINE_COMMAND);
    text.push('\n');
    for key in keys {
        text.push_str(&key);
        text.push('\n');
    }
    text
}

/// How a report differs from a baseline.
#[derive(Debug)]
pub struct Comparison<'r> {
    /// Violations the baseline does not list.
    pub new: Vec<Violation<'r>>,
    /// Baseline entries that no longer occur.
    pub gone: Vec<String>,
}

impl Comparison<'_> {
    /// Whether the report matches the baseline exactly.
    pub fn passed(&self) -> bool {
        self.new.is_empty() && self.gone.is_empty()
    }

    /// For a new cycle that is what remains of a listed one after part of it was
    /// fixed (its modules are a subset of a gone entry's, in the same crate): that
    /// entry.
    pub fn remains_of(&self, violation: &Violation<'_>) -> Option<&str> {
        let Violation::Cycle(cycle) = violation else {
            return None;
        };
        self.gone.iter().map(String::as_str).find(|entry| {
            let listed: Vec<&str> = entry.split_whitespace().skip(2).collect();
            entry.starts_with(&format!("cycle {} ", cycle.krate))
                && cycle.modules.iter().all(|m| listed.contains(&m.as_str()))
        })
    }
}

/// Compares `report` with `baseline`.
pub fn compare<'r>(report: &'r Report, baseline: &Baseline) -> Comparison<'r> {
    let violations = report.violations();
    let found: BTreeSet<String> = violations.iter().map(Violation::key).collect();
    let new = violations
        .into_iter()
        .filter(|v| !baseline.entries.contains(&v.key()))
        .collect();
    let gone = baseline
        .entries
        .iter()
        .filter(|e| !found.contains(*e))
        .cloned()
        .collect();
    Comparison { new, gone }
}

impl std::fmt::Display for Comparison<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.passed() {
            return writeln!(f, "The structure matches {BASELINE_PATH}.");
        }
        if !self.new.is_empty() {
            writeln!(
                f,
                "Structure violations that {BASELINE_PATH} does not list:\n"
            )?;
            for violation in &self.new {
                writeln!(f, "  {violation}")?;
                if let Some(listed) = self.remains_of(violation) {
                    let key = violation.key();
                    writeln!(
                        f,
                        "    This is what remains of the listed `{listed}`: replace that line with `{key}`."
                    )?;
                }
            }
            writeln!(
                f,
                "\nRun `cargo run -p kaas-structure` for the whole report. Fix them rather than listing them. A cycle: move what both sides need into a \
                 module that depends on neither, or pass it in (a trait or a value) instead of \
                 importing it; each edge above shows one reference to start from. A long file or \
                 function: split it by responsibility (never part1/part2).\n"
            )?;
        }
        if !self.gone.is_empty() {
            writeln!(f, "Entries of {BASELINE_PATH} that no longer occur:\n")?;
            for entry in &self.gone {
                writeln!(f, "  {entry}")?;
            }
            writeln!(
                f,
                "\nDelete these lines so the fixed violations cannot come back (or run \
                 `{WRITE_BASELINE_COMMAND}` and check that its diff only removes lines).\n"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LongFile, LongFn};

    fn report() -> Report {
        Report {
            long_files: vec![LongFile {
                path: "a/src/big.rs".to_owned(),
                lines: 950,
            }],
            long_fns: vec![LongFn {
                path: "a/src/x.rs".to_owned(),
                name: "<A as B>::run".to_owned(),
                line: 3,
                lines: 200,
            }],
            ..Report::default()
        }
    }

    #[test]
    fn a_rendered_baseline_parses_back_and_matches() {
        let report = report();
        let baseline = parse(&render(&report)).unwrap();
        assert_eq!(baseline.entries.len(), 2);
        assert!(compare(&report, &baseline).passed());
    }

    #[test]
    fn new_and_gone_entries_are_both_reported() {
        let report = report();
        let baseline =
            parse("# old\n\nlong-file a/src/big.rs\nlong-fn a/src/y.rs  old_fn\n").unwrap();
        let comparison = compare(&report, &baseline);
        let new: Vec<String> = comparison.new.iter().map(Violation::key).collect();
        assert_eq!(new, ["long-fn a/src/x.rs <A as B>::run"]);
        assert_eq!(comparison.gone, ["long-fn a/src/y.rs old_fn"]);
        let message = comparison.to_string();
        assert!(
            message.contains("a/src/x.rs:3 fn <A as B>::run: 200 lines (limit 120)"),
            "{message}"
        );
        assert!(message.contains("Delete these lines"), "{message}");
    }

    #[test]
    fn a_cycle_that_shrank_is_pointed_at_the_line_it_replaces() {
        let cycle = crate::Cycle {
            krate: "a/src/lib.rs".to_owned(),
            parent: String::new(),
            modules: vec!["x".to_owned(), "y".to_owned()],
            edges: Vec::new(),
        };
        let report = Report {
            cycles: vec![cycle],
            ..Report::default()
        };
        let baseline = parse("cycle a/src/lib.rs w x y\ncycle b/src/lib.rs x y\n").unwrap();
        let comparison = compare(&report, &baseline);
        assert_eq!(
            comparison.remains_of(&comparison.new[0]),
            Some("cycle a/src/lib.rs w x y")
        );
        let message = comparison.to_string();
        assert!(
            message.contains("replace that line with `cycle a/src/lib.rs x y`"),
            "{message}"
        );
    }

    #[test]
    fn lines_that_are_not_entries_are_refused_with_their_number() {
        let error = parse("long-file a.rs\ncycle a/src/lib.rs onlyone\n").unwrap_err();
        assert!(matches!(error, Error::Baseline { line: 2, .. }), "{error}");
        assert!(parse("longfile a.rs").is_err());
    }
}
