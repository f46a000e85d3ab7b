//! The observer's egress policy: which addresses a tenant can make the observer
//! contact, and what a tenant's probe may send.
//!
//! # Design note
//!
//! **What it guards.** Everything whose address a tenant controls and the observer
//! dials: tenant probes (`probes`), clusters' `apiEndpoint`s (set through the API, an
//! inventory or a Cluster API `Cluster`'s `spec.controlPlaneEndpoint`) and the probes
//! of them, and the workload API server the Cluster API source installs the agent
//! through (the server of the cluster's kubeconfig Secret). Addresses the provider
//! configures itself (the inventory URL, the central receiver, the management
//! cluster) are not tenant input and are not checked.
//!
//! **The rule.** An address is refused when it is in one of the special-purpose ranges
//! of [`ranges`] (loopback, unspecified, link-local and the cloud metadata services,
//! private RFC 1918 and unique-local, carrier-grade NAT, multicast, broadcast,
//! documentation and reserved ranges; IPv6 forms carrying such an IPv4 address are
//! judged by it), unless a CIDR of the provider's allow list ([`EgressPolicy::new`],
//! `--egress-allow-cidr`) contains it. Real clusters' API endpoints are usually private,
//! so a provider normally allows its cluster networks. A metadata address is allowed
//! only by listing it (`169.254.169.254/32`): allowing `0.0.0.0/0`, `169.254.0.0/16` or
//! `fd00::/8` never opens an instance's credentials to tenants.
//!
//! **When it is checked.** Twice. On the way in, the API refuses a literal address
//! (422 naming the field and the range), and the onboarding sources skip an entry whose
//! literal endpoint is refused. A name cannot be judged then (what it resolves to can
//! change at any time), so at every contact the name is resolved by
//! [`EgressPolicy::resolve`], every address is checked, refused ones are dropped, and the
//! caller connects to exactly the addresses that passed, never resolving again: there is
//! no window between check and use (no DNS rebinding). A name with only refused
//! addresses fails with a [`EgressError::Refused`] naming the range. Probes do not
//! follow redirects (a 3xx is the answer), and the workload client connects to the
//! address checked (see `onboarding::capi::install`), so a redirect or a second lookup
//! can never lead elsewhere.
//!
//! **Methods.** A tenant's HTTP probe may send GET or HEAD; other methods only when the
//! provider lists them ([`EgressPolicy::allows_probe_method`], `--probe-allow-method`).
//!
//! **Counting.** Every refusal at contact time, and every refused API request, is
//! counted as `kaas_observer_egress_refusals_total{context, range}` (bounded labels:
//! [`EgressContext`] and [`ranges::RangeKind`] or `method`); which tenant and target
//! go to the log and the probe's own failure.

pub mod ranges;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use ranges::{Cidr, Embedding, RangeKind, SpecialRange};

use crate::internal_events::{EgressRefusals, EgressRefused};

use ranges::{IPV4_COMPATIBLE_RANGE, classify, embedded_ipv4};

/// The methods every tenant HTTP probe may send: they read, and change nothing on a
/// server that follows HTTP's semantics.
pub const ALWAYS_ALLOWED_PROBE_METHODS: [&str; 2] = ["GET", "HEAD"];
/// The flag that allows address ranges, named in refusals so an operator knows the fix.
pub const ALLOW_FLAG: &str = "--egress-allow-cidr";

/// Where a contact was refused: the `context` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EgressContext {
    /// An API request naming a refused literal address (answered 422).
    Api,
    /// A probe, at probe time.
    Probe,
    /// An inventory entry's API endpoint.
    Inventory,
    /// A Cluster API cluster: its control plane endpoint or its kubeconfig's server.
    ClusterApi,
}

impl EgressContext {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Probe => "probe",
            Self::Inventory => "inventory",
            Self::ClusterApi => "cluster_api",
        }
    }
}

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The address refused.
    pub address: IpAddr,
    /// The IPv4 address it carries, if it is an IPv6 form of one, and how.
    pub embedded: Option<(Embedding, Ipv4Addr)>,
    /// The range it (or the IPv4 address it carries) is in.
    pub range: &'static SpecialRange,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some((form, v4)) => write!(
                f,
                "{} (the {} form of {v4}) is in {} ({})",
                self.address,
                form.as_str(),
                self.range.cidr,
                self.range.name
            )?,
            None => write!(
                f,
                "{} is in {} ({})",
                self.address, self.range.cidr, self.range.name
            )?,
        }
        write!(
            f,
            ", which the observer's egress policy refuses unless the provider allows it \
             ({ALLOW_FLAG})"
        )
    }
}

impl std::error::Error for Refusal {}

/// Why a contact cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The address, or every address the name resolves to, is refused.
    #[error("{}", refused_message(host.as_deref(), refusal))]
    Refused {
        /// The name, when one was resolved (`None` for a literal address).
        host: Option<String>,
        /// Why (the first address refused).
        refusal: Refusal,
    },
}

fn refused_message(host: Option<&str>, refusal: &Refusal) -> String {
    match host {
        Some(host) => format!("{host} resolves only to refused addresses: {refusal}"),
        None => refusal.to_string(),
    }
}

/// The policy: the provider's allowed CIDRs and extra probe methods, and the refusal
/// counter. Cheap to clone (shared).
#[derive(Clone)]
pub struct EgressPolicy {
    inner: Arc<PolicyInner>,
}

struct PolicyInner {
    allowed: Vec<Cidr>,
    probe_methods: Vec<String>,
    refusals: EgressRefusals,
}

impl fmt::Debug for EgressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressPolicy")
            .field("allowed", &self.inner.allowed)
            .field("probe_methods", &self.inner.probe_methods)
            .finish_non_exhaustive()
    }
}

impl Default for EgressPolicy {
    /// The shipped default: every special-purpose range refused, GET and HEAD only.
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl EgressPolicy {
    /// A policy allowing `allowed` besides the public address space, and `probe_methods`
    /// (upper-case, e.g. `POST`) besides GET and HEAD for tenant probes.
    pub fn new(allowed: Vec<Cidr>, probe_methods: Vec<String>) -> Self {
        Self {
            inner: Arc::new(PolicyInner {
                allowed,
                probe_methods: probe_methods
                    .into_iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
                refusals: EgressRefusals::default(),
            }),
        }
    }

    /// The allowed CIDRs.
    pub fn allowed(&self) -> &[Cidr] {
        &self.inner.allowed
    }

    /// Whether a tenant's HTTP probe may send `method`.
    pub fn allows_probe_method(&self, method: &str) -> bool {
        ALWAYS_ALLOWED_PROBE_METHODS.contains(&method)
            || self.inner.probe_methods.iter().any(|m| m == method)
    }

    /// Whether `address` may be contacted. Pure: nothing is resolved or counted.
    pub fn check(&self, address: IpAddr) -> Result<(), Refusal> {
        let embedded = match address {
            IpAddr::V6(v6) => embedded_ipv4(v6),
            IpAddr::V4(_) => None,
        };
        if let Some((Embedding::Mapped, v4)) = embedded {
            // The kernel sends it as IPv4: judge it as IPv4, the allow list included.
            return self.check(IpAddr::V4(v4)).map_err(|refusal| Refusal {
                address,
                embedded,
                range: refusal.range,
            });
        }
        if self.allowed_by_list(address) {
            return Ok(());
        }
        match embedded {
            Some((Embedding::Compatible, v4)) => Err(Refusal {
                address,
                embedded,
                range: classify(IpAddr::V4(v4)).unwrap_or(&IPV4_COMPATIBLE_RANGE),
            }),
            Some((_, v4)) => self.check(IpAddr::V4(v4)).map_err(|refusal| Refusal {
                address,
                embedded,
                range: refusal.range,
            }),
            None => match classify(address) {
                Some(range) => Err(Refusal {
                    address,
                    embedded: None,
                    range,
                }),
                None => Ok(()),
            },
        }
    }

    /// Whether an allowed CIDR contains `address`. A metadata address counts as allowed
    /// only by a CIDR inside its own entry, that is by listing it (see the module note).
    fn allowed_by_list(&self, address: IpAddr) -> bool {
        let metadata = classify(address).filter(|r| r.kind == RangeKind::Metadata);
        self.inner.allowed.iter().any(|cidr| {
            cidr.contains(address) && metadata.is_none_or(|range| range.cidr.covers(cidr))
        })
    }

    /// Checks `host` if it is a literal address (IPv6 with or without brackets); names
    /// pass, they are checked when resolved ([`EgressPolicy::resolve`]).
    pub fn check_host(&self, host: &str) -> Result<(), Refusal> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(address) => self.check(address),
            Err(_) => Ok(()),
        }
    }

    /// Checks the host of an http(s) URL (see [`EgressPolicy::check_host`]); a text that
    /// is not a URL passes (its syntax is someone else's check).
    pub fn check_url(&self, text: &str) -> Result<(), Refusal> {
        match url::Url::parse(text)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
        {
            Some(url::Host::Ipv4(v4)) => self.check(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }

    /// Counts a refusal in `context` (the one place refusals are counted).
    pub fn count_refusal(&self, context: EgressContext, refusal: &Refusal) {
        self.count(context, refusal.range.kind.as_str());
    }

    /// Counts a tenant probe refused for its HTTP method.
    pub fn count_method_refusal(&self, context: EgressContext) {
        self.count(context, "method");
    }

    fn count(&self, context: EgressContext, range: &'static str) {
        let context = context.as_str();
        EgressRefused { context, range }.emit(&self.inner.refusals);
    }

    /// Resolves `host` (a name or a literal address, IPv6 with or without brackets)
    /// and returns the addresses that may be contacted, in the resolver's order.
    /// Refused addresses are dropped and counted; if none is left the answer is
    /// [`EgressError::Refused`]. Connect to exactly these addresses: resolving again
    /// would reopen the window this closes.
    pub async fn resolve(
        &self,
        context: EgressContext,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let (literal, resolved) = match bare.parse::<IpAddr>() {
            Ok(address) => (true, vec![SocketAddr::new(address, port)]),
            Err(_) => match tokio::net::lookup_host((bare, port)).await {
                Ok(addresses) => (false, addresses.collect()),
                Err(error) => {
                    return Err(EgressError::Resolve {
                        host: host.to_owned(),
                        reason: error.to_string(),
                    });
                }
            },
        };
        if resolved.is_empty() {
            return Err(EgressError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".to_owned(),
            });
        }
        let mut first_refusal = None;
        let mut allowed = Vec::with_capacity(resolved.len());
        for address in resolved {
            match self.check(address.ip()) {
                Ok(()) => allowed.push(address),
                Err(refusal) => {
                    self.count_refusal(context, &refusal);
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match first_refusal {
            Some(refusal) if allowed.is_empty() => Err(EgressError::Refused {
                host: (!literal).then(|| host.to_owned()),
                refusal,
            }),
            _ => Ok(allowed),
        }
    }

    /// Registers `kaas_observer_egress_refusals_total` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.inner.refusals.register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    fn allowing(cidrs: &[&str]) -> EgressPolicy {
        EgressPolicy::new(
            cidrs.iter().map(|c| c.parse().expect(c)).collect(),
            Vec::new(),
        )
    }

    /// Issue 13, finding 5: the shipped default refuses loopback, unspecified,
    /// link-local and metadata, private, shared, multicast, broadcast, documentation
    /// and reserved addresses, and the IPv6 forms that carry them. Classified by
    /// checking only; nothing is contacted.
    #[test]
    fn the_default_refuses_every_special_range_and_its_ipv6_forms() {
        let policy = EgressPolicy::default();
        for (address, kind) in [
            ("127.0.0.1", RangeKind::Loopback),
            ("0.0.0.0", RangeKind::Unspecified),
            ("169.254.169.254", RangeKind::Metadata),
            ("fd00:ec2::254", RangeKind::Metadata),
            ("169.254.1.1", RangeKind::LinkLocal),
            ("fe80::1", RangeKind::LinkLocal),
            ("10.0.0.1", RangeKind::Private),
            ("172.16.0.1", RangeKind::Private),
            ("192.168.0.1", RangeKind::Private),
            ("fd00::1", RangeKind::Private),
            ("100.64.0.1", RangeKind::Shared),
            ("224.0.0.1", RangeKind::Multicast),
            ("ff02::1", RangeKind::Multicast),
            ("255.255.255.255", RangeKind::Broadcast),
            ("192.0.2.1", RangeKind::Documentation),
            ("2001:db8::1", RangeKind::Documentation),
            ("240.0.0.1", RangeKind::Reserved),
            ("::", RangeKind::Unspecified),
            ("::1", RangeKind::Loopback),
            ("::ffff:127.0.0.1", RangeKind::Loopback),
            ("::ffff:169.254.169.254", RangeKind::Metadata),
            ("::127.0.0.1", RangeKind::Loopback),
            ("::8.8.8.8", RangeKind::Reserved),
            ("64:ff9b::169.254.169.254", RangeKind::Metadata),
            ("64:ff9b::10.0.0.1", RangeKind::Private),
            ("2002:a9fe:a9fe::1", RangeKind::Metadata),
        ] {
            let refusal = policy.check(ip(address)).expect_err(address);
            assert_eq!(refusal.range.kind, kind, "{address}: {refusal}");
            assert_eq!(refusal.address, ip(address));
        }
        for public in [
            "1.1.1.1",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
        ] {
            assert_eq!(policy.check(ip(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn refusals_name_the_address_the_range_and_the_fix() {
        let policy = EgressPolicy::default();
        assert_eq!(
            policy.check(ip("169.254.169.254")).unwrap_err().to_string(),
            "169.254.169.254 is in 169.254.169.254/32 (cloud instance metadata service), \
             which the observer's egress policy refuses unless the provider allows it \
             (--egress-allow-cidr)"
        );
        let mapped = policy
            .check(ip("::ffff:127.0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(
            mapped.starts_with(
                "::ffff:127.0.0.1 (the IPv4-mapped form of 127.0.0.1) is in 127.0.0.0/8 (loopback)"
            ),
            "{mapped}"
        );
        let compatible = policy.check(ip("::8.8.8.8")).unwrap_err().to_string();
        assert!(
            compatible.starts_with(
                "::808:808 (the IPv4-compatible form of 8.8.8.8) is in ::/96 \
                 (IPv4-compatible IPv6, deprecated)"
            ),
            "{compatible}"
        );
    }

    #[test]
    fn allowed_cidrs_open_their_range_and_nothing_else() {
        let policy = allowing(&["127.0.0.0/8", "10.20.0.0/16", "fd00::/8"]);
        for address in [
            "127.0.0.1",
            "127.9.9.9",
            "10.20.3.4",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address}");
        }
        for address in [
            "10.21.0.1",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "192.168.1.1",
        ] {
            assert!(policy.check(ip(address)).is_err(), "{address}");
        }
        // A NAT64 or 6to4 form is judged by the IPv4 address it carries.
        assert_eq!(policy.check(ip("64:ff9b::10.20.0.1")), Ok(()));
        assert!(policy.check(ip("64:ff9b::10.21.0.1")).is_err());
    }

    #[test]
    fn metadata_addresses_open_only_when_listed_themselves() {
        for wide in [
            "0.0.0.0/0",
            "128.0.0.0/1",
            "169.254.0.0/16",
            "::/0",
            "fc00::/7",
            "fd00::/8",
            "fd00:ec2::/32",
        ] {
            let policy = allowing(&[wide]);
            assert!(policy.check(ip("169.254.169.254")).is_err(), "{wide}");
            assert!(policy.check(ip("fd00:ec2::254")).is_err(), "{wide}");
            assert!(policy.check(ip("168.63.129.16")).is_err(), "{wide}");
        }
        assert_eq!(allowing(&["0.0.0.0/0"]).check(ip("10.0.0.1")), Ok(()));
        assert_eq!(
            allowing(&["169.254.0.0/16"]).check(ip("169.254.1.1")),
            Ok(())
        );
        for listed in ["169.254.169.254", "fd00:ec2::254", "168.63.129.16"] {
            assert_eq!(allowing(&[listed]).check(ip(listed)), Ok(()), "{listed}");
        }
    }

    #[test]
    fn hosts_and_urls_are_checked_when_they_are_literal_addresses() {
        let policy = EgressPolicy::default();
        assert!(policy.check_host("127.0.0.1").is_err());
        assert!(policy.check_host("[::1]").is_err());
        assert!(policy.check_host("::1").is_err());
        assert_eq!(policy.check_host("shop.example"), Ok(()));
        assert!(policy.check_url("https://169.254.169.254/latest").is_err());
        assert!(policy.check_url("http://[fd00:ec2::254]/").is_err());
        assert!(policy.check_url("http://0x7f000001/").is_err(), "hex IPv4");
        assert!(
            policy.check_url("http://2130706433/").is_err(),
            "decimal IPv4"
        );
        assert_eq!(policy.check_url("https://api.shop.example:6443"), Ok(()));
        assert_eq!(policy.check_url("not a url"), Ok(()));
    }

    #[test]
    fn probe_methods_are_get_and_head_unless_the_provider_allows_more() {
        let default = EgressPolicy::default();
        assert!(default.allows_probe_method("GET") && default.allows_probe_method("HEAD"));
        assert!(!default.allows_probe_method("POST") && !default.allows_probe_method("OPTIONS"));
        let more = EgressPolicy::new(Vec::new(), vec!["post".into()]);
        assert!(more.allows_probe_method("POST"));
        assert!(!more.allows_probe_method("OPTIONS"));
    }

    /// Issue 13, finding 5: a literal address is refused without any lookup, and
    /// counted; nothing is contacted.
    #[tokio::test]
    async fn resolving_a_refused_literal_fails_and_counts() {
        let policy = EgressPolicy::default();
        let error = policy
            .resolve(EgressContext::Probe, "[::1]", 80)
            .await
            .unwrap_err();
        assert!(
            matches!(error, EgressError::Refused { host: None, .. }),
            "{error}"
        );
        let allowed = allowing(&["127.0.0.0/8"])
            .resolve(EgressContext::Probe, "127.0.0.1", 80)
            .await
            .expect("allowed");
        assert_eq!(allowed, vec![SocketAddr::from(([127, 0, 0, 1], 80))]);
        let mut registry = Registry::default();
        policy.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"kaas_observer_egress_refusals_total{context="probe",range="loopback"} 1"#
            ),
            "{text}"
        );
    }
}
