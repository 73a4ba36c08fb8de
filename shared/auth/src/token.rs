//! Claims, token policy and the issuer of access tokens.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use kernel::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{KeySet, SigningKey};

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The signed-in user's id (`sub`).
    pub sub: Uuid,
    /// The user's roles at issue time.
    pub roles: Vec<Role>,
    /// Who issued it.
    pub iss: String,
    /// Who it is for.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issue time (seconds since the epoch).
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
}

/// What issuers write and verifiers demand.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Lifetime of an access token.
    pub access_ttl: Duration,
}

/// A signed access token and its lifetime.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The signed JWT, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Signs access tokens. Lives where the private key is: the user module.
#[derive(Debug)]
pub struct Issuer {
    key: SigningKey,
    policy: TokenPolicy,
}

impl Issuer {
    /// An issuer signing with `key` under `policy`.
    pub fn new(key: SigningKey, policy: TokenPolicy) -> Issuer {
        Issuer { key, policy }
    }

    /// A token for `user_id` with `roles`, valid for the policy's lifetime.
    ///
    /// # Errors
    /// Signing failure (not expected with a loaded key).
    pub fn issue(
        &self,
        user_id: Uuid,
        roles: &[Role],
    ) -> Result<AccessToken, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let ttl = self.policy.access_ttl.as_secs();
        let claims = Claims {
            sub: user_id,
            roles: roles.to_vec(),
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            iat: now,
            jti: Uuid::now_v7().to_string(),
        };
        Ok(AccessToken {
            token: self.sign(&claims)?,
            expires_in: ttl,
        })
    }

    /// Signs arbitrary claims with this issuer's key (tests, tooling).
    ///
    /// # Errors
    /// Signing failure.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, self.key.encoding())
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Lifetimes, issuer and audience the tokens are made with.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }
}

/// Tokens with which the shop's modules call each other on their own
/// behalf (the order module reserving stock or taking a payment, also from
/// its recovery worker, when no user's token is at hand).
///
/// Signed with the service key (`auth.service_key_file`), a key every
/// process of one deployment shares and no user token is signed with; a
/// [`crate::Verifier`] built `with_service_key` accepts them with exactly
/// the `service` role. A token is reused until a minute before it expires.
#[derive(Debug)]
pub struct ServiceTokens {
    issuer: Issuer,
    /// The public halves of every service key accepted: the key's own and
    /// those of [`ServiceTokens::accepting`].
    accepted: KeySet,
    cached: std::sync::Mutex<Option<(String, i64)>>,
}

impl ServiceTokens {
    /// Tokens signed with `key` under `policy`.
    pub fn new(key: SigningKey, policy: TokenPolicy) -> ServiceTokens {
        let accepted = KeySet::from_jwks(jsonwebtoken::jwk::JwkSet {
            keys: vec![key.public_jwk().clone()],
        });
        ServiceTokens {
            issuer: Issuer::new(key, policy),
            accepted,
            cached: std::sync::Mutex::new(None),
        }
    }

    /// Also accepts the service tokens and event seals of `others` (public
    /// keys), never signing with them: during a rotation of the service key,
    /// the next key before any process signs with it, then the last one
    /// until no process does (ADR 0013).
    #[must_use]
    pub fn accepting(
        mut self,
        others: impl IntoIterator<Item = jsonwebtoken::jwk::Jwk>,
    ) -> ServiceTokens {
        self.accepted = self.accepted.with(others);
        self
    }

    /// The service key.
    pub fn key(&self) -> &SigningKey {
        self.issuer.key()
    }

    /// Every service key accepted, by id: the service key's own public
    /// half first, and those [`ServiceTokens::accepting`] added.
    pub fn accepted(&self) -> &KeySet {
        &self.accepted
    }

    /// A valid service token.
    ///
    /// # Errors
    /// Signing failure (not expected with a loaded key).
    pub fn token(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        if let Ok(cached) = self.cached.lock()
            && let Some((token, expires)) = cached.as_ref()
            && *expires - 60 > now
        {
            return Ok(token.clone());
        }
        let token = self.issuer.issue(Uuid::nil(), &[Role::Service])?;
        let expires = now.saturating_add(i64::try_from(token.expires_in).unwrap_or(i64::MAX));
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((token.token.clone(), expires));
        }
        Ok(token.token)
    }

    /// A context for a call made by a module on its own behalf, as part of
    /// the request `request_id`: the service caller (for in-process
    /// implementations) and its token (for remote ones).
    ///
    /// # Errors
    /// Signing failure (not expected with a loaded key).
    pub fn context(
        &self,
        request_id: kernel::RequestId,
    ) -> Result<kernel::CallContext, jsonwebtoken::errors::Error> {
        Ok(kernel::CallContext::for_request(request_id)
            .with_caller(kernel::Caller::service())
            .with_bearer_token(self.token()?))
    }
}
