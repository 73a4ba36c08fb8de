//! [`Verifier`]: checks access tokens with public keys only.

use std::time::{Duration, Instant};
use tracing::Instrument as _;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use kernel::Caller;
use tokio::sync::RwLock;
use url::Url;

use crate::{Claims, KeySet, TokenPolicy};

/// Why a token was not accepted. Every variant is a 401 except
/// [`AuthError::KeysUnavailable`] (503: we cannot tell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT, or not a bearer token.
    #[error("the token is malformed")]
    Malformed,
    /// Signed with another algorithm than EdDSA (including `none`).
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The `kid` names no key we trust.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    InvalidSignature,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Wrong `iss`.
    #[error("the token was issued by someone else")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("the token is meant for someone else")]
    WrongAudience,
    /// The user module's keys could not be fetched.
    #[error("the signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// The keys are fetched at most this often, whatever asks (an unknown
/// `kid`, stale keys) and whether the last fetch worked or not.
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How often the keys are fetched again while none are usable.
const REFETCH_UNUSABLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long fetched keys stay usable while the user module cannot be
/// reached: a key it has since removed is trusted that long at most.
const JWKS_MAX_STALE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

enum Source {
    Local(KeySet),
    Remote(std::sync::Arc<RemoteKeys>),
}

/// The user module's keys, fetched over HTTP and cached.
struct RemoteKeys {
    url: Url,
    client: reqwest::Client,
    policy: std::sync::Arc<resilience::Policy>,
    cache: RwLock<Option<Cached>>,
    /// Held by the one task fetching the keys.
    refreshing: tokio::sync::Mutex<()>,
}

/// The remote keys as last fetched.
#[derive(Clone)]
struct Cached {
    keys: KeySet,
    /// When they were fetched (`None`: never; `keys` is then empty).
    fetched: Option<Instant>,
    /// When a fetch was last tried, whether it worked or not.
    tried: Instant,
}

/// What a request's verification does with the cached keys.
enum Need {
    /// Use them.
    Use(KeySet),
    /// Fetch them again; meanwhile `fallback` may serve.
    Refresh { fallback: Option<KeySet> },
    /// None are usable and the last fetch was too recent to try again.
    Unavailable,
}

impl Need {
    /// What `cached` keys are good for, for a token signed with `kid`
    /// (empty: any).
    fn of(cached: Option<&Cached>, kid: &str) -> Need {
        let Some(cached) = cached else {
            return Need::Refresh { fallback: None };
        };
        let knows = kid.is_empty() || cached.keys.get(kid).is_some();
        let age = cached.fetched.map(|at| at.elapsed());
        let usable = age.is_some_and(|age| age < JWKS_MAX_STALE);
        // With no usable keys every token fails: try again sooner.
        let wait = if usable {
            REFETCH_MIN_INTERVAL
        } else {
            REFETCH_UNUSABLE_INTERVAL
        };
        if knows && age.is_some_and(|age| age < JWKS_TTL) {
            Need::Use(cached.keys.clone())
        } else if cached.tried.elapsed() < wait {
            // Tried lately: an unknown key is unknown still (the token
            // fails as signed by an unknown key), stale keys serve until
            // too old.
            if usable {
                Need::Use(cached.keys.clone())
            } else {
                Need::Unavailable
            }
        } else {
            Need::Refresh {
                fallback: (knows && usable).then(|| cached.keys.clone()),
            }
        }
    }
}

/// Verifies access tokens against a key set: a fixed one (the user module
/// is in this process) or the user module's JWKS over HTTP, cached.
pub struct Verifier {
    source: Source,
    validation: Validation,
    /// The keys of service tokens, by `kid`: tokens they sign carry
    /// exactly the `service` role; user keys never sign that role.
    service: Option<KeySet>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Local(keys) => write!(f, "Verifier(local {keys:?})"),
            Source::Remote(remote) => write!(f, "Verifier(remote {})", remote.url),
        }
    }
}

impl Verifier {
    /// Trusts exactly `keys`.
    pub fn local(keys: KeySet, policy: &TokenPolicy) -> Verifier {
        Verifier {
            source: Source::Local(keys),
            validation: validation(policy),
            service: None,
        }
    }

    /// Trusts the keys published at `jwks_url`, fetched through `fetch_policy`.
    pub fn remote(
        jwks_url: Url,
        client: reqwest::Client,
        fetch_policy: std::sync::Arc<resilience::Policy>,
        policy: &TokenPolicy,
    ) -> Verifier {
        Verifier {
            source: Source::Remote(std::sync::Arc::new(RemoteKeys {
                url: jwks_url,
                client,
                policy: fetch_policy,
                cache: RwLock::new(None),
                refreshing: tokio::sync::Mutex::new(()),
            })),
            validation: validation(policy),
            service: None,
        }
    }

    /// Also trusts tokens signed by the service key (see
    /// [`crate::ServiceTokens`]), for the `service` role only.
    #[must_use]
    pub fn with_service_key(self, key: &crate::SigningKey) -> Verifier {
        self.with_service_keys(&KeySet::from_jwks(crate::JwkSet {
            keys: vec![key.public_jwk().clone()],
        }))
    }

    /// Also trusts tokens signed by any of `keys` (every service key a
    /// deployment accepts, [`crate::ServiceTokens::accepted`]), for the
    /// `service` role only.
    #[must_use]
    pub fn with_service_keys(mut self, keys: &KeySet) -> Verifier {
        self.service = Some(keys.clone());
        self
    }

    /// The caller a valid token names.
    ///
    /// # Errors
    /// [`AuthError`] saying what is wrong with the token.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        // Look at `alg` before anything else: `none` or an HMAC algorithm is
        // refused as such, whatever else the token claims.
        if declared_alg(token)?.as_deref() != Some("EdDSA") {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let service = self
            .service
            .as_ref()
            .filter(|keys| keys.get(&kid).is_some())
            .cloned();
        let is_service = service.is_some();
        let keys = match service {
            Some(keys) => keys,
            None => self.keys_with(&kid).await?,
        };
        let key = keys.get(&kid).ok_or(AuthError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::InvalidSignature => AuthError::InvalidSignature,
                    ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm,
                    _ => AuthError::Malformed,
                }
            })?;
        // The service role and the service key go together, both ways.
        let claims_service = data.claims.roles.contains(&kernel::Role::Service);
        if claims_service != is_service || (is_service && data.claims.roles.len() != 1) {
            return Err(AuthError::InvalidSignature);
        }
        Ok(Caller {
            user_id: data.claims.sub,
            roles: data.claims.roles,
        })
    }

    /// The keys this verifier trusts now, as a JWKS.
    ///
    /// # Errors
    /// [`AuthError::KeysUnavailable`] when a remote JWKS cannot be fetched.
    pub async fn jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, AuthError> {
        Ok(self.keys_with("").await?.jwks().clone())
    }

    /// The key set, refreshed if it is stale or lacks `kid` (remote only).
    ///
    /// One task fetches at a time, at most every [`REFETCH_MIN_INTERVAL`]
    /// (a failed fetch counts). A token whose key is known is verified
    /// with the keys at hand, stale keys fetched again in the background
    /// (a brownout of the user module must hold no request of any other
    /// process); only a token the keys at hand cannot verify waits for a
    /// fetch. Keys older than [`JWKS_MAX_STALE`] are not used.
    async fn keys_with(&self, kid: &str) -> Result<KeySet, AuthError> {
        let remote = match &self.source {
            Source::Local(keys) => return Ok(keys.clone()),
            Source::Remote(remote) => remote,
        };
        // Bound first: the read guard must be gone before `refresh` writes.
        let need = Need::of(remote.cache.read().await.as_ref(), kid);
        match need {
            Need::Use(keys) => Ok(keys),
            Need::Unavailable => Err(remote.unavailable()),
            Need::Refresh {
                fallback: Some(keys),
            } => {
                // Fetched in the background (unless a fetch runs already);
                // this request goes on with the keys at hand.
                if remote.refreshing.try_lock().is_ok() {
                    let (remote, kid) = (std::sync::Arc::clone(remote), kid.to_owned());
                    tokio::spawn(async move {
                        if let Err(e) = remote.refresh(&kid).await {
                            tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys");
                        }
                    });
                }
                Ok(keys)
            }
            Need::Refresh { fallback: None } => remote.refresh(kid).await,
        }
    }
}

impl RemoteKeys {
    fn unavailable(&self) -> AuthError {
        AuthError::KeysUnavailable(format!(
            "{} could not be fetched lately and the keys at hand are too old",
            self.url
        ))
    }

    /// Fetches the keys, one task at a time (a task that waited finds them
    /// fetched, or tried too lately to try again), and keeps them.
    async fn refresh(&self, kid: &str) -> Result<KeySet, AuthError> {
        let _fetching = self.refreshing.lock().await;
        let fallback = match Need::of(self.cache.read().await.as_ref(), kid) {
            Need::Use(keys) => return Ok(keys),
            Need::Unavailable => return Err(self.unavailable()),
            Need::Refresh { fallback } => fallback,
        };
        let (client, url) = (&self.client, &self.url);
        let fetched = self
            .policy
            .call(None, true, || async {
                let result = fetch(client, url).await;
                let verdict = match &result {
                    Ok(_) => resilience::Verdict::Healthy,
                    Err(_) => resilience::Verdict::Failed {
                        retryable: true,
                        retry_after: None,
                    },
                };
                (result, verdict)
            })
            .await
            .map_err(|e| match e {
                resilience::PolicyError::Failed(e) => e,
                other => AuthError::KeysUnavailable(format!("cannot fetch {url}: {other}")),
            });
        let mut cached = self.cache.write().await;
        match fetched {
            Ok(keys) => {
                let now = Instant::now();
                *cached = Some(Cached {
                    keys: keys.clone(),
                    fetched: Some(now),
                    tried: now,
                });
                Ok(keys)
            }
            Err(e) => {
                match cached.as_mut() {
                    Some(cached) => cached.tried = Instant::now(),
                    None => {
                        *cached = Some(Cached {
                            keys: KeySet::from_jwks(jsonwebtoken::jwk::JwkSet { keys: Vec::new() }),
                            fetched: None,
                            tried: Instant::now(),
                        });
                    }
                }
                // Keep serving known keys through an outage of the user module.
                match fallback {
                    Some(keys) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys");
                        Ok(keys)
                    }
                    None => Err(e),
                }
            }
        }
    }
}

/// The `alg` the token's header declares.
fn declared_alg(token: &str) -> Result<Option<String>, AuthError> {
    use base64::Engine as _;
    let encoded = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    Ok(header
        .get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_owned))
}

async fn fetch(client: &reqwest::Client, url: &Url) -> Result<KeySet, AuthError> {
    let (request, span) = telemetry::trace::outgoing(client.get(url.clone()), "keys");
    let response = request
        .send()
        .instrument(span)
        .await
        .map_err(|e| AuthError::KeysUnavailable(format!("cannot fetch {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(AuthError::KeysUnavailable(format!(
            "{url} answered {}",
            response.status()
        )));
    }
    let body = remote::read_capped(response, MAX_JWKS)
        .await
        .map_err(|e| match e {
            remote::BodyError::TooLarge => {
                AuthError::KeysUnavailable(format!("{url} sent more than {MAX_JWKS} bytes"))
            }
            remote::BodyError::Broke(e) => {
                AuthError::KeysUnavailable(format!("cannot read {url}: {e}"))
            }
        })?;
    let jwks = serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&body)
        .map_err(|e| AuthError::KeysUnavailable(format!("{url} sent no JWKS: {e}")))?;
    Ok(KeySet::from_jwks(jwks))
}

/// The largest key set read from the user module: an Ed25519 key is some
/// 150 bytes of JSON, so this holds hundreds, far more than a rotation
/// keeps; a broken peer cannot make every process hold more.
const MAX_JWKS: usize = 64 * 1024;

fn validation(policy: &TokenPolicy) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&[&policy.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    validation
}

#[cfg(test)]
mod tests;
