//! How Thanos receive files what the gateway forwards, as a function the tests apply
//! to the deploy manifest's flags ([`stored_labels`]).
//!
//! Thanos receive takes the tenant from the tenant header (`--receive.tenant-header`,
//! default `THANOS-TENANT`) and attaches it to every series of the request as the
//! label `--receive.tenant-label-name` (default `tenant_id`). It is an external label
//! of the tenant's TSDB, and Thanos documents that external labels take precedence
//! over a series label of the same name. So the receive tenant label must never be
//! `tenant`, the label the fleet series, the gateway, the alerts and the Alertmanager
//! routes use for a series' tenant: the observer writes every cluster's
//! `kaas_cluster_info{tenant=…}` as the provider's tenant, and with the label named
//! `tenant` all of them would read back as the provider (issue 15, finding 1). One
//! tenant label name everywhere: `tenant`, with receive's own kept as [`RECEIVE_TENANT_LABEL`].

use kaas_series::labels::{Labels, LabelsBuilder};

/// Thanos receive's default `--receive.tenant-label-name`, the one the deploy
/// manifest must keep.
pub const RECEIVE_TENANT_LABEL: &str = "tenant_id";
/// The receive flag naming its tenant label.
pub const TENANT_LABEL_FLAG: &str = "--receive.tenant-label-name";
/// The receive flag naming its tenant header.
pub const TENANT_HEADER_FLAG: &str = "--receive.tenant-header";

/// The labels Thanos receive stores for a series with `labels`, sent with
/// `header_tenant` in the tenant header, when its tenant label is named
/// `tenant_label_name`: the tenant label overrides a same-named series label.
pub fn stored_labels(labels: &Labels, tenant_label_name: &str, header_tenant: &str) -> Labels {
    let mut builder = LabelsBuilder::new(labels);
    builder.set(tenant_label_name, header_tenant);
    builder.labels()
}

/// The value of `flag` (`--name=value` or `--name value`) in a container's args, as
/// listed in a manifest.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            return args.next().map(String::as_str);
        }
        if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::rewrite::TENANT_LABEL;

    fn fleet_series() -> Labels {
        Labels::from_pairs([
            ("__name__", "kaas_cluster_info"),
            ("cluster", "shop.edge"),
            ("tenant", "shop"),
            ("state", "active"),
        ])
    }

    /// Issue 15, finding 1: with `--receive.tenant-label-name=tenant` (as
    /// deploy/integrations/thanos/receive.yaml had it on 552c13e), the fleet series the
    /// observer writes as the provider's tenant lose their cluster's tenant.
    #[test]
    fn a_receive_tenant_label_named_tenant_overwrites_the_series_tenant() {
        let stored = stored_labels(&fleet_series(), TENANT_LABEL, "kaas-provider");
        assert_eq!(stored.get("tenant"), "kaas-provider");
        let stored = stored_labels(&fleet_series(), RECEIVE_TENANT_LABEL, "kaas-provider");
        assert_eq!(stored.get("tenant"), "shop");
        assert_eq!(stored.get("tenant_id"), "kaas-provider");
    }

    #[test]
    fn flags_are_read_in_both_spellings() {
        let args: Vec<String> = ["--a=1", "--receive.tenant-header", "X", "--b"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(flag_value(&args, "--a"), Some("1"));
        assert_eq!(flag_value(&args, TENANT_HEADER_FLAG), Some("X"));
        assert_eq!(flag_value(&args, "--b"), None);
        assert_eq!(flag_value(&args, "--c"), None);
        assert_eq!(flag_value(&args, "--receive.tenant"), None);
    }
}
