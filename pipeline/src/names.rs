//! Naming rules: Kubernetes object names, namespaces, label keys and values, and
//! Prometheus label names. Each check returns `Err(reason)` with a reason that quotes
//! the offending value and states the rule.

use std::sync::LazyLock;

use regex::Regex;

/// Longest Kubernetes DNS-1123 label (namespaces, pipeline names, label-key names).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Longest Kubernetes DNS-1123 subdomain (Secret names, label-key prefixes).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Longest Kubernetes label value.
pub const LABEL_VALUE_MAX_LEN: usize = 63;
/// Pipeline names starting with this are the observer's own (its central pipeline);
/// tenants may not use them, and an agent serves their buffers first.
pub const RESERVED_PIPELINE_PREFIX: &str = "kaas-";

#[allow(clippy::unwrap_used)] // constant patterns, covered by tests
fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
static QUALIFIED_NAME_PART: LazyLock<Regex> =
    LazyLock::new(|| regex("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| regex("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"));
static SECRET_KEY: LazyLock<Regex> = LazyLock::new(|| regex("^[-._a-zA-Z0-9]+$"));
static PROMETHEUS_LABEL_NAME: LazyLock<Regex> = LazyLock::new(|| regex("^[a-zA-Z_][a-zA-Z0-9_]*$"));

/// A DNS-1123 label: pipeline names and namespaces. Pipeline names also name the
/// pipeline's buffer directory and appear as a label value, which is why they follow the
/// stricter label rule rather than the subdomain rule.
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > DNS1123_LABEL_MAX_LEN {
        return Err(format!(
            "{value:?} is longer than {DNS1123_LABEL_MAX_LEN} characters"
        ));
    }
    if !DNS1123_LABEL.is_match(value) {
        return Err(format!(
            "{value:?} is not a valid DNS-1123 label: use lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: Kubernetes Secret names.
pub fn check_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(format!(
            "{value:?} is longer than {DNS1123_SUBDOMAIN_MAX_LEN} characters"
        ));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        return Err(format!(
            "{value:?} is not a valid DNS-1123 subdomain: use lower-case letters, digits, '-' \
             and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// An agent instance's name within its cluster: a DNS-1123 subdomain, because node
/// instances are named after their node and Kubernetes node names are subdomains
/// (`ip-10-0-1-7.eu-west-1.compute.internal`). It is written into the instance's
/// certificate (a SAN URI, `kaas-observer://instance/<name>`), recorded with it and
/// shown in health, all of which take dots; `/` (which would end the URI's path
/// segment) and upper case are refused by the subdomain rule.
pub fn check_instance_name(value: &str) -> Result<(), String> {
    check_dns1123_subdomain(value)
}

/// A Kubernetes label key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters.
pub fn check_label_key(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        check_dns1123_subdomain(prefix)
            .map_err(|reason| format!("label key {value:?} has an invalid prefix: {reason}"))?;
    }
    if name.is_empty() || name.len() > DNS1123_LABEL_MAX_LEN || !QUALIFIED_NAME_PART.is_match(name)
    {
        return Err(format!(
            "{value:?} is not a valid label key: the name part must be 1 to 63 letters, digits, \
             '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_VALUE_MAX_LEN || !LABEL_VALUE.is_match(value) {
        return Err(format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A key inside a Kubernetes Secret.
pub fn check_secret_key(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > DNS1123_SUBDOMAIN_MAX_LEN || !SECRET_KEY.is_match(value) {
        return Err(format!(
            "{value:?} is not a valid Secret key: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Whether `value` is a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`), the rule
/// Prometheus 2.x enforces and remote-write receivers expect.
pub fn is_prometheus_label_name(value: &str) -> bool {
    PROMETHEUS_LABEL_NAME.is_match(value)
}

/// A Prometheus label name, with a reason when it is not one.
pub fn check_prometheus_label_name(value: &str) -> Result<(), String> {
    if is_prometheus_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid Prometheus label name: use letters, digits and '_', not \
             starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns1123_label("team-a").is_ok());
        assert!(check_dns1123_label("a").is_ok());
        assert!(check_dns1123_label(&"a".repeat(63)).is_ok());
        for bad in ["", "Team", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(check_dns1123_label(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subdomains() {
        assert!(check_dns1123_subdomain("backend.creds").is_ok());
        assert!(check_dns1123_subdomain("a..b").is_err());
        assert!(check_dns1123_subdomain(".a").is_err());
    }

    /// Issue 16: instance names are node names, so dots are allowed; every rejected
    /// name in `testdata/instance-names/rejected.txt` is refused with its reason.
    #[test]
    fn instance_names_are_subdomains() {
        for good in [
            "default",
            "node-1",
            "ip-10-0-1-7.eu-west-1.compute.internal",
            &format!("{}.{}", "a".repeat(63), "b".repeat(189)),
        ] {
            assert!(check_instance_name(good).is_ok(), "{good:?} refused");
        }
        let fixtures = include_str!("../testdata/instance-names/rejected.txt");
        let mut count = 0;
        for line in fixtures
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, expected) = line.split_once('\t').expect("name<TAB>reason");
            let name = name.replace("{254}", &"a".repeat(254));
            let name = if name == "{empty}" {
                String::new()
            } else {
                name
            };
            let reason = check_instance_name(&name).expect_err(&name);
            assert!(reason.contains(expected), "{name:?}: {reason}");
            count += 1;
        }
        assert!(count >= 8, "every fixture line was read");
    }

    #[test]
    fn label_keys_and_values() {
        for good in ["env", "topology.kubernetes.io/zone", "A_b.c-d"] {
            assert!(check_label_key(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "/env", "Example.com/env", "a/b/c", "-env", "env-"] {
            assert!(check_label_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("eu-1.a_b").is_ok());
        assert!(check_label_value("-x").is_err());
        assert!(check_label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn prometheus_label_names() {
        for good in ["job", "_x", "__address__", "a1"] {
            assert!(is_prometheus_label_name(good), "{good:?} refused");
        }
        for bad in ["", "1a", "a-b", "a.b", "ä"] {
            assert!(!is_prometheus_label_name(bad), "{bad:?} accepted");
        }
    }
}
