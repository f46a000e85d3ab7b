//! Finding the files to read: container logs below the pod log root and plain files by
//! glob below the allowed roots. Nothing outside a root is ever admitted: directories
//! reached through symlinks are not entered, a symlinked file is admitted only when its
//! target lies inside the same root, and denied paths (the agent's data directory, the
//! service-account token, the identity key) are refused by path and by inode, so a hard
//! link to a denied file is refused too. A denied *directory*'s files cannot be known
//! by inode (the buffer's segments come and go), so a plain file with more than one
//! hard link is refused as well: its other name may be inside one. The tailer
//! re-checks the inode after opening.

use std::collections::HashSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ValidatedTailConfig;
use crate::glob::{Glob, component_matches};
use crate::path::PodLogPath;

/// Directory entries one scan may look at before it stops: bounds the time a hostile or
/// runaway tree (millions of files below an allowed root) can take per poll. A node with
/// 110 pods of a few containers each has a few thousand entries.
pub const MAX_SCAN_ENTRIES: usize = 200_000;

/// Directory levels a `**` may descend: deep enough for any log layout, and a bound on
/// a directory loop that does not use symlinks (bind mounts).
pub const MAX_GLOB_DEPTH: usize = 16;

/// Refusals kept with their path per scan; the rest are only counted.
pub const MAX_REPORTED_REFUSALS: usize = 32;

/// A file's identity on this machine while it exists: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity in a file's metadata.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What kind of file was found, which decides how its lines are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A container log: CRI or Docker json-file lines, detected per file.
    Pod(Arc<PodLogPath>),
    /// A plain file from a glob: one record per line.
    Plain,
}

/// A file admitted by a scan.
#[derive(Debug, Clone)]
pub struct DiscoveredFile {
    /// The path as found (`log.file.path`).
    pub path: PathBuf,
    /// The path to open: the same, or a symlink's target inside the root.
    pub open_path: PathBuf,
    /// How its lines are read.
    pub source: Source,
    /// Device and inode when it was found.
    pub id: FileId,
    /// Its size when it was found.
    pub size: u64,
}

/// Why a path was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Inside a denied directory, or a denied file (also through a hard link).
    Denied,
    /// A symlink (or a glob base) whose target lies outside its root.
    SymlinkOutsideRoot,
    /// A symlink that points nowhere, or a path that vanished while checked.
    Unresolvable,
    /// Not a regular file (a FIFO, a socket, a device, a directory).
    NotRegularFile,
    /// A plain file with more than one hard link: its other names may lie in a denied
    /// directory (log writers and rotation do not hard-link files).
    HardLinked,
}

/// One refused path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The path as found.
    pub path: PathBuf,
    /// Why.
    pub reason: RefusalReason,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Admitted files, sorted by path, one per inode (the tailer applies `max_files`,
    /// keeping the files it already follows).
    pub files: Vec<DiscoveredFile>,
    /// The first [`MAX_REPORTED_REFUSALS`] refusals.
    pub refused: Vec<Refusal>,
    /// All refusals of this scan.
    pub refused_total: u64,
    /// Whether [`MAX_SCAN_ENTRIES`] stopped the scan early.
    pub incomplete: bool,
}

/// The scanner, with its roots and denied paths resolved once.
#[derive(Debug)]
pub struct Discovery {
    pod_root: Option<PathBuf>,
    globs: Vec<(Glob, PathBuf)>,
    denied_prefixes: Vec<PathBuf>,
    denied_ids: HashSet<FileId>,
}

impl Discovery {
    /// Resolves the configured roots and denied paths (they may not exist yet: then they
    /// are kept as written).
    pub fn new(config: &ValidatedTailConfig) -> Self {
        let resolve =
            |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut denied_ids = HashSet::new();
        let mut denied_prefixes = Vec::new();
        for path in &config.denied {
            if let Ok(meta) = std::fs::metadata(path) {
                denied_ids.insert(FileId::of(&meta));
            }
            denied_prefixes.push(resolve(path));
            denied_prefixes.push(path.clone());
        }
        let globs = config
            .globs
            .iter()
            .map(|(glob, root)| (glob.clone(), resolve(root)))
            .collect();
        Self {
            pod_root: config.pod_log_root.as_deref().map(resolve),
            globs,
            denied_prefixes,
            denied_ids,
        }
    }

    /// Lists the admitted files now.
    pub fn scan(&self) -> Scan {
        let mut walk = Walk {
            discovery: self,
            scan: Scan::default(),
            entries: 0,
            found: Vec::new(),
            refused_paths: HashSet::new(),
        };
        if let Some(root) = &self.pod_root {
            walk.pod_root(root);
        }
        for (glob, root) in &self.globs {
            walk.glob(glob, root);
        }
        let mut found = walk.found;
        let mut scan = walk.scan;
        // One entry per file: its own path rather than a symlink to it.
        found.sort_by(|a, b| {
            (a.id, a.path != a.open_path, &a.path).cmp(&(b.id, b.path != b.open_path, &b.path))
        });
        found.dedup_by(|a, b| a.id == b.id);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        scan.files = found;
        scan
    }

    /// The kind of a file at `path` (for a rotated file found again after a restart).
    pub fn classify(&self, path: &Path) -> Source {
        let pod = self
            .pod_root
            .as_deref()
            .and_then(|root| PodLogPath::parse(root, path));
        pod.map_or(Source::Plain, |pod| Source::Pod(Arc::new(pod)))
    }

    fn is_denied(&self, path: &Path, id: Option<FileId>) -> bool {
        self.denied_prefixes
            .iter()
            .any(|denied| path.starts_with(denied))
            || id.is_some_and(|id| self.denied_ids.contains(&id))
    }
}

struct Walk<'a> {
    discovery: &'a Discovery,
    scan: Scan,
    entries: usize,
    found: Vec<DiscoveredFile>,
    /// Paths refused in this scan: two globs over the same place refuse it once.
    refused_paths: HashSet<PathBuf>,
}

impl Walk<'_> {
    fn refuse(&mut self, path: &Path, reason: RefusalReason) {
        if !self.refused_paths.insert(path.to_path_buf()) {
            return;
        }
        self.scan.refused_total += 1;
        if self.scan.refused.len() < MAX_REPORTED_REFUSALS {
            self.scan.refused.push(Refusal {
                path: path.to_path_buf(),
                reason,
            });
        }
    }

    /// The entries of a directory that is itself not a symlink, within the scan bound.
    fn entries(&mut self, dir: &Path) -> Vec<(String, std::fs::FileType)> {
        let Ok(reader) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in reader.flatten() {
            if self.entries >= MAX_SCAN_ENTRIES {
                self.scan.incomplete = true;
                break;
            }
            self.entries += 1;
            if let (Ok(name), Ok(kind)) = (entry.file_name().into_string(), entry.file_type()) {
                out.push((name, kind));
            }
        }
        out
    }

    /// A directory to descend into: a real directory (not a symlink) and not denied.
    fn enterable(&mut self, path: &Path, kind: std::fs::FileType) -> bool {
        if !kind.is_dir() {
            return false;
        }
        if self.discovery.is_denied(path, None) {
            self.refuse(path, RefusalReason::Denied);
            return false;
        }
        true
    }

    fn pod_root(&mut self, root: &Path) {
        for (pod, kind) in self.entries(root) {
            let pod_dir = root.join(pod);
            if !self.enterable(&pod_dir, kind) {
                continue;
            }
            for (container, kind) in self.entries(&pod_dir) {
                let container_dir = pod_dir.join(container);
                if !self.enterable(&container_dir, kind) {
                    continue;
                }
                for (name, _) in self.entries(&container_dir) {
                    let path = container_dir.join(name);
                    if let Some(parsed) = PodLogPath::parse(root, &path) {
                        self.admit(path, root, Source::Pod(Arc::new(parsed)));
                    }
                }
            }
        }
    }

    fn glob(&mut self, glob: &Glob, root: &Path) {
        let base = match std::fs::canonicalize(&glob.base) {
            Ok(base) => base,
            Err(_) => return,
        };
        if !base.starts_with(root) {
            self.refuse(&glob.base, RefusalReason::SymlinkOutsideRoot);
            return;
        }
        self.glob_level(&base, &glob.components, 0, root);
    }

    fn glob_level(&mut self, dir: &Path, components: &[String], depth: usize, root: &Path) {
        let Some((first, rest)) = components.split_first() else {
            return;
        };
        if first == "**" {
            self.glob_level(dir, rest, depth, root);
            if depth < MAX_GLOB_DEPTH {
                for (name, kind) in self.entries(dir) {
                    let sub = dir.join(name);
                    if self.enterable(&sub, kind) {
                        self.glob_level(&sub, components, depth + 1, root);
                    }
                }
            }
            return;
        }
        for (name, kind) in self.entries(dir) {
            if !component_matches(first, &name) {
                continue;
            }
            let path = dir.join(name);
            if rest.is_empty() {
                self.admit(path, root, Source::Plain);
            } else if depth < MAX_GLOB_DEPTH && self.enterable(&path, kind) {
                self.glob_level(&path, rest, depth + 1, root);
            }
        }
    }

    /// Admits one candidate file, or records why not.
    fn admit(&mut self, path: PathBuf, root: &Path, source: Source) {
        let checked = self.check(&path, root).and_then(|(open_path, meta)| {
            if source == Source::Plain && meta.nlink() > 1 {
                Err(RefusalReason::HardLinked)
            } else {
                Ok((open_path, meta))
            }
        });
        match checked {
            Ok((open_path, meta)) => self.found.push(DiscoveredFile {
                path,
                open_path,
                source,
                id: FileId::of(&meta),
                size: meta.len(),
            }),
            Err(reason) => self.refuse(&path, reason),
        }
    }

    fn check(&self, path: &Path, root: &Path) -> Result<(PathBuf, Metadata), RefusalReason> {
        let link_meta = std::fs::symlink_metadata(path).map_err(|_| RefusalReason::Unresolvable)?;
        let (open_path, meta) = if link_meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(path).map_err(|_| RefusalReason::Unresolvable)?;
            if !target.starts_with(root) {
                return Err(RefusalReason::SymlinkOutsideRoot);
            }
            let meta =
                std::fs::symlink_metadata(&target).map_err(|_| RefusalReason::Unresolvable)?;
            (target, meta)
        } else {
            (path.to_path_buf(), link_meta)
        };
        if self
            .discovery
            .is_denied(&open_path, Some(FileId::of(&meta)))
            || self.discovery.is_denied(path, None)
        {
            return Err(RefusalReason::Denied);
        }
        if !meta.file_type().is_file() {
            return Err(RefusalReason::NotRegularFile);
        }
        Ok((open_path, meta))
    }
}
