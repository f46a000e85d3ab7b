//! Where a log pipeline's records go: exactly one of OTLP, Loki's push API, or an HTTP
//! endpoint taking JSON lines or the Elasticsearch/OpenSearch bulk API. Headers,
//! authentication, TLS and timeouts are the metric outputs' ([`crate::output`]), checked
//! by the same code; every credential is a [`crate::secret::ValueSource`].

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index};
use crate::output::{
    Authentication, Endpoint, EndpointPartsMut, Header, OtlpOutput, OtlpProtocol, Tls,
    ValidatedOutput, endpoint_inline_secrets, endpoint_secret_refs, timeout,
};
use crate::output_url::{Destination, UrlRule, check_destination};
use crate::policy::ValidationContext;
use crate::secret::{SecretKeyRef, SecretString, StringSource};

/// The OTLP/HTTP path of log exports.
pub const LOGS_PATH: &str = "/v1/logs";
/// The path of Loki's push API, appended to a Loki URL that does not end with it.
pub const LOKI_PUSH_PATH: &str = "/loki/api/v1/push";
/// The header Loki (and Mimir, Cortex) read the tenant from; set through `tenantId`.
pub const LOKI_TENANT_HEADER: &str = "X-Scope-OrgID";
/// Most stream labels: Loki's default `max_label_names_per_series`, beyond which it
/// refuses every push.
pub const MAX_LOKI_STREAM_LABELS: usize = 15;
/// Record attributes that may become Loki stream labels: each has few values per
/// cluster, so streams stay few and long. Others go as structured metadata.
pub const LOKI_STREAM_LABEL_ALLOW_LIST: &[&str] = &[
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.node.name",
    "k8s.pod.name",
    "k8s.container.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "service.name",
    "service.namespace",
    "log.iostream",
    "severity_text",
];
/// Attributes refused as stream labels by name: each value makes a new stream, which
/// Loki indexes and keeps in memory (its "cardinality" problem).
pub const HIGH_CARDINALITY_ATTRIBUTES: &[&str] = &[
    "k8s.pod.uid",
    "k8s.container.restart_count",
    "trace_id",
    "span_id",
    "log.file.path",
];
/// Stream labels when a Loki output lists none.
pub const DEFAULT_LOKI_STREAM_LABELS: &[&str] = &[
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
];
/// Longest Loki tenant ID (Cortex' and Loki's `MaxTenantIDLength`).
pub const MAX_LOKI_TENANT_ID_LEN: usize = 150;
/// The bulk API index when none is given: one index a day, as Logstash and Fluent
/// Bit's `logstash_format` name them, so old days can be deleted whole.
pub const DEFAULT_BULK_INDEX: &str = "logs-%Y.%m.%d";
/// The bulk API's path, appended to an `elasticsearchBulk` URL that does not end with it.
pub const BULK_PATH: &str = "/_bulk";
/// Longest Elasticsearch index name in bytes.
const MAX_INDEX_NAME_LEN: usize = 255;

/// The one output of a log pipeline. Set exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogOutput {
    /// OpenTelemetry OTLP logs export, as the metric pipeline's OTLP output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpOutput>,
    /// Grafana Loki's push API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki: Option<LokiOutput>,
    /// An HTTP endpoint: JSON lines, or the Elasticsearch/OpenSearch bulk API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpLogOutput>,
}

/// A Loki push endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LokiOutput {
    /// Loki's base URL or its push URL, e.g. `https://loki.example`;
    /// `/loki/api/v1/push` is appended unless the path ends with it. Or
    /// `{valueFrom: {secretKeyRef: …}}` to read it from a (service-binding) Secret.
    #[serde(default)]
    pub url: StringSource,
    /// The tenant, sent as `X-Scope-OrgID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Attributes that become stream labels (at most 15, from an allow-list); the
    /// other attributes go as structured metadata. Default: cluster, namespace, pod and
    /// container names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// How the agent proves who it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// TLS settings; only for `https` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// How long one push may take, as a Prometheus duration. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// An HTTP log endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpLogOutput {
    /// The endpoint; for `elasticsearchBulk`, the cluster's URL or its `/_bulk` URL.
    /// Or `{valueFrom: {secretKeyRef: …}}` to read it from a (service-binding) Secret.
    #[serde(default)]
    pub url: StringSource,
    /// `jsonLines` (default) or `elasticsearchBulk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<HttpLogFormat>,
    /// The bulk API's index, with the record's UTC date by `%Y`, `%m`, `%d`, `%H` and
    /// its namespace by `%N`. Default `logs-%Y.%m.%d`. Only for `elasticsearchBulk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Replace `.` and `/` with `_` in pod label and annotation keys, as Elasticsearch
    /// and OpenSearch need. Default `true` for `elasticsearchBulk`, `false` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedot: Option<bool>,
    /// Extra request headers.
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

/// The body an HTTP log output sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HttpLogFormat {
    /// One JSON object per record and line (`application/x-ndjson`).
    #[default]
    JsonLines,
    /// The Elasticsearch/OpenSearch bulk API: an action line and a document per record.
    ElasticsearchBulk,
}

/// A checked log output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidatedLogOutput {
    /// OTLP export.
    Otlp {
        /// The endpoint (for HTTP, the full URL including `/v1/logs`), or where the
        /// agent reads it.
        endpoint: Destination,
        /// The transport.
        protocol: OtlpProtocol,
        /// Per-request timeout.
        timeout: Duration,
        /// The output as validated.
        settings: OtlpOutput,
    },
    /// Loki push.
    Loki {
        /// The push URL, including `/loki/api/v1/push`, or where the agent reads it.
        url: Destination,
        /// The tenant, when set.
        tenant_id: Option<String>,
        /// The attributes that become stream labels.
        labels: Vec<String>,
        /// Per-request timeout.
        timeout: Duration,
        /// The output as validated.
        settings: LokiOutput,
    },
    /// HTTP.
    Http {
        /// The endpoint (with `/_bulk` for the bulk API), or where the agent reads it.
        url: Destination,
        /// The body format.
        format: HttpLogFormat,
        /// The bulk index pattern (`elasticsearchBulk` only).
        index: Option<String>,
        /// Whether label and annotation keys are de-dotted.
        dedot: bool,
        /// Per-request timeout.
        timeout: Duration,
        /// The output as validated.
        settings: HttpLogOutput,
    },
}

impl LogOutput {
    /// Every inline secret value of the output with its path relative to the output,
    /// e.g. `loki.authentication.basic.password.value`; see
    /// [`crate::output::Output::inline_secrets_mut`].
    pub fn inline_secrets_mut(&mut self) -> Vec<(String, &mut SecretString)> {
        let mut found = Vec::new();
        for (base, parts) in self.endpoints_mut() {
            endpoint_inline_secrets(base, parts, &mut found);
        }
        found
    }

    fn endpoints_mut(&mut self) -> Vec<(&'static str, EndpointPartsMut<'_>)> {
        let mut endpoints: Vec<(&'static str, EndpointPartsMut<'_>)> = Vec::new();
        if let Some(o) = self.otlp.as_mut() {
            endpoints.push(("otlp", (&mut o.headers, &mut o.authentication, &mut o.tls)));
        }
        if let Some(o) = self.loki.as_mut() {
            endpoints.push(("loki", (&mut o.headers, &mut o.authentication, &mut o.tls)));
        }
        if let Some(o) = self.http.as_mut() {
            endpoints.push(("http", (&mut o.headers, &mut o.authentication, &mut o.tls)));
        }
        endpoints
    }

    /// Every Kubernetes Secret key the output refers to.
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        if let Some(o) = &self.otlp {
            endpoint_secret_refs(&o.endpoint, &o.headers, &o.authentication, &o.tls)
        } else if let Some(o) = &self.loki {
            endpoint_secret_refs(&o.url, &o.headers, &o.authentication, &o.tls)
        } else if let Some(o) = &self.http {
            endpoint_secret_refs(&o.url, &o.headers, &o.authentication, &o.tls)
        } else {
            Vec::new()
        }
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedLogOutput> {
        let mut outputs = Vec::new();
        if let Some(otlp) = &self.otlp {
            let otlp_path = field(path, "otlp");
            outputs.push(
                match otlp.validate_for(&otlp_path, LOGS_PATH, context, errors) {
                    Some(ValidatedOutput::Otlp {
                        endpoint,
                        protocol,
                        timeout,
                        settings,
                    }) => Some(ValidatedLogOutput::Otlp {
                        endpoint,
                        protocol,
                        timeout,
                        settings,
                    }),
                    _ => None,
                },
            );
        }
        if let Some(loki) = &self.loki {
            outputs.push(loki.validate(&field(path, "loki"), context, errors));
        }
        if let Some(http) = &self.http {
            outputs.push(http.validate(&field(path, "http"), context, errors));
        }
        match outputs.len() {
            1 => outputs.pop().flatten(),
            0 => {
                errors.add(path, "set exactly one of otlp, loki or http");
                None
            }
            _ => {
                errors.add(
                    path,
                    "set exactly one of otlp, loki or http; a pipeline has one output, create a \
                     second pipeline for a second backend",
                );
                None
            }
        }
    }
}

/// Checks an output's URL (absolute http(s), not the provider's receiver, completed by
/// `rule`) and its headers, credentials and TLS as the metric outputs' are checked.
fn check_endpoint(
    (url, rule): (&StringSource, UrlRule),
    (headers, authentication, tls): (&[Header], Option<&Authentication>, Option<&Tls>),
    context: &ValidationContext,
    path: &str,
    errors: &mut FieldErrors,
) -> Option<Destination> {
    let url_path = field(path, "url");
    let url = check_destination(url, rule, &url_path, context, errors);
    Endpoint {
        url: url.as_ref().and_then(Destination::fixed),
        headers,
        authentication,
        tls,
        context,
    }
    .validate(path, errors);
    url
}

impl LokiOutput {
    fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedLogOutput> {
        let parts = (
            self.headers.as_slice(),
            self.authentication.as_ref(),
            self.tls.as_ref(),
        );
        let rule = UrlRule::WithSuffix(LOKI_PUSH_PATH);
        let url = check_endpoint((&self.url, rule), parts, context, path, errors);
        for (i, header) in self.headers.iter().enumerate() {
            if header.name.eq_ignore_ascii_case(LOKI_TENANT_HEADER) {
                errors.add(
                    field(&index(&field(path, "headers"), i), "name"),
                    "set the tenant with tenantId, not as a header",
                );
            }
        }
        if let Some(tenant) = &self.tenant_id {
            check_tenant_id(&field(path, "tenantId"), tenant, context, errors);
        }
        let labels = if self.labels.is_empty() {
            DEFAULT_LOKI_STREAM_LABELS
                .iter()
                .map(|label| (*label).to_owned())
                .collect()
        } else {
            check_stream_labels(&field(path, "labels"), &self.labels, errors);
            self.labels.clone()
        };
        let timeout = timeout(self.timeout.as_deref(), &field(path, "timeout"), errors);
        Some(ValidatedLogOutput::Loki {
            url: url?,
            tenant_id: self.tenant_id.clone(),
            labels,
            timeout,
            settings: self.clone(),
        })
    }
}

/// A Loki tenant ID as Loki accepts it, and only where the provider does not decide
/// the tenant itself.
fn check_tenant_id(
    path: &str,
    tenant: &str,
    context: &ValidationContext,
    errors: &mut FieldErrors,
) {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    if tenant.is_empty()
        || tenant.len() > MAX_LOKI_TENANT_ID_LEN
        || matches!(tenant, "." | "..")
        || !tenant.chars().all(allowed)
    {
        errors.add(
            path,
            format!(
                "{tenant:?} is not a Loki tenant ID: 1 to {MAX_LOKI_TENANT_ID_LEN} letters, \
                 digits and !-_.*'(), not \".\" or \"..\""
            ),
        );
    } else if context
        .policy
        .reserved_headers
        .contains(&LOKI_TENANT_HEADER.to_ascii_lowercase())
    {
        errors.add(
            path,
            "the provider reserves X-Scope-OrgID: it decides which tenant logs belong to, and \
             only the provider's own pipeline sets it",
        );
    }
}

fn check_stream_labels(path: &str, labels: &[String], errors: &mut FieldErrors) {
    if labels.len() > MAX_LOKI_STREAM_LABELS {
        errors.add(
            path,
            format!(
                "{} labels, but Loki accepts at most {MAX_LOKI_STREAM_LABELS} per stream; send \
                 the others as structured metadata (leave them out here)",
                labels.len()
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, label) in labels.iter().enumerate() {
        let label_path = index(path, i);
        if HIGH_CARDINALITY_ATTRIBUTES.contains(&label.as_str()) {
            errors.add(
                label_path,
                format!(
                    "{label:?} has a new value for almost every record, and every value would \
                     make a new Loki stream; it is sent as structured metadata instead"
                ),
            );
        } else if !LOKI_STREAM_LABEL_ALLOW_LIST.contains(&label.as_str()) {
            errors.add(
                label_path,
                format!(
                    "{label:?} is not an attribute allowed as a stream label; use one of {}",
                    LOKI_STREAM_LABEL_ALLOW_LIST.join(", ")
                ),
            );
        } else if !seen.insert(label) {
            errors.add(label_path, format!("label {label:?} is listed twice"));
        }
    }
}

impl HttpLogOutput {
    fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedLogOutput> {
        let parts = (
            self.headers.as_slice(),
            self.authentication.as_ref(),
            self.tls.as_ref(),
        );
        let format = self.format.unwrap_or_default();
        let rule = match format {
            HttpLogFormat::ElasticsearchBulk => UrlRule::WithSuffix(BULK_PATH),
            HttpLogFormat::JsonLines => UrlRule::AsWritten,
        };
        let url = check_endpoint((&self.url, rule), parts, context, path, errors);
        let index_path = field(path, "index");
        let index = match (format, &self.index) {
            (HttpLogFormat::JsonLines, Some(_)) => {
                errors.add(&index_path, "only used with format elasticsearchBulk");
                None
            }
            (HttpLogFormat::JsonLines, None) => None,
            (HttpLogFormat::ElasticsearchBulk, given) => {
                let pattern = given.as_deref().unwrap_or(DEFAULT_BULK_INDEX);
                if let Err(reason) = check_index_pattern(pattern) {
                    errors.add(&index_path, reason);
                }
                Some(pattern.to_owned())
            }
        };
        let timeout = timeout(self.timeout.as_deref(), &field(path, "timeout"), errors);
        Some(ValidatedLogOutput::Http {
            url: url?,
            format,
            index,
            dedot: self
                .dedot
                .unwrap_or(format == HttpLogFormat::ElasticsearchBulk),
            timeout,
            settings: self.clone(),
        })
    }
}

/// Longest namespace a `%N` of an index pattern is filled with: a Kubernetes
/// namespace name (a DNS label) is at most this long.
pub const MAX_INDEX_NAMESPACE_LEN: usize = 63;

/// What a bulk index pattern is filled with for one record: its UTC date and hour and
/// its namespace (already a DNS label of at most [`MAX_INDEX_NAMESPACE_LEN`]).
#[derive(Clone, Copy, Debug)]
pub struct IndexFill<'a> {
    /// Year, `%Y`.
    pub year: i64,
    /// Month 1 to 12, `%m`.
    pub month: u32,
    /// Day of the month, `%d`.
    pub day: u32,
    /// Hour 0 to 23, `%H`.
    pub hour: u32,
    /// Namespace, `%N`.
    pub namespace: &'a str,
}

/// A bulk index pattern filled in: `%Y %m %d %H` the date, `%N` the namespace, `%%` a
/// `%`; any other specifier is refused, saying which.
pub fn fill_index_pattern(pattern: &str, fill: &IndexFill<'_>) -> Result<String, String> {
    let mut name = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            name.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => name.push_str(&format!("{:04}", fill.year)),
            Some('m') => name.push_str(&format!("{:02}", fill.month)),
            Some('d') => name.push_str(&format!("{:02}", fill.day)),
            Some('H') => name.push_str(&format!("{:02}", fill.hour)),
            Some('N') => name.push_str(fill.namespace),
            Some('%') => name.push('%'),
            other => {
                let shown = other.map(String::from).unwrap_or_default();
                return Err(format!(
                    "{pattern:?} has the unknown specifier %{shown}; use %Y, %m, %d or %H for \
                     the date, %N for the namespace"
                ));
            }
        }
    }
    Ok(name)
}

/// Checks a bulk index pattern: specifiers as [`fill_index_pattern`] knows them, and a
/// name Elasticsearch and OpenSearch accept once they are filled in (with the longest
/// namespace, so no record's index can be too long).
pub fn check_index_pattern(pattern: &str) -> Result<(), String> {
    let longest = "n".repeat(MAX_INDEX_NAMESPACE_LEN);
    let fill = IndexFill {
        year: 2026,
        month: 1,
        day: 1,
        hour: 0,
        namespace: &longest,
    };
    let name = fill_index_pattern(pattern, &fill)?;
    let forbidden = |c: char| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c);
    if name.is_empty()
        || name.len() > MAX_INDEX_NAME_LEN
        || matches!(name.as_str(), "." | "..")
        || name.starts_with(['-', '_', '+'])
        || name.chars().any(forbidden)
    {
        return Err(format!(
            "{pattern:?} is not an index name: lower case, at most {MAX_INDEX_NAME_LEN} bytes \
             (with %N as a namespace of {MAX_INDEX_NAMESPACE_LEN}), none of \\ / * ? \" < > | , # : \
             or spaces, not starting with -, _ or +"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns() {
        assert_eq!(check_index_pattern("logs-%Y.%m.%d"), Ok(()));
        assert_eq!(check_index_pattern("logs-%N-%Y"), Ok(()));
        let long = format!(
            "{}-%N",
            "x".repeat(MAX_INDEX_NAME_LEN - MAX_INDEX_NAMESPACE_LEN)
        );
        assert!(
            check_index_pattern(&long).is_err(),
            "too long with a long namespace"
        );
        assert_eq!(check_index_pattern("app-%H%%"), Ok(()));
        assert!(check_index_pattern("logs-%Q").unwrap_err().contains("%Q"));
        assert!(check_index_pattern("logs-%").is_err());
        assert!(check_index_pattern("Logs").is_err());
        assert!(check_index_pattern("_logs").is_err());
        assert!(check_index_pattern("a b").is_err());
    }

    #[test]
    fn inline_secrets_and_refs_cover_every_output() {
        let mut output: LogOutput = serde_yaml::from_str(
            r#"
loki:
  url: https://loki.example
  headers: [{name: X-A, value: a}]
  authentication:
    basic:
      user: {value: u}
      password: {valueFrom: {secretKeyRef: {name: p, namespace: kaas-observer, key: k}}}
"#,
        )
        .unwrap();
        let paths: Vec<String> = output
            .inline_secrets_mut()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            paths,
            [
                "loki.headers[0].value",
                "loki.authentication.basic.user.value"
            ]
        );
        let refs: Vec<&str> = output
            .secret_refs()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(refs, ["p"]);
    }
}
