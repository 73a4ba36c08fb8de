//! Access tokens, verified anywhere.
//!
//! Access tokens are short-lived JWTs signed with Ed25519 (`EdDSA`), with a
//! `kid` header naming the key (its RFC 7638 thumbprint), and `iss`/`aud`
//! checked. The user module signs them with an [`Issuer`]; every process
//! verifies them with a [`Verifier`] holding only public keys: its own
//! [`KeySet`] when the user module runs in process, or the user module's
//! `/.well-known/jwks.json`, fetched and cached, when it is remote. No call
//! to the user module per request.
//!
//! [`middleware`] verifies a bearer token once per request; the extractors
//! [`Authenticated`] and [`AdminOnly`] declare who may call a route (401 for
//! a missing or bad token, 403 for a missing role).

mod extract;
mod http;
mod keys;
mod seal;
mod token;
mod verify;

pub use extract::{AdminOnly, Authenticated, middleware};
pub use http::jwks;
pub use keys::{KeyError, KeySet, SigningKey, public_jwk_from_pem};
pub use seal::EventSeal;
pub use token::{AccessToken, Claims, Issuer, ServiceTokens, TokenPolicy};
pub use verify::{AuthError, Verifier};

pub use jsonwebtoken::jwk::{Jwk, JwkSet};
