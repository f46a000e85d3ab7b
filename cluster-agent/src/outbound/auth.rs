//! Credentials for exporters: resolving secret values and producing the
//! `Authorization` header (basic, bearer, or an OAuth2 client-credentials token).
//!
//! Secret values are resolved on every request, so a rotated Kubernetes Secret or file
//! takes effect with the next request and no restart. Resolution failures keep the data
//! in the buffer (they are retryable) and are reported as `SecretMissing`. Every header
//! built from a secret is marked sensitive, and no error quotes a secret. Files are
//! read through [`FileAccess`], which checks the resolved path against the path policy
//! on every read ([`ValueSources`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kaas_pipeline::output::{Authentication, Header, OAuth2};
use kaas_pipeline::output_url::{Destination, UrlRule};
use kaas_pipeline::secret::{SecretString, ValueSource};
use reqwest::header::{HeaderName, HeaderValue};

use super::destination::{BoundUrlRules, TargetUrl};
use crate::files::FileAccess;
use crate::internal_events::{ErrorReason, PipelineStats};

/// Refresh an OAuth2 token this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long a token without a usable `expires_in` is used before fetching a new one.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The longest lifetime believed. A token server answering more (up to `2^64-1`
/// seconds) is asked again after a day, so a revoked client or a rotated secret takes
/// effect within a day, and no deadline computed from the answer can overflow.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The shortest time a token is used. A token server answering 0, a negative or a tiny
/// lifetime would otherwise be asked before every request; this bounds it to one token
/// request per pipeline every 10 seconds.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(10);

/// Where `secretKeyRef` values come from: the Kubernetes Secrets of the cluster, or
/// nothing in standalone mode.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// The value of `key` in Secret `namespace/name`, if it exists.
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString>;
}

/// Where referenced values come from: `secretKeyRef` from the cluster's Secrets,
/// `valueFrom.file` (standalone agents only) through the file policy.
#[derive(Clone, Debug)]
pub struct ValueSources {
    /// `secretKeyRef` values.
    pub secrets: Arc<dyn SecretStore>,
    /// `valueFrom.file` values.
    pub files: Arc<FileAccess>,
    /// The agent's identity directory, for `tls.agentIdentity` (the provider's own
    /// pipelines); `None`: such pipelines fail to send, saying why.
    pub agent_identity_dir: Option<PathBuf>,
    /// The rules URLs read from Secrets are checked under.
    pub bound_urls: BoundUrlRules,
    /// The pipeline whose errors a refused bound URL is reported as, while its last
    /// good URL stays in use; `None` logs the refusal only.
    pub refusals: Option<Arc<PipelineStats>>,
}

impl ValueSources {
    /// Secrets from `secrets`, files through `files`, no agent identity.
    pub fn new(secrets: Arc<dyn SecretStore>, files: Arc<FileAccess>) -> Self {
        Self {
            secrets,
            files,
            agent_identity_dir: None,
            bound_urls: BoundUrlRules::default(),
            refusals: None,
        }
    }

    /// The same sources, reporting refused bound URLs as `stats`' errors.
    pub fn reporting_to(mut self, stats: Arc<PipelineStats>) -> Self {
        self.refusals = Some(stats);
        self
    }

    /// The same sources, with the agent's identity read from `dir`.
    pub fn with_agent_identity(mut self, dir: PathBuf) -> Self {
        self.agent_identity_dir = Some(dir);
        self
    }

    /// No Secrets, files under the default policy: agents outside Kubernetes, tests.
    pub fn without_secrets() -> Self {
        Self::new(Arc::new(NoSecrets), Arc::new(FileAccess::default()))
    }
}

/// A store without Secrets, for agents that run outside Kubernetes.
#[derive(Debug, Default)]
pub struct NoSecrets;

impl SecretStore for NoSecrets {
    fn get(&self, _: &str, _: &str, _: &str) -> Option<SecretString> {
        None
    }
}

/// Why a credential could not be produced. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A referenced Secret or key does not exist.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// A referenced file cannot be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A resolved value cannot be sent in a header.
    #[error("the value for header {0} contains characters a header cannot carry")]
    InvalidHeaderValue(String),
    /// The TLS settings (after resolving their secrets) are unusable.
    #[error("TLS settings unusable: {0}")]
    Tls(String),
    /// A URL read from a Secret is refused (it names the field and the reference,
    /// never the value).
    #[error("{0}")]
    UrlRefused(String),
    /// The OAuth2 token endpoint failed.
    #[error("OAuth2 token request to {url} failed: {reason}")]
    OAuth2 {
        /// The token URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl AuthError {
    /// The status condition reason for this failure.
    pub fn condition_reason(&self) -> ErrorReason {
        match self {
            Self::SecretMissing { .. } | Self::File { .. } => ErrorReason::SecretMissing,
            Self::UrlRefused(_) => ErrorReason::SecretInvalid,
            Self::InvalidHeaderValue(_) | Self::OAuth2 { .. } | Self::Tls(_) => {
                ErrorReason::AuthenticationFailed
            }
        }
    }
}

impl From<AuthError> for super::retry::SendError {
    /// Credentials that cannot be produced now may be fixed (a Secret created, rotated):
    /// keep the data and retry.
    fn from(error: AuthError) -> Self {
        Self::Retryable {
            reason: error.to_string(),
            retry_after: None,
            condition: error.condition_reason(),
        }
    }
}

/// Resolves a value: inline, from a file (checked by the file policy), or from a
/// Kubernetes Secret.
pub fn resolve(source: &ValueSource, sources: &ValueSources) -> Result<SecretString, AuthError> {
    if let Some(value) = &source.value {
        return Ok(value.clone());
    }
    let from = source.value_from.as_ref();
    if let Some(path) = from.and_then(|f| f.file.as_ref()) {
        return sources
            .files
            .read_to_string(path)
            .map(|text| SecretString::new(text.trim_end_matches(['\n', '\r'])))
            .map_err(|e| AuthError::File {
                path: path.clone(),
                reason: e.to_string(),
            });
    }
    match from.and_then(|f| f.secret_key_ref.as_ref()) {
        Some(r) => sources
            .secrets
            .get(&r.namespace, &r.name, &r.key)
            .ok_or_else(|| AuthError::SecretMissing {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        // Validation guarantees one source; an empty one resolves to nothing usable.
        None => Err(AuthError::File {
            path: String::new(),
            reason: "no value source given".into(),
        }),
    }
}

fn sensitive_header(name: &str, value: &str) -> Result<HeaderValue, AuthError> {
    let mut header =
        HeaderValue::from_str(value).map_err(|_| AuthError::InvalidHeaderValue(name.to_owned()))?;
    header.set_sensitive(true);
    Ok(header)
}

/// The configured extra headers, resolved now.
pub fn resolve_headers(
    headers: &[Header],
    sources: &ValueSources,
) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
    headers
        .iter()
        .map(|header| {
            let source = ValueSource {
                value: header.value.clone(),
                value_from: header.value_from.clone(),
            };
            let value = resolve(&source, sources)?;
            let text = match &header.prefix {
                Some(prefix) => format!("{prefix} {}", value.expose()),
                None => value.expose().to_owned(),
            };
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| AuthError::InvalidHeaderValue(header.name.clone()))?;
            Ok((name, sensitive_header(&header.name, &text)?))
        })
        .collect()
}

/// Produces the `Authorization` header for one exporter.
pub struct Credentials {
    method: Method,
    sources: ValueSources,
}

enum Method {
    None,
    Basic {
        user: ValueSource,
        password: ValueSource,
    },
    Bearer(ValueSource),
    /// Boxed: the client with its token cache is far larger than the other methods.
    OAuth2(Box<OAuth2Client>),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match &self.method {
            Method::None => "none",
            Method::Basic { .. } => "basic",
            Method::Bearer(_) => "bearer",
            Method::OAuth2(_) => "oauth2",
        };
        f.debug_struct("Credentials")
            .field("method", &method)
            .finish()
    }
}

impl Credentials {
    /// Credentials for `authentication`; `http` is used for OAuth2 token requests.
    pub fn new(
        authentication: Option<&Authentication>,
        http: reqwest::Client,
        sources: ValueSources,
    ) -> Self {
        let method = match authentication {
            Some(Authentication {
                basic: Some(basic), ..
            }) => Method::Basic {
                user: basic.user.clone(),
                password: basic.password.clone(),
            },
            Some(Authentication {
                bearer_token: Some(token),
                ..
            }) => Method::Bearer(token.clone()),
            Some(Authentication {
                oauth2: Some(config),
                ..
            }) => Method::OAuth2(Box::new(OAuth2Client {
                config: config.clone(),
                bound_token_url: config.token_url.reference().map(|source| {
                    let destination = Destination::Bound {
                        source: source.clone(),
                        rule: UrlRule::TokenEndpoint,
                        path: "authentication.oauth2.tokenUrl".into(),
                    };
                    TargetUrl::new(destination, sources.clone())
                }),
                http,
                cached: tokio::sync::Mutex::new(None),
            })),
            _ => Method::None,
        };
        Self { method, sources }
    }

    /// The `Authorization` header value for the next request, if any.
    pub async fn authorization(&self) -> Result<Option<HeaderValue>, AuthError> {
        let value = match &self.method {
            Method::None => return Ok(None),
            Method::Basic { user, password } => {
                let user = resolve(user, &self.sources)?;
                let password = resolve(password, &self.sources)?;
                format!("Basic {}", basic_token(user.expose(), password.expose()))
            }
            Method::Bearer(token) => {
                format!("Bearer {}", resolve(token, &self.sources)?.expose())
            }
            Method::OAuth2(client) => {
                format!("Bearer {}", client.token(&self.sources).await?.expose())
            }
        };
        sensitive_header("Authorization", &value).map(Some)
    }
}

fn basic_token(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// An OAuth2 client-credentials client with a cached token.
struct OAuth2Client {
    config: OAuth2,
    /// The token URL when it is read from a Secret.
    bound_token_url: Option<TargetUrl>,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Read as any JSON value: servers send numbers, numeric strings, and worse.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// How long to believe a token whose response said `expires_in`: its number of seconds
/// (a JSON number or a numeric string) within [`MIN_TOKEN_LIFETIME`] and
/// [`MAX_TOKEN_LIFETIME`]; [`DEFAULT_TOKEN_LIFETIME`] when absent or not a number.
fn token_lifetime(expires_in: Option<&serde_json::Value>) -> Duration {
    let seconds = match expires_in {
        Some(serde_json::Value::Number(number)) => number.as_f64(),
        Some(serde_json::Value::String(text)) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    let Some(seconds) = seconds.filter(|s| !s.is_nan()) else {
        return DEFAULT_TOKEN_LIFETIME;
    };
    let (min, max) = (
        MIN_TOKEN_LIFETIME.as_secs_f64(),
        MAX_TOKEN_LIFETIME.as_secs_f64(),
    );
    // Clamped before the conversion, so infinities and 1e300 are simply the maximum.
    Duration::from_secs_f64(seconds.clamp(min, max))
}

/// How long a token of `lifetime` is cached: until [`TOKEN_REFRESH_MARGIN`] before it
/// expires, but at least [`MIN_TOKEN_LIFETIME`].
fn cache_time(lifetime: Duration) -> Duration {
    lifetime
        .saturating_sub(TOKEN_REFRESH_MARGIN)
        .max(MIN_TOKEN_LIFETIME)
}

impl OAuth2Client {
    async fn token(&self, sources: &ValueSources) -> Result<SecretString, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        // A token URL read from a Secret is named by its reference, never shown.
        let shown = self.config.token_url.describe();
        let fail = |reason: String| AuthError::OAuth2 {
            url: shown.clone(),
            reason,
        };
        let url = match (&self.bound_token_url, self.config.token_url.plain()) {
            (Some(bound), _) => bound.current()?.to_string(),
            (None, Some(text)) => text.to_owned(),
            (None, None) => return Err(fail("no token URL".into())),
        };
        let client_id = resolve(&self.config.client_id, sources)?;
        let client_secret = resolve(&self.config.client_secret, sources)?;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if !self.config.scopes.is_empty() {
                form.append_pair("scope", &self.config.scopes.join(" "));
            }
            for (name, value) in &self.config.endpoint_params {
                form.append_pair(name, value);
            }
            form.finish()
        };
        // RFC 6749 §2.3.1: client credentials in HTTP basic auth, form-encoded first.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let authorization = format!(
            "Basic {}",
            basic_token(&encode(client_id.expose()), &encode(client_secret.expose()))
        );
        let response = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(
                reqwest::header::AUTHORIZATION,
                sensitive_header("Authorization", &authorization)?,
            )
            .body(body)
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {}", without_url(&e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(format!("reading the response failed: {}", without_url(&e))))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16())));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| fail("the response is not a token response".into()))?;
        let now = Instant::now();
        let keep = cache_time(token_lifetime(parsed.expires_in.as_ref()));
        let token = SecretString::new(parsed.access_token);
        // `keep` is at most a day, so this cannot overflow; if it did, the token would
        // simply not be cached.
        *cached = now.checked_add(keep).map(|until| (token.clone(), until));
        Ok(token)
    }
}

/// Resolves the secret references of TLS settings.
pub fn tls_material(
    tls: Option<&kaas_pipeline::output::Tls>,
    sources: &ValueSources,
) -> Result<super::tls::TlsMaterial, AuthError> {
    let Some(tls) = tls else {
        return Ok(super::tls::TlsMaterial::default());
    };
    let get =
        |source: &Option<ValueSource>| source.as_ref().map(|s| resolve(s, sources)).transpose();
    let (cert_pem, key_pem) = if tls.agent_identity {
        let (cert, key) = agent_identity(sources)?;
        (Some(cert), Some(key))
    } else {
        (get(&tls.cert)?, get(&tls.key)?)
    };
    Ok(super::tls::TlsMaterial {
        ca_pem: get(&tls.ca)?,
        cert_pem,
        key_pem,
        insecure_skip_verify: tls.insecure_skip_verify,
        server_name: tls.server_name.clone(),
    })
}

/// The agent's own client certificate and key (`tls.agentIdentity`), read at every
/// use so that a renewed certificate is presented from the next request on.
fn agent_identity(sources: &ValueSources) -> Result<(SecretString, SecretString), AuthError> {
    let Some(dir) = &sources.agent_identity_dir else {
        return Err(AuthError::Tls(
            "tls.agentIdentity needs the identity of an agent joined to an observer".into(),
        ));
    };
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(SecretString::new)
            .map_err(|e| AuthError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    };
    Ok((
        read(crate::files::IDENTITY_CERT_FILE)?,
        read(crate::files::IDENTITY_KEY_FILE)?,
    ))
}

/// A reqwest error's text without its URL (which could carry query secrets).
pub fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::secret::{SecretKeyRef, ValueFrom};

    use super::*;

    #[derive(Debug)]
    struct OneSecret;

    impl SecretStore for OneSecret {
        fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
            (namespace == "ns" && name == "creds" && key == "token")
                .then(|| SecretString::new("from-k8s"))
        }
    }

    fn one_secret() -> ValueSources {
        ValueSources::new(Arc::new(OneSecret), Arc::new(FileAccess::default()))
    }

    fn reference(key: &str) -> ValueSource {
        ValueSource {
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: Some(SecretKeyRef {
                    name: "creds".into(),
                    namespace: "ns".into(),
                    key: key.into(),
                }),
                file: None,
            }),
        }
    }

    #[test]
    fn agent_identity_presents_the_agents_own_certificate_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let tls = kaas_pipeline::output::Tls {
            agent_identity: true,
            ..kaas_pipeline::output::Tls::default()
        };
        // Outside an observer-connected agent there is no identity to present.
        let error = tls_material(Some(&tls), &one_secret()).unwrap_err();
        assert!(error.to_string().contains("tls.agentIdentity"), "{error}");
        let sources = one_secret().with_agent_identity(dir.path().to_owned());
        let error = tls_material(Some(&tls), &sources).unwrap_err();
        assert!(matches!(error, AuthError::File { .. }), "{error}");

        std::fs::write(dir.path().join(crate::files::IDENTITY_CERT_FILE), "CERT").unwrap();
        std::fs::write(dir.path().join(crate::files::IDENTITY_KEY_FILE), "KEY").unwrap();
        let material = tls_material(Some(&tls), &sources).unwrap();
        assert_eq!(material.cert_pem.unwrap().expose(), "CERT");
        assert_eq!(material.key_pem.unwrap().expose(), "KEY");
        // Without the flag the identity stays unread.
        let plain = tls_material(Some(&kaas_pipeline::output::Tls::default()), &sources).unwrap();
        assert!(plain.cert_pem.is_none() && plain.key_pem.is_none());
    }

    /// Issue 13, finding 10 (OAuth2 lifetimes clamped): whatever `expires_in` a token
    /// server answers, the lifetime lies between the named bounds and the cache
    /// deadline is computed without overflow. On 552c13e `2^64-1` panicked on
    /// `Instant + Duration`, negative and string values failed the token request, and
    /// 0 fetched a token for every request.
    #[test]
    fn token_lifetimes_are_clamped_to_the_named_bounds() {
        use serde_json::json;
        let cases = [
            (Some(json!(3600)), Duration::from_secs(3600)),
            (Some(json!(u64::MAX)), MAX_TOKEN_LIFETIME),
            (Some(json!(1e300)), MAX_TOKEN_LIFETIME),
            (Some(json!("18446744073709551615")), MAX_TOKEN_LIFETIME),
            (Some(json!(0)), MIN_TOKEN_LIFETIME),
            (Some(json!(-1)), MIN_TOKEN_LIFETIME),
            (Some(json!(i64::MIN)), MIN_TOKEN_LIFETIME),
            (Some(json!(" 120 ")), Duration::from_secs(120)),
            (Some(json!(90.5)), Duration::from_secs_f64(90.5)),
            (Some(json!("soon")), DEFAULT_TOKEN_LIFETIME),
            (Some(json!({"seconds": 5})), DEFAULT_TOKEN_LIFETIME),
            (Some(json!(null)), DEFAULT_TOKEN_LIFETIME),
            (None, DEFAULT_TOKEN_LIFETIME),
        ];
        for (expires_in, expected) in cases {
            let lifetime = token_lifetime(expires_in.as_ref());
            assert_eq!(lifetime, expected, "{expires_in:?}");
            let keep = cache_time(lifetime);
            assert!(
                (MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&keep),
                "{expires_in:?}: {keep:?}"
            );
            assert!(Instant::now().checked_add(keep).is_some());
        }
        assert_eq!(
            cache_time(Duration::from_secs(3600)),
            Duration::from_secs(3600) - TOKEN_REFRESH_MARGIN
        );
    }

    #[test]
    fn values_resolve_from_each_source_and_files_follow_rotation() {
        assert_eq!(
            resolve(&ValueSource::inline("x"), &ValueSources::without_secrets())
                .unwrap()
                .expose(),
            "x"
        );
        assert_eq!(
            resolve(&reference("token"), &one_secret())
                .unwrap()
                .expose(),
            "from-k8s"
        );
        let missing = resolve(&reference("nope"), &one_secret()).unwrap_err();
        assert_eq!(missing.to_string(), "Secret ns/creds has no key \"nope\"");
        assert_eq!(missing.condition_reason(), ErrorReason::SecretMissing);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = ValueSource {
            value: None,
            value_from: Some(ValueFrom {
                secret_key_ref: None,
                file: Some(path.display().to_string()),
            }),
        };
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(
            resolve(&source, &ValueSources::without_secrets())
                .unwrap()
                .expose(),
            "first"
        );
        std::fs::write(&path, "second\n").unwrap();
        assert_eq!(
            resolve(&source, &ValueSources::without_secrets())
                .unwrap()
                .expose(),
            "second"
        );
    }

    #[tokio::test]
    async fn basic_and_bearer_headers_are_sensitive() {
        let basic = Authentication {
            basic: Some(kaas_pipeline::output::BasicAuth {
                user: ValueSource::inline("agent"),
                password: ValueSource::inline("s3cret"),
            }),
            ..Default::default()
        };
        let client = || crate::outbound::tls::http_client(&Default::default()).unwrap();
        let credentials = Credentials::new(Some(&basic), client(), ValueSources::without_secrets());
        let header = credentials.authorization().await.unwrap().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(
            header.to_str().unwrap(),
            format!("Basic {}", basic_token("agent", "s3cret"))
        );
        assert!(!format!("{header:?}").contains("s3cret"));
        assert!(!format!("{credentials:?}").contains("s3cret"));

        let bearer = Authentication {
            bearer_token: Some(reference("token")),
            ..Default::default()
        };
        let credentials = Credentials::new(Some(&bearer), client(), one_secret());
        let header = credentials.authorization().await.unwrap().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer from-k8s");
    }
}
