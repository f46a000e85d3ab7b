//! Where an exporter sends: the URL written in the pipeline, or one bound from a Secret
//! key (a service-binding Secret), read for every request.
//!
//! A bound URL is read like every other secret value ([`super::auth::resolve`]), so a
//! rotated Secret moves the next request, without a restart. Each new value is checked
//! with the function the observer checks a URL written in place with
//! ([`Destination::check_resolved`]), under a tenant's rules with the provider's
//! central receivers refused ([`BoundUrlRules`], `--central-endpoints`): a tenant
//! reaches through a Secret nothing it could not reach by writing the URL. A refused
//! value is never contacted. The last value that passed keeps being used, and the
//! refusal is reported once per value as the pipeline's `SecretInvalid` error; with no
//! value that passed yet, sends fail with that error and the data stays buffered.
//!
//! A bound URL is handled as a secret: it may carry a token in its query. Messages,
//! logs and spans name its reference, never its value.

use std::fmt;
use std::sync::{Arc, Mutex};

use kaas_pipeline::output_url::Destination;
use kaas_pipeline::secret::{SecretString, ValueSource};
use kaas_pipeline::{ProviderPolicy, ValidationContext};
use url::Url;

use super::auth::{AuthError, ValueSources, resolve};
use crate::internal_events::{ErrorReason, PipelineFailed};

/// The rules a URL read from a Secret is checked under: a tenant pipeline's (the
/// observer refuses the same URL written in place by these rules), with the provider's
/// central receivers refused (the agent's `--central-endpoints`, which the observer
/// renders from its receivers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundUrlRules(Arc<ValidationContext>);

impl Default for BoundUrlRules {
    /// No central receivers known: an agent without `--central-endpoints`.
    fn default() -> Self {
        Self::refusing(Vec::new())
    }
}

impl BoundUrlRules {
    /// A tenant's rules, refusing `central_endpoints` (by host and port, as the observer
    /// refuses them).
    pub fn refusing(central_endpoints: Vec<Url>) -> Self {
        let mut policy = ProviderPolicy::tenant_default();
        policy.central_endpoints = central_endpoints;
        Self(Arc::new(ValidationContext::observer(policy)))
    }

    /// The validation context bound URLs are checked in.
    pub fn context(&self) -> &ValidationContext {
        &self.0
    }
}

/// An exporter's URL: fixed, or read from its Secret for every request.
pub struct TargetUrl {
    destination: Destination,
    sources: ValueSources,
    state: Mutex<BoundState>,
}

/// What a bound URL's Secret held when it was last read.
#[derive(Default)]
struct BoundState {
    /// The last value read and what it was judged: the URL to send to, or why not.
    last_read: Option<(SecretString, Result<Url, String>)>,
    /// The last URL that passed, used while a newer value is refused.
    last_good: Option<Url>,
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetUrl")
            .field("destination", &self.destination.describe())
            .finish_non_exhaustive()
    }
}

impl From<Url> for TargetUrl {
    /// A fixed URL (tests, and outputs built from a URL written in place).
    fn from(url: Url) -> Self {
        Self::new(Destination::Fixed(url), ValueSources::without_secrets())
    }
}

impl TargetUrl {
    /// The URL of `destination`, a bound one read through `sources`.
    pub fn new(destination: Destination, sources: ValueSources) -> Self {
        Self {
            destination,
            sources,
            state: Mutex::new(BoundState::default()),
        }
    }

    /// The host to name in spans and logs: a fixed URL's, never a bound one's.
    pub fn shown_host(&self) -> &str {
        self.destination
            .fixed()
            .and_then(Url::host_str)
            .unwrap_or("<from Secret>")
    }

    /// The URL for the next request: a fixed one as it is; a bound one as its Secret
    /// holds it now if that passes the checks, else the last one that passed (the
    /// refusal reported once), else an error.
    pub fn current(&self) -> Result<Url, AuthError> {
        let Destination::Bound { source, .. } = &self.destination else {
            return Ok(self
                .destination
                .fixed()
                .cloned()
                .unwrap_or_else(|| unreachable!("a destination that is not bound is fixed")));
        };
        let reference = ValueSource {
            value: None,
            value_from: Some(source.clone()),
        };
        let value = resolve(&reference, &self.sources)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .last_read
            .as_ref()
            .is_none_or(|(seen, _)| *seen != value)
        {
            let judged = self
                .destination
                .check_resolved(value.expose(), self.sources.bound_urls.context());
            match &judged {
                Ok(url) => state.last_good = Some(url.clone()),
                Err(reason) if state.last_good.is_some() => self.report(reason),
                Err(_) => {}
            }
            state.last_read = Some((value, judged));
        }
        match (&state.last_read, &state.last_good) {
            (Some((_, Ok(url))), _) | (Some((_, Err(_))), Some(url)) => Ok(url.clone()),
            (Some((_, Err(reason))), None) => Err(AuthError::UrlRefused(reason.clone())),
            (None, _) => Err(AuthError::UrlRefused("no value read".into())),
        }
    }

    /// Reports a refused value while the last good URL stays in use.
    fn report(&self, reason: &str) {
        let message = format!("{reason}; still sending to the last URL that passed");
        match &self.sources.refusals {
            Some(stats) => PipelineFailed::new(ErrorReason::SecretInvalid, message).emit(stats),
            None => tracing::warn!(reason = %ErrorReason::SecretInvalid, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kaas_pipeline::output_url::UrlRule;
    use kaas_pipeline::secret::{SecretKeyRef, ValueFrom};

    use super::*;
    use crate::files::FileAccess;
    use crate::internal_events::PipelineStats;
    use crate::outbound::auth::SecretStore;

    #[derive(Debug, Default)]
    struct Secrets(Mutex<BTreeMap<String, String>>);

    impl Secrets {
        fn set(&self, value: &str) {
            self.0.lock().unwrap().insert("url".into(), value.into());
        }
    }

    impl SecretStore for Secrets {
        fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
            (namespace == "kaas-observer" && name == "binding")
                .then(|| self.0.lock().unwrap().get(key).map(SecretString::new))
                .flatten()
        }
    }

    fn bound() -> Destination {
        Destination::Bound {
            source: ValueFrom {
                secret_key_ref: Some(SecretKeyRef {
                    name: "binding".into(),
                    namespace: "kaas-observer".into(),
                    key: "url".into(),
                }),
                file: None,
            },
            rule: UrlRule::AsWritten,
            path: "spec.output.prometheusRemoteWrite.url".into(),
        }
    }

    /// What the agent logs while `run` runs.
    fn logged(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A refused value is never used: before any value passed the send fails with
    /// `SecretInvalid`; after, the last good URL stays and the refusal is reported once,
    /// naming the reference and never the value, in the report and in the log.
    #[test]
    fn a_refused_value_keeps_the_last_good_url_and_is_reported_without_its_value() {
        let log = logged(refused_values_keep_the_last_good_url);
        assert!(log.contains("SecretInvalid"), "{log}");
        assert!(log.contains("kaas-observer/binding"), "{log}");
        for leaked in ["s3cret", "127.0.0.1", "provider.example"] {
            assert!(!log.contains(leaked), "{leaked} logged:\n{log}");
        }
    }

    fn refused_values_keep_the_last_good_url() {
        let secrets = Arc::new(Secrets::default());
        let stats = Arc::new(PipelineStats::default());
        let mut sources = ValueSources::new(secrets.clone(), Arc::new(FileAccess::default()));
        sources.bound_urls = BoundUrlRules::refusing(vec![
            Url::parse("https://receive.provider.example:19291").unwrap(),
        ]);
        sources.refusals = Some(stats.clone());
        let target = TargetUrl::new(bound(), sources);
        assert_eq!(target.shown_host(), "<from Secret>");

        let missing = target.current().unwrap_err();
        assert_eq!(missing.condition_reason(), ErrorReason::SecretMissing);

        secrets.set("https://receive.provider.example:19291/api/v1/receive?token=s3cret");
        let refused = target.current().unwrap_err();
        assert_eq!(refused.condition_reason(), ErrorReason::SecretInvalid);
        let text = refused.to_string();
        assert!(text.contains("central receiver"), "{text}");
        assert!(
            text.contains(r#"Secret kaas-observer/binding key "url""#),
            "{text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("provider.example"),
            "{text}"
        );

        secrets.set("http://127.0.0.1:9090/api/v1/write");
        assert_eq!(
            target.current().unwrap().as_str(),
            "http://127.0.0.1:9090/api/v1/write"
        );
        assert!(
            stats.last_error().is_none(),
            "nothing refused while it passes"
        );

        secrets.set("ftp://s3cret.example/");
        for _ in 0..3 {
            assert_eq!(
                target.current().unwrap().as_str(),
                "http://127.0.0.1:9090/api/v1/write",
                "the last good URL stays"
            );
        }
        let error = stats.last_error().expect("the refusal is reported");
        assert_eq!(error.reason, ErrorReason::SecretInvalid);
        assert!(!error.message.contains("s3cret"), "{}", error.message);
        assert_eq!(
            stats.errors_by_reason(),
            [(ErrorReason::SecretInvalid, 1)],
            "once per value"
        );
        assert!(!format!("{target:?}").contains("127.0.0.1"));
    }
}
