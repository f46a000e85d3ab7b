//! The kubelet's container log path, `<root>/<namespace>_<pod>_<uid>/<container>/<n>.log`,
//! parsed into a typed [`PodLogPath`] whose fields become the record's resource attributes.

use std::path::Path;

/// Where a container's log file sits, read from its path under the pod log root.
///
/// Namespace and pod names are DNS labels and subdomains (no `_`), and the uid is a UUID,
/// so the pod directory splits on `_` into exactly three parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodLogPath {
    /// `k8s.namespace.name`.
    pub namespace: String,
    /// `k8s.pod.name`.
    pub pod: String,
    /// `k8s.pod.uid`.
    pub uid: String,
    /// `k8s.container.name`.
    pub container: String,
    /// `k8s.container.restart_count`: the file name's number.
    pub restart_count: u32,
}

impl PodLogPath {
    /// Reads the three components below `root`; `None` when the path is not a container
    /// log file (a rotated `0.log.2024…` or compressed `.gz` is not, by design: a rotated
    /// file is finished through the descriptor or directory it was read from).
    pub fn parse(root: &Path, path: &Path) -> Option<Self> {
        let relative = path.strip_prefix(root).ok()?;
        let mut parts = relative.iter().map(|part| part.to_str());
        let (pod_dir, container, file) = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        let mut pod_parts = pod_dir.split('_');
        let (namespace, pod, uid) = (pod_parts.next()?, pod_parts.next()?, pod_parts.next()?);
        if pod_parts.next().is_some()
            || [namespace, pod, uid, container]
                .iter()
                .any(|s| s.is_empty())
        {
            return None;
        }
        let number = file.strip_suffix(".log")?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: uid.to_owned(),
            container: container.to_owned(),
            restart_count: number.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/var/log/pods";

    fn parse(path: &str) -> Option<PodLogPath> {
        PodLogPath::parse(Path::new(ROOT), Path::new(path))
    }

    #[test]
    fn container_log_path_parses_into_its_parts() {
        let parsed = parse("/var/log/pods/kube-system_etcd-0_0f1e-22/etcd/3.log").unwrap();
        assert_eq!(
            parsed,
            PodLogPath {
                namespace: "kube-system".into(),
                pod: "etcd-0".into(),
                uid: "0f1e-22".into(),
                container: "etcd".into(),
                restart_count: 3,
            }
        );
    }

    #[test]
    fn paths_that_are_not_container_logs_are_refused() {
        for path in [
            "/var/log/pods/ns_pod_uid/c/0.log.20240101-000000",
            "/var/log/pods/ns_pod_uid/c/0.log.gz",
            "/var/log/pods/ns_pod_uid/c/x.log",
            "/var/log/pods/ns_pod_uid/c/.log",
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_pod_uid_extra/c/0.log",
            "/var/log/pods/ns__uid/c/0.log",
            "/var/log/pods/ns_pod_uid/0.log",
            "/var/log/pods/ns_pod_uid/c/d/0.log",
            "/var/log/other/ns_pod_uid/c/0.log",
            "/var/log/pods/ns_pod_uid/c/99999999999.log",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
