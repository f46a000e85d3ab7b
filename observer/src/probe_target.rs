//! What to probe: [`ProbeTarget`] (one endpoint, one module) and its pure validation.
//! The model the store keeps ([`crate::store::probe_endpoints`]) and the prober runs
//! ([`crate::probes`], which re-exports it as `probes::config`); it depends on neither.
//!
//! A target is the unit the prober schedules and the unit the API stores per tenant.
//! Its JSON form (camelCase) is the API body, e.g.
//!
//! ```json
//! {"name": "shop-web", "tenant": "shop", "cluster": "edge-1",
//!  "module": {"http": {"url": "https://shop.example/healthz", "expectedStatus": [200, 204],
//!                      "tls": {"ca": "-----BEGIN CERTIFICATE-----…"}}}}
//! ```
//!
//! [`ProbeTarget::validate`] checks everything at once and reports each problem with its
//! field path (`module.http.url: …`), as the pipeline model does; only a
//! [`ValidatedProbeTarget`] is stored or probed. Every probe of one target writes the
//! series identified by its [`SeriesKey`] (`cluster`, `tenant`, `target`, `module`, see
//! `docs/metrics.md`).

use std::fmt;
use std::net::IpAddr;

use kaas_pipeline::names::check_dns1123_label;
use kaas_pipeline::{FieldError, ValidationErrors};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::egress::{EgressPolicy, Refusal};

/// The port of a DNS server when `server` names none.
pub const DNS_DEFAULT_PORT: u16 = 53;
/// Longest domain name in presentation form (RFC 1035: 255 octets on the wire).
const DOMAIN_NAME_MAX_LEN: usize = 253;
/// Longest label of a domain name (RFC 1035).
const DOMAIN_LABEL_MAX_LEN: usize = 63;
/// Longest URL or address accepted: far beyond real endpoints, short enough that a
/// label value stays reasonable in every time-series database.
const TARGET_MAX_LEN: usize = 1024;

/// A target's `cluster`: a cluster name (a DNS-1123 label) as a tenant gives it, or a
/// cluster's global id (`<tenant>.<name>`) as the prober's targets carry it.
fn check_cluster_reference(value: &str) -> Result<(), String> {
    let mut parts = value.splitn(2, crate::cluster_id::GLOBAL_ID_SEPARATOR);
    parts.try_for_each(check_dns1123_label)
}

/// One endpoint to probe with one module.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeTarget {
    /// Unique per tenant; a DNS-1123 label.
    pub name: String,
    /// The owning tenant.
    pub tenant: String,
    /// The cluster the endpoint belongs to, if any (becomes the `cluster` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Who asked for the probe. Never read from or written to JSON: a target that
    /// comes from outside (the API, the store) is a tenant's.
    #[serde(skip)]
    pub origin: ProbeOrigin,
    /// How to probe.
    pub module: ProbeModule,
}

/// Who asked for a probe; decides its pool of slots and whether the tenant rules
/// (GET/HEAD only) apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProbeOrigin {
    /// A tenant, through `/api/v1/probes`.
    #[default]
    Tenant,
    /// The observer itself: the probes of clusters' API servers.
    Provider,
}

/// A probe module and its settings; exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProbeModule {
    /// An HTTP(S) request whose answer must carry an expected status.
    Http(HttpProbe),
    /// A TCP connection that must be accepted.
    Tcp(TcpProbe),
    /// A TLS handshake; reports the served chain's earliest expiry.
    Tls(TlsProbe),
    /// A DNS query over UDP that must be answered with NOERROR.
    Dns(DnsProbe),
}

/// `module.http`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// An absolute `http://` or `https://` URL without credentials.
    pub url: String,
    /// The request method; GET unless set.
    #[serde(default)]
    pub method: HttpMethod,
    /// Statuses that count as success; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_status: Vec<u16>,
    /// TLS settings for `https://` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

/// The methods an HTTP probe may send (without a body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    #[default]
    Get,
    /// HEAD.
    Head,
    /// POST with an empty body.
    Post,
    /// OPTIONS.
    Options,
}

impl std::str::FromStr for HttpMethod {
    type Err = String;

    /// A method by name, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Ok(Self::Get),
            "HEAD" => Ok(Self::Head),
            "POST" => Ok(Self::Post),
            "OPTIONS" => Ok(Self::Options),
            _ => Err(format!(
                "{text:?} is not a probe method (GET, HEAD, POST, OPTIONS)"
            )),
        }
    }
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Options => "OPTIONS",
        }
    }
}

/// How to verify a server's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificates to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Accept any certificate (the chain's expiry is still reported).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
    /// The name sent as SNI and verified in the certificate, instead of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `module.tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// `host:port` (IPv6 in brackets).
    pub address: String,
}

/// `module.tls`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsProbe {
    /// `host:port` (IPv6 in brackets).
    pub address: String,
    /// The name sent as SNI and verified in the certificate, instead of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM certificates to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Accept any certificate (the chain's expiry is still reported).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
}

impl TlsProbe {
    /// The TLS settings of this probe.
    pub fn tls_settings(&self) -> TlsSettings {
        TlsSettings {
            ca: self.ca.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            server_name: self.server_name.clone(),
        }
    }
}

/// `module.dns`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsProbe {
    /// The DNS server, `host` or `host:port` (port 53 by default).
    pub server: String,
    /// The name to resolve.
    pub query_name: String,
    /// The record type asked for.
    #[serde(default)]
    pub query_type: DnsQueryType,
}

/// The record types a DNS probe asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DnsQueryType {
    /// IPv4 addresses.
    #[default]
    A,
    /// IPv6 addresses.
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl DnsQueryType {
    /// The record type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            Self::A => 1,
            Self::Aaaa => 28,
        }
    }
}

impl ProbeModule {
    /// The `module` label: `http`, `tcp`, `tls` or `dns`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Tcp(_) => "tcp",
            Self::Tls(_) => "tls",
            Self::Dns(_) => "dns",
        }
    }

    /// The `target` label: the URL (http), `host:port` (tcp, tls) or the queried name
    /// (dns).
    pub fn target_label(&self) -> &str {
        match self {
            Self::Http(http) => &http.url,
            Self::Tcp(tcp) => &tcp.address,
            Self::Tls(tls) => &tls.address,
            Self::Dns(dns) => &dns.query_name,
        }
    }
}

/// The labels of a target's series; two targets with one key would write the same
/// series, so the prober keeps only the first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `cluster` (empty for endpoints of no cluster).
    pub cluster: String,
    /// `tenant`.
    pub tenant: String,
    /// `target`.
    pub target: String,
    /// `module`.
    pub module: &'static str,
}

impl fmt::Display for SeriesKey {
    /// `module|tenant|cluster|target`: what scheduling offsets and replica assignment
    /// hash, so every replica computes the same for the same target.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}",
            self.module, self.tenant, self.cluster, self.target
        )
    }
}

impl ProbeTarget {
    /// The labels of this target's series.
    pub fn series_key(&self) -> SeriesKey {
        SeriesKey {
            cluster: self.cluster.clone().unwrap_or_default(),
            tenant: self.tenant.clone(),
            target: self.module.target_label().to_owned(),
            module: self.module.kind(),
        }
    }

    /// Checks every field; returns every problem with its path.
    pub fn validate(self) -> Result<ValidatedProbeTarget, ValidationErrors> {
        let mut errors = Problems::default();
        errors.check("name", check_dns1123_label(&self.name));
        errors.check("tenant", check_dns1123_label(&self.tenant));
        if let Some(cluster) = &self.cluster {
            errors.check("cluster", check_cluster_reference(cluster));
        }
        match &self.module {
            ProbeModule::Http(http) => validate_http(http, "module.http", &mut errors),
            ProbeModule::Tcp(tcp) => {
                errors.check(
                    "module.tcp.address",
                    parse_host_port(&tcp.address, None).map(drop),
                );
            }
            ProbeModule::Tls(tls) => {
                errors.check(
                    "module.tls.address",
                    parse_host_port(&tls.address, None).map(drop),
                );
                validate_tls(&tls.tls_settings(), "module.tls", &mut errors);
            }
            ProbeModule::Dns(dns) => {
                errors.check(
                    "module.dns.server",
                    parse_host_port(&dns.server, Some(DNS_DEFAULT_PORT)).map(drop),
                );
                errors.check("module.dns.queryName", check_domain_name(&dns.query_name));
            }
        }
        errors.into_result().map(|()| ValidatedProbeTarget(self))
    }
}

impl ProbeTarget {
    /// What the egress policy refuses in this target, each with its field path: a
    /// literal address in a refused range (a name is checked when it is resolved, at
    /// probe time), and for a tenant's HTTP probe a method other than GET and HEAD the
    /// provider did not allow. Pure: nothing is resolved.
    pub fn egress_problems(&self, egress: &EgressPolicy) -> Vec<(FieldError, Option<Refusal>)> {
        let mut problems = Vec::new();
        let mut refused = |path: &str, result: Result<(), Refusal>| {
            if let Err(refusal) = result {
                problems.push((
                    FieldError {
                        path: path.to_owned(),
                        reason: refusal.to_string(),
                    },
                    Some(refusal),
                ));
            }
        };
        let host_of = |text: &str, default_port: Option<u16>| {
            parse_host_port(text, default_port).map_or(String::new(), |(host, _)| host)
        };
        match &self.module {
            ProbeModule::Http(http) => refused("module.http.url", egress.check_url(&http.url)),
            ProbeModule::Tcp(tcp) => refused(
                "module.tcp.address",
                egress.check_host(&host_of(&tcp.address, None)),
            ),
            ProbeModule::Tls(tls) => refused(
                "module.tls.address",
                egress.check_host(&host_of(&tls.address, None)),
            ),
            ProbeModule::Dns(dns) => refused(
                "module.dns.server",
                egress.check_host(&host_of(&dns.server, Some(DNS_DEFAULT_PORT))),
            ),
        }
        if let ProbeModule::Http(http) = &self.module
            && self.origin == ProbeOrigin::Tenant
            && !egress.allows_probe_method(http.method.as_str())
        {
            problems.push((
                FieldError {
                    path: "module.http.method".to_owned(),
                    reason: format!(
                        "{} is not allowed: a tenant's HTTP probe sends GET or HEAD unless \
                         the provider allows more",
                        http.method.as_str()
                    ),
                },
                None,
            ));
        }
        problems
    }
}

/// A target that passed [`ProbeTarget::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValidatedProbeTarget(ProbeTarget);

impl ValidatedProbeTarget {
    /// The target.
    pub fn target(&self) -> &ProbeTarget {
        &self.0
    }

    /// The target, by value.
    pub fn into_target(self) -> ProbeTarget {
        self.0
    }
}

/// Collects problems while a target is checked.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: &str, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    fn check(&mut self, path: &str, result: Result<(), String>) {
        if let Err(reason) = result {
            self.add(path, reason);
        }
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn validate_http(http: &HttpProbe, base: &str, errors: &mut Problems) {
    let url_path = format!("{base}.url");
    match parse_http_url(&http.url) {
        Ok(url) => {
            if http.tls.is_some() && url.scheme() != "https" {
                errors.add(
                    &format!("{base}.tls"),
                    "TLS settings apply only to https:// URLs",
                );
            }
        }
        Err(reason) => errors.add(&url_path, reason),
    }
    for (i, status) in http.expected_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.add(
                &format!("{base}.expectedStatus[{i}]"),
                format!("{status} is not an HTTP status (100 to 599)"),
            );
        }
    }
    if let Some(tls) = &http.tls {
        validate_tls(tls, &format!("{base}.tls"), errors);
    }
}

fn validate_tls(tls: &TlsSettings, base: &str, errors: &mut Problems) {
    if let Some(ca) = &tls.ca {
        errors.check(&format!("{base}.ca"), parse_ca(ca).map(drop));
        if tls.insecure_skip_verify {
            errors.add(
                &format!("{base}.insecureSkipVerify"),
                "contradicts ca: a certificate is either verified against ca or not at all",
            );
        }
    }
    if let Some(name) = &tls.server_name
        && ServerName::try_from(name.as_str()).is_err()
    {
        errors.add(
            &format!("{base}.serverName"),
            format!("{name:?} is not a DNS name or IP address"),
        );
    }
}

/// An absolute http(s) URL with a host and no credentials.
pub(crate) fn parse_http_url(text: &str) -> Result<Url, String> {
    if text.is_empty() {
        return Err("required: an absolute http(s) URL".to_owned());
    }
    if text.len() > TARGET_MAX_LEN {
        return Err(format!("longer than {TARGET_MAX_LEN} characters"));
    }
    match Url::parse(text) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            // Do not echo the URL: it holds a credential.
            Err("credentials in the URL would be stored and shown in clear".to_owned())
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ if text.contains('@') => Err("not an absolute http(s) URL".to_owned()),
        _ => Err(format!("not an absolute http(s) URL: {text:?}")),
    }
}

/// Splits `host:port` (`[v6]:port`); with `default_port`, a bare host (or IPv6
/// address) is accepted too. The host is returned without brackets.
pub(crate) fn parse_host_port(
    text: &str,
    default_port: Option<u16>,
) -> Result<(String, u16), String> {
    let expected = if default_port.is_some() {
        "host or host:port"
    } else {
        "host:port"
    };
    if text.is_empty() {
        return Err(format!("required: {expected}"));
    }
    if text.len() > TARGET_MAX_LEN {
        return Err(format!("longer than {TARGET_MAX_LEN} characters"));
    }
    let malformed = || format!("{text:?} is not {expected} (IPv6 addresses in brackets)");
    if let (Some(port), Ok(ip)) = (default_port, text.parse::<IpAddr>()) {
        return Ok((ip.to_string(), port));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(malformed)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(malformed());
        }
        match (after.strip_prefix(':'), default_port) {
            (Some(port), _) => (host, Some(port)),
            (None, Some(_)) if after.is_empty() => (host, None),
            _ => return Err(malformed()),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return Err(malformed()),
            Some((host, port)) => (host, Some(port)),
            None if default_port.is_some() => (text, None),
            None => return Err(malformed()),
        }
    };
    if !host.contains(':') && host.parse::<IpAddr>().is_err() {
        check_domain_name(host).map_err(|reason| format!("host: {reason}"))?;
    }
    let port = match (port, default_port) {
        (Some(port), _) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
        },
        (None, Some(port)) => port,
        (None, None) => return Err(malformed()),
    };
    Ok((host.to_owned(), port))
}

/// A domain name in presentation form: labels of letters, digits, `-` and `_`, at most
/// 63 characters each and 253 in all; a trailing dot is allowed.
pub(crate) fn check_domain_name(text: &str) -> Result<(), String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("required: a domain name".to_owned());
    }
    if name.len() > DOMAIN_NAME_MAX_LEN {
        return Err(format!("is longer than {DOMAIN_NAME_MAX_LEN} characters"));
    }
    for label in name.split('.') {
        let valid_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > DOMAIN_LABEL_MAX_LEN || !valid_chars {
            return Err(format!(
                "{text:?} is not a domain name: labels of 1 to {DOMAIN_LABEL_MAX_LEN} \
                 letters, digits, '-' or '_', separated by dots"
            ));
        }
    }
    Ok(())
}

/// The certificates of a PEM bundle, each checked to be usable as a trust anchor.
pub(crate) fn parse_ca(pem: &str) -> Result<RootCertStore, String> {
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = match certs {
        Ok(certs) if !certs.is_empty() => certs,
        _ => return Err("not a PEM bundle of certificates".to_owned()),
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} of the bundle is unusable: {e}", i + 1))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(module: serde_json::Value) -> ProbeTarget {
        serde_json::from_value(serde_json::json!({
            "name": "web", "tenant": "shop", "module": module,
        }))
        .expect("target JSON")
    }

    fn problems(target: ProbeTarget) -> Vec<String> {
        match target.validate() {
            Ok(_) => Vec::new(),
            Err(errors) => errors.lines(),
        }
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("certificate").pem()
    }

    #[test]
    fn valid_targets_of_every_module_pass() {
        let ca = ca_pem();
        for module in [
            serde_json::json!({"http": {"url": "https://shop.example:8443/healthz?full=1",
                "method": "HEAD", "expectedStatus": [200, 401],
                "tls": {"ca": ca, "serverName": "shop.internal"}}}),
            serde_json::json!({"http": {"url": "http://10.0.0.1/"}}),
            serde_json::json!({"tcp": {"address": "db.shop.example:5432"}}),
            serde_json::json!({"tcp": {"address": "[2001:db8::1]:22"}}),
            serde_json::json!({"tls": {"address": "10.1.2.3:6443", "insecureSkipVerify": true}}),
            serde_json::json!({"dns": {"server": "10.0.0.53", "queryName": "shop.example."}}),
            serde_json::json!({"dns": {"server": "[::1]:5353", "queryName": "_svc._tcp.shop.example", "queryType": "AAAA"}}),
            serde_json::json!({"dns": {"server": "::1", "queryName": "a"}}),
        ] {
            let target = target(module.clone());
            assert_eq!(problems(target), Vec::<String>::new(), "{module}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut bad = target(serde_json::json!({"http": {
            "url": "ftp://x", "expectedStatus": [200, 42, 600],
            "tls": {"ca": "not pem", "insecureSkipVerify": true, "serverName": "bad name!"}}}));
        bad.name = "Web_1".into();
        bad.cluster = Some(String::new());
        assert_eq!(
            problems(bad),
            vec![
                "name: \"Web_1\" is not a valid DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit",
                "cluster: must not be empty",
                "module.http.url: not an absolute http(s) URL: \"ftp://x\"",
                "module.http.expectedStatus[1]: 42 is not an HTTP status (100 to 599)",
                "module.http.expectedStatus[2]: 600 is not an HTTP status (100 to 599)",
                "module.http.tls.ca: not a PEM bundle of certificates",
                "module.http.tls.insecureSkipVerify: contradicts ca: a certificate is either verified against ca or not at all",
                "module.http.tls.serverName: \"bad name!\" is not a DNS name or IP address",
            ]
        );
    }

    #[test]
    fn tls_settings_need_an_https_url() {
        let plain = target(serde_json::json!({"http": {"url": "http://shop.example/",
            "tls": {"insecureSkipVerify": true}}}));
        assert_eq!(
            problems(plain),
            vec!["module.http.tls: TLS settings apply only to https:// URLs"]
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_without_being_echoed() {
        let secret =
            target(serde_json::json!({"http": {"url": "https://user:hunter2@shop.example/"}}));
        let lines = problems(secret);
        assert_eq!(
            lines,
            vec!["module.http.url: credentials in the URL would be stored and shown in clear"]
        );
        let garbled = target(serde_json::json!({"http": {"url": "::hunter2@"}}));
        assert!(!problems(garbled).join("").contains("hunter2"));
    }

    #[test]
    fn addresses_and_names_are_checked() {
        let cases = [
            (
                serde_json::json!({"tcp": {"address": "shop.example"}}),
                "module.tcp.address: \"shop.example\" is not host:port (IPv6 addresses in brackets)",
            ),
            (
                serde_json::json!({"tcp": {"address": "shop.example:0"}}),
                "module.tcp.address: \"0\" is not a port (1 to 65535)",
            ),
            (
                serde_json::json!({"tcp": {"address": "::1:80"}}),
                "module.tcp.address: \"::1:80\" is not host:port (IPv6 addresses in brackets)",
            ),
            (
                serde_json::json!({"tls": {"address": "bad host:443"}}),
                "module.tls.address: host: \"bad host\" is not a domain name: labels of 1 to 63 letters, digits, '-' or '_', separated by dots",
            ),
            (
                serde_json::json!({"dns": {"server": "10.0.0.53:99999", "queryName": "a..b"}}),
                "module.dns.server: \"99999\" is not a port (1 to 65535)",
            ),
        ];
        for (module, expected) in cases {
            let lines = problems(target(module.clone()));
            assert_eq!(
                lines.first().map(String::as_str),
                Some(expected),
                "{module}"
            );
        }
        let lines = problems(target(
            serde_json::json!({"dns": {"server": "10.0.0.53", "queryName": "a..b"}}),
        ));
        assert_eq!(
            lines,
            vec![
                "module.dns.queryName: \"a..b\" is not a domain name: labels of 1 to 63 letters, digits, '-' or '_', separated by dots"
            ]
        );
    }

    #[test]
    fn unknown_fields_and_two_modules_are_refused_by_the_parser() {
        let unknown = serde_json::from_value::<ProbeTarget>(serde_json::json!({
            "name": "web", "tenant": "shop", "module": {"tcp": {"address": "a:1", "tls": true}},
        }));
        assert!(unknown.is_err());
        let two = serde_json::from_value::<ProbeTarget>(serde_json::json!({
            "name": "web", "tenant": "shop",
            "module": {"tcp": {"address": "a:1"}, "dns": {"server": "a", "queryName": "b"}},
        }));
        assert!(two.is_err());
    }

    #[test]
    fn the_series_key_names_the_target_by_module() {
        let mut http = target(serde_json::json!({"http": {"url": "https://a.example/x"}}));
        http.cluster = Some("edge-1".into());
        assert_eq!(
            http.series_key(),
            SeriesKey {
                cluster: "edge-1".into(),
                tenant: "shop".into(),
                target: "https://a.example/x".into(),
                module: "http",
            }
        );
        let dns =
            target(serde_json::json!({"dns": {"server": "10.0.0.53", "queryName": "a.example"}}));
        assert_eq!(dns.series_key().target, "a.example");
        assert_eq!(dns.series_key().cluster, "");
        assert_eq!(dns.series_key().to_string(), "dns|shop||a.example");
    }

    /// Issue 13, finding 5: literal addresses in refused ranges and methods beyond
    /// GET and HEAD are named with their field path; checked only, nothing dialled.
    #[test]
    fn the_egress_policy_names_refused_addresses_and_methods_by_field() {
        let policy = EgressPolicy::default();
        let paths = |module: serde_json::Value| -> Vec<String> {
            target(module)
                .egress_problems(&policy)
                .into_iter()
                .map(|(e, _)| e.to_string())
                .collect()
        };
        let metadata = paths(
            serde_json::json!({"http": {"url": "http://169.254.169.254/latest/meta-data/", "method": "POST"}}),
        );
        assert_eq!(metadata.len(), 2, "{metadata:?}");
        assert!(metadata[0].starts_with("module.http.url: 169.254.169.254 is in 169.254.169.254/32 (cloud instance metadata service)"), "{metadata:?}");
        assert!(
            metadata[1].starts_with("module.http.method: POST is not allowed"),
            "{metadata:?}"
        );
        assert!(
            paths(serde_json::json!({"tcp": {"address": "[::1]:22"}}))[0]
                .starts_with("module.tcp.address: ::1 is in ::1/128 (loopback)")
        );
        assert!(
            paths(serde_json::json!({"tls": {"address": "10.1.2.3:6443"}}))[0]
                .starts_with("module.tls.address: 10.1.2.3 is in 10.0.0.0/8")
        );
        assert!(
            paths(serde_json::json!({"dns": {"server": "fd00::53", "queryName": "a"}}))[0]
                .starts_with("module.dns.server: fd00::53 is in fc00::/7")
        );
        assert!(
            paths(serde_json::json!({"http": {"url": "https://shop.example/", "method": "HEAD"}}))
                .is_empty()
        );
        let mut provider =
            target(serde_json::json!({"http": {"url": "https://shop.example/", "method": "POST"}}));
        provider.origin = ProbeOrigin::Provider;
        assert!(
            provider.egress_problems(&policy).is_empty(),
            "the provider's own probes"
        );
    }

    #[test]
    fn the_json_form_is_camel_case_and_omits_defaults() {
        let http = target(serde_json::json!({"http": {"url": "https://a.example/"}}));
        assert_eq!(
            serde_json::to_value(&http).expect("JSON"),
            serde_json::json!({"name": "web", "tenant": "shop",
                "module": {"http": {"url": "https://a.example/", "method": "GET"}}})
        );
    }
}
