//! What a check found, and how it is shown.
//!
//! Each violation has a key, the line the baseline stores for it: stable across edits
//! that do not fix or cause it (no line numbers, no counts), so the baseline changes
//! only when a violation comes or goes.

use std::fmt;

use crate::cycles::{Cycle, Edge};

/// Everything one check found.
#[derive(Debug, Default)]
pub struct Report {
    /// The crate roots checked.
    pub crates: Vec<String>,
    /// How many files were read.
    pub files: usize,
    /// Cycles between top-level modules: the gated kind.
    pub cycles: Vec<Cycle>,
    /// Cycles among the children of deeper modules, when asked for; not gated.
    pub nested_cycles: Vec<Cycle>,
    /// Files over the line limit outside their inline test module.
    pub long_files: Vec<LongFile>,
    /// Functions over the line limit outside test code.
    pub long_fns: Vec<LongFn>,
    /// Every edge between top-level modules (and, when asked for, between the
    /// children of deeper modules): (crate root, parent module, edge).
    pub edges: Vec<(String, String, Edge)>,
}

/// A file over the line limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongFile {
    /// The file.
    pub path: String,
    /// Its lines outside inline test modules.
    pub lines: u32,
}

/// A function over the line limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongFn {
    /// The file.
    pub path: String,
    /// Its qualified name in the file.
    pub name: String,
    /// The line of its `fn`.
    pub line: u32,
    /// Its lines, from `fn` to the closing brace.
    pub lines: u32,
}

/// One gated violation.
#[derive(Clone, Copy, Debug)]
pub enum Violation<'r> {
    /// Top-level modules in a cycle.
    Cycle(&'r Cycle),
    /// A file over the limit.
    LongFile(&'r LongFile),
    /// A function over the limit.
    LongFn(&'r LongFn),
}

impl Violation<'_> {
    /// The baseline line for it.
    pub fn key(&self) -> String {
        match self {
            Violation::Cycle(cycle) => format!("cycle {} {}", cycle.krate, cycle.modules.join(" ")),
            Violation::LongFile(file) => format!("long-file {}", file.path),
            Violation::LongFn(function) => format!("long-fn {} {}", function.path, function.name),
        }
    }
}

impl fmt::Display for Violation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Cycle(cycle) => write_cycle(f, cycle),
            Violation::LongFile(file) => {
                write!(
                    f,
                    "{}: {} lines before its inline test module (limit {})",
                    file.path,
                    file.lines,
                    crate::MAX_FILE_LINES
                )
            }
            Violation::LongFn(function) => write!(
                f,
                "{}:{} fn {}: {} lines (limit {})",
                function.path,
                function.line,
                function.name,
                function.lines,
                crate::MAX_FN_LINES
            ),
        }
    }
}

fn write_cycle(f: &mut fmt::Formatter<'_>, cycle: &Cycle) -> fmt::Result {
    let scope = if cycle.parent.is_empty() {
        String::new()
    } else {
        format!("{}::", cycle.parent)
    };
    writeln!(
        f,
        "{}: {scope}{{{}}} depend on each other:",
        cycle.krate,
        cycle.modules.join(", ")
    )?;
    for (n, edge) in cycle.edges.iter().enumerate() {
        write!(f, "    {edge}")?;
        if n + 1 < cycle.edges.len() {
            writeln!(f)?;
        }
    }
    Ok(())
}

impl fmt::Display for Edge {
    /// `from -> to: file:line `path` (re-exported by `use` in m), N references in all`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let example = &self.example;
        let via = example
            .via
            .as_ref()
            .map(|v| format!(" (re-exported by `use` in {v})"))
            .unwrap_or_default();
        let more = if self.count > 1 {
            format!(", {} references in all", self.count)
        } else {
            String::new()
        };
        write!(
            f,
            "{} -> {}: {}:{} `{}`{via}{more}",
            self.from, self.to, example.file, example.line, example.text
        )
    }
}

impl Report {
    /// Every gated violation: top-level cycles, long files, long functions.
    pub fn violations(&self) -> Vec<Violation<'_>> {
        let cycles = self.cycles.iter().map(Violation::Cycle);
        let files = self.long_files.iter().map(Violation::LongFile);
        cycles
            .chain(files)
            .chain(self.long_fns.iter().map(Violation::LongFn))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Checked {} crate roots, {} files.",
            self.crates.len(),
            self.files
        )?;
        let sections: [(&str, Vec<Violation<'_>>); 3] = [
            (
                "Import cycles between top-level modules",
                self.cycles.iter().map(Violation::Cycle).collect(),
            ),
            (
                "Files over the line limit before their inline test module",
                self.long_files.iter().map(Violation::LongFile).collect(),
            ),
            (
                "Functions over the line limit outside tests",
                self.long_fns.iter().map(Violation::LongFn).collect(),
            ),
        ];
        for (title, violations) in sections {
            writeln!(f, "\n{title}: {}", violations.len())?;
            for violation in violations {
                writeln!(f, "  {violation}")?;
            }
        }
        if !self.nested_cycles.is_empty() {
            writeln!(
                f,
                "\nCycles among the submodules of one module (reported, not gated): {}",
                self.nested_cycles.len()
            )?;
            for cycle in &self.nested_cycles {
                writeln!(f, "  {}", Violation::Cycle(cycle))?;
            }
        }
        Ok(())
    }
}
