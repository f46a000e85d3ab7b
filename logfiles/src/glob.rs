//! File-name patterns for plain log files: `*` and `?` within one path component and
//! `**` for any number of directories, split into the literal directory the walk starts
//! from and the components it matches below it. Character classes are refused rather
//! than half supported.

use std::path::{Component, Path, PathBuf};

use crate::error::ConfigError;

/// An absolute pattern such as `/var/log/app/**/*.log`, checked and split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The leading components without wildcards: the walk starts here.
    pub base: PathBuf,
    /// The remaining components; each is a wildcard pattern or `**`.
    pub components: Vec<String>,
}

impl Glob {
    /// Checks the pattern: absolute, no `.`/`..` components, no `[`, valid UTF-8, at least
    /// one component after the base.
    pub fn parse(pattern: &Path) -> Result<Self, ConfigError> {
        let refuse = |reason: &str| ConfigError::BadGlob {
            pattern: pattern.to_path_buf(),
            reason: reason.to_owned(),
        };
        if !pattern.is_absolute() {
            return Err(refuse("must be an absolute path"));
        }
        let mut base = PathBuf::from("/");
        let mut components = Vec::new();
        for component in pattern.components() {
            let part = match component {
                Component::RootDir => continue,
                Component::Normal(part) => part.to_str().ok_or_else(|| refuse("must be UTF-8"))?,
                _ => return Err(refuse("must not contain `.` or `..` components")),
            };
            if part.contains('[') || part.contains(']') {
                return Err(refuse("character classes `[...]` are not supported"));
            }
            if part.contains("**") && part != "**" {
                return Err(refuse("`**` must be a whole path component"));
            }
            let wild = part.contains(['*', '?']);
            if components.is_empty() && !wild {
                base.push(part);
            } else {
                components.push(part.to_owned());
            }
        }
        if components.is_empty() {
            // A literal file path: its parent is the base and its name the one component.
            let name = base
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| refuse("names no file"))?
                .to_owned();
            base.pop();
            components.push(name);
        }
        Ok(Self { base, components })
    }
}

/// Whether `name` matches one component's pattern (`*` any run, `?` one character).
pub fn component_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    // Iterative wildcard matching with one backtrack point: linear in practice, never
    // exponential on hostile names.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_splits_into_base_and_wildcard_components() {
        let glob = Glob::parse(Path::new("/var/log/app/**/*.log")).unwrap();
        assert_eq!(glob.base, PathBuf::from("/var/log/app"));
        assert_eq!(glob.components, vec!["**", "*.log"]);
        let literal = Glob::parse(Path::new("/var/log/syslog")).unwrap();
        assert_eq!(
            (literal.base, literal.components),
            (PathBuf::from("/var/log"), vec!["syslog".to_owned()])
        );
    }

    #[test]
    fn unsupported_patterns_are_refused_with_a_reason() {
        for (pattern, reason) in [
            ("var/log/*.log", "absolute"),
            ("/var/log/../etc/*", "`..`"),
            ("/var/log/[ab].log", "character classes"),
            ("/var/log/a**.log", "whole path component"),
        ] {
            let error = Glob::parse(Path::new(pattern)).unwrap_err().to_string();
            assert!(error.contains(reason), "{pattern}: {error}");
        }
    }

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(component_matches("*.log", "app.log"));
        assert!(component_matches("a?c*", "abc"));
        assert!(component_matches("*", ""));
        assert!(!component_matches("*.log", "app.log.1"));
        assert!(!component_matches("a?c", "ac"));
        assert!(component_matches("*a*b*c", "xxaxxbxxc"));
        assert!(!component_matches(&"*a".repeat(50), &"a".repeat(40)));
    }
}
