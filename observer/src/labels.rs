//! Cluster label keys the observer reserves for itself.
//!
//! The observer records facts about a cluster in its labels: which onboarding source
//! registered it (`kaas-observer.io/source`), the namespace of its Cluster API object
//! (`kaas-observer.io/cluster-api-namespace`), and the agent's objects carry
//! `telemetry.kaas-observer.io/cluster`. Sources decide what they own from those labels,
//! so a label a tenant could set would let the tenant claim what is not theirs (issue
//! 13, finding 1: a tenant registered a cluster with the Cluster API labels of another
//! tenant's namespace, and the other tenant's cluster was adopted under the attacker).
//!
//! So every key whose prefix is [`RESERVED_DOMAIN`] or a subdomain of it
//! (`kaas-observer.io/`, `telemetry.kaas-observer.io/`, ...) is refused from every source
//! a tenant can write: the REST API, the labels of a Cluster API `Cluster`, the entries
//! of a KaaS inventory. Only the observer sets them, after the check.

/// The label that records which onboarding source registered a cluster (its value is
/// the source's name, `onboarding::Source::as_str`).
pub const SOURCE_LABEL: &str = "kaas-observer.io/source";
/// The [`SOURCE_LABEL`] of clusters the Cluster API source registered: it installs
/// every one's agent itself.
pub const CLUSTER_API_SOURCE: &str = "cluster-api";
/// The label that says the observer installs the cluster's agent itself (value
/// [`AGENT_INSTALLED_BY_OBSERVER`]): set on inventory clusters whose entry names a
/// kubeconfig. Cluster API clusters carry their source label instead.
pub const AGENT_INSTALLER_LABEL: &str = "kaas-observer.io/agent-installer";
/// The value of [`AGENT_INSTALLER_LABEL`].
pub const AGENT_INSTALLED_BY_OBSERVER: &str = "observer";

/// Whether the observer installs the agent of a cluster with these `labels` itself, so
/// nobody has to run the install command.
pub fn agent_installed_by_observer(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(SOURCE_LABEL).map(String::as_str) == Some(CLUSTER_API_SOURCE)
        || labels.get(AGENT_INSTALLER_LABEL).map(String::as_str)
            == Some(AGENT_INSTALLED_BY_OBSERVER)
}

/// The domain whose label prefixes are the observer's own.
pub const RESERVED_DOMAIN: &str = "kaas-observer.io";

/// The reserved prefix of `key` (with its `/`) if the key is one the observer keeps for
/// itself. Compared without regard to case, so `Kaas-Observer.io/x` is refused too (it
/// is not a valid key anyway, but no check may depend on another's order).
pub fn reserved_prefix(key: &str) -> Option<String> {
    let (prefix, _) = key.split_once('/')?;
    let prefix = prefix.to_ascii_lowercase();
    let reserved = prefix == RESERVED_DOMAIN
        || prefix
            .strip_suffix(RESERVED_DOMAIN)
            .is_some_and(|sub| sub.ends_with('.'));
    reserved.then(|| format!("{prefix}/"))
}

/// Why `key` may not be set by a tenant-writable source, or `None` if it may.
pub fn reserved_label_problem(key: &str) -> Option<String> {
    reserved_prefix(key).map(|prefix| {
        format!(
            "the prefix {prefix:?} is reserved: labels under {RESERVED_DOMAIN} are set by the \
             observer only; use a prefix of your own"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_domain_and_its_subdomains_are_reserved() {
        for (key, prefix) in [
            ("kaas-observer.io/source", "kaas-observer.io/"),
            (
                "kaas-observer.io/cluster-api-namespace",
                "kaas-observer.io/",
            ),
            (
                "telemetry.kaas-observer.io/cluster",
                "telemetry.kaas-observer.io/",
            ),
            ("a.b.kaas-observer.io/x", "a.b.kaas-observer.io/"),
            ("KAAS-OBSERVER.IO/tenant", "kaas-observer.io/"),
        ] {
            assert_eq!(reserved_prefix(key).as_deref(), Some(prefix), "{key}");
            let problem = reserved_label_problem(key).unwrap();
            assert!(problem.contains(&format!("{prefix:?}")), "{problem}");
        }
        for key in [
            "env",
            "kaas-observer.io",
            "example.com/kaas-observer.io",
            "notkaas-observer.io/x",
            "kaas-observer.io.example.com/x",
            "cluster.x-k8s.io/cluster-name",
        ] {
            assert_eq!(reserved_prefix(key), None, "{key}");
            assert_eq!(reserved_label_problem(key), None, "{key}");
        }
    }
}
