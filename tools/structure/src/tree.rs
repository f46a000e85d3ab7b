//! A crate's module tree, loaded from its root file the way rustc finds modules.
//!
//! From the root (`src/lib.rs`, `src/main.rs`, `src/bin/x.rs`), each `mod x;` is read
//! from `x.rs` or `x/mod.rs` beside it, in the folder of the declaring file when that
//! is a root or `mod.rs`, else in a folder named after it (`a.rs` declares `a/x.rs`);
//! inline modules add their name as a folder. `#[path = "…"]` names the file relative
//! to the declaring file's folder (or, inside inline modules, the folder they imply),
//! and the file it names declares its own children like a `mod.rs`.
//!
//! Every module, file or inline, becomes a [`Module`] with what the scanner found in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::lexer::lex;
use crate::scan::{FnSpan, LocalModule, PathRef, UseLeaf, scan};

/// Index of a module in [`Crate::modules`]; the root is 0.
pub type ModId = usize;

/// One crate: its modules and files.
#[derive(Debug)]
pub struct Crate {
    /// The root file, relative to the checked tree (`observer/src/lib.rs`).
    pub root: String,
    /// Every module; `[0]` is the crate root.
    pub modules: Vec<Module>,
    /// Every file read, in the order they were reached.
    pub files: Vec<SourceFile>,
}

/// One module, file or inline.
#[derive(Debug, Default)]
pub struct Module {
    /// Its name (empty for the crate root).
    pub name: String,
    /// The module it is declared in.
    pub parent: Option<ModId>,
    /// Its child modules by name.
    pub children: BTreeMap<String, ModId>,
    /// The file its tokens are in, an index into [`Crate::files`].
    pub file: usize,
    /// Whether it is test code.
    pub test: bool,
    /// `use` leaves written in it.
    pub uses: Vec<UseLeaf>,
    /// Paths written in it.
    pub paths: Vec<PathRef>,
    /// Names of the items it defines.
    pub items: HashSet<String>,
    /// Names bound by its `use` leaves, to the index of the leaf in `uses`.
    pub bindings: HashMap<String, usize>,
}

/// One source file of a crate.
#[derive(Debug)]
pub struct SourceFile {
    /// Its path relative to the checked tree, with `/` separators.
    pub display: String,
    /// Its lines outside inline `#[cfg(test)]` modules.
    pub code_lines: u32,
    /// Why the size limits do not apply to it, if they do not.
    pub exempt: Option<Exemption>,
    /// Its functions with bodies.
    pub fns: Vec<FnSpan>,
}

/// Why a file is not held to the size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// It is reached only through `#[cfg(test)]`, or is named or placed like a test
    /// (`*tests*.rs`, a `tests/` or `benches/` folder).
    Test,
    /// It is generated (a `gen/` folder or an `@generated` marker at its top).
    Generated,
}

/// How many leading lines may carry an `@generated` marker.
const GENERATED_MARKER_LINES: usize = 5;

/// Loads the crate whose root file is `root`; `base` is the folder paths are shown
/// relative to and `crate_dir` the crate's folder (for the test and generated rules).
pub fn load(root: &Path, crate_dir: &Path, base: &Path) -> Result<Crate, Error> {
    let mut loader = Loader {
        base,
        crate_dir,
        krate: Crate {
            root: display(root, base),
            modules: Vec::new(),
            files: Vec::new(),
        },
    };
    loader.file(root, true, None, String::new(), false)?;
    Ok(loader.krate)
}

/// `path` relative to `base`, with `/` separators.
pub fn display(path: &Path, base: &Path) -> String {
    let relative = path.strip_prefix(base).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

struct Loader<'p> {
    base: &'p Path,
    crate_dir: &'p Path,
    krate: Crate,
}

impl Loader<'_> {
    /// Reads one file as module `name` under `parent`; `mod_rs` when it declares its
    /// children beside itself (a root, a `mod.rs` or a `#[path]` file).
    fn file(
        &mut self,
        path: &Path,
        mod_rs: bool,
        parent: Option<ModId>,
        name: String,
        test: bool,
    ) -> Result<ModId, Error> {
        let source = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let tokens = lex(&source).map_err(|error| Error::Lex {
            path: path.to_owned(),
            error,
        })?;
        let scanned = scan(&tokens);
        let lines = line_count(&source);
        let file_test = test || scanned.modules[0].test;
        let file = self.krate.files.len();
        self.krate.files.push(SourceFile {
            display: display(path, self.base),
            code_lines: lines.saturating_sub(scanned.test_module_lines),
            exempt: self.exemption(path, &source, file_test),
            fns: scanned.fns,
        });
        let dir = path.parent().unwrap_or(Path::new("")).to_owned();
        let children_dir = if mod_rs {
            dir.clone()
        } else {
            dir.join(path.file_stem().unwrap_or_default())
        };
        let mut ids: Vec<ModId> = Vec::with_capacity(scanned.modules.len());
        let mut folders: Vec<PathBuf> = Vec::with_capacity(scanned.modules.len());
        for (index, local) in scanned.modules.into_iter().enumerate() {
            let (parent_id, name, folder, inherited) = match local.parent {
                None => (parent, name.clone(), children_dir.clone(), test),
                Some(p) => {
                    let folder = folders[p].join(&local.name);
                    (
                        Some(ids[p]),
                        local.name.clone(),
                        folder,
                        self.krate.modules[ids[p]].test,
                    )
                }
            };
            let id = self.add_module(parent_id, name, file, inherited, &local);
            ids.push(id);
            folders.push(folder.clone());
            for decl in &local.decls {
                let (child, child_mod_rs) = match &decl.path {
                    Some(named) if index == 0 => (dir.join(named), true),
                    Some(named) => (folder.join(named), true),
                    None => find_module_file(&folder, &decl.name).ok_or_else(|| {
                        Error::MissingModule {
                            declared_in: path.to_owned(),
                            line: decl.line,
                            name: decl.name.clone(),
                        }
                    })?,
                };
                let child_test = self.krate.modules[id].test || decl.test;
                self.file(
                    &child,
                    child_mod_rs,
                    Some(id),
                    decl.name.clone(),
                    child_test,
                )?;
            }
        }
        Ok(ids[0])
    }

    fn add_module(
        &mut self,
        parent: Option<ModId>,
        name: String,
        file: usize,
        inherited: bool,
        local: &LocalModule,
    ) -> ModId {
        let id = self.krate.modules.len();
        let mut module = Module {
            name: name.clone(),
            parent,
            file,
            test: inherited || local.test,
            uses: local.uses.clone(),
            paths: local.paths.clone(),
            items: local.items.iter().cloned().collect(),
            ..Module::default()
        };
        for (leaf, use_leaf) in module.uses.iter().enumerate() {
            if let crate::scan::UseBinding::Name(bound) = &use_leaf.binding {
                module.bindings.entry(bound.clone()).or_insert(leaf);
            }
        }
        self.krate.modules.push(module);
        if let Some(parent) = parent {
            self.krate.modules[parent].children.insert(name, id);
        }
        id
    }

    fn exemption(&self, path: &Path, source: &str, test: bool) -> Option<Exemption> {
        let relative = path.strip_prefix(self.crate_dir).unwrap_or(path);
        let folders: Vec<String> = relative
            .parent()
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let file_name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let marked = source
            .lines()
            .take(GENERATED_MARKER_LINES)
            .any(|line| line.contains("@generated"));
        if marked || folders.iter().any(|f| f == "gen") {
            Some(Exemption::Generated)
        } else if test
            || file_name.contains("tests")
            || folders.iter().any(|f| f == "tests" || f == "benches")
        {
            Some(Exemption::Test)
        } else {
            None
        }
    }
}

/// `name.rs` (not `mod_rs`) or `name/mod.rs` (`mod_rs`) in `folder`.
fn find_module_file(folder: &Path, name: &str) -> Option<(PathBuf, bool)> {
    let flat = folder.join(format!("{name}.rs"));
    if flat.is_file() {
        return Some((flat, false));
    }
    let nested = folder.join(name).join("mod.rs");
    nested.is_file().then_some((nested, true))
}

/// Lines as an editor numbers them: a last line without a newline counts.
fn line_count(source: &str) -> u32 {
    let newlines = source.bytes().filter(|&b| b == b'\n').count();
    let unterminated = usize::from(!source.is_empty() && !source.ends_with('\n'));
    u32::try_from(newlines + unterminated).unwrap_or(u32::MAX)
}

impl Crate {
    /// The module's path from the crate root, such as `control::stream` (empty for
    /// the root).
    pub fn path_of(&self, id: ModId) -> String {
        let mut names = Vec::new();
        let mut current = Some(id);
        while let Some(m) = current {
            if self.modules[m].parent.is_some() {
                names.push(self.modules[m].name.as_str());
            }
            current = self.modules[m].parent;
        }
        names.reverse();
        names.join("::")
    }

    /// The chain of modules from the root to `id`, both included.
    pub fn ancestry(&self, id: ModId) -> Vec<ModId> {
        let mut chain = vec![id];
        let mut current = id;
        while let Some(parent) = self.modules[current].parent {
            chain.push(parent);
            current = parent;
        }
        chain.reverse();
        chain
    }
}
