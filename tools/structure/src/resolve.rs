//! Maps each path a module writes to the modules it depends on.
//!
//! A path is resolved the way rustc would, as far as module structure goes: `crate::`
//! (and `$crate::`) from the root, `self::` from the module, `super::` from its parent,
//! and a bare first segment through the module's children, its `use` bindings, the
//! items it defines, and its glob imports, in that order. Then each following segment
//! walks into a child module or, where a module re-exports a name (`pub use` or a
//! plain `use`, which descendants can see), follows that binding. A segment that is
//! none of these names an item of the module reached.
//!
//! A reference depends on the module where the path ends and on every module whose
//! binding it went through: `crate::Scraper` written in `pipeline`, with
//! `pub use scrape::Scraper;` in the root, depends on `scrape`. Paths into external
//! crates resolve to nothing. Bindings written inside function bodies are treated as
//! the module's (rustc scopes them to the block): a name clash that this would
//! confuse is rare, and at worst adds an edge the code does not have.

use std::cell::RefCell;

use crate::scan::UseBinding;
use crate::tree::{Crate, ModId};

/// How deep the resolver follows bindings and globs before giving up on a path, far
/// beyond any real chain of re-exports; it stops loops such as `use self::a as b;
/// use self::b as a;`.
const MAX_RESOLUTION_DEPTH: u32 = 24;

/// One dependency of a module on another, as written at one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The module the path is written in.
    pub from: ModId,
    /// A module it depends on.
    pub to: ModId,
    /// The file it is written in (index into [`Crate::files`]).
    pub file: usize,
    /// Its line.
    pub line: u32,
    /// The path as written, `crate::b::f` or `use crate::a::*`.
    pub text: String,
    /// The module whose `use` the path went through to reach `to`, if any.
    pub via: Option<ModId>,
    /// Whether it is test code.
    pub test: bool,
}

/// What a path ends at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The path names this module.
    Module(ModId),
    /// The path names an item of this module (or something inside that item).
    Item(ModId),
}

impl Target {
    fn module(self) -> ModId {
        match self {
            Target::Module(m) | Target::Item(m) => m,
        }
    }
}

/// Every reference in the crate, in module order and then line order.
pub fn references(krate: &Crate) -> Vec<Reference> {
    let resolver = Resolver {
        krate,
        searching_globs: RefCell::new(Vec::new()),
    };
    let mut out = Vec::new();
    for (from, module) in krate.modules.iter().enumerate() {
        let file = module.file;
        let uses = module.uses.iter().map(|leaf| {
            let glob = matches!(leaf.binding, UseBinding::Glob);
            let text = format!(
                "use {}{}",
                leaf.path.join("::"),
                if glob { "::*" } else { "" }
            );
            (leaf.path.as_slice(), leaf.line, leaf.test, text)
        });
        let paths = module
            .paths
            .iter()
            .map(|p| (p.segments.as_slice(), p.line, p.test, p.segments.join("::")));
        let mut written: Vec<_> = uses.chain(paths).collect();
        written.sort_by_key(|w| w.1);
        for (segments, line, test, text) in written {
            let mut via = Vec::new();
            let Some(target) = resolver.resolve(from, segments, 0, &mut via) else {
                continue;
            };
            let test = test || module.test;
            let reference = |to: ModId, via: Option<ModId>| Reference {
                from,
                to,
                file,
                line,
                text: text.clone(),
                via,
                test,
            };
            let last_via = via.last().copied();
            for &through in &via {
                out.push(reference(through, None));
            }
            out.push(reference(target.module(), last_via));
        }
    }
    out
}

struct Resolver<'c> {
    krate: &'c Crate,
    /// Modules whose glob imports are being searched, so that two modules that
    /// glob-import each other (`use super::*` in a child whose parent has
    /// `use child::*`) are searched once each, not exponentially often.
    searching_globs: RefCell<Vec<ModId>>,
}

impl Resolver<'_> {
    /// Resolves `segments` as written in module `scope`; `via` collects the modules
    /// whose bindings were followed (other than `scope`'s own).
    fn resolve(
        &self,
        scope: ModId,
        segments: &[String],
        depth: u32,
        via: &mut Vec<ModId>,
    ) -> Option<Target> {
        if depth > MAX_RESOLUTION_DEPTH {
            return None;
        }
        let (first, rest) = segments.split_first()?;
        let (mut current, rest) = match first.as_str() {
            "crate" => (0, rest),
            "self" => (scope, rest),
            "super" => {
                let mut module = scope;
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    module = self.krate.modules[module].parent?;
                    rest = &rest[1..];
                }
                (module, rest)
            }
            name => match self.lookup(scope, name, depth, via)? {
                Target::Module(m) => (m, rest),
                Target::Item(m) => return Some(Target::Item(m)),
            },
        };
        for segment in rest {
            if let Some(&child) = self.krate.modules[current].children.get(segment) {
                current = child;
                continue;
            }
            if segment == "super" {
                current = self.krate.modules[current].parent?;
                continue;
            }
            let before = via.len();
            match self.lookup(current, segment, depth, via) {
                Some(Target::Module(m)) => {
                    via.insert(before, current);
                    current = m;
                }
                Some(Target::Item(m)) if m != current => {
                    via.insert(before, current);
                    return Some(Target::Item(m));
                }
                _ => return Some(Target::Item(current)),
            }
        }
        Some(Target::Module(current))
    }

    /// What `name` means in `module`: a child, a `use` binding, an item, or a name a
    /// glob import brings in.
    fn lookup(
        &self,
        module: ModId,
        name: &str,
        depth: u32,
        via: &mut Vec<ModId>,
    ) -> Option<Target> {
        let m = &self.krate.modules[module];
        if let Some(&child) = m.children.get(name) {
            return Some(Target::Module(child));
        }
        if let Some(&leaf) = m.bindings.get(name) {
            return self.resolve(module, &m.uses[leaf].path, depth + 1, via);
        }
        if m.items.contains(name) {
            return Some(Target::Item(module));
        }
        if self.searching_globs.borrow().contains(&module) {
            return None;
        }
        self.searching_globs.borrow_mut().push(module);
        let found = self.lookup_in_globs(module, name, depth, via);
        self.searching_globs.borrow_mut().pop();
        found
    }

    /// `name` as one of `module`'s glob imports brings it in.
    fn lookup_in_globs(
        &self,
        module: ModId,
        name: &str,
        depth: u32,
        via: &mut Vec<ModId>,
    ) -> Option<Target> {
        let m = &self.krate.modules[module];
        for leaf in m
            .uses
            .iter()
            .filter(|leaf| leaf.binding == UseBinding::Glob)
        {
            let mut glob_via = Vec::new();
            let Some(Target::Module(source)) =
                self.resolve(module, &leaf.path, depth + 1, &mut glob_via)
            else {
                continue;
            };
            if source == module {
                continue;
            }
            let mut found_via = Vec::new();
            if let Some(target) = self.lookup(source, name, depth + 1, &mut found_via) {
                via.extend(glob_via);
                via.push(source);
                via.extend(found_via);
                return Some(target);
            }
        }
        None
    }
}
