//! A cluster's global id, its identity across the provider: `<tenant>.<name>` for the
//! clusters registered since names are per tenant (see "Cluster names and global ids"
//! in [`crate::store`]). A leaf, so that the models naming clusters (the store's, the
//! probe targets') share one rule.

/// Separates tenant and name in a derived global cluster id. Tenant and cluster names
/// are DNS-1123 labels, which cannot contain it, so `<tenant>.<name>` is unambiguous,
/// and no id kept from before names were per tenant (a label too) can equal one.
pub const GLOBAL_ID_SEPARATOR: char = '.';

/// The global id of the cluster `tenant` names `name`: `<tenant>.<name>`. Two tenants'
/// `prod` are `shop.prod` and `bank.prod`. Clusters registered before names were per
/// tenant keep their old name as their id (see
/// [`Cluster::id`](crate::store::Cluster::id)), so look clusters up by tenant and name
/// ([`Store::get_cluster_named`](crate::store::Store::get_cluster_named)) rather than
/// deriving an id.
pub fn global_cluster_id(tenant: &str, name: &str) -> String {
    format!("{tenant}{GLOBAL_ID_SEPARATOR}{name}")
}
