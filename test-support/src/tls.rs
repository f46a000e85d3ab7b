//! Certificates made per test run (a CA, a server certificate for the names a test
//! asks for, a client certificate with CN `cluster-agent`) and nginx terminating mutual
//! TLS with them: it refuses clients without a certificate from the CA and logs each
//! request in a format the test chooses.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::peers::run_nginx;
use crate::process::{ChildGuard, free_port};

/// PEM texts of a test PKI.
pub struct TestPki {
    /// The CA certificate.
    pub ca: String,
    /// The server certificate.
    pub server_cert: String,
    /// Its key.
    pub server_key: String,
    /// The client certificate (CN `cluster-agent`).
    pub client_cert: String,
    /// Its key.
    pub client_key: String,
}

/// Where [`TestPki::write`] put the PEM files.
pub struct TestPkiFiles {
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `server.pem`.
    pub server_cert: PathBuf,
    /// `server.key`.
    pub server_key: PathBuf,
    /// `client.pem`.
    pub client_cert: PathBuf,
    /// `client.key`.
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh CA, a server certificate for `server_names` and a client certificate.
    pub fn generate(server_names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kaas test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let names = server_names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<Vec<_>>();
        let server = CertificateParams::new(names)
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let client_key = KeyPair::generate().expect("client key");
        let mut client_params =
            CertificateParams::new(Vec::<String>::new()).expect("client params");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "cluster-agent");
        let client = client_params
            .signed_by(&client_key, &issuer)
            .expect("client certificate");
        Self {
            ca: ca.pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    /// Writes every PEM into `dir`.
    pub fn write(&self, dir: &Path) -> TestPkiFiles {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPkiFiles {
            ca: write("ca.pem", &self.ca),
            server_cert: write("server.pem", &self.server_cert),
            server_key: write("server.key", &self.server_key),
            client_cert: write("client.pem", &self.client_cert),
            client_key: write("client.key", &self.client_key),
        }
    }
}

/// nginx on loopback requiring a client certificate from the test CA.
pub struct MtlsNginx {
    /// The TLS port.
    pub port: u16,
    /// One line per request, in the test's `log_format`.
    pub access_log: PathBuf,
    _guard: ChildGuard,
}

impl MtlsNginx {
    /// Starts nginx in `dir` with `pki`'s server certificate, logging each request as
    /// `log_format` (nginx variables, e.g. `$request $status $ssl_client_verify`) and
    /// answering as `location` says (the body of `location / { … }`, e.g.
    /// `return 204;` or `proxy_pass http://127.0.0.1:4318;`).
    pub fn start(dir: &Path, pki: &TestPki, log_format: &str, location: &str) -> Self {
        let files = pki.write(dir);
        let port = free_port();
        let d = dir.display();
        let (cert, key, ca) = (
            files.server_cert.display(),
            files.server_key.display(),
            files.ca.display(),
        );
        let guard = run_nginx(
            dir,
            &format!(
                "  log_format test '{log_format}';\n\
                 server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 ssl_client_certificate {ca};\n    ssl_verify_client on;\n    access_log {d}/access.log test;\n\
                 location / {{ {location} }}\n  }}"
            ),
            &[port],
        );
        Self {
            port,
            access_log: dir.join("access.log"),
            _guard: guard,
        }
    }

    /// The access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

/// A fresh ECDSA P-256 key (PEM) and a certificate signing request for it (PEM), as an
/// agent sends with `Join`; the observer writes the cluster identity itself, so the
/// request's subject is only a readable placeholder.
pub fn agent_key_and_csr() -> (String, String) {
    let key = KeyPair::generate().expect("agent key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "kaas-cluster-agent");
    let csr = params
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .expect("agent CSR");
    (key.serialize_pem(), csr)
}
