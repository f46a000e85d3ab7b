//! Who is sending: the cluster and tenant a verified agent certificate names.
//!
//! The TLS layer accepts only client certificates the observer's CA signed
//! ([`crate::identity`]), and the CA writes the cluster's global id into each one
//! (`kaas-observer://cluster/<tenant>.<name>`) itself, whatever the agent asked for.
//! The tenant is the part before [`GLOBAL_ID_SEPARATOR`]: tenant and cluster names
//! are DNS-1123 labels, so the split is unambiguous. Whether the certificate was
//! revoked since is the store's to say ([`super::standing`]), by its serial. A cluster registered before names
//! were per tenant has an id without the separator and names no tenant; the gateway
//! refuses it (it cannot know the tenant without the store), and says so.

use crate::cluster_id::GLOBAL_ID_SEPARATOR;
use crate::identity::AgentCertificateInfo;

use super::rewrite::ClusterIdentity;

/// Why a certificate cannot send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    /// The connection carries no client certificate (only possible in tests: the TLS
    /// layer requires one).
    #[error("a client certificate issued by the observer is required")]
    NoCertificate,
    /// The certificate names no cluster.
    #[error("the client certificate does not name a cluster")]
    NoCluster,
    /// The cluster id is not `<tenant>.<name>`.
    #[error(
        "cluster {0:?} was registered before names were per tenant; its id names no tenant, so the gateway cannot file its series (register it again)"
    )]
    NoTenant(String),
}

/// The identity a verified leaf certificate (DER) names, and the certificate's serial
/// (lower-case hex, as the store records it).
pub fn identify(leaf: Option<&[u8]>) -> Result<(ClusterIdentity, String), PeerRefusal> {
    let leaf = leaf.ok_or(PeerRefusal::NoCertificate)?;
    let info = AgentCertificateInfo::parse(leaf).ok_or(PeerRefusal::NoCluster)?;
    let tenant = match info.cluster.split_once(GLOBAL_ID_SEPARATOR) {
        Some((tenant, name)) if !tenant.is_empty() && !name.is_empty() => tenant.to_owned(),
        _ => return Err(PeerRefusal::NoTenant(info.cluster)),
    };
    Ok((
        ClusterIdentity {
            cluster: info.cluster,
            tenant,
        },
        info.serial_hex,
    ))
}
