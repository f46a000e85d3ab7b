//! Where a trace pipeline's spans go: exactly one OTLP backend, over gRPC or HTTP. It is
//! the metric and log pipelines' [`OtlpOutput`], checked by the same code (headers,
//! authentication, TLS, timeouts, Secret references, the provider's reserved headers
//! and central receiver), with `/v1/traces` as the HTTP path.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};
use crate::output::{
    OtlpOutput, OtlpProtocol, ValidatedOutput, endpoint_inline_secrets, endpoint_secret_refs,
};
use crate::output_url::Destination;
use crate::policy::ValidationContext;
use crate::secret::{SecretKeyRef, SecretString};

/// The OTLP/HTTP path of trace exports.
pub const TRACES_PATH: &str = "/v1/traces";

/// The one output of a trace pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceOutput {
    /// OpenTelemetry OTLP trace export, as the metric pipeline's OTLP output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpOutput>,
}

/// A checked trace output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedTraceOutput {
    /// The endpoint (for HTTP, the full URL including `/v1/traces`), or where the agent
    /// reads it.
    pub endpoint: Destination,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The output as validated: its headers, credentials and TLS, which the exporter
    /// resolves per request.
    pub settings: OtlpOutput,
}

impl TraceOutput {
    /// Every inline secret value of the output with its path relative to the output,
    /// e.g. `otlp.authentication.basic.password.value`; see
    /// [`crate::output::Output::inline_secrets_mut`].
    pub fn inline_secrets_mut(&mut self) -> Vec<(String, &mut SecretString)> {
        let mut found = Vec::new();
        if let Some(o) = self.otlp.as_mut() {
            let parts = (&mut o.headers, &mut o.authentication, &mut o.tls);
            endpoint_inline_secrets("otlp", parts, &mut found);
        }
        found
    }

    /// Every Kubernetes Secret key the output refers to.
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        self.otlp
            .as_ref()
            .map(|o| endpoint_secret_refs(&o.endpoint, &o.headers, &o.authentication, &o.tls))
            .unwrap_or_default()
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> Option<ValidatedTraceOutput> {
        let Some(otlp) = &self.otlp else {
            errors.add(
                path,
                "set otlp: the one backend spans are sent to (a second backend takes a \
                 second pipeline)",
            );
            return None;
        };
        match otlp.validate_for(&field(path, "otlp"), TRACES_PATH, context, errors)? {
            ValidatedOutput::Otlp {
                endpoint,
                protocol,
                timeout,
                settings,
            } => Some(ValidatedTraceOutput {
                endpoint,
                protocol,
                timeout,
                settings,
            }),
            ValidatedOutput::RemoteWrite { .. } => None,
        }
    }
}
