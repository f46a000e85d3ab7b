//! The `--otlp-*` flags shared by `observer serve` and `cluster-agent run`, and their
//! validation: parse (clap) → [`OtlpFlags::validate`] (pure, every problem with its flag)
//! → [`OtlpSettings`], the only form the exporter accepts. Header values may hold
//! credentials: they are never printed by `Debug` and never logged.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

/// How often the process's metrics are pushed: Prometheus' default scrape interval, so
/// the pushed series are as fine-grained as the scraped ones.
pub const DEFAULT_PUSH_INTERVAL: &str = "15s";
/// The longest one export may take: OTLP's default exporter timeout
/// (`OTEL_EXPORTER_OTLP_TIMEOUT`). Shortened to the push interval when that is shorter,
/// so exports never pile up.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest push interval accepted: shorter ones would mostly measure the exporter.
pub const MIN_PUSH_INTERVAL: Duration = Duration::from_millis(100);

/// OTLP's two transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (conventionally port 4317); the default, as for pipeline outputs.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (conventionally port 4318); `/v1/metrics`,
    /// `/v1/traces` and `/v1/logs` are appended to the endpoint's path.
    Http,
}

/// The self-telemetry flags, as given.
#[derive(Clone, Default, clap::Args)]
pub struct OtlpFlags {
    /// Also push this process's own metrics, spans and logs to an OTLP receiver, e.g.
    /// http://otel-collector:4317 (gRPC) or https://collector:4318 with
    /// --otlp-protocol=http. /metrics is served either way.
    #[arg(long, env = "KAAS_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The OTLP transport for --otlp-endpoint.
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = OtlpProtocol::Grpc)]
    pub otlp_protocol: OtlpProtocol,
    /// CA certificates (PEM) to trust for an https --otlp-endpoint instead of the
    /// system roots.
    #[arg(long, value_name = "FILE")]
    pub otlp_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS with the OTLP receiver; needs
    /// --otlp-client-key.
    #[arg(long, value_name = "FILE")]
    pub otlp_client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --otlp-client-cert.
    #[arg(long, value_name = "FILE")]
    pub otlp_client_key: Option<PathBuf>,
    /// A header sent with every export, NAME=VALUE (repeatable), e.g. an
    /// `Authorization` or tenant header. Values are never logged; prefer the
    /// environment variable (comma-separated) for credentials, so they stay out of `ps`.
    #[arg(
        long = "otlp-header",
        env = "KAAS_OTLP_HEADERS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    pub otlp_headers: Vec<String>,
    /// How often metrics are pushed; also the longest time a finished span waits.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_PUSH_INTERVAL)]
    pub otlp_push_interval: String,
}

impl fmt::Debug for OtlpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpFlags")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            .field("otlp_ca_file", &self.otlp_ca_file)
            .field("otlp_client_cert", &self.otlp_client_cert)
            .field("otlp_client_key", &self.otlp_client_key)
            .field("otlp_headers", &redacted_names(&self.otlp_headers))
            .field("otlp_push_interval", &self.otlp_push_interval)
            .finish()
    }
}

fn redacted_names(headers: &[String]) -> Vec<String> {
    headers
        .iter()
        .map(|h| format!("{}=<redacted>", h.split('=').next().unwrap_or_default()))
        .collect()
}

/// Validated self-telemetry settings.
#[derive(Clone)]
pub struct OtlpSettings {
    /// The receiver; for HTTP, the base the signal paths are appended to.
    pub endpoint: Url,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// CA bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files (mutual TLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Headers sent with every export; values marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Time between metric pushes (and the longest a finished span waits).
    pub push_interval: Duration,
    /// The longest one export may take.
    pub timeout: Duration,
}

impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("protocol", &self.protocol)
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("push_interval", &self.push_interval)
            .finish()
    }
}

impl OtlpSettings {
    /// Where metrics go: the HTTP signal URL, or the gRPC endpoint.
    pub fn metrics_url(&self) -> Url {
        self.signal_url("v1/metrics")
    }

    /// Where spans go: the HTTP signal URL, or the gRPC endpoint.
    pub fn traces_url(&self) -> Url {
        self.signal_url("v1/traces")
    }

    /// The OTLP/HTTP URL for logs.
    pub fn logs_url(&self) -> Url {
        self.signal_url("v1/logs")
    }

    fn signal_url(&self, path: &str) -> Url {
        let mut url = self.endpoint.clone();
        if self.protocol == OtlpProtocol::Http {
            let base = url.path().trim_end_matches('/').to_owned();
            url.set_path(&format!("{base}/{path}"));
        }
        url
    }
}

/// Every problem with the `--otlp-*` flags, one per line, each naming its flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct SettingsError {
    /// `--flag: what is wrong`.
    pub problems: Vec<String>,
}

impl OtlpFlags {
    /// Checks the flags without touching files or the network. `Ok(None)` when no
    /// endpoint is given (self-telemetry is off, and the other flags must be unset).
    pub fn validate(&self) -> Result<Option<OtlpSettings>, SettingsError> {
        let mut problems = Vec::new();
        let Some(endpoint) = &self.otlp_endpoint else {
            let given = [
                ("otlp-ca-file", self.otlp_ca_file.is_some()),
                ("otlp-client-cert", self.otlp_client_cert.is_some()),
                ("otlp-client-key", self.otlp_client_key.is_some()),
                ("otlp-header", !self.otlp_headers.is_empty()),
            ];
            for (flag, _) in given.iter().filter(|(_, set)| *set) {
                problems.push(format!("--{flag}: needs --otlp-endpoint"));
            }
            return if problems.is_empty() {
                Ok(None)
            } else {
                Err(SettingsError { problems })
            };
        };
        let endpoint = match check_endpoint(endpoint) {
            Ok(url) => Some(url),
            Err(reason) => {
                problems.push(format!("--otlp-endpoint: {reason}"));
                None
            }
        };
        let https = endpoint.as_ref().is_some_and(|u| u.scheme() == "https");
        if self.otlp_ca_file.is_some() && endpoint.is_some() && !https {
            problems.push("--otlp-ca-file: only used with an https --otlp-endpoint".into());
        }
        let client_identity = match (&self.otlp_client_cert, &self.otlp_client_key) {
            (Some(cert), Some(key)) => {
                if endpoint.is_some() && !https {
                    problems.push(
                        "--otlp-client-cert: mutual TLS needs an https --otlp-endpoint".into(),
                    );
                }
                Some((cert.clone(), key.clone()))
            }
            (Some(_), None) => {
                problems.push("--otlp-client-cert: needs --otlp-client-key".into());
                None
            }
            (None, Some(_)) => {
                problems.push("--otlp-client-key: needs --otlp-client-cert".into());
                None
            }
            (None, None) => None,
        };
        let mut headers = Vec::new();
        for (i, header) in self.otlp_headers.iter().enumerate() {
            match parse_header(header) {
                Ok(header) => headers.push(header),
                Err(reason) => problems.push(format!("--otlp-header[{i}]: {reason}")),
            }
        }
        let push_interval = match kaas_pipeline::units::parse_duration(&self.otlp_push_interval) {
            Ok(d) if d < MIN_PUSH_INTERVAL => {
                problems.push(format!(
                    "--otlp-push-interval: {:?} is shorter than the minimum {MIN_PUSH_INTERVAL:?}",
                    self.otlp_push_interval
                ));
                None
            }
            Ok(d) => Some(d),
            Err(reason) => {
                problems.push(format!("--otlp-push-interval: {reason}"));
                None
            }
        };
        match (endpoint, push_interval) {
            (Some(endpoint), Some(push_interval)) if problems.is_empty() => {
                Ok(Some(OtlpSettings {
                    endpoint,
                    protocol: self.otlp_protocol,
                    ca_file: self.otlp_ca_file.clone(),
                    client_identity,
                    headers,
                    push_interval,
                    timeout: DEFAULT_EXPORT_TIMEOUT.min(push_interval),
                }))
            }
            _ => Err(SettingsError { problems }),
        }
    }
}

fn check_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not supported: use http:// or https:// (choose gRPC or HTTP with --otlp-protocol)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in error messages; headers never do.
        return Err("credentials in the URL are refused: use --otlp-header".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".into());
    }
    Ok(url)
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err("expected NAME=VALUE".into());
    };
    let name = name.trim();
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if matches!(
        header.as_str(),
        "content-type" | "content-length" | "te" | "host"
    ) {
        return Err(format!("{name:?} is set by the exporter itself"));
    }
    // Never quote the value: it may be a credential.
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name:?} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok((header, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(endpoint: &str) -> OtlpFlags {
        OtlpFlags {
            otlp_endpoint: Some(endpoint.into()),
            otlp_push_interval: DEFAULT_PUSH_INTERVAL.into(),
            ..OtlpFlags::default()
        }
    }

    #[test]
    fn no_endpoint_means_off_and_no_other_flags() {
        let off = OtlpFlags {
            otlp_push_interval: DEFAULT_PUSH_INTERVAL.into(),
            ..OtlpFlags::default()
        };
        assert!(off.validate().unwrap().is_none());
        let stray = OtlpFlags {
            otlp_headers: vec!["x=y".into()],
            otlp_ca_file: Some("ca.pem".into()),
            ..off
        };
        assert_eq!(
            stray.validate().unwrap_err().problems,
            [
                "--otlp-ca-file: needs --otlp-endpoint",
                "--otlp-header: needs --otlp-endpoint"
            ]
        );
    }

    #[test]
    fn http_signal_paths_are_appended_to_the_base() {
        let mut given = flags("https://collector.example:4318/otlp/");
        given.otlp_protocol = OtlpProtocol::Http;
        let settings = given.validate().unwrap().unwrap();
        assert_eq!(
            settings.metrics_url().as_str(),
            "https://collector.example:4318/otlp/v1/metrics"
        );
        assert_eq!(
            settings.traces_url().as_str(),
            "https://collector.example:4318/otlp/v1/traces"
        );
        let grpc = flags("http://collector:4317").validate().unwrap().unwrap();
        assert_eq!(grpc.traces_url().as_str(), "http://collector:4317/");
        assert_eq!(grpc.timeout, DEFAULT_EXPORT_TIMEOUT);
    }

    /// One rejected input per row, with the message an operator sees.
    #[test]
    fn bad_flags_are_refused_with_their_flag_named() {
        let cases: Vec<(OtlpFlags, &str)> = vec![
            (
                flags("collector:4317"),
                "--otlp-endpoint: scheme \"collector\" is not supported",
            ),
            (
                flags("not a url"),
                "--otlp-endpoint: \"not a url\" is not a URL",
            ),
            (
                flags("http://user:secret@collector:4317"),
                "--otlp-endpoint: credentials in the URL are refused",
            ),
            (
                flags("http://collector:4317/?a=b"),
                "--otlp-endpoint: the URL must not have a query",
            ),
            (
                OtlpFlags {
                    otlp_ca_file: Some("ca.pem".into()),
                    ..flags("http://collector:4317")
                },
                "--otlp-ca-file: only used with an https --otlp-endpoint",
            ),
            (
                OtlpFlags {
                    otlp_client_cert: Some("c.pem".into()),
                    ..flags("https://collector:4317")
                },
                "--otlp-client-cert: needs --otlp-client-key",
            ),
            (
                OtlpFlags {
                    otlp_client_key: Some("k.pem".into()),
                    ..flags("https://collector:4317")
                },
                "--otlp-client-key: needs --otlp-client-cert",
            ),
            (
                OtlpFlags {
                    otlp_headers: vec!["Authorization".into()],
                    ..flags("http://collector:4317")
                },
                "--otlp-header[0]: expected NAME=VALUE",
            ),
            (
                OtlpFlags {
                    otlp_headers: vec!["ok=1".into(), "bad name=x".into()],
                    ..flags("http://collector:4317")
                },
                "--otlp-header[1]: \"bad name\" is not a valid header name",
            ),
            (
                OtlpFlags {
                    otlp_headers: vec!["content-type=text/plain".into()],
                    ..flags("http://collector:4317")
                },
                "--otlp-header[0]: \"content-type\" is set by the exporter itself",
            ),
            (
                OtlpFlags {
                    otlp_push_interval: "soon".into(),
                    ..flags("http://collector:4317")
                },
                "--otlp-push-interval: \"soon\" is not a duration",
            ),
            (
                OtlpFlags {
                    otlp_push_interval: "1ms".into(),
                    ..flags("http://collector:4317")
                },
                "--otlp-push-interval: \"1ms\" is shorter than the minimum",
            ),
        ];
        for (given, expected) in cases {
            let error = given.validate().unwrap_err();
            assert!(
                error.to_string().starts_with(expected),
                "{given:?}: expected {expected:?}, got {error}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let given = OtlpFlags {
            otlp_headers: vec!["x".into()],
            otlp_push_interval: "never".into(),
            ..flags("ftp://collector")
        };
        assert_eq!(given.validate().unwrap_err().problems.len(), 3);
    }

    #[test]
    fn header_values_never_show_in_debug_or_errors() {
        let given = OtlpFlags {
            otlp_headers: vec![
                "Authorization=Bearer s3cr3t".into(),
                "x-bad=\u{7f}s3cr3t".into(),
            ],
            ..flags("http://collector:4317")
        };
        assert!(!format!("{given:?}").contains("s3cr3t"));
        let error = given.validate().unwrap_err().to_string();
        assert!(!error.contains("s3cr3t"), "{error}");
        let good = OtlpFlags {
            otlp_headers: vec!["Authorization=Bearer s3cr3t".into()],
            ..flags("http://collector:4317")
        };
        let settings = good.validate().unwrap().unwrap();
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        assert!(settings.headers[0].1.is_sensitive());
    }
}
