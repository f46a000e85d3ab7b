//! Where a trace pipeline's spans come from: spans pushed to the agent over OTLP (gRPC
//! 4317, HTTP 4318; on by default) and as Zipkin v2 JSON (9411; opt-in, for meshes and
//! applications that still emit it). Both protocols share one namespace filter and one
//! way of authenticating pushers, exactly the metric and log push inputs' rules: a
//! trace pipeline's inputs validate to the same [`PushInput`] the agent's push
//! receivers already serve.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field};
use crate::input::{NamespaceSelector, PushAuthentication, PushInput};
use crate::policy::ValidationContext;

/// The port the agent takes Zipkin v2 JSON on (`POST /api/v2/spans`): Zipkin's own
/// default, which Istio, Envoy and the Zipkin libraries send to unless told otherwise.
pub const ZIPKIN_PORT: u16 = 9411;
/// The path Zipkin v2 senders post JSON span lists to.
pub const ZIPKIN_SPANS_PATH: &str = "/api/v2/spans";

/// The pipeline's inputs: which protocols, from which namespaces, authenticated how.
/// At least one protocol must be on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceInput {
    /// OTLP over gRPC (4317) and HTTP (4318, protobuf and JSON). On unless
    /// `enabled: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<ProtocolSwitch>,
    /// Zipkin v2 JSON (`POST /api/v2/spans` on 9411), converted to OTLP. Off unless
    /// `enabled: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ProtocolSwitch>,
    /// Which namespaces to take spans from, by the authenticated sender's namespace;
    /// system namespaces are left out unless `system: true` or listed in `include`.
    #[serde(default, skip_serializing_if = "crate::pipeline::is_default")]
    pub namespaces: NamespaceSelector,
    /// How senders prove who they are, for both protocols; service-account tokens
    /// when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PushAuthentication>,
}

/// Switches one protocol on or off; its default depends on the protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolSwitch {
    /// Whether the protocol is on: by default `true` for `otlp`, `false` for `zipkin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The protocols that are on, each as the push input the agent's receivers serve
/// (enabled, with the pipeline's namespaces and authentication).
#[derive(Clone, Debug, Default)]
pub struct ValidatedTraceInputs {
    /// OTLP, when on.
    pub otlp: Option<PushInput>,
    /// Zipkin v2 JSON, when on.
    pub zipkin: Option<PushInput>,
}

impl TraceInput {
    /// Whether OTLP is on (the default).
    pub fn otlp_enabled(&self) -> bool {
        self.otlp.as_ref().and_then(|s| s.enabled).unwrap_or(true)
    }

    /// Whether Zipkin is on (off by default).
    pub fn zipkin_enabled(&self) -> bool {
        self.zipkin
            .as_ref()
            .and_then(|s| s.enabled)
            .unwrap_or(false)
    }

    /// The push input both protocols share.
    fn push_input(&self) -> PushInput {
        PushInput {
            enabled: true,
            namespaces: self.namespaces.clone(),
            authentication: self.authentication.clone(),
        }
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> ValidatedTraceInputs {
        let (otlp, zipkin) = (self.otlp_enabled(), self.zipkin_enabled());
        if !otlp && !zipkin {
            errors.add(
                path,
                "no input is enabled: OTLP is switched off and Zipkin was not switched on; \
                 enable at least one",
            );
        }
        if self.zipkin.as_ref().is_some_and(|s| s.enabled.is_none()) {
            errors.add(
                field(path, "zipkin"),
                "zipkin is off unless enabled: true; say enabled: true (or remove zipkin)",
            );
        }
        let push = self.push_input();
        push.validate(path, context, errors);
        ValidatedTraceInputs {
            otlp: otlp.then(|| push.clone()),
            zipkin: zipkin.then_some(push),
        }
    }
}
