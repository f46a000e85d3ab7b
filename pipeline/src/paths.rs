//! Which files a pipeline may make the agent read: the one path policy every input that
//! names a file uses (`valueFrom.file` today; log file inputs and raw scrape
//! configurations later).
//!
//! A path is allowed when it is absolute and lexically plain (no `.` or `..`
//! components, no NUL), lies under one of the policy's allowed roots, and lies under
//! none of its denied paths: the agent's data directory (its identity key, the
//! last-known-good configuration with every secret, the buffers), the pod's mounted
//! credentials (the service-account token), the node's credentials (kubelet PKI,
//! `/etc/kubernetes`), and the kernel's views of processes and devices, which lead
//! around every other rule (`/proc/self/root/…`) or never end (`/dev/zero`).
//!
//! Validation checks the path as written ([`PathPolicy::check`], pure). A symlink can
//! still point anywhere, and can be created after validation, so the agent checks the
//! resolved path again every time it reads ([`PathPolicy::check_resolved`] on the path
//! the kernel actually opened).

use std::path::{Component, Path, PathBuf};

/// Where the agent keeps its identity, buffers and last-known-good configuration in
/// `deploy/agent` (its `--data-dir`); denied by [`PathPolicy::agent_default`], which
/// is what validation assumes when it does not run inside the agent.
pub const DEFAULT_AGENT_DATA_DIR: &str = "/var/lib/kaas-agent";

/// Paths no pipeline may read, whoever wrote it, with the reason given in refusals.
pub const DENIED_PATHS: &[(&str, &str)] = &[
    (
        "/var/run/secrets",
        "the pod's mounted credentials, such as its service-account token",
    ),
    (
        "/run/secrets",
        "the pod's mounted credentials, such as its service-account token",
    ),
    (
        "/var/lib/kubelet",
        "the kubelet's PKI and every pod's mounted Secrets",
    ),
    (
        "/etc/kubernetes",
        "the node's credentials (kubelet kubeconfig, cluster PKI)",
    ),
    (
        "/etc/kaas-agent",
        "the agent's join token and the observer's CA as deploy/agent mounts them",
    ),
    (
        "/proc",
        "process state: environments hold tokens, and /proc/*/root leads around every other rule",
    ),
    ("/sys", "kernel state, not configuration"),
    ("/dev", "devices: some never end, some block"),
];

/// Why the agent's data directory is denied.
const DATA_DIR_REASON: &str =
    "the agent's data directory: its identity key, last-known-good configuration and buffers";

/// Allowed roots and denied paths for files pipelines name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    allowed_roots: Vec<PathBuf>,
    denied: Vec<(PathBuf, String)>,
}

impl PathPolicy {
    /// Files anywhere under `allowed_roots` (absolute) except [`DENIED_PATHS`].
    pub fn new(allowed_roots: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            allowed_roots: allowed_roots.into_iter().collect(),
            denied: DENIED_PATHS
                .iter()
                .map(|(path, why)| (PathBuf::from(path), (*why).to_owned()))
                .collect(),
        }
    }

    /// Any file but [`DENIED_PATHS`] and the agent's data directory at `data_dir`
    /// (absolute).
    pub fn for_agent(data_dir: &Path) -> Self {
        let mut policy = Self::new([PathBuf::from("/")]);
        policy.deny(data_dir, DATA_DIR_REASON);
        policy
    }

    /// Log files under `roots` (absolute), never [`DENIED_PATHS`] nor the agent's
    /// default data directory.
    pub fn for_log_files(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut policy = Self::new(roots);
        policy.deny(Path::new(DEFAULT_AGENT_DATA_DIR), DATA_DIR_REASON);
        policy
    }

    /// [`PathPolicy::for_agent`] with the agent's default data directory.
    pub fn agent_default() -> Self {
        Self::for_agent(Path::new(DEFAULT_AGENT_DATA_DIR))
    }

    /// Denies `path` (absolute) and everything under it, saying `why` in refusals.
    pub fn deny(&mut self, path: &Path, why: &str) {
        self.denied.push((path.to_owned(), why.to_owned()));
    }

    /// The roots files may be read from.
    pub fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed_roots
    }

    /// The denied paths.
    pub fn denied(&self) -> impl Iterator<Item = &Path> {
        self.denied.iter().map(|(path, _)| path.as_path())
    }

    /// Checks `path` as written: absolute, plain, under an allowed root and under no
    /// denied path. Pure; the reason quotes the path.
    pub fn check(&self, path: &str) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("{path:?} is not an absolute path"));
        }
        if path.contains('\0') {
            return Err(format!("{path:?} contains a NUL byte"));
        }
        if path.split('/').any(|part| part == "." || part == "..") {
            return Err(format!(
                "{path:?} has '.' or '..' components; write the plain path"
            ));
        }
        self.check_resolved(Path::new(path))
    }

    /// Checks an absolute path the file system resolved (every symlink followed):
    /// under an allowed root and under no denied path.
    pub fn check_resolved(&self, path: &Path) -> Result<(), String> {
        let shown = path.display();
        if let Some((denied, why)) = self.denied.iter().find(|(d, _)| is_under(path, d)) {
            return Err(format!(
                "\"{shown}\" is under {}, which no pipeline may read: {why}",
                denied.display()
            ));
        }
        if !self.allowed_roots.iter().any(|root| is_under(path, root)) {
            let roots: Vec<String> = self
                .allowed_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(format!(
                "\"{shown}\" is outside the directories files may be read from ({})",
                roots.join(", ")
            ));
        }
        Ok(())
    }
}

impl PathPolicy {
    /// The first denied path at or below `dir`, with the reason it is denied: what a
    /// pattern rooted at `dir` could reach.
    pub fn denied_below(&self, dir: &Path) -> Option<(&Path, &str)> {
        self.denied
            .iter()
            .find(|(denied, _)| is_under(denied, dir))
            .map(|(denied, why)| (denied.as_path(), why.as_str()))
    }
}

/// Whether `path` is `dir` or below it, comparing whole components (so `/procfs` is
/// not under `/proc`).
fn is_under(path: &Path, dir: &Path) -> bool {
    fn plain(p: &Path) -> Vec<Component<'_>> {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }
    plain(path).starts_with(&plain(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_the_data_dir_are_refused() {
        let policy = PathPolicy::agent_default();
        for denied in [
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/run/secrets/kubernetes.io/serviceaccount/token",
            "/var/lib/kaas-agent/identity/tls.key",
            "/var/lib/kaas-agent/last-known-good.json",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "/etc/kubernetes/kubelet.conf",
            "/proc/self/root/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/proc/self/environ",
            "/dev/zero",
        ] {
            let reason = policy.check(denied).unwrap_err();
            assert!(reason.contains("which no pipeline may read"), "{reason}");
        }
        assert_eq!(policy.check("/etc/edge/token"), Ok(()));
        assert_eq!(
            policy.check("/procfs/token"),
            Ok(()),
            "whole components only"
        );
    }

    #[test]
    fn only_plain_absolute_paths_pass() {
        let policy = PathPolicy::agent_default();
        assert_eq!(
            policy.check("secrets/token").unwrap_err(),
            r#""secrets/token" is not an absolute path"#
        );
        assert!(
            policy
                .check("/etc/edge/../../var/run/secrets/kubernetes.io/serviceaccount/token")
                .unwrap_err()
                .contains("'..'")
        );
        assert!(policy.check("/etc/./edge/token").is_err());
        assert!(policy.check("/etc/edge/tok\0en").is_err());
    }

    #[test]
    fn roots_bound_what_may_be_read() {
        let policy = PathPolicy::new([PathBuf::from("/var/log/pods")]);
        assert_eq!(policy.check("/var/log/pods/shop/app.log"), Ok(()));
        assert_eq!(
            policy.check("/var/log/syslog").unwrap_err(),
            r#""/var/log/syslog" is outside the directories files may be read from (/var/log/pods)"#
        );
    }
}
