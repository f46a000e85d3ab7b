//! The prober against real servers: nginx over HTTP and HTTPS (a CA and certificates made
//! per run with rcgen), closed ports, a DNS responder on loopback; the prober's series;
//! the Debian blackbox exporter probing the same endpoints and agreeing; and probe
//! endpoints stored through the API (SQLite, and PostgreSQL when it runs here).
//!
//! Needs `nginx` and `prometheus-blackbox-exporter` (`scripts/test.sh` installs them).

mod api_harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use kaas_observer::probes::{
    DnsProbe, DnsQueryType, FollowSettings, HttpMethod, HttpProbe, ProbeModule, ProbeOrigin,
    ProbeOutcome, ProbeTarget, Prober, ProberSettings, TcpProbe, TlsProbe, TlsSettings,
    desired_targets, follow_store, probe_once,
};
use kaas_observer::store::{Actor, NewCluster, ReportWrite, Store};
use kaas_test_support::peers::{binary, run_nginx};
use kaas_test_support::process::{ChildGuard, free_port, wait_for_tcp};
use prometheus_client::registry::Registry;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::net::UdpSocket;

use api_harness::{ADMIN, Harness, loopback_allowed};

/// Per-probe timeout in these tests: generous, loopback answers in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A CA and a server certificate for `probe.internal` only, served with the CA (so the
/// chain has two certificates); the CA expires first.
struct Pki {
    ca: String,
    chain: String,
    key: String,
    /// notAfter of the CA, the chain's earliest, Unix seconds.
    earliest_expiry: i64,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kaas probe test CA");
    ca_params.not_after = rcgen::date_time_ymd(2035, 6, 1);
    let earliest_expiry = ca_params.not_after.unix_timestamp();
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(vec!["probe.internal".to_owned()]).expect("server params");
    params.not_after = rcgen::date_time_ymd(2036, 1, 2);
    let server = params.signed_by(&key, &issuer).expect("server certificate");
    Pki {
        ca: ca.pem(),
        chain: format!("{}{}", server.pem(), ca.pem()),
        key: key.serialize_pem(),
        earliest_expiry,
    }
}

/// nginx with the same locations on a plain and a TLS port.
struct Web {
    http: u16,
    https: u16,
    _guard: ChildGuard,
}

fn web(dir: &Path, pki: &Pki) -> Web {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write PEM");
        path.display().to_string()
    };
    let (chain, key) = (
        write("chain.pem", &pki.chain),
        write("server.key", &pki.key),
    );
    let (http, https) = (free_port(), free_port());
    let locations = "location = /ok { return 200 \"ok\\n\"; }\n\
         location = /missing { return 404; }\n\
         location = /broken { return 500; }\n\
         location = /unauthorized { return 401; }\n\
         location = /livez { return 401; }\n";
    let guard = run_nginx(
        dir,
        &format!(
            "  server {{ listen 127.0.0.1:{http}; {locations} }}\n\
             server {{ listen 127.0.0.1:{https} ssl; ssl_certificate {chain}; ssl_certificate_key {key}; {locations} }}"
        ),
        &[http, https],
    );
    Web {
        http,
        https,
        _guard: guard,
    }
}

fn target(name: &str, module: ProbeModule) -> ProbeTarget {
    ProbeTarget {
        name: name.to_owned(),
        tenant: "shop".to_owned(),
        cluster: Some("edge-1".to_owned()),
        origin: ProbeOrigin::Tenant,
        module,
    }
}

fn http(url: String, expected: &[u16], tls: Option<TlsSettings>) -> ProbeModule {
    ProbeModule::Http(HttpProbe {
        url,
        method: HttpMethod::Get,
        expected_status: expected.to_vec(),
        tls,
    })
}

fn trusting(pki: &Pki) -> TlsSettings {
    TlsSettings {
        ca: Some(pki.ca.clone()),
        insecure_skip_verify: false,
        server_name: Some("probe.internal".to_owned()),
    }
}

async fn probe(module: ProbeModule) -> ProbeOutcome {
    probe_once(target("t", module), &loopback_allowed(), TIMEOUT)
        .await
        .expect("valid target")
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

#[tokio::test]
async fn http_probes_report_success_status_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let base = format!("http://127.0.0.1:{}", web.http);

    let ok = probe(http(format!("{base}/ok"), &[], None)).await;
    assert!(ok.success(), "{:?}", ok.failure);
    assert_eq!(ok.http_status_code, Some(200));
    assert!(ok.dns_lookup.is_some());
    assert_eq!(ok.earliest_cert_expiry, None);

    // Not an expected status: probe_success 0 with the status reported.
    let missing = probe(http(format!("{base}/missing"), &[], None)).await;
    assert!(!missing.success());
    assert_eq!(missing.http_status_code, Some(404));
    assert_eq!(missing.failure.as_ref().unwrap().reason(), "status");
    let mismatch = probe(http(format!("{base}/ok"), &[204], None)).await;
    assert_eq!(
        (mismatch.success(), mismatch.http_status_code),
        (false, Some(200))
    );
    // Listed statuses succeed.
    let listed = probe(http(format!("{base}/unauthorized"), &[200, 401, 403], None)).await;
    assert_eq!(
        (listed.success(), listed.http_status_code),
        (true, Some(401))
    );
    let head = probe(ProbeModule::Http(HttpProbe {
        url: format!("{base}/ok"),
        method: HttpMethod::Head,
        expected_status: vec![],
        tls: None,
    }))
    .await;
    assert!(head.success(), "{:?}", head.failure);

    // Connection refused: probe_success 0, status 0.
    let refused = probe(http(
        format!("http://127.0.0.1:{}/ok", closed_port()),
        &[],
        None,
    ))
    .await;
    assert_eq!(
        (refused.success(), refused.http_status_code),
        (false, Some(0))
    );
    assert_eq!(refused.failure.as_ref().unwrap().reason(), "connect");

    // A name that does not resolve. Its first label is longer than DNS allows (63), so
    // the system resolver refuses it without asking a name server: nothing leaves the
    // machine (a plain `no-such-host.invalid` went to the configured name server).
    let unresolvable_name = format!("{}.invalid", "x".repeat(70));
    let unresolvable = probe(http(format!("http://{unresolvable_name}/"), &[], None)).await;
    assert_eq!(unresolvable.failure.as_ref().unwrap().reason(), "resolve");
}

#[tokio::test]
async fn https_probes_verify_and_report_the_chains_earliest_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let url = format!("https://127.0.0.1:{}/ok", web.https);

    let ok = probe(http(url.clone(), &[], Some(trusting(&pki)))).await;
    assert!(ok.success(), "{:?}", ok.failure);
    assert_eq!(ok.http_status_code, Some(200));
    // The served chain is the server certificate and the CA; the CA expires first.
    assert_eq!(ok.earliest_cert_expiry, Some(pki.earliest_expiry));

    let status = probe(http(
        format!("https://127.0.0.1:{}/broken", web.https),
        &[],
        Some(trusting(&pki)),
    ))
    .await;
    assert_eq!(
        (status.success(), status.http_status_code),
        (false, Some(500))
    );
    assert_eq!(status.earliest_cert_expiry, Some(pki.earliest_expiry));

    // The certificate names probe.internal, not 127.0.0.1.
    let wrong_name = probe(http(
        url.clone(),
        &[],
        Some(TlsSettings {
            server_name: None,
            ..trusting(&pki)
        }),
    ))
    .await;
    assert_eq!(wrong_name.failure.as_ref().unwrap().reason(), "tls");
    assert_eq!(wrong_name.http_status_code, Some(0));
    // The system roots do not trust the test CA.
    let untrusted = probe(http(url.clone(), &[], None)).await;
    assert_eq!(untrusted.failure.as_ref().unwrap().reason(), "tls");
    // insecureSkipVerify: up, and the expiry is still reported.
    let insecure = probe(http(
        url,
        &[],
        Some(TlsSettings {
            insecure_skip_verify: true,
            ..TlsSettings::default()
        }),
    ))
    .await;
    assert!(insecure.success(), "{:?}", insecure.failure);
    assert_eq!(insecure.earliest_cert_expiry, Some(pki.earliest_expiry));
}

#[tokio::test]
async fn tls_and_tcp_probes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let tls = |address: String, settings: TlsSettings| {
        ProbeModule::Tls(TlsProbe {
            address,
            server_name: settings.server_name,
            ca: settings.ca,
            insecure_skip_verify: settings.insecure_skip_verify,
        })
    };

    let ok = probe(tls(format!("127.0.0.1:{}", web.https), trusting(&pki))).await;
    assert!(ok.success(), "{:?}", ok.failure);
    assert_eq!(ok.earliest_cert_expiry, Some(pki.earliest_expiry));
    assert_eq!(ok.http_status_code, None);
    // A plain HTTP port does not speak TLS.
    let plain = probe(tls(format!("127.0.0.1:{}", web.http), trusting(&pki))).await;
    assert_eq!(plain.failure.as_ref().unwrap().reason(), "tls");
    assert_eq!(plain.earliest_cert_expiry, None);
    let closed = probe(tls(format!("127.0.0.1:{}", closed_port()), trusting(&pki))).await;
    assert_eq!(closed.failure.as_ref().unwrap().reason(), "connect");

    let tcp = |address: String| ProbeModule::Tcp(TcpProbe { address });
    assert!(
        probe(tcp(format!("127.0.0.1:{}", web.http)))
            .await
            .success()
    );
    assert!(
        probe(tcp(format!("localhost:{}", web.http)))
            .await
            .success()
    );
    let closed = probe(tcp(format!("127.0.0.1:{}", closed_port()))).await;
    assert_eq!(closed.failure.as_ref().unwrap().reason(), "connect");
}

/// A DNS server on loopback: `shop.example` has A 192.0.2.7 and no AAAA; every other
/// name is NXDOMAIN. Answers are built by hand from the query.
async fn dns_responder() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buffer = [0u8; 512];
        loop {
            let Ok((length, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let query = &buffer[..length];
            // The question: from byte 12 to the end (name, type, class).
            let question = &query[12..];
            let name_end = question.iter().position(|&b| b == 0).expect("a name");
            let name = &question[..name_end];
            let record_type = u16::from_be_bytes([question[name_end + 1], question[name_end + 2]]);
            let known = name.eq_ignore_ascii_case(b"\x04shop\x07example");
            let answers: &[&[u8]] = match (known, record_type) {
                (true, 1) => &[&[192, 0, 2, 7]],
                _ => &[],
            };
            let rcode = if known { 0 } else { 3 };
            let mut out = query[..2].to_vec();
            out.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&u16::try_from(answers.len()).expect("count").to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(question);
            for data in answers {
                out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44]);
                out.extend_from_slice(&u16::try_from(data.len()).expect("length").to_be_bytes());
                out.extend_from_slice(data);
            }
            let _ = socket.send_to(&out, from).await;
        }
    });
    address
}

fn dns(server: String, name: &str, query_type: DnsQueryType) -> ProbeModule {
    ProbeModule::Dns(DnsProbe {
        server,
        query_name: name.to_owned(),
        query_type,
    })
}

#[tokio::test]
async fn dns_probes_against_a_loopback_server() {
    let server = dns_responder().await.to_string();
    let found = probe(dns(server.clone(), "shop.example", DnsQueryType::A)).await;
    assert!(found.success(), "{:?}", found.failure);
    assert!(found.dns_lookup.is_some());
    // The name exists without AAAA records: NOERROR with no answers still succeeds.
    let no_data = probe(dns(server.clone(), "SHOP.example.", DnsQueryType::Aaaa)).await;
    assert!(no_data.success(), "{:?}", no_data.failure);
    let missing = probe(dns(server, "missing.example", DnsQueryType::A)).await;
    assert_eq!(missing.failure.as_ref().unwrap().reason(), "dns_rcode");
    assert!(missing.dns_lookup.is_some());

    // A server that never answers: the probe times out.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let quiet = probe_once(
        target(
            "t",
            dns(
                silent.local_addr().unwrap().to_string(),
                "a.example",
                DnsQueryType::A,
            ),
        ),
        &loopback_allowed(),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(quiet.failure.as_ref().unwrap().reason(), "timeout");
    assert_eq!(quiet.dns_lookup, None);
}

/// `name{labels} value` lines of an exposition, keyed by the line without the value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn the_prober_exports_blackbox_series_for_its_targets() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let prober = Prober::start(ProberSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        egress: loopback_allowed(),
        ..ProberSettings::default()
    });
    let mut registry = Registry::default();
    prober.register(&mut registry);
    let ok_url = format!("http://127.0.0.1:{}/ok", web.http);
    let missing_url = format!("http://127.0.0.1:{}/missing", web.http);
    let https_url = format!("https://127.0.0.1:{}/ok", web.https);
    let closed = format!("127.0.0.1:{}", closed_port());
    prober.set_targets(vec![
        target("ok", http(ok_url.clone(), &[], None)),
        target("missing", http(missing_url.clone(), &[], None)),
        target("secure", http(https_url.clone(), &[], Some(trusting(&pki)))),
        target(
            "closed",
            ProbeModule::Tcp(TcpProbe {
                address: closed.clone(),
            }),
        ),
        // Same series as "ok": skipped.
        target("duplicate", http(ok_url.clone(), &[201], None)),
    ]);
    assert_eq!(prober.stats().owned_targets, 4);
    let until = Instant::now() + Duration::from_secs(15);
    while prober.results().len() < 4 {
        assert!(Instant::now() < until, "results: {:?}", prober.results());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let samples = samples(&text);
    let value = |name: &str, target: &str, module: &str| {
        let key = format!(
            "{name}{{cluster=\"edge-1\",tenant=\"shop\",target=\"{target}\",module=\"{module}\"}}"
        );
        samples.get(&key).copied()
    };
    assert_eq!(value("probe_success", &ok_url, "http"), Some(1.0), "{text}");
    assert_eq!(
        value("probe_http_status_code", &ok_url, "http"),
        Some(200.0)
    );
    assert_eq!(value("probe_success", &missing_url, "http"), Some(0.0));
    assert_eq!(
        value("probe_http_status_code", &missing_url, "http"),
        Some(404.0)
    );
    assert_eq!(value("probe_success", &https_url, "http"), Some(1.0));
    assert_eq!(
        value("probe_ssl_earliest_cert_expiry", &https_url, "http"),
        Some(pki.earliest_expiry as f64)
    );
    assert_eq!(value("probe_success", &closed, "tcp"), Some(0.0));
    assert_eq!(value("probe_http_status_code", &closed, "tcp"), None);
    assert!(value("probe_duration_seconds", &ok_url, "http").is_some());
    assert!(value("probe_dns_lookup_time_seconds", &ok_url, "http").is_some());

    // Probes repeat every interval.
    let first = prober.stats().probes;
    let until = Instant::now() + Duration::from_secs(15);
    while prober.stats().probes < first + 8 {
        assert!(Instant::now() < until, "{:?}", prober.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A removed target's series go at once.
    prober.set_targets(vec![target("ok", http(ok_url.clone(), &[], None))]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        !text.contains(&missing_url) && !text.contains(&closed),
        "{text}"
    );
    assert!(text.contains(&ok_url));
    prober.stop();
}

/// The Debian blackbox exporter on loopback with modules equivalent to our probes.
struct Blackbox {
    port: u16,
    _guard: ChildGuard,
}

fn blackbox(dir: &Path, pki: &Pki) -> Blackbox {
    let ca = dir.join("blackbox-ca.pem");
    std::fs::write(&ca, &pki.ca).expect("write CA");
    let ca = ca.display();
    let config = format!(
        "modules:\n\
         \x20 http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      tls_config: {{ca_file: {ca}, server_name: probe.internal}}\n\
         \x20 tcp_connect:\n    prober: tcp\n    timeout: 5s\n    tcp: {{preferred_ip_protocol: ip4}}\n\
         \x20 tls_connect:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      preferred_ip_protocol: ip4\n      tls: true\n      tls_config: {{ca_file: {ca}, server_name: probe.internal}}\n\
         \x20 dns_a:\n    prober: dns\n    timeout: 5s\n    dns: {{query_name: shop.example, query_type: A, transport_protocol: udp, preferred_ip_protocol: ip4}}\n\
         \x20 dns_missing:\n    prober: dns\n    timeout: 5s\n    dns: {{query_name: missing.example, query_type: A, transport_protocol: udp, preferred_ip_protocol: ip4}}\n"
    );
    let config_path = dir.join("blackbox.yml");
    std::fs::write(&config_path, config).expect("write config");
    let port = free_port();
    let guard = ChildGuard::spawn(
        "prometheus-blackbox-exporter",
        Command::new(binary(
            "prometheus-blackbox-exporter",
            "prometheus-blackbox-exporter",
        ))
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null()),
    );
    wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_secs(10));
    Blackbox {
        port,
        _guard: guard,
    }
}

/// The exporter's answer to one probe: its metric samples without labels.
async fn blackbox_probe(exporter: &Blackbox, module: &str, target: &str) -> BTreeMap<String, f64> {
    let url = format!(
        "http://127.0.0.1:{}/probe?module={module}&target={}",
        exporter.port,
        url_escape(target)
    );
    let (status, body) = tokio::task::spawn_blocking(move || {
        kaas_test_support::http::get(&url).expect("blackbox exporter answers")
    })
    .await
    .expect("the request task");
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blackbox_exporter_and_the_prober_agree() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let exporter = blackbox(dir.path(), &pki);
    let dns_server = dns_responder().await.to_string();
    let closed = closed_port();
    let tls = Some(trusting(&pki));
    let cases: Vec<(&str, String, ProbeModule)> = vec![
        (
            "http_2xx",
            format!("http://127.0.0.1:{}/ok", web.http),
            http(format!("http://127.0.0.1:{}/ok", web.http), &[], None),
        ),
        (
            "http_2xx",
            format!("http://127.0.0.1:{}/missing", web.http),
            http(format!("http://127.0.0.1:{}/missing", web.http), &[], None),
        ),
        (
            "http_2xx",
            format!("http://127.0.0.1:{}/broken", web.http),
            http(format!("http://127.0.0.1:{}/broken", web.http), &[], None),
        ),
        (
            "http_2xx",
            format!("http://127.0.0.1:{closed}/ok"),
            http(format!("http://127.0.0.1:{closed}/ok"), &[], None),
        ),
        (
            "http_2xx",
            format!("https://127.0.0.1:{}/ok", web.https),
            http(
                format!("https://127.0.0.1:{}/ok", web.https),
                &[],
                tls.clone(),
            ),
        ),
        (
            "http_2xx",
            format!("https://127.0.0.1:{}/missing", web.https),
            http(
                format!("https://127.0.0.1:{}/missing", web.https),
                &[],
                tls.clone(),
            ),
        ),
        (
            "tcp_connect",
            format!("127.0.0.1:{}", web.http),
            ProbeModule::Tcp(TcpProbe {
                address: format!("127.0.0.1:{}", web.http),
            }),
        ),
        (
            "tcp_connect",
            format!("127.0.0.1:{closed}"),
            ProbeModule::Tcp(TcpProbe {
                address: format!("127.0.0.1:{closed}"),
            }),
        ),
        (
            "tls_connect",
            format!("127.0.0.1:{}", web.https),
            ProbeModule::Tls(TlsProbe {
                address: format!("127.0.0.1:{}", web.https),
                server_name: Some("probe.internal".into()),
                ca: Some(pki.ca.clone()),
                insecure_skip_verify: false,
            }),
        ),
        (
            "tls_connect",
            format!("127.0.0.1:{}", web.http),
            ProbeModule::Tls(TlsProbe {
                address: format!("127.0.0.1:{}", web.http),
                server_name: Some("probe.internal".into()),
                ca: Some(pki.ca.clone()),
                insecure_skip_verify: false,
            }),
        ),
        (
            "dns_a",
            dns_server.clone(),
            dns(dns_server.clone(), "shop.example", DnsQueryType::A),
        ),
        (
            "dns_missing",
            dns_server.clone(),
            dns(dns_server.clone(), "missing.example", DnsQueryType::A),
        ),
    ];
    let mut successes = 0;
    for (module, target_text, ours) in cases {
        let theirs = blackbox_probe(&exporter, module, &target_text).await;
        let ours = probe(ours).await;
        let what = format!("{module} {target_text}: blackbox {theirs:?}, ours {ours:?}");
        let their_success = theirs.get("probe_success").copied();
        assert_eq!(
            their_success,
            Some(if ours.success() { 1.0 } else { 0.0 }),
            "{what}"
        );
        successes += usize::from(ours.success());
        if let Some(code) = ours.http_status_code {
            assert_eq!(
                theirs.get("probe_http_status_code").copied(),
                Some(f64::from(code)),
                "{what}"
            );
        }
        if let Some(expiry) = ours.earliest_cert_expiry {
            assert_eq!(
                theirs.get("probe_ssl_earliest_cert_expiry").copied(),
                Some(expiry as f64),
                "{what}"
            );
        }
    }
    assert_eq!(successes, 5, "the cases mix successes and failures");
}

#[tokio::test]
async fn probe_endpoints_through_the_api_are_isolated_per_tenant_and_feed_the_prober() {
    let h = Harness::new().await;
    let shop = h.tenant_with_token("shop").await;
    let other = h.tenant_with_token("other").await;
    let created = h
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(&shop),
            Some(json!({"name": "edge-1", "apiEndpoint": "https://api.edge-1.example:6443"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let body = json!({"cluster": "edge-1", "module": {"http": {"url": "https://shop.example/healthz", "expectedStatus": [200, 204]}}});
    let put = h
        .call(
            Method::PUT,
            "/api/v1/probes/web",
            Some(&shop),
            Some(body.clone()),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
    assert_eq!(put.json()["tenant"], "shop");
    assert_eq!(
        put.json()["module"]["http"]["expectedStatus"],
        json!([200, 204])
    );
    let again = h
        .call(Method::PUT, "/api/v1/probes/web", Some(&shop), Some(body))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(
        again.json()["updatedAtMs"],
        put.json()["updatedAtMs"],
        "unchanged"
    );
    let post = h
        .call(
            Method::POST,
            "/api/v1/probes",
            Some(&shop),
            Some(json!({"name": "dns", "module": {"dns": {"server": "ns.shop.example", "queryName": "shop.example"}}})),
        )
        .await;
    assert_eq!(post.status, StatusCode::CREATED, "{}", post.text);

    // Every problem at once, with its path; another tenant's cluster is "no cluster".
    let bad = h
        .call(
            Method::PUT,
            "/api/v1/probes/bad",
            Some(&other),
            Some(json!({"name": "other-name", "cluster": "edge-1", "module": {"http": {"url": "ftp://x", "expectedStatus": [42]}}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let paths: Vec<String> = bad.json()["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                f["path"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "module.http.url: not an absolute http(s) URL: \"ftp://x\"",
            "module.http.expectedStatus[0]: 42 is not an HTTP status (100 to 599)",
            "name: \"other-name\" does not match the name in the URL, \"bad\"",
            "cluster: no cluster \"edge-1\" in tenant \"other\"",
        ]
    );
    let unknown_field = h
        .call(
            Method::PUT,
            "/api/v1/probes/x",
            Some(&shop),
            Some(json!({"module": {"tcp": {"address": "a:1", "port": 2}}})),
        )
        .await;
    assert_eq!(
        unknown_field.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown_field.text
    );

    // Tenant isolation: the other tenant sees nothing of shop's.
    let theirs = h.get("/api/v1/probes", &other).await;
    assert_eq!(theirs.json()["items"], json!([]));
    let peek = h.get("/api/v1/probes/web", &other).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
    let steal = h
        .call(Method::DELETE, "/api/v1/probes/web", Some(&other), None)
        .await;
    assert_eq!(steal.status, StatusCode::NOT_FOUND);
    let forbidden = h.get("/api/v1/probes?tenant=shop", &other).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let mine = h.get("/api/v1/probes", &shop).await;
    let names: Vec<String> = mine.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["dns", "web"]);
    let all = h.get("/api/v1/probes", ADMIN).await;
    assert_eq!(all.json()["items"].as_array().unwrap().len(), 2);
    let admin_get = h.get("/api/v1/probes/web?tenant=shop", ADMIN).await;
    assert_eq!(admin_get.status, StatusCode::OK, "{}", admin_get.text);

    // The prober's view: the cluster's two API probes and both endpoints.
    let targets = desired_targets(&h.store).await.unwrap();
    let summary: Vec<(String, &str, String)> = targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.module.kind(),
                t.module.target_label().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "kubernetes-api".to_owned(),
                "http",
                "https://api.edge-1.example:6443/livez".to_owned()
            ),
            (
                "kubernetes-api-certificate".to_owned(),
                "tls",
                "api.edge-1.example:6443".to_owned()
            ),
            ("dns".to_owned(), "dns", "shop.example".to_owned()),
            (
                "web".to_owned(),
                "http",
                "https://shop.example/healthz".to_owned()
            ),
        ]
    );
    // Deleting the cluster stops its probes and those of its endpoints.
    h.store
        .delete_cluster("shop.edge-1", &Actor::admin())
        .await
        .unwrap();
    let targets = desired_targets(&h.store).await.unwrap();
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["dns"]);

    let deleted = h
        .call(Method::DELETE, "/api/v1/probes/web", Some(&shop), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = h.get("/api/v1/probes/web", &shop).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let audit = h.store.audit_entries(100).await.unwrap();
    let probe_actions: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e.kind == "probe-endpoint")
        .map(|e| (e.action.clone(), e.name.clone()))
        .collect();
    assert!(
        probe_actions.contains(&("create".into(), "web".into())),
        "{probe_actions:?}"
    );
    assert!(
        probe_actions.contains(&("delete".into(), "web".into())),
        "{probe_actions:?}"
    );
}

/// The store methods on a fresh PostgreSQL database, when the server at
/// `KAAS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) runs.
#[tokio::test]
async fn probe_endpoints_are_stored_on_postgres() {
    use sea_orm::{ConnectionTrait, Database};
    let admin_url = std::env::var("KAAS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let Ok(admin) = Database::connect(admin_url.as_str()).await else {
        eprintln!("no PostgreSQL at {admin_url}: skipped");
        return;
    };
    let name = format!("kaas_probes_{}", fastrand::u64(..));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let result = std::panic::AssertUnwindSafe(async {
        let store = Store::connect(&url, kaas_observer::secrets::SecretBox::generate().unwrap())
            .await
            .unwrap();
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        store
            .create_cluster(
                NewCluster {
                    name: "edge-1".into(),
                    tenant: "shop".into(),
                    labels: BTreeMap::new(),
                    api_endpoint: None,
                },
                Duration::from_secs(60),
                &Actor::admin(),
            )
            .await
            .unwrap();
        let web = target("web", http("https://shop.example/".into(), &[200], None));
        let (stored, created) = store
            .apply_probe_endpoint(web.clone().validate().unwrap(), &Actor::admin())
            .await
            .unwrap();
        assert!(created);
        assert_eq!(stored.target, web);
        let listed = store.list_probe_endpoints(Some("shop")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].target, web);
        store
            .delete_probe_endpoint("shop", "web", &Actor::admin())
            .await
            .unwrap();
        assert!(store.list_probe_endpoints(None).await.unwrap().is_empty());
    });
    let outcome = futures_util::FutureExt::catch_unwind(result).await;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn probes_in_flight_are_bounded_by_max_concurrency() {
    // 20 targets every 500 ms against a server that never answers: each probe holds
    // its permit until its 400 ms timeout, so unbounded there would be about 16 open
    // connections at a time. The server counts the connections open at once; a closed
    // connection is noticed a moment after the next one may have been accepted, so the
    // bound is checked with that slack.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, p) = (open.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (o, p) = (o.clone(), p.clone());
                tokio::spawn(async move {
                    let now = o.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    p.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    // Read the request and never answer, until the prober hangs up.
                    let mut buffer = [0u8; 1024];
                    while let Ok(1..) =
                        tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await
                    {
                    }
                    o.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        let prober = Prober::start(ProberSettings {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            max_concurrency: 3,
            egress: loopback_allowed(),
            ..ProberSettings::default()
        });
        let targets = (0..20)
            .map(|i| {
                target(
                    &format!("t{i}"),
                    http(format!("http://{address}/t{i}"), &[], None),
                )
            })
            .collect();
        prober.set_targets(targets);
        let until = Instant::now() + Duration::from_secs(20);
        while prober.stats().probes < 30 {
            assert!(Instant::now() < until, "{:?}", prober.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        prober.stop();
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=6).contains(&peak), "{peak} connections open at once");
        assert!(prober.results().is_empty(), "stop drops the series");
    });
}

/// Waits until `check` holds for the prober's results (keyed by `module target`).
async fn wait_for_results(
    prober: &Prober,
    what: &str,
    check: impl Fn(&BTreeMap<String, kaas_observer::probes::ProbeSample>) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let results: BTreeMap<String, kaas_observer::probes::ProbeSample> = prober
            .results()
            .into_iter()
            .map(|(key, sample)| {
                (
                    format!("{} {} {}", key.cluster, key.module, key.target),
                    sample,
                )
            })
            .collect();
        if check(&results) {
            return;
        }
        assert!(Instant::now() < until, "{what}: {results:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn following_the_store_probes_live_clusters_and_stored_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let web = web(dir.path(), &pki);
    let h = Harness::new().await;
    h.store
        .create_tenant("shop", &Actor::admin())
        .await
        .unwrap();
    let endpoint = format!("https://127.0.0.1:{}", web.https);
    h.store
        .create_cluster(
            NewCluster {
                name: "edge-1".into(),
                tenant: "shop".into(),
                labels: BTreeMap::new(),
                api_endpoint: Some(endpoint.clone()),
            },
            Duration::from_secs(60),
            &Actor::admin(),
        )
        .await
        .unwrap();
    let prober = Prober::start(ProberSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        egress: loopback_allowed(),
        ..ProberSettings::default()
    });
    // No periodic refresh within the test: every pick-up below comes from the change
    // feed (debounced by 200 ms).
    let feed = follow_store(
        h.store.clone(),
        prober.clone(),
        FollowSettings {
            refresh: Duration::from_secs(3600),
            debounce: Duration::from_millis(200),
        },
    );

    // The cluster's API server: /livez answers 401, which counts as up; the TLS probe
    // skips verification (the observer does not hold the cluster's CA) and reports
    // the expiry.
    let livez = format!("shop.edge-1 http {endpoint}/livez");
    let tls = format!("shop.edge-1 tls 127.0.0.1:{}", web.https);
    wait_for_results(&prober, "the cluster's probes", |r| {
        r.get(&livez)
            .is_some_and(|s| s.success && s.http_status_code == Some(401))
            && r.get(&tls)
                .is_some_and(|s| s.success && s.earliest_cert_expiry == Some(pki.earliest_expiry))
    })
    .await;

    // A stored endpoint is picked up from its change, without a refresh.
    let ok = format!("http://127.0.0.1:{}/ok", web.http);
    let stored = target("web", http(ok.clone(), &[], None));
    h.store
        .apply_probe_endpoint(stored.validate().unwrap(), &Actor::admin())
        .await
        .unwrap();
    let web_key = format!("shop.edge-1 http {ok}");
    wait_for_results(&prober, "the stored endpoint", |r| {
        r.get(&web_key).is_some_and(|s| s.success)
    })
    .await;

    // Deleting the cluster stops its probes and its endpoints' probes.
    h.store
        .delete_cluster("shop.edge-1", &Actor::admin())
        .await
        .unwrap();
    wait_for_results(&prober, "nothing left", |r| r.is_empty()).await;
    feed.abort();
    prober.stop();
}

#[tokio::test]
async fn the_follower_reads_once_per_burst_of_changes_and_ignores_agent_reports() {
    let h = Harness::new().await;
    h.store
        .create_tenant("shop", &Actor::admin())
        .await
        .unwrap();
    let cluster = |i: u32| NewCluster {
        name: format!("edge-{i}"),
        tenant: "shop".into(),
        labels: BTreeMap::new(),
        api_endpoint: Some(format!("https://192.0.2.{}:6443", i % 250 + 1)),
    };
    h.store
        .create_cluster(cluster(0), Duration::from_secs(60), &Actor::admin())
        .await
        .unwrap();
    // Its agent has joined: reports from now on are observations, not state changes.
    h.store
        .report(ReportWrite::Seen {
            cluster: String::from("shop.edge-0"),
            instance_id: String::from("agent-0"),
            version: String::from("test"),
            at_ms: 100,
            connection: None,
        })
        .await
        .unwrap();
    // An hour's interval: nothing is actually probed during the test.
    let prober = Prober::start(ProberSettings {
        interval: Duration::from_secs(3600),
        egress: loopback_allowed(),
        ..ProberSettings::default()
    });
    let debounce = Duration::from_millis(300);
    let follower = follow_store(
        h.store.clone(),
        prober.clone(),
        FollowSettings {
            refresh: Duration::from_secs(3600),
            debounce,
        },
    );
    let until = Instant::now() + Duration::from_secs(10);
    while prober.stats().owned_targets != 2 {
        assert!(Instant::now() < until, "the first read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(follower.reads(), 1);

    // Agents' reports and (dis)connections cannot move targets: no re-read.
    for i in 0..50 {
        h.store
            .report(ReportWrite::Health {
                cluster: String::from("shop.edge-0"),
                health: json!({ "pipelines": [] }),
                at_ms: i,
            })
            .await
            .unwrap();
        h.store
            .report(ReportWrite::Seen {
                cluster: String::from("shop.edge-0"),
                instance_id: String::from("agent-0"),
                version: String::from("test"),
                at_ms: i,
                connection: Some(format!("r/{i}")),
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(debounce * 4).await;
    assert_eq!(follower.reads(), 1, "reports made the follower re-read");

    // 100 clusters created back to back: one re-read once the burst is over (a few
    // if the machine stalls between two creations for longer than the debounce), not
    // one per cluster.
    for i in 1..=100 {
        h.store
            .create_cluster(cluster(i), Duration::from_secs(60), &Actor::admin())
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(20);
    while prober.stats().owned_targets != 202 {
        assert!(
            Instant::now() < until,
            "the burst's targets: {:?}",
            prober.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = follower.reads();
    assert!((2..=6).contains(&reads), "{reads} reads for one burst");
    follower.abort();
    prober.stop();
}

/// A loopback listener that counts the connections it accepts (and answers 200).
async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            });
        }
    });
    (address, accepted)
}

/// Issue 13, finding 5: with the shipped egress policy (no allowed CIDR), loopback and
/// metadata addresses are refused at the API (422 naming the field and the range;
/// 201 on 552c13e), and a name that resolves to loopback (`localhost`) passes the API
/// but is refused at probe time after resolution, for every module: the probe fails
/// with reason `refused`, the listener never sees a connection, and the refusals are
/// counted. On 552c13e the probes connected.
#[tokio::test]
async fn the_shipped_egress_policy_refuses_loopback_at_the_api_and_after_dns() {
    let policy = kaas_observer::egress::EgressPolicy::default();
    let h = Harness::with_egress(policy.clone()).await;
    let shop = h.tenant_with_token("shop").await;
    let (address, accepted) = counting_server().await;
    let port = address.port();
    let refused = |body: serde_json::Value, uri: &'static str| {
        let h = &h;
        let shop = shop.clone();
        async move {
            let answer = h.call(Method::POST, uri, Some(&shop), Some(body)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                answer.text
            );
            answer.json()["fields"][0].clone()
        }
    };
    let metadata = refused(
        json!({"name": "edge-1", "apiEndpoint": "http://169.254.169.254/latest/meta-data/"}),
        "/api/v1/clusters",
    )
    .await;
    assert_eq!(metadata["path"], "apiEndpoint");
    assert!(
        metadata["message"].as_str().unwrap().starts_with(
            "169.254.169.254 is in 169.254.169.254/32 (cloud instance metadata service)"
        ),
        "{metadata}"
    );
    let loopback = refused(
        json!({"name": "edge-2", "apiEndpoint": format!("https://127.0.0.1:{port}")}),
        "/api/v1/clusters",
    )
    .await;
    assert!(
        loopback["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.0/8 (loopback)"),
        "{loopback}"
    );
    for (module, path) in [
        (
            json!({"http": {"url": format!("http://127.0.0.1:{port}/")}}),
            "module.http.url",
        ),
        (
            json!({"tcp": {"address": format!("[::1]:{port}")}}),
            "module.tcp.address",
        ),
        (
            json!({"tls": {"address": format!("[::ffff:127.0.0.1]:{port}")}}),
            "module.tls.address",
        ),
        (
            json!({"dns": {"server": format!("127.0.0.1:{port}"), "queryName": "a.example"}}),
            "module.dns.server",
        ),
        (
            json!({"http": {"url": "https://shop.example/", "method": "POST"}}),
            "module.http.method",
        ),
    ] {
        let field = refused(json!({"name": "p", "module": module}), "/api/v1/probes").await;
        assert_eq!(field["path"], path, "{field}");
    }
    // A name cannot be judged at the API; it is checked when resolved.
    let by_name = format!("http://localhost:{port}/");
    let created = h
        .call(
            Method::POST,
            "/api/v1/probes",
            Some(&shop),
            Some(json!({"name": "by-name", "module": {"http": {"url": by_name}}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let modules = [
        http(by_name.clone(), &[], None),
        ProbeModule::Tcp(TcpProbe {
            address: format!("localhost:{port}"),
        }),
        ProbeModule::Tls(TlsProbe {
            address: format!("localhost:{port}"),
            server_name: None,
            ca: None,
            insecure_skip_verify: true,
        }),
        dns(format!("localhost:{port}"), "a.example", DnsQueryType::A),
    ];
    for module in modules {
        let kind = module.kind();
        let outcome = probe_once(target("t", module), &policy, TIMEOUT)
            .await
            .unwrap();
        let failure = outcome.failure.expect(kind);
        assert_eq!(failure.reason(), "refused", "{kind}: {failure}");
        assert!(
            failure
                .to_string()
                .contains("localhost resolves only to refused addresses"),
            "{kind}: {failure}"
        );
    }
    // The prober itself, on the stored endpoint: refused every interval, never sent.
    let prober = Prober::start(ProberSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        egress: policy.clone(),
        ..ProberSettings::default()
    });
    prober.set_targets(desired_targets(&h.store).await.unwrap());
    wait_for_results(&prober, "the refused probe", |results| {
        results.values().any(|sample| !sample.success)
    })
    .await;
    prober.stop();
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the listener"
    );
    let mut registry = Registry::default();
    policy.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let counted = samples(&text);
    for (context, range) in [
        ("api", "metadata"),
        ("api", "loopback"),
        ("api", "method"),
        ("probe", "loopback"),
    ] {
        let key = format!(
            "kaas_observer_egress_refusals_total{{context=\"{context}\",range=\"{range}\"}}"
        );
        assert!(
            counted.get(&key).is_some_and(|v| *v >= 1.0),
            "{key}\n{text}"
        );
    }
}

/// Issue 13, finding 5: with the provider's allow list, a name is connected to at the
/// address that passed the check (`localhost`'s `::1` is dropped, `127.0.0.1` used),
/// and a stored tenant probe with a method beyond GET and HEAD fails with reason
/// `refused` instead of being sent; allowing the method sends it.
#[tokio::test]
async fn allowed_ranges_are_probed_and_other_methods_need_the_provider() {
    let (address, accepted) = counting_server().await;
    let url = format!("http://localhost:{}/", address.port());
    let loopback = loopback_allowed();
    let ok = probe_once(
        target("t", http(url.clone(), &[], None)),
        &loopback,
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(ok.success(), "{:?}", ok.failure);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    let post = ProbeModule::Http(HttpProbe {
        url: url.clone(),
        method: HttpMethod::Post,
        expected_status: Vec::new(),
        tls: None,
    });
    let refused = probe_once(target("t", post.clone()), &loopback, TIMEOUT)
        .await
        .unwrap();
    let failure = refused.failure.expect("refused");
    assert_eq!(failure.reason(), "refused", "{failure}");
    assert!(
        failure.to_string().contains("POST is not allowed"),
        "{failure}"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the POST was never sent"
    );
    let allowing_post = kaas_observer::egress::EgressPolicy::new(
        vec!["127.0.0.0/8".parse().unwrap()],
        vec!["POST".to_owned()],
    );
    let sent = probe_once(target("t", post), &allowing_post, TIMEOUT)
        .await
        .unwrap();
    assert!(sent.success(), "{:?}", sent.failure);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A loopback HTTP server that answers 200 at once and records, per path, when each
/// request arrived (Unix milliseconds).
async fn recording_server() -> (SocketAddr, Arc<std::sync::Mutex<Vec<(String, u64)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 2048];
                let Ok(read) = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await else {
                    return;
                };
                let at = unix_ms();
                let request = String::from_utf8_lossy(&buffer[..read]);
                let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                log.lock().expect("log").push((path, at));
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            });
        }
    });
    (address, arrivals)
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// Issue 13, finding 5: one tenant ("hog") has 1,000 probes to a port that accepts
/// connections into its backlog and never answers (bound, listening, never
/// accepting), so every one of them holds its slot until the timeout, half an interval.
/// Another tenant's probe and the provider's cluster API probe (of the hog's own
/// cluster) must each arrive in every one of their slots within that slot's interval:
/// normally they arrive milliseconds after the slot, so only starvation can explain a
/// miss. With the shipped slot numbers and one first-come queue for everyone (552c13e)
/// the hog needs five times the slots there are, its queue grows every interval, and
/// the other probes wait behind it for many intervals.
#[test]
fn a_tenant_with_a_thousand_hanging_probes_delays_no_other_probe_by_an_interval() {
    const INTERVAL: Duration = Duration::from_secs(5);
    const SLOTS_CHECKED: u64 = 3;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let hanging_port = hanging.local_addr().expect("address").port();
        let (server, arrivals) = recording_server().await;
        let prober = Prober::start(ProberSettings {
            interval: INTERVAL,
            timeout: INTERVAL / 2,
            egress: loopback_allowed(),
            ..ProberSettings::default()
        });
        let mut targets: Vec<ProbeTarget> = (0..1000)
            .map(|i| ProbeTarget {
                name: format!("h{i}"),
                tenant: "hog".to_owned(),
                cluster: None,
                origin: ProbeOrigin::Tenant,
                module: http(format!("http://127.0.0.1:{hanging_port}/h{i}"), &[], None),
            })
            .collect();
        let other = ProbeTarget {
            name: "web".to_owned(),
            tenant: "shop".to_owned(),
            cluster: None,
            origin: ProbeOrigin::Tenant,
            module: http(format!("http://{server}/shop"), &[], None),
        };
        let provider = ProbeTarget {
            name: "kubernetes-api".to_owned(),
            tenant: "hog".to_owned(),
            cluster: Some("hog-1".to_owned()),
            origin: ProbeOrigin::Provider,
            module: http(format!("http://{server}/livez"), &[], None),
        };
        let watched = [
            ("/shop", other.series_key()),
            ("/livez", provider.series_key()),
        ];
        targets.push(other);
        targets.push(provider);
        let started = unix_ms();
        prober.set_targets(targets);

        // One interval for the hog's probes to fill their slots, then SLOTS_CHECKED
        // slots of each watched probe, each given its whole interval.
        let interval_ms = u64::try_from(INTERVAL.as_millis()).expect("ms");
        let mut deadlines = Vec::new();
        for (path, key) in &watched {
            let offset = kaas_observer::probes::schedule::offset_ms(key, INTERVAL);
            let warm = started + interval_ms;
            let mut first = warm - warm % interval_ms + offset;
            if first < warm {
                first += interval_ms;
            }
            let slots: Vec<u64> = (0..SLOTS_CHECKED)
                .map(|k| first + k * interval_ms)
                .collect();
            deadlines.push((*path, slots));
        }
        let end = deadlines
            .iter()
            .flat_map(|(_, slots)| slots.iter().map(|s| s + interval_ms))
            .max()
            .expect("slots");
        tokio::time::sleep(Duration::from_millis(end.saturating_sub(unix_ms()) + 100)).await;
        let hog_started = prober.stats().probes;
        prober.stop();
        drop(hanging);

        let arrivals = arrivals.lock().expect("log").clone();
        for (path, slots) in deadlines {
            let times: Vec<u64> = arrivals
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, at)| *at)
                .collect();
            for slot in slots {
                let lateness = times
                    .iter()
                    .filter(|at| (slot..slot + interval_ms).contains(*at))
                    .map(|at| at - slot)
                    .next();
                assert!(
                    lateness.is_some(),
                    "{path}: no probe within the interval after its slot at {slot} \
                     (arrivals {times:?}; {hog_started} probes finished in all)"
                );
            }
        }
    });
}
