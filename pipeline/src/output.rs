//! Where a pipeline's samples go: exactly one of Prometheus remote-write or OTLP, each
//! with headers, authentication (basic, bearer token, OAuth2 client credentials) and TLS
//! (server verification and client certificates). Every credential is a
//! [`ValueSource`], so it can live in a Kubernetes Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::errors::{FieldErrors, field, index, key};
use crate::output_url::{Destination, UrlRule, check_destination};
use crate::policy::{Origin, ValidationContext};
use crate::secret::{StringSource, ValueSource};
use crate::units::parse_duration;

/// How long one send may take before it is abandoned and retried. Prometheus uses 30s
/// for remote-write; long enough for a large batch over a slow link, short enough that a
/// hung connection does not stall the pipeline for minutes.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The OTLP/HTTP path of metrics exports.
pub const METRICS_PATH: &str = "/v1/metrics";

/// Headers the agent sets itself; overriding them would break the protocol. The list is
/// Prometheus' `reservedHeaders` for remote-write, which also holds for OTLP over HTTP.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "te",
    "grpc-timeout",
];

/// The one output of a pipeline. Set exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Output {
    /// Prometheus remote-write (to Thanos receive, Mimir, Cortex, VictoriaMetrics,
    /// Prometheus itself and most vendors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_remote_write: Option<RemoteWriteOutput>,
    /// OpenTelemetry OTLP metrics export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpOutput>,
}

/// A Prometheus remote-write endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteWriteOutput {
    /// The endpoint, e.g. `https://thanos-receive.example:19291/api/v1/receive`, or
    /// `{valueFrom: {secretKeyRef: …}}` to read it from a (service-binding) Secret.
    #[serde(default)]
    pub url: StringSource,
    /// Remote-write protocol version: `1.0` (default) or `2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<RemoteWriteVersion>,
    /// Extra request headers, e.g. a tenant header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// How the agent proves who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// TLS settings; only for `https` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How long one request may take, as a Prometheus duration. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Remote-write protocol versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RemoteWriteVersion {
    /// `prometheus.WriteRequest`, snappy compressed; understood by every receiver.
    #[default]
    #[serde(rename = "1.0")]
    V1,
    /// `io.prometheus.write.v2.Request` with interned strings; opt-in.
    #[serde(rename = "2.0")]
    V2,
}

/// An OTLP metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpOutput {
    /// For `grpc`, `http(s)://host:port` with no path; for `http`, the base URL to which
    /// `/v1/metrics` is appended unless the path already ends with it. Or
    /// `{valueFrom: {secretKeyRef: …}}` to read it from a (service-binding) Secret.
    #[serde(default)]
    pub endpoint: StringSource,
    /// `grpc` (default) or `http` (HTTP/protobuf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (gRPC metadata for `grpc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// How the agent proves who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// TLS settings; only for `https` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How long one export may take, as a Prometheus duration. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// OTLP transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    Http,
}

/// One request header; its value may come from a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// The header name.
    #[serde(default)]
    pub name: String,
    /// Written before the value with a space, e.g. `Api-Token` for
    /// `Authorization: Api-Token <secret>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<crate::secret::SecretString>,
    /// Where to read the value from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<crate::secret::ValueFrom>,
}

/// Credentials; set at most one method.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// A bearer token sent as `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<ValueSource>,
    /// OAuth2 client credentials; the agent fetches and refreshes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2>,
}

/// HTTP basic authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name.
    #[serde(default)]
    pub user: ValueSource,
    /// The password.
    #[serde(default)]
    pub password: ValueSource,
}

/// OAuth2 client-credentials grant (RFC 6749 §4.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2 {
    /// The token endpoint, or `{valueFrom: {secretKeyRef: …}}` to read it from a
    /// (service-binding) Secret.
    #[serde(default)]
    pub token_url: StringSource,
    /// The client id.
    #[serde(default)]
    pub client_id: ValueSource,
    /// The client secret.
    #[serde(default)]
    pub client_secret: ValueSource,
    /// Scopes to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Extra form parameters for the token request, e.g. `audience`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_params: BTreeMap<String, String>,
}

/// TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    /// Skip verifying the server's certificate. Only for testing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// CA certificates (PEM) to verify the server with, instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ValueSource>,
    /// Client certificate (PEM) for mutual TLS; needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<ValueSource>,
    /// Client private key (PEM) for mutual TLS; needs `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ValueSource>,
    /// The name to verify the server certificate against, when it differs from the
    /// URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Present the agent's own cluster certificate (the one the observer's CA issued
    /// it) as the client certificate, instead of `cert` and `key`. Only the provider's
    /// own pipelines may: the receive gateway files what arrives under the cluster
    /// this certificate names.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent_identity: bool,
}

/// A checked output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatedOutput {
    /// Remote-write to `url`.
    RemoteWrite {
        /// The endpoint, or where the agent reads it.
        url: Destination,
        /// The protocol version.
        version: RemoteWriteVersion,
        /// Per-request timeout.
        timeout: Duration,
        /// The output as validated: its headers, credentials and TLS, which the
        /// exporter resolves per request.
        settings: RemoteWriteOutput,
    },
    /// OTLP export to `endpoint`.
    Otlp {
        /// The endpoint (for HTTP, the full URL including `/v1/metrics`), or where the
        /// agent reads it.
        endpoint: Destination,
        /// The transport.
        protocol: OtlpProtocol,
        /// Per-request timeout.
        timeout: Duration,
        /// The output as validated: its headers, credentials and TLS, which the
        /// exporter resolves per request.
        settings: OtlpOutput,
    },
}

impl Output {
    /// Every inline secret value of the output (header values and the `value` of each
    /// credential and TLS source), with its field path relative to the output, e.g.
    /// `prometheusRemoteWrite.authentication.basic.password.value` or
    /// `otlp.headers[1].value`. The paths use the same notation as validation errors,
    /// so prefixed with `spec.output.` they name the field in a pipeline document.
    ///
    /// The observer uses it to seal values before storing them, to open them again, and
    /// to mask them as `***` in API responses.
    pub fn inline_secrets_mut(&mut self) -> Vec<(String, &mut crate::secret::SecretString)> {
        let mut found = Vec::new();
        if let Some(rw) = self.prometheus_remote_write.as_mut() {
            let parts = (&mut rw.headers, &mut rw.authentication, &mut rw.tls);
            endpoint_inline_secrets("prometheusRemoteWrite", parts, &mut found);
        }
        if let Some(otlp) = self.otlp.as_mut() {
            let parts = (&mut otlp.headers, &mut otlp.authentication, &mut otlp.tls);
            endpoint_inline_secrets("otlp", parts, &mut found);
        }
        found
    }

    /// Every Kubernetes Secret key the output refers to (URL, headers, credentials,
    /// TLS), so an agent knows which namespaces' Secrets to watch and the observer which
    /// ones to check.
    pub fn secret_refs(&self) -> Vec<&crate::secret::SecretKeyRef> {
        match (&self.prometheus_remote_write, &self.otlp) {
            (Some(rw), _) => {
                endpoint_secret_refs(&rw.url, &rw.headers, &rw.authentication, &rw.tls)
            }
            (None, Some(otlp)) => endpoint_secret_refs(
                &otlp.endpoint,
                &otlp.headers,
                &otlp.authentication,
                &otlp.tls,
            ),
            (None, None) => Vec::new(),
        }
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedOutput> {
        let rw_path = field(path, "prometheusRemoteWrite");
        let otlp_path = field(path, "otlp");
        match (&self.prometheus_remote_write, &self.otlp) {
            (Some(rw), None) => rw.validate(&rw_path, context, errors),
            (None, Some(otlp)) => otlp.validate_for(&otlp_path, METRICS_PATH, context, errors),
            (Some(rw), Some(otlp)) => {
                // Report what is wrong inside both, so fixing one does not uncover more.
                rw.validate(&rw_path, context, errors);
                otlp.validate_for(&otlp_path, METRICS_PATH, context, errors);
                errors.add(
                    path,
                    "set exactly one of prometheusRemoteWrite or otlp; a pipeline has one \
                     output, create a second pipeline for a second backend",
                );
                None
            }
            (None, None) => {
                errors.add(path, "set exactly one of prometheusRemoteWrite or otlp");
                None
            }
        }
    }
}

/// An endpoint's headers, credentials and TLS settings, borrowed for writing.
pub(crate) type EndpointPartsMut<'a> = (
    &'a mut Vec<Header>,
    &'a mut Option<Authentication>,
    &'a mut Option<Tls>,
);

/// Adds every inline secret value of one endpoint (header values, credentials, TLS
/// material) to `found`, each with its path below `base` (e.g. `otlp.headers[0].value`).
pub(crate) fn endpoint_inline_secrets<'a>(
    base: &str,
    (headers, authentication, tls): EndpointPartsMut<'a>,
    found: &mut Vec<(String, &'a mut crate::secret::SecretString)>,
) {
    let headers_path = field(base, "headers");
    for (i, header) in headers.iter_mut().enumerate() {
        if let Some(value) = header.value.as_mut() {
            found.push((field(&index(&headers_path, i), "value"), value));
        }
    }
    let mut sources: Vec<(String, &mut ValueSource)> = Vec::new();
    if let Some(auth) = authentication.as_mut() {
        let auth_path = field(base, "authentication");
        if let Some(basic) = auth.basic.as_mut() {
            let basic_path = field(&auth_path, "basic");
            sources.push((field(&basic_path, "user"), &mut basic.user));
            sources.push((field(&basic_path, "password"), &mut basic.password));
        }
        if let Some(token) = auth.bearer_token.as_mut() {
            sources.push((field(&auth_path, "bearerToken"), token));
        }
        if let Some(oauth2) = auth.oauth2.as_mut() {
            let oauth_path = field(&auth_path, "oauth2");
            sources.push((field(&oauth_path, "clientId"), &mut oauth2.client_id));
            sources.push((
                field(&oauth_path, "clientSecret"),
                &mut oauth2.client_secret,
            ));
        }
    }
    if let Some(tls) = tls.as_mut() {
        let tls_path = field(base, "tls");
        for (name, source) in [
            ("ca", &mut tls.ca),
            ("cert", &mut tls.cert),
            ("key", &mut tls.key),
        ] {
            if let Some(source) = source.as_mut() {
                sources.push((field(&tls_path, name), source));
            }
        }
    }
    for (path, source) in sources {
        if let Some(value) = source.value.as_mut() {
            found.push((field(&path, "value"), value));
        }
    }
}

/// Every Kubernetes Secret key one endpoint refers to (URL, headers, credentials, TLS).
pub(crate) fn endpoint_secret_refs<'a>(
    url: &'a StringSource,
    headers: &'a [Header],
    authentication: &'a Option<Authentication>,
    tls: &'a Option<Tls>,
) -> Vec<&'a crate::secret::SecretKeyRef> {
    let mut sources: Vec<Option<&crate::secret::ValueFrom>> = vec![url.reference()];
    sources.extend(headers.iter().map(|h| h.value_from.as_ref()));
    if let Some(auth) = authentication {
        if let Some(basic) = &auth.basic {
            sources.push(basic.user.value_from.as_ref());
            sources.push(basic.password.value_from.as_ref());
        }
        sources.push(
            auth.bearer_token
                .as_ref()
                .and_then(|t| t.value_from.as_ref()),
        );
        if let Some(oauth2) = &auth.oauth2 {
            sources.push(oauth2.token_url.reference());
            sources.push(oauth2.client_id.value_from.as_ref());
            sources.push(oauth2.client_secret.value_from.as_ref());
        }
    }
    if let Some(tls) = tls {
        for source in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
            sources.push(source.value_from.as_ref());
        }
    }
    sources
        .into_iter()
        .flatten()
        .filter_map(|from| from.secret_key_ref.as_ref())
        .collect()
}

impl RemoteWriteOutput {
    fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedOutput> {
        let url_path = field(path, "url");
        let url = check_destination(&self.url, UrlRule::AsWritten, &url_path, context, errors);
        let endpoint = Endpoint {
            url: url.as_ref().and_then(Destination::fixed),
            headers: &self.headers,
            authentication: self.authentication.as_ref(),
            tls: self.tls.as_ref(),
            context,
        };
        endpoint.validate(path, errors);
        let timeout = timeout(self.timeout.as_deref(), &field(path, "timeout"), errors);
        Some(ValidatedOutput::RemoteWrite {
            url: url?,
            version: self.protocol_version.unwrap_or_default(),
            timeout,
            settings: self.clone(),
        })
    }
}

impl OtlpOutput {
    /// Checks the output for the signal whose OTLP/HTTP path is `signal_path`
    /// ([`METRICS_PATH`] or `/v1/logs`), which is appended to an HTTP endpoint unless
    /// its path already ends with it.
    pub(crate) fn validate_for(
        &self,
        path: &str,
        signal_path: &'static str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedOutput> {
        let endpoint_path = field(path, "endpoint");
        let protocol = self.protocol.unwrap_or_default();
        let rule = match protocol {
            OtlpProtocol::Grpc => UrlRule::OtlpGrpc,
            OtlpProtocol::Http => UrlRule::OtlpHttp(signal_path),
        };
        let url = check_destination(&self.endpoint, rule, &endpoint_path, context, errors);
        let endpoint = Endpoint {
            url: url.as_ref().and_then(Destination::fixed),
            headers: &self.headers,
            authentication: self.authentication.as_ref(),
            tls: self.tls.as_ref(),
            context,
        };
        endpoint.validate(path, errors);
        let timeout = timeout(self.timeout.as_deref(), &field(path, "timeout"), errors);
        Some(ValidatedOutput::Otlp {
            endpoint: url?,
            protocol,
            timeout,
            settings: self.clone(),
        })
    }
}

pub(crate) fn timeout(text: Option<&str>, path: &str, errors: &mut FieldErrors) -> Duration {
    match text.map(parse_duration) {
        None => DEFAULT_SEND_TIMEOUT,
        Some(Ok(duration)) if !duration.is_zero() => duration,
        Some(Ok(_)) => {
            errors.add(path, "must be longer than 0s");
            DEFAULT_SEND_TIMEOUT
        }
        Some(Err(reason)) => {
            errors.add(path, reason);
            DEFAULT_SEND_TIMEOUT
        }
    }
}

/// The settings remote-write and OTLP share, checked in one place.
pub(crate) struct Endpoint<'a> {
    pub(crate) url: Option<&'a Url>,
    pub(crate) headers: &'a [Header],
    pub(crate) authentication: Option<&'a Authentication>,
    pub(crate) tls: Option<&'a Tls>,
    pub(crate) context: &'a ValidationContext,
}

impl Endpoint<'_> {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let headers_path = field(path, "headers");
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, header) in self.headers.iter().enumerate() {
            let header_path = index(&headers_path, i);
            header.validate(&header_path, self.context, errors);
            let lower = header.name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                errors.add(
                    field(&header_path, "name"),
                    format!(
                        "{:?} is a reserved header set by the agent; it must not be changed",
                        header.name
                    ),
                );
            } else if self.context.policy.reserved_headers.contains(&lower) {
                errors.add(
                    field(&header_path, "name"),
                    format!(
                        "{:?} is reserved by the provider: it decides which tenant data belongs \
                         to, and only the provider's own pipeline sets it",
                        header.name
                    ),
                );
            }
            if lower == "authorization" && self.authentication.is_some() {
                errors.add(
                    field(&header_path, "name"),
                    "an Authorization header conflicts with authentication; use one of them",
                );
            }
            if let Some(first) = seen.insert(lower, i) {
                errors.add(
                    field(&header_path, "name"),
                    format!(
                        "header {:?} is already set by headers[{first}]",
                        header.name
                    ),
                );
            }
        }
        if let Some(auth) = self.authentication {
            auth.validate(&field(path, "authentication"), self.context, errors);
        }
        if let Some(tls) = self.tls {
            let tls_path = field(path, "tls");
            if self.url.is_some_and(|url| url.scheme() == "http") {
                errors.add(
                    &tls_path,
                    "TLS settings need an https URL; the URL uses plain http",
                );
            }
            tls.validate(&tls_path, self.context, errors);
        }
    }
}

impl Header {
    fn validate(&self, path: &str, context: &ValidationContext, errors: &mut FieldErrors) {
        if self.name.is_empty() {
            errors.add(field(path, "name"), "required");
        } else if !self.name.bytes().all(is_token_byte) {
            errors.add(
                field(path, "name"),
                format!(
                    "{:?} is not a valid HTTP header name: use letters, digits and !#$%&'*+-.^_`|~",
                    self.name
                ),
            );
        }
        if let Some(prefix) = &self.prefix
            && (prefix.is_empty() || prefix.bytes().any(|b| b.is_ascii_control()))
        {
            errors.add(
                field(path, "prefix"),
                "must be non-empty printable text when set",
            );
        }
        let source = ValueSource {
            value: self.value.clone(),
            value_from: self.value_from.clone(),
        };
        source.validate(path, context, errors);
        if let Some(value) = source.inline_value()
            && value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
        {
            errors.add(
                field(path, "value"),
                "contains a control character (such as a line break), which HTTP headers cannot \
                 carry",
            );
        }
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Authentication {
    fn validate(&self, path: &str, context: &ValidationContext, errors: &mut FieldErrors) {
        let set: Vec<&str> = [
            ("basic", self.basic.is_some()),
            ("bearerToken", self.bearer_token.is_some()),
            ("oauth2", self.oauth2.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        match set.len() {
            0 => errors.add(path, "set one of basic, bearerToken or oauth2"),
            1 => {}
            _ => errors.add(
                path,
                format!(
                    "set only one of basic, bearerToken or oauth2; found {}",
                    set.join(" and ")
                ),
            ),
        }
        if let Some(basic) = &self.basic {
            let basic_path = field(path, "basic");
            basic
                .user
                .validate(&field(&basic_path, "user"), context, errors);
            basic
                .password
                .validate(&field(&basic_path, "password"), context, errors);
        }
        if let Some(token) = &self.bearer_token {
            token.validate(&field(path, "bearerToken"), context, errors);
        }
        if let Some(oauth2) = &self.oauth2 {
            let oauth_path = field(path, "oauth2");
            let token_path = field(&oauth_path, "tokenUrl");
            let rule = UrlRule::TokenEndpoint;
            check_destination(&oauth2.token_url, rule, &token_path, context, errors);
            oauth2
                .client_id
                .validate(&field(&oauth_path, "clientId"), context, errors);
            oauth2
                .client_secret
                .validate(&field(&oauth_path, "clientSecret"), context, errors);
            for (i, scope) in oauth2.scopes.iter().enumerate() {
                if scope.is_empty() || scope.contains(char::is_whitespace) {
                    errors.add(
                        index(&field(&oauth_path, "scopes"), i),
                        format!(
                            "{scope:?} is not a scope: scopes are non-empty and have no spaces"
                        ),
                    );
                }
            }
            for name in oauth2.endpoint_params.keys() {
                if name.is_empty() {
                    errors.add(
                        key(&field(&oauth_path, "endpointParams"), name),
                        "parameter names must not be empty",
                    );
                }
            }
        }
    }
}

impl Tls {
    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        if self.agent_identity {
            if !context.policy.agent_identity || context.origin == Origin::InCluster {
                errors.add(
                    field(path, "agentIdentity"),
                    "only the provider's own pipelines may present the agent's cluster certificate",
                );
            }
            if self.cert.is_some() || self.key.is_some() {
                errors.add(
                    field(path, "agentIdentity"),
                    "the agent's cluster certificate replaces cert and key: set either",
                );
            }
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => errors.add(
                field(path, "key"),
                "a client certificate needs its private key: set key too",
            ),
            (None, Some(_)) => errors.add(
                field(path, "cert"),
                "a private key needs its client certificate: set cert too",
            ),
            _ => {}
        }
        for (name, source, kind) in [
            ("ca", &self.ca, PemKind::Certificates),
            ("cert", &self.cert, PemKind::Certificates),
            ("key", &self.key, PemKind::PrivateKey),
        ] {
            let Some(source) = source else { continue };
            let source_path = field(path, name);
            source.validate(&source_path, context, errors);
            if let Some(pem) = source.inline_value()
                && !pem.is_empty()
                && let Err(reason) = kind.check(pem)
            {
                errors.add(field(&source_path, "value"), reason);
            }
        }
        if let Some(server_name) = &self.server_name
            && rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err()
        {
            errors.add(
                field(path, "serverName"),
                format!("{server_name:?} is not a DNS name or IP address"),
            );
        }
    }
}

enum PemKind {
    Certificates,
    PrivateKey,
}

impl PemKind {
    /// Checks inline PEM without any I/O. The reason never quotes the content.
    fn check(&self, pem: &str) -> Result<(), String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        match self {
            Self::Certificates => {
                let certs: Result<Vec<_>, _> =
                    CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
                match certs {
                    Ok(certs) if !certs.is_empty() => Ok(()),
                    _ => Err(
                        "not a PEM certificate: expected one or more \"-----BEGIN CERTIFICATE-----\" blocks"
                            .into(),
                    ),
                }
            }
            Self::PrivateKey => PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map(|_| ())
                .map_err(|_| {
                    "not a PEM private key: expected a \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \
                     RSA or EC private key block"
                        .into()
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_mut_visits_every_inline_value_with_its_path() {
        let mut output: Output = serde_yaml::from_str(
            r#"
otlp:
  endpoint: https://x.example:4317
  headers:
    - {name: X-Tenant, value: plain}
    - {name: X-Key, valueFrom: {secretKeyRef: {name: h, namespace: a, key: k}}}
    - {name: X-Other, value: other}
  authentication:
    oauth2:
      tokenUrl: https://auth.example/token
      clientId: {value: agent}
      clientSecret: {value: s3cret}
  tls:
    ca: {valueFrom: {secretKeyRef: {name: ca, namespace: c, key: ca.crt}}}
    cert: {value: CERT}
    key: {value: KEY}
"#,
        )
        .unwrap();
        let paths: Vec<(String, String)> = output
            .inline_secrets_mut()
            .into_iter()
            .map(|(path, value)| (path, value.expose().to_owned()))
            .collect();
        let expected = [
            ("otlp.headers[0].value", "plain"),
            ("otlp.headers[2].value", "other"),
            ("otlp.authentication.oauth2.clientId.value", "agent"),
            ("otlp.authentication.oauth2.clientSecret.value", "s3cret"),
            ("otlp.tls.cert.value", "CERT"),
            ("otlp.tls.key.value", "KEY"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(paths, expected);

        for (_, value) in output.inline_secrets_mut() {
            *value = crate::secret::SecretString::new("***");
        }
        let otlp = output.otlp.as_ref().unwrap();
        assert_eq!(otlp.headers[0].value.as_ref().unwrap().expose(), "***");
        assert!(
            otlp.headers[1].value.is_none(),
            "a reference stays a reference"
        );
        let tls = otlp.tls.as_ref().unwrap();
        assert_eq!(
            tls.key.as_ref().unwrap().value.as_ref().unwrap().expose(),
            "***"
        );
        assert!(tls.ca.as_ref().unwrap().value.is_none());
    }

    #[test]
    fn inline_secrets_mut_covers_basic_and_bearer_for_remote_write() {
        let mut basic: Output = serde_yaml::from_str(
            "prometheusRemoteWrite: {url: https://x.example/w, authentication: {basic: {user: {value: u}, password: {value: p}}}}",
        )
        .unwrap();
        let paths: Vec<String> = basic
            .inline_secrets_mut()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            paths,
            [
                "prometheusRemoteWrite.authentication.basic.user.value",
                "prometheusRemoteWrite.authentication.basic.password.value"
            ]
        );
        let mut bearer: Output = serde_yaml::from_str(
            "prometheusRemoteWrite: {url: https://x.example/w, authentication: {bearerToken: {value: t}}}",
        )
        .unwrap();
        let paths: Vec<String> = bearer
            .inline_secrets_mut()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            paths,
            ["prometheusRemoteWrite.authentication.bearerToken.value"]
        );
        assert!(Output::default().inline_secrets_mut().is_empty());
    }

    #[test]
    fn secret_refs_lists_every_referenced_key() {
        let output: Output = serde_yaml::from_str(
            r#"
prometheusRemoteWrite:
  url: https://x.example/write
  headers:
    - {name: X-Tenant, value: plain}
    - {name: X-Key, valueFrom: {secretKeyRef: {name: h, namespace: a, key: k}}}
  authentication:
    basic:
      user: {value: agent}
      password: {valueFrom: {secretKeyRef: {name: p, namespace: b, key: k}}}
  tls:
    ca: {valueFrom: {secretKeyRef: {name: ca, namespace: c, key: ca.crt}}}
"#,
        )
        .unwrap();
        let refs: Vec<(&str, &str)> = output
            .secret_refs()
            .iter()
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(refs, [("a", "h"), ("b", "p"), ("c", "ca")]);
    }
}
