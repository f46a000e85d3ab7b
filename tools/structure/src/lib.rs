//! The structure check: no import cycle between the top-level modules of a crate, no
//! source file over [`MAX_FILE_LINES`] before its inline test module, and no function
//! over [`MAX_FN_LINES`] outside tests and generated code.
//!
//! How it reads the code, in the order the data flows:
//!
//! - `workspace` finds the crate roots (`src/lib.rs`, `src/main.rs`, `src/bin/*`)
//!   of every workspace member;
//! - `tree` loads each crate's module tree from its root as rustc does (`mod x;` to
//!   `x.rs` or `x/mod.rs`, `#[path]`), lexing (`lexer`) and scanning (`scan`) each
//!   file once: modules, `use` trees, paths, items, functions, test code;
//! - `resolve` maps every path to the modules it depends on (following
//!   re-exports), and `cycles` turns those into edges between the children of a
//!   module (parent–child references are no edge) and finds rings with `graph`;
//! - `report` holds what was found, and `baseline` compares it with the list of
//!   violations that predate the check, which may only shrink.
//!
//! Beside the code, `flow` holds the docs to it: the module paths named on a crate's
//! data path, in marked sections of its map and of the architecture doc, exist and
//! come in flow order.
//!
//! Comments, doc comments, strings and attributes are never read as paths. Code under
//! `#[cfg(test)]` or `#[test]` makes no edge (tests may reach across modules to set a
//! scene) unless [`EdgeOptions::include_tests`] asks for it, and is held to no size
//! limit; nor are files named or placed like tests (`*tests*.rs`, `tests/`,
//! `benches/`) or generated (`gen/`, `@generated`).

pub mod baseline;
mod cycles;
mod error;
mod flow;
mod graph;
mod lexer;
mod report;
mod resolve;
mod scan;
mod tree;
mod workspace;

use std::collections::BTreeSet;
use std::path::Path;

pub use cycles::{Cycle, Edge, EdgeOptions, Example};
pub use error::Error;
pub use flow::{ARCHITECTURE_DOC, FlowProblem, FlowReport, check_flow};
pub use lexer::LexError;
pub use report::{LongFile, LongFn, Report, Violation};
use workspace::CrateRoot;

/// Most lines a source file may have outside its inline test module: a file longer
/// than this holds several responsibilities, which the house style splits.
pub const MAX_FILE_LINES: u32 = 900;

/// Most lines a function may have from `fn` to its closing brace, outside tests.
pub const MAX_FN_LINES: u32 = 120;

/// Checks every crate of the workspace at `root`; paths are shown relative to it.
pub fn check_workspace(root: &Path, options: EdgeOptions) -> Result<Report, Error> {
    check_roots(&workspace::workspace_roots(root)?, root, options)
}

/// Checks the crate in folder `dir` (all its roots); paths are shown relative to it.
pub fn check_crate(dir: &Path, options: EdgeOptions) -> Result<Report, Error> {
    check_roots(&workspace::crate_roots(dir)?, dir, options)
}

fn check_roots(roots: &[CrateRoot], base: &Path, options: EdgeOptions) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut seen_files = BTreeSet::new();
    for root in roots {
        let krate = tree::load(&root.file, &root.dir, base)?;
        let references = resolve::references(&krate);
        for (parent, edges) in cycles::edges(&krate, &references, options) {
            report.edges.extend(
                edges
                    .into_iter()
                    .map(|edge| (krate.root.clone(), parent.clone(), edge)),
            );
        }
        let (top, nested): (Vec<Cycle>, Vec<Cycle>) = cycles::cycles(&krate, &references, options)
            .into_iter()
            .partition(|c| c.parent.is_empty());
        report.cycles.extend(top);
        report.nested_cycles.extend(nested);
        for file in krate.files {
            if !seen_files.insert(file.display.clone()) || file.exempt.is_some() {
                continue;
            }
            if file.code_lines > MAX_FILE_LINES {
                report.long_files.push(LongFile {
                    path: file.display.clone(),
                    lines: file.code_lines,
                });
            }
            let long = file
                .fns
                .iter()
                .filter(|f| !f.test && f.lines() > MAX_FN_LINES);
            report.long_fns.extend(long.map(|f| LongFn {
                path: file.display.clone(),
                name: f.name.clone(),
                line: f.start,
                lines: f.lines(),
            }));
        }
        report.crates.push(krate.root);
    }
    report.files = seen_files.len();
    Ok(report)
}
