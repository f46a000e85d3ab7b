//! `observer serve` with the REST API over TLS (`--api-tls-cert-file`,
//! `--api-tls-key-file`), driven on loopback by the real `observer` CLI trusting the
//! test CA with `--ca-file`: the round trip works with the CA, fails without it, and a
//! plaintext request on the TLS port gets no HTTP answer at all.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kaas_test_support::http;
use kaas_test_support::process::{ChildGuard, CommandOutput, free_port, run};
use kaas_test_support::tls::TestPki;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Runs the CLI against `server` with `args`.
fn cli(server: &str, token: &str, ca_file: Option<&str>, args: &[&str]) -> CommandOutput {
    let mut all = vec!["--server", server, "--token", token];
    if let Some(ca_file) = ca_file {
        all.extend(["--ca-file", ca_file]);
    }
    all.extend_from_slice(args);
    run(OBSERVER, &all, "")
}

/// The counter `name{result="<result>"}` on a metrics page, 0 when absent.
fn counter(text: &str, name: &str, result: &str) -> f64 {
    let prefix = format!("{name}{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Issue 13, "API over TLS": the REST API can be served over TLS with the operator's
/// certificate, bearer tokens then travel encrypted, the CLI trusts a CA file, and
/// plaintext is refused on the TLS port. On 552c13e `observer serve` had no such flags
/// (it refused to start with them) and the API spoke plaintext only.
#[test]
fn the_api_speaks_tls_with_the_operators_certificate_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["127.0.0.1"]);
    let files = pki.write(dir.path());
    let (api_port, metrics_port) = (free_port(), free_port());
    let data = dir.path().join("data");
    let _observer = ChildGuard::spawn(
        "observer",
        Command::new(OBSERVER)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--metrics-listen-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--grpc-listen-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--api-tls-cert-file")
            .arg(&files.server_cert)
            .arg("--api-tls-key-file")
            .arg(&files.server_key)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let until = Instant::now() + Duration::from_secs(30);
    while http::get(&metrics).map(|(status, _)| status) != Ok(200) {
        assert!(Instant::now() < until, "the observer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim();
    let ca = files.ca.to_str().unwrap();
    let https = format!("https://127.0.0.1:{api_port}");

    // With the CA: a real round trip, token in the header, over TLS.
    let created = cli(&https, token, Some(ca), &["tenant", "create", "shop"]);
    assert_eq!(created.code(), 0, "{}{}", created.stdout, created.stderr);
    let listed = cli(&https, token, Some(ca), &["tenant", "list", "-o", "json"]);
    assert_eq!(listed.code(), 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("\"shop\""), "{}", listed.stdout);

    // Without it the server is not trusted; plain http to the TLS port gets nowhere.
    let untrusted = cli(&https, token, None, &["tenant", "list"]);
    assert_ne!(untrusted.code(), 0, "{}", untrusted.stdout);
    assert!(
        untrusted.stderr.contains("cannot reach the observer"),
        "{}",
        untrusted.stderr
    );
    let plain = format!("http://127.0.0.1:{api_port}");
    let plaintext = cli(&plain, token, None, &["tenant", "list"]);
    assert_ne!(plaintext.code(), 0, "{}", plaintext.stdout);

    // A plaintext request is not answered: the connection closes without HTTP.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", api_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        format!("GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/") && !String::from_utf8_lossy(&answer).contains("shop"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The API port's handshakes are counted apart from the control port's.
    let (_, text) = http::get(&metrics).unwrap();
    let name = "kaas_observer_api_tls_handshakes_total";
    assert!(counter(&text, name, "success") >= 2.0, "{text}");
    assert!(counter(&text, name, "failure") >= 2.0, "{text}");
}
