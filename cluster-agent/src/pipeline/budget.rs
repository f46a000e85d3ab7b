//! One disk budget for the buffers of every pipeline an agent runs, so that together
//! they cannot fill its data volume, and one tenant's backend outage cannot take the
//! disk the other pipelines need.
//!
//! # The rule
//!
//! Each pipeline asks for `spec.buffer.maxBytes`. The observer's own pipelines (names
//! starting with [`RESERVED_PIPELINE_PREFIX`], the central pipeline) are served first:
//! they get what they ask, or, if they alone ask for more than the budget, a share of
//! it in proportion to what they ask. The other pipelines share what is left: what they
//! ask when it fits, otherwise each gets the same fraction of its ask (rounded down),
//! never less than [`MIN_BUFFER_BYTES`]. Pipelines are never refused for the budget:
//! they run with a smaller buffer and report `BufferBudgetExceeded`, naming the
//! budget, so a configuration the observer let through (an older observer, a per-cluster
//! budget set higher than this agent's) degrades the buffers, not the data flow. The
//! floor means that more than `budget / MIN_BUFFER_BYTES` pipelines exceed the budget
//! by at most their floors.
//!
//! Metric and log pipelines share the one budget, each counted once by its
//! [`PipelineId`] (names are unique per kind only).
//!
//! The budget is this instance's, for its own data volume: the cluster-level instance's
//! claim, or for a node instance its node's host path, so every node has a budget of
//! its own ([`DEFAULT_NODE_BUFFER_BUDGET`] unless `--buffer-budget` says otherwise). On
//! a node the observer's own pipeline is the central log pipeline
//! (`kaas-central-logs`): it is served first there, so tenant log pipelines cannot
//! starve it. The allocation is a pure function
//! of the budget and the pipelines' ids and asks: the same configuration always gives
//! the same bounds.

use std::collections::BTreeMap;

use super::PipelineId;

/// The budget when `--buffer-budget` is not given (the reasoning is beside it).
pub use kaas_pipeline::buffer::DEFAULT_BUFFER_BUDGET;
/// The budget of a node instance when `--buffer-budget` is not given.
pub use kaas_pipeline::buffer::DEFAULT_NODE_BUFFER_BUDGET;
pub use kaas_pipeline::buffer::MIN_BUFFER_BYTES;
pub use kaas_pipeline::names::RESERVED_PIPELINE_PREFIX;

/// A pipeline and the `maxBytes` it asks for.
type Ask = (PipelineId, u64);

/// What one pipeline's buffer may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferGrant {
    /// The bound the buffer runs with.
    pub max_bytes: u64,
    /// Why it is below the pipeline's `maxBytes`, naming the budget; `None` when the
    /// pipeline got what it asked.
    pub reduced: Option<String>,
}

/// The bound of each pipeline's buffer, by id, for pipelines asking `(id, maxBytes)`
/// on an agent whose buffers may use `budget` bytes together (see the module
/// documentation for the rule).
pub fn allocate(
    budget: u64,
    pipelines: impl IntoIterator<Item = Ask>,
) -> BTreeMap<PipelineId, BufferGrant> {
    let (reserved, tenants): (Vec<Ask>, Vec<Ask>) = pipelines
        .into_iter()
        .partition(|(id, _)| id.name.starts_with(RESERVED_PIPELINE_PREFIX));
    let mut grants = BTreeMap::new();
    let reserved_granted = share(budget, &reserved, budget, 0, &mut grants);
    let left = budget.saturating_sub(reserved_granted);
    share(left, &tenants, budget, reserved_granted, &mut grants);
    grants
}

/// Gives `pipelines` what they ask if it fits in `room`, else the same fraction of their
/// ask each (at least [`MIN_BUFFER_BYTES`]); records the grants and returns their sum.
fn share(
    room: u64,
    pipelines: &[Ask],
    budget: u64,
    reserved: u64,
    grants: &mut BTreeMap<PipelineId, BufferGrant>,
) -> u64 {
    let asked: u128 = pipelines.iter().map(|(_, ask)| u128::from(*ask)).sum();
    let mut granted = 0u64;
    for (id, ask) in pipelines {
        let grant = if asked <= u128::from(room) {
            BufferGrant {
                max_bytes: *ask,
                reduced: None,
            }
        } else {
            let scaled = u128::from(*ask) * u128::from(room) / asked.max(1);
            let max_bytes = u64::try_from(scaled)
                .unwrap_or(u64::MAX)
                .max(MIN_BUFFER_BYTES)
                .min(*ask);
            BufferGrant {
                max_bytes,
                reduced: Some(format!(
                    "the buffer is limited to {max_bytes} of the {ask} bytes its maxBytes asks: \
                     the pipelines on this agent ask for more than its buffer budget of {budget} \
                     bytes (--buffer-budget), of which {reserved} are reserved for the \
                     observer's own pipelines; lower maxBytes, or ask the provider for a larger \
                     budget"
                )),
            }
        };
        granted = granted.saturating_add(grant.max_bytes);
        grants.insert(id.clone(), grant);
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;

    /// Metric pipelines asking `(name, maxBytes)`, for [`allocate`].
    fn metric<const N: usize>(asks: [(&str, u64); N]) -> Vec<Ask> {
        asks.into_iter()
            .map(|(name, ask)| (PipelineId::metric(name), ask))
            .collect()
    }

    fn bounds(grants: &BTreeMap<PipelineId, BufferGrant>) -> Vec<(&str, u64, bool)> {
        grants
            .iter()
            .map(|(id, g)| (id.name.as_str(), g.max_bytes, g.reduced.is_some()))
            .collect()
    }

    /// Issue 16: a metric and a log pipeline of one name are two pipelines, each with
    /// its own grant, and both count against the one budget.
    #[test]
    fn metric_and_log_pipelines_of_one_name_share_the_budget_as_two() {
        let grants = allocate(
            2 * GI,
            [
                (PipelineId::metric("a"), 2 * GI),
                (PipelineId::log("a"), 2 * GI),
            ],
        );
        assert_eq!(grants.len(), 2);
        assert_eq!(grants[&PipelineId::metric("a")].max_bytes, GI);
        assert_eq!(grants[&PipelineId::log("a")].max_bytes, GI);
        assert!(grants[&PipelineId::log("a")].reduced.is_some());
    }

    /// Issue 16: on a node, the central log pipeline is reserved first and tenant log
    /// pipelines asking more than the node's budget share what is left, however many
    /// they are.
    #[test]
    fn on_a_node_the_central_log_pipeline_is_served_before_tenant_log_pipelines() {
        let asks = [
            (PipelineId::log("tenant-a"), 2 * GI),
            (PipelineId::log("kaas-central-logs"), GI),
            (PipelineId::log("tenant-b"), 2 * GI),
        ];
        let grants = allocate(DEFAULT_NODE_BUFFER_BUDGET, asks);
        let central = &grants[&PipelineId::log("kaas-central-logs")];
        assert_eq!((central.max_bytes, central.reduced.is_none()), (GI, true));
        let tenants = [PipelineId::log("tenant-a"), PipelineId::log("tenant-b")];
        for id in &tenants {
            assert_eq!(grants[id].max_bytes, GI / 2, "{id:?}");
            assert!(grants[id].reduced.is_some());
        }
        let total: u64 = grants.values().map(|g| g.max_bytes).sum();
        assert_eq!(total, DEFAULT_NODE_BUFFER_BUDGET);
    }

    #[test]
    fn pipelines_that_fit_get_what_they_ask() {
        let grants = allocate(3 * GI, metric([("kaas-central", GI), ("a", GI), ("b", GI)]));
        assert_eq!(
            bounds(&grants),
            [
                ("a", GI, false),
                ("b", GI, false),
                ("kaas-central", GI, false)
            ]
        );
    }

    /// Issue 13, Disk budget: pipelines asking more than the budget together are scaled
    /// down after the central pipeline's share is reserved, and each says why, naming
    /// the budget. On 552c13e every pipeline kept its own `maxBytes` whatever the
    /// volume held.
    #[test]
    fn the_central_share_is_reserved_first_and_the_rest_is_shared_in_proportion() {
        let grants = allocate(
            3 * GI,
            metric([
                ("kaas-central", GI),
                ("a", 3 * GI),
                ("b", GI),
                ("c", 64 * MI),
            ]),
        );
        // 2 GiB left for 4 GiB + 64 MiB asked: each gets 2/(4+1/16) of its ask.
        let asked = 4 * GI + 64 * MI;
        let scaled = |ask: u64| (u128::from(ask) * u128::from(2 * GI) / u128::from(asked)) as u64;
        assert_eq!(
            bounds(&grants),
            [
                ("a", scaled(3 * GI), true),
                ("b", scaled(GI), true),
                ("c", scaled(64 * MI), true),
                ("kaas-central", GI, false)
            ]
        );
        let total: u64 = grants.values().map(|g| g.max_bytes).sum();
        assert!(total <= 3 * GI, "{total}");
        let reason = grants[&PipelineId::metric("a")].reduced.as_deref().unwrap();
        assert!(
            reason.contains("budget of 3221225472 bytes")
                && reason.contains("1073741824 are reserved"),
            "{reason}"
        );
        assert_eq!(
            grants,
            allocate(
                3 * GI,
                metric([
                    ("c", 64 * MI),
                    ("b", GI),
                    ("a", 3 * GI),
                    ("kaas-central", GI)
                ])
            )
        );
    }

    #[test]
    fn shares_never_drop_below_the_minimum_and_never_exceed_the_ask() {
        // The central pipeline alone takes the budget: the others keep the minimum.
        let grants = allocate(
            GI,
            metric([("kaas-central", 2 * GI), ("a", GI), ("b", 2 * MI)]),
        );
        assert_eq!(
            bounds(&grants),
            [
                ("a", MIN_BUFFER_BYTES, true),
                ("b", MIN_BUFFER_BYTES, true),
                ("kaas-central", GI, true)
            ]
        );
        // Extreme asks cannot overflow.
        let grants = allocate(u64::MAX, metric([("a", u64::MAX), ("b", u64::MAX)]));
        assert!(
            grants.values().all(|g| g.max_bytes >= u64::MAX / 2 - 1),
            "{grants:?}"
        );
        let grants = allocate(0, metric([("a", u64::MAX)]));
        assert_eq!(grants[&PipelineId::metric("a")].max_bytes, MIN_BUFFER_BYTES);
    }
}
