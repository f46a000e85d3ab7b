//! Address ranges: [`Cidr`] (parsed from `--egress-allow-cidr`), the table of
//! special-purpose ranges the observer refuses to contact by default, and
//! [`classify`], which finds the range an address falls in.
//!
//! The table follows the IANA IPv4 and IPv6 special-purpose address registries
//! (RFC 6890 and its updates), plus multicast, the limited broadcast address and the
//! cloud metadata services that sit in otherwise public space. Entries are checked in
//! order, most specific first, so `169.254.169.254` is named as the metadata service
//! and not just as link-local.
//!
//! IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
//! (`::ffff:a.b.c.d`, which the kernel sends as IPv4), NAT64 (`64:ff9b::/96`, which a
//! translator sends to the IPv4 address) and 6to4 (`2002:aabb:ccdd::/48`). IPv4-compatible
//! addresses (`::a.b.c.d`) are deprecated and always refused, naming the IPv4 range when
//! there is one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network: an address and a prefix length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// `a.b.c.d/len`; `len` at most 32 and the host bits zero (checked by the table
    /// tests, since a constant cannot be parsed).
    const fn v4(octets: [u8; 4], prefix_len: u8) -> Self {
        Self {
            network: IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
            prefix_len,
        }
    }

    /// An IPv6 network from its eight 16-bit groups.
    const fn v6(groups: [u16; 8], prefix_len: u8) -> Self {
        Self {
            network: IpAddr::V6(Ipv6Addr::new(
                groups[0], groups[1], groups[2], groups[3], groups[4], groups[5], groups[6],
                groups[7],
            )),
            prefix_len,
        }
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `address` is in this network (never across address families).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = mask_v4(self.prefix_len);
                u32::from(address) & mask == u32::from(network) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = mask_v6(self.prefix_len);
                u128::from(address) & mask == u128::from(network) & mask
            }
            _ => false,
        }
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.network)
    }
}

fn mask_v4(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        len => u32::MAX << (32 - u32::from(len.min(32))),
    }
}

fn mask_v6(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        len => u128::MAX << (128 - u32::from(len.min(128))),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`; a bare address is a single host (`/32`, `/128`). Host
    /// bits must be zero, so a typo such as `10.0.0.1/8` is caught instead of silently
    /// meaning `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR (a.b.c.d/len, x::/len)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => return Err(format!("{text:?}: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Self {
            network,
            prefix_len,
        };
        let host_bits_zero = match network {
            IpAddr::V4(v4) => u32::from(v4) & !mask_v4(prefix_len) == 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask_v6(prefix_len) == 0,
        };
        if !host_bits_zero {
            let masked = match network {
                IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix_len))),
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix_len))),
            };
            return Err(format!(
                "{text:?} has host bits set; did you mean {masked}/{prefix_len}?"
            ));
        }
        Ok(cidr)
    }
}

/// What kind of range an address is in: the `range` label of refusals, a fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RangeKind {
    /// `0.0.0.0/8`, `::` (Linux connects `0.0.0.0` to the local host).
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud provider's instance metadata or host service.
    Metadata,
    /// RFC 1918, IPv6 unique local (`fc00::/7`), site-local, local-use NAT64.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT (RFC 6598).
    Shared,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// The documentation ranges (TEST-NET-1..3, `2001:db8::/32`, `3fff::/20`).
    Documentation,
    /// Everything else set aside: benchmarking, IETF protocol assignments, future use,
    /// deprecated transition forms.
    Reserved,
}

impl RangeKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Metadata => "metadata",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Reserved => "reserved",
        }
    }
}

/// One special-purpose range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialRange {
    /// The network.
    pub cidr: Cidr,
    /// Its kind.
    pub kind: RangeKind,
    /// What it is, for messages ("loopback", "cloud metadata service").
    pub name: &'static str,
}

const fn range(cidr: Cidr, kind: RangeKind, name: &'static str) -> SpecialRange {
    SpecialRange { cidr, kind, name }
}

/// The IPv4 ranges, most specific first.
pub const IPV4_RANGES: &[SpecialRange] = &[
    range(
        Cidr::v4([169, 254, 169, 254], 32),
        RangeKind::Metadata,
        "cloud instance metadata service",
    ),
    range(
        Cidr::v4([168, 63, 129, 16], 32),
        RangeKind::Metadata,
        "Azure host service (WireServer)",
    ),
    range(
        Cidr::v4([255, 255, 255, 255], 32),
        RangeKind::Broadcast,
        "limited broadcast",
    ),
    range(
        Cidr::v4([0, 0, 0, 0], 8),
        RangeKind::Unspecified,
        "\"this network\" (0.0.0.0 reaches the local host)",
    ),
    range(
        Cidr::v4([10, 0, 0, 0], 8),
        RangeKind::Private,
        "private (RFC 1918)",
    ),
    range(
        Cidr::v4([100, 64, 0, 0], 10),
        RangeKind::Shared,
        "shared address space (carrier-grade NAT, RFC 6598)",
    ),
    range(Cidr::v4([127, 0, 0, 0], 8), RangeKind::Loopback, "loopback"),
    range(
        Cidr::v4([169, 254, 0, 0], 16),
        RangeKind::LinkLocal,
        "link-local",
    ),
    range(
        Cidr::v4([172, 16, 0, 0], 12),
        RangeKind::Private,
        "private (RFC 1918)",
    ),
    range(
        Cidr::v4([192, 0, 0, 0], 24),
        RangeKind::Reserved,
        "IETF protocol assignments",
    ),
    range(
        Cidr::v4([192, 0, 2, 0], 24),
        RangeKind::Documentation,
        "documentation (TEST-NET-1)",
    ),
    range(
        Cidr::v4([192, 88, 99, 0], 24),
        RangeKind::Reserved,
        "6to4 relay anycast (deprecated)",
    ),
    range(
        Cidr::v4([192, 168, 0, 0], 16),
        RangeKind::Private,
        "private (RFC 1918)",
    ),
    range(
        Cidr::v4([198, 18, 0, 0], 15),
        RangeKind::Reserved,
        "benchmarking",
    ),
    range(
        Cidr::v4([198, 51, 100, 0], 24),
        RangeKind::Documentation,
        "documentation (TEST-NET-2)",
    ),
    range(
        Cidr::v4([203, 0, 113, 0], 24),
        RangeKind::Documentation,
        "documentation (TEST-NET-3)",
    ),
    range(
        Cidr::v4([224, 0, 0, 0], 4),
        RangeKind::Multicast,
        "multicast",
    ),
    range(
        Cidr::v4([240, 0, 0, 0], 4),
        RangeKind::Reserved,
        "reserved for future use",
    ),
];

/// IPv4-mapped IPv6 addresses, `::ffff:a.b.c.d`.
const IPV4_MAPPED: Cidr = Cidr::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96);
/// IPv4-compatible IPv6 addresses, `::a.b.c.d` (deprecated by RFC 4291).
const IPV4_COMPATIBLE: Cidr = Cidr::v6([0; 8], 96);
/// The range deprecated IPv4-compatible addresses are refused as when the address
/// they carry is not special itself.
pub const IPV4_COMPATIBLE_RANGE: SpecialRange = range(
    IPV4_COMPATIBLE,
    RangeKind::Reserved,
    "IPv4-compatible IPv6, deprecated",
);
/// The well-known NAT64 prefix (RFC 6052).
const NAT64: Cidr = Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4 (RFC 3056): the IPv4 address is in bits 16 to 48.
const SIX_TO_FOUR: Cidr = Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// The IPv6 ranges, most specific first; the forms that carry an IPv4 address are
/// handled before this table is consulted (see [`classify`]).
pub const IPV6_RANGES: &[SpecialRange] = &[
    range(
        Cidr::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        RangeKind::Metadata,
        "cloud instance metadata service (IPv6)",
    ),
    range(Cidr::v6([0; 8], 128), RangeKind::Unspecified, "unspecified"),
    range(
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        RangeKind::Loopback,
        "loopback",
    ),
    range(
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        RangeKind::Private,
        "local-use NAT64 (RFC 8215)",
    ),
    // After the NAT64 entries, which it contains.
    range(
        Cidr::v6([0; 8], 8),
        RangeKind::Reserved,
        "reserved by the IETF (::/8)",
    ),
    range(
        Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        RangeKind::Reserved,
        "discard-only",
    ),
    range(
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        RangeKind::Documentation,
        "documentation",
    ),
    range(
        Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        RangeKind::Reserved,
        "IETF protocol assignments (Teredo among them)",
    ),
    range(
        Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        RangeKind::Documentation,
        "documentation",
    ),
    range(
        Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        RangeKind::Reserved,
        "segment routing (SRv6) SIDs",
    ),
    range(
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        RangeKind::Private,
        "unique local (ULA)",
    ),
    range(
        Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        RangeKind::LinkLocal,
        "link-local",
    ),
    range(
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        RangeKind::Private,
        "site-local (deprecated)",
    ),
    range(
        Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        RangeKind::Multicast,
        "multicast",
    ),
];

/// How an IPv6 address carries an IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d`: sent as IPv4 by the kernel.
    Mapped,
    /// `::a.b.c.d`: deprecated, refused whatever it carries.
    Compatible,
    /// `64:ff9b::a.b.c.d`: a translator sends it to the IPv4 address.
    Nat64,
    /// `2002:aabb:ccdd::/48`: a 6to4 relay sends it to the IPv4 address.
    SixToFour,
}

impl Embedding {
    /// How messages call it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapped => "IPv4-mapped",
            Self::Compatible => "IPv4-compatible",
            Self::Nat64 => "NAT64",
            Self::SixToFour => "6to4",
        }
    }
}

/// The IPv4 address `address` carries, and how; `None` for every other address
/// (`::` and `::1` included, though they fall in the compatible prefix).
pub fn embedded_ipv4(address: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let bits = u128::from(address);
    let low = Ipv4Addr::from((bits & u128::from(u32::MAX)) as u32);
    let ip = IpAddr::V6(address);
    if IPV4_MAPPED.contains(ip) {
        Some((Embedding::Mapped, low))
    } else if IPV4_COMPATIBLE.contains(ip) && bits > 1 {
        Some((Embedding::Compatible, low))
    } else if NAT64.contains(ip) {
        Some((Embedding::Nat64, low))
    } else if SIX_TO_FOUR.contains(ip) {
        Some((Embedding::SixToFour, Ipv4Addr::from((bits >> 80) as u32)))
    } else {
        None
    }
}

/// The special range `address` is in, if any (the embedded IPv4 address is not looked
/// at here; see [`embedded_ipv4`]).
pub fn classify(address: IpAddr) -> Option<&'static SpecialRange> {
    let table = match address {
        IpAddr::V4(_) => IPV4_RANGES,
        IpAddr::V6(_) => IPV6_RANGES,
    };
    table.iter().find(|range| range.cidr.contains(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect(text)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn cidrs_parse_with_their_host_bits_checked() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>().unwrap_err(),
            "\"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert!("".parse::<Cidr>().is_err());
    }

    #[test]
    fn containment_respects_the_prefix_and_the_family() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.255.1.2")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(
            !ten.contains(ip("::ffff:10.0.0.1")),
            "never across families"
        );
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("::/0").contains(ip("2a00::1")));
        assert!(cidr("169.254.0.0/16").covers(&cidr("169.254.169.254/32")));
        assert!(!cidr("169.254.169.254/32").covers(&cidr("169.254.0.0/16")));
    }

    #[test]
    fn every_table_entry_is_a_proper_network() {
        for range in IPV4_RANGES.iter().chain(IPV6_RANGES) {
            let text = range.cidr.to_string();
            assert_eq!(cidr(&text), range.cidr, "{text} has host bits set");
            assert!(classify(range.cidr.network()).is_some(), "{text}");
        }
    }

    #[test]
    fn special_addresses_are_classified_by_their_most_specific_range() {
        let cases = [
            ("169.254.169.254", RangeKind::Metadata),
            ("168.63.129.16", RangeKind::Metadata),
            ("169.254.10.1", RangeKind::LinkLocal),
            ("127.0.0.1", RangeKind::Loopback),
            ("127.255.255.254", RangeKind::Loopback),
            ("0.0.0.0", RangeKind::Unspecified),
            ("10.1.2.3", RangeKind::Private),
            ("172.31.255.255", RangeKind::Private),
            ("192.168.1.1", RangeKind::Private),
            ("100.64.0.1", RangeKind::Shared),
            ("100.127.255.255", RangeKind::Shared),
            ("192.0.0.192", RangeKind::Reserved),
            ("192.0.2.1", RangeKind::Documentation),
            ("198.51.100.7", RangeKind::Documentation),
            ("203.0.113.9", RangeKind::Documentation),
            ("198.19.0.1", RangeKind::Reserved),
            ("224.0.0.251", RangeKind::Multicast),
            ("239.255.255.250", RangeKind::Multicast),
            ("255.255.255.255", RangeKind::Broadcast),
            ("250.1.2.3", RangeKind::Reserved),
            ("::", RangeKind::Unspecified),
            ("::1", RangeKind::Loopback),
            ("fd00:ec2::254", RangeKind::Metadata),
            ("fd12:3456::1", RangeKind::Private),
            ("fc00::1", RangeKind::Private),
            ("fe80::1", RangeKind::LinkLocal),
            ("fec0::1", RangeKind::Private),
            ("ff02::1", RangeKind::Multicast),
            ("2001:db8::1", RangeKind::Documentation),
            ("3fff::1", RangeKind::Documentation),
            ("2001::1", RangeKind::Reserved),
            ("100::1", RangeKind::Reserved),
            ("64:ff9b:1::1", RangeKind::Private),
            ("::2", RangeKind::Reserved),
        ];
        for (address, kind) in cases {
            assert_eq!(
                classify(ip(address)).map(|r| r.kind),
                Some(kind),
                "{address}"
            );
        }
    }

    #[test]
    fn public_addresses_are_in_no_range() {
        // Classified only: nothing here is ever connected to.
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.167.255.255",
            "198.17.255.255",
            "223.255.255.255",
            "2a00:1450::1",
            "2600::1",
            "2001:200::1",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_an_ipv4_address_are_unwrapped() {
        let v6 = |text: &str| -> Ipv6Addr { text.parse().expect(text) };
        assert_eq!(
            embedded_ipv4(v6("::ffff:127.0.0.1")),
            Some((Embedding::Mapped, Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(
            embedded_ipv4(v6("::169.254.169.254")),
            Some((Embedding::Compatible, Ipv4Addr::new(169, 254, 169, 254)))
        );
        assert_eq!(
            embedded_ipv4(v6("64:ff9b::10.0.0.1")),
            Some((Embedding::Nat64, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            embedded_ipv4(v6("2002:7f00:1::1")),
            Some((Embedding::SixToFour, Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(embedded_ipv4(v6("::")), None);
        assert_eq!(embedded_ipv4(v6("::1")), None);
        assert_eq!(embedded_ipv4(v6("2a00::1")), None);
    }
}
