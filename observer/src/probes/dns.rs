//! The `dns` module: one A or AAAA query over UDP to a given server, hand-rolled
//! (RFC 1035 header, question and answer records; no EDNS, no TCP fallback).
//!
//! Success means the server answered our query (same id, a response, one question)
//! with NOERROR, as the blackbox exporter's default `valid_rcodes`; an empty answer
//! section (the name exists without records of that type) still succeeds, NXDOMAIN and
//! SERVFAIL do not. `probe_dns_lookup_time_seconds` is the query's round trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::config::{DnsProbe, DnsQueryType, parse_host_port};
use crate::egress::EgressPolicy;

use super::{ProbeFailure, ProbeOutcome, resolve};

/// Size of the receive buffer: a UDP answer without EDNS is at most 512 bytes; more
/// room costs nothing and tolerates servers that send EDNS-sized answers anyway.
const RECEIVE_BUFFER: usize = 4096;
/// DNS class IN.
const CLASS_IN: u16 = 1;
/// Header flag: this message is a response.
const FLAG_RESPONSE: u16 = 0x8000;
/// Header flag: recursion desired.
const FLAG_RECURSION_DESIRED: u16 = 0x0100;
/// Header flag: the answer was truncated.
const FLAG_TRUNCATED: u16 = 0x0200;

/// A DNS probe ready to run.
#[derive(Debug)]
pub(crate) struct PreparedDns {
    server_host: String,
    server_port: u16,
    query_name: String,
    query_type: DnsQueryType,
}

impl PreparedDns {
    /// From a validated `module.dns`.
    pub(crate) fn new(dns: &DnsProbe) -> Result<Self, String> {
        let (server_host, server_port) =
            parse_host_port(&dns.server, Some(super::config::DNS_DEFAULT_PORT))?;
        Ok(Self {
            server_host,
            server_port,
            query_name: dns.query_name.clone(),
            query_type: dns.query_type,
        })
    }

    /// Sends the query and waits for its answer.
    pub(crate) async fn run(
        &self,
        egress: &EgressPolicy,
        outcome: &mut ProbeOutcome,
    ) -> Result<(), ProbeFailure> {
        // The first address: a UDP query cannot tell a listening server from another.
        let server = resolve(egress, &self.server_host, self.server_port, &mut None)
            .await?
            .first()
            .copied()
            .ok_or_else(|| ProbeFailure::Dns("the server's name has no address".to_owned()))?;
        let id = fastrand::u16(..);
        let query = encode_query(id, &self.query_name, self.query_type)
            .map_err(|e| ProbeFailure::Dns(e.to_owned()))?;
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let io = |e: std::io::Error| ProbeFailure::Dns(e.to_string());
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(server).await.map_err(io)?;
        let started = Instant::now();
        socket.send(&query).await.map_err(io)?;
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        loop {
            let received = socket.recv(&mut buffer).await.map_err(io)?;
            // A stray datagram (a late answer to an earlier query) is not ours: wait on.
            let Ok(answer) = parse_response(&buffer[..received], id, self.query_type) else {
                continue;
            };
            outcome.dns_lookup = Some(started.elapsed());
            tracing::trace!(
                server = %server,
                name = %self.query_name,
                rcode = answer.rcode,
                addresses = ?answer.addresses,
                truncated = answer.truncated,
                "DNS answer"
            );
            return if answer.rcode == 0 {
                Ok(())
            } else {
                Err(ProbeFailure::DnsRcode(answer.rcode))
            };
        }
    }
}

/// What a response said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DnsAnswer {
    /// The response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// The addresses of the answer records of the asked type.
    pub addresses: Vec<IpAddr>,
    /// Whether the server truncated the answer.
    pub truncated: bool,
}

/// A standard query for `name` with recursion desired.
pub(crate) fn encode_query(
    id: u16,
    name: &str,
    query_type: DnsQueryType,
) -> Result<Vec<u8>, &'static str> {
    let mut message = Vec::with_capacity(18 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&FLAG_RECURSION_DESIRED.to_be_bytes());
    for count in [1u16, 0, 0, 0] {
        message.extend_from_slice(&count.to_be_bytes());
    }
    for label in name.strip_suffix('.').unwrap_or(name).split('.') {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or("a label of the name is empty or longer than 63 bytes")?;
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&query_type.code().to_be_bytes());
    message.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(message)
}

/// Reads a response to the query `id`; `Err` for anything that is not one.
pub(crate) fn parse_response(
    message: &[u8],
    id: u16,
    query_type: DnsQueryType,
) -> Result<DnsAnswer, &'static str> {
    let mut reader = Reader { message, at: 0 };
    if reader.u16()? != id {
        return Err("another query's id");
    }
    let flags = reader.u16()?;
    if flags & FLAG_RESPONSE == 0 {
        return Err("not a response");
    }
    let questions = reader.u16()?;
    let answers = reader.u16()?;
    reader.u16()?; // authority records
    reader.u16()?; // additional records
    if questions != 1 {
        return Err("not exactly one question");
    }
    reader.skip_name()?;
    reader.skip(4)?; // type, class
    let mut addresses = Vec::new();
    for _ in 0..answers {
        reader.skip_name()?;
        let record_type = reader.u16()?;
        let class = reader.u16()?;
        reader.skip(4)?; // TTL
        let length = usize::from(reader.u16()?);
        let data = reader.take(length)?;
        if class != CLASS_IN || record_type != query_type.code() {
            continue; // e.g. the CNAME records leading to the address
        }
        match (query_type, data.len()) {
            (DnsQueryType::A, 4) => {
                addresses.push(IpAddr::from([data[0], data[1], data[2], data[3]]));
            }
            (DnsQueryType::Aaaa, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(data);
                addresses.push(IpAddr::from(octets));
            }
            _ => return Err("an address record of the wrong length"),
        }
    }
    Ok(DnsAnswer {
        // The low four bits; the mask makes the conversion lossless.
        rcode: (flags & 0x000f) as u8,
        addresses,
        truncated: flags & FLAG_TRUNCATED != 0,
    })
}

/// A cursor over a message; every read is bounds-checked.
struct Reader<'a> {
    message: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(count).ok_or("truncated message")?;
        let bytes = self.message.get(self.at..end).ok_or("truncated message")?;
        self.at = end;
        Ok(bytes)
    }

    fn skip(&mut self, count: usize) -> Result<(), &'static str> {
        self.take(count).map(drop)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Skips a possibly compressed name: labels up to a zero byte or a pointer.
    fn skip_name(&mut self) -> Result<(), &'static str> {
        loop {
            let length = self.take(1)?[0];
            match length {
                0 => return Ok(()),
                l if l & 0xc0 == 0xc0 => return self.skip(1), // pointer: one more byte
                l if l & 0xc0 == 0 => self.skip(usize::from(l))?,
                _ => return Err("an unknown label type"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as a server would write it, answering `query` with a CNAME and then
    /// the address records, names compressed.
    fn response(query: &[u8], rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = query[..2].to_vec();
        let flags = FLAG_RESPONSE | FLAG_RECURSION_DESIRED | 0x0080 | u16::from(rcode);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&query[12..]);
        for (record_type, data) in records {
            out.extend_from_slice(&[0xc0, 12]); // pointer to the question's name
            out.extend_from_slice(&record_type.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&300u32.to_be_bytes());
            out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn a_query_is_encoded_as_rfc_1035_says() {
        let query = encode_query(0xabcd, "shop.example.", DnsQueryType::Aaaa).unwrap();
        assert_eq!(
            query,
            [
                &[0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x04shop\x07example\x00",
                &[0, 28, 0, 1],
            ]
            .concat()
        );
        assert!(encode_query(1, "a..b", DnsQueryType::A).is_err());
    }

    #[test]
    fn answers_are_read_past_compressed_names_and_other_records() {
        let query = encode_query(7, "shop.example", DnsQueryType::A).unwrap();
        let cname = b"\x03www\xc0\x0c";
        let message = response(
            &query,
            0,
            &[(5, cname), (1, &[192, 0, 2, 1]), (1, &[192, 0, 2, 2])],
        );
        let answer = parse_response(&message, 7, DnsQueryType::A).unwrap();
        assert_eq!(
            answer,
            DnsAnswer {
                rcode: 0,
                addresses: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
                truncated: false,
            }
        );
        let query = encode_query(8, "shop.example", DnsQueryType::Aaaa).unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let IpAddr::V6(octets) = v6 else {
            unreachable!()
        };
        let message = response(&query, 0, &[(28, &octets.octets())]);
        assert_eq!(
            parse_response(&message, 8, DnsQueryType::Aaaa)
                .unwrap()
                .addresses,
            vec![v6]
        );
    }

    #[test]
    fn error_codes_are_reported_and_foreign_messages_refused() {
        let query = encode_query(9, "missing.example", DnsQueryType::A).unwrap();
        let nxdomain = response(&query, 3, &[]);
        assert_eq!(
            parse_response(&nxdomain, 9, DnsQueryType::A).unwrap().rcode,
            3
        );
        assert!(
            parse_response(&nxdomain, 10, DnsQueryType::A).is_err(),
            "another id"
        );
        assert!(
            parse_response(&query, 9, DnsQueryType::A).is_err(),
            "a query"
        );
        for cut in 0..nxdomain.len() - 1 {
            // Truncated anywhere: refused, never a panic.
            let _ = parse_response(&nxdomain[..cut], 9, DnsQueryType::A);
        }
        let bad_length = response(&query, 0, &[(1, &[1, 2, 3])]);
        assert!(parse_response(&bad_length, 9, DnsQueryType::A).is_err());
    }
}
