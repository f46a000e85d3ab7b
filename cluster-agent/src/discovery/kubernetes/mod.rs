//! Kubernetes service discovery, kept thin: [`pods`] maps a Pod to label sets (pure,
//! unit-tested), [`annotations`] expresses the `prometheus.io/*` annotation conventions
//! as relabel rules, and [`watch`] keeps a reflector of the cluster's pods through
//! kube-runtime's watcher (tested against kube's mock client) and publishes the
//! current pods whenever they change; [`secrets`] resolves `secretKeyRef` values from
//! the referenced namespaces' Secrets and follows their rotation.

pub mod annotations;
pub mod endpointslices;
pub mod istio;
pub mod nodes;
pub mod pods;
pub mod secrets;
pub mod watch;

/// Prefix of every Kubernetes meta label, as Prometheus names them.
pub const META_PREFIX: &str = "__meta_kubernetes_";

/// Prometheus' `strutil.SanitizeLabelName`: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
