//! Which crates a workspace has: its members and each member's root files.
//!
//! Only the few `Cargo.toml` keys the check needs are read, by line: the workspace's
//! `members = [ … ]` (with `dir/*` expanded), and each member's `[lib]` and `[[bin]]`
//! `path`s. Beside those, a member's roots are the ones Cargo finds on its own:
//! `src/lib.rs`, `src/main.rs`, `src/bin/*.rs`, `src/bin/*/main.rs` and `build.rs`.
//! Integration tests, benchmarks and examples are test code and not checked.

use std::path::{Path, PathBuf};

use crate::Error;

/// One crate root: the root file and the crate's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrateRoot {
    /// `observer/src/lib.rs`, absolute.
    pub file: PathBuf,
    /// `observer/`, absolute.
    pub dir: PathBuf,
}

/// The crate roots of every member of the workspace at `root`, in member order.
pub fn workspace_roots(root: &Path) -> Result<Vec<CrateRoot>, Error> {
    let manifest = root.join("Cargo.toml");
    let text = read(&manifest)?;
    let members = members(&text).ok_or_else(|| Error::Manifest {
        path: manifest.clone(),
        reason: "no `members = [...]` under `[workspace]`".to_owned(),
    })?;
    let mut roots = Vec::new();
    for member in members {
        for dir in expand(root, &member)? {
            roots.extend(crate_roots(&dir)?);
        }
    }
    Ok(roots)
}

/// The root files of the crate in `dir`.
pub fn crate_roots(dir: &Path) -> Result<Vec<CrateRoot>, Error> {
    let manifest = dir.join("Cargo.toml");
    let mut files: Vec<PathBuf> = match std::fs::read_to_string(&manifest) {
        Ok(text) => target_paths(&text)
            .into_iter()
            .map(|p| dir.join(p))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                path: manifest,
                source,
            });
        }
    };
    let src = dir.join("src");
    files.extend([
        src.join("lib.rs"),
        src.join("main.rs"),
        dir.join("build.rs"),
    ]);
    let mut bins: Vec<PathBuf> = std::fs::read_dir(src.join("bin"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    bins.sort();
    for bin in bins {
        if bin.extension().is_some_and(|e| e == "rs") {
            files.push(bin);
        } else {
            files.push(bin.join("main.rs"));
        }
    }
    let mut roots: Vec<CrateRoot> = Vec::new();
    for file in files {
        if file.is_file() && !roots.iter().any(|r| r.file == file) {
            roots.push(CrateRoot {
                file,
                dir: dir.to_owned(),
            });
        }
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The strings of `members = [ … ]` in the `[workspace]` table.
fn members(manifest: &str) -> Option<Vec<String>> {
    let workspace = manifest.find("[workspace]")?;
    let table = &manifest[workspace + "[workspace]".len()..];
    let table = &table[..table.find("\n[").unwrap_or(table.len())];
    let start = table
        .lines()
        .position(|l| l.trim_start().starts_with("members"))?;
    let from_key: String = table.lines().skip(start).collect::<Vec<_>>().join("\n");
    let list = &from_key[from_key.find('[')? + 1..];
    let list = &list[..list.find(']')?];
    Some(quoted(list))
}

/// Every `"…"` in `text`, outside `#` comments.
fn quoted(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut parts = line.split('"');
        parts.next();
        while let (Some(value), Some(_)) = (parts.next(), parts.next()) {
            out.push(value.to_owned());
        }
    }
    out
}

/// A member's folders: itself, or for `dir/*` every folder in `dir` with a manifest.
fn expand(root: &Path, member: &str) -> Result<Vec<PathBuf>, Error> {
    let Some(parent) = member.strip_suffix("/*") else {
        return Ok(vec![root.join(member)]);
    };
    let folder = root.join(parent);
    let entries = std::fs::read_dir(&folder).map_err(|source| Error::Io {
        path: folder.clone(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The `path`s of a member's `[lib]` and `[[bin]]` tables.
fn target_paths(manifest: &str) -> Vec<String> {
    let mut in_target = false;
    let mut paths = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_target = line == "[lib]" || line == "[[bin]]";
        } else if in_target && line.starts_with("path") && line[4..].trim_start().starts_with('=') {
            paths.extend(quoted(line).into_iter().take(1));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_span_lines_and_skip_comments() {
        let manifest = "[workspace]\nresolver = \"3\"\nexclude = [\"fuzz\"]\nmembers = [\n  \"a\", # \"not-me\"\n  \"tools/*\",\n]\n\n[workspace.package]\nversion = \"1\"\n";
        assert_eq!(
            members(manifest),
            Some(vec!["a".to_owned(), "tools/*".to_owned()])
        );
    }

    #[test]
    fn a_manifest_without_workspace_has_no_members() {
        assert_eq!(
            members("[package]\nname = \"x\"\nmembers = [\"a\"]\n"),
            None
        );
    }

    #[test]
    fn lib_and_bin_paths_are_read_but_not_dependency_paths() {
        let manifest = "[lib]\npath = \"src/root.rs\"\n\n[[bin]]\nname = \"x\"\npath = \"src/x.rs\"\n\n[dependencies]\nfoo = { path = \"../foo\" }\n";
        assert_eq!(target_paths(manifest), ["src/root.rs", "src/x.rs"]);
    }
}
