//! Tests of [`Verifier`](super::Verifier): valid tokens, service tokens, and bad
//! tokens rejected for the right reason (including `alg: none` and HMAC confusion).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::Role;
use uuid::Uuid;

use super::*;
use crate::{Issuer, SigningKey};

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: "shop".into(),
        audience: "shop-api".into(),
        access_ttl: Duration::from_secs(900),
    }
}

#[tokio::test]
async fn service_tokens_carry_the_service_role_and_only_the_service_key_signs_it() {
    let (user_key, _) = SigningKey::generate();
    let (service_key, service_pem) = SigningKey::generate();
    let jwks = jsonwebtoken::jwk::JwkSet {
        keys: vec![user_key.public_jwk().clone()],
    };
    let verifier =
        Verifier::local(KeySet::from_jwks(jwks), &policy()).with_service_key(&service_key);
    let users = Issuer::new(user_key, policy());
    let services = crate::ServiceTokens::new(service_key, policy());

    let caller = verifier.verify(&services.token().unwrap()).await.unwrap();
    assert_eq!(caller.roles, vec![Role::Service]);
    // Cached: the same token until shortly before it expires.
    assert_eq!(services.token().unwrap(), services.token().unwrap());

    // A user key cannot mint the service role...
    let forged = users.issue(Uuid::now_v7(), &[Role::Service]).unwrap();
    assert_eq!(
        verifier.verify(&forged.token).await,
        Err(AuthError::InvalidSignature)
    );
    // ...nor can the service key mint a user's roles.
    let same_service_key = SigningKey::from_pem(service_pem.as_bytes(), "service").unwrap();
    let admin_by_service_key = Issuer::new(same_service_key, policy())
        .issue(Uuid::now_v7(), &[Role::Admin])
        .unwrap();
    assert_eq!(
        verifier.verify(&admin_by_service_key.token).await,
        Err(AuthError::InvalidSignature)
    );
    // Another service key is unknown; so is the service key to a
    // verifier not configured with it.
    let (other_key, _) = SigningKey::generate();
    let other = crate::ServiceTokens::new(other_key, policy());
    assert_eq!(
        verifier.verify(&other.token().unwrap()).await,
        Err(AuthError::UnknownKey)
    );
    let (_, plain) = setup();
    assert_eq!(
        plain.verify(&services.token().unwrap()).await,
        Err(AuthError::UnknownKey)
    );
}

fn setup() -> (Issuer, Verifier) {
    let (key, _) = SigningKey::generate();
    let jwks = jsonwebtoken::jwk::JwkSet {
        keys: vec![key.public_jwk().clone()],
    };
    let verifier = Verifier::local(KeySet::from_jwks(jwks), &policy());
    (Issuer::new(key, policy()), verifier)
}

fn claims(issuer: &Issuer) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: Uuid::now_v7(),
        roles: vec![Role::Customer],
        iss: issuer.policy().issuer.clone(),
        aud: issuer.policy().audience.clone(),
        exp: now + 60,
        iat: now,
        jti: "j".into(),
    }
}

#[tokio::test]
async fn a_valid_token_names_its_caller() {
    let (issuer, verifier) = setup();
    let user = Uuid::now_v7();
    let token = issuer.issue(user, &[Role::Admin]).unwrap();
    let caller = verifier.verify(&token.token).await.unwrap();
    assert_eq!(caller.user_id, user);
    assert_eq!(caller.roles, vec![Role::Admin]);
    assert_eq!(token.expires_in, 900);
}

#[tokio::test]
async fn bad_tokens_are_rejected_for_the_right_reason() {
    let (issuer, verifier) = setup();
    let mut expired = claims(&issuer);
    expired.exp -= 3600;
    let mut wrong_iss = claims(&issuer);
    wrong_iss.iss = "evil".into();
    let mut wrong_aud = claims(&issuer);
    wrong_aud.aud = "other-api".into();
    let (stranger, _) = SigningKey::generate();
    let stranger = Issuer::new(stranger, policy());

    let cases = [
        (issuer.sign(&expired).unwrap(), AuthError::Expired),
        (issuer.sign(&wrong_iss).unwrap(), AuthError::WrongIssuer),
        (issuer.sign(&wrong_aud).unwrap(), AuthError::WrongAudience),
        (
            stranger.sign(&claims(&stranger)).unwrap(),
            AuthError::UnknownKey,
        ),
        ("not.a.token".to_owned(), AuthError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(verifier.verify(&token).await, Err(expected));
    }
}

#[tokio::test]
async fn alg_none_and_hmac_confusion_are_rejected() {
    let (issuer, verifier) = setup();
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&issuer)).unwrap());
    let kid = issuer.key().kid();
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let none = format!("{none_header}.{body}.");
    assert_eq!(
        verifier.verify(&none).await,
        Err(AuthError::UnsupportedAlgorithm)
    );

    // HS256 "signed" with the public key as the secret.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) =
        &issuer.key().public_jwk().algorithm
    else {
        panic!("Ed25519 key");
    };
    let hs = jsonwebtoken::encode(
        &header,
        &claims(&issuer),
        &jsonwebtoken::EncodingKey::from_secret(okp.x.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&hs).await,
        Err(AuthError::UnsupportedAlgorithm)
    );

    // A valid signature over a tampered payload fails.
    let good = issuer
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims(&issuer);
    forged.roles = vec![Role::Admin];
    let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    parts[1] = &forged_body;
    assert_eq!(
        verifier.verify(&parts.join(".")).await,
        Err(AuthError::InvalidSignature)
    );
}
