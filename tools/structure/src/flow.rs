//! The flow check: the module paths the docs name on a crate's data path exist, and
//! the architecture doc names them in the order of the crate's own map.
//!
//! **Sections.** Only marked sections are read. A section opens with an HTML comment
//! `<!-- flow: CRATE -->` and closes with `<!-- /flow -->`, each on a line of its own
//! (the comments are invisible in rendered markdown and in rustdoc):
//!
//! - in [`ARCHITECTURE_DOC`], `CRATE` is the crate's folder relative to the workspace
//!   root, e.g. `<!-- flow: cluster-agent -->`;
//! - in a crate root's `//!` doc (`src/lib.rs`, else `src/main.rs`), the crate's map
//!   of its data path, the marker is `<!-- flow -->`: the crate is the file's own.
//!
//! **Paths.** Inside a section every code span (text in backticks) that is a module
//! path — snake_case segments joined by `::`, optionally after `crate::` — must name a
//! module of the crate, e.g. `scrape`, `pipeline::inlet`. Other spans (types such as
//! `Inlet`, flags, file names, calls such as `now_ms()`, quoted words) are not read, so
//! a section writes a word that is no module some other way.
//!
//! **Order.** The crate root's sections are its flow order: the order in which they
//! first name each module. Every other section of that crate must follow it: the place
//! in the map of each path (that of its longest prefix the map names) may not come
//! before the place of the path named before it. Paths the map does not name are
//! checked only for existence, and a crate without a map only for existence.
//!
//! A workspace without any marked section passes: the check holds the docs to the code
//! once the sections are written, and says how many it read.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::Error;
use crate::tree::{self, Crate, display};
use crate::workspace::{self, CrateRoot};

/// The architecture doc, relative to the workspace root.
pub const ARCHITECTURE_DOC: &str = "docs/architecture.md";

const OPEN: &str = "<!-- flow";
const CLOSE: &str = "<!-- /flow -->";

/// What the flow check found.
#[derive(Debug, Default)]
pub struct FlowReport {
    /// How many marked sections were read.
    pub sections: usize,
    /// How many module paths they named.
    pub paths: usize,
    /// What is wrong, in file order.
    pub problems: Vec<FlowProblem>,
}

/// One thing wrong with a flow section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowProblem {
    /// The file, relative to the workspace root.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FlowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl fmt::Display for FlowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sections == 0 {
            return writeln!(
                f,
                "Flow sections: none marked yet (`<!-- flow: CRATE -->` in {ARCHITECTURE_DOC}, `<!-- flow -->` in a crate root's map); nothing to check."
            );
        }
        writeln!(
            f,
            "Flow sections: {} naming {} module paths, {} problems.",
            self.sections,
            self.paths,
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// A module path named in a section, where it was named.
#[derive(Clone, Debug)]
struct Named {
    segments: Vec<String>,
    line: usize,
}

/// One marked section: its crate as written (`None` in a crate root) and its paths.
#[derive(Debug)]
struct Section {
    krate: Option<String>,
    line: usize,
    paths: Vec<Named>,
}

/// A crate whose sections are checked: its folder as named in the docs, its module
/// tree and its map (module paths in flow order).
struct FlowCrate {
    name: String,
    modules: Crate,
    map: Vec<Vec<String>>,
}

/// Checks the flow sections of the workspace at `root`: each crate root's map and
/// [`ARCHITECTURE_DOC`].
pub fn check_flow(root: &Path) -> Result<FlowReport, Error> {
    let mut report = FlowReport::default();
    let mut crates = Vec::new();
    let mut seen = BTreeSet::new();
    for CrateRoot { file, dir } in workspace::workspace_roots(root)? {
        let is_map_root = file.ends_with("src/lib.rs")
            || (file.ends_with("src/main.rs") && !dir.join("src/lib.rs").is_file());
        if !is_map_root || !seen.insert(dir.clone()) {
            continue;
        }
        let modules = tree::load(&file, &dir, root)?;
        let shown = display(&file, root);
        let (sections, problems) = sections(&read(&file)?, &shown, true);
        report.problems.extend(problems);
        let mut krate = FlowCrate {
            name: display(&dir, root),
            modules,
            map: Vec::new(),
        };
        for section in &sections {
            if let Some(name) = &section.krate {
                report.problems.push(problem(
                    &shown,
                    section.line,
                    format!("a crate root's section names no crate; drop {name:?}"),
                ));
            }
            for named in &section.paths {
                if !krate.map.contains(&named.segments) {
                    krate.map.push(named.segments.clone());
                }
            }
        }
        check_sections(&krate, &sections, &shown, false, &mut report);
        crates.push(krate);
    }
    let doc = root.join(ARCHITECTURE_DOC);
    if doc.is_file() {
        let (sections, problems) = sections(&read(&doc)?, ARCHITECTURE_DOC, false);
        report.problems.extend(problems);
        for section in &sections {
            let name = section.krate.as_deref().unwrap_or_default();
            let Some(krate) = crates.iter().find(|c| c.name == name) else {
                report.problems.push(problem(
                    ARCHITECTURE_DOC,
                    section.line,
                    format!("no workspace crate in the folder {name:?}"),
                ));
                continue;
            };
            check_sections(
                krate,
                std::slice::from_ref(section),
                ARCHITECTURE_DOC,
                true,
                &mut report,
            );
        }
    }
    Ok(report)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn problem(file: &str, line: usize, message: String) -> FlowProblem {
    FlowProblem {
        file: file.to_owned(),
        line,
        message,
    }
}

/// Checks that every path of `sections` is a module of `krate` and, when `ordered`,
/// that they follow its map.
fn check_sections(
    krate: &FlowCrate,
    sections: &[Section],
    file: &str,
    ordered: bool,
    report: &mut FlowReport,
) {
    for section in sections {
        report.sections += 1;
        let mut previous: Option<(usize, &Named)> = None;
        for named in &section.paths {
            report.paths += 1;
            let path = named.segments.join("::");
            if !is_module(&krate.modules, &named.segments) {
                report.problems.push(problem(
                    file,
                    named.line,
                    format!("`{path}` is no module of {}", krate.modules.root),
                ));
                continue;
            }
            let Some(place) = ordered
                .then(|| place_in_map(&krate.map, &named.segments))
                .flatten()
            else {
                continue;
            };
            if let Some((before, earlier)) = previous
                && place < before
            {
                report.problems.push(problem(
                    file,
                    named.line,
                    format!(
                        "`{path}` comes before `{}` on {}'s data path (its map in {}), but is named after it",
                        earlier.segments.join("::"),
                        krate.name,
                        krate.modules.root
                    ),
                ));
            }
            previous = Some((place, named));
        }
    }
}

/// Whether `segments` walk from the crate root through declared modules.
fn is_module(krate: &Crate, segments: &[String]) -> bool {
    let mut module = 0;
    for segment in segments {
        match krate.modules[module].children.get(segment) {
            Some(&child) => module = child,
            None => return false,
        }
    }
    true
}

/// The place in the map of the longest prefix of `segments` it names.
fn place_in_map(map: &[Vec<String>], segments: &[String]) -> Option<usize> {
    (1..=segments.len())
        .rev()
        .find_map(|len| map.iter().position(|p| p.as_slice() == &segments[..len]))
}

/// The marked sections of `text` (a crate root's `//!` lines when `doc_comments`).
fn sections(text: &str, file: &str, doc_comments: bool) -> (Vec<Section>, Vec<FlowProblem>) {
    let mut sections = Vec::new();
    let mut problems = Vec::new();
    let mut open: Option<Section> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = if doc_comments {
            match raw.trim_start().strip_prefix("//!") {
                Some(rest) => rest,
                None => continue,
            }
        } else {
            raw
        };
        let trimmed = content.trim();
        if trimmed == CLOSE {
            match open.take() {
                Some(section) => sections.push(section),
                None => problems.push(problem(
                    file,
                    line,
                    "`<!-- /flow -->` closes no section".into(),
                )),
            }
        } else if let Some(rest) = trimmed.strip_prefix(OPEN) {
            let Some(body) = rest.strip_suffix("-->") else {
                problems.push(problem(
                    file,
                    line,
                    format!("a flow marker must end with `-->` on its line: {trimmed}"),
                ));
                continue;
            };
            let krate = body.trim().strip_prefix(':').map(|c| c.trim().to_owned());
            if let Some(unclosed) = open.replace(Section {
                krate,
                line,
                paths: Vec::new(),
            }) {
                problems.push(problem(
                    file,
                    unclosed.line,
                    "a flow section is not closed before the next one opens".into(),
                ));
            }
        } else if let Some(section) = open.as_mut() {
            section.paths.extend(
                module_paths(content)
                    .into_iter()
                    .map(|segments| Named { segments, line }),
            );
        }
    }
    if let Some(unclosed) = open {
        problems.push(problem(
            file,
            unclosed.line,
            "a flow section is never closed (`<!-- /flow -->`)".into(),
        ));
    }
    (sections, problems)
}

/// The code spans of `line` that are module paths, as their segments.
fn module_paths(line: &str) -> Vec<Vec<String>> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let span = span.trim();
            let span = span.strip_prefix("crate::").unwrap_or(span);
            let segments: Vec<String> = span.split("::").map(str::to_owned).collect();
            segments
                .iter()
                .all(|s| is_snake_case(s))
                .then_some(segments)
        })
        .collect()
}

fn is_snake_case(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_are_snake_case_spans_and_other_spans_are_not_read() {
        let line = "`discovery` → `crate::scrape::scraper` → `Inlet` `now_ms()` `--flag` `a/b.rs` `\"deleting\"`";
        assert_eq!(
            module_paths(line),
            [
                vec!["discovery".to_owned()],
                vec!["scrape".into(), "scraper".into()]
            ]
        );
    }

    #[test]
    fn markers_open_and_close_sections_and_unbalanced_ones_are_problems() {
        let text = "intro `ignored`\n<!-- flow: app -->\n`a` then `b::c`\n<!-- /flow -->\n<!-- /flow -->\n<!-- flow: app -->\n`a`\n";
        let (sections, problems) = sections(text, "doc.md", false);
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].krate.as_deref(), Some("app"));
        let paths: Vec<(String, usize)> = sections[0]
            .paths
            .iter()
            .map(|n| (n.segments.join("::"), n.line))
            .collect();
        assert_eq!(paths, [("a".to_owned(), 3), ("b::c".to_owned(), 3)]);
        let messages: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (5, "`<!-- /flow -->` closes no section"),
                (6, "a flow section is never closed (`<!-- /flow -->`)"),
            ]
        );
    }

    #[test]
    fn a_crate_root_reads_only_its_doc_comments() {
        let text = "//! <!-- flow -->\n//! `a` → `b`\n// `c`\n//! <!-- /flow -->\n";
        let (sections, problems) = sections(text, "lib.rs", true);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sections[0].krate, None);
        assert_eq!(sections[0].paths.len(), 2);
    }

    #[test]
    fn the_place_in_the_map_is_that_of_the_longest_named_prefix() {
        let map: Vec<Vec<String>> = [vec!["a"], vec!["b", "x"], vec!["b"]]
            .iter()
            .map(|p| p.iter().map(|s| (*s).to_owned()).collect())
            .collect();
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(place_in_map(&map, &path(&["b", "x", "y"])), Some(1));
        assert_eq!(place_in_map(&map, &path(&["b", "z"])), Some(2));
        assert_eq!(place_in_map(&map, &path(&["c"])), None);
    }
}
