//! Import cycles among the children of one module, found from a crate's references.
//!
//! A reference from module `s` to module `t` is an edge at exactly one level: the
//! deepest module `L` that contains both, between the child of `L` that holds `s` and
//! the child of `L` that holds `t`. When `s` or `t` is `L` itself the reference goes
//! between a module and its own descendant (`super::`, `self::x::`), which is no edge:
//! a module's submodules are part of it. The crate root's level gives the edges
//! between top-level modules, which the check gates on; the other levels are reported
//! on request (`control::{service, pipelines}`, say).

use std::collections::BTreeMap;

use crate::graph;
use crate::resolve::Reference;
use crate::tree::{Crate, ModId};

/// A set of modules, all children of one module, that depend on each other in a ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// The crate's root file, `cluster-agent/src/lib.rs`.
    pub krate: String,
    /// The module whose children they are (empty for the crate root).
    pub parent: String,
    /// Their names, sorted.
    pub modules: Vec<String>,
    /// Every edge between two of them, sorted.
    pub edges: Vec<Edge>,
}

/// All references from one module to another, with the first as an example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The depending module's name.
    pub from: String,
    /// The name of the module depended on.
    pub to: String,
    /// How many references make the edge.
    pub count: usize,
    /// The first reference, to find it by.
    pub example: Example,
}

/// Where a reference is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The file, relative to the checked tree.
    pub file: String,
    /// The line.
    pub line: u32,
    /// The path as written.
    pub text: String,
    /// The module whose `use` re-exports what the path names, if the path goes
    /// through one (`crate root` for the root).
    pub via: Option<String>,
}

/// Which references become edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeOptions {
    /// Count references written in test code (`#[cfg(test)]`, `#[test]`).
    pub include_tests: bool,
    /// Find cycles among the children of every module, not only of the crate root.
    pub nested: bool,
}

/// The edges of every level of `krate` that has any (only the root's unless
/// [`EdgeOptions::nested`]), keyed by the parent module's path (empty for the root).
pub fn edges(
    krate: &Crate,
    references: &[Reference],
    options: EdgeOptions,
) -> BTreeMap<String, Vec<Edge>> {
    levels(krate, references, options)
        .into_iter()
        .map(|((parent, _), edges)| {
            let edges = edges
                .iter()
                .map(|(&(a, b), &(count, r))| edge(krate, a, b, count, r))
                .collect();
            (parent, edges)
        })
        .collect()
}

/// The cycles in `krate`, top level first, then by parent module.
pub fn cycles(krate: &Crate, references: &[Reference], options: EdgeOptions) -> Vec<Cycle> {
    let mut found = Vec::new();
    for ((parent, _), edges) in levels(krate, references, options) {
        found.extend(level_cycles(krate, parent, &edges));
    }
    found
}

/// Edges by level, each with its count of references and the first of them.
type Levels<'r> = BTreeMap<(String, ModId), BTreeMap<(ModId, ModId), (usize, &'r Reference)>>;

fn levels<'r>(krate: &Crate, references: &'r [Reference], options: EdgeOptions) -> Levels<'r> {
    let chains: Vec<Vec<ModId>> = (0..krate.modules.len())
        .map(|m| krate.ancestry(m))
        .collect();
    let mut levels: Levels<'r> = BTreeMap::new();
    for reference in references
        .iter()
        .filter(|r| options.include_tests || !r.test)
    {
        let (from_chain, to_chain) = (&chains[reference.from], &chains[reference.to]);
        let common = from_chain
            .iter()
            .zip(to_chain.iter())
            .take_while(|(a, b)| a == b)
            .count();
        if common == from_chain.len() || common == to_chain.len() {
            continue;
        }
        let level = from_chain[common - 1];
        if level != 0 && !options.nested {
            continue;
        }
        let edges = levels.entry((krate.path_of(level), level)).or_default();
        let edge = edges
            .entry((from_chain[common], to_chain[common]))
            .or_insert((0, reference));
        edge.0 += 1;
    }
    levels
}

fn edge(krate: &Crate, from: ModId, to: ModId, count: usize, reference: &Reference) -> Edge {
    let name = |m: ModId| krate.modules[m].name.clone();
    Edge {
        from: name(from),
        to: name(to),
        count,
        example: example(krate, reference),
    }
}

fn level_cycles(
    krate: &Crate,
    parent: String,
    edges: &BTreeMap<(ModId, ModId), (usize, &Reference)>,
) -> Vec<Cycle> {
    let mut nodes: Vec<ModId> = edges.keys().flat_map(|&(a, b)| [a, b]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let index = |m: ModId| nodes.binary_search(&m).unwrap_or_default();
    let indexed: Vec<(usize, usize)> = edges.keys().map(|&(a, b)| (index(a), index(b))).collect();
    let name = |m: ModId| krate.modules[m].name.clone();
    graph::cycles(nodes.len(), &indexed)
        .into_iter()
        .map(|component| {
            let members: Vec<ModId> = component.iter().map(|&i| nodes[i]).collect();
            let mut modules: Vec<String> = members.iter().map(|&m| name(m)).collect();
            modules.sort();
            let mut cycle_edges: Vec<Edge> = edges
                .iter()
                .filter(|((a, b), _)| members.contains(a) && members.contains(b))
                .map(|(&(a, b), &(count, reference))| edge(krate, a, b, count, reference))
                .collect();
            cycle_edges.sort_by(|x, y| (&x.from, &x.to).cmp(&(&y.from, &y.to)));
            Cycle {
                krate: krate.root.clone(),
                parent: parent.clone(),
                modules,
                edges: cycle_edges,
            }
        })
        .collect()
}

fn example(krate: &Crate, reference: &Reference) -> Example {
    let via = reference.via.map(|m| match krate.path_of(m) {
        root if root.is_empty() => "crate root".to_owned(),
        path => path,
    });
    Example {
        file: krate.files[reference.file].display.clone(),
        line: reference.line,
        text: reference.text.clone(),
        via,
    }
}
