//! A scrape target's labels, populated exactly as Prometheus 2.x `PopulateLabels` does:
//!
//! 1. the scrape settings are added as internal labels unless discovery set them
//!    (`job`, `__scrape_interval__`, `__scrape_timeout__`, `__metrics_path__`,
//!    `__scheme__`);
//! 2. the pipeline's target relabeling runs and may drop the target;
//! 3. a target without `__address__` is an error; an address without a port gets the
//!    scheme's default port (80 or 443), as Prometheus 2.x does;
//! 4. `__meta_*` labels are removed and `instance` defaults to the address.
//!
//! The resulting set still holds the internal `__…` labels the scraper needs;
//! [`public_labels`] is what series are labelled with, and [`Target`] is the target
//! ready to scrape, with its URL.

use std::time::Duration;

use kaas_pipeline::processors::RelabelRule;
use kaas_pipeline::units::format_duration;
use url::Url;

use crate::labels::{ADDRESS, Labels, LabelsBuilder, RESERVED_PREFIX};
use crate::processing::relabel;

/// The label naming the job.
pub const JOB: &str = "job";
/// The label naming the instance; defaults to the address.
pub const INSTANCE: &str = "instance";
/// The internal label holding the scheme.
pub const SCHEME: &str = "__scheme__";
/// The internal label holding the HTTP path.
pub const METRICS_PATH: &str = "__metrics_path__";
/// The internal label holding the scrape interval.
pub const SCRAPE_INTERVAL: &str = "__scrape_interval__";
/// The internal label holding the scrape timeout.
pub const SCRAPE_TIMEOUT: &str = "__scrape_timeout__";
/// Prefix of discovery metadata, removed after relabeling.
pub const META_PREFIX: &str = "__meta_";

/// Scrape settings that become internal labels unless discovery set them.
#[derive(Clone, Debug)]
pub struct ScrapeDefaults {
    /// The job name.
    pub job: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
    /// HTTP path.
    pub metrics_path: String,
    /// `http` or `https`.
    pub scheme: String,
}

/// Why a discovered target cannot be scraped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Relabeling removed or never set `__address__`.
    #[error("the target has no __address__ label after relabeling")]
    NoAddress,
    /// The address is not `host[:port]`.
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
}

/// Populates a target's labels; `Ok(None)` when relabeling dropped it.
pub fn populate(
    discovered: &Labels,
    defaults: &ScrapeDefaults,
    rules: &[RelabelRule],
) -> Result<Option<Labels>, TargetError> {
    let interval = format_duration(defaults.interval);
    let timeout = format_duration(defaults.timeout);
    let mut builder = LabelsBuilder::new(discovered);
    for (name, value) in [
        (JOB, defaults.job.as_str()),
        (SCRAPE_INTERVAL, interval.as_str()),
        (SCRAPE_TIMEOUT, timeout.as_str()),
        (METRICS_PATH, defaults.metrics_path.as_str()),
        (SCHEME, defaults.scheme.as_str()),
    ] {
        if discovered.get(name).is_empty() {
            builder.set(name, value);
        }
    }
    let pre_relabel = builder.labels();
    let Some(relabeled) = relabel::process(&pre_relabel, rules) else {
        return Ok(None);
    };
    let address = relabeled.get(ADDRESS);
    if address.is_empty() {
        return Err(TargetError::NoAddress);
    }
    let address = with_default_port(address, relabeled.get(SCHEME))?;
    let mut builder = LabelsBuilder::new(&relabeled);
    builder.set(ADDRESS, &address);
    for label in relabeled.iter() {
        if label.name.starts_with(META_PREFIX) {
            builder.del(&label.name);
        }
    }
    if relabeled.get(INSTANCE).is_empty() {
        builder.set(INSTANCE, &address);
    }
    Ok(Some(builder.labels()))
}

/// The labels a target's series carry: everything not starting with `__`.
pub fn public_labels(labels: &Labels) -> Labels {
    Labels::from_pairs(
        labels
            .iter()
            .filter(|l| !l.name.starts_with(RESERVED_PREFIX))
            .map(|l| (l.name.clone(), l.value.clone())),
    )
}

/// Adds the scheme's default port when the address has none, as Prometheus 2.x does.
fn with_default_port(address: &str, scheme: &str) -> Result<String, TargetError> {
    let has_port = if let Some(rest) = address.strip_prefix('[') {
        // "[v6]:port" or "[v6]".
        match rest.split_once(']') {
            Some((_, tail)) => tail.starts_with(':'),
            None => return Err(TargetError::InvalidAddress(address.to_owned())),
        }
    } else {
        match address.matches(':').count() {
            0 => false,
            1 => true,
            // A bare IPv6 address without brackets cannot carry a port.
            _ => return Err(TargetError::InvalidAddress(address.to_owned())),
        }
    };
    if has_port {
        return Ok(address.to_owned());
    }
    let port = if scheme == "https" { 443 } else { 80 };
    Ok(format!("{address}:{port}"))
}

/// A target ready to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    /// All labels, internal ones included.
    pub labels: Labels,
    /// The labels its series carry.
    pub public: Labels,
    /// What to fetch.
    pub url: Url,
}

impl Target {
    /// Builds the URL from `__scheme__`, `__address__`, `__metrics_path__` and
    /// `__param_*`.
    pub fn new(labels: Labels) -> Result<Self, String> {
        let mut url = Url::parse(&format!(
            "{}://{}{}",
            labels.get(SCHEME),
            labels.get(ADDRESS),
            labels.get(METRICS_PATH)
        ))
        .map_err(|e| format!("cannot build the scrape URL: {e}"))?;
        for label in labels.iter() {
            if let Some(param) = label.name.strip_prefix("__param_") {
                url.query_pairs_mut().append_pair(param, &label.value);
            }
        }
        Ok(Self {
            public: public_labels(&labels),
            labels,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ScrapeDefaults {
        ScrapeDefaults {
            job: "nginx".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            metrics_path: "/metrics".into(),
            scheme: "http".into(),
        }
    }

    #[test]
    fn defaults_fill_in_and_instance_follows_the_address() {
        let discovered =
            Labels::from_pairs([(ADDRESS, "web:8080"), ("__meta_x", "1"), ("env", "prod")]);
        let labels = populate(&discovered, &defaults(), &[]).unwrap().unwrap();
        assert_eq!(labels.get(JOB), "nginx");
        assert_eq!(labels.get(SCRAPE_INTERVAL), "15s");
        assert_eq!(labels.get(INSTANCE), "web:8080");
        assert_eq!(labels.get("__meta_x"), "");
        assert_eq!(
            format!("{:?}", public_labels(&labels)),
            r#"{env="prod", instance="web:8080", job="nginx"}"#
        );
    }

    #[test]
    fn discovered_settings_win_over_defaults() {
        let discovered = Labels::from_pairs([(ADDRESS, "web"), (JOB, "custom"), (SCHEME, "https")]);
        let labels = populate(&discovered, &defaults(), &[]).unwrap().unwrap();
        assert_eq!(labels.get(JOB), "custom");
        assert_eq!(labels.get(ADDRESS), "web:443", "https default port");
    }

    #[test]
    fn addresses() {
        assert_eq!(with_default_port("[::1]", "http").unwrap(), "[::1]:80");
        assert_eq!(with_default_port("[::1]:9", "http").unwrap(), "[::1]:9");
        assert!(with_default_port("::1", "http").is_err());
        let no_address = populate(&Labels::default(), &defaults(), &[]);
        assert_eq!(no_address, Err(TargetError::NoAddress));
    }
}
